"""Sweeps: a YAML grid of cells, run in-process, as shard ``i/n`` of a job array, or on Ray; JSON-lines rows.

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
    evaluate: {backbones: [gcn, sgc], runs: 3, epochs: 300, hidden: 256}

:func:`expand_grid` lists the cells in a fixed order; every cell has a readable ``key``
(``fit|dataset=synthetic|split=magb|method=gcn-early|seed=0``) and a short ``id`` (a hash of the key).
:func:`run_sweep` runs the cells not yet recorded in the output folder and appends one JSON line per cell
(single writer: the process that runs the sweep; Ray workers send their rows back to it). Shard ``i/n``
runs the cells whose grid position is ``i`` modulo ``n`` and writes ``rows.shard-i-of-n.jsonl``, so the
tasks of a job array never share a file. A cell that raises is recorded as an error row with a one-line
message and the sweep goes on; ``retry_failed=True`` runs such cells again. :mod:`magkit.bench.report`
merges rows files into tables and plots; ``magkit bench run SUITE.yaml`` (:mod:`magkit.bench.suite`) runs a fit
spec through this engine.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import re
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ..exceptions import ConfigError, LockedError, MissingDependencyError

log = logging.getLogger(__name__)

TASKS = ("fit", "condense")
EXECUTORS = ("local", "ray")
AXES = {"fit": ("dataset", "split", "method", "seed"), "condense": ("dataset", "method", "ratio", "seed")}
COMMON_KEYS = ("name", "task", "datasets", "profiles", "data_params", "methods", "seeds", "params", "method_params",
               "resources", "root")
TASK_KEYS = {"fit": ("splits",), "condense": ("ratios", "split", "setting", "evaluate")}
RESOURCE_KEYS = ("num_cpus", "num_gpus", "memory_gb")
EVALUATE_DEFAULTS: dict[str, Any] = {"backbones": ["gcn"], "runs": 3, "epochs": 300, "hidden": 256, "lr": 0.01,
                                     "weight_decay": 5e-4, "seed": 0}
WHOLE = "whole"
RAY_INSTALL = 'pip install -e ".[ray]"'


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
    return spec


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


def _evaluate(value: Any, where: str) -> dict[str, Any]:
    from ..condense.evaluate import EVAL_BACKBONES

    value = _mapping(value, "evaluate", where)
    unknown = sorted(set(value) - set(EVALUATE_DEFAULTS))
    if unknown:
        raise ConfigError(f"{where}: unknown evaluate option(s) {', '.join(unknown)}; allowed: {', '.join(EVALUATE_DEFAULTS)}")
    ev = {**EVALUATE_DEFAULTS, **value}
    if isinstance(ev["backbones"], str):
        ev["backbones"] = [b.strip() for b in ev["backbones"].split(",") if b.strip()]
    bad = [b for b in ev["backbones"] if b not in EVAL_BACKBONES]
    if bad or not ev["backbones"]:
        raise ConfigError(f"{where}: evaluate.backbones {bad or ev['backbones']!r}; allowed: {', '.join(EVAL_BACKBONES)}")
    if not isinstance(ev["runs"], int) or ev["runs"] < 1:
        raise ConfigError(f"{where}: evaluate.runs {ev['runs']!r}; allowed: an integer >= 1")
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
    """Every cell of the sweep's grid in a fixed order (datasets, then splits or methods, ...). ``whole`` in a
    condense sweep is one cell per dataset (ratio 1.0, the first seed)."""
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


# ---------------------------------------------------------------------------------------------- rows
def rows_file(out: str | Path, shard: tuple[int, int] | str = (0, 1)) -> Path:
    """``<out>/rows.jsonl``, or ``<out>/rows.shard-i-of-n.jsonl`` for shard ``i/n`` with ``n > 1``."""
    i_shard, n_shard = parse_shard(shard)
    name = "rows.jsonl" if n_shard == 1 else f"rows.shard-{i_shard}-of-{n_shard}.jsonl"
    return Path(out) / name


def rows_files(out: str | Path) -> list[Path]:
    """Every rows file of a sweep folder: ``rows.jsonl`` and the shards' ``rows.shard-*.jsonl`` (name order;
    other files such as ``rows_before_*.jsonl`` are not read)."""
    out = Path(out)
    return sorted(p for p in [out / "rows.jsonl", *out.glob("rows.shard-*.jsonl")] if p.is_file())


def read_rows(path: Path) -> list[dict]:
    """The JSON rows of ``path`` (none for a missing file).

    A line that is not a JSON object (cut by an interruption, or damaged) is skipped with a warning naming the
    file and the line number; its cell counts as not recorded and runs again.
    """
    path = Path(path)
    if not path.is_file():
        return []
    rows = []
    with path.open("rb") as fh:
        data = fh.read()
    for lineno, raw in enumerate(data.split(b"\n"), start=1):
        line = raw.strip()
        if not line:
            continue
        try:
            row = json.loads(line.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            row = None
        if not isinstance(row, dict):
            log.warning("%s line %d is damaged (not a JSON object); skipped: its cell runs again", path, lineno)
            continue
        rows.append(row)
    return rows


def append_row(path: Path, row: dict) -> None:
    """Append one JSON line to ``path`` in a single ``write``, then flush and fsync.

    A last line without its newline (a write cut by a crash) is terminated first, so the new row starts on a
    line of its own and only the damaged line is lost (:func:`read_rows` skips it).
    """
    path = Path(path)
    text = json.dumps(row) + "\n"
    with path.open("ab+") as fh:
        if fh.seek(0, os.SEEK_END) > 0:
            fh.seek(-1, os.SEEK_END)
            if fh.read(1) != b"\n":
                log.warning("%s ends in a damaged line; terminating it before appending", path)
                text = "\n" + text
        fh.write(text.encode("utf-8"))
        fh.flush()
        os.fsync(fh.fileno())


class ShardLock:
    """An exclusive lock on a rows file: ``<rows file>.lock`` holding the owner's pid, taken with ``fcntl.flock``.

    The kernel releases a ``flock`` when its process dies, so the lock file of a dead run is taken over
    silently; a second live run of the same shard is refused with :class:`~magkit.exceptions.LockedError`.
    On systems without ``fcntl`` the lock is a no-op.
    """

    def __init__(self, rows_path: str | Path):
        self.path = Path(str(rows_path) + ".lock")
        self._fh = None

    def __enter__(self) -> ShardLock:
        try:
            import fcntl
        except ImportError:  # pragma: no cover - not POSIX
            return self
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fh = open(self.path, "a+")
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            fh.seek(0)
            owner = fh.read().strip() or "unknown"
            fh.close()
            raise LockedError(
                f"sweep shard: {self.path.with_suffix('')} is being written by another run (pid {owner}); "
                "allowed: one run per shard at a time (wait for it, or use another --out/--shard)"
            ) from None
        fh.seek(0)
        fh.truncate()
        fh.write(f"{os.getpid()}\n")
        fh.flush()
        self._fh = fh
        return self

    def __exit__(self, *exc) -> None:
        if self._fh is not None:
            import fcntl

            try:
                self._fh.seek(0)
                self._fh.truncate()
            finally:
                fcntl.flock(self._fh.fileno(), fcntl.LOCK_UN)
                self._fh.close()
                self._fh = None


#: the metrics of a fit row
FIT_METRICS = ("test_acc", "test_f1", "val_acc", "val_f1", "fit_time_s", "epoch_time_s", "epochs_run", "best_epoch",
               "reliability_auc")


def normalize_row(row: dict[str, Any]) -> dict[str, Any] | None:
    """A sweep row as it is; a flat fit row (``dataset``, ``split``, ``method``, ``seed`` and the metrics at the
    top level, no ``key``: the rows files under benchmarks/) as the equivalent sweep row; anything else None."""
    if "key" in row and "task" in row:
        return row
    if all(k in row for k in ("dataset", "split", "method", "seed", "test_acc")):
        fields = {k: row[k] for k in AXES["fit"]}
        metrics = {k: row[k] for k in FIT_METRICS if k in row}
        return {"key": cell_key("fit", fields), "task": "fit", **fields, "status": "ok", "metrics": metrics,
                "peak_memory_mb": row.get("peak_memory_mb"), "dataset_checksum": row.get("dataset_checksum")}
    return None


def recorded(out: str | Path) -> dict[str, dict]:
    """key -> the latest row recorded for it in the folder's rows files (files in name order, lines in order)."""
    latest: dict[str, dict] = {}
    for p in rows_files(out):
        for r in read_rows(p):
            row = normalize_row(r)
            if row is not None:
                latest[row["key"]] = row
    return latest


@dataclass
class Plan:
    """What a run of the sweep would do: the full grid, this shard's cells, what is recorded, what runs."""

    cells: list[Cell]
    shard_cells: list[Cell]
    done: dict[str, dict]
    todo: list[Cell]
    rows_path: Path

    @property
    def failed(self) -> list[str]:
        return [c.key for c in self.shard_cells if self.done.get(c.key, {}).get("status") == "error"]

    def state(self, cell: Cell) -> str:
        row = self.done.get(cell.key)
        if row is None:
            return "todo"
        return "failed" if row.get("status") == "error" else "done"


def plan(spec: dict[str, Any], out: str | Path, shard: tuple[int, int] | str = (0, 1), retry_failed: bool = False) -> Plan:
    """The grid, this shard's part of it, and the cells still to run (not recorded; failed ones too with
    ``retry_failed``). Cells recorded with other parameters are reported in the log, not rerun."""
    cells = expand_grid(spec)
    mine = shard_cells(cells, shard)
    done = recorded(out)
    todo, other = [], []
    for c in mine:
        row = done.get(c.key)
        if row is None or (retry_failed and row.get("status") == "error"):
            todo.append(c)
        elif row.get("params") is not None and any(row.get(k) != v for k, v in _config_of(spec, c).items()):
            other.append(c.key)
    if other:
        log.warning("%d recorded cell(s) ran with other parameters than the sweep spec's (e.g. %s); they are not rerun: "
                    "use another --out for the new parameters", len(other), other[0])
    return Plan(cells, mine, done, todo, rows_file(out, shard))


def _config_of(spec: dict[str, Any], cell: Cell) -> dict[str, Any]:
    cfg = {"params": _jsonable(spec["effective_params"][cell.fields["method"]])}
    if cell.task == "condense":
        cfg.update(evaluate=_jsonable(spec["evaluate"]), split=spec["split"], setting=spec["setting"])
    return cfg


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


# ---------------------------------------------------------------------------------------------- one cell
_GRAPHS: dict[str, tuple[Any, str]] = {}  # one loaded graph per process (with its checksum), reused by the next cell


def _graph(spec: dict[str, Any], label: str, split: str, seed: int):
    from ..data import load_dataset

    entry = spec["datasets"][label]
    ckey = json.dumps([entry, split, seed, spec.get("root")], sort_keys=True, default=str)
    if ckey not in _GRAPHS:
        _GRAPHS.clear()
        graph = load_dataset(entry["data"], root=spec.get("root"), split=split, seed=seed, **entry["options"])
        _GRAPHS[ckey] = (graph, graph.checksum())
    return _GRAPHS[ckey]


def _reset_peak() -> bool:
    """Reset this process's peak resident set size (Linux: ``/proc/self/clear_refs``); False where unsupported."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def _peak_mb(reset_ok: bool) -> tuple[float, str]:
    """(peak RSS in MiB, "cell" when it was reset at the cell's start, else "process": the process's peak)."""
    if reset_ok:
        try:
            m = re.search(r"VmHWM:\s+(\d+)\s+kB", Path("/proc/self/status").read_text())
            if m:
                return int(m.group(1)) / 1024.0, "cell"
        except OSError:
            pass
    from ..eval.results import peak_memory_mb

    return peak_memory_mb(), "process"


def one_line(exc: BaseException) -> str:
    """``Type: first line of the message`` (for error rows and progress lines)."""
    msg = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {msg[0]}" if msg else type(exc).__name__


def fit_cell(graph, method: str, params: dict[str, Any], seed: int) -> dict[str, Any]:
    """Fit one fresh ``method`` estimator on ``graph`` (epoch selected on validation, test read once) and
    return its metrics: accuracy and macro-F1 on val and test, epochs run, best epoch, epoch and fit time (and
    GraphMNL's reliability AUC against a generated graph's ground truth)."""
    from ..methods import create

    est = create(method, **{**params, "seed": seed})
    t0 = time.perf_counter()
    est.fit(graph)
    fit_time = time.perf_counter() - t0
    val, test = est.score(graph, "val"), est.score(graph, "test")
    row = {"val_acc": val["acc"], "val_f1": val["f1"], "test_acc": test["acc"], "test_f1": test["f1"],
           "epochs_run": len(est.history_.epochs), "best_epoch": est.history_.best_epoch,
           "epoch_time_s": est.history_.epoch_time, "fit_time_s": fit_time}
    auc = (vars(est).get("diagnostics_") or {}).get("reliability_auc")
    if auc:  # how well the reliability r̃ ranks the truly better modality, per branch kind
        row["reliability_auc"] = {k: float(v) for k, v in auc.items()}
    return row


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


def _fit_metrics(spec: dict[str, Any], f: dict[str, Any]) -> tuple[dict[str, Any], str]:
    graph, checksum = _graph(spec, f["dataset"], f["split"], split_seed(f["split"], f["seed"]))
    return fit_cell(graph, f["method"], spec["effective_params"][f["method"]], f["seed"]), checksum


def _condense_metrics(spec: dict[str, Any], f: dict[str, Any]) -> tuple[dict[str, Any], str, dict]:
    from ..condense import evaluate_condensed, graph_views, make_condenser, train_whole

    graph, checksum = _graph(spec, f["dataset"], spec["split"], split_seed(spec["split"], f["seed"]))
    ev = spec["evaluate"]
    views = graph_views(graph, spec["setting"])
    train_kw = {k: ev[k] for k in ("epochs", "hidden", "lr", "weight_decay")}
    metrics: dict[str, Any] = {}
    per_run: dict[str, dict[str, list[float]]] = {}
    if f["method"] == WHOLE:
        metrics["num_nodes"] = int(views["train"].idx.numel()) if spec["setting"] == "transductive" else int(views["train"].x.size(0))
        for b in ev["backbones"]:
            runs = [train_whole(views, b, num_classes=graph.num_classes, seed=ev["seed"] + r, **train_kw)
                    for r in range(ev["runs"])]
            per_run[b] = {k: [r[k] for r in runs] for k in ("test_acc", "test_f1", "val_acc", "train_time_s")}
    else:
        cond = make_condenser(f["method"], **spec["effective_params"][f["method"]], ratio=f["ratio"], seed=f["seed"],
                              setting=spec["setting"])
        t0 = time.perf_counter()
        condensed = cond.condense(graph)
        metrics["condense_s"] = time.perf_counter() - t0
        st = condensed.stats()
        metrics.update({k: st[k] for k in ("num_nodes", "edge_density", "weight_max", "components") if k in st})
        res = evaluate_condensed(condensed, graph, ev["backbones"], runs=ev["runs"], seed=ev["seed"], views=views, **train_kw)
        for b, r in res.items():
            per_run[b] = {k: [p[k] for p in r["runs"]] for k in ("test_acc", "test_f1", "val_acc", "train_time_s")}
    from ..eval.protocol import mean_std

    for b, r in per_run.items():
        for k in ("test_acc", "test_f1", "val_acc"):
            metrics[f"{b}_{k}"] = mean_std(r[k])[0]
    first = ev["backbones"][0]
    for k in ("test_acc", "test_f1", "val_acc"):
        metrics[k] = metrics[f"{first}_{k}"]
    metrics["train_time_s"] = mean_std(per_run[first]["train_time_s"])[0]
    return metrics, checksum, per_run


def run_cell(spec: dict[str, Any], cell: Cell | dict[str, Any], executor: str = "local") -> dict[str, Any]:
    """Run one cell and return its row; an exception becomes an error row (``status: error`` and a one-line
    ``error``), so one bad cell never stops a sweep. KeyboardInterrupt is not caught."""
    from ..eval.results import environment

    if isinstance(cell, dict):
        cell = Cell(cell["task"], {a: cell[a] for a in AXES[cell["task"]]})
    f = cell.fields
    row: dict[str, Any] = {"key": cell.key, "id": cell.id, "sweep": spec["name"], "task": cell.task, **f,
                           "data": spec["datasets"].get(f["dataset"], {}).get("data"),
                           "params": _jsonable(spec["effective_params"].get(f["method"], {}))}
    if cell.task == "condense":
        row.update(split=spec["split"], setting=spec["setting"], evaluate=_jsonable(spec["evaluate"]))
    reset_ok = _reset_peak()
    t0 = time.perf_counter()
    try:
        if cell.task == "fit":
            metrics, checksum = _fit_metrics(spec, f)
        else:
            metrics, checksum, per_run = _condense_metrics(spec, f)
            row["runs"] = per_run
        row.update(status="ok", metrics=metrics, dataset_checksum=checksum)
    except Exception as exc:  # noqa: BLE001 - recorded, the sweep goes on
        row.update(status="error", error=one_line(exc), traceback="".join(traceback.format_exc())[-4000:])
    row["wall_time_s"] = time.perf_counter() - t0
    row["peak_memory_mb"], row["peak_memory_scope"] = _peak_mb(reset_ok)
    row.update(executor=executor, host=platform.node(), pid=os.getpid(),
               finished_at=datetime.now(timezone.utc).isoformat(timespec="seconds"))
    try:
        row["environment"] = environment()
    except Exception:  # noqa: BLE001 - never lose a row over version strings
        row["environment"] = {}
    return row


# ---------------------------------------------------------------------------------------------- executors
@dataclass
class SweepResult:
    """Rows executed by this run (in completion order), how many cells were skipped, and the rows file."""

    rows: list[dict]
    skipped: int
    rows_path: Path

    @property
    def failed(self) -> list[dict]:
        return [r for r in self.rows if r.get("status") == "error"]


def _graph_key(spec: dict[str, Any], cell: Cell) -> tuple:
    f = cell.fields
    split = f["split"] if cell.task == "fit" else spec["split"]
    return f["dataset"], split, split_seed(split, f["seed"])


def _local(spec: dict[str, Any], cells: list[Cell]) -> Iterator[dict]:
    # one graph load per (dataset, split, split seed): drawn splits change with the seed, so the cells are
    # grouped by the graph they need (stable: the grid order is kept within a graph)
    first: dict[tuple, int] = {}
    for c in cells:
        first.setdefault(_graph_key(spec, c), len(first))
    for c in sorted(cells, key=lambda c: first[_graph_key(spec, c)]):
        yield run_cell(spec, c, executor="local")


def import_ray():
    """``ray``, or a MissingDependencyError naming the install line."""
    try:
        import ray
    except ImportError:
        raise MissingDependencyError(f"--executor ray needs ray, which is not installed; install it with: {RAY_INSTALL}") from None
    return ray


def _ray_cell(spec: dict[str, Any], cell: dict[str, Any], threads: int) -> dict[str, Any]:
    """The body of one Ray task (runs in a worker process)."""
    import torch

    torch.set_num_threads(max(1, threads))
    return run_cell(spec, cell, executor="ray")


def ray_options(resources: dict[str, Any]) -> dict[str, Any]:
    """Ray task options from the sweep spec's ``resources`` (memory in bytes)."""
    opts: dict[str, Any] = {"num_cpus": resources["num_cpus"], "num_gpus": resources["num_gpus"], "max_retries": 0}
    if resources.get("memory_gb"):
        opts["memory"] = int(resources["memory_gb"] * 2**30)
    return opts


def _ray(spec: dict[str, Any], cells: list[Cell], address: str | None) -> Iterator[dict]:
    """One Ray task per cell; rows are yielded as tasks finish (``ray.wait``), to be written by the caller."""
    ray = import_ray()
    if not cells:  # nothing to run: do not start or join a cluster for it
        return
    started = False
    if not ray.is_initialized():
        if address in (None, "", "local"):
            ray.init(include_dashboard=False, logging_level=logging.WARNING)
        else:
            ray.init(address=address, logging_level=logging.WARNING)
        started = True
    pending: dict[Any, Cell] = {}
    try:
        task = ray.remote(_ray_cell).options(**ray_options(spec["resources"]))
        spec_ref = ray.put(spec)
        threads = max(1, int(spec["resources"]["num_cpus"]))
        pending = {task.remote(spec_ref, c.to_dict(), threads): c for c in cells}
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            for ref in ready:
                cell = pending.pop(ref)
                try:
                    row = ray.get(ref)
                except Exception as exc:  # noqa: BLE001 - a worker died (memory, node lost): an error row
                    row = _driver_error_row(spec, cell, exc)
                yield row
    finally:
        for ref in pending:  # interrupted: do not leave work running on the cluster
            try:
                ray.cancel(ref, force=True)
            except Exception:  # noqa: BLE001
                pass
        if started:
            ray.shutdown()


def _driver_error_row(spec: dict[str, Any], cell: Cell, exc: BaseException) -> dict[str, Any]:
    return {"key": cell.key, "id": cell.id, "sweep": spec["name"], "task": cell.task, **cell.fields,
            **_config_of(spec, cell), "status": "error",
            "error": one_line(exc), "executor": "ray", "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}


def run_sweep(
    spec: dict[str, Any],
    out: str | Path,
    executor: str = "local",
    shard: tuple[int, int] | str = (0, 1),
    retry_failed: bool = False,
    ray_address: str | None = "local",
    on_start: Callable[[Plan], None] | None = None,
    on_row: Callable[[dict, int, int], None] | None = None,
) -> SweepResult:
    """Run this shard's cells not yet recorded under ``out``; append each row as it arrives (one writer).

    ``executor``: ``local`` (one after another in this process) or ``ray`` (one Ray task per cell with the
    spec's ``resources``; ``ray_address``: ``local`` starts a local Ray instance, ``auto`` joins the cluster
    of this machine, ``ray://host:10001`` or ``host:6379`` a remote one; an already initialised Ray is
    used as it is). ``on_row(row, done, total)`` is called after each row is written.

    Raises:
        LockedError: another live run is writing this shard's rows file (its lock file names the pid).
    """
    if executor not in EXECUTORS:
        raise ConfigError(f"--executor: {executor!r}; allowed: {', '.join(EXECUTORS)}")
    if executor == "ray":
        import_ray()
    Path(out).mkdir(parents=True, exist_ok=True)
    with ShardLock(rows_file(out, shard)):  # a second run of this shard is refused, not run twice
        p = plan(spec, out, shard, retry_failed)
        if on_start is not None:
            on_start(p)
        rows: list[dict] = []
        stream = _local(spec, p.todo) if executor == "local" else _ray(spec, p.todo, ray_address)
        for row in stream:
            append_row(p.rows_path, row)
            rows.append(row)
            if on_row is not None:
                on_row(row, len(rows), len(p.todo))
    return SweepResult(rows, len(p.shard_cells) - len(p.todo), p.rows_path)
