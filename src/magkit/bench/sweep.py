"""Sweeps: a grid of cells run in-process, as shard ``i/n`` of a job array, or on Ray; JSON-lines rows.

A sweep spec (:mod:`magkit.bench.spec`) crosses datasets, splits or budgets, methods and seeds.
:func:`run_sweep` runs the cells not yet recorded in the output folder and appends one JSON line per cell
(:mod:`magkit.bench.rows`; single writer: the process that runs the sweep, Ray workers send their rows back
to it). Shard ``i/n`` runs the cells whose grid position is ``i`` modulo ``n`` and writes
``rows.shard-i-of-n.jsonl``, so the tasks of a job array never share a file. A cell that raises is recorded
as an error row with a one-line message (:func:`~magkit.bench.cell.run_cell`) and the sweep goes on;
``retry_failed=True`` runs such cells again. :mod:`magkit.bench.report` merges rows files into tables and
plots; ``magkit bench run SUITE.yaml`` (:mod:`magkit.bench.suite`) runs a fit spec through this engine.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..exceptions import ConfigError
from .executors import EXECUTORS, import_ray, local_rows, ray_rows
from .rows import ShardLock, append_row, recorded, rows_file
from .spec import Cell, cell_config, expand_grid, load_spec, parse_shard, shard_cells

__all__ = ["EXECUTORS", "Plan", "SweepResult", "load_spec", "parse_shard", "plan", "run_sweep"]

log = logging.getLogger(__name__)


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
        elif row.get("params") is not None and any(row.get(k) != v for k, v in cell_config(spec, c).items()):
            other.append(c.key)
    if other:
        log.warning("%d recorded cell(s) ran with other parameters than the sweep spec's (e.g. %s); they are not rerun: "
                    "use another --out for the new parameters", len(other), other[0])
    return Plan(cells, mine, done, todo, rows_file(out, shard))


@dataclass
class SweepResult:
    """Rows executed by this run (in completion order), how many cells were skipped, and the rows file."""

    rows: list[dict]
    skipped: int
    rows_path: Path

    @property
    def failed(self) -> list[dict]:
        return [r for r in self.rows if r.get("status") == "error"]


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
        stream = local_rows(spec, p.todo) if executor == "local" else ray_rows(spec, p.todo, ray_address)
        for row in stream:
            append_row(p.rows_path, row)
            rows.append(row)
            if on_row is not None:
                on_row(row, len(rows), len(p.todo))
    return SweepResult(rows, len(p.shard_cells) - len(p.todo), p.rows_path)
