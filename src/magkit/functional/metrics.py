"""Classification metrics: accuracy, confusion matrix, macro-F1 and ROC-AUC (each with its formula)."""

from __future__ import annotations

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
