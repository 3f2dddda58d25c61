"""magkit.functional.dropout and the reused output buffers behind it and behind the sparse products."""

from __future__ import annotations

import gc

import pytest
import torch

from magkit.functional import dropout, ops
from magkit.functional.ops import reused_buffer


def _reference_dropout(x: torch.Tensor, p: float) -> torch.Tensor:
    """The formula with a bool mask: the same draws (one random byte per element), x · keep · 256 / (256 − t)."""
    t = int(round(p * 256))
    n = x.numel()
    words = torch.randint(-(2**63), 2**63 - 1, ((n + 7) // 8,), dtype=torch.int64)
    keep = words.view(torch.uint8)[:n].view(x.shape) >= t
    return x * keep * (256.0 / (256 - t))


def _bits(t: torch.Tensor) -> torch.Tensor:
    return t.detach().contiguous().view(torch.int32)


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_dropout_is_the_bool_mask_formula_bitwise(p):
    x = torch.randn(97, 33)
    x[0, :5] = torch.tensor([float("inf"), float("nan"), -0.0, 0.0, -1.0])
    torch.manual_seed(3)
    ref, after_ref = _reference_dropout(x, p), torch.rand(2)
    torch.manual_seed(3)
    out, after_out = dropout(x, p), torch.rand(2)
    assert torch.equal(_bits(ref), _bits(out))  # NaN, inf and the sign of zeros included
    assert torch.equal(after_ref, after_out)  # the same random draws are consumed
    kept = (out != 0) & x.isfinite()
    assert 0.5 * (1 - p) < kept.float().mean() < 1.5 * (1 - p)
    # with a gradient: the same values and the same gradient
    xg, up = x.clone().requires_grad_(), torch.randn_like(x)
    torch.manual_seed(4)
    (ga,) = torch.autograd.grad(_reference_dropout(xg, p), xg, up)
    torch.manual_seed(4)
    (gb,) = torch.autograd.grad(dropout(xg, p), xg, up)
    assert torch.equal(_bits(ga), _bits(gb))


def test_dropout_off_and_edge_rates():
    x = torch.randn(10, 4)
    assert dropout(x, 0.5, training=False) is x
    assert dropout(x, 0.0) is x
    assert torch.equal(dropout(x, 1.0), torch.zeros_like(x))
    assert dropout(torch.ones(5, dtype=torch.long), 0.5).dtype == torch.float32
    xh = torch.randn(30, 7).half()
    torch.manual_seed(2)
    ref = _reference_dropout(xh, 0.1)
    torch.manual_seed(2)
    assert torch.equal(dropout(xh, 0.1), ref)  # half precision: the bool-mask formula itself


def test_dropout_reuses_its_output_only_once_nothing_holds_it():
    x = torch.randn(64, 16)
    a = dropout(x, 0.5)
    b = dropout(x, 0.5)  # a is still held: a fresh output
    assert a.data_ptr() != b.data_ptr() and not torch.equal(a, b)
    kept_b = b.clone()
    ptr = b.data_ptr()
    del a, b
    gc.collect()
    c = dropout(x, 0.5)
    assert c.data_ptr() == ptr  # the free buffer is handed out again
    assert not torch.equal(c, kept_b)  # with new draws written into it
    # an input that needs a gradient never shares its output
    xg = x.clone().requires_grad_()
    assert dropout(xg, 0.5).data_ptr() != dropout(xg, 0.5).data_ptr()


def test_dropout_output_kept_by_autograd_is_not_overwritten():
    """Two forward passes before one backward: the first pass's dropped input (saved for the weight gradient)
    must survive the second pass."""
    x = torch.randn(50, 12)
    w = torch.randn(3, 12, requires_grad=True)
    torch.manual_seed(0)
    d1 = dropout(x, 0.5)
    ref1 = d1.clone()
    y1 = d1 @ w.t()
    del d1  # only autograd holds it now
    d2 = dropout(x, 0.5)
    y2 = d2 @ w.t()
    ref2 = d2.clone()
    up = torch.randn(50, 3)
    (y1 * up).sum().add((y2 * up).sum()).backward()
    assert torch.allclose(w.grad, up.t() @ ref1 + up.t() @ ref2, atol=1e-5)


def test_reused_buffer_is_keyed_by_owner_shape_and_freed_with_its_owner():
    owner = torch.zeros(1)
    a = reused_buffer(owner, (4, 3), torch.float32, torch.device("cpu"))
    ptr = a.data_ptr()
    del a
    assert reused_buffer(owner, (4, 3), torch.float32, torch.device("cpu")).data_ptr() == ptr
    other = reused_buffer(owner, (3, 4), torch.float32, torch.device("cpu"))
    assert other.shape == (3, 4)
    key_id = id(owner)
    keys = [k for k in ops._buffers() if k[0] == key_id]
    assert len(keys) == 2
    del owner
    gc.collect()
    assert not [k for k in ops._buffers() if k[0] == key_id]  # freed with its owner
    assert all(ref() is not None for ref, _ in ops._buffers().values())
    assert len(ops._buffers()) <= ops._BUFFERS_MAX


def test_threads_never_share_a_buffer():
    import threading

    owner = torch.zeros(1)
    ptrs = []
    thread = threading.Thread(target=lambda: ptrs.append(reused_buffer(owner, (8,), torch.float32, "cpu").data_ptr()))
    mine = reused_buffer(owner, (8,), torch.float32, "cpu").data_ptr()
    thread.start()
    thread.join()
    assert ptrs and ptrs[0] != mine


def test_a_fit_releases_its_buffers():
    from magkit.data import load_dataset
    from magkit.methods import create

    graph = load_dataset("synthetic", num_nodes=200)
    x = torch.randn(10, 4)
    dropout(x, 0.5)
    assert len(ops._buffers()) >= 1
    create("gcn-early", epochs=2, hidden=8).fit(graph)
    assert len(ops._buffers()) == 0


def test_dropout_of_a_strided_input_keeps_its_layout_and_values():
    x = torch.randn(40, 24).t()
    torch.manual_seed(1)
    ref = _reference_dropout(x, 0.5)
    torch.manual_seed(1)
    out = dropout(x, 0.5)
    assert torch.equal(_bits(ref), _bits(out)) and out.stride() == ref.stride()


def test_a_detached_copy_or_numpy_view_of_an_output_keeps_its_values():
    x = torch.randn(300, 16)
    kept = dropout(x, 0.5, True).detach()
    snapshot = kept.clone()
    view = dropout(x, 0.5, True).numpy()
    view_snapshot = view.copy()
    for _ in range(3):
        dropout(x, 0.5, True)
    assert torch.equal(kept, snapshot) and (view == view_snapshot).all()


def test_a_call_under_inference_mode_does_not_poison_the_buffer():
    x = torch.randn(300, 16)
    with torch.inference_mode():
        dropout(x, 0.5, True)
    out = dropout(x, 0.5, True)  # a normal call after it writes a normal tensor
    assert not out.is_inference() and out.shape == x.shape
