"""GraphMNL's reliability maths: per-branch evidence, graph smoothing, arbitration, temporal instability,
transfer gating, prior-corrected fusion and the diagnostic reliability AUC (docs/graphmnl.md, components 2-4).

Shapes: n nodes, B branches, C classes. ``adj`` is an [n, n] adjacency (sparse COO, sparse CSR or dense),
rows = message targets, as built by ``magkit.train.propagation.normalized_adjacency``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from magkit.exceptions import ConfigError

from ._checks import _check_shape, _check_targets
from .metrics import roc_auc


def _spmm(adj: Tensor, x: Tensor) -> Tensor:
    """``adj @ x`` for a sparse (COO / CSR) or dense ``adj``, computed in ``x``'s dtype."""
    return adj.to(x.dtype) @ x


def without_diagonal(adj: Tensor) -> Tensor:
    """``adj`` with its diagonal (self-loop) entries removed, as a sparse COO (or dense, if dense) tensor.

    Callers that score the same graph every epoch compute it once and pass it to :func:`branch_scores` as
    ``offdiag`` (re-coalescing Grocery's Â costs about a tenth of a GraphMNL epoch)."""
    if adj.layout == torch.strided:
        return adj - torch.diag_embed(torch.diagonal(adj))
    coo = (adj.to_sparse_coo() if adj.layout != torch.sparse_coo else adj).coalesce()
    idx, val = coo.indices(), coo.values()
    keep = idx[0] != idx[1]
    out = torch.sparse_coo_tensor(idx[:, keep], val[keep], coo.shape, check_invariants=False).coalesce()
    return out


def branch_scores(
    probs: Tensor,
    present: Tensor,
    target: Tensor,
    labelled: Tensor,
    fused_probs: Tensor,
    adj: Tensor,
    fields: tuple[str, ...] | None = None,
    offdiag: Tensor | None = None,
) -> dict[str, Tensor]:
    """Per-node, per-branch reliability evidence (GraphMNL component 2), each a ``[n, B]`` tensor.

    With p_b(i) = ``probs[i, b]``, p_f = ``fused_probs`` and Ã = ``adj`` without its diagonal:

    * ``margin``      ξ_b(i) = p_b,y(i) − max_{c≠y} p_b,c(i) on labelled nodes, 0 elsewhere (probability space);
    * ``target_prob`` p_b,y(i) on labelled nodes, 0 elsewhere;
    * ``confidence``  u_b(i) = 1 − H(p_b(i)) / log C, H(p) = − Σ_c p_c log p_c (0 log 0 = 0); in [0, 1];
    * ``agreement``   a_b(i) = Σ_{j≠i} Ã_ij ⟨p_b(i), p_f(j)⟩ / Σ_{j≠i} Ã_ij: agreement with the neighbours'
      fused predictions; a node without neighbours (no off-diagonal weight) gets ⟨p_b(i), p_f(i)⟩;
    * ``score``       r_b(i) = p_b,y(i) on labelled nodes and ½ (u_b(i) + a_b(i)) on unlabelled ones.

    Every field is exactly 0 where the branch is absent (``present[i, b]`` false). ``adj`` may be row- or
    symmetric-normalised, with or without self-loops (the diagonal is ignored). Computed without gradient.
    ``fields`` (default: all five) names the entries to compute and return; the others are skipped (GraphMNL's
    per-epoch pass needs only ``score``, ``confidence`` and ``agreement``). ``offdiag``: ``adj`` without its
    diagonal (:func:`without_diagonal`), for callers that score the same graph repeatedly; computed from ``adj``
    when not given.
    """
    every = ("margin", "target_prob", "confidence", "agreement", "score")
    fields = every if fields is None else tuple(fields)
    bad = [f for f in fields if f not in every]
    if bad:
        raise ConfigError(f"fields: unknown {bad}; allowed: {', '.join(every)}")
    if probs.dim() != 3:
        raise ConfigError(f"probs: expected a [n, B, C] tensor, got shape {tuple(probs.shape)}")
    n, nb, c = probs.shape
    _check_shape("present", present, (n, nb))
    _check_shape("target", target, (n,))
    _check_shape("labelled", labelled, (n,))
    _check_shape("fused_probs", fused_probs, (n, c))
    _check_shape("adj", adj, (n, n))
    labelled = labelled.bool()
    present = present.bool()
    _check_targets(target, labelled, c)
    with torch.no_grad():
        p = probs.detach()
        pf = fused_probs.detach().to(p.dtype)
        y = target.long().clamp(min=0).view(n, 1, 1).expand(n, nb, 1)
        lab = labelled.view(n, 1)
        zero = torch.zeros(n, nb, dtype=p.dtype, device=p.device)
        out: dict[str, Tensor] = {}
        need = set(fields)
        if need & {"margin", "target_prob", "score"}:
            p_y = p.gather(2, y).squeeze(2)
        if "margin" in need:
            p_other = p.scatter(2, y, float("-inf")).amax(dim=2)
            out["margin"] = torch.where(lab, p_y - p_other, zero)
        if "target_prob" in need:
            out["target_prob"] = torch.where(lab, p_y, zero)
        if need & {"confidence", "score"}:
            ent = -torch.special.xlogy(p, p).sum(dim=2)
            out["confidence"] = 1.0 - ent / math.log(c) if c > 1 else torch.ones_like(ent)
        if need & {"agreement", "score"}:
            off = offdiag if offdiag is not None else without_diagonal(adj.detach())
            deg = _spmm(off, torch.ones(n, 1, dtype=p.dtype, device=p.device)).squeeze(1)
            neigh = _spmm(off, pf)  # Σ_{j≠i} Ã_ij p_f(j)
            has = deg > 0
            ref = torch.where(has.view(n, 1), neigh / torch.where(has, deg, 1.0).view(n, 1), pf)
            out["agreement"] = (p * ref.unsqueeze(1)).sum(dim=2)
        if "score" in need:
            out["score"] = torch.where(lab, p_y, 0.5 * (out["confidence"] + out["agreement"]))
        return {key: torch.where(present, out[key], zero) for key in fields}


def smooth_scores(r: Tensor, present: Tensor, adj: Tensor, beta: float, steps: int) -> Tensor:
    """Graph-aware smoothing of reliability scores over the nodes where each branch is present.

    r̃_0 = r, r̃_{t+1} = (1 − β) r + β N(r̃_t) for t < ``steps``, with the presence-aware neighbour average
    N(x)_b(i) = Σ_j Â_ij π_b(j) x_b(j) / Σ_j Â_ij π_b(j) (π = ``present``; Â as given, so self-loops count
    the node itself), falling back to x_b(i) where Σ_j Â_ij π_b(j) = 0. Dividing by Σ_j Â_ij π_b(j) makes
    N a weighted mean (a plain Â r̃ would shrink scores on a symmetric-normalised Â and let absent
    branches count as 0). Absent entries are exactly 0 in the output; β = 0 or ``steps`` = 0 returns r
    (masked). Requires β ∈ [0, 1] and ``steps`` ≥ 0. Returns ``[n, B]``.
    """
    if not (0.0 <= beta <= 1.0):
        raise ConfigError(f"beta: must lie in [0, 1], got {beta!r}")
    if int(steps) != steps or steps < 0:
        raise ConfigError(f"steps: must be an integer >= 0, got {steps!r}")
    if r.dim() != 2:
        raise ConfigError(f"r: expected a [n, B] tensor, got shape {tuple(r.shape)}")
    n, nb = r.shape
    _check_shape("present", present, (n, nb))
    _check_shape("adj", adj, (n, n))
    pres = present.bool()
    base = torch.where(pres, r, torch.zeros_like(r))
    if beta == 0.0 or steps == 0:
        return base
    pi = pres.to(r.dtype)
    adj = adj.to(r.dtype)
    den = adj @ pi
    has = den > 0
    safe_den = torch.where(has, den, torch.ones_like(den))
    out = base
    for _ in range(int(steps)):  # loop over smoothing steps, not nodes
        avg = torch.where(has, (adj @ (out * pi)) / safe_den, out)
        out = torch.where(pres, (1.0 - beta) * base + beta * avg, torch.zeros_like(out))
    return out


def arbitrate(r_tilde: Tensor, present: Tensor, delta: float) -> tuple[Tensor, Tensor, Tensor]:
    """Per-node arbitration between branches from smoothed reliability scores r̃ (``[n, B]``).

    * dominant d(i) = argmax_{b present} r̃_b(i) (lowest index among ties); −1 where no branch is present;
    * inferior(i, b) = present_b(i) ∧ b ≠ d(i) ∧ r̃_b(i) ≤ r̃_d(i) − δ;
    * margin m(i) = r̃_d(i) − max_{b present, b≠d} r̃_b(i); 0 when fewer than two branches are present.

    Requires δ ≥ 0. Returns ``(dominant [n] long, inferior [n, B] bool, margin [n])``; no gradient.
    """
    if not (delta >= 0.0):
        raise ConfigError(f"delta: must be >= 0, got {delta!r}")
    if r_tilde.dim() != 2:
        raise ConfigError(f"r_tilde: expected a [n, B] tensor, got shape {tuple(r_tilde.shape)}")
    n, nb = r_tilde.shape
    _check_shape("present", present, (n, nb))
    pres = present.bool()
    with torch.no_grad():
        r = r_tilde.detach()
        masked = r.masked_fill(~pres, float("-inf"))
        best, dom = masked.max(dim=1)
        any_present = pres.any(dim=1)
        dom = torch.where(any_present, dom, torch.full_like(dom, -1))
        is_dom = torch.zeros_like(pres).scatter_(1, dom.clamp(min=0).view(-1, 1), True)
        is_dom &= any_present.view(-1, 1)
        inferior = pres & ~is_dom & (r <= best.view(-1, 1) - delta)
        second = masked.masked_fill(is_dom, float("-inf")).amax(dim=1)
        two = pres.sum(dim=1) >= 2
        margin = torch.where(two, best - second, torch.zeros_like(best))
    return dom, inferior, margin


def ema_update(ema: Tensor | None, p: Tensor, decay: float) -> Tensor:
    """Exponential moving average over epochs: ē ← decay · ē + (1 − decay) · p; ``None`` starts at p.

    ``p`` is detached (the average is state, not part of the graph). Requires decay ∈ [0, 1].
    """
    if not (0.0 <= decay <= 1.0):
        raise ConfigError(f"decay: must lie in [0, 1], got {decay!r}")
    p = p.detach()
    if ema is None:
        return p.clone()
    _check_shape("p", p, tuple(ema.shape))
    return decay * ema.detach() + (1.0 - decay) * p


def instability(p: Tensor, p_ema: Tensor, kind: str = "tv") -> Tensor:
    """Temporal instability of a prediction: distance between p(i) and its moving average p̄(i), ``[n]``.

    * ``"tv"``: total variation ½ Σ_c |p_c − p̄_c| ∈ [0, 1];
    * ``"js"``: Jensen–Shannon divergence ½ KL(p ‖ μ) + ½ KL(p̄ ‖ μ), μ = ½ (p + p̄), in nats ∈ [0, log 2]
      (0 log 0 = 0).
    """
    if kind not in ("tv", "js"):
        raise ConfigError(f"kind: unknown instability {kind!r}; allowed: 'tv', 'js'")
    _check_shape("p_ema", p_ema, tuple(p.shape))
    if kind == "tv":
        return 0.5 * (p - p_ema).abs().sum(dim=-1)
    mid = 0.5 * (p + p_ema)
    kl_p = (torch.special.xlogy(p, p) - torch.special.xlogy(p, mid)).sum(dim=-1)
    kl_q = (torch.special.xlogy(p_ema, p_ema) - torch.special.xlogy(p_ema, mid)).sum(dim=-1)
    return (0.5 * (kl_p + kl_q)).clamp(min=0.0)


def transfer_gate(s: Tensor, m: Tensor, tau_s: float, tau_m: float | None, kappa: float) -> Tensor:
    """Instability-aware transfer gate: g(i) = 1[s(i) < τ_s] · σ(κ (m(i) − τ_m)) ∈ [0, 1], ``[n]``.

    s = temporal instability of the teacher (the dominant branch, in GraphMNL), m = arbitration margin.
    ``tau_m=None`` drops the margin term: g(i) = 1[s(i) < τ_s] (instability only). Requires a finite κ ≥ 0.
    """
    if not (math.isfinite(kappa) and kappa >= 0.0):
        raise ConfigError(f"kappa: must be a finite number >= 0, got {kappa!r}")
    _check_shape("m", m, tuple(s.shape))
    open_ = (s < tau_s).to(m.dtype)
    return open_ if tau_m is None else open_ * torch.sigmoid(kappa * (m - tau_m))


def prior_once_fusion(fused: Tensor, shares: Tensor, log_prior: Tensor) -> Tensor:
    """Count the class prior once in a weighted average of branch logits, ``[n, C]``.

    Each branch trained with cross-entropy on the same labelled nodes gives logits z_g(i) = ℓ_g(i) + log π + c_g(i)
    (ℓ_g its evidence, π the training class prior). The weighted product of experts p ∝ π Π_g (p_g / π)^{W s_g},
    with s_g(i) ≥ 0 the experts' normalised shares (Σ_g s_g = 1) and W(i) = 1 / Σ_g s_g² their effective number
    (K for K equal shares, 1 for one expert), counts the prior once; dividing its log by W gives

        z(i) = Σ_g s_g(i) z_g(i) − (1 − Σ_g s_g(i)²) log π,

    i.e. the plain weighted average ``fused`` = Σ_g s_g z_g (which counts the prior W times against the averaged
    evidence and so favours frequent classes) plus a per-node prior correction. ``shares`` [n, G] are the
    experts' shares (rows summing to 1, or all-zero rows: no correction there); ``log_prior`` [C] is log π.
    """
    if fused.dim() != 2 or shares.dim() != 2 or shares.shape[0] != fused.shape[0]:
        raise ConfigError(f"prior_once_fusion: fused [n, C] and shares [n, G] expected, got {tuple(fused.shape)} "
                          f"and {tuple(shares.shape)}")
    _check_shape("log_prior", log_prior, (fused.shape[1],))
    excess = 1.0 - shares.pow(2).sum(dim=1, keepdim=True)
    excess = torch.where(shares.sum(dim=1, keepdim=True) > 0, excess, torch.zeros_like(excess))
    return fused - excess * log_prior.to(fused).unsqueeze(0)


def reliability_auc(
    r_tilde: Tensor,
    quality: Tensor,
    present: Tensor,
    biased: Tensor | None = None,
    gap: float = 0.05,
) -> float:
    """How well reliability scores rank the truly better of two modalities (diagnostic; needs ground truth).

    Columns are aligned: ``r_tilde[:, m]``, ``quality[:, m]``, ``present[:, m]`` (and ``biased[:, m]``) all
    describe modality m ∈ {0, 1}. A node enters when both modalities are present and the truth is decided:
    exactly one modality is biased (the unbiased one is better), or neither/both are and |q_0 − q_1| > ``gap``
    (the higher quality is better). Returns ``roc_auc(r̃_0 − r̃_1, [modality 0 is better])``: 1 = perfect,
    ½ = chance, 0 = reversed; NaN when no node (or only one side) qualifies.
    """
    if quality.dim() != 2 or quality.shape[1] != 2:
        raise ConfigError(f"quality: expected [n, 2] (two modalities), got shape {tuple(quality.shape)}")
    n = quality.shape[0]
    _check_shape("r_tilde", r_tilde, (n, 2))
    _check_shape("present", present, (n, 2))
    b = torch.zeros(n, 2, dtype=torch.bool, device=quality.device) if biased is None else biased.bool()
    _check_shape("biased", b, (n, 2))
    q = quality.detach().double()
    both = present.bool().all(dim=1)
    one_biased = b[:, 0] != b[:, 1]
    decided = one_biased | (q[:, 0] - q[:, 1]).abs().gt(gap)
    better0 = torch.where(one_biased, b[:, 1], q[:, 0] > q[:, 1])
    keep = both & decided
    diff = (r_tilde[:, 0] - r_tilde[:, 1]).detach()
    return roc_auc(diff[keep], better0[keep])
