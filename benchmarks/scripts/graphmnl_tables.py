"""The two tables of docs/graphmnl.md "Benchmark so far", from the suite's rows:

    python benchmarks/scripts/graphmnl_tables.py [benchmarks/graphmnl/rows.jsonl]

1. per (profile, split): graphmnl and λ = 0 (graphmnl-no-guidance), and the best baseline by test accuracy and by
   test macro-F1 among the baselines with all five seeds (mean ± sample std, %, seeds in brackets);
2. the ablations as paired differences to graphmnl on the same seeds (mean ± std of the per-seed differences,
   test accuracy / macro-F1), for every setting where graphmnl and all ablations have five seeds.
"""

import json
import statistics as st
import sys
from collections import defaultdict

PROFILES = ("text-dominant", "image-dominant", "balanced")
SPLITS = ("magb", "rate:0.05", "rate:0.01")
ABLATIONS = ("graphmnl-no-smoothing", "graphmnl-no-gate", "graphmnl-kd", "graphmnl-mnl-loss",
             "graphmnl-fixed-dominant", "graphmnl-no-guidance")


def fmt(rs, key):
    v = [100 * r[key] for r in rs]
    if not v:
        return "–"
    return f"{st.mean(v):.2f} ± {st.stdev(v):.2f}" if len(v) > 1 else f"{v[0]:.2f}"


def main(argv):
    path = argv[0] if argv else "benchmarks/graphmnl/rows.jsonl"
    g = defaultdict(list)
    for r in map(json.loads, open(path).read().splitlines()):
        g[(r["dataset"].split(":", 1)[-1], r["split"], r["method"])].append(r)
    n_base = len({m for (_, _, m) in g if not m.startswith("graphmnl")})
    print("| profile | split | graphmnl (seeds) acc / F1 | λ = 0 acc / F1 | best baseline by acc | best baseline by F1 "
          "| baselines with 5 seeds |")
    print("| --- | --- | --- | --- | --- | --- | ---: |")
    for d in PROFILES:
        for s in SPLITS:
            full = [m for (dd, ss, m) in g if dd == d and ss == s and not m.startswith("graphmnl")
                    and len(g[(d, s, m)]) == 5]
            if not full:
                continue

            def mean(m, k, d=d, s=s):
                return st.mean(r[k] for r in g[(d, s, m)])

            ba, bf = max(full, key=lambda m: mean(m, "test_acc")), max(full, key=lambda m: mean(m, "test_f1"))
            gm, ng = g[(d, s, "graphmnl")], g[(d, s, "graphmnl-no-guidance")]
            print(f"| {d} | {s} | ({len(gm)}) {fmt(gm, 'test_acc')} / {fmt(gm, 'test_f1')} | ({len(ng)}) "
                  f"{fmt(ng, 'test_acc')} / {fmt(ng, 'test_f1')} | {ba} {fmt(g[(d, s, ba)], 'test_acc')} / "
                  f"{fmt(g[(d, s, ba)], 'test_f1')} | {bf} {fmt(g[(d, s, bf)], 'test_acc')} / "
                  f"{fmt(g[(d, s, bf)], 'test_f1')} | {len(full)} of {n_base} |")
    settings = [(d, s) for d in PROFILES for s in SPLITS
                if all(len(g[(d, s, m)]) == 5 for m in (*ABLATIONS, "graphmnl"))]
    print()
    if not settings:
        print("(no setting has five seeds of graphmnl and of every ablation yet)")
        return
    print("| method | " + " | ".join(f"{d} {s}" for d, s in settings) + " |")
    print("| --- | " + " | ".join("---" for _ in settings) + " |")
    print("| graphmnl (absolute) | " + " | ".join(
        f"{st.mean(100 * r['test_acc'] for r in g[(d, s, 'graphmnl')]):.2f} / "
        f"{st.mean(100 * r['test_f1'] for r in g[(d, s, 'graphmnl')]):.2f}" for d, s in settings) + " |")
    for m in ABLATIONS:
        cells = []
        for d, s in settings:
            base = {r["seed"]: r for r in g[(d, s, "graphmnl")]}
            da = [100 * (r["test_acc"] - base[r["seed"]]["test_acc"]) for r in g[(d, s, m)]]
            df = [100 * (r["test_f1"] - base[r["seed"]]["test_f1"]) for r in g[(d, s, m)]]
            cells.append(f"{st.mean(da):+.2f} ± {st.stdev(da):.2f} / {st.mean(df):+.2f} ± {st.stdev(df):.2f}")
        print(f"| {m} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main(sys.argv[1:])
