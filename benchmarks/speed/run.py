"""Training speed on the Grocery structure: magkit's epochs against a dense-product bound and plain PyG, in one run.

    OMP_NUM_THREADS=1 PYTHONPATH=src python benchmarks/speed/run.py [--compare-src OTHER/src]
    OMP_NUM_THREADS=1 PYTHONPATH=src python benchmarks/speed/run.py --condensation [--compare-src OTHER/src]
    OMP_NUM_THREADS=1 PYTHONPATH=src python benchmarks/speed/run.py --all [--compare-src OTHER/src]   # all three

On ``grocery-semi:balanced`` (MAGB Grocery's structure and labels, generated text and image features) at the real
encoder widths (768 + 768) and at 128 + 128, hidden 256, one thread, it measures (median over a few epochs):

* ``bound``: the first layer's dense products alone, X W (forward) and Xᵀ G (its weight gradient), X the
  early-fusion input ``[N, d_text + d_image + 2]`` (GraphSAGE's first layer makes two such pairs, for W_l and
  W_r: its ratio is against twice the bound);
* ``pyg-gcn`` / ``pyg-sage``: the same 2-layer networks in plain PyG (``GCNConv(cached=True)``, ``SAGEConv``,
  ``F.dropout``, Adam): one training step;
* ``graphmnl-floor``: GraphMNL's dense products in one training step alone (its three first-layer projections
  with their weight gradients and the struct GraphSAGE's h x h products in both of its passes): the least a
  GraphMNL step can cost, so ``graphmnl-floor / gcn-early`` is the least the GraphMNL / gcn-early ratio can be;
* ``gcn-early``, ``sage-early``, ``graphmnl`` (default settings, hidden 256; GraphMNL's epochs after the
  warm-up, i.e. guided): one training step (``train``) and the whole epoch with its evaluation pass (``epoch``).

``--evaluation`` measures condensed-graph evaluation instead (:func:`magkit.condense.evaluate_condensed`: GCN, SGC
and GraphSAGE x 3 runs on S, selected on the real validation split) under its two protocols, the default
``standard`` one and the opt-in ``fast`` one: ``--eval-graphs`` condensed graphs (GCond-X, ratio 0.01, 50 epochs,
seeds 0, 1, ...) of ``grocery-semi:balanced`` at 128 + 128 are made once, then each is evaluated under each
protocol in alternating worker processes (the order flips from one graph to the next); it reports CPU seconds per
call and per backbone, each protocol's mean test accuracy and selected epochs, the runs whose selected epoch is
the same under both, and the ratio standard / fast, into ``evaluation.json`` and ``evaluation.md``.
``--eval-val-dtype`` sets the fast protocol's ``val_dtype`` (e.g. ``auto``: bfloat16 selecting validations where
the CPU has it natively).

``--condensation`` measures the gradient-matching condensers instead, on the inductive 1% cell of
``grocery-semi:balanced`` with ``{space: aligned, misaligned: 0.3}`` (``split="magb"``; condensation seed 0): for
``srgm``, ``gcond`` and ``gcond-x`` (each ``--cond-epochs`` epochs, validated every 10), the median CPU seconds of a
feature epoch and of a structure epoch (from the condenser's ``progress`` callback: the CPU time between two
epochs' records; each kind's first epoch and the epochs that ran a validation are left out), their ratio, and the
CPU time from just before :meth:`condense` to the record of the first validation whose accuracy reaches 86% of the
whole-graph GCN validation accuracy. That bar is measured in the run: :func:`magkit.condense.train_whole` (GCN, the
standard protocol, seeds 0 .. ``--whole-runs`` - 1, mean validation accuracy) on the current tree, as
``benchmarks/scripts/condense_bench.py``'s ``whole`` row. ``--cond-threads N`` runs the condensations on N torch
threads and adds the wall seconds to that bar (on a 2-core machine, ``--cond-threads 2`` is what a user gets with
torch's default threads). Each tree's condensers run in a worker process of their own; writes ``condensation.json``
and ``condensation.md``.

Times are CPU times of the process (``time.process_time``; the fit loop's epoch clock is pointed at it too), so
that a machine shared with other work slows the waiting, not the numbers; they are still noisy, so the results
are ratios of numbers measured in the same process: ``train / bound``, ``pyg / magkit`` and ``graphmnl /
gcn-early``. ``--compare-src`` runs the same measurements on another magkit
source tree in a second process (e.g. another release) and reports both, each under its version (``magkit`` and
the tree's short commit hash, or ``--label`` / ``--compare-label``). Writes ``results.json`` and ``results.md``
next to this script (``--out`` to change).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
WIDTHS = (768, 128)


class _CPUClock:
    """Stands in for the ``time`` module in :mod:`magkit.train.loop`: its epoch clock reads CPU time."""

    perf_counter = staticmethod(time.process_time)


def version_label(src: str | Path) -> str:
    """``magkit <short commit hash>`` of the git checkout holding ``src`` (with ``+local changes`` when its tracked
    files differ from that commit), else ``magkit <__version__>`` of the package found there."""
    src = Path(src).resolve()
    git = ["git", "-C", str(src)]
    try:
        sha = subprocess.run(git + ["rev-parse", "--short=7", "HEAD"], check=True, capture_output=True,
                             text=True).stdout.strip()
        dirty = subprocess.run(git + ["status", "--porcelain", "--untracked-files=no", "--", "."], check=True,
                               capture_output=True, text=True).stdout.strip()
        return f"magkit {sha}" + (" +local changes" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        init = src / "magkit" / "__init__.py"
        for line in init.read_text(encoding="utf-8").splitlines() if init.exists() else []:
            if line.startswith("__version__"):
                return "magkit " + line.split("=", 1)[1].strip().strip("\"'")
        return f"magkit at {src}"


def fast_val_dtype(given: str | None) -> str:
    """The ``val_dtype`` a fast-protocol ``evaluate_condensed`` call runs with: ``given``, else the protocol's
    default (:data:`magkit.condense.evaluate.FAST_OPTIONS`)."""
    from magkit.condense.evaluate import FAST_OPTIONS

    return given if given is not None else FAST_OPTIONS["val_dtype"]


def distinct_label(compare: str, this: str) -> str:
    """The compared tree's heading, told apart from this tree's when both name the same version (two clean
    checkouts of one commit): results are keyed by heading, so one would replace the other."""
    return compare if compare != this else f"{compare} (--compare-src)"


def command_line(argv: list[str]) -> str:
    """The command as recorded in ``results.md``: the ``--compare-src`` path (local to the machine that ran it)
    is written as ``OTHER/src``."""
    shown, hide = [], False
    for arg in argv:
        if hide:
            shown.append("OTHER/src")
            hide = False
        elif arg.startswith("--compare-src="):
            shown.append("--compare-src=OTHER/src")
        else:
            shown.append(arg)
            hide = arg == "--compare-src"
    return " ".join(["python", "benchmarks/speed/run.py"] + shown)


def _median_ms(fn, repeats: int, warm: int = 1) -> float:
    for _ in range(warm):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.process_time()
        fn()
        times.append(time.process_time() - t0)
    return 1000 * statistics.median(times)


def _bound(x, hidden: int, repeats: int) -> float:
    """X W and Xᵀ G, the first layer's dense products."""
    import torch

    w = torch.randn(hidden, x.shape[1]) * 0.01
    g = torch.randn(x.shape[0], hidden)

    def step():
        torch.nn.functional.linear(x, w)
        torch.mm(g.t(), x)

    return _median_ms(step, repeats)


def _graphmnl_floor(graph, hidden: int, repeats: int) -> float:
    """GraphMNL's dense products in one training step, nothing else: each modality's projection W_m x_m and the
    struct branch's Q [x_1 | ... | x_M | presence] with their weight gradients, and the struct GraphSAGE's first
    layer (h -> h, lin_l and lin_r) in its two passes (supervised, and guided on the detached input): 4 forward
    products, 4 weight gradients and 2 input gradients (supervised pass only) of ``[N, h] x [h, h]``."""
    import torch

    xs = [graph.feature(m) for m in graph.modalities]
    early = torch.cat(xs + [graph.modality_mask.float()], 1)
    n = early.shape[0]
    ws = [torch.randn(hidden, x.shape[1]) * 0.01 for x in xs + [early]]
    g = torch.randn(n, hidden)
    wh = torch.randn(hidden, hidden) * 0.01

    def step():
        for x, w in zip(xs + [early], ws):
            torch.nn.functional.linear(x, w)
            torch.mm(g.t(), x)
        for _ in range(4):
            torch.nn.functional.linear(g, wh)
        for _ in range(4):
            torch.mm(g.t(), g)
        for _ in range(2):
            torch.mm(g, wh)

    return _median_ms(step, repeats)


def _pyg(kind: str, graph, x, hidden: int, repeats: int) -> float:
    """One training step of a 2-layer PyG GCN (cached normalisation) or GraphSAGE (mean) on the early input."""
    import torch
    import torch.nn.functional as F
    from torch_geometric.nn import GCNConv, SAGEConv

    torch.manual_seed(0)
    c = graph.num_classes
    if kind == "gcn":
        convs = torch.nn.ModuleList([GCNConv(x.shape[1], hidden, cached=True), GCNConv(hidden, c, cached=True)])
    else:
        convs = torch.nn.ModuleList([SAGEConv(x.shape[1], hidden), SAGEConv(hidden, c)])
    opt = torch.optim.Adam(convs.parameters(), lr=0.01, weight_decay=5e-4)
    ei, y, idx = graph.edge_index, graph.y, graph.split_index("train")

    def step():
        h = F.dropout(x, 0.5, True)
        h = F.relu(convs[0](h, ei))
        h = F.dropout(h, 0.5, True)
        out = convs[1](h, ei)
        loss = F.cross_entropy(out[idx], y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()

    return _median_ms(step, repeats)


def _magkit(method: str, graph, hidden: int, epochs: int, skip: int, **params) -> dict:
    """Median training-step and whole-epoch (evaluation included) times of a fit, skipping ``skip`` epochs."""
    from magkit.methods import create
    from magkit.train import loop

    stamps = []
    est = create(method, seed=0, hidden=hidden, epochs=epochs, patience=None, **params)
    loop.time = _CPUClock
    try:
        t0 = time.process_time()
        est.fit(graph, progress=lambda record: stamps.append(time.process_time()))
    finally:
        loop.time = time
    ends = [t0] + stamps
    whole = [b - a for a, b in zip(ends[skip:], ends[skip + 1:])]
    train = est.history_.series("time")[skip:]
    return {"train": 1000 * statistics.median(train), "epoch": 1000 * statistics.median(whole),
            "best_val_acc": float(est.history_.best_score)}


def measure(hidden: int, epochs: int, repeats: int) -> dict:
    """Every measurement at both widths, in this process."""
    import torch

    torch.set_num_threads(1)
    from magkit.data import load_dataset
    from magkit.methods.base import GraphInputs

    out = {}
    for width in WIDTHS:
        graph = load_dataset("grocery-semi:balanced", dims=width)
        xs = {m: graph.feature(m) for m in graph.modalities}
        x = GraphInputs(xs=xs, present=graph.modality_mask, modalities=graph.modalities,
                        edge_index=graph.edge_index, num_nodes=graph.num_nodes).early_input()
        row = {"nodes": graph.num_nodes, "edges": int(graph.edge_index.shape[1]), "input_width": int(x.shape[1])}
        row["bound"] = _bound(x, hidden, repeats)
        row["graphmnl-floor"] = _graphmnl_floor(graph, hidden, repeats)
        row["pyg-gcn"] = _pyg("gcn", graph, x, hidden, repeats)
        row["pyg-sage"] = _pyg("sage", graph, x, hidden, repeats)
        row["gcn-early"] = _magkit("gcn-early", graph, hidden, epochs, 1)
        row["sage-early"] = _magkit("sage-early", graph, hidden, epochs, 1)
        # guided epochs: the guidance starts after one warm-up epoch
        row["graphmnl"] = _magkit("graphmnl", graph, hidden, epochs + 1, 2, warmup=1)
        row["bound-after"] = _bound(x, hidden, repeats)  # the bound again: how much the machine drifted
        out[str(width)] = row
        print(json.dumps({width: row}), file=sys.stderr, flush=True)
    return out


def ratios(m: dict) -> dict:
    r = {}
    for width, row in m.items():
        bound = 0.5 * (row["bound"] + row["bound-after"])
        r[width] = {
            "gcn_train_over_bound": row["gcn-early"]["train"] / bound,
            # GraphSAGE's first layer makes two such products: (D⁻¹A X) W_l and X W_r
            "sage_train_over_bound": row["sage-early"]["train"] / (2 * bound),
            "pyg_gcn_over_gcn": row["pyg-gcn"] / row["gcn-early"]["train"],
            "pyg_sage_over_sage": row["pyg-sage"] / row["sage-early"]["train"],
            "graphmnl_over_gcn_train": row["graphmnl"]["train"] / row["gcn-early"]["train"],
            "graphmnl_over_gcn_epoch": row["graphmnl"]["epoch"] / row["gcn-early"]["epoch"],
            # GraphMNL's dense products alone against a gcn-early step: the least GraphMNL / gcn can be
            "graphmnl_floor_over_gcn_train": row["graphmnl-floor"] / row["gcn-early"]["train"],
            "graphmnl_train_over_floor": row["graphmnl"]["train"] / row["graphmnl-floor"],
        }
    return r


def _table(name: str, m: dict, r: dict) -> list[str]:
    lines = [f"### {name}", "", "| width | bound ms | PyG GCN | PyG SAGE | gcn-early train / epoch | sage-early train / epoch "
             "| graphmnl train / epoch |", "|---|---|---|---|---|---|---|"]
    for row in m.values():
        def f(k: str, row: dict = row) -> str:
            return f"{row[k]['train']:.0f} / {row[k]['epoch']:.0f}"

        lines.append(f"| {row['input_width']} | {row['bound']:.0f}, {row['bound-after']:.0f} | {row['pyg-gcn']:.0f} | "
                     f"{row['pyg-sage']:.0f} | {f('gcn-early')} | {f('sage-early')} | {f('graphmnl')} |")
    lines += ["", "| width | gcn train / bound | sage train / (2 bound) | PyG GCN / gcn | PyG SAGE / sage | graphmnl / gcn "
              "(train) | graphmnl / gcn (epoch) | graphmnl floor / gcn (train) | graphmnl train / its floor |",
              "|---|---|---|---|---|---|---|---|---|"]
    for width, q in r.items():
        lines.append(f"| {m[width]['input_width']} | {q['gcn_train_over_bound']:.2f} | {q['sage_train_over_bound']:.2f} | "
                     f"{q['pyg_gcn_over_gcn']:.2f} | {q['pyg_sage_over_sage']:.2f} | {q['graphmnl_over_gcn_train']:.2f} | "
                     f"{q['graphmnl_over_gcn_epoch']:.2f} | {q['graphmnl_floor_over_gcn_train']:.2f} | "
                     f"{q['graphmnl_train_over_floor']:.2f} |")
    return lines + [""]


EVAL_BACKBONES = ("gcn", "sgc", "sage")
EVAL_DATA = "grocery-semi:balanced"
EVAL_WIDTH = 128


EVAL_PROTOCOLS = ("standard", "fast")


def eval_worker(path: str, runs: int, protocol: str, val_dtype: str | None = None) -> dict:
    """CPU seconds, mean test accuracy and selected epochs of one ``evaluate_condensed`` call per backbone on the
    condensed graph at ``path`` under ``protocol`` (``val_dtype`` given to the fast protocol if set)."""
    import torch

    torch.set_num_threads(1)
    from magkit.condense import CondensedGraph, evaluate_condensed, graph_views
    from magkit.data import load_dataset

    condensed = CondensedGraph.load(path)
    graph = load_dataset(EVAL_DATA, dims=EVAL_WIDTH)
    views = graph_views(graph)
    kw: dict = {} if protocol == "standard" else {"protocol": protocol}
    if val_dtype is not None and protocol == "fast":
        kw["val_dtype"] = val_dtype
    out = {}
    for b in EVAL_BACKBONES:
        t0 = time.process_time()
        res = evaluate_condensed(condensed, graph, [b], runs=runs, seed=0, views=views, **kw)[b]
        out[b] = {"s": time.process_time() - t0, "test_acc": res["test_acc"][0],
                  "runs_test_acc": [r["test_acc"] for r in res["runs"]],
                  "best_epochs": [r["best_epoch"] for r in res["runs"]]}
    return out


def evaluation(a, argv) -> None:
    """The ``--evaluation`` measurement (see the module docstring)."""
    import tempfile

    import torch

    torch.set_num_threads(1)
    from magkit.condense import make_condenser
    from magkit.data import load_dataset

    graph = load_dataset(EVAL_DATA, dims=EVAL_WIDTH)
    per: dict[str, list[dict]] = {k: [] for k in EVAL_PROTOCOLS}
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"), OMP_NUM_THREADS="1")
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(a.eval_graphs):
            cond = make_condenser("gcond-x", ratio=0.01, epochs=50, seed=i)
            path = cond.condense(graph).save(Path(tmp) / f"s{i}.safetensors")
            order = list(EVAL_PROTOCOLS) if i % 2 == 0 else list(EVAL_PROTOCOLS)[::-1]
            for protocol in order:
                cmd = [sys.executable, __file__, "--eval-worker", str(path), "--eval-runs", str(a.eval_runs),
                       "--eval-protocol", protocol]
                if a.eval_val_dtype:
                    cmd += ["--eval-val-dtype", a.eval_val_dtype]
                res = subprocess.run(cmd, env=env, cwd=REPO, check=True, stdout=subprocess.PIPE, text=True)
                per[protocol].append(json.loads(res.stdout.strip().splitlines()[-1]))
                print(protocol, f"S{i}", json.dumps(per[protocol][-1]), file=sys.stderr, flush=True)
    summary = {}
    for protocol, rows in per.items():
        summary[protocol] = {"s_per_call": statistics.mean(sum(r[b]["s"] for b in EVAL_BACKBONES) for r in rows)}
        for b in EVAL_BACKBONES:
            accs = [x for r in rows for x in r[b]["runs_test_acc"]]
            summary[protocol][b] = {"s": statistics.mean(r[b]["s"] for r in rows), "test_acc": statistics.mean(accs),
                                    "test_acc_std": statistics.stdev(accs) if len(accs) > 1 else 0.0,
                                    "best_epochs": [e for r in rows for e in r[b]["best_epochs"]]}
    std, fast = summary["standard"], summary["fast"]
    ratio = std["s_per_call"] / fast["s_per_call"]
    same = {b: sum(x == y for x, y in zip(std[b]["best_epochs"], fast[b]["best_epochs"])) for b in EVAL_BACKBONES}
    n_runs = a.eval_graphs * a.eval_runs
    from magkit.condense.batched import native_bfloat16

    native_bf16 = native_bfloat16(torch.device("cpu"))
    result = {"meta": {"dataset": EVAL_DATA, "width": EVAL_WIDTH, "graphs": a.eval_graphs, "runs": a.eval_runs,
                       "backbones": EVAL_BACKBONES, "threads": 1, "fast_val_dtype": fast_val_dtype(a.eval_val_dtype),
                       "native_bfloat16": native_bf16},
              "protocols": summary, "per_graph": per, "same_selected_epoch": same, "ratio": ratio}
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "evaluation.json").write_text(json.dumps(result, indent=1) + "\n")
    lines = ["# Condensed-graph evaluation speed: standard and fast protocols", "",
             f"`{' '.join(['python', 'benchmarks/speed/run.py'] + (argv if argv is not None else sys.argv[1:]))}`: "
             f"{EVAL_DATA} at {EVAL_WIDTH} + {EVAL_WIDTH}, {a.eval_graphs} condensed graphs (GCond-X, ratio 0.01, "
             f"50 epochs), {', '.join(EVAL_BACKBONES)} x {a.eval_runs} runs per call, one thread, mean CPU seconds "
             "per call; test accuracy: mean ± std over graphs x runs (percent); the fast protocol with its defaults "
             f"(eval_every 10, patience 10) and val_dtype {fast_val_dtype(a.eval_val_dtype)} (this CPU "
             f"{'has' if native_bf16 else 'has no'} native bfloat16).", "",
             "| protocol | s / call | " + " | ".join(f"{b} s | {b} test acc" for b in EVAL_BACKBONES) + " |",
             "|---|---|" + "---|---|" * len(EVAL_BACKBONES)]
    for protocol, row in summary.items():
        lines.append(f"| {protocol} | {row['s_per_call']:.2f} | " + " | ".join(
            f"{row[b]['s']:.2f} | {100 * row[b]['test_acc']:.2f} ± {100 * row[b]['test_acc_std']:.2f}"
            for b in EVAL_BACKBONES) + " |")
    lines += ["", f"standard / fast: **{ratio:.2f}x**; the same selected epoch under both: "
              + ", ".join(f"{b} {same[b]} of {n_runs} runs" for b in EVAL_BACKBONES), ""]
    (out / "evaluation.md").write_text("\n".join(lines))
    print("\n".join(lines))


COND_DATA = "grocery-semi:balanced"
COND_DATA_KW = {"split": "magb", "space": "aligned", "misaligned": 0.3}
COND_SETTING = "inductive"
COND_RATIO = 0.01
COND_METHODS = ("srgm", "gcond", "gcond-x")
COND_SHARE = 0.86


def epoch_medians(trace: list[dict]) -> dict[str, float | None]:
    """Median CPU seconds of a feature epoch and of a structure epoch in a condensation ``trace`` (one dict per
    epoch: ``s``, its CPU seconds; ``structure_step``; ``val_acc`` when it ran a validation). Each kind's first
    epoch (warm-up) and the epochs that validated are left out; :obj:`None` for a kind with no epoch left."""
    out: dict[str, float | None] = {}
    for kind, flag in (("feature", False), ("structure", True)):
        kept = [r["s"] for r in [r for r in trace if bool(r["structure_step"]) == flag][1:] if "val_acc" not in r]
        out[kind] = statistics.median(kept) if kept else None
    return out


def time_to_threshold(trace: list[dict], threshold: float, clock: str = "cpu") -> tuple[float, int] | None:
    """``(seconds, epoch)`` at the first validated epoch of ``trace`` whose ``val_acc`` reaches ``threshold``
    (``clock``: ``cpu``, CPU seconds since the condensation started, at that epoch's record, or ``wall``, wall
    seconds; ``epoch``: 1-based), or :obj:`None` when no validation reaches it."""
    for r in trace:
        if "val_acc" in r and r["val_acc"] >= threshold:
            return r[clock], r["epoch"]
    return None


def cond_worker(epochs: int, threads: int = 1) -> dict:
    """Every condenser of :data:`COND_METHODS` on the inductive 1% cell, in this process: each one's per-epoch
    trace (CPU seconds of the epoch, CPU and wall seconds since :meth:`condense` was called, structure or feature
    epoch, validation accuracy when validated) and its best validation accuracy; torch runs ``threads`` threads."""
    import torch

    torch.set_num_threads(threads)
    from magkit.condense import make_condenser
    from magkit.data import load_dataset

    graph = load_dataset(COND_DATA, **COND_DATA_KW)
    out = {}
    for method in COND_METHODS:
        trace: list[dict] = []
        last = [0.0]

        def record(rec: dict, trace: list[dict] = trace, last: list[float] = last) -> None:
            now = time.process_time()
            row = {"epoch": int(rec["epoch"]), "structure_step": bool(rec["structure_step"]),
                   "s": now - last[0], "cpu": now - last[1], "wall": time.perf_counter() - last[2]}
            if "val_acc" in rec:
                row["val_acc"] = float(rec["val_acc"])
            trace.append(row)
            last[0] = now

        cond = make_condenser(method, ratio=COND_RATIO, seed=0, setting=COND_SETTING, epochs=epochs, eval_every=10)
        last[0] = time.process_time()
        last += [last[0], time.perf_counter()]
        condensed = cond.condense(graph, progress=record)
        out[method] = {"trace": trace, "n_syn": int(condensed.num_nodes)}
        print(method, json.dumps(epoch_medians(trace)), file=sys.stderr, flush=True)
    return out


def whole_bar(runs: int) -> dict:
    """The whole-graph GCN bar of the condensation cell: :func:`magkit.condense.train_whole` (standard protocol)
    at seeds 0 .. ``runs`` - 1 on the real training graph; mean validation accuracy and CPU seconds."""
    import torch

    torch.set_num_threads(1)
    from magkit.condense import graph_views, train_whole
    from magkit.data import load_dataset

    graph = load_dataset(COND_DATA, **COND_DATA_KW)
    views = graph_views(graph, COND_SETTING)
    t0 = time.process_time()
    vals = [float(train_whole(views, "gcn", num_classes=graph.num_classes, seed=r)["val_acc"]) for r in range(runs)]
    return {"val_acc": statistics.mean(vals), "runs_val_acc": vals, "s": time.process_time() - t0}


def threads_text(n: int) -> str:
    return "one thread" if n == 1 else f"{n} threads"


def cond_summary(res: dict, threshold: float) -> dict:
    """Per condenser of a worker's result: epoch medians, structure / feature, time to ``threshold``, best val."""
    rows = {}
    for method, r in res.items():
        med = epoch_medians(r["trace"])
        hit = time_to_threshold(r["trace"], threshold)
        wall = time_to_threshold(r["trace"], threshold, "wall") if "wall" in r["trace"][-1] else None
        vals = [t["val_acc"] for t in r["trace"] if "val_acc" in t]
        rows[method] = {"n_syn": r["n_syn"], "feature_s": med["feature"], "structure_s": med["structure"],
                        "structure_over_feature": (med["structure"] / med["feature"]
                                                   if med["structure"] and med["feature"] else None),
                        "to_threshold_s": hit[0] if hit else None, "to_threshold_epoch": hit[1] if hit else None,
                        "to_threshold_wall_s": wall[0] if wall else None,
                        "best_val_acc": max(vals) if vals else None, "total_s": r["trace"][-1]["cpu"]}
    return rows


def _cond_table(name: str, rows: dict, wall: bool = False) -> list[str]:
    """One tree's table; ``wall``: with the wall seconds to the bar (runs on more than one thread)."""
    def f(x, fmt: str) -> str:
        return "–" if x is None else format(x, fmt)

    share = f"{100 * COND_SHARE:.0f}%"
    head = f"| condenser | n' | feature epoch s | structure epoch s | structure / feature | to {share} of whole s (epoch) "
    head += f"| to {share} of whole, wall s " if wall else ""
    lines = [f"### {name}", "", head + "| best val acc | condense s |", "|---" * (9 if wall else 8) + "|"]
    for method, r in rows.items():
        hit = "not reached" if r["to_threshold_s"] is None else f"{r['to_threshold_s']:.1f} ({r['to_threshold_epoch']})"
        hit += f" | {f(r.get('to_threshold_wall_s'), '.1f')}" if wall else ""
        lines.append(f"| {method} | {r['n_syn']} | {f(r['feature_s'], '.3f')} | {f(r['structure_s'], '.3f')} | "
                     f"{f(r['structure_over_feature'], '.1f')} | {hit} | {f(r['best_val_acc'] and 100 * r['best_val_acc'], '.2f')} "
                     f"| {r['total_s']:.1f} |")
    return lines + [""]


def condensation(a, argv: list[str]) -> None:
    """The ``--condensation`` measurement (see the module docstring)."""
    import torch
    import torch_geometric

    trees = []
    if a.compare_src:
        trees.append((a.compare_label or version_label(a.compare_src), Path(a.compare_src).resolve()))
    trees.append((a.label or version_label(REPO / "src"), REPO / "src"))
    if len(trees) == 2:
        trees[0] = (distinct_label(trees[0][0], trees[1][0]), trees[0][1])
    raw = {}
    for label, src in trees:
        env = dict(os.environ, PYTHONPATH=str(src), OMP_NUM_THREADS=str(a.cond_threads))
        cmd = [sys.executable, __file__, "--cond-worker", "--cond-epochs", str(a.cond_epochs),
               "--cond-threads", str(a.cond_threads)]
        res = subprocess.run(cmd, env=env, cwd=REPO, check=True, stdout=subprocess.PIPE, text=True)
        raw[label] = json.loads(res.stdout.strip().splitlines()[-1])
        print(label, "done", file=sys.stderr, flush=True)
    bar = whole_bar(a.whole_runs)
    threshold = COND_SHARE * bar["val_acc"]
    rows = {label: cond_summary(r, threshold) for label, r in raw.items()}
    meta = {"machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(), "threads": a.cond_threads,
            "torch": torch.__version__, "torch_geometric": torch_geometric.__version__, "dataset": COND_DATA,
            "dataset_kwargs": COND_DATA_KW, "setting": COND_SETTING, "ratio": COND_RATIO, "seed": 0,
            "epochs": a.cond_epochs, "eval_every": 10, "whole": bar, "share": COND_SHARE, "threshold": threshold,
            "command": command_line(argv)}
    result = {"meta": meta, "runs": {k: {"summary": rows[k], "raw": raw[k]} for k in raw}}
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "condensation.json").write_text(json.dumps(result, indent=1) + "\n")
    runs_val = ", ".join(f"{100 * v:.2f}" for v in bar["runs_val_acc"])
    lines = ["# Condensation speed: gradient-matching epochs and time to accuracy", "",
             f"`{command_line(argv)}`" + (f" (OTHER/src: {trees[0][0]})" if a.compare_src else "") + ": "
             f"{meta['machine']}, {meta['cpus']} CPUs, {threads_text(a.cond_threads)}, torch {meta['torch']}, "
             f"PyG {meta['torch_geometric']}; "
             f"{COND_DATA} with space aligned, misaligned 0.3, inductive, ratio {COND_RATIO}, seed 0, "
             f"{a.cond_epochs} epochs validated every 10. Process CPU seconds: median feature and structure epoch "
             "(each kind's first epoch and the validated epochs left out), and the time from the start of "
             f"`condense` to the first validation reaching {100 * COND_SHARE:.0f}% of the whole-graph GCN "
             f"validation accuracy (`train_whole`, GCN, seeds 0 to {a.whole_runs - 1}: {runs_val}, mean "
             f"{100 * bar['val_acc']:.2f}; bar {100 * threshold:.2f}), validation included"
             + (", and the same in wall seconds" if a.cond_threads > 1 else "") + ". Each tree ran in a "
             "process of its own, one after the other.", ""]
    for label, r in rows.items():
        lines += _cond_table(label, r, wall=a.cond_threads > 1)
    if len(rows) == 2:
        (old, ro), (new, rn) = rows.items()
        parts = []
        for method in COND_METHODS:
            for key, what in (("feature_s", "feature epoch"), ("structure_s", "structure epoch"),
                              ("to_threshold_s", f"to {100 * COND_SHARE:.0f}%")):
                x, y = ro[method][key], rn[method][key]
                if x and y:
                    parts.append(f"{method} {what} {x / y:.2f}x")
        lines += [f"CPU time of {old} over {new}: " + ", ".join(parts) + ".", ""]
    (out / "condensation.md").write_text("\n".join(lines))
    print("\n".join(lines))


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--epochs", type=int, default=6, help="epochs per fit (the first one is not timed)")
    p.add_argument("--repeats", type=int, default=5, help="timed repeats of the bound and PyG steps")
    p.add_argument("--compare-src", default=None, help="another magkit source tree to measure in a second process")
    p.add_argument("--label", default=None, help="heading of this tree's run (default: magkit <short commit hash>)")
    p.add_argument("--compare-label", default=None,
                   help="heading of the --compare-src run (default: magkit <its short commit hash>)")
    p.add_argument("--out", default=str(HERE))
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--all", action="store_true",
                   help="the whole suite: training (results.md), --evaluation and --condensation, one after another")
    p.add_argument("--evaluation", action="store_true",
                   help="measure condensed-graph evaluation, standard against fast protocol")
    p.add_argument("--eval-graphs", type=int, default=3, help="condensed graphs evaluated (--evaluation)")
    p.add_argument("--eval-runs", type=int, default=3, help="runs per backbone (--evaluation)")
    p.add_argument("--eval-val-dtype", default=None, choices=("float32", "auto", "bfloat16"),
                   help="val_dtype of the fast protocol's evaluate_condensed calls (--evaluation; default: the "
                        "fast protocol's, auto)")
    p.add_argument("--condensation", action="store_true",
                   help="measure the gradient-matching condensers' epochs and time to accuracy")
    p.add_argument("--cond-epochs", type=int, default=60, help="epochs of each condensation (--condensation)")
    p.add_argument("--whole-runs", type=int, default=3,
                   help="whole-graph GCN runs averaged into the accuracy bar (--condensation)")
    p.add_argument("--cond-threads", type=int, default=1,
                   help="torch threads of the condensations (--condensation; > 1 adds the wall time to the bar)")
    p.add_argument("--cond-worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--eval-protocol", default="standard", choices=EVAL_PROTOCOLS, help=argparse.SUPPRESS)
    p.add_argument("--eval-worker", default=None, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.eval_worker:
        print(json.dumps(eval_worker(a.eval_worker, a.eval_runs, a.eval_protocol, a.eval_val_dtype)))
        return
    if a.evaluation:
        evaluation(a, argv)
        return
    if a.cond_worker:
        print(json.dumps(cond_worker(a.cond_epochs, a.cond_threads)))
        return
    if a.condensation:
        condensation(a, list(argv if argv is not None else sys.argv[1:]))
        return
    if a.worker:
        print(json.dumps(measure(a.hidden, a.epochs, a.repeats)))
        return
    argv = list(argv if argv is not None else sys.argv[1:])
    training(a, argv)
    if a.all:
        evaluation(a, argv)
        condensation(a, argv)


def training(a, argv: list[str]) -> None:
    """The training measurement (the default mode; see the module docstring)."""
    label = a.label or version_label(REPO / "src")
    runs = {}
    if a.compare_src:
        compare_label = distinct_label(a.compare_label or version_label(a.compare_src), label)
        env = dict(os.environ, PYTHONPATH=str(Path(a.compare_src).resolve()), OMP_NUM_THREADS="1")
        cmd = [sys.executable, __file__, "--worker", "--hidden", str(a.hidden), "--epochs", str(a.epochs),
               "--repeats", str(a.repeats)]
        res = subprocess.run(cmd, env=env, cwd=REPO, check=True, stdout=subprocess.PIPE, text=True)
        runs[compare_label] = json.loads(res.stdout.strip().splitlines()[-1])
    runs[label] = measure(a.hidden, a.epochs, a.repeats)
    import torch
    import torch_geometric

    meta = {"machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(), "threads": 1,
            "torch": torch.__version__, "torch_geometric": torch_geometric.__version__, "hidden": a.hidden,
            "epochs": a.epochs, "dataset": "grocery-semi:balanced"}
    result = {"meta": meta, "runs": {k: {"ms": v, "ratios": ratios(v)} for k, v in runs.items()}}
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(result, indent=1) + "\n")
    lines = ["# Training speed on the Grocery structure", "",
             f"`{command_line(argv)}`"
             + (f" (OTHER/src: {compare_label})" if a.compare_src else "") + ": "
             f"{meta['cpus']} CPUs, one thread, torch {meta['torch']}, PyG {meta['torch_geometric']}, hidden {a.hidden}, "
             "median CPU milliseconds per training step (train) and per epoch with its evaluation pass (epoch); bound = "
             "the first layer's X W and Xᵀ G, measured before and after the fits.", ""]
    for k, v in result["runs"].items():
        lines += _table(k, v["ms"], v["ratios"])
    (out / "results.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
