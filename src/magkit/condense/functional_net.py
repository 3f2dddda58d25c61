"""The condensation model θ as plain tensors: drawn fresh every epoch and differentiated twice (the synthetic
side's gradients are themselves differentiated with respect to X'), so it is no ``nn.Module``."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from ..models.pge import glorot


class FunctionalNet:
    r"""A 2-layer GCN or an SGC classifier with its weights as leaf tensors (stored ``[out, in]``).

    .. math::
        \text{SGC: } Z = H W^\top + b, \quad H = \hat A^K X; \qquad
        \text{GCN: } Z = \hat A\, \mathrm{ReLU}(\hat A X W_1^\top + b_1) W_2^\top + b_2

    Args:
        kind (str): ``"sgc"`` or ``"gcn"``.
        in_dim (int): input width.
        hidden (int): hidden width (GCN only).
        out_dim (int): output width (classes).
        generator (torch.Generator): the generator of the Glorot-uniform weights; biases start at 0.
    """

    def __init__(self, kind: Literal["sgc", "gcn"], in_dim: int, hidden: int, out_dim: int,
                 generator: torch.Generator):
        self.kind = kind
        shapes = [(out_dim, in_dim)] if kind == "sgc" else [(hidden, in_dim), (out_dim, hidden)]
        self.weights = [glorot(o, i, generator).requires_grad_() for o, i in shapes]
        self.biases = [torch.zeros(o).requires_grad_() for o, _ in shapes]

    @property
    def params(self) -> list[Tensor]:
        """Weights, then biases."""
        return self.weights + self.biases

    def logits(self, first: Tensor, second: Tensor | None = None) -> Tensor:
        """SGC: ``first`` = Â^K X ``[n, in_dim]``. GCN: ``first`` = ÂX ``[m, in_dim]`` (the aggregated input
        rows), ``second`` = the Â block ``[n, m]`` from the output rows to those rows. Returns ``[n, out_dim]``."""
        if self.kind == "sgc":
            return first @ self.weights[0].T + self.biases[0]
        h = F.relu(first @ self.weights[0].T + self.biases[0])
        return second @ (h @ self.weights[1].T) + self.biases[1]
