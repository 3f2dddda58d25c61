"""NeighborSampler: sampled edges exist, seeds first, per-hop fan-outs, determinism, coverage, errors."""

from __future__ import annotations

import pytest
import torch

from magkit.data.graph import to_undirected
from magkit.exceptions import ConfigError
from magkit.train.sampler import NeighborSampler, SampledSubgraph, incoming_csr

N = 80


@pytest.fixture(scope="module")
def graph() -> tuple[torch.Tensor, int]:
    """A random undirected graph with varied degrees (a few hubs) and two isolated nodes (78, 79)."""
    g = torch.Generator().manual_seed(0)
    src = torch.randint(0, N - 2, (300,), generator=g)
    dst = torch.randint(0, N - 2, (300,), generator=g)
    hubs = torch.tensor([0, 1, 2]).repeat_interleave(20)
    leaves = torch.randint(3, N - 2, (60,), generator=g)
    ei = torch.cat([torch.stack([src, dst]), torch.stack([hubs, leaves])], dim=1)
    return to_undirected(ei, N), N


def edge_set(ei: torch.Tensor) -> set[tuple[int, int]]:
    return set(map(tuple, ei.t().tolist()))


def in_neighbours(ei: torch.Tensor, v: int) -> set[int]:
    return set(ei[0, ei[1] == v].tolist())


def hop_layers(sub: SampledSubgraph) -> tuple[set[int], set[int], set[int]]:
    """(seeds, hop-1 nodes, hop-2 nodes) in local ids, recovered from the sampled message flow."""
    seeds = set(range(sub.batch_size))
    src, dst = sub.edge_index
    hop1 = {int(s) for s, d in zip(src, dst) if int(d) in seeds} - seeds
    hop2 = set(range(sub.n_id.numel())) - seeds - hop1
    return seeds, hop1, hop2


def test_sampled_edges_exist_and_seeds_come_first(graph):
    ei, n = graph
    edges = edge_set(ei)
    sampler = NeighborSampler(ei, n, fanouts=(3, 2), batch_size=16, generator=torch.Generator().manual_seed(1))
    seeds = torch.tensor([5, 0, 77, 40, 12, 3, 78])
    sub = sampler.sample(seeds)
    assert sub.batch_size == 7
    assert torch.equal(sub.n_id[:7], seeds)
    assert sub.n_id.unique().numel() == sub.n_id.numel()  # every node once
    glob = sub.n_id[sub.edge_index]
    assert sub.edge_index.min() >= 0 and sub.edge_index.max() < sub.n_id.numel()
    assert glob.size(1) > 0
    assert edge_set(glob) <= edges
    assert len(edge_set(glob)) == glob.size(1)  # no edge sampled twice (without replacement)


def test_per_hop_fanout_respected_exactly(graph):
    ei, n = graph
    deg = torch.bincount(ei[1], minlength=n)
    fanouts = (3, 2)
    sampler = NeighborSampler(ei, n, fanouts=fanouts, batch_size=8, generator=torch.Generator().manual_seed(2))
    for batch in sampler.batches(torch.arange(n)):
        seeds, hop1, hop2 = hop_layers(batch)
        indeg = torch.bincount(batch.edge_index[1], minlength=batch.n_id.numel())
        for v in seeds:  # hop 1 targets: min(degree, 3) sampled in-edges
            assert int(indeg[v]) == min(int(deg[batch.n_id[v]]), fanouts[0])
        for v in hop1:  # hop 2 targets: min(degree, 2)
            assert int(indeg[v]) == min(int(deg[batch.n_id[v]]), fanouts[1])
        for v in hop2:  # not expanded after the last hop
            assert int(indeg[v]) == 0
        # every hop-2 node is a sampled neighbour of a hop-1 node
        src, dst = batch.edge_index
        assert hop2 == {int(s) for s, d in zip(src, dst) if int(d) in hop1} - seeds - hop1


def test_hubs_are_capped(graph):
    ei, n = graph
    sampler = NeighborSampler(ei, n, fanouts=(4,), batch_size=3, shuffle=False)
    sub = sampler.sample(torch.tensor([0, 1, 2]))  # degrees >= 20
    indeg = torch.bincount(sub.edge_index[1], minlength=sub.n_id.numel())
    assert indeg[:3].tolist() == [4, 4, 4]


def test_fanout_minus_one_takes_all_neighbours(graph):
    ei, n = graph
    sampler = NeighborSampler(ei, n, fanouts=(-1, -1), batch_size=4)
    seeds = torch.tensor([0, 9, 33, 78])
    sub = sampler.sample(seeds)
    glob = sub.n_id[sub.edge_index]
    for v in seeds.tolist():
        assert in_neighbours(glob, v) == in_neighbours(ei, v)
    # two full hops: the nodes are exactly the 2-hop neighbourhood
    one = set().union(*(in_neighbours(ei, v) for v in seeds.tolist())) | set(seeds.tolist())
    two = set().union(*(in_neighbours(ei, v) for v in one)) | one
    assert set(sub.n_id.tolist()) == two


def test_isolated_seed_gives_no_edges(graph):
    ei, n = graph
    sub = NeighborSampler(ei, n, fanouts=(5, 5)).sample(torch.tensor([78, 79]))
    assert sub.n_id.tolist() == [78, 79]
    assert sub.edge_index.shape == (2, 0)


def test_sampling_is_uniform_over_neighbours(graph):
    ei, n = graph
    nbrs = sorted(in_neighbours(ei, 5))
    assert len(nbrs) >= 4
    sampler = NeighborSampler(ei, n, fanouts=(1,), generator=torch.Generator().manual_seed(3))
    counts = dict.fromkeys(nbrs, 0)
    trials = 1000
    for _ in range(trials):
        sub = sampler.sample(torch.tensor([5]))
        (picked,) = sub.n_id[sub.edge_index[0]].tolist()
        counts[picked] += 1
    expected = trials / len(nbrs)
    # binomial sd = sqrt(trials p (1-p)) <= 16; the bound is >= 5 sd
    assert all(abs(c - expected) < 0.25 * expected + 30 for c in counts.values()), counts


def _run(ei, n, seed):
    sampler = NeighborSampler(ei, n, fanouts=(3, 3), batch_size=16, generator=torch.Generator().manual_seed(seed))
    return [(b.n_id.clone(), b.edge_index.clone()) for b in sampler.batches(torch.arange(n))]


def test_same_generator_seed_same_batches(graph):
    ei, n = graph
    a, b = _run(ei, n, 7), _run(ei, n, 7)
    assert len(a) == len(b)
    for (na, ea), (nb, eb) in zip(a, b):
        assert torch.equal(na, nb) and torch.equal(ea, eb)


def test_different_generator_seed_different_batches(graph):
    ei, n = graph
    a, b = _run(ei, n, 7), _run(ei, n, 8)
    assert any(not torch.equal(na, nb) for (na, _), (nb, _) in zip(a, b))


def test_global_rng_is_not_used_when_a_generator_is_given(graph):
    ei, n = graph
    torch.manual_seed(0)
    a = _run(ei, n, 7)
    torch.manual_seed(123)
    b = _run(ei, n, 7)
    assert all(torch.equal(x[0], y[0]) and torch.equal(x[1], y[1]) for x, y in zip(a, b))


@pytest.mark.parametrize("shuffle", [True, False])
def test_batches_cover_the_seed_set_exactly_once(graph, shuffle):
    ei, n = graph
    seeds = torch.arange(0, n, 3)  # 27 seeds
    sampler = NeighborSampler(ei, n, fanouts=(2,), batch_size=10, shuffle=shuffle,
                              generator=torch.Generator().manual_seed(0))
    batches = list(sampler.batches(seeds))
    assert [b.batch_size for b in batches] == [10, 10, 7]
    got = torch.cat([b.n_id[: b.batch_size] for b in batches])
    assert torch.equal(got.sort().values, seeds)
    if not shuffle:
        assert torch.equal(got, seeds)
    else:
        assert not torch.equal(got, seeds)


@pytest.mark.parametrize("fanouts", [(0,), (5, 0), (-2,), (3, -5), ()])
def test_bad_fanouts_raise(graph, fanouts):
    ei, n = graph
    with pytest.raises(ConfigError, match=r"^fanouts: .*allowed: positive neighbour counts or -1"):
        NeighborSampler(ei, n, fanouts=fanouts)


@pytest.mark.parametrize("batch_size", [0, -4])
def test_bad_batch_size_raises(graph, batch_size):
    ei, n = graph
    with pytest.raises(ConfigError, match=rf"^batch_size: {batch_size}; allowed: >= 1"):
        NeighborSampler(ei, n, batch_size=batch_size)


def _shuffled(ei: torch.Tensor) -> torch.Tensor:
    return ei[:, torch.randperm(ei.size(1), generator=torch.Generator().manual_seed(0))]


def test_canonical_edges_give_the_stored_target_row_as_csr_columns(graph):
    ei, n = graph
    rowptr, col = incoming_csr(ei, n)
    assert col.data_ptr() == ei[1].data_ptr()  # a view: no copy of the edges
    ref_rowptr, ref_col = incoming_csr(_shuffled(ei), n)  # not canonical: sorted by (target, source)
    assert torch.equal(rowptr, ref_rowptr) and torch.equal(col, ref_col)
    for v in (0, 5, 40, 78):
        assert col[rowptr[v]:rowptr[v + 1]].tolist() == sorted(in_neighbours(ei, v))


def test_directed_edges_get_their_incoming_lists():
    ei = torch.tensor([[0, 0, 1, 3], [1, 2, 2, 0]])  # sorted, but (0, 1) has no reverse
    rowptr, col = incoming_csr(ei, 4)
    assert rowptr.tolist() == [0, 1, 2, 4, 4] and col.tolist() == [3, 0, 0, 1]


def test_the_view_csr_samples_the_same_batches_as_the_sorted_csr(graph):
    ei, n = graph
    a = _run(ei, n, 11)
    b = _run(_shuffled(ei), n, 11)  # the same graph, CSR built by sorting
    assert len(a) == len(b)
    assert all(torch.equal(na, nb) and torch.equal(ea, eb) for (na, ea), (nb, eb) in zip(a, b))
