"""The condensers' fast paths compute bit-for-bit what their plain autograd forms compute.

The PGE's pair layers run a hand-written backward (:class:`magkit.models.pge._PairTrunk`), the SGC real side
gathers each class's rows once and computes its class gradients once per epoch (θ is fixed within one), and feature
epochs reuse the last epoch's A'. Each is pinned here against the plain computation with ``torch.equal`` (no
tolerance): the recorded benchmark rows stay reproducible.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from magkit.condense import GradientMatching, make_condenser
from magkit.condense.functional_net import FunctionalNet
from magkit.condense.problem import MatchingProblem
from magkit.data.datasets import load_dataset
from magkit.models.pge import PGE


def reference_pge(pge: PGE, x: torch.Tensor) -> torch.Tensor:
    """GCond's structure generator written with plain autograd operations (the form :class:`PGE` replaces)."""
    n = x.size(0)
    h = (x @ pge.wa.T)[:, None, :] + (x @ pge.wb.T)[None, :, :] + pge.b1
    h = F.relu(F.batch_norm(h.reshape(n * n, -1), None, None, pge.g1, None, training=True, eps=1e-5))
    h = F.relu(F.batch_norm(h @ pge.w2.T + pge.b2, None, None, pge.g2, None, training=True, eps=1e-5))
    s = (h @ pge.w3.T + pge.b3).reshape(n, n)
    a = torch.sigmoid((s + s.T) / 2)
    return a * (1 - torch.eye(n))


def reference_real_grads(prob: MatchingProblem, net: FunctionalNet, gen: torch.Generator) -> torch.Tensor:
    """The SGC real class gradients in closed form, each class's rows indexed out of Â^K X at every call."""
    w, b = net.weights[0].detach(), net.biases[0].detach()
    out = []
    for k in prob.classes:
        h = prob.prop[prob.class_idx[k]]
        e = torch.softmax(h @ w.T + b, dim=1)
        e[:, k] -= 1.0
        out.append((e.T @ h) / prob.class_idx[k].numel())
    return torch.stack(out)


@pytest.fixture()
def trained_pge():
    gen = torch.Generator().manual_seed(3)
    pge = PGE(48, 32, -5.0, generator=gen)
    with torch.no_grad():  # away from the initial state (unit gains, zero biases) so every term is exercised
        for p in pge.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=gen))
    x = torch.randn(23, 48, generator=gen).requires_grad_()
    return pge, x, gen


def _structure_step(forward, pge, x, c1, c2):
    """SR-GM's structure step on the PGE: one backward to (Φ, X') keeping the graph, a second to Φ only."""
    a = forward(x)
    g_loss = torch.autograd.grad(a, [*pge.parameters(), x], c1, retain_graph=True)
    g_damp = torch.autograd.grad((a * c2).sum(), list(pge.parameters()))
    return a, g_loss, g_damp


def test_pge_forward_and_both_backward_passes_equal_plain_autograd_bit_for_bit(trained_pge):
    pge, x, gen = trained_pge
    c1, c2 = torch.randn(23, 23, generator=gen), torch.randn(23, 23, generator=gen)
    a, g_loss, g_damp = _structure_step(pge, pge, x, c1, c2)
    a_ref, g_loss_ref, g_damp_ref = _structure_step(lambda z: reference_pge(pge, z), pge, x, c1, c2)
    assert torch.equal(a, a_ref)
    assert len(g_loss) == len(g_loss_ref) == 10
    for got, want in zip(g_loss + g_damp, g_loss_ref + g_damp_ref):
        assert got.shape == want.shape and torch.equal(got, want)
    with torch.no_grad():
        assert torch.equal(pge(x), a_ref)


def test_pge_second_order_gradients_equal_plain_autograd(trained_pge):
    pge, x, gen = trained_pge
    c = torch.randn(23, 23, generator=gen)

    def field_norm(forward):  # the gradient of ‖∂⟨A', C⟩/∂X'‖² with respect to Φ: a third-order path
        (gx,) = torch.autograd.grad((forward(x) * c).sum(), x, create_graph=True)
        return torch.autograd.grad((gx * gx).sum(), list(pge.parameters()))

    got, want = field_norm(pge), field_norm(lambda z: reference_pge(pge, z))
    assert all(g.abs().sum() > 0 for g in want[:3])
    for g, w in zip(got, want):
        assert torch.allclose(g, w, rtol=1e-5, atol=1e-7)
    pge.lean_backward = False  # plain autograd: what GradientMatching uses on a third-order path
    assert all(torch.equal(g, w) for g, w in zip(field_norm(pge), want))


def test_sgc_real_side_gathers_each_class_once_and_equals_the_indexed_gradients():
    graph = load_dataset("synthetic:balanced", num_nodes=600, num_classes=4, split="magb")
    prob = make_condenser("gcond", ratio=0.05).prepare(graph)
    net = FunctionalNet("sgc", prob.d, 16, graph.num_classes, torch.Generator().manual_seed(1))
    got = prob.real_grads(net, torch.Generator())
    assert got.shape == (len(prob.classes), graph.num_classes, prob.d)
    assert got.abs().sum() > 0
    assert torch.equal(got, reference_real_grads(prob, net, torch.Generator()))


@pytest.mark.parametrize("method, extra", [("srgm", {}), ("gcond", {}), ("gcond-x", {}),
                                           ("srgm", {"feature_through_pge": True, "damping": "field"}),
                                           ("srgm", {"backbone": "gcn", "inner_steps": 2, "damping": "proximal",
                                                     "damping_graph": "knn", "setting": "transductive"})])
def test_condensation_equals_the_run_on_plain_autograd_bit_for_bit(method, extra, monkeypatch):
    """Structure AND feature epochs (structure_epochs=(2, 4) over 6 epochs), validations included: the
    condensed graph and every logged number equal those of a run whose PGE is the plain autograd form
    (also on the third-order path, where the condenser keeps plain autograd)."""
    graph = load_dataset("synthetic:balanced", num_nodes=600, num_classes=4, split="magb", space="aligned",
                         misaligned=0.3)
    params = {**dict(ratio=0.05, seed=0, epochs=6, outer_steps=3, structure_epochs=(2, 4), eval_every=3,
                     eval_epochs=20, setting="inductive"), **extra}

    def run():
        cond = make_condenser(method, **params)
        s = cond.condense(graph)
        logs = [{k: v for k, v in e.items() if not k.endswith("_time_s")} for e in cond.history_["epochs"]]
        return s, logs

    fast, fast_logs = run()
    monkeypatch.setattr(PGE, "forward", reference_pge)
    if params.get("backbone", "sgc") == "sgc":  # the GCN real side keeps its own form (no reuse applies to it)
        monkeypatch.setattr(MatchingProblem, "real_grads", reference_real_grads)
    monkeypatch.setattr(GradientMatching, "_reuse", False)  # every quantity recomputed where it is used
    plain, plain_logs = run()
    assert torch.equal(fast.adj, plain.adj) and torch.equal(fast.y, plain.y)
    assert fast.features.keys() == plain.features.keys()
    assert all(torch.equal(fast.features[m], plain.features[m]) for m in plain.features)
    learned = method != "gcond-x"  # structure-free: no structure epochs
    assert [e["structure_step"] for e in fast_logs] == [learned, learned, False, False, learned, learned]
    assert len(fast_logs) == len(plain_logs) == 6
    for a, b in zip(fast_logs, plain_logs):
        assert a.keys() == b.keys()
        for key in a:
            same = a[key] == b[key] or (isinstance(a[key], float) and math.isnan(a[key]) and math.isnan(b[key]))
            assert same, (key, a[key], b[key])


def test_a_run_resumed_mid_way_equals_the_uninterrupted_run_bit_for_bit(tmp_path):
    """A resumed run starts without the last epoch's A' (it is recomputed from the restored X' and Φ): the
    condensed graph equals that of the run that never stopped."""
    graph = load_dataset("synthetic:balanced", num_nodes=600, num_classes=4, split="magb")
    params = dict(ratio=0.05, seed=0, epochs=6, outer_steps=3, structure_epochs=(1, 3), eval_every=3,
                  eval_epochs=20, checkpoint_every=2)
    whole = make_condenser("srgm", **params).condense(graph)

    class Stop(Exception):
        pass

    def stop_after_4(rec):
        if rec["epoch"] == 4:
            raise Stop

    ckpt = tmp_path / "run.ckpt"
    with pytest.raises(Stop):  # the checkpoint of epoch 2 is on disk, epochs 3 and 4 are lost
        make_condenser("srgm", **params).condense(graph, checkpoint=ckpt, progress=stop_after_4)
    resumed = make_condenser("srgm", **params).condense(graph, checkpoint=ckpt, resume=True)
    assert torch.equal(resumed.adj, whole.adj)
    assert all(torch.equal(resumed.features[m], whole.features[m]) for m in whole.features)
