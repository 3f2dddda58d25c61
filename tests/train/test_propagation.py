"""Normalised adjacency and cached propagation against dense reference computations (float64)."""

from __future__ import annotations

import warnings

import pytest
import torch

from magkit.data.graph import MultimodalGraph
from magkit.exceptions import ConfigError
from magkit.train import propagation
from magkit.train.propagation import (
    PropagationCache,
    clear_cache,
    graph_adjacency,
    normalized_adjacency,
    propagate,
    propagate_features,
    tensor_digest,
)

# 6 nodes: a triangle 0-1-2, a path 2-3-4, node 5 isolated
EDGES = [(0, 1), (1, 2), (0, 2), (2, 3), (3, 4)]
N = 6


@pytest.fixture(autouse=True)
def _fresh_cache():
    clear_cache()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # torch's "sparse CSR is beta" notices
        yield
    clear_cache()


def dense_a() -> torch.Tensor:
    a = torch.zeros(N, N, dtype=torch.float64)
    for u, v in EDGES:
        a[u, v] = a[v, u] = 1.0
    return a


def dense_norm(self_loops: bool = True) -> torch.Tensor:
    a = dense_a() + (torch.eye(N, dtype=torch.float64) if self_loops else 0.0)
    d = a.sum(1)
    dinv = torch.where(d > 0, d.pow(-0.5), torch.zeros_like(d))
    return dinv[:, None] * a * dinv[None, :]


@pytest.fixture
def graph() -> MultimodalGraph:
    ei = torch.tensor(EDGES).t()
    x = torch.arange(N * 3, dtype=torch.float32).view(N, 3) / 10
    return MultimodalGraph({"text": x}, ei, torch.tensor([0, 1, 0, 1, 0, 1]))


@pytest.fixture
def x() -> torch.Tensor:
    return torch.randn(N, 4, generator=torch.Generator().manual_seed(0))


def test_normalized_adjacency_equals_dense_formula(graph):
    adj = normalized_adjacency(graph.edge_index, N)
    assert adj.layout == torch.sparse_csr and adj.dtype == torch.float32
    dense = adj.to_dense().double()
    ref = dense_norm()
    torch.testing.assert_close(dense, ref, rtol=1e-6, atol=1e-7)
    # spot checks by hand: deg~ = (3, 3, 4, 3, 2, 1)
    assert dense[0, 1].item() == pytest.approx(1 / 3)
    assert dense[2, 3].item() == pytest.approx(1 / (4 * 3) ** 0.5)
    assert dense[4, 4].item() == pytest.approx(1 / 2)
    assert dense[5, 5].item() == pytest.approx(1.0)  # isolated node keeps itself
    assert torch.allclose(dense, dense.t())


def test_normalized_adjacency_without_self_loops(graph):
    dense = normalized_adjacency(graph.edge_index, N, self_loops=False).to_dense().double()
    torch.testing.assert_close(dense, dense_norm(self_loops=False), rtol=1e-6, atol=1e-7)
    assert dense[5].abs().sum() == 0


@pytest.mark.parametrize("k", [0, 1, 3])
def test_propagate_equals_dense_power(graph, x, k):
    ref = torch.linalg.matrix_power(dense_norm(), k) @ x.double()
    torch.testing.assert_close(propagate(graph, x, k).double(), ref, rtol=1e-5, atol=1e-6)


def test_propagation_smooths_towards_neighbours(graph):
    # a one-hot at node 0: after one step, mass at 0's closed neighbourhood {0, 1, 2} only
    e0 = torch.zeros(N, 1)
    e0[0] = 1.0
    z = propagate(graph, e0, 1)[:, 0]
    assert (z[:3] > 0).all() and (z[3:] == 0).all()


@pytest.mark.parametrize("alpha,k", [(0.1, 4), (0.5, 2), (1.0, 3)])
def test_appnp_form_equals_dense_recursion(graph, x, alpha, k):
    a = dense_norm()
    x64 = x.double()
    z = x64
    for _ in range(k):
        z = (1 - alpha) * a @ z + alpha * x64
    torch.testing.assert_close(propagate(graph, x, k, alpha=alpha).double(), z, rtol=1e-5, atol=1e-6)
    if alpha == 1.0:  # no propagation at all
        torch.testing.assert_close(propagate(graph, x, k, alpha=alpha), x)


def test_appnp_with_many_steps_approaches_personalised_pagerank(graph, x):
    alpha = 0.2
    closed = alpha * torch.linalg.inv(torch.eye(N, dtype=torch.float64) - (1 - alpha) * dense_norm()) @ x.double()
    torch.testing.assert_close(propagate(graph, x, 80, alpha=alpha).double(), closed, rtol=1e-4, atol=1e-5)


def test_cache_returns_the_identical_object_for_a_repeated_call(graph, x):
    a = propagate(graph, x, 2)
    assert propagate(graph, x, 2) is a
    assert propagate(graph, x.clone(), 2) is a  # keyed by content, not identity
    assert graph_adjacency(graph) is graph_adjacency(graph)


def test_cache_distinguishes_features_and_parameters(graph, x):
    a = propagate(graph, x, 2)
    x2 = x + 1.0
    b = propagate(graph, x2, 2)
    assert b is not a and not torch.allclose(a, b)
    torch.testing.assert_close(b.double(), torch.linalg.matrix_power(dense_norm(), 2) @ x2.double(), rtol=1e-5, atol=1e-6)
    assert not torch.allclose(propagate(graph, x, 3), a)
    assert not torch.allclose(propagate(graph, x, 2, alpha=0.3), a)
    assert propagate(graph, x, 2) is a  # the first entry is still there


def test_cache_distinguishes_structures(x):
    y = torch.zeros(N, dtype=torch.long)
    g1 = MultimodalGraph({"text": x}, torch.tensor(EDGES).t(), y)
    g2 = MultimodalGraph({"text": x}, torch.tensor(EDGES[:-1]).t(), y)  # drop edge 3-4
    a, b = propagate(g1, x, 1), propagate(g2, x, 1)
    assert not torch.allclose(a[3:5], b[3:5])
    torch.testing.assert_close(a[:2], b[:2])  # nodes 0, 1 do not see the change in one step


def test_cache_is_bounded_and_lru(graph, x):
    first = propagate(graph, x, 1)
    for i in range(propagation.DEFAULT_CACHE.max_entries + 5):
        propagate(graph, x + (i + 1), 1)
    assert len(propagation.DEFAULT_CACHE) <= propagation.DEFAULT_CACHE.max_entries
    assert propagate(graph, x, 1) is not first  # evicted, recomputed
    torch.testing.assert_close(propagate(graph, x, 1), first)


def test_clear_cache(graph, x):
    a = propagate(graph, x, 2)
    clear_cache()
    assert len(propagation.DEFAULT_CACHE) == 0
    assert propagate(graph, x, 2) is not a


def test_caller_owned_cache_is_used_instead_of_the_default(graph, x):
    own = PropagationCache(max_entries=4)
    a = propagate_features(graph, x, 2, cache=own)
    assert len(own) == 2 and len(propagation.DEFAULT_CACHE) == 0  # Â and Â^2 X, both in the caller's cache
    assert propagate_features(graph, x, 2, cache=own) is a
    assert torch.equal(propagate(graph, x, 2), a)  # the default cache computes the same bits
    none = PropagationCache(max_entries=0)
    b = propagate_features(graph, x, 2, cache=none)
    assert len(none) == 0 and b is not a and torch.equal(b, a)


def test_propagate_features_checks_where_and_cache_size(graph, x):
    with pytest.raises(ConfigError, match=r"where: 'gpu'; allowed: auto, memory, disk"):
        propagate_features(graph, x, 1, where="gpu")
    with pytest.raises(ConfigError, match=r"max_entries: -1; allowed: an integer >= 0"):
        PropagationCache(-1)


def test_tensor_digest_depends_on_content_shape_and_dtype():
    t = torch.arange(6, dtype=torch.float32)
    assert tensor_digest(t) == tensor_digest(t.clone())
    assert tensor_digest(t) != tensor_digest(t + 1)
    assert tensor_digest(t) != tensor_digest(t.view(2, 3))
    assert tensor_digest(t) != tensor_digest(t.double())


def test_building_an_adjacency_does_not_print_torch_beta_notice():
    """torch's once-per-process 'Sparse CSR tensor support is in beta' UserWarning is filtered by magkit: in a fresh
    interpreter where UserWarnings are errors, building Â must not raise."""
    import subprocess
    import sys

    code = ("import torch; from magkit.train.propagation import normalized_adjacency; "
            "a = normalized_adjacency(torch.tensor([[0, 1], [1, 0]]), 2); print(a.layout)")
    res = subprocess.run([sys.executable, "-W", "error::UserWarning", "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "sparse_csr" in res.stdout
    assert "beta" not in res.stderr


def _random_graph(n=300, e=2000, seed=0):
    g = torch.Generator().manual_seed(seed)
    ei = torch.randint(0, n, (2, e), generator=g)
    ei = ei[:, ei[0] != ei[1]]
    return torch.cat([ei, ei.flip(0)], 1), n


@pytest.mark.parametrize("kind", ["norm", "mean", "directed"])
def test_spmm_equals_the_sparse_product_bitwise_and_reuses_the_transpose(kind, monkeypatch):
    """spmm's output and gradient are bitwise those of adj @ x (symmetric Â, row-normalised D^-1 A, and a
    directed graph's mean adjacency, whose transpose differs), and the CSR transpose is built once per adjacency."""
    from magkit.train.propagation import mean_adjacency, spmm

    ei, n = _random_graph()
    if kind == "directed":
        ei = ei[:, : ei.shape[1] // 2]
    adj = normalized_adjacency(ei, n) if kind == "norm" else mean_adjacency(ei, n)
    x0 = torch.randn(n, 24, generator=torch.Generator().manual_seed(1))
    up = torch.randn(n, 24, generator=torch.Generator().manual_seed(2))
    a, b = x0.clone().requires_grad_(), x0.clone().requires_grad_()
    ya, yb = adj @ a, spmm(adj, b)
    ya.backward(up)
    yb.backward(up)
    assert torch.equal(ya, yb)
    assert torch.equal(a.grad, b.grad)
    assert torch.allclose(b.grad, adj.to_dense().t() @ up, atol=1e-5)
    built = []
    real = torch.Tensor.to_sparse_csr
    monkeypatch.setattr(torch.Tensor, "to_sparse_csr", lambda self, *k, **kw: built.append(1) or real(self, *k, **kw))
    for _ in range(3):
        b.grad = None
        spmm(adj, b).backward(up)
        assert torch.equal(a.grad, b.grad)
    assert built == []  # the transpose made by the first backward is reused
    with torch.no_grad():
        assert torch.equal(spmm(adj, x0), adj @ x0)


@pytest.mark.parametrize("name", ["gcn", "sage", "appnp"])
def test_backbones_use_spmm_with_pyg_outputs_and_gradients(name, monkeypatch):
    """GCN, GraphSAGE and APPNP on a precomputed sparse adjacency compute PyG's layers through spmm: outputs and all
    gradients bitwise equal to PyG's own forward, training mode (dropout) included."""
    import copy

    from magkit.models import backbones
    from magkit.models.backbones import build_backbone
    from magkit.train.propagation import mean_adjacency, spmm

    ei, n = _random_graph(seed=3)
    adj = mean_adjacency(ei, n) if name == "sage" else normalized_adjacency(ei, n)
    torch.manual_seed(0)
    net = build_backbone(name, 16, 32, 5, dropout=0.3)
    ref = copy.deepcopy(net)
    if name == "appnp":
        def ref_forward(x, _adj):
            return ref.prop(ref.mlp(x), _adj)
    else:
        ref._plain = lambda conv, a: False
        ref_forward = ref
    calls = []
    monkeypatch.setattr(backbones, "spmm", lambda a, x: calls.append(1) or spmm(a, x))
    x = torch.randn(n, 16)
    for train in (True, False):
        net.train(train)
        ref.train(train)
        xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
        torch.manual_seed(7)
        oa = net(xa, adj)
        torch.manual_seed(7)
        ob = ref_forward(xb, adj)
        up = torch.randn_like(oa)
        oa.backward(up)
        ob.backward(up)
        assert torch.equal(oa, ob)
        assert torch.equal(xa.grad, xb.grad)
        for p, q in zip(net.parameters(), ref.parameters()):
            assert torch.equal(p.grad, q.grad)
    assert len(calls) == {"gcn": 2, "sage": 2, "appnp": 10}[name] * 2


@pytest.mark.parametrize("width", [1, 7, 64])
def test_csr_product_written_into_its_output_is_bitwise_the_sparse_product(width):
    from magkit.train.propagation import _csr_mm, mean_adjacency

    ei, n = _random_graph()
    for adj in (normalized_adjacency(ei, n), mean_adjacency(ei, n)):
        x = torch.randn(n, width, generator=torch.Generator().manual_seed(width))
        assert torch.equal(_csr_mm(adj, x), adj @ x)
        assert torch.equal(_csr_mm(adj, x, reuse=True), adj @ x)
        xt = torch.randn(width, n).t()  # not contiguous: the plain product
        assert torch.equal(_csr_mm(adj, xt), adj @ xt)


def test_spmm_of_a_constant_input_reuses_a_large_output_only_when_free(monkeypatch):
    from magkit.train.propagation import spmm

    monkeypatch.setattr(propagation, "REUSE_MIN_NUMEL", 1)
    ei, n = _random_graph()
    adj = normalized_adjacency(ei, n)
    x = torch.randn(n, 8, generator=torch.Generator().manual_seed(0))
    a = spmm(adj, x)
    b = spmm(adj, a)  # a is held (and read): b gets its own output
    assert a.data_ptr() != b.data_ptr()
    assert torch.equal(a, adj @ x) and torch.equal(b, adj @ (adj @ x))
    ptr = b.data_ptr()
    del a, b
    c = spmm(adj, x)
    assert c.data_ptr() == ptr and torch.equal(c, adj @ x)
    del c
    with torch.no_grad():  # evaluation passes keep nothing
        assert spmm(adj, x).data_ptr() != ptr
    # the output saved by the next layer for its backward is not handed out again
    w = torch.randn(8, 3, requires_grad=True)
    y1 = spmm(adj, x) @ w
    y2 = spmm(adj, 2 * x) @ w
    (y1.sum() + y2.sum()).backward()
    assert torch.allclose(w.grad, (adj @ x + adj @ (2 * x)).sum(0, keepdim=True).t().expand(8, 3), atol=1e-4)
