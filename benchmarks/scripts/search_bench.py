"""Search on condensed graphs against search on the whole graph: does S rank configurations as the whole graph does?

Regenerate (resumable: every search continues from the trials recorded under --out):

    python benchmarks/scripts/search_bench.py                                   # CiteSeer, 100 configurations,
                                                                                # srgm gcond gcond-x random kcenter at 1%
    python benchmarks/scripts/search_bench.py --space benchmarks/search/space_small.yaml \\
        --condensers random,kcenter --out benchmarks/search/citeseer_small    # 12 configurations, minutes

For the dataset, every configuration of the space is trained on S from each condenser (at ``--ratio``) and on
the whole training graph (``magkit.search``, validation on the real validation split, test labels never
read), the top ``--top`` of each search are re-trained on the whole graph, and ``results.md`` /
``results.json`` under ``--out`` hold per condenser: Spearman and Kendall correlation between the S scores
and the whole-graph scores, the top-10 overlap, the test accuracy of the configuration chosen on S against
the one chosen on the whole graph, and the search time on S against the whole graph (GCond, Jin et al.,
ICLR 2022, Table 6; SR-GM). A second table gives the mean trial time per backbone on S and on the whole graph.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="citeseer")
    ap.add_argument("--split", default="random:0.6/0.2")
    ap.add_argument("--space", type=Path, default=ROOT / "benchmarks" / "search" / "space.yaml")
    ap.add_argument("--condensers", default="srgm,gcond,gcond-x,random,kcenter")
    ap.add_argument("--ratio", type=float, default=0.01)
    ap.add_argument("--top", type=int, default=5)
    ap.add_argument("--k", type=int, default=10, help="the head of the top-k overlap")
    ap.add_argument("--epochs", type=int, default=300)
    ap.add_argument("--eval-every", type=int, default=10)
    ap.add_argument("--patience", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--executor", default="local")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "search" / "citeseer")
    args = ap.parse_args(argv)

    sys.path.insert(0, str(ROOT / "src"))
    import magkit
    from magkit.data import load_dataset
    from magkit.eval.results import atomic_write_bytes, atomic_write_json, environment
    from magkit.search import compare, load_space

    space = load_space(args.space)
    condensers = [c.strip() for c in args.condensers.split(",") if c.strip()]
    kw = {"top": args.top, "epochs": args.epochs, "eval_every": args.eval_every, "patience": args.patience,
          "seed": args.seed, "split": args.split, "executor": args.executor}
    graph = load_dataset(args.data, split=args.split)

    def show(name):
        def progress(rec):
            if rec["row"] is not None:
                r = rec["row"]
                v = r.get("metrics", {}).get("val_acc")
                print(f"  {name} {rec['stage']} {rec['done']}/{rec['total']} {r['method']} "
                      f"{f'val {v:.3f}' if v is not None else r.get('error')} ({r['wall_time_s']:.2f} s)", flush=True)
        return progress

    results = {}
    for name in ["whole", *condensers]:
        out = args.out / name
        extra = {"on": "whole"} if name == "whole" else {"condenser": name, "ratio": args.ratio}
        print(f"{name}: searching {len(space)} configurations", flush=True)
        res = magkit.search(graph, space, out, progress=show(name), **extra, **kw)
        ct_file = out / "condense_time.json"
        if res.condense_time_s is not None:
            ct_file.write_text(json.dumps({"condense_time_s": res.condense_time_s}))
        ct = json.loads(ct_file.read_text())["condense_time_s"] if ct_file.is_file() else None
        results[name] = (res, ct)

    whole, _ = results["whole"]
    table = []
    for name in condensers:
        res, ct = results[name]
        cmp = compare(res, whole, k=args.k)
        s_file = next(iter((args.out / name).glob("S-*.safetensors")), None)
        table.append({
            "condenser": name, "n_S": _num_nodes(s_file), "configs": cmp["n"], "spearman": cmp["spearman"],
            "kendall": cmp["kendall"], "top_k": cmp["k"], "top_overlap": cmp["top_overlap"],
            "chosen_on_S": res.chosen["method"] if res.chosen else None,
            "test_acc_chosen_on_S": res.chosen["metrics"]["test_acc"] if res.chosen else None,
            "chosen_on_whole": whole.chosen["method"] if whole.chosen else None,
            "test_acc_chosen_on_whole": whole.chosen["metrics"]["test_acc"] if whole.chosen else None,
            "search_time_S_s": res.search_time_s, "search_time_whole_s": whole.search_time_s, "condense_time_s": ct,
        })
    per_backbone = _trial_times(results, ["whole", *condensers])
    lines = [f"# Search on condensed graphs · {args.data}", "",
             f"Regenerate with `python benchmarks/scripts/search_bench.py --data {args.data} --split {args.split} "
             f"--space {_rel(args.space)} --condensers {','.join(condensers)} --ratio {args.ratio} --top {args.top} "
             f"--out {_rel(args.out)}`.", "",
             f"{len(space)} configurations ({_rel(args.space)}), each trained once (seed {args.seed}) for at most "
             f"{args.epochs} epochs, validated on the real validation split every {args.eval_every} epochs, stopped "
             f"after {args.patience} validations without improvement. S: {', '.join(condensers)} at "
             f"{100 * args.ratio:g}% of the training nodes (seed {args.seed}). Correlations between the validation "
             f"accuracy on S and on the whole graph over the configurations both searches finished; top-{args.k} "
             f"overlap = shared configurations among the {args.k} best of each. Chosen: the best whole-graph "
             f"validation accuracy among the top {args.top} of the search, re-trained on the whole graph; its "
             "test accuracy (%). Search time: the trials' wall time summed (condensing S apart).", "",
             "| condenser | n' | Spearman | Kendall | top-10 overlap | test acc, chosen on S | test acc, chosen on whole "
             "| search s on S | search s on whole | speed-up | condense s |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for t in table:
        ct = "–" if t["condense_time_s"] is None else f"{t['condense_time_s']:.1f}"
        lines.append(
            f"| {t['condenser']} | {t['n_S']} | {t['spearman']:.3f} | {t['kendall']:.3f} | {t['top_overlap']:.2f} | "
            f"{_pct(t['test_acc_chosen_on_S'])} | {_pct(t['test_acc_chosen_on_whole'])} | {t['search_time_S_s']:.1f} | "
            f"{t['search_time_whole_s']:.1f} | {t['search_time_whole_s'] / max(t['search_time_S_s'], 1e-9):.1f}x | "
            f"{ct} |")
    lines += ["", "Configurations chosen: " + "; ".join(f"{t['condenser']}: `{t['chosen_on_S']}`" for t in table)
              + f"; whole: `{whole.chosen['method'] if whole.chosen else '–'}`.", "",
              "Mean seconds per trial by backbone (one trial = one training run with its validations):", "",
              "| backbone | " + " | ".join(["whole", *condensers]) + " | " +
              " | ".join(f"whole / {c}" for c in condensers) + " |",
              "| --- |" + " ---: |" * (1 + 2 * len(condensers))]
    for b, times in per_backbone.items():
        w = times.get("whole")
        cells = [f"{times[n]:.3f}" if n in times else "–" for n in ["whole", *condensers]]
        ratios = [f"{w / times[c]:.1f}x" if w and times.get(c) else "–" for c in condensers]
        lines.append(f"| {b} | " + " | ".join(cells + ratios) + " |")
    lines.append("")
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(args.out / "results.md", "\n".join(lines).encode())
    atomic_write_json(args.out / "results.json", {"args": {k: str(v) for k, v in vars(args).items()}, "table": table,
                                                   "trial_time_by_backbone": per_backbone, "environment": environment()})
    print("\n".join(lines))
    return 0


def _num_nodes(path):
    if path is None:
        return "–"
    from magkit.condense import CondensedGraph

    return CondensedGraph.load(path).num_nodes


def _trial_times(results, names) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for name in names:
        res, _ = results[name]
        by: dict[str, list[float]] = {}
        for r in res.trials:
            if r.get("status") == "ok":
                by.setdefault(r["config"]["backbone"], []).append(r["wall_time_s"])
        for b, ts in by.items():
            out.setdefault(b, {})[name] = sum(ts) / len(ts)
    return out


def _pct(v) -> str:
    return "–" if v is None else f"{100 * v:.2f}"


def _rel(p: Path) -> str:
    try:
        return str(Path(p).resolve().relative_to(ROOT))
    except ValueError:
        return str(p)


if __name__ == "__main__":
    raise SystemExit(main())
