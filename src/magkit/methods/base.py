"""The estimator API shared by every node classifier (scikit-learn style).

* ``__init__(**params)`` only stores keyword arguments (unknown names raise :class:`ConfigError` listing
  the valid ones); ``get_params()`` returns them.
* ``fit(graph)`` validates the graph, trains through the one epoch loop (:func:`magkit.train.loop.fit_loop`)
  with early stopping on the validation split, restores the best state, and sets ``model_``, ``history_``.
* ``predict_proba(graph)``, ``predict(graph)``, ``score(graph, split="test")`` raise
  :class:`NotFittedError` before ``fit``.
* Randomness comes from the ``seed`` parameter only: ``fit`` runs inside ``torch.random.fork_rng`` seeded
  with it, so the caller's global RNG state is untouched and the same seed gives the same numbers on CPU.

Subclasses provide ``_build(graph, inputs) -> nn.Module`` and may override ``_inputs`` (what the model
reads, e.g. cached propagated features), ``_loss`` (default: cross-entropy on the training nodes) and
``_before_epoch`` (e.g. per-epoch reliability estimates).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from ..data.graph import MultimodalGraph, validate
from ..exceptions import ConfigError, NotFittedError
from ..functional import accuracy, macro_f1
from ..train.loop import MONITORS, fit_loop
from ..train.propagation import graph_adjacency, mean_adjacency, normalized_adjacency
from ..train.sampler import NeighborSampler

log = logging.getLogger(__name__)


@dataclass
class GraphInputs:
    """What a model reads: per-modality blocks, presence, structure (possibly a sampled subgraph)."""

    xs: dict[str, Tensor]
    present: Tensor  # bool [n, M], columns in the order of `modalities`
    modalities: tuple[str, ...]
    edge_index: Tensor
    num_nodes: int
    extra: dict[str, Tensor] = field(default_factory=dict)  # node-aligned extras (propagated features ...)
    adj: Tensor | None = None  # cached Â = D̃^-1/2 (A+I) D̃^-1/2 (sparse CSR), built on first use
    madj: Tensor | None = None  # cached D^-1 A (sparse CSR, GraphSAGE's mean aggregation), built on first use

    def norm_adj(self) -> Tensor:
        """The symmetric-normalised adjacency with self-loops of this (sub)graph, cached."""
        if self.adj is None:
            self.adj = normalized_adjacency(self.edge_index, self.num_nodes)
        return self.adj

    def mean_adj(self) -> Tensor:
        """The row-normalised adjacency (mean over in-neighbours) of this (sub)graph, cached."""
        if self.madj is None:
            self.madj = mean_adjacency(self.edge_index, self.num_nodes)
        return self.madj

    def subset(self, n_id: Tensor, edge_index: Tensor) -> GraphInputs:
        return GraphInputs(
            xs={m: x[n_id] for m, x in self.xs.items()},
            present=self.present[n_id],
            modalities=self.modalities,
            edge_index=edge_index,
            num_nodes=int(n_id.numel()),
            extra={k: v[n_id] for k, v in self.extra.items()},
        )

    def to(self, device) -> GraphInputs:
        return replace(
            self,
            xs={m: x.to(device) for m, x in self.xs.items()},
            present=self.present.to(device),
            edge_index=self.edge_index.to(device),
            extra={k: v.to(device) for k, v in self.extra.items()},
            adj=None if self.adj is None else self.adj.to(device),
            madj=None if self.madj is None else self.madj.to(device),
        )


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


class NodeClassifier:
    """Base class of magkit's node classifiers. See the module docstring for the API."""

    #: registry name and one-line description (set by subclasses / the registry)
    name: ClassVar[str] = "base"
    description: ClassVar[str] = ""
    #: default hyper-parameters; subclasses extend this dict
    defaults: ClassVar[dict[str, Any]] = {
        "hidden": 128,
        "num_layers": 2,
        "dropout": 0.5,
        "lr": 0.01,
        "weight_decay": 5e-4,
        "epochs": 300,
        "patience": 50,
        "monitor": "val_acc",
        "batch_size": None,  # None = full batch
        "fanouts": (10, 10),
        "seed": 0,
        "device": "cpu",
    }

    def __init__(self, **params: Any):
        allowed = self._all_defaults()
        unknown = sorted(set(params) - set(allowed))
        if unknown:
            raise ConfigError(
                f"{type(self).__name__}: unknown parameter(s) {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}"
            )
        self.params = {**allowed, **params}

    @classmethod
    def _all_defaults(cls) -> dict[str, Any]:
        merged: dict[str, Any] = {}
        for klass in reversed(cls.__mro__):
            merged.update(getattr(klass, "defaults", {}) or {})
        return merged

    def get_params(self) -> dict[str, Any]:
        return dict(self.params)

    def set_params(self, **params: Any) -> NodeClassifier:
        self.__init__(**{**self.params, **params})
        return self

    def __getattr__(self, key: str):
        params = self.__dict__.get("params", {})
        if key in params:
            return params[key]
        if key.endswith("_") and not key.startswith("__"):
            raise NotFittedError(f"{type(self).__name__} is not fitted yet (no {key}); call fit(graph) first")
        raise AttributeError(key)

    def __repr__(self) -> str:
        changed = {k: v for k, v in self.params.items() if self._all_defaults().get(k) != v}
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in changed.items())})"

    # ------------------------------------------------------------------ hooks for subclasses
    def _check_params(self) -> None:
        p = self.params
        for key in ("hidden", "num_layers", "epochs"):
            if not isinstance(p[key], int) or p[key] < 1:
                raise ConfigError(f"{key}: {p[key]!r}; allowed: an integer >= 1")
        if not 0 <= p["dropout"] < 1:
            raise ConfigError(f"dropout: {p['dropout']!r}; allowed: 0 <= dropout < 1")
        if p["lr"] <= 0:
            raise ConfigError(f"lr: {p['lr']!r}; allowed: > 0")
        if p["monitor"] not in MONITORS:
            raise ConfigError(f"monitor: {p['monitor']!r}; allowed: {', '.join(MONITORS)}")

    def _inputs(self, graph: MultimodalGraph) -> GraphInputs:
        # rows of an absent modality are zeroed here, whatever the file held, so no model can read them
        return GraphInputs(
            xs={m: graph.feature(m) * graph.presence(m).unsqueeze(1).to(torch.float32) for m in graph.modalities},
            present=graph.modality_mask,
            modalities=graph.modalities,
            edge_index=graph.edge_index,
            num_nodes=graph.num_nodes,
            adj=graph_adjacency(graph),
        )

    def _build(self, graph: MultimodalGraph, inputs: GraphInputs) -> torch.nn.Module:
        raise NotImplementedError

    def _loss(self, out: Tensor | dict, y: Tensor, idx: Tensor, epoch: int) -> tuple[Tensor, dict]:
        loss = F.cross_entropy(main_logits(out)[idx], y[idx])
        return loss, {"loss": float(loss.detach())}

    def _before_epoch(self, epoch: int, inputs: GraphInputs, graph: MultimodalGraph) -> None:
        """Called before every training epoch (e.g. to refresh detached per-node statistics)."""

    def _optimizer(self, model: torch.nn.Module) -> torch.optim.Optimizer:
        return torch.optim.Adam(model.parameters(), lr=self.params["lr"], weight_decay=self.params["weight_decay"])

    # ------------------------------------------------------------------ the API
    def fit(self, graph: MultimodalGraph, on_epoch=None) -> NodeClassifier:
        """Train on ``graph``'s training split, selecting the epoch on its validation split."""
        validate(graph)
        self._check_params()
        p = self.params
        device = resolve_device(p["device"])
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(p["seed"])
            gen = torch.Generator().manual_seed(p["seed"])
            inputs = self._inputs(graph)
            model = self._build(graph, inputs).to(device)
            self.model_ = model
            self.num_classes_ = graph.num_classes
            self.modalities_ = graph.modalities
            self.device_ = device
            dev_inputs = inputs.to(device)
            y = graph.y.to(device)
            train_idx = graph.split_index("train").to(device)
            val_idx = graph.split_index("val").to(device)
            opt = self._optimizer(model)
            sampler = None
            if p["batch_size"] is not None:
                sampler = NeighborSampler(graph.edge_index, graph.num_nodes, p["fanouts"], p["batch_size"], generator=gen)
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
                totals: dict[str, float] = {}
                count = 0
                for batch in sampler.batches(graph.split_index("train")):
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
                return {k: v / count for k, v in totals.items()}

            def evaluate() -> dict:
                logits = main_logits(model(dev_inputs))
                c = graph.num_classes
                return {
                    "train_acc": accuracy(logits[train_idx], y[train_idx]),
                    "val_acc": accuracy(logits[val_idx], y[val_idx]),
                    "val_f1": macro_f1(logits[val_idx], y[val_idx], c),
                    "val_loss": float(F.cross_entropy(logits[val_idx], y[val_idx])),
                }

            self.history_ = fit_loop(
                model, step, evaluate, epochs=p["epochs"], patience=p["patience"], monitor=p["monitor"], on_epoch=on_epoch
            )
            model.eval()
        return self

    def _check_fitted(self) -> None:
        if "model_" not in self.__dict__:
            raise NotFittedError(f"{type(self).__name__} is not fitted yet; call fit(graph) first")

    @torch.no_grad()
    def forward(self, graph: MultimodalGraph) -> Tensor | dict:
        """The fitted model's raw output on ``graph`` (eval mode)."""
        self._check_fitted()
        if tuple(graph.modalities) != tuple(self.modalities_):
            raise ConfigError(f"graph modalities {graph.modalities} differ from the fitted ones {self.modalities_}")
        self.model_.eval()
        return self.model_(self._inputs(graph).to(self.device_))

    def predict_proba(self, graph: MultimodalGraph) -> Tensor:
        """Class probabilities ``[N, C]`` for every node of ``graph``."""
        return torch.softmax(main_logits(self.forward(graph)), dim=1).cpu()

    def predict(self, graph: MultimodalGraph) -> Tensor:
        return self.predict_proba(graph).argmax(dim=1)

    def score(self, graph: MultimodalGraph, split: str = "test") -> dict[str, float]:
        """Accuracy and macro-F1 on ``split`` of ``graph``."""
        self._check_fitted()
        idx = graph.split_index(split)
        proba = self.predict_proba(graph)
        y = graph.y
        return {"acc": accuracy(proba[idx], y[idx]), "f1": macro_f1(proba[idx], y[idx], graph.num_classes)}
