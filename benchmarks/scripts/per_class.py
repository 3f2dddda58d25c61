"""Per-class recall, precision and prediction counts of two methods on the validation nodes (exploration).

    OMP_NUM_THREADS=1 python benchmarks/scripts/per_class.py DATASET SPLIT SEED [METHOD_A] [METHOD_B]

Fits both methods with the suite's parameters (hidden 128, <= 200 epochs, patience 30; defaults graphmnl and
sage-early) and prints one line per class, largest training class first.
"""

import sys

import torch

from magkit.data import load_dataset
from magkit.methods import create


def main(argv: list[str]) -> None:
    data, split, seed = argv[0], argv[1], int(argv[2])
    methods = (argv[3] if len(argv) > 3 else "graphmnl", argv[4] if len(argv) > 4 else "sage-early")
    torch.set_num_threads(1)
    g = load_dataset(data, split=split, seed=seed)
    val, y, c = g.split_index("val"), g.y, g.num_classes
    yv = y[val]
    res = {}
    for m in methods:
        est = create(m, seed=seed, hidden=128, epochs=200, patience=30).fit(g)
        pred = est.predict_proba(g)[val].argmax(1)
        rec = [float((pred[yv == k] == k).float().mean()) if bool((yv == k).any()) else float("nan") for k in range(c)]
        prec = [float((yv[pred == k] == k).float().mean()) if bool((pred == k).any()) else float("nan") for k in range(c)]
        res[m] = (rec, prec, torch.bincount(pred, minlength=c).tolist())
        print(m, {k: round(100 * v, 2) for k, v in est.score(g, "val").items()})
    n_train = torch.bincount(y[g.train_mask], minlength=c)
    n_val = torch.bincount(yv, minlength=c)
    a, b = methods
    print(f"class  train  val | recall {a} / {b} | precision {a} / {b} | predicted {a} / {b}")
    for k in torch.argsort(n_train, descending=True).tolist():
        print(f"{k:5d} {int(n_train[k]):6d} {int(n_val[k]):4d} | {res[a][0][k]:.2f} / {res[b][0][k]:.2f} | "
              f"{res[a][1][k]:.2f} / {res[b][1][k]:.2f} | {res[a][2][k]} / {res[b][2][k]}")


if __name__ == "__main__":
    main(sys.argv[1:])
