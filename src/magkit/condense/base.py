"""The gradient-matching condensation loop, written once (GCond, GCond-X, SR-GM and its ablations).

``GradientMatching(...).condense(graph)`` synthesises S = (A', X', Y') from ``graph``'s training nodes:

* Y' is fixed: max(⌊n_c·r⌋, 1) nodes per class c, the largest class takes what is left of ⌊N_train·r⌋ (so
  the budget is met and the class distribution kept). X' (all modality blocks) starts from random real
  training nodes of the class: their propagated rows Â^K X by default (``init="propagated"``, measured better
  on validation than raw rows X, docs/condensation.md), and the PGE's output bias starts at -5 so that A'
  starts nearly empty, i.e. at the GCond-X solution, and grows edges only where matching asks for them.
* A' = PGE_Φ(X') (``structure="pge"``): an MLP over every pair [x'_i ‖ x'_j] (width 128, two hidden layers
  with batch standardisation over the pairs), symmetrised, sigmoid, zero diagonal; or A' = 0
  (``structure="none"``: GCond-X, structure-free).
* Every epoch a fresh model θ (GCN, or SGC on Â^K X) is drawn. For each of ``outer_steps`` steps the
  matching loss L = Σ_c (n'_c/n') D(∇_θ ℓ(f_θ(S)_c), ∇_θ ℓ(f_θ(G)_{B_c})) is computed (D: GCond's
  per-output-unit cosine distance, MSE or whole-tensor cosine, on the weight matrices), and Φ (during the
  first ``structure_epochs[0]`` of every ``structure_epochs[1]`` epochs) or X' (otherwise) take one Adam step;
  in feature epochs A' = PGE(X') is computed once per epoch and held constant (``feature_through_pge=False``,
  the default: the X' → A' path costs ~4x per step and is not differentiated; see docs/condensation.md);
  between outer steps θ trains ``inner_steps`` steps on the detached S.
* SR-GM's decoupling (``decouple=True``): the feature update G = ∂L/∂X' is split into modality blocks and,
  where a node's blocks conflict (negative inner product), each is projected off the other (PCGrad),
  in the input space when the modalities share one embedding space and have equal widths, otherwise in
  the first layer's output space (``decouple_space``).
* SR-GM's damping (``damping="structure"|"field"``, weight ``damping_weight`` = λ): the Dirichlet energy
  R = tr(G'ᵀ L G') of the (decoupled) update field over S's self-looped normalised Laplacian. ``structure``
  (as the official code): R's gradient reaches Φ only. ``field``: G is built with ``create_graph`` so R
  also differentiates into X'. ``damping_norm="edge"`` (default) divides R by the total edge weight of
  A' and by the field's mean squared row norm: unlike the raw R (``"none"``, which is 0 for an empty
  graph and so rewards emptying it) it cannot be lowered by deleting edges or shrinking the field.

Real-side gradients are exact class-wise full-batch gradients: for SGC the rows Â^K X of class c (precomputed
once); for GCN the class's nodes with their one-hop neighbourhood rows of ÂX (precomputed once) and the
matching block of Â, optionally subsampled to ``real_batch`` nodes per class and step. Everything random
is drawn from generators seeded by (seed, epoch), so a run is deterministic and a resumed run continues
exactly where a checkpoint left it. Model selection uses the real validation split only.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from .. import distributed as D
from ..exceptions import ConfigError, DatasetError
from ..functional import (
    GRADIENT_DISTANCES,
    dirichlet_energy,
    gradient_distance,
    project_conflicting,
    project_conflicting_shared,
)
from .artifact import CondensedGraph, condensation_meta
from .evaluate import SETTINGS, View, graph_views, train_on_condensed

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "magkit.condense_checkpoint"


# ---------------------------------------------------------------------------------------------- base
class Condenser:
    """Base of every condenser: parameters with documented defaults, the budget, provenance."""

    name = "condenser"
    defaults: dict[str, Any] = {"ratio": 0.01, "setting": "transductive", "seed": 0}

    def __init__(self, **params: Any):
        unknown = sorted(set(params) - set(self.defaults))
        if unknown:
            raise ConfigError(f"{self.name}: unknown parameter(s) {', '.join(unknown)}; allowed: {', '.join(sorted(self.defaults))}")
        self.params = {**self.defaults, **params}
        self._check()
        self.history_: dict[str, Any] | None = None

    def _check(self) -> None:
        p = self.params
        r = p["ratio"]
        if not isinstance(r, (int, float)) or not (0 < r <= 1):
            raise ConfigError(f"ratio: {r!r}; allowed: a share of the training nodes in (0, 1], e.g. 0.01")
        if p["setting"] not in SETTINGS:
            raise ConfigError(f"setting: {p['setting']!r}; allowed: {', '.join(SETTINGS)}")

    def __repr__(self) -> str:
        changed = {k: v for k, v in self.params.items() if self.defaults.get(k) != v}
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in changed.items())})"

    def condense(self, graph, **kwargs) -> CondensedGraph:  # pragma: no cover - abstract
        raise NotImplementedError

    # helpers shared by condensers
    def _finish(self, graph, features: dict[str, Tensor], adj: Tensor, y: Tensor, history: dict, **extra) -> CondensedGraph:
        cg = CondensedGraph(features, adj, y, num_classes=graph.num_classes, modalities=graph.modalities,
                            class_names=graph.meta.get("class_names"))
        cg.meta = condensation_meta(graph, method=self.name, config=self.params, seed=self.params["seed"],
                                    ratio=self.params["ratio"], history=history, **extra)
        self.history_ = history
        return cg.validate()


def class_budget(y_train: Tensor, num_classes: int, ratio: float) -> Tensor:
    """Synthetic nodes per class: max(⌊n_c·r⌋, 1) for classes present, the largest class takes the remainder
    of ⌊N_train·r⌋ (never below its own share)."""
    counts = torch.bincount(y_train, minlength=num_classes)
    per = torch.where(counts > 0, (counts.double() * ratio).floor().long().clamp_min(1), torch.zeros_like(counts))
    total = int(math.floor(int(counts.sum()) * ratio))
    big = int(counts.argmax())
    per[big] += max(0, total - int(per.sum()))
    return per


def split_training(graph, views: dict[str, View]) -> tuple[Tensor, Tensor]:
    """Training positions in the train view and their labels (raises if the graph has none)."""
    tr = views["train"]
    idx = tr.idx
    if idx.numel() == 0:
        raise DatasetError(f"{graph.name}: no training nodes to condense from")
    return idx, tr.y[idx]


# ---------------------------------------------------------------------------------------------- models
def _glorot(out_dim: int, in_dim: int, gen: torch.Generator) -> Tensor:
    a = math.sqrt(6.0 / (in_dim + out_dim))
    # drawn on the generator's device (CPU), then placed on the default device (``with torch.device(...)``)
    w = (torch.rand(out_dim, in_dim, generator=gen, device=gen.device) * 2 - 1) * a
    return w.to(torch.get_default_device())


class _FunctionalNet:
    """θ of the condensation model as plain tensors (weights stored [out, in]): GCN (2 layers) or SGC."""

    def __init__(self, kind: str, in_dim: int, hidden: int, out_dim: int, gen: torch.Generator):
        self.kind = kind
        if kind == "sgc":
            shapes = [(out_dim, in_dim)]
        else:
            shapes = [(hidden, in_dim), (out_dim, hidden)]
        self.weights = [_glorot(o, i, gen).requires_grad_() for o, i in shapes]
        self.biases = [torch.zeros(o).requires_grad_() for o, _ in shapes]

    @property
    def params(self) -> list[Tensor]:
        return self.weights + self.biases

    def logits(self, first: Tensor, second: Tensor | None = None) -> Tensor:
        """SGC: ``first`` = Â^K X. GCN: ``first`` = ÂX (aggregated input), ``second`` = the Â block
        [rows out, rows of first]; out = second · relu(first W1ᵀ + b1) W2ᵀ + b2."""
        if self.kind == "sgc":
            return first @ self.weights[0].T + self.biases[0]
        h = F.relu(first @ self.weights[0].T + self.biases[0])
        return second @ (h @ self.weights[1].T) + self.biases[1]


class PGE(torch.nn.Module):
    """A' = PGE_Φ(X'): MLP over pairs [x_i ‖ x_j] → 1, symmetrised, sigmoid, zero diagonal.

    The first layer is split (W [x_i ‖ x_j] = W_a x_i + W_b x_j), so the n'² pair inputs are never built;
    hidden layers standardise over the pairs (batch norm without running statistics: A' is a deterministic
    function of X')."""

    def __init__(self, in_dim: int, hidden: int, gen: torch.Generator, init_bias: float = 0.0):
        super().__init__()
        self.wa = torch.nn.Parameter(_glorot(hidden, in_dim, gen))
        self.wb = torch.nn.Parameter(_glorot(hidden, in_dim, gen))
        self.b1 = torch.nn.Parameter(torch.zeros(hidden))
        self.w2 = torch.nn.Parameter(_glorot(hidden, hidden, gen))
        self.b2 = torch.nn.Parameter(torch.zeros(hidden))
        self.g1 = torch.nn.Parameter(torch.ones(hidden))
        self.g2 = torch.nn.Parameter(torch.ones(hidden))
        self.w3 = torch.nn.Parameter(_glorot(1, hidden, gen))
        self.b3 = torch.nn.Parameter(torch.full((1,), float(init_bias)))

    @staticmethod
    def _std(h: Tensor, gamma: Tensor) -> Tensor:
        return F.batch_norm(h, None, None, gamma, None, training=True, eps=1e-5)

    def forward(self, x: Tensor) -> Tensor:
        n = x.size(0)
        h = (x @ self.wa.T)[:, None, :] + (x @ self.wb.T)[None, :, :] + self.b1
        h = F.relu(self._std(h.reshape(n * n, -1), self.g1))
        h = F.relu(self._std(h @ self.w2.T + self.b2, self.g2))
        s = (h @ self.w3.T + self.b3).reshape(n, n)
        a = torch.sigmoid((s + s.T) / 2)
        return a * (1 - torch.eye(n))


def _normalize_dense(a: Tensor) -> Tensor:
    at = a + torch.eye(a.size(0))
    dinv = at.sum(1).rsqrt()
    return dinv[:, None] * at * dinv[None, :]


def damping_term(g: Tensor, adj: Tensor, norm: str = "edge", eps: float = 1e-12) -> Tensor:
    """SR-GM's damping R on the update field ``g`` [n', d] over the dense synthetic ``adj``.

    ``"none"``: R = tr(gᵀ L g) (the official term; 0 for an empty graph). ``"trace"``: R / tr(gᵀ g).
    ``"edge"``: R / ((Σ_ij A_ij / 2) · mean_i ‖g_i‖²), the edge-weighted mean disagreement across an edge
    relative to the field's energy: scale-free in g, and not lowered by emptying the graph."""
    r = dirichlet_energy(g, adj, normalized=True)
    if norm == "none":
        return r
    if norm == "trace":
        return r / ((g * g).sum() + eps)
    if norm == "edge":
        return r / ((adj.sum() / 2 + eps) * ((g * g).sum(1).mean() + eps))
    raise ConfigError(f"damping_norm: {norm!r}; allowed: edge, trace, none")


def batched_distance(gs: Tensor, gr: Tensor, kind: str, eps: float = 1e-6) -> Tensor:
    """:func:`~magkit.functional.gradient_distance` for K weight matrices at once (``[K, out, in]``) → ``[K]``."""
    if kind == "mse":
        return ((gs - gr) ** 2).sum(dim=(1, 2))
    if kind == "cos":
        gs, gr = gs.flatten(1)[:, None, :], gr.flatten(1)[:, None, :]
    dot = (gs * gr).sum(-1)
    cos = dot / (torch.linalg.vector_norm(gs, dim=-1) * torch.linalg.vector_norm(gr, dim=-1) + eps)
    return (1.0 - cos).sum(-1)


# ---------------------------------------------------------------------------------------------- loop
class GradientMatching(Condenser):
    """GCond-style gradient matching with SR-GM's decoupling and damping as switches (see module docstring)."""

    name = "gradient-matching"
    defaults: dict[str, Any] = {
        "ratio": 0.01,
        "setting": "transductive",
        "seed": 0,
        "backbone": "sgc",          # condensation model: sgc (fast, Â^K X cached) | gcn
        "k": 2,                     # SGC hops
        "hidden": 256,              # GCN width
        "structure": "pge",         # pge | none (GCond-X)
        "pge_hidden": 128,
        "pge_init_bias": -5.0,      # output bias at start: -5 -> A' ≈ 0.007 (near empty, starts at GCond-X); 0 -> 0.5
        "init": "propagated",       # propagated (Â^K X rows of random class members) | raw (X rows) | auto
        "feature_through_pge": False,  # differentiate X' -> PGE -> A' in feature epochs (slower)
        "structure_epochs": (10, 50),  # Φ is updated during the first a of every b epochs
        "distance": "gcond",
        "decouple": False,
        "decouple_space": "auto",   # auto | input | shared
        "damping": None,            # None | structure | field
        "damping_weight": 1.0,
        "damping_norm": "edge",     # edge | trace | none
        "epochs": 200,
        "outer_steps": 20,
        "inner_steps": 0,           # θ trained on S between outer steps (GCond: 10); 0 = match at fresh inits (validated, docs)
        "lr_feat": 5e-4,            # in units of the initial features' RMS (Adam steps are in feature units)
        "lr_adj": 1e-3,
        "lr_model": 0.01,
        "real_batch": None,         # cap on real nodes per class and step (None: all; GCN default 256)
        "eval_every": 10,
        "eval_backbone": "gcn",
        "eval_epochs": 200,
        "checkpoint_every": 10,
        "distributed": False,       # False | True | "auto": shard the real side over torch.distributed ranks
        "device": "cpu",            # cpu | cuda | cuda:N | auto (with distributed + cuda: cuda:LOCAL_RANK)
    }

    def _check(self) -> None:
        super()._check()
        p = self.params
        choices = {"backbone": ("sgc", "gcn"), "structure": ("pge", "none"), "distance": GRADIENT_DISTANCES,
                   "decouple_space": ("auto", "input", "shared"),
                   "init": ("auto", "raw", "propagated"), "damping": (None, "structure", "field"),
                   "damping_norm": ("edge", "trace", "none"), "distributed": (False, True, "auto")}
        for k, allowed in choices.items():
            if p[k] not in allowed:
                raise ConfigError(f"{k}: {p[k]!r}; allowed: {', '.join(str(a) for a in allowed)}")
        for k in ("epochs", "outer_steps", "eval_every", "eval_epochs", "hidden", "pge_hidden", "k", "checkpoint_every"):
            if not isinstance(p[k], int) or p[k] < 1:
                raise ConfigError(f"{k}: {p[k]!r}; allowed: an integer >= 1")
        if not isinstance(p["inner_steps"], int) or p["inner_steps"] < 0:
            raise ConfigError(f"inner_steps: {p['inner_steps']!r}; allowed: an integer >= 0")
        for k in ("lr_feat", "lr_adj", "lr_model"):
            if not (isinstance(p[k], (int, float)) and p[k] > 0):
                raise ConfigError(f"{k}: {p[k]!r}; allowed: > 0")
        if not (isinstance(p["damping_weight"], (int, float)) and p["damping_weight"] >= 0):
            raise ConfigError(f"damping_weight: {p['damping_weight']!r}; allowed: >= 0")
        if p["damping"] is not None and p["structure"] == "none":
            raise ConfigError("damping needs a synthetic structure (structure='pge'); structure='none' has no edges to damp over")
        se = tuple(p["structure_epochs"])
        if len(se) != 2 or not (0 <= se[0] <= se[1]) or se[1] < 1:
            raise ConfigError(f"structure_epochs: {p['structure_epochs']!r}; allowed: (a, b) with 0 <= a <= b, b >= 1")
        if p["real_batch"] is not None and (not isinstance(p["real_batch"], int) or p["real_batch"] < 1):
            raise ConfigError(f"real_batch: {p['real_batch']!r}; allowed: None or an integer >= 1")

    def _distributed(self) -> bool:
        """Shard the real side over the ranks of the initialised process group? ``True`` requires one
        (launch with torchrun; ``magkit condense --distributed`` joins it); ``"auto"``: when one exists."""
        want = self.params["distributed"]
        if want is True and not D.is_distributed():
            raise ConfigError("distributed=True: no torch.distributed process group is initialised; launch with "
                              "`torchrun --nproc_per_node=N -m magkit.cli condense ... --distributed` "
                              "(or call magkit.distributed.init_from_env() first)")
        return bool(want) and D.is_distributed() and D.world_size() > 1

    # ------------------------------------------------------------------ setup
    def _device(self) -> torch.device:
        from ..methods.base import resolve_device

        dev = resolve_device(str(self.params["device"]))
        if dev.type == "cuda" and dev.index is None and self._distributed():
            dev = D.local_device("cuda")
        return dev

    def _setup(self, graph) -> dict[str, Any]:
        p = self.params
        views = {k: v.to(torch.get_default_device()) for k, v in graph_views(graph, p["setting"]).items()}
        idx, y_tr = split_training(graph, views)
        tr = views["train"]
        c = graph.num_classes
        per = class_budget(y_tr, c, p["ratio"])
        dims = [graph.feature(m).size(1) for m in graph.modalities]
        d = sum(dims)
        from ..train.propagation import normalized_adjacency

        adj = normalized_adjacency(tr.edge_index, tr.num_nodes)
        st: dict[str, Any] = {"views": views, "per": per, "dims": dims, "d": d, "adj": adj}
        st["classes"] = [k for k in range(c) if per[k] > 0]
        st["class_idx"] = {k: idx[y_tr == k] for k in st["classes"]}
        # data parallelism over the real side: each rank holds its share of every class's training nodes
        st["world"], st["rank"] = (D.world_size(), D.rank()) if self._distributed() else (1, 0)
        st["class_local"] = {k: D.shard(v, st["rank"], st["world"], pad=False) for k, v in st["class_idx"].items()}
        if p["backbone"] == "sgc":
            x = tr.x
            for _ in range(p["k"]):
                x = adj @ x
            st["prop"] = x
        else:
            st["ax"] = adj @ tr.x
        st["y_syn"] = torch.cat([torch.full((int(per[k]),), k, dtype=torch.long) for k in st["classes"]])
        # decoupling space
        space = p["decouple_space"]
        if space == "auto":
            aligned = bool(graph.meta.get("aligned")) or (
                (graph.meta.get("generator") or {}).get("features", {}).get("space") == "aligned")
            space = "input" if aligned and len(set(dims)) == 1 else "shared"
        if p["decouple"] and len(dims) != 2:
            raise ConfigError(f"decouple: gradient decoupling needs exactly two modalities, the graph has {len(dims)} "
                              f"({', '.join(graph.modalities)}); use decouple=False")
        if space == "input" and len(set(dims)) != 1 and p["decouple"]:
            raise ConfigError(f"decouple_space='input' needs equal modality widths, got {dims}; use 'shared'")
        st["space"] = space
        return st

    def _init_features(self, st: dict, gen: torch.Generator) -> Tensor:
        init = self.params["init"]
        if init == "auto":
            init = "propagated" if self.params["structure"] == "none" else "raw"
        x = st["views"]["train"].x
        if init == "propagated":
            for _ in range(self.params["k"]):
                x = st["adj"] @ x
        rows = []
        for k in st["classes"]:
            pool = st["class_idx"][k]
            n = int(st["per"][k])
            pick = pool[torch.randperm(pool.numel(), generator=gen, device=gen.device)[:n].to(pool.device)] \
                if n <= pool.numel() else pool[torch.randint(pool.numel(), (n,), generator=gen, device=gen.device).to(pool.device)]
            rows.append(x[pick])
        return torch.cat(rows).clone()

    def _real_block(self, st: dict, nodes: Tensor) -> tuple[Tensor, Tensor]:
        """(ÂX rows of the nodes' neighbourhood, the Â block [nodes, neighbourhood]) for the GCN real side."""
        adj = st["adj"]
        crow, col, val = adj.crow_indices(), adj.col_indices(), adj.values()
        start, end = crow[nodes], crow[nodes + 1]
        lens = end - start
        rowpos = torch.repeat_interleave(torch.arange(nodes.numel()), lens)
        offs = torch.arange(int(lens.sum())) - torch.repeat_interleave(torch.cumsum(lens, 0) - lens, lens)
        ptr = torch.repeat_interleave(start, lens) + offs
        cols, inv = torch.unique(col[ptr], return_inverse=True)
        block = torch.sparse_coo_tensor(torch.stack([rowpos, inv]), val[ptr], (nodes.numel(), cols.numel()),
                                        check_invariants=False).coalesce()
        return st["ax"][cols], block.to_sparse_csr()

    def _real_grads(self, st: dict, net: _FunctionalNet, gen: torch.Generator) -> dict[int, list[Tensor]]:
        p = self.params
        if p["backbone"] == "sgc":  # closed form, all classes: ∇W_c = (1/n_c) Σ_i∈c (softmax_i − e_c) h_iᵀ
            w, b = net.weights[0].detach(), net.biases[0].detach()
            out = []
            with torch.no_grad():
                for k in st["classes"]:
                    h = st["prop"][st["class_local"][k]]
                    e = torch.softmax(h @ w.T + b, dim=1)
                    e[:, k] -= 1.0
                    out.append((e.T @ h) / st["class_idx"][k].numel())  # this rank's share of the class mean
            g = torch.stack(out)
            return D.all_reduce_sum(g) if st["world"] > 1 else g
        cap = p["real_batch"] if p["real_batch"] is not None else (256 if p["backbone"] == "gcn" else None)
        out = {}
        for k in st["classes"]:
            nodes = st["class_idx"][k]
            sampled = cap is not None and nodes.numel() > cap
            if sampled:  # every rank draws the same sample (same generator), then takes its share of it
                nodes = nodes[torch.randperm(nodes.numel(), generator=gen, device=gen.device)[:cap].to(nodes.device)]
            total = nodes.numel()
            if st["world"] > 1:
                nodes = D.shard(nodes, st["rank"], st["world"], pad=False)
            if nodes.numel() == 0:
                out[k] = [torch.zeros_like(w) for w in net.weights]
                continue
            key = ("block", k)
            if not sampled:
                if key not in st:
                    st[key] = self._real_block(st, nodes)
                first, second = st[key]
            else:
                first, second = self._real_block(st, nodes)
            logits = net.logits(first, second)
            # sum over this rank's nodes / the class total: the ranks' gradients add up to the class mean
            loss = F.cross_entropy(logits, torch.full((nodes.numel(),), k, dtype=torch.long), reduction="sum") / total
            out[k] = [g.detach() for g in torch.autograd.grad(loss, net.weights)]
        if st["world"] > 1:  # one all-reduce for every class and layer
            flat = D.all_reduce_sum(torch.cat([g.flatten() for k in st["classes"] for g in out[k]]))
            pos = 0
            for k in st["classes"]:
                parts = []
                for g in out[k]:
                    parts.append(flat[pos:pos + g.numel()].view_as(g))
                    pos += g.numel()
                out[k] = parts
        return out

    def _sgc_matching(self, st, net, x_syn, a, g_real, cls_w, onehot, cls_of) -> Tensor:
        """Matching loss for SGC in closed form (no per-class autograd): G_c = (1/n'_c) Σ_i∈c (p_i − y_i) h_iᵀ."""
        h, _ = self._model_inputs(net, x_syn, a)
        w, b = net.weights[0].detach(), net.biases[0].detach()
        e = torch.softmax(h @ w.T + b, dim=1) - onehot  # [n', C]
        outer = e[:, :, None] * h[:, None, :]  # [n', C, d]
        g_syn = torch.zeros(len(st["classes"]), e.size(1), h.size(1)).index_add(0, cls_of, outer)
        g_syn = g_syn / torch.bincount(cls_of, minlength=len(st["classes"])).clamp_min(1)[:, None, None]
        return (cls_w * batched_distance(g_syn, g_real, self.params["distance"])).sum()

    def _adjacency(self, pge, x_syn: Tensor, update_a: bool, a_fixed: Tensor | None) -> Tensor | None:
        """A' for this step: none (structure-free), PGE(X') (structure epochs, or ``feature_through_pge``),
        else the epoch's constant A'."""
        if pge is None:
            return None
        if update_a or self.params["feature_through_pge"]:
            return pge(x_syn)
        return a_fixed

    def _model_inputs(self, net: _FunctionalNet, x: Tensor, a: Tensor | None) -> tuple[Tensor, Tensor | None]:
        """What :meth:`_FunctionalNet.logits` reads on S: SGC Â'^K X' (X' itself without structure); GCN Â'X'
        and Â' (I without structure)."""
        n = x.size(0)
        if net.kind == "sgc":
            h = x
            if a is not None:
                nrm = _normalize_dense(a)
                for _ in range(self.params["k"]):
                    h = nrm @ h
            return h, None
        nrm = _normalize_dense(a) if a is not None else torch.eye(n)
        return nrm @ x, nrm

    def _syn_logits(self, st: dict, net: _FunctionalNet, x: Tensor, a: Tensor | None) -> Tensor:
        return net.logits(*self._model_inputs(net, x, a))

    def _field(self, st: dict, g: Tensor, net: _FunctionalNet) -> tuple[Tensor, float]:
        """The feature update after decoupling (when on) and the share of nodes whose blocks conflict."""
        if self.params["decouple"]:
            return self._decouple(st, g, net)
        return g, self._conflict_rate(st, g.detach(), net)

    def _decouple(self, st: dict, g: Tensor, net: _FunctionalNet) -> tuple[Tensor, float]:
        da, db = st["dims"]
        ga, gb = g[:, :da], g[:, da:]
        if st["space"] == "input":
            pa, pb, conflict = project_conflicting(ga, gb)
        else:
            w = net.weights[0].detach()
            pa, pb, conflict = project_conflicting_shared(ga, gb, w[:, :da].T, w[:, da:].T)
        return torch.cat([pa, pb], dim=1), float(conflict.double().mean())

    def _conflict_rate(self, st: dict, g: Tensor, net: _FunctionalNet) -> float:
        if len(st["dims"]) != 2:
            return float("nan")
        da = st["dims"][0]
        ga, gb = g[:, :da], g[:, da:]
        if st["space"] == "shared":
            w = net.weights[0].detach()
            ga, gb = ga @ w[:, :da].T, gb @ w[:, da:].T
        return float(((ga * gb).sum(1) < 0).double().mean())

    # ------------------------------------------------------------------ main
    def condense(
        self,
        graph,
        *,
        progress: Callable[[dict], None] | None = None,
        checkpoint: str | Path | None = None,
        resume: bool = False,
    ) -> CondensedGraph:
        """Condense ``graph`` (split, validated). ``progress(record)`` is called after every epoch;
        ``checkpoint``: a file written every ``checkpoint_every`` epochs (atomically); ``resume``: continue
        from it (the config and the dataset checksum must match)."""
        p = self.params
        t_start = time.perf_counter()
        dev = self._device()
        with torch.random.fork_rng(devices=[]), torch.device(dev):  # factories below allocate on `dev`
            torch.manual_seed(p["seed"])
            st = self._setup(graph)
            if st["world"] > 1:  # ranks condensing different data would average unrelated gradients
                D.check_same("the dataset (checksum) and the condensation seed",
                             [float(int(graph.checksum()[:12], 16)), float(p["seed"])])
            gen0 = torch.Generator().manual_seed(p["seed"])
            x_syn = self._init_features(st, gen0).requires_grad_()
            pge = PGE(st["d"], p["pge_hidden"], gen0, p["pge_init_bias"]) if p["structure"] == "pge" else None
            feat_scale = float(x_syn.detach().pow(2).mean().sqrt().clamp_min(1e-12))
            opt_x = torch.optim.Adam([x_syn], lr=p["lr_feat"] * feat_scale)
            opt_a = torch.optim.Adam(pge.parameters(), lr=p["lr_adj"]) if pge is not None else None
            state = {"epoch": 0, "records": [], "best": None, "elapsed": 0.0}
            if resume:
                if checkpoint is None:
                    raise ConfigError("resume: needs a checkpoint path")
                if Path(checkpoint).exists():
                    state = _load_checkpoint(checkpoint, self, graph, x_syn, pge, opt_x, opt_a)
                    log.info("resumed from %s at epoch %d", checkpoint, state["epoch"])
            views = st["views"]
            y_syn = st["y_syn"]
            n_syn = y_syn.numel()
            weights = {k: float(st["per"][k]) / n_syn for k in st["classes"]}
            syn_idx = {k: (y_syn == k).nonzero().squeeze(1) for k in st["classes"]}
            cls_list = torch.tensor(st["classes"])
            cls_of = torch.searchsorted(cls_list, y_syn)  # position of each synthetic node's class
            cls_w = torch.tensor([weights[k] for k in st["classes"]])
            onehot = F.one_hot(y_syn, graph.num_classes).float()
            a_per, b_per = p["structure_epochs"]
            lam = float(p["damping_weight"])
            t_resume = time.perf_counter()
            for epoch in range(state["epoch"], p["epochs"]):
                t0 = time.perf_counter()
                gen = torch.Generator().manual_seed(p["seed"] * 1_000_003 + epoch + 1)
                net = _FunctionalNet(p["backbone"], st["d"], p["hidden"], graph.num_classes, gen)
                opt_t = torch.optim.Adam(net.params, lr=p["lr_model"])
                update_a = pge is not None and (epoch % b_per) < a_per
                a_fixed = None
                if pge is not None and not update_a and not p["feature_through_pge"]:
                    with torch.no_grad():
                        a_fixed = pge(x_syn)
                sums = {"loss": 0.0, "damping": 0.0, "conflict_rate": 0.0}
                for outer in range(p["outer_steps"]):
                    g_real = self._real_grads(st, net, gen)
                    a = self._adjacency(pge, x_syn, update_a, a_fixed)
                    if net.kind == "sgc":
                        loss = self._sgc_matching(st, net, x_syn, a, g_real, cls_w, onehot, cls_of)
                    else:
                        logits = self._syn_logits(st, net, x_syn, a)
                        loss = 0.0
                        for k in st["classes"]:
                            ls = F.cross_entropy(logits[syn_idx[k]], y_syn[syn_idx[k]])
                            gs = torch.autograd.grad(ls, net.weights, create_graph=True)
                            loss = loss + weights[k] * gradient_distance(list(gs), g_real[k], p["distance"])
                    field = p["damping"] == "field" and not update_a
                    r_val = 0.0
                    if update_a:
                        # one backward pass for both gradients (Φ's and X''s); the damping term then reuses the
                        # adjacency A = PGE(X') already built (same values as a fresh PGE(X') pass: X' does not
                        # change during structure epochs), so its gradient only runs back through the PGE
                        damp = p["damping"] is not None and lam > 0
                        *ga, gx = torch.autograd.grad(loss, [*pge.parameters(), x_syn], retain_graph=damp)
                        g, rate = self._field(st, gx.detach(), net)
                        if damp:
                            r = damping_term(g, a, p["damping_norm"])
                            gr = torch.autograd.grad(r, list(pge.parameters()))
                            ga = [x + lam * y for x, y in zip(ga, gr)]
                            r_val = float(r.detach())
                        opt_a.zero_grad()
                        for prm, gg in zip(pge.parameters(), ga):
                            prm.grad = gg
                        opt_a.step()
                    else:
                        g, rate = self._field(st, torch.autograd.grad(loss, x_syn, create_graph=field)[0], net)
                        upd = g.detach()
                        if p["damping"] is not None and a is not None:
                            r = damping_term(g if field else g.detach(), a.detach(), p["damping_norm"])
                            r_val = float(r.detach())
                            if field and lam > 0:
                                upd = upd + lam * torch.autograd.grad(r, x_syn)[0]
                        opt_x.zero_grad()
                        x_syn.grad = upd
                        opt_x.step()
                    sums["loss"] += float(loss.detach())
                    sums["damping"] += r_val
                    sums["conflict_rate"] += rate
                    if outer < p["outer_steps"] - 1 and p["inner_steps"] > 0:
                        with torch.no_grad():
                            first, second = self._model_inputs(net, x_syn, self._adjacency(pge, x_syn, update_a, a_fixed))
                        for _ in range(p["inner_steps"]):
                            opt_t.zero_grad()
                            F.cross_entropy(net.logits(first, second), y_syn).backward()
                            opt_t.step()
                steps = p["outer_steps"]
                rec = {"epoch": epoch + 1, **{k: v / steps for k, v in sums.items()}, "structure_step": update_a}
                with torch.no_grad():
                    a_now = pge(x_syn) if pge is not None else torch.zeros(n_syn, n_syn)
                off = n_syn * (n_syn - 1)
                rec["edge_weight"] = float(a_now.sum() / off) if off else 0.0
                rec["edge_density"] = float(((a_now > 0.5).sum()) / off) if off else 0.0
                rec["epoch_time_s"] = time.perf_counter() - t0
                if (epoch + 1) % p["eval_every"] == 0 or epoch + 1 == p["epochs"]:
                    ev = {"val_acc": float("nan"), "val_f1": float("nan")}
                    if st["rank"] == 0:  # S is identical on every rank: one evaluation, its result broadcast
                        cg = self._snapshot(graph, st, x_syn, a_now)
                        ev = train_on_condensed(cg, p["eval_backbone"], views["val"], epochs=p["eval_epochs"],
                                                eval_every=20, seed=p["seed"])
                    if st["world"] > 1:
                        ev = D.broadcast_floats({"val_acc": ev["val_acc"], "val_f1": ev["val_f1"]})
                    rec["val_acc"] = ev["val_acc"]
                    rec["val_f1"] = ev["val_f1"]
                    if state["best"] is None or ev["val_acc"] > state["best"]["val_acc"]:
                        state["best"] = {"val_acc": ev["val_acc"], "epoch": epoch + 1,
                                         "x": x_syn.detach().clone(), "adj": a_now.detach().clone()}
                rec["wall_time_s"] = state["elapsed"] + (time.perf_counter() - t_resume)
                state["records"].append(rec)
                state["epoch"] = epoch + 1
                if progress is not None:
                    progress({**rec, "epochs": p["epochs"]})
                if checkpoint is not None and ((epoch + 1) % p["checkpoint_every"] == 0 or epoch + 1 == p["epochs"]):
                    state["elapsed"] = rec["wall_time_s"]
                    if st["rank"] == 0:  # one writer; the others wait until the file is complete
                        _save_checkpoint(checkpoint, self, graph, state, x_syn, pge, opt_x, opt_a)
                    D.barrier()
                    state["elapsed"] = rec["wall_time_s"]
            best = state["best"]
            if best is None:  # epochs already done at resume and no eval recorded: take the current S
                with torch.no_grad():
                    a_now = pge(x_syn) if pge is not None else torch.zeros(n_syn, n_syn)
                best = {"x": x_syn.detach(), "adj": a_now, "epoch": state["epoch"], "val_acc": float("nan")}
        wall = state["elapsed"] + (time.perf_counter() - t_resume) if state["records"] else time.perf_counter() - t_start
        history = {"epochs": state["records"], "best_epoch": best["epoch"], "best_val_acc": best["val_acc"],
                   "wall_time_s": wall}
        from ..eval.results import peak_memory_mb

        cg = self._snapshot(graph, st, best["x"], best["adj"])
        out = self._finish(graph, dict(cg.features), cg.adj, cg.y, history, wall_time_s=wall,
                           peak_memory_mb=peak_memory_mb(), decouple_space=st["space"],
                           lr_feat_absolute=p["lr_feat"] * feat_scale)
        return out

    def _snapshot(self, graph, st: dict, x: Tensor, adj: Tensor) -> CondensedGraph:
        feats, start = {}, 0
        for m, dm in zip(graph.modalities, st["dims"]):
            feats[m] = x[:, start:start + dm].detach().cpu().clone()
            start += dm
        a = adj.detach().cpu().clone()
        a = (a + a.T) / 2
        a.fill_diagonal_(0)
        return CondensedGraph(feats, a, st["y_syn"], num_classes=graph.num_classes, modalities=graph.modalities)


# ---------------------------------------------------------------------------------------------- checkpoints
def _config_key(cond: Condenser) -> str:
    keep = {k: v for k, v in cond.params.items() if k not in ("epochs", "checkpoint_every", "eval_every", "distributed")}
    return json.dumps(keep, sort_keys=True, default=str)


def _save_checkpoint(path, cond, graph, state, x_syn, pge, opt_x, opt_a) -> None:
    """Tensors in safetensors, everything else as JSON in its metadata; atomic replace. No pickle."""
    from safetensors.torch import save

    from ..eval.results import atomic_write_bytes

    tensors = {"x_syn": x_syn.detach().cpu().contiguous()}
    if pge is not None:
        for k, v in pge.state_dict().items():
            tensors[f"pge.{k}"] = v.cpu().contiguous()
    opt_meta = {}
    for name, opt in (("opt_x", opt_x), ("opt_a", opt_a)):
        if opt is None:
            continue
        sd = opt.state_dict()
        opt_meta[name] = {"param_groups": sd["param_groups"], "keys": {}}
        for pid, s in sd["state"].items():
            keys = []
            for k, v in s.items():
                if isinstance(v, Tensor):
                    tensors[f"{name}.{pid}.{k}"] = v.detach().cpu().contiguous().reshape(v.shape)
                    keys.append(k)
            opt_meta[name]["keys"][str(pid)] = keys
    best = state["best"]
    if best is not None:
        tensors["best.x"] = best["x"].cpu().contiguous()
        tensors["best.adj"] = best["adj"].cpu().contiguous()
    meta = {"format": CHECKPOINT_FORMAT, "config": _config_key(cond), "dataset_checksum": graph.checksum(),
            "epoch": state["epoch"], "elapsed": state["elapsed"], "records": state["records"], "optim": opt_meta,
            "best": None if best is None else {"val_acc": best["val_acc"], "epoch": best["epoch"]}}
    data = save(tensors, metadata={"magkit": json.dumps(meta, default=str)})
    atomic_write_bytes(path, data)


def _load_checkpoint(path, cond, graph, x_syn, pge, opt_x, opt_a) -> dict:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = json.loads((f.metadata() or {}).get("magkit", "{}"))
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as exc:  # noqa: BLE001 - any parse failure is a bad checkpoint
        raise DatasetError(f"checkpoint {path}: not a readable magkit checkpoint ({exc})") from None
    if meta.get("format") != CHECKPOINT_FORMAT:
        raise DatasetError(f"checkpoint {path}: not a magkit condensation checkpoint")
    if meta.get("config") != _config_key(cond):
        raise DatasetError(f"checkpoint {path}: written with another configuration ({meta.get('config')}); "
                           f"this run is {_config_key(cond)}. Delete it or use the same options.")
    if meta.get("dataset_checksum") != graph.checksum():
        raise DatasetError(f"checkpoint {path}: written for another dataset (checksum {meta.get('dataset_checksum')}, "
                           f"this graph {graph.checksum()})")
    with torch.no_grad():
        x_syn.copy_(tensors["x_syn"])
    if pge is not None:
        pge.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("pge.")})
    for name, opt in (("opt_x", opt_x), ("opt_a", opt_a)):
        om = meta["optim"].get(name)
        if opt is None or om is None:
            continue
        st = {int(pid): {k: tensors[f"{name}.{pid}.{k}"] for k in keys} for pid, keys in om["keys"].items()}
        opt.load_state_dict({"state": st, "param_groups": om["param_groups"]})
    best = None
    if meta.get("best") is not None:
        dev = x_syn.device
        best = {**meta["best"], "x": tensors["best.x"].to(dev), "adj": tensors["best.adj"].to(dev)}
    return {"epoch": int(meta["epoch"]), "records": list(meta["records"]), "best": best,
            "elapsed": float(meta["elapsed"])}


def _ensure_mapping(x: Any) -> Mapping:
    return x if isinstance(x, Mapping) else {}
