"""Benchmark suites: a grid of (dataset x split x method x seed) cells -> JSON-lines rows -> tables.

A suite is a YAML file::

    name: nodecls
    datasets: [grocery-semi:text-dominant, grocery-semi:image-dominant, grocery-semi:balanced]
    splits: [magb, rate:0.05]
    methods: [mlp-text, gcn-early, ...]
    seeds: 0..4
    params: {epochs: 300}            # shared estimator parameters
    method_params: {gat-early: {hidden: 64}}

``run_suite`` appends one JSON line per (dataset, split, method, seed) to ``<out>/rows.jsonl`` and skips
cells already there, so an interrupted run resumes where it stopped. ``render`` turns the rows into
``<out>/results.md`` (mean ± std per method, one table per dataset x split) and ``<out>/results.json``.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..eval.protocol import mean_std
from ..eval.results import atomic_write_bytes, atomic_write_json, environment, peak_memory_mb
from ..exceptions import ConfigError

log = logging.getLogger(__name__)


def load_suite(path: str | Path) -> dict[str, Any]:
    from ..eval.experiment import parse_seeds, read_yaml_mapping

    path = Path(path)
    cfg = read_yaml_mapping(path, "suite", "a mapping of keys (datasets, splits, methods, seeds, ...)")
    for key in ("datasets", "methods"):
        if not cfg.get(key):
            raise ConfigError(f"suite {path}: {key!r} must list at least one entry")
    cfg.setdefault("name", path.stem)
    cfg.setdefault("splits", ["magb"])
    cfg["seeds"] = parse_seeds(str(cfg.get("seeds", "0..4")))
    cfg.setdefault("params", {})
    cfg.setdefault("method_params", {})
    return cfg


def _cell_key(row: dict) -> tuple:
    return (row["dataset"], row["split"], row["method"], row["seed"])


def read_rows(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if line:
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:  # a line cut by an interruption: ignore it, the cell reruns
                log.warning("skipping a damaged line in %s", path)
    return rows


def append_row(path: Path, row: dict) -> None:
    """Append one JSON line to ``path`` in a single ``write``, then flush and fsync (a crash loses at most the
    line being written, which :func:`read_rows` then skips)."""
    with Path(path).open("a") as fh:
        fh.write(json.dumps(row) + "\n")
        fh.flush()
        os.fsync(fh.fileno())


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


def fit_cell(graph, method: str, params: dict[str, Any], seed: int) -> dict[str, Any]:
    """Fit one fresh ``method`` estimator on ``graph`` (epoch selected on validation, test read once) and
    return its metrics: accuracy and macro-F1 on val and test, epochs run, best epoch, epoch and fit time."""
    from ..methods import get_method

    est = get_method(method).create(**{**params, "seed": seed})
    t0 = time.perf_counter()
    est.fit(graph)
    fit_time = time.perf_counter() - t0
    val, test = est.score(graph, "val"), est.score(graph, "test")
    row = {"val_acc": val["acc"], "val_f1": val["f1"], "test_acc": test["acc"], "test_f1": test["f1"],
           "epochs_run": len(est.history_.epochs), "best_epoch": est.history_.best_epoch,
           "epoch_time_s": est.history_.epoch_time, "fit_time_s": fit_time}
    auc = (getattr(est, "diagnostics_", None) or {}).get("reliability_auc")
    if auc:  # GraphMNL on a graph with ground truth: how well r̃ ranks the truly better modality, per branch kind
        row["reliability_auc"] = {k: float(v) for k, v in auc.items()}
    return row


def run_suite(cfg: dict[str, Any], out: str | Path, root: str | None = None,
              on_cell: Callable[[dict, int, int], None] | None = None, shard: tuple[int, int] = (0, 1)) -> list[dict]:
    """Run every cell not yet in ``<out>/rows.jsonl``; returns all rows.

    ``shard=(i, n)`` runs only the cells whose position in the suite's full grid is ``i`` modulo ``n``, so
    ``n`` processes (or a scheduler's job array) can share one suite; each appends whole lines to the same
    ``rows.jsonl`` (single ``write`` calls on a file opened for appending).
    """
    i_shard, n_shard = parse_shard(shard)
    from ..data import load_dataset
    from ..methods import get_method

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rows_path = out / "rows.jsonl"
    rows = read_rows(rows_path)
    done = {_cell_key(r) for r in rows}
    for m in cfg["methods"]:
        get_method(m)  # fail fast on a bad name
    cells = [(d, s, m, seed) for d in cfg["datasets"] for s in cfg["splits"] for m in cfg["methods"] for seed in cfg["seeds"]]
    todo = [c for k, c in enumerate(cells) if c not in done and k % n_shard == i_shard]
    # one graph load per (dataset, split, split seed): drawn splits change with the seed, so group the cells
    # by the graph they need (stable, so the grid order is kept within a graph)
    order = {}
    for d, s, _m, seed in todo:
        order.setdefault((d, s, split_seed(s, seed)), len(order))
    todo.sort(key=lambda c: order[(c[0], c[1], split_seed(c[1], c[3]))])
    graphs: dict[tuple[str, str, int], Any] = {}
    for i, (dname, split, method, seed) in enumerate(todo):
        key = (dname, split, split_seed(split, seed))
        if key not in graphs:
            graphs.clear()
            graphs[key] = load_dataset(dname, root=root, split=split, seed=key[2])
        graph = graphs[key]
        params = {**cfg["params"], **cfg["method_params"].get(method, {})}
        row = {"dataset": dname, "split": split, "method": method, "seed": seed,
               **fit_cell(graph, method, params, seed),
               "peak_memory_mb": peak_memory_mb(), "dataset_checksum": graph.checksum()}
        append_row(rows_path, row)
        rows.append(row)
        if on_cell is not None:
            on_cell(row, i + 1, len(todo))
    return rows


def summarize(rows: list[dict]) -> dict[tuple[str, str, str], dict[str, Any]]:
    groups: dict[tuple[str, str, str], list[dict]] = {}
    for r in rows:
        groups.setdefault((r["dataset"], r["split"], r["method"]), []).append(r)
    out = {}
    for key, rs in groups.items():
        s = {"seeds": sorted(r["seed"] for r in rs)}
        for metric in ("val_acc", "val_f1", "test_acc", "test_f1", "epoch_time_s", "fit_time_s"):
            m, sd = mean_std([r[metric] for r in rs])
            s[metric] = {"mean": m, "std": sd}
        s["peak_memory_mb"] = max(r["peak_memory_mb"] for r in rs)
        aucs = [r["reliability_auc"] for r in rs if r.get("reliability_auc")]
        if aucs:
            s["reliability_auc"] = {}
            for kind in sorted({k for a in aucs for k in a}):
                vals = [a[kind] for a in aucs if kind in a]
                m, sd = mean_std(vals)
                s["reliability_auc"][kind] = {"mean": m, "std": sd, "runs": len(vals)}
        out[key] = s
    return out


def render(cfg: dict[str, Any], rows: list[dict], out: str | Path, command: str, extra_md: str = "") -> dict[str, Path]:
    """Write ``results.md`` and ``results.json`` from the rows (only the suite's own cells)."""
    out = Path(out)
    wanted = {(d, s, m) for d in cfg["datasets"] for s in cfg["splits"] for m in cfg["methods"]}
    rows = [r for r in rows if (r["dataset"], r["split"], r["method"]) in wanted and r["seed"] in cfg["seeds"]]
    summ = summarize(rows)
    lines = [f"# Benchmark `{cfg['name']}`", "",
             f"Regenerate with `{command}`. Mean ± sample std over seeds {cfg['seeds']} (accuracy and macro-F1 in %,",
             "test split read once per run, epoch selected on validation). Epoch time: mean wall time of one",
             "training epoch; peak memory: the process's peak RSS while the cell's group ran.", "",
             f"Environment: {json.dumps(environment())}", ""]
    for d in cfg["datasets"]:
        for s in cfg["splits"]:
            present = [(m, summ[(d, s, m)]) for m in cfg["methods"] if (d, s, m) in summ]
            if not present:
                continue
            best_acc = max(v["test_acc"]["mean"] for _, v in present)
            best_f1 = max(v["test_f1"]["mean"] for _, v in present)
            lines += [f"## {d} · split `{s}`", "",
                      "| method | test acc | test macro-F1 | val acc | epoch time (ms) | fit time (s) | peak mem (MiB) | seeds |",
                      "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
            for m, v in present:
                def f(key, best=None, v=v):
                    txt = f"{100 * v[key]['mean']:.2f} ± {100 * v[key]['std']:.2f}"
                    return f"**{txt}**" if best is not None and v[key]["mean"] == best else txt
                lines.append(f"| {m} | {f('test_acc', best_acc)} | {f('test_f1', best_f1)} | {f('val_acc')} | "
                             f"{1000 * v['epoch_time_s']['mean']:.1f} | {v['fit_time_s']['mean']:.1f} | "
                             f"{v['peak_memory_mb']:.0f} | {len(v['seeds'])} |")
            lines.append("")
    auc_rows = [(d, s, m, summ[(d, s, m)]["reliability_auc"]) for d in cfg["datasets"] for s in cfg["splits"]
                for m in cfg["methods"] if "reliability_auc" in summ.get((d, s, m), {})]
    if auc_rows:
        lines += ["## Reliability AUC against the generator's ground truth", "",
                  "How well the fitted model's smoothed reliability r̃_text − r̃_image ranks the truly better modality",
                  "per node (1 = perfectly, 0.5 = chance), per branch kind; mean ± std over the runs that recorded it.", "",
                  "| dataset | split | method | raw | prop | runs |", "| --- | --- | --- | ---: | ---: | ---: |"]
        for d, s, m, a in auc_rows:
            cell = {k: f"{a[k]['mean']:.3f} ± {a[k]['std']:.3f}" if k in a else "—" for k in ("raw", "prop")}
            runs = max(v["runs"] for v in a.values())
            lines.append(f"| {d} | {s} | {m} | {cell['raw']} | {cell['prop']} | {runs} |")
        lines.append("")
    if extra_md:
        lines += [extra_md, ""]
    md = atomic_write_bytes(out / "results.md", "\n".join(lines).encode())
    js = atomic_write_json(out / "results.json", {
        "suite": cfg["name"], "command": command, "seeds": cfg["seeds"], "environment": environment(),
        "results": [{"dataset": d, "split": s, "method": m, **v} for (d, s, m), v in summ.items()],
    })
    return {"markdown": md, "json": js}
