"""GraphMNL maths in magkit.functional against hand-computed examples, closed forms and dense references."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.spatial.distance import jensenshannon
from scipy.stats import mannwhitneyu

from magkit.exceptions import ConfigError
from magkit.functional import (
    arbitrate,
    branch_scores,
    ema_update,
    instability,
    negative_learning_loss,
    negative_set,
    nontarget_distillation,
    nontarget_soft_ce,
    prior_once_fusion,
    reliability_auc,
    roc_auc,
    smooth_scores,
    transfer_gate,
)
from magkit.train.propagation import normalized_adjacency

# torch's "Sparse CSR tensor support is in beta" notice is not about magkit
pytestmark = pytest.mark.filterwarnings("ignore:Sparse CSR tensor support is in beta:UserWarning")

LN2 = math.log(2.0)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _random_negatives(n: int, c: int, y: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Random negative sets that never contain y (some rows empty)."""
    neg = torch.rand(n, c, generator=g) < 0.5
    neg[torch.arange(n), y] = False
    return neg


def _log1m_softmax_ref(z: torch.Tensor) -> torch.Tensor:
    """log(1 − q_c) = logsumexp_{k≠c} z_k − logsumexp_k z_k for every c, via a dense [n, C, C] mask."""
    eye = torch.eye(z.shape[1], dtype=torch.bool)
    lse_rest = torch.logsumexp(z.unsqueeze(1).masked_fill(eye, float("-inf")), dim=2)
    return lse_rest - torch.logsumexp(z, 1, keepdim=True)


def _nl_grad_ref(z: torch.Tensor, neg: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Closed-form ∂L/∂z_k = Σ_{c∈C̄} w_c q_c (δ_ck − q_k)/(1 − q_c), evaluated without cancellation:
    the c = k term is w_k q_k (the (1 − q_k) cancels exactly), the others −q_k w_c ρ_c with
    ρ_c = q_c/(1 − q_c) = exp(log q_c − log(1 − q_c))."""
    q = torch.softmax(z, 1)
    a = w * torch.exp(torch.log_softmax(z, 1) - _log1m_softmax_ref(z)) * neg  # w_c ρ_c on C̄
    off = ~torch.eye(z.shape[1], dtype=torch.bool)
    others = (a.unsqueeze(1) * off).sum(2)  # [n, k]: Σ_{c≠k} w_c ρ_c
    return w * q * neg - q * others


# ----------------------------------------------------------------------------------------------------
# 1. negative_learning_loss
# ----------------------------------------------------------------------------------------------------


def test_nl_loss_hand_example():
    # z = [0, 0, ln 2] -> e^z = [1, 1, 2], q = [1/4, 1/4, 1/2]
    z = torch.tensor([0.0, 0.0, LN2], dtype=torch.float64).repeat(4, 1)
    neg = torch.tensor(
        [
            [True, True, False],  # −log(3/4) − log(3/4) = 2 log(4/3) = 0.575364
            [False, False, True],  # −log(1 − 1/2) = log 2 = 0.693147
            [False, False, False],  # empty -> 0
            [True, True, False],  # weighted: −(2 log(3/4) + 0.5 log(3/4)) = 2.5 log(4/3) = 0.719205
        ]
    )
    w = torch.ones(4, 3, dtype=torch.float64)
    w[3] = torch.tensor([2.0, 0.5, 7.0])  # the 7 sits outside the negative set: ignored
    loss = negative_learning_loss(z, neg, w)
    expected = torch.tensor([2 * math.log(4 / 3), LN2, 0.0, 2.5 * math.log(4 / 3)], dtype=torch.float64)
    torch.testing.assert_close(loss, expected)
    # weights=None means all ones
    torch.testing.assert_close(negative_learning_loss(z[:3], neg[:3]), expected[:3])


def test_nl_loss_matches_naive_formula_on_moderate_logits():
    g = _gen(0)
    z = torch.randn(50, 6, generator=g, dtype=torch.float64) * 2
    neg = torch.rand(50, 6, generator=g) < 0.5
    w = torch.rand(50, 6, generator=g, dtype=torch.float64)
    q = torch.softmax(z, 1)
    naive = -(w * torch.log(1 - q) * neg).sum(1)
    torch.testing.assert_close(negative_learning_loss(z, neg, w), naive)


def test_nl_loss_extreme_logits_finite_and_correct_in_float32():
    # z = [50, −50, 0], C̄ = {0}: q_0 = 1/(1 + e^−100 + e^−50) rounds to 1 in float32, so the naive
    # −log(1 − q_0) is inf. Exact: −log(1 − q_0) = lse(z) − lse(z_1, z_2) = 50 + log(1 + e^−50 + e^−100)
    # − log(e^−50 + 1) ≈ 50. Gradient (closed form q_c (δ_ck − q_k)/(1 − q_c) with c = 0):
    #   k = 0: q_0 ≈ 1;  k = 1: −q_1 q_0/(1 − q_0) = −e^−50/(1 + e^−50) ≈ −1.9e−22;  k = 2: −q_2 q_0/(1 − q_0) ≈ −1.
    z = torch.tensor([[50.0, -50.0, 0.0], [-50.0, 50.0, 50.0], [50.0, -50.0, -50.0]], requires_grad=True)
    neg = torch.tensor([[True, False, False], [True, False, False], [False, True, True]])
    loss = negative_learning_loss(z, neg)
    assert torch.isfinite(loss).all()
    # row 1: q_0 = e^−100/(2 + e^−100): −log(1 − q_0) ≈ e^−100/2 ≈ 0 (float32)
    # row 2: q_1 = q_2 = e^−100/(1 + 2 e^−100): loss ≈ 2 e^−100 ≈ 0
    torch.testing.assert_close(loss.detach(), torch.tensor([50.0, 0.0, 0.0]))
    loss.sum().backward()
    assert torch.isfinite(z.grad).all()
    torch.testing.assert_close(z.grad[0], torch.tensor([1.0, 0.0, -1.0]))
    # a flipped sign (−50 ↔ 50) on the other rows gives vanishing gradients, never NaN
    torch.testing.assert_close(z.grad[1:], torch.zeros(2, 3), atol=1e-6, rtol=0)


def test_nl_loss_extreme_logits_match_exact_float64_reference():
    # logits near ±50 (top classes with q rounding to 1 even in float64), checked in float32
    g = _gen(1)
    z = (torch.randint(-1, 2, (40, 5), generator=g) * 50.0).double() + torch.randn(
        40, 5, generator=g
    ).double()
    neg = torch.rand(40, 5, generator=g) < 0.6
    ref = -(_log1m_softmax_ref(z) * neg).sum(1)
    z32 = z.float().requires_grad_(True)
    out = negative_learning_loss(z32, neg)
    torch.testing.assert_close(out.double(), ref, rtol=1e-5, atol=1e-4)
    out.sum().backward()
    grad_ref = _nl_grad_ref(z, neg, torch.ones_like(z))
    assert torch.isfinite(z32.grad).all()
    torch.testing.assert_close(z32.grad.double(), grad_ref, rtol=1e-4, atol=1e-5)


def test_nl_loss_empty_negative_sets_give_zero_loss_and_zero_gradient():
    z = torch.randn(3, 4, generator=_gen(2), requires_grad=True)
    loss = negative_learning_loss(z, torch.zeros(3, 4, dtype=torch.bool))
    assert torch.equal(loss, torch.zeros(3))
    loss.sum().backward()
    assert torch.equal(z.grad, torch.zeros(3, 4))


def test_nl_loss_rejects_bad_shapes():
    with pytest.raises(ConfigError, match="neg_mask: expected shape"):
        negative_learning_loss(torch.zeros(3, 4), torch.zeros(3, 5, dtype=torch.bool))
    with pytest.raises(ConfigError, match="at least 2 classes"):
        negative_learning_loss(torch.zeros(3, 1), torch.zeros(3, 1, dtype=torch.bool))
    with pytest.raises(ConfigError, match=r"logits: expected a \[n, C\]"):
        negative_learning_loss(torch.zeros(4), torch.zeros(4, dtype=torch.bool))


# ----------------------------------------------------------------------------------------------------
# 2. the target-preserving property: ∂L/∂z_y = −Σ_{c∈C̄} w_c q_c q_y/(1 − q_c) ≤ 0
# ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("scale", [1.0, 5.0, 20.0])
def test_nl_gradient_on_target_is_never_positive_and_matches_closed_form(scale):
    g = _gen(3)
    n, c = 300, 7
    z = (torch.randn(n, c, generator=g, dtype=torch.float64) * scale).requires_grad_(True)
    y = torch.randint(0, c, (n,), generator=g)
    neg = _random_negatives(n, c, y, g)
    w = torch.rand(n, c, generator=g, dtype=torch.float64) * 2
    negative_learning_loss(z, neg, w).sum().backward()
    grad_y = z.grad[torch.arange(n), y]
    assert (grad_y <= 0).all()
    zd = z.detach()
    q_y = torch.softmax(zd, 1)[torch.arange(n), y]
    # −Σ_c w_c q_c q_y/(1 − q_c), with q_c/(1 − q_c) = exp(log q_c − log(1 − q_c)) (1 − q_c underflows at scale 20)
    ratio = torch.exp(torch.log_softmax(zd, 1) - _log1m_softmax_ref(zd))
    closed = -(w * ratio * neg).sum(1) * q_y
    torch.testing.assert_close(grad_y, closed)
    if scale == 1.0:  # the textbook form, where 1 − q_c is representable
        q = torch.softmax(zd, 1)
        torch.testing.assert_close(grad_y, -(w * q / (1 - q) * neg).sum(1) * q_y)
    # whole gradient against the closed form
    torch.testing.assert_close(z.grad, _nl_grad_ref(zd, neg, w))


# ----------------------------------------------------------------------------------------------------
# 3. MNL's non-target soft cross-entropy (the ablation)
# ----------------------------------------------------------------------------------------------------


def test_nontarget_soft_ce_hand_example_and_target_gradient():
    # q_b = softmax([0, 0, ln 2]) = [1/4, 1/4, 1/2]; p_dom = [0.7, 0.2, 0.1]; y = 0
    # L = −(0.2 log 1/4 + 0.1 log 1/2) = 0.2·1.386294 + 0.1·0.693147 = 0.346574
    # ∂L/∂z_y = (1 − p_dom,y) q_y = 0.3 · 0.25 = 0.075 > 0
    z = torch.tensor([[0.0, 0.0, LN2]], dtype=torch.float64, requires_grad=True)
    p = torch.tensor([[0.7, 0.2, 0.1]], dtype=torch.float64)
    loss = nontarget_soft_ce(z, p, torch.tensor([0]))
    torch.testing.assert_close(loss, torch.tensor([0.2 * math.log(4) + 0.1 * LN2], dtype=torch.float64))
    loss.sum().backward()
    assert z.grad[0, 0].item() == pytest.approx(0.075)


def test_nontarget_soft_ce_pushes_target_down_where_nl_does_not():
    g = _gen(4)
    n, c = 200, 5
    z = torch.randn(n, c, generator=g, dtype=torch.float64, requires_grad=True)
    p_dom = torch.softmax(torch.randn(n, c, generator=g, dtype=torch.float64) * 2, 1)
    y = torch.randint(0, c, (n,), generator=g)
    nontarget_soft_ce(z, p_dom, y).sum().backward()
    rows = torch.arange(n)
    q = torch.softmax(z.detach(), 1)
    closed = (1 - p_dom[rows, y]) * q[rows, y]
    torch.testing.assert_close(z.grad[rows, y], closed)
    assert (z.grad[rows, y] > 0).all()
    # same nodes, target-preserving NL on the classes the dominant finds unlikely: never positive
    z.grad = None
    neg = negative_set(p_dom, y, torch.ones(n, dtype=torch.bool), rho=0.2)
    negative_learning_loss(z, neg).sum().backward()
    assert (z.grad[rows, y] <= 0).all()


def test_nontarget_soft_ce_rejects_out_of_range_targets():
    with pytest.raises(ConfigError, match=r"target: labelled nodes need class ids in \[0, 2\]"):
        nontarget_soft_ce(torch.zeros(2, 3), torch.full((2, 3), 1 / 3), torch.tensor([0, -1]))


def test_nontarget_distillation_hand_example_and_gradients():
    # y = 0; p̄ = [0.2, 0.1] / 0.3 = [2/3, 1/3]; q̄ = softmax([0, ln 2]) = [1/3, 2/3] (z_0 = 5 does not enter)
    # L = 2/3 log 2 + 1/3 log ½ = (1/3) ln 2;  ∂L/∂z_c = q̄_c − p̄_c = [0, −1/3, +1/3]
    z = torch.tensor([[5.0, 0.0, LN2]], dtype=torch.float64, requires_grad=True)
    p = torch.tensor([[0.7, 0.2, 0.1]], dtype=torch.float64)
    loss = nontarget_distillation(z, p, torch.tensor([0]))
    torch.testing.assert_close(loss, torch.tensor([LN2 / 3], dtype=torch.float64))
    loss.sum().backward()
    torch.testing.assert_close(z.grad, torch.tensor([[0.0, -1 / 3, 1 / 3]], dtype=torch.float64))


def test_nontarget_distillation_never_touches_the_target_logit():
    g = _gen(11)
    n, c = 300, 6
    z = (torch.randn(n, c, generator=g, dtype=torch.float64) * 4).requires_grad_(True)
    p_dom = torch.softmax(torch.randn(n, c, generator=g, dtype=torch.float64) * 3, 1)
    y = torch.randint(0, c, (n,), generator=g)
    loss = nontarget_distillation(z, p_dom, y)
    loss.sum().backward()
    rows = torch.arange(n)
    assert (z.grad[rows, y] == 0).all()  # exactly zero, not merely non-positive
    assert (loss >= -1e-12).all() and bool((loss > 1e-3).any())
    # the target logit does not enter the loss at all
    z2 = z.detach().clone()
    z2[rows, y] += torch.randn(n, generator=g, dtype=torch.float64) * 10
    torch.testing.assert_close(nontarget_distillation(z2, p_dom, y), loss.detach())
    # zero where the branch already ranks the non-target classes like the teacher, whatever its target logit
    z3 = torch.log(p_dom).clone()
    z3[rows, y] = 7.0
    torch.testing.assert_close(nontarget_distillation(z3, p_dom, y), torch.zeros(n, dtype=torch.float64))
    # against positive distillation, the "imitation" part is gone: KD raises the target where the teacher is surer
    z.grad = None
    q = torch.log_softmax(z, 1)
    (p_dom * (torch.log(p_dom) - q)).sum().backward()
    assert bool((z.grad[rows, y] != 0).all())


def test_mnl_loss_is_nontarget_distillation_plus_a_push_on_the_target():
    """MNL's non-target soft CE = (1 − p_y) [KL(p̄ ‖ q̄) + H(p̄)] − (1 − p_y) log(1 − q_y): the target-preserving
    distillation, weighted, plus a negative-learning term on the target itself (what the mnl-loss ablation adds)."""
    g = _gen(12)
    n, c = 100, 7
    z = torch.randn(n, c, generator=g, dtype=torch.float64) * 3
    p = torch.softmax(torch.randn(n, c, generator=g, dtype=torch.float64) * 2, 1)
    y = torch.randint(0, c, (n,), generator=g)
    rows = torch.arange(n)
    w = 1 - p[rows, y]
    pbar = p.scatter(1, y.view(-1, 1), 0.0) / w.unsqueeze(1)
    ent = -(pbar * torch.log(pbar.clamp_min(1e-300))).sum(1)
    q_y = torch.softmax(z, 1)[rows, y]
    want = w * (nontarget_distillation(z, p, y) + ent) - w * torch.log1p(-q_y)
    torch.testing.assert_close(nontarget_soft_ce(z, p, y), want)


def test_nontarget_distillation_is_finite_for_extreme_logits_and_checks_input():
    z = torch.tensor([[50.0, -50.0, 0.0, 20.0], [-50.0, 50.0, 50.0, -50.0]], requires_grad=True)
    p = torch.tensor([[0.97, 0.0, 0.01, 0.02], [0.5, 0.5, 0.0, 0.0]])
    loss = nontarget_distillation(z, p, torch.tensor([0, 1]))
    loss.sum().backward()
    assert torch.isfinite(loss).all() and torch.isfinite(z.grad).all()
    with pytest.raises(ConfigError, match=r"target: labelled nodes need class ids in \[0, 2\]"):
        nontarget_distillation(torch.zeros(2, 3), torch.full((2, 3), 1 / 3), torch.tensor([0, 3]))
    with pytest.raises(ConfigError, match=r"p_dom: expected shape \(2, 3\)"):
        nontarget_distillation(torch.zeros(2, 3), torch.full((2, 4), 1 / 4), torch.tensor([0, 1]))


# ----------------------------------------------------------------------------------------------------
# 4. negative_set
# ----------------------------------------------------------------------------------------------------

P4 = torch.tensor(
    [
        [0.02, 0.90, 0.05, 0.03],  # node 0, labelled y = 0
        [0.01, 0.04, 0.60, 0.35],  # node 1, unlabelled (argmax 2)
        [0.30, 0.01, 0.65, 0.04],  # node 2, labelled y = 1 (a class the dominant finds unlikely)
    ]
)
Y4 = torch.tensor([0, -1, 1])
L4 = torch.tensor([True, False, True])


def test_negative_set_threshold_hand_example():
    # rho = 0.05 (strict <): node 0: {0, 3} minus target 0 -> {3} (0.05 is not < 0.05)
    #                        node 1: {0, 1}; argmax 2 and 0.35 >= rho are out anyway
    #                        node 2: {1, 3} minus target 1 -> {3}
    got = negative_set(P4, Y4, L4, rho=0.05)
    expected = torch.tensor(
        [[False, False, False, True], [True, True, False, False], [False, False, False, True]]
    )
    assert torch.equal(got, expected)


def test_negative_set_class_prior_hand_example():
    # π = (1, 1, 1, 7) / 10, C = 4, ρ = 0.05: thresholds ρ C π = (0.02, 0.02, 0.02, 0.14)
    #   node 0 (y = 0): 0.03 < 0.14 at class 3 only -> {3}   (0.05 at class 2 is no longer < its 0.02)
    #   node 1 (argmax 2): 0.01 < 0.02 at class 0 -> {0}    (0.04 at class 1 is not; 0.35 at class 3 is not)
    #   node 2 (y = 1): 0.04 < 0.14 at class 3 -> {3}
    expected = torch.tensor(
        [[False, False, False, True], [True, False, False, False], [False, False, False, True]]
    )
    assert torch.equal(negative_set(P4, Y4, L4, rho=0.05, class_prior=torch.tensor([1.0, 1, 1, 7])), expected)
    # counts or shares give the same sets; a uniform prior is the plain threshold rule
    assert torch.equal(negative_set(P4, Y4, L4, rho=0.05, class_prior=torch.tensor([0.1, 0.1, 0.1, 0.7])), expected)
    assert torch.equal(negative_set(P4, Y4, L4, rho=0.05, class_prior=torch.ones(4)), negative_set(P4, Y4, L4, rho=0.05))
    with pytest.raises(ConfigError, match="class_prior needs the threshold rule"):
        negative_set(P4, Y4, L4, rho=None, k=2, class_prior=torch.ones(4))
    with pytest.raises(ConfigError, match="class_prior: must be finite and non-negative"):
        negative_set(P4, Y4, L4, rho=0.05, class_prior=torch.tensor([1.0, -1, 1, 1]))
    with pytest.raises(ConfigError, match="class_prior"):
        negative_set(P4, Y4, L4, rho=0.05, class_prior=torch.ones(3))


def test_negative_set_count_hand_example():
    # k = 2: node 0: eligible {1, 2, 3} (not y = 0): two smallest 0.03 (3), 0.05 (2) -> {2, 3}
    #        node 1: eligible {0, 1, 3} (not argmax 2): 0.01 (0), 0.04 (1) -> {0, 1}
    #        node 2: eligible {0, 2, 3} (not y = 1): 0.04 (3), 0.30 (0) -> {0, 3}
    got = negative_set(P4, Y4, L4, rho=None, k=2)
    expected = torch.tensor(
        [[False, False, True, True], [True, True, False, False], [True, False, False, True]]
    )
    assert torch.equal(got, expected)
    # k = C − 1 takes every eligible class: all but the protected one
    full = negative_set(P4, Y4, L4, rho=None, k=3)
    assert torch.equal(full, ~torch.nn.functional.one_hot(torch.tensor([0, 2, 1]), 4).bool())


def test_negative_set_excludes_argmax_even_below_rho():
    # C = 25: p = 0.048 at class 7, (1 − 0.048)/24 = 0.039667 elsewhere: every class is < rho = 0.05
    p = torch.full((2, 25), (1 - 0.048) / 24)
    p[:, 7] = 0.048
    got = negative_set(p, torch.tensor([-1, 3]), torch.tensor([False, True]), rho=0.05)
    assert got[0].sum() == 24 and not got[0, 7]  # unlabelled: the predicted class is protected
    assert got[1].sum() == 24 and not got[1, 3] and got[1, 7]  # labelled: only the target is protected


def test_negative_set_properties_on_random_input():
    g = _gen(5)
    n, c = 500, 6
    p = torch.softmax(torch.randn(n, c, generator=g) * 3, 1)
    labelled = torch.rand(n, generator=g) < 0.5
    y = torch.where(labelled, torch.randint(0, c, (n,), generator=g), torch.tensor(-1))
    rows = torch.arange(n)
    for rho, k in [(0.1, None), (None, 2)]:
        neg = negative_set(p, y, labelled, rho=rho, k=k)
        assert not neg[rows[labelled], y[labelled]].any()
        assert not neg[rows[~labelled], p.argmax(1)[~labelled]].any()
        if rho is not None:
            assert (p[neg] < rho).all()
            assert torch.equal(neg[~labelled], (p < rho)[~labelled] & neg[~labelled])
        else:
            assert (neg.sum(1) == k).all()


def test_negative_set_errors():
    with pytest.raises(ConfigError, match="exactly one of rho .* or k"):
        negative_set(P4, Y4, L4, k=2)  # the default rho is still set
    with pytest.raises(ConfigError, match="exactly one of rho .* or k"):
        negative_set(P4, Y4, L4, rho=None)
    for bad in (0.0, 1.0, -0.1, 1.5):
        with pytest.raises(ConfigError, match=r"rho: must lie in \(0, 1\)"):
            negative_set(P4, Y4, L4, rho=bad)
    for bad in (0, 4):
        with pytest.raises(ConfigError, match=r"k: must lie in \[1, C − 1\] = \[1, 3\]"):
            negative_set(P4, Y4, L4, rho=None, k=bad)
    with pytest.raises(ConfigError, match="target: labelled nodes need class ids"):
        negative_set(P4, torch.tensor([0, -1, -1]), L4)


# ----------------------------------------------------------------------------------------------------
# 5. branch_scores
# ----------------------------------------------------------------------------------------------------

# Graph (rows = targets) with self-loops that must be ignored; node 3 has only its self-loop:
#   row 0: self 0.5, j=1: 0.5
#   row 1: self 0.2, j=0: 0.3, j=2: 0.5
#   row 2: self 1.0, j=1: 0.25
#   row 3: self 1.0
A_HAND = torch.tensor(
    [
        [0.5, 0.5, 0.0, 0.0],
        [0.3, 0.2, 0.5, 0.0],
        [0.0, 0.25, 1.0, 0.0],
        [0.0, 0.0, 0.0, 1.0],
    ],
    dtype=torch.float64,
)
E = torch.eye(4, dtype=torch.float64)
PF_HAND = torch.stack([E[0], E[1], E[0], E[2]])  # fused predictions: one-hot e0, e1, e0, e2
NAN4 = [float("nan")] * 4
PROBS_HAND = torch.tensor(
    [
        [[1.0, 0.0, 0.0, 0.0], [0.5, 0.5, 0.0, 0.0]],  # node 0, labelled y = 0
        [[0.25, 0.25, 0.25, 0.25], [0.5, 0.0, 0.5, 0.0]],  # node 1, unlabelled
        [[0.1, 0.2, 0.6, 0.1], NAN4],  # node 2, labelled y = 2, branch 1 absent (garbage)
        [[0.0, 0.0, 1.0, 0.0], [0.5, 0.0, 0.5, 0.0]],  # node 3, unlabelled, isolated
    ],
    dtype=torch.float64,
)
PRESENT_HAND = torch.tensor([[True, True], [True, True], [True, False], [True, True]])
Y_HAND = torch.tensor([0, -1, 2, -1])
LAB_HAND = torch.tensor([True, False, True, False])
# entropy of [0.1, 0.2, 0.6, 0.1]: 2·0.1 ln 10 + 0.2 ln 5 + 0.6 ln(5/3) = 0.460517 + 0.321888 + 0.306495
H2 = 2 * 0.1 * math.log(10) + 0.2 * math.log(5) + 0.6 * math.log(5 / 3)  # = 1.088900
U2 = 1 - H2 / math.log(4)  # = 1 − 1.088900/1.386294 = 0.214525


@pytest.mark.parametrize("layout", ["dense", "coo", "csr"])
def test_branch_scores_hand_example(layout):
    adj = {"dense": A_HAND, "coo": A_HAND.to_sparse(), "csr": A_HAND.to_sparse_csr()}[layout]
    out = branch_scores(PROBS_HAND, PRESENT_HAND, Y_HAND, LAB_HAND, PF_HAND, adj)
    # neighbour reference (weighted mean of p_f over j ≠ i):
    #   node 0: j=1 -> e1;  node 1: j=0 (0.3·e0), j=2 (0.5·e0) -> e0;  node 2: j=1 -> e1;  node 3: own p_f = e2
    # agreement ⟨p_b(i), ref(i)⟩: node 0: [0, 0.5]; node 1: [0.25, 0.5]; node 2: [0.2, absent]; node 3: [1, 0.5]
    agreement = [[0.0, 0.5], [0.25, 0.5], [0.2, 0.0], [1.0, 0.5]]
    # confidence 1 − H/ln 4: one-hot -> 1, two halves -> 1 − ln 2/ln 4 = 0.5, uniform -> 0
    confidence = [[1.0, 0.5], [0.0, 0.5], [U2, 0.0], [1.0, 0.5]]
    # labelled only: node 0 (y=0): p_y = [1, 0.5], margin = [1 − 0, 0.5 − 0.5]; node 2 (y=2): 0.6, 0.6 − 0.2
    target_prob = [[1.0, 0.5], [0.0, 0.0], [0.6, 0.0], [0.0, 0.0]]
    margin = [[1.0, 0.0], [0.0, 0.0], [0.4, 0.0], [0.0, 0.0]]
    # score: labelled -> p_y; unlabelled -> ½(u + a): node 1: [½(0 + 0.25), ½(0.5 + 0.5)], node 3: [1, 0.5]
    score = [[1.0, 0.5], [0.125, 0.5], [0.6, 0.0], [1.0, 0.5]]
    for key, val in [
        ("agreement", agreement),
        ("confidence", confidence),
        ("target_prob", target_prob),
        ("margin", margin),
        ("score", score),
    ]:
        torch.testing.assert_close(out[key], torch.tensor(val, dtype=torch.float64), msg=key)


def _branch_scores_loop(probs, present, target, labelled, pf, adj_dense):
    """Per-node reference with python loops (the test's own, independent formulation)."""
    n, nb, c = probs.shape
    out = {
        key: torch.zeros(n, nb, dtype=torch.float64)
        for key in ("margin", "target_prob", "confidence", "agreement", "score")
    }
    for i in range(n):
        neigh = [(j, adj_dense[i, j].item()) for j in range(n) if j != i and adj_dense[i, j] != 0]
        tot = sum(w for _, w in neigh)
        for b in range(nb):
            if not present[i, b]:
                continue
            p = probs[i, b]
            ent = -sum(float(v) * math.log(float(v)) for v in p if v > 0)
            u = 1 - ent / math.log(c)
            if tot > 0:
                a = sum(w * float(p @ pf[j]) for j, w in neigh) / tot
            else:
                a = float(p @ pf[i])
            out["confidence"][i, b] = u
            out["agreement"][i, b] = a
            if labelled[i]:
                y = int(target[i])
                others = [float(p[k]) for k in range(c) if k != y]
                out["margin"][i, b] = float(p[y]) - max(others)
                out["target_prob"][i, b] = float(p[y])
                out["score"][i, b] = float(p[y])
            else:
                out["score"][i, b] = 0.5 * (u + a)
    return out


def test_branch_scores_match_loop_reference_on_random_graph():
    g = _gen(6)
    n, nb, c = 30, 3, 5
    src = torch.randint(0, n, (60,), generator=g)
    dst = torch.randint(0, n, (60,), generator=g)
    keep = src != dst
    ei = torch.stack([torch.cat([src[keep], dst[keep]]), torch.cat([dst[keep], src[keep]])])
    adj = normalized_adjacency(ei, n)  # CSR, symmetric-normalised, with self-loops; some nodes isolated
    probs = torch.softmax(torch.randn(n, nb, c, generator=g, dtype=torch.float64) * 2, -1)
    probs[0, 0] = torch.tensor([1.0, 0, 0, 0, 0])  # exact zeros: 0 log 0 = 0
    present = torch.rand(n, nb, generator=g) < 0.8
    labelled = torch.rand(n, generator=g) < 0.4
    y = torch.where(labelled, torch.randint(0, c, (n,), generator=g), torch.tensor(-1))
    pf = torch.softmax(torch.randn(n, c, generator=g, dtype=torch.float64), -1)
    out = branch_scores(probs, present, y, labelled, pf, adj)
    ref = _branch_scores_loop(probs, present, y, labelled, pf, adj.to_dense().double())
    for key in ref:
        torch.testing.assert_close(out[key], ref[key], msg=key)
    assert (out["confidence"] >= 0).all() and (out["confidence"] <= 1 + 1e-12).all()


def test_branch_scores_carry_no_gradient():
    probs = PROBS_HAND.clone().nan_to_num(0.25).requires_grad_(True)
    pf = PF_HAND.clone().requires_grad_(True)
    out = branch_scores(probs, PRESENT_HAND, Y_HAND, LAB_HAND, pf, A_HAND)
    assert all(not v.requires_grad for v in out.values())


def test_branch_scores_fields_subset_equals_full_and_skips_the_rest():
    full = branch_scores(PROBS_HAND, PRESENT_HAND, Y_HAND, LAB_HAND, PF_HAND, A_HAND.to_sparse_csr())
    for fields in [("score",), ("score", "agreement"), ("confidence",), ("margin", "target_prob")]:
        part = branch_scores(PROBS_HAND, PRESENT_HAND, Y_HAND, LAB_HAND, PF_HAND, A_HAND.to_sparse_csr(), fields=fields)
        assert set(part) == set(fields)
        for key in fields:
            torch.testing.assert_close(part[key], full[key], msg=key)
    with pytest.raises(ConfigError, match="fields: unknown"):
        branch_scores(PROBS_HAND, PRESENT_HAND, Y_HAND, LAB_HAND, PF_HAND, A_HAND, fields=("entropy",))


def test_branch_scores_with_a_precomputed_off_diagonal_adjacency():
    from magkit.functional import without_diagonal

    adj = A_HAND.to_sparse_csr()
    off = without_diagonal(adj)
    assert off.to_dense().diagonal().abs().sum() == 0
    torch.testing.assert_close(off.to_dense(), A_HAND - torch.diag(A_HAND.diagonal()))
    plain = branch_scores(PROBS_HAND, PRESENT_HAND, Y_HAND, LAB_HAND, PF_HAND, adj)
    given = branch_scores(PROBS_HAND, PRESENT_HAND, Y_HAND, LAB_HAND, PF_HAND, adj, offdiag=off)
    for key in plain:
        assert torch.equal(plain[key], given[key]), key


def test_branch_scores_errors():
    with pytest.raises(ConfigError, match="present: expected shape"):
        branch_scores(PROBS_HAND, PRESENT_HAND[:, :1], Y_HAND, LAB_HAND, PF_HAND, A_HAND)
    with pytest.raises(ConfigError, match="target: labelled nodes need class ids"):
        branch_scores(PROBS_HAND, PRESENT_HAND, torch.tensor([0, -1, -1, -1]), LAB_HAND, PF_HAND, A_HAND)


# ----------------------------------------------------------------------------------------------------
# 6. smooth_scores
# ----------------------------------------------------------------------------------------------------

# star around node 0 (rows = targets), no self-loops, plus isolated node 3:
#   0 <- {1, 2},  1 <- {0},  2 <- {0}
STAR = torch.tensor([[0, 1, 1, 0], [1, 0, 0, 0], [1, 0, 0, 0], [0, 0, 0, 0]], dtype=torch.float64)


def test_smooth_scores_hand_example_all_present():
    r = torch.tensor([[1.0], [0.0], [0.5], [0.7]], dtype=torch.float64)
    present = torch.ones(4, 1, dtype=torch.bool)
    # step 1 (β = ½): N(r) = [(0 + 0.5)/2, 1, 1, own 0.7] = [0.25, 1, 1, 0.7]
    #   r̃_1 = ½ r + ½ N = [0.625, 0.5, 0.75, 0.7]
    one = smooth_scores(r, present, STAR, beta=0.5, steps=1)
    torch.testing.assert_close(one, torch.tensor([[0.625], [0.5], [0.75], [0.7]], dtype=torch.float64))
    # step 2: N(r̃_1) = [(0.5 + 0.75)/2, 0.625, 0.625, 0.7] = [0.625, 0.625, 0.625, 0.7]
    #   r̃_2 = ½ r + ½ N = [0.8125, 0.3125, 0.5625, 0.7]
    two = smooth_scores(r, present, STAR.to_sparse_csr(), beta=0.5, steps=2)
    torch.testing.assert_close(two, torch.tensor([[0.8125], [0.3125], [0.5625], [0.7]], dtype=torch.float64))


def test_smooth_scores_hand_example_with_absent_branch():
    # branch 1 absent on node 2 (its r = 9 must not leak); branch 0 present everywhere
    r = torch.tensor([[1.0, 1.0], [0.0, 0.0], [0.5, 9.0], [0.7, 0.7]], dtype=torch.float64)
    present = torch.tensor([[True, True], [True, True], [True, False], [True, True]])
    out = smooth_scores(r, present, STAR.to_sparse(), beta=0.5, steps=1)
    # branch 1: N(0) = r(1) only = 0 -> ½·1 + ½·0 = 0.5;  N(1) = r(0) = 1 -> ½·0 + ½·1 = 0.5
    #           node 2 absent -> exactly 0;  node 3 isolated -> 0.7
    torch.testing.assert_close(out[:, 1], torch.tensor([0.5, 0.5, 0.0, 0.7], dtype=torch.float64))
    torch.testing.assert_close(out[:, 0], torch.tensor([0.625, 0.5, 0.75, 0.7], dtype=torch.float64))
    assert out[2, 1].item() == 0.0
    # a node whose only neighbour lacks the branch keeps its own value: branch absent on 0 -> nodes 1, 2 keep r
    present2 = torch.tensor([[False], [True], [True], [True]])
    r2 = torch.tensor([[5.0], [0.2], [0.4], [0.7]], dtype=torch.float64)
    out2 = smooth_scores(r2, present2, STAR, beta=0.9, steps=5)
    torch.testing.assert_close(out2, torch.tensor([[0.0], [0.2], [0.4], [0.7]], dtype=torch.float64))


def test_smooth_scores_identity_cases_mask_absent_entries():
    r = torch.tensor([[0.3, 4.0], [0.6, 0.1]])
    present = torch.tensor([[True, False], [True, True]])
    adj = torch.ones(2, 2)
    masked = torch.tensor([[0.3, 0.0], [0.6, 0.1]])
    assert torch.equal(smooth_scores(r, present, adj, beta=0.0, steps=3), masked)
    assert torch.equal(smooth_scores(r, present, adj, beta=0.7, steps=0), masked)


def _smooth_loop(r, present, adj, beta, steps):
    n, nb = r.shape
    base = torch.where(present, r, torch.zeros_like(r))
    cur = base.clone()
    for _ in range(steps):
        nxt = torch.zeros_like(cur)
        for i in range(n):
            for b in range(nb):
                if not present[i, b]:
                    continue
                num = sum(adj[i, j] * cur[j, b] for j in range(n) if present[j, b])
                den = sum(adj[i, j] for j in range(n) if present[j, b])
                avg = num / den if den > 0 else cur[i, b]
                nxt[i, b] = (1 - beta) * base[i, b] + beta * avg
        cur = nxt
    return cur


def test_smooth_scores_match_loop_reference_and_fixed_point():
    g = _gen(7)
    n, nb = 15, 2
    ei = torch.randint(0, n, (2, 30), generator=g)
    adj = normalized_adjacency(ei, n)  # CSR with self-loops: the node itself is part of its average
    r = torch.rand(n, nb, generator=g, dtype=torch.float64)
    present = torch.rand(n, nb, generator=g) < 0.7
    out = smooth_scores(r, present, adj, beta=0.6, steps=3)
    torch.testing.assert_close(out, _smooth_loop(r, present, adj.to_dense().double(), 0.6, 3))
    # all present: the iteration converges to r̃* = (1 − β)(I − β P)^{-1} r, P = row-normalised Â
    dense = adj.to_dense().double()
    pmat = dense / dense.sum(1, keepdim=True)
    fixed = (1 - 0.6) * torch.linalg.solve(torch.eye(n, dtype=torch.float64) - 0.6 * pmat, r)
    far = smooth_scores(r, torch.ones(n, nb, dtype=torch.bool), adj, beta=0.6, steps=200)
    torch.testing.assert_close(far, fixed)


def test_smooth_scores_errors():
    r, present = torch.zeros(2, 1), torch.ones(2, 1, dtype=torch.bool)
    for bad in (-0.1, 1.1):
        with pytest.raises(ConfigError, match=r"beta: must lie in \[0, 1\]"):
            smooth_scores(r, present, torch.eye(2), beta=bad, steps=1)
    with pytest.raises(ConfigError, match="steps: must be an integer >= 0"):
        smooth_scores(r, present, torch.eye(2), beta=0.5, steps=-1)


# ----------------------------------------------------------------------------------------------------
# 7. arbitrate
# ----------------------------------------------------------------------------------------------------


def test_arbitrate_hand_example():
    r = torch.tensor(
        [
            [0.9, 0.5, 0.85],  # d=0; inferior: 0.5 ≤ 0.8 yes, 0.85 ≤ 0.8 no; m = 0.9 − 0.85 = 0.05
            [0.9, 0.3, 0.6],  # branch 0 absent: d=2; inferior {1} (0.3 ≤ 0.5); m = 0.6 − 0.3 = 0.3
            [0.1, 0.2, 0.95],  # only branch 1 present: d=1, none inferior, m = 0
            [0.4, 0.4, 0.4],  # nothing present: d=−1, none inferior, m = 0
            [0.5, 0.5, 0.1],  # tie: d = lowest index 0; 0.5 ≤ 0.5 − 0.1? no; 0.1 yes; m = 0
        ]
    )
    present = torch.tensor(
        [
            [True, True, True],
            [False, True, True],
            [False, True, False],
            [False, False, False],
            [True, True, True],
        ]
    )
    dom, inferior, margin = arbitrate(r, present, delta=0.1)
    assert dom.tolist() == [0, 2, 1, -1, 0]
    assert inferior.tolist() == [
        [False, True, False],
        [False, True, False],
        [False, False, False],
        [False, False, False],
        [False, False, True],
    ]
    torch.testing.assert_close(margin, torch.tensor([0.05, 0.3, 0.0, 0.0, 0.0]))
    # δ = 0: a branch tied with the dominant counts as inferior, the dominant never does
    dom0, inf0, _ = arbitrate(r[4:], present[4:], delta=0.0)
    assert dom0.tolist() == [0] and inf0.tolist() == [[False, True, True]]


def test_arbitrate_single_branch_and_errors():
    dom, inferior, margin = arbitrate(
        torch.tensor([[0.3], [0.7]]), torch.tensor([[True], [False]]), delta=0.05
    )
    assert dom.tolist() == [0, -1] and not inferior.any() and margin.tolist() == [0.0, 0.0]
    with pytest.raises(ConfigError, match="delta: must be >= 0"):
        arbitrate(torch.zeros(1, 2), torch.ones(1, 2, dtype=torch.bool), delta=-0.1)


# ----------------------------------------------------------------------------------------------------
# 8. ema_update, instability
# ----------------------------------------------------------------------------------------------------


def test_ema_update():
    p0 = torch.tensor([[1.0, 0.0]], requires_grad=True)
    ema = ema_update(None, p0, decay=0.9)
    assert torch.equal(ema, p0.detach()) and ema.data_ptr() != p0.data_ptr() and not ema.requires_grad
    # 0.9·[1, 0] + 0.1·[0, 1] = [0.9, 0.1]
    ema = ema_update(ema, torch.tensor([[0.0, 1.0]]), decay=0.9)
    torch.testing.assert_close(ema, torch.tensor([[0.9, 0.1]]))
    with pytest.raises(ConfigError, match=r"decay: must lie in \[0, 1\]"):
        ema_update(ema, ema, decay=1.5)
    with pytest.raises(ConfigError, match="p: expected shape"):
        ema_update(ema, torch.zeros(2, 2), decay=0.5)


def test_instability_hand_examples():
    p = torch.tensor([[1.0, 0.0], [0.5, 0.5], [0.3, 0.7]], dtype=torch.float64)
    q = torch.tensor([[0.0, 1.0], [1.0, 0.0], [0.3, 0.7]], dtype=torch.float64)
    # TV: [1, ½(0.5 + 0.5) = 0.5, 0]
    torch.testing.assert_close(instability(p, q, "tv"), torch.tensor([1.0, 0.5, 0.0], dtype=torch.float64))
    # JS row 0: disjoint supports -> ln 2.  Row 1: μ = [0.75, 0.25];
    #   KL(p‖μ) = 0.5 ln(0.5/0.75) + 0.5 ln(0.5/0.25) = −0.202733 + 0.346574 = 0.143841
    #   KL(q‖μ) = ln(1/0.75) = 0.287682;  JS = ½ (0.143841 + 0.287682) = 0.215762
    js1 = 0.5 * (0.5 * math.log(0.5 / 0.75) + 0.5 * math.log(2) + math.log(4 / 3))
    torch.testing.assert_close(instability(p, q, "js"), torch.tensor([LN2, js1, 0.0], dtype=torch.float64))


def test_instability_against_scipy_and_bounds():
    g = _gen(8)
    p = torch.softmax(torch.randn(100, 6, generator=g, dtype=torch.float64) * 3, 1)
    q = torch.softmax(torch.randn(100, 6, generator=g, dtype=torch.float64) * 3, 1)
    js = instability(p, q, "js")
    ref = jensenshannon(p.numpy(), q.numpy(), axis=1) ** 2  # scipy gives the distance (√JS), natural log
    np.testing.assert_allclose(js.numpy(), ref, rtol=1e-9, atol=1e-12)
    tv = instability(p, q, "tv")
    assert (tv >= 0).all() and (tv <= 1).all() and (js >= 0).all() and (js <= LN2 + 1e-12).all()
    with pytest.raises(ConfigError, match="kind: unknown instability 'kl'; allowed: 'tv', 'js'"):
        instability(p, q, "kl")


# ----------------------------------------------------------------------------------------------------
# 9. transfer_gate
# ----------------------------------------------------------------------------------------------------


def test_transfer_gate_hand_example():
    # τ_s = 0.2, τ_m = 0.1, κ = 10:
    #   node 0: s = 0.1 < 0.2, σ(10·(0.2 − 0.1)) = σ(1) = 0.731059
    #   node 1: s = 0.3 ≥ 0.2 -> 0;  node 2: s = 0.2 (not <) -> 0
    #   node 3: s = 0, m = τ_m -> σ(0) = 0.5
    s = torch.tensor([0.1, 0.3, 0.2, 0.0])
    m = torch.tensor([0.2, 0.2, 0.9, 0.1])
    g = transfer_gate(s, m, tau_s=0.2, tau_m=0.1, kappa=10.0)
    torch.testing.assert_close(g, torch.tensor([1 / (1 + math.exp(-1)), 0.0, 0.0, 0.5]))
    for bad in (-1.0, float("inf"), float("nan")):
        with pytest.raises(ConfigError, match="kappa: must be a finite number >= 0"):
            transfer_gate(s, m, tau_s=0.2, tau_m=0.1, kappa=bad)
    # tau_m=None: the instability term alone, whatever the margin
    torch.testing.assert_close(transfer_gate(s, m, tau_s=0.2, tau_m=None, kappa=10.0), torch.tensor([1.0, 0.0, 0.0, 1.0]))


# ----------------------------------------------------------------------------------------------------
# 10. roc_auc
# ----------------------------------------------------------------------------------------------------


def test_roc_auc_hand_example_with_ties():
    # positives [0.9, 0.5, 0.5], negatives [0.5, 0.1]; pairs (pos, neg):
    #   0.9: 1 + 1;  0.5: ½ (tie) + 1;  0.5: ½ + 1   -> 5 of 6 pairs -> 0.833333
    # ranks: 0.1 -> 1, the three 0.5s -> 3 (average of 2, 3, 4), 0.9 -> 5; R₊ = 5 + 3 + 3 = 11
    #   U = 11 − 3·4/2 = 5, AUC = 5/(3·2)
    scores = torch.tensor([0.9, 0.5, 0.5, 0.5, 0.1])
    labels = torch.tensor([True, True, True, False, False])
    assert roc_auc(scores, labels) == pytest.approx(5 / 6)


def test_roc_auc_against_scipy_mannwhitneyu():
    g = _gen(9)
    scores = torch.randint(0, 8, (300,), generator=g).double()  # many ties
    labels = torch.rand(300, generator=g) < 0.3 + 0.05 * scores
    pos, neg = scores[labels].numpy(), scores[~labels].numpy()
    u = mannwhitneyu(pos, neg, alternative="two-sided").statistic  # U of the first sample
    assert roc_auc(scores, labels) == pytest.approx(u / (len(pos) * len(neg)), abs=1e-12)


def test_roc_auc_edge_cases():
    labels = torch.tensor([False, False, True, True])
    assert roc_auc(torch.tensor([0.1, 0.2, 0.3, 0.4]), labels) == 1.0
    assert roc_auc(torch.tensor([0.4, 0.3, 0.2, 0.1]), labels) == 0.0
    assert roc_auc(torch.zeros(4), labels) == 0.5
    assert math.isnan(roc_auc(torch.rand(3), torch.zeros(3, dtype=torch.bool)))
    assert math.isnan(roc_auc(torch.rand(3), torch.ones(3, dtype=torch.bool)))
    with pytest.raises(ConfigError, match="scores: contains NaN"):
        roc_auc(torch.tensor([0.1, float("nan")]), torch.tensor([True, False]))


# ----------------------------------------------------------------------------------------------------
# 11. reliability_auc
# ----------------------------------------------------------------------------------------------------


def test_reliability_auc_perfect_reversed_random():
    g = _gen(10)
    n = 4000
    quality = torch.rand(n, 2, generator=g)
    present = torch.ones(n, 2, dtype=torch.bool)
    assert reliability_auc(quality, quality, present) == 1.0
    assert reliability_auc(-quality, quality, present) == 0.0
    assert reliability_auc(torch.rand(n, 2, generator=g), quality, present) == pytest.approx(0.5, abs=0.04)


def test_reliability_auc_hand_example_bias_and_exclusions():
    quality = torch.tensor([[0.9, 0.5], [0.3, 0.8], [0.6, 0.58], [0.9, 0.1], [0.5, 0.9], [0.7, 0.7]])
    present = torch.tensor(
        [[True, True], [True, True], [True, True], [True, False], [True, True], [True, True]]
    )
    biased = torch.tensor([[False, False]] * 4 + [[False, True], [True, True]])
    # r̃_0 − r̃_1 per node: [0.4, −0.2, −5, −5, −0.3, −5]
    r = torch.tensor([[0.6, 0.2], [0.3, 0.5], [0.0, 5.0], [0.0, 5.0], [0.5, 0.8], [0.0, 5.0]])
    # kept: node 0 (0.9 vs 0.5: 0 better), node 1 (1 better), node 4 (modality 1 biased: 0 better, although
    # q_1 > q_0); out: node 2 (gap 0.02 ≤ 0.05), node 3 (modality 1 absent), node 5 (both biased, no gap).
    # positives {0.4, −0.3}, negative {−0.2}: 0.4 > −0.2 (1), −0.3 < −0.2 (0) -> AUC = ½
    assert reliability_auc(r, quality, present, biased) == pytest.approx(0.5)
    # without the bias flags node 4 is judged by quality (1 better): positives {0.4}, negatives {−0.2, −0.3} -> 1
    assert reliability_auc(r, quality, present) == pytest.approx(1.0)
    with pytest.raises(ConfigError, match=r"quality: expected \[n, 2\]"):
        reliability_auc(torch.zeros(3, 3), torch.zeros(3, 3), torch.ones(3, 3, dtype=torch.bool))


# ---------------------------------------------------------------- prior counted once in the fusion


def test_prior_once_fusion_is_the_product_of_experts_with_one_prior():
    """Branch logits z_k = ℓ_k + log π (evidence plus the shared training prior): with K equal shares the corrected
    fusion is (Σ_k ℓ_k + log π) / K, the product of experts counting the prior once (divided by K), where the plain
    average (Σ_k ℓ_k) / K + log π counts it K times against the averaged evidence."""
    gen = torch.Generator().manual_seed(0)
    n, c, k = 6, 5, 3
    ell = torch.randn(n, k, c, generator=gen)
    log_pi = torch.log(torch.tensor([0.5, 0.2, 0.15, 0.1, 0.05]))
    z = ell + log_pi
    shares = torch.full((n, k), 1 / k)
    fused = (shares.unsqueeze(-1) * z).sum(1)
    out = prior_once_fusion(fused, shares, log_pi)
    torch.testing.assert_close(out, (ell.sum(1) + log_pi) / k)
    # hand example, two experts with shares 0.75 / 0.25: excess 1 - (0.5625 + 0.0625) = 0.375
    f = torch.tensor([[1.0, 2.0]])
    lp = torch.log(torch.tensor([0.8, 0.2]))
    torch.testing.assert_close(prior_once_fusion(f, torch.tensor([[0.75, 0.25]]), lp), f - 0.375 * lp)


def test_prior_once_fusion_leaves_single_experts_alone_and_checks_shapes():
    f = torch.tensor([[1.0, 2.0, 0.5], [0.0, 0.0, 1.0]])
    lp = torch.log(torch.tensor([0.6, 0.3, 0.1]))
    one = torch.tensor([[0.0, 1.0], [0.0, 0.0]])  # one expert at node 0, none at node 1
    torch.testing.assert_close(prior_once_fusion(f, one, lp), f)
    # rare classes gain: the correction is − (1 − Σ s²) log π, largest for the smallest π
    out = prior_once_fusion(f, torch.full((2, 2), 0.5), lp)
    gain = out - f
    assert bool((gain[:, 2] > gain[:, 1]).all()) and bool((gain[:, 1] > gain[:, 0]).all())
    with pytest.raises(ConfigError, match="log_prior"):
        prior_once_fusion(f, one, lp[:2])
    with pytest.raises(ConfigError, match=r"fused \[n, C\] and shares \[n, G\]"):
        prior_once_fusion(f, one[:1], lp)
