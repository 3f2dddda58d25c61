"""MM-Graph benchmark reader (node-classification datasets ``ele-fashion``, ``books-nc``, ...).

MM-Graph (Zhu et al., "Multimodal Graph Benchmark", 2024; data on the Hugging Face hub as
``mm-graph-org/mm-graph``) ships each node-classification dataset as::

    <root>/<name>/nc_edges-nodeid.pt        edge list, [E, 2] (or [2, E]) node ids
    <root>/<name>/split.pt                  {"train_idx", "val_idx", "test_idx"} node indices
    <root>/<name>/labels-w-missing.pt       [N] class ids; missing labels as -1 or NaN
    <root>/<name>/<feat>_feat.pt            [N, 2d]: text embedding (first d) | image embedding (last d)
                                            for feat in clip, imagebind, t5vit, t5dino

Every file is read with ``torch.load(weights_only=True)`` (numeric numpy arrays are allowed as well); a
file holding anything but tensors, arrays, numbers, strings, lists and dicts is refused.
"""

from __future__ import annotations

import logging
import os
import pickle
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..exceptions import DatasetError
from .graph import MultimodalGraph, canonical_edges, check_class_count, one_line
from .magb import dataset_dir
from .splits import apply_split

log = logging.getLogger(__name__)

EDGES_FILE = "nc_edges-nodeid.pt"
SPLIT_FILE = "split.pt"
LABELS_FILE = "labels-w-missing.pt"
FEATURE_SUFFIX = "_feat.pt"
_SPLIT_KEYS = {
    "train": ("train_idx", "train", "train_index", "train_mask"),
    "val": ("val_idx", "valid_idx", "val", "valid", "validation", "val_index", "valid_index", "val_mask", "valid_mask"),
    "test": ("test_idx", "test", "test_index", "test_mask"),
}


def _numpy_globals() -> list[Any]:
    """Globals that rebuild plain numpy arrays and scalars (never code), under old and new module names."""
    try:
        from numpy._core import multiarray as ma  # numpy >= 2
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core import multiarray as ma
    out: list[Any] = [np.ndarray, np.dtype]
    out += sorted({type(np.dtype(c)) for c in "?bBhHiIlLqQefdg"}, key=str)  # numeric dtype classes only
    for mod in ("numpy.core.multiarray", "numpy._core.multiarray"):
        out += [(ma._reconstruct, f"{mod}._reconstruct"), (ma.scalar, f"{mod}.scalar")]
    return out


def _check_plain(obj: Any, path: Path, where: str = "the file", depth: int = 0) -> None:
    if depth > 16:
        raise DatasetError(f"{path}: {where} is nested too deeply; expected tensors, arrays, lists and dicts")
    if isinstance(obj, Tensor) or obj is None or isinstance(obj, (bool, int, float, str)):
        return
    if isinstance(obj, (np.ndarray, np.generic)):
        if np.asarray(obj).dtype.kind not in "biuf":
            raise DatasetError(f"{path}: {where} is a numpy array of dtype {obj.dtype}; expected numbers")
        return
    if isinstance(obj, dict):
        for k, v in obj.items():
            _check_plain(v, path, f"{where}[{k!r}]", depth + 1)
        return
    if isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj[:1000]):
            _check_plain(v, path, f"{where}[{i}]", depth + 1)
        for v in obj[1000:]:
            if not isinstance(v, (Tensor, bool, int, float, np.generic)) and v is not None:
                _check_plain(v, path, f"{where}[...]", depth + 1)
        return
    raise DatasetError(f"{path}: {where} is a {type(obj).__name__}; expected tensors, arrays, lists or dicts")


def safe_torch_load(path: str | os.PathLike) -> Any:
    """``torch.load(path, weights_only=True)`` that also accepts numeric numpy arrays, and nothing executable.

    Raises:
        DatasetError: missing or unreadable file, or a pickle that references any other class or function.
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: file does not exist")
    try:
        with torch.serialization.safe_globals(_numpy_globals()):
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        text = str(exc)
        found = re.search(r"GLOBAL ([\w.]+)", text) or re.search(r"but got <class '([^']+)'>", text)
        detail = f"; it references {found.group(1)}" if found else ""
        raise DatasetError(
            f"{path}: refused to load: the file holds objects other than tensors, numeric arrays, lists and dicts"
            f"{detail}; magkit reads .pt files only with torch.load(weights_only=True), which runs no code"
        ) from exc
    except Exception as exc:  # a malformed file can fail anywhere inside the unpickler (IndexError, ...)
        raise DatasetError(f"{path}: not a readable torch file ({type(exc).__name__}: {one_line(exc)})") from exc
    _check_plain(obj, path)
    return obj


def _as_array(obj: Any, path: Path, what: str) -> np.ndarray:
    try:
        if isinstance(obj, Tensor):
            return obj.detach().cpu().numpy()
        if isinstance(obj, (list, tuple)) and obj and isinstance(obj[0], Tensor):
            return torch.stack([torch.as_tensor(t) for t in obj]).numpy()
        arr = np.asarray(obj)
    except (ValueError, TypeError, RuntimeError) as exc:
        raise DatasetError(f"{path}: {what} cannot be read as an array ({one_line(exc)})") from exc
    if arr.dtype.kind not in "biuf":
        raise DatasetError(f"{path}: {what} has dtype {arr.dtype}; expected numbers")
    return arr if arr.dtype.isnative else arr.astype(arr.dtype.newbyteorder("="))


def _whole(arr: np.ndarray) -> bool:
    """Every value a finite whole number that an int64 holds exactly (no truncation, no overflow)."""
    with np.errstate(invalid="ignore"):
        return bool(np.all(np.isfinite(arr)) and np.all(arr == np.round(arr)) and np.all(np.abs(arr) < 2.0**53))


def _feature_file(folder: Path, features: str) -> Path:
    available = sorted(p.name[: -len(FEATURE_SUFFIX)] for p in folder.glob(f"*{FEATURE_SUFFIX}"))
    key = str(features)
    if key.endswith(FEATURE_SUFFIX):
        key = key[: -len(FEATURE_SUFFIX)]
    hit = next((a for a in available if a == key), None) or next((a for a in available if a.lower() == key.lower()), None)
    if hit is None:
        present = ", ".join(sorted(p.name for p in folder.iterdir())) or "nothing"
        raise DatasetError(
            f"features: {features!r} has no file {key}{FEATURE_SUFFIX} in {folder}; "
            f"available: {', '.join(available) or 'none'} (the folder holds: {present})"
        )
    return folder / f"{hit}{FEATURE_SUFFIX}"


def _load_features(path: Path) -> tuple[Tensor, Tensor]:
    x = safe_torch_load(path)
    if not isinstance(x, Tensor):
        x = torch.from_numpy(_as_array(x, path, "the feature matrix"))
    if x.dim() != 2 or x.size(1) % 2 or x.size(1) == 0:
        raise DatasetError(
            f"{path}: feature matrix has shape {tuple(x.shape)}; expected [N, 2d] "
            "(text embedding in the first d columns, image embedding in the last d)"
        )
    if not (x.is_floating_point() or x.dtype in (torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8)):
        raise DatasetError(f"{path}: feature matrix has dtype {x.dtype}; expected a float dtype")
    x = x.to(torch.float32)
    bad = ~torch.isfinite(x)
    if bool(bad.any()):
        rows = bad.any(dim=1).nonzero(as_tuple=True)[0]
        raise DatasetError(f"{path}: {rows.numel()} row(s) with NaN/Inf values (first: row {int(rows[0])}); "
                           "expected finite features")
    d = x.size(1) // 2
    return x[:, :d].contiguous(), x[:, d:].contiguous()


def _load_edges(path: Path, n: int) -> Tensor:
    arr = _as_array(safe_torch_load(path), path, "the edge list")
    if arr.dtype.kind == "f":
        if not _whole(arr):
            raise DatasetError(f"{path}: the edge list holds non-integer values; expected node ids")
    if arr.ndim != 2 or 2 not in arr.shape:
        raise DatasetError(f"{path}: the edge list has shape {arr.shape}; expected [E, 2] or [2, E]")
    ei = arr.T if arr.shape[1] == 2 else arr  # [E, 2] as MM-Graph stores it; [2, E] otherwise
    ei = torch.from_numpy(np.ascontiguousarray(ei).astype(np.int64))
    if ei.numel() and (int(ei.min()) < 0 or int(ei.max()) >= n):
        raise DatasetError(f"{path}: node id {int(ei.min()) if int(ei.min()) < 0 else int(ei.max())} out of "
                           f"range; expected 0..{n - 1} for {n} nodes")
    return ei


def _load_labels(path: Path, n: int) -> Tensor:
    arr = _as_array(safe_torch_load(path), path, "the labels")
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim != 1 or arr.shape[0] != n:
        raise DatasetError(f"{path}: labels have shape {arr.shape}; expected [{n}] (one per node of the features)")
    if arr.dtype.kind == "f":
        missing = ~np.isfinite(arr)
        filled = np.where(missing, -1.0, arr)
        if not _whole(filled):
            raise DatasetError(f"{path}: labels hold non-integer values; expected class ids (NaN or -1 = missing)")
        arr = filled
    y = arr.astype(np.int64)
    y[y < 0] = -1  # every negative value marks a missing label
    return torch.from_numpy(y)


def _index(obj: Any, n: int, path: Path, key: str) -> Tensor:
    arr = _as_array(obj, path, f"split {key!r}").reshape(-1)
    if arr.dtype.kind == "b":
        if arr.size != n:
            raise DatasetError(f"{path}: split {key!r} is a bool mask of {arr.size} entries; expected {n}")
        return torch.from_numpy(np.nonzero(arr)[0].astype(np.int64))
    if arr.dtype.kind == "f" and not _whole(arr):
        raise DatasetError(f"{path}: split {key!r} holds non-integer values; expected node indices")
    idx = arr.astype(np.int64)
    if idx.size and (idx.min() < 0 or idx.max() >= n):
        raise DatasetError(f"{path}: split {key!r} has node index {int(idx.max() if idx.max() >= n else idx.min())}; "
                           f"expected 0..{n - 1}")
    return torch.from_numpy(idx)


def _official_split(path: Path, n: int, y: Tensor) -> dict[str, Tensor]:
    obj = safe_torch_load(path)
    if not isinstance(obj, dict):
        raise DatasetError(f"{path}: the split is a {type(obj).__name__}; expected a dict of train/val/test indices")
    masks: dict[str, Tensor] = {}
    for part, keys in _SPLIT_KEYS.items():
        key = next((k for k in keys if k in obj), None)
        if key is None:
            raise DatasetError(
                f"{path}: no {part} split; expected one of the keys {', '.join(keys)}; "
                f"found: {', '.join(map(str, obj)) or 'none'}"
            )
        m = torch.zeros(n, dtype=torch.bool)
        m[_index(obj[key], n, path, key)] = True
        masks[part] = m
    for a, b in (("train", "val"), ("train", "test"), ("val", "test")):
        both = masks[a] & masks[b]
        if bool(both.any()):
            raise DatasetError(f"{path}: the {a} and {b} splits share {int(both.sum())} node(s) "
                               f"(e.g. node {int(both.nonzero()[0, 0])}); expected disjoint splits")
    labelled = y >= 0
    for part, m in masks.items():
        dropped = int((m & ~labelled).sum())
        if dropped:
            log.info("%s: %d %s node(s) without a label left out of the split", path, dropped, part)
        masks[part] = m & labelled
        if not bool(masks[part].any()):
            raise DatasetError(f"{path}: the {part} split has no labelled node")
    return masks


def load_mmgraph(
    root: str | os.PathLike,
    name: str,
    features: str = "clip",
    split: str = "official",
    seed: int = 0,
) -> MultimodalGraph:
    """Load an MM-Graph node-classification dataset as a two-modality (text, image) graph.

    Args:
        root: the folder holding ``<name>/``.
        name: the dataset folder (``ele-fashion``, ``books-nc``, ...).
        features: the feature set: ``clip``, ``imagebind``, ``t5vit``, ``t5dino`` (any ``<features>_feat.pt``).
        split: ``"official"`` for ``split.pt`` (unlabelled nodes left out), or a split spec for
            :func:`~magkit.data.splits.apply_split` (``magb``, ``rate:0.05``, ...).
        seed: the split seed (split specs only).

    Node ``i``'s text block is the first half of row ``i`` of the feature file and its image block the second
    half; every node has both. Labels missing in the file (``-1``, ``NaN``, any negative value) become ``-1``.
    """
    folder = dataset_dir(root, name)
    if not folder.is_dir():
        raise DatasetError(f"MM-Graph {name}: folder {folder} does not exist")
    fpath = _feature_file(folder, features)
    x_text, x_image = _load_features(fpath)
    n = x_text.size(0)
    y = _load_labels(folder / LABELS_FILE, n)
    edge_index, _ = canonical_edges(_load_edges(folder / EDGES_FILE, n), n, source=str(folder / EDGES_FILE))
    num_classes = int(y.max()) + 1 if bool((y >= 0).any()) else 0
    check_class_count(num_classes, n, str(folder / LABELS_FILE), "labels")
    graph = MultimodalGraph(
        {"text": x_text, "image": x_image}, edge_index, y, num_classes=num_classes, name=f"mmgraph:{folder.name}",
        canonicalize_edges=False,
    )
    graph.meta = {**graph.meta, "feature_files": {"text": fpath.name, "image": fpath.name}}
    if split == "official":
        for part, m in _official_split(folder / SPLIT_FILE, n, y).items():
            graph[f"{part}_mask"] = m
        graph.meta = {**graph.meta, "split": "official"}
        return graph
    return apply_split(graph, split, seed)
