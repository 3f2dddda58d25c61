"""The estimator API shared by every node classifier (scikit-learn style).

* The parameter protocol of :class:`magkit.base.Estimator`: ``__init__`` takes explicit, typed keyword
  arguments and only stores them; ``get_params()`` / ``set_params()`` read and change them; ``fit`` checks
  them first (one-line :class:`ConfigError` naming the parameter, the value and what is allowed).
* ``fit(graph, progress=None)`` validates the graph, trains through the one epoch loop (:func:`magkit.train.loop.fit_loop`)
  with early stopping on the validation split, restores the best state, and sets ``model_``, ``history_``;
  ``progress(record)`` is called after every epoch with the epoch's record (``epoch``, ``epochs``, losses,
  validation metrics).
* ``predict_proba(graph)``, ``predict(graph)``, ``score(graph, split="test")`` raise
  :class:`NotFittedError` before ``fit``.
* ``save(path)`` writes a fitted estimator to one safetensors file (weights + JSON metadata, a content
  digest, written atomically); :func:`~magkit.methods.persistence.load_estimator` reads it back without
  running code (same predictions, bitwise, on the same graph); ``magkit fit --save-model`` and
  ``magkit predict`` use them.
* Randomness comes from the ``seed`` parameter only: ``fit`` runs inside ``torch.random.fork_rng`` seeded
  with it, so the caller's global RNG state is untouched and the same seed gives the same numbers on CPU.

Subclasses provide ``_build(shape) -> nn.Module`` (the network from a :class:`~magkit.methods.shape.NetShape`:
modalities, feature widths, class and node counts; ``fit`` takes it from the graph, loading a saved estimator
from the file, so ``_build`` must read nothing else of the graph) and may override ``_begin_fit`` (training-time
state and data-dependent initial values, after ``_build``), ``_inputs`` (what the model reads, e.g. cached
propagated features), ``_loss`` (default: cross-entropy on the training nodes) and ``_before_epoch`` (e.g.
per-epoch reliability estimates).

Data-parallel training (``distributed=True`` under torchrun, or ``"auto"`` when ``torch.distributed`` is
initialised): the model is wrapped in DistributedDataParallel; every rank holds the whole graph. Full batch:
rank r computes ``_loss`` on its disjoint shard S_r of the training nodes and back-propagates it times
``W |S_r| / N``, so the gradient DDP averages over the W ranks is (1/N) Σ_i ∇ℓ_i, the single-process
full-batch gradient, for any loss that is a mean over ``idx`` plus terms that do not depend on ``idx``
(every rank draws the same dropout masks, so those terms are the same on every rank; GraphMNL normalises
its presence-weighted branch terms by global counts to stay exact). Mini-batch: each epoch
the training nodes are shuffled from (seed, epoch), sharded with padding (the same number of batches on
every rank) and each rank samples its own neighbourhoods. Validation metrics and logged loss terms are
all-reduced, so early stopping is decided alike everywhere and every rank ends with the same parameters.
See :mod:`magkit.distributed` and docs/scaling.md.
"""

from __future__ import annotations

import copy
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from .. import distributed as D
from ..base import Estimator
from ..data.graph import MultimodalGraph, validate
from ..data.mapped import model_rows
from ..exceptions import ConfigError, NotFittedError
from ..functional import accuracy, macro_f1
from ..functional.ops import release_buffers
from ..train.loop import fit_loop
from ..train.propagation import graph_adjacency
from ..train.sampler import NeighborSampler
from .inputs import GraphInputs
from .persistence import load_estimator
from .shape import NetShape

__all__ = ["GraphInputs", "NetShape", "NodeClassifier", "load_estimator", "main_logits", "resolve_device"]

log = logging.getLogger(__name__)

#: the validation metrics ``monitor`` may select the epoch on
Monitor = Literal["val_acc", "val_f1", "val_loss"]


def main_logits(out: Tensor | dict) -> Tensor:
    """A model returns logits or a dict whose ``"logits"`` entry is the prediction."""
    return out["logits"] if isinstance(out, dict) else out


def resolve_device(device: str) -> torch.device:
    """``auto`` -> cuda when available else cpu; ``cpu``; ``cuda``/``cuda:N`` (ConfigError if unavailable)."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device: {device!r} requested but CUDA is not available; allowed here: cpu, auto")
    try:
        return torch.device(device)
    except RuntimeError as exc:
        raise ConfigError(f"device: {device!r} is not a device; allowed: auto, cpu, cuda, cuda:N") from exc


def _fingerprint(graph: MultimodalGraph, model: torch.nn.Module) -> list[int]:
    """Exact integer checksums (sums of bit patterns, mod 2^31 - 1: the same on any machine) of the edges,
    labels and split of ``graph``, of at most 4096 evenly spaced feature rows per modality (features may be
    large or on disk), and the model's parameter count: what DDP ranks must share."""
    def h(t: Tensor) -> int:
        t = t.reshape(-1)
        if t.is_floating_point():
            t = t.float().view(torch.int32)
        total, chunk = 0, 1 << 22  # bounded temporary memory on large graphs
        for start in range(0, t.numel(), chunk):
            part = t[start: start + chunk].long()
            pos = torch.arange(start, start + part.numel(), device=t.device) % 65521 + 1
            total = (total + int((part * pos).sum())) % 2147483647
        return total

    rows = torch.arange(0, graph.num_nodes, max(1, graph.num_nodes // 4096))
    parts = [graph.num_nodes, graph.num_classes, h(graph.edge_index), h(graph.y), h(graph.split_index("train")),
             h(graph.split_index("val")), sum(t.numel() for t in model.parameters())]
    return parts + [h(torch.as_tensor(graph.feature(m)[rows])) for m in graph.modalities]


class NodeClassifier(Estimator):
    r"""Base class of magkit's node classifiers (see the module docstring for the API and the hooks).

    Args:
        hidden (int, optional): hidden width of the network. (default: :obj:`128`)
        num_layers (int, optional): number of layers of the backbone. (default: :obj:`2`)
        dropout (float, optional): dropout probability, in [0, 1). (default: :obj:`0.5`)
        lr (float, optional): Adam's learning rate. (default: :obj:`0.01`)
        weight_decay (float, optional): Adam's L2 penalty. (default: :obj:`5e-4`)
        epochs (int, optional): the most training epochs. (default: :obj:`300`)
        patience (int, optional): stop after this many epochs without improvement of ``monitor``;
            :obj:`None` trains every epoch. (default: :obj:`50`)
        monitor (str, optional): the validation metric selecting the epoch: ``"val_acc"``, ``"val_f1"`` or
            ``"val_loss"``. (default: :obj:`"val_acc"`)
        batch_size (int, optional): training nodes per mini-batch with neighbour sampling; :obj:`None` trains
            full batch. (default: :obj:`None`)
        fanouts (tuple of int, optional): neighbours sampled per layer in mini-batch mode. (default: :obj:`(10, 10)`)
        seed (int, optional): the seed of every random draw of :meth:`fit`. (default: :obj:`0`)
        device (str, optional): ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"auto"``. (default: :obj:`"cpu"`)
        distributed (bool or str, optional): :obj:`True`: data-parallel under torchrun; ``"auto"``:
            data-parallel when ``torch.distributed`` is initialised. (default: :obj:`False`)
    """

    #: one-line description (subclasses set it)
    description: ClassVar[str] = ""
    #: DDP's find_unused_parameters for models whose loss leaves some parameters out of some steps
    ddp_find_unused_parameters: ClassVar[bool] = False

    def __init__(
        self,
        *,
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

    # ------------------------------------------------------------------ hooks for subclasses
    def _check_params(self) -> None:
        """Ranges of the shared parameters (their types are checked by :meth:`check_params`)."""
        name = type(self).__name__
        for key in ("hidden", "num_layers", "epochs"):
            if getattr(self, key) < 1:
                raise ConfigError(f"{name}: {key}={getattr(self, key)!r} is out of range; allowed: an integer >= 1")
        for key in ("patience", "batch_size"):
            if getattr(self, key) is not None and getattr(self, key) < 1:
                raise ConfigError(f"{name}: {key}={getattr(self, key)!r} is out of range; allowed: an integer >= 1 or None")
        if not 0 <= self.dropout < 1:
            raise ConfigError(f"{name}: dropout={self.dropout!r} is out of range; allowed: 0 <= dropout < 1")
        if self.lr <= 0:
            raise ConfigError(f"{name}: lr={self.lr!r} is out of range; allowed: > 0")
        if self.weight_decay < 0:
            raise ConfigError(f"{name}: weight_decay={self.weight_decay!r} is out of range; allowed: >= 0")
        if not self.fanouts or any(f < 1 and f != -1 for f in self.fanouts):
            raise ConfigError(f"{name}: fanouts={self.fanouts!r} is out of range; allowed: integers >= 1 (-1: every "
                              "neighbour), one per layer")

    def _inputs(self, graph: MultimodalGraph) -> GraphInputs:
        # rows of an absent modality are zeroed here, whatever the file held, so no model can read them
        lazy = self._lazy(graph)  # memory-mapped blocks stay on disk: mini-batches gather only their rows
        return GraphInputs(
            xs={m: model_rows(graph.feature(m), graph.presence(m), lazy) for m in graph.modalities},
            present=graph.modality_mask,
            modalities=graph.modalities,
            edge_index=graph.edge_index,
            num_nodes=graph.num_nodes,
            adj=None if lazy else graph_adjacency(graph),
        )

    def _lazy(self, graph: MultimodalGraph) -> bool:
        """Mini-batch mode on a graph whose feature blocks are memory-mapped: features are read per batch and
        evaluation/prediction run as sampled mini-batch inference (:meth:`_sampled_logits`)."""
        return bool(getattr(graph, "is_mapped", False)) and self.batch_size is not None

    def _inference_sampler(self, graph: MultimodalGraph, like: NeighborSampler | None = None) -> NeighborSampler:
        """The (cached) sampler of :meth:`_sampled_logits`; ``like``: a training sampler of this graph whose CSR it
        shares instead of building its own (for edges not in the canonical form, a sort and 8 bytes per edge;
        :func:`~magkit.train.sampler.incoming_csr`)."""
        p = self.params
        key = (graph.edge_index.data_ptr(), tuple(graph.edge_index.shape), graph.num_nodes, tuple(p["fanouts"]), p["batch_size"])
        cached = self.__dict__.get("_infer_sampler")
        if cached is None or cached[0] != key:
            if like is not None:
                sampler = copy.copy(like)
                sampler.shuffle = False
            else:
                sampler = NeighborSampler(graph.edge_index, graph.num_nodes, p["fanouts"], p["batch_size"], shuffle=False)
            cached = (key, sampler)
            self.__dict__["_infer_sampler"] = cached
        return cached[1]

    def _sampled_logits(self, model, inputs: GraphInputs, graph: MultimodalGraph, nodes: Tensor, device) -> Tensor:
        """Logits ``[N, C]`` for ``nodes`` (other rows zero) by mini-batch inference: each batch of ``batch_size``
        nodes is sampled with the training fan-outs (a fixed sampling seed, so every call sees the same
        neighbourhoods) -- the full-graph forward pass of a graph whose features stay on disk."""
        sampler = self._inference_sampler(graph)
        sampler.generator = torch.Generator().manual_seed(self.seed)
        out = torch.zeros(graph.num_nodes, graph.num_classes, device=device)
        was = model.training
        model.eval()
        with torch.no_grad():
            for batch in sampler.batches(nodes.cpu()):
                sub = inputs.subset(batch.n_id, batch.edge_index).to(device)
                out[batch.n_id[:batch.batch_size].to(device)] = main_logits(model(sub))[:batch.batch_size]
        model.train(was)
        return out

    def _eval_logits(self, model, inputs: GraphInputs, dev_inputs: GraphInputs, graph: MultimodalGraph, nodes: Tensor,
                     device) -> Tensor:
        """The per-epoch evaluation's logits (rows ``nodes`` are read): one full-graph forward pass, or sampled
        mini-batch inference on a memory-mapped graph in mini-batch mode."""
        if self._lazy(graph):
            return self._sampled_logits(model, inputs, graph, nodes, device)
        return main_logits(model(dev_inputs))

    def _build(self, shape: NetShape) -> torch.nn.Module:
        """The network for a graph of this ``shape`` (its parameters drawn from torch's global generator)."""
        raise NotImplementedError

    def _begin_fit(self, graph: MultimodalGraph, model: torch.nn.Module) -> None:
        """Called by ``fit`` right after :meth:`_build`: training-time state and values computed from the data
        (saved with the weights when they are parameters or buffers)."""

    def _loss(self, out: Tensor | dict, y: Tensor, idx: Tensor, epoch: int) -> tuple[Tensor, dict]:
        loss = F.cross_entropy(main_logits(out)[idx], y[idx])
        return loss, {"loss": float(loss.detach())}

    def _before_epoch(self, epoch: int, inputs: GraphInputs, graph: MultimodalGraph) -> None:
        """Called before every training epoch (e.g. to refresh detached per-node statistics)."""

    def _optimizer(self, model: torch.nn.Module) -> torch.optim.Optimizer:
        return torch.optim.Adam(model.parameters(), lr=self.lr, weight_decay=self.weight_decay)

    def _batch_steps(self, model, inputs: GraphInputs, ycpu: Tensor, batches, opt, epoch: int,
                     device) -> tuple[dict[str, float], int]:
        """One optimiser step per sampled batch (seed nodes first in each); returns the loss terms summed
        with weight = batch size, and the number of seed nodes seen."""
        totals: dict[str, float] = {}
        count = 0
        for batch in batches:
            sub = inputs.subset(batch.n_id, batch.edge_index).to(device)
            out = model(sub)
            local = torch.arange(batch.batch_size, device=device)
            loss, parts = self._loss(out, ycpu[batch.n_id].to(device), local, epoch)
            opt.zero_grad()
            loss.backward()
            opt.step()
            for k, v in parts.items():
                totals[k] = totals.get(k, 0.0) + v * batch.batch_size
            count += batch.batch_size
        return totals, count

    # ------------------------------------------------------------------ the API
    def _use_ddp(self) -> bool:
        """Whether this fit is data-parallel (joins torchrun's process group for ``distributed=True``)."""
        mode = self.distributed
        if mode is False:
            return False
        if mode == "auto":
            return D.is_distributed() and D.world_size() > 1
        if not D.is_distributed():
            D.init_from_env(device=self.device)
        return True

    def fit(self, graph: MultimodalGraph, progress: Callable[[dict], None] | None = None) -> NodeClassifier:
        """Train on ``graph``'s training split, selecting the epoch on its validation split.

        Args:
            graph: the graph, with its ``train`` and ``val`` splits.
            progress: called after every epoch with the epoch's record (``epoch``, ``epochs``, loss terms,
                ``train_acc``, ``val_acc``, ``val_f1``, ``val_loss``). (default: :obj:`None`)
        """
        self.check_params()
        validate(graph)
        p = self.params
        ddp = self._use_ddp()
        device = resolve_device(p["device"])
        if ddp:
            device = D.local_device(device)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(p["seed"])
            gen = torch.Generator().manual_seed(p["seed"])
            inputs = self._inputs(graph)
            shape = NetShape.of(graph)
            model = self._build(shape)
            self._begin_fit(graph, model)
            model = model.to(device)
            self.model_ = model
            self.net_shape_ = shape
            mapped = bool(getattr(graph, "is_mapped", False))  # a full read of on-disk features is left out
            self.dataset_ = {"name": getattr(graph, "name", None), "checksum": None if mapped else graph.checksum()}
            self.num_classes_ = graph.num_classes
            self.modalities_ = graph.modalities
            self.modality_dims_ = dict(graph.modality_dims)
            self.device_ = device
            dev_inputs = inputs.to(device)
            y = graph.y.to(device)
            train_idx = graph.split_index("train").to(device)
            val_idx = graph.split_index("val").to(device)
            opt = self._optimizer(model)
            sampler = None
            if p["batch_size"] is not None:
                sampler = NeighborSampler(graph.edge_index, graph.num_nodes, p["fanouts"], p["batch_size"], generator=gen)
                if self._lazy(graph):  # sampled evaluation shares this CSR
                    self.__dict__.pop("_infer_sampler", None)
                    self._inference_sampler(graph, like=sampler)
            ycpu = graph.y

            def step(epoch: int) -> dict:
                self._before_epoch(epoch, dev_inputs, graph)
                if sampler is None:
                    out = model(dev_inputs)
                    loss, parts = self._loss(out, y, train_idx, epoch)
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
                    return parts
                totals, count = self._batch_steps(model, inputs, ycpu, sampler.batches(graph.split_index("train")),
                                                  opt, epoch, device)
                return {k: v / count for k, v in totals.items()}

            if ddp:
                step = self._ddp_step(graph, model, inputs, dev_inputs, y, train_idx, opt, device)

            def evaluate() -> dict:
                logits = self._eval_logits(model, inputs, dev_inputs, graph, torch.cat([train_idx, val_idx]), device)
                c = graph.num_classes
                metrics = {
                    "train_acc": accuracy(logits[train_idx], y[train_idx]),
                    "val_acc": accuracy(logits[val_idx], y[val_idx]),
                    "val_f1": macro_f1(logits[val_idx], y[val_idx], c),
                    "val_loss": float(F.cross_entropy(logits[val_idx], y[val_idx])),
                }
                # every rank computes the same numbers from the same parameters; the all-reduce makes the
                # early-stopping decision provably identical (a differing decision would deadlock DDP)
                return D.all_reduce_mean(metrics) if ddp else metrics

            try:
                self.history_ = fit_loop(
                    model, step, evaluate, epochs=p["epochs"], patience=p["patience"], monitor=p["monitor"],
                    progress=progress
                )
            finally:
                release_buffers()  # the training passes' reused dropout / product buffers
            model.eval()
            self.distributed_ = {**D.describe(), "rank": D.rank()} if ddp else {"world_size": 1, "backend": None}
        return self

    def _ddp_step(self, graph, model, inputs, dev_inputs, y, train_idx, opt, device):
        """The per-epoch update of a data-parallel fit (see the module docstring): wraps ``model`` in DDP and
        returns ``step(epoch) -> all-reduced loss terms``."""
        from torch.nn.parallel import DistributedDataParallel

        p = self.params
        world, rank = D.world_size(), D.rank()
        n_train = int(train_idx.numel())
        if n_train < world:
            raise ConfigError(f"distributed: {n_train} training nodes for {world} ranks; allowed: at least one per rank")
        # the ranks must train on the same graph, split and settings, or DDP would average unrelated gradients
        D.check_same("the graph, its split or the model size", _fingerprint(graph, model))
        net = DistributedDataParallel(model, find_unused_parameters=self.ddp_find_unused_parameters)

        if p["batch_size"] is None:
            local_idx = D.shard(train_idx, rank, world, pad=False)
            scale = world * local_idx.numel() / n_train  # so that DDP's average is the full-batch gradient

            def step(epoch: int) -> dict:
                self._before_epoch(epoch, dev_inputs, graph)
                net.train()
                out = net(dev_inputs)
                loss, parts = self._loss(out, y, local_idx, epoch)
                opt.zero_grad()
                (loss * scale).backward()
                opt.step()
                # loss terms weighted by shard size: means over the training nodes, as a single process logs
                summed = D.all_reduce_sum({k: v * local_idx.numel() for k, v in parts.items()})
                return {k: parts_sum / n_train for k, parts_sum in summed.items()}

            return step

        # mini-batch: one neighbour-sampling stream and one dropout stream per rank; the seed order from (seed, epoch)
        sampler = NeighborSampler(graph.edge_index, graph.num_nodes, p["fanouts"], p["batch_size"], shuffle=False,
                                  generator=torch.Generator().manual_seed(D.derive_seed(p["seed"], rank, 1)))
        torch.manual_seed(D.derive_seed(p["seed"], rank, 2))
        train_cpu = graph.split_index("train")
        ycpu = graph.y

        def step(epoch: int) -> dict:
            self._before_epoch(epoch, dev_inputs, graph)
            net.train()
            order = train_cpu[torch.randperm(n_train, generator=torch.Generator().manual_seed(D.derive_seed(p["seed"], epoch)))]
            mine = D.shard(order, rank, world)  # padded: the same number of batches on every rank
            batches = (sampler.sample(mine[i: i + sampler.batch_size]) for i in range(0, mine.numel(), sampler.batch_size))
            totals, count = self._batch_steps(net, inputs, ycpu, batches, opt, epoch, device)
            summed = D.all_reduce_sum({**totals, "__count": float(count)})
            n = summed.pop("__count")
            return {k: v / n for k, v in summed.items()}

        return step

    def _check_fitted(self) -> None:
        if "model_" not in self.__dict__:
            raise NotFittedError(f"{type(self).__name__} is not fitted yet; call fit(graph) first")

    def _check_graph(self, graph: MultimodalGraph) -> None:
        """The graph must carry the modalities (and feature widths) the model was fitted on."""
        if tuple(graph.modalities) != tuple(self.modalities_):
            raise ConfigError(f"graph modalities {graph.modalities} differ from the fitted ones {self.modalities_}")
        dims = self.__dict__.get("modality_dims_")
        if dims is not None and dict(graph.modality_dims) != dims:
            raise ConfigError(f"graph feature widths {dict(graph.modality_dims)} differ from the fitted ones {dims}: "
                              "encode the features as for the fit")

    @torch.no_grad()
    def forward(self, graph: MultimodalGraph) -> Tensor | dict:
        """The fitted model's raw output on ``graph`` (eval mode)."""
        self._check_fitted()
        self._check_graph(graph)
        self.model_.eval()
        if self._lazy(graph):  # features on disk: mini-batch inference over every node
            nodes = torch.arange(graph.num_nodes)
            return {"logits": self._sampled_logits(self.model_, self._inputs(graph), graph, nodes, self.device_)}
        return self.model_(self._inputs(graph).to(self.device_))

    def predict_proba(self, graph: MultimodalGraph) -> Tensor:
        """Class probabilities ``[N, C]`` for every node of ``graph``."""
        return torch.softmax(main_logits(self.forward(graph)), dim=1).cpu()

    def predict(self, graph: MultimodalGraph) -> Tensor:
        return self.predict_proba(graph).argmax(dim=1)

    def score(self, graph: MultimodalGraph, split: str = "test") -> dict[str, float]:
        """Accuracy and macro-F1 on ``split`` of ``graph``."""
        self._check_fitted()
        if graph.num_classes != self.num_classes_:
            raise ConfigError(f"graph classes: {graph.name!r} has {graph.num_classes} classes; the model was fitted "
                              f"on {self.num_classes_}: score it on a graph labelled with the fitted classes")
        idx = graph.split_index(split)
        if self._lazy(graph):  # features on disk: infer only the split's nodes
            self._check_graph(graph)
            logits = self._sampled_logits(self.model_, self._inputs(graph), graph, idx, self.device_)
            proba = torch.softmax(logits, dim=1).cpu()
        else:
            proba = self.predict_proba(graph)
        y = graph.y
        return {"acc": accuracy(proba[idx], y[idx]), "f1": macro_f1(proba[idx], y[idx], graph.num_classes)}

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | os.PathLike, meta: dict | None = None) -> Path:
        """Write the fitted estimator to ``path`` (one safetensors file, conventionally ``*.safetensors``,
        written atomically); see :func:`~magkit.methods.persistence.save_estimator`."""
        from .persistence import save_estimator

        return save_estimator(self, path, meta)
