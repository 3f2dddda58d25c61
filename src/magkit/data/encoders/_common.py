"""Argument checks shared by the encoders (private)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from importlib import metadata

from magkit.exceptions import ConfigError

Progress = Callable[[int, int], None]


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
