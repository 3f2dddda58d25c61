"""Epoch time with torch's own backward of the sparse products against magkit's ``spmm`` (CSR transpose built once
per adjacency and reused), per method, in one run.

    OMP_NUM_THREADS=1 python benchmarks/scripts/spmm_backward.py [DATASET] [EPOCHS] [METHODS]

Each method trains full-batch for EPOCHS epochs (default 30, no early stopping) twice per mode, alternating
old, new, old, new so that machine noise hits both; torch runs on one thread. "old" replaces the reuse by torch's
path (``adj @ x``, whose backward converts ``adj.t()`` to CSR on every call); the numbers are bitwise the same
either way (tests/train/test_propagation.py). Printed: the median training-step time per epoch (History.epoch_time,
first epoch of each fit dropped) in each mode and their ratio. METHODS is a comma-separated list
(default gcn-early,sage-early,appnp-early,graphmnl).
"""

import statistics
import sys

import torch

from magkit.data import load_dataset
from magkit.methods import create
from magkit.train import propagation


def main(argv: list[str]) -> None:
    data = argv[0] if argv else "grocery-semi:balanced"
    epochs = int(argv[1]) if len(argv) > 1 else 30
    methods = argv[2].split(",") if len(argv) > 2 else ["gcn-early", "sage-early", "appnp-early", "graphmnl"]
    torch.set_num_threads(1)
    graph = load_dataset(data)
    fast = propagation._SpMM.apply
    print(f"{data}, {epochs} epochs, hidden 128, one thread; ms per training epoch (median)")
    print("| method | torch backward | spmm (transpose reused) | new / old |")
    print("| --- | ---: | ---: | ---: |")
    for method in methods:
        times: dict[str, list[float]] = {"old": [], "new": []}
        for _ in range(2):
            for mode in ("old", "new"):
                propagation._SpMM.apply = fast if mode == "new" else (lambda adj, x: adj @ x)
                try:
                    est = create(method, seed=0, hidden=128, epochs=epochs, patience=None).fit(graph)
                finally:
                    propagation._SpMM.apply = fast
                times[mode] += est.history_.series("time")[1:]
        old, new = statistics.median(times["old"]), statistics.median(times["new"])
        print(f"| {method} | {1000 * old:.1f} | {1000 * new:.1f} | {new / old:.2f} |", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
