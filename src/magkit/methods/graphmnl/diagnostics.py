"""What a fitted GraphMNL did: per-node arbitration, fusion weights, per-branch scores, gate rate (``magkit
explain`` reads :func:`explain_report` and :func:`plot_diagnostics`)."""

from __future__ import annotations

import torch
from torch import Tensor

from ...functional import arbitrate, macro_f1, reliability_auc
from ...models.backbones import masked_softmax
from ...train.propagation import graph_adjacency
from .guidance import GuidanceState


def network_inputs(est, graph):
    """What a fitted GraphMNL's network reads on ``graph`` (a :class:`~magkit.methods.base.GraphInputs` on the
    estimator's device): features, presence, structure, and the reliability r̃ ``[N, B]`` recomputed from the
    fitted branches (``extra["reliability"]``)."""
    est._check_fitted()
    return est._inputs(graph).to(est.device_)


def guidance_pass(est, graph, epoch: int, seed: int = 0) -> tuple[dict, GuidanceState, dict]:
    """One training-mode forward pass of a fitted GraphMNL's network on ``graph`` (dropout drawn from ``seed``,
    gradients on) and the guidance state its loss would read at ``epoch``: returns the network's output, a fresh
    :class:`GuidanceState` for ``graph``, and that state's :meth:`~GuidanceState.step` (reliability, gate,
    guided targets, teacher). The network is left in training mode."""
    inp = network_inputs(est, graph)
    net = est.model_.train()
    torch.manual_seed(seed)
    out = net(inp)
    state = GuidanceState.for_graph(est.get_params(), est.branches_, graph, graph_adjacency(graph))
    return out, state, state.step(out, epoch, net)


@torch.no_grad()
def diagnose(est, graph) -> dict:
    """A fitted GraphMNL's arbitration on ``graph`` (``est.diagnostics_`` holds it for the training graph):
    ``branches``; per node ``dominant`` ``[N]`` (−1 where no branch is present), ``reliability`` r̃ ``[N, B]``,
    fusion weights ``alpha`` ``[N, B]``, arbitration ``margin`` ``[N]``; per branch ``branch_val_acc``,
    ``branch_val_f1`` and ``dominant_share``; ``gate_rate`` per epoch; ``output_alpha``, the a of ``output_prop``
    (1: the prediction is not propagated); and, on a generated graph with ground truth (two modalities),
    ``reliability_auc``: how well r̃ ranks the truly better modality, per branch kind."""
    est._check_fitted()
    inp = est._inputs(graph).to(est.device_)
    out = est._whole_output(est.model_, inp)
    r = inp.extra["reliability"]
    dom, _, margin = arbitrate(r, out["present"], est.delta)
    branches = list(est.branches_)
    val = graph.split_index("val")
    preds = out["branches"].argmax(-1)
    yv = graph.y[val].to(preds.device)
    diag = {
        "branches": branches,
        "dominant": dom.cpu(),
        "reliability": r.cpu(),
        "alpha": out["alpha"].cpu(),
        "margin": margin.cpu(),
        "branch_val_acc": {b: float((preds[val, j] == yv).float().mean()) for j, b in enumerate(branches)},
        "branch_val_f1": {b: macro_f1(out["branches"][val, j], yv, graph.num_classes) for j, b in enumerate(branches)},
        "dominant_share": {b: float((dom == j).float().mean()) for j, b in enumerate(branches)},
        "gate_rate": est.history_.series("gate_rate"),
        "output_alpha": est.__dict__.get("output_alpha_", 1.0),  # output_prop's a (1: the prediction unpropagated)
    }
    if graph.get("gt_quality") is not None and len(graph.modalities) == 2:
        aucs = {}
        for kind in ("raw", "prop"):
            cols = [f"{kind}:{m}" for m in graph.modalities]
            if all(c in branches for c in cols):
                idx = [branches.index(c) for c in cols]
                aucs[kind] = reliability_auc(r[:, idx].cpu(), graph.gt_quality, graph.modality_mask,
                                             graph.get("gt_biased"))
        diag["reliability_auc"] = aucs
    return diag


@torch.no_grad()
def kind_logits(est, graph) -> tuple[Tensor, Tensor, Tensor]:
    """Per branch kind (raw, prop, struct, in ``est.model_.kinds()`` order): the kind's within-kind fused logits
    Σ_{b in k} softmax_k(r̃ / T)_b z_b ``[N, K, C]``, where the kind is present ``[N, K]`` (float), and every
    branch's logits ``[N, B, C]`` (eval mode, reliability from the fitted model): the kinds' votes that the
    fusion weighs equally."""
    est._check_fitted()
    model = est.model_
    inp = est._inputs(graph).to(est.device_)
    out = est._whole_output(model, inp)
    z, present, rel = out["branches"], out["present"], inp.extra["reliability"].to(out["branches"].device)
    zk, kp = [], []
    for cols in model.kinds().values():
        a = masked_softmax(rel[:, cols] / model.temperature, present[:, cols])
        zk.append((a.unsqueeze(-1) * z[:, cols]).sum(1))
        kp.append(present[:, cols].any(1).to(z.dtype))
    return torch.stack(zk, 1), torch.stack(kp, 1), z


def explain_report(est, graph) -> dict:
    """A JSON-able summary of a fitted GraphMNL's arbitration on ``graph`` (for ``magkit explain``)."""
    d = est.diagnostics_
    per = {}
    for j, b in enumerate(d["branches"]):
        pres = d["alpha"][:, j] > 0
        per[b] = {
            "val_acc": d["branch_val_acc"][b],
            "dominant_share": d["dominant_share"][b],
            "mean_alpha": float(d["alpha"][:, j].mean()),
            "mean_reliability": float(d["reliability"][:, j][pres].mean()) if bool(pres.any()) else 0.0,
        }
    best = est.history_.best_epoch
    gate = d["gate_rate"]
    hi = max(1e-6, float(d["alpha"].max())) if d["alpha"].numel() else 1.0
    return {
        "method_params": est.get_params(),
        "dataset": graph.name,
        "test": est.score(graph, "test"),
        "val": est.score(graph, "val"),
        "branches": d["branches"],
        "per_branch": per,
        "gate_rate": gate,
        "final_gate_rate": gate[best] if 0 <= best < len(gate) else float("nan"),
        "reliability_auc": d.get("reliability_auc", {}),
        "output_alpha": float(d.get("output_alpha", 1.0)),
        "gate": bool(est.gate),
        "warmup": int(est.warmup),
        "best_epoch": int(best),
        "loss_terms": {k: est.history_.series(k) for k in ("ce", "guide")},
        "alpha_range": [0.0, hi],
        "alpha_histograms": {b: torch.histc(d["alpha"][:, j], bins=20, min=0, max=hi).tolist()
                             for j, b in enumerate(d["branches"])},
    }


def plot_diagnostics(report: dict, path):
    """Training signals per epoch (the gate rate when the gate is on, else the supervised and guidance loss terms;
    warm-up shaded, selected epoch marked) and the distribution of fusion weights per branch (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ...eval.results import save_figure

    fig, (ax_g, ax_a) = plt.subplots(1, 2, figsize=(10, 3.8))
    if report.get("gate"):
        rate = report["gate_rate"]
        ax_g.plot(range(len(rate)), rate, color="C0")
        ax_g.set(ylabel="share of guided nodes with g > 0.5", title="instability gate", ylim=(0, 1.05))
    else:
        for k, series in report.get("loss_terms", {}).items():
            ax_g.plot(range(len(series)), series, label={"ce": "cross-entropy (branches + fused)",
                                                         "guide": "guidance (negative learning)"}.get(k, k))
        ax_g.set(ylabel="training loss term", title="training signals (gate off)")
        ax_g.legend(fontsize=7)
    warm = report.get("warmup", 0)
    if warm:
        ax_g.axvspan(0, warm, color="0.9", zorder=0, label="warm-up")
    best = report.get("best_epoch", -1)
    if best >= 0:
        ax_g.axvline(best, color="0.4", linestyle="--", linewidth=1)
        ax_g.text(best, ax_g.get_ylim()[1], " selected", va="top", fontsize=7, color="0.3")
    ax_g.set(xlabel="epoch")
    lo, hi = report.get("alpha_range", [0.0, 1.0])
    edges = [lo + (hi - lo) * i / 20 for i in range(21)]
    for b in report["branches"]:
        ax_a.stairs(report["alpha_histograms"][b], edges, label=b)
    ax_a.set(xlabel="fusion weight α_b(i)", ylabel="nodes", title="fusion weights per branch", xlim=(lo, hi * 1.02))
    ax_a.legend(fontsize=7)
    fig.tight_layout()
    return save_figure(fig, path)
