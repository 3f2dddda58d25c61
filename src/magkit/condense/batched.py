"""R fresh runs of one backbone trained at once on a condensed graph S and read out on the real scored nodes only.

:func:`train_runs` is what :func:`~magkit.condense.evaluate.evaluate_condensed` runs for the backbones in
:data:`BATCHED` (GCN, Kipf & Welling 2017; SGC, Wu et al. 2019; GraphSAGE, Hamilton et al. 2017; MLP); the others
train one run at a time through :func:`~magkit.condense.evaluate.train_model`. The protocol is the same:

* **runs stacked.** Run r's weights are the slices ``[r]`` of tensors with a leading run dimension
  ``W_l ∈ R^{R × d_in × d_out}``. Run r is initialised as a lone run with seed ``seed + r`` is (the same modules
  built under ``torch.manual_seed(seed + r)``, their weights copied in), and its dropout masks are drawn from its
  own generator, which continues the global generator's state after that initialisation (on CPU the masks are
  those of the lone run). The loss is Σ_r CE_r, so run r's gradient is its own; Adam and weight decay act
  elementwise. Run r therefore follows a lone run's trajectory up to float rounding, and one product serves all
  runs: X W for the R runs is one ``[m, d] × [d, R h]`` product, a sparse product one pass at width ``R h``.
* **selection.** After every ``eval_every``-th epoch and the last, each run still training is scored on the
  validation nodes and keeps its best state (ties keep the earlier epoch); with ``patience`` P a run stops after P
  validations without improvement (it is no longer validated; its selected state stays). The test view is read
  once per run, with its selected state.
* **readout on the scored nodes only** (:class:`Readout`). With fields F_0 = the scored nodes and F_{j+1} = F_j ∪
  the in-neighbours of F_j, an L-layer network's outputs on F_0 need layer l on F_{L-l} alone. The first layer
  of GCN and GraphSAGE is linear in a fixed input: (Â X) W_1 = Â (X W_1) and (D⁻¹A X) W_l, so Â X (D⁻¹A X) is
  propagated once per view and only its rows F_{L-1} are multiplied by the weights; SGC reads the rows F_0 of
  its precomputed Â^K X, the MLP the rows F_0 of X. The logits equal the whole-view forward's up to float
  rounding (tested to 1e-5).
"""

from __future__ import annotations

import time
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..exceptions import ConfigError
from ..functional import accuracy, macro_f1
from ..train.propagation import spmm

#: backbones :func:`train_runs` trains (the others train one run at a time)
BATCHED = ("gcn", "sgc", "sage", "mlp")


def _layers_of(kind: str, model: nn.Module) -> list[dict[str, Tensor | None]]:
    """The weights of one built backbone as ``[{"w": [d_in, d_out], "b": [d_out] | None, "root": ...}]``."""
    if kind == "gcn":
        return [{"w": c.lin.weight.T, "b": c.bias, "root": None} for c in model.convs]
    if kind == "sage":
        return [{"w": c.lin_l.weight.T, "b": c.lin_l.bias, "root": c.lin_r.weight.T} for c in model.convs]
    if kind == "sgc":
        return [{"w": model.lin.weight.T, "b": model.lin.bias, "root": None}]
    return [{"w": lin.weight.T, "b": lin.bias, "root": None} for lin in model.lins]


def _field(adj: Tensor, rows: Tensor, num_nodes: int) -> tuple[Tensor, Tensor]:
    """(F, Â[rows, F]): F = ``rows`` followed by the other columns their rows of ``adj`` read (sorted), and the
    sub-matrix of those rows over F as sparse CSR (columns relabelled to positions in F)."""
    coo = adj.to_sparse_coo().coalesce()
    (r, c), v = coo.indices(), coo.values()
    in_rows = torch.zeros(num_nodes, dtype=torch.bool, device=rows.device)
    in_rows[rows] = True
    keep = in_rows[r]
    r, c, v = r[keep], c[keep], v[keep]
    extra = torch.zeros(num_nodes, dtype=torch.bool, device=rows.device)
    extra[c] = True
    extra[rows] = False
    field = torch.cat([rows, extra.nonzero().flatten()])
    pos = torch.full((num_nodes,), -1, dtype=torch.long, device=rows.device)
    pos[field] = torch.arange(field.numel(), device=rows.device)
    sub = torch.sparse_coo_tensor(torch.stack([pos[r], pos[c]]), v, (rows.numel(), field.numel()),
                                  check_invariants=False).coalesce().to_sparse_csr()
    return field, sub


class Readout:
    """A view's scored nodes as an L-layer ``kind`` network reads them (see the module docstring).

    Args:
        kind (str): ``gcn``, ``sage``, ``sgc`` or ``mlp``.
        view: a :class:`~magkit.condense.evaluate.View` (``x [N, d]``, its structure, scored positions ``idx``).
        num_layers (int): the network's depth L (SGC and MLP read only the scored rows whatever it is).

    Attributes:
        x0 (Tensor): the first layer's fixed input on F_{L-1}: ``[m, d]`` (GraphSAGE: ``[m, 2d]``, the rows of
            D⁻¹A X beside those of X).
        subs (list[Tensor]): Â[F_{L-l}, F_{L-l+1}] for layers l = 2..L, sparse CSR.
        roots (list[Tensor]): positions of F_{L-l} within F_{L-l+1} (GraphSAGE's root term).
    """

    def __init__(self, kind: str, view, num_layers: int = 2) -> None:
        if kind not in BATCHED:
            raise ConfigError(f"backbone: {kind!r}; allowed: {', '.join(BATCHED)}")
        self.kind = kind
        idx, n = view.idx, view.num_nodes
        self.subs: list[Tensor] = []
        self.roots: list[Tensor] = []
        if kind == "mlp":
            self.x0 = view.x[idx].float()
            return
        if kind == "sgc":
            self.x0 = view.structure("sgc")[idx].float()
            return
        adj = view.structure(kind)
        fields, subs = [idx], []
        for _ in range(num_layers - 1):
            f, sub = _field(adj, fields[-1], n)
            fields.append(f)
            subs.append(sub)
        self.subs = subs[::-1]  # layer 2 reads the widest
        self.roots = [torch.arange(f.numel(), device=idx.device) for f in fields[:-1]][::-1]
        first = fields[-1]
        prop = spmm(adj, view.x.float())  # Â X or D⁻¹A X over the view, once
        self.x0 = prop[first] if kind == "gcn" else torch.cat([prop[first], view.x[first].float()], dim=1)


class _RunStack(nn.Module):
    """R runs of one backbone as stacked weights (see the module docstring)."""

    def __init__(self, kind: str, models: list[nn.Module], dropout: float) -> None:
        super().__init__()
        self.kind = kind
        self.dropout = 0.0 if kind == "sgc" else dropout
        per_run = [_layers_of(kind, m) for m in models]
        self.w, self.b, self.root = nn.ParameterList(), nn.ParameterList(), nn.ParameterList()
        for i in range(len(per_run[0])):
            self.w.append(nn.Parameter(torch.stack([p[i]["w"].detach() for p in per_run]).contiguous()))
            self.b.append(nn.Parameter(torch.stack([p[i]["b"].detach() for p in per_run]).contiguous()))
            if kind == "sage":
                self.root.append(nn.Parameter(torch.stack([p[i]["root"].detach() for p in per_run]).contiguous()))

    @property
    def runs(self) -> int:
        return self.w[0].size(0)

    def _drop(self, h: Tensor, gens: list[torch.Generator]) -> Tensor:
        """Inverted dropout with run r's mask from ``gens[r]``, drawn as :func:`magkit.functional.ops.dropout`
        draws it (8 random bytes per 64-bit word, kept where the byte >= round(256 p)); ``h`` is ``[n, k]``
        (shared by the runs) or ``[R, n, k]``."""
        threshold = int(round(self.dropout * 256))
        if not self.training or threshold <= 0:
            return h if h.dim() == 3 else h.expand(self.runs, *h.shape)
        shape = h.shape[-2:]
        n = shape[0] * shape[1]
        masks = []
        for g in gens:
            words = torch.randint(-(2**63), 2**63 - 1, ((n + 7) // 8,), dtype=torch.int64, device=h.device, generator=g)
            mask = torch.ge(words.view(torch.uint8)[:n].view(shape), threshold).to(h.dtype)
            masks.append(mask.mul_(256.0 / (256 - threshold)))
        return torch.stack(masks) * h

    def forward(self, x: Tensor, adj: Tensor | None, gens: list[torch.Generator]) -> Tensor:
        """Logits ``[R, n, C]`` on S: ``x [n, d]``, ``adj`` S's dense ``[n, n]`` structure (``None``: MLP, SGC)."""
        h = x
        last = len(self.w) - 1
        for i, w in enumerate(self.w):
            h = self._drop(h, gens)  # [R, n, k]
            if self.kind == "gcn":
                h = adj @ torch.bmm(h, w) + self.b[i][:, None]
            elif self.kind == "sage":
                h = torch.bmm(adj @ h, w) + self.b[i][:, None] + torch.bmm(h, self.root[i])
            else:
                h = torch.bmm(h, w) + self.b[i][:, None]
            if i < last:
                h = F.relu(h)
        return h

    @staticmethod
    def _sparse(sub: Tensor, h: Tensor) -> Tensor:
        """``sub [m', m]`` times every run's ``h [m, R, k]`` as one sparse product at width R k: ``[m', R, k]``."""
        m, r, k = h.shape
        return spmm(sub, h.reshape(m, r * k)).view(-1, r, k)

    @staticmethod
    def _per_run(h: Tensor, w: Tensor, b: Tensor) -> Tensor:
        """Run r's ``h[:, r] w[r] + b[r]`` for ``h [m, R, k]``: ``[m, R, k']``."""
        return torch.baddbmm(b[:, None], h.transpose(0, 1), w).transpose(0, 1)

    @torch.no_grad()
    def readout(self, ro: Readout, runs: Tensor | None = None) -> Tensor:
        """Logits ``[R', |F_0|, C]`` of the runs ``runs`` (default: all) on a :class:`Readout`'s scored nodes.

        The first layer is one product ``x0 [m, d] × [d, R' h]`` (bias added in it, ReLU in place); the
        activations stay ``[m, R', k]``, so every sparse product reads all runs at once."""
        sel = (lambda p: p) if runs is None else (lambda p: p[runs])
        w = sel(self.w[0])
        if self.kind == "sage":
            w = torch.cat([w, sel(self.root[0])], dim=1)
        r, d, k = w.shape
        h = torch.addmm(sel(self.b[0]).reshape(r * k), ro.x0, w.permute(1, 0, 2).reshape(d, r * k)).view(-1, r, k)
        for i in range(1, len(self.w)):
            h = h.relu_()
            w, b = sel(self.w[i]), sel(self.b[i])
            if self.kind == "gcn":
                h = self._sparse(ro.subs[i - 1], torch.bmm(h.transpose(0, 1), w).transpose(0, 1)) + b
            elif self.kind == "sage":  # the mean of the neighbours (one sparse product) and the root term
                sub, root = ro.subs[i - 1], ro.roots[i - 1]
                h = self._per_run(self._sparse(sub, h), w, b) + torch.bmm(h[root].transpose(0, 1), sel(self.root[i])).transpose(0, 1)
            else:  # MLP: the scored rows only
                h = self._per_run(h, w, b)
        return h.transpose(0, 1)


def _generator(device: torch.device) -> torch.Generator:
    """A generator on ``device`` that continues the device's default generator (on CPU: the state a lone run's
    dropout starts from)."""
    g = torch.Generator(device=device)
    if device.type == "cpu":
        g.set_state(torch.get_rng_state())
    else:
        g.manual_seed(int(torch.randint(0, 2**62, (1,))))
    return g


def train_runs(
    backbone: str,
    x: Tensor,
    structure: Any,
    y: Tensor,
    val,
    test=None,
    *,
    num_classes: int,
    runs: int = 5,
    seed: int = 0,
    epochs: int = 300,
    lr: float = 0.01,
    weight_decay: float = 5e-4,
    hidden: int = 256,
    dropout_p: float = 0.5,
    eval_every: int = 10,
    num_layers: int = 2,
    patience: int | None = None,
    readouts: dict | None = None,
) -> list[dict[str, float]]:
    """Train ``runs`` fresh ``backbone`` networks (seeds ``seed .. seed + runs - 1``) on every row of
    ``(x, structure, y)`` (S: all synthetic nodes are training nodes) at once; select each on ``val``, score it
    on ``test``. The protocol of :func:`~magkit.condense.evaluate.train_model`, run per run (module docstring).

    Args:
        backbone: one of :data:`BATCHED`.
        x: S's features ``[n, d]``.
        structure: what :func:`~magkit.condense.evaluate.dense_structure` gives for ``backbone`` (SGC: Â^K X).
        y: S's labels ``[n]``.
        val: the real validation :class:`~magkit.condense.evaluate.View`.
        test: the real test view (default: ``None``, not scored).
        num_classes: C.
        runs: R, the number of runs (default: ``5``).
        seed: run r is seeded ``seed + r`` (default: ``0``).
        epochs, lr, weight_decay, hidden, dropout_p, eval_every, num_layers: as in ``train_model`` (defaults
            ``300``, ``0.01``, ``5e-4``, ``256``, ``0.5``, ``10``, ``2``).
        patience: a run stops after this many validations without improvement (default: ``None``: never).
        readouts: where the :class:`Readout` of each (view, backbone, depth) is kept across calls (default:
            ``None``, built here).

    Returns:
        One dict per run with ``val_acc``, ``val_f1``, ``best_epoch`` (1-based), ``epochs_run``,
        ``train_time_s`` and ``epoch_time_s`` (the run's share of the batch: its time / R) and, with ``test``,
        ``test_acc``, ``test_f1``.
    """
    from .evaluate import _build

    if backbone not in BATCHED:
        raise ConfigError(f"backbone: {backbone!r}; allowed: {', '.join(BATCHED)}")
    if epochs < 1 or eval_every < 1:
        raise ConfigError(f"epochs and eval_every must be >= 1, got {epochs} and {eval_every}")
    if runs < 1:
        raise ConfigError(f"runs: {runs}; allowed: >= 1")
    if patience is not None and patience < 1:
        raise ConfigError(f"patience: {patience}; allowed: >= 1 validations or None")
    dev = x.device
    readouts = {} if readouts is None else readouts

    def readout(view) -> Readout:
        key = (id(view), backbone, num_layers)
        if key not in readouts or readouts[key][0] is not view:
            readouts[key] = (view, Readout(backbone, view, num_layers))
        return readouts[key][1]

    models, gens = [], []
    with torch.random.fork_rng(devices=[]):
        for r in range(runs):
            torch.manual_seed(seed + r)
            models.append(_build(backbone, x.size(1), hidden, num_classes, dropout_p, num_layers))
            gens.append(_generator(dev))
    stack = _RunStack(backbone, models, dropout_p).to(dev)
    opt = torch.optim.Adam(stack.parameters(), fused=True, lr=lr, weight_decay=weight_decay)
    adj = structure.to_dense() if backbone in ("gcn", "sage") else None
    inp = structure if backbone == "sgc" else x
    rv, yv = readout(val), val.y[val.idx]
    best = [p.detach().clone() for p in stack.parameters()]
    best_acc = torch.full((runs,), -1.0)
    best_epoch = torch.zeros(runs, dtype=torch.long)
    waited = torch.zeros(runs, dtype=torch.long)
    active = torch.ones(runs, dtype=torch.bool)
    stopped_at = torch.full((runs,), epochs, dtype=torch.long)
    train_s = 0.0
    t_start = time.perf_counter()
    for epoch in range(epochs):
        stack.train()
        t0 = time.perf_counter()
        opt.zero_grad()
        out = stack(inp, adj, gens)
        loss = F.cross_entropy(out.reshape(-1, num_classes), y.repeat(runs), reduction="sum") / y.numel()
        loss.backward()
        opt.step()
        train_s += time.perf_counter() - t0
        if not (epoch % eval_every == eval_every - 1 or epoch == epochs - 1):
            continue
        stack.eval()
        on = active.nonzero().flatten()
        pred = stack.readout(rv, on.to(dev)).argmax(-1)
        accs = (pred == yv).float().mean(1).cpu()
        for j, r in enumerate(on.tolist()):
            if accs[j] > best_acc[r]:
                best_acc[r], best_epoch[r], waited[r] = accs[j], epoch, 0
                for b, p in zip(best, stack.parameters()):
                    b[r].copy_(p.detach()[r])
            else:
                waited[r] += 1
                if patience is not None and waited[r] >= patience:
                    active[r] = False
                    stopped_at[r] = epoch + 1
        if not bool(active.any()):
            break
    loop_s = time.perf_counter() - t_start
    epochs_done = epoch + 1
    with torch.no_grad():
        for b, p in zip(best, stack.parameters()):
            p.copy_(b)
    stack.eval()
    res = []
    pv = stack.readout(rv).argmax(-1)
    pt = stack.readout(readout(test)).argmax(-1) if test is not None else None
    yt = test.y[test.idx] if test is not None else None
    for r in range(runs):
        o = {"val_acc": accuracy(pv[r], yv), "val_f1": macro_f1(pv[r], yv, num_classes),
             "best_epoch": int(best_epoch[r]) + 1, "train_time_s": loop_s / runs,
             "epoch_time_s": train_s / runs / epochs_done, "epochs_run": int(min(stopped_at[r], epochs_done))}
        if test is not None:
            o["test_acc"], o["test_f1"] = accuracy(pt[r], yt), macro_f1(pt[r], yt, num_classes)
        res.append(o)
    return res
