"""The pairwise structure generator of GCond (Jin et al., ICLR 2022, "Graph Condensation for Graph Neural
Networks"): the synthetic adjacency as a function of the synthetic features."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def glorot(out_dim: int, in_dim: int, generator: torch.Generator) -> Tensor:
    """A ``[out_dim, in_dim]`` matrix drawn from U(-a, a), a = √(6 / (in_dim + out_dim)) (Glorot & Bengio, 2010).

    Drawn on ``generator``'s device, then placed on the default device (``with torch.device(...)``), so a
    seeded generator gives the same matrix on every device."""
    a = math.sqrt(6.0 / (in_dim + out_dim))
    w = (torch.rand(out_dim, in_dim, generator=generator, device=generator.device) * 2 - 1) * a
    return w.to(torch.get_default_device())


class PGE(nn.Module):
    r"""The structure generator A' = PGE_Φ(X') of GCond.

    .. math::
        S_{ij} = \mathrm{MLP}_\Phi([x_i \,\|\, x_j]), \qquad
        A'_{ij} = \sigma\bigl((S_{ij} + S_{ji}) / 2\bigr) \;(i \ne j), \qquad A'_{ii} = 0

    The MLP has two hidden layers of width ``hidden`` with ReLU, each standardised over the n² pairs
    (batch normalisation without running statistics, so A' is a deterministic function of X'). The first
    layer is split, W [x_i ‖ x_j] = W_a x_i + W_b x_j, so the n² pair inputs are never built.

    Args:
        in_dim (int): width of a synthetic node's features.
        hidden (int, optional): width of the hidden layers. (default: :obj:`128`)
        init_bias (float, optional): initial output bias; -5 starts A' near 0.007 everywhere (an almost
            empty graph), 0 at 0.5. (default: :obj:`0.0`)
        generator (torch.Generator, optional): the generator of the initial weights (Glorot uniform,
            drawn in the order W_a, W_b, W_2, w_3). (default: :obj:`None`, a fresh unseeded one)
        lean_backward (bool, optional): on the CPU, differentiate the pair layers with a hand-written backward
            that runs autograd's kernels with fewer n²-sized buffers: first-order gradients bit-for-bit those
            of autograd; higher-order ones (``create_graph``) equal up to float rounding. ``False``: plain
            autograd. (default: :obj:`True`)

    Shapes:
        - **input:** synthetic features ``[n, in_dim]``
        - **output:** dense adjacency ``[n, n]``, symmetric, in (0, 1) off the diagonal, zero diagonal
    """

    def __init__(self, in_dim: int, hidden: int = 128, init_bias: float = 0.0, *,
                 generator: torch.Generator | None = None, lean_backward: bool = True):
        super().__init__()
        self.in_dim, self.hidden, self.init_bias = in_dim, hidden, init_bias
        self.lean_backward = lean_backward
        self.wa = nn.Parameter(torch.empty(hidden, in_dim))
        self.wb = nn.Parameter(torch.empty(hidden, in_dim))
        self.b1 = nn.Parameter(torch.empty(hidden))
        self.w2 = nn.Parameter(torch.empty(hidden, hidden))
        self.b2 = nn.Parameter(torch.empty(hidden))
        self.g1 = nn.Parameter(torch.empty(hidden))
        self.g2 = nn.Parameter(torch.empty(hidden))
        self.w3 = nn.Parameter(torch.empty(1, hidden))
        self.b3 = nn.Parameter(torch.empty(1))
        self.reset_parameters(generator)

    @torch.no_grad()
    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        gen = generator if generator is not None else torch.Generator()
        for w in (self.wa, self.wb, self.w2, self.w3):
            w.copy_(glorot(w.size(0), w.size(1), gen))
        for b in (self.b1, self.b2):
            b.zero_()
        for g in (self.g1, self.g2):
            g.fill_(1.0)
        self.b3.fill_(float(self.init_bias))

    @staticmethod
    def _standardize(h: Tensor, gamma: Tensor) -> Tensor:
        return F.batch_norm(h, None, None, gamma, None, training=True, eps=_EPS)

    def forward(self, x: Tensor) -> Tensor:
        n = x.size(0)
        h = (x @ self.wa.T)[:, None, :] + (x @ self.wb.T)[None, :, :] + self.b1
        h = h.reshape(n * n, -1)
        if self.lean_backward and h.device.type == "cpu":  # the kernels of _trunk, a leaner backward
            t = _PairTrunk.apply(h, self.g1, self.w2, self.b2, self.g2, self.w3)
        else:
            t = self._trunk(h, self.g1, self.w2, self.b2, self.g2, self.w3)
        s = (t + self.b3).reshape(n, n)
        a = torch.sigmoid((s + s.T) / 2)
        return a * (1 - torch.eye(n, device=x.device))

    @classmethod
    def _trunk(cls, h: Tensor, g1: Tensor, w2: Tensor, b2: Tensor, g2: Tensor, w3: Tensor) -> Tensor:
        """The layers over the n² pairs, ``[n², hidden]`` → ``[n², 1]`` (without the output bias)."""
        h = F.relu(cls._standardize(h, g1))
        h = F.relu(cls._standardize(h @ w2.T + b2, g2))
        return h @ w3.T

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.in_dim}, hidden={self.hidden})"


_EPS = 1e-5


class _PairTrunk(torch.autograd.Function):
    r""":meth:`PGE._trunk` on the CPU with a hand-written backward that runs the kernels autograd runs for it,
    on the same operands (so every value is bit-for-bit autograd's), minus the overhead:

    * the ReLUs run in place on the batch-norm outputs (batch norm's backward reads its input, not its
      output), and ReLU's backward masks the incoming gradient in place;
    * the output layer's input gradient ∂s ``[n², 1]`` x w₃ ``[1, hidden]`` is a product with one term per
      entry, computed as a broadcast multiplication instead of a matrix product (the same single rounding);
    * the bias gradients are the sums the autograd engine reduces a broadcast gradient with.

    The two hidden layers hold n² x ``hidden`` values each; this backward allocates two such buffers
    instead of six. Under ``create_graph`` (a higher-order derivative) the backward rebuilds the trunk with
    autograd from the saved inputs and differentiates that.
    """

    @staticmethod
    def forward(ctx, h1: Tensor, g1: Tensor, w2: Tensor, b2: Tensor, g2: Tensor, w3: Tensor) -> Tensor:
        z1, m1, v1 = torch.ops.aten.native_batch_norm(h1, g1, None, None, None, True, 0.1, _EPS)
        r1 = z1.relu_()
        u2 = r1.mm(w2.t()).add_(b2)
        z2, m2, v2 = torch.ops.aten.native_batch_norm(u2, g2, None, None, None, True, 0.1, _EPS)
        r2 = z2.relu_()
        ctx.save_for_backward(h1, g1, w2, b2, g2, w3, m1, v1, r1, u2, m2, v2, r2)
        return r2.mm(w3.t())

    @staticmethod
    def backward(ctx, gt: Tensor):
        h1, g1, w2, b2, g2, w3, m1, v1, r1, u2, m2, v2, r2 = ctx.saved_tensors
        need = ctx.needs_input_grad
        if torch.is_grad_enabled():  # create_graph: differentiate the autograd form of the same computation
            inputs = (h1, g1, w2, b2, g2, w3)
            wanted = [x for x, nd in zip(inputs, need) if nd]
            with torch.enable_grad():
                out = PGE._trunk(*inputs)
            got = iter(torch.autograd.grad(out, wanted, gt, create_graph=True))
            return tuple(next(got) if nd else None for nd in need)
        bwd = torch.ops.aten.native_batch_norm_backward
        relu_bwd = torch.ops.aten.threshold_backward.grad_input
        # output layer t = r2 w3ᵀ (w3ᵀ is column-major: autograd forms its gradient as (∂tᵀ r2)ᵀ, then transposes back)
        gw3 = gt.t().mm(r2) if need[5] else None
        gr2 = gt * w3
        relu_bwd(gr2, r2, 0, grad_input=gr2)
        gu2, gg2, _ = bwd(gr2, u2, g2, None, None, m2, v2, True, _EPS, [True, need[4], False])
        gb2 = gu2.sum([0], keepdim=True).view(b2.shape) if need[3] else None
        gw2 = gu2.t().mm(r1) if need[2] else None
        if not (need[0] or need[1]):
            return None, None, gw2, gb2, gg2, gw3
        gr1 = torch.mm(gu2, w2, out=gr2)  # gr2 is spent: its buffer takes the next layer's gradient
        relu_bwd(gr1, r1, 0, grad_input=gr1)
        gh1, gg1, _ = bwd(gr1, h1, g1, None, None, m1, v1, True, _EPS, [need[0], need[1], False])
        return gh1, gg1, gw2, gb2, gg2, gw3
