"""Rich helpers shared by several commands: the progress bar, its per-epoch and per-row status texts, and how
a split is named in tables."""

from __future__ import annotations

import time
from collections.abc import Callable

from rich.markup import escape

from . import err_console

#: stderr not a terminal: a log line when a task's whole count moves, but not sooner than LINE_MIN_S after the
#: previous one (unless the task is done), and at least every LINE_INTERVAL_S while the count stays the same
LINE_MIN_S = 10.0
LINE_INTERVAL_S = 60.0


def split_label(split: str | None) -> str:
    """How a split is named in tables: its spec string, or "from the nodes file" for own data's stored split."""
    return {"file": "from the nodes file", None: "the dataset's own"}.get(split, str(split))


def progress_bar(disable: bool = False, count: bool = True):
    """The progress of every long command: on a terminal, a bar with description, done/total, a status text,
    elapsed time and the estimated time remaining (on stderr, removed when done); when stderr is a file or a pipe
    (a run under ``nohup``, a job scheduler's log), the same as one line per step (:class:`LineProgress`)."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TaskProgressColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    if not disable and not err_console.is_terminal:
        return LineProgress(count=count)
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn() if count else TaskProgressColumn(),
                    TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
                    console=err_console, transient=True, disable=disable)


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def _count(value: float) -> str:
    """A step count as written in a log line: whole counts in full (1500000, not 1.5e+06), a run's share of
    epochs to two decimals (2.33)."""
    return str(int(value)) if float(value).is_integer() else f"{value:.2f}".rstrip("0").rstrip(".")


class LineProgress:
    """The progress bar's interface (``add_task``, ``update``, ``reset``, ``console``) written as log lines:
    ``description done/total status elapsed H:MM:SS ETA H:MM:SS``, one when a task's whole count moves (at most one
    per :data:`LINE_MIN_S` seconds, the last step always) and one every :data:`LINE_INTERVAL_S` seconds while it
    does not. The ETA is the elapsed time per step times the
    steps left (steps set within a second of the task's start, e.g. recorded by an earlier run, count as done, not
    as measured)."""

    def __init__(self, count: bool = True, console=None, clock: Callable[[], float] = time.monotonic):
        self.console = console if console is not None else err_console
        self.count, self.clock = count, clock
        self.tasks: dict[int, dict] = {}

    def __enter__(self) -> LineProgress:
        return self

    def __exit__(self, *exc) -> None:
        return None

    def add_task(self, description: str, total: float | None = None, completed: float = 0, **fields) -> int:
        tid = len(self.tasks)
        self.tasks[tid] = {"description": description, "total": total, "completed": completed, "fields": dict(fields),
                           "start": self.clock(), "start_done": completed, "last": None, "last_line": -1.0}
        return tid

    def reset(self, task: int, total: float | None = None, completed: float = 0, description: str | None = None,
              **fields) -> None:
        t = self.tasks[task]
        t.update(completed=completed, start=self.clock(), start_done=completed, last=None, last_line=-1.0)
        if total is not None:  # as rich's Progress.reset: no total keeps the task's
            t["total"] = total
        if description is not None:
            t["description"] = description
        t["fields"].update(fields)

    def update(self, task: int, completed: float | None = None, total: float | None = None, advance: float | None = None,
               description: str | None = None, **fields) -> None:
        t = self.tasks[task]
        if total is not None:
            t["total"] = total
        if description is not None:
            t["description"] = description
        if advance is not None:
            t["completed"] += advance
        if completed is not None:
            t["completed"] = completed
        t["fields"].update(fields)
        now = self.clock()
        if now - t["start"] < 1.0:  # steps set at the start (recorded before this run) are not measured ones
            t["start_done"] = t["completed"]
        whole = int(t["completed"])
        since = now - t["last_line"] if t["last"] is not None else float("inf")
        finished = t["total"] is not None and t["completed"] >= t["total"]
        if (whole != t["last"] and (since >= LINE_MIN_S or finished)) or since >= LINE_INTERVAL_S:
            t["last"], t["last_line"] = whole, now
            self.console.print(self.line(t, now), highlight=False, soft_wrap=True)

    def line(self, t: dict, now: float) -> str:
        done, total = t["completed"], t["total"]
        elapsed = now - t["start"]
        if total:
            shown = f"{_count(done)}/{_count(total)}" if self.count else f"{100 * done / total:.0f}%"
        else:
            shown = _count(done)
        parts = [escape(str(t["description"])), shown]
        info = t["fields"].get("info")
        if info:
            parts.append(str(info))
        parts.append(f"elapsed {_clock(elapsed)}")
        measured = done - t["start_done"]
        if total and measured > 0 and done < total:
            parts.append(f"ETA {_clock(elapsed / measured * (total - done))}")
        return " ".join(parts)


def epoch_callback(progress, task, seeds: list[int], state: dict, loss: bool = True) -> Callable[[dict], None]:
    """A training ``progress`` callback for runs over ``seeds`` counted in ``state["runs"]``: it moves the bar
    to the finished runs plus the current run's share of epochs and shows seed, epoch, (loss) and validation
    accuracy.

    Args:
        progress: the :func:`progress_bar` the task belongs to.
        task: the task id to update.
        seeds (list[int]): the seeds run in turn (for several methods, over again for each).
        state (dict): holds ``"runs"``, the runs finished so far (the caller counts them).
        loss (bool, optional): show ``epoch e/E`` and the training loss, else only ``epoch e``.
            (default: :obj:`True`)
    """

    def show_epoch(rec: dict) -> None:
        frac = min(1.0, (rec["epoch"] + 1) / max(1, rec.get("epochs") or 1))
        seed = seeds[state["runs"] % len(seeds)]
        val_acc = f"val acc {rec.get('val_acc', float('nan')):.3f}"
        info = (f"seed {seed} epoch {rec['epoch']}/{rec['epochs']}  loss {rec.get('loss', float('nan')):.3f}  {val_acc}"
                if loss else f"seed {seed} epoch {rec['epoch']}  {val_acc}")
        progress.update(task, completed=state["runs"] + frac, info=info)

    return show_epoch


def row_status(row: dict) -> str:
    """The progress text of a finished sweep or suite cell: its key and test accuracy, or its error in red."""
    from rich.markup import escape

    ok = row.get("status") == "ok"
    what = f"test acc {row['metrics']['test_acc']:.3f}" if ok else f"[red]{escape(str(row.get('error')))}[/]"
    return f"{escape(row['key'])}: {what}"
