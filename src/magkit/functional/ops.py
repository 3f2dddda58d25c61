"""Elementwise tensor operations used by the models: a fast inverted dropout."""

from __future__ import annotations

import sys
import threading
import weakref
from collections import OrderedDict

import torch
from torch import Tensor

_BUFFERS_MAX = 8
_LOCAL = threading.local()


def _buffers() -> OrderedDict:
    """This thread's (id(owner), shape, dtype, device) -> (weak reference to the owner, its buffer): one store per
    thread, so that two threads never receive the same buffer."""
    store = getattr(_LOCAL, "buffers", None)
    if store is None:
        store = _LOCAL.buffers = OrderedDict()
    return store


def _in_use(entry: tuple) -> bool:
    """Whether anything besides the cache ``entry`` holds its buffer: a Python reference (a caller kept an
    earlier output) or a C++ one (autograd saved it for a backward pass not run yet, a view of it)."""
    # Python references: the entry's own, the local name and getrefcount's argument
    buf = entry[1]
    if sys.getrefcount(buf) > 3 or not hasattr(buf, "_use_count") or buf.is_inference():
        return True
    if buf._use_count() > 1:
        return True
    # another tensor on the same storage (a detached copy, `.data`, a numpy view) keeps the values too; the
    # count includes the buffer itself and the storage object read here
    return torch._C._storage_Use_Count(buf.untyped_storage()._cdata) > 2


def _forget(store: OrderedDict, key: tuple, ref: weakref.ref) -> None:
    """Drop the entry of an owner that was freed (its buffer goes with it, unless something else holds it)."""
    hit = store.get(key)
    if hit is not None and hit[0] is ref:
        del store[key]


def reused_buffer(owner: object, shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> Tensor:
    """An uninitialised tensor of ``shape``, kept for ``owner`` (held weakly: freed with it) and handed out again by
    the next call with the same owner, shape, dtype and device once nothing else holds it (no Python reference, no
    autograd graph, no view); otherwise a fresh one, which replaces it. Each thread has its own buffers. A large
    tensor allocated anew in every epoch is page-faulted in every epoch (about 25k faults per 100 MB); reusing it
    skips that."""
    store = _buffers()
    key = (id(owner), tuple(shape), dtype, torch.device(device))
    hit = store.get(key)
    if hit is not None and hit[0]() is owner and not _in_use(hit):
        store.move_to_end(key)
        return hit[1]
    buf = torch.empty(shape, dtype=dtype, device=device)
    store[key] = (weakref.ref(owner, lambda ref: _forget(store, key, ref)), buf)
    while len(store) > _BUFFERS_MAX:
        store.popitem(last=False)
    return buf


def release_buffers() -> None:
    """Free this thread's reused buffers (:func:`reused_buffer`) now, instead of with their owners: a fit calls
    it when it returns, so that a dropout buffer kept for a graph's feature block does not outlive the fit."""
    _buffers().clear()


def dropout(x: Tensor, p: float, training: bool = True) -> Tensor:
    """Inverted dropout: y = x · m / (1 − p̂), m_ij ~ Bernoulli(1 − p̂) with p̂ = round(256 p) / 256.

    Same maths as ``torch.nn.functional.dropout`` up to the rounding of p to a multiple of 1/256 (the scale
    uses the rounded p̂, so E[y] = x exactly). On CPU, torch's dropout draws one 32-bit random number per
    element through Bernoulli sampling; this draws 8 random bytes per 64-bit word, one byte per element, turns
    them into the float mask m / (1 − p̂) and multiplies once (three vectorised passes; a bool mask would cost
    a slow bool-to-float conversion inside the product). For an ``x`` that needs no gradient (a feature matrix
    dropped every epoch) the output is written into a buffer kept for that ``x`` (held weakly) and reused by the
    next call whenever nothing else holds it any more: a fresh 100 MB output would be page-faulted in every
    epoch. Randomness comes from torch's global generator, so ``torch.manual_seed`` makes it reproducible.
    """
    if not training or p <= 0.0:
        return x
    if p >= 1.0:
        return x * 0.0
    threshold = int(round(p * 256))
    if threshold <= 0:
        return x
    if threshold >= 256:
        return x * 0.0
    n = x.numel()
    words = torch.randint(-(2**63), 2**63 - 1, ((n + 7) // 8,), dtype=torch.int64, device=x.device)
    draws = words.view(torch.uint8)[:n].view(x.shape)
    if x.dtype not in (torch.float32, torch.float64):  # the scale rounds to x's dtype in a float mask: keep it out
        return x * (draws >= threshold) * (256.0 / (256 - threshold))
    reuse = (not x.requires_grad and x.dim() > 0 and x.is_contiguous()
             and not torch.is_inference_mode_enabled())
    mask = reused_buffer(x, x.shape, x.dtype, x.device) if reuse else torch.empty(x.shape, dtype=x.dtype, device=x.device)
    torch.ge(draws, threshold, out=mask)  # 1.0 where kept, 0.0 where dropped
    mask.mul_(256.0 / (256 - threshold))
    if reuse:
        return mask.mul_(x)
    return x * mask
