"""Which per-node evidence detects the worse modality, in particular a confidently wrong (biased) one? Fits
graphmnl-no-guidance once and prints, for candidate scores, the reliability AUC on the test nodes (how well the
score ranks the truly better of the two modalities, ``magkit.functional.reliability_auc``) over all decided nodes
and over the nodes where exactly one modality is biased; then per-branch test accuracy on those nodes and the rest:

    OMP_NUM_THREADS=1 python benchmarks/scripts/reliability_candidates.py DATASET SPLIT SEED [DATA_KWARGS]

Needs a generated graph (gt_quality, gt_biased). Candidates: the smoothed score GraphMNL uses (r̃), its unsmoothed
score, the confidence and neighbour-agreement parts, agreement smoothed, agreement with the node's own struct
branch and with its own fused prediction; and (session 14) signals read in the modality's own neighbourhood:
raw:m against prop:m at the node, raw:m against the neighbours' raw:m, and the cosine between a node's features
(input x_m, or the fitted shared projection h_m) and the mean of its neighbours' (feature homophily; the
percentile within the modality where the two modalities' cosines are not on one scale).
"""

import ast
import sys

import torch
import torch.nn.functional as F

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

    # the modality's own neighbourhood (session 14): a plain neighbour mean without self-loops
    n = g.num_nodes
    ei = g.edge_index[:, g.edge_index[0] != g.edge_index[1]]
    nbr = torch.sparse_coo_tensor(ei.flip(0), torch.ones(ei.shape[1]), (n, n)).coalesce()
    deg = torch.sparse.sum(nbr, 1).to_dense().unsqueeze(1).clamp(min=1e-12)
    inp = est._inputs(g)
    with torch.no_grad():
        h_raw, _ = est.model_.eval()._hidden_prop(inp)

    def nb_mean(x):
        return torch.sparse.mm(nbr, x) / deg

    def pct(v, have):
        out = torch.zeros_like(v)
        idx = have.nonzero().squeeze(1)
        out[idx] = v[idx].argsort().argsort().float() / max(len(idx) - 1, 1)
        return out

    def own(f):  # [n, B]: f(j) for modality j in both of its columns (raw:m and prop:m)
        r = torch.zeros(p.shape[:2])
        for j in range(len(g.modalities)):
            r[:, raw[j]] = r[:, prop[j]] = f(j)
        return r

    def homophily(x, j, percentile):
        c = F.cosine_similarity(x, nb_mean(x), dim=1)
        return pct(c, g.modality_mask[:, j]) if percentile else c

    mods = g.modalities
    own_cands = {
        "raw:m vs prop:m": own(lambda j: (p[:, raw[j]] * p[:, prop[j]]).sum(-1)),
        "raw:m vs nbrs' raw:m": own(lambda j: (p[:, raw[j]] * nb_mean(p[:, raw[j]])).sum(-1)),
        "x homophily": own(lambda j: homophily(inp.xs[mods[j]].float(), j, False)),
        "x homophily pct": own(lambda j: homophily(inp.xs[mods[j]].float(), j, True)),
        "h homophily": own(lambda j: homophily(h_raw[mods[j]], j, False)),
        "h homophily pct": own(lambda j: homophily(h_raw[mods[j]], j, True)),
    }

    cands = {
        "r~ (used)": rel,
        "score": sc["score"],
        "confidence": sc["confidence"],
        "agreement": sc["agreement"],
        "agree smoothed": smooth_scores(sc["agreement"], present, adj, 0.5, 2),
        "agree w/ struct": (p * p[:, st:st + 1]).sum(-1),
        "agree w/ fused(i)": (p * fused.unsqueeze(1)).sum(-1),
        **own_cands,
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
