"""GraphMNL: behaviour of each component on small generated graphs (the benchmark measures quality at scale)."""

import math
import re

import pytest
import torch
import torch.nn.functional as F

from magkit.exceptions import ConfigError, NotFittedError
from magkit.functional import dropout, negative_learning_loss, negative_set
from magkit.methods import create, get_method
from magkit.methods.graphmnl import ABLATIONS, GraphMNL, _dropout, default_branches

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
    """The default is ungated (twenty-first round): after the warm-up every unlabelled node with a dominant branch
    is guided; ``graphmnl-gate`` (the spec's gate) guides fewer."""
    assert GraphMNL.defaults["gate"] is False and get_method("graphmnl-gate").fixed == {"gate": True}
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


def test_gate_without_margin_term_closes_on_instability_only(graph):
    """``tau_m=None``: g = 1[s < τ_s]; with τ_s above any total-variation distance it never closes (the ungated
    rate), while the spec's margin term closes it at some nodes."""
    kw = {**FAST, "warmup": 10, "epochs": 20, "patience": 20, "gate": True}
    wide = create("graphmnl", seed=0, tau_s=1.01, tau_m=None, **kw).fit(graph).history_.series("gate_rate")
    margin = create("graphmnl", seed=0, tau_s=1.01, **kw).fit(graph).history_.series("gate_rate")
    assert min(wide[10:]) > 0.99 and max(margin[10:]) < 0.99


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
    b, after_b = _dropout(x, p, True), torch.rand(3)
    assert torch.equal(a, b) and torch.equal(after_a, after_b)  # same values, same random draws consumed
    assert torch.equal(_dropout(x, p, False), x)


def test_guidance_term_over_guided_pairs_matches_the_per_node_sum(graph):
    """The pairwise guidance term equals (1/N) Σ_i g(i) Σ_{b inferior at i} L_NL(i, b) computed densely."""
    torch.manual_seed(0)
    est = create("graphmnl", seed=0, **{**FAST, "epochs": 2}).fit(graph)
    n, nb, c = graph.num_nodes, len(est.branches_), graph.num_classes
    z = torch.randn(n, nb, c, dtype=torch.float64) * 3
    p_dom = torch.softmax(torch.randn(n, c, dtype=torch.float64) * 3, -1)
    g = torch.rand(n, dtype=torch.float64) * (torch.rand(n) < 0.6)
    inferior = torch.rand(n, nb) < 0.5
    cols, rows = ((g > 0).unsqueeze(1) & inferior).T.nonzero(as_tuple=True)
    for balance, prior in ((False, False), (True, False), (False, True)):
        est.params["nl_balance"], est.params["nl_prior"] = balance, prior
        got = est._guidance(z[rows, cols], rows, p_dom, g, n)
        counts = torch.bincount(graph.y[graph.train_mask], minlength=c).double() + 1  # add-one training shares
        neg = negative_set(p_dom, est._y_train, est._labelled, rho=est.params["rho"],
                           class_prior=counts if prior else None)
        if prior:  # the per-class thresholds change the set on this graph
            assert not torch.equal(neg, negative_set(p_dom, est._y_train, est._labelled, rho=est.params["rho"]))
        w = None
        if balance:
            mass = (g.unsqueeze(1) * neg).sum(0)
            w = torch.where(mass > 0, mass[mass > 0].mean() / mass.clamp(min=1e-12), torch.zeros_like(mass))
        dense = torch.stack([negative_learning_loss(z[:, b], neg, w) for b in range(nb)], 1)
        want = (g.unsqueeze(1) * dense * inferior).sum() / n
        torch.testing.assert_close(got, want)


def _spy_on_guidance(est) -> dict:
    """Wrap the fitted model's ``guided_logits`` and the estimator's ``_guidance`` so that each call records its
    forward output, guided (row, col) pairs, teacher and gate in the returned dict (with the unwrapped callables)."""
    model = est.model_
    seen = {"orig_logits": model.guided_logits, "orig_guidance": est._guidance}

    def spy_logits(out, rows, cols):
        seen["out"], seen["rows"], seen["cols"] = out, rows, cols
        return seen["orig_logits"](out, rows, cols)

    def spy_guidance(z, rows, teach, g, n):
        seen["teacher"], seen["g"] = teach, g
        return seen["orig_guidance"](z, rows, teach, g, n)

    model.guided_logits, est._guidance = spy_logits, spy_guidance
    return seen


@pytest.mark.parametrize("targets, teacher, fusion", [("inferior", "dominant", "grouped"), ("inferior", "dominant", "reliability"),
                                                      ("all", "fused", "grouped"), ("all", "dominant", "grouped")])
def test_guide_targets_and_teacher_select_pairs_and_negative_sets(graph, targets, teacher, fusion):
    """``guide_targets`` picks the guided (node, branch) pairs (inferior ones, or every present branch at a
    gated node), ``teacher`` the posterior whose unlikely classes form C̄(i) (dominant branch or fusion)."""
    # 20 epochs: the fused teacher (prior counted once) is flat after fewer, no class below ρ yet
    est = create("graphmnl", seed=0, guide_targets=targets, teacher=teacher, fusion=fusion,
                 **{**FAST, "epochs": 20, "warmup": 6})
    est.fit(graph)
    model = est.model_
    model.train()
    inp = est._inputs(graph)
    seen = _spy_on_guidance(est)
    torch.manual_seed(0)
    out = model(inp)
    loss, stats = est._loss(out, graph.y, graph.split_index("train"), epoch=10)
    assert stats["guide"] > 0
    from magkit.functional import arbitrate

    r = est._next_reliability
    dom, inferior, _ = arbitrate(r, out["present"], est.params["delta"])
    if fusion == "grouped":  # inferior within its own kind (raw / prop); struct never
        inferior = est._grouped_arbitration(r, out["present"])[0]
        assert not bool(inferior[:, est.branches_.index("struct")].any())
    pairs = torch.zeros_like(inferior)
    pairs[seen["rows"], seen["cols"]] = True
    assert int(pairs.sum()) == seen["rows"].numel()  # no pair twice
    gated = (seen["g"] > 0).unsqueeze(1)
    expected = gated & (inferior if targets == "inferior" else out["present"])
    assert torch.equal(pairs, expected)
    if targets == "all":  # the dominant branch itself is guided at gated nodes
        rows = gated.squeeze(1).nonzero().squeeze(1)
        assert bool(pairs[rows, dom[rows]].all())
    probs = torch.softmax(out["branches"].detach(), -1)
    want = torch.softmax(out["logits"].detach(), -1) if teacher == "fused" else probs[torch.arange(len(dom)), dom.clamp(min=0)]
    torch.testing.assert_close(seen["teacher"], want)


def test_guide_targets_and_teacher_are_checked(graph):
    with pytest.raises(ConfigError, match="guide_targets: 'some'; allowed: inferior, all"):
        create("graphmnl", guide_targets="some", **{**FAST, "epochs": 2}).fit(graph)
    with pytest.raises(ConfigError, match="teacher: 'x'; allowed: dominant, fused"):
        create("graphmnl", teacher="x", **{**FAST, "epochs": 2}).fit(graph)


def test_ablations_are_registered_with_one_switch_each():
    expected = {
        "graphmnl-no-smoothing": {"beta": 0.0}, "graphmnl-gate": {"gate": True}, "graphmnl-no-gate": {"gate": False},
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


def test_nontarget_distillation_guidance_trains_and_leaves_guided_targets_alone(graph):
    est = create("graphmnl", seed=0, guidance="ntkd", **FAST).fit(graph)
    assert est.score(graph, "test")["acc"] >= 0.8
    assert any(v > 0.0 for v in est.history_.series("guide"))
    # the per-pair term is the renormalised non-target KL against the dominant, at the dominant's class
    n, c = graph.num_nodes, graph.num_classes
    z = (torch.randn(n, c, dtype=torch.float64) * 3).requires_grad_(True)
    p_dom = torch.softmax(torch.randn(n, c, dtype=torch.float64) * 3, -1)
    rows = (~est._labelled).nonzero().flatten()[:50]
    g = torch.ones(n, dtype=torch.float64)
    est._guidance(z[rows], rows, p_dom, g, n).backward()
    assert (z.grad[rows, p_dom[rows].argmax(1)] == 0).all()
    assert bool((z.grad[rows] != 0).any())


def test_default_guides_every_branch_with_the_fused_teacher(graph):
    """The default (twentieth round, formerly the variant ``graphmnl-fused-teacher``): every present branch at a
    gated node is guided, the struct GNN included (never guided in the spec's form: alone in its kind, it is never
    inferior), with the fused prediction's negative set under per-class thresholds; the guidance reaches the
    struct GNN's layers."""
    assert {k: GraphMNL.defaults[k] for k in ("guide_targets", "teacher", "nl_prior")} == {
        "guide_targets": "all", "teacher": "fused", "nl_prior": True}
    spec = get_method("graphmnl")
    assert spec.cls is GraphMNL and spec.group == "graphmnl" and spec.fixed == {}
    est = create("graphmnl", seed=0, **FAST).fit(graph)
    assert est.score(graph, "test")["acc"] >= 0.85
    assert any(v != 0.0 for v in est.history_.series("guide"))
    model, s = est.model_, est.branches_.index("struct")
    model.train()
    seen = _spy_on_guidance(est)
    orig_logits, orig_guidance = seen["orig_logits"], seen["orig_guidance"]
    torch.manual_seed(0)
    out = model(est._inputs(graph))
    _, stats = est._loss(out, graph.y, graph.split_index("train"), epoch=FAST["epochs"])
    on_struct = seen["cols"] == s
    assert stats["guide"] > 0 and bool(on_struct.any())
    torch.testing.assert_close(seen["teacher"], torch.softmax(out["logits"].detach(), -1))
    # the struct pairs' guidance alone has a gradient on the struct GNN's layers
    model.zero_grad()
    rows = seen["rows"][on_struct]
    orig_guidance(orig_logits(out, rows, seen["cols"][on_struct]), rows, seen["teacher"], seen["g"],
                  graph.num_nodes).backward()
    assert sum(float(p.grad.abs().sum()) for p in model.struct.parameters() if p.grad is not None) > 0


@pytest.mark.parametrize("mode", ["detached", "shared"])
def test_struct_guide_modes(graph, mode):
    """``struct_guide``: the struct GNN's guided logits are a second pass on its detached input (``detached``: its
    own input projection gets no guidance gradient) or the supervised pass's logits (``shared``: equal to them, and
    the guidance reaches the projection)."""
    est = create("graphmnl", seed=0, struct_guide=mode, **{**FAST, "epochs": 10, "patience": 10}).fit(graph)
    model, s = est.model_, est.branches_.index("struct")
    model.train()
    torch.manual_seed(0)
    out = model(est._inputs(graph))
    rows = torch.arange(0, graph.num_nodes, 3)
    z = model.guided_logits(out, rows, torch.full_like(rows, s))
    model.zero_grad()
    z.logsumexp(-1).sum().backward()
    proj = model.struct_proj.weight.grad
    gnn = sum(float(p.grad.abs().sum()) for p in model.struct.parameters() if p.grad is not None)
    assert gnn > 0
    if mode == "shared":
        assert torch.equal(z, out["branches"][rows, s])
        assert proj is not None and float(proj.abs().sum()) > 0
    else:
        assert not torch.equal(z, out["branches"][rows, s])  # fresh dropout masks in the second pass
        assert proj is None or float(proj.abs().sum()) == 0


def test_struct_guide_errors(graph):
    with pytest.raises(ConfigError, match="struct_guide: 'x'; allowed: detached, shared"):
        create("graphmnl", struct_guide="x", **FAST).fit(graph)
    with pytest.raises(ConfigError, match="needs struct_input own or early"):
        create("graphmnl", struct_guide="shared", struct_input="mean", **FAST).fit(graph)


def test_dominant_teacher_variant_is_the_spec_form(graph):
    """``graphmnl-dominant-teacher`` (the default until the twentieth round): only inferior branches are guided
    (never the struct GNN, alone in its kind), by the dominant branch's posterior, with one threshold ρ; the
    ``graphmnl-ntkd`` variant keeps that form too, gate included."""
    spec = get_method("graphmnl-dominant-teacher")
    assert spec.fixed == {"guide_targets": "inferior", "teacher": "dominant", "nl_prior": False, "gate": True}
    assert get_method("graphmnl-ntkd").fixed == {"guidance": "ntkd", **spec.fixed}
    est = create("graphmnl-dominant-teacher", seed=0, **FAST).fit(graph)
    assert est.score(graph, "test")["acc"] >= 0.85
    model, s = est.model_, est.branches_.index("struct")
    model.train()
    seen = _spy_on_guidance(est)
    torch.manual_seed(0)
    out = model(est._inputs(graph))
    _, stats = est._loss(out, graph.y, graph.split_index("train"), epoch=FAST["epochs"])
    assert stats["guide"] > 0 and not bool((seen["cols"] == s).any())
    assert not torch.allclose(seen["teacher"], torch.softmax(out["logits"].detach(), -1))  # not the fusion


def test_nl_k_rule_runs_with_one_threshold_off(graph):
    """The k-least-likely rule needs ``nl_prior=False`` (on by default); with it the fit guides."""
    est = create("graphmnl", seed=0, nl_k=3, nl_prior=False, **FAST).fit(graph)
    assert any(v != 0.0 for v in est.history_.series("guide"))
    assert est.score(graph, "test")["acc"] >= 0.85


def test_fixed_dominant_uses_one_modality(graph):
    est = create("graphmnl", seed=0, fixed_dominant="text", **FAST)
    est.fit(graph)
    assert est._fixed_index.tolist() == [True, False, True, False, False]


def test_fixed_dominant_reaches_the_fused_teacher(graph, monkeypatch):
    """With the fused teacher the ablation's global choice reaches the transfer: the teacher is the fusion of the
    branches by the fixed reliability (the dominant modality's branches ~1 against ~0 for the other), not the
    prediction's per-node fusion; ``auto`` picks its modality when the transfer starts, not at epoch 0."""
    import magkit.methods.graphmnl as gm

    picks = []
    orig = gm.GraphMNL._fixed_reliability

    def spy(self, r, present):
        picks.append(self._fixed_index is None)
        return orig(self, r, present)

    monkeypatch.setattr(gm.GraphMNL, "_fixed_reliability", spy)
    est = create("graphmnl-fixed-dominant", seed=0, **{**FAST, "epochs": 12, "warmup": 8, "patience": 12}).fit(graph)
    assert len(picks) == 12 - 8 and picks[0] and not any(picks[1:])  # first called (and the pick made) at epoch 8
    model = est.model_
    model.train()
    seen = _spy_on_guidance(est)
    torch.manual_seed(0)
    out = model(est._inputs(graph))
    _, stats = est._loss(out, graph.y, graph.split_index("train"), epoch=12)
    assert stats["guide"] > 0
    fixed = est._fixed_reliability(est._next_reliability, out["present"])
    want = torch.softmax(model.fuse(out["branches"].detach(), model.fusion_weights(fixed, out["present"])), -1)
    torch.testing.assert_close(seen["teacher"], want)
    per_node = torch.softmax(out["logits"].detach(), -1)
    assert (seen["teacher"] - per_node).abs().max() > 1e-3  # not the prediction's own fusion
    # the global modality's raw branch takes nearly all of the raw kind's weight at every node where it is present
    alpha = model.fusion_weights(fixed, out["present"])
    j = est.branches_.index("raw:" + next(m for m in est.modalities_ if est._fixed_index[est.branches_.index("raw:" + m)]))
    raw = [est.branches_.index("raw:" + m) for m in est.modalities_]
    share = alpha[:, j] / alpha[:, raw].sum(1)
    both = out["present"][:, raw].all(1)
    assert bool((share[both] > 0.9).all())


@pytest.mark.parametrize("params, fragment", [
    ({"guidance": "pl"}, "guidance: 'pl'; allowed: nl, ntkd, kd, mnl, none"),
    ({"guidance_nodes": "some"}, "guidance_nodes"),
    ({"temperature": 0}, "temperature"),
    ({"branches": ["raw:audio"]}, r"branches: \['raw:audio'\]; allowed"),
    ({"beta": 2.0}, "beta"),
    ({"prop_mode": "output"}, "prop_mode: 'output'; allowed: input, hidden"),
    ({"struct_input": "max"}, "struct_input: 'max'; allowed: mean, reliability, concat, early, own"),
    ({"fusion": "attention"}, "fusion: 'attention'; allowed: reliability, learned, grouped"),
    ({"input_temperature": 0}, "input_temperature"),
    ({"tau_m": "x"}, r"tau_m: 'x'; allowed: a finite number, or None \(no margin term in the gate\)"),
    ({"nl_k": 3}, r"nl_prior: per-class thresholds need the threshold rule \(rho\); use nl_k=None, or "
                  r"nl_prior=False with nl_k \(nl_prior is on by default\)"),
])
def test_bad_parameters(graph, params, fragment):
    with pytest.raises(ConfigError, match=fragment):
        create("graphmnl", **{**FAST, "epochs": 2}, **params).fit(graph)


def test_not_fitted(graph):
    with pytest.raises(NotFittedError):
        _ = GraphMNL().diagnostics_
    with pytest.raises(NotFittedError):
        GraphMNL().predict(graph)


def test_hidden_propagation_is_the_same_function_as_input_propagation(graph):
    """prop_mode="hidden" computes ReLU(Â^K (W x) + b), which equals the input mode's ReLU(W (Â^K X) + b): with the
    same weights and no dropout both modes give the same branch logits (only training-time dropout differs)."""
    a = create("graphmnl", seed=0, prop_mode="input", **{**FAST, "epochs": 3}).fit(graph)
    b = create("graphmnl", seed=0, prop_mode="hidden", **{**FAST, "epochs": 3})
    b.fit(graph)
    b.model_.load_state_dict(a.model_.state_dict())
    za = a.model_.eval()(a._inputs(graph))["branches"]
    zb = b.model_.eval()(b._inputs(graph))["branches"]
    torch.testing.assert_close(zb, za, atol=1e-4, rtol=1e-4)
    assert "prop_text" in a._inputs(graph).extra and "prop_text" not in b._inputs(graph).extra  # cached: input mode only


def test_reliability_weighted_struct_input_follows_the_scores(graph):
    """struct_input="reliability": the struct branch reads Σ_m w_m(i) h_m(i), w = softmax of r̃_raw:m / T_in over
    the present modalities; with r̃ = 1 for text and 0 for image and a small T_in that is the text projection."""
    est = create("graphmnl", seed=0, struct_input="reliability", input_temperature=0.01, **{**FAST, "epochs": 3})
    est.fit(graph)
    net = est.model_.eval()
    inp = est._inputs(graph)
    rel = torch.zeros(graph.num_nodes, len(est.branches_))
    rel[:, est.branches_.index("raw:text")] = 1.0
    inp.extra["reliability"] = rel
    hs = [torch.relu(net.proj[m](inp.xs[m])) * inp.present[:, j:j + 1] for j, m in enumerate(net.modalities)]
    h0 = net._struct_input(inp, hs)
    both = inp.present.all(1)
    torch.testing.assert_close(h0[both], hs[0][both])
    only_image = inp.present[:, 1] & ~inp.present[:, 0]
    if bool(only_image.any()):  # an absent modality never gets weight
        torch.testing.assert_close(h0[only_image], hs[1][only_image])
    net.struct_input = "mean"
    torch.testing.assert_close(net._struct_input(inp, hs)[both], (hs[0][both] + hs[1][both]) / 2)


def test_early_struct_input_is_sage_early_as_a_branch(graph):
    """struct_input="early": the struct branch reads its own early-fusion input [x_text | x_image | presence] (not
    the shared projections), so with sage-early's weights it computes sage-early's logits."""
    est = create("graphmnl", seed=0, struct_input="early", **{**FAST, "epochs": 3}).fit(graph)
    base = create("sage-early", seed=0, hidden=FAST["hidden"], epochs=3).fit(graph)
    net = est.model_.eval()
    base_net = base.model_.eval()
    inp = est._inputs(graph)
    x_early = inp.early_input(net.modalities)
    assert net.struct.convs[0].in_channels == x_early.shape[1] == sum(graph.modality_dims.values()) + 2
    net.struct.load_state_dict(base_net.net.state_dict())
    z_struct = net(inp)["branches"][:, est.branches_.index("struct")]
    z_base = base_net(base._inputs(graph))
    torch.testing.assert_close(z_struct, z_base, atol=1e-4, rtol=1e-4)  # narrow_sage: rounding differs
    # and the shared projections do not reach it: zeroing them leaves the struct logits unchanged
    with torch.no_grad():
        for lin in net.proj.values():
            lin.weight.zero_()
    torch.testing.assert_close(net(inp)["branches"][:, est.branches_.index("struct")], z_struct)


def test_own_struct_input_projects_the_early_input_once(graph):
    """struct_input="own": h0 = ReLU(Q drop([x_1 | ... | x_M | presence])) with the struct branch's own Q (one
    input-width product), then the GNN at width h; the shared projections do not reach it."""
    est = create("graphmnl", seed=0, struct_input="own", **FAST).fit(graph)
    net = est.model_.eval()
    inp = est._inputs(graph)
    x_early = inp.early_input(net.modalities)
    assert net.struct_proj.in_features == x_early.shape[1] and net.struct.convs[0].in_channels == FAST["hidden"]
    j = est.branches_.index("struct")
    z = net(inp)["branches"][:, j]
    torch.testing.assert_close(z, net.struct(torch.relu(net.struct_proj(x_early)), inp.mean_adj()))
    with torch.no_grad():
        for lin in net.proj.values():
            lin.weight.zero_()
    torch.testing.assert_close(net(inp)["branches"][:, j], z)
    s = est.score(graph, "test")
    assert s["acc"] >= 0.85 and s["f1"] >= 0.8


def test_own_struct_input_skips_unused_projections(graph, monkeypatch):
    """With struct_input="own" (or "early") the struct branch does not read the shared projections, so in the
    hidden prop mode a modality without a raw/prop branch is not projected at all; "mean" does project it."""
    import magkit.methods.graphmnl as gm

    used = []
    linear = gm.F.linear

    def spy(x, weight, *args, **kwargs):
        used.append(weight)
        return linear(x, weight, *args, **kwargs)

    for struct_input, reads_image in (("own", False), ("early", False), ("mean", True)):
        est = create("graphmnl", seed=0, branches=["prop:text", "struct"], struct_input=struct_input,
                     prop_mode="hidden", **{**FAST, "epochs": 2}).fit(graph)
        net = est.model_.eval()
        inp = est._inputs(graph)
        used.clear()
        monkeypatch.setattr(gm.F, "linear", spy)
        z = net(inp)["branches"]
        monkeypatch.setattr(gm.F, "linear", linear)
        assert any(w is net.proj["text"].weight for w in used)
        assert any(w is net.proj["image"].weight for w in used) == reads_image, struct_input
        assert torch.isfinite(z).all()


def test_concat_struct_input_keeps_the_modalities_apart(graph):
    """struct_input="concat": the struct GNN reads [h_text | h_image] (2h wide), an absent modality's block zero."""
    est = create("graphmnl", seed=0, struct_input="concat", **FAST).fit(graph)
    net = est.model_.eval()
    assert net.struct.convs[0].in_channels == 2 * FAST["hidden"]
    inp = est._inputs(graph)
    hs = [torch.relu(net.proj[m](inp.xs[m])) * inp.present[:, j:j + 1] for j, m in enumerate(net.modalities)]
    h0 = net._struct_input(inp, hs)
    torch.testing.assert_close(h0, torch.cat(hs, 1))
    s = est.score(graph, "test")
    assert s["acc"] >= 0.85 and s["f1"] >= 0.8  # the default's quality floor (test_quality_floor_and_branch_library)


# reliability of (raw:text, raw:image, prop:text, prop:image, struct) at two nodes, for the fusion hand examples
REL_TWO_NODES = torch.tensor([[0.9, 0.1, 0.2, 0.6, 0.1],
                              [0.5, 0.5, 0.5, 0.5, 0.9]])


def test_grouped_fusion_and_arbitration_compare_branches_of_one_kind(graph):
    """fusion="grouped": raw:* compete among themselves, prop:* among themselves, struct alone; each kind present at a
    node gets an equal share of α; inferior branches are ≥ δ below their own kind's best, so struct never is."""
    est = create("graphmnl", seed=0, fusion="grouped", temperature=0.1, **{**FAST, "epochs": 3}).fit(graph)
    net = est.model_
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
    inferior, margin = est._grouped_arbitration(rel, present)
    assert inferior.tolist() == [[False, True, True, False, False], [False, False, False, False, False]]
    torch.testing.assert_close(margin, torch.tensor([0.8, 0.0]))


def test_kind_shares_weight_the_grouped_fusion(graph):
    """kind_share (raw, prop, struct) = (2, 1, 1): a node with every kind gives raw half of α, prop and struct a
    quarter each; where a kind is absent the present kinds' shares are renormalised."""
    est = create("graphmnl", seed=0, kind_weights={"raw": 2, "prop": 1, "struct": 1}, temperature=0.1,
                 **{**FAST, "epochs": 3}).fit(graph)
    assert est.kind_weights_ == pytest.approx({"raw": 0.5, "prop": 0.25, "struct": 0.25})
    net = est.model_
    rel = REL_TWO_NODES
    present = torch.tensor([[True, True, True, True, True],
                            [False, False, True, True, True]])
    alpha = net.fusion_weights(rel, present)
    torch.testing.assert_close(alpha.sum(1), torch.ones(2))
    e = torch.exp(torch.tensor(8.0))
    torch.testing.assert_close(alpha[0, :2], torch.stack([e / (e + 1), 1 / (e + 1)]) / 2)
    torch.testing.assert_close(alpha[0, 4], torch.tensor(0.25))
    torch.testing.assert_close(alpha[1], torch.tensor([0.0, 0.0, 0.25, 0.25, 0.5]))  # raw absent: prop, struct 1:1


def test_compositions_cover_the_positive_simplex_grid():
    from magkit.methods.graphmnl import _compositions

    combos = list(_compositions(20, 3))
    assert len(combos) == math.comb(19, 2) == len(set(combos))
    assert all(sum(c) == 20 and min(c) >= 1 for c in combos)
    assert list(_compositions(3, 1)) == [(3,)] and sorted(_compositions(4, 2)) == [(1, 3), (2, 2), (3, 1)]


def test_validation_kind_shares_minimise_the_validation_cross_entropy(graph):
    """kind_weights="validation": the fitted shares give a validation cross-entropy no higher than equal shares
    or any other share on the grid tried here, and predictions use them."""
    est = create("graphmnl", seed=0, kind_weights="validation", **{**FAST, "epochs": 30}).fit(graph)
    w = est.kind_weights_
    assert set(w) == {"raw", "prop", "struct"} and sum(w.values()) == pytest.approx(1.0)
    assert min(w.values()) >= 0.05 - 1e-6
    val = graph.split_index("val")
    net = est.model_

    def val_loss(shares):
        net.kind_share.fill_(1.0)  # the reliability fixed point is computed under the training-time (equal) fusion
        inp = est._inputs(graph)
        net.kind_share.copy_(torch.tensor(shares, dtype=torch.float32))
        net.eval()
        with torch.no_grad():
            return float(F.cross_entropy(net(inp)["logits"][val], graph.y[val]))

    fitted = [w["raw"], w["prop"], w["struct"]]
    best = val_loss(fitted)
    assert best == pytest.approx(est.kind_weights_val_loss_, abs=1e-5)
    for other in ([1 / 3] * 3, [0.9, 0.05, 0.05], [0.05, 0.05, 0.9], [0.05, 0.9, 0.05], [0.4, 0.3, 0.3]):
        assert best <= val_loss(other) + 1e-6
    net.kind_share.copy_(torch.tensor(fitted))
    if max(fitted) - min(fitted) > 0.05:  # shares away from equal change the fused probabilities
        eq = create("graphmnl", seed=0, **{**FAST, "epochs": 30}).fit(graph)
        assert not torch.allclose(eq.predict_proba(graph), est.predict_proba(graph))


def test_kind_logits_rebuild_the_fused_prediction(graph):
    """kind_logits: the kinds' within-kind fused logits and presence; sharing them equally among the present kinds
    and counting the prior once gives back the estimator's fused logits."""
    from magkit.functional import prior_once_fusion

    est = create("graphmnl", seed=0, **{**FAST, "epochs": 10}).fit(graph)
    zk, kp, z = est.kind_logits(graph)
    n, c = graph.num_nodes, graph.num_classes
    assert zk.shape == (n, 3, c) and kp.shape == (n, 3) and z.shape == (n, 5, c)
    assert bool((kp == 1).all())  # every modality present: every kind present
    torch.testing.assert_close(zk[:, 2], z[:, 4])  # struct is alone in its kind
    share = kp / kp.sum(1, keepdim=True)
    fused = prior_once_fusion((share.unsqueeze(-1) * zk).sum(1), share, est.model_.log_prior)
    torch.testing.assert_close(torch.softmax(fused, 1), est.predict_proba(graph))
    est.model_.train()
    est.kind_logits(graph)
    assert est.model_.training  # the model's mode is restored
    with pytest.raises(NotFittedError):
        GraphMNL().kind_logits(graph)


def test_kind_weight_errors(graph):
    for bad, fragment in (({"kind_weights": "auto"}, "kind_weights: 'auto'; allowed: equal, validation"),
                          ({"kind_weights": {"raw": 0, "struct": 1}}, "positive numbers for the kinds"),
                          ({"kind_weights": {"text": 1}}, "positive numbers for the kinds"),
                          ({"kind_weights": "validation", "fusion": "reliability"}, "fusion='grouped' only")):
        with pytest.raises(ConfigError, match=fragment):
            create("graphmnl", **{**FAST, "epochs": 2}, **bad).fit(graph)



@pytest.mark.parametrize("fusion", ["grouped", "reliability"])
def test_fusion_prior_once_corrects_the_average_of_branch_logits(graph, fusion):
    """fusion_prior="once": fused logits = Σ_b α_b z_b − (1 − Σ_g s_g²) log π, the experts g being the branch kinds
    (grouped fusion) or the branches; log π from the training labels, add-one smoothed. "predict" applies it in
    eval mode only; "none" is the plain average."""
    est = create("graphmnl", seed=0, fusion=fusion, fusion_prior="once", **{**FAST, "epochs": 5}).fit(graph)
    net = est.model_
    counts = torch.bincount(graph.y[graph.train_mask], minlength=graph.num_classes).double() + 1
    torch.testing.assert_close(net.log_prior, (counts / counts.sum()).log().float())
    inp = est._inputs(graph)
    net.eval()
    with torch.no_grad():
        out = net(inp)
    alpha, zs = out["alpha"], out["branches"]
    shares = torch.stack([alpha[:, c].sum(1) for c in net.kind_columns()], 1) if fusion == "grouped" else alpha
    plain = (alpha.unsqueeze(-1) * zs).sum(1)
    expected = plain - (1 - shares.pow(2).sum(1, keepdim=True)) * net.log_prior
    torch.testing.assert_close(out["logits"], expected)
    assert float((out["logits"] - plain).abs().max()) > 0.1  # the correction is not negligible here
    net.fusion_prior = "predict"
    with torch.no_grad():
        torch.testing.assert_close(net(inp)["logits"], expected)
        net.train()
        torch.manual_seed(0)
        tr = net(inp)
    torch.testing.assert_close(tr["logits"], (tr["alpha"].unsqueeze(-1) * tr["branches"]).sum(1))
    with pytest.raises(ConfigError, match="fusion_prior: 'twice'; allowed: none, once, predict"):
        create("graphmnl", fusion_prior="twice", **{**FAST, "epochs": 2}).fit(graph)


@pytest.mark.parametrize("teacher", ["dominant", "fused"])
def test_gate_instability_is_measured_on_the_teacher(graph, monkeypatch, teacher):
    """The gate's temporal instability s(i) is the teacher's: the dominant branch's posterior against its moving
    average, or (teacher="fused") the fused posterior against the fused moving average."""
    import magkit.methods.graphmnl as gm

    est = create("graphmnl", seed=0, teacher=teacher, **{**FAST, "epochs": 4, "warmup": 2}).fit(graph)
    model = est.model_.train()
    inp = est._inputs(graph)
    seen = []
    real = gm.instability

    def spy(p, avg, kind):
        seen.append((p, avg))
        return real(p, avg, kind)

    monkeypatch.setattr(gm, "instability", spy)
    out = model(inp)
    est._loss(out, graph.y, graph.split_index("train"), epoch=3)
    (p, avg), = seen
    fused = torch.softmax(out["logits"].detach(), -1)
    if teacher == "fused":
        torch.testing.assert_close(p, fused)
        assert avg is est._ema_fused
    else:
        r = est._next_reliability
        dom = gm.arbitrate(r, out["present"], est.params["delta"])[0].clamp(min=0)
        probs = torch.softmax(out["branches"].detach(), -1)
        torch.testing.assert_close(p, probs[torch.arange(len(dom)), dom])
        assert not torch.allclose(p, fused)


def test_learned_fusion_bias_is_trained_and_enters_the_weights(graph):
    """fusion="learned": α = softmax(r̃ / T + c) with c a trained per-branch parameter."""
    est = create("graphmnl", seed=0, fusion="learned", **{**FAST, "epochs": 10}).fit(graph)
    c = est.model_.fusion_bias
    assert c is not None and c.shape == (5,) and float(c.detach().abs().max()) > 0  # moved from its zero start
    rel = torch.rand(4, 5)
    present = torch.ones(4, 5, dtype=torch.bool)
    want = torch.softmax(rel / est.params["temperature"] + c.detach(), 1)
    torch.testing.assert_close(est.model_.fusion_weights(rel, present).detach(), want)


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
    assert "_eval_pass" not in est.__dict__ and "_mb_state" not in est.__dict__


def test_minibatch_state_reuses_the_evaluation_pass_exactly(graph, monkeypatch):
    """The next epoch's state reuses the evaluation's whole-graph pass (same parameters, same reliability): the fit
    is the same as recomputing it, with one eval-mode forward pass less per epoch after the first."""
    from magkit.methods.graphmnl import GraphMNLNet

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

    est = fitted
    n, c, nb = graph.num_nodes, graph.num_classes, len(est.branches_)
    gen = torch.Generator().manual_seed(0)
    z = torch.randn(n, nb, c, generator=gen, dtype=torch.float64) * 2
    present = torch.ones(n, nb, dtype=torch.bool)
    cand = (~est._labelled).nonzero().flatten()[:120]
    g = torch.zeros(n, dtype=torch.float64)
    g[cand] = torch.rand(120, generator=gen, dtype=torch.float64) + 0.1
    inferior = torch.zeros(n, nb, dtype=torch.bool)
    inferior[cand, 0] = True
    inferior[cand[::2], 1] = True
    teacher = torch.softmax(torch.randn(n, c, generator=gen, dtype=torch.float64) * 3, -1)
    st = {"g": g, "inferior": inferior, "teacher": teacher, "gate_rate": 0.0, "inferior_rate": 0.0}
    cols, rows = ((g > 0).unsqueeze(1) & inferior).T.nonzero(as_tuple=True)
    full = float(est._guidance(z[rows, cols], rows, teacher, g, n))
    lab = est._labelled.nonzero().flatten()[:10]
    parts = []
    for guided in cand.view(4, 30):
        n_id = torch.cat([lab, guided])
        out = {"branches": z[n_id], "logits": z[n_id].sum(1), "present": present[n_id]}
        batch = SampledSubgraph(n_id=n_id, edge_index=torch.zeros(2, 0, dtype=torch.long), batch_size=n_id.numel())
        _, stats = est._batch_loss(out, batch, lab.numel(), graph.y, st, 120, n, torch.device("cpu"))
        parts.append(stats["guide"])
    assert full > 0
    assert sum(parts) / len(parts) == pytest.approx(full, rel=1e-6)
    assert len({round(v, 6) for v in parts}) > 1  # the batches' terms differ; only their mean is the full term


@pytest.mark.parametrize("params", [{}, {"struct_input": "mean", "prop_mode": "input"}])
def test_minibatch_trains_out_of_core_on_a_memory_mapped_graph(graph, tmp_path, monkeypatch, params):
    """On a memory-mapped graph mini-batch GraphMNL never reads a whole feature block. With the default prop mode and
    struct input the whole-graph passes (epoch state, evaluation, the fitted model's reliability, diagnostics)
    project the blocks row chunk by row chunk, and the fit equals the in-memory mini-batch fit; other settings take
    sampled inference and keep the quality floor."""
    from magkit.data.ondisk import MappedFeatures, load_mmap_graph, save_mmap_graph

    save_mmap_graph(graph, tmp_path / "g")
    mapped = load_mmap_graph(tmp_path / "g")
    for m in ("train_mask", "val_mask", "test_mask"):
        mapped[m] = graph[m]
    assert mapped.is_mapped
    ram = create("graphmnl", seed=0, batch_size=64, **FAST, **params).fit(graph)

    def refuse(self):
        raise AssertionError("a whole feature block was read")

    monkeypatch.setattr(MappedFeatures, "materialize", refuse)
    est = create("graphmnl", seed=0, batch_size=64, **FAST, **params).fit(mapped)
    s = est.score(mapped, "test")
    assert s["acc"] >= 0.85 and s["f1"] >= 0.8
    assert any(v > 0.0 for v in est.history_.series("guide"))
    proba = est.predict_proba(mapped)
    assert proba.shape == (graph.num_nodes, graph.num_classes)
    torch.testing.assert_close(proba.sum(1), torch.ones(graph.num_nodes))
    d = est.diagnostics_
    assert d["reliability"].shape == (graph.num_nodes, 5) and 0.0 < d["dominant_share"]["struct"] <= 1.0
    if not params:  # block by block: the same fit as from memory
        assert est.history_.series("val_acc") == ram.history_.series("val_acc")
        torch.testing.assert_close(proba, ram.predict_proba(graph))


def test_project_rows_reads_mapped_blocks_chunk_by_chunk(graph, tmp_path):
    """The block-by-block first layer equals F.linear on the concatenated in-memory blocks, over several chunks
    (absent rows read as zeros, the presence block appended as in the early-fusion input)."""
    from magkit.data.ondisk import load_mmap_graph, save_mmap_graph
    from magkit.methods.graphmnl import _project_rows

    save_mmap_graph(graph, tmp_path / "g")
    mapped = load_mmap_graph(tmp_path / "g")
    pres = graph.modality_mask
    blocks = [mapped.feature(m).masked(graph.presence(m)) for m in graph.modalities] + [pres.float()]
    ram = torch.cat([graph.feature(m) * graph.presence(m).unsqueeze(1) for m in graph.modalities] + [pres.float()], 1)
    w, b = torch.randn(7, ram.shape[1]), torch.randn(7)
    torch.testing.assert_close(_project_rows(blocks, w, b, rows=97), F.linear(ram, w, b))


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
    assert set(est.kind_weights_) == {"raw", "prop", "struct"}
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
    est = create("graphmnl", seed=0, branches=list(TOPO), **{**FAST, "epochs": 3})
    inp = est._inputs(g)
    net = est._build(g, inp)
    net.eval()
    with torch.no_grad():
        z = net(inp)["branches"][:, TOPO.index("topo")]
    assert torch.equal(z, z[:1].expand_as(z))
    est.fit(g)
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
    inp = est._inputs(graph)
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

    import magkit.methods.graphmnl as gm

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


def test_topo_k_propagates_the_embeddings_k_times(graph):
    """topo_k=K: ReLU(Â^K E + b_E); checked against dense products with a random E."""
    from magkit.train.propagation import normalized_adjacency

    est = create("graphmnl", seed=0, branches=["topo"], topo_k=3, **{**FAST, "epochs": 2})
    inp = est._inputs(graph)
    net = est._build(graph, inp)
    with torch.no_grad():
        net.topo_emb.normal_()
        got = net._topo_hidden(inp)
    a = normalized_adjacency(graph.edge_index, graph.num_nodes).to_dense()
    want = torch.relu(a @ (a @ (a @ net.topo_emb.detach())) + net.topo_bias.detach())
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    with pytest.raises(ConfigError, match="topo_k: 0; allowed: an integer >= 1"):
        create("graphmnl", branches=["topo"], topo_k=0, **{**FAST, "epochs": 2}).fit(graph)


def test_fusion_floor_fuses_robust_log_posteriors(graph):
    """fusion_floor=ε: each branch enters the fusion as log((1 − ε) p_b + ε/C); the prior correction and the kind
    logits read the same inputs; one confidently wrong branch moves the fused log-odds by a bounded amount."""
    from magkit.functional import prior_once_fusion, robust_log_probs

    est = create("graphmnl", seed=0, fusion_floor=0.05, **{**FAST, "epochs": 5}).fit(graph)
    net = est.model_
    assert net.fusion_floor == 0.05
    inp = est._inputs(graph)
    net.eval()
    with torch.no_grad():
        out = net(inp)
        alpha, zs = out["alpha"], out["branches"]
        zr = robust_log_probs(zs, 0.05)
        shares = torch.stack([alpha[:, c].sum(1) for c in net.kind_columns()], 1)
        expected = prior_once_fusion((alpha.unsqueeze(-1) * zr).sum(1), shares, net.log_prior)
        torch.testing.assert_close(out["logits"], expected)
        # a branch's robust log-odds lie in [−B, B], B = log(1 + (1 − ε)C/ε): made arbitrarily confident in one
        # class, it changes the fused log-odds by at most its weight × 2B
        j = est.branches_.index("raw:image")
        spiked = zs.clone()
        spiked[:, j, 0] += 1e4
        moved = net.fuse(spiked, alpha) - out["logits"]
        odds = moved[:, 0:1] - moved[:, 1:]
        bound = 2 * alpha[:, j:j + 1] * math.log(1 + 0.95 * graph.num_classes / 0.05) + 1e-4
        assert bool((odds.abs() <= bound).all())
        plain = net.fusion_floor
        net.fusion_floor = 0.0  # without the floor the same spike wins everywhere the branch has weight
        moved0 = net.fuse(spiked, alpha) - net.fuse(zs, alpha)
        net.fusion_floor = plain
        assert float((moved0[:, 0] - moved0[:, 1]).max()) > 100
        zk, kp, z = est.kind_logits(graph)
        cols = net.kind_columns()[0]
        a = out["alpha"][:, cols] / out["alpha"][:, cols].sum(1, keepdim=True).clamp(min=1e-12)
        present = kp[:, 0] > 0
        torch.testing.assert_close(zk[present, 0], (a.unsqueeze(-1) * zr[:, cols]).sum(1)[present])
    for bad in (1.0, -0.1, "0.1", True):
        with pytest.raises(ConfigError, match=r"fusion_floor: .* allowed: a number in \[0, 1\)"):
            create("graphmnl", fusion_floor=bad, **{**FAST, "epochs": 2}).fit(graph)


def test_fusion_floor_keeps_the_quality_floor(graph):
    s = create("graphmnl", seed=0, fusion_floor=0.05, **FAST).fit(graph).score(graph, "test")
    assert s["acc"] >= 0.85 and s["f1"] >= 0.8


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
    inp = est._inputs(graph)
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
    """With guide_heads_only (the default) the guidance pass of struct:gcn runs on the detached h0: its loss has
    gradients in the GCN's layers and none in the shared projection."""
    est = struct_gcn_fitted
    net = est.model_.train()
    inp = est._inputs(graph)
    inp.extra["reliability"] = est._inputs(graph).extra.get("reliability")
    out = net(inp)
    rows = torch.arange(0, graph.num_nodes, 7)
    cols = torch.full_like(rows, 5)
    net.zero_grad()
    net.guided_logits(out, rows, cols).logsumexp(-1).sum().backward()
    assert all(q.grad is None or not q.grad.any() for q in net.struct_proj.parameters())
    assert all(q.grad is None or not q.grad.any() for q in net.struct.parameters())
    assert any(q.grad is not None and q.grad.abs().sum() > 0 for q in net.struct_more["gcn"].parameters())
    net.eval()


@pytest.mark.parametrize("branches, fragment", [
    (["raw:text", "raw:image", "struct:gcn"], "add 'struct' to the branches"),
    (["+struct:sage"], "repeats struct (struct_backbone='sage')"),
    (["+struct:gcn", "raw:text"], "either name every branch or only add"),
    (["+struct:gat"], "allowed:"),
])
def test_struct_branch_errors(graph, branches, fragment):
    with pytest.raises(ConfigError, match=re.escape(fragment)):
        create("graphmnl", seed=0, branches=branches, **FAST).fit(graph)
