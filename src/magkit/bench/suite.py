"""Benchmark suites: ``magkit bench run SUITE.yaml``, a fit sweep with the suite's own folder and tables.

A suite is a fit sweep spec (:mod:`magkit.bench.spec`; ``task`` may be left out)::

    name: profiles
    datasets: [grocery-semi:text-dominant, grocery-semi:image-dominant, grocery-semi:balanced]
    splits: [magb, rate:0.05]
    methods: [mlp-text, gcn-early, ...]
    seeds: 0..4
    params: {epochs: 300}            # shared estimator parameters
    method_params: {gat-early: {hidden: 64}}

:func:`run_suite` runs the grid's cells not yet recorded in the suite's folder (``<out>/rows.jsonl``; shard
``i/n`` writes ``<out>/rows.shard-i-of-n.jsonl``) through :func:`~magkit.bench.sweep.run_sweep`, so an
interrupted run resumes where it stopped. :func:`render` writes ``<out>/results.md`` and ``<out>/results.json``
with :func:`magkit.bench.report.render`, restricted to the suite's own cells. Flat rows recorded without a key
are read as the same cells (:func:`~magkit.bench.rows.normalize_row`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from .rows import recorded, rows_files
from .spec import expand_grid, load_spec
from .sweep import run_sweep

__all__ = ["load_suite", "render", "run_suite", "suite_rows"]


def load_suite(path: str | Path) -> dict[str, Any]:
    """Read and check a suite (a fit sweep spec); ConfigError on a bad file, key, method or parameter."""
    return load_spec(path, what="suite")


def run_suite(spec: dict[str, Any], out: str | Path, root: str | Path | None = None,
              on_cell: Callable[[dict, int, int], None] | None = None, shard: tuple[int, int] | str = (0, 1)) -> list[dict]:
    """Run every cell of this shard not yet recorded under ``out``; returns the suite's recorded rows (sweep
    rows, grid order). ``on_cell(row, done, total)`` is called after each row is written."""
    if root is not None:
        spec = {**spec, "root": str(root)}
    run_sweep(spec, out, shard=shard, on_row=on_cell)
    return suite_rows(spec, out)


def suite_rows(spec: dict[str, Any], out: str | Path) -> list[dict]:
    """The rows recorded under ``out`` for the suite's cells, in grid order."""
    done = recorded(out)
    return [done[c.key] for c in expand_grid(spec) if c.key in done]


def render(spec: dict[str, Any], out: str | Path, command: str, extra_md: str = "") -> dict[str, Any]:
    """Write ``results.md`` and ``results.json`` (and a plot per dataset and split) under ``out`` from the rows
    recorded there, the suite's cells only, in grid order; returns :func:`magkit.bench.report.render`'s dict."""
    from .report import render as render_rows

    files = rows_files(out)
    ref = spec.get("reference")
    if ref:
        from .paired import paired_markdown

        table = paired_markdown(suite_rows(spec, out), ref["method"], ref["baselines"])
        extra_md = "\n\n".join(x for x in (table, extra_md) if x)
    return render_rows(files, out, command, title=f"Benchmark `{spec['name']}`",
                       only=[c.key for c in expand_grid(spec)], extra_md=extra_md)
