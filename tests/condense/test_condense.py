"""The gradient-matching loop, coresets, the evaluator and checkpoint/resume, on small generated graphs."""

from __future__ import annotations

import math
import typing

import pytest
import torch
import torch.nn.functional as F

from magkit.base import param_types
from magkit.condense import (
    SRGM,
    CondensedGraph,
    Coreset,
    FunctionalNet,
    GCond,
    GradientMatching,
    batched_distance,
    class_budget,
    condenser_names,
    damping_term,
    evaluate_condensed,
    graph_views,
    make_condenser,
    train_on_condensed,
    train_whole,
)
from magkit.condense.coreset import herding, kcenter
from magkit.data.datasets import load_dataset
from magkit.exceptions import ConfigError, DatasetError, NotFittedError
from magkit.functional import GRADIENT_DISTANCES, dirichlet_energy, gradient_distance
from magkit.models.chebnet import ChebNet
from magkit.models.pge import PGE

FAST = {"epochs": 4, "outer_steps": 4, "inner_steps": 2, "eval_every": 2, "eval_epochs": 40}


@pytest.fixture(scope="module")
def graph():
    return load_dataset("synthetic:balanced", num_nodes=600, num_classes=4, split="magb")


@pytest.fixture(scope="module")
def aligned():
    return load_dataset("synthetic:balanced", num_nodes=600, num_classes=4, split="magb", space="aligned",
                        misaligned=0.3)


def test_class_budget_floors_keeps_every_class_and_gives_the_remainder_to_the_largest():
    y = torch.tensor([0] * 250 + [1] * 40 + [2] * 9 + [3] * 1)
    per = class_budget(y, 5, 0.1)
    # floors: 25, 4, 0 -> 1, 0 -> 1; class 4 absent; total floor(300 * 0.1) = 30 -> largest gets 30 - 31 < 0: none
    assert per.tolist() == [25, 4, 1, 1, 0]
    per = class_budget(torch.tensor([0] * 95 + [1] * 5), 2, 0.5)
    assert per.tolist() == [47 + 1, 2]  # floor(47.5)=47, floor(2.5)=2, total 50 -> the largest takes 1 more
    assert int(per.sum()) == 50


@pytest.mark.parametrize("kind", ["gcond", "mse", "cos"])
def test_batched_distance_equals_the_reference_distance_per_matrix(kind):
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(3, 4, 7, generator=g), torch.randn(3, 4, 7, generator=g)
    got = batched_distance(a, b, kind)
    want = torch.stack([gradient_distance([a[i]], [b[i]], kind) for i in range(3)])
    torch.testing.assert_close(got, want)


def test_sgc_closed_form_gradients_match_autograd(graph):
    cond = GradientMatching(**FAST)
    prob = cond.prepare(graph)
    net = FunctionalNet("sgc", prob.d, 8, graph.num_classes, torch.Generator().manual_seed(1))
    closed = prob.real_grads(net, torch.Generator().manual_seed(2))
    for pos, k in enumerate(prob.classes):
        h = prob.prop[prob.class_idx[k]]
        loss = F.cross_entropy(net.logits(h), torch.full((h.size(0),), k))
        (gw,) = torch.autograd.grad(loss, net.weights)
        torch.testing.assert_close(closed[pos], gw, atol=1e-6, rtol=1e-5)


def test_sgc_matching_loss_equals_the_per_class_autograd_loss(graph):
    cond = GradientMatching(**FAST)
    prob = cond.prepare(graph)
    gen = torch.Generator().manual_seed(3)
    net = FunctionalNet("sgc", prob.d, 8, graph.num_classes, gen)
    g_real = prob.real_grads(net, gen)
    x = prob.init_features(gen)
    a = torch.rand(x.size(0), x.size(0), generator=gen)
    a = (a + a.T) / 2 * (1 - torch.eye(x.size(0)))
    y = prob.y_syn
    cls = torch.tensor(prob.classes)
    cls_of = torch.searchsorted(cls, y)
    w = torch.tensor([float(prob.per[k]) / y.numel() for k in prob.classes])
    got = prob.sgc_matching(net, x, a, g_real, w, F.one_hot(y, graph.num_classes).float(), cls_of)
    logits = prob.syn_logits(net, x, a)
    want = 0.0
    for pos, k in enumerate(prob.classes):
        sel = y == k
        (gs,) = torch.autograd.grad(F.cross_entropy(logits[sel], y[sel]), net.weights, retain_graph=True)
        want = want + w[pos] * gradient_distance([gs], [g_real[pos]], "gcond")
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_damping_edge_norm_is_scale_free_and_not_zero_for_an_almost_empty_graph():
    g = torch.randn(6, 3, generator=torch.Generator().manual_seed(0))
    a = torch.rand(6, 6, generator=torch.Generator().manual_seed(1))
    a = (a + a.T) / 2 * (1 - torch.eye(6))
    raw = damping_term(g, a, "none")
    torch.testing.assert_close(raw, dirichlet_energy(g, a))
    torch.testing.assert_close(damping_term(5 * g, a, "edge"), damping_term(g, a, "edge"))
    # the raw term vanishes as the graph empties; the edge-normalised one stays of order one
    tiny = a * 1e-6
    assert float(damping_term(g, tiny, "none")) < 1e-4
    assert float(damping_term(g, tiny, "edge")) > 0.1
    with pytest.raises(ConfigError, match="damping_norm"):
        damping_term(g, a, "bogus")


def test_decoupling_removes_every_conflict_in_the_input_space(aligned):
    cond = GradientMatching(decouple=True, **FAST)
    prob = cond.prepare(aligned)
    assert prob.space == "input"  # aligned, equal widths
    g = torch.randn(10, prob.d, generator=torch.Generator().manual_seed(0))
    net = FunctionalNet("sgc", prob.d, 8, aligned.num_classes, torch.Generator().manual_seed(0))
    before = prob.conflict_rate(g, net)
    out, rate = prob.decouple(g, net)
    assert rate == pytest.approx(before) and rate > 0
    da = prob.dims[0]
    assert float(((out[:, :da] * out[:, da:]).sum(1)).min()) > -1e-5
    agree = ((g[:, :da] * g[:, da:]).sum(1) >= 0)
    torch.testing.assert_close(out[agree], g[agree])  # rows that agree are untouched


def test_unaligned_graphs_decouple_in_the_shared_first_layer_space(graph):
    prob = GradientMatching(decouple=True, **FAST).prepare(graph)
    assert prob.space == "shared"


def test_gcond_x_beats_its_own_initialisation_and_reports_history(graph):
    cond = make_condenser("gcond-x", ratio=0.05, epochs=6, outer_steps=6, inner_steps=3, eval_every=1, eval_epochs=60)
    s = cond.condense(graph)
    h = cond.history_
    assert s.num_nodes == int(class_budget(graph.y[graph.train_mask], graph.num_classes, 0.05).sum())
    assert len(h["epochs"]) == 6
    for key in ("loss", "damping", "conflict_rate", "edge_density", "val_acc", "wall_time_s"):
        assert key in h["epochs"][-1]
    assert float(s.adj.abs().max()) == 0.0  # structure-free
    # the matching loss goes down over the run
    assert h["epochs"][-1]["loss"] < h["epochs"][0]["loss"]
    assert h["best_val_acc"] >= 0.6  # 4 balanced classes: chance is 0.25
    res = evaluate_condensed(s, graph, ["gcn", "sgc"], runs=2, epochs=100)
    assert res["gcn"]["test_acc"][0] > 0.6
    assert s.meta["method"] == "gcond-x" and s.meta["ratio"] == 0.05
    assert s.meta["dataset_checksum"] == graph.checksum()


def test_srgm_learns_a_structure_and_reports_conflicts_and_damping(aligned):
    cond = make_condenser("srgm", ratio=0.05, structure_epochs=(2, 4), **FAST)
    s = cond.condense(aligned)
    recs = cond.history_["epochs"]
    assert any(r["structure_step"] for r in recs) and not all(r["structure_step"] for r in recs)
    assert all(r["damping"] > 0 for r in recs)
    assert all(0.0 <= r["conflict_rate"] <= 1.0 for r in recs)
    st = s.stats()
    assert st["num_edges"] > 0 and st["weight_max"] > 0.05  # not collapsed


def test_same_seed_same_condensed_graph(graph):
    a = make_condenser("gcond", ratio=0.05, **FAST).condense(graph)
    b = make_condenser("gcond", ratio=0.05, **FAST).condense(graph)
    for m in a.modalities:
        assert torch.equal(a.features[m], b.features[m])
    assert torch.equal(a.adj, b.adj)


def test_interrupted_run_resumes_to_the_same_result(graph, tmp_path):
    ckpt = tmp_path / "run.ckpt.safetensors"
    params = dict(ratio=0.05, epochs=6, outer_steps=3, inner_steps=2, eval_every=2, eval_epochs=30,
                  checkpoint_every=2, structure_epochs=(1, 3))
    full = make_condenser("srgm", **params)
    ref = full.condense(graph)

    class Stop(Exception):
        pass

    def stop_at_5(rec):
        if rec["epoch"] == 5:
            raise Stop

    with pytest.raises(Stop):
        make_condenser("srgm", **params).condense(graph, progress=stop_at_5, checkpoint=ckpt)
    assert ckpt.exists()  # written at epoch 4
    resumed = make_condenser("srgm", **params)
    out = resumed.condense(graph, checkpoint=ckpt, resume=True)
    assert [r["epoch"] for r in resumed.history_["epochs"]] == list(range(1, 7))
    for m in ref.modalities:
        torch.testing.assert_close(out.features[m], ref.features[m])
    torch.testing.assert_close(out.adj, ref.adj)
    assert [r["loss"] for r in resumed.history_["epochs"]] == pytest.approx([r["loss"] for r in full.history_["epochs"]])
    # a checkpoint from another configuration is refused with a clear message
    with pytest.raises(DatasetError, match="another configuration"):
        make_condenser("srgm", **{**params, "lr_feat": 0.5}).condense(graph, checkpoint=ckpt, resume=True)


def test_inductive_condensation_never_reads_val_or_test_nodes(graph):
    g2 = graph.clone()
    held = ~g2.train_mask
    for m in g2.modalities:
        x = g2[f"x_{m}"].clone()
        x[held] = torch.randn(int(held.sum()), x.size(1))
        g2[f"x_{m}"] = x
    a = make_condenser("gcond", ratio=0.05, setting="inductive", **{**FAST, "eval_every": 100}).condense(graph)
    b = make_condenser("gcond", ratio=0.05, setting="inductive", **{**FAST, "eval_every": 100}).condense(g2)
    for m in a.modalities:
        assert torch.equal(a.features[m], b.features[m])
    views = graph_views(graph, "inductive")
    assert views["test"].num_nodes == int(graph.test_mask.sum())
    assert views["train"].num_nodes == int(graph.train_mask.sum())


@pytest.mark.parametrize("method", ["random", "herding", "kcenter"])
def test_coresets_keep_real_training_nodes_at_the_budget(graph, method):
    s = Coreset(method=method, ratio=0.05).condense(graph)
    per = class_budget(graph.y[graph.train_mask], graph.num_classes, 0.05)
    assert torch.bincount(s.y, minlength=graph.num_classes).tolist() == per.tolist()
    x = graph.fused()
    sx = torch.cat([s.features[m] for m in s.modalities], 1)
    train = x[graph.train_mask]
    # every kept row is a real training row
    assert bool(((sx[:, None, :] - train[None]).abs().sum(-1) < 1e-6).any(1).all())
    res = evaluate_condensed(s, graph, "sgc", runs=1, epochs=100)
    assert res["sgc"]["test_acc"][0] > 0.5


def test_herding_and_kcenter_choices():
    e = torch.tensor([[0.0, 0.0], [1.0, 0.0], [-1.0, 0.0], [10.0, 0.0]])
    # the mean is (2.5, 0): herding first takes the row nearest it, then the one that brings the mean closest
    assert herding(e, 2).tolist() == [1, 0]  # (1 + 0)/2 is nearer 2.5 than (1 - 1)/2 or (1 + 10)/2
    # k-center starts nearest the mean and then takes the farthest remaining row
    assert kcenter(e, 2).tolist() == [1, 3]
    assert kcenter(e, 3).tolist() == [1, 3, 2]


def test_evaluator_trains_every_architecture_and_whole_is_an_upper_bound(graph):
    s = Coreset(method="random", ratio=0.05).condense(graph)
    res = evaluate_condensed(s, graph, ["gcn", "sgc", "sage", "appnp", "gat", "cheb", "mlp"], runs=1, epochs=60)
    for b, r in res.items():
        assert 0.25 < r["test_acc"][0] <= 1.0, b
        assert not math.isnan(r["test_f1"][0])
    whole = train_whole(graph, "gcn", epochs=100)
    assert whole["test_acc"] >= res["gcn"]["test_acc"][0] - 0.02


def test_evaluator_errors_are_clear(graph):
    s = Coreset(method="random", ratio=0.05).condense(graph)
    with pytest.raises(ConfigError, match="allowed: gcn, sgc"):
        evaluate_condensed(s, graph, ["resnet"], runs=1)
    other = load_dataset("synthetic:text-dominant", num_nodes=600, num_classes=4, split="magb")
    with pytest.raises(DatasetError):
        evaluate_condensed(s, other, "gcn", runs=1)


def test_save_load_round_trip_keeps_meta(graph, tmp_path):
    s = make_condenser("gcond-x", ratio=0.05, **FAST).condense(graph)
    path = s.save(tmp_path / "S.safetensors")
    back = CondensedGraph.load(path)
    assert back.meta["method"] == "gcond-x" and back.meta["config"]["structure"] == "none"
    assert back.meta["history"]["num_records"] == FAST["epochs"]
    for m in s.modalities:
        assert torch.equal(back.features[m], s.features[m])


@pytest.mark.parametrize(
    "params, match",
    [
        ({"ratio": 0.0}, "ratio"),
        ({"ratio": 2}, "ratio"),
        ({"setting": "semi"}, "setting"),
        ({"damping": "field", "structure": "none"}, "damping_graph=.learned. needs a learned structure"),
        ({"distance": "l1"}, "distance"),
        ({"lr_feat": -1}, "lr_feat"),
        ({"bogus": 1}, "unknown parameter"),
    ],
)
def test_bad_parameters_are_refused_at_condense_in_one_line(graph, params, match):
    if "bogus" in params:  # the registry refuses unknown names when it builds the condenser
        with pytest.raises(ConfigError, match=match):
            make_condenser("gcond", **params)
        return
    cond = make_condenser("gcond", **params)  # __init__ only stores
    with pytest.raises(ConfigError, match=match) as err:
        cond.condense(graph)
    assert "\n" not in str(err.value)


def test_decoupling_needs_two_modalities(graph):
    g3 = graph.clone()
    g3.add_modality("audio", torch.randn(g3.num_nodes, 5))
    with pytest.raises(ConfigError, match="exactly two modalities"):
        GradientMatching(decouple=True, **FAST).prepare(g3)


def test_unequal_modality_widths_condense_and_decouple_in_the_shared_space(graph):
    g2 = graph.clone()
    proj = torch.randn(g2.feature("image").size(1), 40, generator=torch.Generator().manual_seed(0))
    g2.add_modality("image", g2.feature("image") @ proj, g2.presence("image"))
    cond = make_condenser("srgm", ratio=0.05, **FAST)
    s = cond.condense(g2)
    assert s.modality_dims == {"text": g2.feature("text").size(1), "image": 40}
    assert s.meta["decouple_space"] == "shared"
    assert all(math.isfinite(r["loss"]) and math.isfinite(r["damping"]) for r in cond.history_["epochs"])
    with pytest.raises(ConfigError, match="equal modality widths"):
        GradientMatching(decouple=True, decouple_space="input", **FAST).prepare(g2)


def test_gcn_real_side_gradients_equal_the_full_graph_gradients(graph):
    cond = GradientMatching(backbone="gcn", hidden=16, real_batch=10_000, **FAST)
    prob = cond.prepare(graph)
    net = FunctionalNet("gcn", prob.d, 16, graph.num_classes, torch.Generator().manual_seed(0))
    got = prob.real_grads(net, torch.Generator().manual_seed(1))
    adj = prob.adj
    full = net.logits(prob.ax, adj)  # the whole graph at once: Â relu(ÂX W1ᵀ + b1) W2ᵀ + b2
    for k in prob.classes:
        nodes = prob.class_idx[k]
        loss = F.cross_entropy(full[nodes], torch.full((nodes.numel(),), k))
        want = torch.autograd.grad(loss, net.weights, retain_graph=True)
        for a, b in zip(got[k], want):
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_gcn_backbone_condenses_and_its_feature_gradient_is_a_descent_direction(graph):
    cond = make_condenser("gcond", backbone="gcn", hidden=32, ratio=0.05, epochs=5, outer_steps=4, inner_steps=2,
                          eval_every=5, eval_epochs=40, structure_epochs=(1, 5))
    s = cond.condense(graph)
    assert all(math.isfinite(r["loss"]) for r in cond.history_["epochs"])
    assert s.num_nodes > 0 and cond.history_["best_val_acc"] > 0.4
    # the matching loss of the GCN path, as the loop computes it, goes down along -∂L/∂X'
    prob = cond.prepare(graph)
    gen = torch.Generator().manual_seed(0)
    net = FunctionalNet("gcn", prob.d, 32, graph.num_classes, gen)
    g_real = prob.real_grads(net, gen)
    x = prob.init_features(gen).requires_grad_()
    y = prob.y_syn

    def matching(xx):
        logits = prob.syn_logits(net, xx, None)
        total = 0.0
        for k in prob.classes:
            sel = y == k
            gs = torch.autograd.grad(F.cross_entropy(logits[sel], y[sel]), net.weights, create_graph=True)
            total = total + gradient_distance(list(gs), g_real[k], "gcond") * float(sel.sum()) / y.numel()
        return total

    loss = matching(x)
    (g,) = torch.autograd.grad(loss, x)
    assert float(matching(x - 1e-3 * g / g.norm())) < float(loss)


def test_field_damping_reaches_the_features(aligned):
    base = dict(ratio=0.05, epochs=2, outer_steps=3, inner_steps=1, eval_every=2, eval_epochs=20, structure_epochs=(0, 5),
                damping_weight=100.0)
    a = make_condenser("srgm", damping="structure", **base).condense(aligned)
    b = make_condenser("srgm", damping="field", **base).condense(aligned)
    c = make_condenser("srgm", damping="field", **{**base, "damping_weight": 0.0}).condense(aligned)
    diff = max(float((a.features[m] - b.features[m]).abs().max()) for m in a.modalities)
    assert diff > 1e-6  # with feature epochs only, structure damping leaves X' alone; field damping moves it
    for m in a.modalities:  # and with λ = 0 field damping is the structure form
        torch.testing.assert_close(a.features[m], c.features[m])


# ---------------------------------------------------------------------------------------------- the protocol
def test_the_registry_builds_one_class_per_family_with_the_variants_fixed():
    s = make_condenser("srgm")
    assert type(s) is SRGM and s.name == "srgm"
    assert (s.decouple, s.damping, s.damping_weight) == (True, "structure", 1.0)
    assert type(make_condenser("srgm-no-damping")) is SRGM and make_condenser("srgm-no-damping").damping is None
    assert make_condenser("srgm-no-decoupling").decouple is False
    g, gx = make_condenser("gcond"), make_condenser("gcond-x")
    assert type(g) is GCond and type(gx) is GCond and gx.structure == "none" and g.structure == "pge"
    assert (g.decouple, g.damping) == (False, None)
    h = make_condenser("herding", ratio=0.02)
    assert type(h) is Coreset and h.method == "herding" and h.ratio == 0.02 and h.name == "herding"
    assert condenser_names() == ["gcond", "gcond-x", "srgm", "srgm-no-decoupling", "srgm-no-damping", "srgm-x",
                                 "random", "herding", "kcenter"]
    with pytest.raises(ConfigError, match="fixes structure='none'"):
        make_condenser("gcond-x", structure="pge")
    with pytest.raises(ConfigError, match=r"unknown name 'srgn' \(did you mean 'srgm'\?\)"):
        make_condenser("srgn")
    with pytest.raises(ConfigError, match="unknown parameter 'lr_fet'"):
        make_condenser("srgm", lr_fet=0.1)


def test_srgm_differs_from_gcond_only_in_its_decoupling_and_damping_defaults():
    a, b = SRGM().get_params(), GCond().get_params()
    assert list(a) == list(b)  # the same parameters, in the same order
    assert {k for k in a if a[k] != b[k]} == {"decouple", "damping"}
    assert typing.get_args(param_types(GradientMatching)["distance"]) == GRADIENT_DISTANCES


def test_params_round_trip_and_fitted_state_exists_only_after_condense(graph):
    cond = make_condenser("gcond-x", ratio=0.05, **FAST)
    assert cond.get_params()["outer_steps"] == FAST["outer_steps"]
    assert cond.set_params(outer_steps=2) is cond and cond.params["outer_steps"] == 2
    with pytest.raises(ConfigError, match="unknown parameter 'outer'"):
        cond.set_params(outer=2)
    with pytest.raises(NotFittedError, match="condense"):
        _ = cond.history_
    records = []
    cond.condense(graph, progress=records.append)
    assert [r["epoch"] for r in records] == list(range(1, FAST["epochs"] + 1))
    assert all(r["epochs"] == FAST["epochs"] for r in records)
    assert len(cond.history_["epochs"]) == FAST["epochs"]
    assert "outer_steps=2" in repr(cond)
    core = Coreset(method="kcenter", ratio=0.05)
    with pytest.raises(NotFittedError):
        _ = core.history_
    seen = []
    core.condense(graph, progress=seen.append)
    assert seen[0]["epoch"] == seen[0]["epochs"] == 1 and len(core.history_["selected"]) > 0


def test_typed_parameters_are_checked_with_the_allowed_values(graph):
    with pytest.raises(ConfigError, match=r"structure='pgee' is not one of 'pge', 'none'"):
        make_condenser("gcond", structure="pgee").condense(graph)
    with pytest.raises(ConfigError, match="method='topk' is not one of 'random', 'herding', 'kcenter'"):
        Coreset(method="topk").condense(graph)
    with pytest.raises(ConfigError, match="epochs=0; allowed: an integer >= 1"):
        make_condenser("srgm", epochs=0).condense(graph)


def test_the_evaluator_selects_only_validated_epochs(graph):
    s = Coreset(method="random", ratio=0.05).condense(graph)
    views = graph_views(graph)
    for backbone in ("gcn", "sgc"):
        r = train_on_condensed(s, backbone, views["val"], views["test"], epochs=50, eval_every=20, seed=1)
        assert r["best_epoch"] in (20, 40, 50)
        assert 0.25 < r["val_acc"] <= 1.0


def test_pge_is_a_symmetric_adjacency_without_self_loops_and_seeded():
    x = torch.randn(7, 5, generator=torch.Generator().manual_seed(0))
    a = PGE(5, hidden=8, init_bias=-5.0, generator=torch.Generator().manual_seed(3))(x)
    assert a.shape == (7, 7)
    torch.testing.assert_close(a, a.T)
    assert float(a.diagonal().abs().max()) == 0.0
    off = a[~torch.eye(7, dtype=torch.bool)]
    assert float(off.min()) > 0 and float(off.max()) < 0.05  # starts nearly empty at bias -5
    b = PGE(5, hidden=8, init_bias=-5.0, generator=torch.Generator().manual_seed(3))(x)
    assert torch.equal(a, b)


def test_chebnet_maps_features_and_weighted_edges_to_logits():
    net = ChebNet(6, 8, 3, dropout=0.0)
    ei = torch.tensor([[0, 1, 1, 2], [1, 0, 2, 1]])
    out = net(torch.randn(4, 6), (ei, torch.tensor([0.5, 0.5, 1.0, 1.0])))
    assert out.shape == (4, 3) and bool(torch.isfinite(out).all())


# ---------------------------------------------------------------------------------------------- SR-GM-X
def test_knn_graph_is_the_symmetric_within_group_cosine_neighbourhood():
    from magkit.functional import knn_graph

    # angles 0, 10, 30, 90, 100 degrees: cosine order follows the angle gaps
    ang = torch.tensor([0.0, 10.0, 30.0, 90.0, 100.0]) * math.pi / 180
    x = torch.stack([ang.cos(), ang.sin()], 1) * torch.tensor([[1.0], [3.0], [0.5], [2.0], [1.0]])  # scale-free
    a = knn_graph(x, 1)
    expected = torch.zeros(5, 5)
    for i, j in [(0, 1), (1, 2), (3, 4)]:  # nearest: 0->1, 1->0, 2->1, 3->4, 4->3; union, symmetric
        expected[i, j] = expected[j, i] = 1.0
    assert torch.equal(a, expected)
    groups = torch.tensor([0, 1, 0, 1, 1])  # only same-group candidates: 0<->2, 1->3 (90-10 < 100-10), 3<->4
    g = knn_graph(x, 1, groups)
    assert torch.equal(g, g.T) and float(g.diagonal().abs().sum()) == 0
    assert {(i, j) for i, j in g.nonzero().tolist() if i < j} == {(0, 2), (1, 3), (3, 4)}
    assert float(g[groups[:, None] != groups[None, :]].sum()) == 0
    full = knn_graph(x, 10, groups)  # k above a group's size links the whole group
    assert torch.equal(full, ((groups[:, None] == groups[None, :]) & ~torch.eye(5, dtype=torch.bool)).float())
    with pytest.raises(ConfigError, match="k: 0; allowed: an integer >= 1"):
        knn_graph(x, 0)


def test_dirichlet_prox_solves_its_objective_and_keeps_smooth_fields():
    from magkit.functional import dirichlet_prox

    gen = torch.Generator().manual_seed(0)
    adj = torch.tensor([[0, 1, 1, 0], [1, 0, 1, 0], [1, 1, 0, 0], [0, 0, 0, 0]], dtype=torch.float64)
    g = torch.randn(4, 3, generator=gen, dtype=torch.float64)
    lam = 2.0
    h = dirichlet_prox(g, adj, lam)
    at = adj + torch.eye(4, dtype=torch.float64)
    dinv = at.sum(1).rsqrt()
    lap = torch.eye(4, dtype=torch.float64) - dinv[:, None] * at * dinv[None, :]
    torch.testing.assert_close(h + lam * lap @ h, g)  # the optimality condition of ½‖h − g‖² + ½λ tr(hᵀLh)
    torch.testing.assert_close(h[3], g[3])  # an isolated node keeps its row
    assert float(dirichlet_energy(h, adj)) < 0.5 * float(dirichlet_energy(g, adj))
    smooth = dinv.sqrt()[:, None] * torch.ones(4, 3, dtype=torch.float64)  # L's null space: D̃^{1/2} 1
    torch.testing.assert_close(dirichlet_prox(smooth, adj, lam), smooth)
    assert dirichlet_prox(g, adj, 0.0) is g
    with pytest.raises(ConfigError, match="lam: -1.0; allowed: >= 0"):
        dirichlet_prox(g, adj, -1.0)


def test_srgm_x_is_registered_structure_free_deterministic_and_damps_over_the_class_knn_graph(aligned, monkeypatch):
    import magkit.condense.matching as matching
    from magkit.functional import knn_graph

    s = make_condenser("srgm-x")
    assert type(s) is SRGM and s.name == "srgm-x"
    assert (s.structure, s.decouple, s.damping, s.damping_graph, s.damping_k, s.damping_weight) == \
        ("none", True, "proximal", "knn", 3, 1.0)
    calls = []

    def spy(x, k, groups=None):
        calls.append((x.clone(), k, groups.clone()))
        return knn_graph(x, k, groups)

    monkeypatch.setattr(matching, "knn_graph", spy)
    cond = make_condenser("srgm-x", ratio=0.05, **FAST)
    a = cond.condense(aligned)
    assert float(a.adj.abs().sum()) == 0.0 and a.stats()["num_edges"] == 0  # no structure on S
    assert a.meta["method"] == "srgm-x" and a.meta["config"]["damping_graph"] == "knn"
    assert len(calls) == FAST["epochs"]  # rebuilt once per epoch, from the current X', within the classes
    assert all(k == 3 and torch.equal(grp, a.y) for _, k, grp in calls)
    assert not torch.equal(calls[0][0], calls[-1][0])  # X' moved between epochs: the graph follows it
    recs = cond.history_["epochs"]
    assert all(r["damping"] > 0 and r["edge_weight"] == 0.0 for r in recs)
    b = make_condenser("srgm-x", ratio=0.05, **FAST).condense(aligned)
    for m in a.modalities:
        assert torch.equal(a.features[m], b.features[m])
    # λ = 0 without decoupling is GCond-X; with λ = 1 the damping changes X'
    plain = make_condenser("srgm-x", ratio=0.05, damping_weight=0.0, decouple=False, **FAST).condense(aligned)
    gx = make_condenser("gcond-x", ratio=0.05, **FAST).condense(aligned)
    undecoupled = make_condenser("srgm-x", ratio=0.05, decouple=False, **FAST).condense(aligned)
    for m in a.modalities:
        torch.testing.assert_close(plain.features[m], gx.features[m])
    assert max(float((undecoupled.features[m] - gx.features[m]).abs().max()) for m in a.modalities) > 1e-6


@pytest.mark.parametrize("params, message", [
    ({"damping_k": 0}, "SRGM: damping_k=0; allowed: an integer >= 1"),
    ({"damping_graph": "real"}, "damping_graph"),
    ({"damping": "structure"}, "damping='structure' sends the damping's gradient to the learned structure and needs "
                               "damping_graph='learned', got 'knn'"),
])
def test_srgm_x_bad_options_are_one_line_errors(aligned, params, message):
    with pytest.raises(ConfigError, match=message) as err:
        make_condenser("srgm-x", ratio=0.05, **FAST).set_params(**params).condense(aligned)
    assert "\n" not in str(err.value)
    with pytest.raises(ConfigError, match="damping_graph='learned' needs a learned structure"):
        GCond(structure="none", damping="proximal").condense(aligned)


def test_whole_graph_bar_runs_the_condensed_runs_protocol(graph, monkeypatch):
    import magkit.condense.evaluate as ev

    seen = []
    real = ev.train_model
    monkeypatch.setattr(ev, "train_model", lambda *a, **kw: seen.append(kw) or real(*a, **kw))
    train_whole(graph, "gcn", epochs=20)
    assert "eval_every" not in seen[-1] and "patience" not in seen[-1]  # standard: train_model's defaults
    train_whole(graph, "gcn", epochs=20, protocol="fast")
    assert (seen[-1]["eval_every"], seen[-1]["patience"]) == (10, ev.EVAL_PATIENCE)
    # patience counts validations: patience 1 at eval_every 5 stops at a validation, well before 200 epochs
    short = train_whole(graph, "gcn", epochs=200, protocol="fast", eval_every=5, patience=1, lr=0.05)
    assert short["epochs_run"] < 200 and short["epochs_run"] % 5 == 0
    assert train_whole(graph, "gcn", epochs=30, protocol="fast", patience=0)["epochs_run"] == 30
    for kw, msg in (({"val_dtype": "half"}, "val_dtype: 'half'; allowed: auto, float32, bfloat16"),
                    ({"patience": -1}, "patience: -1; allowed: an integer >= 1"),
                    ({"eval_every": 0}, "eval_every: 0; allowed: an integer >= 1")):
        with pytest.raises(ConfigError, match=msg):
            train_whole(graph, "gcn", epochs=5, protocol="fast", **kw)
