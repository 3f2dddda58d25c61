"""R fresh runs of one backbone trained at once on a condensed graph S and read out on the real scored nodes only.

:func:`train_runs` is what :func:`~magkit.condense.evaluate.evaluate_condensed` runs under its opt-in ``fast``
protocol for the backbones in :data:`BATCHED` (GCN, Kipf & Welling 2017; SGC, Wu et al. 2019; GraphSAGE, Hamilton
et al. 2017; MLP); the others, and every backbone under the default ``standard`` protocol, train one run at a
time through :func:`~magkit.condense.evaluate.train_model`. The protocol is the same, run per run, up to float
rounding (stacking reorders the sums, so a run can select another epoch than its lone run):

* **runs stacked.** Run r's weights are the slices ``[r]`` of tensors with a leading run dimension
  ``W_l ∈ R^{R × d_in × d_out}``. Run r is initialised as a lone run with seed ``seed + r`` (the same modules
  built under ``torch.manual_seed(seed + r)``, their weights copied in), and its dropout masks are drawn from its
  own generator, which continues the global generator's state after that initialisation (on CPU the weights and
  masks are those of the lone run; on CUDA a lone run initialises and draws on the device's generator, so the
  draws differ there, with the same distributions). The loss is Σ_r CE_r, so run r's gradient is its own (computed by the chain rule
  written out, :meth:`_RunStack.gradients`); Adam and weight decay act elementwise. Run r therefore follows a
  lone run's trajectory up to float rounding (tested: the same selected epochs), one training step serves all
  runs (batched products), and a validation's sparse products read all runs at once.
* **selection.** After every ``eval_every``-th epoch and the last, each run still training is scored on the
  validation nodes and keeps its best state (ties keep the earlier epoch); with ``patience`` P a run stops after P
  validations without improvement: it is no longer validated and gets no gradient (Adam's step still moves
  its slice through momentum and weight decay; that slice is never read, and its selected state is restored at
  the end). The test view is read once per run, with its selected state.
* **readout on the scored nodes only** (:class:`Readout`). With fields F_0 = the scored nodes and F_{j+1} = F_j ∪
  the in-neighbours of F_j, an L-layer network's outputs on F_0 need layer l on F_{L-l} alone. The first layer
  of GCN and GraphSAGE is linear in a fixed input: (Â X) W_1 = Â (X W_1) and (D⁻¹A X) W_l, so Â X (D⁻¹A X) is
  propagated once per view and only its rows F_{L-1} are multiplied by the weights; SGC reads the rows F_0 of
  its precomputed Â^K X, the MLP the rows F_0 of X. The logits equal the whole-view forward's up to float
  rounding (tested to 1e-5).
* **precision of the selecting validations.** By default (``val_dtype="float32"``) they are float32: exact, the
  same selected epochs on every machine. Opt-in, ``val_dtype="bfloat16"``, or ``"auto"`` where the device
  multiplies bfloat16 natively (:func:`native_bfloat16`), runs the first layer and the second layer's dense
  product, the bulk of a validation, in bfloat16 with float32 accumulation on CPU (the first product 2.8x
  faster on an AVX-512 BF16 CPU); the reported accuracies of the selected states are read in float32. SGC, one
  linear layer, always validates in float32. On 5 condensed graphs x GCN, SGC, GraphSAGE x 5 runs
  (docs/condensation.md) bfloat16 selected the float32 epoch in 74 of 75 runs (the 25 SGC runs equal by
  construction), validation accuracies 0.010 points apart on average, mean test accuracy +0.003 points. The
  selected epochs, hence the reported accuracies, then depend on the hardware (with ``"auto"``: on whether it
  has native bfloat16).
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
#: the ``val_dtype`` values :func:`train_runs` accepts
VAL_DTYPES = ("auto", "float32", "bfloat16")


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
        subs (list[Tensor]): Â[F_{L-l}, F_{L-l+1}] for layers l = 2..L, sparse CSR (F_{L-l} is the head of
            F_{L-l+1}: GraphSAGE's root terms are its first rows).
    """

    def __init__(self, kind: str, view, num_layers: int = 2) -> None:
        if kind not in BATCHED:
            raise ConfigError(f"backbone: {kind!r}; allowed: {', '.join(BATCHED)}")
        self.kind = kind
        idx, n = view.idx, view.num_nodes
        self.subs: list[Tensor] = []
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
        first = fields[-1]
        prop = spmm(adj, view.x.float())  # Â X or D⁻¹A X over the view, once
        self.x0 = prop[first] if kind == "gcn" else torch.cat([prop[first], view.x[first].float()], dim=1)

    def buffer(self, dtype: torch.dtype, runs: int, width: int) -> Tensor:
        """An uninitialised ``[runs, m, width]`` tensor of ``dtype`` for the first-layer outputs: the leading
        ``runs`` slices of one kept tensor per (dtype, width), so fewer runs (some stopped) allocate nothing."""
        store = self.__dict__.setdefault("_buffers", {})
        key = (dtype, width)
        if key not in store or store[key].size(0) < runs:
            store[key] = torch.empty(runs, self.x0.size(0), width, dtype=dtype, device=self.x0.device)
        return store[key][:runs]

    def low(self) -> Tensor:
        """``x0`` in bfloat16 (made on first use, kept)."""
        if getattr(self, "_low", None) is None:
            self._low = self.x0.to(torch.bfloat16)
        return self._low


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

    def _mask(self, shape: torch.Size, gens: list[torch.Generator], device: torch.device) -> Tensor | None:
        """The scaled dropout masks ``[R', n, k]`` of the runs whose generators are ``gens`` (None without
        dropout): run r's is drawn from ``gens[r]`` as :func:`magkit.functional.ops.dropout` draws it (8 random
        bytes per 64-bit word, kept where the byte >= round(256 p), kept entries 256 / (256 - round(256 p)))."""
        threshold = int(round(self.dropout * 256))
        if not self.training or threshold <= 0:
            return None
        n = shape[0] * shape[1]
        mask = torch.empty(len(gens), *shape, device=device)
        for r, g in enumerate(gens):
            words = torch.randint(-(2**63), 2**63 - 1, ((n + 7) // 8,), dtype=torch.int64, device=device, generator=g)
            torch.ge(words.view(torch.uint8)[:n].view(shape), threshold, out=mask[r])
        return mask.mul_(256.0 / (256 - threshold))

    def _drop(self, h: Tensor, gens: list[torch.Generator]) -> Tensor:
        """Inverted dropout with run r's mask from ``gens[r]`` (:meth:`_mask`); ``h`` is ``[n, k]`` (shared by the
        runs) or ``[R', n, k]``."""
        mask = self._mask(h.shape[-2:], gens, h.device)
        if mask is None:
            return h if h.dim() == 3 else h.expand(len(gens), *h.shape)
        return mask * h

    def gradients(self, x: Tensor, adj: Tensor | None, y: Tensor, gens: list[torch.Generator],
                  runs: Tensor | None = None) -> None:
        """Set ``.grad`` of every stacked weight to the gradient of Σ_r CE_r (each run's mean cross-entropy on
        S's ``n`` nodes, labels ``y``) for the runs ``runs`` (default: all; zero for the others), by the chain
        rule written out: the same values as autograd through :meth:`forward` up to float rounding (tested), at
        a fraction of a tiny graph's autograd bookkeeping. Per layer, a = dropout(h), and z = Â a W + b (GCN),
        (Â a) W_l + b + a W_r (GraphSAGE) or a W + b (SGC, MLP); ∂L/∂z_L = (softmax(z_L) − onehot(y)) / n."""
        sel = (lambda p: p) if runs is None else (lambda p: p[runs])
        with torch.no_grad():
            h, saved = x, []
            last = len(self.w) - 1
            for i in range(len(self.w)):
                w, b = sel(self.w[i]), sel(self.b[i])[:, None]
                mask = self._mask(h.shape[-2:], gens, h.device)
                a = (mask * h) if mask is not None else (h if h.dim() == 3 else h.expand(len(gens), *h.shape))
                q = None
                if self.kind == "gcn":
                    z = torch.baddbmm(b, adj.expand(a.size(0), -1, -1), torch.bmm(a, w))
                elif self.kind == "sage":
                    q = adj @ a
                    z = torch.baddbmm(b, q, w).baddbmm_(a, sel(self.root[i]))
                else:
                    z = torch.baddbmm(b, a, w)
                saved.append((a, q, mask))
                if i < last:
                    h = z.relu_()  # z itself is not needed again: ReLU's gradient reads h > 0
                    saved[-1] += (h,)
            dz = torch.softmax(z, dim=-1)
            dz[:, torch.arange(y.numel(), device=y.device), y] -= 1.0
            dz /= y.numel()
            grads: dict[int, Tensor] = {}
            adj_t = adj.T if adj is not None else None
            for i in range(last, -1, -1):
                a, q, mask = saved[i][:3]
                grads[id(self.b[i])] = dz.sum(1)
                if self.kind == "gcn":
                    dp = adj_t @ dz
                    grads[id(self.w[i])] = torch.bmm(a.transpose(1, 2), dp)
                    da = torch.bmm(dp, sel(self.w[i]).transpose(1, 2)) if i > 0 else None
                elif self.kind == "sage":
                    grads[id(self.w[i])] = torch.bmm(q.transpose(1, 2), dz)
                    grads[id(self.root[i])] = torch.bmm(a.transpose(1, 2), dz)
                    da = (adj_t @ torch.bmm(dz, sel(self.w[i]).transpose(1, 2))).baddbmm_(
                        dz, sel(self.root[i]).transpose(1, 2)) if i > 0 else None
                else:
                    grads[id(self.w[i])] = torch.bmm(a.transpose(1, 2), dz)
                    da = torch.bmm(dz, sel(self.w[i]).transpose(1, 2)) if i > 0 else None
                if i > 0:
                    if mask is not None:
                        da.mul_(mask)
                    dz = da.mul_(saved[i - 1][3] > 0)
            for p in self.parameters():
                g = grads[id(p)]
                if runs is None:
                    p.grad = g
                else:
                    p.grad = torch.zeros_like(p)
                    p.grad[runs] = g

    def forward(self, x: Tensor, adj: Tensor | None, gens: list[torch.Generator], runs: Tensor | None = None) -> Tensor:
        """Logits ``[R', n, C]`` on S of the runs ``runs`` (default: all; ``gens`` are theirs): ``x [n, d]``,
        ``adj`` S's dense ``[n, n]`` structure (``None``: MLP, SGC)."""
        sel = (lambda p: p) if runs is None else (lambda p: p[runs])
        h = x
        last = len(self.w) - 1
        for i in range(len(self.w)):
            w, b = sel(self.w[i]), sel(self.b[i])[:, None]
            h = self._drop(h, gens)  # [R', n, k]
            if self.kind == "gcn":
                h = adj @ torch.bmm(h, w) + b
            elif self.kind == "sage":
                h = torch.bmm(adj @ h, w) + b + torch.bmm(h, sel(self.root[i]))
            else:
                h = torch.bmm(h, w) + b
            if i < last:
                h = F.relu(h)
        return h

    @staticmethod
    def _sparse(sub: Tensor, z: Tensor) -> Tensor:
        """``sub [m', m]`` times every run's ``z [R, m, k]`` as one sparse product at width R k: ``[R, m', k]``."""
        r, m, k = z.shape
        return spmm(sub, z.transpose(0, 1).reshape(m, r * k)).view(-1, r, k).transpose(0, 1)

    @torch.no_grad()
    def readout(self, ro: Readout, runs: Tensor | None = None, dtype: torch.dtype = torch.float32) -> Tensor:
        """Logits ``[R', |F_0|, C]`` of the runs ``runs`` (default: all) on a :class:`Readout`'s scored nodes.

        The first layer is run r's ``x0 [m, d] × W_1[r]`` into a kept ``[R', m, h]`` output (bias added, ReLU in
        place); a later layer multiplies by its weights first (GCN: Â_sub (H W); GraphSAGE: Â_sub (H W_l) +
        H_root W_r) so that its sparse product reads all runs at once at the output width. ``dtype``
        ``torch.bfloat16`` (a network of two layers or more): the first layer and the second layer's dense
        product run in bfloat16 (float32 accumulation inside each product), whose output is float32 again before
        the sparse product; everything else is float32."""
        sel = (lambda p: p) if runs is None else (lambda p: p[runs])
        w = sel(self.w[0])
        if self.kind == "sage":
            w = torch.cat([w, sel(self.root[0])], dim=1)
        r, _, k = w.shape
        b = sel(self.b[0])[:, None]
        if dtype == torch.bfloat16 and len(self.w) > 1:
            low, x, wl = ro.buffer(torch.bfloat16, r, k), ro.low(), w.to(torch.bfloat16)
            for j in range(r):
                torch.mm(x, wl[j], out=low[j])  # a fresh [R, m, h] output would be page-faulted in every call
            h = low.add_(b.to(torch.bfloat16))
        else:
            h = ro.buffer(torch.float32, r, k)
            for j in range(r):
                torch.addmm(b[j], ro.x0, w[j], out=h[j])

        def mul(a: Tensor, v: Tensor) -> Tensor:  # a's precision in, float32 out
            return torch.bmm(a, v.to(a.dtype)).float()

        for i in range(1, len(self.w)):
            h = h.relu_()
            w, b = sel(self.w[i]), sel(self.b[i])[:, None]
            if self.kind == "gcn":
                h = self._sparse(ro.subs[i - 1], mul(h, w)) + b
            elif self.kind == "sage":  # F_{j} is the head of F_{j+1}: its rows are the root terms
                sub = ro.subs[i - 1]
                h = self._sparse(sub, mul(h, w)) + b + mul(h[:, : sub.size(0)], sel(self.root[i]))
            else:  # MLP: the scored rows only
                h = mul(h, w) + b
        return h if len(self.w) > 1 else h.clone()  # a one-layer network's logits are the kept output


def native_bfloat16(device: torch.device | str) -> bool:
    """Whether ``device`` multiplies bfloat16 matrices natively (CPU: AVX-512 BF16 or AMX; CUDA: compute
    capability 8.0 or higher), i.e. faster than float32; elsewhere bfloat16 products are emulated."""
    device = torch.device(device)
    if device.type == "cuda":
        return bool(torch.cuda.is_bf16_supported(including_emulation=False))
    if device.type == "cpu":
        checks = [getattr(torch.cpu, n, None) for n in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
        return any(bool(c()) for c in checks if c is not None)
    return False


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
    val_dtype: str = "float32",
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
        val_dtype: the input precision of the first layer and the second layer's dense product in the
            validations that select the epochs (networks of two layers or more): ``"float32"`` (exact, machine
            independent), ``"bfloat16"`` (float32 accumulation on CPU), or ``"auto"``: bfloat16 where the device
            multiplies it natively (:func:`native_bfloat16`), else float32 (default: ``"float32"``). The
            reported ``val_acc`` / ``test_acc`` of the selected states are always read in float32; the selected
            epochs may differ between ``"bfloat16"`` and ``"float32"``, so with ``"auto"`` or ``"bfloat16"`` the
            results depend on the hardware.

    Returns:
        One dict per run with ``val_acc``, ``val_f1``, ``best_epoch`` (1-based), ``epochs_run``,
        ``train_time_s`` and ``epoch_time_s`` (the run's share of the batch: its time / R) and, with ``test``,
        ``test_acc``, ``test_f1``.
    """
    from .evaluate import _build

    if backbone not in BATCHED:
        raise ConfigError(f"backbone: {backbone!r}; allowed: {', '.join(BATCHED)}")
    if epochs < 1:
        raise ConfigError(f"epochs: {epochs}; allowed: >= 1")
    if eval_every < 1:
        raise ConfigError(f"eval_every: {eval_every}; allowed: >= 1")
    if not 0.0 <= dropout_p < 1.0:
        raise ConfigError(f"dropout_p: {dropout_p}; allowed: 0 <= dropout_p < 1")
    if runs < 1:
        raise ConfigError(f"runs: {runs}; allowed: >= 1")
    if patience is not None and patience < 1:
        raise ConfigError(f"patience: {patience}; allowed: >= 1 validations or None")
    if val_dtype not in VAL_DTYPES:
        raise ConfigError(f"val_dtype: {val_dtype!r}; allowed: {', '.join(VAL_DTYPES)}")
    dev = x.device
    readouts = {} if readouts is None else readouts
    low = torch.bfloat16 if val_dtype == "bfloat16" or (val_dtype == "auto" and native_bfloat16(dev)) else torch.float32

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
        # a stopped run keeps its selected state: only the runs still validated are trained
        on = None if bool(active.all()) else active.nonzero().flatten()
        stack.gradients(inp, adj, y, gens if on is None else [gens[r] for r in on.tolist()],
                        None if on is None else on.to(dev))
        opt.step()
        train_s += time.perf_counter() - t0
        if not (epoch % eval_every == eval_every - 1 or epoch == epochs - 1):
            continue
        stack.eval()
        on = active.nonzero().flatten()
        pred = stack.readout(rv, on.to(dev), low).argmax(-1)
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
