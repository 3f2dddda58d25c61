"""Node splits: the MAGB benchmark split, label-rate splits and k-shot-per-class splits.

Split specs (strings, used by the CLI and benchmarks):

* ``"magb"`` -- the benchmark's split: ``numpy.random.seed(42)``, shuffle all node ids, first
  ``int(N * 0.6)`` train, up to ``int(N * (0.6 + 0.2))`` validation, the rest test (MAGB's own rounding).
* ``"random:0.6/0.2"`` -- the same rule with other ratios (and the split seed of the call).
* ``"rate:0.05"`` -- label rate: validation and test as in ``"magb"``; the training set is a class-stratified
  subsample of the MAGB training nodes of size ``round(rate * N)`` (at least one node per class).
* ``"kshot:20"`` -- ``k`` training nodes per class drawn from the MAGB training nodes (all of a class when it
  has fewer); validation and test as in ``"magb"``.

The label-rate and k-shot draws depend on ``seed`` so repeated runs can vary the labelled set.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from ..base import did_you_mean
from ..exceptions import ConfigError

MAGB_SEED = 42


def _mask(idx: np.ndarray, n: int) -> Tensor:
    m = torch.zeros(n, dtype=torch.bool)
    m[torch.as_tensor(idx, dtype=torch.long)] = True
    return m


def ratio_split(num_nodes: int, train: float = 0.6, val: float = 0.2, seed: int = MAGB_SEED) -> tuple[Tensor, Tensor, Tensor]:
    """MAGB's permutation split: returns bool masks (train, val, test)."""
    if not (0 < train < 1 and 0 <= val < 1 and train + val < 1):
        raise ConfigError(f"split ratios: train={train}, val={val}; allowed: 0 < train, 0 <= val, train + val < 1")
    rng = np.random.RandomState(seed)
    ids = np.arange(num_nodes)
    rng.shuffle(ids)
    a = int(num_nodes * train)
    b = int(num_nodes * (train + val))
    return _mask(ids[:a], num_nodes), _mask(ids[a:b], num_nodes), _mask(ids[b:], num_nodes)


def _labelled_train(y: Tensor, base_train: Tensor) -> np.ndarray:
    return (base_train & (y >= 0)).nonzero(as_tuple=True)[0].numpy()


def label_rate_split(y: Tensor, rate: float, seed: int = 0, num_classes: int | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """Train on ``round(rate * N)`` labelled nodes (class-stratified, >= 1 per class) from MAGB's train part."""
    if not 0 < rate <= 0.6:
        raise ConfigError(f"label rate: {rate}; allowed: 0 < rate <= 0.6 (the MAGB training share)")
    n = y.numel()
    c = int(num_classes if num_classes is not None else y.max() + 1)
    train, val, test = ratio_split(n)
    pool = _labelled_train(y, train)
    budget = max(int(round(rate * n)), c)
    rng = np.random.RandomState(seed)
    yp = y[torch.as_tensor(pool)].numpy()
    chosen = []
    # proportional allocation, at least one per class, then fill the remainder at random
    for k in range(c):
        members = pool[yp == k]
        if members.size == 0:
            continue
        take = max(1, int(np.floor(budget * members.size / pool.size)))
        chosen.append(rng.choice(members, size=min(take, members.size), replace=False))
    chosen = np.concatenate(chosen) if chosen else np.empty(0, dtype=np.int64)
    rest = np.setdiff1d(pool, chosen)
    extra = budget - chosen.size
    if extra > 0 and rest.size:
        chosen = np.concatenate([chosen, rng.choice(rest, size=min(extra, rest.size), replace=False)])
    return _mask(chosen, n), val, test


def kshot_split(y: Tensor, k: int, seed: int = 0, num_classes: int | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """``k`` training nodes per class from MAGB's train part; MAGB validation and test."""
    if k < 1:
        raise ConfigError(f"k-shot: k={k}; allowed: k >= 1")
    n = y.numel()
    c = int(num_classes if num_classes is not None else y.max() + 1)
    train, val, test = ratio_split(n)
    pool = _labelled_train(y, train)
    yp = y[torch.as_tensor(pool)].numpy()
    rng = np.random.RandomState(seed)
    chosen = [rng.choice(pool[yp == j], size=min(k, int((yp == j).sum())), replace=False) for j in range(c) if (yp == j).any()]
    if not chosen:
        raise ConfigError(f"k-shot: kshot:{k} found no labelled node in the MAGB training part of {n} nodes; "
                          "allowed: graphs with labelled nodes")
    return _mask(np.concatenate(chosen), n), val, test


def parse_split(spec: str) -> tuple[str, float | None, float | None]:
    """Parse a split spec into (kind, a, b); raise ConfigError listing the valid forms."""
    forms = "magb, random:TRAIN/VAL (e.g. random:0.6/0.2), rate:R (e.g. rate:0.05), kshot:K (e.g. kshot:20)"
    spec = spec.strip().lower()
    try:
        if spec == "magb":
            return "magb", None, None
        kind, _, arg = spec.partition(":")
        if kind == "random":
            a, _, b = arg.partition("/")
            return "random", float(a), float(b or 0.2)
        if kind == "rate":
            return "rate", float(arg.rstrip("%")) / (100 if arg.endswith("%") else 1), None
        if kind == "kshot":
            return "kshot", float(int(arg)), None
    except ValueError:
        pass
    hint = did_you_mean(spec.partition(":")[0], ["magb", "random", "rate", "kshot"])
    raise ConfigError(f"split: {spec!r} is not a split spec{hint}; allowed: {forms}")


def apply_split(graph, spec: str = "magb", seed: int = 0):
    """Set ``train_mask``/``val_mask``/``test_mask`` of ``graph`` from a split spec; returns the graph.

    Unlabelled nodes (``y = -1``) are removed from every split.
    """
    kind, a, b = parse_split(spec)
    y = graph.y
    n = graph.num_nodes
    c = graph.num_classes
    if kind == "magb":
        masks = ratio_split(n)
    elif kind == "random":
        masks = ratio_split(n, a, b, seed=seed)
    elif kind == "rate":
        masks = label_rate_split(y, a, seed=seed, num_classes=c)
    else:
        masks = kshot_split(y, int(a), seed=seed, num_classes=c)
    labelled = y >= 0
    for name, m in zip(("train", "val", "test"), masks):
        graph[f"{name}_mask"] = m & labelled
    meta = dict(graph.meta)
    meta["split"] = spec
    graph.meta = meta
    return graph
