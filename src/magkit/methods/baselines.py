"""Baselines for node classification on multimodal graphs, all through one estimator API.

* :class:`FusionClassifier` -- a backbone (MLP, GCN, GraphSAGE, GAT, SGC, APPNP) with one way of using the
  modalities (``fusion``):

  - a modality name (``"text"``, ``"image"``): that modality alone;
  - ``"early"``: concatenation of the modality blocks plus one presence indicator per modality;
  - ``"late"``: one backbone per modality, prediction = mean of the logits of the modalities present;
  - ``"learned"``: per-modality encoders (Linear + ReLU to ``hidden``), an attention over the present
    modalities (a_m(i) = softmax_m w·tanh(h_m(i))), the backbone on the fused embedding.

* :class:`DistillationClassifier` (``kd``) -- per-modality branches and a fused head; inferior branches
  imitate the dominant branch's full posterior (KL): the "alignment" family GraphMNL argues against.
* :class:`MNLClassifier` (``mnl``) -- Multimodal Negative Learning (Gong et al., NeurIPS 2025) adapted to
  graphs.

Missing modalities: an absent modality contributes nothing for that node. Its rows are zeros, so in early
fusion its first-layer term W_m x_m vanishes and the presence indicator tells the model it is absent;
late fusion and the branch methods average only over the modalities present; the learned fusion gives an
absent modality zero attention; branch losses skip nodes where the branch's modality is absent. With SGC,
Â^K X mixes neighbours' features into a node, so after propagation a node counts as having a modality when
any node within K hops has it.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from ..exceptions import ConfigError
from ..models.backbones import Backbone
from ..models.fusion import FUSIONS, BranchNet, MultimodalNet
from ..train.propagation import propagate, propagate_features
from .base import Monitor, NodeClassifier
from .inputs import GraphInputs

#: the fusion rules of :class:`FusionClassifier` besides a modality's name ("text", "image", ...)
Fusion = Literal["early", "late", "learned"]


class _MultimodalBase(NodeClassifier):
    """Shared parameters, network sizes and inputs (cached SGC propagation) of the multimodal baselines."""

    def __init__(
        self,
        *,
        backbone: Backbone = "gcn",
        heads: int = 4,
        k: int = 2,
        alpha: float = 0.1,
        hidden: int = 128,
        num_layers: int = 2,
        dropout: float = 0.5,
        lr: float = 0.01,
        weight_decay: float = 5e-4,
        epochs: int = 300,
        patience: int | None = 50,
        monitor: Monitor = "val_acc",
        batch_size: int | None = None,
        fanouts: tuple[int, ...] = (10, 10),
        seed: int = 0,
        device: str = "cpu",
        distributed: bool | Literal["auto"] = False,
    ):
        self._store(locals())

    def _check_params(self) -> None:
        super()._check_params()
        for key in ("heads", "k"):
            if getattr(self, key) < 1:
                raise ConfigError(f"{type(self).__name__}: {key}={getattr(self, key)!r} is out of range; allowed: an integer >= 1")
        if not 0 <= self.alpha <= 1:
            raise ConfigError(f"{type(self).__name__}: alpha={self.alpha!r} is out of range; allowed: 0 <= alpha <= 1")

    def _net_sizes(self) -> dict:
        """The backbone hyper-parameters of the network."""
        return {"num_layers": self.num_layers, "dropout": self.dropout, "heads": self.heads, "k": self.k,
                "alpha": self.alpha}

    def _inputs(self, graph) -> GraphInputs:
        inp = super()._inputs(graph)
        if self.backbone == "sgc":
            k = self.k
            xs = {m: propagate_features(graph, x, k) for m, x in inp.xs.items()}  # on disk for mapped graphs
            reach = torch.stack([propagate(graph, inp.present[:, j:j + 1].float(), k)[:, 0] > 0
                                 for j in range(len(inp.modalities))], dim=1)
            inp = GraphInputs(xs=xs, present=reach, modalities=inp.modalities, edge_index=inp.edge_index,
                              num_nodes=inp.num_nodes)
        return inp


class FusionClassifier(_MultimodalBase):
    r"""A backbone (MLP, GCN, GraphSAGE, GAT, SGC, APPNP) with one way of using the modalities.

    ``fusion`` is a modality name (that modality alone), ``"early"`` (the concatenated blocks and one presence
    indicator per modality), ``"late"`` (one backbone per modality, the mean of the present modalities'
    logits) or ``"learned"`` (attention over per-modality encoders, see
    :class:`~magkit.models.fusion.MultimodalNet`). Trained with cross-entropy on the training nodes; a graph-free
    backbone (MLP, SGC) on one modality is trained only on the nodes that have it.

    Args:
        fusion (str, optional): ``"early"``, ``"late"``, ``"learned"`` or a modality name of the graph.
            (default: :obj:`"early"`)
        backbone (str, optional): ``"mlp"``, ``"gcn"``, ``"sage"``, ``"gat"``, ``"sgc"`` or ``"appnp"``.
            (default: :obj:`"gcn"`)
        heads (int, optional): attention heads of GAT. (default: :obj:`4`)
        k (int, optional): propagation steps of SGC and APPNP. (default: :obj:`2`)
        alpha (float, optional): APPNP's teleport probability. (default: :obj:`0.1`)
        hidden (int, optional): hidden width. (default: :obj:`128`)
        num_layers (int, optional): backbone layers. (default: :obj:`2`)
        dropout (float, optional): dropout probability, in [0, 1). (default: :obj:`0.5`)
        lr (float, optional): Adam's learning rate. (default: :obj:`0.01`)
        weight_decay (float, optional): Adam's L2 penalty. (default: :obj:`5e-4`)
        epochs (int, optional): the most training epochs. (default: :obj:`300`)
        patience (int, optional): early-stopping patience in epochs; :obj:`None`: none. (default: :obj:`50`)
        monitor (str, optional): ``"val_acc"``, ``"val_f1"`` or ``"val_loss"``. (default: :obj:`"val_acc"`)
        batch_size (int, optional): mini-batch size with neighbour sampling; :obj:`None`: full batch.
            (default: :obj:`None`)
        fanouts (tuple of int, optional): neighbours sampled per layer. (default: :obj:`(10, 10)`)
        seed (int, optional): seed of every random draw of ``fit``. (default: :obj:`0`)
        device (str, optional): ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"auto"``. (default: :obj:`"cpu"`)
        distributed (bool or str, optional): data-parallel training (see
            :class:`~magkit.methods.base.NodeClassifier`). (default: :obj:`False`)
    """

    description = "backbone + modality fusion (text-only, image-only, early, late, learned)"

    def __init__(
        self,
        *,
        fusion: Fusion | str = "early",
        backbone: Backbone = "gcn",
        heads: int = 4,
        k: int = 2,
        alpha: float = 0.1,
        hidden: int = 128,
        num_layers: int = 2,
        dropout: float = 0.5,
        lr: float = 0.01,
        weight_decay: float = 5e-4,
        epochs: int = 300,
        patience: int | None = 50,
        monitor: Monitor = "val_acc",
        batch_size: int | None = None,
        fanouts: tuple[int, ...] = (10, 10),
        seed: int = 0,
        device: str = "cpu",
        distributed: bool | Literal["auto"] = False,
    ):
        self._store(locals())

    def _build(self, shape):
        if self.fusion not in shape.modalities and self.fusion not in FUSIONS:
            raise ConfigError(f"FusionClassifier: fusion={self.fusion!r} is not a fusion rule of this graph; allowed: "
                              f"{', '.join(tuple(shape.modalities) + FUSIONS)}")
        return MultimodalNet(self.fusion, shape.modalities, shape.modality_dims, self.backbone, self.hidden,
                             shape.num_classes, **self._net_sizes())

    def _loss(self, out, y, idx, epoch):
        if self.fusion in self.modalities_ and self.backbone in ("mlp", "sgc"):
            # a graph-free model on one modality has no evidence for nodes lacking it: no loss there
            keep = out["present"][idx, self.modalities_.index(self.fusion)]
            idx = idx[keep] if bool(keep.any()) else idx
        return super()._loss(out, y, idx, epoch)


def _branch_ce(z: Tensor, y: Tensor, present: Tensor) -> Tensor:
    """Mean cross-entropy of every branch on the nodes where its modality is present."""
    n, m, c = z.shape
    ce = F.cross_entropy(z.reshape(n * m, c), y.repeat_interleave(m), reduction="none").view(n, m)
    w = present.float()
    return (ce * w).sum() / w.sum().clamp(min=1.0)


class DistillationClassifier(_MultimodalBase):
    r"""Cross-branch positive distillation: inferior branches imitate the dominant branch's full posterior.

    Branches :math:`z_b` (one backbone per modality) and the fused prediction :math:`z_f` = the mean of the present
    branches. Per node the dominant branch :math:`d(i)` is the present branch with the highest target
    probability :math:`p_{b,y}` on labelled training nodes, and the most confident one (:math:`\max_c p_{b,c}`)
    elsewhere. Every other present branch imitates it:

    .. math::
        \mathcal{L} = \operatorname{mean}_{(i,b)\ \mathrm{present}} \mathrm{CE}(z_b, y) + \mathrm{CE}(z_f, y)
        + \lambda\, \operatorname{mean}_i \sum_{b \ne d} T^2\, \mathrm{KL}(p_d^T \,\|\, p_b^T),

    with the dominant's posterior detached: the "alignment" family GraphMNL argues against.

    Args:
        kd_weight (float, optional): :math:`\lambda`. (default: :obj:`1.0`)
        temperature (float, optional): :math:`T`. (default: :obj:`1.0`)
        kd_nodes (str, optional): ``"all"`` distils on every node, ``"train"`` on the labelled ones.
            (default: :obj:`"all"`)
        backbone (str, optional): ``"mlp"``, ``"gcn"``, ``"sage"``, ``"gat"``, ``"sgc"`` or ``"appnp"``.
            (default: :obj:`"gcn"`)
        heads (int, optional): attention heads of GAT. (default: :obj:`4`)
        k (int, optional): propagation steps of SGC and APPNP. (default: :obj:`2`)
        alpha (float, optional): APPNP's teleport probability. (default: :obj:`0.1`)
        hidden (int, optional): hidden width. (default: :obj:`128`)
        num_layers (int, optional): backbone layers. (default: :obj:`2`)
        dropout (float, optional): dropout probability, in [0, 1). (default: :obj:`0.5`)
        lr (float, optional): Adam's learning rate. (default: :obj:`0.01`)
        weight_decay (float, optional): Adam's L2 penalty. (default: :obj:`5e-4`)
        epochs (int, optional): the most training epochs. (default: :obj:`300`)
        patience (int, optional): early-stopping patience in epochs; :obj:`None`: none. (default: :obj:`50`)
        monitor (str, optional): ``"val_acc"``, ``"val_f1"`` or ``"val_loss"``. (default: :obj:`"val_acc"`)
        batch_size (int, optional): mini-batch size with neighbour sampling; :obj:`None`: full batch.
            (default: :obj:`None`)
        fanouts (tuple of int, optional): neighbours sampled per layer. (default: :obj:`(10, 10)`)
        seed (int, optional): seed of every random draw of ``fit``. (default: :obj:`0`)
        device (str, optional): ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"auto"``. (default: :obj:`"cpu"`)
        distributed (bool or str, optional): data-parallel training (see
            :class:`~magkit.methods.base.NodeClassifier`). (default: :obj:`False`)
    """

    description = "per-modality branches; inferior branches imitate the dominant branch (KL distillation)"

    def __init__(
        self,
        *,
        kd_weight: float = 1.0,
        temperature: float = 1.0,
        kd_nodes: Literal["all", "train"] = "all",
        backbone: Backbone = "gcn",
        heads: int = 4,
        k: int = 2,
        alpha: float = 0.1,
        hidden: int = 128,
        num_layers: int = 2,
        dropout: float = 0.5,
        lr: float = 0.01,
        weight_decay: float = 5e-4,
        epochs: int = 300,
        patience: int | None = 50,
        monitor: Monitor = "val_acc",
        batch_size: int | None = None,
        fanouts: tuple[int, ...] = (10, 10),
        seed: int = 0,
        device: str = "cpu",
        distributed: bool | Literal["auto"] = False,
    ):
        self._store(locals())

    def _check_params(self) -> None:
        super()._check_params()
        if self.temperature <= 0:
            raise ConfigError(f"DistillationClassifier: temperature={self.temperature!r} is out of range; allowed: > 0")

    def _build(self, shape):
        return BranchNet(shape.modalities, shape.modality_dims, self.backbone, self.hidden, shape.num_classes,
                         **self._net_sizes())

    def _loss(self, out, y, idx, epoch):
        z, present = out["branches"], out["present"]
        ce = F.cross_entropy(out["logits"][idx], y[idx]) + _branch_ce(z[idx], y[idx], present[idx])
        nodes = idx if self.kd_nodes == "train" else torch.arange(z.size(0), device=z.device)
        zt = z[nodes] / self.temperature
        logp = F.log_softmax(zt, dim=-1)
        p = logp.exp().detach()
        labelled = torch.zeros(z.size(0), dtype=torch.bool, device=z.device)
        labelled[idx] = True
        lab = labelled[nodes]
        yy = y[nodes].clamp(min=0)
        score = torch.where(lab.unsqueeze(1), p.gather(2, yy.view(-1, 1, 1).expand(-1, z.size(1), 1)).squeeze(-1), p.max(-1).values)
        pres = present[nodes]
        score = score.masked_fill(~pres, -1.0)
        dom = score.argmax(1)
        p_dom = p[torch.arange(nodes.numel(), device=z.device), dom]  # [n, C]
        kl = (p_dom.unsqueeze(1) * (torch.log(p_dom.clamp_min(1e-12)).unsqueeze(1) - logp)).sum(-1)  # [n, M]
        inferior = pres & (torch.arange(z.size(1), device=z.device).unsqueeze(0) != dom.unsqueeze(1))
        kd = (kl * inferior).sum() / max(nodes.numel(), 1) * self.temperature ** 2
        loss = ce + self.kd_weight * kd
        return loss, {"loss": float(loss.detach()), "ce": float(ce.detach()), "kd": float(kd.detach())}



class MNLClassifier(_MultimodalBase):
    r"""Multimodal Negative Learning (Gong et al., NeurIPS 2025, arXiv 2510.20877) adapted to graphs.

    Branches :math:`z_b` (one backbone per modality), fused :math:`z_f` = the mean of the present branches'
    logits. On each labelled node :math:`i` let :math:`j = \arg\max_{c \ne y} z_{f,c}` (the hardest wrong
    class of the fused prediction). Branch :math:`a` dominates branch :math:`b` when both its margin
    :math:`z_{a,y} - z_{a,j}` and its target probability :math:`p_{a,y}` exceed :math:`b`'s. A dominated (weak)
    branch :math:`b` gets an extra cross-entropy plus ``nl_weight`` times the soft cross-entropy against the
    detached dominant's non-target probabilities:

    .. math::
        \mathcal{L}_b = \mathrm{CE}(z_b, y) - w \sum_{c \ne y} p_{a,c} \log q_{b,c}.

    Total: :math:`\mathrm{CE}(z_f, y)` + the mean over present (node, branch) pairs of :math:`\mathrm{CE}(z_b, y)`
    + :math:`\operatorname{mean}_i \sum_{\mathrm{weak}\ b} \mathcal{L}_b`.

    Args:
        nl_weight (float, optional): :math:`w`. (default: :obj:`0.7`)
        backbone (str, optional): ``"mlp"``, ``"gcn"``, ``"sage"``, ``"gat"``, ``"sgc"`` or ``"appnp"``.
            (default: :obj:`"gcn"`)
        heads (int, optional): attention heads of GAT. (default: :obj:`4`)
        k (int, optional): propagation steps of SGC and APPNP. (default: :obj:`2`)
        alpha (float, optional): APPNP's teleport probability. (default: :obj:`0.1`)
        hidden (int, optional): hidden width. (default: :obj:`128`)
        num_layers (int, optional): backbone layers. (default: :obj:`2`)
        dropout (float, optional): dropout probability, in [0, 1). (default: :obj:`0.5`)
        lr (float, optional): Adam's learning rate. (default: :obj:`0.01`)
        weight_decay (float, optional): Adam's L2 penalty. (default: :obj:`5e-4`)
        epochs (int, optional): the most training epochs. (default: :obj:`300`)
        patience (int, optional): early-stopping patience in epochs; :obj:`None`: none. (default: :obj:`50`)
        monitor (str, optional): ``"val_acc"``, ``"val_f1"`` or ``"val_loss"``. (default: :obj:`"val_acc"`)
        batch_size (int, optional): mini-batch size with neighbour sampling; :obj:`None`: full batch.
            (default: :obj:`None`)
        fanouts (tuple of int, optional): neighbours sampled per layer. (default: :obj:`(10, 10)`)
        seed (int, optional): seed of every random draw of ``fit``. (default: :obj:`0`)
        device (str, optional): ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"auto"``. (default: :obj:`"cpu"`)
        distributed (bool or str, optional): data-parallel training (see
            :class:`~magkit.methods.base.NodeClassifier`). (default: :obj:`False`)
    """

    description = "Multimodal Negative Learning (Gong et al. 2025) on graph branches"

    def __init__(
        self,
        *,
        nl_weight: float = 0.7,
        backbone: Backbone = "gcn",
        heads: int = 4,
        k: int = 2,
        alpha: float = 0.1,
        hidden: int = 128,
        num_layers: int = 2,
        dropout: float = 0.5,
        lr: float = 0.01,
        weight_decay: float = 5e-4,
        epochs: int = 300,
        patience: int | None = 50,
        monitor: Monitor = "val_acc",
        batch_size: int | None = None,
        fanouts: tuple[int, ...] = (10, 10),
        seed: int = 0,
        device: str = "cpu",
        distributed: bool | Literal["auto"] = False,
    ):
        self._store(locals())

    def _build(self, shape):
        return BranchNet(shape.modalities, shape.modality_dims, self.backbone, self.hidden, shape.num_classes,
                         **self._net_sizes())

    def _loss(self, out, y, idx, epoch):
        z, present = out["branches"][idx], out["present"][idx]
        yy = y[idx]
        zf = out["logits"][idx]
        base = F.cross_entropy(zf, yy) + _branch_ce(z, yy, present)
        n, m, c = z.shape
        wrong = zf.detach().scatter(1, yy.view(-1, 1), float("-inf"))
        j = wrong.argmax(1)
        zd = z.detach()
        margin = zd.gather(2, yy.view(-1, 1, 1).expand(n, m, 1)).squeeze(-1) - zd.gather(2, j.view(-1, 1, 1).expand(n, m, 1)).squeeze(-1)
        pd = torch.softmax(zd, -1)
        py = pd.gather(2, yy.view(-1, 1, 1).expand(n, m, 1)).squeeze(-1)
        # beats[i, a, b]: branch a dominates branch b on node i (both present)
        beats = (margin.unsqueeze(2) > margin.unsqueeze(1)) & (py.unsqueeze(2) > py.unsqueeze(1))
        beats &= present.unsqueeze(2) & present.unsqueeze(1)
        logq = F.log_softmax(z, -1)
        nontarget = pd.scatter(2, yy.view(-1, 1, 1).expand(n, m, 1), 0.0)  # p_a,c for c != y
        ce_b = -logq.gather(2, yy.view(-1, 1, 1).expand(n, m, 1)).squeeze(-1)  # [n, M]
        extra = z.new_zeros(())
        for b in range(m):
            dominated = beats[:, :, b]  # [n, M]: which a dominate b
            if not bool(dominated.any()):
                continue
            a = torch.where(dominated.any(1), (dominated.float() * py).argmax(1), torch.zeros_like(j))  # strongest dominant
            weak = dominated.any(1)
            sce = -(nontarget[torch.arange(n), a] * logq[:, b]).sum(-1)
            extra = extra + ((ce_b[:, b] + self.nl_weight * sce) * weak).sum() / n
        loss = base + extra
        return loss, {"loss": float(loss.detach()), "nl": float(extra.detach())}
