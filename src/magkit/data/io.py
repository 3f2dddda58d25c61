"""A neutral file format for users' own multimodal graphs, and the feature-matrix loader shared by the readers.

A graph is two tables and one feature matrix per modality::

    nodes.csv  (or .jsonl)   id,text,image,label[,split]
    edges.csv  (or .jsonl)   source,target
    text.npy, image.npy      [N, d] features, row i = the i-th node of nodes.csv

* ``id``: any string or integer, unique. ``label``: a class name or an integer class id; empty = unknown.
* ``text`` / ``image``: optional raw content (text, image path); an empty cell marks the modality as absent
  for that node (its feature row is then ignored by every model).
* ``<m>_present.npy`` beside a feature file ``<m>.npy`` (bool ``[N]``, written by ``magkit encode``): nodes
  whose input could not be encoded (a missing or unreadable image, an empty text) are absent as well.
* ``split``: optional ``train`` / ``val`` / ``test`` (empty = in no split); when the column has any value it
  replaces the ``split`` argument.

Feature files are typically written by :func:`magkit.data.encode.encode_nodes`. See ``docs/data_formats.md``.
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..exceptions import DatasetError
from .graph import MultimodalGraph, canonical_edges, check_class_count, one_line
from .splits import apply_split

_CHUNK_BYTES = 64 << 20
_SPLIT_VALUES = {"train": "train", "val": "val", "valid": "val", "validation": "val", "test": "test"}


# ---------------------------------------------------------------------- feature matrices
def load_feature_matrix(path: str | os.PathLike, num_nodes: int | None = None, field: str = "features") -> np.ndarray:
    """Read a ``[N, d]`` ``.npy`` feature matrix as float32, memory-mapped and cast chunk by chunk.

    Args:
        path: the ``.npy`` file (any float or integer dtype; never unpickled).
        num_nodes: the expected row count (``None``: any).
        field: what the matrix is, for error messages (``"text features"``).

    Raises:
        DatasetError: unreadable file, not 2-D, wrong row count, non-numeric dtype, NaN/Inf values (or values
            too large for float32); the message names the file.
    """
    from .mapped import npy_header

    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{field}: file {path} does not exist")
    npy_header(path, field)
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except FileNotFoundError as exc:
        raise DatasetError(f"{field}: file {path} does not exist") from exc
    except (OSError, ValueError, EOFError) as exc:
        raise DatasetError(f"{field}: {path} is not a readable .npy array ({one_line(exc)})") from exc
    if not isinstance(arr, np.ndarray):
        raise DatasetError(f"{field}: {path} holds {type(arr).__name__}; expected one .npy array")
    if arr.ndim != 2:
        raise DatasetError(f"{field}: {path} has shape {arr.shape}; expected 2-D [num_nodes, dim]")
    if num_nodes is not None and arr.shape[0] != num_nodes:
        raise DatasetError(f"{field}: {path} has {arr.shape[0]} rows; expected one per node ({num_nodes})")
    if arr.dtype.kind not in "fiub":
        raise DatasetError(f"{field}: {path} has dtype {arr.dtype}; expected a float or integer dtype")
    n, d = arr.shape
    out = np.empty((n, d), dtype=np.float32)
    step = max(1, _CHUNK_BYTES // max(1, d * arr.dtype.itemsize))
    with np.errstate(over="ignore", invalid="ignore"):
        for start in range(0, n, step):
            block = np.asarray(arr[start:start + step], dtype=np.float32)
            ok = np.isfinite(block)
            if not ok.all():
                rows = np.nonzero(~ok.all(axis=1))[0] + start
                raise DatasetError(
                    f"{field}: {path} has NaN/Inf (or values beyond float32) in row {int(rows[0])}"
                    f"{f' and {rows.size - 1} more row(s) of this block' if rows.size > 1 else ''}; "
                    "expected finite values"
                )
            out[start:start + step] = block
    del arr
    return out


# ---------------------------------------------------------------------- tables
def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()


def _read_table(path: Path, what: str) -> tuple[list[str], list[dict[str, str]], list[int]]:
    """(columns, rows as {column: cell}, line number of each row) of a CSV or JSON-lines file."""
    if not path.is_file():
        raise DatasetError(f"{what}: file {path} does not exist")
    rows: list[dict[str, str]] = []
    lines: list[int] = []
    try:
        if path.suffix.lower() in (".jsonl", ".ndjson"):
            columns: list[str] = []
            with path.open(encoding="utf-8-sig") as fh:
                for lineno, line in enumerate(fh, start=1):
                    if not line.strip():
                        continue
                    try:
                        obj = json.loads(line)
                    except json.JSONDecodeError as exc:
                        raise DatasetError(f"{what}: {path} line {lineno} is not valid JSON ({exc.msg})") from exc
                    if not isinstance(obj, dict):
                        raise DatasetError(f"{what}: {path} line {lineno} is a {type(obj).__name__}; expected an object")
                    for k in obj:
                        if k not in columns:
                            columns.append(k)
                    rows.append({str(k): _cell(v) for k, v in obj.items()})
                    lines.append(lineno)
        else:
            with path.open(newline="", encoding="utf-8-sig") as fh:
                reader = csv.reader(fh)
                header = next(reader, None)
                if header is None:
                    raise DatasetError(f"{what}: {path} is empty; expected a header row")
                columns = [h.strip() for h in header]
                for rec in reader:
                    if not rec or (len(rec) == 1 and not rec[0].strip()):
                        continue
                    if len(rec) > len(columns):
                        raise DatasetError(
                            f"{what}: {path} line {reader.line_num} has {len(rec)} fields; the header has "
                            f"{len(columns)} ({', '.join(columns)})"
                        )
                    rows.append({c: rec[i].strip() if i < len(rec) else "" for i, c in enumerate(columns)})
                    lines.append(reader.line_num)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DatasetError(f"{what}: cannot read {path} ({one_line(exc)})") from exc
    return columns, rows, lines


def _require(columns: list[str], needed: tuple[str, ...], path: Path, what: str) -> None:
    missing = [c for c in needed if c not in columns]
    if missing:
        raise DatasetError(
            f"{what}: {path} lacks column(s) {', '.join(repr(c) for c in missing)}; "
            f"found: {', '.join(columns) or 'none'}; expected at least: {', '.join(needed)}"
        )


def _parses(cell: str, kind: type = float) -> bool:
    """Whether ``kind(cell)`` (``int`` or ``float``) accepts the text."""
    try:
        kind(cell)
    except ValueError:
        return False
    return True


def _parse_labels(cells: list[str]) -> tuple[np.ndarray, tuple[str, ...] | None, int]:
    """Integer class ids when every non-empty cell is an integer, else sorted class names.

    A column that mixes integer ids with other numbers (``1.5``, ``1e9``) or with names is refused: it is a
    damaged column, not a set of names.
    """
    present = [c for c in cells if c != ""]
    is_int = [_parses(c, int) for c in present]
    ints = None if not all(is_int) else [int(c) for c in present]
    if ints is None:
        if any(is_int):
            odd = next(c for c, k in zip(present, is_int) if not k)
            kind = "a non-integer number" if _parses(odd) else "a name"
            raise DatasetError(f"label: {odd!r} is {kind} in a column of integer class ids; allowed: integer ids "
                               "only, or class names only")
        numbers = [c for c in present if _parses(c)]
        if numbers and len(numbers) == len(present):
            raise DatasetError(f"label: {numbers[0]!r} is not an integer class id; allowed: integer ids or names")
    if ints is not None:
        y = np.array([int(c) if c != "" else -1 for c in cells], dtype=np.int64)
        if y.size and y.min() < -1:
            raise DatasetError(f"label: class id {int(y.min())} is negative; allowed: ids >= 0, -1 or empty for unknown")
        return y, None, int(y.max()) + 1 if (y >= 0).any() else 0
    names = sorted(set(present))
    index = {n: i for i, n in enumerate(names)}
    y = np.array([index[c] if c != "" else -1 for c in cells], dtype=np.int64)
    return y, tuple(names), len(names)


def _presence_file(fpath: Path, n: int, field: str) -> np.ndarray | None:
    """The bool ``[N]`` ``<m>_present.npy`` written beside ``<m>.npy`` by ``magkit encode``, or ``None``."""
    from .ondisk import _read_small

    ppath = fpath.with_name(f"{fpath.stem}_present.npy")
    if not ppath.is_file():
        return None
    arr = _read_small(ppath, field, f"bool [{n}]", kind="biu")
    if arr.shape != (n,):
        raise DatasetError(f"{field}: {ppath} has shape {tuple(arr.shape)}; expected bool [{n}] (one per node)")
    return arr.astype(bool)


def load_graph_files(
    nodes_path: str | os.PathLike,
    edges_path: str | os.PathLike,
    features: dict[str, str | os.PathLike] | None = None,
    split: str = "magb",
    seed: int = 0,
    name: str | None = None,
) -> MultimodalGraph:
    """Build a :class:`~magkit.data.graph.MultimodalGraph` from a nodes table, an edges table and feature files.

    Args:
        nodes_path: CSV (or ``.jsonl``) with columns ``id``, ``label`` and optionally ``text``, ``image``,
            ``split``; one row per node.
        edges_path: CSV (or ``.jsonl``) with columns ``source``, ``target`` (node ids); made undirected.
        features: ``{modality: path to .npy [N, d]}``, rows in the order of the nodes file. A modality with a
            same-named column in the nodes file (``text``, ``image``) is absent for nodes whose cell is empty;
            a ``<m>_present.npy`` file beside ``<m>.npy`` marks further nodes absent (inputs the encoder could
            not read).
        split: split spec when the nodes file has no ``split`` values (see :func:`~magkit.data.splits.apply_split`).
        seed: the split seed.
        name: the dataset name (default ``files:<nodes file stem>``).

    Class names are sorted alphabetically and stored as ``class_names``; integer labels are used as class
    ids directly. The node ids are kept as ``node_id`` (a list, one per node), texts as ``raw_text`` and
    image paths as ``image_path`` when those columns exist.
    """
    nodes_path, edges_path = Path(nodes_path), Path(edges_path)
    columns, rows, lines = _read_table(nodes_path, "nodes file")
    _require(columns, ("id", "label"), nodes_path, "nodes file")
    if not rows:
        raise DatasetError(f"nodes file: {nodes_path} has no node rows")
    index: dict[str, int] = {}
    for i, row in enumerate(rows):
        nid = row.get("id", "")
        if nid == "":
            raise DatasetError(f"nodes file: {nodes_path} line {lines[i]}: empty id; every node needs a unique id")
        if nid in index:
            raise DatasetError(
                f"nodes file: {nodes_path} line {lines[i]}: duplicate id {nid!r} (first on line {lines[index[nid]]}); "
                "ids must be unique"
            )
        index[nid] = i
    n = len(rows)
    try:
        y, class_names, num_classes = _parse_labels([row.get("label", "") for row in rows])
    except DatasetError as exc:
        raise DatasetError(f"nodes file: {nodes_path}: {exc}") from None
    check_class_count(num_classes, n, f"nodes file: {nodes_path}", "label")

    ecols, erows, elines = _read_table(edges_path, "edges file")
    _require(ecols, ("source", "target"), edges_path, "edges file")
    ei = np.empty((2, len(erows)), dtype=np.int64)
    for j, row in enumerate(erows):
        for k, col in enumerate(("source", "target")):
            nid = row.get(col, "")
            pos = index.get(nid)
            if pos is None:
                raise DatasetError(
                    f"edges file: {edges_path} line {elines[j]}: {col} {nid!r} is not an id of the nodes file "
                    f"{nodes_path.name}"
                )
            ei[k, j] = pos

    if not features:
        raise DatasetError(
            "features: no feature file given; pass features={'text': 'text.npy', 'image': 'image.npy'} "
            "(N x d arrays in nodes-file order, e.g. written by magkit.data.encode.encode_nodes)"
        )
    feats, presence = {}, {}
    for m, fpath in features.items():
        feats[m] = torch.from_numpy(load_feature_matrix(fpath, n, field=f"features[{m!r}]"))
        present = np.ones(n, dtype=bool)
        if m in columns:
            present &= np.array([row.get(m, "") != "" for row in rows], dtype=bool)
        from_file = _presence_file(Path(fpath), n, f"presence[{m!r}]")
        if from_file is not None:
            present &= from_file
        if m in columns or from_file is not None:
            presence[m] = torch.from_numpy(present)

    edge_index, _ = canonical_edges(torch.from_numpy(ei), n, source=f"edges file {edges_path}")
    graph = MultimodalGraph(
        feats, edge_index, torch.from_numpy(y), num_classes=num_classes, modality_mask=presence,
        class_names=class_names, name=name or f"files:{nodes_path.stem}", canonicalize_edges=False,
    )
    graph.node_id = [row["id"] for row in rows]
    if "text" in columns:
        graph.raw_text = [row.get("text", "") for row in rows]
    if "image" in columns:
        graph.image_path = [row.get("image", "") for row in rows]

    split_cells = [row.get("split", "").lower() for row in rows] if "split" in columns else []
    if any(split_cells):
        masks = {s: torch.zeros(n, dtype=torch.bool) for s in ("train", "val", "test")}
        for i, cell in enumerate(split_cells):
            if cell == "":
                continue
            which = _SPLIT_VALUES.get(cell)
            if which is None:
                raise DatasetError(
                    f"nodes file: {nodes_path} line {lines[i]}: split {cell!r} is not a split; "
                    "allowed: train, val (or valid), test, or empty"
                )
            if y[i] < 0:
                raise DatasetError(
                    f"nodes file: {nodes_path} line {lines[i]}: node {rows[i]['id']!r} is in split {which!r} "
                    "but has no label; give it a label or leave its split empty"
                )
            masks[which][i] = True
        for s, m in masks.items():
            graph[f"{s}_mask"] = m
        graph.meta = {**graph.meta, "split": "file"}
        return graph
    return apply_split(graph, split, seed)
