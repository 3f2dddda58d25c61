"""Normalised adjacency and cached feature propagation (SGC / APPNP style).

``propagate(graph, x, k)`` returns Â^k X with Â = D̃^{-1/2} (A + I) D̃^{-1/2}. Results are cached in memory,
keyed by content hashes of the structure and the features and by the propagation parameters, so repeated runs and
seeds over the same graph do not redo them.
"""

from __future__ import annotations

import hashlib
import weakref
from collections import OrderedDict

import torch
from torch import Tensor

_CACHE: OrderedDict = OrderedDict()
_CACHE_MAX = 32


def normalized_adjacency(edge_index: Tensor, num_nodes: int, self_loops: bool = True) -> Tensor:
    """Â = D̃^{-1/2} (A + I) D̃^{-1/2} as a sparse CSR tensor (float32), rows = message targets.

    An edge ``u -> v`` (``edge_index[:, e] = (u, v)``) becomes the entry Â[v, u], so ``Â @ X`` aggregates
    at each node the features of its in-neighbours; D̃ counts in-degrees (plus the self-loop), as PyG's
    ``gcn_norm`` does. For undirected graphs Â is symmetric.
    """
    ei = edge_index
    dev = ei.device
    if self_loops:
        loop = torch.arange(num_nodes, dtype=torch.long, device=dev)
        ei = torch.cat([ei, torch.stack([loop, loop])], dim=1)
    src, dst = ei
    deg = torch.zeros(num_nodes, device=dev).index_add_(0, dst, torch.ones(dst.numel(), device=dev))
    dinv = deg.clamp(min=1e-12).pow(-0.5)
    vals = dinv[src] * dinv[dst]
    adj = torch.sparse_coo_tensor(torch.stack([dst, src]), vals, (num_nodes, num_nodes), check_invariants=False).coalesce()
    return adj.to_sparse_csr()


def mean_adjacency(edge_index: Tensor, num_nodes: int) -> Tensor:
    """Row-normalised adjacency D^{-1} A (no self-loops) as sparse CSR, rows = message targets:
    ``M @ X`` is the mean of each node's in-neighbours' features (0 for a node without in-neighbours)."""
    src, dst = edge_index
    deg = torch.zeros(num_nodes, device=edge_index.device).index_add_(0, dst, torch.ones(dst.numel(), device=edge_index.device))
    vals = 1.0 / deg.clamp(min=1.0)[dst]
    adj = torch.sparse_coo_tensor(torch.stack([dst, src]), vals, (num_nodes, num_nodes), check_invariants=False).coalesce()
    return adj.to_sparse_csr()


_TRANSPOSES: OrderedDict = OrderedDict()  # id(adj) -> (weakref to adj, adj^T as CSR)
_TRANSPOSES_MAX = 16


def _csr_transpose(adj: Tensor) -> Tensor:
    """``adj``ᵀ as sparse CSR, cached per adjacency object (held weakly) for the backward of :func:`spmm`."""
    key = id(adj)
    hit = _TRANSPOSES.get(key)
    if hit is not None and hit[0]() is adj:
        _TRANSPOSES.move_to_end(key)
        return hit[1]
    at = adj.t().to_sparse_csr()
    for k in [k for k, (ref, _) in _TRANSPOSES.items() if ref() is None]:
        del _TRANSPOSES[k]
    _TRANSPOSES[key] = (weakref.ref(adj), at)
    while len(_TRANSPOSES) > _TRANSPOSES_MAX:
        _TRANSPOSES.popitem(last=False)
    return at


class _SpMM(torch.autograd.Function):
    @staticmethod
    def forward(ctx, adj: Tensor, x: Tensor) -> Tensor:
        ctx.adj = adj
        return torch.sparse.mm(adj, x)

    @staticmethod
    def backward(ctx, grad: Tensor):
        return None, torch.sparse.mm(_csr_transpose(ctx.adj), grad)


def spmm(adj: Tensor, x: Tensor) -> Tensor:
    """``adj @ x`` for a sparse CSR ``adj`` (a constant) and a dense ``x``, with a faster backward.

    torch's backward of a CSR product forms ``adj.t()`` (CSC) and converts it to CSR on every call: about 5 ms
    per product on Grocery (160k entries), whatever the width of ``x``. Here the CSR transpose is built once per
    adjacency object and reused, so every epoch after the first skips the conversion. Forward and gradient are
    bitwise those of ``adj @ x`` (tested). Other layouts, or an ``x`` that needs no gradient, take ``adj @ x``.
    """
    if adj.layout == torch.sparse_csr and x.requires_grad and torch.is_grad_enabled() and not adj.requires_grad:
        return _SpMM.apply(adj, x)
    return adj @ x


def tensor_digest(*tensors: Tensor) -> str:
    """A content hash of tensors (shape, dtype and bytes)."""
    h = hashlib.blake2b(digest_size=16)
    for t in tensors:
        t = t.detach().cpu().contiguous()
        h.update(f"{tuple(t.shape)}{t.dtype}".encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()


def cached(key: tuple, compute):
    if key in _CACHE:
        _CACHE.move_to_end(key)
        return _CACHE[key]
    value = compute()
    _CACHE[key] = value
    while len(_CACHE) > _CACHE_MAX:
        _CACHE.popitem(last=False)
    return value


def graph_adjacency(graph) -> Tensor:
    """The cached Â of ``graph``."""
    key = ("adj", graph.num_nodes, tensor_digest(graph.edge_index))
    return cached(key, lambda: normalized_adjacency(graph.edge_index, graph.num_nodes))


def propagate(graph, x: Tensor, k: int, alpha: float | None = None) -> Tensor:
    """Â^k X (``alpha`` None) or the APPNP personalised-PageRank approximation
    Z_{t+1} = (1-α) Â Z_t + α X, Z_0 = X, after k steps. Cached per (structure, features, k, alpha)."""

    def compute() -> Tensor:
        adj = graph_adjacency(graph)
        z = x
        for _ in range(k):
            z = adj @ z if alpha is None else (1 - alpha) * (adj @ z) + alpha * x
        return z

    key = ("prop", graph.num_nodes, tensor_digest(graph.edge_index), tensor_digest(x), k, alpha)
    return cached(key, compute)


def clear_cache() -> None:
    _CACHE.clear()
