"""Which per-node evidence detects the worse modality, in particular a confidently wrong (biased) one? Fits
graphmnl-no-guidance once and prints, for candidate scores, the reliability AUC on the test nodes (how well the
score ranks the truly better of the two modalities, ``magkit.functional.reliability_auc``) over all decided nodes
and over the nodes where exactly one modality is biased; then per-branch test accuracy on those nodes and the rest:

    OMP_NUM_THREADS=1 python benchmarks/scripts/reliability_candidates.py DATASET SPLIT SEED [DATA_KWARGS]

Needs a generated graph (gt_quality, gt_biased). Candidates: the smoothed score GraphMNL uses (r̃), its unsmoothed
score, the confidence and neighbour-agreement parts, agreement smoothed, agreement with the node's own struct
branch and with its own fused prediction.
"""

import ast
import sys

import torch

from magkit.data import load_dataset
from magkit.functional import branch_scores, reliability_auc, smooth_scores
from magkit.methods import create
from magkit.train.propagation import graph_adjacency


def main(argv: list[str]) -> None:
    torch.set_num_threads(1)
    data, split, seed = argv[0], argv[1], int(argv[2])
    kw = ast.literal_eval(argv[3]) if len(argv) > 3 else {}
    g = load_dataset(data, split=split, seed=seed, **kw)
    est = create("graphmnl-no-guidance", seed=seed, epochs=200, patience=30).fit(g)
    _, _, z = est.kind_logits(g)
    br = est.branches_
    p = torch.softmax(z, -1)
    rel = est._inputs(g).extra["reliability"]
    fused = est.predict_proba(g)
    adj = graph_adjacency(g)
    present = est.model_.branch_present(g.modality_mask)
    lab = g.train_mask
    sc = branch_scores(p, present, torch.where(lab, g.y, torch.full_like(g.y, -1)), lab, fused, adj)
    raw = [br.index(f"raw:{m}") for m in g.modalities]
    prop = [br.index(f"prop:{m}") for m in g.modalities]
    st = br.index("struct")
    test = g.test_mask

    def auc(r, cols, only_biased=False):
        # gap 10: no node is decided by quality, so only the nodes with exactly one biased modality count
        return reliability_auc(r[test][:, cols], g.gt_quality[test], g.modality_mask[test], g.gt_biased[test],
                               gap=10.0 if only_biased else 0.05)

    cands = {
        "r~ (used)": rel,
        "score": sc["score"],
        "confidence": sc["confidence"],
        "agreement": sc["agreement"],
        "agree smoothed": smooth_scores(sc["agreement"], present, adj, 0.5, 2),
        "agree w/ struct": (p * p[:, st:st + 1]).sum(-1),
        "agree w/ fused(i)": (p * fused.unsqueeze(1)).sum(-1),
    }
    for name, r in cands.items():
        print(f"{name:20s} raw all {auc(r, raw):.3f} biased-only {auc(r, raw, True):.3f} | "
              f"prop all {auc(r, prop):.3f} biased-only {auc(r, prop, True):.3f}")
    ob = (g.gt_biased.sum(1) == 1) & test
    print("test nodes with exactly one biased modality:", int(ob.sum()), "of", int(test.sum()))
    pred = fused.argmax(1)
    print(f"fused test acc on one-biased nodes {(pred[ob] == g.y[ob]).float().mean():.3f}, "
          f"others {(pred[test & ~ob] == g.y[test & ~ob]).float().mean():.3f}")
    for j, b in enumerate(br):
        pb = p[:, j].argmax(1)
        print(f"{b} acc on one-biased {(pb[ob] == g.y[ob]).float().mean():.3f} "
              f"others {(pb[test & ~ob] == g.y[test & ~ob]).float().mean():.3f}")


if __name__ == "__main__":
    main(sys.argv[1:])
