"""Condensation benchmark: every condenser at three budgets on Grocery structure with generated features.

Regenerate (resumable: finished cells are read back from rows.jsonl and skipped):

    python benchmarks/scripts/condense_bench.py                 # the full grid
    python benchmarks/scripts/condense_bench.py --shard 0/2     # half of it (run 0/2 and 1/2 in parallel)
    python benchmarks/scripts/condense_bench.py --render-only   # tables and plots from the rows so far

Writes benchmarks/condense/{rows.jsonl, results.md, results.json, convergence.png}. Every cell: condense once
(seed 0 unless --seeds), record wall time, peak memory, edge density; evaluate the condensed graph with GCN
(``--runs`` fresh models, selected on the real validation split) and, at the 1% budget, across
architectures. ``whole`` trains on the full training graph with the same protocol.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "benchmarks" / "condense"
DATASETS = {
    "balanced-aligned": ("grocery-semi:balanced", {"space": "aligned", "misaligned": 0.3}),
    "text-dominant-aligned": ("grocery-semi:text-dominant", {"space": "aligned", "misaligned": 0.3}),
    # separate text and image spaces (not in the default grid: --data balanced-separate)
    "balanced-separate": ("grocery-semi:balanced", {}),
    # MM-Graph's / the official SR-GM code's protocol: condense from the train-induced subgraph, test on the
    # test-induced subgraph (the setting of the official code's cost yardstick)
    "balanced-aligned-inductive": ("grocery-semi:balanced", {"space": "aligned", "misaligned": 0.3}, "inductive"),
}


DEFAULT_DATA = ("balanced-aligned", "text-dominant-aligned", "balanced-aligned-inductive")


def setting_of(d):
    return DATASETS[d][2] if len(DATASETS[d]) > 2 else "transductive"
RATIOS = (0.005, 0.01, 0.02)
METHODS = ("random", "herding", "kcenter", "gcond-x", "gcond", "srgm", "srgm-no-decoupling", "srgm-no-damping")
CROSS = ("sgc", "sage", "appnp", "gat", "cheb", "mlp")
CROSS_METHODS = ("random", "herding", "gcond-x", "gcond", "srgm")  # evaluated across architectures at 1% (2 runs)


def cells(datasets, ratios, methods, seeds):
    for d in datasets:
        yield {"data": d, "method": "whole", "ratio": 1.0, "seed": 0}
        for r in (ratios if d not in ("balanced-separate", "balanced-aligned-inductive") else [x for x in ratios if x == 0.01]):
            for m in methods:
                for s in seeds:
                    yield {"data": d, "method": m, "ratio": r, "seed": s}


def key(c):
    return f"{c['data']}|{c['method']}|{c['ratio']}|{c['seed']}"


def run_cell(c, runs, epochs):
    from magkit.condense import evaluate_condensed, graph_views, make_condenser, train_whole
    from magkit.data.datasets import load_dataset

    name, dkw = DATASETS[c["data"]][:2]
    setting = setting_of(c["data"])
    graph = load_dataset(name, split="magb", **dkw)
    views = graph_views(graph, setting)
    row = dict(c)
    if c["method"] == "whole":
        per = [train_whole(views, "gcn", num_classes=graph.num_classes, seed=r) for r in range(runs)]
        row["gcn"] = {k: [p[k] for p in per] for k in ("test_acc", "test_f1", "val_acc")}
        row["train_epoch_s"] = sum(p["epoch_time_s"] for p in per) / runs
        return row
    params = {"ratio": c["ratio"], "seed": c["seed"], "setting": setting}
    if c["method"] not in ("random", "herding", "kcenter") and epochs:
        params["epochs"] = epochs
    cond = make_condenser(c["method"], **params)
    t0 = time.perf_counter()
    s = cond.condense(graph)
    row["condense_s"] = time.perf_counter() - t0
    row["peak_memory_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    st = s.stats()
    row.update(num_nodes=st["num_nodes"], edge_density=st["edge_density"], weight_max=st["weight_max"],
               weight_mean=st["weight_mean"], components=st["components"])
    hist = cond.history_ or {}
    row["curve"] = [{k: e.get(k) for k in ("epoch", "val_acc", "wall_time_s", "loss", "conflict_rate", "damping", "edge_density")}
                    for e in hist.get("epochs", []) if "val_acc" in e]
    res = evaluate_condensed(s, graph, ["gcn"], runs=runs, views=views)
    if c["ratio"] == 0.01 and c["method"] in CROSS_METHODS:
        res.update(evaluate_condensed(s, graph, list(CROSS), runs=2, views=views))
    for b, r in res.items():
        row[b] = {k: [p[k] for p in r["runs"]] for k in ("test_acc", "test_f1", "val_acc")}
    row["train_epoch_s"] = sum(p["train_time_s"] for p in res["gcn"]["runs"]) / runs / 300
    return row


def ms(v):
    t = torch.tensor(v, dtype=torch.float64)
    return float(t.mean()), float(t.std(unbiased=True)) if t.numel() > 1 else 0.0


def _label(r) -> str:
    """A row's method, with its condensation seed when it is not seed 0."""
    return r["method"] + (f" (seed {r['seed']})" if r["seed"] else "")


def _at(r) -> str:
    """``method@ratio%``, with the condensation seed when it is not seed 0."""
    return f"{r['method']}@{100 * r['ratio']:.1f}%" + (f" (seed {r['seed']})" if r["seed"] else "")


def render(rows):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lines = ["# Condensation benchmark (Grocery structure, generated features)", "",
             "Regenerate: `python benchmarks/scripts/condense_bench.py` (resumable). Accuracy in %, mean ± std over "
             "fresh GCNs trained on the condensed graph, selected on the real validation split; `% whole` is the "
             "share of whole-graph GCN test accuracy. Condensation seed 0 unless a row names another. Wall times on one thread of a 2-core "
             "machine running two benchmark shards (and at times a third job). (*) peak RSS of the shard process "
             "so far (cells run one after another in one process), an upper bound of the cell's own peak.", ""]
    out = {}
    for d in DATASETS:
        drows = [r for r in rows if r["data"] == d]
        if not drows:
            continue
        whole = next((r for r in drows if r["method"] == "whole"), None)
        w_acc = ms(whole["gcn"]["test_acc"])[0] if whole else float("nan")
        lines += [f"## {d} ({DATASETS[d][0]} {DATASETS[d][1] or ''}, {setting_of(d)})", ""]
        if whole:
            lines.append(f"whole-graph GCN: test acc {100 * w_acc:.2f} ± {100 * ms(whole['gcn']['test_acc'])[1]:.2f}, "
                         f"macro-F1 {100 * ms(whole['gcn']['test_f1'])[0]:.2f}, {whole['train_epoch_s'] * 1000:.0f} ms/epoch")
            lines.append("")
        lines += ["| budget | method | n' | GCN test acc | macro-F1 | % whole | edge density | max w | condense s | process peak MiB* |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for r in sorted((r for r in drows if r["method"] != "whole"), key=lambda r: (r["ratio"], METHODS.index(r["method"]), r["seed"])):
            a, sd = ms(r["gcn"]["test_acc"])
            f, _ = ms(r["gcn"]["test_f1"])
            label = _label(r)
            lines.append(f"| {100 * r['ratio']:.1f}% | {label} | {r['num_nodes']} | {100 * a:.2f} ± {100 * sd:.2f} | "
                         f"{100 * f:.2f} | {100 * a / w_acc:.1f} | {r['edge_density']:.3f} | {r['weight_max']:.3f} | "
                         f"{r['condense_s']:.1f} | {r['peak_memory_mb']:.0f} |")
            out[key(r)] = {"gcn_test_acc": [a, sd], "gcn_test_f1": f, "edge_density": r["edge_density"],
                           "condense_s": r["condense_s"]}
        cross = [r for r in drows if r["method"] != "whole" and r["ratio"] == 0.01 and "sage" in r]
        if cross:
            lines += ["", "Across architectures at 1% (test acc %):", "",
                      "| method | " + " | ".join(("gcn",) + CROSS) + " |", "|---" * (len(CROSS) + 2) + "|"]
            for r in sorted(cross, key=lambda r: (METHODS.index(r["method"]), r["seed"])):
                cellv = [f"{100 * ms(r[b]['test_acc'])[0]:.1f}" for b in ("gcn",) + CROSS]
                lines.append(f"| {_label(r)} | " + " | ".join(cellv) + " |")
        if whole:
            w_val = ms(whole["gcn"]["val_acc"])[0]
            lines += ["", "Time to reach a share of whole-graph GCN accuracy (validation accuracy of S, GCN, as recorded "
                          "during condensation every 10 epochs; wall time of the condensation on one core):", "",
                      "| budget | method | 86% of whole | 90% | 95% | best val (% of whole) |", "|---|---|---|---|---|---|"]
            for r in sorted((r for r in drows if r.get("curve") and r["seed"] == 0),
                            key=lambda r: (r["ratio"], METHODS.index(r["method"]))):
                def reach(share, r=r, w_val=w_val):
                    hit = [e["wall_time_s"] for e in r["curve"] if e["val_acc"] >= share * w_val]
                    return f"{hit[0]:.0f} s" if hit else "not reached"
                best = max(e["val_acc"] for e in r["curve"])
                lines.append(f"| {100 * r['ratio']:.1f}% | {r['method']} | {reach(0.86)} | {reach(0.90)} | {reach(0.95)} | "
                             f"{100 * best / w_val:.1f} |")
            lines += ["", "GCN training epoch on S vs on the whole graph: "
                          + ", ".join(f"{_at(r)} {whole['train_epoch_s'] / r['train_epoch_s']:.0f}x"
                                      for r in sorted(drows, key=lambda r: (METHODS.index(r["method"]) if r["method"]
                                                                            in METHODS else -1, r["seed"]))
                                      if r["method"] in ("srgm", "gcond") and r["ratio"] == 0.01)]
        lines.append("")
        # convergence plot
        curves = [r for r in drows if r["method"] in ("srgm", "gcond", "gcond-x") and r["ratio"] == 0.01 and r.get("curve")
                  and r["seed"] == 0]
        if curves:
            fig, ax = plt.subplots(1, 2, figsize=(10, 3.6))
            for r in curves:
                ep = [e["epoch"] for e in r["curve"]]
                va = [100 * e["val_acc"] for e in r["curve"]]
                ax[0].plot(ep, va, label=r["method"])
                ax[1].plot([e["wall_time_s"] for e in r["curve"]], va, label=r["method"])
            for a_, xl in zip(ax, ("condensation epoch", "wall time (s, 1 core)")):
                a_.set_xlabel(xl)
                a_.set_ylabel("val acc of S (GCN, %)")
                if whole:
                    a_.axhline(100 * ms(whole["gcn"]["val_acc"])[0], ls="--", c="gray", label="whole (val)")
                a_.legend(fontsize=8)
            fig.suptitle(f"{d}: convergence at 1%")
            fig.tight_layout()
            OUT.mkdir(parents=True, exist_ok=True)
            fig.savefig(OUT / f"convergence_{d}.png", dpi=110)
            plt.close(fig)
            lines.append(f"![convergence](convergence_{d}.png)")
            lines.append("")
    (OUT / "results.md").write_text("\n".join(lines))
    (OUT / "results.json").write_text(json.dumps(out, indent=1))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=",".join(DEFAULT_DATA), help="comma-separated keys of DATASETS")
    ap.add_argument("--ratios", default=",".join(map(str, RATIOS)))
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--runs", type=int, default=3, help="fresh evaluation models per condensed graph")
    ap.add_argument("--epochs", type=int, default=0, help="condensation epochs (0: each method's default)")
    ap.add_argument("--shard", default="0/1")
    ap.add_argument("--render-only", action="store_true")
    a = ap.parse_args(argv)
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    OUT.mkdir(parents=True, exist_ok=True)
    rows_path = OUT / "rows.jsonl"
    done = {}
    if rows_path.exists():
        for line in rows_path.read_text().splitlines():
            if line.strip():
                r = json.loads(line)
                done[key(r)] = r
    if not a.render_only:
        i, n = map(int, a.shard.split("/"))
        grid = list(cells(a.data.split(","), [float(r) for r in a.ratios.split(",")], a.methods.split(","),
                          [int(s) for s in a.seeds.split(",")]))
        for j, c in enumerate(grid):
            if j % n != i or key(c) in done:
                continue
            t0 = time.perf_counter()
            row = run_cell(c, a.runs, a.epochs)
            done[key(row)] = row
            with rows_path.open("a") as fh:
                fh.write(json.dumps(row) + "\n")
            print(f"[{j + 1}/{len(grid)}] {key(c)}: GCN test {100 * ms(row['gcn']['test_acc'])[0]:.2f} "
                  f"({time.perf_counter() - t0:.0f} s)", file=sys.stderr, flush=True)
    render(list(done.values()))


if __name__ == "__main__":
    main()
