"""Sweep specs: reading, normalising and checking a YAML grid, and listing its cells.

A sweep spec is a YAML file. ``task: fit`` (node classification) crosses datasets x splits x methods x
seeds::

    name: tiny-fit
    task: fit
    datasets: [synthetic:text-dominant, synthetic:balanced]
    data_params: {num_nodes: 600}         # options for every dataset's reader/generator
    splits: [magb, rate:0.1]
    methods: [mlp-early, gcn-early]
    seeds: 0..2
    params: {epochs: 50}                  # shared estimator parameters (given to the methods that accept them)
    method_params: {gcn-early: {hidden: 64}}
    reference: {method: gcn-early, baselines: [mlp-early]}   # fit: a paired table of a method against the
                                          # best baseline per setting (magkit.bench.paired)
    exclude:                              # cells left out of the grid: every entry names values of some
      - {method: gcn-early, split: rate:0.1}    # axes (one value or a list); a cell matching all of them is dropped
    resources: {num_cpus: 1, num_gpus: 0, memory_gb: 2}    # per cell (Ray task)

``task: condense`` crosses datasets (profiles) x ratios (budgets) x methods x seeds and evaluates each
condensed graph with :func:`~magkit.condense.evaluate_condensed`::

    task: condense
    datasets:                             # a list of names, or named profiles: {label: {data: NAME, **options}}
      balanced-aligned: {data: grocery-semi:balanced, space: aligned, misaligned: 0.3}
    split: magb
    setting: transductive
    ratios: [0.005, 0.01, 0.02]
    methods: [random, herding, gcond, srgm, whole]   # whole: train on the full graph (one cell per dataset)
    seeds: 0
    params: {epochs: 200}                 # condenser parameters (given to the condensers that accept them)
    evaluate: {backbones: [gcn, sgc], runs: 3, epochs: 300, hidden: 256}   # also lr, weight_decay, seed;
                                          # protocol: fast (opt-in) with eval_every (10), patience (10
                                          # validations; 0: no early stop), val_dtype (float32 | auto | bfloat16)

:func:`load_spec` returns the normalised spec: every dataset as ``{label: {"data", "options"}}``, the seeds
as a list, and per method the ``effective_params`` it is built with (checked against its signature).
:func:`expand_grid` lists the cells in a fixed order; every :class:`Cell` has a readable ``key``
(``fit|dataset=synthetic|split=magb|method=gcn-early|seed=0``) and a short ``id`` (a hash of the key).
:func:`shard_cells` picks shard ``i/n`` of the grid: the cells whose position is ``i`` modulo ``n``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..exceptions import ConfigError

TASKS = ("fit", "condense")
AXES = {"fit": ("dataset", "split", "method", "seed"), "condense": ("dataset", "method", "ratio", "seed")}
COMMON_KEYS = ("name", "task", "datasets", "profiles", "data_params", "methods", "seeds", "params", "method_params",
               "resources", "root", "exclude")
TASK_KEYS = {"fit": ("splits", "reference"), "condense": ("ratios", "split", "setting", "evaluate")}
RESOURCE_KEYS = ("num_cpus", "num_gpus", "memory_gb")
#: a condense sweep's ``evaluate`` options and their defaults: the ``standard`` protocol of
#: :func:`~magkit.condense.evaluate_condensed`. ``protocol: fast`` opts in to the fast protocol and its options
#: (:data:`~magkit.condense.evaluate.FAST_OPTIONS`); those are written, defaults included, into the normalised
#: spec, hence into each row's ``evaluate``, so rows recorded under another protocol are told apart on resuming.
#: A standard spec normalises to these keys alone (``protocol: standard`` is dropped).
EVALUATE_DEFAULTS: dict[str, Any] = {"backbones": ["gcn"], "runs": 3, "epochs": 300, "hidden": 256, "lr": 0.01,
                                     "weight_decay": 5e-4, "seed": 0}
WHOLE = "whole"


# ---------------------------------------------------------------------------------------------- spec
def load_spec(path: str | Path, what: str = "sweep spec") -> dict[str, Any]:
    """Read and check a sweep spec (YAML); returns the normalised spec (see the module docstring). ``what``
    names the file in the errors about reading it."""
    from ..eval.experiment import read_yaml_mapping

    path = Path(path)
    raw = read_yaml_mapping(path, what, "a mapping of keys (task, datasets, methods, seeds, ...)")
    raw.setdefault("name", path.stem)
    return normalize_spec(raw, where=str(path))


def normalize_spec(raw: dict[str, Any], where: str = "sweep spec") -> dict[str, Any]:
    """Check a spec mapping and fill its defaults (the same rules as :func:`load_spec`)."""
    from ..eval.experiment import parse_seeds

    task = raw.get("task", "fit")
    if task not in TASKS:
        raise ConfigError(f"{where}: task {task!r}; allowed: {', '.join(TASKS)}")
    allowed = COMMON_KEYS + TASK_KEYS[task]
    unknown = sorted(set(raw) - set(allowed))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)} for task {task}; allowed: {', '.join(allowed)}")
    if raw.get("datasets") is not None and raw.get("profiles") is not None:
        raise ConfigError(f"{where}: give either 'datasets' or 'profiles' (the same thing), not both")
    spec: dict[str, Any] = {"name": str(raw.get("name", "sweep")), "task": task, "root": raw.get("root")}
    spec["datasets"] = _datasets(raw.get("datasets", raw.get("profiles")), raw.get("data_params") or {}, where)
    methods = raw.get("methods")
    if isinstance(methods, str):
        methods = [methods]
    if not methods:
        raise ConfigError(f"{where}: 'methods' must list at least one method")
    spec["methods"] = [str(m) for m in methods]
    seeds = raw.get("seeds", "0")
    spec["seeds"] = parse_seeds(seeds if isinstance(seeds, list) else str(seeds))
    spec["params"] = _mapping(raw.get("params"), "params", where)
    spec["method_params"] = _mapping(raw.get("method_params"), "method_params", where)
    stray = sorted(set(spec["method_params"]) - set(spec["methods"]))
    if stray:
        raise ConfigError(f"{where}: method_params for {', '.join(stray)}, not in methods; allowed: {', '.join(spec['methods'])}")
    spec["resources"] = _resources(raw.get("resources"), where)
    if task == "fit":
        splits = raw.get("splits", ["magb"])
        spec["splits"] = [str(s) for s in ([splits] if isinstance(splits, str) else splits)]
        if not spec["splits"]:
            raise ConfigError(f"{where}: 'splits' must list at least one split spec, e.g. [magb, rate:0.05]")
        from .paired import check_reference

        spec["reference"] = check_reference(raw.get("reference"), spec["methods"], where)
    else:
        ratios = raw.get("ratios", [0.01])
        ratios = ratios if isinstance(ratios, list) else [ratios]
        try:
            spec["ratios"] = [float(r) for r in ratios]
        except (TypeError, ValueError):
            spec["ratios"] = []
        if not spec["ratios"] or not all(0 < r <= 1 for r in spec["ratios"]):
            raise ConfigError(f"{where}: ratios {ratios!r}; allowed: a list of shares of the training nodes in (0, 1], e.g. [0.005, 0.01]")
        spec["split"] = str(raw.get("split", "magb"))
        spec["setting"] = str(raw.get("setting", "transductive"))
        from ..condense.evaluate import SETTINGS

        if spec["setting"] not in SETTINGS:
            raise ConfigError(f"{where}: setting {spec['setting']!r}; allowed: {', '.join(SETTINGS)}")
        spec["evaluate"] = _evaluate(raw.get("evaluate"), where)
    accepted = {m: _accepted(spec, m, where) for m in spec["methods"]}
    takes = set().union(*(a - f for a, f in accepted.values()))
    nobody = sorted(set(spec["params"]) - takes)
    if nobody:
        raise ConfigError(f"{where}: params {', '.join(nobody)} accepted by none of the methods "
                          f"{', '.join(spec['methods'])}; allowed: {', '.join(sorted(takes)) or 'none'}")
    spec["effective_params"] = {m: _effective_params(spec, m, *accepted[m], where) for m in spec["methods"]}
    spec["exclude"] = _exclude(raw.get("exclude"), spec, where)
    return spec


def _axis_values(spec: dict[str, Any], axis: str) -> list[Any]:
    if axis == "dataset":
        return list(spec["datasets"])
    if axis == "split":
        return list(spec["splits"])
    if axis == "ratio":
        return list(spec["ratios"])
    return list(spec[f"{axis}s"])


def _exclude(value: Any, spec: dict[str, Any], where: str) -> list[dict[str, list[Any]]]:
    """``exclude`` entries as ``{axis: [values]}``, each axis one of the task's and each value one of its grid's."""
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(e, dict) and e for e in value):
        raise ConfigError(f"{where}: exclude {value!r}; allowed: a list of mappings axis -> value or list of values, "
                          "e.g. [{method: gcn-early, split: magb}]")
    axes = AXES[spec["task"]]
    entries = []
    for entry in value:
        unknown = sorted(set(entry) - set(axes))
        if unknown:
            raise ConfigError(f"{where}: exclude axis {unknown[0]!r}; allowed: {', '.join(axes)}")
        norm: dict[str, list[Any]] = {}
        for axis, vals in entry.items():
            grid = _axis_values(spec, axis)
            vals = _exclude_values(axis, vals, grid, where)
            bad = [v for v in vals if v not in grid]
            if bad:
                raise ConfigError(f"{where}: exclude {axis} {bad[0]!r} is not in the grid; allowed: "
                                  f"{', '.join(map(str, grid))}")
            norm[axis] = vals
        entries.append(norm)
    return entries


def _exclude_values(axis: str, vals: Any, grid: list[Any], where: str) -> list[Any]:
    """One ``exclude`` axis's values in the grid's types: ratios as floats, seeds as integers (a single seed, a
    list or a range like ``0..2``, as ``seeds`` takes them), the other axes as strings."""
    from ..eval.experiment import parse_seeds

    allowed = f"allowed: {', '.join(map(str, grid))}"
    if axis == "seed" and isinstance(vals, str):
        try:
            return parse_seeds(vals)
        except ConfigError:
            raise ConfigError(f"{where}: exclude seed {vals!r}; {allowed} (one, a list or a range like 0..2)") from None
    vals = vals if isinstance(vals, list) else [vals]
    if not vals:
        raise ConfigError(f"{where}: exclude {axis} []; {allowed} (one value or a non-empty list)")
    out = []
    for v in vals:
        if axis == "ratio":
            try:
                v = float(v)
            except (TypeError, ValueError):
                raise ConfigError(f"{where}: exclude ratio {v!r}; {allowed}") from None
        elif axis == "seed":
            if isinstance(v, bool) or not isinstance(v, (int, str)) or (isinstance(v, str) and not v.strip().isdigit()):
                raise ConfigError(f"{where}: exclude seed {v!r}; {allowed} (one, a list or a range like 0..2)")
            v = int(v)
        else:
            v = str(v)
        out.append(v)
    return out


def _excluded(spec: dict[str, Any], fields: dict[str, Any]) -> bool:
    return any(all(fields[a] in vals for a, vals in e.items()) for e in spec.get("exclude", ()))


def _mapping(value: Any, name: str, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: {name!r} must be a mapping of names to values")
    return dict(value)


def _datasets(value: Any, shared: dict[str, Any], where: str) -> dict[str, dict[str, Any]]:
    """``{label: {"data": name, "options": {...}}}`` from a list of names or a mapping of named profiles."""
    if not isinstance(shared, dict):
        raise ConfigError(f"{where}: 'data_params' must be a mapping of dataset options")
    if isinstance(value, str):
        value = [value]
    if not value:
        raise ConfigError(f"{where}: 'datasets' must list at least one dataset (see `magkit data list`)")
    out: dict[str, dict[str, Any]] = {}
    if isinstance(value, list):
        for name in value:
            out[str(name)] = {"data": str(name), "options": dict(shared)}
    elif isinstance(value, dict):
        for label, entry in value.items():
            entry = dict(entry or {})
            name = str(entry.pop("data", label))
            out[str(label)] = {"data": name, "options": {**shared, **entry}}
    else:
        raise ConfigError(f"{where}: 'datasets' must be a list of names or a mapping label -> {{data: NAME, options...}}")
    return out


def _resources(value: Any, where: str) -> dict[str, float]:
    res = {"num_cpus": 1.0, "num_gpus": 0.0, "memory_gb": None}
    value = _mapping(value, "resources", where)
    unknown = sorted(set(value) - set(RESOURCE_KEYS))
    if unknown:
        raise ConfigError(f"{where}: unknown resource(s) {', '.join(unknown)}; allowed: {', '.join(RESOURCE_KEYS)}")
    for k, v in value.items():
        if v is None:
            continue
        if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0 or (k != "num_gpus" and v == 0):
            raise ConfigError(f"{where}: resources.{k} {v!r}; allowed: a number > 0 (num_gpus: >= 0)")
        res[k] = float(v)
    return res


class _Null:
    """A YAML ``null`` given to a fast-protocol option (named ``null`` in the error)."""

    def __repr__(self) -> str:
        return "null"


def _evaluate(value: Any, where: str) -> dict[str, Any]:
    from ..condense.evaluate import EVAL_BACKBONES, FAST_OPTIONS, protocol_options

    value = _mapping(value, "evaluate", where)
    allowed = (*EVALUATE_DEFAULTS, "protocol", *FAST_OPTIONS)
    unknown = sorted(set(value) - set(allowed))
    if unknown:
        raise ConfigError(f"{where}: unknown evaluate option(s) {', '.join(unknown)}; allowed: {', '.join(allowed)}")
    ev = {**EVALUATE_DEFAULTS, **{k: v for k, v in value.items() if k in EVALUATE_DEFAULTS}}
    if isinstance(ev["backbones"], str):
        ev["backbones"] = [b.strip() for b in ev["backbones"].split(",") if b.strip()]
    bad = [b for b in ev["backbones"] if b not in EVAL_BACKBONES]
    if bad or not ev["backbones"]:
        raise ConfigError(f"{where}: evaluate.backbones {bad or ev['backbones']!r}; allowed: {', '.join(EVAL_BACKBONES)}")
    for k in ("runs", "epochs"):
        if isinstance(ev[k], bool) or not isinstance(ev[k], int) or ev[k] < 1:
            raise ConfigError(f"{where}: evaluate.{k} {ev[k]!r}; allowed: an integer >= 1")
    given = {k: _Null() if value[k] is None else value[k] for k in FAST_OPTIONS if k in value}
    fast = protocol_options(value.get("protocol", "standard"), given, arg=lambda k: f"{where}: evaluate.{k}",
                            fast_flag="protocol: fast")
    if fast is not None:
        ev.update(protocol="fast", **fast)
    return ev


def _accepted(spec: dict[str, Any], method: str, where: str) -> tuple[set[str], set[str]]:
    """(parameters ``method`` accepts, parameters its registry entry fixes); ConfigError on an unknown name."""
    from ..base import param_defaults

    if spec["task"] == "fit":
        from ..methods import get_method

        ms = get_method(method)
        return set(param_defaults(ms.cls)) - {"seed"}, set(ms.fixed)
    if method == WHOLE:
        return set(), set()
    from ..condense.registry import REGISTRY, condenser_names

    if method not in condenser_names():
        raise ConfigError(f"{where}: unknown condenser {method!r}; allowed: {', '.join(condenser_names() + [WHOLE])}")
    spec = REGISTRY.get(method)
    return set(spec.defaults()) - {"seed", "ratio", "setting"}, set(spec.fixed)


def _method_class(spec: dict[str, Any], method: str) -> type | None:
    """The estimator class behind a spec's method name (None for ``whole``)."""
    if spec["task"] == "fit":
        from ..methods import get_method

        return get_method(method).cls
    if method == WHOLE:
        return None
    from ..condense.registry import REGISTRY

    return REGISTRY.get(method).cls


def _effective_params(spec: dict[str, Any], method: str, accepted: set[str], fixed: set[str], where: str) -> dict[str, Any]:
    """The shared ``params`` the method accepts (and does not fix), then its own ``method_params`` (each of
    which must be accepted)."""
    own = dict(spec["method_params"].get(method, {}))
    clash = sorted(set(own) & fixed)
    if clash:
        raise ConfigError(f"{where}: method_params.{method}: {', '.join(clash)} is fixed by the method; choose another method name")
    bad = sorted(set(own) - accepted)
    if bad:
        raise ConfigError(f"{where}: method_params.{method}: unknown parameter(s) {', '.join(bad)}; "
                          f"allowed: {', '.join(sorted(accepted)) or 'none'}")
    params = {**{k: v for k, v in spec["params"].items() if k in accepted and k not in fixed}, **own}
    cls = _method_class(spec, method)
    from ..base import Estimator, _article, matches, param_types, type_name

    if cls is not None and issubclass(cls, Estimator):  # YAML values are typed already: check them
        types = param_types(cls)
        for k, v in params.items():
            if k in types and not matches(v, types[k]):
                src = f"method_params.{method}" if k in own else "params"
                raise ConfigError(f"{where}: {src}: {k}={v!r} is not {_article(type_name(types[k]))} ({method})")
    return params


# ---------------------------------------------------------------------------------------------- grid
@dataclass(frozen=True)
class Cell:
    """One point of the grid: ``task`` and the values of its axes (``fields``)."""

    task: str
    fields: dict[str, Any] = field(hash=False)

    @property
    def key(self) -> str:
        return cell_key(self.task, self.fields)

    @property
    def id(self) -> str:
        return hashlib.sha1(self.key.encode()).hexdigest()[:12]

    def to_dict(self) -> dict[str, Any]:
        return {"task": self.task, **self.fields}


def _fmt(value: Any) -> str:
    return repr(float(value)) if isinstance(value, float) else str(value)


def cell_key(task: str, fields: dict[str, Any]) -> str:
    """The stable identity of a cell: ``task|axis=value|...`` over the task's axes, in their fixed order."""
    return "|".join([task] + [f"{a}={_fmt(fields[a])}" for a in AXES[task]])


def expand_grid(spec: dict[str, Any]) -> list[Cell]:
    """Every cell of the sweep's grid in a fixed order (datasets, then splits or methods, ...), less the cells
    ``exclude`` names. ``whole`` in a condense sweep is one cell per dataset (ratio 1.0, the first seed)."""
    cells = [c for c in _full_grid(spec) if not _excluded(spec, c.fields)]
    return cells


def _full_grid(spec: dict[str, Any]) -> list[Cell]:
    cells: list[Cell] = []
    if spec["task"] == "fit":
        for d in spec["datasets"]:
            for s in spec["splits"]:
                for m in spec["methods"]:
                    for seed in spec["seeds"]:
                        cells.append(Cell("fit", {"dataset": d, "split": s, "method": m, "seed": seed}))
        return cells
    for d in spec["datasets"]:
        if WHOLE in spec["methods"]:
            cells.append(Cell("condense", {"dataset": d, "method": WHOLE, "ratio": 1.0, "seed": spec["seeds"][0]}))
        for r in spec["ratios"]:
            for m in spec["methods"]:
                if m == WHOLE:
                    continue
                for seed in spec["seeds"]:
                    cells.append(Cell("condense", {"dataset": d, "method": m, "ratio": r, "seed": seed}))
    return cells


def shard_cells(cells: list[Cell], shard: tuple[int, int] | str = (0, 1)) -> list[Cell]:
    """The cells of shard ``i/n``: those whose position in the full grid is ``i`` modulo ``n`` (disjoint,
    together the whole grid, as balanced as possible)."""
    i_shard, n_shard = parse_shard(shard)
    return [c for k, c in enumerate(cells) if k % n_shard == i_shard]


def parse_shard(text: str | tuple[int, int]) -> tuple[int, int]:
    """``"1/4"`` -> (1, 4): shard ``i`` of ``n`` (0-based), checked."""
    if isinstance(text, str):
        try:
            i_shard, n_shard = (int(v) for v in text.split("/"))
        except ValueError:
            raise ConfigError(f"--shard: {text!r}; allowed: i/n with 0 <= i < n, e.g. 0/2") from None
    else:
        i_shard, n_shard = text
    if n_shard < 1 or not 0 <= i_shard < n_shard:
        raise ConfigError(f"shard: {i_shard}/{n_shard}; allowed: i/n with 0 <= i < n")
    return i_shard, n_shard


def split_seed(split: str, seed: int) -> int:
    """The seed a split is drawn with: the run's seed for drawn splits (label rate, k-shot, random), else 0."""
    return seed if str(split).split(":")[0] in ("rate", "kshot", "random") else 0


def cell_config(spec: dict[str, Any], cell: Cell) -> dict[str, Any]:
    """The sweep spec's settings a cell runs with, as recorded in its row: the method's effective ``params``
    (and, for a condense cell, ``evaluate``, ``split`` and ``setting``)."""
    cfg = {"params": jsonable(spec["effective_params"][cell.fields["method"]])}
    if cell.task == "condense":
        cfg.update(evaluate=jsonable(spec["evaluate"]), split=spec["split"], setting=spec["setting"])
    return cfg


def jsonable(value: Any) -> Any:
    """``value`` as it reads back from JSON (values JSON cannot hold become their ``str``)."""
    return json.loads(json.dumps(value, default=str))
