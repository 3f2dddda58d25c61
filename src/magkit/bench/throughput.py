"""How close the engine runs to the machine's limit: a GCN training step's achieved FLOP rate against a
dense matmul of the same size measured in the same run.

FLOPs of one 2-layer GCN training step (forward + backward) on n nodes, nnz entries of Â, widths
d_in -> h -> C: per layer l with widths (a, b): forward X W (2 n a b) and Â (XW) (2 nnz b); backward
Â^T G (2 nnz b), ∂W = Xᵀ G' (2 n a b) and, except for the first layer, ∂X = G' Wᵀ (2 n a b).
"""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F

from ..models.backbones import GNN
from ..train.propagation import graph_adjacency


def _best_time(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def gcn_throughput(graph, hidden: int = 128, repeats: int = 10) -> dict[str, float]:
    """Measure a GCN (early fusion input width) training step and a dense matmul of the same size."""
    torch.manual_seed(0)
    x = graph.fused()
    n, d_in = x.shape
    c = graph.num_classes
    adj = graph_adjacency(graph)
    nnz = adj._nnz()
    model = GNN("gcn", d_in, hidden, c, num_layers=2, dropout=0.0)
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    y = graph.y.clamp(min=0)

    def step():
        opt.zero_grad()
        loss = F.cross_entropy(model(x, adj), y)
        loss.backward()
        opt.step()

    t_step = _best_time(step, repeats)
    widths = [(d_in, hidden), (hidden, c)]
    flops = 0
    for i, (a, b) in enumerate(widths):
        flops += 2 * n * a * b + 2 * nnz * b  # forward
        flops += 2 * nnz * b + 2 * n * a * b + (2 * n * a * b if i > 0 else 0)  # backward
    w = torch.randn(d_in, hidden)
    t_mm = _best_time(lambda: x @ w, repeats)
    mm_flops = 2 * n * d_in * hidden
    achieved = flops / t_step / 1e9
    peak = mm_flops / t_mm / 1e9
    return {
        "nodes": n, "nnz": nnz, "d_in": d_in, "hidden": hidden, "classes": c,
        "step_time_ms": 1000 * t_step, "step_gflop": flops / 1e9, "achieved_gflops": achieved,
        "dense_matmul_ms": 1000 * t_mm, "dense_matmul_gflops": peak, "ratio_to_dense": achieved / peak,
        "threads": torch.get_num_threads(),
    }
