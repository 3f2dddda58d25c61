"""The guided tour behind ``magkit demo``: a small generated graph, a few methods, several seeds, and the
files a real experiment writes (per-method ``results.json`` and learning curves, a summary table, a bar chart).

The quick tour (:data:`QUICK`) fits an MLP on the fused features, GCN and GraphSAGE on the fused features
(early fusion, Hamilton et al., 2017; Kipf and Welling, 2017) and GraphMNL on a 1,000-node degree-corrected
stochastic block model with three modalities of unequal quality (:func:`magkit.data.make_synthetic_mag`), three
seeds each, with early stopping after 20 epochs without a better validation accuracy. The full tour
(:data:`FULL`) adds the single-modality, late-fusion, distillation and negative-learning baselines on the
2,000-node graph with the methods' own epoch budgets.

Every figure follows the evaluation protocol of :func:`magkit.eval.repeat`: MAGB's 60/20/20 split, epoch
selection on the validation split, mean ± sample standard deviation over seeds.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .eval.protocol import RepeatResult, RunResult

__all__ = ["DemoPlan", "QUICK", "FULL", "DEFAULT_OUT", "run_demo", "summary_markdown"]

DEFAULT_OUT = Path("magkit-demo")


@dataclass(frozen=True)
class DemoPlan:
    """What a demo runs.

    Args:
        data: the dataset name (see :func:`magkit.data.dataset_names`).
        data_options: generator options, e.g. ``{"num_nodes": 1000}`` (default: none).
        methods: registered method names, in table order.
        seeds: the seeds of every method.
        params: estimator parameters given to every method (default: none, the methods' own).
        threads: torch intra-op threads while the demo runs (default: ``None``, torch's own). On a graph of
            a thousand nodes every operation takes microseconds and thread synchronisation costs more than it
            saves (several times more on a loaded machine), so the quick tour uses one.
    """

    data: str
    methods: tuple[str, ...]
    seeds: tuple[int, ...]
    data_options: dict[str, Any] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)
    threads: int | None = None


QUICK = DemoPlan(
    data="synthetic",
    data_options={"num_nodes": 1000},
    methods=("mlp-early", "gcn-early", "sage-early", "graphmnl"),
    seeds=(0, 1, 2),
    params={"epochs": 150, "patience": 20},
    threads=1,
)
FULL = DemoPlan(
    data="synthetic",
    methods=("graphmnl", "mlp-text", "mlp-image", "mlp-early", "gcn-early", "sage-early", "gcn-late", "kd-gcn",
             "mnl-gcn"),
    seeds=(0, 1),
)


def run_demo(
    out: str | os.PathLike = DEFAULT_OUT,
    plan: DemoPlan = QUICK,
    *,
    methods: Sequence[str] | None = None,
    seeds: Sequence[int] | None = None,
    root: str | os.PathLike | None = None,
    on_graph: Callable[[Any], None] | None = None,
    on_method: Callable[[str], None] | None = None,
    on_run: Callable[[RunResult], None] | None = None,
    progress: Callable[[dict], None] | None = None,
) -> dict[str, Any]:
    """Run ``plan`` and write its files under ``out``.

    Args:
        out: the results folder (default: ``./magkit-demo``); checked for writability before any work.
        plan: :data:`QUICK` or :data:`FULL` (default: :data:`QUICK`).
        methods: replaces the plan's methods (default: ``None``).
        seeds: replaces the plan's seeds (default: ``None``).
        root: a data folder to search first (for datasets read from disk).
        on_graph: called once with the loaded graph.
        on_method: called with each method's name before it runs.
        on_run: called after every fitted seed with its :class:`~magkit.eval.RunResult`.
        progress: called after every epoch with the epoch's record (``"epoch"``, ``"epochs"``, ...).

    Returns:
        ``{"graph", "rows": [(method, RepeatResult)], "paths": {"summary_json", "summary_md", "plot",
        <method>: results.json}, "seeds", "split"}``.

    Writes ``out/<method>/results.json`` and ``learning_curves.png`` per method, ``out/summary.json``,
    ``out/summary.md`` and ``out/test_accuracy.png`` (mean test accuracy ± std per method).
    """
    from .eval.results import check_writable
    from .methods import get_method

    out = check_writable(out, "out", folder=True)
    names = tuple(methods) if methods is not None else plan.methods
    seed_list = tuple(seeds) if seeds is not None else plan.seeds
    for name in names:
        get_method(name)  # an unknown name fails here, before the graph is built
    import torch

    threads = torch.get_num_threads()
    if plan.threads is not None:
        torch.set_num_threads(plan.threads)
    try:
        return _run(out, plan, names, seed_list, root, on_graph, on_method, on_run, progress)
    finally:
        torch.set_num_threads(threads)


def _run(out, plan, names, seed_list, root, on_graph, on_method, on_run, progress) -> dict[str, Any]:
    from .data import load_dataset
    from .eval.experiment import run_experiment, write_experiment
    from .eval.results import atomic_write_bytes, atomic_write_json, plot_accuracy_bars

    graph = load_dataset(plan.data, root=root, **plan.data_options)
    if on_graph is not None:
        on_graph(graph)
    rows: list[tuple[str, RepeatResult]] = []
    paths: dict[str, Path] = {}
    payloads = {}
    for name in names:
        if on_method is not None:
            on_method(name)
        payload, result = run_experiment(name, graph, seed_list, params=dict(plan.params), on_run=on_run,
                                         progress=progress)
        paths[name] = write_experiment(payload, result, out / name)["results"]
        rows.append((name, result))
        payloads[name] = payload
    split = graph.meta.get("split", "magb")
    summary = {
        "dataset": {"name": graph.name, "options": plan.data_options, "nodes": graph.num_nodes,
                    "classes": graph.num_classes, "checksum": graph.checksum()},
        "split": split,
        "seeds": list(seed_list),
        "params": plan.params,
        "methods": {name: {**res.summary(), "wall_time_s": payloads[name]["wall_time_s"],
                           "results": str(paths[name].relative_to(out))} for name, res in rows},
    }
    paths["summary_json"] = atomic_write_json(out / "summary.json", summary)
    paths["summary_md"] = atomic_write_bytes(out / "summary.md", summary_markdown(rows, graph.name, split, seed_list).encode())
    bars = [(name, 100 * res.summary()["test_acc"]["mean"], 100 * res.summary()["test_acc"]["std"]) for name, res in rows]
    paths["plot"] = plot_accuracy_bars(bars, out / "test_accuracy.png",
                                       title=f"{graph.name} · split {split} · {len(seed_list)} seeds · mean ± std")
    return {"graph": graph, "rows": rows, "paths": paths, "seeds": list(seed_list), "split": split}


def summary_markdown(rows: Sequence[tuple[str, RepeatResult]], dataset: str, split: str, seeds: Sequence[int]) -> str:
    """A markdown table of test accuracy and macro-F1 (mean ± std over ``seeds``, %) per method."""
    lines = [f"# magkit demo: {dataset}", "",
             f"Split `{split}`, seeds {', '.join(map(str, seeds))}; epochs selected on the validation split; "
             "mean ± sample standard deviation over seeds (%).", "",
             "| method | test acc | test macro-F1 | val acc | epoch time (ms) |",
             "|---|---:|---:|---:|---:|"]
    for name, res in rows:
        ep = 1000 * res.summary()["epoch_time"]["mean"]
        lines.append(f"| {name} | {res.fmt('test_acc')} | {res.fmt('test_f1')} | {res.fmt('val_acc')} | {ep:.1f} |")
    return "\n".join(lines) + "\n"
