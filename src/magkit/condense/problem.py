"""One gradient-matching problem: the real graph's side, prepared once, and the matching terms over it.

:class:`MatchingProblem` holds what the loop of :class:`~magkit.condense.matching.GradientMatching` reads
every step (the real views, the per-class budget, the precomputed propagation, the synthetic labels, the
decoupling space) and computes the terms of the matching objective:

* the real class gradients G^R_c = ∇_θ ℓ(f_θ(G)_{B_c}) (:meth:`MatchingProblem.real_grads`);
* for SGC, the matching loss in closed form (:meth:`MatchingProblem.sgc_matching`);
* SR-GM's decoupled feature update (:meth:`MatchingProblem.field`).

The maths of the objective (:func:`batched_distance`, :func:`damping_term`) is written as small functions.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from .. import distributed as D
from ..exceptions import ConfigError
from ..functional import dirichlet_energy, project_conflicting, project_conflicting_shared
from ..train.propagation import normalized_adjacency
from .artifact import CondensedGraph
from .base import class_budget, split_training
from .evaluate import graph_views
from .functional_net import FunctionalNet


def normalize_dense(a: Tensor) -> Tensor:
    """Â = D̃^{-1/2}(A + I)D̃^{-1/2} of a dense ``[n, n]`` adjacency."""
    at = a + torch.eye(a.size(0))
    dinv = at.sum(1).rsqrt()
    return dinv[:, None] * at * dinv[None, :]


def damping_term(g: Tensor, adj: Tensor, norm: str = "edge", eps: float = 1e-12) -> Tensor:
    r"""SR-GM's damping R on the update field ``g`` ``[n', d]`` over the dense synthetic ``adj`` ``[n', n']``.

    .. math::
        R = \mathrm{tr}(g^\top L g), \qquad L = I - \hat A \text{ (self-looped, normalised)}

    Args:
        g (Tensor): the update field ``[n', d]``.
        adj (Tensor): the synthetic adjacency ``[n', n']``.
        norm (str, optional): ``"none"``: R itself (the official term; 0 for an empty graph). ``"trace"``:
            R / tr(gᵀg). ``"edge"``: R / ((Σ_ij A_ij / 2) · mean_i ‖g_i‖²), the edge-weighted mean
            disagreement across an edge relative to the field's energy: scale-free in g, and not lowered by
            emptying the graph. (default: :obj:`"edge"`)
        eps (float, optional): added to every denominator. (default: :obj:`1e-12`)

    Returns:
        a scalar tensor.
    """
    r = dirichlet_energy(g, adj, normalized=True)
    if norm == "none":
        return r
    if norm == "trace":
        return r / ((g * g).sum() + eps)
    if norm == "edge":
        return r / ((adj.sum() / 2 + eps) * ((g * g).sum(1).mean() + eps))
    raise ConfigError(f"damping_norm: {norm!r}; allowed: edge, trace, none")


def batched_distance(gs: Tensor, gr: Tensor, kind: str, eps: float = 1e-6) -> Tensor:
    """:func:`~magkit.functional.gradient_distance` for K weight matrices at once: ``[K, out, in]`` twice → ``[K]``."""
    if kind == "mse":
        return ((gs - gr) ** 2).sum(dim=(1, 2))
    if kind == "cos":
        gs, gr = gs.flatten(1)[:, None, :], gr.flatten(1)[:, None, :]
    dot = (gs * gr).sum(-1)
    cos = dot / (torch.linalg.vector_norm(gs, dim=-1) * torch.linalg.vector_norm(gr, dim=-1) + eps)
    return (1.0 - cos).sum(-1)


class MatchingProblem:
    """The real side of one condensation run and the matching terms over it (built by
    :meth:`GradientMatching.prepare <magkit.condense.matching.GradientMatching.prepare>`).

    Args:
        graph: the split multimodal graph.
        params (Mapping): the condenser's parameters (:meth:`GradientMatching.get_params`).
        sharded (bool): split every class's real nodes over the ``torch.distributed`` ranks.

    Attributes:
        views (dict): the ``train`` / ``val`` / ``test`` :class:`~magkit.condense.evaluate.View` on the
            default device.
        per (Tensor): synthetic nodes per class ``[C]`` (:func:`~magkit.condense.base.class_budget`).
        classes (list[int]): the classes with a synthetic node.
        class_idx (dict[int, Tensor]): each class's training positions in the train view.
        class_local (dict[int, Tensor]): this rank's share of them.
        dims (list[int]): the modality widths; ``d`` their sum.
        adj (Tensor): the train view's Â (sparse CSR).
        prop (Tensor | None): Â^K X of the train view (SGC); ``ax``: ÂX (GCN).
        y_syn (Tensor): the synthetic labels ``[n']``, class by class.
        space (str): where SR-GM decouples: ``"input"`` or ``"shared"`` (the first layer's output).
        world, rank (int): the process group (1, 0 without one).
    """

    def __init__(self, graph, params: Mapping[str, Any], sharded: bool = False):
        p = self.params = dict(params)
        self.graph = graph
        views = {k: v.to(torch.get_default_device()) for k, v in graph_views(graph, p["setting"]).items()}
        idx, y_tr = split_training(graph, views)
        tr = views["train"]
        c = graph.num_classes
        self.views = views
        self.per = per = class_budget(y_tr, c, p["ratio"])
        self.dims = dims = [graph.feature(m).size(1) for m in graph.modalities]
        self.d = sum(dims)
        self.adj = adj = normalized_adjacency(tr.edge_index, tr.num_nodes)
        self.classes = [k for k in range(c) if per[k] > 0]
        self.class_idx = {k: idx[y_tr == k] for k in self.classes}
        # data parallelism over the real side: each rank holds its share of every class's training nodes
        self.world, self.rank = (D.world_size(), D.rank()) if sharded else (1, 0)
        self.class_local = {k: D.shard(v, self.rank, self.world, pad=False) for k, v in self.class_idx.items()}
        self.prop: Tensor | None = None
        self.ax: Tensor | None = None
        self._class_rows: dict[int, tuple[Tensor, Tensor]] = {}
        if p["backbone"] == "sgc":
            x = tr.x
            for _ in range(p["k"]):
                x = adj @ x
            self.prop = x
        else:
            self.ax = adj @ tr.x
        self.y_syn = torch.cat([torch.full((int(per[k]),), k, dtype=torch.long) for k in self.classes])
        self._blocks: dict[int, tuple[Tensor, Tensor]] = {}
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
        self.space = space

    # ------------------------------------------------------------------ synthetic side
    def init_features(self, gen: torch.Generator) -> Tensor:
        """X' ``[n', d]`` at the start: rows of random training nodes of each class (Â^K X rows with
        ``init="propagated"``, X rows with ``"raw"``)."""
        init = self.params["init"]
        if init == "auto":
            init = "propagated" if self.params["structure"] == "none" else "raw"
        x = self.views["train"].x
        if init == "propagated":
            for _ in range(self.params["k"]):
                x = self.adj @ x
        rows = []
        for k in self.classes:
            pool = self.class_idx[k]
            n = int(self.per[k])
            pick = pool[torch.randperm(pool.numel(), generator=gen, device=gen.device)[:n].to(pool.device)] \
                if n <= pool.numel() else pool[torch.randint(pool.numel(), (n,), generator=gen, device=gen.device).to(pool.device)]
            rows.append(x[pick])
        return torch.cat(rows).clone()

    def adjacency(self, pge, x_syn: Tensor, update_a: bool, a_fixed: Tensor | None) -> Tensor | None:
        """A' for this step: none (structure-free), PGE(X') (structure epochs, or ``feature_through_pge``),
        else the epoch's constant ``a_fixed``."""
        if pge is None:
            return None
        if update_a or self.params["feature_through_pge"]:
            return pge(x_syn)
        return a_fixed

    def model_inputs(self, net: FunctionalNet, x: Tensor, a: Tensor | None) -> tuple[Tensor, Tensor | None]:
        """What :meth:`FunctionalNet.logits` reads on S: SGC Â'^K X' (X' itself without structure); GCN Â'X'
        and Â' (I without structure)."""
        n = x.size(0)
        if net.kind == "sgc":
            h = x
            if a is not None:
                nrm = normalize_dense(a)
                for _ in range(self.params["k"]):
                    h = nrm @ h
            return h, None
        nrm = normalize_dense(a) if a is not None else torch.eye(n)
        return nrm @ x, nrm

    def syn_logits(self, net: FunctionalNet, x: Tensor, a: Tensor | None) -> Tensor:
        """θ's logits on S = (A', X') ``[n', C]``."""
        return net.logits(*self.model_inputs(net, x, a))

    def snapshot(self, x: Tensor, adj: Tensor) -> CondensedGraph:
        """S = (A', X', Y') as a :class:`CondensedGraph` on the CPU (A' symmetrised, zero diagonal)."""
        feats, start = {}, 0
        for m, dm in zip(self.graph.modalities, self.dims):
            feats[m] = x[:, start:start + dm].detach().cpu().clone()
            start += dm
        a = adj.detach().cpu().clone()
        a = (a + a.T) / 2
        a.fill_diagonal_(0)
        return CondensedGraph(feats, a, self.y_syn, num_classes=self.graph.num_classes,
                              modalities=self.graph.modalities)

    # ------------------------------------------------------------------ real side
    def real_block(self, nodes: Tensor) -> tuple[Tensor, Tensor]:
        """(ÂX rows of the nodes' neighbourhood, the Â block [nodes, neighbourhood]) for the GCN real side."""
        adj = self.adj
        crow, col, val = adj.crow_indices(), adj.col_indices(), adj.values()
        start, end = crow[nodes], crow[nodes + 1]
        lens = end - start
        rowpos = torch.repeat_interleave(torch.arange(nodes.numel()), lens)
        offs = torch.arange(int(lens.sum())) - torch.repeat_interleave(torch.cumsum(lens, 0) - lens, lens)
        ptr = torch.repeat_interleave(start, lens) + offs
        cols, inv = torch.unique(col[ptr], return_inverse=True)
        block = torch.sparse_coo_tensor(torch.stack([rowpos, inv]), val[ptr], (nodes.numel(), cols.numel()),
                                        check_invariants=False).coalesce()
        return self.ax[cols], block.to_sparse_csr()

    def _rows(self, k: int) -> Tensor:
        """Class ``k``'s rows of Â^K X on this rank, gathered once (they depend neither on θ nor on S; gathered
        again if :attr:`class_local` is replaced)."""
        idx = self.class_local[k]
        hit = self._class_rows.get(k)
        if hit is None or hit[0] is not idx:
            hit = self._class_rows[k] = (idx, self.prop[idx])
        return hit[1]

    def real_grads(self, net: FunctionalNet, gen: torch.Generator) -> Tensor | dict[int, list[Tensor]]:
        """The real class gradients of θ's weights: SGC ``[len(classes), C, d]`` in closed form
        ∇W_c = (1/n_c) Σ_{i∈c} (softmax_i − e_c) h_iᵀ; GCN ``{class: [∇W1, ∇W2]}`` by autograd over the
        class's nodes (at most ``real_batch``, default 256, drawn from ``gen``). Summed over the ranks."""
        p = self.params
        if p["backbone"] == "sgc":
            w, b = net.weights[0].detach(), net.biases[0].detach()
            out = []
            with torch.no_grad():
                for k in self.classes:
                    h = self._rows(k)
                    e = torch.softmax(h @ w.T + b, dim=1)
                    e[:, k] -= 1.0
                    out.append((e.T @ h) / self.class_idx[k].numel())  # this rank's share of the class mean
            g = torch.stack(out)
            return D.all_reduce_sum(g) if self.world > 1 else g
        cap = p["real_batch"] if p["real_batch"] is not None else (256 if p["backbone"] == "gcn" else None)
        out = {}
        for k in self.classes:
            nodes = self.class_idx[k]
            sampled = cap is not None and nodes.numel() > cap
            if sampled:  # every rank draws the same sample (same generator), then takes its share of it
                nodes = nodes[torch.randperm(nodes.numel(), generator=gen, device=gen.device)[:cap].to(nodes.device)]
            total = nodes.numel()
            if self.world > 1:
                nodes = D.shard(nodes, self.rank, self.world, pad=False)
            if nodes.numel() == 0:
                out[k] = [torch.zeros_like(w) for w in net.weights]
                continue
            if not sampled:
                if k not in self._blocks:
                    self._blocks[k] = self.real_block(nodes)
                first, second = self._blocks[k]
            else:
                first, second = self.real_block(nodes)
            logits = net.logits(first, second)
            # sum over this rank's nodes / the class total: the ranks' gradients add up to the class mean
            loss = F.cross_entropy(logits, torch.full((nodes.numel(),), k, dtype=torch.long), reduction="sum") / total
            out[k] = [g.detach() for g in torch.autograd.grad(loss, net.weights)]
        if self.world > 1:  # one all-reduce for every class and layer
            flat = D.all_reduce_sum(torch.cat([g.flatten() for k in self.classes for g in out[k]]))
            pos = 0
            for k in self.classes:
                parts = []
                for g in out[k]:
                    parts.append(flat[pos:pos + g.numel()].view_as(g))
                    pos += g.numel()
                out[k] = parts
        return out

    # ------------------------------------------------------------------ objective
    def sgc_matching(self, net: FunctionalNet, x_syn: Tensor, a: Tensor | None, g_real: Tensor, cls_w: Tensor,
                     onehot: Tensor, cls_of: Tensor) -> Tensor:
        """The SGC matching loss L = Σ_c w_c D(G^S_c, G^R_c) in closed form (no per-class autograd):
        G^S_c = (1/n'_c) Σ_{i∈c} (p_i − y_i) h_iᵀ. ``cls_w`` ``[len(classes)]`` the class weights n'_c/n',
        ``onehot`` ``[n', C]`` Y', ``cls_of`` ``[n']`` each synthetic node's position in ``classes``."""
        h, _ = self.model_inputs(net, x_syn, a)
        w, b = net.weights[0].detach(), net.biases[0].detach()
        e = torch.softmax(h @ w.T + b, dim=1) - onehot  # [n', C]
        outer = e[:, :, None] * h[:, None, :]  # [n', C, d]
        g_syn = torch.zeros(len(self.classes), e.size(1), h.size(1)).index_add(0, cls_of, outer)
        g_syn = g_syn / torch.bincount(cls_of, minlength=len(self.classes)).clamp_min(1)[:, None, None]
        return (cls_w * batched_distance(g_syn, g_real, self.params["distance"])).sum()

    def field(self, g: Tensor, net: FunctionalNet) -> tuple[Tensor, float]:
        """The feature update after decoupling (when on) and the share of nodes whose blocks conflict."""
        if self.params["decouple"]:
            return self.decouple(g, net)
        return g, self.conflict_rate(g.detach(), net)

    def decouple(self, g: Tensor, net: FunctionalNet) -> tuple[Tensor, float]:
        """SR-GM's decoupling of ``g`` ``[n', d]``: where a node's two modality blocks conflict (negative
        inner product, in :attr:`space`), each is projected off the other (PCGrad). Returns the update and
        the conflict rate."""
        da, _ = self.dims
        ga, gb = g[:, :da], g[:, da:]
        if self.space == "input":
            pa, pb, conflict = project_conflicting(ga, gb)
        else:
            w = net.weights[0].detach()
            pa, pb, conflict = project_conflicting_shared(ga, gb, w[:, :da].T, w[:, da:].T)
        return torch.cat([pa, pb], dim=1), float(conflict.double().mean())

    def conflict_rate(self, g: Tensor, net: FunctionalNet) -> float:
        """The share of nodes whose two modality blocks of ``g`` conflict (NaN unless two modalities)."""
        if len(self.dims) != 2:
            return float("nan")
        da = self.dims[0]
        ga, gb = g[:, :da], g[:, da:]
        if self.space == "shared":
            w = net.weights[0].detach()
            ga, gb = ga @ w[:, :da].T, gb @ w[:, da:].T
        return float(((ga * gb).sum(1) < 0).double().mean())
