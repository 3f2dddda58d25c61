"""Parameter checks and seed streams shared by the synthetic generators (private)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..exceptions import ConfigError


def _config_error(name: str, value: Any, allowed: str) -> ConfigError:
    return ConfigError(f"{name}: {value!r} is out of range; allowed: {allowed}")


def _check_range(name: str, value: Any, lo: float, hi: float, *, lo_open: bool = False, hi_open: bool = False) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name}: {value!r} is not a number") from None
    lo_ok = v > lo if lo_open else v >= lo
    hi_ok = v < hi if hi_open else v <= hi
    if not (lo_ok and hi_ok and math.isfinite(v)):
        lb = "(" if lo_open else "["
        rb = ")" if hi_open else "]"
        raise _config_error(name, value, f"{lb}{lo}, {hi}{rb}")
    return v


def _check_int(name: str, value: Any, lo: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or int(value) < lo:
        raise _config_error(name, value, f"an integer >= {lo}")
    return int(value)


def _seed_streams(seed: int) -> tuple[np.random.Generator, np.random.Generator]:
    """Independent generators for structure and features derived from one seed."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or int(seed) < 0:
        raise _config_error("seed", seed, "an integer >= 0")
    s_struct, s_feat = np.random.SeedSequence(int(seed)).spawn(2)
    return np.random.default_rng(s_struct), np.random.default_rng(s_feat)
