"""Validation-only check of ``kind_weights="validation"`` (the grouped fusion's kind shares fitted after training):
two-fold cross-fitting on the validation nodes, so that no test label is read and no share is scored on the nodes
it was fitted on.

    OMP_NUM_THREADS=1 python benchmarks/scripts/kind_shares.py OUT.jsonl DATASET SPLIT SEEDS

For each seed: fit GraphMNL with its defaults (hidden 128, <= 200 epochs, patience 30), split the validation nodes
at random into halves A and B, fit the shares on A (minimum fused cross-entropy over the simplex grid, step 0.05,
as the estimator does), score on B, and the other way round. One JSON line per seed: the fitted shares per fold
and accuracy / macro-F1 on the held-out half for equal shares, fitted shares and the struct branch alone, each
averaged over the two folds. Criteria for the fit: ``fitted`` (cross-entropy, what the estimator uses),
``fitted_bal`` (class-balanced cross-entropy), ``fitted_acc`` (accuracy) and ``fitted_f1`` (macro-F1); ties go
to the first grid point. With ``CACHE_DIR`` (5th argument) each fit's per-kind logits are saved there and reused. Lines already in OUT (same dataset, split, seed) are skipped.
"""

import json
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from magkit.data import load_dataset
from magkit.eval.experiment import parse_seeds
from magkit.functional import macro_f1, prior_once_fusion
from magkit.methods import create
from magkit.methods.graphmnl import _compositions


def fuse(zk, kp, w, log_prior=None):
    """The grouped fusion with kind shares w (and the prior counted once where ``log_prior`` is given)."""
    share = kp * w
    share = share / share.sum(1, keepdim=True).clamp(min=1e-12)
    fused = (share.unsqueeze(-1) * zk).sum(1)
    return fused if log_prior is None else prior_once_fusion(fused, share, log_prior)


def main(argv: list[str]) -> None:
    out, data, split, seeds = Path(argv[0]), argv[1], argv[2], parse_seeds(argv[3])
    cache = Path(argv[4]) if len(argv) > 4 else None
    torch.set_num_threads(1)
    done = set()
    if out.exists():
        done = {(r["dataset"], r["split"], r["seed"]) for r in map(json.loads, out.read_text().splitlines())}
    for seed in seeds:
        if (data, split, seed) in done:
            continue
        t0 = time.time()
        graph = load_dataset(data, split=split, seed=seed)
        path = cache / f"{data.replace(':', '_')}_{split.replace(':', '_')}_{seed}.pt" if cache else None
        if path is not None and path.exists():
            saved = torch.load(path)
            zk, kp, struct, kinds = saved["zk"], saved["kp"], saved["struct"], saved["kinds"]
            log_prior = saved.get("log_prior")
        else:
            est = create("graphmnl", seed=seed, hidden=128, epochs=200, patience=30).fit(graph)
            zk, kp, z = est.kind_logits(graph)
            kinds = list(est.model_.kinds())
            struct = z[:, est.branches_.index("struct")] if "struct" in est.branches_ else None
            log_prior = est.model_.log_prior if est.model_.fusion_prior != "none" else None
            if path is not None:
                path.parent.mkdir(parents=True, exist_ok=True)
                torch.save({"zk": zk, "kp": kp, "struct": struct, "kinds": kinds, "log_prior": log_prior}, path)
        val, y, c = graph.split_index("val"), graph.y, graph.num_classes
        perm = val[torch.randperm(val.numel(), generator=torch.Generator().manual_seed(seed))]
        halves = (perm[: perm.numel() // 2], perm[perm.numel() // 2:])
        grid = [torch.tensor(g, dtype=torch.float32) / 20 for g in _compositions(20, len(kinds))]

        def criteria(idx, y=y, c=c):
            cw = 1.0 / torch.bincount(y[idx], minlength=c).clamp(min=1).float()
            return {  # lower is better
                "fitted": lambda lg: float(F.cross_entropy(lg, y[idx])),
                # class-balanced: each class's nodes weigh the same in total (macro-F1's view)
                "fitted_bal": lambda lg: float(F.cross_entropy(lg, y[idx], weight=cw)),
                "fitted_acc": lambda lg: -float((lg.argmax(1) == y[idx]).float().mean()),
                "fitted_f1": lambda lg: -macro_f1(lg, y[idx], c),
            }

        scores = {k: [] for k in ("equal", "fitted", "fitted_bal", "fitted_acc", "fitted_f1", "struct")}
        shares = {k: [] for k in ("fitted", "fitted_bal", "fitted_acc", "fitted_f1")}
        for fit_idx, held in (halves, halves[::-1]):
            cands = {"equal": fuse(zk, kp, torch.ones(len(kinds)), log_prior), "struct": struct}
            for name, crit in criteria(fit_idx).items():
                w = min(grid, key=lambda g: crit(fuse(zk[fit_idx], kp[fit_idx], g, log_prior)))
                shares[name].append(dict(zip(kinds, [round(float(v), 2) for v in w])))
                cands[name] = fuse(zk, kp, w, log_prior)
            for name, logits in cands.items():
                if logits is None:
                    continue
                scores[name].append(((logits[held].argmax(1) == y[held]).float().mean().item(),
                                     macro_f1(logits[held], y[held], c)))
        rec = {"dataset": data, "split": split, "seed": seed, "shares": shares,
               "seconds": round(time.time() - t0, 1)}
        for name, v in scores.items():
            if v:
                rec[f"{name}_acc"] = sum(a for a, _ in v) / len(v)
                rec[f"{name}_f1"] = sum(f for _, f in v) / len(v)
        with out.open("a") as f:
            f.write(json.dumps(rec) + "\n")
        print(f"{data} {split} seed {seed}: held-out val acc / F1: "
              + ", ".join(f"{k} {100 * rec[k + '_acc']:.2f} / {100 * rec[k + '_f1']:.2f}" for k in scores if scores[k]),
              flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
