"""SR-GM's gradient-matching maths (docs/srgm.md): gradient distances, orthogonal projection of conflicting
modality gradients, Dirichlet energy of a gradient field on the synthetic graph.

Shapes: n (synthetic) nodes; g, g_a, g_b are per-node gradient rows ([n, d]); ``adj`` is a DENSE [n, n]
non-negative symmetric weight matrix (the learned synthetic adjacency A', or a kNN graph of the synthetic rows).
"""

from __future__ import annotations

import torch
from torch import Tensor

from magkit.exceptions import ConfigError

from ._checks import _check_shape

GRADIENT_DISTANCES = ("gcond", "mse", "cos")


def _as_rows(t: Tensor) -> Tensor:
    """The row vectors GCond's distance compares: a tensor of shape [k, ...] as [k, prod(...)].

    2-D: its rows as stored (cosine along the last axis); ≥ 3-D: one row per leading index (e.g. per
    output channel of a convolution); 1-D (a bias) and 0-D: one single row ``[1, numel]``.
    """
    if t.dim() >= 2:
        return t.reshape(t.shape[0], -1)
    return t.reshape(1, -1)


def _cosine_rows(a: Tensor, b: Tensor, eps: float) -> Tensor:
    """cos(a_k, b_k) = ⟨a_k, b_k⟩ / (‖a_k‖ ‖b_k‖ + ε) for every row k (``[k]``)."""
    dot = (a * b).sum(dim=-1)
    return dot / (torch.linalg.vector_norm(a, dim=-1) * torch.linalg.vector_norm(b, dim=-1) + eps)


def gradient_distance(
    g_syn: list[Tensor] | tuple[Tensor, ...],
    g_real: list[Tensor] | tuple[Tensor, ...],
    kind: str = "gcond",
    eps: float = 1e-6,
) -> Tensor:
    """Distance between two gradient lists (one tensor per parameter, paired by position), a scalar.

    D = Σ_ℓ D_ℓ(g_syn[ℓ], g_real[ℓ]) with, per pair of equal-shaped tensors G (synthetic) and H (real):

    * ``"gcond"`` (GCond's distance): D_ℓ = Σ_k (1 − cos(G_k, H_k)) over the ROWS k of the tensor as
      stored, i.e. the cosine runs along the last axis. For ``torch.nn.Linear`` (weight ``[out, in]``)
      that is one vector per output unit (its incoming weights). Careful with layers that store
      ``[in, out]`` (``x @ W``, e.g. GCond's own GraphConvolution): there a row is one input unit's
      outgoing weights; transpose the gradient first if output units are wanted. Tensors of ≥ 3 dims
      are flattened to ``[shape[0], -1]`` (one vector per output channel). A 1-D tensor (bias, norm
      scale) counts as ONE vector (``[1, d]``), contributing 1 − cos over the whole bias; GCond's
      reference code skips 1-D parameters instead: to reproduce that, pass only the tensors with
      ``dim() >= 2``.
    * ``"mse"``: D_ℓ = ‖G − H‖²_F (summed squared error, not a mean).
    * ``"cos"``: D_ℓ = 1 − cos(vec G, vec H), one cosine over the whole flattened tensor.

    cos(a, b) = ⟨a, b⟩ / (‖a‖ ‖b‖ + ε) (ε = ``eps``, GCond's 1e-6 by default), so a zero vector against
    anything gives cos = 0, i.e. a distance of exactly 1 per vector, and the distance stays finite. ε
    shrinks the cosine by the factor ‖a‖‖b‖ / (‖a‖‖b‖ + ε): lower ``eps`` if the gradient rows are tiny.
    Differentiable in both lists; pass the real gradients detached (as GCond does) unless gradient must
    flow into them. Shapes must match pair by pair; the lists must have the same, non-zero length.
    """
    if kind not in GRADIENT_DISTANCES:
        raise ConfigError(f"kind: unknown gradient distance {kind!r}; allowed: 'gcond', 'mse', 'cos'")
    if not (eps > 0.0):
        raise ConfigError(f"eps: must be > 0, got {eps!r}")
    if len(g_syn) != len(g_real):
        raise ConfigError(
            f"g_real: expected one tensor per tensor of g_syn ({len(g_syn)} layers), got {len(g_real)}"
        )
    if len(g_syn) == 0:
        raise ConfigError("g_syn: needs at least one gradient tensor, got an empty list")
    for i, (gs, gr) in enumerate(zip(g_syn, g_real)):
        if tuple(gs.shape) != tuple(gr.shape):
            raise ConfigError(
                f"g_real[{i}]: layer {i} shape mismatch, g_syn[{i}] has shape {tuple(gs.shape)} and "
                f"g_real[{i}] has shape {tuple(gr.shape)}; both must be equal"
            )
    total = None
    for gs, gr in zip(g_syn, g_real):
        if kind == "mse":
            d = ((gs - gr) ** 2).sum()
        elif kind == "cos":
            d = 1.0 - _cosine_rows(gs.reshape(1, -1), gr.reshape(1, -1), eps).sum()
        else:
            d = (1.0 - _cosine_rows(_as_rows(gs), _as_rows(gr), eps)).sum()
        total = d if total is None else total + d
    return total


def _check_rows(name_a: str, a: Tensor, name_b: str, b: Tensor) -> None:
    """Both 2-D with the same number of rows (nodes)."""
    for name, t in ((name_a, a), (name_b, b)):
        if t.dim() != 2:
            raise ConfigError(
                f"{name}: expected a [n, d] tensor (one row per node), got shape {tuple(t.shape)}"
            )
    if a.shape[0] != b.shape[0]:
        raise ConfigError(
            f"{name_b}: expected {a.shape[0]} rows (one per node, as {name_a}), got {b.shape[0]} "
            f"(shapes {tuple(a.shape)} and {tuple(b.shape)})"
        )


def project_conflicting(g_a: Tensor, g_b: Tensor, eps: float = 1e-12) -> tuple[Tensor, Tensor, Tensor]:
    """PCGrad-style decoupling of two equal-width modality gradient blocks, node by node.

    Row i conflicts when s_i = ⟨g_a,i, g_b,i⟩ < 0. There, both blocks are projected using the ORIGINALS:

        g'_a,i = g_a,i − (s_i / (‖g_b,i‖² + ε)) g_b,i,     g'_b,i = g_b,i − (s_i / (‖g_a,i‖² + ε)) g_a,i;

    rows with s_i ≥ 0 (agreeing, orthogonal, or with a zero block) are returned unchanged. After projection
    ⟨g'_a,i, g_b,i⟩ = s_i ε / (‖g_b,i‖² + ε) ≈ 0 and likewise ⟨g'_b,i, g_a,i⟩ ≈ 0 on conflicting rows.

    ``g_a``, ``g_b``: ``[n, d]`` (same d; for different widths use :func:`project_conflicting_shared`).
    Returns ``(g'_a [n, d], g'_b [n, d], conflict [n] bool)``. Differentiable in both inputs.
    """
    _check_rows("g_a", g_a, "g_b", g_b)
    if g_a.shape[1] != g_b.shape[1]:
        raise ConfigError(
            f"g_b: width {g_b.shape[1]} differs from g_a's width {g_a.shape[1]} (shapes {tuple(g_a.shape)} "
            f"and {tuple(g_b.shape)}); project_conflicting compares coordinates and needs equal widths, "
            "use project_conflicting_shared for blocks of different widths"
        )
    if not (eps > 0.0):
        raise ConfigError(f"eps: must be > 0, got {eps!r}")
    s = (g_a * g_b).sum(dim=1)
    conflict = s < 0
    zero = torch.zeros_like(s)
    coef_a = torch.where(conflict, s / ((g_b * g_b).sum(dim=1) + eps), zero)
    coef_b = torch.where(conflict, s / ((g_a * g_a).sum(dim=1) + eps), zero)
    return g_a - coef_a.unsqueeze(1) * g_b, g_b - coef_b.unsqueeze(1) * g_a, conflict


def project_conflicting_shared(
    g_a: Tensor, g_b: Tensor, w_a: Tensor, w_b: Tensor, eps: float = 1e-12
) -> tuple[Tensor, Tensor, Tensor]:
    """Decoupling for modality blocks of different widths, compared in a shared space of width h.

    Each block is mapped into the shared space by its slice of the first layer: u_a = g_a W_a,
    u_b = g_b W_b (``[n, h]``), i.e. the change of the first layer's pre-activation that each block's
    update would cause. For ``torch.nn.Linear(d_a + d_b, h)`` (weight ``[h, d_a + d_b]``) on the
    concatenated input [x_a ‖ x_b], pass ``W_a = weight[:, :d_a].T`` and ``W_b = weight[:, d_a:].T``.

    Row i conflicts when s_i = ⟨u_a,i, u_b,i⟩ < 0. There, the component of u_a along u_b,

        Δu_a,i = (s_i / (‖u_b,i‖² + ε)) u_b,i,     g'_a,i = g_a,i − Δu_a,i W_a⁺,

    is removed, W_a⁺ = ``torch.linalg.pinv(W_a)`` (``[h, d_a]``, computed once per call): Δu_a W_a⁺ is the
    minimum-norm least-squares solution Δg of Δg W_a ≈ Δu_a, i.e. the smallest change of block a that
    removes (as nearly as W_a allows) the conflicting component in the shared space. Symmetrically
    g'_b,i = g_b,i − (s_i / (‖u_a,i‖² + ε)) u_a,i W_b⁺. Rows without conflict are unchanged.

    Property: g'_a W_a = u_a − Δu_a P_a with P_a = W_a⁺ W_a (``[h, h]``, the orthogonal projector onto the
    row space of W_a). When W_a has full column rank h (needs h ≤ d_a), P_a = I_h and
    ⟨g'_a,i W_a, u_b,i⟩ = s_i ε / (‖u_b,i‖² + ε) ≈ 0, the exact analogue of :func:`project_conflicting`
    (which this reproduces with W_a = W_b = I). When h > d_a (or W_a is rank deficient) only the part of
    u_b inside W_a's row space is removed: the projection is partial. With W_a = W_b = I_d it is exactly
    :func:`project_conflicting`.

    The weights are treated as constants (used detached): no gradient flows into W_a, W_b; the outputs
    are differentiable in g_a, g_b. Returns ``(g'_a [n, d_a], g'_b [n, d_b], conflict [n] bool)``.
    """
    _check_rows("g_a", g_a, "g_b", g_b)
    d_a, d_b = g_a.shape[1], g_b.shape[1]
    for name, w, d in (("w_a", w_a, d_a), ("w_b", w_b, d_b)):
        if w.dim() != 2 or w.shape[0] != d:
            raise ConfigError(
                f"{name}: expected a [{d}, h] matrix (its block's width by the shared width), "
                f"got shape {tuple(w.shape)}"
            )
    if w_a.shape[1] != w_b.shape[1]:
        raise ConfigError(
            f"w_b: shared width {w_b.shape[1]} differs from w_a's {w_a.shape[1]}; both blocks must map into "
            f"one space (shapes {tuple(w_a.shape)} and {tuple(w_b.shape)})"
        )
    if not (eps > 0.0):
        raise ConfigError(f"eps: must be > 0, got {eps!r}")
    w_a = w_a.detach().to(g_a.dtype)
    w_b = w_b.detach().to(g_b.dtype)
    u_a = g_a @ w_a
    u_b = g_b @ w_b
    s = (u_a * u_b).sum(dim=1)
    conflict = s < 0
    zero = torch.zeros_like(s)
    coef_a = torch.where(conflict, s / ((u_b * u_b).sum(dim=1) + eps), zero)
    coef_b = torch.where(conflict, s / ((u_a * u_a).sum(dim=1) + eps), zero)
    delta_a = (coef_a.unsqueeze(1) * u_b) @ torch.linalg.pinv(w_a)
    delta_b = (coef_b.unsqueeze(1) * u_a) @ torch.linalg.pinv(w_b)
    return g_a - delta_a, g_b - delta_b, conflict


def _check_dense_adj(adj: Tensor, n: int) -> None:
    """``adj``: dense, [n, n], non-negative, symmetric (checked without gradient)."""
    if adj.layout != torch.strided:
        raise ConfigError(f"adj: expected a dense [n, n] tensor, got layout {adj.layout}; call .to_dense()")
    _check_shape("adj", adj, (n, n))
    with torch.no_grad():
        a = adj.detach()
        if n and float(a.min()) < 0:
            raise ConfigError(f"adj: edge weights must be >= 0, got a minimum of {float(a.min()):.3g}")
        asym = float((a - a.T).abs().max()) if n else 0.0
        if asym > 1e-6 * max(1.0, float(a.abs().max()) if n else 1.0):
            raise ConfigError(
                f"adj: must be symmetric, got max |A_ij − A_ji| = {asym:.3g}; symmetrise, e.g. (A + A.T) / 2"
            )


def dirichlet_energy(g: Tensor, adj: Tensor, normalized: bool = True) -> Tensor:
    """Dirichlet energy of a node field g (``[n, d]``) on a weighted graph ``adj`` (dense ``[n, n]``), a scalar.

    ``normalized=True`` (SR-GM's damping term): Ã = A + I, d̃_i = Σ_j Ã_ij,
    L = I − D̃^{-1/2} Ã D̃^{-1/2},

        R = tr(gᵀ L g) = ½ Σ_ij Ã_ij ‖g_i/√d̃_i − g_j/√d̃_j‖² = Σ_i ‖g_i‖² − Σ_ij Ã_ij ⟨g_i, g_j⟩ / √(d̃_i d̃_j).

    ``normalized=False``: the combinatorial form with D = diag(Σ_j A_ij) (self-loops in A cancel),

        R = tr(gᵀ (D − A) g) = ½ Σ_ij A_ij ‖g_i − g_j‖² = Σ_i D_ii ‖g_i‖² − Σ_ij A_ij ⟨g_i, g_j⟩.

    Computed in the trace form (O(n² + n² d) time, no [n, n, d] intermediate), so R can come out a few
    ulps below 0 where it is 0 in exact arithmetic. R ≥ 0 (L is positive semi-definite). An empty graph
    (A = 0) gives R = 0 in BOTH forms (normalised: Ã = I, d̃ = 1, L = 0): minimising λR over the
    structure alone therefore favours emptying the graph (see :func:`normalized_dirichlet`).
    ``adj`` must be non-negative and symmetric; A's own diagonal is allowed (it adds to Ã's). The result
    is differentiable in both ``g`` and ``adj`` (the synthetic adjacency is learned).
    """
    if g.dim() != 2:
        raise ConfigError(f"g: expected a [n, d] tensor (one row per node), got shape {tuple(g.shape)}")
    n = g.shape[0]
    _check_dense_adj(adj, n)
    a = adj.to(g.dtype)
    if normalized:
        a = a + torch.eye(n, dtype=a.dtype, device=a.device)
        h = g * a.sum(dim=1).rsqrt().unsqueeze(1)  # g_i / √d̃_i (d̃_i ≥ 1)
        return (g * g).sum() - (h * (a @ h)).sum()
    deg = a.sum(dim=1)
    return (deg.unsqueeze(1) * g * g).sum() - (g * (a @ g)).sum()


def knn_graph(x: Tensor, k: int, groups: Tensor | None = None) -> Tensor:
    """The symmetric k-nearest-neighbour graph of the rows of ``x`` (``[n, d]``) by cosine similarity, dense ``[n, n]``.

    A_ij = 1 if j is among the k rows most similar to i, or i among those of j (union), else 0; no
    self-loops. With ``groups`` (``[n]`` integer labels) only rows of the same group are candidates, so
    A_ij = 0 across groups and a row with fewer than k other members of its group links to all of them.
    Cosine similarity of x_i and x_j is ⟨x_i, x_j⟩ / (‖x_i‖ ‖x_j‖) (a zero row is similar to nothing more
    than to anything else: similarity 0). Ties are broken by ``torch.topk``. Not differentiable (0/1).

    Args:
        x (Tensor): node rows ``[n, d]``.
        k (int): neighbours per row, >= 1.
        groups (Tensor, optional): ``[n]`` group labels (e.g. the synthetic classes). (default: :obj:`None`)

    Returns:
        float ``[n, n]``, symmetric, zero diagonal.
    """
    if x.dim() != 2:
        raise ConfigError(f"x: expected a [n, d] tensor (one row per node), got shape {tuple(x.shape)}")
    if k < 1:
        raise ConfigError(f"k: {k!r}; allowed: an integer >= 1")
    n = x.shape[0]
    if groups is not None:
        _check_shape("groups", groups, (n,))
    a = torch.zeros(n, n, dtype=x.dtype, device=x.device)
    if n < 2:
        return a
    with torch.no_grad():
        xn = torch.nn.functional.normalize(x.detach(), dim=1)
        sim = xn @ xn.T
        ok = ~torch.eye(n, dtype=torch.bool, device=x.device)
        if groups is not None:
            ok &= groups[:, None] == groups[None, :]
        sim = sim.masked_fill(~ok, float("-inf"))
        val, idx = sim.topk(min(k, n - 1), dim=1)
        a.scatter_(1, idx, (val > float("-inf")).to(x.dtype))
        return torch.maximum(a, a.T)


def dirichlet_prox(g: Tensor, adj: Tensor, lam: float) -> Tensor:
    r"""The proximal step of the Dirichlet energy: the field closest to ``g`` that is smooth on ``adj``.

    .. math::
        \tilde g = \operatorname*{argmin}_h \; \tfrac12 \lVert h - g \rVert_F^2
        + \tfrac{\lambda}{2} \mathrm{tr}(h^\top L h) = (I + \lambda L)^{-1} g,
        \qquad L = I - \tilde D^{-1/2} (A + I) \tilde D^{-1/2}

    (L as in :func:`dirichlet_energy`, eigenvalues μ in [0, 2)): the component of g along an eigenvector
    of L is scaled by 1/(1 + λμ), so a field constant over a connected component (μ = 0) is unchanged,
    disagreement across edges is damped, and an isolated node keeps its row. λ = 0 returns g.

    Args:
        g (Tensor): the field ``[n, d]``.
        adj (Tensor): dense, non-negative, symmetric ``[n, n]``.
        lam (float): λ >= 0.

    Returns:
        ``[n, d]``, differentiable in ``g`` and ``adj``.
    """
    if g.dim() != 2:
        raise ConfigError(f"g: expected a [n, d] tensor (one row per node), got shape {tuple(g.shape)}")
    if not lam >= 0:
        raise ConfigError(f"lam: {lam!r}; allowed: >= 0")
    n = g.shape[0]
    _check_dense_adj(adj, n)
    if lam == 0 or n == 0:
        return g
    eye = torch.eye(n, dtype=g.dtype, device=g.device)
    at = adj.to(g.dtype) + eye
    dinv = at.sum(1).rsqrt()
    lap = eye - dinv[:, None] * at * dinv[None, :]
    return torch.linalg.solve(eye + lam * lap, g).contiguous()


def normalized_dirichlet(g: Tensor, adj: Tensor, eps: float = 1e-12) -> Tensor:
    """Scale-free damping: R̂ = tr(gᵀ L g) / (tr(gᵀ g) + ε), L the self-looped normalised Laplacian.

    R̂ is the Rayleigh quotient of L over the field g (up to ε), so 0 ≤ R̂ < 2 and R̂(c·g) = R̂(g) for any
    c ≠ 0: unlike R = :func:`dirichlet_energy`, it cannot be lowered by shrinking the gradient field
    (which λR with a large λ rewards), only by making g smoother on the graph. Note what it does NOT
    prevent: L = 0 for an empty graph, so R̂ = 0 at A = 0 as well; normalising by tr(gᵀ g) does not stop
    the structure from collapsing to an empty graph. Differentiable in ``g`` and ``adj``.
    """
    if not (eps > 0.0):
        raise ConfigError(f"eps: must be > 0, got {eps!r}")
    return dirichlet_energy(g, adj, normalized=True) / ((g * g).sum() + eps)


def conflict_rate(g_a: Tensor, g_b: Tensor) -> float:
    """Share of rows (nodes) whose two gradient blocks conflict: (1/n) Σ_i 1[⟨g_a,i, g_b,i⟩ < 0].

    Rows where either block is all zero have ⟨·,·⟩ = 0 and never count as conflicting (they stay in the
    denominator n). ``g_a``, ``g_b``: ``[n, d]`` of equal shape; for blocks of different widths pass their
    shared-space images g_a W_a, g_b W_b (see :func:`project_conflicting_shared`). NaN when n = 0.
    """
    _check_rows("g_a", g_a, "g_b", g_b)
    _check_shape("g_b", g_b, tuple(g_a.shape))
    if g_a.shape[0] == 0:
        return float("nan")
    with torch.no_grad():
        return float(((g_a * g_b).sum(dim=1) < 0).double().mean())
