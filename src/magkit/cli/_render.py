"""Rich helpers shared by several commands: the progress bar, its per-epoch and per-row status texts, and how
a split is named in tables."""

from __future__ import annotations

from collections.abc import Callable

from . import err_console


def split_label(split: str | None) -> str:
    """How a split is named in tables: its spec string, or "from the nodes file" for own data's stored split."""
    return {"file": "from the nodes file", None: "the dataset's own"}.get(split, str(split))


def progress_bar(disable: bool = False, count: bool = True):
    """The progress bar of every long command: description, bar, done/total, a status text, elapsed time and
    the estimated time remaining (on stderr, removed when done)."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TaskProgressColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn() if count else TaskProgressColumn(),
                    TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
                    console=err_console, transient=True, disable=disable)


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
