"""One evaluation protocol for node classification: repeated runs, mean ± std on val and test.

Protocol: for each seed, (re)draw the split when it depends on the seed (label rate, k-shot), fit a fresh
estimator with that seed (epoch selection on the validation split only), then read the validation and the
test split once each. Report mean ± sample standard deviation over seeds.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

from ..data.splits import apply_split, parse_split

log = logging.getLogger(__name__)


@dataclass
class RunResult:
    seed: int
    val_acc: float
    val_f1: float
    test_acc: float
    test_f1: float
    best_epoch: int
    epochs_run: int
    epoch_time: float
    fit_time: float
    history: dict = field(default_factory=dict, repr=False)
    #: what the fit chose on validation besides the epoch (GraphMNL's ``output_alpha`` under ``output_prop``)
    chosen: dict = field(default_factory=dict)


def _chosen(est) -> dict:
    """Settings a fitted estimator chose on validation besides the epoch (for the run's record)."""
    if getattr(est, "output_prop", None) is not None and "output_alpha_" in vars(est):
        return {"output_alpha": float(est.output_alpha_)}
    return {}


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    vals = [float(v) for v in values]
    if not vals:
        return float("nan"), float("nan")
    m = sum(vals) / len(vals)
    if len(vals) == 1:
        return m, 0.0
    return m, math.sqrt(sum((v - m) ** 2 for v in vals) / (len(vals) - 1))


@dataclass
class RepeatResult:
    runs: list[RunResult]
    split: str | None

    def summary(self) -> dict[str, dict[str, float]]:
        out = {}
        for key in ("val_acc", "val_f1", "test_acc", "test_f1", "epoch_time", "fit_time"):
            m, s = mean_std([getattr(r, key) for r in self.runs])
            out[key] = {"mean": m, "std": s}
        return out

    def to_dict(self, histories: bool = False) -> dict:
        runs = []
        for r in self.runs:
            d = asdict(r)
            if not histories:
                d.pop("history")
            runs.append(d)
        return {"split": self.split, "seeds": [r.seed for r in self.runs], "runs": runs, "summary": self.summary()}

    def fmt(self, key: str, scale: float = 100.0) -> str:
        s = self.summary()[key]
        return f"{scale * s['mean']:.2f} ± {scale * s['std']:.2f}"


def repeat(
    estimator_factory: Callable[[int], object],
    graph,
    seeds: Sequence[int] = (0, 1, 2, 3, 4),
    split: str | None = None,
    on_run: Callable[[RunResult], None] | None = None,
    progress: Callable[[dict], None] | None = None,
    on_fitted: Callable[[int, object], None] | None = None,
) -> RepeatResult:
    """Fit ``estimator_factory(seed)`` once per seed and score it on the val and test splits.

    ``split``: a split spec to apply per seed (seed-dependent specs such as ``rate:0.05`` draw a new
    labelled set per seed); ``None`` keeps the graph's own masks. ``progress`` is passed to ``fit``
    (progress display); ``on_fitted(seed, estimator)`` sees each fitted estimator (e.g. to save it).
    """
    seed_dependent = split is not None and parse_split(split)[0] in ("rate", "kshot", "random")
    runs = []
    for seed in seeds:
        g = graph
        if split is not None:
            g = copy.copy(graph)
            apply_split(g, split, seed=seed if seed_dependent else 0)
        est = estimator_factory(seed)
        t0 = time.perf_counter()
        est.fit(g, progress=progress)
        fit_time = time.perf_counter() - t0
        val = est.score(g, "val")
        test = est.score(g, "test")  # the only read of the test split for this run
        h = est.history_
        run = RunResult(
            seed=seed, val_acc=val["acc"], val_f1=val["f1"], test_acc=test["acc"], test_f1=test["f1"],
            best_epoch=h.best_epoch, epochs_run=len(h.epochs), epoch_time=h.epoch_time, fit_time=fit_time,
            history=h.to_dict(), chosen=_chosen(est),
        )
        log.info("seed %d: val acc %.4f, test acc %.4f (%.1fs)", seed, run.val_acc, run.test_acc, fit_time)
        runs.append(run)
        if on_fitted is not None:
            on_fitted(seed, est)
        if on_run is not None:
            on_run(run)
    return RepeatResult(runs=runs, split=split)
