"""One GraphMNL form against another and the best baseline per setting, from the benchmark rows:

    python benchmarks/scripts/fused_teacher_table.py [ROWS.jsonl [BASE NEW]]

BASE and NEW default to graphmnl-dominant-teacher (the spec's form) and graphmnl (the default since the twentieth
round). Session 16's table compared graphmnl (then the spec's form) with graphmnl-fused-teacher (then a variant).
Per setting: test accuracy / macro-F1 (mean ± std over the seeds) of both and of the baselines best on each, and the
mean paired (same seed) validation difference; then the pooled paired differences with t and the count ahead.
"""

import collections
import json
import statistics as st
import sys

KEYS = ("val_acc", "val_f1", "test_acc", "test_f1")


def mean_std(cells: dict, key: str) -> tuple[float, float]:
    v = [100 * r[key] for r in cells.values()]
    return st.mean(v), (st.stdev(v) if len(v) > 1 else 0.0)


def fmt(cells: dict, key: str) -> str:
    m, s = mean_std(cells, key)
    return f"{m:.2f} ± {s:.2f}"


def main(path: str = "benchmarks/graphmnl/rows.jsonl", base: str = "graphmnl-dominant-teacher",
         new: str = "graphmnl") -> None:
    rows = [json.loads(x) for x in open(path).read().splitlines() if x]
    by: dict = collections.defaultdict(dict)
    for r in rows:
        by[(r["dataset"], r["split"], r["method"])][r["seed"]] = r
    print(f"| setting | {base} test acc / F1 | {new} test acc / F1 | best baseline (test acc; test F1) "
          f"| {new} − {base}, val acc / F1 (paired) |")
    print("| --- | --- | --- | --- | --- |")
    pooled: dict[str, list[float]] = {k: [] for k in KEYS}
    for ds, sp in sorted({(r["dataset"], r["split"]) for r in rows}):
        g, f = by[(ds, sp, base)], by[(ds, sp, new)]
        pairs = [s for s in f if s in g]
        if not pairs:
            continue
        others = [m for (d, s, m) in by if d == ds and s == sp and not m.startswith("graphmnl")]
        best = max(others, key=lambda m: mean_std(by[(ds, sp, m)], "test_acc")[0])
        best_f1 = max(others, key=lambda m: mean_std(by[(ds, sp, m)], "test_f1")[0])
        diff = {k: [100 * (f[s][k] - g[s][k]) for s in pairs] for k in KEYS}
        for k in KEYS:
            pooled[k] += diff[k]
        print(f"| {ds.split(':')[-1]} {sp} | {fmt(g, 'test_acc')} / {fmt(g, 'test_f1')} | {fmt(f, 'test_acc')} / "
              f"{fmt(f, 'test_f1')} | {best} {fmt(by[(ds, sp, best)], 'test_acc')}; {best_f1} "
              f"{fmt(by[(ds, sp, best_f1)], 'test_f1')} | {st.mean(diff['val_acc']):+.2f} / {st.mean(diff['val_f1']):+.2f} |")
    for k, v in pooled.items():
        if len(v) > 1:
            m, s = st.mean(v), st.stdev(v)
            print(f"{k} {m:+.2f} ± {s:.2f} (n {len(v)}, t {m / (s / len(v) ** 0.5):.1f}, ahead {sum(x > 0 for x in v)})")


if __name__ == "__main__":
    main(*sys.argv[1:])
