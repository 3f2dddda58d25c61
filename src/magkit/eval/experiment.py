"""One experiment = (dataset, method, params, split, seeds) -> a results payload. Shared by the CLI
(`magkit fit`), the demo and the benchmark suites."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import yaml

from ..exceptions import ConfigError
from .protocol import RepeatResult, repeat
from .results import atomic_write_json, environment, peak_memory_mb, plot_learning_curves


def parse_seeds(spec: str | Sequence[int]) -> list[int]:
    """``"0..4"`` -> [0, 1, 2, 3, 4]; ``"0,3,7"`` -> [0, 3, 7]; a list passes through."""
    if not isinstance(spec, str):
        return [int(s) for s in spec]
    try:
        if ".." in spec:
            a, b = spec.split("..")
            seeds = list(range(int(a), int(b) + 1))
        else:
            seeds = [int(s) for s in spec.split(",") if s.strip()]
    except ValueError:
        seeds = []
    if not seeds:
        raise ConfigError(f"seeds: {spec!r}; allowed: a range like 0..4 or a list like 0,1,2")
    return seeds


def parse_value(text: str) -> Any:
    """A ``key=value`` value for options without declared types (dataset options): YAML scalars/lists
    (``0.01``, ``true``, ``[10, 10]``, ``null``)."""
    return yaml.safe_load(text)


def check_value(cls: type, name: str, value: Any, where: str) -> Any:
    """``value`` when it has the declared type of ``cls``'s parameter ``name``; else a one-line ConfigError naming
    ``where`` (a file), the parameter, the value and the type. Unknown names: the ConfigError of
    :func:`~magkit.base.coerce_param`."""
    from ..base import _article, coerce_param, matches, param_types, type_name

    types = param_types(cls)
    if name not in types:
        coerce_param(cls, name, "")  # raises: unknown parameter, with the closest and the valid names
    if not matches(value, types[name]):
        raise ConfigError(f"{where}: {name}={value!r} is not {_article(type_name(types[name]))} ({cls.__name__})")
    return value


def read_yaml_mapping(path: str | Path, what: str, shape: str = "a mapping") -> dict[str, Any]:
    """The mapping held by the YAML file ``path`` (empty file: ``{}``). ``what`` names the file in the
    one-line :class:`ConfigError` raised when it is missing, is not valid YAML, or holds something else
    than a mapping (``shape`` describes the expected content in that message)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{what}: file {str(path)!r} does not exist")
    try:
        loaded = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ConfigError(f"{what} {path}: not valid YAML ({first})") from None
    if not isinstance(loaded, dict):
        raise ConfigError(f"{what} {path}: must hold {shape}, not a {type(loaded).__name__}")
    return loaded


def load_config(path: str | Path | None, overrides: Sequence[str] = (), cls: type | None = None) -> dict[str, Any]:
    """Estimator parameters from a YAML file (a mapping; an optional ``params:`` sub-mapping is accepted)
    and ``key=value`` overrides.

    With ``cls`` (an :class:`~magkit.base.Estimator` class) every override is converted through the
    parameter's declared type (:func:`~magkit.base.coerce_param`: ``lr=1e-3`` is a float, ``lr=fast`` a one-line
    ConfigError) and every file value is checked against it; without, values are read as YAML."""
    from ..base import Estimator, coerce_param

    typed = cls is not None and issubclass(cls, Estimator)
    cfg: dict[str, Any] = {}
    if path is not None:
        loaded = read_yaml_mapping(path, "config", "a mapping of parameter names to values")
        loaded = loaded.get("params", loaded)
        if typed:
            for key, value in loaded.items():
                check_value(cls, key, value, f"config {path}")
        cfg.update(loaded)
    for item in overrides:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"--set: {item!r}; allowed: key=value, e.g. --set lr=0.005")
        cfg[key] = coerce_param(cls, key, value) if typed else parse_value(value)
    return cfg


def run_experiment(
    method: str,
    data: str | Any,
    seeds: Sequence[int] = (0, 1, 2, 3, 4),
    split: str | None = None,
    params: dict[str, Any] | None = None,
    root: str | None = None,
    on_run: Callable | None = None,
    progress: Callable | None = None,
    on_fitted: Callable | None = None,
) -> tuple[dict[str, Any], RepeatResult]:
    """Fit ``method`` on ``data`` once per seed; return the results payload and the raw result."""
    from .. import distributed
    from ..base import param_defaults
    from ..data import describe, load_dataset
    from ..methods import create, get_method

    spec = get_method(method)
    params = dict(params or {})
    t0 = time.perf_counter()
    graph = load_dataset(data, root=root) if isinstance(data, str) else data
    create(method, **params).check_params()  # fail fast on bad parameters, before any training
    result = repeat(lambda s: create(method, **{**params, "seed": s}), graph, seeds=seeds, split=split,
                    on_run=on_run, progress=progress, on_fitted=on_fitted)
    wall = time.perf_counter() - t0
    info = describe(graph)
    payload = {
        "method": method,
        "description": spec.description,
        "config": {**param_defaults(spec.cls), **spec.fixed, **params},
        "dataset": {"name": graph.name, "checksum": info["checksum"], "nodes": info["nodes"],
                    "edges_undirected": info["edges_undirected"], "classes": info["classes"],
                    "modalities": info["modalities"]},
        **result.to_dict(),
        "split": split or graph.meta.get("split", "magb"),
        "wall_time_s": wall,
        "peak_memory_mb": peak_memory_mb(),
        "distributed": distributed.describe(),  # world_size 1, backend None for a single process
        "environment": environment(),
    }
    payload["config"].pop("seed", None)
    return payload, result


def write_experiment(payload: dict[str, Any], result: RepeatResult, out: str | Path) -> dict[str, Path]:
    """``results.json`` (with per-seed histories) and ``learning_curves.png`` under ``out``."""
    out = Path(out)
    full = dict(payload)
    full["runs"] = result.to_dict(histories=True)["runs"]
    paths = {"results": atomic_write_json(out / "results.json", full)}
    hist = {r.seed: r.history for r in result.runs}
    paths["plot"] = plot_learning_curves(hist, out / "learning_curves.png",
                                         title=f"{payload['method']} on {payload['dataset']['name']}",
                                         warmup=payload["config"].get("warmup"))
    return paths
