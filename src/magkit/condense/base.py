"""The base of every condenser: the shared parameters, the per-class budget, the artifact with its provenance.

A condenser has one verb, ``condense(graph) -> CondensedGraph``; it follows magkit's estimator protocol
(:mod:`magkit.base`): typed keyword parameters, ``get_params`` / ``set_params``, a type and range check at
the start of ``condense``, and learned state with a trailing underscore (``history_``) set only by
``condense``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor

from ..base import Estimator
from ..exceptions import ConfigError, DatasetError
from ..functional.ops import release_buffers
from .artifact import CondensedGraph
from .provenance import condensation_meta


class Condenser(Estimator):
    """Base of every condenser (gradient matching, coresets).

    Args:
        ratio (float, optional): the budget, synthetic nodes as a share r of the training nodes, in
            (0, 1]; per class see :func:`class_budget`. (default: :obj:`0.01`)
        setting (str, optional): ``"transductive"`` (condense from the whole graph, score on its val/test
            nodes) or ``"inductive"`` (condense from the train-induced subgraph; val and test are their own
            induced subgraphs). (default: :obj:`"transductive"`)
        seed (int, optional): the seed of every random draw of the condensation. (default: :obj:`0`)
    """

    name = "condenser"

    def __init__(self, *, ratio: float = 0.01, setting: Literal["transductive", "inductive"] = "transductive",
                 seed: int = 0):
        self._store(locals())

    def _check_params(self) -> None:
        if not (0 < self.ratio <= 1):
            raise ConfigError(f"{type(self).__name__}: ratio={self.ratio!r}; allowed: a share of the training "
                              "nodes in (0, 1], e.g. 0.01")

    def condense(
        self,
        graph,
        *,
        progress: Callable[[dict], None] | None = None,
        checkpoint: str | Path | None = None,
        resume: bool = False,
    ) -> CondensedGraph:  # pragma: no cover - abstract
        """Condense the split ``graph`` into a :class:`CondensedGraph` and set ``history_``."""
        raise NotImplementedError

    def _finish(self, graph, features: dict[str, Tensor], adj: Tensor, y: Tensor, history: dict, *,
                method: str | None = None, **extra: Any) -> CondensedGraph:
        """The validated artifact with its provenance (``meta``); sets ``history_``; frees the training passes'
        reused dropout buffers (:func:`magkit.functional.ops.release_buffers`)."""
        release_buffers()
        cg = CondensedGraph(features, adj, y, num_classes=graph.num_classes, modalities=graph.modalities,
                            class_names=graph.meta.get("class_names"))
        cg.meta = condensation_meta(graph, method=method or self.name, config=self.get_params(), seed=self.seed,
                                    ratio=self.ratio, history=history, **extra)
        self.history_ = history
        return cg.validate()


def class_budget(y_train: Tensor, num_classes: int, ratio: float) -> Tensor:
    """Synthetic nodes per class: n'_c = max(⌊n_c·r⌋, 1) for the classes present (0 for absent ones); the
    largest class takes what is left of ⌊N_train·r⌋ (never below its own share).

    Args:
        y_train (Tensor): labels of the training nodes ``[N_train]``.
        num_classes (int): the class count C.
        ratio (float): the budget r.

    Returns:
        int64 ``[C]``.
    """
    counts = torch.bincount(y_train, minlength=num_classes)
    per = torch.where(counts > 0, (counts.double() * ratio).floor().long().clamp_min(1), torch.zeros_like(counts))
    total = int(math.floor(int(counts.sum()) * ratio))
    big = int(counts.argmax())
    per[big] += max(0, total - int(per.sum()))
    return per


def split_training(graph, views: dict) -> tuple[Tensor, Tensor]:
    """Training positions in the train view and their labels (a :class:`DatasetError` if there are none)."""
    tr = views["train"]
    idx = tr.idx
    if idx.numel() == 0:
        raise DatasetError(f"{graph.name}: no training nodes to condense from")
    return idx, tr.y[idx]
