"""Graphs whose feature blocks stay on disk: memory-mapped ``.npy`` blocks read as float32 in chunks.

The ``mmap:DIR`` layout (``docs/data_formats.md``)::

    DIR/meta.json                     optional: name, num_classes, class_names, modality order, edges flag,
                                      sha256 of every file (written by save_mmap_graph, checked on load)
    DIR/y.npy                         int [N] class ids (-1 = unknown); N is the node count
    DIR/edge_index.npy                int [2, E] node pairs
    DIR/features/<m>.npy              [N, d_m] any float (or integer) dtype: float16, float32, float64, ...
    DIR/features/<m>_present.npy      optional bool [N]: which nodes have modality m (default: all)
    DIR/train_mask.npy, val_mask.npy, test_mask.npy   optional bool [N] (all three or none)

Structure, labels, presence and splits are read into memory (O(N + E)); each feature block is opened with
``numpy.load(mmap_mode="r")`` and wrapped in a :class:`MappedFeatures`, which the graph keeps as its
``x_<m>`` field. A :class:`MappedFeatures` never materialises the block by itself: ``x[idx]`` gathers the
requested rows and casts them to a float32 tensor in chunks of at most ``chunk_bytes`` of the stored dtype,
``x.rows(a, b)`` reads a row range, ``x.columns(a, b)`` a column range (row chunk by row chunk), and
``x.materialize()`` reads everything (explicitly).

Mini-batch training (``batch_size`` set) on such a graph reads only the sampled rows of every batch; full-batch
training reads each block into memory once (it needs all of it anyway).

Trust. Every ``.npy`` header is checked against the file's size before anything is read (a truncated file or
an implausible shape is a :class:`~magkit.exceptions.DatasetError`, never an allocation); labels, edge ids and
masks are checked for type and range; ``meta.json`` values are type-checked. :func:`save_mmap_graph` records a
sha256 per file and one over ``meta.json``'s other fields; :func:`load_mmap_graph` checks them (``verify=True``,
one sequential read of every file at disk/page-cache speed) so a flipped bit anywhere is reported, not trained
on. The edge list's "undirected-coalesced" claim is checked exactly, in chunks
(:func:`~magkit.data.graph.is_undirected_coalesced`: sorted, unique, no self-loops, symmetric; the answer is
kept for the later :func:`~magkit.data.graph.validate` and neighbour sampler); a list that breaks it is
canonicalised and the dropped edges are logged. :func:`save_mmap_graph` writes into a
temporary folder beside the target and renames it into place only when complete, so a failed write (a full
disk included) leaves the previous graph intact.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..exceptions import DatasetError, StorageError
from ..integrity import file_digest
from .graph import one_line
from .mapped import (
    DEFAULT_CHUNK_BYTES,
    DEFAULT_RESIDENT_BYTES,
    MappedFeatures,
    native_order,
    npy_header,
)

log = logging.getLogger(__name__)

FORMAT = "magkit-mmap"
FORMAT_VERSION = 1
_SPLITS = ("train", "val", "test")


def _read_small(path: Path, what: str, shape_text: str, *, kind: str) -> np.ndarray:
    if not path.is_file():
        raise DatasetError(f"{what}: {path} does not exist; expected a {shape_text} .npy array")
    _, dtype, _ = npy_header(path, what)
    names = {"iu": "an integer", "b": "a bool", "biu": "a bool or 0/1 integer"}
    if dtype.kind not in kind:
        raise DatasetError(f"{what}: {path} has dtype {dtype}; expected {names.get(kind, kind)} {shape_text} array")
    try:
        arr = native_order(np.load(path, allow_pickle=False))
    except (OSError, ValueError, EOFError) as exc:
        raise DatasetError(f"{what}: {path} is not a readable .npy array ({one_line(exc)})") from exc
    if kind == "biu" and arr.dtype.kind != "b" and arr.size and (int(arr.min()) < 0 or int(arr.max()) > 1):
        bad = arr[(arr < 0) | (arr > 1)]
        raise DatasetError(f"{what}: {path} holds value {int(bad[0])}; expected a bool or 0/1 {shape_text} array")
    if kind == "b" or (kind == "biu" and arr.dtype.kind == "b"):
        raw = arr.view(np.uint8) if arr.dtype.kind == "b" else arr
        if raw.size and int(raw.max()) > 1:  # a bool byte other than 0/1: a damaged file
            raise DatasetError(f"{what}: {path} holds bool byte {int(raw.max())}; expected 0 or 1")
    return arr


def _meta(folder: Path) -> dict:
    path = folder / "meta.json"
    if not path.is_file():
        return {}
    try:
        meta = json.loads(path.read_bytes().decode("utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise DatasetError(f"mmap graph: {path} is not valid UTF-8 JSON ({one_line(exc)})") from None
    if not isinstance(meta, dict):
        raise DatasetError(f"mmap graph: {path} holds a {type(meta).__name__}; expected a JSON object")
    if meta.get("format", FORMAT) != FORMAT:
        raise DatasetError(f"mmap graph: {path} has format {meta.get('format')!r}; expected {FORMAT!r}")
    _check_meta(meta, path)
    return meta


_MODALITY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _check_meta(meta: dict, path: Path) -> None:
    """Type-check the values of ``meta.json`` (unknown keys, e.g. a generator's, are kept as they are)."""
    def bad(key: str, allowed: str) -> DatasetError:
        return DatasetError(f"mmap graph: {path} field {key!r} is {json.dumps(meta[key])[:80]}; allowed: {allowed}")

    if "version" in meta and not (_is_int(meta["version"]) and 1 <= meta["version"] <= FORMAT_VERSION):
        raise bad("version", f"an integer 1..{FORMAT_VERSION}")
    if "num_nodes" in meta and not (_is_int(meta["num_nodes"]) and meta["num_nodes"] >= 1):
        raise bad("num_nodes", "an integer >= 1")
    if meta.get("num_classes") is not None:
        from .graph import MAX_CLASSES

        if not (_is_int(meta["num_classes"]) and 1 <= meta["num_classes"] <= MAX_CLASSES):
            raise bad("num_classes", f"an integer 1..{MAX_CLASSES}")
    if meta.get("name") is not None and not isinstance(meta["name"], str):
        raise bad("name", "a string")
    if meta.get("class_names") is not None:
        names = meta["class_names"]
        if not (isinstance(names, list) and all(isinstance(c, str) for c in names)):
            raise bad("class_names", "a list of strings")
        if meta.get("num_classes") is not None and len(names) != meta["num_classes"]:
            raise bad("class_names", f"one name per class ({meta['num_classes']})")
    if meta.get("modalities") is not None:
        mods = meta["modalities"]
        if not (isinstance(mods, list) and mods and all(isinstance(m, str) and _MODALITY.match(m)
                                                        and not m.endswith("_present") for m in mods)):
            raise bad("modalities", "a non-empty list of names (letters, digits, '_', '-', '.'; not *_present)")
        if len(set(mods)) != len(mods):
            raise bad("modalities", "unique names")
    if "edges" in meta and meta["edges"] not in (None, "undirected-coalesced", "raw"):
        raise bad("edges", "'undirected-coalesced' or 'raw'")
    if "sha256" in meta:
        sha = meta["sha256"]
        ok = isinstance(sha, dict) and isinstance(sha.get("files"), dict) and isinstance(sha.get("meta"), str)
        ok = ok and all(isinstance(k, str) and isinstance(v, str) and re.fullmatch(r"[0-9a-f]{64}", v)
                        for k, v in {**sha["files"], "meta": sha["meta"]}.items())
        if not ok:
            raise bad("sha256", '{"files": {relative path: 64 hex digits}, "meta": 64 hex digits}')


def _meta_digest(meta: dict) -> str:
    body = {k: v for k, v in meta.items() if k != "sha256"}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def _verify(folder: Path, meta: dict, used: list[Path]) -> None:
    """Check the digests recorded in ``meta.json`` against the files (and that every file read is covered)."""
    sha = meta.get("sha256")
    if sha is None:
        log.info("mmap graph %s: meta.json records no sha256; its files are not verified", folder)
        return
    if _meta_digest(meta) != sha["meta"]:
        raise DatasetError(f"mmap graph: {folder / 'meta.json'} does not match its sha256 (edited or damaged); "
                           "rewrite the graph with save_mmap_graph, or load with verify=False to accept it")
    files = sha["files"]
    for p in used:
        rel = p.relative_to(folder).as_posix()
        want = files.get(rel)
        if want is None:
            raise DatasetError(f"mmap graph: {p} is not covered by meta.json's sha256; expected only the files "
                               f"save_mmap_graph wrote ({', '.join(sorted(files))}), or load with verify=False")
        if file_digest(p) != want:
            raise DatasetError(f"mmap graph: {p} does not match its sha256 in meta.json (damaged or replaced); "
                               "load with verify=False to accept it")


def load_mmap_graph(folder: str | os.PathLike, split: str | None = None, seed: int = 0, name: str | None = None,
                    chunk_bytes: int = DEFAULT_CHUNK_BYTES, resident_bytes: int = DEFAULT_RESIDENT_BYTES,
                    verify: bool = True):
    """Open a graph stored in the ``mmap:DIR`` layout (module docstring); feature blocks stay on disk.

    Args:
        folder: the graph folder.
        split: a split spec to apply; ``None`` keeps the stored masks (or applies ``"magb"`` when there are none).
        seed: the split seed.
        name: the dataset name (default ``mmap:<folder>``).
        chunk_bytes, resident_bytes: passed to every :class:`MappedFeatures`.
        verify: check every file against the sha256 recorded in ``meta.json`` (default ``True``; one
            sequential read of the folder; graphs without recorded digests are not verified).

    Raises:
        DatasetError: a missing, truncated, mis-shaped or damaged file, or a bad ``meta.json`` value; the message
            names the file, the field and what was expected.
    """
    from .graph import MultimodalGraph, canonical_edges, check_class_count, is_undirected_coalesced
    from .splits import apply_split

    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise DatasetError(f"mmap graph: folder {folder} does not exist; expected y.npy, edge_index.npy, features/<m>.npy")
    meta = _meta(folder)
    used: list[Path] = []
    y_path = folder / "y.npy"
    y = _read_small(y_path, "labels", "[N]", kind="iu")
    used.append(y_path)
    if y.ndim != 1 or y.size == 0:
        raise DatasetError(f"labels: {y_path} has shape {tuple(y.shape)}; expected [N] (one label per node)")
    n = int(y.size)
    if "num_nodes" in meta and meta["num_nodes"] != n:
        raise DatasetError(f"labels: {y_path} has shape ({n},); expected [{meta['num_nodes']}] (meta.json num_nodes)")
    if int(y.min()) < -1:
        raise DatasetError(f"labels: {y_path} holds class id {int(y.min())}; allowed: ids >= 0, or -1 for unknown")
    top = int(y.max()) + 1
    if meta.get("num_classes") is not None:
        if top > meta["num_classes"]:
            raise DatasetError(f"labels: {y_path} holds class id {top - 1}; allowed: 0..{meta['num_classes'] - 1} "
                               "(meta.json num_classes)")
        check_class_count(meta["num_classes"], n, str(folder / "meta.json"), "num_classes")
    else:
        check_class_count(top, n, str(y_path), "labels")

    ei_path = folder / "edge_index.npy"
    if not ei_path.is_file():
        raise DatasetError(f"edges: {ei_path} does not exist; expected an integer [2, E] .npy array")
    ei = _read_small(ei_path, "edges", "[2, E]", kind="iu")
    used.append(ei_path)
    if ei.ndim != 2 or ei.shape[0] != 2:
        raise DatasetError(f"edges: {ei_path} has shape {tuple(ei.shape)}; expected [2, E]")
    if ei.size and (int(ei.min()) < 0 or int(ei.max()) >= n):
        raise DatasetError(f"edges: {ei_path} holds node ids {int(ei.min())}..{int(ei.max())}; expected 0..{n - 1}")

    fdir = folder / "features"
    mods = meta.get("modalities")
    if mods is None:
        mods = [p.stem for p in sorted(fdir.glob("*.npy")) if not p.stem.endswith("_present")]
    if not mods:
        raise DatasetError(f"features: no feature block in {fdir}; expected {fdir}/<modality>.npy, [{n}, d] each")
    feats: dict[str, MappedFeatures] = {}
    presence: dict[str, Tensor] = {}
    for m in mods:
        feats[m] = MappedFeatures(fdir / f"{m}.npy", num_nodes=n, field=f"features[{m!r}]",
                                  chunk_bytes=chunk_bytes, resident_bytes=resident_bytes)
        used.append(fdir / f"{m}.npy")
        ppath = fdir / f"{m}_present.npy"
        if ppath.exists():
            p = _read_small(ppath, f"presence[{m!r}]", f"bool [{n}]", kind="biu")
            used.append(ppath)
            if p.shape != (n,):
                raise DatasetError(f"presence[{m!r}]: {ppath} has shape {tuple(p.shape)}; expected [{n}]")
            presence[m] = torch.from_numpy(p.astype(bool))

    masks = [folder / f"{s}_mask.npy" for s in _SPLITS]
    have = [p.is_file() for p in masks]
    if any(have) and not all(have):
        missing = [str(p) for p, h in zip(masks, have) if not h]
        raise DatasetError(f"splits: {', '.join(missing)} missing; expected all of train/val/test_mask.npy or none")
    stored = {}
    if all(have):
        for s, p in zip(_SPLITS, masks):
            arr = _read_small(p, f"{s} split", f"bool [{n}]", kind="biu")
            used.append(p)
            if arr.shape != (n,):
                raise DatasetError(f"{s} split: {p} has shape {tuple(arr.shape)}; expected bool [{n}]")
            stored[s] = torch.from_numpy(arr.astype(bool))
    if verify:
        _verify(folder, meta, used)

    edge_index = torch.from_numpy(ei.astype(np.int64, copy=False))
    if not (meta.get("edges") == "undirected-coalesced" and is_undirected_coalesced(edge_index, n)):
        if meta.get("edges") == "undirected-coalesced":
            log.warning("%s: the edge list is not undirected-coalesced as meta.json claims; canonicalising it", ei_path)
        edge_index, _ = canonical_edges(edge_index, n, source=str(ei_path))
    graph = MultimodalGraph(
        feats, edge_index, torch.from_numpy(y.astype(np.int64, copy=False)),
        num_classes=meta.get("num_classes"), modality_mask=presence, class_names=meta.get("class_names"),
        name=name or meta.get("name") or f"mmap:{folder}", canonicalize_edges=False,
    )
    graph._set_meta(mmap_dir=str(folder))
    if split is None and stored:
        for s, m in stored.items():
            graph[f"{s}_mask"] = m & (graph.y >= 0)
        graph._set_meta(split="file")
        return graph
    return apply_split(graph, split or "magb", seed)


def _write_npy(path: Path, arr: np.ndarray) -> None:
    with open(path, "wb") as fh:
        np.save(fh, arr, allow_pickle=False)


def _is_graph_folder(folder: Path) -> bool:
    return (folder / "meta.json").is_file() or ((folder / "y.npy").is_file() and (folder / "edge_index.npy").is_file())


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save_mmap_graph(graph, folder: str | os.PathLike, dtype: str | np.dtype | Mapping[str, Any] | None = None,
                    chunk_rows: int = 65536) -> Path:
    """Write ``graph`` in the ``mmap:DIR`` layout (feature blocks row chunk by row chunk), atomically.

    Everything is written into a temporary folder beside ``folder``, fsynced, then renamed into place; an
    existing graph there is replaced only once the new one is complete. ``meta.json`` records the sha256 of
    every file (checked by :func:`load_mmap_graph`). Saving over the folder the graph was loaded from works
    (the old files stay mapped until released).

    Args:
        graph: a :class:`~magkit.data.graph.MultimodalGraph` (in RAM or mapped).
        folder: the target folder (created; an existing ``mmap:`` graph folder is replaced as a whole; a
            non-empty folder that holds no graph is refused).
        dtype: the stored dtype of every block, or ``{modality: dtype}`` (default: float32).
        chunk_rows: rows per write step of a feature block (default ``65536``).

    Raises:
        StorageError: the write failed (no space left on device, permissions, ...); the previous graph at
            ``folder``, if any, is unchanged and no temporary files remain.
        DatasetError: ``folder`` is a non-empty folder that is not a graph folder.
    """
    folder = Path(folder)
    if folder.exists() and (not folder.is_dir() or (any(folder.iterdir()) and not _is_graph_folder(folder))):
        raise DatasetError(f"save_mmap_graph: {folder} exists and is not an mmap graph folder; refusing to replace "
                           "it (allowed: a new path, an empty folder, or a folder written by save_mmap_graph)")
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.partial-", dir=folder.parent))
    old: Path | None = None
    try:
        files: list[Path] = []

        def put(rel: str, arr: np.ndarray) -> None:
            _write_npy(tmp / rel, arr)
            files.append(tmp / rel)

        (tmp / "features").mkdir()
        for m in graph.modalities:
            want = np.dtype((dtype.get(m) if isinstance(dtype, Mapping) else dtype) or np.float32)
            x = graph.feature(m)
            write_npy_chunks(tmp / "features" / f"{m}.npy", (int(x.size(0)), int(x.size(1))), want,
                             (x[a:a + chunk_rows] for a in range(0, int(x.size(0)), chunk_rows)))
            files.append(tmp / "features" / f"{m}.npy")
            put(f"features/{m}_present.npy", graph.presence(m).numpy())
        put("y.npy", graph.y.numpy())
        put("edge_index.npy", graph.edge_index.numpy())
        for s in _SPLITS:
            mask = graph.get(f"{s}_mask")
            if mask is not None:
                put(f"{s}_mask.npy", mask.numpy())
        meta = {
            "format": FORMAT, "version": FORMAT_VERSION, "name": graph.name, "num_nodes": graph.num_nodes,
            "num_classes": graph.num_classes, "class_names": list(graph.class_names) if graph.class_names else None,
            "modalities": list(graph.modalities), "edges": "undirected-coalesced",
        }
        digests = {}
        for f in files:
            _fsync(f)
            digests[f.relative_to(tmp).as_posix()] = file_digest(f)
        meta["sha256"] = {"files": digests, "meta": _meta_digest(meta)}
        with open(tmp / "meta.json", "w") as fh:
            fh.write(json.dumps(meta, indent=2) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        _fsync(tmp / "features")
        _fsync(tmp)
        if folder.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{folder.name}.old-", dir=folder.parent))
            os.replace(folder, old / folder.name)
        os.replace(tmp, folder)
        _fsync(folder.parent)
    except BaseException as exc:
        if old is not None and (old / folder.name).exists() and not folder.exists():
            os.replace(old / folder.name, folder)  # put the previous graph back
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        if not isinstance(exc, OSError):
            raise
        what = "no space left on device" if exc.errno == errno.ENOSPC else (exc.strerror or str(exc))
        raise StorageError(f"save_mmap_graph: writing {folder} failed ({what}); "
                           f"{'the previous graph there is unchanged' if folder.exists() else 'nothing was written'}") from None
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return folder


def write_npy_chunks(path: str | os.PathLike, shape: tuple[int, int], dtype, chunks) -> None:
    """Write a ``.npy`` array of ``shape``/``dtype`` sequentially from an iterable of row chunks (tensors or
    arrays, in order), never holding more than one chunk; checks the row total."""
    dtype = np.dtype(dtype)
    path = Path(path)
    rows = 0
    with open(path, "wb") as fh:
        np.lib.format.write_array_header_1_0(
            fh, {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": tuple(shape)})
        for chunk in chunks:
            arr = chunk.numpy() if isinstance(chunk, Tensor) else np.asarray(chunk)
            if arr.ndim != 2 or arr.shape[1] != shape[1]:
                raise ValueError(f"{path}: chunk of shape {arr.shape}; expected [rows, {shape[1]}]")
            fh.write(np.ascontiguousarray(arr, dtype=dtype).tobytes())
            rows += arr.shape[0]
    if rows != shape[0]:
        raise ValueError(f"{path}: wrote {rows} rows; expected {shape[0]}")
