"""Pure tensor maths: metrics and (later) the methods' losses. Each function states its formula."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from magkit.exceptions import ConfigError


def accuracy(pred: Tensor, y: Tensor) -> float:
    """acc = (1/n) Σ_i 1[pred_i = y_i]; ``pred`` are class ids or ``[n, C]`` scores."""
    if pred.dim() == 2:
        pred = pred.argmax(dim=1)
    if y.numel() == 0:
        return float("nan")
    return float((pred == y).float().mean())


def confusion_matrix(pred: Tensor, y: Tensor, num_classes: int) -> Tensor:
    """``M[t, p]`` = number of nodes of true class ``t`` predicted as ``p``."""
    if pred.dim() == 2:
        pred = pred.argmax(dim=1)
    idx = y.long() * num_classes + pred.long()
    return torch.bincount(idx, minlength=num_classes * num_classes).view(num_classes, num_classes)


def macro_f1(pred: Tensor, y: Tensor, num_classes: int) -> float:
    """Macro-F1 = (1/|K|) Σ_{c∈K} 2·TP_c / (2·TP_c + FP_c + FN_c), K = classes present in ``y`` or predicted.

    Classes neither present nor predicted are left out (scikit-learn's ``f1_score(average="macro")`` over the
    union of labels); a class with TP = FP = FN = 0 cannot occur in K.
    """
    if y.numel() == 0:
        return float("nan")
    m = confusion_matrix(pred, y, num_classes).double()
    tp = m.diag()
    fp = m.sum(0) - tp
    fn = m.sum(1) - tp
    keep = (m.sum(0) + m.sum(1)) > 0
    f1 = 2 * tp[keep] / (2 * tp[keep] + fp[keep] + fn[keep])
    return float(f1.mean())


def dropout(x: Tensor, p: float, training: bool = True) -> Tensor:
    """Inverted dropout: y = x · m / (1 − p̂), m_ij ~ Bernoulli(1 − p̂) with p̂ = round(256 p) / 256.

    Same maths as ``torch.nn.functional.dropout`` up to the rounding of p to a multiple of 1/256 (the scale
    uses the rounded p̂, so E[y] = x exactly). Why: on CPU, torch's dropout draws one 32-bit random number
    per element through Bernoulli sampling, which dominated the epoch time of an MLP/GCN on 17k x 256
    inputs (measured 158 ms for one call on this machine, against 32 ms here); this draws 8 random bytes
    per 64-bit word, one byte per element. Randomness comes from torch's global generator, so
    ``torch.manual_seed`` makes it reproducible.
    """
    if not training or p <= 0.0:
        return x
    if p >= 1.0:
        return x * 0.0
    threshold = int(round(p * 256))
    if threshold <= 0:
        return x
    if threshold >= 256:
        return x * 0.0
    n = x.numel()
    words = torch.randint(-(2**63), 2**63 - 1, ((n + 7) // 8,), dtype=torch.int64, device=x.device)
    keep = words.view(torch.uint8)[:n].view(x.shape) >= threshold
    return x * keep * (256.0 / (256 - threshold))


# ---------------------------------------------------------------------------------------------------------
# GraphMNL maths (docs: shared/design/graphmnl.md, components 2-4) and its diagnostics.
#
# Shapes: n nodes, B branches, C classes. ``adj`` is an [n, n] adjacency (sparse COO, sparse CSR or dense),
# rows = message targets, as built by ``magkit.train.propagation.normalized_adjacency``.
# ---------------------------------------------------------------------------------------------------------


def _check_shape(name: str, t: Tensor, shape: tuple) -> None:
    if tuple(t.shape) != tuple(shape):
        raise ConfigError(f"{name}: expected shape {tuple(shape)}, got {tuple(t.shape)}")


def _check_targets(target: Tensor, labelled: Tensor, num_classes: int) -> None:
    """Labelled nodes must carry a class id in [0, C); unlabelled ones may carry anything (−1 by convention)."""
    t = target[labelled]
    if t.numel() and (int(t.min()) < 0 or int(t.max()) >= num_classes):
        raise ConfigError(
            f"target: labelled nodes need class ids in [0, {num_classes - 1}], "
            f"got values in [{int(t.min())}, {int(t.max())}]"
        )


def _spmm(adj: Tensor, x: Tensor) -> Tensor:
    """``adj @ x`` for a sparse (COO / CSR) or dense ``adj``, computed in ``x``'s dtype."""
    return adj.to(x.dtype) @ x


def _without_diagonal(adj: Tensor) -> Tensor:
    """``adj`` with its diagonal (self-loop) entries removed, as a sparse COO (or dense, if dense) tensor."""
    if adj.layout == torch.strided:
        return adj - torch.diag_embed(torch.diagonal(adj))
    coo = (adj.to_sparse_coo() if adj.layout != torch.sparse_coo else adj).coalesce()
    idx, val = coo.indices(), coo.values()
    keep = idx[0] != idx[1]
    return torch.sparse_coo_tensor(idx[:, keep], val[keep], coo.shape, check_invariants=False).coalesce()


def _log1m_softmax(logits: Tensor) -> Tensor:
    """log(1 − q_c) for every class, q = softmax(z), accurate for any finite logits (C ≥ 2).

    For c ≠ argmax, q_c ≤ ½ and log1p(−q_c) = log1p(−exp(log q_c)) is accurate. For the top class c*,
    q_c* may round to 1, so use the exact identity log(1 − q_c*) = logsumexp_{k≠c*} z_k − logsumexp_k z_k.
    """
    lse = torch.logsumexp(logits, dim=-1, keepdim=True)
    logq = logits - lse
    is_top = torch.zeros_like(logits, dtype=torch.bool).scatter_(-1, logits.argmax(-1, keepdim=True), True)
    lse_rest = torch.logsumexp(logits.masked_fill(is_top, float("-inf")), dim=-1, keepdim=True)
    top = (lse_rest - lse).expand_as(logits)
    # the unselected branch of torch.where still gets a (zero) gradient: keep it finite (no log1p(−1))
    rest = torch.log1p(-logq.masked_fill(is_top, -1.0).exp())
    return torch.where(is_top, top, rest)


def negative_learning_loss(logits: Tensor, neg_mask: Tensor, weights: Tensor | None = None) -> Tensor:
    """Target-preserving negative learning: L(i) = − Σ_{c ∈ C̄(i)} w_c(i) log(1 − q_c(i)), q = softmax(z).

    Parameters
    ----------
    logits: ``[n, C]`` finite logits z of the branch being guided (C ≥ 2).
    neg_mask: ``[n, C]`` bool, the negative set C̄(i) (see :func:`negative_set`).
    weights: ``[n, C]`` (or broadcastable) weights w_c(i) ≥ 0; ``None`` means 1.

    Returns ``[n]``; rows with an empty negative set give exactly 0 (and zero gradient).

    Gradient: ∂L/∂z_k = Σ_{c∈C̄} w_c q_c (δ_ck − q_k) / (1 − q_c). For a class y ∉ C̄ (the target) this is
    −q_y Σ_{c∈C̄} w_c q_c / (1 − q_c) ≤ 0, so gradient descent never lowers the target logit.
    Numerically stable: log(1 − q_c) is log1p(−q_c) for non-top classes (q_c ≤ ½) and
    logsumexp_{k≠c} z_k − logsumexp_k z_k for the top class, so logits of ±50 give finite values and gradients.
    """
    if logits.dim() != 2:
        raise ConfigError(f"logits: expected a [n, C] tensor, got shape {tuple(logits.shape)}")
    n, c = logits.shape
    if c < 2:
        raise ConfigError(f"logits: negative learning needs at least 2 classes, got C = {c}")
    _check_shape("neg_mask", neg_mask, (n, c))
    neg_mask = neg_mask.bool()
    log1mq = _log1m_softmax(logits)
    term = log1mq if weights is None else weights * log1mq
    return -torch.where(neg_mask, term, torch.zeros_like(term)).sum(dim=1)


def nontarget_soft_ce(logits_b: Tensor, p_dom: Tensor, target: Tensor) -> Tensor:
    """MNL's non-target soft cross-entropy (Gong et al. 2025): L(i) = − Σ_{c≠y} p_dom,c(i) log q_b,c(i).

    q_b = softmax(z_b); p_dom is NOT renormalised over the non-target classes, and is used as given (pass it
    detached: it is the teacher). Returns ``[n]``. Gradient on the target logit:
    ∂L/∂z_y = q_y Σ_{c≠y} p_dom,c = (1 − p_dom,y) q_y > 0, i.e. descent pushes the target down; this is
    the property that target-preserving :func:`negative_learning_loss` avoids (kept as an ablation).
    ``target`` holds a class id in [0, C) for every row (on unlabelled nodes, e.g. the dominant's argmax).
    """
    if logits_b.dim() != 2:
        raise ConfigError(f"logits_b: expected a [n, C] tensor, got shape {tuple(logits_b.shape)}")
    n, c = logits_b.shape
    _check_shape("p_dom", p_dom, (n, c))
    _check_shape("target", target, (n,))
    _check_targets(target, torch.ones(n, dtype=torch.bool, device=target.device), c)
    logq = torch.log_softmax(logits_b, dim=1)
    nontarget = p_dom.scatter(1, target.long().view(-1, 1), 0.0)
    return -(nontarget * logq).sum(dim=1)


def negative_set(
    p_dom: Tensor,
    target: Tensor,
    labelled: Tensor,
    rho: float | None = 0.05,
    k: int | None = None,
) -> Tensor:
    """The negative set C̄(i): classes the dominant branch finds unlikely, as a ``[n, C]`` bool mask.

    Exactly one rule must be given (pass ``rho=None`` to use ``k``):

    * threshold: C̄(i) = {c : p_dom,c(i) < ρ}, ρ ∈ (0, 1);
    * count: C̄(i) = the k classes with the smallest p_dom,c(i) among the eligible ones, k ∈ [1, C − 1]
      (ties broken by ``torch.topk``).

    Eligibility: on a labelled node the target y(i) is never in C̄(i) (with ``k``, the k least likely
    *non-target* classes are taken, so |C̄(i)| = k). On an unlabelled node (``target`` ignored, −1 by
    convention) the dominant's predicted class argmax_c p_dom,c(i) and, with ρ, every class with
    p_dom,c(i) ≥ ρ are excluded. Computed without gradient.
    """
    if p_dom.dim() != 2:
        raise ConfigError(f"p_dom: expected a [n, C] tensor, got shape {tuple(p_dom.shape)}")
    n, c = p_dom.shape
    if (rho is None) == (k is None):
        raise ConfigError(
            f"negative_set: give exactly one of rho (threshold) or k (count), got rho={rho!r}, k={k!r}; "
            "pass rho=None to use k"
        )
    if rho is not None and not (0.0 < rho < 1.0):
        raise ConfigError(f"rho: must lie in (0, 1), got {rho!r}")
    if k is not None and not (1 <= k <= c - 1):
        raise ConfigError(f"k: must lie in [1, C − 1] = [1, {c - 1}], got {k!r}")
    _check_shape("target", target, (n,))
    _check_shape("labelled", labelled, (n,))
    labelled = labelled.bool()
    _check_targets(target, labelled, c)
    with torch.no_grad():
        p = p_dom.detach()
        # class the rule may never pick: the target on labelled nodes, the dominant's argmax elsewhere
        protected = torch.where(labelled, target.long().clamp(min=0), p.argmax(dim=1))
        banned = torch.zeros_like(p, dtype=torch.bool).scatter_(1, protected.view(-1, 1), True)
        if rho is not None:
            return (p < rho) & ~banned
        order = p.masked_fill(banned, float("inf")).topk(k, dim=1, largest=False).indices
        return torch.zeros_like(p, dtype=torch.bool).scatter_(1, order, True)


def branch_scores(
    probs: Tensor,
    present: Tensor,
    target: Tensor,
    labelled: Tensor,
    fused_probs: Tensor,
    adj: Tensor,
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
    """
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
        p_y = p.gather(2, y).squeeze(2)
        p_other = p.scatter(2, y, float("-inf")).amax(dim=2)
        margin = p_y - p_other
        ent = -torch.special.xlogy(p, p).sum(dim=2)
        confidence = 1.0 - ent / math.log(c) if c > 1 else torch.ones_like(ent)
        off = _without_diagonal(adj.detach())
        deg = _spmm(off, torch.ones(n, 1, dtype=p.dtype, device=p.device)).squeeze(1)
        neigh = _spmm(off, pf)  # Σ_{j≠i} Ã_ij p_f(j)
        has = deg > 0
        ref = torch.where(has.view(n, 1), neigh / torch.where(has, deg, 1.0).view(n, 1), pf)
        agreement = (p * ref.unsqueeze(1)).sum(dim=2)
        lab = labelled.view(n, 1)
        score = torch.where(lab, p_y, 0.5 * (confidence + agreement))
        zero = torch.zeros_like(p_y)
        out = {
            "margin": torch.where(lab, margin, zero),
            "target_prob": torch.where(lab, p_y, zero),
            "confidence": confidence,
            "agreement": agreement,
            "score": score,
        }
        return {key: torch.where(present, val, zero) for key, val in out.items()}


def smooth_scores(r: Tensor, present: Tensor, adj: Tensor, beta: float, steps: int) -> Tensor:
    """Graph-aware smoothing of reliability scores over the nodes where each branch is present.

    r̃_0 = r, r̃_{t+1} = (1 − β) r + β N(r̃_t) for t < ``steps``, with the presence-aware neighbour average
    N(x)_b(i) = Σ_j Â_ij π_b(j) x_b(j) / Σ_j Â_ij π_b(j) (π = ``present``; Â as given, so self-loops count
    the node itself), falling back to x_b(i) where Σ_j Â_ij π_b(j) = 0. Dividing by Σ_j Â_ij π_b(j) makes
    N a weighted mean (the design's plain Â r̃ would shrink scores on a symmetric-normalised Â and let absent
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


def transfer_gate(s: Tensor, m: Tensor, tau_s: float, tau_m: float, kappa: float) -> Tensor:
    """Instability-aware transfer gate: g(i) = 1[s(i) < τ_s] · σ(κ (m(i) − τ_m)) ∈ [0, 1], ``[n]``.

    s = temporal instability of the dominant branch, m = arbitration margin. Requires a finite κ ≥ 0.
    """
    if not (math.isfinite(kappa) and kappa >= 0.0):
        raise ConfigError(f"kappa: must be a finite number >= 0, got {kappa!r}")
    _check_shape("m", m, tuple(s.shape))
    return (s < tau_s).to(m.dtype) * torch.sigmoid(kappa * (m - tau_m))


def roc_auc(scores: Tensor, labels: Tensor) -> float:
    """Area under the ROC curve via Mann–Whitney: AUC = (R₊ − n₊(n₊ + 1)/2) / (n₊ n₋).

    R₊ = sum of the positives' ranks among all scores (1-based, ties get their average rank), so a tied
    (positive, negative) pair counts ½. Equals P(score₊ > score₋) + ½ P(score₊ = score₋). NaN when either
    class is empty; NaN scores are refused.
    """
    s = scores.detach().reshape(-1).double()
    lab = labels.detach().reshape(-1).bool()
    if s.numel() != lab.numel():
        raise ConfigError(f"labels: expected {s.numel()} entries (one per score), got {lab.numel()}")
    if bool(torch.isnan(s).any()):
        raise ConfigError("scores: contains NaN; AUC needs comparable scores")
    n_pos = int(lab.sum())
    n_neg = lab.numel() - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    uniq, inverse, counts = torch.unique(s, sorted=True, return_inverse=True, return_counts=True)
    end = counts.cumsum(0).double()  # last 1-based rank of each tie group
    avg_rank = end - (counts.double() - 1.0) / 2.0
    r_pos = avg_rank[inverse][lab].sum()
    u = r_pos - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


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
