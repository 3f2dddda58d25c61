"""One cell of a sweep: load its graph, fit (or condense and evaluate), and build the row it records.

:func:`run_cell` turns any exception into an error row (``status: error`` and a one-line ``error``), so one
bad cell never stops a sweep. A row holds the cell's axes, the parameters it ran with, its metrics, the
dataset checksum, wall time, peak memory, where it ran and the library versions. The loaded graph is kept
for the next cell of the same process (:mod:`magkit.bench.executors` orders the cells by the graph they need).
"""

from __future__ import annotations

import json
import os
import platform
import re
import time
import traceback
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .spec import AXES, WHOLE, Cell, jsonable, split_seed

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
    if vars(est).get("output_alpha_", 1.0) < 1.0 or "output_scores_" in vars(est):  # GraphMNL's output_prop
        row["output_alpha"] = float(est.output_alpha_)
    auc = (vars(est).get("diagnostics_") or {}).get("reliability_auc")
    if auc:  # how well the reliability r̃ ranks the truly better modality, per branch kind
        row["reliability_auc"] = {k: float(v) for k, v in auc.items()}
    return row


def _fit_metrics(spec: dict[str, Any], f: dict[str, Any]) -> tuple[dict[str, Any], str]:
    graph, checksum = _graph(spec, f["dataset"], f["split"], split_seed(f["split"], f["seed"]))
    return fit_cell(graph, f["method"], spec["effective_params"][f["method"]], f["seed"]), checksum


def _condense_metrics(spec: dict[str, Any], f: dict[str, Any]) -> tuple[dict[str, Any], str, dict]:
    from ..condense import evaluate_condensed, graph_views, make_condenser, train_whole

    graph, checksum = _graph(spec, f["dataset"], spec["split"], split_seed(spec["split"], f["seed"]))
    ev = spec["evaluate"]
    views = graph_views(graph, spec["setting"])
    train_kw = {k: ev[k] for k in ("epochs", "hidden", "lr", "weight_decay")}
    if ev.get("protocol") == "fast":  # the condensed-graph runs and the whole-graph bar share the opt-in protocol
        train_kw.update({k: ev[k] for k in ("protocol", "eval_every", "patience", "val_dtype")})
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
                           "params": jsonable(spec["effective_params"].get(f["method"], {}))}
    if cell.task == "condense":
        row.update(split=spec["split"], setting=spec["setting"], evaluate=jsonable(spec["evaluate"]))
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
