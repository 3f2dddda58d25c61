"""What a search trains its candidates on: a condensed graph S or the whole training graph.

A :class:`Target` holds the training features, labels and structure of one side (S, or the real training
nodes) and the real validation view every candidate is selected on (the protocol of
:func:`~magkit.condense.evaluate_condensed`). Trials never see test labels: the views a target holds carry
the labels of their own split only (every other node's label is -1), and the test view exists only for the
re-training of the best candidates on the whole graph.

Structures are built once per backbone kind and kept for every trial: S's dense Â, the real graph's sparse
Â, and SGC's propagation Â²X, which is computed once and then only read.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from ..condense.evaluate import View, dense_structure, graph_views, train_model


def _only(view: View, labels_of: Tensor, shared: dict | None = None) -> View:
    """``view`` whose labels outside ``labels_of`` (node positions) are -1; it shares ``shared`` as its
    structure cache when given (the views of one transductive graph read the same structure)."""
    y = torch.full_like(view.y, -1)
    y[labels_of] = view.y[labels_of]
    return View(view.x, view.edge_index, y, view.idx, shared if shared is not None else {})


def split_views(graph, setting: str = "transductive") -> dict[str, View]:
    """``{"train", "val", "test"}`` views of ``graph`` (see :func:`~magkit.condense.evaluate.graph_views`),
    each holding only its own split's labels; in the transductive setting they share one structure cache."""
    views = graph_views(graph, setting)
    shared = {} if setting == "transductive" else None
    return {k: _only(v, v.idx, shared) for k, v in views.items()}


def _local_view(view: View, kind: str, num_layers: int) -> View:
    """``view`` cut to what its scored nodes' outputs depend on for a ``kind`` network of depth ``num_layers``
    (see :meth:`Target.val_view`); the view itself when that is most of it."""
    from torch_geometric.utils import k_hop_subgraph

    idx, m = view.idx, int(view.idx.numel())
    empty = torch.empty(2, 0, dtype=torch.long, device=view.x.device)
    pos = torch.arange(m, device=view.x.device)
    if kind == "mlp":
        return View(view.x[idx], empty, view.y[idx], pos)
    if kind == "sgc":
        rows = view.structure("sgc")[idx]
        local = View(rows, empty, view.y[idx], pos)
        local._cache["sgc"] = rows
        return local
    if kind == "appnp":
        return view
    # GraphSAGE's mean and GAT's attention normalise over the receiving node's neighbours: the receptive field
    # (depth hops) holds them all; GCN's and ChebNet's symmetric normalisation also read the degree of the
    # sending node, whole one hop further
    hops = num_layers if kind in ("sage", "gat") else num_layers + 1
    subset, ei, mapping, _ = k_hop_subgraph(idx, hops, view.edge_index, relabel_nodes=True, num_nodes=view.num_nodes)
    if subset.numel() > 0.8 * view.num_nodes:
        return view
    return View(view.x[subset], ei, view.y[subset], mapping)


@dataclass
class Target:
    """One side of a search: the nodes candidates are trained on, and the real views they are scored on.

    Args:
        name (str): ``"whole"``, or how S was made (``srgm@0.01``, the artifact's file name).
        x (Tensor): training features ``[n, d]`` (the fused modality blocks).
        y (Tensor): labels ``[n]`` (-1 for nodes without a training label).
        widths (tuple[int, ...]): the modality blocks' widths, in column order (late fusion).
        num_classes (int): the number of classes C.
        val (View): the real validation view.
        test (View | None): the real test view (only for re-training on the whole graph).
        train_idx (Tensor | None): the training positions of ``x`` (:obj:`None`: every row, as on S).
        adj (Tensor | None): S's dense weighted adjacency ``[n, n]`` (:obj:`None` on the whole graph).
        train_view (View | None): the real training view (the whole graph's structure).
    """

    name: str
    x: Tensor
    y: Tensor
    widths: tuple[int, ...]
    num_classes: int
    val: View
    test: View | None = None
    train_idx: Tensor | None = None
    adj: Tensor | None = None
    train_view: View | None = None
    _structures: dict = field(default_factory=dict, repr=False)
    _val_views: dict = field(default_factory=dict, repr=False)

    @classmethod
    def whole(cls, graph, views: dict[str, View], with_test: bool = False) -> Target:
        """The real training graph (views from :func:`split_views`)."""
        tr = views["train"]
        return cls("whole", tr.x, tr.y, tuple(graph.modality_dims[m] for m in graph.modalities), graph.num_classes,
                   views["val"], views["test"] if with_test else None, train_idx=tr.idx, train_view=tr)

    @classmethod
    def condensed(cls, condensed, views: dict[str, View], name: str) -> Target:
        """A condensed graph S (every synthetic node is a training node); scored on the real ``views["val"]``."""
        from ..exceptions import ConfigError

        xs = torch.cat([condensed.features[m] for m in condensed.modalities], dim=1).float()
        if xs.size(1) != views["val"].x.size(1):
            raise ConfigError(f"condensed features have width {xs.size(1)} but the real graph's fused features have "
                              f"{views['val'].x.size(1)}")
        return cls(name, xs, condensed.y.long(), tuple(condensed.modality_dims[m] for m in condensed.modalities),
                   condensed.num_classes, views["val"], None, adj=condensed.adj.float())

    def val_view(self, kind: str, num_layers: int | None) -> View:
        """The validation view a ``kind`` network of depth ``num_layers`` is scored on: only what the scores of
        the validation nodes depend on (kept per kind and depth). MLP: the validation rows; SGC: the rows of the
        whole graph's Â²X (propagated once); GraphSAGE, GAT: the depth-hop subgraph around the validation nodes
        (their receptive field); GCN, Chebyshev: the (depth + 1)-hop subgraph (one hop beyond the receptive field
        keeps every degree of the symmetric normalisation whole); APPNP (ten propagation steps): the whole
        view."""
        key = (kind, num_layers)
        if key not in self._val_views:
            self._val_views[key] = _local_view(self.val, kind, num_layers or 1)
        return self._val_views[key]

    @property
    def num_nodes(self) -> int:
        return int(self.x.size(0)) if self.train_idx is None else int(self.train_idx.numel())

    def structure(self, kind: str) -> Any:
        """What ``kind`` reads as the training structure, built on first use and kept."""
        if self.train_view is not None:
            return self.train_view.structure(kind)
        if kind not in self._structures:
            self._structures[kind] = dense_structure(kind, self.adj, self.x)
        return self._structures[kind]

    def train(self, config: dict[str, Any], *, epochs: int = 300, eval_every: int = 10, patience: int | None = 10,
              seed: int = 0, progress=None) -> dict[str, float]:
        """Train one fresh candidate ``config`` (see :mod:`magkit.search.space`) and select it on the real
        validation view; returns its val (and, with a test view, test) accuracy and macro-F1 and its times."""
        kind = config["backbone"]
        return train_model(
            kind, self.x, self.structure(kind), self.y, self.train_idx, self.val_view(kind, config["num_layers"]), self.test,
            num_classes=self.num_classes, epochs=epochs, lr=config["lr"], weight_decay=config["weight_decay"],
            hidden=config["hidden"] or 1, dropout_p=config["dropout"] or 0.0, num_layers=config["num_layers"] or 1,
            eval_every=eval_every, patience=patience, seed=seed,
            widths=self.widths if config["fusion"] == "late" else None, progress=progress)

    def __getstate__(self) -> dict:
        """Pickled (for a Ray worker) without the structure caches, which the worker rebuilds."""
        state = dict(self.__dict__)
        state["_structures"], state["_val_views"] = {}, {}
        for k in ("val", "test", "train_view"):
            v = state[k]
            if v is not None:
                state[k] = View(v.x, v.edge_index, v.y, v.idx)
        return state
