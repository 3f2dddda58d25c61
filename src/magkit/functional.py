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


def _check_logits(name: str, logits: Tensor, needs: str) -> tuple[int, int]:
    """[n, C] logits with C ≥ 2 (``needs`` names the loss in the error); returns (n, C)."""
    if logits.dim() != 2:
        raise ConfigError(f"{name}: expected a [n, C] tensor, got shape {tuple(logits.shape)}")
    n, c = logits.shape
    if c < 2:
        raise ConfigError(f"{name}: {needs} needs at least 2 classes, got C = {c}")
    return n, c


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


_OFFDIAG_MEMO: list = []  # [(adj, result)]: the last sparse input, reused while callers pass the same tensor


def _without_diagonal(adj: Tensor) -> Tensor:
    """``adj`` with its diagonal (self-loop) entries removed, as a sparse COO (or dense, if dense) tensor.

    For a sparse ``adj`` the result is memoised for the last tensor object seen (GraphMNL passes the same
    cached Â every epoch; re-coalescing it cost about a tenth of an epoch on Grocery)."""
    if adj.layout == torch.strided:
        return adj - torch.diag_embed(torch.diagonal(adj))
    if _OFFDIAG_MEMO and _OFFDIAG_MEMO[0][0] is adj:
        return _OFFDIAG_MEMO[0][1]
    coo = (adj.to_sparse_coo() if adj.layout != torch.sparse_coo else adj).coalesce()
    idx, val = coo.indices(), coo.values()
    keep = idx[0] != idx[1]
    out = torch.sparse_coo_tensor(idx[:, keep], val[keep], coo.shape, check_invariants=False).coalesce()
    _OFFDIAG_MEMO[:] = [(adj, out)]
    return out


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
    n, c = _check_logits("logits", logits, "negative learning")
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


def nontarget_distillation(logits_b: Tensor, p_dom: Tensor, target: Tensor) -> Tensor:
    """Target-preserving non-target distillation: KL between the teacher's and the branch's distributions over
    the non-target classes, each renormalised there (the "non-target class" part of decoupled KD, Zhao et al. 2022).

    L(i) = Σ_{c≠y} p̄_c log(p̄_c / q̄_c),  p̄_c = p_dom,c / Σ_{k≠y} p_dom,k,  q̄ = softmax over {z_c : c ≠ y}.

    It teaches the branch *how unlikely* each non-target class is relative to the others (a graded form of
    negative learning) and leaves the target alone: z_y does not enter L, so ∂L/∂z_y = 0 exactly, unlike MNL's
    :func:`nontarget_soft_ce` (which pushes the target down) and positive distillation (which pulls it up).
    ``p_dom`` is the teacher (pass it detached); ``target`` holds a class id in [0, C) for every row (on
    unlabelled nodes, e.g. the dominant's argmax). Returns ``[n]`` (≥ 0; 0 where q̄ = p̄). C ≥ 3 (with two
    classes there is one non-target class and nothing to teach: the loss is 0).
    """
    n, c = _check_logits("logits_b", logits_b, "non-target distillation")
    _check_shape("p_dom", p_dom, (n, c))
    _check_shape("target", target, (n,))
    _check_targets(target, torch.ones(n, dtype=torch.bool, device=target.device), c)
    is_t = torch.zeros_like(logits_b, dtype=torch.bool).scatter_(1, target.long().view(-1, 1), True)
    logq = torch.log_softmax(logits_b.masked_fill(is_t, float("-inf")), dim=1)
    p = p_dom.detach().masked_fill(is_t, 0.0)
    p = p / p.sum(1, keepdim=True).clamp_min(1e-12)
    logp = torch.log(p.clamp_min(1e-12))
    # the target column is −inf in logq: keep it out of the sum (and of the gradient) with where, not a product
    term = torch.where(is_t | (p <= 0), torch.zeros_like(logq), p * (logp - logq))
    return term.sum(dim=1)


def negative_set(
    p_dom: Tensor,
    target: Tensor,
    labelled: Tensor,
    rho: float | None = 0.05,
    k: int | None = None,
    class_prior: Tensor | None = None,
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

    ``class_prior`` π ``[C]`` (threshold rule only) makes the threshold per class, ρ_c = ρ · C · π_c: class c is
    negative where the dominant's probability is below ρ times c's prior-relative share, so a rare class is
    ruled out only where the dominant is far surer of it than of a frequent one (uniform π gives ρ).
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
    if class_prior is not None:
        if rho is None:
            raise ConfigError("negative_set: class_prior needs the threshold rule (rho), not k")
        _check_shape("class_prior", class_prior, (c,))
        if bool((class_prior < 0).any()) or not torch.isfinite(class_prior).all():
            raise ConfigError("class_prior: must be finite and non-negative")
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
            thr = rho if class_prior is None else rho * c * (class_prior / class_prior.sum()).to(p)
            return (p < thr) & ~banned
        order = p.masked_fill(banned, float("inf")).topk(k, dim=1, largest=False).indices
        return torch.zeros_like(p, dtype=torch.bool).scatter_(1, order, True)


def branch_scores(
    probs: Tensor,
    present: Tensor,
    target: Tensor,
    labelled: Tensor,
    fused_probs: Tensor,
    adj: Tensor,
    fields: tuple[str, ...] | None = None,
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
    per-epoch pass needs only ``score``, ``confidence`` and ``agreement``).
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
            # no detach here: a detached view is a new tensor object and would defeat _without_diagonal's memo
            off = _without_diagonal(adj.detach() if adj.requires_grad else adj)
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


def transfer_gate(s: Tensor, m: Tensor, tau_s: float, tau_m: float | None, kappa: float) -> Tensor:
    """Instability-aware transfer gate: g(i) = 1[s(i) < τ_s] · σ(κ (m(i) − τ_m)) ∈ [0, 1], ``[n]``.

    s = temporal instability of the teacher (the dominant branch in the spec's form), m = arbitration margin.
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


def robust_log_probs(logits: Tensor, eps: float) -> Tensor:
    """log((1 − ε) softmax(z) + ε / C) over the last dimension: an expert's log-posterior mixed with the uniform.

    In a (weighted) product of experts an expert's vote on classes c, c' is its log-odds log(p_c / p_c'),
    unbounded for logits; after the mixture it is at most log(1 + (1 − ε) C / ε) in size, so no single confidently
    wrong expert can outvote the others by an arbitrary margin. ε = 0 gives log_softmax(z) (the logits up to a
    per-row constant, which a softmax ignores); ε must lie in [0, 1). Computed in the log domain (stable for
    logits of any size).
    """
    if not 0 <= eps < 1:
        raise ConfigError(f"robust_log_probs: eps={eps!r}; allowed: [0, 1)")
    logp = torch.log_softmax(logits, dim=-1)
    if eps == 0:
        return logp
    c = logits.shape[-1]
    return torch.logaddexp(logp + math.log1p(-eps), torch.full_like(logp, math.log(eps / c)))


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


# ---------------------------------------------------------------------------------------------------------
# SR-GM maths (docs: shared/design/srgm.md): gradient-matching distances, orthogonal projection of
# conflicting modality gradients, Dirichlet energy of a gradient field on the synthetic graph.
#
# Shapes: n (synthetic) nodes; g, g_a, g_b are per-node gradient rows ([n, d]); ``adj`` is a DENSE [n, n]
# non-negative symmetric weight matrix (the learned synthetic adjacency A').
# ---------------------------------------------------------------------------------------------------------

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
