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

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..exceptions import ConfigError
from ..functional import dropout
from ..models.backbones import BACKBONES, build_backbone, masked_mean, masked_softmax, structure_for
from ..train.diskprop import propagate_features
from ..train.propagation import propagate
from .base import GraphInputs, NodeClassifier

FUSIONS = ("early", "late", "learned")


def _backbone_kwargs(p: dict) -> dict:
    return {"num_layers": p["num_layers"], "dropout": p["dropout"], "heads": p["heads"], "k": p["k"], "alpha": p["alpha"]}


class MultimodalNet(nn.Module):
    """A backbone with a modality fusion rule (see the module docstring)."""

    def __init__(self, fusion: str, modalities: tuple[str, ...], dims: dict[str, int], backbone: str,
                 hidden: int, num_classes: int, **kw):
        super().__init__()
        self.fusion = fusion
        self.backbone = backbone
        self.modalities = modalities
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
            raise ConfigError(f"fusion: {fusion!r}; allowed: {', '.join(modalities + FUSIONS)}")
        self.dropout = kw.get("dropout", 0.5)

    def forward(self, inp: GraphInputs) -> Tensor | dict:
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


class _MultimodalBase(NodeClassifier):
    """Shared parameters and inputs (cached SGC propagation) of the multimodal baselines."""

    defaults = {"backbone": "gcn", "heads": 4, "k": 2, "alpha": 0.1}

    def _check_params(self) -> None:
        super()._check_params()
        if self.params["backbone"] not in BACKBONES:
            raise ConfigError(f"backbone: {self.params['backbone']!r}; allowed: {', '.join(BACKBONES)}")

    def _inputs(self, graph) -> GraphInputs:
        inp = super()._inputs(graph)
        if self.params["backbone"] == "sgc":
            k = self.params["k"]
            xs = {m: propagate_features(graph, x, k) for m, x in inp.xs.items()}  # on disk for mapped graphs
            reach = torch.stack([propagate(graph, inp.present[:, j:j + 1].float(), k)[:, 0] > 0
                                 for j in range(len(inp.modalities))], dim=1)
            inp = GraphInputs(xs=xs, present=reach, modalities=inp.modalities, edge_index=inp.edge_index,
                              num_nodes=inp.num_nodes)
        return inp


class FusionClassifier(_MultimodalBase):
    """A backbone with one modality-use rule (``fusion``); see the module docstring."""

    description = "backbone + modality fusion (text-only, image-only, early, late, learned)"
    defaults = {"fusion": "early"}

    def _build(self, graph, inputs):
        fusion = self.params["fusion"]
        if fusion not in graph.modalities and fusion not in FUSIONS:
            raise ConfigError(f"fusion: {fusion!r}; allowed: {', '.join(graph.modalities + FUSIONS)}")
        p = self.params
        return MultimodalNet(fusion, graph.modalities, graph.modality_dims, p["backbone"], p["hidden"],
                             graph.num_classes, **_backbone_kwargs(p))

    def _loss(self, out, y, idx, epoch):
        fusion = self.params["fusion"]
        if fusion in self.modalities_ and self.params["backbone"] in ("mlp", "sgc"):
            # a graph-free model on one modality has no evidence for nodes lacking it: no loss there
            keep = out["present"][idx, self.modalities_.index(fusion)]
            idx = idx[keep] if bool(keep.any()) else idx
        return super()._loss(out, y, idx, epoch)


class BranchNet(nn.Module):
    """One backbone per modality; returns the branch logits ``[n, M, C]`` and their masked mean."""

    def __init__(self, modalities, dims, backbone, hidden, num_classes, **kw):
        super().__init__()
        self.modalities = modalities
        self.backbone = backbone
        self.branches = nn.ModuleDict({m: build_backbone(backbone, dims[m], hidden, num_classes, **kw) for m in modalities})

    def forward(self, inp: GraphInputs) -> dict:
        ei = structure_for(self.backbone, inp)
        z = torch.stack([self.branches[m](inp.xs[m], ei) for m in self.modalities], dim=1)
        return {"logits": masked_mean(z, inp.present), "branches": z, "present": inp.present}


def _branch_ce(z: Tensor, y: Tensor, present: Tensor) -> Tensor:
    """Mean cross-entropy of every branch on the nodes where its modality is present."""
    n, m, c = z.shape
    ce = F.cross_entropy(z.reshape(n * m, c), y.repeat_interleave(m), reduction="none").view(n, m)
    w = present.float()
    return (ce * w).sum() / w.sum().clamp(min=1.0)


class DistillationClassifier(_MultimodalBase):
    """Cross-branch positive distillation.

    Branches z_b (one backbone per modality) and the fused prediction z_f = mean of present branches.
    Per node the dominant branch d(i) is the present branch with the highest target probability p_{b,y}
    on labelled training nodes, and the most confident one (max_c p_{b,c}) elsewhere. Every other present
    branch imitates it: L = mean_{present (i,b)} CE(z_b, y) + CE(z_f, y) + λ · mean_i Σ_{b≠d} T² KL(p_d^T ‖ p_b^T), with the
    dominant's posterior detached. ``kd_nodes="all"`` distils on every node, ``"train"`` on labelled ones.
    """

    description = "per-modality branches; inferior branches imitate the dominant branch (KL distillation)"
    defaults = {"kd_weight": 1.0, "temperature": 1.0, "kd_nodes": "all"}

    def _build(self, graph, inputs):
        p = self.params
        if p["kd_nodes"] not in ("all", "train"):
            raise ConfigError(f"kd_nodes: {p['kd_nodes']!r}; allowed: all, train")
        self._train_mask = graph.train_mask
        return BranchNet(graph.modalities, graph.modality_dims, p["backbone"], p["hidden"], graph.num_classes,
                         **_backbone_kwargs(p))

    def _loss(self, out, y, idx, epoch):
        z, present = out["branches"], out["present"]
        ce = F.cross_entropy(out["logits"][idx], y[idx]) + _branch_ce(z[idx], y[idx], present[idx])
        nodes = idx if self.params["kd_nodes"] == "train" else torch.arange(z.size(0), device=z.device)
        zt = z[nodes] / self.params["temperature"]
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
        kd = (kl * inferior).sum() / max(nodes.numel(), 1) * self.params["temperature"] ** 2
        loss = ce + self.params["kd_weight"] * kd
        return loss, {"loss": float(loss.detach()), "ce": float(ce.detach()), "kd": float(kd.detach())}


class MNLClassifier(_MultimodalBase):
    """Multimodal Negative Learning (Gong et al., NeurIPS 2025, arXiv 2510.20877) adapted to graphs.

    Branches z_b (one backbone per modality), fused z_f = mean of the present branches' logits. On each
    labelled node i let j = the hardest wrong class of the fused prediction (argmax_{c≠y} z_f,c). Branch a
    dominates branch b when both its margin z_a,y − z_a,j and its target probability p_a,y exceed b's. A
    dominated (weak) branch b gets an extra cross-entropy plus ``nl_weight`` (0.7) times the soft
    cross-entropy against the detached dominant's non-target probabilities:
    L_b = CE(z_b, y) − 0.7 Σ_{c≠y} p_a,c log q_b,c. Total: CE(z_f, y) + mean over present (node, branch)
    pairs of CE(z_b, y) + mean_i Σ_{weak b} L_b.
    """

    description = "Multimodal Negative Learning (Gong et al. 2025) on graph branches"
    defaults = {"nl_weight": 0.7}

    def _build(self, graph, inputs):
        p = self.params
        return BranchNet(graph.modalities, graph.modality_dims, p["backbone"], p["hidden"], graph.num_classes,
                         **_backbone_kwargs(p))

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
            extra = extra + ((ce_b[:, b] + self.params["nl_weight"] * sce) * weak).sum() / n
        loss = base + extra
        return loss, {"loss": float(loss.detach()), "nl": float(extra.detach())}
