"""What each guidance loss does to the branches it guides: fits graphmnl variants on one dataset / split / seed
and prints, on the unlabelled nodes where a branch is inferior (grouped arbitration of the fitted model's r̃, as in
training), that branch's mean top-class probability, its mean probability on the true class, and its accuracy;
then the fused validation / test scores.

    OMP_NUM_THREADS=1 python benchmarks/scripts/guided_confidence.py DATASET SPLIT SEED [METHODS]

METHODS: comma-separated (default graphmnl,graphmnl-mnl-loss,graphmnl-kd,graphmnl-no-guidance).
"""

import sys

import torch

from magkit.data import load_dataset
from magkit.methods import create


def main(argv: list[str]) -> None:
    torch.set_num_threads(1)
    data, split, seed = argv[0], argv[1], int(argv[2])
    methods = (argv[3] if len(argv) > 3 else "graphmnl,graphmnl-mnl-loss,graphmnl-kd,graphmnl-no-guidance").split(",")
    g = load_dataset(data, split=split, seed=seed)
    for method in methods:
        est = create(method, seed=seed, epochs=200, patience=30).fit(g)
        _, _, z = est.kind_logits(g)
        p = torch.softmax(z, -1)
        rel = est._inputs(g).extra["reliability"]
        present = est.model_.branch_present(g.modality_mask)
        inferior, _ = est._grouped_arbitration(rel, present)
        unl = ~g.train_mask
        parts = []
        for j, b in enumerate(est.branches_):
            sel = inferior[:, j] & unl
            if int(sel.sum()) == 0:
                continue
            pb = p[sel, j]
            top = pb.max(1).values.mean()
            true = pb.gather(1, g.y[sel].view(-1, 1)).mean()
            acc = (pb.argmax(1) == g.y[sel]).float().mean()
            parts.append(f"{b} n={int(sel.sum())} top {top:.3f} true {true:.3f} acc {acc:.3f}")
        v, t = est.score(g, "val"), est.score(g, "test")
        print(f"{method:22s} val {100 * v['acc']:.2f}/{100 * v['f1']:.2f} test {100 * t['acc']:.2f}/{100 * t['f1']:.2f} | "
              + " | ".join(parts), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
