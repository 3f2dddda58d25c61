"""Fourteenth round (pre-registered, session 13): does GraphMNL's lead hold when one property of the graph moves
away from the settings it was developed on? Six fully generated graphs (DC-SBM, 10,000 nodes, 10 classes, edge
homophily 0.5, balanced profile, 5% labels: the "Beyond Grocery" base), each with one factor changed; the current
defaults, no tuning. One JSON line per (graph, method, seed), in the format of sweep.py:

    OMP_NUM_THREADS=1 python benchmarks/scripts/robustness_panel.py run OUT.jsonl [WORKER/WORKERS]
    python benchmarks/scripts/robustness_panel.py table OUT.jsonl

``run 0/2`` and ``run 1/2`` split the (graph, seed) cells between two processes; a run resumes (rows already in
OUT are skipped). ``table`` prints, per graph, test accuracy / macro-F1 mean ± sample std over the seeds, GraphMNL
minus the best baseline by that metric (✓ where the lead is larger than the larger of the two stds, ✗ where the
deficit is), and the ablations against GraphMNL, paired on the seed.
"""

import json
import statistics
import sys
from pathlib import Path

import torch

BASE = {"num_nodes": 10000, "num_classes": 10, "homophily": 0.5}
GRAPHS = {
    "imbalanced": dict(BASE, class_ratio=20.0),
    "heterophilous": dict(BASE, homophily=0.2),
    "three-modal": dict(BASE, modalities=("text", "image", "audio"), quality={"audio": (3.0, 3.0)},
                        biased={"audio": 0.06}, missing={"audio": 0.05}),
    "missing": dict(BASE, missing=0.3),
    "biased": dict(BASE, biased=0.25),
    "corr-quality": dict(BASE, quality_corr=0.8),
}
METHODS = ["graphmnl", "graphmnl-no-guidance", "sage-early", "appnp-early", "gcn-early", "mnl-sage"]
BASELINES = ["sage-early", "appnp-early", "gcn-early", "mnl-sage"]
# the arbitration ablations, on the graph with the most node-level imbalance only
ABLATIONS = {"biased": ["graphmnl-fixed-dominant", "graphmnl-no-smoothing", "graphmnl-gate"]}
# rows files of the fourteenth round (gate on by default then) hold the converse ablation; tables still show it
LEGACY = {"biased": ["graphmnl-no-gate"]}
SEEDS = [0, 1, 2]
DATA, SPLIT = "synthetic:balanced", "rate:0.05"


def cells() -> list[tuple[str, int, int]]:
    """(graph, seed, slot): the slot alternates with the seed so the ablation graph's cells go to both workers."""
    return [(g, s, gi + s) for s in SEEDS for gi, g in enumerate(GRAPHS)]


def run(out: Path, worker: int, workers: int) -> None:
    import time

    from magkit.data import load_dataset
    from magkit.methods import create

    torch.set_num_threads(1)
    done = set()
    if out.exists():
        for line in out.read_text().splitlines():
            r = json.loads(line)
            done.add((r["label"], r["seed"]))
    for gname, seed, slot in cells():
        if slot % workers != worker:
            continue
        methods = METHODS + ABLATIONS.get(gname, [])
        todo = [m for m in methods if (f"{gname}:{m}", seed) not in done]
        if not todo:
            continue
        kwargs = GRAPHS[gname]
        graph = load_dataset(DATA, split=SPLIT, seed=seed, **kwargs)
        for method in todo:
            t0 = time.time()
            est = create(method, seed=seed, epochs=200, patience=30).fit(graph)
            va, te = est.score(graph, "val"), est.score(graph, "test")
            rec = {"label": f"{gname}:{method}", "graph": gname, "method": method, "params": {}, "dataset": DATA,
                   "split": SPLIT, "dataset_kwargs": {k2: (list(v) if isinstance(v, tuple) else v)
                                                      for k2, v in kwargs.items()},
                   "seed": seed, "val_acc": va["acc"], "val_f1": va["f1"], "test_acc": te["acc"],
                   "test_f1": te["f1"], "epochs": len(est.history_.series("time")),
                   "seconds": round(time.time() - t0, 1)}
            with out.open("a") as f:
                f.write(json.dumps(rec) + "\n")
            print(f"{gname:14s} {method:26s} seed {seed}  val {100 * va['acc']:.2f}/{100 * va['f1']:.2f}  "
                  f"test {100 * te['acc']:.2f}/{100 * te['f1']:.2f}  {rec['seconds']:.0f}s", flush=True)


def _ms(xs: list[float]) -> tuple[float, float]:
    return statistics.mean(xs), (statistics.stdev(xs) if len(xs) > 1 else 0.0)


def table(out: Path) -> None:
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    by: dict[tuple[str, str], dict[int, dict]] = {}
    for r in rows:
        by.setdefault((r["graph"], r["method"]), {})[r["seed"]] = r
    print("| graph | method | seeds | val acc / F1 | test acc | test F1 |")
    print("| --- | --- | ---: | --- | --- | --- |")
    for gname in GRAPHS:
        for m in METHODS + ABLATIONS.get(gname, []) + LEGACY.get(gname, []):
            rs = list(by.get((gname, m), {}).values())
            if not rs:
                continue
            va, vf = (_ms([100 * r[k] for r in rs])[0] for k in ("val_acc", "val_f1"))
            ta, tf = (_ms([100 * r[k] for r in rs]) for k in ("test_acc", "test_f1"))
            print(f"| {gname} | {m} | {len(rs)} | {va:.2f} / {vf:.2f} | {ta[0]:.2f} ± {ta[1]:.2f} | "
                  f"{tf[0]:.2f} ± {tf[1]:.2f} |")
    print()
    print("GraphMNL − best baseline (by test mean of that metric among "
          f"{', '.join(BASELINES)}); paired per seed: mean ± std [seeds ahead]")
    print()
    print("| graph | acc: baseline | lead | paired | F1: baseline | lead | paired |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for gname in GRAPHS:
        g = by.get((gname, "graphmnl"), {})
        if not g:
            continue
        cells_out = []
        for key in ("test_acc", "test_f1"):
            best, best_mean = None, -1.0
            for b in BASELINES:
                rs = by.get((gname, b), {})
                if len(rs) == len(g):
                    mean = statistics.mean(r[key] for r in rs.values())
                    if mean > best_mean:
                        best, best_mean = b, mean
            if best is None:
                cells_out += ["–", "–", "–"]
                continue
            gm, gs = _ms([100 * r[key] for r in g.values()])
            bm, bs = _ms([100 * r[key] for r in by[(gname, best)].values()])
            lead = gm - bm
            mark = " ✓" if lead > max(gs, bs) else (" ✗" if -lead > max(gs, bs) else "")
            d = [100 * (g[s][key] - by[(gname, best)][s][key]) for s in g]
            dm, ds = _ms(d)
            cells_out += [best, f"{lead:+.2f}{mark}", f"{dm:+.2f} ± {ds:.2f} [{sum(x > 0 for x in d)}]"]
        print(f"| {gname} | " + " | ".join(cells_out) + " |")
    print()
    print("Ablation − graphmnl, paired on the seed (val acc / val F1 / test acc / test F1, mean over seeds)")
    print()
    for gname in GRAPHS:
        g = by.get((gname, "graphmnl"), {})
        for m in ["graphmnl-no-guidance"] + ABLATIONS.get(gname, []) + LEGACY.get(gname, []):
            a = by.get((gname, m), {})
            common = sorted(set(a) & set(g))
            if not common:
                continue
            vals = [statistics.mean(100 * (a[s][k] - g[s][k]) for s in common)
                    for k in ("val_acc", "val_f1", "test_acc", "test_f1")]
            print(f"- {gname} {m} ({len(common)} seeds): " + " / ".join(f"{v:+.2f}" for v in vals))


if __name__ == "__main__":
    cmd, out = sys.argv[1], Path(sys.argv[2])
    if cmd == "run":
        w, n = (int(x) for x in (sys.argv[3] if len(sys.argv) > 3 else "0/1").split("/"))
        run(out, w, n)
    elif cmd == "table":
        table(out)
    else:
        raise SystemExit(f"unknown command {cmd!r}; allowed: run, table")
