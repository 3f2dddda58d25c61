"""The condensed graph: the artifact every condenser (SR-GM, GCond, coresets) returns, saves and loads.

A :class:`CondensedGraph` is a tiny synthetic graph ``S = (A', X', Y')`` that stands in for a real
multimodal graph when training a GNN:

* ``features``: ``{modality: float32 [n', d_m]}``, one synthetic block per modality, in the real graph's
  modality order;
* ``adj``: float32 ``[n', n']``, the dense weighted synthetic adjacency: symmetric (within ``1e-5``),
  non-negative, finite, zero diagonal. Structure-free condensers (GCond-X, coresets without structure)
  store zeros;
* ``y``: int64 ``[n']``, class ids in ``0..C-1``, every class with at least one synthetic node;
* ``modalities``, ``num_classes``, ``class_names``: the facts of the real graph it was condensed from;
* ``meta``: how it was made (see :func:`~magkit.condense.provenance.condensation_meta`): method, config, seed, ratio, dataset name
  and checksum, package versions, creation time, a summary of the condensation history.

File format (version :data:`FORMAT_VERSION`)
--------------------------------------------
One safetensors file (conventionally ``*.safetensors``) holding the tensors ``x.<modality>`` (F32
``[n', d_m]``, one per modality), ``adj`` (F32 ``[n', n']``) and ``y`` (I64 ``[n']``). The safetensors
header's string-to-string ``__metadata__`` map holds one key, ``"magkit"``, whose value is a JSON object::

    {"format": "magkit.condensed_graph", "format_version": 2,
     "num_nodes": n', "modalities": ["text", "image"], "dims": {"text": 512, "image": 512},
     "num_classes": C, "class_names": [...] | null,
     "meta": {...},            # CondensedGraph.meta, JSON form
     "stats": {...}}           # CondensedGraph.stats() at save time (informational, not checked on load)

and the key ``"magkit.sha256"`` the sha256 content digest of that JSON and of every tensor's name, dtype,
shape and bytes (:mod:`magkit.integrity`).

Files are written atomically (a temporary file in the target folder, ``fsync``, ``os.replace``), so a crash
or a full disk never leaves a partial artifact nor replaces a previous one. Loading parses the safetensors
header and JSON only: no pickle, no code execution. Every problem (not a safetensors file, truncated, a
content digest that does not match, foreign file, wrong version, tensors missing, extra, of the wrong shape
or dtype, invariants broken) raises :class:`~magkit.exceptions.DatasetError` (for corruption its subclass
:class:`~magkit.integrity.IntegrityError`) naming the file, the field, the bad value and what is allowed.
"""

from __future__ import annotations

import dataclasses
import enum
import logging
import numbers
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..exceptions import DatasetError

log = logging.getLogger(__name__)

FORMAT = "magkit.condensed_graph"
FORMAT_VERSION = 2
METADATA_KEY = "magkit"

#: |A_ij - A_ji| allowed by :meth:`CondensedGraph.validate`.
SYMMETRY_TOL = 1e-5
#: A pair counts as an edge in :meth:`CondensedGraph.stats` when its weight exceeds this.
EDGE_THRESHOLD = 1e-3
#: Laplacian eigenvalues below this count as zero (one per connected component) in ``stats``.
ZERO_EIG_TOL = 1e-6

_DTYPES = {"x": ("F32", torch.float32), "adj": ("F32", torch.float32), "y": ("I64", torch.long)}


def _problem(field: str, message: str, value: object = None, allowed: str | None = None) -> DatasetError:
    text = f"{field}: {message}"
    if value is not None:
        text += f" (got {value})"
    if allowed:
        text += f"; allowed: {allowed}"
    return DatasetError(text)


def _short(values: Sequence | Tensor, k: int = 5) -> str:
    vals = values.flatten().tolist() if isinstance(values, Tensor) else list(values)
    more = ", ..." if len(vals) > k else ""
    return "[" + ", ".join(str(v) for v in vals[:k]) + more + "]"


class CondensedGraph:
    """A synthetic graph condensed from a real multimodal graph (the output of every condenser).

    Args:
        features: ``{modality: tensor [n', d_m]}``; floating tensors are detached and cast to float32.
            Reordered to ``modalities`` when the names agree.
        adj: ``[n', n']`` dense weighted adjacency (symmetric, non-negative, zero diagonal; zeros for a
            structure-free condensed graph); detached and cast to float32.
        y: ``[n']`` class ids; integer tensors are cast to int64.
        num_classes: the class count ``C`` of the real graph.
        modalities: the real graph's modality order; defaults to the order of ``features``.
        class_names: optional names of the ``C`` classes.
        meta: provenance (see :func:`~magkit.condense.provenance.condensation_meta`); converted to its JSON form (tuples become
            lists, tensors and arrays lists or numbers, unknown objects their ``str``), so that what is
            held equals what :meth:`load` returns.

    The constructor does not check invariants; call :meth:`validate` (``save`` and ``load`` do).
    """

    def __init__(
        self,
        features: Mapping[str, Tensor],
        adj: Tensor,
        y: Tensor,
        *,
        num_classes: int,
        modalities: Sequence[str] | None = None,
        class_names: Sequence[str] | None = None,
        meta: Mapping[str, Any] | None = None,
    ):
        feats: dict[str, Tensor] = {}
        for m, x in dict(features).items():
            if isinstance(x, Tensor):
                x = x.detach()
                if x.is_floating_point():
                    x = x.to(torch.float32)
            feats[m] = x
        self.modalities: tuple[str, ...] = tuple(modalities) if modalities is not None else tuple(feats)
        if set(feats) == set(self.modalities) and len(feats) == len(self.modalities):
            feats = {m: feats[m] for m in self.modalities}
        self.features: dict[str, Tensor] = feats
        if isinstance(adj, Tensor):
            adj = adj.detach()
            if adj.is_floating_point():
                adj = adj.to(torch.float32)
        self.adj: Tensor = adj
        if isinstance(y, Tensor):
            y = y.detach()
            if not y.is_floating_point() and y.dtype != torch.bool:
                y = y.to(torch.long)
        self.y: Tensor = y
        self.num_classes: int = num_classes
        self.class_names: tuple[str, ...] | None = tuple(class_names) if class_names is not None else None
        self.meta: dict[str, Any] = to_json(dict(meta) if meta is not None else {})

    # ------------------------------------------------------------------ facts
    @property
    def num_nodes(self) -> int:
        """``n'``, the number of synthetic nodes (the length of ``y``)."""
        return int(self.y.numel())

    @property
    def modality_dims(self) -> dict[str, int]:
        return {m: int(self.features[m].size(1)) for m in self.modalities}

    def __repr__(self) -> str:
        dims = ", ".join(f"{m}:{tuple(x.shape)[-1] if x.dim() else '?'}" for m, x in self.features.items())
        return (
            f"CondensedGraph(nodes={self.num_nodes}, modalities=({dims}), classes={self.num_classes}, "
            f"method={self.meta.get('method')!r}, dataset={self.meta.get('dataset')!r})"
        )

    # ------------------------------------------------------------------ validation
    def validate(self) -> CondensedGraph:
        """Check every invariant; return ``self`` or raise :class:`~magkit.exceptions.DatasetError`.

        Checked: ``num_classes`` a positive int; ``class_names`` ``C`` strings; ``modalities`` non-empty,
        unique and equal (names and order) to the feature keys; each block a finite float32 ``[n', d_m]``
        with ``d_m >= 1``; ``y`` int64 ``[n']`` with labels in ``0..C-1`` and every class present; ``adj``
        a finite float32 ``[n', n']``, symmetric within :data:`SYMMETRY_TOL`, non-negative, zero diagonal;
        ``meta`` a dict.
        """
        c = self.num_classes
        if isinstance(c, bool) or not isinstance(c, int) or c < 1:
            raise _problem("num_classes", "must be a positive int", value=repr(c), allowed="an int >= 1")
        if self.class_names is not None:
            names = self.class_names
            if len(names) != c or not all(isinstance(s, str) for s in names):
                raise _problem(
                    "class_names", "must name every class with a string", value=_short(names, 10),
                    allowed=f"None or {c} strings",
                )
        mods = self.modalities
        if not mods or not all(isinstance(m, str) and m for m in mods):
            raise _problem("modalities", "must be non-empty strings", value=repr(mods), allowed="at least one modality name")
        if len(set(mods)) != len(mods):
            raise _problem("modalities", "duplicate modality names", value=repr(mods), allowed="unique names")
        if list(self.features) != list(mods):
            raise _problem(
                "features", "feature keys do not match the modalities", value=repr(list(self.features)),
                allowed=f"exactly {list(mods)} in that order",
            )

        y = self.y
        if not isinstance(y, Tensor) or y.dim() != 1:
            raise _problem("y", "must be a 1-D tensor of class ids", value=getattr(y, "shape", type(y).__name__), allowed="int64 [n']")
        if y.dtype != torch.long:
            raise _problem("y", "labels must be int64 class ids", value=y.dtype, allowed="torch.int64")
        n = int(y.numel())
        if n < 1:
            raise _problem("y", "the condensed graph has no nodes", value="0 labels", allowed="n' >= 1")

        for m in mods:
            key = f"x.{m}"
            x = self.features[m]
            if not isinstance(x, Tensor) or x.dim() != 2:
                raise _problem(key, "must be a 2-D tensor [n', d]", value=getattr(x, "shape", type(x).__name__))
            if x.dtype != torch.float32:
                raise _problem(key, "features must be float32", value=x.dtype, allowed="torch.float32")
            if x.size(0) != n:
                raise _problem(key, "row count differs from the number of labels", value=x.size(0), allowed=f"{n} rows (len(y))")
            if x.size(1) < 1:
                raise _problem(key, "feature width is zero", value=tuple(x.shape), allowed="d >= 1")
            from ..data.graph import nonfinite_problem

            problem = nonfinite_problem(x)
            if problem:
                raise _problem(key, problem[0], value=problem[1], allowed="finite values")

        bad = (y < 0) | (y >= c)
        if bool(bad.any()):
            raise _problem("y", f"{int(bad.sum())} label(s) out of range", value=_short(y[bad]), allowed=f"0..{c - 1}")
        counts = torch.bincount(y, minlength=c)
        absent = (counts == 0).nonzero(as_tuple=True)[0]
        if absent.numel():
            raise _problem(
                "y", f"{absent.numel()} class(es) without a synthetic node", value=f"classes {_short(absent, 10)}",
                allowed=f"every class 0..{c - 1} with at least one synthetic node",
            )

        a = self.adj
        if not isinstance(a, Tensor) or a.dim() != 2 or tuple(a.shape) != (n, n):
            raise _problem("adj", "must be a square matrix with one row per node", value=getattr(a, "shape", type(a).__name__), allowed=f"[{n}, {n}]")
        if a.dtype != torch.float32:
            raise _problem("adj", "must be float32", value=a.dtype, allowed="torch.float32")
        bad = ~torch.isfinite(a)
        if bool(bad.any()):
            raise _problem("adj", f"{int(bad.sum())} NaN/Inf weight(s)", value=f"at {_first_pair(bad)}", allowed="finite weights")
        asym = (a - a.T).abs()
        if float(asym.max()) > SYMMETRY_TOL:
            raise _problem(
                "adj", "not symmetric", value=f"max |A_ij - A_ji| = {float(asym.max()):.3g} at {_first_pair(asym == asym.max())}",
                allowed=f"|A_ij - A_ji| <= {SYMMETRY_TOL:g}",
            )
        if bool((a < 0).any()):
            raise _problem(
                "adj", f"{int((a < 0).sum())} negative weight(s)", value=f"min {float(a.min()):.3g} at {_first_pair(a == a.min())}",
                allowed="weights >= 0",
            )
        diag = a.diagonal()
        if bool((diag != 0).any()):
            idx = (diag != 0).nonzero(as_tuple=True)[0]
            raise _problem(
                "adj", f"{idx.numel()} non-zero diagonal entr(ies)", value=f"nodes {_short(idx)}, values {_short(diag[idx])}",
                allowed="a zero diagonal (self-loops are added by the models; use adj.fill_diagonal_(0))",
            )
        if not isinstance(self.meta, dict):
            raise _problem("meta", "must be a dict", value=type(self.meta).__name__)
        return self

    # ------------------------------------------------------------------ views
    def to_graph(self) -> Any:
        """The condensed graph as a :class:`~magkit.data.graph.MultimodalGraph` that training code can use.

        Nodes are the synthetic nodes, all present in every modality and all in ``train_mask`` (there is
        no ``val_mask``/``test_mask``: select and test on the real graph). ``edge_index`` holds the pairs
        with weight ``> 0`` of the symmetrised ``(adj + adjᵀ)/2`` without its diagonal, both directions,
        sorted by source then target; ``edge_weight`` their weights; ``adj_dense`` the dense ``adj``
        itself. The result passes ``validate(graph, require_splits=False)``.
        """
        from ..data.graph import MultimodalGraph, validate

        self.validate()
        n = self.num_nodes
        a = (self.adj + self.adj.T) / 2
        keep = (a > 0) & ~torch.eye(n, dtype=torch.bool, device=a.device)
        edge_index = keep.nonzero().T.contiguous()
        edge_weight = a[keep]
        graph = MultimodalGraph(
            dict(self.features),
            edge_index,
            self.y.clone(),
            num_classes=self.num_classes,
            class_names=self.class_names,
            name=f"condensed:{self.meta.get('dataset') or 'graph'}",
            canonicalize_edges=False,
            edge_weight=edge_weight,
            adj_dense=self.adj.clone(),
            train_mask=torch.ones(n, dtype=torch.bool, device=self.y.device),
        )
        return validate(graph, require_splits=False)

    def stats(self) -> dict[str, Any]:
        """Facts to report with every condensed graph (edge density and spectrum flag a collapsed structure).

        Keys: ``num_nodes``, ``num_classes``, ``class_counts``; ``num_edges`` (undirected pairs with weight
        ``> EDGE_THRESHOLD``), ``edge_density`` (their share of the ``n'(n'-1)/2`` off-diagonal pairs),
        ``isolated_nodes`` (nodes without such an edge), ``weight_mean`` (over all off-diagonal pairs),
        ``weight_mean_edges`` (over the edges; NaN without edges), ``weight_max``; the spectrum of the
        normalised Laplacian ``L = I' - D^{-1/2} A D^{-1/2}`` of the weighted ``adj`` without self-loops
        (``I'_ii = 1`` for nodes of non-zero degree, ``0`` for isolated ones, so each connected component,
        an isolated node included, contributes one zero eigenvalue): ``laplacian_eig_min``,
        ``laplacian_eig_fiedler`` (second smallest; NaN for one node), ``laplacian_eig_max``, and
        ``components``, the number of eigenvalues below :data:`ZERO_EIG_TOL`. The normalised Laplacian does
        not change when all weights are scaled, so read ``components`` together with ``weight_max``:
        uniformly tiny weights are a structure in name only. ``feature_norms``: per modality the mean,
        min and max L2 norm of the synthetic rows.
        """
        self.validate()
        n = self.num_nodes
        a = ((self.adj + self.adj.T) / 2).detach().to("cpu", torch.float64)
        off = ~torch.eye(n, dtype=torch.bool)
        pairs = n * (n - 1) // 2
        weights = a[off]
        edges = a > EDGE_THRESHOLD
        edges &= off
        num_edges = int(edges.sum()) // 2
        deg = a.sum(dim=1)
        inv_sqrt = torch.where(deg > 0, deg.clamp_min(1e-300).rsqrt(), torch.zeros_like(deg))
        lap = torch.diag((deg > 0).to(torch.float64)) - inv_sqrt[:, None] * a * inv_sqrt[None, :]
        eig = torch.linalg.eigvalsh((lap + lap.T) / 2)
        strong = weights[weights > EDGE_THRESHOLD]
        counts = torch.bincount(self.y.cpu(), minlength=self.num_classes)
        norms = {}
        for m in self.modalities:
            r = self.features[m].detach().to("cpu", torch.float64).norm(dim=1)
            norms[m] = {"dim": int(self.features[m].size(1)), "mean": float(r.mean()), "min": float(r.min()), "max": float(r.max())}
        return {
            "num_nodes": n,
            "num_classes": self.num_classes,
            "class_counts": counts.tolist(),
            "num_edges": num_edges,
            "edge_density": num_edges / pairs if pairs else 0.0,
            "isolated_nodes": int((~edges.any(dim=1)).sum()),
            "weight_mean": float(weights.mean()) if weights.numel() else 0.0,
            "weight_mean_edges": float(strong.mean()) if strong.numel() else float("nan"),
            "weight_max": float(weights.max()) if weights.numel() else 0.0,
            "laplacian_eig_min": float(eig[0]),
            "laplacian_eig_fiedler": float(eig[1]) if n > 1 else float("nan"),
            "laplacian_eig_max": float(eig[-1]),
            "components": int((eig.abs() < ZERO_EIG_TOL).sum()),
            "feature_norms": norms,
        }

    # ------------------------------------------------------------------ compatibility
    def check_compatible(self, graph: Any, *, strict_checksum: bool = False) -> None:
        """Raise :class:`~magkit.exceptions.DatasetError` unless this condensed graph can be evaluated on
        ``graph``: same modalities in the same order, same feature widths, same class count.

        When ``meta['dataset_checksum']`` is recorded and differs from ``graph.checksum()`` (a different
        version or split of the data), a warning is logged, or the error raised with
        ``strict_checksum=True``. Differing class names are logged as a warning.
        """
        from ..data.graph import MultimodalGraph

        if not isinstance(graph, MultimodalGraph):
            raise _problem("graph", "expected a magkit MultimodalGraph", value=type(graph).__name__)
        if tuple(graph.modalities) != tuple(self.modalities):
            raise _problem(
                "modalities", "the condensed graph and the real graph have different modalities",
                value=f"condensed {list(self.modalities)}, graph {list(graph.modalities)}",
                allowed="the same modalities in the same order (evaluate on the graph it was condensed from)",
            )
        gdims, cdims = graph.modality_dims, self.modality_dims
        diff = {m: (cdims[m], gdims[m]) for m in self.modalities if cdims[m] != gdims[m]}
        if diff:
            text = ", ".join(f"{m}: condensed {a}, graph {b}" for m, (a, b) in diff.items())
            raise _problem("dims", "feature widths differ", value=text, allowed="the same width per modality")
        if graph.num_classes != self.num_classes:
            raise _problem(
                "num_classes", "class counts differ", value=f"condensed {self.num_classes}, graph {graph.num_classes}",
                allowed="the same number of classes",
            )
        if self.class_names is not None and graph.class_names is not None and tuple(graph.class_names) != self.class_names:
            log.warning("class names differ: condensed %s, graph %s", _short(self.class_names), _short(graph.class_names))
        recorded = self.meta.get("dataset_checksum")
        if recorded is not None:
            actual = graph.checksum()
            if recorded != actual:
                msg = (
                    f"dataset_checksum: the condensed graph was made from different data "
                    f"(recorded {recorded} for dataset {self.meta.get('dataset')!r}, graph {graph.name!r} has {actual})"
                )
                if strict_checksum:
                    raise DatasetError(msg + "; allowed: the same data (or strict_checksum=False)")
                log.warning("%s", msg)

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | os.PathLike) -> Path:
        """Validate, then write one safetensors file with its content digest, atomically (see the module
        docstring for the format). A failed write (a full disk included) leaves the previous file intact and
        no temporary file, and raises a one-line :class:`~magkit.integrity.WriteError`.

        Returns the path written. Use the ``.safetensors`` suffix.
        """
        from ..integrity import write_safetensors

        self.validate()
        header = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "num_nodes": self.num_nodes,
            "modalities": list(self.modalities),
            "dims": self.modality_dims,
            "num_classes": self.num_classes,
            "class_names": list(self.class_names) if self.class_names is not None else None,
            "meta": self.meta,
            "stats": to_json(self.stats()),
        }
        tensors = {f"x.{m}": self.features[m].detach().to("cpu", torch.float32) for m in self.modalities}
        tensors["adj"] = self.adj.detach().to("cpu", torch.float32)
        tensors["y"] = self.y.detach().to("cpu", torch.long)
        return write_safetensors(path, tensors, header)

    @classmethod
    def load(cls, path: str | os.PathLike) -> CondensedGraph:
        """Read a file written by :meth:`save`; executes no code (safetensors header + JSON only).

        Raises :class:`~magkit.exceptions.DatasetError`, naming ``path``, when the file is missing, a pickle,
        not a safetensors file or truncated, lacks the ``"magkit"`` metadata, fails its content digest
        (:class:`~magkit.integrity.IntegrityError`), has malformed JSON or another format version, has
        missing/extra tensors or tensors whose shape or dtype disagree with the metadata, or breaks an
        invariant of :meth:`validate`.
        """
        from ..integrity import is_pickle, read_safetensors

        path = Path(path)
        if not path.is_file():
            raise DatasetError(f"{path}: no such file (expected a condensed graph written by CondensedGraph.save)")
        if is_pickle(path):
            raise DatasetError(f"{path}: a pickle, not a condensed graph; magkit never unpickles artifacts (pickles "
                               "can run code): re-create it with magkit condense")
        record, stored = read_safetensors(path, "magkit condensed graph")
        header = _read_header(path, record)
        n, mods, dims = header["num_nodes"], header["modalities"], header["dims"]
        expected = {f"x.{m}": ("x", [n, dims[m]]) for m in mods}
        expected["adj"] = ("adj", [n, n])
        expected["y"] = ("y", [n])
        keys = set(stored)
        missing = sorted(set(expected) - keys)
        extra = sorted(keys - set(expected))
        if missing or extra:
            raise DatasetError(
                f"{path}: tensors disagree with the metadata (missing {missing}, unexpected {extra}); "
                f"allowed: exactly {sorted(expected)}"
            )
        tensors: dict[str, Tensor] = {}
        for key, (kind, shape) in expected.items():
            t = stored[key]
            want_name, want_dtype = _DTYPES[kind]
            if t.dtype != want_dtype:
                raise DatasetError(f"{path}: tensor {key!r} has dtype {_ST_NAMES.get(t.dtype, t.dtype)}; "
                                   f"allowed: {want_name}")
            if list(t.shape) != shape:
                raise DatasetError(
                    f"{path}: tensor {key!r} has shape {list(t.shape)} but the metadata (num_nodes={n}, "
                    f"dims={dims}) says {shape}"
                )
            tensors[key] = t
        graph = cls(
            {m: tensors[f"x.{m}"] for m in mods},
            tensors["adj"],
            tensors["y"],
            num_classes=header["num_classes"],
            modalities=mods,
            class_names=header["class_names"],
            meta=header["meta"],
        )
        try:
            graph.validate()
        except DatasetError as exc:
            raise DatasetError(f"{path}: {exc}") from exc
        return graph


# ---------------------------------------------------------------------- helpers
_ST_NAMES = {torch.float32: "F32", torch.float64: "F64", torch.float16: "F16", torch.bfloat16: "BF16",
             torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8", torch.uint8: "U8",
             torch.bool: "BOOL"}


def _read_header(path: Path, header: Any) -> dict[str, Any]:
    """Check the ``"magkit"`` JSON record of a condensed-graph file."""
    if header.get("format") != FORMAT:
        raise DatasetError(f"{path}: metadata format is {header.get('format')!r}; allowed: {FORMAT!r}")
    version = header.get("format_version")
    if version != FORMAT_VERSION:
        raise DatasetError(
            f"{path}: unsupported format version {version!r}; this magkit reads format_version {FORMAT_VERSION}"
            + (" (version 1 files carry no content digest: re-create the condensed graph)" if version == 1 else "")
        )

    def bad(field: str, value: object, allowed: str) -> DatasetError:
        return DatasetError(f"{path}: metadata field {field!r} is invalid (got {value!r}); allowed: {allowed}")

    missing = [k for k in ("num_nodes", "modalities", "dims", "num_classes", "class_names") if k not in header]
    if missing:
        raise DatasetError(f"{path}: metadata fields {missing} are missing; allowed: a record written by "
                           "CondensedGraph.save")

    for field in ("num_nodes", "num_classes"):
        v = header.get(field)
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise bad(field, v, "an int >= 1")
    mods = header.get("modalities")
    if not isinstance(mods, list) or not mods or not all(isinstance(m, str) and m for m in mods) or len(set(mods)) != len(mods):
        raise bad("modalities", mods, "a non-empty list of unique modality names")
    dims = header.get("dims")
    if (
        not isinstance(dims, dict)
        or set(dims) != set(mods)
        or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 1 for d in dims.values())
    ):
        raise bad("dims", dims, f"an object mapping each of {mods} to a width >= 1")
    names = header.get("class_names")
    if names is not None and (not isinstance(names, list) or not all(isinstance(s, str) for s in names)):
        raise bad("class_names", names, "null or a list of strings")
    if not isinstance(header.get("meta", {}), dict):
        raise bad("meta", header.get("meta"), "a JSON object")
    header.setdefault("meta", {})
    return header


def _first_pair(mask: Tensor) -> tuple[int, int] | None:
    idx = mask.nonzero()
    return (int(idx[0, 0]), int(idx[0, 1])) if idx.numel() else None


def to_json(obj: Any) -> Any:
    """The JSON form of ``obj``: dict keys become strings, tuples/sets lists, tensors/arrays lists or
    numbers, dataclasses dicts, enums their values, paths strings, anything else its ``str``."""
    if obj is None or isinstance(obj, (bool, str)):
        return obj
    if isinstance(obj, int):
        return int(obj)
    if isinstance(obj, float):
        return float(obj)
    if isinstance(obj, Mapping):
        return {str(k): to_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_json(v) for v in obj]
    if isinstance(obj, (set, frozenset)):
        return sorted((to_json(v) for v in obj), key=repr)
    if isinstance(obj, enum.Enum):
        return to_json(obj.value)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return to_json(dataclasses.asdict(obj))
    if hasattr(obj, "to_dict") and callable(obj.to_dict):
        return to_json(obj.to_dict())
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if hasattr(obj, "tolist") and callable(obj.tolist):  # tensors, numpy arrays and scalars
        return to_json(obj.tolist())
    if isinstance(obj, numbers.Real):
        return float(obj)
    return str(obj)
