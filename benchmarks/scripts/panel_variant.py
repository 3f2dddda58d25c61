"""A method variant on the graphs of the robustness panel (fourteenth round), one JSON line per (graph, seed), paired
with the panel's own rows by ``benchmarks/scripts/panel_variant.py compare``:

    OMP_NUM_THREADS=1 python benchmarks/scripts/panel_variant.py run OUT.jsonl METHOD 'PARAMS_JSON' GRAPHS SEEDS TAG
    python benchmarks/scripts/panel_variant.py compare OUT.jsonl [REFERENCE_METHOD | tag:TAG] [PANEL_ROWS.jsonl]

GRAPHS: comma-separated panel graph names or ``all``; SEEDS: comma-separated. Every fit as in the panel (epochs
200, patience 30, one torch thread). ``compare`` prints, per TAG and graph, the mean paired difference (variant −
reference, points) on validation and test accuracy / macro-F1, then pooled over the graphs with the std of the
differences and t = mean / (std / √n); with ``tag:TAG`` the reference is another variant of OUT. Rows already in OUT (same tag, graph, seed) are skipped.
"""
import json
import statistics as st
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from robustness_panel import DATA, GRAPHS, SPLIT  # noqa: E402

KEYS = ("val_acc", "val_f1", "test_acc", "test_f1")


def run(argv: list[str]) -> None:
    from magkit.data import load_dataset
    from magkit.methods import create

    torch.set_num_threads(1)
    out, method, params = argv[0], argv[1], json.loads(argv[2])
    graphs = argv[3].split(",") if argv[3] != "all" else list(GRAPHS)
    seeds = [int(x) for x in argv[4].split(",")]
    tag = argv[5] if len(argv) > 5 else json.dumps(params, sort_keys=True)
    done = set()
    if Path(out).exists():
        done = {(r.get("tag"), r["graph"], r["seed"]) for r in map(json.loads, Path(out).read_text().splitlines())}
    for gname in graphs:
        for seed in seeds:
            if (tag, gname, seed) in done:
                continue
            kwargs = GRAPHS[gname]
            graph = load_dataset(DATA, split=SPLIT, seed=seed, **kwargs)
            t0 = time.time()
            est = create(method, seed=seed, epochs=200, patience=30, **params).fit(graph)
            va, te = est.score(graph, "val"), est.score(graph, "test")
            rec = {"label": f"{gname}:{method}:{tag}", "graph": gname, "method": method, "params": params, "tag": tag,
                   "dataset": DATA, "split": SPLIT, "seed": seed, "val_acc": va["acc"], "val_f1": va["f1"],
                   "test_acc": te["acc"], "test_f1": te["f1"], "epochs": len(est.history_.series("time")),
                   "seconds": round(time.time() - t0, 1)}
            with open(out, "a") as f:
                f.write(json.dumps(rec) + "\n")
            print(gname, seed, tag, f"val {100*va['acc']:.2f}/{100*va['f1']:.2f}", flush=True)


def compare(argv: list[str]) -> None:
    ref_method = argv[1] if len(argv) > 1 else "graphmnl"
    panel = argv[2] if len(argv) > 2 else "benchmarks/graphmnl_sweep/panel_session13.jsonl"
    rows = [json.loads(x) for x in Path(argv[0]).read_text().splitlines() if x]
    if ref_method.startswith("tag:"):  # another variant of the same file
        base = {(r["graph"], r["seed"]): r for r in rows if r.get("tag") == ref_method[4:]}
        rows = [r for r in rows if r.get("tag") != ref_method[4:]]
    else:
        base = {(r["graph"], r["seed"]): r for r in map(json.loads, Path(panel).read_text().splitlines())
                if r["method"] == ref_method}
    for tag in sorted({r.get("tag") for r in rows}):
        pooled: dict[str, list[float]] = {k: [] for k in KEYS}
        for gname in GRAPHS:
            rs = [r for r in rows if r.get("tag") == tag and r["graph"] == gname and (gname, r["seed"]) in base]
            if not rs:
                continue
            d = {k: [100 * (r[k] - base[(gname, r["seed"])][k]) for r in rs] for k in KEYS}
            for k in KEYS:
                pooled[k] += d[k]
            print(f"{tag} {gname} ({len(rs)} seeds): " + "  ".join(f"{k} {st.mean(v):+.2f}" for k, v in d.items()))
        n = len(pooled["val_acc"])
        if n > 1:
            print(f"{tag} pooled ({n} fits): " + "  ".join(
                f"{k} {st.mean(v):+.2f} ± {st.stdev(v):.2f} (t {st.mean(v) / max(st.stdev(v) / n ** 0.5, 1e-9):.1f})"
                for k, v in pooled.items()))


if __name__ == "__main__":
    cmd = sys.argv[1] if len(sys.argv) > 1 else ""
    if cmd == "run":
        run(sys.argv[2:])
    elif cmd == "compare":
        compare(sys.argv[2:])
    else:
        raise SystemExit(f"unknown command {cmd!r}; allowed: run, compare")
