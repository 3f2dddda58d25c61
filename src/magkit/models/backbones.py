"""Backbone networks (PyG layers): MLP, GCN, GraphSAGE, GAT, SGC, APPNP.

Every backbone maps node features ``x [n, d_in]`` and a structure to ``[n, d_out]``; it knows only sizes.
The structure is ``edge_index [2, E]`` or, for GCN, APPNP and GraphSAGE, preferably a precomputed
normalised adjacency (a sparse tensor, see :func:`structure_for`): multiplying by a cached CSR Â is several times
faster on CPU than re-normalising and scattering over ``edge_index`` in every layer. SGC's propagation Â^K X is precomputed and cached by the caller (``magkit.train.propagation``), so
the SGC backbone itself is the linear classifier of Wu et al. (2019).
"""

from __future__ import annotations

import typing
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.nn import APPNP, GATConv, GCNConv, SAGEConv

from ..exceptions import ConfigError
from ..functional import dropout
from ..train.propagation import mean_adjacency, normalized_adjacency, spmm

#: the backbone names :func:`build_backbone` accepts
Backbone = Literal["mlp", "gcn", "sage", "gat", "sgc", "appnp"]
BACKBONES: tuple[str, ...] = typing.get_args(Backbone)
#: backbones whose input is the precomputed propagation Â^K X
PRECOMPUTED = ("sgc",)


class MLP(nn.Module):
    """Multi-layer perceptron: (Linear -> ReLU -> dropout) x (L-1) -> Linear."""

    def __init__(self, in_dim: int, hidden: int, out_dim: int, num_layers: int = 2, dropout: float = 0.5):
        super().__init__()
        dims = [in_dim] + [hidden] * (num_layers - 1) + [out_dim]
        self.lins = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))
        self.dropout = dropout
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for lin in self.lins:
            lin.reset_parameters()

    def forward(self, x: Tensor, edge_index: Tensor | None = None) -> Tensor:
        for i, lin in enumerate(self.lins):
            x = dropout(x, self.dropout, self.training)
            x = lin(x)
            if i < len(self.lins) - 1:
                x = F.relu(x)
        return x


class GNN(nn.Module):
    """A stack of message-passing layers (GCN, GraphSAGE or GAT) with ReLU and dropout between layers.

    GAT uses ``heads`` attention heads concatenated in hidden layers and averaged in the output layer.
    """

    def __init__(self, kind: str, in_dim: int, hidden: int, out_dim: int, num_layers: int = 2,
                 dropout: float = 0.5, heads: int = 4):
        super().__init__()
        self.kind = kind
        self.dropout = dropout
        self.convs = nn.ModuleList()
        d = in_dim
        for i in range(num_layers):
            last = i == num_layers - 1
            o = out_dim if last else hidden
            if kind == "gcn":
                conv = GCNConv(d, o, normalize=False)  # Â is precomputed (see structure_for)
            elif kind == "sage":
                conv = SAGEConv(d, o, aggr="sum")  # fed D^-1 A: a sum over it is the mean (see structure_for)
            elif kind == "gat":
                conv = GATConv(d, o if last else max(1, o // heads), heads=1 if last else heads,
                               concat=not last, dropout=dropout)
                o = o if last else max(1, o // heads) * heads
            else:
                raise ConfigError(f"backbone: {kind!r}; allowed: gcn, sage, gat")
            self.convs.append(conv)
            d = o
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for conv in self.convs:
            conv.reset_parameters()

    #: GraphSAGE layers that narrow (out < in) apply W_l before the mean aggregation instead of after it: equal
    #: maths (the aggregation is linear; the bias is added after it), float rounding differs. Off by default so
    #: the baselines' numbers stay bitwise reproducible; GraphMNL's struct branch turns it on.
    narrow_sage: bool = False

    def _narrows(self, conv, adj) -> bool:
        return (self.kind == "sage" and conv.out_channels < conv.in_channels and conv.root_weight
                and not conv.normalize and not conv.project and (adj.is_sparse or adj.layout == torch.sparse_csr))

    def _plain(self, conv, adj) -> bool:
        """A GCN / GraphSAGE layer whose PyG forward is one sparse product plus linear maps (then computed by
        :meth:`_conv_spmm`, which reuses the adjacency's transpose in backward)."""
        if adj.layout != torch.sparse_csr:
            return False
        if self.kind == "gcn":
            return not conv.normalize and conv.aggr in ("add", "sum")
        return (self.kind == "sage" and conv.aggr == "sum" and not conv.normalize and not conv.project
                and conv.root_weight)

    def _conv_spmm(self, conv, x: Tensor, adj: Tensor) -> Tensor:
        """PyG's GCNConv / SAGEConv forward for a precomputed sparse adjacency, operation for operation (bitwise
        equal outputs and gradients, tested), with :func:`~magkit.train.propagation.spmm` as the product."""
        if self.kind == "gcn":
            out = spmm(adj, conv.lin(x))
            return out + conv.bias if conv.bias is not None else out
        return conv.lin_l(spmm(adj, x)) + conv.lin_r(x)

    def forward(self, x: Tensor, edge_index: Tensor) -> Tensor:
        if self.kind in ("gcn", "sage") and not edge_index.is_sparse and edge_index.layout != torch.sparse_csr:
            norm = normalized_adjacency if self.kind == "gcn" else mean_adjacency
            edge_index = norm(edge_index, x.size(0))
        for i, conv in enumerate(self.convs):
            x = dropout(x, self.dropout, self.training)
            if self.narrow_sage and self._narrows(conv, edge_index):
                # mean(A) (x W_l^T) + b_l + x W_r^T: the same layer, aggregating at the output width (C instead
                # of h columns through the sparse product and its backward)
                x = spmm(edge_index, F.linear(x, conv.lin_l.weight)) + conv.lin_l.bias + conv.lin_r(x)
            elif self._plain(conv, edge_index):
                x = self._conv_spmm(conv, x, edge_index)
            else:
                x = conv(x, edge_index)
            if i < len(self.convs) - 1:
                x = F.relu(x)
        return x


class APPNPNet(nn.Module):
    """APPNP (Gasteiger et al., 2019): an MLP then K steps of personalised-PageRank propagation
    Z_{t+1} = (1-α) Â Z_t + α H."""

    def __init__(self, in_dim: int, hidden: int, out_dim: int, num_layers: int = 2, dropout: float = 0.5,
                 k: int = 10, alpha: float = 0.1):
        super().__init__()
        self.mlp = MLP(in_dim, hidden, out_dim, num_layers, dropout)
        self.prop = APPNP(K=k, alpha=alpha, normalize=False)  # Â is precomputed (see structure_for)

    def reset_parameters(self) -> None:
        self.mlp.reset_parameters()

    def forward(self, x: Tensor, edge_index: Tensor) -> Tensor:
        if not edge_index.is_sparse and edge_index.layout != torch.sparse_csr:
            edge_index = normalized_adjacency(edge_index, x.size(0))
        if edge_index.layout != torch.sparse_csr or self.prop.dropout > 0:
            return self.prop(self.mlp(x), edge_index)
        # PyG's APPNP loop, operation for operation, with the backward-friendly sparse product
        h = self.mlp(x)
        z = h
        for _ in range(self.prop.K):
            z = spmm(edge_index, z)
            z = z * (1 - self.prop.alpha)
            z = z + self.prop.alpha * h
        return z


class SGCHead(nn.Module):
    """SGC's classifier on precomputed Â^K X: dropout then one linear layer."""

    def __init__(self, in_dim: int, out_dim: int, dropout: float = 0.0):
        super().__init__()
        self.lin = nn.Linear(in_dim, out_dim)
        self.dropout = dropout

    def reset_parameters(self) -> None:
        self.lin.reset_parameters()

    def forward(self, x: Tensor, edge_index: Tensor | None = None) -> Tensor:
        return self.lin(dropout(x, self.dropout, self.training))


def build_backbone(name: str, in_dim: int, hidden: int, out_dim: int, num_layers: int = 2, dropout: float = 0.5,
                   heads: int = 4, k: int = 10, alpha: float = 0.1) -> nn.Module:
    """Construct a backbone by name (one of :data:`BACKBONES`)."""
    if name == "mlp":
        return MLP(in_dim, hidden, out_dim, num_layers, dropout)
    if name in ("gcn", "sage", "gat"):
        return GNN(name, in_dim, hidden, out_dim, num_layers, dropout, heads)
    if name == "sgc":
        return SGCHead(in_dim, out_dim, dropout)
    if name == "appnp":
        return APPNPNet(in_dim, hidden, out_dim, num_layers, dropout, k, alpha)
    raise ConfigError(f"backbone: {name!r}; allowed: {', '.join(BACKBONES)}")


#: backbones that read the normalised adjacency Â instead of edge_index
USES_NORM_ADJ = ("gcn", "appnp")


def structure_for(backbone: str, inputs) -> Tensor:
    """What ``backbone`` reads as structure from a :class:`~magkit.methods.inputs.GraphInputs`: Â for GCN and
    APPNP, D^-1 A for GraphSAGE (its mean aggregation as one sparse product: 2.4x faster than PyG's scatter
    over edge_index on Grocery, measured), edge_index otherwise."""
    if backbone in USES_NORM_ADJ:
        return inputs.norm_adj()
    if backbone == "sage":
        return inputs.mean_adj()
    return inputs.edge_index


def masked_mean(values: Tensor, mask: Tensor) -> Tensor:
    """Mean over dim 1 of ``values [n, M, ...]`` where ``mask [n, M]`` is true (0 where none is)."""
    w = mask.to(values.dtype)
    while w.dim() < values.dim():
        w = w.unsqueeze(-1)
    return (values * w).sum(1) / w.sum(1).clamp(min=1.0)


def masked_softmax(scores: Tensor, mask: Tensor, dim: int = 1) -> Tensor:
    """Softmax of ``scores`` over ``dim`` restricted to ``mask``; rows with no true entry give zeros."""
    scores = scores.masked_fill(~mask, float("-inf"))
    out = torch.softmax(scores, dim=dim)
    return torch.nan_to_num(out, nan=0.0)
