"""The one DC-SBM edge sampler shared by the in-memory and the on-disk generators."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from magkit.data import dcsbm
from magkit.data.dcsbm import class_sizes, propensities, sample_dcsbm, sample_edges, undirected_edge_index
from magkit.data.graph import to_undirected
from magkit.exceptions import ConfigError


def test_class_sizes_are_geometric_and_sum_to_n():
    sizes = class_sizes(1000, 5, 3.0)
    assert sizes.sum() == 1000 and sizes[0] == sizes.max() and sizes[-1] == sizes.min()
    assert 2.8 <= sizes[0] / sizes[-1] <= 3.2
    assert class_sizes(10, 3, 1.0).tolist() == [4, 3, 3]  # the remainder goes to the lowest class ids


def test_sample_edges_counts_and_homophily_are_exact():
    rng = np.random.default_rng(0)
    n, c = 3000, 6
    sizes = class_sizes(n, c, 2.0)
    y = rng.permutation(np.repeat(np.arange(c), sizes))
    theta = propensities(rng, n, 2.5, 8.0, math.sqrt(n * 8.0))
    keys = sample_edges(rng, y, theta, sizes, 12000, 0.7)
    u, v = keys // n, keys % n
    assert keys.size == np.unique(keys).size == 12000 and bool((u < v).all())
    assert int((y[u] == y[v]).sum()) == 8400


def test_undirected_edge_index_matches_to_undirected():
    rng = np.random.default_rng(1)
    n = 50
    keys = np.unique(rng.integers(0, n, 80) * n + rng.integers(0, n, 80))
    keys = keys[keys // n < keys % n]
    ei = undirected_edge_index(keys, n)
    ref = to_undirected(torch.from_numpy(np.stack([keys // n, keys % n])), n)
    assert torch.equal(torch.from_numpy(ei), ref)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_sorted_set_helpers_equal_numpy(seed):
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 500, 2000)
    b = np.unique(rng.integers(0, 500, 300))
    assert np.array_equal(dcsbm._unique_sorted(a), np.unique(a))
    assert np.array_equal(dcsbm._isin_sorted(a, b), np.isin(a, b))
    assert not dcsbm._isin_sorted(a, b[:0]).any()


def test_sample_dcsbm_pins_its_graph():
    """The default structure every benchmark uses: its edge count and a checksum of its edges and labels."""
    ei, y, c = sample_dcsbm()
    assert c == 5 and ei.shape == (2, 20000)
    assert int((ei[0] * 2000 + ei[1]).sum()) == 39318683517
    assert int((y * torch.arange(2000)).sum()) == 2953810


def test_too_dense_a_class_is_refused():
    with pytest.raises(ConfigError, match=r"avg_degree/homophily: cannot place \d+ distinct intra-class edges"):
        sample_dcsbm(60, 4, homophily=1.0, avg_degree=50.0, seed=0)
