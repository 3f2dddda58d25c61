"""Normalised adjacency and feature propagation Â^k X (SGC, Wu et al. 2019; APPNP, Klicpera et al. 2019).

:func:`propagate_features` is the one entry point: in memory for in-RAM graphs (results kept in a
:class:`PropagationCache`, keyed by content hashes of the structure and the features and by the propagation
parameters, so repeated runs and seeds over the same graph do not redo them), and in column blocks through the
disk cache of :mod:`magkit.train.diskprop` for memory-mapped graphs or features.
"""

from __future__ import annotations

import hashlib
import weakref
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from ..exceptions import ConfigError
from ..functional.ops import reused_buffer

#: where :func:`propagate_features` may compute
WHERE = ("auto", "memory", "disk")


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


#: outputs of at least this many elements are written into a buffer reused across calls (see :func:`_csr_mm`)
REUSE_MIN_NUMEL = 1 << 22


def _csr_mm(adj: Tensor, x: Tensor, reuse: bool = False) -> Tensor:
    """``adj @ x`` (no autograd), written straight into its output on CPU: torch's ``@`` fills a zero matrix,
    multiplies into a temporary and copies it over (2.8x the time of the product at width 256 on Grocery);
    ``addmm(out, adj, x, beta=0, out=out)`` runs the same kernel without them (bitwise the same result, tested).
    ``reuse``: a large output goes into a buffer kept for ``adj`` (:func:`magkit.functional.ops.reused_buffer`:
    handed out again only once nothing holds it), so that propagating a wide input in every training step
    (GraphSAGE's first layer) is not page-faulted anew every time."""
    if (adj.layout == torch.sparse_csr and adj.device.type == "cpu" and x.device.type == "cpu" and x.dim() == 2
            and x.dtype == adj.dtype and x.is_contiguous() and x.dtype in (torch.float32, torch.float64)):
        shape = (adj.shape[0], x.shape[1])
        if reuse and shape[0] * shape[1] >= REUSE_MIN_NUMEL:
            out = reused_buffer(adj, shape, x.dtype, x.device)
        else:
            out = torch.empty(shape, dtype=x.dtype, device=x.device)
        return torch.addmm(out, adj, x, beta=0, out=out)
    return torch.sparse.mm(adj, x)


class _SpMM(torch.autograd.Function):
    @staticmethod
    def forward(ctx, adj: Tensor, x: Tensor) -> Tensor:
        ctx.adj = adj
        return _csr_mm(adj, x)

    @staticmethod
    def backward(ctx, grad: Tensor):
        return None, _csr_mm(_csr_transpose(ctx.adj), grad.contiguous())


def spmm(adj: Tensor, x: Tensor) -> Tensor:
    """``adj @ x`` for a sparse CSR ``adj`` (a constant) and a dense ``x``, with a faster forward and backward.

    torch's backward of a CSR product forms ``adj.t()`` (CSC) and converts it to CSR on every call: about 5 ms
    per product on Grocery (160k entries), whatever the width of ``x``. Here the CSR transpose is built once per
    adjacency object and reused, so every epoch after the first skips the conversion; on CPU each product is
    written straight into its output (see :func:`_csr_mm`). Forward and gradient are bitwise those of
    ``adj @ x`` (tested). Other layouts take ``adj @ x``.
    """
    if adj.layout != torch.sparse_csr or adj.requires_grad:
        return adj @ x
    if x.requires_grad and torch.is_grad_enabled():
        return _SpMM.apply(adj, x)
    # a constant input in a training pass (GraphSAGE's first layer): the output lives until the backward pass
    return _csr_mm(adj, x, reuse=torch.is_grad_enabled())


def tensor_digest(*tensors: Tensor) -> str:
    """A content hash of tensors (shape, dtype and bytes)."""
    h = hashlib.blake2b(digest_size=16)
    for t in tensors:
        t = t.detach().cpu().contiguous()
        h.update(f"{tuple(t.shape)}{t.dtype}".encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()


class PropagationCache:
    """A least-recently-used store of adjacencies and propagated features, keyed by content hashes.

    The caller owns it: pass one to :func:`graph_adjacency` and :func:`propagate_features` to share results
    across calls, ``PropagationCache(max_entries=0)`` to keep nothing. Without one, those functions use the
    process-wide :data:`DEFAULT_CACHE`.

    Args:
        max_entries: how many results are kept; the least recently used is dropped first (default: ``32``).
    """

    def __init__(self, max_entries: int = 32) -> None:
        if isinstance(max_entries, bool) or not isinstance(max_entries, int) or max_entries < 0:
            raise ConfigError(f"max_entries: {max_entries!r}; allowed: an integer >= 0")
        self.max_entries = max_entries
        self._store: OrderedDict = OrderedDict()

    def get(self, key: tuple, compute: Callable[[], Any]) -> Any:
        """The value stored under ``key``, computed by ``compute()`` (and stored) on a miss."""
        if key in self._store:
            self._store.move_to_end(key)
            return self._store[key]
        value = compute()
        if self.max_entries > 0:
            self._store[key] = value
            while len(self._store) > self.max_entries:
                self._store.popitem(last=False)
        return value

    def clear(self) -> None:
        """Drop every stored result."""
        self._store.clear()

    def __len__(self) -> int:
        return len(self._store)


#: the cache used when a caller passes none
DEFAULT_CACHE = PropagationCache()


def clear_cache() -> None:
    """Empty :data:`DEFAULT_CACHE`."""
    DEFAULT_CACHE.clear()


def graph_adjacency(graph, cache: PropagationCache | None = None) -> Tensor:
    """The Â of ``graph`` (:func:`normalized_adjacency`), kept in ``cache`` (default: :data:`DEFAULT_CACHE`)."""
    cache = DEFAULT_CACHE if cache is None else cache
    key = ("adj", graph.num_nodes, tensor_digest(graph.edge_index))
    return cache.get(key, lambda: normalized_adjacency(graph.edge_index, graph.num_nodes))


def propagate_features(
    graph,
    x,
    k: int,
    alpha: float | None = None,
    *,
    where: str = "auto",
    max_memory_mb: float | None = None,
    cache: PropagationCache | None = None,
):
    """Â^k X, or APPNP's personalised-PageRank approximation Z_{t+1} = (1 − α) Â Z_t + α X, Z_0 = X, after k steps.

    Â = D̃^{-1/2} (A + I) D̃^{-1/2} (:func:`normalized_adjacency`). In memory, the result is kept in ``cache``
    per (structure, features, k, α). On disk (:func:`magkit.train.diskprop.propagate_to_disk`), Â^k X is
    computed in column blocks under ``max_memory_mb`` and cached as a file in
    :func:`~magkit.train.diskprop.default_cache_dir`; the result is a lazy
    :class:`~magkit.data.mapped.MappedFeatures` when ``x`` is one (mini-batch training gathers its rows), else
    the file read into memory.

    Args:
        graph: the graph (``edge_index``, ``num_nodes``; ``is_mapped`` for a memory-mapped graph).
        x: ``[N, d]`` features: a tensor or a :class:`~magkit.data.mapped.MappedFeatures`.
        k: number of hops (>= 0).
        alpha: APPNP teleport probability α; ``None`` for plain Â^k X (default: ``None``).
        where: ``"memory"``, ``"disk"``, or ``"auto"``: on disk when the graph or ``x`` is memory-mapped, else
            in memory (default: ``"auto"``).
        max_memory_mb: memory budget of the disk path (default: ``diskprop.DEFAULT_MAX_MEMORY_MB``).
        cache: where in-memory results are kept (default: :data:`DEFAULT_CACHE`).

    Returns:
        ``[N, d]`` float features (a :class:`~magkit.data.mapped.MappedFeatures` for a mapped ``x`` on disk).
    """
    from ..data.mapped import is_mapped

    if where not in WHERE:
        raise ConfigError(f"where: {where!r}; allowed: {', '.join(WHERE)}")
    mapped_x = is_mapped(x)
    if where == "auto":
        where = "disk" if mapped_x or getattr(graph, "is_mapped", False) else "memory"
    if where == "disk":
        from . import diskprop

        budget = diskprop.DEFAULT_MAX_MEMORY_MB if max_memory_mb is None else max_memory_mb
        res = diskprop.propagate_to_disk(graph.edge_index, x, k, diskprop.default_cache_dir(graph),
                                         num_nodes=graph.num_nodes, alpha=alpha, max_memory_mb=budget,
                                         undirected=True)
        return res if mapped_x else res.materialize()
    if mapped_x:
        raise ConfigError("x: memory-mapped features; allowed with where='disk' or 'auto', or pass "
                          "x.materialize() for where='memory'")
    cache = DEFAULT_CACHE if cache is None else cache

    def compute() -> Tensor:
        adj = graph_adjacency(graph, cache)
        z = x
        for _ in range(k):
            z = adj @ z if alpha is None else (1 - alpha) * (adj @ z) + alpha * x
        return z

    key = ("prop", graph.num_nodes, tensor_digest(graph.edge_index), tensor_digest(x), k, alpha)
    return cache.get(key, compute)


def propagate(graph, x: Tensor, k: int, alpha: float | None = None) -> Tensor:
    """In-memory Â^k X: ``propagate_features(graph, x, k, alpha, where="memory")``."""
    return propagate_features(graph, x, k, alpha, where="memory")
