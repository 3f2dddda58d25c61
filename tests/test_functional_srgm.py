"""SR-GM maths in magkit.functional against hand-computed examples, loop and dense references."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from magkit.exceptions import ConfigError
from magkit.functional import (
    conflict_rate,
    dirichlet_energy,
    gradient_distance,
    normalized_dirichlet,
    project_conflicting,
    project_conflicting_shared,
)

D64 = torch.float64


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _randn(*shape: int, seed: int) -> torch.Tensor:
    return torch.randn(*shape, generator=_gen(seed), dtype=D64)


def _sym_adj(n: int, seed: int, density: float = 0.5) -> torch.Tensor:
    """Random symmetric non-negative weights, zero diagonal."""
    g = _gen(seed)
    w = torch.rand(n, n, generator=g, dtype=D64) * (torch.rand(n, n, generator=g) < density)
    w = torch.triu(w, diagonal=1)
    return w + w.T


# --------------------------------------------------------------------------------------------------------
# gradient_distance
# --------------------------------------------------------------------------------------------------------


def _gcond_loop(g_syn, g_real, eps=1e-6) -> float:
    """Reference: one python loop over layers and rows; 1-D tensors are one vector."""
    total = 0.0
    for gs, gr in zip(g_syn, g_real):
        rows_s = gs.reshape(gs.shape[0], -1) if gs.dim() >= 2 else gs.reshape(1, -1)
        rows_r = gr.reshape(gr.shape[0], -1) if gr.dim() >= 2 else gr.reshape(1, -1)
        for a, b in zip(rows_s.tolist(), rows_r.tolist()):
            dot = sum(x * y for x, y in zip(a, b))
            na = math.sqrt(sum(x * x for x in a))
            nb = math.sqrt(sum(y * y for y in b))
            total += 1.0 - dot / (na * nb + eps)
    return total


def test_gcond_distance_hand_example():
    # weight [out=3, in=2] as torch.nn.Linear stores it; rows = output units:
    #   row 0: (1,0) vs (1,0): cos 1          -> 0
    #   row 1: (0,1) vs (1,0): cos 0          -> 1
    #   row 2: (1,1) vs (1,0): cos 1/√2       -> 1 − 1/√2
    # bias (1-D, one vector): (1,1) vs (−2,−2): cos −1 -> 2
    # total 0 + 1 + (1 − 1/√2) + 2 = 4 − 1/√2 (eps = 1e-12 makes the cosines exact to ~1e-12)
    w_s = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]], dtype=D64)
    w_r = torch.tensor([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0]], dtype=D64)
    b_s = torch.tensor([1.0, 1.0], dtype=D64)
    b_r = torch.tensor([-2.0, -2.0], dtype=D64)
    d = gradient_distance([w_s, b_s], [w_r, b_r], eps=1e-12)
    assert d.dim() == 0
    assert float(d) == pytest.approx(4.0 - 1.0 / math.sqrt(2.0), abs=1e-10)
    # the convention is explicit: the same weights compared by columns (transposed) give another value
    # columns: (1,0,1) vs (1,1,1): cos 2/(√2·√3); (0,1,1) vs (0,0,0): cos 0 -> 1
    d_t = gradient_distance([w_s.T], [w_r.T], eps=1e-12)
    assert float(d_t) == pytest.approx(1.0 - 2.0 / math.sqrt(6.0) + 1.0, abs=1e-10)
    # GCond's default eps = 1e-6 shrinks every cosine: cos = ⟨a, b⟩ / (‖a‖‖b‖ + 1e-6)
    #   row 0: 1 − 1/(1 + 1e-6);  row 1: 1;  row 2: 1 − 1/(√2 + 1e-6)
    d_default = gradient_distance([w_s], [w_r])
    expected = (1.0 - 1.0 / (1.0 + 1e-6)) + 1.0 + (1.0 - 1.0 / (math.sqrt(2.0) + 1e-6))
    assert float(d_default) == pytest.approx(expected, abs=1e-12)
    assert float(d_default) > 2.0 - 1.0 / math.sqrt(2.0) + 5e-7  # measurably above the exact cosine


def test_gcond_distance_matches_loop_reference():
    shapes = [(5, 7), (5,), (3, 5), (3,), (4, 2, 3)]  # linear, bias, linear, bias, a 3-D (conv-like) tensor
    g_syn = [_randn(*s, seed=i) for i, s in enumerate(shapes)]
    g_real = [_randn(*s, seed=100 + i) for i, s in enumerate(shapes)]
    g_syn[0][2] = 0.0  # a zero row (dead unit): contributes exactly 1
    ours = gradient_distance(g_syn, g_real, kind="gcond")
    assert float(ours) == pytest.approx(_gcond_loop(g_syn, g_real), rel=1e-12)
    # identical gradients: every vector gives 1 − ‖a‖²/(‖a‖² + eps) ≈ 0, except the zero row (1)
    same = gradient_distance(g_syn, [g.clone() for g in g_syn])
    assert float(same) == pytest.approx(1.0, abs=1e-5)


def test_mse_and_cos_kinds():
    g_syn = [_randn(4, 3, seed=1), _randn(3, seed=2)]
    g_real = [_randn(4, 3, seed=3), _randn(3, seed=4)]
    mse = gradient_distance(g_syn, g_real, kind="mse")
    ref = sum(F.mse_loss(a, b, reduction="sum") for a, b in zip(g_syn, g_real))
    assert float(mse) == pytest.approx(float(ref), rel=1e-12)
    cos = gradient_distance(g_syn, g_real, kind="cos", eps=1e-12)
    ref_cos = sum(
        1.0 - F.cosine_similarity(a.reshape(1, -1), b.reshape(1, -1), eps=1e-30)
        for a, b in zip(g_syn, g_real)
    )
    assert float(cos) == pytest.approx(float(ref_cos), rel=1e-10)
    # hand: mse of (1,2) vs (0,0) = 5; cos of (1,0) vs (−1,0) = −1 -> 2
    t = torch.tensor
    assert float(gradient_distance([t([1.0, 2.0])], [t([0.0, 0.0])], kind="mse")) == pytest.approx(5.0)
    assert float(gradient_distance([t([[1.0, 0.0]])], [t([[-1.0, 0.0]])], kind="cos")) == pytest.approx(2.0)


def test_zero_vectors_give_distance_one_and_finite_gradient():
    g_real = [torch.tensor([[1.0, 2.0], [3.0, 4.0]], dtype=D64)]
    g_syn = torch.zeros(2, 2, dtype=D64, requires_grad=True)
    for kind, expected in (("gcond", 2.0), ("cos", 1.0)):
        d = gradient_distance([g_syn], g_real, kind=kind)
        assert float(d.detach()) == pytest.approx(expected)
        (grad,) = torch.autograd.grad(d, g_syn)
        assert torch.isfinite(grad).all()
    both_zero = gradient_distance([torch.zeros(3)], [torch.zeros(3)], kind="gcond")
    assert float(both_zero) == pytest.approx(1.0)


def test_gradient_distance_gradcheck():
    a = _randn(3, 4, seed=5).requires_grad_()
    b = _randn(4, seed=6).requires_grad_()
    ra, rb = _randn(3, 4, seed=7), _randn(4, seed=8)
    for kind in ("gcond", "mse", "cos"):
        assert torch.autograd.gradcheck(
            lambda x, y, k=kind: gradient_distance([x, y], [ra, rb], kind=k), (a, b)
        )


def test_gradient_distance_errors():
    a, b = torch.ones(2, 3), torch.ones(3, 2)
    with pytest.raises(ConfigError, match=r"'l2'.*allowed: 'gcond', 'mse', 'cos'"):
        gradient_distance([a], [a], kind="l2")
    with pytest.raises(ConfigError, match=r"layer 1.*\(2, 3\).*\(3, 2\)"):
        gradient_distance([a, a], [a, b])
    with pytest.raises(
        ConfigError, match=r"g_real: expected one tensor per tensor of g_syn \(2 layers\), got 1"
    ):
        gradient_distance([a, a], [a])
    with pytest.raises(ConfigError, match="empty"):
        gradient_distance([], [])
    with pytest.raises(ConfigError, match="eps: must be > 0"):
        gradient_distance([a], [a], eps=0.0)


# --------------------------------------------------------------------------------------------------------
# project_conflicting / project_conflicting_shared / conflict_rate
# --------------------------------------------------------------------------------------------------------


def test_project_conflicting_hand_example():
    # row 0 conflicts: g_a = (1, 0), g_b = (−1, 1), s = −1, ‖g_b‖² = 2, ‖g_a‖² = 1
    #   g_a' = (1, 0) − (−1/2)(−1, 1) = (0.5, 0.5);   g_b' = (−1, 1) − (−1/1)(1, 0) = (0, 1)
    # row 1 agrees (s = 1), row 2 is orthogonal (s = 0), row 3 has a zero block: all unchanged
    g_a = torch.tensor([[1.0, 0.0], [1.0, 1.0], [1.0, 0.0], [0.0, 0.0]], dtype=D64)
    g_b = torch.tensor([[-1.0, 1.0], [1.0, 0.0], [0.0, 5.0], [-3.0, 2.0]], dtype=D64)
    pa, pb, mask = project_conflicting(g_a, g_b, eps=1e-300)
    assert mask.tolist() == [True, False, False, False]
    assert torch.allclose(pa[0], torch.tensor([0.5, 0.5], dtype=D64), atol=1e-15)
    assert torch.allclose(pb[0], torch.tensor([0.0, 1.0], dtype=D64), atol=1e-15)
    assert torch.equal(pa[1:], g_a[1:]) and torch.equal(pb[1:], g_b[1:])


def test_project_conflicting_orthogonal_after_and_unchanged_when_agreeing():
    g_a, g_b = _randn(200, 16, seed=11), _randn(200, 16, seed=12)
    s = (g_a * g_b).sum(1)
    pa, pb, mask = project_conflicting(g_a, g_b)
    assert torch.equal(mask, s < 0) and 50 < int(mask.sum()) < 150
    # orthogonality on conflicting rows, measured against the ORIGINAL other block (PCGrad)
    scale = g_a.norm(dim=1) * g_b.norm(dim=1)
    assert ((pa * g_b).sum(1)[mask].abs() / scale[mask]).max() < 1e-12
    assert ((pb * g_a).sum(1)[mask].abs() / scale[mask]).max() < 1e-12
    # agreeing rows: untouched, bit for bit
    assert torch.equal(pa[~mask], g_a[~mask]) and torch.equal(pb[~mask], g_b[~mask])
    # all rows agreeing: nothing changes
    qa, qb, m2 = project_conflicting(g_a, g_a * 2.0 + 0.01 * g_b)
    assert not bool(m2.any()) and torch.equal(qa, g_a)
    # the projection removes the conflict: after it, no conflicting row has a negative inner product left
    assert ((pa * pb).sum(1)[mask] >= -1e-12 * scale[mask]).all()


def test_project_conflicting_is_differentiable():
    g_a = _randn(6, 3, seed=13).requires_grad_()
    g_b = _randn(6, 3, seed=14).requires_grad_()
    assert torch.autograd.gradcheck(lambda a, b: project_conflicting(a, b)[:2], (g_a, g_b))


def test_project_conflicting_errors():
    with pytest.raises(ConfigError, match="project_conflicting_shared"):
        project_conflicting(torch.ones(3, 4), torch.ones(3, 5))
    with pytest.raises(ConfigError, match=r"g_b: expected 3 rows"):
        project_conflicting(torch.ones(3, 4), torch.ones(2, 4))
    with pytest.raises(ConfigError, match=r"g_a: expected a \[n, d\] tensor"):
        project_conflicting(torch.ones(4), torch.ones(4))


def test_shared_with_identity_maps_reproduces_project_conflicting():
    g_a, g_b = _randn(50, 8, seed=21), _randn(50, 8, seed=22)
    eye = torch.eye(8, dtype=D64)
    sa, sb, sm = project_conflicting_shared(g_a, g_b, eye, eye)
    pa, pb, pm = project_conflicting(g_a, g_b)
    assert torch.equal(sm, pm)
    assert torch.allclose(sa, pa, atol=1e-12) and torch.allclose(sb, pb, atol=1e-12)


def test_shared_projection_orthogonal_in_shared_space_when_full_column_rank():
    n, d_a, d_b, h = 300, 12, 9, 6  # h <= d_a and h <= d_b: W_a⁺ W_a = I_h
    g_a, g_b = _randn(n, d_a, seed=31), _randn(n, d_b, seed=32)
    w_a, w_b = _randn(d_a, h, seed=33), _randn(d_b, h, seed=34)
    pa, pb, mask = project_conflicting_shared(g_a, g_b, w_a, w_b)
    u_a, u_b = g_a @ w_a, g_b @ w_b
    assert torch.equal(mask, (u_a * u_b).sum(1) < 0) and 50 < int(mask.sum()) < 250
    scale = u_a.norm(dim=1) * u_b.norm(dim=1)
    assert (((pa @ w_a) * u_b).sum(1)[mask].abs() / scale[mask]).max() < 1e-10
    assert (((pb @ w_b) * u_a).sum(1)[mask].abs() / scale[mask]).max() < 1e-10
    assert torch.equal(pa[~mask], g_a[~mask]) and torch.equal(pb[~mask], g_b[~mask])
    # the change is the minimum-norm one: it lies in the row space of W_aᵀ (the column space of W_a)
    delta = g_a - pa
    proj_cols = w_a @ torch.linalg.pinv(w_a)  # [d_a, d_a] projector onto range(W_a)
    assert torch.allclose(delta @ proj_cols, delta, atol=1e-10)


def test_shared_projection_is_partial_when_h_exceeds_width():
    # h > d_a: only the part of u_b inside W_a's row space is removed:
    # ⟨g_a' W_a, u_b⟩ = s (1 − ‖P u_b‖² / ‖u_b‖²), P = W_a⁺ W_a
    n, d_a, d_b, h = 100, 3, 8, 5
    g_a, g_b = _randn(n, d_a, seed=41), _randn(n, d_b, seed=42)
    w_a, w_b = _randn(d_a, h, seed=43), _randn(d_b, h, seed=44)
    pa, _, mask = project_conflicting_shared(g_a, g_b, w_a, w_b)
    u_a, u_b = g_a @ w_a, g_b @ w_b
    s = (u_a * u_b).sum(1)
    p = torch.linalg.pinv(w_a) @ w_a
    expected = s * (1.0 - ((u_b @ p) ** 2).sum(1) / (u_b**2).sum(1))
    got = ((pa @ w_a) * u_b).sum(1)
    assert torch.allclose(got[mask], expected[mask], atol=1e-10)
    assert (expected[mask].abs() > 1e-3).any()  # genuinely partial, not zero


def test_shared_projection_weights_get_no_gradient_and_errors():
    g_a = _randn(5, 4, seed=51).requires_grad_()
    g_b = _randn(5, 3, seed=52).requires_grad_()
    w_a = _randn(4, 2, seed=53).requires_grad_()
    w_b = _randn(3, 2, seed=54).requires_grad_()
    pa, pb, _ = project_conflicting_shared(g_a, g_b, w_a, w_b)
    (pa.sum() + pb.sum()).backward()
    assert w_a.grad is None and w_b.grad is None and g_a.grad is not None
    with pytest.raises(ConfigError, match=r"w_a: expected a \[4, h\] matrix"):
        project_conflicting_shared(g_a, g_b, w_b, w_b)
    with pytest.raises(ConfigError, match="w_b: shared width 3 differs from w_a's 2"):
        project_conflicting_shared(g_a, g_b, w_a, _randn(3, 3, seed=1))


def test_conflict_rate():
    g_a = torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 0.0], [1.0, -1.0]])
    g_b = torch.tensor([[-1.0, 1.0], [1.0, 0.0], [-1.0, 0.0], [-2.0, 0.0]])
    # rows: s = −1 (conflict), 1, 0 (zero block: not conflicting), −2 (conflict) -> 2/4
    assert conflict_rate(g_a, g_b) == pytest.approx(0.5)
    assert math.isnan(conflict_rate(torch.zeros(0, 2), torch.zeros(0, 2)))
    with pytest.raises(ConfigError, match="g_b: expected shape"):
        conflict_rate(g_a, torch.ones(4, 3))


# --------------------------------------------------------------------------------------------------------
# dirichlet_energy / normalized_dirichlet
# --------------------------------------------------------------------------------------------------------

# path 0 —1— 1 —2— 2 —1— 3 (edge weights 1, 2, 1), no self-loops
PATH_ADJ = torch.tensor(
    [[0.0, 1.0, 0.0, 0.0], [1.0, 0.0, 2.0, 0.0], [0.0, 2.0, 0.0, 1.0], [0.0, 0.0, 1.0, 0.0]], dtype=D64
)


def test_dirichlet_hand_example_4_nodes():
    s2 = math.sqrt(2.0)
    # normalised: Ã = A + I, d̃ = (1+1, 1+2+1, 2+1+1, 1+1) = (2, 4, 4, 2), so h_i = g_i / √d̃_i:
    #   g col 0 = (√2, 2, 0, √2)  -> h = (1, 1, 0, 1)
    #   g col 1 = (0, 2, 4, 2√2)  -> h = (0, 1, 2, 2)
    # R = Σ_{edges i<j} Ã_ij ‖h_i − h_j‖² (self-loops add 0):
    #   (0,1): 1·((1−1)² + (0−1)²) = 1;  (1,2): 2·((1−0)² + (1−2)²) = 4;  (2,3): 1·((0−1)² + (2−2)²) = 1
    #   R = 6
    g = torch.tensor([[s2, 0.0], [2.0, 2.0], [0.0, 4.0], [s2, 2 * s2]], dtype=D64)
    assert float(dirichlet_energy(g, PATH_ADJ)) == pytest.approx(6.0, abs=1e-12)
    # combinatorial: R = Σ_{edges i<j} A_ij ‖g_i − g_j‖² with g = ((1,0), (2,1), (0,3), (1,1)):
    #   (0,1): 1·(1 + 1) = 2;  (1,2): 2·(4 + 4) = 16;  (2,3): 1·(1 + 4) = 5;  R = 23
    g2 = torch.tensor([[1.0, 0.0], [2.0, 1.0], [0.0, 3.0], [1.0, 1.0]], dtype=D64)
    assert float(dirichlet_energy(g2, PATH_ADJ, normalized=False)) == pytest.approx(23.0, abs=1e-12)


def _dense_laplacian(adj: torch.Tensor, normalized: bool) -> torch.Tensor:
    n = adj.shape[0]
    if not normalized:
        return torch.diag(adj.sum(1)) - adj
    a = adj + torch.eye(n, dtype=adj.dtype)
    dinv = torch.diag(a.sum(1) ** -0.5)
    return torch.eye(n, dtype=adj.dtype) - dinv @ a @ dinv


def _pairwise(g: torch.Tensor, adj: torch.Tensor, normalized: bool) -> torch.Tensor:
    """½ Σ_ij W_ij ‖h_i − h_j‖² through an explicit [n, n, d] difference tensor."""
    if normalized:
        adj = adj + torch.eye(adj.shape[0], dtype=adj.dtype)
        g = g / adj.sum(1).sqrt().unsqueeze(1)
    diff = g.unsqueeze(1) - g.unsqueeze(0)
    return 0.5 * (adj * (diff**2).sum(2)).sum()


@pytest.mark.parametrize("normalized", [True, False])
def test_dirichlet_matches_dense_trace_and_pairwise_forms(normalized):
    for seed in range(3):
        adj = _sym_adj(9, seed)
        adj[2, 2] = 0.7  # A's own self-loop is allowed
        g = _randn(9, 5, seed=10 + seed)
        r = dirichlet_energy(g, adj, normalized=normalized)
        lap = _dense_laplacian(adj, normalized)
        assert float(r) == pytest.approx(float(torch.trace(g.T @ lap @ g)), rel=1e-10)
        assert float(r) == pytest.approx(float(_pairwise(g, adj, normalized)), rel=1e-10)
        assert float(r) > 0.0


def test_dirichlet_empty_graph_and_non_negativity():
    g = _randn(6, 4, seed=3)
    empty = torch.zeros(6, 6, dtype=D64)
    assert float(dirichlet_energy(g, empty, normalized=False)) == 0.0
    # normalised form: Ã = I, d̃ = 1, L = I − I = 0, so R = 0 too: the collapse srgm.md warns about
    assert float(dirichlet_energy(g, empty, normalized=True)) == pytest.approx(0.0, abs=1e-12)
    assert float(normalized_dirichlet(g, empty)) == pytest.approx(0.0, abs=1e-12)
    for seed in range(5):
        adj = _sym_adj(6, seed, density=0.8) * 10.0
        for normalized in (True, False):
            assert float(dirichlet_energy(g, adj, normalized=normalized)) >= 0.0
    # a constant field is perfectly smooth for the combinatorial form
    const = torch.ones(6, 3, dtype=D64)
    assert float(dirichlet_energy(const, _sym_adj(6, 1), normalized=False)) == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("normalized", [True, False])
def test_dirichlet_gradcheck_in_g_and_adj(normalized):
    g = _randn(4, 3, seed=61).requires_grad_()
    b = (torch.rand(4, 4, generator=_gen(62), dtype=D64) * 0.9 + 0.1).requires_grad_()

    def energy(field, raw):
        return dirichlet_energy(field, 0.5 * (raw + raw.T), normalized=normalized)  # stays symmetric

    assert torch.autograd.gradcheck(energy, (g, b))
    (grad_b,) = torch.autograd.grad(energy(g, b), b)
    assert grad_b.abs().sum() > 0  # gradient reaches the structure


def test_normalized_dirichlet_scale_invariant_and_bounded():
    adj = _sym_adj(8, 4)
    g = _randn(8, 5, seed=71)
    base = normalized_dirichlet(g, adj)
    r = dirichlet_energy(g, adj)
    assert float(base) == pytest.approx(float(r / (g * g).sum()), rel=1e-10)
    for c in (1e-3, 0.5, 7.0, -2.0):
        # exact up to eps: ε / (c² tr(gᵀg)) ≈ 3e-8 at c = 1e-3
        assert float(normalized_dirichlet(c * g, adj)) == pytest.approx(float(base), rel=1e-7)
        # while the raw energy scales with c²
        assert float(dirichlet_energy(c * g, adj)) == pytest.approx(c * c * float(r), rel=1e-10)
    assert 0.0 <= float(base) < 2.0


def test_dirichlet_errors():
    g = torch.ones(3, 2)
    with pytest.raises(ConfigError, match="adj: must be symmetric"):
        dirichlet_energy(g, torch.tensor([[0.0, 1.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]]))
    with pytest.raises(ConfigError, match="adj: edge weights must be >= 0"):
        dirichlet_energy(g, -torch.ones(3, 3))
    with pytest.raises(ConfigError, match=r"adj: expected shape \(3, 3\)"):
        dirichlet_energy(g, torch.ones(2, 2))
    with pytest.raises(ConfigError, match="adj: expected a dense"):
        dirichlet_energy(g, torch.ones(3, 3).to_sparse())
    with pytest.raises(ConfigError, match=r"g: expected a \[n, d\] tensor"):
        dirichlet_energy(torch.ones(3), torch.ones(3, 3))
