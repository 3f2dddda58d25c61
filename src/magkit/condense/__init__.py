"""Graph condensation: synthesise a tiny graph that trains GNNs almost as well as the real one.

Every condenser (:class:`SRGM` and SR-GM-X, :class:`GCond` and GCond-X, :class:`Coreset`) returns a
:class:`CondensedGraph`, the artifact that is saved and loaded as one safetensors file (see
:mod:`magkit.condense.artifact` for the format) and evaluated on the real graph with
:func:`evaluate_condensed`. :func:`make_condenser` builds one by its registered name.
"""

from .artifact import FORMAT_VERSION, CondensedGraph
from .base import Condenser, class_budget
from .coreset import CORESETS, Coreset
from .evaluate import EVAL_BACKBONES, evaluate_condensed, graph_views, train_on_condensed, train_whole
from .functional_net import FunctionalNet
from .gcond import GCond
from .matching import GradientMatching
from .problem import MatchingProblem, batched_distance, damping_term
from .provenance import condensation_meta, summarize_history
from .registry import REGISTRY, condenser_names, make_condenser
from .srgm import SRGM

__all__ = [
    "CORESETS", "EVAL_BACKBONES", "FORMAT_VERSION", "REGISTRY", "SRGM", "CondensedGraph", "Condenser", "Coreset",
    "FunctionalNet", "GCond", "GradientMatching", "MatchingProblem", "batched_distance", "class_budget",
    "condensation_meta", "condenser_names", "damping_term", "evaluate_condensed", "graph_views", "make_condenser",
    "summarize_history", "train_on_condensed", "train_whole",
]
