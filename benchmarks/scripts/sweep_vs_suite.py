"""Paired comparison of validation-sweep rows (benchmarks/scripts/sweep.py) against benchmark suite rows.

    python benchmarks/scripts/sweep_vs_suite.py SWEEP.jsonl [SUITE_ROWS.jsonl] [METHOD ...]

SUITE_ROWS may also be another sweep's rows file; METHOD then names one of its labels (e.g. "prop hidden").

For each sweep row, the suite rows of METHODs (default graphmnl, graphmnl-mnl-loss, graphmnl-no-guidance) on the
same dataset, split and seed (the protocols are the same: epochs 200, patience 30, hidden 128, one thread; a
re-fit of a suite cell by sweep.py reproduces it bitwise). Prints one line per sweep row with its validation
acc / macro-F1 and the paired differences (sweep − suite), then, per label rate and overall, the mean ± std of
the differences on validation (what a choice may rest on) and on test, with the count of positive ones.
"""

import json
import statistics as st
import sys
from collections import defaultdict


def main(argv):
    sweep = [json.loads(x) for x in open(argv[0]).read().splitlines() if x]
    suite_path = argv[1] if len(argv) > 1 else "benchmarks/graphmnl/rows.jsonl"
    methods = argv[2:] or ["graphmnl", "graphmnl-mnl-loss", "graphmnl-no-guidance"]
    # the reference may be another sweep's rows: then METHOD names its label (e.g. "prop hidden")
    ref = {(r.get("label", r["method"]), r["dataset"], r["split"], r["seed"]): r
           for r in map(json.loads, open(suite_path).read().splitlines()) if r}
    keys = ("val_acc", "val_f1", "test_acc", "test_f1")
    diffs = defaultdict(lambda: defaultdict(list))  # (method, group) -> metric -> [diff]
    for r in sorted(sweep, key=lambda r: (r["label"], r["dataset"], r["split"], r["seed"])):
        line = (f"{r['label']:8s} {r['dataset'].split(':')[-1]:15s} {r['split']:10s} s{r['seed']} "
                f"val {100 * r['val_acc']:.2f}/{100 * r['val_f1']:.2f}")
        for m in methods:
            o = ref.get((m, r["dataset"], r["split"], r["seed"]))
            if o is None:
                line += f" | {m}: –"
                continue
            for group in (r["split"], "all"):
                for k in keys:
                    diffs[(r["label"], m, group)][k].append(100 * (r[k] - o[k]))
            line += f" | {m} {100 * (r['val_acc'] - o['val_acc']):+.2f}/{100 * (r['val_f1'] - o['val_f1']):+.2f}"
        print(line)
    print()
    for (label, m, group), d in sorted(diffs.items()):
        n = len(d["val_acc"])
        cells = "  ".join(f"{k} {st.mean(v):+.2f} ± {(st.stdev(v) if n > 1 else 0.0):.2f} [{sum(x > 0 for x in v)}+]"
                          for k, v in d.items())
        print(f"{label} − {m}, {group} (n = {n}): {cells}")


if __name__ == "__main__":
    main(sys.argv[1:])
