"""Late fusion over column blocks: one network per modality block of the fused features, logits averaged."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn


class LateFusion(nn.Module):
    r"""Late fusion (Baltrušaitis et al., TPAMI 2019, "Multimodal Machine Learning: A Survey and Taxonomy"):
    one network per modality, the logits averaged.

    .. math::
        Z = \frac{1}{M} \sum_{m=1}^{M} f_m\bigl(X_{[:, c_m : c_m + d_m]}, \dots\bigr)

    where the modality blocks ``d_1, ..., d_M`` are consecutive column blocks of the early-fused features
    ``[x_1 | ... | x_M]`` (the layout of :meth:`~magkit.data.graph.MultimodalGraph.fused` and of a condensed
    graph's features). Every branch reads the same structure. Because a column block of Â^K X is Â^K x_m,
    SGC's precomputed propagation is sliced the same way.

    Args:
        branches (Sequence[nn.Module]): one network per block, each mapping ``[n, d_m]`` (and the structure) to
            logits ``[n, C]``.
        widths (Sequence[int]): the block widths ``d_m``, in column order; they sum to the input width.

    Shapes:
        - **input:** fused features ``[n, sum(widths)]``, then whatever the branches read (structure)
        - **output:** logits ``[n, C]``
    """

    def __init__(self, branches: Sequence[nn.Module], widths: Sequence[int]):
        super().__init__()
        self.branches = nn.ModuleList(branches)
        self.widths = tuple(int(w) for w in widths)

    def reset_parameters(self) -> None:
        for b in self.branches:
            if hasattr(b, "reset_parameters"):
                b.reset_parameters()

    def forward(self, x: Tensor, *structure) -> Tensor:
        blocks = torch.split(x, list(self.widths), dim=1)
        return torch.stack([b(xb, *structure) for b, xb in zip(self.branches, blocks)]).mean(0)
