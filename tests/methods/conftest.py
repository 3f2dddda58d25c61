"""Small multimodal graphs for the method tests, and a single-threaded torch while they run.

Graphs come from :func:`magkit.data.synthetic.make_synthetic_mag` (a DC-SBM with per-node modality quality).
When that module is unavailable -- or ``MAGKIT_TESTS_FALLBACK_GRAPHS=1`` is set -- a simple planted-partition
generator below stands in (same arguments, same profiles by name, no per-node quality smoothing or bias).

Every graph here is small (500-1200 nodes, 32-d features), so a fit of 100 epochs takes about a second.
"""

from __future__ import annotations

import functools
import math
import os

import numpy as np
import pytest
import torch

from magkit.data.graph import MultimodalGraph, to_undirected, validate
from magkit.data.splits import apply_split

try:
    if os.environ.get("MAGKIT_TESTS_FALLBACK_GRAPHS") == "1":
        raise ImportError("fallback forced by MAGKIT_TESTS_FALLBACK_GRAPHS=1")
    from magkit.data.synthetic import make_synthetic_mag as _make_synthetic_mag
except ImportError:  # the generator is not there (yet): use the planted-partition fallback
    _make_synthetic_mag = None

#: hyper-parameters of every quality test: small, fast, deterministic
FAST = {"hidden": 32, "epochs": 100, "patience": 30}

# (alpha, beta) of the Beta quality of text and image in the fallback's profiles
_FALLBACK_PROFILES = {
    "balanced": {"text": (4.0, 2.5), "image": (4.0, 2.5)},
    "text-dominant": {"text": (5.0, 2.0), "image": (3.0, 3.0)},
    "image-dominant": {"text": (3.0, 3.0), "image": (5.0, 2.0)},
}


def planted_partition_mag(
    num_nodes: int,
    num_classes: int,
    homophily: float,
    seed: int = 0,
    *,
    profile: str = "balanced",
    dims: int = 32,
    avg_degree: float = 8.0,
    signal: float | None = None,
    latent_dim: int = 32,
) -> MultimodalGraph:
    """A planted-partition graph (edge homophily about ``homophily``) with two modalities.

    Per modality, x_i = tanh(0.8 (q_i s mu_{y_i} + eps_i) W / c), q_i ~ Beta(profile), eps ~ N(0, I_k),
    unit class prototypes mu, a random projection W [k, dims]; MAGB split.
    """
    signal = 6.0 if signal is None else signal
    rng = np.random.default_rng(seed)
    y = rng.permutation(np.arange(num_nodes) % num_classes)
    members = [np.nonzero(y == c)[0] for c in range(num_classes)]
    m = int(round(num_nodes * avg_degree / 2))
    u = rng.integers(0, num_nodes, m)
    intra = rng.random(m) < homophily
    v = np.empty(m, dtype=np.int64)
    for i in range(m):
        c = y[u[i]]
        if intra[i]:
            v[i] = rng.choice(members[c])
        else:
            v[i] = rng.choice(members[(c + rng.integers(1, num_classes)) % num_classes])
    edge_index = to_undirected(torch.from_numpy(np.stack([u, v])), num_nodes)
    scale = math.sqrt(1.0 + signal**2 / latent_dim)
    feats = {}
    for mod, (a, b) in _FALLBACK_PROFILES[profile].items():
        mu = rng.standard_normal((num_classes, latent_dim))
        mu /= np.linalg.norm(mu, axis=1, keepdims=True)
        q = rng.beta(a, b, num_nodes)
        z = (q * signal)[:, None] * mu[y] + rng.standard_normal((num_nodes, latent_dim))
        w = rng.standard_normal((latent_dim, dims)) / math.sqrt(latent_dim)
        feats[mod] = torch.from_numpy(np.tanh(0.8 * (z @ w) / scale).astype(np.float32))
    graph = MultimodalGraph(feats, edge_index, torch.from_numpy(y), num_classes=num_classes,
                            name=f"planted-{profile}")
    apply_split(graph, "magb", seed=seed)
    return validate(graph)


@functools.lru_cache(maxsize=16)
def make_graph(num_nodes: int = 500, num_classes: int = 4, homophily: float = 0.85, seed: int = 0,
               profile: str = "balanced", signal: float | None = None) -> MultimodalGraph:
    """A test graph from the synthetic generator (or the fallback), 32-d features, mean degree 8; the
    profile's own signal strength unless ``signal`` is given. Cached: treat the result as read-only."""
    extra = {} if signal is None else {"signal": signal}
    if _make_synthetic_mag is not None:
        return _make_synthetic_mag(num_nodes, num_classes, homophily=homophily, seed=seed, profile=profile,
                                   dims=32, avg_degree=8, **extra)
    return planted_partition_mag(num_nodes, num_classes, homophily, seed, profile=profile, **extra)


def drop_modality(graph: MultimodalGraph, modality: str, fraction: float, seed: int = 0) -> MultimodalGraph:
    """A copy of ``graph`` where ``modality`` is absent (zero rows, mask false) for ``fraction`` of the nodes,
    chosen among nodes that keep another modality."""
    g = graph.clone()
    mask = g.modality_mask.clone()
    j = g.modalities.index(modality)
    others = torch.cat([mask[:, :j], mask[:, j + 1:]], dim=1).any(dim=1)
    cand = (others & mask[:, j]).nonzero(as_tuple=True)[0]
    gen = torch.Generator().manual_seed(seed)
    k = min(int(round(fraction * g.num_nodes)), cand.numel())
    drop = cand[torch.randperm(cand.numel(), generator=gen)[:k]]
    mask[drop, j] = False
    x = g.feature(modality).clone()
    x[~mask[:, j]] = 0.0
    g[f"x_{modality}"] = x
    g.modality_mask = mask
    return validate(g)


@pytest.fixture(scope="session")
def generator_name() -> str:
    return "make_synthetic_mag" if _make_synthetic_mag is not None else "planted_partition_mag (fallback)"


@pytest.fixture(scope="session")
def homophilous_graph() -> MultimodalGraph:
    """500 nodes, 4 classes, edge homophily 0.85, both modalities informative (``balanced``)."""
    return make_graph(500, 4, homophily=0.85, seed=0, profile="balanced")


@pytest.fixture(scope="session")
def noisy_homophilous_graph() -> MultimodalGraph:
    """Strongly homophilous (0.95) with weak single-node features (signal 2): neighbours carry the label."""
    return make_graph(500, 4, homophily=0.95, seed=0, profile="balanced", signal=2.0)


@pytest.fixture(scope="session")
def graph_factory():
    """``make_graph`` itself (cached), for tests that need several graphs."""
    return make_graph


@pytest.fixture(scope="session")
def missing_image_graph(homophilous_graph) -> MultimodalGraph:
    """``homophilous_graph`` with the image absent for half of the nodes (zero rows, mask false)."""
    return drop_modality(homophilous_graph, "image", 0.5, seed=0)


@pytest.fixture(scope="session")
def drop_modality_fn():
    """``drop_modality`` itself, for tests that build their own missing-modality graphs."""
    return drop_modality
