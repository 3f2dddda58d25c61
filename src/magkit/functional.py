"""Pure tensor maths: metrics and (later) the methods' losses. Each function states its formula."""

from __future__ import annotations

import torch
from torch import Tensor


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
