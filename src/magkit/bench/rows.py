"""Rows files of a sweep folder: one JSON line per cell, appended by a single writer per shard.

``<out>/rows.jsonl`` holds the rows of an unsharded run and ``<out>/rows.shard-i-of-n.jsonl`` those of shard
``i/n``, so the tasks of a job array never share a file. A row is appended in one ``write`` and fsynced
(:func:`append_row`); a damaged line is skipped on reading (:func:`read_rows`) and its cell runs again.
:class:`ShardLock` refuses a second live run of the same shard. :func:`recorded` maps every cell key to its
latest row; flat fit rows without a key are read as the same cells (:func:`normalize_row`).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ..exceptions import LockedError
from .spec import AXES, cell_key, parse_shard

log = logging.getLogger(__name__)

def rows_file(out: str | Path, shard: tuple[int, int] | str = (0, 1)) -> Path:
    """``<out>/rows.jsonl``, or ``<out>/rows.shard-i-of-n.jsonl`` for shard ``i/n`` with ``n > 1``."""
    i_shard, n_shard = parse_shard(shard)
    name = "rows.jsonl" if n_shard == 1 else f"rows.shard-{i_shard}-of-{n_shard}.jsonl"
    return Path(out) / name


def rows_files(out: str | Path) -> list[Path]:
    """Every rows file of a sweep folder: ``rows.jsonl`` and the shards' ``rows.shard-*.jsonl`` (name order;
    other files such as ``rows_before_*.jsonl`` are not read)."""
    out = Path(out)
    return sorted(p for p in [out / "rows.jsonl", *out.glob("rows.shard-*.jsonl")] if p.is_file())


def read_rows(path: Path) -> list[dict]:
    """The JSON rows of ``path`` (none for a missing file).

    A line that is not a JSON object (cut by an interruption, or damaged) is skipped with a warning naming the
    file and the line number; its cell counts as not recorded and runs again.
    """
    path = Path(path)
    if not path.is_file():
        return []
    rows = []
    with path.open("rb") as fh:
        data = fh.read()
    for lineno, raw in enumerate(data.split(b"\n"), start=1):
        line = raw.strip()
        if not line:
            continue
        try:
            row = json.loads(line.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            row = None
        if not isinstance(row, dict):
            log.warning("%s line %d is damaged (not a JSON object); skipped: its cell runs again", path, lineno)
            continue
        rows.append(row)
    return rows


def append_row(path: Path, row: dict) -> None:
    """Append one JSON line to ``path`` in a single ``write``, then flush and fsync.

    A last line without its newline (a write cut by a crash) is terminated first, so the new row starts on a
    line of its own and only the damaged line is lost (:func:`read_rows` skips it).
    """
    path = Path(path)
    text = json.dumps(row) + "\n"
    with path.open("ab+") as fh:
        if fh.seek(0, os.SEEK_END) > 0:
            fh.seek(-1, os.SEEK_END)
            if fh.read(1) != b"\n":
                log.warning("%s ends in a damaged line; terminating it before appending", path)
                text = "\n" + text
        fh.write(text.encode("utf-8"))
        fh.flush()
        os.fsync(fh.fileno())


class ShardLock:
    """An exclusive lock on a rows file: ``<rows file>.lock`` holding the owner's pid, taken with ``fcntl.flock``.

    The kernel releases a ``flock`` when its process dies, so the lock file of a dead run is taken over
    silently; a second live run of the same shard is refused with :class:`~magkit.exceptions.LockedError`.
    On systems without ``fcntl`` the lock is a no-op.
    """

    def __init__(self, rows_path: str | Path):
        self.path = Path(str(rows_path) + ".lock")
        self._fh = None

    def __enter__(self) -> ShardLock:
        try:
            import fcntl
        except ImportError:  # pragma: no cover - not POSIX
            return self
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fh = open(self.path, "a+")
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            fh.seek(0)
            owner = fh.read().strip() or "unknown"
            fh.close()
            raise LockedError(
                f"sweep shard: {self.path.with_suffix('')} is being written by another run (pid {owner}); "
                "allowed: one run per shard at a time (wait for it, or use another --out/--shard)"
            ) from None
        fh.seek(0)
        fh.truncate()
        fh.write(f"{os.getpid()}\n")
        fh.flush()
        self._fh = fh
        return self

    def __exit__(self, *exc) -> None:
        if self._fh is not None:
            import fcntl

            try:
                self._fh.seek(0)
                self._fh.truncate()
            finally:
                fcntl.flock(self._fh.fileno(), fcntl.LOCK_UN)
                self._fh.close()
                self._fh = None


#: the metrics a flat fit row holds at its top level
FLAT_FIT_METRICS = ("test_acc", "test_f1", "val_acc", "val_f1", "fit_time_s", "epoch_time_s", "epochs_run",
                    "best_epoch", "reliability_auc", "output_alpha")


def normalize_row(row: dict[str, Any]) -> dict[str, Any] | None:
    """A sweep row as it is; a flat fit row (``dataset``, ``split``, ``method``, ``seed`` and the metrics at the
    top level, no ``key``: the rows files under benchmarks/) as the equivalent sweep row; anything else None."""
    if "key" in row and "task" in row:
        return row
    if all(k in row for k in ("dataset", "split", "method", "seed", "test_acc")):
        fields = {k: row[k] for k in AXES["fit"]}
        metrics = {k: row[k] for k in FLAT_FIT_METRICS if k in row}
        return {"key": cell_key("fit", fields), "task": "fit", **fields, "status": "ok", "metrics": metrics,
                "peak_memory_mb": row.get("peak_memory_mb"), "dataset_checksum": row.get("dataset_checksum")}
    return None


def latest_rows(paths: Iterable[str | Path]) -> tuple[dict[str, dict], int]:
    """key -> the latest row recorded for it over the rows files ``paths``, and the number of rows read. Latest:
    the row that finished last (``finished_at``; a row with that time wins over one without), else the one read last (files
    in the order given, lines in order), so a retry recorded in ``rows.jsonl`` wins over a shard's earlier failure.
    The mapping follows the order of each key's chosen row. A JSON object that is neither a sweep row nor a flat
    fit row (:func:`normalize_row`) is skipped with a warning."""
    latest: dict[str, dict] = {}
    n = 0
    for p in paths:
        for r in read_rows(p):
            n += 1
            row = normalize_row(r)
            if row is None:
                log.warning("%s: a line that is not a sweep row (no key) was skipped", p)
                continue
            prev = latest.get(row["key"])
            if prev is not None and str(row.get("finished_at") or "") < str(prev.get("finished_at") or ""):
                continue  # an older row read after a newer one (another file)
            latest.pop(row["key"], None)  # re-insert: dict order follows the chosen occurrence
            latest[row["key"]] = row
    return latest, n


def recorded(out: str | Path) -> dict[str, dict]:
    """key -> the latest row recorded for it in the folder's rows files (:func:`latest_rows`)."""
    return latest_rows(rows_files(out))[0]
