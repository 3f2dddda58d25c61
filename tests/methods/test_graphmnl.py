"""GraphMNL: behaviour of each component on small generated graphs (the benchmark measures quality at scale)."""

import inspect
import re

import pytest
import torch
import torch.nn.functional as F

import magkit
from magkit.exceptions import ConfigError, NotFittedError
from magkit.functional import arbitrate, dropout, negative_learning_loss, negative_set
from magkit.methods import create, get_method
from magkit.methods.graphmnl import (
    ABLATIONS,
    PAPER_FORM,
    GraphMNL,
    GraphMNLNet,
    GuidedMiniBatch,
    default_branches,
    guidance_pass,
    guided_pairs,
    kind_logits,
    network_inputs,
)
from magkit.models.graphmnl_net import mask_dropout, project_rows

FAST = {"hidden": 32, "epochs": 60, "patience": 60, "warmup": 5}


@pytest.fixture(scope="module")
def graph(graph_factory):
    return graph_factory(600, 4, homophily=0.8, seed=1, profile="text-dominant")


@pytest.fixture(scope="module")
def fitted(graph):
    return create("graphmnl", seed=0, **FAST).fit(graph)


def test_signature_lists_the_options():
    """GraphMNL's options are its signature (the node-classifier ones, then its own seventeen), typed, with defaults."""
    params = inspect.signature(magkit.GraphMNL).parameters
    own = ["branches", "prop_k", "struct_backbone", "struct_layers", "temperature", "beta", "smooth_steps", "delta",
           "warmup", "lam", "rho", "guidance", "teacher", "gate", "fixed_dominant", "output_prop", "output_k"]
    assert list(params)[-len(own):] == own and len(params) == 13 + len(own)
    assert all(p.kind is p.KEYWORD_ONLY and p.annotation is not p.empty for p in params.values())
    est = GraphMNL(lam=0.5)
    assert est.get_params()["lam"] == 0.5 and est.get_params()["teacher"] == "fused" and est.gate is False
    assert repr(est) == "GraphMNL(lam=0.5)"
    assert est.set_params(rho=0.1) is est and est.rho == 0.1


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
    assert not [k for k in vars(fitted) if k.startswith("_") and k != "_method"]  # no training-time state kept


def test_reliability_ranks_the_truly_better_modality(fitted):
    # ground truth from the generator: per node, which modality is truly more useful
    auc = fitted.diagnostics_["reliability_auc"]["raw"]
    assert auc > 0.65


def test_guidance_starts_after_warmup_and_is_gated(graph):
    """The default is ungated: after the warm-up every unlabelled node with a dominant branch is guided;
    ``graphmnl-gate`` guides fewer."""
    assert GraphMNL().gate is False and get_method("graphmnl-gate").fixed == {"gate": True}
    est = create("graphmnl-gate", seed=0, **{**FAST, "warmup": 10, "epochs": 30, "patience": 30}).fit(graph)
    guide = est.history_.series("guide")
    gate = est.history_.series("gate_rate")
    assert all(v == 0.0 for v in guide[:10]) and all(v == 0.0 for v in gate[:10])
    assert any(v > 0 for v in guide[10:])
    assert all(0.0 <= v <= 1.0 for v in gate)
    ungated = create("graphmnl", seed=0, **{**FAST, "warmup": 10, "epochs": 30, "patience": 30}).fit(graph)
    assert all(v == 0.0 for v in ungated.history_.series("guide")[:10])
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


@pytest.mark.parametrize("p", [0.0, 0.1, 0.5, 0.9, 1.0])
def test_float_mask_dropout_equals_functional_dropout_bitwise(p):
    x = torch.randn(37, 13)
    torch.manual_seed(5)
    a, after_a = dropout(x, p), torch.rand(3)
    torch.manual_seed(5)
    b, after_b = mask_dropout(x, p, True), torch.rand(3)
    assert torch.equal(a, b) and torch.equal(after_a, after_b)  # same values, same random draws consumed
    assert torch.equal(mask_dropout(x, p, False), x)


def test_guidance_term_over_guided_pairs_matches_the_per_node_sum(graph, fitted):
    """The pairwise guidance term equals (1/N) Σ_i g(i) Σ_{b guided at i} L_NL(i, b) computed densely, with
    per-class thresholds ρ C π_c under the fused teacher and one threshold ρ under the dominant one."""
    torch.manual_seed(0)
    n, nb, c = graph.num_nodes, len(fitted.branches_), graph.num_classes
    z = torch.randn(n, nb, c, dtype=torch.float64) * 3
    p_dom = torch.softmax(torch.randn(n, c, dtype=torch.float64) * 3, -1)
    g = torch.rand(n, dtype=torch.float64) * (torch.rand(n) < 0.6)
    inferior = torch.rand(n, nb) < 0.5
    rows, cols = guided_pairs(g, inferior)
    assert bool((cols[1:] >= cols[:-1]).all())  # sorted by branch
    for teacher in ("fused", "dominant"):
        _, state, _ = guidance_pass(fitted.set_params(teacher=teacher), graph, epoch=10)
        got = state.loss(z[rows, cols], rows, p_dom, g, n)
        counts = torch.bincount(graph.y[graph.train_mask], minlength=c).double() + 1  # add-one training shares
        prior = counts if teacher == "fused" else None
        neg = negative_set(p_dom, state.y_train, state.labelled, rho=fitted.rho, class_prior=prior)
        if prior is not None:  # the per-class thresholds change the set on this graph
            assert not torch.equal(neg, negative_set(p_dom, state.y_train, state.labelled, rho=fitted.rho))
        dense = torch.stack([negative_learning_loss(z[:, b], neg) for b in range(nb)], 1)
        want = (g.unsqueeze(1) * dense * inferior).sum() / n
        torch.testing.assert_close(got, want)
    fitted.set_params(teacher="fused")


@pytest.mark.parametrize("teacher", ["dominant", "fused"])
def test_teacher_selects_pairs_and_negative_sets(graph, teacher):
    """``teacher="fused"`` guides every present branch at a gated node with the fused posterior; ``"dominant"``
    only the branches inferior within their kind (never struct, alone in its kind), with the dominant branch's."""
    # 20 epochs: the fused teacher (prior counted once) is flat after fewer, no class below ρ yet
    est = create("graphmnl", seed=0, teacher=teacher, **{**FAST, "epochs": 20, "warmup": 6}).fit(graph)
    out, state, st = guidance_pass(est, graph, epoch=10)
    rows, cols = guided_pairs(st["g"], st["targets"])
    guide = state.loss(est.model_.guided_logits(out, rows, cols), rows, st["teacher"], st["g"], graph.num_nodes)
    assert float(guide.detach()) > 0
    dom, _, _ = arbitrate(st["r"], out["present"], est.delta)
    inferior, _ = state.grouped_arbitration(st["r"], out["present"], est.model_.kind_columns())
    assert not bool(inferior[:, est.branches_.index("struct")].any())
    pairs = torch.zeros_like(inferior)
    pairs[rows, cols] = True
    assert int(pairs.sum()) == rows.numel()  # no pair twice
    gated = (st["g"] > 0).unsqueeze(1)
    assert bool(gated.any())
    assert torch.equal(pairs, gated & (inferior if teacher == "dominant" else out["present"]))
    if teacher == "fused":  # the dominant branch itself is guided at gated nodes
        at = gated.squeeze(1).nonzero().squeeze(1)
        assert bool(pairs[at, dom[at]].all())
    probs = torch.softmax(out["branches"].detach(), -1)
    want = torch.softmax(out["logits"].detach(), -1) if teacher == "fused" else probs[torch.arange(len(dom)), dom.clamp(min=0)]
    torch.testing.assert_close(st["teacher"], want)


def test_ablations_are_registered_with_one_switch_each():
    expected = {
        "graphmnl": {}, "graphmnl-no-smoothing": {"beta": 0.0}, "graphmnl-gate": {"gate": True},
        "graphmnl-kd": {"guidance": "kd"}, "graphmnl-mnl-loss": {"guidance": "mnl"},
        "graphmnl-fixed-dominant": {"fixed_dominant": "auto"}, "graphmnl-no-guidance": {"guidance": "none"},
        "graphmnl-dominant-teacher": {"teacher": "dominant", "gate": True},
        "graphmnl-ntkd": {"guidance": "ntkd", "teacher": "dominant", "gate": True},
    }
    for name, fixed in expected.items():
        spec = get_method(name)
        assert spec.cls is GraphMNL and spec.fixed == fixed and spec.group == "graphmnl"
    assert set(expected) == set(ABLATIONS)


@pytest.mark.parametrize("name", ["graphmnl-kd", "graphmnl-mnl-loss", "graphmnl-fixed-dominant", "graphmnl-no-smoothing"])
def test_ablations_train(graph, name):
    est = create(name, seed=0, **FAST).fit(graph)
    assert est.score(graph, "test")["acc"] >= 0.8
    if name != "graphmnl-no-smoothing":
        assert any(v != 0.0 for v in est.history_.series("guide"))


def test_nontarget_distillation_guidance_trains_and_leaves_guided_targets_alone(graph):
    est = create("graphmnl", seed=0, guidance="ntkd", **FAST).fit(graph)
    assert est.score(graph, "test")["acc"] >= 0.8
    assert any(v > 0.0 for v in est.history_.series("guide"))
    # the per-pair term is the renormalised non-target KL against the teacher, at the teacher's class
    n, c = graph.num_nodes, graph.num_classes
    z = (torch.randn(n, c, dtype=torch.float64) * 3).requires_grad_(True)
    p_dom = torch.softmax(torch.randn(n, c, dtype=torch.float64) * 3, -1)
    _, state, _ = guidance_pass(est, graph, epoch=10)
    rows = (~state.labelled).nonzero().flatten()[:50]
    g = torch.ones(n, dtype=torch.float64)
    state.loss(z[rows], rows, p_dom, g, n).backward()
    assert (z.grad[rows, p_dom[rows].argmax(1)] == 0).all()
    assert bool((z.grad[rows] != 0).any())


def test_default_guides_every_branch_with_the_fused_teacher(graph, fitted):
    """The default: every present branch at a gated node is guided, the struct GNN included, with the fused
    prediction's negative set under per-class thresholds; the guidance reaches the struct GNN's layers."""
    assert (GraphMNL().teacher, GraphMNL().guidance) == ("fused", "nl")
    assert any(v != 0.0 for v in fitted.history_.series("guide"))
    model, s = fitted.model_, fitted.branches_.index("struct")
    out, state, st = guidance_pass(fitted, graph, epoch=FAST["epochs"])
    rows, cols = guided_pairs(st["g"], st["targets"])
    on_struct = cols == s
    assert bool(on_struct.any())
    torch.testing.assert_close(st["teacher"], torch.softmax(out["logits"].detach(), -1))
    # the struct pairs' guidance alone has a gradient on the struct GNN's layers
    model.zero_grad()
    rows = rows[on_struct]
    state.loss(model.guided_logits(out, rows, cols[on_struct]), rows, st["teacher"], st["g"], graph.num_nodes).backward()
    assert sum(float(p.grad.abs().sum()) for p in model.struct.parameters() if p.grad is not None) > 0
    model.eval()


def test_guided_struct_logits_are_a_second_pass_on_the_detached_input(graph, fitted):
    """The struct GNN's guided logits come from a second pass on its detached input (fresh dropout masks): the
    guidance reaches its GNN layers, not its input projection."""
    model, s = fitted.model_, fitted.branches_.index("struct")
    out, _, _ = guidance_pass(fitted, graph, epoch=10)
    rows = torch.arange(0, graph.num_nodes, 3)
    z = model.guided_logits(out, rows, torch.full_like(rows, s))
    model.zero_grad()
    z.logsumexp(-1).sum().backward()
    proj = model.struct_proj.weight.grad
    assert sum(float(p.grad.abs().sum()) for p in model.struct.parameters() if p.grad is not None) > 0
    assert not torch.equal(z, out["branches"][rows, s])
    assert proj is None or float(proj.abs().sum()) == 0
    model.eval()


def test_dominant_teacher_variant_is_the_paper_form(graph):
    """``graphmnl-dominant-teacher`` (multimodal negative learning's form): only inferior branches are guided
    (never the struct GNN, alone in its kind), by the dominant branch's posterior, through the gate; the
    ``graphmnl-ntkd`` variant keeps that form too."""
    spec = get_method("graphmnl-dominant-teacher")
    assert spec.fixed == PAPER_FORM == {"teacher": "dominant", "gate": True}
    assert get_method("graphmnl-ntkd").fixed == {"guidance": "ntkd", **spec.fixed}
    est = create("graphmnl-dominant-teacher", seed=0, **FAST).fit(graph)
    assert est.score(graph, "test")["acc"] >= 0.85
    assert any(v != 0.0 for v in est.history_.series("guide"))
    out, _, st = guidance_pass(est, graph, epoch=FAST["epochs"])
    _, cols = guided_pairs(st["g"], st["targets"])
    assert cols.numel() and not bool((cols == est.branches_.index("struct")).any())
    assert not torch.allclose(st["teacher"], torch.softmax(out["logits"].detach(), -1))  # not the fusion
    assert 0 < float((st["g"] > 0.5).float().mean()) < 1  # the gate is on


def test_fixed_dominant_uses_one_modality(graph):
    est = create("graphmnl", seed=0, fixed_dominant="text", **FAST).fit(graph)
    _, state, _ = guidance_pass(est, graph, epoch=FAST["epochs"])
    assert state.fixed_index.tolist() == [True, False, True, False, False]


def test_fixed_dominant_reaches_the_fused_teacher(graph, monkeypatch):
    """With the fused teacher the ablation's global choice reaches the transfer: the teacher is the fusion of the
    branches by the fixed reliability (the dominant modality's branches ~1 against ~0 for the other), not the
    prediction's per-node fusion; ``auto`` picks its modality when the transfer starts, not at epoch 0."""
    from magkit.methods.graphmnl import GuidanceState

    picks = []
    orig = GuidanceState.fixed_reliability

    def spy(self, r, present):
        picks.append(self.fixed_index is None)
        return orig(self, r, present)

    monkeypatch.setattr(GuidanceState, "fixed_reliability", spy)
    est = create("graphmnl-fixed-dominant", seed=0, **{**FAST, "epochs": 12, "warmup": 8, "patience": 12}).fit(graph)
    assert len(picks) == 12 - 8 and picks[0] and not any(picks[1:])  # first called (and the pick made) at epoch 8
    model = est.model_
    out, state, st = guidance_pass(est, graph, epoch=12)
    rows, _ = guided_pairs(st["g"], st["targets"])
    assert rows.numel() > 0
    fixed = state.fixed_reliability(st["r"], out["present"])
    want = torch.softmax(model.fuse(out["branches"].detach(), model.fusion_weights(fixed, out["present"])), -1)
    torch.testing.assert_close(st["teacher"], want)
    per_node = torch.softmax(out["logits"].detach(), -1)
    assert (st["teacher"] - per_node).abs().max() > 1e-3  # not the prediction's own fusion
    # the global modality's raw branch takes nearly all of the raw kind's weight at every node where it is present
    alpha = model.fusion_weights(fixed, out["present"])
    j = est.branches_.index("raw:" + next(m for m in est.modalities_ if state.fixed_index[est.branches_.index("raw:" + m)]))
    raw = [est.branches_.index("raw:" + m) for m in est.modalities_]
    share = alpha[:, j] / alpha[:, raw].sum(1)
    both = out["present"][:, raw].all(1)
    assert bool((share[both] > 0.9).all())
    model.eval()


@pytest.mark.parametrize("params, fragment", [
    ({"guidance": "pl"}, "GraphMNL: guidance='pl' is not one of 'nl', 'ntkd', 'kd', 'mnl', 'none'"),
    ({"teacher": "x"}, "GraphMNL: teacher='x' is not one of 'fused', 'dominant'"),
    ({"gate": "yes"}, "GraphMNL: gate='yes' is not a bool"),
    ({"temperature": 0}, "GraphMNL: temperature=0; allowed: > 0"),
    ({"beta": 2.0}, "GraphMNL: beta=2.0; allowed: 0 <= beta <= 1"),
    ({"rho": 1.5}, "GraphMNL: rho=1.5; allowed: 0 < rho < 1"),
    ({"lam": -1.0}, "GraphMNL: lam=-1.0; allowed: >= 0"),
    ({"prop_k": -1}, "GraphMNL: prop_k=-1; allowed: 0 <= prop_k <= 64"),
    ({"prop_k": 2**40}, "GraphMNL: prop_k=1099511627776; allowed: 0 <= prop_k <= 64"),
    ({"branches": ["raw:audio"]}, "branches=['raw:audio']; allowed"),
    ({"fixed_dominant": "audio"}, "fixed_dominant='audio'; allowed: None, 'auto', 'text', 'image'"),
])
def test_bad_parameters(graph, params, fragment):
    with pytest.raises(ConfigError, match=re.escape(fragment)) as err:
        create("graphmnl", **{**FAST, "epochs": 2}, **params).fit(graph)
    assert "\n" not in str(err.value)


def test_removed_options_are_refused():
    with pytest.raises(ConfigError, match="unknown parameter 'struct_input'"):
        GraphMNL().set_params(struct_input="mean")


def test_not_fitted(graph):
    with pytest.raises(NotFittedError):
        _ = GraphMNL().diagnostics_
    with pytest.raises(NotFittedError):
        GraphMNL().predict(graph)
    with pytest.raises(NotFittedError):
        kind_logits(GraphMNL(), graph)


def test_prop_branch_propagates_the_shared_projection(graph, fitted):
    """prop:m reads ReLU(Â^K (W_m x_m) + b_m), raw:m ReLU(W_m x_m + b_m), with the same W_m (eval mode, K = 2)."""
    from magkit.train.propagation import normalized_adjacency

    net = fitted.model_.eval()
    inp = network_inputs(fitted, graph)
    a = normalized_adjacency(graph.edge_index, graph.num_nodes).to_dense()
    lin = net.proj["text"]
    x = inp.xs["text"]
    with torch.no_grad():
        z = net(inp)["branches"]
        raw = net.heads["raw_text"](torch.relu(lin(x)))
        prop = net.heads["prop_text"](torch.relu(a @ (a @ (x @ lin.weight.T)) + lin.bias))
    torch.testing.assert_close(z[:, 0], raw)
    torch.testing.assert_close(z[:, 2], prop, rtol=1e-4, atol=1e-5)


def test_struct_input_is_its_own_projection_of_the_early_input(graph, fitted):
    """The struct branch reads h0 = ReLU(Q [x_1 | ... | x_M | presence]) with its own Q (one input-width product),
    then the GNN at width h; the shared projections do not reach it."""
    net = fitted.model_.eval()
    inp = network_inputs(fitted, graph)
    x_early = inp.early_input(net.modalities)
    assert net.struct_proj.in_features == x_early.shape[1] and net.struct.convs[0].in_channels == FAST["hidden"]
    j = fitted.branches_.index("struct")
    with torch.no_grad():
        z = net(inp)["branches"][:, j]
        torch.testing.assert_close(z, net.struct(torch.relu(net.struct_proj(x_early)), inp.mean_adj()))
        saved = {m: lin.weight.clone() for m, lin in net.proj.items()}
        for lin in net.proj.values():
            lin.weight.zero_()
        torch.testing.assert_close(net(inp)["branches"][:, j], z)
        for m, lin in net.proj.items():
            lin.weight.copy_(saved[m])


def test_a_modality_without_a_branch_is_not_projected(graph, monkeypatch):
    """The struct branch does not read the shared projections, so a modality without a raw/prop branch is not
    projected at all."""
    import magkit.models.graphmnl_net as net_module

    used = []
    linear = net_module.F.linear

    def spy(x, weight, *args, **kwargs):
        used.append(weight)
        return linear(x, weight, *args, **kwargs)

    est = create("graphmnl", seed=0, branches=["prop:text", "struct"], **{**FAST, "epochs": 2}).fit(graph)
    net = est.model_.eval()
    inp = network_inputs(est, graph)
    monkeypatch.setattr(net_module.F, "linear", spy)
    with torch.no_grad():
        z = net(inp)["branches"]
    assert any(w is net.proj["text"].weight for w in used)
    assert not any(w is net.proj["image"].weight for w in used)
    assert torch.isfinite(z).all()


# reliability of (raw:text, raw:image, prop:text, prop:image, struct) at two nodes, for the fusion hand examples
REL_TWO_NODES = torch.tensor([[0.9, 0.1, 0.2, 0.6, 0.1],
                              [0.5, 0.5, 0.5, 0.5, 0.9]])


def test_grouped_fusion_and_arbitration_compare_branches_of_one_kind(graph, fitted):
    """raw:* compete among themselves, prop:* among themselves, struct alone; each kind present at a node gets an
    equal share of α; inferior branches are ≥ δ below their own kind's best, so struct never is."""
    net = GraphMNLNet(fitted.branches_, graph.modalities, graph.modality_dims, 8, graph.num_classes, temperature=0.1)
    assert net.kind_columns() == [[0, 1], [2, 3], [4]]
    rel = REL_TWO_NODES
    present = torch.tensor([[True, True, True, True, True],
                            [False, True, True, True, True]])
    alpha = net.fusion_weights(rel, present)
    torch.testing.assert_close(alpha.sum(1), torch.ones(2))
    torch.testing.assert_close(alpha[:, 4], torch.full((2,), 1 / 3))
    e = torch.exp(torch.tensor(8.0))  # (0.9 - 0.1) / T
    torch.testing.assert_close(alpha[0, :2], torch.stack([e / (e + 1), 1 / (e + 1)]) / 3)
    torch.testing.assert_close(alpha[1, :2], torch.tensor([0.0, 1 / 3]))  # an absent branch gets nothing
    _, state, _ = guidance_pass(fitted, graph, epoch=0)
    inferior, margin = state.grouped_arbitration(rel, present, net.kind_columns())
    assert inferior.tolist() == [[False, True, True, False, False], [False, False, False, False, False]]
    torch.testing.assert_close(margin, torch.tensor([0.8, 0.0]))
    fitted.model_.eval()


def test_kind_logits_rebuild_the_fused_prediction(graph):
    """kind_logits: the kinds' within-kind fused logits and presence; sharing them equally among the present kinds
    and counting the prior once gives back the estimator's fused logits."""
    from magkit.functional import prior_once_fusion

    est = create("graphmnl", seed=0, **{**FAST, "epochs": 10}).fit(graph)
    zk, kp, z = kind_logits(est, graph)
    n, c = graph.num_nodes, graph.num_classes
    assert zk.shape == (n, 3, c) and kp.shape == (n, 3) and z.shape == (n, 5, c)
    assert bool((kp == 1).all())  # every modality present: every kind present
    torch.testing.assert_close(zk[:, 2], z[:, 4])  # struct is alone in its kind
    share = kp / kp.sum(1, keepdim=True)
    fused = prior_once_fusion((share.unsqueeze(-1) * zk).sum(1), share, est.model_.log_prior)
    torch.testing.assert_close(torch.softmax(fused, 1), est.predict_proba(graph))
    est.model_.train()
    kind_logits(est, graph)
    assert est.model_.training  # the model's mode is restored


def test_fusion_counts_the_prior_once(graph, fitted):
    """Fused logits = Σ_b α_b z_b − (1 − Σ_k s_k²) log π over the kinds' shares s_k; log π from the training
    labels, add-one smoothed."""
    net = fitted.model_.eval()
    counts = torch.bincount(graph.y[graph.train_mask], minlength=graph.num_classes).double() + 1
    torch.testing.assert_close(net.log_prior, (counts / counts.sum()).log().float())
    with torch.no_grad():
        out = net(network_inputs(fitted, graph))
    alpha, zs = out["alpha"], out["branches"]
    shares = torch.stack([alpha[:, c].sum(1) for c in net.kind_columns()], 1)
    plain = (alpha.unsqueeze(-1) * zs).sum(1)
    expected = plain - (1 - shares.pow(2).sum(1, keepdim=True)) * net.log_prior
    torch.testing.assert_close(out["logits"], expected)
    assert float((out["logits"] - plain).abs().max()) > 0.1  # the correction is not negligible here


@pytest.mark.parametrize("teacher", ["dominant", "fused"])
def test_gate_instability_is_measured_on_the_teacher(graph, monkeypatch, teacher):
    """The gate's temporal instability s(i) is the teacher's: the dominant branch's posterior against its moving
    average, or (teacher="fused") the fused posterior against the fused moving average."""
    import magkit.methods.graphmnl.guidance as gd

    est = create("graphmnl", seed=0, teacher=teacher, gate=True, **{**FAST, "epochs": 4, "warmup": 2}).fit(graph)
    seen = []
    real = gd.instability

    def spy(p, avg, kind):
        seen.append((p, avg))
        return real(p, avg, kind)

    monkeypatch.setattr(gd, "instability", spy)
    out, state, st = guidance_pass(est, graph, epoch=3)
    (p, avg), = seen
    fused = torch.softmax(out["logits"].detach(), -1)
    if teacher == "fused":
        torch.testing.assert_close(p, fused)
        assert avg is state.ema
    else:
        dom = arbitrate(st["r"], out["present"], est.delta)[0].clamp(min=0)
        probs = torch.softmax(out["branches"].detach(), -1)
        torch.testing.assert_close(p, probs[torch.arange(len(dom)), dom])
        assert not torch.allclose(p, fused)
    est.model_.eval()


def test_minibatch_graphmnl_learns_guides_and_is_reproducible(graph, fitted):
    """batch_size trains GraphMNL on sampled neighbourhoods: the full-batch quality floor holds, the guidance term
    is on after warm-up (guided unlabelled seeds join the batches), and a fit is reproducible from its seed."""
    fits = [create("graphmnl", seed=0, batch_size=64, **FAST).fit(graph) for _ in range(2)]
    est = fits[0]
    s = est.score(graph, "test")
    assert s["acc"] >= 0.85 and s["f1"] >= 0.8
    assert s["acc"] >= fitted.score(graph, "test")["acc"] - 0.03
    guide, gate = est.history_.series("guide"), est.history_.series("gate_rate")
    assert all(v == 0.0 for v in guide[:5]) and all(v > 0.0 for v in guide[5:])
    assert max(gate) > 0.3
    assert torch.equal(fits[0].predict_proba(graph), fits[1].predict_proba(graph))
    assert est.diagnostics_["branches"] == list(default_branches(graph.modalities))
    assert "_state" not in vars(est)  # the training-time guidance state is dropped after the fit


def test_minibatch_state_reuses_the_evaluation_pass_exactly(graph, monkeypatch):
    """The next epoch's state reuses the evaluation's whole-graph pass (same parameters, same reliability): the fit
    is the same as recomputing it, with one eval-mode forward pass less per epoch after the first."""
    forward = GraphMNLNet.forward
    fits, passes = [], []
    for reuse in (True, False):
        count = []
        monkeypatch.setattr(GraphMNLNet, "forward",
                            lambda self, inp, seen=count: seen.append(self.training) or forward(self, inp))
        est = create("graphmnl", seed=0, batch_size=64, **FAST)
        est.reuse_eval_pass = reuse
        fits.append(est.fit(graph))
        passes.append(sum(not t for t in count))
    assert fits[0].history_.series("val_acc") == fits[1].history_.series("val_acc")
    assert fits[0].history_.series("loss") == fits[1].history_.series("loss")
    assert torch.equal(fits[0].predict_proba(graph), fits[1].predict_proba(graph))
    assert passes[1] - passes[0] == FAST["epochs"] - 1


def test_minibatch_guidance_term_is_an_unbiased_estimate(graph, fitted):
    """Over a partition of the U guided nodes into batches of m, the mini-batch guidance terms, (U / N) · mean over
    the batch's guided seeds of Σ_b g L, average to the full-batch term (1/N) Σ_i g(i) Σ_b L(i, b)."""
    from magkit.train.sampler import SampledSubgraph

    n, c, nb = graph.num_nodes, graph.num_classes, len(fitted.branches_)
    _, state, _ = guidance_pass(fitted, graph, epoch=10)
    fitted.model_.eval()
    gen = torch.Generator().manual_seed(0)
    z = torch.randn(n, nb, c, generator=gen, dtype=torch.float64) * 2
    present = torch.ones(n, nb, dtype=torch.bool)
    cand = (~state.labelled).nonzero().flatten()[:120]
    g = torch.zeros(n, dtype=torch.float64)
    g[cand] = torch.rand(120, generator=gen, dtype=torch.float64) + 0.1
    targets = torch.zeros(n, nb, dtype=torch.bool)
    targets[cand, 0] = True
    targets[cand[::2], 1] = True
    teacher = torch.softmax(torch.randn(n, c, generator=gen, dtype=torch.float64) * 3, -1)
    state.epoch = {"g": g, "targets": targets, "teacher": teacher, "gate_rate": 0.0, "inferior_rate": 0.0}
    rows, cols = guided_pairs(g, targets)
    full = float(state.loss(z[rows, cols], rows, teacher, g, n))
    lab = state.labelled.nonzero().flatten()[:10]
    parts = []
    for guided in cand.view(4, 30):
        n_id = torch.cat([lab, guided])
        out = {"branches": z[n_id], "logits": z[n_id].sum(1), "present": present[n_id]}
        batch = SampledSubgraph(n_id=n_id, edge_index=torch.zeros(2, 0, dtype=torch.long), batch_size=n_id.numel())
        _, stats = GuidedMiniBatch.loss(out, fitted.model_, batch, lab.numel(), graph.y, state, 120, n,
                                        torch.device("cpu"), 1.0)
        parts.append(stats["guide"])
    assert full > 0
    assert sum(parts) / len(parts) == pytest.approx(full, rel=1e-6)
    assert len({round(v, 6) for v in parts}) > 1  # the batches' terms differ; only their mean is the full term


def test_minibatch_trains_out_of_core_on_a_memory_mapped_graph(graph, tmp_path, monkeypatch):
    """On a memory-mapped graph mini-batch GraphMNL never reads a whole feature block: the whole-graph passes
    (epoch state, evaluation, the fitted model's reliability, diagnostics) project the blocks row chunk by row
    chunk, and the fit equals the in-memory mini-batch fit."""
    from magkit.data.ondisk import MappedFeatures, load_mmap_graph, save_mmap_graph

    save_mmap_graph(graph, tmp_path / "g")
    mapped = load_mmap_graph(tmp_path / "g")
    for m in ("train_mask", "val_mask", "test_mask"):
        mapped[m] = graph[m]
    assert mapped.is_mapped
    ram = create("graphmnl", seed=0, batch_size=64, **FAST).fit(graph)

    def refuse(self):
        raise AssertionError("a whole feature block was read")

    monkeypatch.setattr(MappedFeatures, "materialize", refuse)
    est = create("graphmnl", seed=0, batch_size=64, **FAST).fit(mapped)
    s = est.score(mapped, "test")
    assert s["acc"] >= 0.85 and s["f1"] >= 0.8
    assert any(v > 0.0 for v in est.history_.series("guide"))
    proba = est.predict_proba(mapped)
    assert proba.shape == (graph.num_nodes, graph.num_classes)
    torch.testing.assert_close(proba.sum(1), torch.ones(graph.num_nodes))
    d = est.diagnostics_
    assert d["reliability"].shape == (graph.num_nodes, 5) and 0.0 < d["dominant_share"]["struct"] <= 1.0
    assert est.history_.series("val_acc") == ram.history_.series("val_acc")  # the same fit as from memory
    torch.testing.assert_close(proba, ram.predict_proba(graph))


def test_project_rows_reads_mapped_blocks_chunk_by_chunk(graph, tmp_path):
    """The block-by-block first layer equals F.linear on the concatenated in-memory blocks, over several chunks
    (absent rows read as zeros, the presence block appended as in the early-fusion input)."""
    from magkit.data.ondisk import load_mmap_graph, save_mmap_graph
    save_mmap_graph(graph, tmp_path / "g")
    mapped = load_mmap_graph(tmp_path / "g")
    pres = graph.modality_mask
    blocks = [mapped.feature(m).masked(graph.presence(m)) for m in graph.modalities] + [pres.float()]
    ram = torch.cat([graph.feature(m) * graph.presence(m).unsqueeze(1) for m in graph.modalities] + [pres.float()], 1)
    w, b = torch.randn(7, ram.shape[1]), torch.randn(7)
    torch.testing.assert_close(project_rows(blocks, w, b, rows=97), F.linear(ram, w, b))


# ---------------------------------------------------------------------------------------------- the topo branch
TOPO = ("raw:text", "raw:image", "prop:text", "prop:image", "struct", "topo")


@pytest.fixture(scope="module")
def topo_fitted(graph):
    return create("graphmnl", seed=0, branches=list(TOPO), **FAST).fit(graph)


def test_topo_branch_joins_the_structure_kind(graph, topo_fitted):
    """``topo`` (ReLU(Â E + b), a learned vector per node) is a structure branch: it competes with struct within
    the struct kind, the kinds (and their shares) stay raw / prop / struct, and the full quality floor holds."""
    est = topo_fitted
    assert est.branches_ == TOPO
    assert est.model_.kinds() == {"raw": [0, 1], "prop": [2, 3], "struct": [4, 5]}
    assert est.model_.topo_emb.shape == (graph.num_nodes, FAST["hidden"])
    s = est.score(graph, "test")
    assert s["acc"] >= 0.85 and s["f1"] >= 0.8
    d = est.diagnostics_
    assert d["branch_val_acc"]["topo"] > 1.5 / graph.num_classes  # it learned from the structure alone
    torch.testing.assert_close(d["alpha"].sum(1), torch.ones(graph.num_nodes))
    # within the struct kind the weights of struct and topo share the kind's third of the fusion
    torch.testing.assert_close(d["alpha"][:, 4:].sum(1), torch.full((graph.num_nodes,), 1 / 3))


def test_topo_alone_reads_only_the_structure(graph):
    """branches=["topo"]: a structure-only classifier (no feature is read); shuffling every feature leaves its
    predictions unchanged, and on this homophilous graph it is far above chance."""
    est = create("graphmnl", seed=0, branches=["topo"], **FAST).fit(graph)
    shuffled = graph.clone()
    gen = torch.Generator().manual_seed(0)
    for m in graph.modalities:
        x = graph.feature(m)
        shuffled[f"x_{m}"] = x[torch.randperm(x.shape[0], generator=gen)]
    assert torch.equal(est.predict_proba(graph), est.predict_proba(shuffled))
    assert est.score(graph, "test")["acc"] > 2.0 / graph.num_classes


def test_topo_starts_at_zero_and_abstains_without_edges(graph):
    """E starts at zero (every node's topo logits are the same before training); a node without an edge has
    no topo prediction (zero fusion weight) while its other branches are present."""
    g = graph.clone()
    lonely = int((~g.train_mask).nonzero()[0])
    keep = (g.edge_index != lonely).all(0)
    g.edge_index = g.edge_index[:, keep]
    est = create("graphmnl", seed=0, branches=list(TOPO), **{**FAST, "epochs": 3}).fit(g)
    fresh = GraphMNLNet(TOPO, g.modalities, g.modality_dims, FAST["hidden"], g.num_classes, num_nodes=g.num_nodes)
    assert not fresh.topo_emb.any()
    with torch.no_grad():
        z = fresh.eval()(network_inputs(est, g))["branches"][:, TOPO.index("topo")]
    assert torch.equal(z, z[:1].expand_as(z))
    d = est.diagnostics_
    j = TOPO.index("topo")
    assert d["alpha"][lonely, j] == 0.0 and d["alpha"][lonely, :j].sum() > 0.99
    ei = g.edge_index[:, g.edge_index[0] != g.edge_index[1]]
    has_edge = torch.zeros(g.num_nodes, dtype=torch.bool)
    has_edge[ei.flatten()] = True
    assert not has_edge[lonely] and bool(has_edge.sum() >= g.num_nodes - 3)
    assert torch.equal(d["alpha"][:, j] > 0, has_edge)


def test_topo_reads_its_rows_by_global_node_id(topo_fitted, graph):
    """A subgraph holding every node in another order (as sampled inference builds one) gives each node the same
    branch logits as the whole graph: the topo branch picks E's rows by the inputs' global node ids."""
    est = topo_fitted
    inp = network_inputs(est, graph)
    perm = torch.randperm(graph.num_nodes, generator=torch.Generator().manual_seed(3))
    inv = torch.empty_like(perm)
    inv[perm] = torch.arange(perm.numel())
    sub = inp.subset(perm, inv[graph.edge_index])
    est.model_.eval()
    with torch.no_grad():
        whole = est.model_(inp)["branches"]
        part = est.model_(sub)["branches"]
    torch.testing.assert_close(part, whole[perm], rtol=1e-5, atol=1e-5)


def test_topo_is_transductive_and_refits_cleanly(graph, graph_factory, topo_fitted):
    other = graph_factory(500, 4, homophily=0.8, seed=2, profile="text-dominant")
    with pytest.raises(ConfigError, match="the topo branch is transductive: fitted on a graph of 600 nodes, got 500"):
        topo_fitted.predict(other)
    est = create("graphmnl", seed=0, branches=list(TOPO), **{**FAST, "epochs": 5}).fit(graph)
    est.fit(other)  # a refit on another graph starts from scratch
    assert est.model_.topo_emb.shape[0] == 500 and est.predict(other).shape == (500,)


def test_topo_trains_in_mini_batches(graph, topo_fitted):
    est = create("graphmnl", seed=0, branches=list(TOPO), batch_size=64, **FAST).fit(graph)
    s = est.score(graph, "test")
    assert s["acc"] >= 0.85 and s["f1"] >= 0.8
    assert est.diagnostics_["branch_val_acc"]["topo"] > 1.5 / graph.num_classes


def test_duplicate_branch_is_refused(graph):
    with pytest.raises(ConfigError, match="a branch is named twice"):
        create("graphmnl", branches=["struct", "topo", "topo"], **{**FAST, "epochs": 2}).fit(graph)


def test_a_refit_equals_a_fresh_fit(graph):
    """Fitting the same estimator twice gives the fresh fit's model: no per-epoch state (the next epoch's
    reliability, moving averages) carries over from the first fit."""
    est = create("graphmnl", seed=0, **{**FAST, "epochs": 12, "warmup": 3})
    first = est.fit(graph).predict_proba(graph)
    again = est.fit(graph).predict_proba(graph)
    fresh = create("graphmnl", seed=0, **{**FAST, "epochs": 12, "warmup": 3}).fit(graph).predict_proba(graph)
    assert torch.equal(first, fresh) and torch.equal(again, fresh)


def test_a_warmup_longer_than_the_fit_is_reported(graph, caplog):
    import logging

    import magkit.methods.graphmnl.estimator as gm

    gm._WARNED.clear()
    with caplog.at_level(logging.WARNING, logger="magkit.methods.graphmnl"):
        est = create("graphmnl", seed=0, **{**FAST, "epochs": 4, "warmup": 20}).fit(graph)
        create("graphmnl", seed=1, **{**FAST, "epochs": 4, "warmup": 20}).fit(graph)
    assert "warmup 20 >= epochs 4: the guidance term never starts" in caplog.text
    assert caplog.text.count("never starts") == 1  # once per setting, not once per seed
    assert max(est.history_.series("guide")) == 0.0
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="magkit.methods.graphmnl"):
        create("graphmnl-no-guidance", seed=0, **{**FAST, "epochs": 4, "warmup": 20}).fit(graph)
    assert "never starts" not in caplog.text


def test_topo_branch_is_one_propagation_of_the_node_embeddings(graph):
    """topo: head(ReLU(Â E + b_E)); checked against a dense product with a random E."""
    from magkit.train.propagation import normalized_adjacency

    est = create("graphmnl", seed=0, branches=["topo"], **{**FAST, "epochs": 2}).fit(graph)
    net = est.model_.eval()
    inp = network_inputs(est, graph)
    with torch.no_grad():
        net.topo_emb.normal_()
        got = net(inp)["branches"][:, 0]
        a = normalized_adjacency(graph.edge_index, graph.num_nodes).to_dense()
        want = net.heads["topo"](torch.relu(a @ net.topo_emb + net.topo_bias))
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


@pytest.fixture(scope="module")
def struct_gcn_fitted(graph):
    return create("graphmnl", seed=0, branches=["+struct:gcn"], **FAST).fit(graph)


def test_plus_names_add_branches_to_the_default_set(graph, struct_gcn_fitted):
    est = struct_gcn_fitted
    assert est.branches_ == default_branches(graph.modalities) + ("struct:gcn",)
    # struct:gcn is a structure branch: the kinds (and their shares) stay raw / prop / struct
    assert est.model_.kinds() == {"raw": [0, 1], "prop": [2, 3], "struct": [4, 5]}
    s = est.score(graph, "test")
    assert s["acc"] >= 0.85 and s["f1"] >= 0.8
    d = est.diagnostics_
    assert d["branch_val_acc"]["struct:gcn"] >= 0.8
    # the two structure GNNs share the struct kind's third of the fusion
    torch.testing.assert_close(d["alpha"][:, 4:].sum(1), torch.full((graph.num_nodes,), 1 / 3))


def test_second_struct_gnn_reads_the_struct_input_with_its_own_layers(graph, struct_gcn_fitted):
    """struct:gcn = a GCN on the struct branch's h0 (its own projection of the early input) over Â; struct keeps
    its GraphSAGE over D^-1 A; the two share h0's projection and nothing else."""
    est = struct_gcn_fitted
    net = est.model_.eval()
    inp = network_inputs(est, graph)
    with torch.no_grad():
        h0 = torch.relu(net.struct_proj(inp.early_input(net.modalities)))
        z = net(inp)["branches"]
        torch.testing.assert_close(z[:, 5], net.struct_more["gcn"](h0, inp.norm_adj()))
        torch.testing.assert_close(z[:, 4], net.struct(h0, inp.mean_adj()))
    assert type(net.struct_more["gcn"].convs[0]).__name__ == "GCNConv"
    assert type(net.struct.convs[0]).__name__ == "SAGEConv"
    gcn_params = {id(q) for q in net.struct_more["gcn"].parameters()}
    assert not gcn_params & {id(q) for q in net.struct.parameters()}


def test_guidance_of_a_struct_gnn_reaches_its_own_layers_only(graph, struct_gcn_fitted):
    """The guidance pass of struct:gcn runs on the detached h0: its loss has gradients in the GCN's layers and none
    in the shared projection."""
    est = struct_gcn_fitted
    net = est.model_
    out, _, _ = guidance_pass(est, graph, epoch=10)
    rows = torch.arange(0, graph.num_nodes, 7)
    cols = torch.full_like(rows, 5)
    net.zero_grad()
    net.guided_logits(out, rows, cols).logsumexp(-1).sum().backward()
    assert all(q.grad is None or not q.grad.any() for q in net.struct_proj.parameters())
    assert all(q.grad is None or not q.grad.any() for q in net.struct.parameters())
    assert any(q.grad is not None and q.grad.abs().sum() > 0 for q in net.struct_more["gcn"].parameters())
    net.eval()


def test_minus_names_drop_default_branches(graph):
    est = create("graphmnl", seed=0, branches=["-prop:image", "+struct:gcn"], **FAST).fit(graph)
    assert est.branches_ == ("raw:text", "raw:image", "prop:text", "struct", "struct:gcn")
    assert est.model_.kinds() == {"raw": [0, 1], "prop": [2], "struct": [3, 4]}


@pytest.mark.parametrize("branches, fragment", [
    (["raw:text", "raw:image", "struct:gcn"], "add 'struct' to the branches"),
    (["+struct:sage"], "repeats struct (struct_backbone='sage')"),
    (["+struct:gcn", "raw:text"], "either name every branch or only edit the default set"),
    (["+struct:gat"], "allowed:"),
    (["+prop:text"], "adds 'prop:text', already a default branch"),
    (["-struct:gcn"], "removes 'struct:gcn', not a default branch"),
    (["-raw:audio"], "branches: 'raw:audio'; allowed:"),
])
def test_struct_branch_errors(graph, branches, fragment):
    with pytest.raises(ConfigError, match=re.escape(fragment)):
        create("graphmnl", seed=0, branches=branches, **FAST).fit(graph)


def test_explain_report_scales_the_plot_to_the_data(fitted, graph, tmp_path):
    from magkit.methods.graphmnl.diagnostics import explain_report, plot_diagnostics

    rep = explain_report(fitted, graph)
    alpha = fitted.diagnostics_["alpha"]
    assert rep["alpha_range"] == [0.0, float(alpha.max())] and rep["alpha_range"][1] < 1.0
    for b in rep["branches"]:  # every node counted once per branch over the data's range
        assert sum(rep["alpha_histograms"][b]) == alpha.shape[0]
    assert rep["gate"] is False and rep["warmup"] == fitted.warmup
    assert len(rep["loss_terms"]["ce"]) == len(fitted.history_.epochs)
    assert all(v == 0 for v in rep["loss_terms"]["guide"][: fitted.warmup])  # no guidance during the warm-up
    out = plot_diagnostics(rep, tmp_path / "d.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# ---------------------------------------------------------------------------------------------- output propagation
def test_output_propagation_is_off_by_default(graph, fitted):
    assert fitted.output_prop is None and fitted.output_alpha_ == 1.0 and "output_scores_" not in vars(fitted)
    proba = fitted.predict_proba(graph)
    assert torch.allclose(proba, torch.softmax(fitted.forward(graph)["logits"], dim=1))


def test_output_propagation_chosen_on_validation(graph, fitted):
    """output_prop="val": the same training as the default fit; a is the candidate with the best validation
    accuracy (ties: the least propagation), and the prediction is APPNP's propagation of the fused posterior."""
    from magkit.functional import accuracy
    from magkit.train.propagation import propagate

    est = create("graphmnl", seed=0, output_prop="val", **FAST).fit(graph)
    for a, b in zip(est.model_.state_dict().values(), fitted.model_.state_dict().values()):
        assert torch.equal(a, b)  # training is unchanged
    p0 = fitted.predict_proba(graph)
    vi = graph.split_index("val")
    want = {a: accuracy((p0 if a == 1.0 else propagate(graph, p0, 10, alpha=a))[vi], graph.y[vi])
            for a in GraphMNL.OUTPUT_ALPHAS}
    assert est.output_scores_ == pytest.approx({str(a): v for a, v in want.items()})
    best = max(want.values())
    assert est.output_alpha_ == next(a for a in GraphMNL.OUTPUT_ALPHAS if want[a] == best)
    assert est.diagnostics_["output_alpha"] == est.output_alpha_ and fitted.diagnostics_["output_alpha"] == 1.0
    from magkit.bench.cell import fit_cell

    row = fit_cell(graph, "graphmnl", {"output_prop": "val", **FAST}, 0)
    assert row["output_alpha"] == est.output_alpha_ and row["test_acc"] == est.score(graph, "test")["acc"]
    assert "output_alpha" not in fit_cell(graph, "graphmnl", FAST, 0)
    h = est.predict_proba(graph)
    expect = p0 if est.output_alpha_ == 1.0 else propagate(graph, p0, 10, alpha=est.output_alpha_)
    expect = expect / expect.sum(1, keepdim=True)
    assert torch.allclose(h, expect, atol=1e-6)
    assert torch.allclose(h.sum(1), torch.ones(graph.num_nodes), atol=1e-5)  # still distributions
    ti = graph.split_index("test")
    assert est.score(graph, "test")["acc"] == pytest.approx(accuracy(expect[ti], graph.y[ti]))


def test_fixed_output_alpha_smooths_the_prediction(graph, fitted):
    est = create("graphmnl", seed=0, output_prop=0.1, output_k=5, **FAST).fit(graph)
    assert est.output_alpha_ == 0.1
    p0, h = fitted.predict_proba(graph), est.predict_proba(graph)
    # neighbours agree more after propagation: the mean total variation along edges shrinks
    src, dst = graph.edge_index
    tv = lambda p: float((p[src] - p[dst]).abs().sum(1).mean())  # noqa: E731
    assert tv(h) < 0.8 * tv(p0)


def test_output_alpha_survives_save_and_load(graph, tmp_path):
    from magkit.methods.persistence import load_estimator

    est = create("graphmnl", seed=0, output_prop=0.2, **FAST).fit(graph)
    back = load_estimator(est.save(tmp_path / "m.safetensors"))
    assert back.output_alpha_ == 0.2
    assert torch.allclose(back.predict_proba(graph), est.predict_proba(graph))


@pytest.mark.parametrize("params, fragment", [
    ({"output_prop": "auto"}, "output_prop='auto' is not one of 'val' or float or None"),
    ({"output_prop": "off"}, "output_prop='off' is not one of"),
    ({"output_prop": 0.0}, "output_prop=0.0; allowed: none (off), val or a number 0 < a <= 1"),
    ({"output_prop": 1.5}, "output_prop=1.5; allowed"),
    ({"output_prop": True}, "output_prop=True is not one of"),
    ({"output_k": 0}, "output_k=0; allowed: 1 <= output_k <= 64"),
])
def test_bad_output_propagation(graph, params, fragment):
    with pytest.raises(ConfigError, match=re.escape(fragment)):
        create("graphmnl", **params, **FAST).fit(graph)


def test_output_alpha_is_chosen_by_accuracy_under_a_loss_monitor(graph):
    """Validation loss would always keep the flatter, unpropagated posterior: a is chosen by accuracy instead."""
    from magkit.functional import accuracy

    est = create("graphmnl", seed=0, output_prop="val", monitor="val_loss", **FAST).fit(graph)
    p0 = create("graphmnl", seed=0, monitor="val_loss", **FAST).fit(graph).predict_proba(graph)
    vi = graph.split_index("val")
    assert est.output_scores_["1.0"] == pytest.approx(accuracy(p0[vi], graph.y[vi]))
    assert est.output_scores_[str(est.output_alpha_)] == max(est.output_scores_.values())
