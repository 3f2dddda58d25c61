"""The baselines through the estimator API: quality floors, determinism, errors, missing modalities, losses.

Graphs come from tests/methods/conftest.py (500-800 nodes, 4 classes; the test split holds 100-160 nodes,
so one node is 0.6-1 point of accuracy). Floors sit well below the values measured when they were set
(noted beside each), and well above chance (the majority class holds about 0.42 of the test nodes).
"""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from magkit.exceptions import ConfigError, NotFittedError
from magkit.functional import accuracy, macro_f1
from magkit.methods import create
from magkit.methods.base import main_logits
from magkit.methods.baselines import DistillationClassifier, FusionClassifier, MNLClassifier
from magkit.models.backbones import masked_mean
from magkit.train.sampler import NeighborSampler

FAST = {"hidden": 32, "epochs": 100, "patience": 30}
BACKBONES = ("mlp", "gcn", "sage", "gat", "sgc", "appnp")
GRAPH_FREE = ("mlp",)

# accuracy floors on the homophilous graph (h = 0.85); measured at the time of writing in the comments
# (this graph / data seeds 0-2 at signal 4.7 and 6.0 / the planted-partition fallback)
FLOOR_GRAPH_FREE = 0.70  # mlp-early/late/learned 0.86/0.85/0.82 (0.82-0.93); kd-mlp 0.81, mnl-mlp 0.83 (0.82-0.97)
FLOOR_GRAPH = 0.85  # gcn/sage/gat/sgc/appnp, any fusion 0.94-0.98 (0.94-1.00); kd/mnl-gcn/sage 0.95-0.96


def fit(name: str, graph, **params):
    return create(name, **{**FAST, **params}).fit(graph)


def test_test_split_is_far_from_trivial(homophilous_graph):
    y = homophilous_graph.y[homophilous_graph.test_mask]
    majority = torch.bincount(y).max().item() / y.numel()
    assert majority < FLOOR_GRAPH_FREE - 0.2  # every floor is at least 0.2 above always-the-majority


# ---------------------------------------------------------------------- quality floors
@pytest.mark.parametrize("backbone", BACKBONES)
def test_early_fusion_quality_floor(homophilous_graph, backbone):
    est = fit(f"{backbone}-early", homophilous_graph)
    s = est.score(homophilous_graph)
    floor = FLOOR_GRAPH_FREE if backbone in GRAPH_FREE else FLOOR_GRAPH
    print(f"{backbone}-early acc={s['acc']:.3f} f1={s['f1']:.3f}")
    assert s["acc"] >= floor
    assert s["f1"] >= floor - 0.05


@pytest.mark.parametrize("fusion", ["late", "learned"])
@pytest.mark.parametrize("backbone", BACKBONES)
def test_late_and_learned_fusion_quality_floor(homophilous_graph, backbone, fusion):
    est = fit(f"{backbone}-{fusion}", homophilous_graph)
    acc = est.score(homophilous_graph)["acc"]
    print(f"{backbone}-{fusion} acc={acc:.3f}")
    assert acc >= (FLOOR_GRAPH_FREE if backbone in GRAPH_FREE else FLOOR_GRAPH)


@pytest.mark.parametrize("name", ["kd-mlp", "kd-gcn", "kd-sage", "mnl-mlp", "mnl-gcn", "mnl-sage"])
def test_branch_methods_quality_floor(homophilous_graph, name):
    est = fit(name, homophilous_graph)
    acc = est.score(homophilous_graph)["acc"]
    print(f"{name} acc={acc:.3f} last={est.history_.epochs[-1]}")
    assert acc >= (FLOOR_GRAPH_FREE if name.endswith("mlp") else FLOOR_GRAPH)
    last = est.history_.epochs[-1]
    assert ("kd" if name.startswith("kd") else "nl") in last  # the method's own loss term is logged
    assert math.isfinite(last["loss"])


def test_gcn_beats_mlp_when_single_node_features_are_noisy(noisy_homophilous_graph):
    # measured: mlp 0.53, gcn 0.99 (data seeds 0-2: mlp 0.50-0.56, gcn 0.97-0.99; fallback 0.60 / 1.00)
    g = noisy_homophilous_graph
    mlp = fit("mlp-early", g).score(g)["acc"]
    gcn = fit("gcn-early", g).score(g)["acc"]
    print(f"noisy features: mlp={mlp:.3f} gcn={gcn:.3f}")
    assert gcn >= 0.85
    assert gcn - mlp >= 0.20


@pytest.mark.parametrize("profile,strong,weak", [
    ("text-dominant", "text", "image"),
    ("image-dominant", "image", "text"),
])
def test_dominant_modality_alone_beats_the_other(graph_factory, profile, strong, weak):
    # an MLP sees only the node's own features, so modality quality shows undiluted by neighbours; two
    # graphs of 1200 nodes (240 test nodes each). Measured: text-dominant 0.800/0.733 and 0.800/0.683 (mean
    # margin 0.09), image-dominant 0.817/0.663 and 0.825/0.663 (0.16); one-graph margins over data seeds 0-3
    # and signal 4.7 / 6.0: 0.07-0.17.
    margins, weak_accs = [], []
    for seed in (0, 1):
        g = graph_factory(1200, 4, 0.85, seed=seed, profile=profile)
        a_strong = fit(f"mlp-{strong}", g).score(g)["acc"]
        a_weak = fit(f"mlp-{weak}", g).score(g)["acc"]
        print(f"{profile} seed {seed}: {strong}={a_strong:.3f} {weak}={a_weak:.3f}")
        margins.append(a_strong - a_weak)
        weak_accs.append(a_weak)
    assert sum(margins) / 2 >= 0.04
    assert min(margins) > 0
    assert min(weak_accs) >= 0.50  # the weak modality still carries signal


# ---------------------------------------------------------------------- mini-batch training
@pytest.mark.parametrize("backbone", ["gcn", "sage"])
def test_minibatch_training_floor(homophilous_graph, backbone):
    est = fit(f"{backbone}-early", homophilous_graph, batch_size=64, fanouts=(5, 5))
    acc = est.score(homophilous_graph)["acc"]
    print(f"{backbone}-early mini-batch acc={acc:.3f}")
    assert acc >= FLOOR_GRAPH


def test_minibatch_training_is_deterministic(homophilous_graph):
    params = {"epochs": 5, "batch_size": 64, "fanouts": (5, 5)}
    a = fit("sage-early", homophilous_graph, **params).predict_proba(homophilous_graph)
    b = fit("sage-early", homophilous_graph, **params).predict_proba(homophilous_graph)
    assert torch.equal(a, b)


@pytest.mark.parametrize("backbone", [
    "sage", "gat", "gcn", "appnp",
])
def test_sampled_seeds_receive_messages_from_their_sampled_neighbours(homophilous_graph, backbone):
    # the mini-batch path of fit: a sampled subgraph (edges neighbour -> seed), inputs.subset, model(sub)
    g = homophilous_graph
    est = FusionClassifier(backbone=backbone, fusion="early", hidden=16, epochs=1, dropout=0.0).fit(g)
    model = est.model_.eval()
    sampler = NeighborSampler(g.edge_index, g.num_nodes, fanouts=(5,), batch_size=32, shuffle=False)
    batch = next(sampler.batches(g.split_index("train")))
    sub = est._inputs(g).subset(batch.n_id, batch.edge_index)
    changed = {m: x.clone() for m, x in sub.xs.items()}
    for x in changed.values():
        x[batch.batch_size:] += 3.0  # perturb the sampled neighbours only, never a seed
    sub2 = replace(sub, xs=changed, adj=None)
    with torch.no_grad():
        out, out2 = main_logits(model(sub)), main_logits(model(sub2))
    fed = torch.zeros(sub.num_nodes, dtype=torch.bool)
    src, dst = batch.edge_index
    fed[dst[src >= batch.batch_size]] = True  # seeds with at least one sampled non-seed neighbour
    seeds = torch.arange(batch.batch_size)
    assert fed[seeds].sum() >= 10
    moved = (out2[seeds] - out[seeds]).abs().amax(1) > 1e-4
    assert torch.equal(moved, fed[seeds])


# ---------------------------------------------------------------------- determinism
@pytest.mark.parametrize("name", ["gcn-early", "gat-learned", "mnl-mlp"])
def test_same_seed_same_probabilities_different_seed_different(homophilous_graph, name):
    params = {"epochs": 10}
    a = fit(name, homophilous_graph, seed=3, **params).predict_proba(homophilous_graph)
    b = fit(name, homophilous_graph, seed=3, **params).predict_proba(homophilous_graph)
    c = fit(name, homophilous_graph, seed=4, **params).predict_proba(homophilous_graph)
    assert torch.equal(a, b)
    assert (a - c).abs().max() > 1e-3


def test_fit_leaves_the_global_rng_untouched(homophilous_graph):
    torch.manual_seed(1234)
    before = torch.random.get_rng_state()
    fit("gcn-early", homophilous_graph, epochs=3)
    assert torch.equal(torch.random.get_rng_state(), before)


# ---------------------------------------------------------------------- API behaviour
@pytest.fixture(scope="module")
def fitted(homophilous_graph):
    return fit("gcn-early", homophilous_graph)


def test_fit_returns_self_and_sets_fitted_attributes(homophilous_graph):
    est = create("mlp-early", epochs=2)
    assert est.fit(homophilous_graph) is est
    assert est.num_classes_ == 4
    assert est.modalities_ == ("text", "image")
    assert len(est.history_.epochs) == 2


@pytest.mark.parametrize("method", ["predict", "predict_proba", "score", "forward"])
def test_not_fitted_error_before_fit(homophilous_graph, method):
    est = create("gcn-early")
    with pytest.raises(NotFittedError, match="FusionClassifier is not fitted yet; call fit"):
        getattr(est, method)(homophilous_graph)


def test_fitted_attribute_before_fit_raises_not_fitted():
    with pytest.raises(NotFittedError, match=r"not fitted yet \(no model_\)"):
        _ = create("gcn-early").model_


def test_unknown_parameter_lists_allowed_names():
    with pytest.raises(ConfigError, match=r"^FusionClassifier: unknown parameter 'hiden' \(did you mean 'hidden'\?\); "
                                          r"allowed: ") as exc:
        FusionClassifier().set_params(hiden=16, lrr=0.1)
    for name in ("hidden", "lr", "fusion", "backbone", "epochs", "patience", "batch_size", "fanouts", "seed"):
        assert name in str(exc.value)
    with pytest.raises(ConfigError, match=r"unknown parameter 'temperatur' \(did you mean 'temperature'\?\)"):
        create("kd-gcn", temperatur=2.0)
    with pytest.raises(ConfigError, match=r"unknown parameter 'nl_wieght' \(did you mean 'nl_weight'\?\)"):
        create("mnl-gcn", nl_wieght=1.0)
    with pytest.raises(TypeError, match="unexpected keyword argument 'hiden'"):  # Python's own check
        FusionClassifier(hiden=16)


def test_signatures_repeat_the_shared_parameters():
    from magkit.base import param_defaults, param_types
    from magkit.methods.base import NodeClassifier

    shared = param_defaults(NodeClassifier)
    for cls in (FusionClassifier, DistillationClassifier, MNLClassifier):
        own = param_defaults(cls)
        assert {k: own[k] for k in shared} == shared
        assert {k: param_types(cls)[k] for k in shared} == param_types(NodeClassifier)
    assert list(param_defaults(FusionClassifier))[:5] == ["fusion", "backbone", "heads", "k", "alpha"]


def test_get_and_set_params():
    est = create("sage-late", hidden=16)
    p = est.get_params()
    assert p["hidden"] == 16 and p["backbone"] == "sage" and p["fusion"] == "late" and p["lr"] == 0.01
    est.set_params(lr=0.05)
    assert est.get_params()["lr"] == 0.05 and est.get_params()["hidden"] == 16
    assert "hidden=16" in repr(est)


def test_bad_fusion_and_backbone(homophilous_graph):
    with pytest.raises(ConfigError, match=r"^FusionClassifier: fusion='audio' is not a fusion rule of this graph; "
                                          r"allowed: text, image, early, late, learned$"):
        FusionClassifier(fusion="audio", epochs=1).fit(homophilous_graph)
    with pytest.raises(ConfigError, match=r"^FusionClassifier: backbone='gin' is not one of 'mlp', 'gcn', 'sage', 'gat', "
                                          r"'sgc', 'appnp'$"):
        FusionClassifier(backbone="gin", epochs=1).fit(homophilous_graph)
    with pytest.raises(ConfigError, match=r"^FusionClassifier: dropout=1.5 is out of range; allowed: 0 <= dropout < 1$"):
        FusionClassifier(dropout=1.5).fit(homophilous_graph)
    with pytest.raises(ConfigError, match=r"kd_nodes='some' is not one of 'all', 'train'"):
        DistillationClassifier(kd_nodes="some", epochs=1).fit(homophilous_graph)
    with pytest.raises(ConfigError, match=r"^MNLClassifier: lr='fast' is not a float$"):
        MNLClassifier(lr="fast").fit(homophilous_graph)
    with pytest.raises(ConfigError, match=r"^FusionClassifier: hidden=0 is out of range; allowed: an integer >= 1$"):
        FusionClassifier(hidden=0).fit(homophilous_graph)


def test_predict_proba_is_a_distribution(fitted, homophilous_graph):
    proba = fitted.predict_proba(homophilous_graph)
    assert proba.shape == (homophilous_graph.num_nodes, 4)
    assert (proba >= 0).all()
    torch.testing.assert_close(proba.sum(1), torch.ones(homophilous_graph.num_nodes))
    assert torch.equal(fitted.predict(homophilous_graph), proba.argmax(1))


@pytest.mark.parametrize("split", ["train", "val", "test"])
def test_score_is_consistent_with_predict(fitted, homophilous_graph, split):
    g = homophilous_graph
    s = fitted.score(g, split)
    assert set(s) == {"acc", "f1"}
    assert 0.0 <= s["acc"] <= 1.0 and 0.0 <= s["f1"] <= 1.0
    idx = g.split_index(split)
    pred = fitted.predict(g)[idx]
    assert s["acc"] == pytest.approx(float((pred == g.y[idx]).float().mean()))
    assert s["acc"] == pytest.approx(accuracy(pred, g.y[idx]))
    assert s["f1"] == pytest.approx(macro_f1(pred, g.y[idx], 4))


def test_restored_model_scores_the_best_validation_accuracy(fitted, homophilous_graph):
    hist = fitted.history_
    assert hist.monitor == "val_acc" and 0 <= hist.best_epoch < len(hist.epochs)
    assert fitted.score(homophilous_graph, "val")["acc"] == pytest.approx(hist.best_score)
    assert hist.best_score == max(hist.series("val_acc"))


def test_monitor_val_loss_selects_the_lowest_validation_loss(homophilous_graph):
    est = fit("mlp-early", homophilous_graph, epochs=40, monitor="val_loss")
    losses = est.history_.series("val_loss")
    assert est.history_.best_epoch == losses.index(min(losses))


# ---------------------------------------------------------------------- missing modalities
def _absent_rows_replaced(graph, modality: str, seed: int = 0):
    """A copy of ``graph`` whose absent rows of ``modality`` hold random values (the mask is unchanged)."""
    g = graph.clone()
    absent = ~g.presence(modality)
    x = g.feature(modality).clone()
    x[absent] = torch.randn(int(absent.sum()), x.size(1), generator=torch.Generator().manual_seed(seed))
    g[f"x_{modality}"] = x
    return g, absent


@pytest.fixture(scope="module")
def late_mlp(missing_image_graph):
    return fit("mlp-late", missing_image_graph)


def test_missing_image_graph_is_as_specified(missing_image_graph):
    g = missing_image_graph
    absent = ~g.presence("image")
    assert abs(absent.float().mean().item() - 0.5) < 0.04
    assert (g.feature("image")[absent] == 0).all()
    assert g.presence("text")[absent].all()


def test_late_fusion_floor_with_half_the_images_missing(late_mlp, missing_image_graph):
    acc = late_mlp.score(missing_image_graph)["acc"]
    print(f"mlp-late, 50% images missing: acc={acc:.3f}")
    assert acc >= FLOOR_GRAPH_FREE


def test_late_fusion_without_image_equals_the_text_branch(late_mlp, missing_image_graph):
    g = missing_image_graph
    absent = ~g.presence("image")
    out = late_mlp.forward(g)
    with torch.no_grad():
        text_only = late_mlp.model_.nets["text"](g.feature("text"))
        image_only = late_mlp.model_.nets["image"](g.feature("image"))
    torch.testing.assert_close(out[absent], text_only[absent])
    # where both are present, the prediction is the mean of the two branches
    both = g.presence("text") & g.presence("image")
    torch.testing.assert_close(out[both], (text_only[both] + image_only[both]) / 2)


@pytest.mark.parametrize("name", ["mlp-late", "mlp-learned", "kd-mlp", "mnl-mlp"])
def test_absent_image_rows_do_not_change_the_output(missing_image_graph, name):
    est = fit(name, missing_image_graph, epochs=15)
    g2, absent = _absent_rows_replaced(missing_image_graph, "image")
    p1, p2 = est.predict_proba(missing_image_graph), est.predict_proba(g2)
    torch.testing.assert_close(p1[absent], p2[absent], rtol=0, atol=1e-6)
    # sanity: the same change on present rows does move the output
    g3 = missing_image_graph.clone()
    g3.x_image = g3.x_image.flip(0)
    assert (est.predict_proba(g3)[~absent] - p1[~absent]).abs().max() > 1e-3


def test_learned_fusion_gives_absent_modalities_zero_attention(missing_image_graph):
    est = fit("mlp-learned", missing_image_graph, epochs=5)
    att = est.forward(missing_image_graph)["attention"]
    absent = ~missing_image_graph.presence("image")
    assert (att[absent, 1] == 0).all()
    torch.testing.assert_close(att[absent, 0], torch.ones(int(absent.sum())))
    torch.testing.assert_close(att.sum(1), torch.ones(att.size(0)))


def test_early_fusion_ignores_rows_of_absent_modalities(missing_image_graph):
    est = fit("mlp-early", missing_image_graph, epochs=15)
    g2, absent = _absent_rows_replaced(missing_image_graph, "image")
    p1, p2 = est.predict_proba(missing_image_graph), est.predict_proba(g2)
    torch.testing.assert_close(p1[absent], p2[absent], rtol=0, atol=1e-6)


def _drop_text_for_every_third_node_with_an_image(graph):
    g = graph.clone()
    mask = g.modality_mask.clone()
    drop = mask[:, 1].nonzero(as_tuple=True)[0][::3]
    mask[drop, 0] = False
    x = g.x_text.clone()
    x[drop] = 0.0
    g.x_text = x
    g.modality_mask = mask
    return g


def test_text_only_mlp_trains_only_on_nodes_with_text(homophilous_graph):
    # single-modality graph-free models have no evidence where the modality is absent: no loss there
    g = _drop_text_for_every_third_node_with_an_image(homophilous_graph)
    est = FusionClassifier(backbone="mlp", fusion="text", epochs=1)
    est.fit(g)
    out = est.model_(est._inputs(g))
    y = g.y
    idx = g.split_index("train")
    loss, _ = est._loss(out, y, idx, 0)
    keep = idx[g.presence("text")[idx]]
    assert keep.numel() < idx.numel()
    torch.testing.assert_close(loss, F.cross_entropy(out["logits"][keep], y[keep]))


# ---------------------------------------------------------------------- the MNL loss on hand-made logits
def _mnl_loss(z: torch.Tensor, y: torch.Tensor, present: torch.Tensor | None = None, nl_weight: float = 0.7):
    est = MNLClassifier(nl_weight=nl_weight)
    present = torch.ones(z.shape[:2], dtype=torch.bool) if present is None else present
    out = {"logits": masked_mean(z, present), "branches": z, "present": present}
    return est._loss(out, y, torch.arange(z.size(0)), epoch=0)


def _ce(logits: list[float], y: int) -> float:
    return math.log(sum(math.exp(v) for v in logits)) - logits[y]


def _softmax(logits: list[float]) -> list[float]:
    s = sum(math.exp(v) for v in logits)
    return [math.exp(v) / s for v in logits]


def test_mnl_weak_branch_gets_ce_plus_non_target_soft_ce():
    # y = 0; fused = mean = [2, 0.75, 0] -> hardest wrong class j = 1
    # branch 0 [3, 1, 0]:   margin 3 - 1 = 2,    p_y = e^3/(e^3+e+1) = 0.8438
    # branch 1 [1, 0.5, 0]: margin 1 - 0.5 = 0.5, p_y = e/(e+e^0.5+1) = 0.5065
    # branch 0 dominates (both larger) -> branch 1 is weak:
    # L_1 = CE(z_1, 0) - 0.7 * (p_0,1 log q_1,1 + p_0,2 log q_1,2)
    #     = 0.6803 - 0.7 * (0.1142 * ln 0.3072 + 0.0420 * ln 0.1863) = 0.6803 + 0.7 * 0.2054 = 0.8240
    b0, b1 = [3.0, 1.0, 0.0], [1.0, 0.5, 0.0]
    z = torch.tensor([[b0, b1]])
    _, parts = _mnl_loss(z, torch.tensor([0]))
    p0 = _softmax(b0)
    logq1 = [math.log(q) for q in _softmax(b1)]
    expected = _ce(b1, 0) - 0.7 * (p0[1] * logq1[1] + p0[2] * logq1[2])
    assert parts["nl"] == pytest.approx(expected, rel=1e-5)
    assert parts["nl"] == pytest.approx(0.8240, abs=1e-3)  # the same number, evaluated by hand


def test_mnl_needs_both_a_larger_margin_and_a_larger_target_probability():
    # y = 0; fused = [1.5, 0.25, -0.525] -> j = 1
    # branch 0 [2, 0, 1.95]: margin 2 (larger) but p_y = 7.389/(7.389+1+7.029) = 0.479 (smaller)
    # branch 1 [1, 0.5, -3]: margin 0.5,          p_y = 2.718/(2.718+1.649+0.050) = 0.615
    # neither dominates -> no branch is weak -> no extra term
    z = torch.tensor([[[2.0, 0.0, 1.95], [1.0, 0.5, -3.0]]])
    _, parts = _mnl_loss(z, torch.tensor([0]))
    assert parts["nl"] == 0.0


def test_mnl_equal_branches_do_not_dominate_each_other():
    z = torch.tensor([[[2.0, 0.0, 1.0], [2.0, 0.0, 1.0]]])
    assert _mnl_loss(z, torch.tensor([0]))[1]["nl"] == 0.0


def test_mnl_absent_branch_is_never_weak_nor_dominant():
    z = torch.tensor([[[3.0, 1.0, 0.0], [1.0, 0.5, 0.0]]])
    present = torch.tensor([[True, False]])
    assert _mnl_loss(z, torch.tensor([0]), present)[1]["nl"] == 0.0


def test_mnl_weak_branch_learns_from_the_dominant_with_the_highest_target_probability():
    # y = 0, 4 classes; fused = mean of the three = [1, 0, -2, -0.4] -> j = 1
    # branch 0 [3, 0, -2, 2.8]:  margin 3,  p_y = 0.533   (0 and 1: neither dominates the other)
    # branch 1 [1, -1, -2, -2]:  margin 2,  p_y = 0.810
    # branch 2 [-1, 1, -2, -2]:  margin -2, p_y = 0.110   (dominated by both)
    # -> the weak branch 2 imitates branch 1 (the larger p_y; L = 2.408), not branch 0 (L = 3.204)
    b = [[3.0, 0.0, -2.0, 2.8], [1.0, -1.0, -2.0, -2.0], [-1.0, 1.0, -2.0, -2.0]]
    _, parts = _mnl_loss(torch.tensor([b]), torch.tensor([0]))
    logq2 = [math.log(q) for q in _softmax(b[2])]

    def term(a: int) -> float:
        pa = _softmax(b[a])
        return _ce(b[2], 0) - 0.7 * sum(pa[c] * logq2[c] for c in (1, 2, 3))

    assert parts["nl"] == pytest.approx(term(1), rel=1e-5)
    assert parts["nl"] == pytest.approx(2.408, abs=1e-3)
    assert abs(term(1) - term(0)) > 0.5  # the choice matters


def test_mnl_non_target_soft_ce_pushes_the_weak_target_logit_down():
    # d/dz_{b,y} of -sum_{c != y} p_a,c log q_b,c = q_b,y * (1 - p_a,y) > 0: gradient descent lowers the
    # weak branch's target logit -- the weakness of MNL's soft non-target term that GraphMNL addresses.
    b0, b1 = [3.0, 1.0, 0.0], [1.0, 0.5, 0.0]
    grads = {}
    for w in (0.7, 0.0):
        z = torch.tensor([[b0, b1]], requires_grad=True)
        loss, _ = _mnl_loss(z, torch.tensor([0]), nl_weight=w)
        loss.backward()
        grads[w] = z.grad[0, 1].clone()
    soft = (grads[0.7] - grads[0.0]) / 0.7  # gradient of the non-target soft CE alone
    q1y = _softmax(b1)[0]
    p0y = _softmax(b0)[0]
    assert soft[0].item() > 0
    assert soft[0].item() == pytest.approx(q1y * (1 - p0y), rel=1e-5)
    assert soft.sum().item() == pytest.approx(0.0, abs=1e-6)  # softmax-CE gradients sum to zero
    # the dominant's logits get no gradient from the extra term (its posterior is detached)
    z = torch.tensor([[b0, b1]], requires_grad=True)
    _mnl_loss(z, torch.tensor([0]))[0].backward()
    z2 = torch.tensor([[b0, b1]], requires_grad=True)
    _mnl_loss(z2, torch.tensor([0]), nl_weight=0.0)[0].backward()
    torch.testing.assert_close(z.grad[0, 0], z2.grad[0, 0])


# ---------------------------------------------------------------------- the KD loss on hand-made logits
def _kd_parts(z, y, present=None, **params):
    est = DistillationClassifier(**params)
    present = torch.ones(z.shape[:2], dtype=torch.bool) if present is None else present
    out = {"logits": masked_mean(z, present), "branches": z, "present": present}
    return est._loss(out, y, torch.arange(z.size(0)), epoch=0)[1]


def test_kd_term_is_kl_from_the_dominant_branch():
    # y = 0; branch 0 has the larger target probability -> dominant; branch 1 imitates it:
    # kd = KL(p_0 || p_1) = sum_c p_0,c (log p_0,c - log p_1,c)
    b0, b1 = [2.0, 0.0, -1.0], [0.0, 1.0, 0.0]
    parts = _kd_parts(torch.tensor([[b0, b1]]), torch.tensor([0]))
    p0, p1 = _softmax(b0), _softmax(b1)
    expected = sum(a * (math.log(a) - math.log(b)) for a, b in zip(p0, p1))
    assert parts["kd"] == pytest.approx(expected, rel=1e-5)
    # identical branches: nothing to distil; an absent second branch: nothing either
    assert _kd_parts(torch.tensor([[b0, b0]]), torch.tensor([0]))["kd"] == pytest.approx(0.0, abs=1e-7)
    assert _kd_parts(torch.tensor([[b0, b1]]), torch.tensor([0]), torch.tensor([[True, False]]))["kd"] == 0.0


def test_narrow_sage_layer_equals_the_standard_layer():
    """GraphSAGE's narrowing layers applied as mean(A) (x W_l^T) + b_l + x W_r^T (GraphMNL's struct branch) equal
    PyG's SAGEConv (aggregate, then W_l), outputs and parameter gradients, isolated nodes included."""
    from magkit.models.backbones import build_backbone
    from magkit.train.propagation import mean_adjacency

    torch.manual_seed(0)
    n = 50
    ei = torch.randint(0, 40, (2, 200))  # nodes 40..49 have no neighbours: A x = 0 there, the bias must remain
    adj = mean_adjacency(ei, n)
    net = build_backbone("sage", 16, 12, 5, num_layers=2, dropout=0.0)
    x = torch.randn(n, 16)
    outs, grads = [], []
    for narrow in (False, True):
        net.zero_grad()
        net.narrow_sage = narrow
        out = net(x, adj)
        out.square().sum().backward()
        outs.append(out.detach())
        grads.append([p.grad.clone() for p in net.parameters()])
    assert not torch.equal(outs[0][40:], torch.zeros_like(outs[0][40:]))
    assert torch.allclose(outs[0], outs[1], atol=1e-5)
    for a, b in zip(*grads):
        assert torch.allclose(a, b, atol=1e-4)
    # both layers narrow (16 -> 12 -> 5) and are computed by the narrowing branch; without narrow_sage both take
    # the plain path (aggregate, then W_l)
    calls = []
    plain = net._conv_spmm
    net._conv_spmm = lambda conv, *a: calls.append(conv) or plain(conv, *a)
    net.narrow_sage = True
    net(x, adj)
    assert calls == []
    calls.clear()
    net.narrow_sage = False
    net(x, adj)
    assert calls == [net.convs[0], net.convs[1]]


def test_early_input_is_built_once_and_rebuilt_when_the_blocks_change():
    from magkit.methods.inputs import GraphInputs

    xs = {"text": torch.randn(5, 3), "image": torch.randn(5, 2)}
    present = torch.tensor([[True, True], [True, False], [False, True], [True, True], [True, True]])
    inp = GraphInputs(xs=xs, present=present, modalities=("text", "image"), edge_index=torch.zeros(2, 0, dtype=torch.long),
                      num_nodes=5)
    a = inp.early_input()
    torch.testing.assert_close(a, torch.cat([xs["text"], xs["image"], present.float()], dim=1))
    assert inp.early_input() is a  # cached
    # another order asks for another block layout
    torch.testing.assert_close(inp.early_input(("image", "text")), torch.cat([xs["image"], xs["text"], present.float()], 1))
    # new tensors (a device move, a sampled batch) are never served the stale concatenation
    inp.xs = {"text": torch.zeros(5, 3), "image": torch.ones(5, 2)}
    b = inp.early_input()
    assert b is not a and torch.equal(b[:, :3], torch.zeros(5, 3)) and torch.equal(b[:, 3:5], torch.ones(5, 2))
