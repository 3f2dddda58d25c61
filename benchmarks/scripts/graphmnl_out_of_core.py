"""Mini-batch GraphMNL from memory against the same fit from a memory-mapped copy of the graph (out of core).

    OMP_NUM_THREADS=1 python benchmarks/scripts/graphmnl_out_of_core.py [DATASET] [SPLIT] [BATCH_SIZE] [EPOCHS]

Writes DATASET (default grocery-semi:balanced, split rate:0.05, seed 0) in the ``mmap:`` layout to a temporary
folder, reads it back memory-mapped, and fits graphmnl with BATCH_SIZE (default 256) for EPOCHS epochs (default
25, no early stopping) on both. Printed: fit wall time, median training-epoch time (the epoch state's pass over
all nodes included) and test accuracy / macro-F1 (full-graph evaluation in memory, sampled inference out of core).
"""

import statistics
import sys
import tempfile
import time

import torch

from magkit.data import load_dataset
from magkit.data.ondisk import load_mmap_graph, save_mmap_graph
from magkit.methods import create


def main(argv: list[str]) -> None:
    data = argv[0] if argv else "grocery-semi:balanced"
    split = argv[1] if len(argv) > 1 else "rate:0.05"
    bs = int(argv[2]) if len(argv) > 2 else 256
    epochs = int(argv[3]) if len(argv) > 3 else 25
    torch.set_num_threads(1)
    g = load_dataset(data, split=split, seed=0)
    with tempfile.TemporaryDirectory() as d:
        save_mmap_graph(g, f"{d}/g")
        mapped = load_mmap_graph(f"{d}/g")
        for k in ("train_mask", "val_mask", "test_mask"):
            mapped[k] = g[k]
        print(f"{data} {split}, graphmnl batch_size={bs}, {epochs} epochs, one thread")
        for name, graph in (("in memory", g), ("memory-mapped", mapped)):
            t = time.time()
            est = create("graphmnl", seed=0, batch_size=bs, epochs=epochs, patience=None).fit(graph)
            wall = time.time() - t
            s = est.score(graph, "test")
            print(f"{name:14s} fit {wall:.1f} s, training epoch {statistics.median(est.history_.series('time')[1:]):.2f} s, "
                  f"test acc {100 * s['acc']:.2f} / F1 {100 * s['f1']:.2f}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
