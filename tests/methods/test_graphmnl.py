"""GraphMNL: behaviour of each component on small generated graphs (the benchmark measures quality at scale)."""

import pytest
import torch

from magkit.exceptions import ConfigError, NotFittedError
from magkit.methods import create, get_method
from magkit.methods.graphmnl import ABLATIONS, GraphMNL, default_branches

FAST = {"hidden": 32, "epochs": 60, "patience": 60, "warmup": 5}


@pytest.fixture(scope="module")
def graph(graph_factory):
    return graph_factory(600, 4, homophily=0.8, seed=1, profile="text-dominant")


@pytest.fixture(scope="module")
def fitted(graph):
    return create("graphmnl", seed=0, **FAST).fit(graph)


def test_quality_floor_and_branch_library(graph, fitted):
    s = fitted.score(graph, "test")
    assert s["acc"] >= 0.85 and s["f1"] >= 0.8
    assert fitted.branches_ == default_branches(graph.modalities)
    assert fitted.branches_ == ("raw:text", "raw:image", "prop:text", "prop:image", "struct")
    d = fitted.diagnostics_
    # graph-aware branches beat the node-only ones on a homophilous graph, and arbitration knows it
    assert d["branch_val_acc"]["struct"] > d["branch_val_acc"]["raw:image"]
    assert d["dominant_share"]["raw:image"] < d["dominant_share"]["struct"]
    alpha = d["alpha"]
    torch.testing.assert_close(alpha.sum(1), torch.ones(graph.num_nodes))


def test_reliability_ranks_the_truly_better_modality(fitted):
    # ground truth from the generator: per node, which modality is truly more useful
    auc = fitted.diagnostics_["reliability_auc"]["raw"]
    assert auc > 0.65


def test_guidance_starts_after_warmup_and_is_gated(graph):
    est = create("graphmnl", seed=0, **{**FAST, "warmup": 10, "epochs": 30, "patience": 30}).fit(graph)
    guide = est.history_.series("guide")
    gate = est.history_.series("gate_rate")
    assert all(v == 0.0 for v in guide[:10]) and all(v == 0.0 for v in gate[:10])
    assert any(v > 0 for v in guide[10:])
    assert all(0.0 <= v <= 1.0 for v in gate)
    ungated = create("graphmnl-no-gate", seed=0, **{**FAST, "warmup": 10, "epochs": 30, "patience": 30}).fit(graph)
    # without the gate every unlabelled node with a dominant branch is guided
    assert min(ungated.history_.series("gate_rate")[10:]) > 0.99
    assert max(gate[10:]) < 0.99


def test_no_guidance_means_no_guidance_loss(graph):
    est = create("graphmnl-no-guidance", seed=0, **FAST).fit(graph)
    assert all(v == 0.0 for v in est.history_.series("guide"))


def test_absent_modality_branches_abstain(graph, drop_modality_fn):
    g = drop_modality_fn(graph, "image", 0.4, seed=0)
    est = create("graphmnl", seed=0, **FAST).fit(g)
    d = est.diagnostics_
    absent = ~g.presence("image")
    cols = [est.branches_.index("raw:image"), est.branches_.index("prop:image")]
    assert (d["alpha"][absent][:, cols] == 0).all()
    assert (d["reliability"][absent][:, cols] == 0).all()
    assert not bool((d["dominant"][absent].unsqueeze(1) == torch.tensor(cols)).any())
    # their rows are never read: garbage in the absent rows changes nothing
    g2 = g.clone()
    x = g2.x_image.clone()
    x[absent] = torch.randn(int(absent.sum()), x.size(1)) * 5
    g2.x_image = x
    torch.testing.assert_close(est.predict_proba(g), est.predict_proba(g2))


def test_determinism(graph):
    a = create("graphmnl", seed=3, **FAST).fit(graph).predict_proba(graph)
    b = create("graphmnl", seed=3, **FAST).fit(graph).predict_proba(graph)
    c = create("graphmnl", seed=4, **FAST).fit(graph).predict_proba(graph)
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_ablations_are_registered_with_one_switch_each():
    expected = {
        "graphmnl-no-smoothing": {"beta": 0.0}, "graphmnl-no-gate": {"gate": False},
        "graphmnl-kd": {"guidance": "kd"}, "graphmnl-mnl-loss": {"guidance": "mnl"},
        "graphmnl-fixed-dominant": {"fixed_dominant": "auto"},
    }
    for name, fixed in expected.items():
        spec = get_method(name)
        assert spec.cls is GraphMNL and spec.fixed == fixed and spec.group == "graphmnl"
    assert set(expected) < set(ABLATIONS)


@pytest.mark.parametrize("name", ["graphmnl-kd", "graphmnl-mnl-loss", "graphmnl-fixed-dominant", "graphmnl-no-smoothing"])
def test_ablations_train(graph, name):
    est = create(name, seed=0, **FAST).fit(graph)
    assert est.score(graph, "test")["acc"] >= 0.8
    if name != "graphmnl-no-smoothing":
        assert any(v != 0.0 for v in est.history_.series("guide"))


def test_fixed_dominant_uses_one_modality(graph):
    est = create("graphmnl", seed=0, fixed_dominant="text", **FAST)
    est.fit(graph)
    assert est._fixed_index.tolist() == [True, False, True, False, False]


@pytest.mark.parametrize("params, fragment", [
    ({"guidance": "pl"}, "guidance: 'pl'; allowed: nl, kd, mnl, none"),
    ({"guidance_nodes": "some"}, "guidance_nodes"),
    ({"temperature": 0}, "temperature"),
    ({"batch_size": 64}, "full-batch"),
    ({"branches": ["raw:audio"]}, r"branches: \['raw:audio'\]; allowed"),
    ({"beta": 2.0}, "beta"),
])
def test_bad_parameters(graph, params, fragment):
    with pytest.raises(ConfigError, match=fragment):
        create("graphmnl", **{**FAST, "epochs": 2}, **params).fit(graph)


def test_not_fitted(graph):
    with pytest.raises(NotFittedError):
        GraphMNL().diagnostics_
    with pytest.raises(NotFittedError):
        GraphMNL().predict(graph)
