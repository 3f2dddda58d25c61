"""Architecture and hyper-parameter search on condensed graphs (GCond, Jin et al., ICLR 2022; SR-GM).

``magkit.search(data, space, out, condenser="srgm", ratio=0.01)`` trains every candidate of ``space`` on a
condensed graph S, ranks them by the whole graph's validation accuracy and re-trains the best on the whole
graph (:func:`~magkit.search.runner.search`; the package itself is callable). :func:`compare` measures how
well the ranking on S agrees with the ranking on the whole graph; :func:`load_space` reads a space.
"""

from __future__ import annotations

import sys
import types

from .compare import compare, trial_scores
from .runner import SearchResult, rank, search
from .space import KEYS, SearchSpace, config_key, load_space
from .target import Target

__all__ = ["KEYS", "SearchResult", "SearchSpace", "Target", "compare", "config_key", "load_space", "rank", "search",
           "trial_scores"]


class _CallableModule(types.ModuleType):
    """``magkit.search(...)`` is :func:`~magkit.search.runner.search` (``magkit.search.compare`` etc. stay
    reachable as the package's names)."""

    def __call__(self, *args, **kwargs) -> SearchResult:
        return search(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
