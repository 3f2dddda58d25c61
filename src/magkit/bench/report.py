"""Merge sweep rows files into tables and plots: ``magkit report ROWS.jsonl [more ...] --out DIR``.

Rows are read in the order the files are given (a folder stands for its ``rows*.jsonl`` files in name
order), line by line; a key seen again replaces the earlier row (the last wins, so a cell retried after a
failure reports its retry). Cells whose latest row is an error are listed apart and left out of the means.
Flat fit rows without a ``key`` (the committed ``benchmarks/*/rows.jsonl``) are read as fit rows
(:func:`~magkit.bench.rows.normalize_row`).

Writes ``results.md`` (mean ± sample std over seeds per method and setting, the number of seeds shown),
``results.json`` (the same numbers and the failed cells) and PNG plots: accuracy against the budget per
method for condense sweeps, a bar chart per setting for fit sweeps.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from ..eval.protocol import mean_std
from ..eval.results import atomic_write_bytes, atomic_write_json
from ..exceptions import ConfigError
from .rows import latest_rows, rows_files
from .rows import normalize_row as normalize

__all__ = ["expand_paths", "merge", "normalize", "render", "summarize"]

FIT_METRICS = ("test_acc", "test_f1", "val_acc", "val_f1", "fit_time_s", "epoch_time_s", "epochs_run")
CONDENSE_METRICS = ("test_acc", "test_f1", "val_acc", "condense_s", "train_time_s", "num_nodes", "edge_density")
SEARCH_METRICS = ("val_acc", "val_f1", "test_acc", "test_f1", "train_time_s", "epochs_run")


def expand_paths(paths: list[str | Path]) -> list[Path]:
    """Files as given; a folder becomes its ``rows.jsonl`` and ``rows.shard-*.jsonl`` files (name order).
    ConfigError on a missing path."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = rows_files(p)
            if not found:
                raise ConfigError(f"report: folder {str(p)!r} holds no rows.jsonl or rows.shard-*.jsonl file")
            out += found
        elif p.is_file():
            out.append(p)
        else:
            raise ConfigError(f"report: {str(p)!r} does not exist; allowed: rows files (.jsonl) or sweep folders")
    if not out:
        raise ConfigError("report: no rows files given; allowed: one or more rows .jsonl files or sweep folders")
    return out


def merge(paths: list[str | Path]) -> tuple[dict[str, dict], int]:
    """key -> the last row for it over ``paths`` (in order); and the number of rows read."""
    return latest_rows(expand_paths(paths))


def _setting(row: dict) -> tuple:
    if row["task"] == "search":  # magkit search: grouped by what the trials trained on
        return ("search", row["dataset"], row["on"])
    return ("fit", row["dataset"], row["split"]) if row["task"] == "fit" else ("condense", row["dataset"])


def summarize(rows: list[dict]) -> list[dict[str, Any]]:
    """Groups of ok rows: fit by (dataset, split, method), condense by (dataset, method, ratio), search by
    (dataset, what it trained on, stage, configuration); per metric mean and sample std over the group's seeds;
    peak memory as the group's maximum."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        if r["task"] == "search":
            gk = _setting(r) + (r.get("stage", "trial"), r["method"])
        else:
            gk = _setting(r) + ((r["method"],) if r["task"] == "fit" else (r["method"], float(r["ratio"])))
        groups.setdefault(gk, []).append(r)
    out = []
    for gk, rs in groups.items():
        task = gk[0]
        g: dict[str, Any] = {"task": task, "dataset": gk[1], "method": gk[-1] if task in ("fit", "search") else gk[2]}
        if task in ("fit", "search"):
            g["split"] = gk[2]
        else:
            g["ratio"] = gk[3]
        if task == "search":
            g["stage"] = gk[3]
        g["seeds"] = sorted(r["seed"] for r in rs)
        g["n"] = len(rs)
        names = list({"fit": FIT_METRICS, "search": SEARCH_METRICS}.get(task, CONDENSE_METRICS))
        names += sorted({k for r in rs for k in r["metrics"] if k not in names and re.match(r"^\w+_(test_acc|test_f1|val_acc)$", k)})
        g["metrics"] = {}
        for k in names:
            vals = [r["metrics"][k] for r in rs if isinstance(r["metrics"].get(k), (int, float))]
            if vals:
                m, sd = mean_std(vals)
                g["metrics"][k] = {"mean": m, "std": sd, "n": len(vals)}
        aucs = [r["metrics"]["reliability_auc"] for r in rs if isinstance(r["metrics"].get("reliability_auc"), dict)]
        if aucs:  # GraphMNL on a generated graph: per branch kind
            g["reliability_auc"] = {}
            for kind in sorted({k for a in aucs for k in a}):
                m, sd = mean_std([a[kind] for a in aucs if kind in a])
                g["reliability_auc"][kind] = {"mean": m, "std": sd, "n": sum(kind in a for a in aucs)}
        mem = [r["peak_memory_mb"] for r in rs if isinstance(r.get("peak_memory_mb"), (int, float))]
        g["peak_memory_mb"] = max(mem) if mem else None
        wall = [r["wall_time_s"] for r in rs if isinstance(r.get("wall_time_s"), (int, float))]
        g["wall_time_s"] = sum(wall) if wall else None
        out.append(g)
    return out


def _pm(m: dict | None, scale: float = 100.0, digits: int = 2) -> str:
    if not m:
        return "–"
    return f"{scale * m['mean']:.{digits}f} ± {scale * m['std']:.{digits}f}"


def _slug(*parts: Any) -> str:
    return re.sub(r"[^A-Za-z0-9.-]+", "_", "_".join(str(p) for p in parts)).strip("_")


def _ratio(r: float) -> str:
    return f"{100 * r:g}%"


def render(paths: list[str | Path], out: str | Path, command: str | None = None, *, title: str = "Sweep report",
           only: list[str] | None = None, extra_md: str = "") -> dict[str, Any]:
    """Merge ``paths`` and write ``results.md``, ``results.json`` and the plots under ``out``; returns
    ``{"markdown", "json", "plots": [...], "cells", "ok", "failed"}``.

    Args:
        paths: rows files or sweep folders, merged in order (of the rows of a cell the one finished last wins).
        out: the folder to write.
        command: the command shown as the way to regenerate the report. (default: the ``magkit report`` line)
        title: the markdown title. (default: ``"Sweep report"``)
        only: cell keys to report, in the order of the tables (a suite's grid); :obj:`None` reports every cell in
            the order read. (default: :obj:`None`)
        extra_md: markdown appended at the end. (default: ``""``)
    """
    files = expand_paths(paths)
    latest, n_read = merge(files)
    if only is not None:
        latest = {k: latest[k] for k in only if k in latest}
    ok = [r for r in latest.values() if r.get("status", "ok") == "ok" and isinstance(r.get("metrics"), dict)]
    failed = [r for r in latest.values() if r.get("status") == "error"]
    groups = summarize(ok)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    command = command or "magkit report " + " ".join(str(p) for p in paths) + f" --out {out}"
    lines = [f"# {title}", "",
             f"Regenerate with `{command}`. Merged {n_read} rows from {len(files)} file(s) "
             f"({', '.join(f'`{p.name}`' for p in files)}) into {len(latest)} cells: {len(ok)} ok, {len(failed)} failed "
             "(a cell recorded twice counts once: the latest row wins).", "",
             "Accuracy and macro-F1 in %, mean ± sample std over the seeds (n: how many); peak memory: the largest "
             "peak RSS of the group's cells (MiB).", ""]
    plots: list[Path] = []
    settings: dict[tuple, list[dict]] = {}
    for g in groups:
        settings.setdefault((g["task"], g["dataset"], g.get("split")), []).append(g)
    for (task, dataset, split), gs in settings.items():
        if task == "search":  # a ranking, not a plot
            lines += _search_table(dataset, split, gs)
            continue
        if task == "fit":
            lines += _fit_table(dataset, split, gs)
            plots.append(_fit_plot(dataset, split, gs, out))
        else:
            lines += _condense_tables(dataset, gs)
            plots.append(_condense_plot(dataset, gs, out))
        lines += [f"![{plots[-1].stem}]({plots[-1].name})", ""]
    if failed:
        lines += ["## Failed cells", "", f"{len(failed)} cell(s) whose latest row is an error (rerun them with "
                  "`magkit sweep SPEC --out DIR --retry-failed`):", "", "| cell | error | executor | finished |",
                  "| --- | --- | --- | --- |"]
        for r in failed:
            err = str(r.get("error", "")).replace("|", "\\|")
            lines.append(f"| `{r['key']}` | {err} | {r.get('executor', '')} | {r.get('finished_at', '')} |")
        lines.append("")
    lines += _auc_table(groups)
    if extra_md:
        lines += [extra_md, ""]
    stamps = sorted(str(r["finished_at"]) for r in ok if r.get("finished_at"))
    if stamps:
        lines += [f"Rows recorded from {_stamp(stamps[0])} to {_stamp(stamps[-1])} UTC.", ""]
    envs = {json.dumps(r.get("environment"), sort_keys=True) for r in ok if r.get("environment")}
    if envs:
        lines += ["Environments of the rows: " + "; ".join(f"`{e}`" for e in sorted(envs)), ""]
    md = atomic_write_bytes(out / "results.md", "\n".join(lines).encode())
    js = atomic_write_json(out / "results.json", {
        "command": command, "sources": [str(p) for p in files], "rows_read": n_read, "cells": len(latest),
        "ok": len(ok), "failed": len(failed), "groups": groups,
        "errors": [{k: r.get(k) for k in ("key", "error", "executor", "host", "finished_at")} for r in failed],
        "plots": [p.name for p in plots],
    })
    return {"markdown": md, "json": js, "plots": plots, "cells": len(latest), "ok": len(ok), "failed": len(failed),
            "groups": groups}


def _fit_table(dataset: str, split: str, gs: list[dict]) -> list[str]:
    best = max(g["metrics"]["test_acc"]["mean"] for g in gs if "test_acc" in g["metrics"])
    lines = [f"## fit · {dataset} · split `{split}`", "",
             "| method | test acc | test macro-F1 | val acc | epoch time (ms) | fit time (s) | peak mem (MiB) | n | seeds |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    for g in gs:
        m = g["metrics"]
        acc = _pm(m.get("test_acc"))
        if m.get("test_acc") and m["test_acc"]["mean"] == best:
            acc = f"**{acc}**"
        fit_t = f"{m['fit_time_s']['mean']:.2f}" if "fit_time_s" in m else "–"
        ep_t = f"{1000 * m['epoch_time_s']['mean']:.1f}" if "epoch_time_s" in m else "–"
        mem = f"{g['peak_memory_mb']:.0f}" if g["peak_memory_mb"] is not None else "–"
        lines.append(f"| {g['method']} | {acc} | {_pm(m.get('test_f1'))} | {_pm(m.get('val_acc'))} | {ep_t} | {fit_t} | {mem} | "
                     f"{g['n']} | {','.join(map(str, g['seeds']))} |")
    return lines + [""]


def _search_table(dataset: str, on: str, gs: list[dict]) -> list[str]:
    """``magkit search`` rows: the trials ranked by validation accuracy, then the re-trained ones."""
    def acc(g: dict, k: str) -> str:
        m = g["metrics"].get(k)
        return f"{100 * m['mean']:.2f}" if m else "–"

    def secs(g: dict) -> str:
        m = g["metrics"].get("train_time_s")
        return f"{m['mean']:.3f}" if m else "–"

    trials = sorted((g for g in gs if g.get("stage") == "trial"),
                    key=lambda g: -g["metrics"].get("val_acc", {"mean": -1.0})["mean"])
    lines = [f"## search · {dataset} · trained on `{on}`", "",
             f"{len(trials)} trials ranked by validation accuracy on the real validation split (%).", "",
             "| rank | configuration | val acc | train time (s) |", "| ---: | --- | ---: | ---: |"]
    lines += [f"| {i} | {g['method']} | {acc(g, 'val_acc')} | {secs(g)} |" for i, g in enumerate(trials, start=1)]
    retrained = [g for g in gs if g.get("stage") == "retrain"]
    if retrained:
        lines += ["", "Re-trained on the whole training graph:", "",
                  "| configuration | val acc | test acc | test macro-F1 | train time (s) |", "| --- | ---: | ---: | ---: | ---: |"]
        lines += [f"| {g['method']} | {acc(g, 'val_acc')} | {acc(g, 'test_acc')} | {acc(g, 'test_f1')} | {secs(g)} |"
                  for g in sorted(retrained, key=lambda g: -g["metrics"].get("val_acc", {"mean": -1.0})["mean"])]
    return lines + [""]


def _stamp(iso: str) -> str:
    """``2026-12-06T19:46:09+00:00`` as ``2026-12-06 19:46`` (a row's ``finished_at``, UTC)."""
    return iso.replace("T", " ")[:16]


def _auc_table(groups: list[dict]) -> list[str]:
    rows = [g for g in groups if g.get("reliability_auc")]
    if not rows:
        return []
    lines = ["## Reliability AUC against the generator's ground truth", "",
             "How well the fitted model's smoothed reliability r̃_text − r̃_image ranks the truly better modality per "
             "node (1 = perfectly, 0.5 = chance), per branch kind; mean ± std over the runs that recorded it.", "",
             "| dataset | split | method | raw | prop | runs |", "| --- | --- | --- | ---: | ---: | ---: |"]
    for g in rows:
        a = g["reliability_auc"]
        cell = {k: f"{a[k]['mean']:.3f} ± {a[k]['std']:.3f}" if k in a else "—" for k in ("raw", "prop")}
        lines.append(f"| {g['dataset']} | {g['split']} | {g['method']} | {cell['raw']} | {cell['prop']} | "
                     f"{max(v['n'] for v in a.values())} |")
    return lines + [""]


def _condense_tables(dataset: str, gs: list[dict]) -> list[str]:
    ratios = sorted({g["ratio"] for g in gs if g["method"] != "whole"})
    methods = list(dict.fromkeys(g["method"] for g in gs if g["method"] != "whole"))
    by = {(g["method"], g["ratio"]): g for g in gs}
    whole = next((g for g in gs if g["method"] == "whole"), None)
    lines = [f"## condense · {dataset}", ""]
    if whole:
        lines += [f"whole graph (upper bound): test acc {_pm(whole['metrics'].get('test_acc'))} (n {whole['n']})", ""]
    lines += ["Test accuracy of the first evaluation backbone by budget (mean ± std over condensation seeds, n):", "",
              "| method | " + " | ".join(_ratio(r) for r in ratios) + " |", "| --- |" + " ---: |" * len(ratios)]
    for m in methods:
        cells = []
        for r in ratios:
            g = by.get((m, r))
            cells.append(f"{_pm(g['metrics'].get('test_acc'))} ({g['n']})" if g else "–")
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    backbones = sorted({k[: -len("_test_acc")] for g in gs for k in g["metrics"] if k.endswith("_test_acc")})
    lines += ["", "| method | budget | n' | " + " | ".join(f"{b} test acc" for b in backbones)
              + " | macro-F1 | val acc | condense s | peak mem (MiB) | n |",
              "| --- | --- | ---: |" + " ---: |" * (len(backbones) + 5)]
    for g in sorted(gs, key=lambda g: (g["method"] != "whole", g["ratio"], methods.index(g["method"]) if g["method"] in methods else -1)):
        m = g["metrics"]
        nn = f"{m['num_nodes']['mean']:.0f}" if "num_nodes" in m else "–"
        cs = f"{m['condense_s']['mean']:.2f}" if "condense_s" in m else "–"
        mem = f"{g['peak_memory_mb']:.0f}" if g["peak_memory_mb"] is not None else "–"
        budget = "whole" if g["method"] == "whole" else _ratio(g["ratio"])
        lines.append(f"| {g['method']} | {budget} | {nn} | " + " | ".join(_pm(m.get(f"{b}_test_acc")) for b in backbones)
                     + f" | {_pm(m.get('test_f1'))} | {_pm(m.get('val_acc'))} | {cs} | {mem} | {g['n']} |")
    return lines + [""]


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _fit_plot(dataset: str, split: str, gs: list[dict], out: Path) -> Path:
    from ..eval.results import save_figure

    plt = _plt()
    gs = [g for g in gs if "test_acc" in g["metrics"]]
    fig, ax = plt.subplots(figsize=(max(4.0, 0.8 * len(gs) + 2), 3.6))
    means = [100 * g["metrics"]["test_acc"]["mean"] for g in gs]
    stds = [100 * g["metrics"]["test_acc"]["std"] for g in gs]
    ax.bar(range(len(gs)), means, yerr=stds, capsize=3, color="tab:blue", alpha=0.8)
    ax.set_xticks(range(len(gs)))
    ax.set_xticklabels([f"{g['method']}\n(n={g['n']})" for g in gs], rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("test accuracy (%)")
    lo = min(m - s for m, s in zip(means, stds)) if means else 0
    ax.set_ylim(max(0, lo - 5), min(100, max(m + s for m, s in zip(means, stds)) + 3) if means else 100)
    ax.set_title(f"{dataset} · split {split}", fontsize=10)
    return save_figure(fig, out / f"fit_{_slug(dataset, split)}.png")


def _condense_plot(dataset: str, gs: list[dict], out: Path) -> Path:
    from ..eval.results import save_figure

    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    methods = list(dict.fromkeys(g["method"] for g in gs if g["method"] != "whole"))
    for m in methods:
        pts = sorted((g["ratio"], g["metrics"]["test_acc"]) for g in gs if g["method"] == m and "test_acc" in g["metrics"])
        if not pts:
            continue
        ax.errorbar([100 * r for r, _ in pts], [100 * v["mean"] for _, v in pts], yerr=[100 * v["std"] for _, v in pts],
                    marker="o", capsize=3, label=m)
    whole = next((g for g in gs if g["method"] == "whole" and "test_acc" in g["metrics"]), None)
    if whole:
        ax.axhline(100 * whole["metrics"]["test_acc"]["mean"], ls="--", c="gray", label="whole graph")
    ratios = sorted({g["ratio"] for g in gs if g["method"] != "whole"})
    if len(ratios) > 1 and ratios[-1] / ratios[0] >= 4:
        ax.set_xscale("log")
        ax.minorticks_off()
    ax.set_xticks([100 * r for r in ratios])
    ax.set_xticklabels([_ratio(r) for r in ratios])
    ax.set_xlabel("budget (share of the training nodes)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(f"{dataset}: accuracy against the budget", fontsize=10)
    ax.legend(fontsize=7)
    return save_figure(fig, out / f"condense_{_slug(dataset)}.png")
