"""GraphMNL's per-epoch guidance state: reliability, arbitration, gate, teacher and the guidance loss.

Every epoch, from a forward output over the whole graph (no gradient):

* reliability: per node and branch, the evidence of :func:`magkit.functional.branch_scores` (target evidence on
  labelled nodes, confidence and agreement with the neighbours' fused prediction elsewhere), smoothed over the
  graph, r̃ = (1 − β) r + β N(r̃) (``smooth_steps`` times, :func:`magkit.functional.smooth_scores`);
* arbitration: within each branch kind the branches ≥ δ below the kind's best are inferior; the dominant
  d(i) = argmax_b r̃_b(i);
* teacher t(i): the fused posterior p_f(i) (``teacher="fused"``: every present branch is guided, negative sets
  from per-class thresholds ρ C π_c) or the dominant branch's p_d(i) (``teacher="dominant"``, the form of
  multimodal negative learning, Gong et al. 2025: only the inferior branches are guided, one threshold ρ);
* gate g(i) = 1[s(i) < τ_s] σ(κ (m(i) − τ_m)) with ``gate=True`` (s: the teacher's total-variation instability
  against its moving average, m: the arbitration margin), g ≡ 1 otherwise; zero on labelled nodes, during the
  warm-up and where no branch is present.

The guidance loss over the guided (node i, branch b) pairs is (1/N) Σ g(i) L(i, b), L the negative-learning
loss −Σ_{c ∈ C̄(i)} log(1 − q_b,c(i)) (or the ``kd`` / ``mnl`` / ``ntkd`` ablations).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from ...exceptions import ConfigError
from ...functional import (
    arbitrate,
    branch_scores,
    ema_update,
    instability,
    negative_learning_loss,
    negative_set,
    nontarget_distillation,
    nontarget_soft_ce,
    smooth_scores,
    transfer_gate,
    without_diagonal,
)

#: the gate's constants (``gate=True``): instability threshold τ_s, margin threshold τ_m, slope κ, and the decay
#: of the teacher's moving average (the values of multimodal negative learning's design, checked one at a time on
#: Grocery: none beat them)
GATE_TAU_S = 0.3
GATE_TAU_M = 0.05
GATE_KAPPA = 20.0
GATE_EMA_DECAY = 0.9


def reliability(out: dict, adj: Tensor, labelled: Tensor, y_train: Tensor, beta: float,
                steps: int, offdiag: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Smoothed reliability r̃ ``[n, B]`` and branch posteriors ``[n, B, C]`` from a forward output (no grad);
    ``offdiag``: ``adj`` without its diagonal, when the caller keeps it."""
    with torch.no_grad():
        probs = torch.softmax(out["branches"].detach(), -1)
        fused = torch.softmax(out["logits"].detach(), -1)
        present = out["present"]
        sc = branch_scores(probs, present, y_train, labelled, fused, adj, fields=("score",), offdiag=offdiag)
        r = smooth_scores(sc["score"], present, adj, beta, steps)
    return r, probs


def guided_pairs(g: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
    """The (node, branch) pairs that receive guidance, as ``(rows, cols)``, sorted by branch: g(i) > 0 and branch
    b guided at i (``targets`` ``[n, B]`` bool)."""
    cols, rows = ((g > 0).unsqueeze(1) & targets).T.nonzero(as_tuple=True)
    return rows, cols


@dataclass
class GuidanceState:
    """The training-time state of one GraphMNL fit: the graph's adjacency and training labels, the moving averages
    of the gate, the global dominant of the ``fixed_dominant`` ablation, and what one epoch passes to the next
    (reliability; in mini-batch mode the epoch's state and the evaluation pass it reuses).

    Args:
        params (dict): the estimator's parameters.
        branches (tuple[str, ...]): branch names, in column order.
        modalities (tuple[str, ...]): modality names.
        adj (Tensor): the graph's normalised adjacency.
        labelled (Tensor): ``[N]`` bool, the training nodes.
        y_train (Tensor): ``[N]`` labels on the training nodes, −1 elsewhere.
    """

    params: dict[str, Any]
    branches: tuple[str, ...]
    modalities: tuple[str, ...]
    adj: Tensor
    labelled: Tensor
    y_train: Tensor
    offdiag: Tensor | None = None  # adj without its diagonal, built once per fit for the reliability scores
    class_counts: Tensor | None = None  # training labels per class, for the fused teacher's per-class thresholds
    ema: Tensor | None = None  # gate only: moving average of the teacher's posterior (every branch's, dominant teacher)
    fixed_index: Tensor | None = None  # fixed_dominant: [B] bool, the global dominant modality's branches
    next_reliability: Tensor | None = None  # full batch: the reliability the next epoch's fusion reads
    eval_pass: dict | None = None  # mini-batch: the evaluation's whole-graph pass, reused as the next state pass
    start: int | None = None  # the epoch the guidance starts at, when a validation plateau came before ``warmup``
    epoch: dict | None = None  # mini-batch: this epoch's state (see :meth:`step`)
    minibatch: Any = None  # mini-batch training: its GuidedMiniBatch (draws of guided seeds, their sampler)

    @classmethod
    def for_graph(cls, params: dict[str, Any], branches: tuple[str, ...], graph, adj: Tensor) -> GuidanceState:
        labelled = graph.train_mask.clone()
        y_train = torch.where(labelled, graph.y, torch.full_like(graph.y, -1))
        return cls(dict(params), tuple(branches), tuple(graph.modalities), adj, labelled, y_train,
                   without_diagonal(adj), torch.bincount(y_train[labelled], minlength=graph.num_classes))

    def scores(self, out: dict) -> tuple[Tensor, Tensor]:
        return reliability(out, self.adj, self.labelled, self.y_train, self.params["beta"],
                           self.params["smooth_steps"], self.offdiag)

    def step(self, out: dict, epoch: int, model) -> dict:
        """The guidance state of one epoch from a forward output over the whole graph (no grad): reliability
        ``r`` ``[n, B]``, gate ``g`` ``[n]`` (zero where guidance is off), the guided ``targets`` ``[n, B]`` bool,
        the ``teacher``'s posterior ``[n, C]``, whether the transfer is ``active``, and two rates for the logs.
        Updates the moving average of the gate."""
        p = self.params
        present = out["present"]
        n = present.shape[0]
        r, probs = self.scores(out)
        start = p["warmup"] if self.start is None else min(self.start, p["warmup"])
        active = epoch >= start and p["guidance"] != "none" and p["lam"] > 0
        fixed = p["fixed_dominant"] is not None and (active or p["fixed_dominant"] != "auto")
        # ``auto`` picks the global dominant from the warmed-up branches when the transfer starts (at epoch 0 the
        # reliability of untrained branches would make the pick arbitrary); until then nothing reads the arbitration
        r_arb = self.fixed_reliability(r, present) if fixed else r
        dom, _, _ = arbitrate(r_arb, present, p["delta"])
        inferior, margin = self.grouped_arbitration(r_arb, present, model.kind_columns())
        rows = torch.arange(n, device=probs.device)
        d = dom.clamp(min=0)
        p_dom = probs[rows, d]
        if p["teacher"] == "fused":
            z_t = out["logits"].detach()
            if fixed:  # ablation: the teacher fuses the branches by the global dominant's weights, not per node
                z_t = model.fuse(out["branches"].detach(), model.fusion_weights(r_arb, present))
            teacher = torch.softmax(z_t, -1)
            targets = present
        else:
            teacher, targets = p_dom, inferior
        if p["gate"]:  # the teacher's own stability against its moving average
            if p["teacher"] == "fused":
                self.ema = ema_update(self.ema, teacher, GATE_EMA_DECAY)
                s = instability(teacher, self.ema, "tv")
            else:  # every branch's moving average, read at the node's current dominant
                self.ema = ema_update(self.ema, probs, GATE_EMA_DECAY)
                s = instability(p_dom, self.ema[rows, d], "tv")
            g = transfer_gate(s, margin, GATE_TAU_S, GATE_TAU_M, GATE_KAPPA)
        else:
            g = torch.ones(n, device=probs.device)
        g = g * (dom >= 0)
        nodes = (~self.labelled).to(probs.device)
        g = g * nodes.float() * float(active)
        return {"r": r, "g": g, "targets": targets, "teacher": teacher, "active": active,
                "gate_rate": float((g > 0.5).float().sum() / nodes.float().sum().clamp(min=1)),
                "inferior_rate": float(inferior.float().mean())}

    def grouped_arbitration(self, r: Tensor, present: Tensor, kind_columns: list[list[int]]) -> tuple[Tensor, Tensor]:
        """Arbitration among comparable branches: within each kind (raw, prop) the branches ≥ δ below that kind's
        best are inferior; the margin is the largest within-kind margin at the node."""
        inferior = torch.zeros_like(present)
        margin = torch.zeros(r.shape[0], device=r.device)
        for cols in kind_columns:
            if len(cols) < 2:
                continue
            _, inf_k, m_k = arbitrate(r[:, cols], present[:, cols], self.params["delta"])
            inferior[:, cols] = inf_k
            margin = torch.maximum(margin, m_k)
        return inferior, margin

    def fixed_reliability(self, r: Tensor, present: Tensor) -> Tensor:
        """The ``fixed_dominant`` ablation: one global dominant modality. Its branches get reliability 1, all
        others 0 (plus 1e-3 r̃ to break ties)."""
        if self.fixed_index is None:
            fd = self.params["fixed_dominant"]
            mods = self.modalities
            if fd == "auto":  # the modality whose raw branch is most reliable on average (training signal only)
                raw = [self.branches.index(f"raw:{m}") for m in mods if f"raw:{m}" in self.branches]
                fd = mods[int(torch.stack([r[:, j].mean() for j in raw]).argmax())] if raw else mods[0]
            if fd not in mods:
                raise ConfigError(f"fixed_dominant={fd!r}; allowed: None, 'auto', {', '.join(map(repr, mods))}")
            self.fixed_index = torch.tensor([b.endswith(f":{fd}") for b in self.branches])
        fixed = self.fixed_index.to(r.device).float().expand_as(r)
        return torch.where(present, fixed + 1e-3 * r, torch.zeros_like(r))

    def loss(self, z: Tensor, rows: Tensor, teacher: Tensor, g: Tensor, n_total: float,
             labelled: Tensor | None = None, y_train: Tensor | None = None) -> Tensor:
        """(1/N) Σ_pairs g(i) L(i, b) over the guided (node i = ``rows[k]``, branch b) pairs, whose logits are
        ``z`` ``[P, C]``; ``teacher`` ``[n, C]``, ``g`` ``[n]`` (and ``labelled``, ``y_train``: by default the
        whole graph's) are per node, N = ``n_total``."""
        p = self.params
        kind = p["guidance"]
        labelled = self.labelled if labelled is None else labelled
        y_train = self.y_train if y_train is None else y_train
        pd = teacher[rows]
        if kind == "nl":
            prior = None
            if p["teacher"] == "fused":  # per-class thresholds ρ C π_c, π the training labels' shares (add-one)
                prior = self.class_counts.to(teacher) + 1.0
            neg = negative_set(teacher, y_train, labelled, rho=p["rho"], k=None, class_prior=prior)
            per = negative_learning_loss(z, neg[rows], None)
        elif kind == "kd":
            per = (pd * (torch.log(pd.clamp_min(1e-12)) - F.log_softmax(z, -1))).sum(-1)
        else:  # mnl / ntkd: against the teacher on the non-target classes (target = label, or the teacher's class)
            tgt = torch.where(labelled[rows], y_train[rows], pd.argmax(1))
            per = nontarget_soft_ce(z, pd, tgt) if kind == "mnl" else nontarget_distillation(z, pd, tgt)
        return (g[rows] * per).sum() / n_total
