"""The multimodal attributed graph container and its validation.

A :class:`MultimodalGraph` is a :class:`torch_geometric.data.Data` whose node features come as one block per
modality (``x_text``, ``x_image``, ...; float32, ``[N, d_m]``) with a per-node presence mask
(``modality_mask``, bool ``[N, M]``, columns in the order of :attr:`MultimodalGraph.modalities`).
Rows of an absent modality are stored as zeros, but they are *not* features: every model in magkit reads
``modality_mask`` and lets an absent modality contribute nothing for that node.

Other fields:

* ``edge_index`` (long ``[2, E]``): undirected (both directions stored), coalesced, no self-loops.
* ``y`` (long ``[N]``): class ids in ``0..C-1``; ``-1`` marks a node without a label (allowed only outside
  every split).
* ``train_mask`` / ``val_mask`` / ``test_mask`` (bool ``[N]``): disjoint, non-empty.
* ``gt_quality`` (float ``[N, M]``) / ``gt_biased`` (bool ``[N, M]``): optional ground truth of per-node
  modality quality written by the semi-synthetic generators.
* ``meta``: a dict of graph-level facts (modality names, class count, class names, dataset name). It is
  replaced, never mutated in place, so subgraphs may share it safely.

The container works with PyG transforms and :meth:`~torch_geometric.data.Data.subgraph`.
"""

from __future__ import annotations

import hashlib
import logging
import weakref
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor
from torch_geometric.data import Data

from ..exceptions import DatasetError, GraphValidationError

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")

#: the most classes a graph may declare; readers refuse larger class counts before allocating anything
MAX_CLASSES = 100_000


class MultimodalGraph(Data):
    """A graph whose nodes carry one feature block per modality.

    Args:
        features: ``{modality: tensor [N, d_m]}`` in the order the modalities should be registered.
        edge_index: ``[2, E]`` node pairs; made undirected and coalesced with self-loops removed unless
            ``canonicalize_edges=False``.
        y: ``[N]`` labels (``-1`` = unknown).
        num_classes: number of classes; inferred as ``max(y) + 1`` when omitted.
        modality_mask: ``{modality: bool [N]}`` or a bool tensor ``[N, M]``; all present when omitted.
        class_names: optional names of the classes.
        name: dataset name used in reports.
        canonicalize_edges: symmetrise, coalesce and drop self-loops (default ``True``).
        **kwargs: any other attribute (split masks, ground truth, ...).
    """

    def __init__(
        self,
        features: Mapping[str, Tensor] | None = None,
        edge_index: Tensor | None = None,
        y: Tensor | None = None,
        *,
        num_classes: int | None = None,
        modality_mask: Mapping[str, Tensor] | Tensor | None = None,
        class_names: Sequence[str] | None = None,
        name: str = "graph",
        canonicalize_edges: bool = True,
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        if features is None:  # PyG internals (copy, batching) construct empty instances
            return
        if not features:
            raise GraphValidationError("features", "at least one modality is required", value="{}")
        mods = tuple(features)
        n = None
        for m, x in features.items():
            if not (isinstance(x, Tensor) or _is_mapped(x)) or x.dim() != 2:
                raise GraphValidationError(
                    f"x_{m}", "must be a 2-D tensor [num_nodes, dim]",
                    value=getattr(x, "shape", type(x).__name__),
                )
            n = x.size(0) if n is None else n
            self[f"x_{m}"] = x if _is_mapped(x) else x.to(torch.float32)
        self.num_nodes = int(y.numel()) if y is not None else int(n)
        if edge_index is None:
            edge_index = torch.empty(2, 0, dtype=torch.long)
        edge_index = _as_ids(edge_index, "edge_index", "node ids")
        if canonicalize_edges and edge_index.dim() == 2 and edge_index.size(0) == 2 and edge_index.numel():
            if edge_index.min() >= 0 and edge_index.max() < self.num_nodes:
                edge_index = to_undirected(edge_index, self.num_nodes)
        self.edge_index = edge_index
        if y is not None:
            self.y = _as_ids(y, "y", "class ids (-1 = unknown)")
        if num_classes is None:
            num_classes = int(self.y.max()) + 1 if y is not None and self.y.numel() else 0
        if isinstance(modality_mask, Tensor):
            mask = modality_mask.to(torch.bool)
        else:
            cols = []
            for m in mods:
                if modality_mask is not None and m in modality_mask:
                    cols.append(torch.as_tensor(modality_mask[m], dtype=torch.bool))
                else:
                    cols.append(torch.ones(self.num_nodes, dtype=torch.bool))
            mask = torch.stack(cols, dim=1)
        self.modality_mask = mask
        self.meta = {
            "modalities": mods,
            "num_classes": int(num_classes),
            "class_names": tuple(class_names) if class_names is not None else None,
            "name": name,
        }

    # ------------------------------------------------------------------ graph-level facts
    def _meta(self) -> dict:
        meta = self._store.get("meta") if hasattr(self, "_store") else None
        if not isinstance(meta, dict):
            raise GraphValidationError("meta", "this graph has no multimodal metadata; build it with MultimodalGraph(...)")
        return meta

    def _set_meta(self, **updates: Any) -> None:
        meta = dict(self._meta())
        meta.update(updates)
        self.meta = meta

    @property
    def modalities(self) -> tuple[str, ...]:
        """The registered modality names, in column order of ``modality_mask``."""
        return tuple(self._meta()["modalities"])

    @property
    def num_classes(self) -> int:
        return int(self._meta()["num_classes"])

    @property
    def class_names(self) -> tuple[str, ...] | None:
        return self._meta().get("class_names")

    @property
    def name(self) -> str:
        return str(self._meta().get("name", "graph"))

    @name.setter
    def name(self, value: str) -> None:
        self._set_meta(name=str(value))

    @property
    def modality_dims(self) -> dict[str, int]:
        return {m: int(self[f"x_{m}"].size(1)) for m in self.modalities}

    def feature(self, modality: str) -> Tensor:
        """The feature block of ``modality`` (``[N, d_m]``): a float32 tensor, or on a memory-mapped graph a
        :class:`~magkit.data.mapped.MappedFeatures` (``x[idx]`` gathers float32 rows; ``x.materialize()`` reads
        all of it)."""
        self._check_modality(modality)
        return self[f"x_{modality}"]

    @property
    def is_mapped(self) -> bool:
        """Whether any feature block stays on disk (memory-mapped, read in chunks)."""
        return any(_is_mapped(self.get(f"x_{m}")) for m in self.modalities)

    def presence(self, modality: str) -> Tensor:
        """Bool ``[N]``: which nodes have ``modality``."""
        self._check_modality(modality)
        return self.modality_mask[:, self.modalities.index(modality)]

    def _check_modality(self, modality: str) -> None:
        if modality not in self.modalities:
            raise GraphValidationError(
                "modality", "unknown modality", value=repr(modality), allowed=", ".join(self.modalities)
            )

    def fused(self, modalities: Iterable[str] | None = None) -> Tensor:
        """Early fusion: the concatenation of the chosen modality blocks (absent rows stay zero)."""
        mods = list(modalities) if modalities is not None else list(self.modalities)
        return torch.cat([_dense(self.feature(m)) * self.presence(m).unsqueeze(1) for m in mods], dim=1)

    def add_modality(self, modality: str, x: Tensor, present: Tensor | None = None) -> None:
        """Register a new modality block (or replace an existing one)."""
        x = x.to(torch.float32)
        if x.dim() != 2 or x.size(0) != self.num_nodes:
            raise GraphValidationError(
                f"x_{modality}", "row count differs from the node count",
                value=tuple(x.shape), allowed=f"[{self.num_nodes}, d]",
            )
        present = torch.ones(self.num_nodes, dtype=torch.bool) if present is None else present.to(torch.bool)
        mods = self.modalities
        self[f"x_{modality}"] = x
        if modality in mods:
            mask = self.modality_mask.clone()
            mask[:, mods.index(modality)] = present
            self.modality_mask = mask
        else:
            self.modality_mask = torch.cat([self.modality_mask, present.unsqueeze(1)], dim=1)
            self._set_meta(modalities=mods + (modality,))

    def split_index(self, split: str) -> Tensor:
        """Node indices of ``split`` (``"train"``, ``"val"``, ``"test"``)."""
        if split not in SPLITS:
            raise GraphValidationError("split", "unknown split", value=repr(split), allowed=", ".join(SPLITS))
        mask = self.get(f"{split}_mask")
        if mask is None:
            raise GraphValidationError(f"{split}_mask", "this graph has no such split; apply one with magkit.data.apply_split")
        return mask.nonzero(as_tuple=True)[0]

    @property
    def num_undirected_edges(self) -> int:
        return int(self.edge_index.size(1)) // 2

    def checksum(self) -> str:
        """A sha256 over structure, labels, features, presence and splits (identifies the exact data)."""
        h = hashlib.sha256()
        keys = ["edge_index", "y", "modality_mask", "train_mask", "val_mask", "test_mask"]
        keys += [f"x_{m}" for m in self.modalities]
        for key in keys:
            value = self.get(key)
            if value is None:
                continue
            h.update(key.encode())
            if _is_mapped(value):  # the same float32 bytes, streamed chunk by chunk
                value.update_hash(h)
                continue
            h.update(value.detach().cpu().contiguous().numpy().tobytes())
        return h.hexdigest()[:16]

    def subgraph(self, subset: Tensor) -> MultimodalGraph:
        """PyG's induced subgraph; memory-mapped blocks are gathered into float32 tensors for ``subset``."""
        sub = super().subgraph(subset)
        for m in self.modalities:
            x = self.get(f"x_{m}")
            if _is_mapped(x):
                sub[f"x_{m}"] = x[subset]
        return sub

    def __repr__(self) -> str:  # keep PyG's style, with the dataset name
        return f"{self.name}: " + super().__repr__()


def _is_mapped(x: Any) -> bool:
    """A disk-backed lazy block (:class:`magkit.data.mapped.MappedFeatures`), recognised without importing it."""
    return bool(getattr(x, "is_mapped_block", False))


def _dense(x: Any) -> Tensor:
    return x.materialize() if _is_mapped(x) else x


def one_line(exc: BaseException, limit: int = 200) -> str:
    """An exception's message as one line of at most ``limit`` characters (for error messages that quote it)."""
    return " ".join(str(exc).split())[:limit] or type(exc).__name__


def _as_ids(value: Any, field: str, what: str) -> Tensor:
    """``value`` as an int64 tensor; floating values must be whole numbers (never truncated)."""
    t = torch.as_tensor(value)
    if t.is_floating_point() or t.is_complex():
        if t.is_complex() or not bool(torch.isfinite(t).all()) or not bool((t == t.round()).all()):
            bad = t[~torch.isfinite(t) | (t != t.round())] if not t.is_complex() else t.flatten()
            raise GraphValidationError(
                field, f"{bad.numel()} non-integer value(s) would be truncated", value=_short(bad),
                allowed=f"whole numbers as {what}",
            )
    elif t.dtype == torch.bool:
        raise GraphValidationError(field, "bool values are not ids", value=t.dtype, allowed=what)
    return t.to(torch.long)


# ---------------------------------------------------------------------- structure helpers
def to_undirected(edge_index: Tensor, num_nodes: int, remove_self_loops: bool = True) -> Tensor:
    """Symmetrise and coalesce ``edge_index`` (sorted by source then target); drop self-loops by default."""
    ei = torch.as_tensor(edge_index, dtype=torch.long)
    if remove_self_loops:
        ei = ei[:, ei[0] != ei[1]]
    both = torch.cat([ei, ei.flip(0)], dim=1)
    key = torch.unique(both[0] * num_nodes + both[1])
    return torch.stack([key // num_nodes, key % num_nodes])


#: edges per step of the chunked checks of :func:`is_undirected_coalesced`
EDGE_CHECK_CHUNK = 1 << 20

# id(edge_index) -> (weak reference, version counter, data pointer, shape, stride, num_nodes, answer)
_COALESCED: dict[int, tuple] = {}


def _coalesced_state(ei: Tensor, num_nodes: int) -> tuple:
    return ei._version, ei.data_ptr(), tuple(ei.shape), tuple(ei.stride()), int(num_nodes)


def is_undirected_coalesced(edge_index: Tensor, num_nodes: int) -> bool:
    """Whether ``edge_index`` is the canonical form :func:`to_undirected` returns: sorted by (source, target),
    without duplicates or self-loops, and symmetric (every edge ``(u, v)`` has its reverse ``(v, u)``).

    The check is exact and runs in chunks of :data:`EDGE_CHECK_CHUNK` edges: sortedness and uniqueness are a
    strictly increasing key ``u N + v``; symmetry of a sorted, duplicate-free list is that every reverse key
    ``v N + u`` occurs among the forward keys (the reversal is a bijection on ``E`` distinct pairs, so
    ``E`` hits mean equal sets), found by binary search of each sorted chunk of reverse keys. Memory: the
    forward keys (8 bytes per edge) and one chunk, instead of the sorted copies (with their permutations) of a
    sort-based comparison.

    The answer is cached per tensor object until the tensor changes (its version counter, storage, shape or
    stride), so the checks of one graph by ``load``, :func:`validate` and the neighbour sampler run once. Torch
    operations in place bump the version counter; writes through a NumPy view of the tensor do not, so a list
    edited that way needs a new tensor (``edge_index.clone()``) to be checked again.

    Args:
        edge_index: int64 ``[2, E]`` node pairs with ids in ``0..num_nodes-1``.
        num_nodes: the node count ``N``.
    """
    ei = edge_index
    state = _coalesced_state(ei, num_nodes)
    hit = _COALESCED.get(id(ei))
    if hit is not None and hit[0]() is ei and hit[1:-1] == state:
        return hit[-1]
    answer = _check_undirected_coalesced(ei, int(num_nodes))
    for k in [k for k, v in _COALESCED.items() if v[0]() is None]:  # forget tensors that no longer exist
        del _COALESCED[k]
    _COALESCED[id(ei)] = (weakref.ref(ei), *state, answer)
    return answer


def _sorted_keys(a: Tensor, b: Tensor, n: int) -> Tensor:
    """The keys ``a N + b`` in increasing order (sorted in place on the CPU: no permutation is allocated)."""
    key = a * n + b
    if key.device.type == "cpu":
        key.numpy().sort()
        return key
    return torch.sort(key).values


def _check_undirected_coalesced(ei: Tensor, n: int) -> bool:
    e = ei.size(1)
    if e == 0:
        return True
    src, dst = ei[0], ei[1]
    step = EDGE_CHECK_CHUNK
    for a in range(0, e, step):
        lo = max(a - 1, 0)  # one edge of overlap: the order across chunk boundaries
        s, d = src[lo:a + step], dst[lo:a + step]
        if bool((s == d).any()):
            return False
        k = s * n + d
        if not bool((k[1:] > k[:-1]).all()):
            return False
    key = src * n + dst  # sorted and unique
    for a in range(0, e, step):
        rev = torch.sort(dst[a:a + step] * n + src[a:a + step]).values
        pos = torch.searchsorted(key, rev).clamp_(max=e - 1)
        if not torch.equal(key[pos], rev):
            return False
    return True


def canonical_edges(edge_index: Tensor, num_nodes: int, source: str = "edges") -> tuple[Tensor, dict[str, int]]:
    """:func:`to_undirected` that also counts (and logs) what it changed.

    Returns:
        ``(edge_index, counts)`` with ``counts = {"self_loops": ..., "duplicates": ..., "reverse_added": ...}``:
        self-loops dropped, repeated directed edges merged, and reverse directions added.
    """
    ei = torch.as_tensor(edge_index, dtype=torch.long)
    if ei.numel() == 0:
        return torch.empty(2, 0, dtype=torch.long), {"self_loops": 0, "duplicates": 0, "reverse_added": 0}
    loops = ei[0] == ei[1]
    rest = ei[:, ~loops]
    distinct = int(torch.unique(rest[0] * num_nodes + rest[1]).numel()) if rest.numel() else 0
    out = to_undirected(rest, num_nodes, remove_self_loops=False)
    counts = {"self_loops": int(loops.sum()), "duplicates": int(rest.size(1)) - distinct,
              "reverse_added": int(out.size(1)) - distinct}
    if counts["self_loops"] or counts["duplicates"]:
        log.info("%s: dropped %d self-loop(s) and %d duplicate edge(s); added %d reverse edge(s)", source,
                 counts["self_loops"], counts["duplicates"], counts["reverse_added"])
    return out, counts


def check_class_count(num_classes: int, num_nodes: int, source: str, field: str = "label") -> int:
    """Refuse a class count that cannot belong to a graph of ``num_nodes`` nodes before anything is allocated.

    A graph with ``N`` nodes and every class in its training split has at most ``N`` classes; any count above
    ``min(N, MAX_CLASSES)`` is a corrupted label. Raises :class:`~magkit.exceptions.DatasetError` naming
    ``source`` (a file), ``field`` and the value.
    """
    cap = min(int(num_nodes), MAX_CLASSES)
    if int(num_classes) > cap:
        raise DatasetError(
            f"{source}: {field}: class id {int(num_classes) - 1} implies {int(num_classes)} classes; allowed: at "
            f"most {cap} classes (min(number of nodes {num_nodes}, MAX_CLASSES {MAX_CLASSES}))"
        )
    return int(num_classes)


def edge_homophily(edge_index: Tensor, y: Tensor) -> float:
    """Share of edges whose endpoints have the same label (edges with an unknown label are skipped)."""
    src, dst = edge_index
    keep = (y[src] >= 0) & (y[dst] >= 0)
    if not bool(keep.any()):
        return float("nan")
    return float((y[src][keep] == y[dst][keep]).float().mean())


# ---------------------------------------------------------------------- validation
def _short(t: Tensor, k: int = 5) -> str:
    vals = t.flatten()[:k].tolist()
    more = ", ..." if t.numel() > k else ""
    return "[" + ", ".join(str(v) for v in vals) + more + "]"


def nonfinite_problem(x: Tensor) -> tuple[str, str] | None:
    """``(message, offending rows)`` when a 2-D feature block holds NaN/Inf values, else ``None``."""
    if _is_mapped(x):  # read chunk by chunk (cached while the file is unchanged)
        return x.nonfinite_problem()
    bad = ~torch.isfinite(x)
    if not bool(bad.any()):
        return None
    rows = bad.any(dim=1).nonzero(as_tuple=True)[0]
    return f"{int(bad.sum())} NaN/Inf value(s) in {rows.numel()} row(s)", f"rows {_short(rows)}"


def validate(graph: MultimodalGraph, require_splits: bool = True) -> MultimodalGraph:
    """Check every invariant of a multimodal graph; return it unchanged or raise GraphValidationError.

    Checked: one feature block per registered modality, 2-D float, one row per node, finite; the presence
    mask's shape; the class count (at most one class per node, at most :data:`MAX_CLASSES`); labels in range;
    edge indices in range, non-negative, undirected, without duplicates or self-loops; splits bool, non-empty,
    pairwise disjoint, over labelled nodes only; every class present in the training split.
    """
    if not isinstance(graph, MultimodalGraph):
        raise GraphValidationError("graph", "expected a magkit MultimodalGraph", value=type(graph).__name__)
    mods = graph.modalities
    if not mods:
        raise GraphValidationError("modalities", "no modality registered", allowed="at least one")
    n = graph.num_nodes
    if n is None or n <= 0:
        raise GraphValidationError("num_nodes", "the graph has no nodes", value=n, allowed=">= 1")

    for m in mods:
        key = f"x_{m}"
        x = graph.get(key)
        if x is None:
            raise GraphValidationError(key, f"modality {m!r} is registered but has no feature block")
        if x.dim() != 2:
            raise GraphValidationError(key, "must be 2-D [num_nodes, dim]", value=tuple(x.shape))
        if x.size(0) != n:
            raise GraphValidationError(
                key, "feature row count differs from the node count", value=x.size(0), allowed=f"{n} rows"
            )
        if not x.is_floating_point():
            raise GraphValidationError(key, "features must be floating point", value=x.dtype, allowed="float32")
        problem = nonfinite_problem(x)
        if problem:
            raise GraphValidationError(key, problem[0], value=problem[1], allowed="finite values")

    mask = graph.get("modality_mask")
    if mask is None or tuple(mask.shape) != (n, len(mods)) or mask.dtype != torch.bool:
        raise GraphValidationError(
            "modality_mask", "presence mask has the wrong shape or dtype",
            value=None if mask is None else f"{tuple(mask.shape)} {mask.dtype}",
            allowed=f"bool [{n}, {len(mods)}]",
        )

    c = graph.num_classes
    y = graph.get("y")
    if y is None:
        raise GraphValidationError("y", "labels are missing")
    if y.dim() != 1 or y.numel() != n:
        raise GraphValidationError("y", "labels must be 1-D with one entry per node", value=tuple(y.shape), allowed=f"[{n}]")
    if y.dtype != torch.long:
        raise GraphValidationError("y", "labels must be int64 class ids", value=y.dtype, allowed="torch.long")
    if c < 1 or c > min(n, MAX_CLASSES):
        raise GraphValidationError("num_classes", "out of range", value=c,
                                   allowed=f"1..{min(n, MAX_CLASSES)} (at most one class per node)")
    bad = (y < -1) | (y >= c)
    if bool(bad.any()):
        raise GraphValidationError(
            "y", f"{int(bad.sum())} label(s) out of range", value=_short(y[bad]),
            allowed=f"0..{c - 1} (or -1 for an unlabelled node outside every split)",
        )

    ei = graph.get("edge_index")
    if ei is None or ei.dim() != 2 or ei.size(0) != 2:
        raise GraphValidationError("edge_index", "must have shape [2, E]", value=None if ei is None else tuple(ei.shape))
    if ei.dtype != torch.long:
        raise GraphValidationError("edge_index", "must be int64", value=ei.dtype, allowed="torch.long")
    if ei.numel():
        if int(ei.min()) < 0:
            raise GraphValidationError("edge_index", "negative node index", value=int(ei.min()), allowed=f"0..{n - 1}")
        if int(ei.max()) >= n:
            raise GraphValidationError("edge_index", "node index out of range", value=int(ei.max()), allowed=f"0..{n - 1}")
    if ei.numel() and not is_undirected_coalesced(ei, n):  # the canonical form passes in O(E) memory
        loops = int((ei[0] == ei[1]).sum())
        fwd = _sorted_keys(ei[0], ei[1], n)
        dups = int((fwd[1:] == fwd[:-1]).sum())
        if loops or dups:
            raise GraphValidationError(
                "edge_index", f"{dups} duplicate edge(s) and {loops} self-loop(s)",
                allowed="unique edges without self-loops; canonicalise with "
                        "magkit.data.to_undirected(edge_index, num_nodes)",
            )
        if not torch.equal(fwd, _sorted_keys(ei[1], ei[0], n)):
            raise GraphValidationError(
                "edge_index", "graph is not undirected (some edge lacks its reverse)",
                allowed="both directions of every edge; use magkit.data.to_undirected",
            )

    masks = {}
    for s in SPLITS:
        m = graph.get(f"{s}_mask")
        if m is None:
            if require_splits:
                raise GraphValidationError(f"{s}_mask", "split is missing", allowed="a bool [N] mask (see magkit.data.apply_split)")
            continue
        if m.dtype != torch.bool or tuple(m.shape) != (n,):
            raise GraphValidationError(f"{s}_mask", "must be a bool mask over nodes", value=f"{tuple(m.shape)} {m.dtype}", allowed=f"bool [{n}]")
        if not bool(m.any()):
            raise GraphValidationError(f"{s}_mask", "split is empty", value="0 nodes", allowed="at least one node")
        if bool((y[m] < 0).any()):
            raise GraphValidationError(f"{s}_mask", "split contains unlabelled nodes (y = -1)", value=int((y[m] < 0).sum()))
        masks[s] = m
    names = list(masks)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            both = masks[a] & masks[b]
            if bool(both.any()):
                idx = both.nonzero(as_tuple=True)[0]
                raise GraphValidationError(
                    f"{a}_mask/{b}_mask", f"splits overlap on {idx.numel()} node(s)", value=f"nodes {_short(idx)}",
                    allowed="disjoint splits",
                )
    if "train" in masks:
        counts = torch.bincount(y[masks["train"]], minlength=c)
        absent = (counts == 0).nonzero(as_tuple=True)[0]
        if absent.numel():
            raise GraphValidationError(
                "train_mask", f"{absent.numel()} class(es) absent from training", value=f"classes {_short(absent, 10)}",
                allowed="every class 0..C-1 with at least one training node",
            )
    return graph


# ---------------------------------------------------------------------- summaries
def describe(graph: MultimodalGraph) -> dict[str, Any]:
    """Facts about a graph for `magkit data info` and for results files."""
    n = graph.num_nodes
    y = graph.y
    labelled = y >= 0
    counts = torch.bincount(y[labelled], minlength=graph.num_classes)
    deg = torch.bincount(graph.edge_index[0], minlength=n) if graph.edge_index.numel() else torch.zeros(n)
    info: dict[str, Any] = {
        "name": graph.name,
        "nodes": n,
        "edges_undirected": graph.num_undirected_edges,
        "edges_directed": int(graph.edge_index.size(1)),
        "mean_degree": float(deg.float().mean()),
        "isolated_nodes": int((deg == 0).sum()),
        "classes": graph.num_classes,
        "labelled_nodes": int(labelled.sum()),
        "homophily": edge_homophily(graph.edge_index, y),
        "class_sizes": counts.tolist(),
        "class_balance": float(counts.min() / counts.max()) if counts.max() > 0 else float("nan"),
        "modalities": {
            m: {"dim": graph.modality_dims[m], "present": int(graph.presence(m).sum())}
            for m in graph.modalities
        },
        "splits": {s: int(graph[f"{s}_mask"].sum()) for s in SPLITS if graph.get(f"{s}_mask") is not None},
        "checksum": graph.checksum(),
    }
    if graph.get("gt_quality") is not None:
        info["ground_truth"] = {
            m: {
                "mean_quality": float(graph.gt_quality[:, j].mean()),
                "biased_fraction": float(graph.gt_biased[:, j].float().mean()) if graph.get("gt_biased") is not None else None,
            }
            for j, m in enumerate(graph.modalities)
        }
    return info
