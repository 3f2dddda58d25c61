"""Validation sweep: method variants under the standard protocol, one JSON line per (variant, seed).

    python benchmarks/scripts/sweep.py OUT.jsonl DATASET SPLIT "VARIANTS" ["DATASET_KWARGS"] [SEEDS]

Same arguments as compare.py (VARIANTS: a Python literal list of (label, method, params)); every fit uses
epochs=200, patience=30, one torch thread, the epoch chosen on validation accuracy. Each line holds the
label, method, params, dataset, split, seed, val/test accuracy and macro-F1 and the fit time; lines already
in OUT (same label, dataset, split, seed) are skipped, so a sweep resumes. Pick settings on val_* only.
"""

import ast
import json
import sys
import time
from pathlib import Path

import torch

from magkit.data import load_dataset
from magkit.eval.experiment import parse_seeds
from magkit.methods import create


def main(argv: list[str]) -> None:
    out, data, split = Path(argv[0]), argv[1], argv[2]
    variants = ast.literal_eval(argv[3])
    kwargs = ast.literal_eval(argv[4]) if len(argv) > 4 else {}
    seeds = parse_seeds(argv[5]) if len(argv) > 5 else [0, 1, 2]
    torch.set_num_threads(1)
    done = set()
    if out.exists():
        for line in out.read_text().splitlines():
            r = json.loads(line)
            done.add((r["label"], r["dataset"], r["split"], r["seed"]))
    for seed in seeds:
        graph = load_dataset(data, split=split, seed=seed, **kwargs)
        for label, method, params in variants:
            if (label, data, split, seed) in done:
                continue
            t0 = time.time()
            est = create(method, seed=seed, epochs=200, patience=30, **params).fit(graph)
            va, te = est.score(graph, "val"), est.score(graph, "test")
            rec = {"label": label, "method": method, "params": params, "dataset": data, "split": split,
                   "dataset_kwargs": kwargs, "seed": seed, "val_acc": va["acc"], "val_f1": va["f1"],
                   "test_acc": te["acc"], "test_f1": te["f1"], "epochs": len(est.history_.series("time")),
                   "seconds": round(time.time() - t0, 1)}
            with out.open("a") as f:
                f.write(json.dumps(rec) + "\n")
            print(f"{label:24s} seed {seed}  val {100 * va['acc']:.2f}/{100 * va['f1']:.2f}  "
                  f"test {100 * te['acc']:.2f}/{100 * te['f1']:.2f}  {rec['seconds']:.0f}s", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
