"""Negative learning: losses that push a branch away from classes the dominant branch rules out.

Shapes: n nodes, C classes; logits and probabilities are ``[n, C]``. See GraphMNL (docs/graphmnl.md), component 4,
and MNL (Gong et al. 2025) for the non-target soft cross-entropy kept as an ablation.
"""

from __future__ import annotations

import torch
from torch import Tensor

from magkit.exceptions import ConfigError

from ._checks import _check_logits, _check_shape, _check_targets


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
