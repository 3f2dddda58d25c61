"""Coreset baselines: keep real training nodes at the same per-class budget as the condensers.

The kept nodes carry their real features; the structure is the real graph's edges among them (binary
weights; usually few at small budgets). Selection per class c, ``n'_c`` nodes (see
:func:`~magkit.condense.base.class_budget`), in an embedding E = Â^K X (SGC propagation of the fused
features, K = ``k``; a training-free stand-in for the trained-GNN embeddings GCond's coresets use):

* ``random``: uniform without replacement;
* ``herding`` (Welling, 2009): greedily add the node that brings the running mean of the chosen embeddings
  closest to the class mean;
* ``kcenter`` (Sener & Savarese, 2018): start from the node nearest the class mean, then repeatedly add the
  node farthest from the chosen set.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import torch
from torch import Tensor

from ..exceptions import ConfigError
from ..train.propagation import normalized_adjacency
from .artifact import CondensedGraph
from .base import Condenser, class_budget, split_training
from .evaluate import graph_views

CORESETS = ("random", "herding", "kcenter")


def herding(e: Tensor, n: int) -> Tensor:
    """Positions of ``n`` rows of ``e`` chosen by herding (greedy mean matching), in order of choice."""
    mu = e.mean(0)
    chosen: list[int] = []
    total = torch.zeros_like(mu)
    avail = torch.ones(e.size(0), dtype=torch.bool)
    for t in range(min(n, e.size(0))):
        cand = (total[None, :] + e) / (t + 1)
        dist = (cand - mu).norm(dim=1).masked_fill(~avail, float("inf"))
        i = int(dist.argmin())
        chosen.append(i)
        avail[i] = False
        total += e[i]
    return torch.tensor(chosen, dtype=torch.long)


def kcenter(e: Tensor, n: int) -> Tensor:
    """Positions of ``n`` rows of ``e`` chosen by greedy k-center, starting nearest the mean."""
    first = int((e - e.mean(0)).norm(dim=1).argmin())
    chosen = [first]
    dmin = (e - e[first]).norm(dim=1)
    for _ in range(min(n, e.size(0)) - 1):
        i = int(dmin.argmax())
        chosen.append(i)
        dmin = torch.minimum(dmin, (e - e[i]).norm(dim=1))
    return torch.tensor(chosen, dtype=torch.long)


class Coreset(Condenser):
    """Keep real training nodes at the condensers' per-class budget (see the module docstring).

    Args:
        ratio (float, optional): the budget r, a share of the training nodes. (default: :obj:`0.01`)
        setting (str, optional): ``"transductive"`` or ``"inductive"``. (default: :obj:`"transductive"`)
        seed (int, optional): seed of the random choices. (default: :obj:`0`)
        method (str, optional): ``"random"``, ``"herding"`` or ``"kcenter"``. (default: :obj:`"random"`)
        k (int, optional): propagation hops K of the embedding Â^K X. (default: :obj:`2`)

    Attributes:
        history_ (dict): set by :meth:`condense`: ``selected`` (the kept nodes' positions in the train
            view, class by class), ``wall_time_s``, ``epochs`` (empty).
    """

    name = "coreset"

    def __init__(
        self,
        *,
        ratio: float = 0.01,
        setting: Literal["transductive", "inductive"] = "transductive",
        seed: int = 0,
        method: Literal["random", "herding", "kcenter"] = "random",
        k: int = 2,
    ):
        self._store(locals())

    def _check_params(self) -> None:
        super()._check_params()
        if self.k < 0:
            raise ConfigError(f"{type(self).__name__}: k={self.k!r}; allowed: an integer >= 0")

    def condense(
        self,
        graph,
        *,
        progress: Callable[[dict], None] | None = None,
        checkpoint: str | Path | None = None,
        resume: bool = False,
    ) -> CondensedGraph:
        """Select the coreset of ``graph`` (split); sets :attr:`history_`. A selection takes milliseconds:
        ``progress`` is called once, at the end; ``checkpoint`` and ``resume`` are accepted and unused."""
        self.check_params()
        p = self.get_params()
        from torch_geometric.utils import subgraph

        t0 = time.perf_counter()
        views = graph_views(graph, p["setting"])
        idx, y_tr = split_training(graph, views)
        tr = views["train"]
        per = class_budget(y_tr, graph.num_classes, p["ratio"])
        gen = torch.Generator().manual_seed(p["seed"])
        emb = tr.x
        if p["method"] != "random":
            adj = normalized_adjacency(tr.edge_index, tr.num_nodes)
            for _ in range(p["k"]):
                emb = adj @ emb
        picks = []
        for c in range(graph.num_classes):
            n = int(per[c])
            if n == 0:
                continue
            pool = idx[y_tr == c]
            if p["method"] == "random":
                pos = torch.randperm(pool.numel(), generator=gen)[:n]
            elif p["method"] == "herding":
                pos = herding(emb[pool], n)
            else:
                pos = kcenter(emb[pool], n)
            chosen = pool[pos]
            if chosen.numel() < n:  # fewer real nodes than the budget: repeat some
                chosen = torch.cat([chosen, chosen[torch.randint(chosen.numel(), (n - chosen.numel(),), generator=gen)]])
            picks.append(chosen)
        nodes = torch.cat(picks)
        uniq, inv = torch.unique(nodes, return_inverse=True)
        ei, _ = subgraph(uniq, tr.edge_index, relabel_nodes=True, num_nodes=tr.num_nodes)
        m = nodes.numel()
        a_u = torch.zeros(uniq.numel(), uniq.numel())
        a_u[ei[0], ei[1]] = 1.0
        adj = a_u[inv][:, inv]
        adj.fill_diagonal_(0)
        feats, start = {}, 0
        for mname in graph.modalities:
            d = graph.feature(mname).size(1)
            feats[mname] = tr.x[nodes, start:start + d]
            start += d
        wall = time.perf_counter() - t0
        history = {"epochs": [], "wall_time_s": wall, "selected": nodes.tolist()[:m]}
        out = self._finish(graph, feats, adj, tr.y[nodes], history, method=self.method, wall_time_s=wall)
        if progress is not None:
            progress({"epoch": 1, "epochs": 1, "wall_time_s": wall})
        return out
