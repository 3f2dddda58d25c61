"""How much can per-node arbitration be worth on a generated graph? GraphMNL's fusion with its learned
reliability against the same model whose within-kind fusion weights come from the generator's ground truth
(an oracle no real graph has) and against uniform within-kind weights (no arbitration at all):

    OMP_NUM_THREADS=1 python benchmarks/scripts/oracle_fusion.py DATASET SPLIT SEEDS [METHOD] [PARAMS] [DATA_KWARGS]

SEEDS like 0..1; METHOD default graphmnl-no-guidance (λ = 0, so only the fusion differs); PARAMS a Python dict
literal of extra parameters; DATA_KWARGS a dict literal passed to the
generator (e.g. "{'biased': 0.25}": a quarter of each modality's nodes confidently point to a confusable class). Variants, all trained and evaluated with the weights they name:

* learned: the method as it is (r̃ from the branch scores, softmax of r̃ / T within each kind);
* uniform: r̃ ≡ 0, so every present branch of a kind gets the same weight;
* oracle-soft: r̃ replaced by the true quality q_{i,m} (0 where the generator biased modality m at node i: it
  then points confidently to a confusable class) for raw:m and (Â^K q)_{i,m} for prop:m, same T;
* oracle-hard: the same scaled by 10³, i.e. all of a kind's weight on its truly better branch.

ORACLE_VARIANTS (environment, comma-separated) picks a subset. Prints one line per fit (val and test acc / macro-F1, %), then the mean per variant.
"""

import ast
import os
import statistics as st
import sys

import torch

from magkit.data import load_dataset
from magkit.exceptions import ConfigError
from magkit.methods import create
from magkit.train.propagation import propagate


def oracle_scores(graph, branches, k: int) -> torch.Tensor:
    q = graph.get("gt_quality")
    if q is None:
        raise ConfigError(f"{graph.name}: no gt_quality (the oracle needs a generated graph with ground truth)")
    biased = graph.get("gt_biased")
    if biased is not None:  # a biased modality points confidently to a confusable class: it is the worse one
        q = q.float() * (~biased.bool()).float()
    qk = propagate(graph, q.float(), k)
    cols = []
    for b in branches:
        if b == "struct":
            cols.append(torch.zeros(graph.num_nodes))
            continue
        kind, m = b.split(":", 1)
        j = graph.modalities.index(m)
        cols.append((q if kind == "raw" else qk)[:, j].float())
    return torch.stack(cols, 1)


def fit(variant: str, method: str, graph, seed: int, params: dict):
    est = create(method, seed=seed, epochs=200, patience=30, **params)
    if variant != "learned":
        build = est._build

        def patched_build(g, inputs):
            net = build(g, inputs)
            if variant == "uniform":
                fixed = torch.zeros(g.num_nodes, len(est.branches_))
            else:
                fixed = oracle_scores(g, est.branches_, est.params["prop_k"])
                if variant == "oracle-hard":
                    fixed = fixed * 1e3
            weights = net.fusion_weights
            net.fusion_weights = lambda rel, present: weights(fixed.to(rel), present)
            return net

        est._build = patched_build
    est.fit(graph)
    return est.score(graph, "val"), est.score(graph, "test")


def main(argv: list[str]) -> None:
    data, split, seeds = argv[0], argv[1], argv[2]
    lo, hi = (int(v) for v in seeds.split("..")) if ".." in seeds else (int(seeds), int(seeds))
    method = argv[3] if len(argv) > 3 else "graphmnl-no-guidance"
    params = ast.literal_eval(argv[4]) if len(argv) > 4 and argv[4] != "-" else {}
    data_kw = ast.literal_eval(argv[5]) if len(argv) > 5 else {}
    torch.set_num_threads(1)
    res: dict[str, list[tuple[float, float, float, float]]] = {}
    variants = os.environ.get("ORACLE_VARIANTS", "learned,uniform,oracle-soft,oracle-hard").split(",")
    for seed in range(lo, hi + 1):
        graph = load_dataset(data, split=split, seed=seed, **data_kw)
        for variant in variants:
            v, t = fit(variant, method, graph, seed, params)
            row = (100 * v["acc"], 100 * v["f1"], 100 * t["acc"], 100 * t["f1"])
            res.setdefault(variant, []).append(row)
            print(f"{data}{data_kw or ''} {split} seed {seed} {method} {variant:12s} val {row[0]:.2f}/{row[1]:.2f} "
                  f"test {row[2]:.2f}/{row[3]:.2f}", flush=True)
    for variant, rows in res.items():
        m = [st.mean(r[i] for r in rows) for i in range(4)]
        print(f"mean {variant:12s} ({len(rows)} seeds) val {m[0]:.2f}/{m[1]:.2f} test {m[2]:.2f}/{m[3]:.2f}")


if __name__ == "__main__":
    main(sys.argv[1:])
