"""Feature propagation Â^k X for feature blocks larger than memory, computed in column blocks and cached on disk.

Â = D̃^{-1/2} (A + I) D̃^{-1/2} as in :func:`magkit.train.propagation.normalized_adjacency`. The product Â X
needs, for every output row, the rows of all its neighbours, so cutting X by *rows* would need every row of X
(or of the previous hop) for each output chunk. Cutting by *columns* does not: column j of Â^k X depends only on
column j of X. :func:`propagate_to_disk` therefore

1. builds Â once as a CSR matrix in memory (``int32`` indices below 2^31 nodes: ``(N + 1) * 4 + nnz * 8``
   bytes; the self-loops are applied as ``D̃^{-1} X`` instead of being stored),
2. for each block of ``c`` feature columns: reads those columns of every row from the (memory-mapped) input,
   row chunk by row chunk, into an ``[N, c]`` float32 buffer, applies the k hops in memory (two ``[N, c]``
   buffers; three for APPNP, which keeps X; the sparse product runs over row blocks, since torch's CSR kernel
   allocates an output-sized temporary per call), and writes the block into the output ``.npy`` (float32, ``[N, d]``,
   memory-mapped for writing, its pages dropped from the resident set after every written chunk),
3. renames the finished file into the cache.

Memory: ``adjacency + c * N * 4 * (2 or 3) + one row chunk``; ``c`` is the largest width that fits
``max_memory_mb`` (a :class:`ConfigError` names the smallest budget that works). Each column block reads the
whole input once, so the input is read ``ceil(d / c)`` times (from the page cache when it fits there).

Cache: ``<cache_dir>/prop-<key>.npy``, the key a hash of the structure (node count and ``edge_index`` bytes),
the input block (:meth:`MappedFeatures.digest`: stored bytes, dtype, shape, presence mask; for an in-RAM tensor
its bytes), ``k``, ``alpha`` and the format version, and beside it ``prop-<key>.npy.sha256``, a JSON record of
the file's sha256, shape and key. The output is written to a temporary name in the same folder, flushed,
fsync'ed and renamed (:func:`magkit.integrity.atomic_path`), so a half-written file is never found under the
final name; a full disk leaves no temporary file and raises a one-line :class:`~magkit.integrity.WriteError`.
A cached file is read only when its header, size and sha256 match its record (checked once per process and
file); otherwise a warning names it and it is recomputed.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import os
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..data.mapped import MappedFeatures, is_mapped
from ..exceptions import ConfigError
from ..integrity import atomic_path, atomic_write_text, file_digest

log = logging.getLogger(__name__)

CACHE_VERSION = 1
DEFAULT_MAX_MEMORY_MB = 512
#: how many times the propagation was computed (not read from the cache) in this process (tests, benchmarks)
COMPUTED = {"count": 0}


def _digest_tensor(t: Tensor, h) -> None:
    t = t.detach().cpu().contiguous()
    h.update(f"{tuple(t.shape)}{t.dtype}".encode())
    flat = t.view(-1).view(torch.uint8) if t.numel() else t
    step = 64 << 20
    for a in range(0, flat.numel(), step):
        h.update(flat[a:a + step].numpy())  # buffer protocol: no copy


def cache_key(edge_index: Tensor, num_nodes: int, x, k: int, alpha: float | None) -> str:
    """The cache key of Â^k X: structure, features, k, alpha and the cache format."""
    h = hashlib.blake2b(digest_size=16)
    h.update(f"v{CACHE_VERSION} n={num_nodes} k={k} alpha={alpha!r}".encode())
    _digest_tensor(edge_index, h)
    if is_mapped(x):
        h.update(b"mapped" + x.digest().encode())
    else:
        _digest_tensor(torch.as_tensor(x, dtype=torch.float32), h)
    return h.hexdigest()


#: files whose digest was checked in this process: (path, inode, size, mtime) -> the sha256 found
_VERIFIED: dict[tuple, str] = {}


def _record_path(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def _file_id(path: Path) -> tuple:
    st = path.stat()
    return (str(path), st.st_ino, st.st_size, st.st_mtime_ns)


def check_cache(path: Path, n: int, d: int, key: str) -> None:
    """Raise :class:`~magkit.integrity.IntegrityError` naming ``path`` unless it is a finished cache file of
    ``key``: float32 ``[n, d]``, exactly the bytes its header promises, and the sha256 of its record."""
    import json

    from ..integrity import IntegrityError, file_digest

    if not _valid_cache(path, n, d):
        raise IntegrityError(f"{path}: wrong header or size for propagated features [{n}, {d}] (truncated or foreign)")
    try:
        ident = _file_id(path)
        record = json.loads(_record_path(path).read_text())
    except (OSError, ValueError, RecursionError) as exc:
        raise IntegrityError(f"{path}: no readable digest record {_record_path(path).name} ({exc})") from None
    if not isinstance(record, dict) or record.get("key") != key or record.get("shape") != [n, d]:
        raise IntegrityError(f"{path}: its digest record belongs to another cache entry")
    digest = record.get("sha256")
    if _VERIFIED.get(ident) == digest:
        return
    if file_digest(path) != digest:
        raise IntegrityError(f"{path}: content digest mismatch (the cached file was corrupted or altered)")
    _VERIFIED[ident] = digest


def _valid_cache(path: Path, n: int, d: int) -> bool:
    """A finished cache file: readable header, float32 [n, d], exactly the bytes that header promises."""
    try:
        with open(path, "rb") as fh:
            version = np.lib.format.read_magic(fh)
            read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, fortran, dtype = read(fh)
            offset = fh.tell()
        size = path.stat().st_size
    except Exception:  # noqa: BLE001 - a header numpy cannot parse (TokenError, SyntaxError, ...) is no valid cache
        return False
    return (tuple(shape) == (n, d) and not fortran and dtype == np.dtype(np.float32)
            and size == offset + n * d * 4)


def target_csr(edge_index: Tensor, num_nodes: int, undirected: bool = False) -> tuple[Tensor, Tensor]:
    """``(A, dinv2)``: the off-diagonal part of Â as a CSR matrix with rows = message targets, and the diagonal
    ``1 / deg̃`` (the self-loop term), so that ``Â X = A X + dinv2 * X``.

    ``undirected=True`` (an edge list holding both directions, as every MultimodalGraph does) lets a list sorted by
    source be used as is: Â is symmetric, so rows by source give the same matrix. Otherwise the edges are sorted
    by target unless they already are.
    """
    n = int(num_nodes)
    src, dst = edge_index[0], edge_index[1]
    deg = torch.bincount(dst, minlength=n).to(torch.float32) + 1.0  # in-degree plus the self-loop
    dinv = deg.pow(-0.5)
    itype = torch.int32 if n < 2**31 - 1 and edge_index.size(1) < 2**31 - 1 else torch.int64
    path = csr_path(edge_index, undirected)
    if path == "target":
        rows, cols = dst, src
    elif path == "source":
        rows, cols = src, dst
    else:
        order = torch.argsort(dst, stable=True)
        rows, cols = dst[order], src[order]
        del order
    crow = torch.zeros(n + 1, dtype=itype)
    crow[1:] = torch.cumsum(torch.bincount(rows, minlength=n), 0).to(itype)
    vals = dinv[rows]
    vals.mul_(dinv[cols])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "sparse CSR support is in beta"
        adj = torch.sparse_csr_tensor(crow, cols.to(itype), vals, (n, n), check_invariants=False)
    return adj, dinv.pow_(2)


def spmm_rows(adj: Tensor, z: Tensor, out: Tensor, rows_per_chunk: int) -> Tensor:
    """``out = adj @ z`` for a CSR ``adj``, one block of rows at a time: torch's CSR kernel allocates about one
    output-sized temporary per call, so chunking bounds it by ``rows_per_chunk * z.size(1)`` floats."""
    crow, col, val = adj.crow_indices(), adj.col_indices(), adj.values()
    n_rows, n_cols = adj.shape
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        for r0 in range(0, n_rows, rows_per_chunk):
            r1 = min(r0 + rows_per_chunk, n_rows)
            a, b = int(crow[r0]), int(crow[r1])
            sub = torch.sparse_csr_tensor(crow[r0:r1 + 1] - a, col[a:b], val[a:b], (r1 - r0, n_cols),
                                          check_invariants=False)
            torch.mm(sub, z, out=out[r0:r1])
    return out


def csr_path(edge_index: Tensor, undirected: bool) -> str:
    """How :func:`target_csr` gets rows by target: ``"target"`` (already sorted by target), ``"source"``
    (undirected and sorted by source, as a coalesced MultimodalGraph is) or ``"sort"`` (an argsort)."""
    src, dst = edge_index[0], edge_index[1]
    if edge_index.size(1) == 0 or bool((dst[1:] >= dst[:-1]).all()):
        return "target"
    if undirected and bool((src[1:] >= src[:-1]).all()):
        return "source"
    return "sort"


def _adjacency_bytes(num_nodes: int, num_edges: int, path: str = "sort") -> int:
    """Peak bytes of :func:`target_csr` (the kept matrix plus its transients), measured against VmHWM."""
    idx = 4 if num_nodes < 2**31 - 1 else 8
    kept = (num_nodes + 1) * idx + num_edges * (idx + 4) + num_nodes * 4
    transient = num_edges * 6 + num_nodes * 24  # one float temporary, the sortedness check, degree vectors
    if path == "sort":  # argsort (int64 order + scratch) and the reordered int64 rows/cols
        transient += num_edges * 40
    return kept + transient


#: what a propagation holds besides the adjacency and the column buffers (read/write chunks aside): the
#: interpreter-side temporaries and allocator slack seen in VmHWM measurements
_SLACK_BYTES = 16 << 20


def plan_columns(num_nodes: int, num_edges: int, dim: int, max_memory_mb: float, alpha: float | None,
                 chunk_bytes: int, path: str = "sort") -> int:
    """The widest column block that fits ``max_memory_mb`` (see the module docstring)."""
    per_col = num_nodes * 4 * (3 if alpha is not None else 2)
    fixed = _adjacency_bytes(num_nodes, num_edges, path) + 3 * chunk_bytes + _SLACK_BYTES
    budget = int(max_memory_mb * 2**20)
    c = (budget - fixed) // per_col
    if c < 1:
        need = (fixed + per_col) / 2**20
        raise ConfigError(f"max_memory_mb: {max_memory_mb} is too small for Â^k X on {num_nodes} nodes and "
                          f"{num_edges} edges; allowed: >= {need:.0f} (adjacency + one column)")
    return int(min(c, dim))


def propagate_to_disk(
    edge_index: Tensor,
    x: MappedFeatures | Tensor,
    k: int,
    cache_dir: str | os.PathLike,
    *,
    num_nodes: int | None = None,
    alpha: float | None = None,
    max_memory_mb: float = DEFAULT_MAX_MEMORY_MB,
    chunk_rows: int | None = None,
    col_chunk: int | None = None,
    undirected: bool = False,
    stats: dict | None = None,
) -> MappedFeatures:
    """Â^k X (or APPNP's Z_{t+1} = (1-α) Â Z_t + α X with ``alpha``), computed in column blocks under a memory
    budget and cached on disk; returns the result as a :class:`MappedFeatures` (float32 ``[N, d]``).

    Args:
        edge_index: ``[2, E]`` messages source -> target (``Â[v, u]`` for ``u -> v``), in memory.
        x: the ``[N, d]`` input: a mapped block (read in row chunks) or a tensor.
        k: hops (>= 0).
        cache_dir: where results live (created).
        num_nodes: N (default: ``x``'s row count).
        alpha: APPNP teleport probability; ``None`` for plain Â^k X.
        max_memory_mb: bound on what this function allocates (adjacency + column buffers + one row chunk).
        chunk_rows: rows per read/write chunk (default: about 4 MB of float32 rows).
        col_chunk: force the column-block width (tests); at most what the budget allows.
        undirected: ``edge_index`` holds both directions of every edge (lets a source-sorted list be used as is).
        stats: a dict filled with what happened (``cached``, ``seconds``, ``col_block``, ``passes``, ``path``, ...).
    """
    t0 = time.perf_counter()
    n = int(num_nodes if num_nodes is not None else x.shape[0])
    d = int(x.shape[1])
    if int(x.shape[0]) != n:
        raise ConfigError(f"x: {int(x.shape[0])} rows; allowed: one per node ({n})")
    if k < 0:
        raise ConfigError(f"k: {k}; allowed: >= 0")
    if alpha is not None and not 0 < alpha <= 1:
        raise ConfigError(f"alpha: {alpha}; allowed: 0 < alpha <= 1 or None")
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    num_edges = int(edge_index.size(1))
    row_bytes = 4 << 20
    step = int(chunk_rows) if chunk_rows else max(1, row_bytes // (4 * d))
    chunk_bytes = step * d * 8  # one chunk read in the stored dtype (<= 8 bytes/value) plus its float32 cast
    if is_mapped(x):  # reads drop the input's mapped pages after every chunk: they count in the resident set
        limit = min(x.resident_bytes, chunk_bytes)
        saved, x.resident_bytes = x.resident_bytes, limit
        try:
            key = cache_key(edge_index, n, x, k, alpha)  # the digest stays cached on the caller's block
        finally:
            x.resident_bytes = saved
        x = copy.copy(x)
        x.resident_bytes = limit
    else:
        x = torch.as_tensor(x, dtype=torch.float32)
        key = cache_key(edge_index, n, x, k, alpha)
    final = cache_dir / f"prop-{key}.npy"
    info = stats if stats is not None else {}
    info.update(path=str(final), key=key, nodes=n, dim=d, k=k, alpha=alpha)
    if final.exists():
        from ..integrity import IntegrityError

        try:
            check_cache(final, n, d, key)
            info.update(cached=True, seconds=time.perf_counter() - t0)
            return MappedFeatures(final, num_nodes=n, field="propagated features")
        except IntegrityError as exc:
            log.warning("propagation cache damaged, recomputing it: %s", exc)

    path = csr_path(edge_index, undirected)
    c = plan_columns(n, num_edges, d, max_memory_mb, alpha, chunk_bytes, path)
    if col_chunk is not None:
        c = max(1, min(int(col_chunk), c))
    adj, dinv2 = target_csr(edge_index, n, undirected=undirected)
    dinv2 = dinv2.unsqueeze(1)
    # two (three) [N, c] buffers for the whole run: no allocator churn, so the budget is what is held
    bufs = [torch.empty(n * c) for _ in range(3 if alpha is not None else 2)]
    passes = 0
    with atomic_path(final) as tmp:
        try:
            out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(n, d))
            for c0 in range(0, d, c):
                c1 = min(c0 + c, d)
                z, nxt = (b[: n * (c1 - c0)].view(n, c1 - c0) for b in bufs[:2])
                for a in range(0, n, step):
                    rows = x.rows(a, min(a + step, n)) if is_mapped(x) else x[a:a + step]
                    z[a:a + rows.size(0)] = rows[:, c0:c1]
                    del rows
                x0 = bufs[2][: n * (c1 - c0)].view(n, c1 - c0).copy_(z) if alpha is not None else None
                for _ in range(k):
                    spmm_rows(adj, z, nxt, step)
                    nxt.addcmul_(dinv2, z)
                    if alpha is not None:
                        nxt.mul_(1.0 - alpha).add_(x0, alpha=alpha)
                    z, nxt = nxt, z
                block = z.numpy()
                for a in range(0, n, step):
                    out[a:a + step, c0:c1] = block[a:a + step]
                    _drop_pages(out)
                del z, nxt, x0, block
                passes += 1
            out.flush()
            del out
        finally:
            bufs.clear()  # the column buffers go now, also on an error
        digest = file_digest(tmp, chunk=4 << 20)
    atomic_write_text(_record_path(final), json.dumps({"format": "magkit.propagation_cache", "key": key,
                                                       "shape": [n, d], "dtype": "float32", "sha256": digest}))
    _VERIFIED[_file_id(final)] = digest
    COMPUTED["count"] += 1
    info.update(cached=False, seconds=time.perf_counter() - t0, col_block=c, passes=passes, chunk_rows=step,
                max_memory_mb=max_memory_mb, adjacency_mb=_adjacency_bytes(n, num_edges, path) / 2**20)
    log.info("propagated [%d, %d] (k=%d) in %d column blocks of %d in %.1f s -> %s", n, d, k, passes, c,
             info["seconds"], final)
    return MappedFeatures(final, num_nodes=n, field="propagated features")


def _drop_pages(arr: np.memmap) -> None:
    """Drop a writable shared mapping's pages from the resident set (dirty pages stay in the page cache and are
    written back by the kernel)."""
    import mmap

    mm = getattr(arr, "_mmap", None)
    if mm is not None and hasattr(mm, "madvise") and hasattr(mmap, "MADV_DONTNEED"):
        mm.madvise(mmap.MADV_DONTNEED)


def default_cache_dir(graph) -> Path:
    """Where a graph's propagated features are cached: ``$MAGKIT_CACHE/propagated``, else ``<mmap dir>/cache``
    for a graph opened from ``mmap:DIR`` (when writable), else ``~/.cache/magkit/propagated``."""
    env = os.environ.get("MAGKIT_CACHE")
    if env:
        return Path(env).expanduser() / "propagated"
    folder = graph.meta.get("mmap_dir") if isinstance(graph.meta, dict) else None
    if folder and os.access(folder, os.W_OK):
        return Path(folder) / "cache"
    return Path.home() / ".cache" / "magkit" / "propagated"
