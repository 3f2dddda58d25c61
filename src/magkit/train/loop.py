"""The one epoch loop: early stopping on a validation metric, best-state restore, per-epoch history.

Every node classifier in magkit (baselines, GraphMNL, models trained on condensed graphs) trains through
:func:`fit_loop`. It knows nothing of models or losses: it calls ``step(epoch)`` (one epoch of updates,
returning the epoch's loss terms) and ``evaluate()`` (metrics on train/val, never test), and keeps the
parameters of the best validation epoch.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import torch

from ..exceptions import ConfigError

log = logging.getLogger(__name__)

MONITORS = {"val_acc": 1.0, "val_f1": 1.0, "val_loss": -1.0}


@dataclass
class History:
    """Per-epoch records (``epoch``, ``time``, loss terms, ``train_acc``, ``val_acc``, ``val_f1``, ...)."""

    epochs: list[dict] = field(default_factory=list)
    monitor: str = "val_acc"
    best_epoch: int = -1
    best_score: float = float("nan")
    stopped_early: bool = False
    train_time: float = 0.0

    def series(self, key: str) -> list[float]:
        return [e.get(key, float("nan")) for e in self.epochs]

    @property
    def epoch_time(self) -> float:
        """Mean wall time of one training epoch (updates only), seconds."""
        times = self.series("time")
        return sum(times) / len(times) if times else float("nan")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["epoch_time"] = self.epoch_time
        return d


def fit_loop(
    model: torch.nn.Module,
    step: Callable[[int], dict],
    evaluate: Callable[[], dict],
    *,
    epochs: int,
    patience: int | None = None,
    monitor: str = "val_acc",
    min_epochs: int = 0,
    eval_every: int = 1,
    progress: Callable[[dict], None] | None = None,
) -> History:
    """Run ``epochs`` epochs of ``step``; stop after ``patience`` evaluations without improvement of
    ``monitor``; restore the best parameters at the end.

    ``evaluate()`` must return at least the ``monitor`` key. Ties keep the earlier epoch. ``progress(record)``
    is called after every epoch with the epoch's record and ``"epochs"`` (the most epochs this loop runs).
    """
    if epochs < 1:
        raise ConfigError(f"epochs: {epochs}; allowed: >= 1")
    if monitor not in MONITORS:
        raise ConfigError(f"monitor: {monitor!r}; allowed: {', '.join(MONITORS)}")
    if eval_every < 1:
        raise ConfigError(f"eval_every: {eval_every}; allowed: >= 1")
    if patience is not None and patience < 1:
        raise ConfigError(f"patience: {patience}; allowed: >= 1 or None (no early stopping)")
    sign = MONITORS[monitor]
    hist = History(monitor=monitor)
    best = -math.inf
    best_state = copy.deepcopy(model.state_dict())
    waited = 0
    t_start = time.perf_counter()
    for epoch in range(epochs):
        model.train()
        t0 = time.perf_counter()
        record = {"epoch": epoch, **step(epoch)}
        record["time"] = time.perf_counter() - t0
        if epoch % eval_every == 0 or epoch == epochs - 1:
            model.eval()
            with torch.no_grad():
                record.update(evaluate())
            if monitor not in record:
                raise ConfigError(f"monitor: evaluate() returned no {monitor!r} (keys: {', '.join(record)})")
            score = sign * float(record[monitor])
            if score > best:
                best = score
                hist.best_epoch = epoch
                best_state = copy.deepcopy(model.state_dict())
                waited = 0
            else:
                waited += 1
        hist.epochs.append(record)
        if progress is not None:
            progress({**record, "epochs": epochs})
        if patience is not None and waited >= patience and epoch + 1 >= min_epochs:
            hist.stopped_early = True
            log.info("early stop at epoch %d (best %s at epoch %d)", epoch, monitor, hist.best_epoch)
            break
    model.load_state_dict(best_state)
    hist.best_score = sign * best if best > -math.inf else float("nan")
    hist.train_time = time.perf_counter() - t_start
    return hist
