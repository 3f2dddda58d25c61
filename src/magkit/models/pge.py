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

    Shapes:
        - **input:** synthetic features ``[n, in_dim]``
        - **output:** dense adjacency ``[n, n]``, symmetric, in (0, 1) off the diagonal, zero diagonal
    """

    def __init__(self, in_dim: int, hidden: int = 128, init_bias: float = 0.0, *,
                 generator: torch.Generator | None = None):
        super().__init__()
        self.in_dim, self.hidden, self.init_bias = in_dim, hidden, init_bias
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
        return F.batch_norm(h, None, None, gamma, None, training=True, eps=1e-5)

    def forward(self, x: Tensor) -> Tensor:
        n = x.size(0)
        h = (x @ self.wa.T)[:, None, :] + (x @ self.wb.T)[None, :, :] + self.b1
        h = F.relu(self._standardize(h.reshape(n * n, -1), self.g1))
        h = F.relu(self._standardize(h @ self.w2.T + self.b2, self.g2))
        s = (h @ self.w3.T + self.b3).reshape(n, n)
        a = torch.sigmoid((s + s.T) / 2)
        return a * (1 - torch.eye(n, device=x.device))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.in_dim}, hidden={self.hidden})"
