"""Graph condensation: synthesise a tiny graph that trains GNNs almost as well as the real one.

Every condenser (SR-GM, GCond, GCond-X, coresets) returns a :class:`CondensedGraph`, the artifact that is
saved and loaded as one safetensors file (see :mod:`magkit.condense.artifact` for the format) and evaluated
on the real graph with :func:`evaluate_condensed`.
"""

from .artifact import FORMAT_VERSION, CondensedGraph, condensation_meta, summarize_history
from .base import Condenser, GradientMatching, class_budget, damping_term
from .coreset import CORESETS, Coreset
from .evaluate import EVAL_BACKBONES, evaluate_condensed, graph_views, train_on_condensed, train_whole
from .registry import CONDENSERS, SRGM, condenser_names, make_condenser

__all__ = [
    "CONDENSERS", "CORESETS", "EVAL_BACKBONES", "FORMAT_VERSION", "SRGM", "CondensedGraph", "Condenser", "Coreset",
    "GradientMatching", "class_budget", "condensation_meta", "condenser_names", "damping_term",
    "evaluate_condensed", "graph_views", "make_condenser", "summarize_history", "train_on_condensed", "train_whole",
]
