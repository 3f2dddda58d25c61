"""GraphMNL: multimodal graph negative learning (magkit's formulation; see docs/graphmnl.md).

Branches b (``raw:<m>``: MLP on X_m; ``prop:<m>``: the same projection of X_m propagated K hops, Â^K (P_m x_m);
``struct``: a GNN on its own projection of the early-fusion input) each predict logits z_b. Per node and branch a detached reliability score is
computed from the current model every epoch (target evidence on labelled nodes, confidence and agreement
with the neighbours' fused prediction elsewhere), smoothed over the graph, and used three ways:

* fusion: z_f(i) = Σ_b α_b(i) z_b(i), α(i) = softmax over present branches of r̃_b(i) / T;
* arbitration: the dominant branch d(i) = argmax_b r̃_b(i); inferior branches are ≥ δ below it;
* guidance: after a warm-up, every present branch (``guide_targets="all"``; the spec's form: the inferior ones) is
  told which classes node i is unlikely to be under the teacher t(i) (``teacher="fused"``: the fused posterior; the
  spec's: the dominant branch), C̄(i) = {c ≠ argmax t(i) : t_c(i) < ρ C π_c}: L_NL(i, b) = − Σ_{c ∈ C̄(i)} log(1 − q_b,c(i)).
  With ``gate=True`` (the spec's form; off by default) only where g(i) = 1[s(i) < τ_s] σ(κ (m(i) − τ_m)) is open
  (s: the teacher's instability against its moving average; m: the arbitration margin); g ≡ 1 otherwise.

Total loss: Σ_b CE(z_b, y)[train] + CE(z_f, y)[train] + λ · mean_i g(i) Σ_{b guided at i} L_NL(i, b).

The first-layer projection P_m of each modality is shared by ``raw:<m>`` and ``prop:<m>`` (default
``prop_mode="hidden"``); the struct branch projects [x_1 | ... | x_M | presence] with its own Q
(default ``struct_input="own"``), so GraphMNL makes one input-width product per modality plus one for the
struct branch (measured cost: docs/graphmnl.md). ``prop_mode="input"`` / ``struct_input="mean"`` restore the
earlier formulation (prop:m reads the cached Â^K X_m; struct reads the mean of the shared projections).
"""

from __future__ import annotations

import logging
import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import distributed as D
from ..exceptions import ConfigError
from ..functional import (
    arbitrate,
    branch_scores,
    dropout,
    ema_update,
    instability,
    macro_f1,
    negative_learning_loss,
    negative_set,
    nontarget_distillation,
    nontarget_soft_ce,
    prior_once_fusion,
    reliability_auc,
    robust_log_probs,
    smooth_scores,
    transfer_gate,
)
from ..models.backbones import build_backbone, masked_softmax, structure_for
from ..train.diskprop import propagate_features
from ..train.propagation import graph_adjacency, spmm
from ..train.sampler import NeighborSampler
from .base import GraphInputs, NodeClassifier

GUIDANCE = ("nl", "ntkd", "kd", "mnl", "none")

log = logging.getLogger(__name__)
_WARNED: set = set()


def _dropout(x: Tensor, p: float, training: bool) -> Tensor:
    """:func:`magkit.functional.dropout` with the same random draws, mask and values (bitwise), applied as one
    float mask ``keep · 1/(1 − p̂)``: x · m then needs one multiplication forward and one backward instead of a
    bool-to-float promotion and two products each way (about 6 ms less per 17k x 128 call with its backward)."""
    if not training or p <= 0.0 or int(round(p * 256)) <= 0 or int(round(p * 256)) >= 256:
        return dropout(x, p, training)
    threshold = int(round(p * 256))
    n = x.numel()
    words = torch.randint(-(2**63), 2**63 - 1, ((n + 7) // 8,), dtype=torch.int64, device=x.device)
    keep = words.view(torch.uint8)[:n].view(x.shape) >= threshold
    return x * keep.to(x.dtype).mul_(256.0 / (256 - threshold))


def _mapped(x) -> bool:
    return bool(getattr(x, "is_mapped_block", False))


def _project_rows(blocks: list, weight: Tensor, bias: Tensor | None = None, rows: int = 65536) -> Tensor:
    """F.linear([b_1 | ... | b_k], weight, bias) for column blocks that may be memory-mapped (or, for the last
    one, a presence tensor), computed ``rows`` rows at a time: the features are read block by block and never held
    whole (eval mode only: no dropout)."""
    n = blocks[0].shape[0]
    out = torch.empty(n, weight.shape[0], device=weight.device)
    for a in range(0, n, rows):
        b = min(a + rows, n)
        x = torch.cat([(blk.rows(a, b) if _mapped(blk) else blk[a:b]).to(weight.device, torch.float32)
                       for blk in blocks], 1)
        out[a:b] = F.linear(x, weight, bias)
    return out


def default_branches(modalities) -> tuple[str, ...]:
    return tuple(f"raw:{m}" for m in modalities) + tuple(f"prop:{m}" for m in modalities) + ("struct",)


#: backbones of the optional second structure branch ``struct:<backbone>``
STRUCT_BACKBONES = ("gcn", "sage", "appnp")

#: optional branches beyond the default library (``branches=[..., "topo"]``, ``[..., "struct:gcn"]``)
OPTIONAL_BRANCHES = ("topo",) + tuple(f"struct:{b}" for b in STRUCT_BACKBONES)


def branch_kind(branch: str) -> str:
    """The kind a branch competes in under grouped fusion: ``raw``, ``prop`` or ``struct``; the structure-only
    ``topo`` branch and the extra GNNs ``struct:<backbone>`` are structure branches (they compete with
    ``struct``)."""
    return "struct" if branch == "topo" else branch.split(":", 1)[0]


def _modality_branch(branch: str) -> bool:
    """raw:m and prop:m read one modality; struct, struct:<backbone> and topo read all of them."""
    return branch.startswith(("raw:", "prop:"))


def _is_struct(branch: str) -> bool:
    return branch == "struct" or branch.startswith("struct:")


class GraphMNLNet(nn.Module):
    """The branch library with shared first-layer projections; fusion weights come from ``inp.extra``."""

    def __init__(self, branches, modalities, dims, hidden, num_classes, dropout_p, struct_backbone, struct_layers,
                 temperature, prop_k: int = 2, prop_mode: str = "input", struct_input: str = "mean",
                 num_nodes: int | None = None, topo_k: int = 1):
        super().__init__()
        self.topo_k = int(topo_k)
        self.prop_k = int(prop_k)
        self.prop_mode = prop_mode
        self.struct_input = struct_input
        self.fusion_bias = None
        self.fusion = "reliability"
        self.input_temperature = 0.1
        self.branches = tuple(branches)
        self.modalities = tuple(modalities)
        self.proj = nn.ModuleDict({m: nn.Linear(dims[m], hidden) for m in modalities})
        self.heads = nn.ModuleDict()
        for b in self.branches:
            if b == "topo":
                # the structure-only branch (LINKX's adjacency-row projection): ReLU(Â E + b_E), one learned
                # h-vector per node, zero at the start, so a node no training label reaches stays at the bias and
                # its head predicts the same for all such nodes (low confidence, low reliability)
                if not num_nodes:
                    raise ConfigError("the topo branch needs the graph's number of nodes")
                self.topo_emb = nn.Parameter(torch.zeros(int(num_nodes), hidden))
                self.topo_bias = nn.Parameter(torch.empty(hidden).uniform_(-hidden ** -0.5, hidden ** -0.5))
                self.heads["topo"] = nn.Linear(hidden, num_classes)
            elif b == "struct":
                self.struct_backbone = struct_backbone
                # struct_input: "mean"/"reliability" read one h-wide pooled projection, "concat" the M projections
                # side by side, "early" its own early-fusion input [x_m | presence] (then it is sage-early's net)
                early_dim = sum(dims[m] for m in modalities) + len(modalities)
                in_dim = {"concat": hidden * len(modalities), "early": early_dim}.get(struct_input, hidden)
                if struct_input == "own":  # its own projection of the early input, then the GNN at width h
                    self.struct_proj = nn.Linear(early_dim, hidden)
                self.struct = build_backbone(struct_backbone, in_dim, hidden, num_classes, num_layers=struct_layers,
                                             dropout=dropout_p)
                if hasattr(self.struct, "narrow_sage"):
                    self.struct.narrow_sage = True
            elif b.startswith("struct:"):
                # an extra structure GNN on the struct branch's input h0 (shared with struct, which must be a
                # branch too): two aggregations of one representation compete within the struct kind
                if not hasattr(self, "struct_more"):
                    self.struct_more = nn.ModuleDict()
                bk = b.split(":", 1)[1]
                early_dim = sum(dims[m] for m in modalities) + len(modalities)
                in_dim = {"concat": hidden * len(modalities), "early": early_dim}.get(struct_input, hidden)
                gnn = build_backbone(bk, in_dim, hidden, num_classes, num_layers=struct_layers, dropout=dropout_p)
                if hasattr(gnn, "narrow_sage"):
                    gnn.narrow_sage = True
                self.struct_more[bk] = gnn
            else:
                self.heads[b.replace(":", "_")] = nn.Linear(hidden, num_classes)
        self.dropout = dropout_p
        self.temperature = temperature
        self.guide_heads_only = False
        # "detached": the struct GNN's guided logits come from a second pass on its detached input (fresh dropout
        # masks); "shared": the supervised pass's struct logits are reused (struct_input own / early only)
        self.struct_guide = "detached"
        # grouped fusion: the share of each branch kind (raw, prop, struct, in kind_columns() order); equal by
        # default, fitted on validation nodes after training with kind_weights="validation"
        self.register_buffer("kind_share", torch.ones(len(self.kind_columns())))
        # fusion_prior="once": the fused logits count the training class prior once (prior_once_fusion); log π
        # is set from the training labels when the estimator builds the net
        self.fusion_prior = "none"
        self.register_buffer("log_prior", torch.zeros(num_classes))
        # fusion_floor=ε > 0: each branch enters the fusion as log((1 − ε) p_b + ε / C) (robust_log_probs)
        self.fusion_floor = 0.0

    def branch_present(self, present: Tensor, topo_present: Tensor | None = None) -> Tensor:
        """[n, B] bool: where each branch is present. A modality's branches abstain where the modality is missing,
        struct where every modality is; topo where the node has no edge (``topo_present``, from the whole graph)."""
        cols = []
        for b in self.branches:
            if b == "topo":
                cols.append(torch.ones_like(present[:, 0]) if topo_present is None else topo_present.to(present.device))
            elif _is_struct(b):
                cols.append(present.any(dim=1))
            else:
                cols.append(present[:, self.modalities.index(b.split(":", 1)[1])])
        return torch.stack(cols, dim=1)

    def _hidden_prop(self, inp: GraphInputs) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        """``prop_mode="hidden"``: one projection per modality, u_m = W_m drop(x_m); raw:m reads ReLU(u_m + b_m),
        prop:m reads ReLU(Â^K u_m + b_m) = ReLU(W_m Â^K drop(x_m) + b_m) (K sparse products of width h instead of
        a second d_m x h projection of the cached Â^K X_m)."""
        need = {b.split(":", 1)[1] for b in self.branches if _modality_branch(b)}
        if "struct" in self.branches and self.struct_input not in ("early", "own"):
            need |= set(self.modalities)  # the struct input is built from the shared projections
        h_raw: dict[str, Tensor] = {}
        hidden: dict[str, Tensor] = {}
        adj = inp.norm_adj() if any(b.startswith("prop:") for b in self.branches) else None
        for m in self.modalities:
            if m not in need:
                continue
            lin = self.proj[m]
            if _mapped(inp.xs[m]):  # whole-graph inference on memory-mapped features: block by block
                u = _project_rows([inp.xs[m]], lin.weight)
            else:
                u = F.linear(_dropout(inp.xs[m], self.dropout, self.training), lin.weight)
            h_raw[m] = F.relu(u + lin.bias)
            if f"raw:{m}" in self.branches:
                hidden[f"raw:{m}"] = h_raw[m]
            if f"prop:{m}" in self.branches:
                v = u
                for _ in range(self.prop_k):
                    v = spmm(adj, v)
                hidden[f"prop:{m}"] = F.relu(v + lin.bias)
        return h_raw, {b: hidden[b] for b in self.branches if b in hidden}

    def forward(self, inp: GraphInputs) -> dict:
        if self.prop_mode == "hidden":
            h_raw, hidden = self._hidden_prop(inp)
        else:
            h_raw, hidden = self._input_prop(inp)
        if "topo" in self.branches:
            hidden = dict(hidden, topo=self._topo_hidden(inp))
            hidden = {b: hidden[b] for b in self.branches if b in hidden}
        h0 = None
        if "struct" in self.branches and self.struct_input == "early":
            h0 = inp.early_input(self.modalities)
        elif "struct" in self.branches and self.struct_input == "own" and any(_mapped(x) for x in inp.xs.values()):
            blocks = [inp.xs[m] for m in self.modalities] + [inp.present.to(torch.float32)]
            h0 = F.relu(_project_rows(blocks, self.struct_proj.weight, self.struct_proj.bias))
        elif "struct" in self.branches and self.struct_input == "own":
            h0 = F.relu(self.struct_proj(_dropout(inp.early_input(self.modalities), self.dropout, self.training)))
        elif "struct" in self.branches:
            hs = []
            for j, m in enumerate(self.modalities):
                hm = h_raw.get(m)
                if hm is None:
                    hm = F.relu(self.proj[m](_dropout(inp.xs[m], self.dropout, self.training)))
                hs.append(hm * inp.present[:, j:j + 1])
            h0 = self._struct_input(inp, hs)
        return self._heads(inp, hidden, h0)

    def _topo_hidden(self, inp: GraphInputs) -> Tensor:
        """The topo branch's hidden layer ReLU(Â^K E + b_E) (K = ``topo_k``) on this (sub)graph: E's rows are
        picked by the inputs' global node ids (``extra["node_id"]``; a sampled subgraph reads its nodes' rows), Â
        is the (sub)graph's normalised adjacency."""
        ids = inp.extra.get("node_id")
        if ids is None:
            if inp.num_nodes != self.topo_emb.shape[0]:
                raise ConfigError(f"the topo branch is transductive: fitted on {self.topo_emb.shape[0]} nodes, "
                                  f"got a graph of {inp.num_nodes}")
            emb = self.topo_emb
        else:
            emb = self.topo_emb.index_select(0, ids.to(self.topo_emb.device))
        adj = inp.norm_adj()
        for _ in range(self.topo_k):  # Â^K E (K = topo_k; 1: the design note's Â E)
            emb = spmm(adj, emb)
        return F.relu(emb + self.topo_bias)

    def _struct_input(self, inp: GraphInputs, hs: list[Tensor]) -> Tensor:
        """The struct branch's input: the mean of the present modalities' first-layer representations
        (``struct_input="mean"``), or their reliability-weighted mean (``"reliability"``): w_m(i) = softmax over
        present m of r̃_{raw:m}(i) / T_in (prop:m's score where raw:m is not a branch), so a modality the
        arbitration finds unreliable at node i is down-weighted there before the GNN propagates it."""
        present = inp.present
        rel = inp.extra.get("reliability")
        if self.struct_input == "concat":
            return torch.cat(hs, 1)
        if self.struct_input == "mean" or rel is None:
            return torch.stack(hs, 1).sum(1) / present.sum(1, keepdim=True).clamp(min=1)
        cols = []
        for m in self.modalities:
            b = f"raw:{m}" if f"raw:{m}" in self.branches else f"prop:{m}"
            cols.append(rel[:, self.branches.index(b)] if b in self.branches else torch.zeros_like(rel[:, 0]))
        w = masked_softmax(torch.stack(cols, 1) / self.input_temperature, present)
        return (torch.stack(hs, 1) * w.unsqueeze(-1)).sum(1)

    def _input_prop(self, inp: GraphInputs) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        """``prop_mode="input"``: prop:m projects the cached Â^K X_m with the shared P_m."""
        h_raw: dict[str, Tensor] = {}
        hidden: dict[str, Tensor] = {}
        for b in self.branches:
            if not _modality_branch(b):  # struct, struct:<backbone>, topo
                continue
            kind, m = b.split(":", 1)
            if kind == "raw":
                if m not in h_raw:
                    h_raw[m] = F.relu(self.proj[m](_dropout(inp.xs[m], self.dropout, self.training)))
                hidden[b] = h_raw[m]
            else:
                hidden[b] = F.relu(self.proj[m](_dropout(inp.extra[f"prop_{m}"], self.dropout, self.training)))
        return h_raw, hidden

    def _heads(self, inp: GraphInputs, hidden: dict[str, Tensor], h0: Tensor | None) -> dict:
        # one dropout mask per branch hidden, shared by the supervised pass and the guidance pass
        dropped = {b: _dropout(h, self.dropout, self.training) for b, h in hidden.items()}
        struct_adj = self._struct_adjs(inp) if h0 is not None else None
        zs = torch.stack([self._struct_logits(b, h0, struct_adj) if _is_struct(b)
                          else self.heads[b.replace(":", "_")](dropped[b]) for b in self.branches], dim=1)  # [n, B, C]
        present = self.branch_present(inp.present, inp.extra.get("topo_present"))
        rel = inp.extra.get("reliability")
        if rel is None:
            rel = torch.zeros(zs.shape[:2], device=zs.device)
        alpha = self.fusion_weights(rel, present)
        fused = self.fuse(zs, alpha)
        out = {"logits": fused, "branches": zs, "present": present, "alpha": alpha}
        if self.training and self.guide_heads_only:
            out["_guide_inputs"] = (dropped, h0, struct_adj)
        return out

    def _struct_adjs(self, inp: GraphInputs) -> dict[str, Tensor]:
        """The structure each struct GNN reads (``struct`` under its backbone's name)."""
        kinds = {self.struct_backbone} | {b.split(":", 1)[1] for b in self.branches if b.startswith("struct:")}
        return {k: structure_for(k, inp) for k in kinds}

    def _struct_logits(self, b: str, h0: Tensor, adjs: dict[str, Tensor]) -> Tensor:
        if b == "struct":
            return self.struct(h0, adjs[self.struct_backbone])
        bk = b.split(":", 1)[1]
        return self.struct_more[bk](h0, adjs[bk])

    def fuse(self, zs: Tensor, alpha: Tensor) -> Tensor:
        """Fused logits [n, C] from branch logits [n, B, C] and fusion weights α [n, B]: Σ_b α_b z_b, with the
        class prior counted once (``fusion_prior="once"``; always, or ``"predict"``: in eval mode only). The
        experts are the branch kinds under grouped fusion (their shares Σ_{b in k} α_b), the branches otherwise.
        With ``fusion_floor`` ε > 0 each branch enters as log((1 − ε) p_b + ε/C) instead of z_b."""
        if self.fusion_floor > 0:
            zs = robust_log_probs(zs, self.fusion_floor)
        fused = (alpha.unsqueeze(-1) * zs).sum(1)
        if self.fusion_prior == "none" or (self.fusion_prior == "predict" and self.training):
            return fused
        shares = alpha
        if self.fusion == "grouped":
            shares = torch.stack([alpha[:, cols].sum(1) for cols in self.kind_columns()], 1)
        return prior_once_fusion(fused, shares, self.log_prior)

    def fusion_weights(self, rel: Tensor, present: Tensor) -> Tensor:
        """α [n, B]. ``fusion="reliability"``: softmax over the present branches of r̃ / T (+ c_b when learned).
        ``fusion="grouped"``: the branches of one kind (raw, prop, struct) compete by r̃ / T among themselves (per-node
        modality arbitration between comparable branches) and every kind present at a node gets an equal share."""
        logit_w = rel / self.temperature
        if self.fusion_bias is not None:
            logit_w = logit_w + self.fusion_bias
        if self.fusion != "grouped":
            return masked_softmax(logit_w, present)
        alpha = torch.zeros_like(rel)
        total = torch.zeros_like(rel[:, 0])
        share = self.kind_share.to(rel)
        for k, cols in enumerate(self.kind_columns()):
            pk = present[:, cols]
            alpha[:, cols] = masked_softmax(logit_w[:, cols], pk) * share[k]
            total = total + pk.any(1).to(rel.dtype) * share[k]
        return alpha / total.clamp(min=1e-12).unsqueeze(1)

    def kind_columns(self) -> list[list[int]]:
        return list(self.kinds().values())

    def kinds(self) -> dict[str, list[int]]:
        """Branch kind (raw, prop, struct; topo counts as struct) -> its branch columns, in first-appearance order."""
        kinds: dict[str, list[int]] = {}
        for j, b in enumerate(self.branches):
            kinds.setdefault(branch_kind(b), []).append(j)
        return kinds

    def guided_logits(self, out: dict, rows: Tensor, cols: Tensor) -> Tensor:
        """Logits ``[P, C]`` of branch ``cols[k]`` at node ``rows[k]`` for the guidance term (pairs sorted by
        branch). With ``guide_heads_only`` they are computed from detached first-layer representations, so the
        guidance reaches each branch's own layers but not the shared projections; a head is evaluated on its
        guided rows only, the struct GNN (which needs the whole graph) once, and only if it is guided anywhere.
        With ``struct_guide="shared"`` the struct GNN's guided logits are those of the supervised pass (same
        dropout masks; the guidance then reaches the struct branch's own input projection too, which no other
        branch reads), so no second struct pass is run."""
        if "_guide_inputs" not in out:
            return out["branches"][rows, cols]
        dropped, h0, struct_adj = out["_guide_inputs"]
        parts = []
        for j, b in enumerate(self.branches):
            r = rows[cols == j]
            if r.numel() == 0:
                continue
            if _is_struct(b) and self.struct_guide == "shared":
                parts.append(out["branches"][r, j])
            elif _is_struct(b):
                parts.append(self._struct_logits(b, h0.detach(), struct_adj)[r])
            else:
                parts.append(self.heads[b.replace(":", "_")](dropped[b][r].detach()))
        return torch.cat(parts, 0)


class GraphMNL(NodeClassifier):
    """GraphMNL node classifier. See the module docstring and docs/graphmnl.md for the maths.

    Parameters (beyond the shared ones: hidden, dropout, lr, weight_decay, epochs, patience, seed, ...):
        branches: branch names (default: raw and prop for every modality, plus struct); names that all start
            with ``+`` are added to the default set (``["+struct:gcn"]``). ``topo`` adds the
            optional structure-only branch ReLU(Â E + b_E) with a learned vector per node (transductive, N·h
            parameters; it competes with struct within the struct kind); ``topo_k``: its propagation steps K in
            ReLU(Â^K E + b_E) (default 1). ``struct:gcn`` / ``struct:sage`` / ``struct:appnp``: a second structure
            GNN with that backbone on the struct branch's input (needs ``struct``, another backbone than
            ``struct_backbone``; it competes with struct within the struct kind).
        prop_k: hops K of the propagation of the ``prop`` branches.
        struct_input / input_temperature: the struct branch's input, the plain mean of the present modalities'
            projections (``mean``), their reliability-weighted mean, softmax of r̃_{raw:m} / T_in (``reliability``),
            the projections side by side (``concat``, an M·h-wide first GNN layer), or its own early-fusion input
            [x_1 | ... | x_M | presence] (``early``: the struct branch is then sage-early's network, sharing nothing),
            or its own projection of that input, ReLU(Q drop(x_early)), before the GNN (``own``, the default: one
            input-width product instead of GraphSAGE's two).
        prop_mode: ``input`` (prop:m projects the cached Â^K X_m) or ``hidden`` (the default: prop:m propagates
            the shared projection, ReLU(Â^K (W_m x_m) + b_m), one d_m x h product per modality instead of two).
        struct_backbone / struct_layers: the structure branch's GNN (gcn, appnp, sage) and depth.
        temperature: T of the reliability-weighted fusion softmax.
        beta / smooth_steps: graph-aware smoothing r̃ = (1 − β) r + β N(r̃), ``smooth_steps`` times.
        delta: a branch is inferior when its r̃ is at least δ below the dominant's.
        tau_s / tau_m / kappa: the gate 1[s < τ_s] σ(κ (m − τ_m)); ``gate=False`` opens it everywhere;
            ``tau_m=None`` keeps the instability term only (1[s < τ_s]: under the fused teacher the arbitration
            margin no longer says how sure the teacher is; it still costs against ``gate=False`` on Grocery,
            docs/graphmnl_rounds.md "Twenty-second round").
        ema_decay / instability_kind: the moving average of branch posteriors and the distance (tv | js).
        warmup: epochs without transfer.
        rho / nl_k: the negative-set rule (p_d,c < ρ, or the k least likely classes).
        nl_prior: per-class thresholds ρ C π_c with π the training labels' class shares (default True: rare
            classes are ruled out less readily); False for one threshold ρ (needed with ``nl_k``).
        lam: λ, the guidance weight.
        guidance: ``nl`` (target-preserving negative learning), ``ntkd`` (target-preserving non-target
            distillation: KL between the dominant's and the branch's renormalised non-target distributions, zero
            gradient on the target logit), ``kd`` (KL to the teacher: ablation),
            ``mnl`` (MNL's non-target soft CE: ablation), ``none`` (λ = 0).
        guidance_nodes: ``unlabelled`` (default), ``all`` or ``labelled``.
        guide_targets: ``all`` (default: every present branch at a gated node, the dominant and the struct GNN
            included: negative self-training of the whole library) or ``inferior`` (the spec's form: only the
            branches ≥ δ below the dominant).
        guide_heads_only: True (default): the guidance reaches each branch's layers above the shared first-layer
            projections P_m, not P_m (docs/graphmnl.md, "Target-preserving negative learning").
        struct_guide: ``detached`` (default: the guided struct GNN is evaluated a second time, on its detached input
            with fresh dropout masks) or ``shared`` (its supervised pass's logits are guided: one struct pass per
            step, and the guidance also reaches the struct branch's own input projection; needs ``struct_input``
            ``own`` or ``early``). Only read where the struct GNN is guided (``guide_targets="all"``). ``shared``
            saves 10-13% of a guided epoch and was level on Grocery but −0.23 validation macro-F1 on the robustness
            panel (docs/graphmnl_rounds.md, twenty-third round), so it is not the default.
        teacher: ``fused`` (default: C̄(i) from the fused prediction p_f(i)) or ``dominant`` (the spec's form:
            from the dominant branch's p_d(i)). The three defaults are docs/graphmnl_rounds.md's twentieth round;
            ``graphmnl-dominant-teacher`` is the spec's form (inferior targets, dominant teacher, one threshold).
        fixed_dominant: None (per-node arbitration) or a modality name / ``auto`` (one global dominant
            modality: ablation; ``auto`` takes the modality whose raw branch is the more reliable on average when the
            transfer starts). Every reader of the arbitration then sees the global choice: the dominant branch and
            the inferior set, the gate's margin, and the fused teacher, which fuses the branches by the fixed
            reliability instead of the per-node one (the prediction's own fusion keeps the per-node weights).
        fusion_prior: ``once`` (default: the fused logits count the training class prior once, Σ_b α_b z_b −
            (1 − Σ_g s_g²) log π over the experts g, kinds under grouped fusion; see ``prior_once_fusion``),
            ``predict`` (the same at prediction time only) or ``none`` (the plain weighted average).
        fusion_floor: ε in [0, 1) (default 0: off). Each branch enters the fusion as the log of its posterior
            mixed with the uniform, log((1 − ε) p_b + ε/C), instead of its logits: one branch can then move the
            fused log-odds of two classes by at most log(1 + (1 − ε)C/ε) times its weight, so a confidently wrong
            branch cannot veto the others (a robust product of experts).
        kind_weights: the branch kinds' shares in the grouped fusion: ``equal`` (default), ``validation``
            (fitted after training on the validation nodes' fused cross-entropy, simplex grid of step 0.05) or a
            dict of positive shares, e.g. ``{"raw": 1, "prop": 1, "struct": 2}``. Read back as ``kind_weights_``.
        batch_size / fanouts: mini-batch training on sampled neighbourhoods (default None: full batch). Each epoch
            starts with one eval-mode pass over the whole graph that sets the reliability, arbitration, gate and
            teacher; each step trains on a batch of labelled seeds plus ``batch_size`` guided unlabelled seeds
            drawn uniformly, with the guidance term scaled to an unbiased estimate of the full-batch one
            (docs/graphmnl.md, "Mini-batch training"). Data-parallel with ``distributed`` (each rank trains on its
            shard of the labelled seeds and its own draw of guided seeds; every rank computes the epoch state on
            the whole graph). On a memory-mapped graph the features stay on disk.
    """

    description = "GraphMNL: graph-aware reliability arbitration + gated target-preserving negative learning"
    defaults = {
        "branches": None,
        "prop_k": 2,
        "topo_k": 1,
        "prop_mode": "hidden",  # validation, docs/graphmnl_rounds.md "Ninth round"
        "struct_input": "own",  # validation, docs/graphmnl_rounds.md "Ninth round"
        "fusion": "grouped",  # validation, docs/graphmnl_rounds.md "Third validation round"
        "input_temperature": 0.1,
        "struct_backbone": "sage",  # validation sweep, docs/graphmnl_rounds.md
        "struct_layers": 2,
        "temperature": 0.3,  # validation, docs/graphmnl_rounds.md "Third validation round"
        "beta": 0.5,
        "smooth_steps": 2,
        "delta": 0.05,
        "gate": False,  # validation, docs/graphmnl_rounds.md "Twenty-first round" (the spec's gate: gate=True)
        "tau_s": 0.3,
        "tau_m": 0.05,
        "kappa": 20.0,
        "ema_decay": 0.9,
        "instability_kind": "tv",
        "warmup": 20,
        "rho": 0.05,
        "nl_k": None,
        "lam": 1.0,
        "guidance": "nl",
        "guidance_nodes": "unlabelled",
        "fixed_dominant": None,
        "score_rule": "mean",
        "nl_balance": False,
        "nl_prior": True,  # validation, docs/graphmnl_rounds.md "Twentieth round"
        "guide_heads_only": True,
        "struct_guide": "detached",
        "guide_targets": "all",  # validation, docs/graphmnl_rounds.md "Twentieth round"
        "teacher": "fused",  # validation, docs/graphmnl_rounds.md "Twentieth round"
        "kind_weights": "equal",
        "fusion_prior": "once",  # validation, docs/graphmnl_rounds.md "Fifth validation round"
        "fusion_floor": 0.0,
    }

    # ------------------------------------------------------------------ set-up
    def _check_params(self) -> None:
        super()._check_params()
        p = self.params
        if p["guidance"] not in GUIDANCE:
            raise ConfigError(f"guidance: {p['guidance']!r}; allowed: {', '.join(GUIDANCE)}")
        if p["guide_targets"] not in ("inferior", "all"):
            raise ConfigError(f"guide_targets: {p['guide_targets']!r}; allowed: inferior, all")
        if p["prop_mode"] not in ("input", "hidden"):
            raise ConfigError(f"prop_mode: {p['prop_mode']!r}; allowed: input, hidden")
        if p["fusion"] not in ("reliability", "learned", "grouped"):
            raise ConfigError(f"fusion: {p['fusion']!r}; allowed: reliability, learned, grouped")
        if p["struct_input"] not in ("mean", "reliability", "concat", "early", "own"):
            raise ConfigError(f"struct_input: {p['struct_input']!r}; allowed: mean, reliability, concat, early, own")
        if p["struct_guide"] not in ("detached", "shared"):
            raise ConfigError(f"struct_guide: {p['struct_guide']!r}; allowed: detached, shared")
        if p["struct_guide"] == "shared" and p["struct_input"] not in ("own", "early"):
            raise ConfigError(f"struct_guide='shared' needs struct_input own or early (got {p['struct_input']!r}): "
                              "the struct branch's input is then built from the shared projections, which the "
                              "guidance must not reach (guide_heads_only)")
        if p["input_temperature"] <= 0:
            raise ConfigError(f"input_temperature: {p['input_temperature']!r}; allowed: > 0")
        if p["teacher"] not in ("dominant", "fused"):
            raise ConfigError(f"teacher: {p['teacher']!r}; allowed: dominant, fused")
        if p["score_rule"] not in ("mean", "agreement", "confidence"):
            raise ConfigError(f"score_rule: {p['score_rule']!r}; allowed: mean, agreement, confidence")
        if p["guidance_nodes"] not in ("unlabelled", "all", "labelled"):
            raise ConfigError(f"guidance_nodes: {p['guidance_nodes']!r}; allowed: unlabelled, all, labelled")
        if p["temperature"] <= 0:
            raise ConfigError(f"temperature: {p['temperature']!r}; allowed: > 0")
        kw = p["kind_weights"]
        if isinstance(kw, dict):
            bad = {k: v for k, v in kw.items() if k not in ("raw", "prop", "struct") or not isinstance(v, (int, float))
                   or not v > 0}
            if bad or not kw:
                raise ConfigError(f"kind_weights: {kw!r}; a dict needs positive numbers for the kinds raw, prop, struct")
            if p["fusion"] != "grouped":
                raise ConfigError("kind_weights: kind shares apply to fusion='grouped' only")
        elif kw not in ("equal", "validation"):
            raise ConfigError(f"kind_weights: {kw!r}; allowed: equal, validation, or a dict of positive kind shares")
        elif kw == "validation" and p["fusion"] != "grouped":
            raise ConfigError("kind_weights: kind shares apply to fusion='grouped' only")
        ff = p["fusion_floor"]
        tm = p["tau_m"]
        if tm is not None and (isinstance(tm, bool) or not isinstance(tm, (int, float)) or not math.isfinite(tm)):
            raise ConfigError(f"tau_m: {tm!r}; allowed: a finite number, or None (no margin term in the gate)")
        if isinstance(ff, bool) or not isinstance(ff, (int, float)) or not 0 <= ff < 1:
            raise ConfigError(f"fusion_floor: {ff!r}; allowed: a number in [0, 1) (0 switches it off)")
        if p["fusion_prior"] not in ("none", "once", "predict"):
            raise ConfigError(f"fusion_prior: {p['fusion_prior']!r}; allowed: none, once, predict")
        if p["nl_prior"] and p["nl_k"]:
            raise ConfigError("nl_prior: per-class thresholds need the threshold rule (rho); use nl_k=None, "
                              "or nl_prior=False with nl_k (nl_prior is on by default)")
        if p["lam"] < 0:
            raise ConfigError(f"lam: {p['lam']!r}; allowed: >= 0")
        if not isinstance(p["topo_k"], int) or isinstance(p["topo_k"], bool) or p["topo_k"] < 1:
            raise ConfigError(f"topo_k: {p['topo_k']!r}; allowed: an integer >= 1")
        if p["guidance"] != "none" and p["lam"] > 0 and p["warmup"] >= p["epochs"] \
                and (p["warmup"], p["epochs"]) not in _WARNED:  # once per process and setting, not once per seed
            _WARNED.add((p["warmup"], p["epochs"]))
            log.warning("warmup %d >= epochs %d: the guidance term never starts, so this fit is GraphMNL without "
                        "guidance (graphmnl-no-guidance); lower warmup (mini-batch epochs hold many steps each) or "
                        "raise epochs", p["warmup"], p["epochs"])
        if not 0 <= p["ema_decay"] < 1:
            raise ConfigError(f"ema_decay: {p['ema_decay']!r}; allowed: 0 <= ema_decay < 1")

    def _branches(self, graph) -> tuple[str, ...]:
        given = tuple(self.params["branches"] or ())
        added = [b for b in given if isinstance(b, str) and b.startswith("+")]
        if added and len(added) != len(given):
            raise ConfigError(f"branches: {list(given)}; either name every branch or only add to the default set "
                              "with '+' on every name (e.g. ['+struct:gcn'])")
        if added:  # '+name': the default library plus these
            branches = default_branches(graph.modalities) + tuple(b[1:] for b in added)
        else:
            branches = given or default_branches(graph.modalities)
        valid = set(default_branches(graph.modalities)) | set(OPTIONAL_BRANCHES)
        bad = [b for b in branches if b not in valid]
        if bad or not branches:
            raise ConfigError(f"branches: {bad or branches}; allowed: {', '.join(sorted(valid))}")
        if len(set(branches)) != len(branches):
            raise ConfigError(f"branches: {list(branches)}; a branch is named twice")
        extra = [b for b in branches if b.startswith("struct:")]
        if extra and "struct" not in branches:
            raise ConfigError(f"branches: {extra[0]} reads the struct branch's input; add 'struct' to the branches")
        same = [b for b in extra if b == f"struct:{self.params['struct_backbone']}"]
        if same:
            raise ConfigError(f"branches: {same[0]} repeats struct (struct_backbone={self.params['struct_backbone']!r});"
                              f" pick another backbone: {', '.join(STRUCT_BACKBONES)}")
        return branches

    def _inputs(self, graph) -> GraphInputs:
        inp = super()._inputs(graph)
        branches = self._branches(graph)
        for m in {b.split(":", 1)[1] for b in branches if b.startswith("prop:") and self.params["prop_mode"] == "input"}:
            inp.extra[f"prop_{m}"] = propagate_features(graph, inp.xs[m], self.params["prop_k"])
        if "topo" in branches:
            fitted = getattr(self.__dict__.get("model_"), "topo_emb", None)
            if fitted is not None and fitted.shape[0] != graph.num_nodes:
                raise ConfigError(f"the topo branch is transductive: fitted on a graph of {fitted.shape[0]} nodes, "
                                  f"got {graph.num_nodes}; refit on this graph or drop 'topo' from branches")
            # global node ids (a sampled subgraph's rows of E) and where topo abstains: nodes without an edge
            inp.extra["node_id"] = torch.arange(graph.num_nodes)
            ei = graph.edge_index
            deg = torch.zeros(graph.num_nodes, dtype=torch.long)
            off = ei[0] != ei[1]
            deg.index_add_(0, ei[0][off], torch.ones(int(off.sum()), dtype=torch.long))
            deg.index_add_(0, ei[1][off], torch.ones(int(off.sum()), dtype=torch.long))
            inp.extra["topo_present"] = deg > 0
        if "model_" in self.__dict__:  # a fitted model: reliability from its own branch predictions
            inp.extra["reliability"] = self._reliability_fixed_point(graph, inp)
        return inp

    def _build(self, graph, inputs):
        p = self.params
        self.branches_ = self._branches(graph)
        self._adj = graph_adjacency(graph)
        self._labelled = graph.train_mask.clone()
        self._y_train = torch.where(self._labelled, graph.y, torch.full_like(graph.y, -1))
        self._ema = None
        self._ema_fused = None
        self._epoch_stats: list[dict] = []
        self._fixed_index = None
        for key in ("_eval_pass", "_next_reliability", "_mb_state"):  # a previous fit's per-epoch state
            self.__dict__.pop(key, None)
        if p["batch_size"] is not None:  # the guided seeds of mini-batch training: their own draws and sampler
            # data-parallel: each rank draws its own guided seeds and samples its own neighbourhoods (the ranks'
            # steps are independent unbiased estimates, which DDP averages); one process keeps seed + 1, seed + 2
            ddp = self._use_ddp()
            s_gen = D.derive_seed(p["seed"], D.rank(), 3) if ddp else p["seed"] + 1
            s_smp = D.derive_seed(p["seed"], D.rank(), 4) if ddp else p["seed"] + 2
            self._mb_gen = torch.Generator().manual_seed(s_gen)
            self._mb_sampler = NeighborSampler(graph.edge_index, graph.num_nodes, p["fanouts"], p["batch_size"],
                                               shuffle=False, generator=torch.Generator().manual_seed(s_smp))
        net = GraphMNLNet(self.branches_, graph.modalities, graph.modality_dims, p["hidden"], graph.num_classes,
                          p["dropout"], p["struct_backbone"], p["struct_layers"], p["temperature"],
                          prop_k=p["prop_k"], prop_mode=p["prop_mode"], struct_input=p["struct_input"],
                          num_nodes=graph.num_nodes, topo_k=p["topo_k"])
        net.guide_heads_only = bool(p["guide_heads_only"])
        net.struct_guide = p["struct_guide"]
        net.fusion = p["fusion"]
        if p["fusion"] == "learned":  # α(i) = softmax_b(r̃_b(i) / T + c_b), c_b learned by the fused CE
            net.fusion_bias = nn.Parameter(torch.zeros(len(self.branches_)))
        net.input_temperature = float(p["input_temperature"])
        net.fusion_prior = p["fusion_prior"]
        net.fusion_floor = float(p["fusion_floor"])
        # log π of the training labels (add-one smoothed, so a class without training nodes stays finite)
        counts = torch.bincount(graph.y[graph.train_mask], minlength=graph.num_classes).double() + 1.0
        net.log_prior.copy_((counts / counts.sum()).log().float())
        return net

    # ------------------------------------------------------------------ reliability
    def _scores(self, out: dict) -> tuple[Tensor, Tensor]:
        """Smoothed reliability r̃ [n, B] and branch posteriors [n, B, C] from a forward output (no grad)."""
        with torch.no_grad():
            probs = torch.softmax(out["branches"].detach(), -1)
            fused = torch.softmax(out["logits"].detach(), -1)
            present = out["present"]
            rule = self.params["score_rule"]
            fields = ("score",) if rule == "mean" else ("score", rule)
            sc = branch_scores(probs, present, self._y_train, self._labelled, fused, self._adj, fields=fields)
            score = sc["score"]
            if rule != "mean":  # unlabelled nodes: agreement (or confidence) alone instead of their mean
                unl = (~self._labelled).unsqueeze(1) & present
                score = torch.where(unl, sc["agreement" if rule == "agreement" else "confidence"], score)
            r = smooth_scores(score, present, self._adj, self.params["beta"], self.params["smooth_steps"])
        return r, probs

    def _reliability_fixed_point(self, graph, inp: GraphInputs, iterations: int = 2) -> Tensor:
        """Branch logits do not depend on the fusion weights, so r̃ is recomputed from the fitted model's
        branches: start from uniform weights, then alternate scores -> fusion ``iterations`` times."""
        self._adj = graph_adjacency(graph)
        labelled = graph.get("train_mask")
        self._labelled = labelled.clone() if labelled is not None else torch.zeros(graph.num_nodes, dtype=torch.bool)
        self._y_train = torch.where(self._labelled, graph.y, torch.full_like(graph.y, -1))
        dev = inp.to(self.device_)
        dev.extra.pop("reliability", None)
        with torch.no_grad():
            for _ in range(iterations):
                r, _ = self._scores(self._whole_output(self.model_, dev, graph))
                dev.extra["reliability"] = r
        return dev.extra["reliability"].cpu()

    @staticmethod
    def _blockwise(model) -> bool:
        """Whether ``model``'s eval-mode forward reads memory-mapped features block by block (then a whole-graph
        pass is one forward over all nodes: the first layers project the blocks row chunk by row chunk, the rest
        runs at width h in memory). True for ``prop_mode="hidden"`` with ``struct_input="own"`` (the defaults);
        other settings take sampled inference."""
        return model.prop_mode == "hidden" and ("struct" not in model.branches or model.struct_input == "own")

    def _eval_logits(self, model, inputs, dev_inputs, graph, nodes: Tensor, device) -> Tensor:
        """Mini-batch mode: the evaluation's whole-graph pass is kept (:attr:`reuse_eval_pass`) for the next epoch's
        state, which would otherwise repeat it with the same parameters and reliability (bitwise the same output)."""
        if self.params["batch_size"] is None or not self.reuse_eval_pass or (self._lazy(graph) and not self._blockwise(model)):
            return super()._eval_logits(model, inputs, dev_inputs, graph, nodes, device)
        if self._lazy(graph):
            inputs.norm_adj()
            inputs.mean_adj()
            dev_inputs = inputs.to(device)
        out = self._whole_output(model, dev_inputs, graph)
        self._eval_pass = out
        return out["logits"]

    #: mini-batch mode: reuse the evaluation pass as the next epoch's state pass (off only to test that it is exact)
    reuse_eval_pass: bool = True

    def _sampled_logits(self, model, inputs: GraphInputs, graph, nodes: Tensor, device) -> Tensor:
        """Evaluation on a memory-mapped graph: the block-by-block whole-graph pass where the model allows it
        (the same logits as in memory), else the baselines' sampled inference."""
        if not self._blockwise(model):
            return super()._sampled_logits(model, inputs, graph, nodes, device)
        inputs.norm_adj()  # built once on the caller's inputs, then carried by .to()
        inputs.mean_adj()
        logits = self._whole_output(model, inputs.to(device), graph)["logits"]
        out = torch.zeros_like(logits)
        idx = nodes.to(logits.device)
        out[idx] = logits[idx]
        return out

    def _whole_output(self, model, inputs: GraphInputs, graph) -> dict:
        """The model's eval-mode output (branch logits, fused logits, presence, fusion weights) for every node: one
        full-graph pass (on a memory-mapped graph with the first layers computed block by block, see
        :meth:`_blockwise`), or, for other settings on a memory-mapped graph, sampled mini-batch inference over all
        nodes (the training fan-outs and a fixed sampling seed, as the baselines' sampled evaluation)."""
        was = model.training
        model.eval()
        with torch.no_grad():
            if not self._lazy(graph) or self._blockwise(model):
                out = model(inputs)
            else:
                sampler = self._inference_sampler(graph)
                sampler.generator = torch.Generator().manual_seed(self.params["seed"])
                n, nb, c, dev = graph.num_nodes, len(self.branches_), graph.num_classes, self.device_
                out = {"branches": torch.zeros(n, nb, c, device=dev), "logits": torch.zeros(n, c, device=dev),
                       "present": torch.zeros(n, nb, dtype=torch.bool, device=dev),
                       "alpha": torch.zeros(n, nb, device=dev)}
                for batch in sampler.batches(torch.arange(n)):
                    o = model(inputs.subset(batch.n_id, batch.edge_index).to(dev))
                    ids = batch.n_id[:batch.batch_size].to(dev)
                    for key in out:
                        out[key][ids] = o[key][:batch.batch_size]
        model.train(was)
        return out

    # ------------------------------------------------------------------ training
    def _loss(self, out, y, idx, epoch):
        p = self.params
        z, present = out["branches"], out["present"]
        n, nb, c = z.shape
        # supervised terms: every branch on the training nodes where it is present, and the fusion
        zi, pi, yi = z[idx], present[idx].float(), y[idx]
        ce_b = F.cross_entropy(zi.reshape(-1, c), yi.repeat_interleave(nb), reduction="none").view(-1, nb)
        count = pi.sum(0)
        n_lab = int(self._labelled.sum())
        if idx.numel() < n_lab:
            # a data-parallel shard of the labelled nodes: normalise by the branch's present count over all of
            # them times the shard's share, so that the shard-size-weighted mean over the ranks (what DDP's
            # gradient average and the W |S_r| / N loss scaling compute) is the full-batch per-branch mean
            count = present[self._labelled.to(present.device)].float().sum(0) * (idx.numel() / n_lab)
        ce_branches = ((ce_b * pi).sum(0) / count.clamp(min=1)).sum()
        ce_fused = F.cross_entropy(out["logits"][idx], yi)
        loss = ce_branches + ce_fused

        st = self._guidance_state(out, epoch)
        g, inferior, teacher = st["g"], st["inferior"], st["teacher"]
        guide = z.new_zeros(())
        if st["active"] and bool((g > 0).any()):
            # the (node, branch) pairs that receive guidance, branch-major: g(i) > 0 and b inferior at i
            cols, rows = ((g > 0).unsqueeze(1) & inferior).T.nonzero(as_tuple=True)
            if rows.numel():
                zg = self.model_.guided_logits(out, rows, cols)
                guide = self._guidance(zg, rows, teacher, g, n)
                loss = loss + p["lam"] * guide
        # fusion weights of the next epoch come from this epoch's reliability
        self._next_reliability = st["r"]
        stats = {
            "loss": float(loss.detach()), "ce": float((ce_branches + ce_fused).detach()), "guide": float(guide.detach()),
            "gate_rate": st["gate_rate"], "inferior_rate": st["inferior_rate"],
        }
        return loss, stats

    def _guidance_state(self, out: dict, epoch: int) -> dict:
        """The per-node guidance state of one epoch from a forward output over the whole graph (no grad):
        reliability r̃, arbitration, the moving averages, the gate g (zero where guidance is off: warm-up,
        nodes outside ``guidance_nodes``), the guided targets (inferior branches, or all present ones) and the
        teacher's posterior. Updates the moving averages."""
        p = self.params
        present = out["present"]
        n = present.shape[0]
        r, probs = self._scores(out)
        active = epoch >= p["warmup"] and p["guidance"] != "none" and p["lam"] > 0
        fixed = p["fixed_dominant"] is not None and (active or p["fixed_dominant"] != "auto")
        # ``auto`` picks the global dominant from the warmed-up branches when the transfer starts (at epoch 0 the
        # reliability of untrained branches would make the pick arbitrary); until then nothing reads the arbitration
        r_arb = self._fixed_reliability(r, present) if fixed else r
        dom, inferior, margin = arbitrate(r_arb, present, p["delta"])
        if p["fusion"] == "grouped":
            inferior, margin = self._grouped_arbitration(r_arb, present)
        self._ema = ema_update(self._ema, probs, p["ema_decay"])
        rows = torch.arange(n, device=probs.device)
        d = dom.clamp(min=0)
        p_dom = probs[rows, d]
        if p["teacher"] == "fused":  # the teacher's own stability: the fused posterior against its moving average
            z_t = out["logits"].detach()
            if fixed:  # ablation: the teacher fuses the branches by the global dominant's weights, not per node
                z_t = self.model_.fuse(out["branches"].detach(), self.model_.fusion_weights(r_arb, present))
            p_fused = torch.softmax(z_t, -1)
            self._ema_fused = ema_update(getattr(self, "_ema_fused", None), p_fused, p["ema_decay"])
            s = instability(p_fused, self._ema_fused, p["instability_kind"])
        else:
            s = instability(p_dom, self._ema[rows, d], p["instability_kind"])
        if p["gate"]:
            g = transfer_gate(s, margin, p["tau_s"], p["tau_m"], p["kappa"])
        else:
            g = torch.ones(n, device=probs.device)
        g = g * (dom >= 0)
        nodes = {"unlabelled": ~self._labelled, "all": torch.ones_like(self._labelled),
                 "labelled": self._labelled}[p["guidance_nodes"]].to(probs.device)
        g = g * nodes.float() * float(active)
        targets = inferior if p["guide_targets"] == "inferior" else present
        teacher = p_dom if p["teacher"] == "dominant" else p_fused
        return {"r": r, "g": g, "inferior": targets, "teacher": teacher, "active": active,
                "gate_rate": float((g > 0.5).float().sum() / nodes.float().sum().clamp(min=1)),
                "inferior_rate": float(inferior.float().mean())}

    def _grouped_arbitration(self, r: Tensor, present: Tensor) -> tuple[Tensor, Tensor]:
        """Arbitration among comparable branches (``fusion="grouped"``): within each kind (raw, prop) the branches
        ≥ δ below that kind's best are inferior; the margin is the largest within-kind margin at the node."""
        inferior = torch.zeros_like(present)
        margin = torch.zeros(r.shape[0], device=r.device)
        for cols in self.model_.kind_columns():
            if len(cols) < 2:
                continue
            _, inf_k, m_k = arbitrate(r[:, cols], present[:, cols], self.params["delta"])
            inferior[:, cols] = inf_k
            margin = torch.maximum(margin, m_k)
        return inferior, margin

    def _guidance(self, z: Tensor, rows: Tensor, p_dom: Tensor, g: Tensor, n_total: int,
                  labelled: Tensor | None = None, y_train: Tensor | None = None) -> Tensor:
        """(1/N) Σ_pairs g(i) L(i, b) over the guided (node i = ``rows[k]``, inferior branch b) pairs, whose
        logits are ``z [P, C]``; ``p_dom``, ``g`` (and ``labelled``, ``y_train``: by default the whole graph's)
        are per node ``[n, ...]``, with ``N`` = ``n_total``."""
        p = self.params
        kind = p["guidance"]
        labelled = self._labelled if labelled is None else labelled
        y_train = self._y_train if y_train is None else y_train
        pd = p_dom[rows]
        if kind == "nl":
            prior = None
            if p["nl_prior"]:  # per-class thresholds ρ C π_c, π the training labels' class shares (add-one)
                prior = torch.bincount(self._y_train[self._labelled], minlength=p_dom.shape[1]).to(p_dom) + 1.0
            neg = negative_set(p_dom, y_train, labelled, rho=None if p["nl_k"] else p["rho"], k=p["nl_k"],
                               class_prior=prior)
            w = None
            if p["nl_balance"]:
                # class-balanced push-down: every class receives the same total gated negative mass, so classes
                # the dominant rarely predicts (rare ones) are not suppressed everywhere
                mass = (g.unsqueeze(1) * neg).sum(0)
                w = torch.where(mass > 0, mass[mass > 0].mean() / mass.clamp(min=1e-12), torch.zeros_like(mass))
                w = w.unsqueeze(0)
            per = negative_learning_loss(z, neg[rows], w)
        elif kind == "kd":
            per = (pd * (torch.log(pd.clamp_min(1e-12)) - F.log_softmax(z, -1))).sum(-1)
        else:  # mnl / ntkd: against the dominant on the non-target classes (target = label, or the dominant's class)
            tgt = torch.where(labelled[rows], y_train[rows], pd.argmax(1))
            per = nontarget_soft_ce(z, pd, tgt) if kind == "mnl" else nontarget_distillation(z, pd, tgt)
        return (g[rows] * per).sum() / n_total

    def _fixed_reliability(self, r: Tensor, present: Tensor) -> Tensor:
        """Ablation: one global dominant modality. Its branches get reliability 1, all others 0."""
        if self._fixed_index is None:
            fd = self.params["fixed_dominant"]
            mods = self.modalities_
            if fd == "auto":  # the modality whose raw branch is most reliable on average (training signal only)
                raw = [self.branches_.index(f"raw:{m}") for m in mods if f"raw:{m}" in self.branches_]
                fd = mods[int(torch.stack([r[:, j].mean() for j in raw]).argmax())] if raw else mods[0]
            if fd not in mods:
                raise ConfigError(f"fixed_dominant: {fd!r}; allowed: None, auto, {', '.join(mods)}")
            self._fixed_index = torch.tensor([b.endswith(f":{fd}") for b in self.branches_])
        fixed = self._fixed_index.to(r.device).float().expand_as(r)
        return torch.where(present, fixed + 1e-3 * r, torch.zeros_like(r))

    def _before_epoch(self, epoch: int, inputs: GraphInputs, graph) -> None:
        if self.params["batch_size"] is not None:
            # mini-batch: this epoch's guidance state from one eval-mode pass over the whole graph (fusion weights
            # from the previous state's reliability, as a full-batch epoch reads the previous epoch's)
            # the previous epoch's evaluation pass ran the same parameters with the same reliability: reuse it
            out = self.__dict__.pop("_eval_pass", None)
            if out is None:
                out = self._whole_output(self.model_, inputs, graph)
            st = self._guidance_state(out, epoch)
            inputs.extra["reliability"] = st["r"]
            self._mb_state = st
            return
        nxt = self.__dict__.pop("_next_reliability", None)
        if nxt is not None:
            inputs.extra["reliability"] = nxt

    def _batch_steps(self, model, inputs: GraphInputs, ycpu: Tensor, batches, opt, epoch: int, device):
        """Mini-batch GraphMNL (``batch_size`` set): one optimiser step per batch of labelled seed nodes. Where
        guidance is on, ``batch_size`` guided nodes (g(i) > 0 with a guided branch; drawn uniformly from all of
        them) join the batch's seeds and its neighbourhood sample. The step's loss is the supervised terms on the
        labelled seeds plus λ (U / N) · mean over the guided seeds of Σ_b g(i) L(i, b), U the number of guided
        nodes: an unbiased estimate of the full-batch loss. Reliability, arbitration, gate and teacher come from
        the epoch's state (:meth:`_before_epoch`)."""
        st = self._mb_state
        inputs.extra["reliability"] = st["r"].detach().cpu()
        n = st["g"].shape[0]
        cand = torch.zeros(0, dtype=torch.long)
        if st["active"]:
            cand = ((st["g"] > 0).unsqueeze(1) & st["inferior"]).any(1).nonzero().view(-1).cpu()
        totals: dict[str, float] = {}
        count = 0
        for batch in batches:
            seeds = batch.n_id[:batch.batch_size]
            nl = seeds.numel()
            if cand.numel():
                pick = cand[torch.randperm(cand.numel(), generator=self._mb_gen)[: self.params["batch_size"]]]
                pick = pick[~torch.isin(pick, seeds)]
                if pick.numel():
                    batch = self._mb_sampler.sample(torch.cat([seeds, pick]))
            sub = inputs.subset(batch.n_id, batch.edge_index).to(device)
            out = model(sub)
            loss, parts = self._batch_loss(out, batch, nl, ycpu, st, int(cand.numel()), n, device)
            opt.zero_grad()
            loss.backward()
            opt.step()
            for k, v in parts.items():
                totals[k] = totals.get(k, 0.0) + v * nl
            count += nl
        return totals, count

    def _batch_loss(self, out: dict, batch, nl: int, ycpu: Tensor, st: dict, n_guided: int, n: int, device):
        """The loss of one mini-batch: seeds ``0..nl-1`` are labelled, seeds ``nl..batch_size-1`` guided."""
        p = self.params
        z, present = out["branches"], out["present"]
        nb, c = z.shape[1], z.shape[2]
        y = ycpu[batch.n_id[:nl]].to(device)
        pi = present[:nl].float()
        ce_b = F.cross_entropy(z[:nl].reshape(-1, c), y.repeat_interleave(nb), reduction="none").view(-1, nb)
        ce_branches = ((ce_b * pi).sum(0) / pi.sum(0).clamp(min=1)).sum()
        ce_fused = F.cross_entropy(out["logits"][:nl], y)
        loss = ce_branches + ce_fused
        guide = z.new_zeros(())
        m = batch.batch_size - nl
        if m > 0 and n_guided > 0:
            gid = batch.n_id[nl:batch.batch_size].to(st["g"].device)
            ns = z.shape[0]
            g_loc = z.new_zeros(ns)
            g_loc[nl:batch.batch_size] = st["g"][gid].to(device)
            teach = z.new_zeros(ns, c)
            teach[nl:batch.batch_size] = st["teacher"][gid].to(device)
            targets = torch.zeros(ns, nb, dtype=torch.bool, device=device)
            targets[nl:batch.batch_size] = st["inferior"][gid].to(device)
            cols, rows = ((g_loc > 0).unsqueeze(1) & targets).T.nonzero(as_tuple=True)
            if rows.numel():
                zg = self.model_.guided_logits(out, rows, cols)
                ids = batch.n_id.to(self._labelled.device)
                # (U / N) · mean over the m guided seeds: _guidance divides its sum by n_total = m N / U
                guide = self._guidance(zg, rows, teach, g_loc, m * n / n_guided,
                                       labelled=self._labelled[ids].to(device), y_train=self._y_train[ids].to(device))
                loss = loss + p["lam"] * guide
        stats = {"loss": float(loss.detach()), "ce": float((ce_branches + ce_fused).detach()),
                 "guide": float(guide.detach()), "gate_rate": st["gate_rate"], "inferior_rate": st["inferior_rate"]}
        return loss, stats

    # ------------------------------------------------------------------ diagnostics
    def fit(self, graph, on_epoch=None):
        # a refit starts from scratch: a previous fit's model must not set this fit's inputs (fitted reliability,
        # the topo branch's node count)
        self.__dict__.pop("model_", None)
        super().fit(graph, on_epoch=on_epoch)
        for key in ("_eval_pass", "_mb_state", "_next_reliability"):  # per-epoch whole-graph tensors
            self.__dict__.pop(key, None)
        kw = self.params["kind_weights"]
        if isinstance(kw, dict):
            self._set_kind_shares({k: float(kw.get(k, 1.0)) for k in self.model_.kinds()})
        elif kw == "validation":
            self._fit_kind_shares(graph)
        share = self.model_.kind_share
        self.kind_weights_ = dict(zip(self.model_.kinds(), (share / share.sum()).tolist()))
        self.diagnostics_ = self.diagnose(graph)
        return self

    def _set_kind_shares(self, shares: dict[str, float]) -> None:
        self.model_.kind_share.copy_(torch.tensor([shares[k] for k in self.model_.kinds()]))

    @torch.no_grad()
    def _fit_kind_shares(self, graph, step: float = 0.05) -> None:
        """``kind_weights="validation"``: after training, the kinds' shares of the grouped fusion minimise the
        fused prediction's cross-entropy on the validation nodes, over the simplex grid with steps of ``step``
        (every share ≥ ``step``). The branches and their within-kind reliability weights stay as trained: this
        is a stacking step with as many free numbers as kinds minus one, fitted on held-out labels."""
        val = graph.split_index("val") if graph.get("val_mask") is not None else torch.zeros(0, dtype=torch.long)
        if val.numel() == 0:
            raise ConfigError("kind_weights='validation' needs validation nodes (graph.val_mask); none are set")
        model = self.model_
        kinds = model.kinds()
        model.kind_share.fill_(1.0)
        zk, kp, _ = self.kind_logits(graph)
        val = val.to(zk.device)
        zk, kp, y = zk[val], kp[val], graph.y.to(zk.device)[val]  # [v, K, C], [v, K]
        units = int(round(1 / step))
        best, best_loss = None, float("inf")
        for combo in _compositions(units, len(kinds)):
            w = torch.tensor(combo, dtype=zk.dtype, device=zk.device) / units
            share = kp * w
            share = share / share.sum(1, keepdim=True).clamp(min=1e-12)
            fused = (share.unsqueeze(-1) * zk).sum(1)
            if model.fusion_prior != "none":
                fused = prior_once_fusion(fused, share, model.log_prior)
            loss = float(F.cross_entropy(fused, y))
            if loss < best_loss - 1e-9:
                best, best_loss = w, loss
        model.kind_share.copy_(best.to(model.kind_share))
        self.kind_weights_val_loss_ = best_loss

    @torch.no_grad()
    def kind_logits(self, graph) -> tuple[Tensor, Tensor, Tensor]:
        """Per branch kind (raw, prop, struct, in ``model_.kinds()`` order), the kind's within-kind fused logits
        Σ_{b in k} softmax_k(r̃ / T)_b z_b ``[n, K, C]`` (z_b as the fusion reads it, so robust log-posteriors with
        ``fusion_floor`` > 0), where the kind is present ``[n, K]`` (float), and every
        branch's logits ``[n, B, C]``; eval mode, reliability from the fitted model. These are the kinds' votes
        that the grouped fusion weighs (exploration and the validation fit of the kind shares)."""
        self._check_fitted()
        model = self.model_
        inp = self._inputs(graph).to(self.device_)
        out = self._whole_output(model, inp, graph)
        z, present, rel = out["branches"], out["present"], inp.extra["reliability"].to(out["branches"].device)
        zf = robust_log_probs(z, model.fusion_floor) if model.fusion_floor > 0 else z  # as the fusion reads them
        zk, kp = [], []
        for cols in model.kinds().values():
            a = masked_softmax(rel[:, cols] / model.temperature, present[:, cols])
            zk.append((a.unsqueeze(-1) * zf[:, cols]).sum(1))
            kp.append(present[:, cols].any(1).to(z.dtype))
        return torch.stack(zk, 1), torch.stack(kp, 1), z

    @torch.no_grad()
    def diagnose(self, graph) -> dict:
        """Per-node dominant branch, reliability, fusion weights, per-branch accuracy (val), gate rate per
        epoch, and -- where the graph carries ground truth -- the reliability AUC."""
        self._check_fitted()
        inp = self._inputs(graph).to(self.device_)
        out = self._whole_output(self.model_, inp, graph)
        r = inp.extra["reliability"]
        dom, inferior, margin = arbitrate(r, out["present"], self.params["delta"])
        val = graph.split_index("val")
        preds = out["branches"].argmax(-1)
        yv = graph.y[val].to(preds.device)
        branch_acc = {b: float((preds[val, j] == yv).float().mean()) for j, b in enumerate(self.branches_)}
        branch_f1 = {b: macro_f1(out["branches"][val, j], yv, graph.num_classes) for j, b in enumerate(self.branches_)}
        diag = {
            "branches": list(self.branches_),
            "dominant": dom.cpu(),
            "reliability": r.cpu(),
            "alpha": out["alpha"].cpu(),
            "margin": margin.cpu(),
            "branch_val_acc": branch_acc,
            "branch_val_f1": branch_f1,
            "dominant_share": {b: float((dom == j).float().mean()) for j, b in enumerate(self.branches_)},
            "gate_rate": self.history_.series("gate_rate"),
        }
        if graph.get("gt_quality") is not None and len(graph.modalities) == 2:
            aucs = {}
            for kind in ("raw", "prop"):
                cols = [f"{kind}:{m}" for m in graph.modalities]
                if all(c in self.branches_ for c in cols):
                    idx = [self.branches_.index(c) for c in cols]
                    aucs[kind] = reliability_auc(r[:, idx].cpu(), graph.gt_quality, graph.modality_mask,
                                                 graph.get("gt_biased"))
            diag["reliability_auc"] = aucs
        return diag


def _compositions(total: int, parts: int):
    """Every tuple of ``parts`` positive integers summing to ``total`` (the simplex grid without zero shares)."""
    if parts == 1:
        yield (total,)
        return
    for first in range(1, total - parts + 2):
        for rest in _compositions(total - first, parts - 1):
            yield (first,) + rest


# The spec's form of the transfer (docs/graphmnl.md): the inferior branches taught by the dominant, one threshold ρ,
# through the instability gate.
SPEC_TEACHER = {"guide_targets": "inferior", "teacher": "dominant", "nl_prior": False, "gate": True}

ABLATIONS = {
    "graphmnl": ({}, "GraphMNL (full)"),
    "graphmnl-no-smoothing": ({"beta": 0.0}, "GraphMNL without graph-aware smoothing of reliability (β = 0)"),
    "graphmnl-gate": ({"gate": True}, "GraphMNL with the spec's instability-aware transfer gate (off by default "
                                      "since docs/graphmnl_rounds.md's 21st round; the gate's ablation)"),
    "graphmnl-no-gate": ({"gate": False}, "GraphMNL without instability-aware gating (the default since the 21st "
                                          "round; kept as a name)"),
    "graphmnl-kd": ({"guidance": "kd"}, "GraphMNL with positive distillation (KL to the teacher) instead of NL"),
    "graphmnl-mnl-loss": ({"guidance": "mnl"}, "GraphMNL with MNL's non-target soft CE (not target-preserving)"),
    "graphmnl-fixed-dominant": ({"fixed_dominant": "auto"}, "GraphMNL with one global dominant modality"),
    "graphmnl-no-guidance": ({"guidance": "none"}, "GraphMNL branches + reliability fusion only (λ = 0)"),
    "graphmnl-ntkd": ({"guidance": "ntkd", **SPEC_TEACHER},
                      "GraphMNL with target-preserving non-target distillation instead of NL, in the spec's form "
                      "(dominant teacher, inferior targets; variant)"),
    "graphmnl-dominant-teacher": (SPEC_TEACHER,
                                  "GraphMNL in the spec's form: only the inferior branches taught, by the dominant "
                                  "branch, one NL threshold, gated (the default until docs/graphmnl_rounds.md's 20th round)"),
}


def register_graphmnl(register) -> None:
    for name, (fixed, desc) in ABLATIONS.items():
        register(name, GraphMNL, desc, group="graphmnl", **fixed)


def explain_report(est: GraphMNL, graph) -> dict:
    """A JSON-able summary of a fitted GraphMNL's arbitration on ``graph`` (for `magkit explain`)."""
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
    return {
        "method_params": {k: v for k, v in est.get_params().items()},
        "dataset": graph.name,
        "test": est.score(graph, "test"),
        "val": est.score(graph, "val"),
        "branches": d["branches"],
        "per_branch": per,
        "gate_rate": gate,
        "final_gate_rate": gate[best] if 0 <= best < len(gate) else float("nan"),
        "reliability_auc": d.get("reliability_auc", {}),
        "alpha_histograms": {b: torch.histc(d["alpha"][:, j], bins=20, min=0, max=1).tolist()
                             for j, b in enumerate(d["branches"])},
    }


def plot_diagnostics(report: dict, path):
    """Gate rate per epoch and the distribution of fusion weights per branch (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..eval.results import save_figure

    fig, (ax_g, ax_a) = plt.subplots(1, 2, figsize=(10, 3.8))
    ax_g.plot(report["gate_rate"])
    ax_g.set(xlabel="epoch", ylabel="share of guided nodes with g > 0.5", title="transfer gate", ylim=(0, 1))
    centers = [(i + 0.5) / 20 for i in range(20)]
    for b in report["branches"]:
        ax_a.plot(centers, report["alpha_histograms"][b], label=b)
    ax_a.set(xlabel="fusion weight α_b(i)", ylabel="nodes", title="fusion weights per branch", yscale="log")
    ax_a.legend(fontsize=7)
    return save_figure(fig, path)
