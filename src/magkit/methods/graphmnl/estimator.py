"""The GraphMNL estimator (Multimodal Negative Learning, Gong et al., NeurIPS 2025, carried to graphs)."""

from __future__ import annotations

import logging
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from ...exceptions import ConfigError
from ...functional import accuracy, macro_f1
from ...models.graphmnl_net import OPTIONAL_BRANCHES, STRUCT_BACKBONES, GraphMNLNet, default_branches
from ...train.propagation import graph_adjacency
from ..base import GraphInputs, Monitor, NodeClassifier
from .guidance import GuidanceState, guided_pairs, reliability
from .minibatch import GuidedMiniBatch

log = logging.getLogger(__name__)
_WARNED: set = set()


class GraphMNL(NodeClassifier):
    r"""GraphMNL: Multimodal Negative Learning (Gong et al., NeurIPS 2025) carried to graphs, with per-node
    reliability arbitration between modality and structure branches and target-preserving negative learning.

    Branches b (``raw:m``: an MLP on x_m; ``prop:m``: the same projection propagated K hops; ``struct``: a GNN
    on its own projection of [x_1 | ... | x_M | presence]) each predict logits z_b
    (:class:`~magkit.models.graphmnl_net.GraphMNLNet`). Every epoch a detached reliability r̃_b(i) is computed
    from the current model and smoothed over the graph (:mod:`~magkit.methods.graphmnl.guidance`); it sets

    .. math::
        \alpha_b(i) = \frac{\mathrm{softmax}_{b' \in k(b)}(\tilde r_{b'}(i) / T)_b}{K(i)}, \qquad
        z_f(i) = \sum_b \alpha_b(i) z_b(i) - \Big(1 - \sum_k s_k(i)^2\Big) \log \pi

    (kinds k: raw, prop, struct; K(i) kinds present at i; s_k their shares; π the training class prior), and,
    after ``warmup`` epochs, which classes node i is unlikely to be under the teacher t(i):
    C̄(i) = {c ≠ argmax t(i) : t_c(i) < ρ C π_c}. The loss is

    .. math::
        \sum_b \mathrm{CE}(z_b, y)_{\mathrm{train}} + \mathrm{CE}(z_f, y)_{\mathrm{train}}
        + \frac{\lambda}{N} \sum_{i \notin \mathrm{train}} g(i) \sum_{b \text{ guided at } i}
        -\sum_{c \in \bar C(i)} \log(1 - q_{b,c}(i)),

    q_b = softmax(z_b) computed above the shared first-layer projections. By default t = the fused posterior,
    every present branch is guided and g ≡ 1.

    Args:
        hidden (int, optional): width of every branch's hidden layer. (default: :obj:`128`)
        num_layers (int, optional): unused by GraphMNL (its struct GNN's depth is ``struct_layers``).
            (default: :obj:`2`)
        dropout (float, optional): dropout probability. (default: :obj:`0.5`)
        lr (float, optional): Adam's learning rate. (default: :obj:`0.01`)
        weight_decay (float, optional): Adam's weight decay. (default: :obj:`5e-4`)
        epochs (int, optional): maximum number of epochs. (default: :obj:`300`)
        patience (int, optional): early-stopping patience in epochs. (default: :obj:`50`)
        monitor (str, optional): validation metric selecting the epoch. (default: :obj:`"val_acc"`)
        batch_size (int, optional): mini-batch training on sampled neighbourhoods with this many labelled
            seeds per step, and as many guided seeds (:mod:`~magkit.methods.graphmnl.minibatch`); :obj:`None`
            trains full batch. (default: :obj:`None`)
        fanouts (tuple[int, ...], optional): neighbours sampled per hop in mini-batch mode.
            (default: :obj:`(10, 10)`)
        seed (int, optional): the seed of every random draw of the fit. (default: :obj:`0`)
        device (str, optional): ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"auto"``. (default: :obj:`"cpu"`)
        distributed (bool or "auto", optional): data-parallel training under torchrun. (default: :obj:`False`)
        branches (list[str], optional): the branch set; :obj:`None` is ``raw:m`` and ``prop:m`` for every
            modality plus ``struct``. Names that all start with ``+`` or ``-`` edit that set: ``"+topo"`` (the
            structure-only branch ReLU(Â E + b_E), one learned vector per node, transductive),
            ``"+struct:gcn"`` / ``"+struct:sage"`` / ``"+struct:appnp"`` (a second structure GNN on the struct
            branch's input), ``"-prop:image"`` (drop a default branch). (default: :obj:`None`)
        prop_k (int, optional): hops K of the ``prop`` branches, ReLU(Â^K W_m x_m + b_m). (default: :obj:`2`)
        struct_backbone (str, optional): the struct branch's GNN. (default: :obj:`"sage"`)
        struct_layers (int, optional): the struct GNN's depth. (default: :obj:`2`)
        temperature (float, optional): T of the fusion softmax. (default: :obj:`0.3`)
        beta (float, optional): β of the graph smoothing r̃ = (1 − β) r + β N(r̃); 0 switches it off.
            (default: :obj:`0.5`)
        smooth_steps (int, optional): smoothing iterations. (default: :obj:`2`)
        delta (float, optional): δ: a branch is inferior when its r̃ is at least δ below its kind's best.
            (default: :obj:`0.05`)
        warmup (int, optional): epochs before the guidance starts. (default: :obj:`20`)
        lam (float, optional): λ, the guidance weight. (default: :obj:`1.0`)
        rho (float, optional): ρ of the negative-set rule t_c(i) < ρ C π_c (``teacher="fused"``) or
            t_c(i) < ρ (``teacher="dominant"``). (default: :obj:`0.05`)
        guidance (str, optional): ``"nl"`` (target-preserving negative learning), ``"ntkd"`` (target-preserving
            non-target distillation), ``"kd"`` (KL to the teacher), ``"mnl"`` (MNL's non-target soft
            cross-entropy), ``"none"`` (no guidance). (default: :obj:`"nl"`)
        teacher (str, optional): ``"fused"``: the fused posterior teaches every present branch, per-class
            thresholds ρ C π_c; ``"dominant"`` (multimodal negative learning's form): the per-node dominant
            branch teaches the inferior branches of each kind, one threshold ρ. (default: :obj:`"fused"`)
        gate (bool, optional): guide only where the instability-aware gate
            g(i) = 1[s(i) < 0.3] σ(20 (m(i) − 0.05)) is open (s: the teacher's total-variation instability against
            its moving average, decay 0.9; m: the arbitration margin). (default: :obj:`False`)
        fixed_dominant (str, optional): :obj:`None` (per-node arbitration), a modality name or ``"auto"`` (one
            global dominant modality; ``"auto"`` takes the modality whose raw branch is the more reliable on
            average when the guidance starts). (default: :obj:`None`)
        output_prop (str or float, optional): propagation of the fused posterior P after training,
            H ← (1 − a) Â H + a P from H = P, ``output_k`` steps, rows rescaled to sum to 1 (APPNP's
            personalised PageRank on the prediction). :obj:`None`: off; ``"val"``: a chosen from 1 (off), 0.5,
            0.3, 0.2, 0.1 by accuracy on the validation split (macro-F1 when ``monitor="val_f1"``; ties to the
            larger a), kept as ``output_alpha_``; a float 0 < a ≤ 1 fixes it. Training is the same either way.
            (default: :obj:`None`)
        output_k (int, optional): propagation steps of ``output_prop``. (default: :obj:`10`)

    Shapes:
        - **fit input:** a :class:`~magkit.data.graph.MultimodalGraph` of N nodes, C classes, B branches
        - **predict_proba:** ``[N, C]``
        - **diagnostics_:** ``reliability`` / ``alpha`` ``[N, B]``, ``dominant`` / ``margin`` ``[N]``, per-branch
          validation scores (:func:`~magkit.methods.graphmnl.diagnostics.diagnose`)
    """

    description = "GraphMNL: graph-aware reliability arbitration + target-preserving negative learning"

    #: mini-batch mode: reuse the evaluation's whole-graph pass as the next epoch's state pass (the same
    #: parameters and reliability give the same output; off only to test that)
    reuse_eval_pass: bool = True

    def __init__(self, *, hidden: int = 128, num_layers: int = 2, dropout: float = 0.5, lr: float = 0.01,
                 weight_decay: float = 5e-4, epochs: int = 300, patience: int | None = 50, monitor: Monitor = "val_acc",
                 batch_size: int | None = None, fanouts: tuple[int, ...] = (10, 10), seed: int = 0,
                 device: str = "cpu", distributed: bool | Literal["auto"] = False,
                 branches: list[str] | tuple[str, ...] | None = None, prop_k: int = 2,
                 struct_backbone: Literal["sage", "gcn", "appnp", "gat", "sgc"] = "sage", struct_layers: int = 2,
                 temperature: float = 0.3, beta: float = 0.5, smooth_steps: int = 2, delta: float = 0.05,
                 warmup: int = 20, lam: float = 1.0, rho: float = 0.05,
                 guidance: Literal["nl", "ntkd", "kd", "mnl", "none"] = "nl",
                 teacher: Literal["fused", "dominant"] = "fused", gate: bool = False,
                 fixed_dominant: str | None = None, output_prop: Literal["val"] | float | None = None,
                 output_k: int = 10):
        self._store(locals())

    # ------------------------------------------------------------------ set-up
    def _check_params(self) -> None:
        super()._check_params()
        name = type(self).__name__
        for key, value, ok, allowed in (
            ("prop_k", self.prop_k, 0 <= self.prop_k <= 64, "0 <= prop_k <= 64"),
            ("struct_layers", self.struct_layers, self.struct_layers >= 1, ">= 1"),
            ("temperature", self.temperature, self.temperature > 0, "> 0"),
            ("beta", self.beta, 0 <= self.beta <= 1, "0 <= beta <= 1"),
            ("smooth_steps", self.smooth_steps, 0 <= self.smooth_steps <= 64, "0 <= smooth_steps <= 64"),
            ("delta", self.delta, self.delta >= 0, ">= 0"),
            ("warmup", self.warmup, self.warmup >= 0, ">= 0"),
            ("lam", self.lam, self.lam >= 0, ">= 0"),
            ("rho", self.rho, 0 < self.rho < 1, "0 < rho < 1"),
            ("output_k", self.output_k, 1 <= self.output_k <= 64, "1 <= output_k <= 64"),
        ):
            if not ok:
                raise ConfigError(f"{name}: {key}={value!r}; allowed: {allowed}")
        op = self.output_prop
        if not (op is None or op == "val" or (not isinstance(op, str) and 0 < op <= 1)):
            raise ConfigError(f"{name}: output_prop={op!r}; allowed: none (off), val or a number 0 < a <= 1")
        if self.guidance != "none" and self.lam > 0 and self.warmup >= self.epochs \
                and (self.warmup, self.epochs) not in _WARNED:  # once per process and setting, not once per seed
            _WARNED.add((self.warmup, self.epochs))
            log.warning("warmup %d >= epochs %d: the guidance term never starts, so this fit is GraphMNL without "
                        "guidance (graphmnl-no-guidance); lower warmup (mini-batch epochs hold many steps each) or "
                        "raise epochs", self.warmup, self.epochs)

    def _branches(self, graph) -> tuple[str, ...]:
        given = tuple(self.branches or ())
        default = default_branches(graph.modalities)
        edits = [b for b in given if b.startswith(("+", "-"))]
        if edits and len(edits) != len(given):
            raise ConfigError(f"branches={list(given)}; either name every branch or only edit the default set "
                              "with '+name' / '-name' on every name (e.g. ['+struct:gcn'], ['-prop:image'])")
        valid = set(default_branches(graph.modalities)) | set(OPTIONAL_BRANCHES)
        if edits:  # '+name' adds to the default library, '-name' removes from it
            for b in edits:
                if b[1:] not in valid:
                    raise ConfigError(f"branches: {b[1:]!r}; allowed: {', '.join(sorted(valid))}")
                if b[0] == "+" and b[1:] in default:
                    raise ConfigError(f"branches: {b} adds {b[1:]!r}, already a default branch "
                                      f"({', '.join(default)})")
                if b[0] == "-" and b[1:] not in default:
                    raise ConfigError(f"branches: {b} removes {b[1:]!r}, not a default branch "
                                      f"({', '.join(default)})")
            drop = {b[1:] for b in edits if b[0] == "-"}
            branches = tuple(b for b in default if b not in drop) + tuple(b[1:] for b in edits if b[0] == "+")
        else:
            branches = given or default
        bad = [b for b in branches if b not in valid]
        if bad or not branches:
            raise ConfigError(f"branches={bad or list(branches)}; allowed: {', '.join(sorted(valid))}")
        if len(set(branches)) != len(branches):
            raise ConfigError(f"branches={list(branches)}; a branch is named twice")
        extra = [b for b in branches if b.startswith("struct:")]
        if extra and "struct" not in branches:
            raise ConfigError(f"branches: {extra[0]} reads the struct branch's input; add 'struct' to the branches")
        same = [b for b in extra if b == f"struct:{self.struct_backbone}"]
        if same:
            raise ConfigError(f"branches: {same[0]} repeats struct (struct_backbone={self.struct_backbone!r});"
                              f" pick another backbone: {', '.join(STRUCT_BACKBONES)}")
        fd = self.fixed_dominant
        if fd is not None and fd != "auto" and fd not in graph.modalities:
            raise ConfigError(f"fixed_dominant={fd!r}; allowed: None, 'auto', "
                              f"{', '.join(map(repr, graph.modalities))}")
        return branches

    def _inputs(self, graph) -> GraphInputs:
        inp = super()._inputs(graph)
        branches = self._branches(graph)
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

    def _build(self, shape):
        self.branches_ = self._branches(shape)
        return GraphMNLNet(self.branches_, shape.modalities, shape.modality_dims, self.hidden, shape.num_classes,
                           dropout=self.dropout, struct_backbone=self.struct_backbone,
                           struct_layers=self.struct_layers, temperature=self.temperature, prop_k=self.prop_k,
                           num_nodes=shape.num_nodes)

    def _begin_fit(self, graph, model) -> None:
        """The guidance state of this fit, and log π of the training labels in the network (add-one smoothed,
        so a class without training nodes stays finite)."""
        self._state = GuidanceState.for_graph(self.get_params(), self.branches_, graph, graph_adjacency(graph))
        if self.batch_size is not None:
            self._state.minibatch = GuidedMiniBatch(graph, self.fanouts, self.batch_size, self.seed, self._use_ddp())
        counts = torch.bincount(graph.y[graph.train_mask], minlength=graph.num_classes).double() + 1.0
        model.log_prior.copy_((counts / counts.sum()).log().float())

    def fit(self, graph, progress=None) -> GraphMNL:
        """Train on ``graph``'s training split, selecting the epoch on its validation split; sets ``model_``,
        ``history_``, ``branches_`` and ``diagnostics_``. ``progress`` is called with every epoch's record."""
        from .diagnostics import diagnose

        self.check_params()
        # a refit starts from scratch: a previous fit's model must not set this fit's inputs (fitted reliability,
        # the topo branch's node count)
        self.__dict__.pop("model_", None)
        try:
            super().fit(graph, progress)
        finally:
            self.__dict__.pop("_state", None)  # training-time state: not part of the fitted estimator
        self._choose_output_alpha(graph)
        self.diagnostics_ = diagnose(self, graph)
        return self

    # ------------------------------------------------------------------ output propagation
    #: the a of ``output_prop="val"``, 1 = no propagation (first: ties keep the least propagation)
    OUTPUT_ALPHAS = (1.0, 0.5, 0.3, 0.2, 0.1)

    def _propagate_output(self, graph, proba: Tensor, alpha: float) -> Tensor:
        """H ← (1 − a) Â H + a P, H = P, ``output_k`` times, each row then rescaled to sum to 1 (Â's symmetric
        normalisation scales rows, not their ranking; a = 1: P itself)."""
        if alpha >= 1.0:
            return proba
        adj = graph_adjacency(graph)
        h = proba
        for _ in range(self.output_k):
            h = (1 - alpha) * (adj @ h) + alpha * proba
        return h / h.sum(1, keepdim=True).clamp(min=1e-12)

    def _choose_output_alpha(self, graph) -> None:
        """Set ``output_alpha_`` (1.0 = off) and, for ``output_prop="val"``, ``output_scores_``: the validation
        accuracy (macro-F1 under ``monitor="val_f1"``) of every candidate a. Validation loss does not choose a:
        propagation flattens the posterior, so the loss prefers no propagation whatever the accuracy."""
        self.__dict__.pop("output_scores_", None)
        op = self.output_prop
        if op is None:
            self.output_alpha_ = 1.0
            return
        if op != "val":
            self.output_alpha_ = float(op)
            return
        self.output_alpha_ = 1.0
        proba = super().predict_proba(graph)
        vi = graph.split_index("val")
        y = graph.y[vi]
        scores = {}
        for a in self.OUTPUT_ALPHAS:
            h = self._propagate_output(graph, proba, a)[vi]
            scores[a] = macro_f1(h, y, graph.num_classes) if self.monitor == "val_f1" else accuracy(h, y)
        best = max(scores.values())
        self.output_alpha_ = next(a for a in self.OUTPUT_ALPHAS if scores[a] == best)
        self.output_scores_ = {str(a): v for a, v in scores.items()}

    def predict_proba(self, graph) -> Tensor:
        """Class probabilities ``[N, C]``: the fused posterior, propagated over ``graph`` when ``output_alpha_``
        is below 1 (``output_prop``)."""
        proba = super().predict_proba(graph)
        alpha = self.__dict__.get("output_alpha_", 1.0)
        return self._propagate_output(graph, proba, alpha) if alpha < 1.0 else proba

    def score(self, graph, split: str = "test") -> dict[str, float]:
        """Accuracy and macro-F1 on ``split``; with output propagation every node is inferred (the
        propagation reads all of them), a memory-mapped graph included."""
        if self.__dict__.get("output_alpha_", 1.0) >= 1.0:
            return super().score(graph, split)
        self._check_fitted()
        if graph.num_classes != self.num_classes_:
            return super().score(graph, split)  # its one-line error
        idx = graph.split_index(split)
        proba = self.predict_proba(graph)
        return {"acc": accuracy(proba[idx], graph.y[idx]), "f1": macro_f1(proba[idx], graph.y[idx], graph.num_classes)}

    # ------------------------------------------------------------------ reliability at inference
    def _reliability_fixed_point(self, graph, inp: GraphInputs, iterations: int = 2) -> Tensor:
        """Branch logits do not depend on the fusion weights, so r̃ is recomputed from the fitted model's
        branches: start from uniform weights, then alternate scores -> fusion ``iterations`` times."""
        adj = graph_adjacency(graph)
        labelled = graph.get("train_mask")
        labelled = labelled.clone() if labelled is not None else torch.zeros(graph.num_nodes, dtype=torch.bool)
        y_train = torch.where(labelled, graph.y, torch.full_like(graph.y, -1))
        dev = inp.to(self.device_)
        dev.extra.pop("reliability", None)
        for _ in range(iterations):
            r, _ = reliability(self._whole_output(self.model_, dev), adj, labelled, y_train, self.beta,
                               self.smooth_steps)
            dev.extra["reliability"] = r
        return dev.extra["reliability"].cpu()

    @staticmethod
    def _whole_output(model, inputs: GraphInputs) -> dict:
        """The model's eval-mode output for every node in one pass (on a memory-mapped graph the first layers
        read the feature blocks row chunk by row chunk; the rest runs at width h in memory)."""
        was = model.training
        model.eval()
        with torch.no_grad():
            out = model(inputs)
        model.train(was)
        return out

    def _eval_logits(self, model, inputs, dev_inputs, graph, nodes: Tensor, device) -> Tensor:
        """Mini-batch mode: the evaluation's whole-graph pass is kept for the next epoch's state, which would
        otherwise repeat it with the same parameters and reliability."""
        if self.batch_size is None or not self.reuse_eval_pass:
            return super()._eval_logits(model, inputs, dev_inputs, graph, nodes, device)
        if self._lazy(graph):
            inputs.norm_adj()
            inputs.mean_adj()
            dev_inputs = inputs.to(device)
        out = self._whole_output(model, dev_inputs)
        self._state.eval_pass = out
        return out["logits"]

    def _sampled_logits(self, model, inputs: GraphInputs, graph, nodes: Tensor, device) -> Tensor:
        """Evaluation on a memory-mapped graph: the block-by-block whole-graph pass (the same logits as in
        memory), rows ``nodes`` kept."""
        inputs.norm_adj()  # built once on the caller's inputs, then carried by .to()
        inputs.mean_adj()
        logits = self._whole_output(model, inputs.to(device))["logits"]
        out = torch.zeros_like(logits)
        idx = nodes.to(logits.device)
        out[idx] = logits[idx]
        return out

    # ------------------------------------------------------------------ training
    def _before_epoch(self, epoch: int, inputs: GraphInputs, graph) -> None:
        state = self._state
        if self.batch_size is not None:
            # mini-batch: this epoch's guidance state from one eval-mode pass over the whole graph (fusion weights
            # from the previous state's reliability, as a full-batch epoch reads the previous epoch's); the
            # previous epoch's evaluation pass ran the same parameters with the same reliability: reuse it
            out, state.eval_pass = state.eval_pass, None
            if out is None:
                out = self._whole_output(self.model_, inputs)
            state.epoch = state.step(out, epoch, self.model_)
            inputs.extra["reliability"] = state.epoch["r"]
            return
        nxt, state.next_reliability = state.next_reliability, None
        if nxt is not None:
            inputs.extra["reliability"] = nxt

    def _loss(self, out, y, idx, epoch):
        state = self._state
        z, present = out["branches"], out["present"]
        n, nb, c = z.shape
        # supervised terms: every branch on the training nodes where it is present, and the fusion
        zi, pi, yi = z[idx], present[idx].float(), y[idx]
        ce_b = F.cross_entropy(zi.reshape(-1, c), yi.repeat_interleave(nb), reduction="none").view(-1, nb)
        count = pi.sum(0)
        n_lab = int(state.labelled.sum())
        if idx.numel() < n_lab:
            # a data-parallel shard of the labelled nodes: normalise by the branch's present count over all of
            # them times the shard's share, so that the shard-size-weighted mean over the ranks (what DDP's
            # gradient average and the W |S_r| / N loss scaling compute) is the full-batch per-branch mean
            count = present[state.labelled.to(present.device)].float().sum(0) * (idx.numel() / n_lab)
        ce_branches = ((ce_b * pi).sum(0) / count.clamp(min=1)).sum()
        ce_fused = F.cross_entropy(out["logits"][idx], yi)
        loss = ce_branches + ce_fused

        st = state.step(out, epoch, self.model_)
        g = st["g"]
        guide = z.new_zeros(())
        if st["active"] and bool((g > 0).any()):
            rows, cols = guided_pairs(g, st["targets"])
            if rows.numel():
                zg = self.model_.guided_logits(out, rows, cols)
                guide = state.loss(zg, rows, st["teacher"], g, n)
                loss = loss + self.lam * guide
        # fusion weights of the next epoch come from this epoch's reliability
        state.next_reliability = st["r"]
        stats = {
            "loss": float(loss.detach()), "ce": float((ce_branches + ce_fused).detach()), "guide": float(guide.detach()),
            "gate_rate": st["gate_rate"], "inferior_rate": st["inferior_rate"],
        }
        return loss, stats

    def _batch_steps(self, model, inputs: GraphInputs, ycpu: Tensor, batches, opt, epoch: int, device):
        """Mini-batch steps (:class:`~magkit.methods.graphmnl.minibatch.GuidedMiniBatch`)."""
        return self._state.minibatch.steps(model, self.model_, inputs, ycpu, batches, opt, device, self._state,
                                           self.lam)
