"""GraphMNL's branch library: per-modality and structure branches with shared first-layer projections.

Branches b each predict logits z_b(i) ``[n, C]``:

* ``raw:m``: a head on ReLU(u_m + b_m), u_m = W_m drop(x_m) (the modality's first-layer projection P_m);
* ``prop:m``: the same projection propagated K hops, ReLU(Â^K u_m + b_m) = ReLU(W_m Â^K drop(x_m) + b_m), so
  ``raw:m`` and ``prop:m`` share P_m and GraphMNL makes one input-width product per modality;
* ``struct``: a GNN on its own projection of the early-fusion input, ReLU(Q drop([x_1 | ... | x_M | presence]));
* optional ``struct:<backbone>`` (``gcn``, ``sage``, ``appnp``: a second structure GNN on the struct branch's
  input h0; ``appnp`` is APPNP, Gasteiger et al., ICLR 2019: a two-layer head on h0, then K = 10 steps of
  personalised PageRank, α = 0.1) and ``topo`` (the structure-only branch ReLU(Â E + b_E) of LINKX, Lim et al. 2021, one learned vector per
  node).

The fusion weights are grouped by branch kind (raw, prop, struct; ``topo`` and ``struct:<backbone>`` count as
struct): α_b(i) = softmax_{b' in k(b), present}(r̃_{b'}(i) / T)_b / K(i), K(i) the number of kinds present at i,
and the fused logits count the class prior once (:func:`magkit.functional.prior_once_fusion`):
z_f(i) = Σ_b α_b(i) z_b(i) − (1 − Σ_k s_k(i)²) log π, s_k(i) = Σ_{b in k} α_b(i). The reliability r̃ ``[n, B]``
is read from ``inputs.extra["reliability"]`` (zeros when absent).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..exceptions import ConfigError
from ..functional import dropout as _functional_dropout
from ..functional import prior_once_fusion
from ..train.propagation import spmm
from .backbones import build_backbone, masked_softmax, structure_for

if TYPE_CHECKING:
    from ..methods.base import GraphInputs

#: backbones of the optional second structure branch ``struct:<backbone>``
STRUCT_BACKBONES = ("gcn", "sage", "appnp")

#: optional branches beyond the default library (``branches=["+topo"]``, ``["+struct:gcn"]``)
OPTIONAL_BRANCHES = ("topo",) + tuple(f"struct:{b}" for b in STRUCT_BACKBONES)


def default_branches(modalities) -> tuple[str, ...]:
    """``raw:m`` and ``prop:m`` for every modality m, then ``struct``."""
    return tuple(f"raw:{m}" for m in modalities) + tuple(f"prop:{m}" for m in modalities) + ("struct",)


def branch_kind(branch: str) -> str:
    """The kind a branch competes in under the grouped fusion: ``raw``, ``prop`` or ``struct`` (``topo`` and
    ``struct:<backbone>`` are structure branches)."""
    return "struct" if branch == "topo" else branch.split(":", 1)[0]


def is_struct(branch: str) -> bool:
    return branch == "struct" or branch.startswith("struct:")


def _modality_branch(branch: str) -> bool:
    """raw:m and prop:m read one modality; struct, struct:<backbone> and topo read all of them."""
    return branch.startswith(("raw:", "prop:"))


def mask_dropout(x: Tensor, p: float, training: bool) -> Tensor:
    """:func:`magkit.functional.dropout` (one float mask ``keep · 1/(1 − p̂)``, one product)."""
    return _functional_dropout(x, p, training)


def _mapped(x) -> bool:
    return bool(getattr(x, "is_mapped_block", False))


def project_rows(blocks: list, weight: Tensor, bias: Tensor | None = None, rows: int = 65536) -> Tensor:
    """F.linear([b_1 | ... | b_k], weight, bias) for column blocks that may be memory-mapped (or, for the last
    one, a presence tensor), ``rows`` rows at a time: the features are read block by block and never held
    whole (eval mode only: no dropout). Returns ``[n, weight.shape[0]]``."""
    n = blocks[0].shape[0]
    out = torch.empty(n, weight.shape[0], device=weight.device)
    for a in range(0, n, rows):
        b = min(a + rows, n)
        x = torch.cat([(blk.rows(a, b) if _mapped(blk) else blk[a:b]).to(weight.device, torch.float32)
                       for blk in blocks], 1)
        out[a:b] = F.linear(x, weight, bias)
    return out


class GraphMNLNet(nn.Module):
    r"""GraphMNL's branch library with shared first-layer projections and the grouped, prior-once fusion (see
    the module docstring for the maths).

    Args:
        branches (Sequence[str]): branch names (``raw:m``, ``prop:m``, ``struct``, ``struct:<backbone>``,
            ``topo``), in column order.
        modalities (Sequence[str]): modality names, in the order of the inputs' presence columns.
        dims (dict[str, int]): feature width d_m of each modality.
        hidden (int): width h of every branch's hidden layer.
        num_classes (int): number of classes C.
        dropout (float, optional): dropout probability. (default: :obj:`0.5`)
        struct_backbone (str, optional): the struct branch's GNN. (default: :obj:`"sage"`)
        struct_layers (int, optional): the struct GNN's depth. (default: :obj:`2`)
        temperature (float, optional): T of the fusion softmax. (default: :obj:`0.3`)
        prop_k (int, optional): hops K of the ``prop`` branches. (default: :obj:`2`)
        num_nodes (int, optional): the graph's node count N (needed by ``topo``). (default: :obj:`None`)

    Shapes:
        - **input:** a :class:`~magkit.methods.base.GraphInputs` of n nodes (features ``[n, d_m]``, presence
          ``[n, M]``, optional ``extra["reliability"]`` ``[n, B]``)
        - **output:** a dict with ``logits`` ``[n, C]`` (fused), ``branches`` ``[n, B, C]``, ``present``
          ``[n, B]`` (bool), ``alpha`` ``[n, B]``; in training mode also ``guide_inputs`` (what
          :meth:`guided_logits` reads)
    """

    def __init__(self, branches, modalities, dims: dict[str, int], hidden: int, num_classes: int,
                 dropout: float = 0.5, struct_backbone: str = "sage", struct_layers: int = 2,
                 temperature: float = 0.3, prop_k: int = 2, num_nodes: int | None = None):
        super().__init__()
        self.prop_k = int(prop_k)
        self.branches = tuple(branches)
        self.modalities = tuple(modalities)
        self.struct_backbone = struct_backbone
        self.proj = nn.ModuleDict({m: nn.Linear(dims[m], hidden) for m in modalities})
        self.heads = nn.ModuleDict()
        early_dim = sum(dims[m] for m in modalities) + len(modalities)
        for b in self.branches:
            if b == "topo":
                # one learned h-vector per node, zero at the start: a node no training label reaches stays at the
                # bias and its head predicts the same for all such nodes (low confidence, low reliability)
                if not num_nodes:
                    raise ConfigError("the topo branch needs the graph's number of nodes")
                self.topo_emb = nn.Parameter(torch.zeros(int(num_nodes), hidden))
                self.topo_bias = nn.Parameter(torch.empty(hidden).uniform_(-hidden ** -0.5, hidden ** -0.5))
                self.heads["topo"] = nn.Linear(hidden, num_classes)
            elif b == "struct":
                self.struct_proj = nn.Linear(early_dim, hidden)
                self.struct = build_backbone(struct_backbone, hidden, hidden, num_classes, num_layers=struct_layers,
                                             dropout=dropout)
                if hasattr(self.struct, "narrow_sage"):
                    self.struct.narrow_sage = True
            elif b.startswith("struct:"):
                # a second structure GNN on the struct branch's input h0: two aggregations of one representation
                # compete within the struct kind
                if not hasattr(self, "struct_more"):
                    self.struct_more = nn.ModuleDict()
                bk = b.split(":", 1)[1]
                gnn = build_backbone(bk, hidden, hidden, num_classes, num_layers=struct_layers, dropout=dropout)
                if hasattr(gnn, "narrow_sage"):
                    gnn.narrow_sage = True
                self.struct_more[bk] = gnn
            else:
                self.heads[b.replace(":", "_")] = nn.Linear(hidden, num_classes)
        self.dropout = dropout
        self.temperature = temperature
        # log π of the training labels (set by the estimator), counted once in the fused logits
        self.register_buffer("log_prior", torch.zeros(num_classes))

    # ------------------------------------------------------------------ presence and kinds
    def branch_present(self, present: Tensor, topo_present: Tensor | None = None) -> Tensor:
        """[n, B] bool: where each branch is present. A modality's branches abstain where the modality is missing,
        struct where every modality is; topo where the node has no edge (``topo_present``, from the whole graph)."""
        cols = []
        for b in self.branches:
            if b == "topo":
                cols.append(torch.ones_like(present[:, 0]) if topo_present is None else topo_present.to(present.device))
            elif is_struct(b):
                cols.append(present.any(dim=1))
            else:
                cols.append(present[:, self.modalities.index(b.split(":", 1)[1])])
        return torch.stack(cols, dim=1)

    def kinds(self) -> dict[str, list[int]]:
        """Branch kind (raw, prop, struct) -> its branch columns, in first-appearance order."""
        kinds: dict[str, list[int]] = {}
        for j, b in enumerate(self.branches):
            kinds.setdefault(branch_kind(b), []).append(j)
        return kinds

    def kind_columns(self) -> list[list[int]]:
        return list(self.kinds().values())

    # ------------------------------------------------------------------ forward
    def forward(self, inp: GraphInputs) -> dict:
        hidden = self._modality_hidden(inp)
        if "topo" in self.branches:
            hidden = dict(hidden, topo=self._topo_hidden(inp))
            hidden = {b: hidden[b] for b in self.branches if b in hidden}
        h0 = None
        if "struct" in self.branches and any(_mapped(x) for x in inp.xs.values()):
            blocks = [inp.xs[m] for m in self.modalities] + [inp.present.to(torch.float32)]
            h0 = F.relu(project_rows(blocks, self.struct_proj.weight, self.struct_proj.bias))
        elif "struct" in self.branches:
            h0 = F.relu(self.struct_proj(mask_dropout(inp.early_input(self.modalities), self.dropout, self.training)))
        return self._heads(inp, hidden, h0)

    def _modality_hidden(self, inp: GraphInputs) -> dict[str, Tensor]:
        """One projection per modality, u_m = W_m drop(x_m); raw:m reads ReLU(u_m + b_m), prop:m reads
        ReLU(Â^K u_m + b_m) (K sparse products of width h)."""
        need = {b.split(":", 1)[1] for b in self.branches if _modality_branch(b)}
        hidden: dict[str, Tensor] = {}
        adj = inp.norm_adj() if any(b.startswith("prop:") for b in self.branches) else None
        for m in self.modalities:
            if m not in need:
                continue
            lin = self.proj[m]
            if _mapped(inp.xs[m]):  # whole-graph inference on memory-mapped features: block by block
                u = project_rows([inp.xs[m]], lin.weight)
            else:
                u = F.linear(mask_dropout(inp.xs[m], self.dropout, self.training), lin.weight)
            if f"raw:{m}" in self.branches:
                hidden[f"raw:{m}"] = F.relu(u + lin.bias)
            if f"prop:{m}" in self.branches:
                v = u
                for _ in range(self.prop_k):
                    v = spmm(adj, v)
                hidden[f"prop:{m}"] = F.relu(v + lin.bias)
        return {b: hidden[b] for b in self.branches if b in hidden}

    def _topo_hidden(self, inp: GraphInputs) -> Tensor:
        """The topo branch's hidden layer ReLU(Â E + b_E) on this (sub)graph: E's rows are picked by the inputs'
        global node ids (``extra["node_id"]``; a sampled subgraph reads its nodes' rows)."""
        ids = inp.extra.get("node_id")
        if ids is None:
            if inp.num_nodes != self.topo_emb.shape[0]:
                raise ConfigError(f"the topo branch is transductive: fitted on {self.topo_emb.shape[0]} nodes, "
                                  f"got a graph of {inp.num_nodes}")
            emb = self.topo_emb
        else:
            emb = self.topo_emb.index_select(0, ids.to(self.topo_emb.device))
        return F.relu(spmm(inp.norm_adj(), emb) + self.topo_bias)

    def _heads(self, inp: GraphInputs, hidden: dict[str, Tensor], h0: Tensor | None) -> dict:
        # one dropout mask per branch hidden, shared by the supervised pass and the guidance pass
        dropped = {b: mask_dropout(h, self.dropout, self.training) for b, h in hidden.items()}
        struct_adj = self._struct_adjs(inp) if h0 is not None else None
        zs = torch.stack([self._struct_logits(b, h0, struct_adj) if is_struct(b)
                          else self.heads[b.replace(":", "_")](dropped[b]) for b in self.branches], dim=1)  # [n, B, C]
        present = self.branch_present(inp.present, inp.extra.get("topo_present"))
        rel = inp.extra.get("reliability")
        if rel is None:
            rel = torch.zeros(zs.shape[:2], device=zs.device)
        alpha = self.fusion_weights(rel, present)
        out = {"logits": self.fuse(zs, alpha), "branches": zs, "present": present, "alpha": alpha}
        if self.training:
            out["guide_inputs"] = (dropped, h0, struct_adj)
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

    # ------------------------------------------------------------------ fusion
    def fusion_weights(self, rel: Tensor, present: Tensor) -> Tensor:
        """α ``[n, B]``: within each kind the present branches compete by softmax(r̃ / T); every kind present at a
        node gets an equal share."""
        logit_w = rel / self.temperature
        alpha = torch.zeros_like(rel)
        total = torch.zeros_like(rel[:, 0])
        for cols in self.kind_columns():
            pk = present[:, cols]
            alpha[:, cols] = masked_softmax(logit_w[:, cols], pk)
            total = total + pk.any(1).to(rel.dtype)
        return alpha / total.clamp(min=1e-12).unsqueeze(1)

    def fuse(self, zs: Tensor, alpha: Tensor) -> Tensor:
        """Fused logits ``[n, C]`` from branch logits ``[n, B, C]`` and weights α ``[n, B]``: Σ_b α_b z_b with the
        class prior counted once over the kinds' shares."""
        fused = (alpha.unsqueeze(-1) * zs).sum(1)
        shares = torch.stack([alpha[:, cols].sum(1) for cols in self.kind_columns()], 1)
        return prior_once_fusion(fused, shares, self.log_prior)

    def guided_logits(self, out: dict, rows: Tensor, cols: Tensor) -> Tensor:
        """Logits ``[P, C]`` of branch ``cols[k]`` at node ``rows[k]`` for the guidance term (pairs sorted by
        branch), computed from detached first-layer representations: the guidance reaches each branch's own
        layers but not the shared projections. A head is evaluated on its guided rows only; a struct GNN (which
        needs the whole graph) once more on its detached input, and only if it is guided anywhere."""
        if "guide_inputs" not in out:
            return out["branches"][rows, cols]
        dropped, h0, struct_adj = out["guide_inputs"]
        parts = []
        for j, b in enumerate(self.branches):
            r = rows[cols == j]
            if r.numel() == 0:
                continue
            if is_struct(b):
                parts.append(self._struct_logits(b, h0.detach(), struct_adj)[r])
            else:
                parts.append(self.heads[b.replace(":", "_")](dropped[b][r].detach()))
        return torch.cat(parts, 0)
