"""fit_loop: early stopping, best-state restore, monitors, argument checks.

The toy set-up: a one-parameter model whose weight is set to the epoch number by ``step``; ``evaluate``
reads a scripted validation curve at that epoch. So the parameter value identifies the epoch whose state
is in the model, and the curve fixes which epoch is best.
"""

from __future__ import annotations

import math

import pytest
import torch

from magkit.exceptions import ConfigError
from magkit.train.loop import MONITORS, History, fit_loop


class Toy(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.tensor([-1.0]))
        self.register_buffer("calls", torch.zeros(1))


def make(curve: list[float], key: str = "val_acc"):
    """A model, a step that writes the epoch into the weight (in place) and an evaluate reading ``curve``."""
    model = Toy()
    seen = {"modes": []}

    def step(epoch: int) -> dict:
        seen["modes"].append(("step", model.training))
        with torch.no_grad():
            model.w.fill_(float(epoch))  # in place: the saved best state must be a copy
            model.calls += 1
        return {"loss": 10.0 - epoch}

    def evaluate() -> dict:
        seen["modes"].append(("eval", model.training, torch.is_grad_enabled()))
        e = int(model.w.item())
        return {key: curve[e], "train_acc": 0.0}

    return model, step, evaluate, seen


# val_acc peaks at epoch 3
PEAK3 = [0.10, 0.20, 0.30, 0.90, 0.50, 0.40, 0.40, 0.95, 0.99, 0.99]


def test_early_stop_after_patience_non_improving_evaluations_and_restore_best():
    model, step, evaluate, _ = make(PEAK3)
    hist = fit_loop(model, step, evaluate, epochs=10, patience=3)
    # epochs 4, 5, 6 do not improve on 0.90 -> stop right after epoch 6 (epochs 7, 8 would have improved)
    assert [r["epoch"] for r in hist.epochs] == [0, 1, 2, 3, 4, 5, 6]
    assert hist.stopped_early is True
    assert hist.best_epoch == 3
    assert hist.best_score == pytest.approx(0.90)
    # the parameters saved at epoch 3 are back (the weight was 6 when the loop stopped)
    assert model.w.item() == 3.0
    assert model.calls.item() == 4.0  # buffers are restored too (4 steps had run at epoch 3)


def test_without_patience_runs_all_epochs_and_keeps_best():
    model, step, evaluate, _ = make(PEAK3)
    hist = fit_loop(model, step, evaluate, epochs=10, patience=None)
    assert len(hist.epochs) == 10
    assert hist.stopped_early is False
    assert hist.best_epoch == 8  # 0.99 at epoch 8; the tie at epoch 9 keeps the earlier epoch
    assert model.w.item() == 8.0


def test_patience_larger_than_the_gap_does_not_stop():
    model, step, evaluate, _ = make(PEAK3)
    hist = fit_loop(model, step, evaluate, epochs=10, patience=4)
    assert not hist.stopped_early
    assert hist.best_epoch == 8 and model.w.item() == 8.0


def test_ties_keep_the_earlier_epoch():
    model, step, evaluate, _ = make([0.5, 0.7, 0.7, 0.7, 0.6])
    hist = fit_loop(model, step, evaluate, epochs=5)
    assert hist.best_epoch == 1 and model.w.item() == 1.0


def test_monitor_val_loss_minimises():
    # val_loss is lowest at epoch 2; its maximum is at epoch 5 (where a maximising monitor would land)
    loss = [1.0, 0.8, 0.5, 0.7, 0.6, 1.2]
    model, step, evaluate, _ = make(loss, key="val_loss")
    hist = fit_loop(model, step, evaluate, epochs=6, monitor="val_loss")
    assert hist.monitor == "val_loss"
    assert hist.best_epoch == 2
    assert hist.best_score == pytest.approx(0.5)  # reported in the monitor's own units, not negated
    assert model.w.item() == 2.0


def test_monitor_val_loss_early_stopping():
    loss = [1.0, 0.8, 0.5, 0.7, 0.6, 0.55, 0.4, 0.1]
    model, step, evaluate, _ = make(loss, key="val_loss")
    hist = fit_loop(model, step, evaluate, epochs=8, monitor="val_loss", patience=3)
    assert hist.stopped_early and len(hist.epochs) == 6
    assert model.w.item() == 2.0


def test_monitor_val_f1():
    model, step, evaluate, _ = make([0.2, 0.6, 0.3], key="val_f1")
    hist = fit_loop(model, step, evaluate, epochs=3, monitor="val_f1")
    assert hist.best_epoch == 1 and model.w.item() == 1.0


def test_patience_counts_evaluations_not_epochs():
    # eval_every=2: evaluations at epochs 0, 2, 4, 6, 8, 9 (the last epoch is always evaluated)
    curve = [0.1, 0.0, 0.8, 0.0, 0.5, 0.0, 0.6, 0.0, 0.9, 0.95]
    model, step, evaluate, _ = make(curve)
    hist = fit_loop(model, step, evaluate, epochs=10, patience=2, eval_every=2)
    # evaluations at 4 and 6 do not improve on epoch 2 -> stop after epoch 6 (7 epochs run)
    assert len(hist.epochs) == 7
    assert hist.best_epoch == 2 and model.w.item() == 2.0
    evaluated = [r["epoch"] for r in hist.epochs if "val_acc" in r]
    assert evaluated == [0, 2, 4, 6]

    model, step, evaluate, _ = make(curve)
    hist = fit_loop(model, step, evaluate, epochs=10, eval_every=3)
    assert [r["epoch"] for r in hist.epochs if "val_acc" in r] == [0, 3, 6, 9]
    assert hist.best_epoch == 9  # the final epoch is evaluated even off the eval_every grid


def test_min_epochs_delays_early_stopping():
    curve = [0.9] + [0.1] * 9
    model, step, evaluate, _ = make(curve)
    hist = fit_loop(model, step, evaluate, epochs=10, patience=1, min_epochs=5)
    assert len(hist.epochs) == 5 and hist.stopped_early
    assert model.w.item() == 0.0


def test_train_and_eval_modes_and_no_grad_during_evaluate():
    model, step, evaluate, seen = make(PEAK3)
    fit_loop(model, step, evaluate, epochs=2)
    assert seen["modes"] == [("step", True), ("eval", False, False), ("step", True), ("eval", False, False)]


def test_history_records_and_progress_callback():
    model, step, evaluate, _ = make(PEAK3)
    got = []
    hist = fit_loop(model, step, evaluate, epochs=4, progress=got.append)
    assert [r["epoch"] for r in got] == [0, 1, 2, 3] and all(r["epochs"] == 4 for r in got)
    assert all("epochs" not in r for r in hist.epochs)
    assert hist.series("loss") == [10.0, 9.0, 8.0, 7.0]
    assert hist.series("val_acc") == PEAK3[:4]
    assert all(r["time"] >= 0 for r in hist.epochs)
    assert hist.epoch_time == pytest.approx(sum(hist.series("time")) / 4)
    assert hist.train_time >= sum(hist.series("time"))
    d = hist.to_dict()
    assert d["best_epoch"] == 3 and d["monitor"] == "val_acc" and "epoch_time" in d
    assert math.isnan(History().epoch_time)


def test_monitor_missing_from_evaluate_raises():
    model, step, evaluate, _ = make(PEAK3, key="val_f1")
    with pytest.raises(ConfigError, match=r"monitor: evaluate\(\) returned no 'val_acc'"):
        fit_loop(model, step, evaluate, epochs=3)


@pytest.mark.parametrize("epochs", [0, -3])
def test_bad_epochs_raise(epochs):
    model, step, evaluate, _ = make(PEAK3)
    with pytest.raises(ConfigError, match=rf"^epochs: {epochs}; allowed: >= 1"):
        fit_loop(model, step, evaluate, epochs=epochs)


def test_bad_monitor_raises_and_lists_allowed():
    model, step, evaluate, _ = make(PEAK3)
    with pytest.raises(ConfigError, match=r"^monitor: 'val_auc'; allowed: val_acc, val_f1, val_loss") as exc:
        fit_loop(model, step, evaluate, epochs=3, monitor="val_auc")
    assert all(m in str(exc.value) for m in MONITORS)


@pytest.mark.parametrize("patience", [0, -1])
def test_bad_patience_raises(patience):
    model, step, evaluate, _ = make(PEAK3)
    with pytest.raises(ConfigError, match=rf"^patience: {patience}; allowed: >= 1 or None"):
        fit_loop(model, step, evaluate, epochs=3, patience=patience)


def test_bad_arguments_are_checked_before_any_step():
    model, step, evaluate, seen = make(PEAK3)
    with pytest.raises(ConfigError):
        fit_loop(model, step, evaluate, epochs=3, patience=0)
    assert seen["modes"] == [] and model.w.item() == -1.0


def test_bad_eval_every_raises_config_error():
    model, step, evaluate, _ = make(PEAK3)
    with pytest.raises(ConfigError, match="eval_every"):
        fit_loop(model, step, evaluate, epochs=3, eval_every=0)
