"""How much weight the optional topo branch gets, and whether it gets it where it is right: fits graphmnl with the
default branches plus topo and prints each branch's validation accuracy, mean fusion weight and dominant share, then
topo's share of the struct kind's weight on the validation nodes where topo is right and where it is wrong.

    OMP_NUM_THREADS=1 python benchmarks/scripts/topo_share.py [DATASET] [SPLIT] [SEED]

Defaults: grocery-semi:text-dominant rate:0.01 0 (docs/graphmnl_rounds.md, "Twelfth round").
"""

import sys

import torch

from magkit.data import load_dataset
from magkit.methods import create
from magkit.methods.graphmnl import default_branches


def main(argv: list[str]) -> None:
    torch.set_num_threads(1)
    data = argv[0] if argv else "grocery-semi:text-dominant"
    split = argv[1] if len(argv) > 1 else "rate:0.01"
    seed = int(argv[2]) if len(argv) > 2 else 0
    g = load_dataset(data, split=split, seed=seed)
    branches = list(default_branches(g.modalities)) + ["topo"]
    est = create("graphmnl", seed=seed, epochs=200, patience=30, branches=branches).fit(g)
    d = est.diagnostics_
    print(f"{data} {split} seed {seed}: val {est.score(g, 'val')}")
    for j, b in enumerate(d["branches"]):
        print(f"{b:12s} val acc {d['branch_val_acc'][b]:.3f}  mean alpha {float(d['alpha'][:, j].mean()):.3f}  "
              f"dominant share {d['dominant_share'][b]:.3f}")
    val = g.split_index("val")
    kind = est.model_.kinds()["struct"]
    t = branches.index("topo")
    right = est.forward(g)["branches"][val, t].argmax(1) == g.y[val]
    share = d["alpha"][val, t] / d["alpha"][val][:, kind].sum(1).clamp(min=1e-12)
    print(f"topo's share of the struct kind on validation nodes: where topo is right {float(share[right].mean()):.3f} "
          f"({int(right.sum())} nodes), wrong {float(share[~right].mean()):.3f} ({int((~right).sum())} nodes)")


if __name__ == "__main__":
    main(sys.argv[1:])
