r"""Degree-corrected stochastic block model (DC-SBM; Karrer & Newman 2011): the structure of the synthetic graphs.

One edge sampler, :func:`sample_edges`, serves both generators: :func:`sample_dcsbm` (in memory, used by
:func:`~magkit.data.synthetic.make_synthetic_mag`) and :func:`~magkit.data.largegen.generate_mmap_graph` (on disk).

Structure (DC-SBM). Class sizes follow a geometric progression from the largest to the smallest class
(ratio ``class_ratio``). Every node gets a propensity :math:`\theta_i = \min((1-u_i)^{-1/(\gamma-1)},
\theta_{\max})`, :math:`u_i \sim U(0,1)` (a Pareto tail :math:`P(\theta) \propto \theta^{-\gamma}` with
:math:`\gamma` = ``degree_exponent``, capped so the expected degree stays below ``max_degree``, by default the
structural cut-off :math:`\sqrt{N \bar d}`). Exactly :math:`M = \mathrm{round}(N \bar d / 2)` distinct
undirected edges are placed, :math:`\mathrm{round}(hM)` of them inside classes and the rest between classes.
One endpoint is drawn with probability :math:`\propto \theta_u`; the other with probability
:math:`\propto \theta_v` among the nodes of the same class (intra edges) or of every other class (inter edges).
Self-loops and duplicates are dropped and redrawn, so the edge homophily is :math:`h` up to rounding and
the mean degree is :math:`\bar d`. Cost: :math:`O(E \log N)`, no :math:`N \times N` matrix.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from ..exceptions import ConfigError
from ._params import _check_int, _check_range, _seed_streams
from .graph import to_undirected

__all__ = ["class_sizes", "propensities", "sample_edges", "undirected_edge_index", "sample_dcsbm"]


def class_sizes(n: int, c: int, ratio: float) -> np.ndarray:
    """Class sizes ``[C]`` (int64, summing to ``n``) in a geometric progression, largest first.

    s_c ∝ r^{−c / (C − 1)} with r = ``ratio`` = largest / smallest (≥ 1); the shares are floored and the
    remaining nodes go to the classes with the largest fractional parts (ties: lowest class id).
    """
    w = ratio ** (-np.arange(c) / max(c - 1, 1))
    share = w / w.sum() * n
    sizes = np.floor(share).astype(np.int64)
    rest = n - int(sizes.sum())
    sizes[np.argsort(-(share - sizes), kind="stable")[:rest]] += 1
    return sizes


def propensities(rng: np.random.Generator, n: int, gamma: float, avg_degree: float, cap: float) -> np.ndarray:
    r"""Degree propensities θ ``[n]``: θ_i = (1 − u_i)^{−1/(γ−1)}, u_i ~ U(0, 1) (Pareto tail
    P(θ) ∝ θ^{−γ}), then capped five times at θ_i ≤ cap / d̄ · mean(θ), so the expected degree
    θ_i d̄ / mean(θ) stays below ``cap`` (about: the mean moves with the cap)."""
    theta = (1.0 - rng.random(n)) ** (-1.0 / (gamma - 1.0))
    for _ in range(5):  # cap the expected degree theta_i * dbar / mean(theta)
        theta = np.minimum(theta, cap / avg_degree * theta.mean())
    return theta


def _unique_sorted(a: np.ndarray) -> np.ndarray:
    """``np.unique(a)`` for a 1-D integer array, by one sort (faster than numpy's hash path on millions)."""
    a = np.sort(a)
    if a.size:
        keep = np.empty(a.size, dtype=bool)
        keep[0] = True
        np.not_equal(a[1:], a[:-1], out=keep[1:])
        a = a[keep]
    return a


def _isin_sorted(a: np.ndarray, sorted_b: np.ndarray) -> np.ndarray:
    """``np.isin(a, sorted_b)`` for a sorted ``sorted_b``, by binary search."""
    if sorted_b.size == 0:
        return np.zeros(a.size, dtype=bool)
    idx = np.minimum(np.searchsorted(sorted_b, a), sorted_b.size - 1)
    return sorted_b[idx] == a


def _place_edges(
    rng: np.random.Generator,
    count: int,
    intra: bool,
    node_order: np.ndarray,
    cum: np.ndarray,
    cls_sorted_start: np.ndarray,
    vol_start: np.ndarray,
    vol: np.ndarray,
    labels: np.ndarray,
    n: int,
) -> np.ndarray:
    """``count`` distinct undirected edges (keys ``u * n + v`` with ``u < v``) inside or between classes."""
    total = cum[-1]
    keys = np.empty(0, dtype=np.int64)
    stalled = 0
    while keys.size < count:
        need = count - keys.size
        draw = int(need * 1.25) + 64
        pos_u = np.minimum(np.searchsorted(cum, rng.random(draw) * total, side="right"), n - 1)
        u = node_order[pos_u]
        cu = labels[u]
        if intra:
            r = vol_start[cu] + rng.random(draw) * vol[cu]
            pos_v = np.searchsorted(cum, r, side="right")
            lo = cls_sorted_start[cu]
            hi = cls_sorted_start[cu + 1] - 1
            pos_v = np.clip(pos_v, lo, hi)
        else:
            r = rng.random(draw) * (total - vol[cu])
            r = np.where(r >= vol_start[cu], r + vol[cu], r)
            pos_v = np.minimum(np.searchsorted(cum, r, side="right"), n - 1)
        v = node_order[pos_v]
        ok = u != v
        ok &= (labels[v] == cu) if intra else (labels[v] != cu)
        a, b = np.minimum(u[ok], v[ok]), np.maximum(u[ok], v[ok])
        new = _unique_sorted(a * n + b)
        new = new[~_isin_sorted(new, keys)]
        if new.size > need:
            new = rng.choice(new, size=need, replace=False)
        stalled = stalled + 1 if new.size == 0 else 0
        if stalled >= 20:
            kind = "intra-class" if intra else "inter-class"
            raise ConfigError(
                f"avg_degree/homophily: cannot place {count} distinct {kind} edges (placed {keys.size}); "
                "allowed: lower avg_degree, or a homophily the class sizes can hold"
            )
        keys = np.sort(np.concatenate([keys, new]))  # disjoint sets: their sorted union
    return keys


def sample_edges(
    rng: np.random.Generator,
    labels: np.ndarray,
    theta: np.ndarray,
    sizes: np.ndarray,
    num_edges: int,
    homophily: float,
) -> np.ndarray:
    """``num_edges`` distinct undirected DC-SBM edges as keys ``u * n + v`` (``u < v``, int64): the intra-class
    keys, then the inter-class ones, each sorted.

    round(h · M) edges join two nodes of one class, the others two nodes of different classes; an endpoint is
    drawn with probability ∝ θ (the second among its class, or among the other classes). Self-loops and
    duplicates are redrawn, so the count and the edge homophily h are exact.

    Args:
        rng: the random stream.
        labels: ``[n]`` class ids in ``[0, C)``; class c holds ``sizes[c]`` nodes.
        theta: ``[n]`` degree propensities (:func:`propensities`).
        sizes: ``[C]`` class sizes (``np.bincount(labels)``).
        num_edges: M, the number of undirected edges.
        homophily: h ∈ [0, 1].

    Raises:
        ConfigError: when the classes cannot hold that many distinct intra- or inter-class edges.
    """
    n = labels.size
    c = sizes.size
    node_order = np.argsort(labels, kind="stable")
    cum = np.cumsum(theta[node_order])
    cls_sorted_start = np.concatenate([[0], np.cumsum(sizes)])
    vol = np.bincount(labels, weights=theta, minlength=c)
    vol_start = np.concatenate([[0.0], cum[cls_sorted_start[1:-1] - 1]])
    m_intra = int(round(homophily * num_edges))
    args = (node_order, cum, cls_sorted_start, vol_start, vol, labels, n)
    return np.concatenate([
        _place_edges(rng, m_intra, True, *args),
        _place_edges(rng, num_edges - m_intra, False, *args),
    ])


def undirected_edge_index(keys: np.ndarray, n: int) -> np.ndarray:
    """``[2, 2M]`` int64, both directions of the edges ``keys`` (``u * n + v``, distinct, ``u != v``), sorted by
    source then target (coalesced), as :func:`~magkit.data.graph.to_undirected` returns them."""
    u, v = keys // n, keys % n
    both = np.concatenate([keys, v * n + u])
    del u, v
    both.sort()
    return np.stack([both // n, both % n])


def sample_dcsbm(
    num_nodes: int = 2000,
    num_classes: int = 5,
    homophily: float = 0.8,
    avg_degree: float = 10.0,
    degree_exponent: float = 2.5,
    seed: int = 0,
    class_ratio: float = 3.0,
    max_degree: float | None = None,
) -> tuple[Tensor, Tensor, int]:
    r"""Draw a degree-corrected SBM; returns ``(edge_index, y, num_classes)`` (undirected, coalesced).

    Args:
        num_nodes: :math:`N`.
        num_classes: :math:`C \ge 2`.
        homophily: share :math:`h` of edges inside classes, in ``[0, 1]``.
        avg_degree: mean degree :math:`\bar d` (exact: :math:`\mathrm{round}(N\bar d/2)` undirected edges).
        degree_exponent: :math:`\gamma > 1` of the Pareto propensities :math:`P(\theta) \propto \theta^{-\gamma}`.
        seed: seed of the draw (the structure stream of :func:`make_synthetic_mag` for the same seed).
        class_ratio: expected largest/smallest class size ratio (1 = balanced).
        max_degree: cap of the expected degree (default :math:`\sqrt{N\bar d}`).
    """
    rng, _ = _seed_streams(seed)
    n = _check_int("num_nodes", num_nodes, 2)
    c = _check_int("num_classes", num_classes, 2)
    h = _check_range("homophily", homophily, 0.0, 1.0)
    dbar = _check_range("avg_degree", avg_degree, 0.0, n - 1, lo_open=True)
    gamma = _check_range("degree_exponent", degree_exponent, 1.0, math.inf, lo_open=True, hi_open=True)
    ratio = _check_range("class_ratio", class_ratio, 1.0, math.inf, hi_open=True)
    cap = math.sqrt(n * dbar) if max_degree is None else _check_range("max_degree", max_degree, dbar, math.inf, hi_open=True)

    sizes = class_sizes(n, c, ratio)
    if int(sizes.min()) < 3:
        raise ConfigError(
            f"num_nodes: {n} gives a class of {int(sizes.min())} node(s) with num_classes={c}, class_ratio={ratio}; "
            "allowed: at least 3 nodes per class (raise num_nodes or lower class_ratio)"
        )
    labels = rng.permutation(np.repeat(np.arange(c), sizes))
    theta = propensities(rng, n, gamma, dbar, cap)
    keys = sample_edges(rng, labels, theta, sizes, int(round(n * dbar / 2)), h)
    ei = torch.from_numpy(np.stack([keys // n, keys % n]))
    return to_undirected(ei, n), torch.from_numpy(labels), c
