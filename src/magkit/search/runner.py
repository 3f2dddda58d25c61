"""Architecture and hyper-parameter search on a condensed graph: trials on S, ranking, re-training the best.

The protocol (GCond, Jin et al., ICLR 2022, Sec. 4.4; SR-GM): every candidate of a space
(:mod:`magkit.search.space`) is trained on S and selected on the *whole* graph's validation split (as in
:func:`~magkit.condense.evaluate_condensed`; S never sees a test label); candidates are ranked by that
validation accuracy; the ``top`` best are re-trained on the whole training graph, where their real validation
and test accuracy are measured; the configuration chosen is the re-trained one with the best whole-graph
validation accuracy, and its test accuracy is the search's result. ``on="whole"`` runs the same search on
the whole training graph (the reference a condensed search is compared with, :func:`~magkit.search.compare`).

Every finished trial is appended as one JSON row to ``<out>/rows.jsonl`` (``rows.shard-i-of-n.jsonl`` for
shard ``i/n``, :mod:`magkit.bench.rows`), so a killed search continues from its recorded trials and
``magkit report <out>`` tabulates them. A trial row's ``key`` names the dataset, what it trained on, the stage
(``trial`` or ``retrain``), the configuration (or the sampled trial's number and the space's hash) and a hash
of the training protocol (epochs, validation interval, patience, seed, setting, split).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import platform
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ..exceptions import ConfigError, MissingDependencyError
from .space import SearchSpace, canonical, config_key, load_space
from .target import Target, split_views

log = logging.getLogger(__name__)

OPTUNA_INSTALL = 'pip install -e ".[search]"'
#: sampled trials drawn per round on Ray (Optuna learns from each finished round)
RAY_ROUND = 8


def import_optuna():
    """``optuna``, or a one-line MissingDependencyError naming the install line."""
    try:
        import optuna
    except ImportError:
        raise MissingDependencyError(f"mode: sample needs optuna, which is not installed; install it with: "
                                     f"{OPTUNA_INSTALL} (or pip install 'optuna>=3')") from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


@dataclass
class SearchResult:
    """What a search found.

    Attributes:
        on: what the trials trained on (``whole``, ``srgm@0.01``, a condensed file's name).
        trials: the space's finished trial rows ranked by validation accuracy (best first; ties keep the
            space's order); pruned trials after them.
        failed: trial rows that raised (one-line ``error``).
        retrained: the ``top`` trials re-trained on the whole graph (their rows, in rank order).
        chosen: the re-trained row with the best whole-graph validation accuracy (its ``test_acc`` is the result).
        ran, skipped: trials run by this call, and trials already recorded.
        rows_path: the rows file this call appended to.
        condense_time_s: seconds spent condensing S here (:obj:`None` when S was given or read back).
    """

    on: str
    trials: list[dict]
    failed: list[dict]
    retrained: list[dict]
    chosen: dict | None
    ran: int
    skipped: int
    rows_path: Path
    condense_time_s: float | None = None
    protocol: dict[str, Any] = field(default_factory=dict)

    @property
    def search_time_s(self) -> float:
        """Seconds all the space's recorded trials took (their wall times summed)."""
        return float(sum(r.get("wall_time_s", 0.0) for r in [*self.trials, *self.failed]))

    @property
    def trial_time_s(self) -> float:
        """Mean seconds per finished (not pruned) trial."""
        ok = [r["wall_time_s"] for r in self.trials if r.get("status") == "ok"]
        return float(sum(ok) / len(ok)) if ok else math.nan

    def summary(self) -> dict[str, Any]:
        """A JSON-ready summary: the ranking's head, the re-trained rows, the chosen one, the times."""
        def brief(r: dict) -> dict:
            return {"config": r["config"], "method": r["method"], **{k: r["metrics"].get(k) for k in
                    ("val_acc", "test_acc", "train_time_s") if k in r.get("metrics", {})}}

        return {"on": self.on, "protocol": self.protocol, "trials": len(self.trials), "failed": len(self.failed),
                "ranking": [brief(r) for r in self.trials[:20]], "retrained": [brief(r) for r in self.retrained],
                "chosen": brief(self.chosen) if self.chosen else None, "search_time_s": self.search_time_s,
                "trial_time_s": self.trial_time_s, "condense_time_s": self.condense_time_s}


def _digest(value: Any) -> str:
    return hashlib.sha1(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:8]


def _key(dataset: str, on: str, stage: str, name: str, proto: str) -> str:
    return f"search|dataset={dataset}|on={on}|stage={stage}|{name}|proto={proto}"


def _row(base: dict[str, Any], key: str, stage: str, config: dict[str, Any], result: dict[str, Any],
         wall: float) -> dict[str, Any]:
    """A trial's row: its identity, configuration, result (status, metrics or error) and where it ran (a Ray
    worker's result names its own host and pid)."""
    return {"key": key, "id": hashlib.sha1(key.encode()).hexdigest()[:12], "task": "search", **base, "stage": stage,
            "method": config_key(config), "config": config, "executor": "local", "host": platform.node(),
            "pid": os.getpid(), **result, "wall_time_s": wall,
            "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}


def run_trial(target: Target, config: dict[str, Any], train_kw: dict[str, Any], progress=None) -> dict[str, Any]:
    """Train one candidate on ``target``: ``{"status": "ok", "metrics": {...}}``, or an error with its one-line
    message (the search goes on). A pruner's exception raised by ``progress`` is not caught."""
    from ..bench.cell import one_line

    try:
        return {"status": "ok", "metrics": target.train(config, progress=progress, **train_kw)}
    except Exception as exc:  # noqa: BLE001 - recorded as the trial's row
        if type(exc).__name__ == "TrialPruned":
            raise
        return {"status": "error", "error": one_line(exc)}


def _ray_trial(shared: tuple[Target, dict[str, Any]], item: tuple[Any, dict[str, Any]]) -> dict[str, Any]:
    """One Ray task: the trial ``item = (name, config)`` in a worker process (one thread)."""
    import torch

    torch.set_num_threads(1)
    target, train_kw = shared
    t0 = time.perf_counter()
    out = run_trial(target, item[1], train_kw)
    out.update(wall_time_s=time.perf_counter() - t0, executor="ray", host=platform.node(), pid=os.getpid())
    return out


def _trials(todo: list[tuple[Any, dict]], target: Target, train_kw: dict, executor: str, ray_address: str | None,
            progress_of=None):
    """``(name, config, result, wall seconds)`` for every ``(name, config)`` of ``todo`` as it finishes: in this
    process one after another, or one Ray task each (``progress_of(name)``: a local trial's epoch callback)."""
    if executor == "ray":
        from ..bench.executors import ray_map, ray_options

        for item, res, exc in ray_map(_ray_trial, todo, (target, train_kw), ray_options({"num_cpus": 1, "num_gpus": 0}),
                                      ray_address):
            res = res if exc is None else _worker_error(exc)
            yield item[0], item[1], res, res.pop("wall_time_s", 0.0)
        return
    for name, config in todo:
        t0 = time.perf_counter()
        res = run_trial(target, config, train_kw, progress=progress_of(name) if progress_of else None)
        yield name, config, res, time.perf_counter() - t0


def _source(data, condensed, condenser, on) -> str:
    given = [n for n, v in (("--condensed", condensed), ("--condenser", condenser), ("--on whole", on)) if v]
    if len(given) != 1:
        raise ConfigError(f"search: {' and '.join(given) if given else 'nothing'} given to search on; allowed: exactly "
                          "one of --condensed PATH, --condenser NAME (with --ratio), --on whole")
    if on is not None and on != "whole":
        raise ConfigError(f"--on: {on!r}; allowed: whole (or give --condensed PATH / --condenser NAME)")
    return given[0]


def check_search_args(space, *, condensed=None, condenser=None, ratio: float = 0.01, on: str | None = None,
                      top: int = 5, epochs: int = 300, eval_every: int = 10, patience: int | None = 10,
                      setting: str = "transductive", executor: str = "local", shard="0/1",
                      condense_params: Mapping[str, Any] | None = None) -> SearchSpace:
    """Every argument of :func:`search` checked before any work (one-line :class:`ConfigError`); returns the space."""
    from ..base import did_you_mean
    from ..bench.executors import EXECUTORS, import_ray
    from ..bench.spec import parse_shard
    from ..condense.evaluate import SETTINGS

    space = load_space(space)
    _source(None, condensed, condenser, on)
    for name, v, lo in (("top", top, 0), ("epochs", epochs, 1), ("eval_every", eval_every, 1)):
        if isinstance(v, bool) or not isinstance(v, int) or v < lo:
            raise ConfigError(f"--{name.replace('_', '-')}: {v!r}; allowed: an integer >= {lo}")
    if patience is not None and (isinstance(patience, bool) or not isinstance(patience, int) or patience < 1):
        raise ConfigError(f"--patience: {patience!r}; allowed: an integer >= 1 (validations) or none")
    if setting not in SETTINGS:
        raise ConfigError(f"--setting: {setting!r}{did_you_mean(setting, SETTINGS)}; allowed: {', '.join(SETTINGS)}")
    if executor not in EXECUTORS:
        raise ConfigError(f"--executor: {executor!r}{did_you_mean(executor, EXECUTORS)}; allowed: {', '.join(EXECUTORS)}")
    parse_shard(shard)
    if condenser is not None:
        from ..condense.registry import REGISTRY, condenser_names

        names = condenser_names()
        if condenser not in names:
            raise ConfigError(f"--condenser: {condenser!r}{did_you_mean(condenser, names)}; allowed: {', '.join(names)}")
        if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not 0 < ratio <= 1:
            raise ConfigError(f"--ratio: {ratio!r}; allowed: 0 < ratio <= 1 (a share of the training nodes)")
        REGISTRY.create(condenser, **dict(condense_params or {}), ratio=float(ratio), setting=setting).check_params()
    elif condensed is not None and not hasattr(condensed, "features") and not Path(condensed).is_file():
        raise ConfigError(f"--condensed: {str(condensed)!r} does not exist; allowed: a condensed graph written by "
                          "magkit condense (.safetensors)")
    if space.mode == "sample":
        import_optuna()
    if executor == "ray":
        import_ray()
    return space


def search(
    data,
    space: str | Path | Mapping[str, Any] | SearchSpace,
    out: str | Path,
    *,
    condensed=None,
    condenser: str | None = None,
    ratio: float = 0.01,
    on: str | None = None,
    top: int = 5,
    epochs: int = 300,
    eval_every: int = 10,
    patience: int | None = 10,
    seed: int = 0,
    setting: str = "transductive",
    split: str | None = None,
    root: str | Path | None = None,
    data_options: Mapping[str, Any] | None = None,
    condense_params: Mapping[str, Any] | None = None,
    executor: str = "local",
    shard: str | tuple[int, int] = "0/1",
    ray_address: str | None = "local",
    progress: Callable[[dict], None] | None = None,
) -> SearchResult:
    """Search ``space`` on a condensed graph S (or the whole graph), rank by the real validation accuracy and
    re-train the ``top`` best on the whole graph (see the module docstring for the protocol).

    Args:
        data: a dataset name (as ``magkit`` reads it, e.g. ``citeseer``) or a split
            :class:`~magkit.data.graph.MultimodalGraph`.
        space: a search space: a YAML file, a mapping or a :class:`~magkit.search.space.SearchSpace`.
        out: the folder of the rows (created); a search is resumed from the rows it holds.
        condensed: S: a condensed graph file (or a :class:`~magkit.condense.CondensedGraph`).
        condenser: condense S first with this registered condenser (kept as ``<out>/S-<name>-<ratio>-seed<seed>
            .safetensors`` and read back when the search is resumed).
        ratio: the budget of ``condenser``. (default: :obj:`0.01`)
        on: ``"whole"``: search on the whole training graph (the reference). Exactly one of ``condensed``,
            ``condenser`` and ``on`` is given.
        top: how many of the best trials are re-trained on the whole graph (0: none). (default: :obj:`5`)
        epochs: the most epochs of a training run. (default: :obj:`300`)
        eval_every: validate on the real graph after every this many epochs. (default: :obj:`10`)
        patience: stop a run after this many validations without improvement (:obj:`None`: never).
            (default: :obj:`10`)
        seed: the seed of every training run (and of the condensation). (default: :obj:`0`)
        setting: ``transductive`` or ``inductive`` (see :mod:`magkit.condense.evaluate`). (default: ``"transductive"``)
        split: a split spec for a dataset name (default: the dataset's own).
        root: a data folder to search first.
        data_options: options of the dataset reader or generator.
        condense_params: parameters of ``condenser``.
        executor: ``local`` (one trial after another) or ``ray`` (one Ray task per trial). (default: ``"local"``)
        shard: run only shard ``i/n`` of the trials (ranking and re-training happen in an unsharded run, which
            reads every shard's rows). (default: ``"0/1"``)
        ray_address: the Ray cluster (``local``, ``auto``, ``host:port``, ``ray://...``). (default: ``"local"``)
        progress: called with ``{"stage": "trial"|"retrain", "done", "total", "skipped", "row"}`` at the start
            of each stage and after every finished trial.

    Returns:
        SearchResult: the ranking, the re-trained rows and the chosen configuration.
    """
    from ..bench.rows import ShardLock, append_row, recorded, rows_file
    from ..bench.spec import parse_shard, shard_cells

    space = check_search_args(space, condensed=condensed, condenser=condenser, ratio=ratio, on=on, top=top,
                              epochs=epochs, eval_every=eval_every, patience=patience, setting=setting,
                              executor=executor, shard=shard, condense_params=condense_params)
    i_shard, n_shard = parse_shard(shard)
    notify = progress or (lambda rec: None)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    graph = _load(data, root, split, data_options)
    dataset = data if isinstance(data, str) else graph.name
    views = split_views(graph, setting)
    target, on_label, condense_time = _target(graph, views, out, condensed, condenser, ratio, seed, setting,
                                              condense_params)
    train_kw = {"epochs": epochs, "eval_every": eval_every, "patience": patience, "seed": seed}
    # what S-scores depend on beside the configuration: a rerun with other data options, S or condenser
    # parameters is a new search, not a resumed one
    protocol = {**train_kw, "setting": setting, "split": split, "graph": graph.checksum(),
                "condense_params": dict(condense_params or {})}
    proto = _digest(protocol)
    base = {"dataset": dataset, "on": on_label, "seed": seed, "protocol": protocol}
    path = rows_file(out, (i_shard, n_shard))
    ran = 0
    with ShardLock(path):
        done = recorded(out)
        if space.mode == "grid":
            configs = space.grid()
            keys = [_key(dataset, on_label, "trial", f"config={config_key(c)}", proto) for c in configs]
            mine = shard_cells(list(zip(keys, configs)), (i_shard, n_shard))
            todo = [(k, c) for k, c in mine if done.get(k, {}).get("status") not in ("ok", "pruned")]
            notify({"stage": "trial", "done": 0, "total": len(todo), "skipped": len(mine) - len(todo), "row": None})
            skipped = len(mine) - len(todo)
            for k, c, res, wall in _trials(todo, target, train_kw, executor, ray_address):
                row = _row(base, k, "trial", c, res, wall)
                append_row(path, row)
                ran += 1
                notify({"stage": "trial", "done": ran, "total": len(todo), "skipped": skipped, "row": row})
        else:
            ran, skipped = _sample(space, target, train_kw, base, dataset, on_label, proto, done, path,
                                   (i_shard, n_shard), executor, ray_address, notify)
    all_rows = recorded(out)
    if space.mode == "grid":
        space_rows = [all_rows[k] for k in keys if k in all_rows]
    else:
        prefix = _key(dataset, on_label, "trial", f"space={space.digest()}|trial=", proto).split("|trial=")[0]
        space_rows = [r for k, r in all_rows.items() if k.startswith(prefix + "|trial=") and k.endswith(f"|proto={proto}")]
    ranked = rank(space_rows)
    failed = [r for r in space_rows if r.get("status") == "error"]
    retrained: list[dict] = []
    if n_shard == 1 and top > 0:
        retrained = _retrain(ranked, top, graph, views, base, dataset, on_label, proto, train_kw, all_rows, path, notify)
    elif n_shard > 1:
        log.info("shard %d/%d: trials recorded; rank and re-train with an unsharded run on the same --out",
                 i_shard, n_shard)
    chosen = choose(retrained)
    return SearchResult(on_label, ranked, failed, retrained, chosen, ran, skipped, path, condense_time, protocol)


def _worker_error(exc: BaseException) -> dict[str, Any]:
    from ..bench.cell import one_line

    return {"status": "error", "error": one_line(exc), "wall_time_s": 0.0, "executor": "ray"}


def rank(rows: list[dict]) -> list[dict]:
    """Finished trial rows ranked by validation accuracy, best first (ties keep the given order); pruned
    trials follow (ranked the same way); error rows are left out."""
    def order(status: str) -> list[dict]:
        rs = [r for r in rows if r.get("status") == status]
        return sorted(rs, key=lambda r: -float(r["metrics"].get("val_acc", -math.inf)))  # stable: ties keep order

    return order("ok") + order("pruned")


def choose(retrained: list[dict]) -> dict | None:
    """The re-trained row with the best whole-graph validation accuracy (ties: the better-ranked on S)."""
    ok = [r for r in retrained if r.get("status") == "ok"]
    return max(ok, key=lambda r: r["metrics"]["val_acc"]) if ok else None  # max keeps the first of ties


def _load(data, root, split, options):
    if isinstance(data, str):
        from ..data.datasets import load_dataset

        return load_dataset(data, root=root, split=split, **dict(options or {}))
    return data


def _target(graph, views, out: Path, condensed, condenser, ratio, seed, setting, condense_params):
    from ..condense import CondensedGraph

    if condensed is None and condenser is None:
        return Target.whole(graph, views), "whole", None
    t = None
    if condensed is not None:
        if isinstance(condensed, CondensedGraph):
            cg, name = condensed, str(condensed.meta.get("method") or "condensed")
        else:
            cg, name = CondensedGraph.load(condensed), Path(condensed).name.removesuffix(".safetensors")
    else:
        name = f"{condenser}@{ratio:g}"
        extra = _digest({"setting": setting, "params": dict(condense_params or {})})[:8]
        path = out / f"S-{condenser}-{ratio:g}-seed{seed}-{extra}.safetensors"
        with _file_lock(path):  # shards started together condense S once; the others wait and read it
            if path.is_file():  # a resumed search trains on the same S
                cg = CondensedGraph.load(path)
            else:
                from ..condense.registry import make_condenser

                cond = make_condenser(condenser, **dict(condense_params or {}), ratio=float(ratio), seed=seed,
                                      setting=setting)
                t0 = time.perf_counter()
                cg = cond.condense(graph)
                t = time.perf_counter() - t0
                cg.save(path)
    cg.check_compatible(graph, strict_checksum=True)
    return Target.condensed(cg, views, name), name, t


@contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``<path>.lock`` for the body, waiting for another holder (no-op without
    ``fcntl``)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield
        return
    with open(str(path) + ".lock", "a") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def _retrain(ranked, top, graph, views, base, dataset, on_label, proto, train_kw, all_rows, path, notify) -> list[dict]:
    from ..bench.rows import append_row

    best, seen = [], set()
    for r in ranked:  # a sampler may draw one configuration twice: re-train distinct configurations
        if r.get("status") == "ok" and r["method"] not in seen:
            seen.add(r["method"])
            best.append(r)
    best = best[:top]
    whole = Target.whole(graph, views, with_test=True)
    rows, todo = [], []
    for i, r in enumerate(best):
        key = _key(dataset, on_label, "retrain", f"config={r['method']}", proto)
        rows.append(all_rows.get(key))
        if rows[-1] is None or rows[-1].get("status") != "ok":
            todo.append((i, key, r))
    notify({"stage": "retrain", "done": 0, "total": len(todo), "skipped": len(best) - len(todo), "row": None})
    for n, (i, key, r) in enumerate(todo, start=1):
        t0 = time.perf_counter()
        res = run_trial(whole, r["config"], train_kw)
        row = _row(base, key, "retrain", r["config"], res, time.perf_counter() - t0)
        row["rank_on_search"] = i + 1
        row["search_val_acc"] = r["metrics"]["val_acc"]
        append_row(path, row)
        rows[i] = row
        notify({"stage": "retrain", "done": n, "total": len(todo), "skipped": len(best) - len(todo), "row": row})
    return rows


def _sample(space: SearchSpace, target, train_kw, base, dataset, on_label, proto, done, path, shard, executor,
            ray_address, notify) -> tuple[int, int]:
    """Sampled search with Optuna (TPE, seeded; median pruning on the validation curve when local): shard
    ``i/n`` owns the trial numbers ``j`` with ``j % n == i``; recorded trials are told to the study first."""
    from ..bench.rows import append_row

    optuna = import_optuna()
    i_shard, n_shard = shard
    dists = space.distributions()
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=space.seed + i_shard),
                                pruner=optuna.pruners.MedianPruner(n_startup_trials=5))
    mine = [j for j in range(int(space.trials)) if j % n_shard == i_shard]
    keys = {j: _key(dataset, on_label, "trial", f"space={space.digest()}|trial={j}", proto) for j in mine}
    todo = []
    for j in mine:
        row = done.get(keys[j])
        if row is not None and row.get("status") in ("ok", "pruned") and row.get("params"):
            state = optuna.trial.TrialState.COMPLETE if row["status"] == "ok" else optuna.trial.TrialState.PRUNED
            study.add_trial(optuna.trial.create_trial(
                params=row["params"], distributions=dists, state=state,
                value=row["metrics"]["val_acc"] if row["status"] == "ok" else None))
        else:
            todo.append(j)
    skipped = len(mine) - len(todo)
    notify({"stage": "trial", "done": 0, "total": len(todo), "skipped": skipped, "row": None})
    ran = 0

    def record(j: int, trial, config: dict, res: dict, wall: float) -> None:
        nonlocal ran
        row = _row(base, keys[j], "trial", config, res, wall)
        row.update(params=trial.params, trial=j)
        append_row(path, row)
        ran += 1
        notify({"stage": "trial", "done": ran, "total": len(todo), "skipped": skipped, "row": row})
        if res["status"] == "ok":
            study.tell(trial, res["metrics"]["val_acc"])
        elif res["status"] == "pruned":
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        else:
            study.tell(trial, state=optuna.trial.TrialState.FAIL)

    if executor == "ray":  # rounds of RAY_ROUND trials; no pruning (the curves stay in the workers)
        for start in range(0, len(todo), RAY_ROUND):
            batch = {j: study.ask(dists) for j in todo[start:start + RAY_ROUND]}
            items = [(j, canonical(t.params)) for j, t in batch.items()]
            for j, config, res, wall in _trials(items, target, train_kw, "ray", ray_address):
                record(j, batch[j], config, res, wall)
        return ran, skipped
    for j in todo:
        trial = study.ask(dists)
        config = canonical(trial.params)
        best = {"val_acc": -math.inf, "epoch": 0}

        def report(rec: dict, trial=trial, best=best) -> None:
            v = rec.get("val_acc", math.nan)
            if v == v:  # a validation epoch (NaN in between)
                if v > best["val_acc"]:
                    best["val_acc"], best["epoch"] = v, rec["epoch"] + 1
                trial.report(v, rec["epoch"])
                if trial.should_prune():
                    raise optuna.TrialPruned()

        t0 = time.perf_counter()
        try:
            res = run_trial(target, config, train_kw, progress=report)
        except optuna.TrialPruned:
            res = {"status": "pruned", "metrics": {"val_acc": best["val_acc"], "best_epoch": best["epoch"]}}
        record(j, trial, config, res, time.perf_counter() - t0)
    return ran, skipped
