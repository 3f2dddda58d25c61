"""Per-class recall, precision and prediction counts of two methods on the validation nodes (exploration).

    OMP_NUM_THREADS=1 python benchmarks/scripts/per_class.py DATASET SPLIT SEED [METHOD_A] [METHOD_B]

Fits both methods with the suite's parameters (hidden 128, <= 200 epochs, patience 30; defaults graphmnl and
sage-early) and prints one line per class, largest training class first. Where METHOD_A is a GraphMNL, the
last column is each branch kind's recall (raw, prop, struct: the kind's within-kind fused logits, as the fusion
sees them).
"""

import sys

import torch

from magkit.data import load_dataset
from magkit.methods import create
from magkit.methods.graphmnl import GraphMNL


def main(argv: list[str]) -> None:
    data, split, seed = argv[0], argv[1], int(argv[2])
    methods = (argv[3] if len(argv) > 3 else "graphmnl", argv[4] if len(argv) > 4 else "sage-early")
    torch.set_num_threads(1)
    g = load_dataset(data, split=split, seed=seed)
    val, y, c = g.split_index("val"), g.y, g.num_classes
    yv = y[val]
    res = {}
    kinds = {}
    for m in methods:
        est = create(m, seed=seed, hidden=128, epochs=200, patience=30).fit(g)
        pred = est.predict_proba(g)[val].argmax(1)
        rec = [float((pred[yv == k] == k).float().mean()) if bool((yv == k).any()) else float("nan") for k in range(c)]
        prec = [float((yv[pred == k] == k).float().mean()) if bool((pred == k).any()) else float("nan") for k in range(c)]
        res[m] = (rec, prec, torch.bincount(pred, minlength=c).tolist())
        if m == methods[0] and isinstance(est, GraphMNL):
            zk = est.kind_logits(g)[0]
            kinds = {kind: zk[val, j].argmax(1) for j, kind in enumerate(est.model_.kinds())}
        print(m, {k: round(100 * v, 2) for k, v in est.score(g, "val").items()})
    n_train = torch.bincount(y[g.train_mask], minlength=c)
    n_val = torch.bincount(yv, minlength=c)
    a, b = methods
    head = f"class  train  val | recall {a} / {b} | precision {a} / {b} | predicted {a} / {b}"
    print(head + (f" | recall of {a}'s kinds {' / '.join(kinds)}" if kinds else ""))
    for k in torch.argsort(n_train, descending=True).tolist():
        line = (f"{k:5d} {int(n_train[k]):6d} {int(n_val[k]):4d} | {res[a][0][k]:.2f} / {res[b][0][k]:.2f} | "
                f"{res[a][1][k]:.2f} / {res[b][1][k]:.2f} | {res[a][2][k]} / {res[b][2][k]}")
        if kinds:
            line += " | " + " / ".join(f"{float((p[yv == k] == k).float().mean()):.2f}" for p in kinds.values())
        print(line)


if __name__ == "__main__":
    main(sys.argv[1:])
