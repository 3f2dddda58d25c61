"""Evaluate a condensed graph: train fresh GNNs on S, select on the real validation split, test on the real graph.

The protocol (docs/condensation.md):

* a *view* of the real graph is the set of nodes a model reads at evaluation time with their induced
  structure: in the transductive setting the whole graph (scored on its val / test nodes), in the inductive
  setting the val-induced and the test-induced subgraphs (as MM-Graph and the SR-GM code do);
* a fresh model is trained on S (all synthetic nodes are training nodes) for ``epochs`` epochs through the
  one epoch loop (:func:`~magkit.train.loop.fit_loop`); after every 10th epoch and the last it is scored on the
  real validation view and the best state is kept (ties keep the earlier epoch); the test view is read once,
  with the selected state. That is the ``standard`` protocol, the default: one run at a time, no early stop,
  float32, the protocol of every recorded condensation benchmark;
* the ``fast`` protocol (opt-in, ``protocol="fast"``) trains the runs of GCN, SGC, GraphSAGE and the MLP at
  once and reads them out on the scored nodes only (:mod:`magkit.condense.batched`), validates after every
  ``eval_every``-th epoch, stops a run after ``patience`` validations without improvement (default:
  :data:`EVAL_PATIENCE`) and may select in bfloat16 (``val_dtype``). Each stacked run follows its lone run up
  to float rounding, so its selected-epoch accuracy matches the standard protocol's within seed noise, not bit
  for bit; the whole-graph bar ``train_whole`` takes the same protocol;
* structures: GCN and APPNP read Â = D̃^{-1/2}(A + I)D̃^{-1/2}, GraphSAGE the weighted mean D^{-1}A, SGC the
  precomputed Â^K X, Chebyshev the weighted edges, GAT the edges with weight > ``GAT_THRESHOLD`` = 0.5 (GAT has
  no edge weights) and MLP nothing. S's dense weighted adjacency is used as is (weights included).
"""

from __future__ import annotations

import contextlib
import numbers
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..exceptions import ConfigError
from ..functional import accuracy, macro_f1
from ..models.backbones import build_backbone
from ..models.chebnet import ChebNet
from ..models.late_fusion import LateFusion
from ..train.loop import fit_loop
from ..train.propagation import mean_adjacency, normalized_adjacency, propagate
from .artifact import EDGE_THRESHOLD, CondensedGraph
from .batched import BATCHED, VAL_DTYPES, train_runs

#: architectures ``evaluate_condensed`` trains on S
EVAL_BACKBONES = ("gcn", "sgc", "sage", "appnp", "gat", "cheb", "mlp")
SETTINGS = ("transductive", "inductive")
#: the evaluation protocols: ``standard`` (the default: each run alone, validated after every 10th epoch and the
#: last, no early stop, float32) and ``fast`` (stacked runs, scored-node readout, patience; opt-in)
EVAL_PROTOCOLS = ("standard", "fast")
#: validations without improvement after which a run stops under the ``fast`` protocol (its default patience)
EVAL_PATIENCE = 10
#: the options of the ``fast`` protocol and their defaults; the ``standard`` protocol takes none of them
#: (``patience`` 0: no early stop)
FAST_OPTIONS: dict[str, Any] = {"eval_every": 10, "patience": EVAL_PATIENCE, "val_dtype": "auto"}
#: GAT has no edge weights: on S it sees the pairs with weight above this (the PGE's sigmoid midpoint)
GAT_THRESHOLD = 0.5

warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta state")


@dataclass
class View:
    """Real nodes a model reads (fused features, structure) and the positions it is scored on."""

    x: Tensor
    edge_index: Tensor
    y: Tensor
    idx: Tensor
    _cache: dict = field(default_factory=dict, repr=False)

    @property
    def num_nodes(self) -> int:
        return self.x.size(0)

    def to(self, device) -> View:
        """This view on ``device`` (the structure cache is rebuilt there on first use)."""
        device = torch.device(device)
        if self.x.device == device:
            return self
        return View(self.x.to(device), self.edge_index.to(device), self.y.to(device), self.idx.to(device))

    def structure(self, kind: str, k: int = 2) -> Any:
        if kind not in self._cache:
            self._cache[kind] = _sparse_structure(kind, self, k)
        return self._cache[kind]


def _sparse_structure(kind: str, view: View, k: int) -> Any:
    edge_index, n = view.edge_index, view.num_nodes
    if kind in ("gcn", "appnp"):
        return normalized_adjacency(edge_index, n)
    if kind == "sage":
        return mean_adjacency(edge_index, n)
    if kind == "sgc":
        return propagate(view, view.x, k).to(view.x.device)
    if kind in ("gat", "cheb"):
        return (edge_index, None)
    return None


def dense_structure(kind: str, adj: Tensor, x: Tensor, k: int = 2) -> Any:
    """The structure ``kind`` reads from a dense weighted adjacency (S's)."""
    n = adj.size(0)
    a = ((adj + adj.T) / 2).detach().float()
    a = a * (1 - torch.eye(n))
    if kind in ("gcn", "appnp", "sgc"):
        at = a + torch.eye(n)
        dinv = at.sum(1).rsqrt()
        norm = dinv[:, None] * at * dinv[None, :]
        if kind == "sgc":  # S's dense weighted Â: Â^K X by K dense products
            for _ in range(k):
                x = norm @ x
            return x
        return norm.to_sparse_csr()
    if kind == "sage":
        deg = a.sum(1, keepdim=True)
        return (a / deg.clamp_min(1e-12) * (deg > 0)).to_sparse_csr()
    if kind in ("gat", "cheb"):
        keep = a > (GAT_THRESHOLD if kind == "gat" else EDGE_THRESHOLD)
        ei = keep.nonzero().T.contiguous()
        return (ei, a[keep] if kind == "cheb" else None)
    return None


def _build(kind: str, in_dim: int, hidden: int, out_dim: int, drop: float, num_layers: int = 2,
           widths: tuple[int, ...] | None = None) -> nn.Module:
    if widths is not None:  # late fusion: one network per modality block, logits averaged
        if sum(widths) != in_dim:
            raise ConfigError(f"widths: {tuple(widths)} sum to {sum(widths)}; allowed: blocks summing to the "
                              f"feature width {in_dim}")
        return LateFusion([_build(kind, w, hidden, out_dim, drop, num_layers) for w in widths], widths)
    if kind == "cheb":
        return ChebNet(in_dim, hidden, out_dim, drop, num_layers=num_layers)
    if kind not in EVAL_BACKBONES:
        raise ConfigError(f"backbone: {kind!r}; allowed: {', '.join(EVAL_BACKBONES)}")
    return build_backbone(kind, in_dim, hidden, out_dim, num_layers=num_layers, dropout=0.0 if kind == "sgc" else drop)


def _forward(model: nn.Module, kind: str, x: Tensor, structure: Any) -> Tensor:
    if kind == "sgc":
        return model(structure)
    if kind == "mlp":
        return model(x)
    if kind == "gat":
        return model(x, structure[0])
    return model(x, structure)


def graph_views(graph, setting: str = "transductive") -> dict[str, View]:
    """``{"train", "val", "test"}`` views of a split graph in ``setting`` (see the module docstring)."""
    from torch_geometric.utils import subgraph

    if setting not in SETTINGS:
        raise ConfigError(f"setting: {setting!r}; allowed: {', '.join(SETTINGS)}")
    x = graph.fused()
    views = {}
    if setting == "transductive":
        for s in ("train", "val", "test"):
            views[s] = View(x, graph.edge_index, graph.y, graph.split_index(s))
        return views
    for s in ("train", "val", "test"):
        nodes = graph.split_index(s)
        ei, _ = subgraph(nodes, graph.edge_index, relabel_nodes=True, num_nodes=graph.num_nodes)
        views[s] = View(x[nodes], ei, graph.y[nodes], torch.arange(nodes.numel()))
    return views


def score(model: nn.Module, kind: str, view: View) -> tuple[float, float, Tensor]:
    """(accuracy, macro-F1, predictions) of ``model`` on ``view``'s scored nodes."""
    model.eval()
    with torch.no_grad():
        out = _forward(model, kind, view.x, view.structure(kind))[view.idx]
    pred = out.argmax(1)
    y = view.y[view.idx]
    return accuracy(pred, y), macro_f1(pred, y, int(out.size(1))), pred


def _condensed_inputs(condensed: CondensedGraph, backbone: str, val: View) -> tuple[Tensor, Any]:
    """S's fused features and the structure ``backbone`` reads from S, where ``val`` lives (S is trained there)."""
    dev = val.x.device
    xs = torch.cat([condensed.features[m] for m in condensed.modalities], dim=1).float().to(dev)
    if xs.size(1) != val.x.size(1):
        raise ConfigError(
            f"condensed features have width {xs.size(1)} but the real graph's fused features have {val.x.size(1)}"
        )
    with torch.device(dev):
        structure = dense_structure(backbone, condensed.adj.to(dev), xs)
    return xs, structure


def train_on_condensed(
    condensed: CondensedGraph,
    backbone: str,
    val: View,
    test: View | None = None,
    **kwargs: Any,
) -> dict[str, float]:
    """Train one fresh ``backbone`` on S, select on ``val``; returns val/test accuracy and macro-F1 and times.
    Keyword arguments as :func:`train_model`."""
    dev = val.x.device  # S is trained where the real views live
    xs, structure = _condensed_inputs(condensed, backbone, val)
    return train_model(backbone, xs, structure, condensed.y.to(dev), None, val, test,
                       num_classes=condensed.num_classes, **kwargs)


def train_whole(
    graph_or_views,
    backbone: str,
    setting: str = "transductive",
    *,
    protocol: str = "standard",
    eval_every: int | None = None,
    patience: int | None = None,
    val_dtype: str | None = None,
    **kwargs: Any,
) -> dict[str, float]:
    """The upper bound: one fresh ``backbone`` trained on the real training graph under the protocol of
    :func:`evaluate_condensed`, one run at a time through :func:`train_model`.

    ``protocol``, ``eval_every``, ``patience`` and ``val_dtype`` as in :func:`evaluate_condensed` (default: the
    ``standard`` protocol, which takes none of the other three). Under ``fast`` the bar is validated after every
    ``eval_every``-th epoch and the last and stopped after ``patience`` validations without improvement, like
    the condensed graphs' runs; its validations are float32 whatever ``val_dtype`` is (checked only), so the
    bar's selection is exact. Other keyword arguments as :func:`train_model`."""
    fast = protocol_options(protocol, {"eval_every": eval_every, "patience": patience, "val_dtype": val_dtype})
    views = graph_or_views if isinstance(graph_or_views, dict) else graph_views(graph_or_views, setting)
    tr = views["train"]
    num_classes = int(tr.y.max()) + 1 if "num_classes" not in kwargs else kwargs.pop("num_classes")
    if fast is not None:
        kwargs.update(eval_every=fast["eval_every"], patience=fast["patience"] or None)
    return train_model(backbone, tr.x, tr.structure(backbone), tr.y, tr.idx, views["val"], views["test"],
                       num_classes=num_classes, **kwargs)


def protocol_options(
    protocol: Any,
    given: dict[str, Any],
    *,
    arg: Callable[[str], str] = lambda k: f"{k}:",
    fast_flag: str = "protocol='fast'",
) -> dict[str, Any] | None:
    """Check an evaluation protocol and its options: :obj:`None` for ``standard``, the ``fast`` protocol's
    options (:data:`FAST_OPTIONS` updated with those ``given``) for ``fast``.

    Args:
        protocol: ``standard`` or ``fast`` (:data:`EVAL_PROTOCOLS`).
        given (dict): ``eval_every``, ``patience``, ``val_dtype`` as the user set them (:obj:`None`: not set).
        arg (callable): how a message names an option (default: ``"patience:"``; the CLI ``"--patience:"``).
        fast_flag (str): how the user asks for the fast protocol, named when an option comes without it.

    Raises:
        ConfigError: one line naming the option, its value and what is allowed: an unknown protocol, an option
            of the fast protocol under ``standard``, an ``eval_every`` below 1, a ``patience`` below 0 (0: no
            early stop), a ``val_dtype`` not in :data:`~magkit.condense.batched.VAL_DTYPES`.
    """
    if protocol not in EVAL_PROTOCOLS:
        raise ConfigError(f"{arg('protocol')} {protocol!r}; allowed: {', '.join(EVAL_PROTOCOLS)}")
    given = {k: v for k, v in given.items() if v is not None}
    if protocol == "standard":
        if given:
            k, v = next(iter(given.items()))
            raise ConfigError(f"{arg(k)} {v!r} applies to the fast protocol only; allowed: {fast_flag} with it, or "
                              f"no {k} (the standard protocol validates every 10th epoch, never stops early, in float32)")
        return None
    out = {**FAST_OPTIONS, **given}
    ev, pat, dt = out["eval_every"], out["patience"], out["val_dtype"]
    if isinstance(ev, bool) or not isinstance(ev, numbers.Integral) or ev < 1:
        raise ConfigError(f"{arg('eval_every')} {ev!r}; allowed: an integer >= 1")
    if isinstance(pat, bool) or not isinstance(pat, numbers.Integral) or pat < 0:
        raise ConfigError(f"{arg('patience')} {pat!r}; allowed: an integer >= 1 (validations) or 0 (no early stop)")
    if dt not in VAL_DTYPES:
        raise ConfigError(f"{arg('val_dtype')} {dt!r}; allowed: {', '.join(VAL_DTYPES)}")
    return out


def train_model(
    backbone: str,
    x: Tensor,
    structure: Any,
    y: Tensor,
    train_idx: Tensor | None,
    val: View,
    test: View | None = None,
    *,
    num_classes: int,
    epochs: int = 300,
    lr: float = 0.01,
    weight_decay: float = 5e-4,
    hidden: int = 256,
    dropout_p: float = 0.5,
    eval_every: int = 10,
    seed: int = 0,
    num_layers: int = 2,
    patience: int | None = None,
    widths: tuple[int, ...] | None = None,
    progress: Callable[[dict], None] | None = None,
) -> dict[str, float]:
    """Train a fresh model on (x, structure, y[train_idx]) through :func:`~magkit.train.loop.fit_loop`; keep the
    state with the best val accuracy, validated after every ``eval_every``-th epoch and the last (ties keep
    the earlier epoch); score it on ``val`` and ``test``.

    ``num_layers``: the backbone's depth (SGC: one linear layer whatever it is). ``patience``: stop after this
    many validations without improvement (counted in validations, not epochs; :obj:`None`: never).
    ``widths``: late fusion, one network per column block of ``x`` of these widths and the logits averaged
    (:class:`~magkit.models.late_fusion.LateFusion`); :obj:`None`: one network on all columns (early fusion).
    ``progress``: called after every epoch with its record (``val_acc`` is NaN between validations); an
    exception it raises stops the training (a pruner's way out)."""
    if epochs < 1 or eval_every < 1:
        raise ConfigError(f"epochs and eval_every must be >= 1, got {epochs} and {eval_every}")
    if patience is not None and patience < 1:
        raise ConfigError(f"patience: {patience}; allowed: >= 1 validations or None")
    # the model lives where the data does (on CPU, the default device: no device mode, whose per-op dispatch
    # costs more than a tiny graph's training step)
    device_mode = torch.device(x.device) if x.device.type != "cpu" else contextlib.nullcontext()
    with torch.random.fork_rng(devices=[]), device_mode:
        torch.manual_seed(seed)
        model = _build(backbone, x.size(1), hidden, num_classes, dropout_p, num_layers, widths)
        opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
        yt = y if train_idx is None else y[train_idx]
        now = {"epoch": 0}

        def step(epoch: int) -> dict:
            now["epoch"] = epoch
            opt.zero_grad()
            out = _forward(model, backbone, x, structure)
            loss = F.cross_entropy(out if train_idx is None else out[train_idx], yt)
            loss.backward()
            opt.step()
            return {"loss": float(loss.detach())}

        def evaluate() -> dict:
            # validated after every eval_every-th epoch and the last; an epoch in between scores NaN, which
            # never counts as an improvement
            e = now["epoch"]
            if e % eval_every == eval_every - 1 or e == epochs - 1:
                return {"val_acc": score(model, backbone, val)[0]}
            return {"val_acc": float("nan")}

        # every epoch is an evaluation for fit_loop (NaN in between never improves), so ``patience``
        # validations are patience * eval_every of its evaluations
        hist = fit_loop(model, step, evaluate, epochs=epochs, patience=None if patience is None else patience * eval_every,
                        monitor="val_acc", eval_every=1, progress=progress)
        train_time = hist.train_time
    val_acc, val_f1, _ = score(model, backbone, val)
    out = {"val_acc": val_acc, "val_f1": val_f1, "best_epoch": hist.best_epoch + 1, "train_time_s": train_time,
           "epoch_time_s": train_time / len(hist.epochs), "epochs_run": len(hist.epochs)}
    if test is not None:
        out["test_acc"], out["test_f1"], _ = score(model, backbone, test)
    return out


def evaluate_condensed(
    condensed: CondensedGraph,
    graph,
    backbone: str | list[str] | tuple[str, ...] = "gcn",
    runs: int = 5,
    seed: int = 0,
    *,
    setting: str | None = None,
    epochs: int = 300,
    hidden: int = 256,
    lr: float = 0.01,
    weight_decay: float = 5e-4,
    views: dict[str, View] | None = None,
    strict_checksum: bool = True,
    device: str = "cpu",
    protocol: str = "standard",
    eval_every: int | None = None,
    patience: int | None = None,
    val_dtype: str | None = None,
) -> dict[str, dict[str, Any]]:
    """Train ``runs`` fresh models per backbone on ``condensed``; select on ``graph``'s validation split.

    Returns ``{backbone: {"test_acc": (mean, std), "test_f1": (mean, std), "val_acc": (mean, std),
    "runs": [per-run dicts]}}`` (accuracies as fractions). ``setting`` defaults to the one recorded in
    the condensed graph's config (``transductive`` if none). ``strict_checksum``: refuse a graph whose
    content checksum differs from the one S was condensed from (``DatasetError``). ``device``: ``cpu``,
    ``cuda``/``cuda:N`` or ``auto``; the real views and S are moved there, the code path is the same.

    ``protocol`` (default: ``"standard"``): ``standard`` trains each run alone through :func:`train_model`,
    validated after every 10th epoch and the last, without early stop, in float32; it takes none of the three
    options below (a :class:`ConfigError` names the one given). ``fast`` (opt-in) trains the runs of GCN, SGC,
    GraphSAGE and the MLP at once and reads them out on the scored nodes only
    (:func:`~magkit.condense.batched.train_runs`; the other backbones one run at a time), about 5x faster on
    GCN + SGC + GraphSAGE x 3 runs with its defaults on a CPU with native bfloat16, 3.4x with float32
    selection (docs/condensation.md); each stacked run follows its lone run up to float
    rounding, so its accuracies match the standard protocol's within seed noise, not bit for bit. Its options
    (:obj:`None`: the default of :data:`FAST_OPTIONS`):

    * ``eval_every``: validate after every ``eval_every``-th epoch and the last (default: ``10``);
    * ``patience``: a run stops after this many validations without improvement, ``0``: never (default:
      :data:`EVAL_PATIENCE` = 10);
    * ``val_dtype``: the precision of the stacked runs' selecting validations, ``float32`` | ``auto`` |
      ``bfloat16`` (default: ``auto``). ``auto`` (bfloat16 where the device multiplies it natively, else
      float32) and ``bfloat16`` run the first layer and the second layer's dense product of those validations
      in bfloat16: faster selection, the reported accuracies still read in float32, but the selected epochs,
      hence the results, then depend on the hardware; ``float32`` selects the same epochs on every machine.

    ``train_time_s`` of a stacked run is its share of the batch (the batch's time / ``runs``).
    """
    from ..eval.protocol import mean_std

    condensed.check_compatible(graph, strict_checksum=strict_checksum)
    names = [backbone] if isinstance(backbone, str) else list(backbone)
    bad = [b for b in names if b not in EVAL_BACKBONES]
    if bad or not names:
        raise ConfigError(f"backbones: {bad or names!r}; allowed: {', '.join(EVAL_BACKBONES)}")
    if runs < 1:
        raise ConfigError(f"runs: {runs}; allowed: >= 1")
    fast = protocol_options(protocol, {"eval_every": eval_every, "patience": patience, "val_dtype": val_dtype})
    if setting is None:
        setting = ((condensed.meta.get("config") or {}).get("setting")) or "transductive"
    from ..methods.base import resolve_device

    dev = resolve_device(str(device))  # one-line ConfigError for cuda without CUDA
    views = {k: v.to(dev) for k, v in (views or graph_views(graph, setting)).items()}
    results: dict[str, dict[str, Any]] = {}
    for b in names:
        if fast is None:  # the standard protocol: each run alone
            per = [train_on_condensed(condensed, b, views["val"], views["test"], epochs=epochs, hidden=hidden, lr=lr,
                                      weight_decay=weight_decay, seed=seed + r) for r in range(runs)]
        else:
            kw = {"epochs": epochs, "hidden": hidden, "lr": lr, "weight_decay": weight_decay,
                  "eval_every": fast["eval_every"], "patience": fast["patience"] or None}
            if b in BATCHED:
                xs, structure = _condensed_inputs(condensed, b, views["val"])
                per = train_runs(b, xs, structure, condensed.y.to(dev), views["val"], views["test"],
                                 num_classes=condensed.num_classes, runs=runs, seed=seed, val_dtype=fast["val_dtype"],
                                 **kw)
            else:
                per = [train_on_condensed(condensed, b, views["val"], views["test"], seed=seed + r, **kw)
                       for r in range(runs)]
        results[b] = {k: mean_std([p[k] for p in per]) for k in ("test_acc", "test_f1", "val_acc", "train_time_s")}
        results[b]["runs"] = per
    return results
