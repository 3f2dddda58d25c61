"""Quick comparison of method variants under the standard protocol (3 seeds, single-threaded torch).

Usage (exploration, not a recorded suite):

    python benchmarks/scripts/compare.py DATASET SPLIT "VARIANTS" ["DATASET_KWARGS"] [SEEDS]

VARIANTS is a Python literal list of (label, method, params) triples; DATASET_KWARGS a dict literal passed
to magkit.data.load_dataset (e.g. generator sizes); SEEDS e.g. 0..2 (the default). Example:

    python benchmarks/scripts/compare.py synthetic:balanced rate:0.02 \\
        "[('gcn', 'gcn-early', {}), ('gm', 'graphmnl', {})]" \\
        "{'num_nodes': 3000, 'homophily': 0.6, 'num_classes': 8}"
"""

import ast
import sys
import time

import torch

from magkit.data import load_dataset
from magkit.eval import repeat
from magkit.eval.experiment import parse_seeds
from magkit.methods import create


def main(argv: list[str]) -> None:
    data, split = argv[0], argv[1]
    variants = ast.literal_eval(argv[2])
    kwargs = ast.literal_eval(argv[3]) if len(argv) > 3 else {}
    seeds = parse_seeds(argv[4]) if len(argv) > 4 else [0, 1, 2]
    torch.set_num_threads(1)
    graph = load_dataset(data, **kwargs)
    for label, method, params in variants:
        t0 = time.time()
        res = repeat(lambda s, m=method, p=params: create(m, seed=s, epochs=200, patience=30, **p), graph,
                     seeds=seeds, split=split)
        print(f"{label:28s} val {res.fmt('val_acc')}  test {res.fmt('test_acc')}  test F1 {res.fmt('test_f1')}  "
              f"{time.time() - t0:.0f}s", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
