"""Feature blocks that stay on disk: a memory-mapped ``.npy`` block read as float32 in chunks
(:class:`MappedFeatures`), and the checks of a ``.npy`` header against its file (:func:`npy_header`).

Resident memory. Pages a read touches join the process's RSS as *file-backed* pages: clean page cache that
the kernel can drop at any time, never anonymous memory. A block keeps them to about ``resident_bytes`` by
dropping them from the process (``madvise(MADV_DONTNEED)``; they stay in the page cache, so a later read costs
a minor fault, not a disk read). Row and column ranges (validation, hashing, propagation) release the mapping
after reads worth ``resident_bytes``. A scattered row gather (a mini-batch) reads its rows in file order,
window by window (``resident_bytes`` of the file each), and drops each window's pages once its rows are
copied: the kernel maps a whole page, or a larger folio, around every touched row, so a gather of tens of
thousands of random rows would otherwise map most of a file of a few hundred MB. On a file already in the
page cache the refaults are cheap: 39k random rows of 256 bytes took 13.5 ms windowed against 4.5 ms with
every page already mapped, a few percent of a training step. Copies and masked views share one mapping.
"""

from __future__ import annotations

import copy
import hashlib
import logging
import math
import mmap
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..exceptions import DatasetError
from .graph import one_line

log = logging.getLogger(__name__)

DEFAULT_CHUNK_BYTES = 32 << 20
DEFAULT_RESIDENT_BYTES = 32 << 20


def is_mapped(x: Any) -> bool:
    """Whether ``x`` is a lazy, disk-backed feature block (a :class:`MappedFeatures`)."""
    return isinstance(x, MappedFeatures)


class MappedFeatures:
    """A read-only ``[N, d]`` feature block memory-mapped from a ``.npy`` file; every read is float32.

    Args:
        path: the ``.npy`` file (any float or integer dtype; never unpickled).
        present: optional bool ``[N]``: rows where it is false read as zeros (an absent modality).
        num_nodes: expected row count (``None``: any). A mismatch raises :class:`DatasetError`.
        field: what the block is, for error messages.
        chunk_bytes: the most bytes of the stored dtype one read step holds before the cast.
        resident_bytes: about the most bytes of the file's pages kept mapped: the window of a scattered
            gather, and the reads after which a range read drops the mapping's pages (default 32 MiB).

    It answers ``shape``, ``size()``, ``dim()``, ``dtype`` (float32: what reads return), ``len()``,
    ``is_floating_point()``; ``storage_dtype`` is the dtype on disk.
    """

    is_mapped_block = True

    def __init__(self, path: str | os.PathLike, *, present: Tensor | None = None, num_nodes: int | None = None,
                 field: str = "features", chunk_bytes: int = DEFAULT_CHUNK_BYTES,
                 resident_bytes: int = DEFAULT_RESIDENT_BYTES):
        self.path = Path(path)
        self.field = field
        self.chunk_bytes = int(chunk_bytes)
        self.resident_bytes = int(resident_bytes)
        self._open(num_nodes)
        if present is not None:
            present = torch.as_tensor(present, dtype=torch.bool)
            if tuple(present.shape) != (self._n,):
                raise DatasetError(f"{field}: presence mask has shape {tuple(present.shape)}; expected [{self._n}]")
        self.present = present
        self._touched = 0
        self._digest: tuple[tuple, str] | None = None
        self._finite: tuple[tuple, tuple[str, str] | None] | None = None

    # ------------------------------------------------------------------ opening
    def _open(self, num_nodes: int | None) -> None:
        path, field = self.path, self.field
        if not path.is_file():
            shape = f"[{num_nodes}, d]" if num_nodes is not None else "[N, d]"
            raise DatasetError(f"{field}: {path} does not exist; expected a {shape} .npy feature block")
        npy_header(path, field)
        try:
            arr = np.load(path, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError, EOFError) as exc:
            raise DatasetError(f"{field}: {path} is not a readable .npy array ({one_line(exc)})") from exc
        if not isinstance(arr, np.ndarray):
            raise DatasetError(f"{field}: {path} holds {type(arr).__name__}; expected one .npy array")
        expected = f"[{num_nodes if num_nodes is not None else 'N'}, d]"
        if arr.ndim != 2:
            raise DatasetError(f"{field}: {path} has shape {tuple(arr.shape)}; expected {expected}")
        if num_nodes is not None and arr.shape[0] != num_nodes:
            raise DatasetError(f"{field}: {path} has shape {tuple(arr.shape)}; expected {expected} (one row per node)")
        if arr.dtype.kind not in "fiu" or arr.dtype.hasobject:
            raise DatasetError(f"{field}: {path} has dtype {arr.dtype}; expected a float or integer dtype")
        if arr.size == 0:
            raise DatasetError(f"{field}: {path} has shape {tuple(arr.shape)}; expected {expected} with d >= 1")
        self._mm = arr  # the np.memmap: keeps the mapping (and its mmap object) alive
        self._arr = arr.view(np.ndarray)  # plain view: np.take on it is ~4x faster than memmap indexing
        self._n, self._d = (int(s) for s in arr.shape)
        self.storage_dtype = arr.dtype
        st = path.stat()
        self._stamp = (st.st_size, st.st_mtime_ns)

    # ------------------------------------------------------------------ tensor-like facts
    @property
    def shape(self) -> torch.Size:
        return torch.Size((self._n, self._d))

    @property
    def dtype(self) -> torch.dtype:
        return torch.float32

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    @property
    def ndim(self) -> int:
        return 2

    def dim(self) -> int:
        return 2

    def size(self, dim: int | None = None):
        return self.shape if dim is None else self.shape[dim]

    def numel(self) -> int:
        return self._n * self._d

    def __len__(self) -> int:
        return self._n

    def is_floating_point(self) -> bool:
        return True

    @property
    def nbytes_on_disk(self) -> int:
        return self._n * self._d * self.storage_dtype.itemsize

    def _rows_per_chunk(self, itemsize: int | None = None) -> int:
        return max(1, self.chunk_bytes // max(1, self._d * (itemsize or self.storage_dtype.itemsize)))

    def __repr__(self) -> str:
        mask = ", masked" if self.present is not None else ""
        return f"MappedFeatures([{self._n}, {self._d}], {self.storage_dtype} on disk{mask}: {self.path})"

    # ------------------------------------------------------------------ reads
    def _account(self, rows: int, scattered: bool = False) -> None:
        """Count the bytes of pages a read may have mapped (a row range: its bytes; scattered rows: at least a
        page each); release them once past ``resident_bytes``."""
        row_bytes = self._d * self.storage_dtype.itemsize
        self._touched += rows * max(row_bytes, mmap.PAGESIZE) if scattered else rows * row_bytes + mmap.PAGESIZE
        if self._touched >= self.resident_bytes:
            self.release()

    def release(self) -> None:
        """Drop this mapping's pages from the process's resident set (they stay in the page cache)."""
        self._touched = 0
        mm = getattr(self._mm, "_mmap", None)
        if mm is not None and hasattr(mm, "madvise") and hasattr(mmap, "MADV_DONTNEED"):
            mm.madvise(mmap.MADV_DONTNEED)

    def _mask_rows(self, out: Tensor, idx: Tensor | None, start: int = 0) -> Tensor:
        if self.present is not None:
            keep = self.present[start:start + out.size(0)] if idx is None else self.present[idx]
            out[~keep] = 0.0
        return out

    def rows(self, start: int, stop: int) -> Tensor:
        """Rows ``start:stop`` as a float32 tensor (read and cast chunk by chunk)."""
        start, stop, _ = slice(start, stop).indices(self._n)
        stop = max(stop, start)
        out = torch.empty(stop - start, self._d, dtype=torch.float32)
        step = self._rows_per_chunk()
        for a in range(start, stop, step):
            b = min(a + step, stop)
            out[a - start:b - start].copy_(torch.from_numpy(native_order(np.array(self._arr[a:b]))))
            self._account(b - a)
        return self._mask_rows(out, None, start)

    def gather(self, index) -> Tensor:
        """Rows ``index`` (int64 tensor, array or list; any order, repeats allowed) as float32 ``[len, d]``.

        The rows are read in file order, window by window (``resident_bytes`` of the file each); a block whose
        file spans several windows drops each window's pages once its rows are copied, so the mapped pages stay
        at about one window whatever the number of rows gathered."""
        idx = torch.as_tensor(index, dtype=torch.long).reshape(-1)
        if idx.numel() and (int(idx.min()) < -self._n or int(idx.max()) >= self._n):
            raise IndexError(f"{self.field}: row index out of range for {self._n} rows")
        idx = torch.where(idx < 0, idx + self._n, idx)
        out = torch.empty(idx.numel(), self._d, dtype=torch.float32)
        if idx.numel() == 0:
            return out
        order = torch.argsort(idx, stable=True)
        rows = idx[order].numpy()
        row_bytes = self._d * self.storage_dtype.itemsize
        per_window = max(1, self.resident_bytes // row_bytes)
        windowed = self._n > per_window
        window = rows // per_window
        cuts = np.flatnonzero(window[1:] != window[:-1]) + 1
        step = self._rows_per_chunk()
        for a, b in zip(np.concatenate([[0], cuts]).tolist(), np.concatenate([cuts, [rows.size]]).tolist()):
            for c in range(a, b, step):
                e = min(c + step, b)
                part = torch.from_numpy(native_order(np.take(self._arr, rows[c:e], axis=0)))
                out.index_copy_(0, order[c:e], part.to(torch.float32))
            if windowed:
                self._release_rows(int(window[a]) * per_window, min((int(window[a]) + 1) * per_window, self._n))
            else:
                self._account(b - a, scattered=True)
        return self._mask_rows(out, idx)

    def _release_rows(self, start: int, stop: int) -> None:
        """Drop the pages of rows ``start:stop`` from the process's resident set (they stay in the page cache)."""
        mm = getattr(self._mm, "_mmap", None)
        if mm is None or not hasattr(mm, "madvise") or not hasattr(mmap, "MADV_DONTNEED"):
            return
        shift = int(self._mm.offset) % mmap.ALLOCATIONGRANULARITY  # numpy maps from an aligned offset
        row_bytes = self._d * self.storage_dtype.itemsize
        lo = (shift + start * row_bytes) // mmap.PAGESIZE * mmap.PAGESIZE
        hi = min(shift + stop * row_bytes, len(mm))
        if hi > lo:
            mm.madvise(mmap.MADV_DONTNEED, lo, hi - lo)

    def __getitem__(self, index) -> Tensor:
        if isinstance(index, tuple):
            if len(index) == 2 and isinstance(index[0], slice) and index[0] == slice(None):
                cols = range(self._d)[index[1]] if isinstance(index[1], slice) else None
                if cols is not None and cols.step == 1:
                    return self.columns(cols.start, cols.stop)
            return self[index[0]][(slice(None),) + tuple(index[1:])]
        if isinstance(index, slice):
            if index.step in (None, 1):
                return self.rows(*index.indices(self._n)[:2])
            return self.gather(torch.arange(self._n)[index])
        if isinstance(index, (int, np.integer)):
            return self.gather([int(index)])[0]
        idx = torch.as_tensor(index)
        if idx.dtype == torch.bool:
            if tuple(idx.shape) != (self._n,):
                raise IndexError(f"{self.field}: boolean index of shape {tuple(idx.shape)}; expected [{self._n}]")
            idx = idx.nonzero(as_tuple=True)[0]
        return self.gather(idx)

    def iter_rows(self, chunk_rows: int | None = None) -> Iterator[tuple[int, Tensor]]:
        """``(start, float32 rows)`` over the whole block, ``chunk_rows`` rows at a time."""
        step = int(chunk_rows) if chunk_rows else self._rows_per_chunk(self.storage_dtype.itemsize + 4)
        for a in range(0, self._n, step):
            yield a, self.rows(a, min(a + step, self._n))

    def columns(self, start: int, stop: int, chunk_rows: int | None = None) -> Tensor:
        """Columns ``start:stop`` of every row as a float32 ``[N, stop - start]`` tensor; rows are read chunk by
        chunk, so the memory held is the result plus one chunk."""
        start, stop, _ = slice(start, stop).indices(self._d)
        out = torch.empty(self._n, max(stop - start, 0), dtype=torch.float32)
        for a, block in self.iter_rows(chunk_rows):
            out[a:a + block.size(0)] = block[:, start:stop]
        self.release()  # a whole pass: its pages are not needed again soon
        return out

    def materialize(self) -> Tensor:
        """The whole block as one float32 tensor (reads everything: ``N * d * 4`` bytes)."""
        out = self.rows(0, self._n)
        self.release()
        return out

    # ------------------------------------------------------------------ tensor-API shims
    def to(self, *args, **kwargs) -> MappedFeatures | Tensor:
        """Stays a host-side lazy block for any device (gathered rows are moved by the caller); a dtype other
        than float32 materialises the block."""
        dtypes = [a for a in args if isinstance(a, torch.dtype)] + ([kwargs["dtype"]] if "dtype" in kwargs else [])
        if dtypes and dtypes[0] != torch.float32:
            return self.materialize().to(dtypes[0])
        return self

    def cpu(self) -> MappedFeatures:
        return self

    def detach(self) -> MappedFeatures:
        return self

    def masked(self, present: Tensor | None) -> MappedFeatures:
        """The same file with rows where ``present`` is false reading as zeros."""
        other = copy.copy(self)
        other.present = None if present is None else torch.as_tensor(present, dtype=torch.bool).clone()
        other._touched = 0
        other._digest = None
        other._finite = None
        return other

    # ------------------------------------------------------------------ checks and identity
    def _stamp_now(self) -> tuple:
        st = self.path.stat()
        return (st.st_size, st.st_mtime_ns)

    def digest(self) -> str:
        """A content hash of the stored bytes, dtype, shape and presence mask (cached while the file's size
        and mtime are unchanged)."""
        stamp = self._stamp_now()
        if self._digest is not None and self._digest[0] == stamp:
            return self._digest[1]
        h = hashlib.blake2b(digest_size=16)
        h.update(f"{self.shape}{self.storage_dtype.str}".encode())
        step = self._rows_per_chunk()
        for a in range(0, self._n, step):
            h.update(memoryview(np.ascontiguousarray(self._arr[a:a + step])).cast("B"))
            self._account(min(step, self._n - a))
        if self.present is not None:
            h.update(b"present")
            h.update(self.present.numpy().tobytes())
        self.release()
        self._digest = (stamp, h.hexdigest())
        return self._digest[1]

    def update_hash(self, h) -> None:
        """Feed the float32 bytes of every row, in order, to ``h`` (same bytes as the materialised tensor's)."""
        for _, block in self.iter_rows():
            h.update(block.numpy().tobytes())
        self.release()

    def nonfinite_problem(self) -> tuple[str, str] | None:
        """``(message, rows)`` when the block holds NaN/Inf after the float32 cast, else ``None`` (chunked,
        cached while the file is unchanged)."""
        stamp = self._stamp_now()
        if self._finite is not None and self._finite[0] == stamp:
            return self._finite[1]
        bad_values, bad_rows, first = 0, 0, []
        for a, block in self.iter_rows():
            bad = ~torch.isfinite(block)
            if bool(bad.any()):
                rows = bad.any(dim=1).nonzero(as_tuple=True)[0] + a
                bad_values += int(bad.sum())
                bad_rows += rows.numel()
                first += rows[: max(0, 5 - len(first))].tolist()
        self.release()
        problem = None
        if bad_values:
            more = ", ..." if bad_rows > len(first) else ""
            problem = (f"{bad_values} NaN/Inf value(s) in {bad_rows} row(s)",
                       f"rows [{', '.join(str(r) for r in first)}{more}]")
        self._finite = (stamp, problem)
        return problem

    # ------------------------------------------------------------------ copies and pickling
    def __getstate__(self) -> dict:
        state = {k: v for k, v in self.__dict__.items() if k not in ("_mm", "_arr")}
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._open(self._n)

    def __copy__(self) -> MappedFeatures:
        # share the mapping (copy.copy would otherwise go through __getstate__ and map the file again, and two
        # mappings of one file count its pages twice in the resident set)
        other = MappedFeatures.__new__(MappedFeatures)
        other.__dict__.update(self.__dict__)
        return other

    def __deepcopy__(self, memo) -> MappedFeatures:
        other = self.__copy__()  # the file is read-only: the copy maps the same pages
        other.present = None if self.present is None else self.present.clone()
        return other


def native_order(arr: np.ndarray) -> np.ndarray:
    """``arr`` in the machine's byte order (``.npy`` files may store big-endian values)."""
    return arr if arr.dtype.isnative else arr.astype(arr.dtype.newbyteorder("="))


def npy_header(path: Path, what: str) -> tuple[tuple[int, ...], np.dtype, int]:
    """``(shape, dtype, data offset)`` of a ``.npy`` file, checked against its size before anything is read.

    Raises:
        DatasetError: not a ``.npy`` file, a damaged header, an object dtype, or a shape whose bytes differ from
            what the file holds (truncated, or with trailing bytes).
    """
    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            version = np.lib.format.read_magic(fh)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(fh, max_header_size=1 << 16)
            elif version in ((2, 0), (3, 0)):
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(fh, max_header_size=1 << 16)
            else:
                raise ValueError(f"unsupported .npy version {version}")
            offset = fh.tell()
    except Exception as exc:  # noqa: BLE001 - numpy's header parser can fail anywhere (tokenize, literal_eval)
        detail = (str(exc).splitlines() or [type(exc).__name__])[0][:200]
        raise DatasetError(f"{what}: {path} is not a readable .npy array ({detail})") from None
    if dtype.hasobject:
        raise DatasetError(f"{what}: {path} is not a readable .npy array: dtype {dtype} holds Python objects "
                           "(never unpickled); expected a numeric dtype")
    if any((not isinstance(s, int)) or s < 0 for s in shape):
        raise DatasetError(f"{what}: {path} has shape {shape}; expected non-negative dimensions")
    want = math.prod(shape) * dtype.itemsize
    if offset + want != size:
        state = "truncated" if offset + want > size else "longer than its header says"
        raise DatasetError(
            f"{what}: {path} is {state}: shape {tuple(shape)} of {dtype} needs {want} data bytes after the "
            f"{offset}-byte header, the file holds {size - offset}"
        )
    return tuple(shape), dtype, offset


def model_rows(x: Tensor | MappedFeatures, present: Tensor, lazy: bool) -> Tensor | MappedFeatures:
    """A modality block as models read it: rows of absent nodes zeroed.

    In-RAM tensors: ``x * present`` (as before). Mapped blocks: a lazy masked view when ``lazy`` (mini-batch
    training reads only sampled rows), else the block read into memory once.
    """
    if is_mapped(x):
        if lazy:
            return x.masked(present)
        x = x.materialize()
    return x * present.unsqueeze(1).to(torch.float32)


# ---------------------------------------------------------------------- the mmap:DIR layout
