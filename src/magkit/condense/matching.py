r"""The gradient-matching condensation loop, written once (GCond, GCond-X, SR-GM and its ablations).

GCond (Jin et al., ICLR 2022, "Graph Condensation for Graph Neural Networks") learns a synthetic graph
S = (A', X', Y') whose training gradients match those of the real graph G:

.. math::
    \min_{X', \Phi} \; \mathbb{E}_{\theta_0} \sum_{t} \sum_c \frac{n'_c}{n'}
    D\bigl(\nabla_\theta \ell(f_\theta(A'_\Phi(X'), X')_c, Y'_c),\; \nabla_\theta \ell(f_\theta(A, X)_{B_c}, Y_{B_c})\bigr)

with A' = PGE_Φ(X') (:class:`~magkit.models.pge.PGE`) or A' = 0 (GCond-X) and D the per-output-unit cosine
distance. SR-GM (Shen et al., arXiv 2511.20222) adds gradient decoupling and structural damping; all of
them are switches of :class:`GradientMatching`.

* Y' is fixed by the budget (:func:`~magkit.condense.base.class_budget`). X' starts from random real
  training nodes of each class (their propagated rows Â^K X by default, ``init="propagated"``); the PGE's
  output bias starts at -5, so A' starts nearly empty (at the GCond-X solution) and grows edges only where
  matching asks for them.
* Every epoch draws a fresh model θ (SGC on Â^K X, or a 2-layer GCN; :class:`FunctionalNet`). For each of
  ``outer_steps`` steps the matching loss is computed and Φ (during the first ``structure_epochs[0]`` of
  every ``structure_epochs[1]`` epochs) or X' (otherwise) take one Adam step; in feature epochs A' = PGE(X')
  is computed once per epoch and held constant (``feature_through_pge=False``); between outer steps θ
  trains ``inner_steps`` steps on the detached S.
* SR-GM's decoupling (``decouple=True``): the feature update G = ∂L/∂X' is split into its two modality
  blocks and, where a node's blocks conflict (negative inner product), each is projected off the other
  (PCGrad), in the input space when the modalities share one embedding space and have equal widths,
  otherwise in the first layer's output space (``decouple_space``).
* SR-GM's damping (``damping="structure"|"field"|"proximal"``, weight λ = ``damping_weight``): the Dirichlet energy
  R = tr(Gᵀ L G) of the (decoupled) update field over S's self-looped normalised Laplacian
  (:func:`~magkit.condense.problem.damping_term`). ``structure`` (as the official code): R's gradient
  reaches Φ only. ``field``: G is built with ``create_graph`` so R also differentiates into X'.
  ``proximal``: the X' update becomes the proximal step (I + λL)⁻¹G. The graph is S's learned A'
  (``damping_graph="learned"``) or, structure-free (``srgm-x``), the within-class k-nearest-neighbour graph
  of the current X' (``damping_graph="knn"``, rebuilt every epoch).

Real-side gradients are exact class-wise full-batch gradients (:class:`~magkit.condense.problem.MatchingProblem`).
Everything random is drawn from generators seeded by (seed, epoch): a run is deterministic and a resumed
run continues exactly where its checkpoint (:mod:`magkit.condense.checkpoint`) left it. Model selection
uses the real validation split only.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F

from .. import distributed as D
from ..exceptions import ConfigError
from ..functional import dirichlet_prox, gradient_distance, knn_graph
from ..models.pge import PGE
from .artifact import CondensedGraph
from .base import Condenser
from .checkpoint import load_checkpoint, save_checkpoint
from .evaluate import train_on_condensed
from .functional_net import FunctionalNet
from .problem import MatchingProblem, damping_term

log = logging.getLogger(__name__)

EvalBackbone = Literal["gcn", "sgc", "sage", "appnp", "gat", "cheb", "mlp"]


class GradientMatching(Condenser):
    r"""Gradient-matching condensation, GCond's defaults, with SR-GM's decoupling and damping as switches.

    Args:
        ratio (float, optional): the budget r, a share of the training nodes. (default: :obj:`0.01`)
        setting (str, optional): ``"transductive"`` or ``"inductive"``. (default: :obj:`"transductive"`)
        seed (int, optional): seed of every random draw. (default: :obj:`0`)
        backbone (str, optional): the condensation model θ, ``"sgc"`` (Â^K X cached, closed-form class
            gradients) or ``"gcn"`` (2 layers). (default: :obj:`"sgc"`)
        k (int, optional): propagation hops K. (default: :obj:`2`)
        hidden (int, optional): GCN width. (default: :obj:`256`)
        structure (str, optional): ``"pge"`` (A' = PGE(X')) or ``"none"`` (A' = 0, GCond-X). (default: :obj:`"pge"`)
        pge_hidden (int, optional): PGE width. (default: :obj:`128`)
        pge_init_bias (float, optional): the PGE's initial output bias (-5: A' ≈ 0.007). (default: :obj:`-5.0`)
        init (str, optional): X' starts from class members' ``"propagated"`` rows Â^K X, ``"raw"`` rows X,
            or ``"auto"`` (propagated without structure, raw with). (default: :obj:`"propagated"`)
        feature_through_pge (bool, optional): differentiate X' → PGE → A' in feature epochs (about 4x
            slower per step). (default: :obj:`False`)
        structure_epochs (tuple[int, int], optional): (a, b): Φ is updated during the first a of every b
            epochs. (default: :obj:`(10, 50)`)
        distance (str, optional): D, ``"gcond"`` (per-output-unit cosine), ``"mse"`` or ``"cos"``
            (whole-tensor cosine). (default: :obj:`"gcond"`)
        decouple (bool, optional): SR-GM's gradient decoupling (needs two modalities). (default: :obj:`False`)
        decouple_space (str, optional): ``"input"``, ``"shared"`` or ``"auto"`` (input when the graph's
            modalities are aligned and of equal widths). (default: :obj:`"auto"`)
        damping (str, optional): SR-GM's damping, ``None``, ``"structure"`` (R's gradient reaches Φ),
            ``"field"`` (also X') or ``"proximal"`` (the X' update becomes (I + λL)⁻¹G, L the damping graph's
            Laplacian). (default: :obj:`None`)
        damping_graph (str, optional): the graph the damping reads: ``"learned"`` (A' = PGE(X')) or
            ``"knn"`` (each synthetic node's ``damping_k`` nearest same-class synthetic nodes by cosine
            similarity of X', rebuilt every epoch; :func:`~magkit.functional.knn_graph`). (default: :obj:`"learned"`)
        damping_k (int, optional): k of the ``"knn"`` damping graph. (default: :obj:`3`)
        damping_weight (float, optional): λ. (default: :obj:`1.0`)
        damping_norm (str, optional): ``"edge"``, ``"trace"`` or ``"none"`` (see
            :func:`~magkit.condense.problem.damping_term`). (default: :obj:`"edge"`)
        epochs (int, optional): condensation epochs. (default: :obj:`200`)
        outer_steps (int, optional): matching steps per epoch. (default: :obj:`20`)
        inner_steps (int, optional): θ's training steps on S between outer steps (GCond: 10; 0 matches at
            fresh initialisations). (default: :obj:`0`)
        lr_feat (float, optional): X''s Adam rate in units of the initial features' RMS. (default: :obj:`5e-4`)
        lr_adj (float, optional): Φ's Adam rate. (default: :obj:`1e-3`)
        lr_model (float, optional): θ's Adam rate. (default: :obj:`0.01`)
        real_batch (int, optional): cap on real nodes per class and step (``None``: all for SGC, 256 for
            GCN). (default: :obj:`None`)
        eval_every (int, optional): epochs between validations of S. (default: :obj:`10`)
        eval_backbone (str, optional): the model trained on S for validation. (default: :obj:`"gcn"`)
        eval_epochs (int, optional): its training epochs. (default: :obj:`200`)
        checkpoint_every (int, optional): epochs between checkpoints. (default: :obj:`10`)
        distributed (bool or str, optional): shard the real side over ``torch.distributed`` ranks:
            ``False``, ``True`` (a process group must exist) or ``"auto"``. (default: :obj:`False`)
        device (str, optional): ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"auto"``. (default: :obj:`"cpu"`)

    Attributes:
        history_ (dict): set by :meth:`condense`: ``epochs`` (per-epoch records: ``loss``, ``damping``,
            ``conflict_rate``, ``structure_step``, ``edge_weight``, ``edge_density``, ``val_acc``, times),
            ``best_epoch``, ``best_val_acc``, ``wall_time_s``.
    """

    name = "gradient-matching"
    #: reuse what an epoch already holds (the SGC real gradients at a fixed θ, A' at unchanged X' and Φ); the
    #: results are the same bit for bit either way (``tests/condense/test_condense_exact.py`` switches it off)
    _reuse = True

    def __init__(
        self,
        *,
        ratio: float = 0.01,
        setting: Literal["transductive", "inductive"] = "transductive",
        seed: int = 0,
        backbone: Literal["sgc", "gcn"] = "sgc",
        k: int = 2,
        hidden: int = 256,
        structure: Literal["pge", "none"] = "pge",
        pge_hidden: int = 128,
        pge_init_bias: float = -5.0,
        init: Literal["propagated", "raw", "auto"] = "propagated",
        feature_through_pge: bool = False,
        structure_epochs: tuple[int, int] = (10, 50),
        distance: Literal["gcond", "mse", "cos"] = "gcond",
        decouple: bool = False,
        decouple_space: Literal["auto", "input", "shared"] = "auto",
        damping: Literal["structure", "field", "proximal"] | None = None,
        damping_graph: Literal["learned", "knn"] = "learned",
        damping_k: int = 3,
        damping_weight: float = 1.0,
        damping_norm: Literal["edge", "trace", "none"] = "edge",
        epochs: int = 200,
        outer_steps: int = 20,
        inner_steps: int = 0,
        lr_feat: float = 5e-4,
        lr_adj: float = 1e-3,
        lr_model: float = 0.01,
        real_batch: int | None = None,
        eval_every: int = 10,
        eval_backbone: EvalBackbone = "gcn",
        eval_epochs: int = 200,
        checkpoint_every: int = 10,
        distributed: bool | Literal["auto"] = False,
        device: str = "cpu",
    ):
        self._store(locals())

    def _check_params(self) -> None:
        super()._check_params()
        cls = type(self).__name__
        for key in ("epochs", "outer_steps", "eval_every", "eval_epochs", "hidden", "pge_hidden", "k",
                    "checkpoint_every", "damping_k"):
            if getattr(self, key) < 1:
                raise ConfigError(f"{cls}: {key}={getattr(self, key)!r}; allowed: an integer >= 1")
        if self.inner_steps < 0:
            raise ConfigError(f"{cls}: inner_steps={self.inner_steps!r}; allowed: an integer >= 0")
        for key in ("lr_feat", "lr_adj", "lr_model"):
            if not getattr(self, key) > 0:
                raise ConfigError(f"{cls}: {key}={getattr(self, key)!r}; allowed: > 0")
        if not self.damping_weight >= 0:
            raise ConfigError(f"{cls}: damping_weight={self.damping_weight!r}; allowed: >= 0")
        if self.damping is not None and self.damping_graph == "learned" and self.structure == "none":
            raise ConfigError(f"{cls}: damping_graph='learned' needs a learned structure (structure='pge'); "
                              "structure='none' has none: use damping_graph='knn'")
        if self.damping == "structure" and self.damping_graph != "learned":
            raise ConfigError(f"{cls}: damping='structure' sends the damping's gradient to the learned structure "
                              f"and needs damping_graph='learned', got {self.damping_graph!r}; with "
                              "damping_graph='knn' use damping='proximal' or 'field'")
        a, b = self.structure_epochs
        if not (0 <= a <= b) or b < 1:
            raise ConfigError(f"{cls}: structure_epochs={self.structure_epochs!r}; allowed: (a, b) with "
                              "0 <= a <= b, b >= 1")
        if self.real_batch is not None and self.real_batch < 1:
            raise ConfigError(f"{cls}: real_batch={self.real_batch!r}; allowed: None or an integer >= 1")

    def _sharded(self) -> bool:
        """Shard the real side over the ranks of the initialised process group? ``True`` requires one
        (launch with torchrun; ``magkit condense --distributed`` joins it); ``"auto"``: when one exists."""
        if self.distributed is True and not D.is_distributed():
            raise ConfigError("distributed=True: no torch.distributed process group is initialised; launch with "
                              "`torchrun --nproc_per_node=N -m magkit.cli condense ... --distributed` "
                              "(or call magkit.distributed.init_from_env() first)")
        return bool(self.distributed) and D.is_distributed() and D.world_size() > 1

    def _torch_device(self) -> torch.device:
        from ..methods.base import resolve_device

        dev = resolve_device(str(self.device))
        if dev.type == "cuda" and dev.index is None and self._sharded():
            dev = D.local_device("cuda")
        return dev

    def prepare(self, graph) -> MatchingProblem:
        """The real side of ``graph`` under these parameters, as :meth:`condense` builds it first (on the
        default device)."""
        self.check_params()
        return MatchingProblem(graph, self.get_params(), sharded=self._sharded())

    def condense(
        self,
        graph,
        *,
        progress: Callable[[dict], None] | None = None,
        checkpoint: str | Path | None = None,
        resume: bool = False,
    ) -> CondensedGraph:
        """Condense ``graph`` (split, validated) into S; sets :attr:`history_`.

        Args:
            graph: the split multimodal graph.
            progress (callable, optional): called after every epoch with its record (``epoch``, ``epochs``,
                ``loss``, ``val_acc`` when validated, ...). (default: :obj:`None`)
            checkpoint (str or Path, optional): a file written atomically every ``checkpoint_every`` epochs.
                (default: :obj:`None`)
            resume (bool, optional): continue from ``checkpoint`` when it exists (the configuration and the
                dataset checksum must match; without the file a warning is logged and the run starts from
                epoch 0). ``wall_time_s`` then counts this run plus the runs it continues (up to their last
                checkpoint). (default: :obj:`False`)
        """
        self.check_params()
        if resume and checkpoint is None:
            raise ConfigError("resume: needs a checkpoint path")
        p = self.get_params()
        t_start = time.perf_counter()
        dev = self._torch_device()
        with torch.random.fork_rng(devices=[]), torch.device(dev):  # factories below allocate on `dev`
            torch.manual_seed(self.seed)
            prob = MatchingProblem(graph, p, sharded=self._sharded())
            if prob.world > 1:  # ranks condensing different data would average unrelated gradients
                D.check_same("the dataset (checksum) and the condensation seed",
                             [float(int(graph.checksum()[:12], 16)), float(self.seed)])
            gen0 = torch.Generator().manual_seed(self.seed)
            x_syn = prob.init_features(gen0).requires_grad_()
            # a third-order path through the PGE (field damping differentiated through A' = PGE(X')) keeps plain
            # autograd, whose higher-order rounding the lean backward does not reproduce
            lean = not (self.feature_through_pge and self.damping == "field")
            pge = PGE(prob.d, self.pge_hidden, self.pge_init_bias, generator=gen0, lean_backward=lean) \
                if self.structure == "pge" else None
            feat_scale = float(x_syn.detach().pow(2).mean().sqrt().clamp_min(1e-12))
            opt_x = torch.optim.Adam([x_syn], lr=self.lr_feat * feat_scale)
            opt_a = torch.optim.Adam(pge.parameters(), lr=self.lr_adj) if pge is not None else None
            state = {"epoch": 0, "records": [], "best": None, "elapsed": 0.0}
            if resume and Path(checkpoint).exists():
                state = load_checkpoint(checkpoint, p, graph, x_syn, pge, opt_x, opt_a)
                log.info("resumed from %s at epoch %d", checkpoint, state["epoch"])
            elif resume:
                log.warning("resume: no checkpoint at %s; starting from epoch 0", checkpoint)
            before = state["elapsed"]  # wall time of the earlier runs, recorded in the checkpoint
            y_syn = prob.y_syn
            n_syn = y_syn.numel()
            weights = {k: float(prob.per[k]) / n_syn for k in prob.classes}
            syn_idx = {k: (y_syn == k).nonzero().squeeze(1) for k in prob.classes}
            cls_of = torch.searchsorted(torch.tensor(prob.classes), y_syn)  # each synthetic node's class position
            cls_w = torch.tensor([weights[k] for k in prob.classes])
            onehot = F.one_hot(y_syn, graph.num_classes).float()
            a_per, b_per = self.structure_epochs
            lam = float(self.damping_weight)
            a_now = None  # PGE(X') at the end of the last epoch: X' and Φ are unchanged until the next step
            for epoch in range(state["epoch"], self.epochs):
                t0 = time.perf_counter()
                gen = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch + 1)
                net = FunctionalNet(self.backbone, prob.d, self.hidden, graph.num_classes, gen)
                opt_t = torch.optim.Adam(net.params, lr=self.lr_model)
                update_a = pge is not None and (epoch % b_per) < a_per
                a_fixed = None
                if pge is not None and not update_a and not self.feature_through_pge:
                    if a_now is None or not self._reuse:
                        with torch.no_grad():
                            a_now = pge(x_syn)
                    a_fixed = a_now
                a_knn = knn_graph(x_syn.detach(), self.damping_k, y_syn) \
                    if self.damping is not None and self.damping_graph == "knn" else None
                sums = {"loss": 0.0, "damping": 0.0, "conflict_rate": 0.0}
                # with inner_steps=0 θ stays at the epoch's initialisation, and the SGC real side draws nothing from
                # `gen`: its class gradients are the same at every outer step, computed once
                reuse_real = net.kind == "sgc" and self.inner_steps == 0 and self._reuse
                g_real = None
                for outer in range(self.outer_steps):
                    if g_real is None or not reuse_real:
                        g_real = prob.real_grads(net, gen)
                    a = prob.adjacency(pge, x_syn, update_a, a_fixed)
                    if net.kind == "sgc":
                        loss = prob.sgc_matching(net, x_syn, a, g_real, cls_w, onehot, cls_of)
                    else:
                        logits = prob.syn_logits(net, x_syn, a)
                        loss = 0.0
                        for k in prob.classes:
                            ls = F.cross_entropy(logits[syn_idx[k]], y_syn[syn_idx[k]])
                            gs = torch.autograd.grad(ls, net.weights, create_graph=True)
                            loss = loss + weights[k] * gradient_distance(list(gs), g_real[k], self.distance)
                    field = self.damping == "field" and not update_a
                    r_val = 0.0
                    if update_a:
                        # one backward pass for both gradients (Φ's and X''s); the damping term then reuses the
                        # adjacency A = PGE(X') already built (same values as a fresh PGE(X') pass: X' does not
                        # change during structure epochs), so its gradient only runs back through the PGE
                        damp = self.damping in ("structure", "field") and a_knn is None and lam > 0
                        *ga, gx = torch.autograd.grad(loss, [*pge.parameters(), x_syn], retain_graph=damp)
                        g, rate = prob.field(gx.detach(), net)
                        if damp:
                            r = damping_term(g, a, self.damping_norm)
                            gr = torch.autograd.grad(r, list(pge.parameters()))
                            ga = [x + lam * y for x, y in zip(ga, gr)]
                            r_val = float(r.detach())
                        opt_a.zero_grad()
                        for prm, gg in zip(pge.parameters(), ga):
                            prm.grad = gg
                        opt_a.step()
                    else:
                        g, rate = prob.field(torch.autograd.grad(loss, x_syn, create_graph=field)[0], net)
                        upd = g.detach()
                        a_damp = a_knn if a_knn is not None else (a.detach() if a is not None else None)
                        if self.damping is not None and a_damp is not None:
                            r = damping_term(g if field else g.detach(), a_damp, self.damping_norm)
                            r_val = float(r.detach())
                            if field and lam > 0:
                                upd = upd + lam * torch.autograd.grad(r, x_syn)[0]
                            elif self.damping == "proximal":
                                upd = dirichlet_prox(upd, a_damp, lam)
                        opt_x.zero_grad()
                        x_syn.grad = upd
                        opt_x.step()
                    sums["loss"] += float(loss.detach())
                    sums["damping"] += r_val
                    sums["conflict_rate"] += rate
                    if outer < self.outer_steps - 1 and self.inner_steps > 0:
                        with torch.no_grad():
                            first, second = prob.model_inputs(net, x_syn, prob.adjacency(pge, x_syn, update_a, a_fixed))
                        for _ in range(self.inner_steps):
                            opt_t.zero_grad()
                            F.cross_entropy(net.logits(first, second), y_syn).backward()
                            opt_t.step()
                rec = {"epoch": epoch + 1, **{k: v / self.outer_steps for k, v in sums.items()},
                       "structure_step": update_a}
                with torch.no_grad():
                    a_now = pge(x_syn) if pge is not None else torch.zeros(n_syn, n_syn)
                off = n_syn * (n_syn - 1)
                rec["edge_weight"] = float(a_now.sum() / off) if off else 0.0
                rec["edge_density"] = float(((a_now > 0.5).sum()) / off) if off else 0.0
                rec["epoch_time_s"] = time.perf_counter() - t0
                if (epoch + 1) % self.eval_every == 0 or epoch + 1 == self.epochs:
                    ev = {"val_acc": float("nan"), "val_f1": float("nan")}
                    if prob.rank == 0:  # S is identical on every rank: one evaluation, its result broadcast
                        ev = train_on_condensed(prob.snapshot(x_syn, a_now), self.eval_backbone, prob.views["val"],
                                                epochs=self.eval_epochs, eval_every=20, seed=self.seed)
                    if prob.world > 1:
                        ev = D.broadcast_floats({"val_acc": ev["val_acc"], "val_f1": ev["val_f1"]})
                    rec["val_acc"] = ev["val_acc"]
                    rec["val_f1"] = ev["val_f1"]
                    if state["best"] is None or ev["val_acc"] > state["best"]["val_acc"]:
                        state["best"] = {"val_acc": ev["val_acc"], "epoch": epoch + 1,
                                         "x": x_syn.detach().clone(), "adj": a_now.detach().clone()}
                rec["wall_time_s"] = before + (time.perf_counter() - t_start)
                state["records"].append(rec)
                state["epoch"] = epoch + 1
                if progress is not None:
                    progress({**rec, "epochs": self.epochs})
                if checkpoint is not None and ((epoch + 1) % self.checkpoint_every == 0 or epoch + 1 == self.epochs):
                    state["elapsed"] = rec["wall_time_s"]
                    if prob.rank == 0:  # one writer; the others wait until the file is complete
                        save_checkpoint(checkpoint, p, graph, state, x_syn, pge, opt_x, opt_a)
                    D.barrier()
            best = state["best"]
            if best is None:  # epochs already done at resume and no eval recorded: take the current S
                with torch.no_grad():
                    a_now = pge(x_syn) if pge is not None else torch.zeros(n_syn, n_syn)
                best = {"x": x_syn.detach(), "adj": a_now, "epoch": state["epoch"], "val_acc": float("nan")}
        wall = before + (time.perf_counter() - t_start)
        history = {"epochs": state["records"], "best_epoch": best["epoch"], "best_val_acc": best["val_acc"],
                   "wall_time_s": wall}
        from ..eval.results import peak_memory_mb

        cg = prob.snapshot(best["x"], best["adj"])
        return self._finish(graph, dict(cg.features), cg.adj, cg.y, history, wall_time_s=wall,
                            peak_memory_mb=peak_memory_mb(), decouple_space=prob.space,
                            lr_feat_absolute=self.lr_feat * feat_scale)
