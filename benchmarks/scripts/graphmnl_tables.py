"""The two tables of docs/graphmnl.md "Benchmark (5 seeds, current defaults)", from the suite's rows:

    python benchmarks/scripts/graphmnl_tables.py [benchmarks/graphmnl/rows.jsonl]

1. per (profile, split): graphmnl and λ = 0 (graphmnl-no-guidance), and the best baseline by test accuracy and by
   test macro-F1 among the baselines with all five seeds (mean ± sample std, %, seeds in brackets);
2. the ablations as paired differences to graphmnl on the same seeds (mean ± std of the per-seed differences,
   test accuracy / macro-F1; bold where the cost exceeds that std), one row per setting where graphmnl and all
   ablations have five seeds, and per ablation the settings where it costs beyond the std;
3. the same settings on validation (mean paired difference, val accuracy / macro-F1): what a user tuning on
   validation would see;
4. the ablations pooled over all paired fits (mean ± std, paired t);
and, after table 1, graphmnl's lead over the best baseline per setting and metric against the issue's criterion
(larger than the seeds' std), with the seed-paired differences.
"""

import json
import statistics as st
import sys
from collections import defaultdict

PROFILES = ("text-dominant", "image-dominant", "balanced")
SPLITS = ("magb", "rate:0.05", "rate:0.01")
# two-sided 5% critical values of Student's t by degrees of freedom (paired differences over n seeds: df = n - 1)
T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262}
ABLATIONS = ("graphmnl-no-smoothing", "graphmnl-gate", "graphmnl-kd", "graphmnl-mnl-loss",
             "graphmnl-fixed-dominant", "graphmnl-no-guidance", "graphmnl-ntkd",  # a variant (session 8)
             "graphmnl-dominant-teacher")  # the spec's form of the transfer (the default until session 20)


def fmt(rs, key):
    v = [100 * r[key] for r in rs]
    if not v:
        return "–"
    return f"{st.mean(v):.2f} ± {st.stdev(v):.2f}" if len(v) > 1 else f"{v[0]:.2f}"


def lead_table(g):
    """graphmnl − the best baseline (by that metric's test mean), per setting: the difference of the means, whether
    it exceeds the larger of the two seed stds (the issue's criterion), and the per-seed paired differences."""
    print()
    print("graphmnl − best baseline by that metric (test, points): difference of the means; ✓ when it is larger "
          "than the larger of the two seed stds; paired on the seed: mean ± std of the differences, [k] seeds of "
          "five where graphmnl is ahead, † a paired t-test rejects 'no difference' at 5%.")
    print()
    print("| setting | acc: baseline | lead | paired | F1: baseline | lead | paired |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for d in PROFILES:
        for s in SPLITS:
            gm = {r["seed"]: r for r in g[(d, s, "graphmnl")]}
            full = [m for (dd, ss, m) in g if dd == d and ss == s and not m.startswith("graphmnl")
                    and len(g[(d, s, m)]) == 5]
            if len(gm) < 5 or not full:
                continue
            cells = []
            for k in ("test_acc", "test_f1"):
                b = max(full, key=lambda m: st.mean(r[k] for r in g[(d, s, m)]))
                bv = [100 * r[k] for r in g[(d, s, b)]]
                gv = [100 * r[k] for r in gm.values()]
                lead = st.mean(gv) - st.mean(bv)
                ok = " ✓" if lead > max(st.stdev(gv), st.stdev(bv)) else ""
                diff = [100 * (gm[r["seed"]][k] - r[k]) for r in g[(d, s, b)]]
                sig = "†" if abs(st.mean(diff)) * len(diff) ** 0.5 > T975[len(diff) - 1] * st.stdev(diff) else ""
                cells += [b, f"{lead:+.2f}{ok}", f"{st.mean(diff):+.2f} ± {st.stdev(diff):.2f}{sig} "
                          f"[{sum(x > 0 for x in diff)}]"]
            print(f"| {d} {s} | " + " | ".join(cells) + " |")


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
    lead_table(g)
    settings = [(d, s) for d in PROFILES for s in SPLITS
                if all(len(g[(d, s, m)]) == 5 for m in (*ABLATIONS, "graphmnl"))]
    print()
    if not settings:
        print("(no setting has five seeds of graphmnl and of every ablation yet)")
        return
    short = {m: m.replace("graphmnl-", "") for m in ABLATIONS}
    print("Ablation − graphmnl, paired on the seed (mean ± std of the five per-seed differences, test acc / macro-F1, "
          "points); **bold**: a cost larger than the std of the differences; [k] seeds of five where the ablation "
          "is worse in accuracy; † a paired t-test rejects 'no difference' at 5% (two-sided), either direction.")
    print()
    print("| setting | graphmnl acc / F1 | " + " | ".join(short[m] for m in ABLATIONS) + " |")
    print("| --- | --- | " + " | ".join("---" for _ in ABLATIONS) + " |")
    costs = defaultdict(list)
    for d, s in settings:
        base = {r["seed"]: r for r in g[(d, s, "graphmnl")]}
        cells = []
        for m in ABLATIONS:
            da = [100 * (r["test_acc"] - base[r["seed"]]["test_acc"]) for r in g[(d, s, m)]]
            df = [100 * (r["test_f1"] - base[r["seed"]]["test_f1"]) for r in g[(d, s, m)]]
            parts = []
            for v, what in ((da, "acc"), (df, "F1")):
                text = f"{st.mean(v):+.2f} ± {st.stdev(v):.2f}"
                sig = abs(st.mean(v)) * len(v) ** 0.5 > T975[len(v) - 1] * st.stdev(v)
                if st.mean(v) < 0 and -st.mean(v) > st.stdev(v):
                    text = f"**{text}**"
                    costs[m].append(f"{d} {s} ({what}{', †' if sig else ''})")
                if sig:
                    text += "†"
                parts.append(text)
            worse = sum(x < 0 for x in da)
            cells.append(f"{parts[0]} / {parts[1]} [{worse}]")
        gm = g[(d, s, "graphmnl")]
        print(f"| {d} {s} | {st.mean(100 * r['test_acc'] for r in gm):.2f} / "
              f"{st.mean(100 * r['test_f1'] for r in gm):.2f} | " + " | ".join(cells) + " |")
    print()
    for m in ABLATIONS:
        print(f"- {short[m]}: costs beyond the std in " + (", ".join(costs[m]) if costs[m] else "no setting"))
    print()
    print("Validation, ablation − graphmnl (mean of the five paired differences, val acc / macro-F1, points):")
    print()
    print("| setting | " + " | ".join(short[m] for m in ABLATIONS) + " |")
    print("| --- | " + " | ".join("---" for _ in ABLATIONS) + " |")
    for d, s in settings:
        base = {r["seed"]: r for r in g[(d, s, "graphmnl")]}
        cells = []
        for m in ABLATIONS:
            da = st.mean(100 * (r["val_acc"] - base[r["seed"]]["val_acc"]) for r in g[(d, s, m)])
            df = st.mean(100 * (r["val_f1"] - base[r["seed"]]["val_f1"]) for r in g[(d, s, m)])
            cells.append(f"{da:+.2f} / {df:+.2f}")
        print(f"| {d} {s} | " + " | ".join(cells) + " |")
    pooled_table(g, settings)


def pooled_table(g, settings):
    """Every ablation − graphmnl pooled over all paired fits of the complete settings (mean ± std, paired t)."""
    print()
    n = 5 * len(settings)
    print(f"Pooled over the {n} paired fits (ablation − graphmnl, mean ± std of the per-fit differences, points; "
          "t = paired t over the fits, shown where |t| ≥ 2):")
    print()
    print("| ablation | val acc | val F1 | test acc | test F1 |")
    print("| --- | --- | --- | --- | --- |")
    for m in ABLATIONS:
        cells = []
        for k in ("val_acc", "val_f1", "test_acc", "test_f1"):
            diff = []
            for d, s in settings:
                base = {r["seed"]: r for r in g[(d, s, "graphmnl")]}
                diff += [100 * (r[k] - base[r["seed"]][k]) for r in g[(d, s, m)]]
            t = st.mean(diff) / (st.stdev(diff) / len(diff) ** 0.5)
            cells.append(f"{st.mean(diff):+.2f} ± {st.stdev(diff):.2f}" + (f" (t {t:.1f})" if abs(t) >= 2 else ""))
        print(f"| {m.replace('graphmnl-', '')} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main(sys.argv[1:])
