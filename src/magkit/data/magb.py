"""MAGB benchmark reader, with a parser of DGL binary graph files that needs no DGL.

MAGB (Yan et al., "When Graph meets Multimodal: Benchmarking and Meditating on Multimodal Attributed Graph
Learning", arXiv 2410.09132) ships each dataset as::

    <root>/<Name>/<Name>Graph.pt                 a DGL binary graph (``dgl.save_graphs``), label in ndata
    <root>/<Name>/<Name>.csv                     optional: the node texts
    <root>/<Name>/TextFeature/*.npy              text embeddings, [N, d] (float64 on the hub)
    <root>/<Name>/ImageFeature/*.npy             image embeddings, [N, d]

:func:`read_dgl_graph` parses the graph file with ``struct``/``numpy`` only, checking every count against
the file's size; :func:`load_magb_structure` returns the canonical structure and labels;
:func:`load_magb` builds the full :class:`~magkit.data.graph.MultimodalGraph` with MAGB's split.

The DGL layout (little-endian, version 2 as written by DGL >= 0.5) is documented in ``docs/data_formats.md``.
"""

from __future__ import annotations

import contextlib
import csv
import logging
import math
import os
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..exceptions import DatasetError
from .graph import MultimodalGraph, canonical_edges, check_class_count, one_line
from .io import load_feature_matrix
from .splits import apply_split

log = logging.getLogger(__name__)

MAGB_DATASETS = ("Movies", "Toys", "Grocery", "Reddit-S", "Reddit-M")

# magic numbers of the DGL serialisation (uint64, little-endian on disk)
GRAPH_MAGIC = 0xDD2E4FF046B4A13F
NDARRAY_MAGIC = 0xDD5E40F096B4A13F
HETEROGRAPH_MAGIC = 0xDD589FBE35224ABF
IMMUTABLE_GRAPH_MAGIC = 0xDD3C5FFE20046ABF
CSR_MAGIC = 0xDD6CD31205DFF127
COO_MAGIC = 0xDD61FFD305DFF127
UNIT_GRAPH_MAGIC = 0xDD2E60F0F6B4A127
DGL_VERSION = 2
HETEROGRAPH_TYPE = 2
META_SIZE = 4096  # the metadata block at the start of the file

# sparse formats of a unit graph (DGL's format codes)
COO_CODE, CSR_CODE, CSC_CODE = 0x1, 0x2, 0x4
_MAX_NDIM = 8
_MAX_NAME = 1 << 16

# DLPack dtype codes -> numpy kinds
_DL_INT, _DL_UINT, _DL_FLOAT, _DL_BOOL = 0, 1, 2, 6
_DTYPES = {
    (_DL_INT, 8): np.int8, (_DL_INT, 16): np.int16, (_DL_INT, 32): np.int32, (_DL_INT, 64): np.int64,
    (_DL_UINT, 8): np.uint8, (_DL_UINT, 16): np.uint16, (_DL_UINT, 32): np.uint32, (_DL_UINT, 64): np.uint64,
    (_DL_FLOAT, 16): np.float16, (_DL_FLOAT, 32): np.float32, (_DL_FLOAT, 64): np.float64,
    (_DL_BOOL, 8): np.bool_,
}


# ---------------------------------------------------------------------- the byte reader
class _Reader:
    """Sequential little-endian reader over the bytes of one file; every read is bounds-checked."""

    def __init__(self, data: bytes, path: Path):
        self.data = data
        self.size = len(data)
        self.pos = 0
        self.path = path

    def fail(self, field: str, message: str, offset: int | None = None) -> DatasetError:
        at = self.pos if offset is None else offset
        return DatasetError(f"{self.path}: offset {at} ({field}): {message}")

    def need(self, n: int, field: str) -> None:
        if n < 0 or self.pos + n > self.size:
            raise self.fail(
                field,
                f"file truncated: {n} byte(s) needed, {self.size - self.pos} left "
                f"(file size {self.size} bytes)",
            )

    def _unpack(self, fmt: str, n: int, field: str):
        self.need(n, field)
        (value,) = struct.unpack_from(fmt, self.data, self.pos)
        self.pos += n
        return value

    def u64(self, field: str) -> int:
        return self._unpack("<Q", 8, field)

    def i64(self, field: str) -> int:
        return self._unpack("<q", 8, field)

    def i32(self, field: str) -> int:
        return self._unpack("<i", 4, field)

    def u8(self, field: str) -> int:
        return self._unpack("<B", 1, field)

    def boolean(self, field: str) -> bool:
        at = self.pos
        v = self.u8(field)
        if v > 1:
            raise self.fail(field, f"expected a bool byte 0 or 1, got {v}", at)
        return bool(v)

    def magic(self, expected: int, field: str) -> None:
        at = self.pos
        got = self.u64(field)
        if got != expected:
            raise self.fail(field, f"bad magic number 0x{got:016X}, expected 0x{expected:016X}", at)

    def count(self, field: str, min_item_bytes: int, limit: int | None = None) -> int:
        """A u64 element count, checked against the bytes left (each element takes >= min_item_bytes)."""
        at = self.pos
        n = self.u64(field)
        left = self.size - self.pos
        if n * max(min_item_bytes, 1) > left:
            raise self.fail(
                field,
                f"count {n} needs at least {n * max(min_item_bytes, 1)} byte(s) but only {left} are left "
                f"(file size {self.size}; truncated or corrupted)",
                at,
            )
        if limit is not None and n > limit:
            raise self.fail(field, f"count {n} is implausible; expected at most {limit}", at)
        return n

    def string(self, field: str) -> str:
        at = self.pos
        n = self.count(f"{field} length", 1, limit=_MAX_NAME)
        raw = bytes(self.data[self.pos:self.pos + n])
        self.pos += n
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise self.fail(field, f"name is not valid UTF-8: {raw[:40]!r}", at) from None

    def ndarray(self, field: str) -> np.ndarray:
        """One serialised DGL NDArray (a copy, as a numpy array)."""
        start = self.pos
        self.magic(NDARRAY_MAGIC, f"{field}: NDArray magic")
        self.need(8, f"{field}: reserved bytes")
        self.pos += 8
        dev_at = self.pos
        dev_type = self.i32(f"{field}: device type")
        dev_id = self.i32(f"{field}: device id")
        if dev_type not in (1, 2, 3) or not 0 <= dev_id < 1024:
            raise self.fail(
                f"{field}: device", f"device (type {dev_type}, id {dev_id}) is not a DLPack device; "
                "expected type 1 (CPU), 2 (CUDA) or 3 (pinned) and id 0..1023", dev_at,
            )
        at = self.pos
        ndim = self.i32(f"{field}: ndim")
        if not 0 <= ndim <= _MAX_NDIM:
            raise self.fail(f"{field}: ndim", f"ndim {ndim} is not in 0..{_MAX_NDIM}", at)
        at = self.pos
        code = self.u8(f"{field}: dtype code")
        bits = self.u8(f"{field}: dtype bits")
        lanes = self._unpack("<H", 2, f"{field}: dtype lanes")
        np_dtype = _DTYPES.get((code, bits))
        if np_dtype is None or lanes != 1:
            raise self.fail(
                f"{field}: dtype",
                f"unsupported dtype (code {code}, bits {bits}, lanes {lanes}); expected int8..64, uint8..64, "
                "float16/32/64 or bool with 1 lane",
                at,
            )
        shape = []
        for k in range(ndim):
            at = self.pos
            s = self.i64(f"{field}: shape[{k}]")
            if s < 0:
                raise self.fail(f"{field}: shape[{k}]", f"negative dimension {s}", at)
            shape.append(s)
        at = self.pos
        nbytes = self.i64(f"{field}: byte count")
        expected = math.prod(shape) * (bits // 8)
        if nbytes != expected:
            raise self.fail(
                f"{field}: byte count",
                f"byte count {nbytes} disagrees with shape {tuple(shape)} x {bits // 8} byte(s) = {expected}",
                at,
            )
        if nbytes > self.size - self.pos:
            raise self.fail(
                f"{field}: data",
                f"file truncated: the array needs {nbytes} byte(s), {self.size - self.pos} left "
                f"(array starts at offset {start}, file size {self.size})",
            )
        arr = np.frombuffer(self.data, dtype=np.dtype(np_dtype).newbyteorder("<"), count=expected // (bits // 8),
                            offset=self.pos).reshape(shape)
        self.pos += nbytes
        return arr.astype(np_dtype, copy=True)

    def named_tensors(self, field: str) -> dict[str, np.ndarray]:
        """vector<pair<string, NDArray>>."""
        n = self.count(f"{field} count", 8 + 40)
        out: dict[str, np.ndarray] = {}
        for i in range(n):
            at = self.pos
            key = self.string(f"{field}[{i}] name")
            if key in out:
                raise self.fail(f"{field}[{i}] name", f"duplicate tensor name {key!r}", at)
            out[key] = self.ndarray(f"{field}[{key!r}]")
        return out


# ---------------------------------------------------------------------- DGL structures
def _read_csr_matrix(r: _Reader, field: str) -> dict[str, Any]:
    r.magic(CSR_MAGIC, f"{field}: CSR matrix magic")
    num_rows = r.i64(f"{field}: num_rows")
    num_cols = r.i64(f"{field}: num_cols")
    indptr = r.ndarray(f"{field}: indptr")
    indices = r.ndarray(f"{field}: indices")
    data = r.ndarray(f"{field}: data")
    r.boolean(f"{field}: sorted flag")
    return {"num_rows": num_rows, "num_cols": num_cols, "indptr": indptr, "indices": indices, "data": data}


def _read_coo_matrix(r: _Reader, field: str) -> dict[str, Any]:
    r.magic(COO_MAGIC, f"{field}: COO matrix magic")
    num_cols = r.i64(f"{field}: num_cols")  # DGL writes the column count first
    num_rows = r.i64(f"{field}: num_rows")
    row = r.ndarray(f"{field}: row")
    col = r.ndarray(f"{field}: col")
    data = r.ndarray(f"{field}: data")
    r.boolean(f"{field}: row_sorted flag")
    r.boolean(f"{field}: col_sorted flag")
    return {"num_rows": num_rows, "num_cols": num_cols, "row": row, "col": col, "data": data}


def _read_metagraph(r: _Reader, field: str) -> tuple[int, int]:
    """An ImmutableGraph holding the metagraph; returns (node types, edge types)."""
    r.magic(IMMUTABLE_GRAPH_MAGIC, f"{field}: immutable graph magic")
    at = r.pos
    csr = _read_csr_matrix(r, field)
    nv, ne = csr["num_rows"], csr["indices"].size
    if nv < 0 or csr["num_cols"] != nv:
        raise r.fail(field, f"metagraph is not square: {csr['num_rows']} x {csr['num_cols']}", at)
    return nv, ne


def _id_array(r: _Reader, arr: np.ndarray, field: str, at: int) -> np.ndarray:
    if arr.ndim != 1 or arr.dtype.kind not in "iu":
        raise r.fail(field, f"expected a 1-D integer id array, got shape {arr.shape} dtype {arr.dtype}", at)
    return arr.astype(np.int64)


def _edge_order(r: _Reader, src: np.ndarray, dst: np.ndarray, eids: np.ndarray, field: str, at: int):
    """Put edges in edge-id order when the sparse matrix carries an edge-id (data) array."""
    if eids.size == 0:
        return src, dst
    eids = _id_array(r, eids, f"{field}: edge ids", at)
    e = src.size
    if eids.size != e:
        raise r.fail(f"{field}: edge ids", f"{eids.size} edge ids for {e} edges; expected 0 or {e}", at)
    if e and (eids.min() < 0 or eids.max() >= e or np.bincount(eids, minlength=e).max() != 1):
        raise r.fail(f"{field}: edge ids", f"edge ids are not a permutation of 0..{e - 1}", at)
    s, d = np.empty_like(src), np.empty_like(dst)
    s[eids], d[eids] = src, dst
    return s, d


def _read_unit_graph(r: _Reader, field: str) -> tuple[int, int, np.ndarray, np.ndarray]:
    """A UnitGraph (one relation): returns (num_src, num_dst, src, dst) in edge-id order."""
    r.magic(UNIT_GRAPH_MAGIC, f"{field}: unit graph magic")
    at = r.pos
    save_code = r.i64(f"{field}: saved formats")
    r.i64(f"{field}: allowed formats")
    if save_code >> 32:
        saved = save_code & 0xFFFFFFFF
    else:  # older files store one SparseFormat enum value (1 COO, 2 CSR, 3 CSC)
        saved = {1: COO_CODE, 2: CSR_CODE, 3: CSC_CODE}.get(save_code, 0)
    if saved == 0 or saved & ~(COO_CODE | CSR_CODE | CSC_CODE):
        raise r.fail(f"{field}: saved formats", f"unknown sparse format code {save_code}; expected COO, CSR or CSC", at)
    got: dict[str, tuple[int, int, np.ndarray, np.ndarray]] = {}
    if saved & COO_CODE:
        _read_metagraph(r, f"{field}: COO metagraph")
        at = r.pos
        m = _read_coo_matrix(r, f"{field}: COO")
        src = _id_array(r, m["row"], f"{field}: COO row", at)
        dst = _id_array(r, m["col"], f"{field}: COO col", at)
        if src.size != dst.size:
            raise r.fail(f"{field}: COO", f"row has {src.size} entries but col has {dst.size}", at)
        src, dst = _edge_order(r, src, dst, m["data"], f"{field}: COO", at)
        got["coo"] = (m["num_rows"], m["num_cols"], src, dst)
    for code, name in ((CSR_CODE, "CSR"), (CSC_CODE, "CSC")):
        if not saved & code:
            continue
        _read_metagraph(r, f"{field}: {name} metagraph")
        at = r.pos
        m = _read_csr_matrix(r, f"{field}: {name}")
        indptr = _id_array(r, m["indptr"], f"{field}: {name} indptr", at)
        indices = _id_array(r, m["indices"], f"{field}: {name} indices", at)
        nrows = m["num_rows"]
        if nrows < 0 or indptr.size != nrows + 1:
            raise r.fail(f"{field}: {name} indptr", f"indptr has {indptr.size} entries; expected num_rows + 1 = {nrows + 1}", at)
        if indptr[0] != 0 or indptr[-1] != indices.size or np.any(np.diff(indptr) < 0):
            raise r.fail(
                f"{field}: {name} indptr",
                f"indptr must start at 0, never decrease and end at the {indices.size} indices", at,
            )
        rows = np.repeat(np.arange(nrows, dtype=np.int64), np.diff(indptr))
        rows, indices = _edge_order(r, rows, indices, m["data"], f"{field}: {name}", at)
        if name == "CSR":
            got["csr"] = (nrows, m["num_cols"], rows, indices)
        else:  # the in-edge CSR stores the transposed matrix: rows are destinations
            got["csc"] = (m["num_cols"], nrows, indices, rows)
    return next(got[k] for k in ("coo", "csr", "csc") if k in got)


def _check_ids(r: _Reader, ids: np.ndarray, n: int, field: str) -> None:
    if ids.size and (int(ids.min()) < 0 or int(ids.max()) >= n):
        bad = ids[(ids < 0) | (ids >= n)]
        raise DatasetError(
            f"{r.path}: {field}: {bad.size} node id(s) out of range (e.g. {int(bad[0])}); "
            f"expected 0..{n - 1} for {n} nodes"
        )


def read_dgl_graph(path: str | os.PathLike) -> dict[str, Any]:
    """Parse a homogeneous graph saved by ``dgl.save_graphs`` (format version 2) without DGL.

    Every count read from the file is checked against the bytes left and against the other counts;
    anything inconsistent raises :class:`~magkit.exceptions.DatasetError` naming the file, the byte
    offset, the field and what was expected.

    Args:
        path: the ``.pt``/``.bin`` file written by ``dgl.save_graphs`` (one graph, one node and edge type).

    Returns:
        A dict with ``src`` / ``dst`` (int64 ``[E]``, in DGL's edge-id order, as stored: directed, possibly
        with self-loops and duplicates), ``num_nodes`` (int), ``ndata`` / ``edata`` (``{name: ndarray}``,
        first dimension ``N`` / ``E``), ``graph_labels`` (the ``labels`` dict passed to ``save_graphs``),
        ``ntypes`` and ``etypes`` (lists of names).
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DatasetError(f"{path}: cannot read the DGL graph file ({exc.strerror or exc})") from exc
    return parse_dgl_bytes(data, path)


def parse_dgl_bytes(data: bytes, path: str | os.PathLike = "<bytes>") -> dict[str, Any]:
    """:func:`read_dgl_graph` on the file's bytes; ``path`` only names the source in error messages."""
    path = Path(path)
    r = _Reader(data, path)

    # metadata block: magic, version, graph type, number of graphs, then reserved bytes up to 4 KiB
    r.magic(GRAPH_MAGIC, "DGL graph file magic")
    at = r.pos
    version = r.u64("format version")
    if version != DGL_VERSION:
        raise r.fail("format version", f"version {version} is not supported; expected {DGL_VERSION} "
                     "(files written by dgl.save_graphs since DGL 0.5)", at)
    at = r.pos
    gtype = r.u64("graph type")
    if gtype != HETEROGRAPH_TYPE:
        raise r.fail("graph type", f"graph type {gtype} is not supported; expected {HETEROGRAPH_TYPE} (DGLGraph)", at)
    at = r.pos
    num_graphs = r.u64("number of graphs")
    if num_graphs != 1:
        raise r.fail("number of graphs", f"the file holds {num_graphs} graphs; expected exactly 1", at)
    r.need(META_SIZE - r.pos, "reserved metadata block")
    r.pos = META_SIZE

    at = r.pos
    gdata_start = r.u64("graph data start position")
    graph_labels = r.named_tensors("graph labels")
    if gdata_start != r.pos:
        raise r.fail("graph data start position",
                     f"recorded as {gdata_start} but the label dict ends at {r.pos}", at)

    # HeteroGraphData: HeteroGraph, node tensors, edge tensors, ntype names, etype names
    r.magic(HETEROGRAPH_MAGIC, "heterograph magic")
    at = r.pos
    n_ntypes, n_etypes = _read_metagraph(r, "heterograph metagraph")
    if n_ntypes != 1 or n_etypes != 1:
        raise r.fail("heterograph metagraph", f"the graph has {n_ntypes} node type(s) and {n_etypes} edge type(s); "
                     "only homogeneous graphs (1 and 1) are supported", at)
    at = r.pos
    n_rel = r.count("relation graph count", 8)
    if n_rel != 1:
        raise r.fail("relation graph count", f"{n_rel} relation graphs; expected 1", at)
    num_src, num_dst, src, dst = _read_unit_graph(r, "relation graph 0")
    at = r.pos
    nvt = r.count("nodes per type count", 8)
    if nvt != 1:
        raise r.fail("nodes per type count", f"{nvt} node types; expected 1", at)
    at = r.pos
    num_nodes = r.i64("number of nodes")
    if num_nodes < 0 or num_src != num_nodes or num_dst != num_nodes:
        raise r.fail("number of nodes", f"the graph records {num_nodes} nodes but its adjacency matrix is "
                     f"{num_src} x {num_dst}; expected both equal", at)
    _check_ids(r, src, num_nodes, "source node ids")
    _check_ids(r, dst, num_nodes, "destination node ids")

    at = r.pos
    n_nt = r.count("node tensor groups", 8)
    if n_nt != 1:
        raise r.fail("node tensor groups", f"{n_nt} groups; expected 1 (one node type)", at)
    ndata = r.named_tensors("node data")
    at = r.pos
    n_et = r.count("edge tensor groups", 8)
    if n_et != 1:
        raise r.fail("edge tensor groups", f"{n_et} groups; expected 1 (one edge type)", at)
    edata = r.named_tensors("edge data")
    ntypes = [r.string(f"node type name {i}") for i in range(r.count("node type names", 8))]
    etypes = [r.string(f"edge type name {i}") for i in range(r.count("edge type names", 8))]
    if len(ntypes) != 1 or len(etypes) != 1:
        raise r.fail("type names", f"{len(ntypes)} node type and {len(etypes)} edge type names; expected 1 and 1")

    # trailer: the graph-index blob as a string (u64 length + vector<u64>), then the blob's length
    at = r.pos
    blob_len = r.count("graph index blob length", 1)
    blob_end = r.pos + blob_len
    n_idx = r.count("graph index count", 8)
    idx = [r.u64(f"graph index {i}") for i in range(n_idx)]
    if r.pos != blob_end or idx != [gdata_start]:
        raise r.fail("graph index blob", f"expected one graph index {gdata_start} in {blob_len} bytes, "
                     f"got {idx}", at)
    at = r.pos
    tail = r.u64("graph index blob length (trailer)")
    if tail != blob_len:
        raise r.fail("graph index blob length (trailer)", f"{tail} disagrees with {blob_len}", at)
    if r.pos != r.size:
        raise r.fail("end of file", f"{r.size - r.pos} unexpected byte(s) after the graph data")

    for key, arr in ndata.items():
        if arr.ndim == 0 or arr.shape[0] != num_nodes:
            raise DatasetError(f"{path}: node data {key!r} has shape {arr.shape}; expected first dimension "
                               f"= number of nodes {num_nodes}")
    for key, arr in edata.items():
        if arr.ndim == 0 or arr.shape[0] != src.size:
            raise DatasetError(f"{path}: edge data {key!r} has shape {arr.shape}; expected first dimension "
                               f"= number of edges {src.size}")
    return {
        "src": src, "dst": dst, "num_nodes": int(num_nodes), "ndata": ndata, "edata": edata,
        "graph_labels": graph_labels, "ntypes": ntypes, "etypes": etypes,
    }


# ---------------------------------------------------------------------- MAGB datasets
def _norm(name: str) -> str:
    return "".join(ch for ch in name.lower() if ch.isalnum())


def magb_name(name: str) -> str:
    """The canonical MAGB dataset name (``grocery`` -> ``Grocery``, ``reddits`` -> ``Reddit-S``)."""
    if isinstance(name, str):
        for canon in MAGB_DATASETS:
            if _norm(name) == _norm(canon):
                return canon
    raise DatasetError(f"name: unknown MAGB dataset {name!r}; allowed: {', '.join(MAGB_DATASETS)}")


def dataset_dir(root: str | os.PathLike, name: str) -> Path:
    """``<root>/<Name>``, matching the folder name case- and dash-insensitively."""
    root = Path(root)
    exact = root / name
    if exact.is_dir():
        return exact
    if root.is_dir():
        for child in sorted(root.iterdir()):
            if child.is_dir() and _norm(child.name) == _norm(name):
                return child
    return exact


def _graph_file(folder: Path, name: str) -> Path:
    f = folder / f"{name}Graph.pt"
    if f.is_file():
        return f
    if folder.is_dir():
        for cand in sorted(folder.glob("*Graph.pt")):
            if _norm(cand.name) == _norm(f"{name}Graph.pt"):
                return cand
    found = sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []
    raise DatasetError(
        f"MAGB {name}: graph file not found: expected {f}"
        + (f" (the folder holds: {', '.join(found[:20])})" if found else f" (folder {folder} does not exist)")
    )


def _labels(parsed: dict[str, Any], path: Path) -> np.ndarray:
    ndata = parsed["ndata"]
    if "label" not in ndata:
        raise DatasetError(f"{path}: no node data named 'label'; found: {', '.join(ndata) or 'none'}")
    y = ndata["label"]
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1 or y.dtype.kind not in "iu":
        raise DatasetError(f"{path}: node data 'label' must be 1-D integer class ids, got shape {y.shape} "
                           f"dtype {y.dtype}")
    y = y.astype(np.int64)
    if y.size and y.min() < -1:
        raise DatasetError(f"{path}: node data 'label' has value {int(y.min())}; expected class ids >= 0 "
                           "(or -1 for unknown)")
    return y


def load_magb_structure(root: str | os.PathLike, name: str) -> tuple[Tensor, Tensor, int]:
    """The structure and labels of a MAGB graph, from ``<root>/<Name>/<Name>Graph.pt`` alone.

    Returns:
        ``(edge_index, y, num_classes)``: ``edge_index`` long ``[2, E]`` undirected (both directions),
        coalesced, without self-loops; ``y`` long ``[N]``; ``num_classes = max(y) + 1``.
    """
    canon = magb_name(name)
    path = _graph_file(dataset_dir(root, canon), canon)
    return magb_structure(read_dgl_graph(path), path)


def magb_structure(parsed: dict[str, Any], path: str | os.PathLike = "<bytes>") -> tuple[Tensor, Tensor, int]:
    """``(edge_index, y, num_classes)`` of a parsed DGL graph (:func:`parse_dgl_bytes`): edges canonicalised
    (self-loops and duplicates dropped and logged), the class count checked before anything is allocated."""
    path = Path(path)
    y = _labels(parsed, path)
    n = parsed["num_nodes"]
    ei = torch.from_numpy(np.stack([parsed["src"], parsed["dst"]]))
    edge_index, _ = canonical_edges(ei, n, source=str(path))
    num_classes = check_class_count(int(y.max()) + 1 if y.size else 0, n, str(path), "node data 'label'")
    return edge_index, torch.from_numpy(y), num_classes


def _pick_feature_file(folder: Path, spec: str | os.PathLike | None, modality: str, name: str) -> Path | None:
    """A feature file: an explicit path, a stem/encoder substring within ``folder``, or the first file.

    ``None`` when ``folder`` has no ``.npy`` file at all.
    """
    if spec is not None:
        p = Path(spec)
        if p.suffix == ".npy" or p.is_absolute() or len(p.parts) > 1:
            if p.is_file():
                return p
            if (folder / p).is_file():
                return folder / p
            raise DatasetError(f"{modality}_features: file {spec} does not exist")
    files = sorted(folder.glob("*.npy")) if folder.is_dir() else []
    if not files:
        return None
    if spec is None:
        if len(files) > 1:
            log.info("MAGB %s: %d %s feature files, using the first: %s", name, len(files), modality, files[0].name)
        return files[0]
    key = str(spec).lower()
    exact = [f for f in files if f.stem.lower() == key]
    hits = exact or [f for f in files if key in f.name.lower()]
    if len(hits) == 1:
        return hits[0]
    listing = ", ".join(f.name for f in files)
    if not hits:
        raise DatasetError(f"{modality}_features: {spec!r} matches no file in {folder}; available: {listing}")
    raise DatasetError(f"{modality}_features: {spec!r} matches {len(hits)} files in {folder} "
                       f"({', '.join(f.name for f in hits)}); give a longer substring or the file name")


@contextlib.contextmanager
def _csv_field_limit(limit: int) -> Iterator[None]:
    old = csv.field_size_limit()
    csv.field_size_limit(max(old, limit))
    try:
        yield
    finally:
        csv.field_size_limit(old)


_TEXT_COLUMNS = ("text", "title", "description", "caption")


def _read_texts(path: Path, num_nodes: int) -> list[str] | None:
    """The first text-like column of the MAGB CSV, one string per node; ``None`` when it has none."""
    try:
        with _csv_field_limit(2**31 - 1), path.open(newline="", encoding="utf-8") as fh:
            reader = csv.reader(fh)
            header = next(reader, None)
            if header is None:
                raise DatasetError(f"{path}: the CSV file is empty; expected a header and {num_nodes} rows")
            lower = [h.strip().lower() for h in header]
            col = next((lower.index(c) for c in _TEXT_COLUMNS if c in lower), None)
            if col is None:
                log.info("%s: no text column (%s) in %s; raw_text not set", path, "/".join(_TEXT_COLUMNS), header)
                return None
            texts = [row[col] if col < len(row) else "" for row in reader]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DatasetError(f"{path}: cannot read the node texts ({one_line(exc)})") from exc
    if len(texts) != num_nodes:
        raise DatasetError(f"{path}: {len(texts)} text rows; expected one per node ({num_nodes})")
    return texts


def load_magb(
    root: str | os.PathLike,
    name: str,
    text_features: str | os.PathLike | None = None,
    image_features: str | os.PathLike | None = None,
    split: str = "magb",
    seed: int = 0,
    raw_text: bool = True,
) -> MultimodalGraph:
    """Load a MAGB dataset (``Movies``, ``Toys``, ``Grocery``, ``Reddit-S``, ``Reddit-M``) as a multimodal graph.

    Args:
        root: the folder holding ``<Name>/`` (case-insensitive).
        name: the dataset name (case-insensitive, ``reddit-s``/``RedditS`` both work).
        text_features: a ``.npy`` path, or a file stem / encoder substring (``"roberta"``) picking one file in
            ``<root>/<Name>/TextFeature/``, or ``None`` for the first file there (sorted by name).
        image_features: the same for ``<root>/<Name>/ImageFeature/``.
        split: a split spec for :func:`~magkit.data.splits.apply_split` (default MAGB's 60/20/20).
        seed: the split seed.
        raw_text: also read the node texts of ``<Name>.csv`` when present (attribute ``raw_text``).

    Features are memory-mapped and cast to float32 in chunks (the hub's files are float64); each must have
    one finite row per node. Every modality is marked present for every node (MAGB ships all of them).
    """
    canon = magb_name(name)
    folder = dataset_dir(root, canon)
    gpath = _graph_file(folder, canon)
    parsed = read_dgl_graph(gpath)
    n = parsed["num_nodes"]
    files, missing = {}, []
    for m, sub, spec in (("text", "TextFeature", text_features), ("image", "ImageFeature", image_features)):
        f = _pick_feature_file(folder / sub, spec, m, canon)
        if f is not None:
            files[m] = f
            continue
        where = folder / sub
        state = "does not exist" if not where.is_dir() else "has no .npy file"
        example = f"{canon}_<encoder>{'_<maxlen>_mean' if m == 'text' else ''}.npy"
        missing.append(f"no {m} features: expected {where}{os.sep}*.npy (e.g. {example}) but the folder {state}")
    if missing:
        raise DatasetError(
            f"MAGB {canon}: " + "; ".join(missing) + ". Download the feature files of the MAGB benchmark "
            f"(Hugging Face dataset Sherirto/MAGB) into {folder}, or use load_magb_structure(root, {canon!r}) "
            "for the structure and labels only."
        )
    edge_index, y_t, num_classes = magb_structure(parsed, gpath)
    feats = {m: torch.from_numpy(load_feature_matrix(f, n, field=f"{m} features")) for m, f in files.items()}
    graph = MultimodalGraph(feats, edge_index, y_t, num_classes=num_classes, name=f"magb:{canon}",
                            canonicalize_edges=False)
    graph.meta = {**graph.meta, "feature_files": {m: f.name for m, f in files.items()}}
    csv_path = folder / f"{canon}.csv"
    if raw_text and csv_path.is_file():
        texts = _read_texts(csv_path, n)
        if texts is not None:
            graph.raw_text = texts
    return apply_split(graph, split, seed)
