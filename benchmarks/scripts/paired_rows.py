"""Paired comparison of two benchmark row files (same dataset, split, method, seed), as a markdown table.

    python benchmarks/scripts/paired_rows.py BEFORE.jsonl AFTER.jsonl [METHOD ...] [--before-method=NAME]

For every (profile, split, method) present in both files: the number of paired seeds, AFTER's mean validation and
test accuracy / macro-F1 (%), and the mean ± std of the per-seed differences AFTER − BEFORE on validation (what a
choice may be based on) and on test (reported, not used for choosing); then per method the differences pooled over
all its pairs, with paired t = mean / (std / √n). ``--before-method=NAME`` pairs every AFTER row with BEFORE's row of
method NAME (same dataset, split, seed): a staging variant against another registered method's rows.
"""

import json
import statistics as st
import sys
from collections import defaultdict


def load(path):
    return {(r["dataset"], r["split"], r["method"], r["seed"]): r for r in map(json.loads, open(path).read().splitlines())
            if r}


def mean_sd(xs):
    return st.mean(xs), (st.stdev(xs) if len(xs) > 1 else 0.0)


def main(argv):
    ref = next((a.split("=", 1)[1] for a in argv if a.startswith("--before-method=")), None)
    argv = [a for a in argv if not a.startswith("--before-method=")]
    if len(argv) < 2:
        print(__doc__)
        raise SystemExit(2)
    before, after = load(argv[0]), load(argv[1])
    methods = set(argv[2:])
    groups = defaultdict(list)
    for key, r in after.items():
        bkey = key if ref is None else (key[0], key[1], ref, key[3])
        if bkey in before and (not methods or key[2] in methods):
            groups[key[:3]].append((r, before[bkey]))
    order = {"magb": 0, "rate:0.05": 1, "rate:0.01": 2}
    print("| profile | split | method | seeds | after: val acc / F1 | Δ val acc | Δ val F1 | after: test acc / F1 "
          "| Δ test acc | Δ test F1 |")
    print("| --- | --- | --- | ---: | --- | --- | --- | --- | --- | --- |")
    for (d, s, m) in sorted(groups, key=lambda k: (k[2], k[0], order.get(k[1], 9), k[1])):
        pairs = groups[(d, s, m)]
        cells = []
        for part in ("val", "test"):
            acc = st.mean(100 * a[f"{part}_acc"] for a, _ in pairs)
            f1 = st.mean(100 * a[f"{part}_f1"] for a, _ in pairs)
            da = mean_sd([100 * (a[f"{part}_acc"] - b[f"{part}_acc"]) for a, b in pairs])
            df = mean_sd([100 * (a[f"{part}_f1"] - b[f"{part}_f1"]) for a, b in pairs])
            cells += [f"{acc:.2f} / {f1:.2f}", f"{da[0]:+.2f} ± {da[1]:.2f}", f"{df[0]:+.2f} ± {df[1]:.2f}"]
        print(f"| {d.split(':', 1)[-1]} | {s} | {m} | {len(pairs)} | " + " | ".join(cells) + " |")
    for m in sorted({k[2] for k in groups}):
        pairs = [p for k, ps in groups.items() if k[2] == m for p in ps]
        parts = []
        for key in ("val_acc", "val_f1", "test_acc", "test_f1"):
            d = [100 * (a[key] - b[key]) for a, b in pairs]
            mu, sd = mean_sd(d)
            t = mu / (sd / len(d) ** 0.5) if sd > 0 else float("nan")
            parts.append(f"{key} {mu:+.2f} ± {sd:.2f} (t {t:.1f})")
        print(f"\npooled {m}{' vs ' + ref if ref else ''}, {len(pairs)} pairs: " + "; ".join(parts))


if __name__ == "__main__":
    main(sys.argv[1:])
