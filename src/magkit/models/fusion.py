"""Networks of the multimodal baselines: one backbone with a modality-fusion rule, and per-modality branches.

Both read a :class:`~magkit.methods.inputs.GraphInputs` (per-modality blocks ``xs[m] [n, d_m]``, presence
``present [n, M]`` and the structure) and know only sizes: the modality names and widths, the backbone's name
and its hyper-parameters. An absent modality contributes nothing for a node: its rows are zeros, late fusion
and the branch mean average only over the modalities present, and the learned fusion gives it zero attention.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..exceptions import ConfigError
from ..functional import dropout
from .backbones import build_backbone, masked_mean, masked_softmax, structure_for

#: the fusion rules of :class:`MultimodalNet` besides a single modality's name
FUSIONS = ("early", "late", "learned")


class MultimodalNet(nn.Module):
    r"""A backbone with one way of using the modalities (``fusion``).

    * a modality name: that modality alone, ``f(x_m)``;
    * ``"early"``: the backbone on ``[x_1 | ... | x_M | presence]``;
    * ``"late"``: one backbone per modality, logits = mean over the present modalities of ``f_m(x_m)``;
    * ``"learned"``: per-modality encoders ``h_m = ReLU(W_m x_m)``, attention
      :math:`a_m(i) = \mathrm{softmax}_m\, w^\top \tanh(P h_m(i))` over the present modalities, and the backbone on
      :math:`\sum_m a_m(i) h_m(i)`.

    Args:
        fusion (str): a modality name, ``"early"``, ``"late"`` or ``"learned"``.
        modalities (tuple of str): the modality names, in the order of ``present``'s columns.
        dims (dict of str to int): the feature width of each modality.
        backbone (str): the backbone's name (see :data:`~magkit.models.backbones.BACKBONES`).
        hidden (int): hidden width.
        num_classes (int): number of classes.
        num_layers (int, optional): backbone layers. (default: :obj:`2`)
        dropout (float, optional): dropout probability. (default: :obj:`0.5`)
        heads (int, optional): GAT heads. (default: :obj:`4`)
        k (int, optional): APPNP's propagation steps. (default: :obj:`10`)
        alpha (float, optional): APPNP's teleport probability. (default: :obj:`0.1`)

    Shapes:
        output: logits ``[n, C]``, or a dict with ``"logits"`` (and ``"present"`` for a single modality,
        ``"attention" [n, M]`` for the learned fusion).
    """

    def __init__(self, fusion: str, modalities: tuple[str, ...], dims: dict[str, int], backbone: str, hidden: int,
                 num_classes: int, num_layers: int = 2, dropout: float = 0.5, heads: int = 4, k: int = 10,
                 alpha: float = 0.1):
        super().__init__()
        self.fusion = fusion
        self.backbone = backbone
        self.modalities = modalities
        kw = {"num_layers": num_layers, "dropout": dropout, "heads": heads, "k": k, "alpha": alpha}
        if fusion in modalities:
            self.net = build_backbone(backbone, dims[fusion], hidden, num_classes, **kw)
        elif fusion == "early":
            self.net = build_backbone(backbone, sum(dims.values()) + len(modalities), hidden, num_classes, **kw)
        elif fusion == "late":
            self.nets = nn.ModuleDict({m: build_backbone(backbone, dims[m], hidden, num_classes, **kw) for m in modalities})
        elif fusion == "learned":
            self.enc = nn.ModuleDict({m: nn.Linear(dims[m], hidden) for m in modalities})
            self.att = nn.Linear(hidden, 1, bias=False)
            self.att_proj = nn.Linear(hidden, hidden)
            self.net = build_backbone(backbone, hidden, hidden, num_classes, **kw)
        else:
            raise ConfigError(f"fusion={fusion!r} is not a fusion rule of this graph; allowed: "
                              f"{', '.join(tuple(modalities) + FUSIONS)}")
        self.dropout = dropout

    def forward(self, inp) -> Tensor | dict:
        ei = structure_for(self.backbone, inp)
        if self.fusion in self.modalities:
            return {"logits": self.net(inp.xs[self.fusion], ei), "present": inp.present}
        if self.fusion == "early":
            return self.net(inp.early_input(self.modalities), ei)
        if self.fusion == "late":
            z = torch.stack([self.nets[m](inp.xs[m], ei) for m in self.modalities], dim=1)
            return masked_mean(z, inp.present)
        h = torch.stack([F.relu(self.enc[m](dropout(inp.xs[m], self.dropout, self.training))) for m in self.modalities], dim=1)
        alpha = masked_softmax(self.att(torch.tanh(self.att_proj(h))).squeeze(-1), inp.present)
        fused = (alpha.unsqueeze(-1) * h).sum(1)
        return {"logits": self.net(fused, ei), "attention": alpha.detach()}


class BranchNet(nn.Module):
    r"""One backbone per modality (a branch); the fused prediction is the mean of the present branches' logits.

    Args:
        modalities (tuple of str): the modality names, in the order of ``present``'s columns.
        dims (dict of str to int): the feature width of each modality.
        backbone (str): the backbone's name (see :data:`~magkit.models.backbones.BACKBONES`).
        hidden (int): hidden width.
        num_classes (int): number of classes.
        num_layers (int, optional): backbone layers. (default: :obj:`2`)
        dropout (float, optional): dropout probability. (default: :obj:`0.5`)
        heads (int, optional): GAT heads. (default: :obj:`4`)
        k (int, optional): APPNP's propagation steps. (default: :obj:`10`)
        alpha (float, optional): APPNP's teleport probability. (default: :obj:`0.1`)

    Shapes:
        output: a dict with ``"logits" [n, C]`` (the masked mean), ``"branches" [n, M, C]`` and
        ``"present" [n, M]``.
    """

    def __init__(self, modalities: tuple[str, ...], dims: dict[str, int], backbone: str, hidden: int,
                 num_classes: int, num_layers: int = 2, dropout: float = 0.5, heads: int = 4, k: int = 10,
                 alpha: float = 0.1):
        super().__init__()
        self.modalities = modalities
        self.backbone = backbone
        kw = {"num_layers": num_layers, "dropout": dropout, "heads": heads, "k": k, "alpha": alpha}
        self.branches = nn.ModuleDict({m: build_backbone(backbone, dims[m], hidden, num_classes, **kw) for m in modalities})

    def forward(self, inp) -> dict:
        ei = structure_for(self.backbone, inp)
        z = torch.stack([self.branches[m](inp.xs[m], ei) for m in self.modalities], dim=1)
        return {"logits": masked_mean(z, inp.present), "branches": z, "present": inp.present}
