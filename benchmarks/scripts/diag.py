"""Fit method variants on one dataset / split / seed and print validation and test scores, with GraphMNL's
diagnostics (per-branch val accuracy / macro-F1, dominant share, reliability AUC). Exploration, not a suite:

    OMP_NUM_THREADS=1 python benchmarks/scripts/diag.py DATASET SPLIT SEED "VARIANTS"

VARIANTS is a Python literal list of (label, method, params) triples, e.g.
"[('sage-early', 'sage-early', {}), ('gm', 'graphmnl', {'temperature': 0.3})]". Epochs <= 200, patience 30.
"""

import ast
import sys
import time

import torch

from magkit.data import load_dataset
from magkit.methods import create


def main(argv: list[str]) -> None:
    data, split, seed = argv[0], argv[1], int(argv[2])
    variants = ast.literal_eval(argv[3])
    torch.set_num_threads(1)
    graph = load_dataset(data, split=split, seed=seed)
    for label, method, params in variants:
        t0 = time.time()
        est = create(method, seed=seed, epochs=200, patience=30, **params).fit(graph)
        v, t = est.score(graph, "val"), est.score(graph, "test")
        line = (f"{label:24s} val {100 * v['acc']:.2f}/{100 * v['f1']:.2f} test {100 * t['acc']:.2f}/"
                f"{100 * t['f1']:.2f} ep {est.history_.best_epoch} {time.time() - t0:.0f}s")
        d = getattr(est, "diagnostics_", None)
        if d:
            line += " | " + " ".join(f"{b}:{100 * a:.1f}/{100 * d['branch_val_f1'][b]:.1f}"
                                     for b, a in d["branch_val_acc"].items())
            line += " | dom " + " ".join(f"{b}:{s:.2f}" for b, s in d["dominant_share"].items())
            if d.get("reliability_auc"):
                line += f" | auc {d['reliability_auc']}"
        print(line, flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
