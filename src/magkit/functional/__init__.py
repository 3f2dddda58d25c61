"""Pure tensor maths of magkit, one public namespace (like ``torch.nn.functional``).

Each function states its formula in its docstring. The topics live in submodules:

* :mod:`~magkit.functional.metrics`: accuracy, confusion matrix, macro-F1, ROC-AUC;
* :mod:`~magkit.functional.ops`: inverted dropout;
* :mod:`~magkit.functional.negative`: negative-learning losses and the negative set (GraphMNL);
* :mod:`~magkit.functional.reliability`: branch reliability, smoothing, arbitration, gating (GraphMNL);
* :mod:`~magkit.functional.matching`: gradient distances, conflicting-gradient projection, Dirichlet energy and its proximal step, kNN graphs (SR-GM).
"""

from .matching import (
    GRADIENT_DISTANCES,
    conflict_rate,
    dirichlet_energy,
    dirichlet_prox,
    gradient_distance,
    knn_graph,
    normalized_dirichlet,
    project_conflicting,
    project_conflicting_shared,
)
from .metrics import accuracy, confusion_matrix, macro_f1, roc_auc
from .negative import negative_learning_loss, negative_set, nontarget_distillation, nontarget_soft_ce
from .ops import dropout
from .reliability import (
    arbitrate,
    branch_scores,
    ema_update,
    instability,
    prior_once_fusion,
    reliability_auc,
    smooth_scores,
    transfer_gate,
    without_diagonal,
)

__all__ = [
    "GRADIENT_DISTANCES",
    "accuracy",
    "arbitrate",
    "branch_scores",
    "without_diagonal",
    "confusion_matrix",
    "conflict_rate",
    "dirichlet_energy",
    "dirichlet_prox",
    "dropout",
    "ema_update",
    "gradient_distance",
    "instability",
    "knn_graph",
    "macro_f1",
    "negative_learning_loss",
    "negative_set",
    "nontarget_distillation",
    "nontarget_soft_ce",
    "normalized_dirichlet",
    "prior_once_fusion",
    "project_conflicting",
    "project_conflicting_shared",
    "reliability_auc",
    "roc_auc",
    "smooth_scores",
    "transfer_gate",
]
