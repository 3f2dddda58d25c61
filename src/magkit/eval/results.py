"""Results files: output-path checks, atomic JSON writes, run metadata, learning-curve and accuracy plots."""

from __future__ import annotations

import json
import os
import platform
import resource
import sys
import tempfile
from pathlib import Path
from typing import Any

from ..exceptions import ConfigError


def check_writable(path: str | os.PathLike, what: str, *, folder: bool) -> Path:
    """``path`` when magkit can write there, else a one-line :class:`ConfigError` naming ``what`` (the option).

    Checked before any work, so that a mistyped output path does not lose a long run at its end:
    a folder (``folder=True``) must not be an existing file; a file must not be an existing folder; the
    nearest existing ancestor must be a folder in which a file can be created (probed with a temporary
    file that is removed at once, so permissions, read-only mounts and pseudo file systems are all caught).
    Nothing is created.

    Args:
        path: the output folder or file.
        what: the option or argument that named it, e.g. ``"--out"``.
        folder: whether ``path`` is a folder (``True``) or a file (``False``).
    """
    path = Path(path).expanduser()
    if folder and path.exists() and not path.is_dir():
        raise ConfigError(f"{what}: {str(path)!r} is an existing file; allowed: a folder (existing or new)")
    if not folder and path.is_dir():
        raise ConfigError(f"{what}: {str(path)!r} is a folder; allowed: a file path (e.g. {str(path / 'out')!r})")
    parent = path if folder else path.parent
    base = parent
    while not base.exists() and base != base.parent:
        base = base.parent
    if not base.is_dir():
        raise ConfigError(f"{what}: {str(path)!r} cannot be created: {str(base)!r} is a file; "
                          "allowed: a path under a folder")
    try:
        with tempfile.TemporaryFile(dir=base):
            pass
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise ConfigError(f"{what}: {str(path)!r} is not writable ({reason} in {str(base)!r}); "
                          "allowed: a path under a folder you can write to") from None
    return path


def file_mode() -> int:
    """The mode a newly created file gets under this process's umask (``0o644`` under the usual ``022``).

    :func:`tempfile.mkstemp` creates its files ``0o600``; files written through a temporary file are given
    this mode before the rename, so results and artifacts are readable like any other file the user writes.
    """
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temporary file in the same folder, ``fsync`` and an atomic rename; a
    failure (a full disk included) leaves the previous file intact and raises a one-line
    :class:`~magkit.integrity.WriteError` (see :func:`magkit.integrity.atomic_write_bytes`). The file gets the
    umask's default mode (:func:`file_mode`), as a plain ``open(path, "w")`` would give it."""
    from ..integrity import atomic_write_bytes as write

    return write(path, data)


def atomic_write_json(path: str | os.PathLike, payload: Any) -> Path:
    return atomic_write_bytes(path, (json.dumps(payload, indent=2, default=_jsonable) + "\n").encode())


def _jsonable(obj: Any):
    if isinstance(obj, (set, tuple)):
        return list(obj)
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "tolist"):
        return obj.tolist()
    return str(obj)


def peak_memory_mb() -> float:
    """Peak resident set size of this process so far, MiB."""
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kb / 1024.0 if sys.platform != "darwin" else kb / 2**20


def environment() -> dict[str, str]:
    import numpy
    import torch
    import torch_geometric

    from .. import __version__

    return {
        "magkit": __version__,
        "torch": torch.__version__,
        "torch_geometric": torch_geometric.__version__,
        "numpy": numpy.__version__,
        "python": platform.python_version(),
        "machine": f"{platform.machine()} {os.cpu_count()} cpus",
        "torch_threads": str(torch.get_num_threads()),
    }


def _span(values: list[float], pad: float = 0.05, lo: float | None = None, hi: float | None = None) -> tuple[float, float] | None:
    """Axis limits that hold the finite ``values`` with a small margin, clipped to ``[lo, hi]``."""
    import math

    vals = [v for v in values if isinstance(v, (int, float)) and math.isfinite(v)]
    if not vals:
        return None
    a, b = min(vals), max(vals)
    margin = max((b - a) * pad, 1e-3)
    a, b = a - margin, b + margin
    return (a if lo is None else max(lo, a)), (b if hi is None else min(hi, b))


def plot_learning_curves(histories: dict[int, dict], path: str | os.PathLike, title: str = "",
                         warmup: int | None = None) -> Path:
    """Training loss and validation accuracy per epoch, one line per seed (PNG).

    The selected epoch of each seed is a dotted line; a warm-up (epochs ``< warmup``, e.g. GraphMNL's guidance
    warm-up; taken from ``warmup`` or a history's ``"warmup"`` entry) is shaded. The loss axis is logarithmic
    when the loss spans more than a decade; both axes are scaled to the data.

    Args:
        histories: ``{seed: history dict}`` with ``"epochs"`` (records with ``epoch``, ``loss``, ``val_acc``)
            and optionally ``"best_epoch"``, ``"warmup"``.
        path: the PNG file to write.
        title: a figure title.
        warmup: the number of warm-up epochs (default: ``None``, read from the histories if present).
    """
    import math

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 3.8))
    losses, accs, last = [], [], 0
    for seed, h in histories.items():
        ep = [e["epoch"] for e in h["epochs"]]
        loss = [e.get("loss", float("nan")) for e in h["epochs"]]
        acc = [e.get("val_acc", float("nan")) for e in h["epochs"]]
        losses += loss
        accs += acc
        last = max([last, *ep])
        ax_loss.plot(ep, loss, label=f"seed {seed}", lw=1.2)
        ax_acc.plot(ep, acc, label=f"seed {seed}", lw=1.2)
        if h.get("best_epoch", -1) >= 0:
            ax_acc.axvline(h["best_epoch"], color=ax_acc.lines[-1].get_color(), ls=":", lw=0.8)
        if warmup is None and isinstance(h.get("warmup"), int):
            warmup = h["warmup"]
    positive = [v for v in losses if isinstance(v, (int, float)) and math.isfinite(v) and v > 0]
    if positive and max(positive) / min(positive) > 10:
        ax_loss.set_yscale("log")
    elif (lim := _span(losses)) is not None:
        ax_loss.set_ylim(*lim)
    if (lim := _span(accs, lo=0.0, hi=1.0)) is not None:
        ax_acc.set_ylim(*lim)
    for ax in (ax_loss, ax_acc):
        ax.set_xlim(0, max(last, 1))
        ax.grid(alpha=0.3, lw=0.5)
        if warmup and 0 < warmup <= last:
            ax.axvspan(0, warmup, color="0.85", alpha=0.5, lw=0, label=f"warm-up ({warmup} epochs)" if ax is ax_acc else None)
    ax_loss.set(xlabel="epoch", ylabel="training loss", title="training loss")
    ax_acc.set(xlabel="epoch", ylabel="validation accuracy", title="validation accuracy (dotted: selected epoch)")
    ax_acc.legend(fontsize=7, loc="lower right")
    if title:
        fig.suptitle(title)
    return save_figure(fig, path)


def plot_accuracy_bars(rows: list[tuple[str, float, float]], path: str | os.PathLike, title: str = "",
                       ylabel: str = "test accuracy (%)") -> Path:
    """A bar per method: mean with a ± std error bar (PNG), the value printed above each bar.

    Args:
        rows: ``(method, mean, std)`` triples, in percent.
        path: the PNG file to write.
        title: the figure title.
        ylabel: the label of the value axis (default: ``"test accuracy (%)"``).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [r[0] for r in rows]
    means = [r[1] for r in rows]
    stds = [r[2] if r[2] == r[2] else 0.0 for r in rows]  # one seed: no error bar
    fig, ax = plt.subplots(figsize=(max(4.0, 1.1 * len(rows) + 1.5), 3.8))
    bars = ax.bar(range(len(rows)), means, yerr=stds, capsize=4, color="#4c72b0", ecolor="black")
    for bar, m, s in zip(bars, means, stds, strict=True):
        ax.text(bar.get_x() + bar.get_width() / 2, m + s + 0.5, f"{m:.1f}", ha="center", va="bottom", fontsize=8)
    ax.set_xticks(range(len(rows)), names, rotation=20, ha="right")
    low = min((m - s for m, s in zip(means, stds, strict=True)), default=0.0)
    ax.set_ylim(max(0.0, low - 10.0), min(100.0, max((m + s for m, s in zip(means, stds, strict=True)), default=100.0) + 6.0))
    ax.set_ylabel(ylabel)
    ax.grid(axis="y", alpha=0.3, lw=0.5)
    if title:
        ax.set_title(title, fontsize=10)
    return save_figure(fig, path)


def save_figure(fig, path: str | os.PathLike) -> Path:
    """Lay out, write atomically (temporary file + rename) as PNG, and close a matplotlib figure."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.chmod(tmp, file_mode())
    os.replace(tmp, path)
    return path
