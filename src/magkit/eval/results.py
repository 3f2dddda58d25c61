"""Results files: atomic JSON writes, run metadata, learning-curve plots."""

from __future__ import annotations

import json
import os
import platform
import resource
import sys
from pathlib import Path
from typing import Any


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temporary file in the same folder, ``fsync`` and an atomic rename; a
    failure (a full disk included) leaves the previous file intact and raises a one-line
    :class:`~magkit.integrity.WriteError` (see :func:`magkit.integrity.atomic_write_bytes`)."""
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


def plot_learning_curves(histories: dict[int, dict], path: str | os.PathLike, title: str = "") -> Path:
    """Training loss and validation accuracy per epoch, one line per seed (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 3.8))
    for seed, h in histories.items():
        ep = [e["epoch"] for e in h["epochs"]]
        ax_loss.plot(ep, [e.get("loss", float("nan")) for e in h["epochs"]], label=f"seed {seed}")
        ax_acc.plot(ep, [e.get("val_acc", float("nan")) for e in h["epochs"]], label=f"seed {seed}")
        if h.get("best_epoch", -1) >= 0:
            ax_acc.axvline(h["best_epoch"], color=ax_acc.lines[-1].get_color(), ls=":", lw=0.8)
    ax_loss.set(xlabel="epoch", ylabel="training loss", title="training loss")
    ax_acc.set(xlabel="epoch", ylabel="validation accuracy", title="validation accuracy (dotted: selected)")
    ax_acc.legend(fontsize=7)
    if title:
        fig.suptitle(title)
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
    os.replace(tmp, path)
    return path
