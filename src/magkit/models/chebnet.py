"""ChebNet: spectral graph convolution with Chebyshev polynomial filters (Defferrard et al., NeurIPS 2016,
"Convolutional Neural Networks on Graphs with Fast Localized Spectral Filtering")."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from ..functional import dropout


class ChebNet(nn.Module):
    r"""``num_layers`` Chebyshev convolutions (two by default) with ReLU between them and dropout before each.

    .. math::
        H = \mathrm{ReLU}\Bigl(\sum_{k=0}^{K-1} T_k(\tilde L) X W_k^{(1)}\Bigr), \qquad
        Z = \sum_{k=0}^{K-1} T_k(\tilde L) H W_k^{(2)}

    with T_k the Chebyshev polynomials and L̃ = 2L/λ_max − I the scaled normalised Laplacian of the
    (weighted) graph, λ_max = 2.

    Args:
        in_dim (int): input width.
        hidden (int): hidden width.
        out_dim (int): output width (classes).
        dropout (float, optional): dropout probability before each convolution. (default: :obj:`0.5`)
        k (int, optional): the filter order K (polynomials T_0 .. T_{K-1}). (default: :obj:`2`)
        num_layers (int, optional): the number of convolutions. (default: :obj:`2`)

    Shapes:
        - **input:** node features ``[n, in_dim]``, structure ``(edge_index [2, E], edge_weight [E] or None)``
        - **output:** logits ``[n, out_dim]``
    """

    def __init__(self, in_dim: int, hidden: int, out_dim: int, dropout: float = 0.5, k: int = 2, num_layers: int = 2):
        super().__init__()
        from torch_geometric.nn import ChebConv

        dims = [in_dim] + [hidden] * (num_layers - 1) + [out_dim]
        self.convs = nn.ModuleList([ChebConv(a, b, k) for a, b in zip(dims[:-1], dims[1:])])
        self.dropout = dropout

    def reset_parameters(self) -> None:
        for conv in self.convs:
            conv.reset_parameters()

    def forward(self, x: Tensor, structure: tuple[Tensor, Tensor | None]) -> Tensor:
        ei, w = structure
        for i, conv in enumerate(self.convs):
            x = dropout(x, self.dropout, self.training)
            x = conv(x, ei, w, lambda_max=2.0)
            if i < len(self.convs) - 1:
                x = F.relu(x)
        return x
