"""A neighbour sampler in pure torch (GraphSAGE-style fan-outs), for graphs that do not fit full-batch.

PyG's ``NeighborLoader`` needs pyg-lib or torch-sparse, which do not install with torch 2.13 here; this
sampler needs neither. For a batch of seed nodes it samples, hop by hop, at most ``fanouts[h]`` neighbours
of every frontier node uniformly without replacement, and returns the induced sampled subgraph with the
seed nodes first (local ids ``0..batch_size-1``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ..data.graph import is_undirected_coalesced
from ..exceptions import ConfigError


def incoming_csr(edge_index: Tensor, num_nodes: int) -> tuple[Tensor, Tensor]:
    """The CSR over message targets: ``col[rowptr[v]:rowptr[v + 1]]`` are the sources ``u`` of the edges
    ``u -> v``, in increasing order.

    For an edge list in the canonical undirected form (:func:`~magkit.data.graph.is_undirected_coalesced`:
    sorted by (source, target), unique, symmetric) the incoming lists are the outgoing lists in stored order,
    so ``col`` is the stored target row itself (a view: no copy, no sort). Any other list is sorted by
    (target, source).

    Args:
        edge_index: int64 ``[2, E]``.
        num_nodes: the node count ``N``.

    Returns:
        ``(rowptr, col)``: int64 ``[N + 1]`` and int64 ``[E]``.
    """
    src, dst = edge_index
    rowptr = torch.zeros(num_nodes + 1, dtype=torch.long)
    rowptr[1:] = torch.cumsum(torch.bincount(dst, minlength=num_nodes), 0)
    if is_undirected_coalesced(edge_index, num_nodes):
        return rowptr, dst.contiguous()
    order = torch.argsort(dst * num_nodes + src)
    return rowptr, src[order].contiguous()


@dataclass
class SampledSubgraph:
    """``n_id``: global ids of the sampled nodes (seeds first); ``edge_index``: local sampled edges
    (message flow source -> target, both directions of an undirected edge only where both were sampled);
    ``batch_size``: number of seed nodes."""

    n_id: Tensor
    edge_index: Tensor
    batch_size: int


class NeighborSampler:
    """Iterate over mini-batches of seed nodes with sampled multi-hop neighbourhoods.

    Args:
        edge_index: ``[2, E]`` (undirected graphs store both directions).
        num_nodes: number of nodes.
        fanouts: neighbours sampled per hop (``-1`` = all), e.g. ``(10, 10)``.
        batch_size: seed nodes per batch.
        shuffle: shuffle the seeds each epoch.
        generator: a ``torch.Generator`` (determinism comes from its seed).
    """

    def __init__(self, edge_index: Tensor, num_nodes: int, fanouts=(10, 10), batch_size: int = 512,
                 shuffle: bool = True, generator: torch.Generator | None = None):
        if batch_size < 1:
            raise ConfigError(f"batch_size: {batch_size}; allowed: >= 1")
        if not fanouts or any(int(f) == 0 or int(f) < -1 for f in fanouts):
            raise ConfigError(f"fanouts: {tuple(fanouts)}; allowed: positive neighbour counts or -1 (all) per hop")
        self.num_nodes = int(num_nodes)
        self.fanouts = tuple(int(f) for f in fanouts)
        self.batch_size = int(batch_size)
        self.shuffle = shuffle
        self.generator = generator
        self.rowptr, self.col = incoming_csr(edge_index, self.num_nodes)

    def _sample_hop(self, frontier: Tensor, fanout: int) -> tuple[Tensor, Tensor]:
        """For each frontier node, up to ``fanout`` incoming neighbours: returns (src, dst) global ids."""
        start = self.rowptr[frontier]
        deg = self.rowptr[frontier + 1] - start
        if deg.sum() == 0:
            empty = torch.empty(0, dtype=torch.long)
            return empty, empty
        owner = torch.repeat_interleave(torch.arange(frontier.numel()), deg)
        offs = torch.arange(int(deg.sum())) - torch.repeat_interleave(torch.cumsum(deg, 0) - deg, deg)
        eids = start[owner] + offs
        if fanout > 0:
            keys = torch.rand(eids.numel(), generator=self.generator)
            order = torch.argsort(owner.double() + keys.double())  # group by owner, random order within
            owner, eids = owner[order], eids[order]
            rank = torch.arange(owner.numel()) - torch.repeat_interleave(torch.cumsum(deg, 0) - deg, deg)
            keep = rank < fanout
            owner, eids = owner[keep], eids[keep]
        return self.col[eids], frontier[owner]

    def sample(self, seeds: Tensor) -> SampledSubgraph:
        seeds = seeds.long()
        nodes = [seeds]
        srcs, dsts = [], []
        seen = torch.zeros(self.num_nodes, dtype=torch.bool)
        seen[seeds] = True
        frontier = seeds
        for fanout in self.fanouts:
            s, d = self._sample_hop(frontier, fanout)
            srcs.append(s)
            dsts.append(d)
            new = torch.unique(s[~seen[s]])
            seen[new] = True
            nodes.append(new)
            frontier = new
            if frontier.numel() == 0:
                break
        n_id = torch.cat(nodes)
        local = torch.full((self.num_nodes,), -1, dtype=torch.long)
        local[n_id] = torch.arange(n_id.numel())
        src = torch.cat(srcs) if srcs else torch.empty(0, dtype=torch.long)
        dst = torch.cat(dsts) if dsts else torch.empty(0, dtype=torch.long)
        return SampledSubgraph(n_id=n_id, edge_index=torch.stack([local[src], local[dst]]), batch_size=seeds.numel())

    def batches(self, seeds: Tensor):
        """Yield :class:`SampledSubgraph` batches covering ``seeds`` once."""
        if self.shuffle:
            seeds = seeds[torch.randperm(seeds.numel(), generator=self.generator)]
        for i in range(0, seeds.numel(), self.batch_size):
            yield self.sample(seeds[i: i + self.batch_size])
