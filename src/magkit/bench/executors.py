"""Where a sweep's cells run: one after another in this process, or one Ray task per cell.

Both executors yield rows as cells finish and write nothing: the process that runs the sweep appends them
(one writer per rows file). :func:`local_rows` groups the cells by the graph they need, so each graph is
loaded once. :func:`ray_rows` submits one task per cell with the sweep spec's ``resources``
(:func:`ray_options`) and turns a lost worker into an error row; interrupted, it cancels the tasks still
pending.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import datetime, timezone
from typing import Any

from ..exceptions import MissingDependencyError
from .cell import one_line, run_cell
from .spec import Cell, cell_config, split_seed

EXECUTORS = ("local", "ray")
RAY_INSTALL = 'pip install -e ".[ray]"'


def _graph_key(spec: dict[str, Any], cell: Cell) -> tuple:
    f = cell.fields
    split = f["split"] if cell.task == "fit" else spec["split"]
    return f["dataset"], split, split_seed(split, f["seed"])


def local_rows(spec: dict[str, Any], cells: list[Cell]) -> Iterator[dict]:
    """Run ``cells`` one after another in this process and yield their rows.

    One graph load per (dataset, split, split seed): drawn splits change with the seed, so the cells are
    grouped by the graph they need (stable: the grid order is kept within a graph).
    """
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


def ray_map(fn, items: list, shared: Any, options: dict[str, Any], address: str | None) -> Iterator[tuple[Any, Any, BaseException | None]]:
    """Run ``fn(shared, item)`` as one Ray task per item (``shared`` is put in the object store once) and yield
    ``(item, result, None)`` as tasks finish, or ``(item, None, exc)`` for a task whose worker failed.
    Starts Ray (``address``: ``local``/None, ``auto``, ``host:port``, ``ray://...``) unless it is running, and
    shuts down what it started; interrupted, it cancels the tasks still pending."""
    ray = import_ray()
    if not items:  # nothing to run: do not start or join a cluster for it
        return
    started = False
    if not ray.is_initialized():
        if address in (None, "", "local"):
            ray.init(include_dashboard=False, logging_level=logging.WARNING)
        else:
            ray.init(address=address, logging_level=logging.WARNING)
        started = True
    pending: dict[Any, Any] = {}
    try:
        task = ray.remote(fn).options(**options)
        shared_ref = ray.put(shared)
        pending = {task.remote(shared_ref, item): item for item in items}
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            for ref in ready:
                item = pending.pop(ref)
                try:
                    result, err = ray.get(ref), None
                except Exception as exc:  # noqa: BLE001 - a worker died (memory, node lost): the caller records it
                    result, err = None, exc
                yield item, result, err
    finally:
        for ref in pending:  # interrupted: do not leave work running on the cluster
            try:
                ray.cancel(ref, force=True)
            except Exception:  # noqa: BLE001
                pass
        if started:
            ray.shutdown()


def _ray_cell_task(payload: tuple[dict[str, Any], int], cell: dict[str, Any]) -> dict[str, Any]:
    spec, threads = payload
    return _ray_cell(spec, cell, threads)


def ray_rows(spec: dict[str, Any], cells: list[Cell], address: str | None) -> Iterator[dict]:
    """One Ray task per cell; rows are yielded as tasks finish (``ray.wait``), to be written by the caller."""
    by_key = {c.key: c for c in cells}
    threads = max(1, int(spec["resources"]["num_cpus"]))
    for item, row, exc in ray_map(_ray_cell_task, [c.to_dict() for c in cells], (spec, threads),
                                  ray_options(spec["resources"]), address):
        if exc is not None:
            cell = Cell(item["task"], {k: v for k, v in item.items() if k != "task"})
            row = _driver_error_row(spec, by_key.get(cell.key, cell), exc)
        yield row


def _driver_error_row(spec: dict[str, Any], cell: Cell, exc: BaseException) -> dict[str, Any]:
    return {"key": cell.key, "id": cell.id, "sweep": spec["name"], "task": cell.task, **cell.fields,
            **cell_config(spec, cell), "status": "error",
            "error": one_line(exc), "executor": "ray", "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
