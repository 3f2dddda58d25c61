"""Does subtracting t · log π (π the training labels' class shares, add-one smoothed) from a single model's
logits help it the way GraphMNL's prior-once fusion helps GraphMNL? Validation nodes only; post-hoc, no refit.

    OMP_NUM_THREADS=1 python benchmarks/scripts/prior_adjust.py

For three settings, three baselines and seeds 0 and 1 (hidden 128, <= 200 epochs, patience 30, as in the
benchmark) one line: val accuracy / macro-F1 (%) for t = 0, 1/3, 1/2, 2/3 (GraphMNL's correction with three
equal experts) and 1 (full logit adjustment).
"""

import torch

from magkit.data import load_dataset
from magkit.functional import macro_f1
from magkit.methods import create

SETTINGS = [("grocery-semi:text-dominant", "magb"), ("grocery-semi:balanced", "rate:0.05"),
            ("grocery-semi:text-dominant", "rate:0.01")]
METHODS = ["sage-early", "appnp-early", "mlp-late"]


def main() -> None:
    torch.set_num_threads(1)
    for data, split in SETTINGS:
        for method in METHODS:
            for seed in (0, 1):
                g = load_dataset(data, split=split, seed=seed)
                est = create(method, seed=seed, hidden=128, epochs=200, patience=30).fit(g)
                lg = torch.log(est.predict_proba(g).clamp_min(1e-12))
                val, c = g.split_index("val"), g.num_classes
                y = g.y[val]
                pi = torch.bincount(g.y[g.split_index("train")], minlength=c).float() + 1
                pi = pi / pi.sum()
                out = [data, split, method, seed]
                for t in (0, 1 / 3, 0.5, 2 / 3, 1.0):
                    adj = lg - t * pi.log()
                    out.append(f"{t:.2f}: {100 * (adj[val].argmax(1) == y).float().mean():.2f}/"
                               f"{100 * macro_f1(adj[val], y, c):.2f}")
                print(*out, flush=True)


if __name__ == "__main__":
    main()
