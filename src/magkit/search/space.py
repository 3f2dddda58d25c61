"""The search space of :func:`magkit.search.search`: which models and training settings to try.

A space is a small mapping (a YAML file or a dict)::

    mode: grid                    # grid: every combination | sample: `trials` draws (Optuna's TPE)
    backbone: [gcn, sgc, sage]    # any of magkit.condense.evaluate.EVAL_BACKBONES
    fusion: [early, late]         # early: one network on [x_1 | ... | x_M]; late: one per modality, logits averaged
    num_layers: [2, 3]            # depth (alias: depth)
    hidden: [64, 256]             # width (alias: width)
    dropout: [0.0, 0.5]
    lr: [0.01, 0.001]
    weight_decay: [0.0, 5.0e-4]

A value is one choice (a scalar) or a list of choices; with ``mode: sample`` it may also be a range
``{low: 1.0e-4, high: 0.1, log: true}`` (``step`` for an evenly spaced one), and ``trials: N`` says how many
configurations to draw. A key left out takes its default (:data:`DEFAULTS`, the values of
:func:`~magkit.condense.evaluate_condensed`). SGC is one linear layer on Â²X: ``num_layers``, ``hidden`` and
``dropout`` do not apply to it, so its configurations hold ``None`` there and a grid lists each SGC
configuration once.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..base import did_you_mean
from ..exceptions import ConfigError

#: the hyper-parameters a space may set, in the order of a configuration's key and of a grid
KEYS = ("backbone", "fusion", "num_layers", "hidden", "dropout", "lr", "weight_decay")
#: values of the keys a space leaves out
DEFAULTS: dict[str, Any] = {"backbone": "gcn", "fusion": "early", "num_layers": 2, "hidden": 256, "dropout": 0.5,
                            "lr": 0.01, "weight_decay": 5e-4}
ALIASES = {"depth": "num_layers", "width": "hidden"}
MODES = ("grid", "sample")
FUSIONS = ("early", "late")
#: the keys that do not apply to SGC (one linear layer on precomputed propagation)
NOT_FOR_SGC = ("num_layers", "hidden", "dropout")
_RANGE_KEYS = ("low", "high", "log", "step")


def _backbones() -> tuple[str, ...]:
    from ..condense.evaluate import EVAL_BACKBONES

    return EVAL_BACKBONES


def _check_value(key: str, v: Any, where: str) -> Any:
    """One choice of ``key``, checked (and numbers normalised)."""
    if key == "backbone":
        allowed = _backbones()
        if v not in allowed:
            raise ConfigError(f"{where}: backbone {v!r}{did_you_mean(str(v), allowed)}; allowed: {', '.join(allowed)}")
        return v
    if key == "fusion":
        if v not in FUSIONS:
            raise ConfigError(f"{where}: fusion {v!r}{did_you_mean(str(v), FUSIONS)}; allowed: {', '.join(FUSIONS)}")
        return v
    if key in ("num_layers", "hidden"):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1 or (key == "num_layers" and v > 16):
            allowed = "an integer in 1..16" if key == "num_layers" else "an integer >= 1"
            raise ConfigError(f"{where}: {key} {v!r}; allowed: {allowed}")
        return int(v)
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ConfigError(f"{where}: {key} {v!r}; allowed: a number")
    v = float(v)
    if key == "dropout" and not 0.0 <= v < 1.0:
        raise ConfigError(f"{where}: dropout {v!r}; allowed: 0 <= dropout < 1")
    if key == "lr" and not 0.0 < v <= 10.0:
        raise ConfigError(f"{where}: lr {v!r}; allowed: 0 < lr <= 10")
    if key == "weight_decay" and not 0.0 <= v <= 1.0:
        raise ConfigError(f"{where}: weight_decay {v!r}; allowed: 0 <= weight_decay <= 1")
    return v


@dataclass(frozen=True)
class Range:
    """A numeric range of a sampled space: ``low`` to ``high``, on a log scale with ``log``, in ``step`` steps."""

    low: float
    high: float
    log: bool = False
    step: float | None = None


def _range(key: str, raw: Mapping, where: str) -> Range:
    bad = sorted(set(raw) - set(_RANGE_KEYS))
    if bad:
        raise ConfigError(f"{where}: {key} range key {bad[0]!r}{did_you_mean(bad[0], _RANGE_KEYS)}; allowed: "
                          f"{', '.join(_RANGE_KEYS)}")
    if key in ("backbone", "fusion"):
        raise ConfigError(f"{where}: {key} {dict(raw)!r}; allowed: a name or a list of names (no range)")
    if "low" not in raw or "high" not in raw:
        raise ConfigError(f"{where}: {key} range {dict(raw)!r}; allowed: a mapping with low and high (and log, step)")
    low, high = _check_value(key, raw["low"], where), _check_value(key, raw["high"], where)
    if low > high:
        raise ConfigError(f"{where}: {key} range low {low!r} > high {high!r}; allowed: low <= high")
    log = bool(raw.get("log", False))
    if log and low <= 0:
        raise ConfigError(f"{where}: {key} log range with low {low!r}; allowed: low > 0 on a log scale")
    step = raw.get("step")
    if step is not None and (isinstance(step, bool) or not isinstance(step, (int, float)) or step <= 0 or log):
        raise ConfigError(f"{where}: {key} step {step!r}; allowed: a number > 0, without log")
    if step is not None and key in ("num_layers", "hidden") and int(step) != step:
        raise ConfigError(f"{where}: {key} step {step!r}; allowed: a whole number (an integer range)")
    return Range(low, high, log, step)


def canonical(config: Mapping[str, Any]) -> dict[str, Any]:
    """``config`` with the keys that do not apply to its backbone set to ``None`` (SGC: depth, width,
    dropout), in :data:`KEYS` order."""
    c = {k: config[k] for k in KEYS}
    if c["backbone"] == "sgc":
        c.update(dict.fromkeys(NOT_FOR_SGC))
    return c


def config_key(config: Mapping[str, Any]) -> str:
    """A configuration's readable name, e.g. ``gcn-early-L2-h256-d0.5-lr0.01-wd0.0005`` (``sgc-late-lr0.1-wd0``)."""
    c = canonical(config)
    parts = [c["backbone"], c["fusion"]]
    if c["num_layers"] is not None:
        parts += [f"L{c['num_layers']}", f"h{c['hidden']}", f"d{c['dropout']:g}"]
    parts += [f"lr{c['lr']:g}", f"wd{c['weight_decay']:g}"]
    return "-".join(parts)


@dataclass
class SearchSpace:
    """A checked search space (see the module docstring): per key its choices (a list) or a :class:`Range`.

    Args:
        choices (dict[str, list | Range]): every key of :data:`KEYS`.
        mode (str, optional): ``grid`` or ``sample``. (default: ``"grid"``)
        trials (int | None, optional): how many configurations ``sample`` draws. (default: :obj:`None`)
        seed (int, optional): the sampler's seed. (default: :obj:`0`)
    """

    choices: dict[str, Any]
    mode: str = "grid"
    trials: int | None = None
    seed: int = 0
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    def grid(self) -> list[dict[str, Any]]:
        """Every configuration of a grid space, each once (SGC's inapplicable keys merged), in a fixed order."""
        seen: dict[str, dict[str, Any]] = {}
        for values in itertools.product(*(self.choices[k] for k in KEYS)):
            c = canonical(dict(zip(KEYS, values)))
            seen.setdefault(config_key(c), c)
        return list(seen.values())

    def __len__(self) -> int:
        return len(self.grid()) if self.mode == "grid" else int(self.trials or 0)

    def distributions(self) -> dict[str, Any]:
        """Optuna distributions of the keys (needs optuna)."""
        from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

        out = {}
        for k in KEYS:
            v = self.choices[k]
            if isinstance(v, Range):
                if k in ("num_layers", "hidden"):
                    out[k] = IntDistribution(int(v.low), int(v.high), log=v.log, step=int(v.step or 1))
                else:
                    out[k] = FloatDistribution(v.low, v.high, log=v.log, step=v.step)
            else:
                out[k] = CategoricalDistribution(list(v))
        return out

    def digest(self) -> str:
        """A short hash of the space (it names sampled trials, so another space's rows are never reused)."""
        text = json.dumps({"mode": self.mode, "trials": self.trials, "seed": self.seed,
                           "choices": {k: (v.__dict__ if isinstance(v, Range) else v) for k, v in self.choices.items()}},
                          sort_keys=True)
        return hashlib.sha1(text.encode()).hexdigest()[:8]


def load_space(source: str | Path | Mapping[str, Any] | SearchSpace) -> SearchSpace:
    """A :class:`SearchSpace` from a YAML file, a mapping, or as it is; one-line :class:`ConfigError` on an
    unknown key (with a did-you-mean), a bad value or range, or a mode without what it needs."""
    if isinstance(source, SearchSpace):
        return source
    if isinstance(source, (str, Path)):
        from ..eval.experiment import read_yaml_mapping

        where = f"search space {source}"
        raw = read_yaml_mapping(source, "search space", "a mapping of keys (mode, backbone, fusion, lr, ...)")
    elif isinstance(source, Mapping):
        where, raw = "search space", dict(source)
    else:
        raise ConfigError(f"search space: {type(source).__name__}; allowed: a YAML file path or a mapping")
    allowed = (*KEYS, *ALIASES, "mode", "trials", "seed")
    for k in raw:
        if k not in allowed:
            raise ConfigError(f"{where}: unknown key {k!r}{did_you_mean(str(k), allowed)}; allowed: {', '.join(allowed)}")
    for alias, key in ALIASES.items():
        if alias in raw:
            if key in raw:
                raise ConfigError(f"{where}: both {alias!r} and {key!r}; allowed: one of them")
            raw[key] = raw.pop(alias)
    mode = raw.get("mode", "grid")
    if mode not in MODES:
        raise ConfigError(f"{where}: mode {mode!r}{did_you_mean(str(mode), MODES)}; allowed: {', '.join(MODES)}")
    trials = raw.get("trials")
    if mode == "sample":
        if isinstance(trials, bool) or not isinstance(trials, int) or trials < 1:
            raise ConfigError(f"{where}: trials {trials!r}; allowed: an integer >= 1 (mode: sample draws that many)")
    elif trials is not None:
        raise ConfigError(f"{where}: trials {trials!r} with mode: grid; allowed: trials only with mode: sample")
    seed = raw.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ConfigError(f"{where}: seed {seed!r}; allowed: an integer")
    choices: dict[str, Any] = {}
    for k in KEYS:
        v = raw.get(k, DEFAULTS[k])
        if isinstance(v, Mapping):
            if mode == "grid":
                raise ConfigError(f"{where}: {k} range {dict(v)!r} with mode: grid; allowed: a value or a list "
                                  "(ranges need mode: sample)")
            choices[k] = _range(k, v, where)
            continue
        values = list(v) if isinstance(v, (list, tuple)) else [v]
        if not values:
            raise ConfigError(f"{where}: {k} is an empty list; allowed: at least one value")
        choices[k] = list(dict.fromkeys(_check_value(k, x, where) for x in values))
    return SearchSpace(choices, mode, trials, seed, raw)
