"""Seventeenth round (pre-registered, session 15): does the direction of negative learning matter, and does NL
carry class information at all? GraphMNL with its arbitration replaced, on graphs that know every node's better
modality, one JSON line per (graph, variant, seed):

    OMP_NUM_THREADS=1 python benchmarks/scripts/oracle_teacher.py run OUT.jsonl GRAPHS SEEDS VARIANTS
    python benchmarks/scripts/oracle_teacher.py compare OUT.jsonl [REFERENCE_VARIANT]

GRAPHS: comma-separated names of ``GRAPHS`` below; SEEDS, VARIANTS: comma-separated (``all``: every variant).
Variants (everything else is GraphMNL's defaults; the fusion keeps the learned reliability in every variant, only
the arbitration that directs the guidance is replaced):

* ``learned``: GraphMNL as it is;
* ``fixed``: the registered ablation ``fixed_dominant="auto"``, one global dominant modality;
* ``oracle``: per node, the truly better modality dominates: the branches of modality m score 1 where m's true
  quality is the highest of the node's modalities (q_{i,m} for raw:m, (Â^K q)_{i,m} for prop:m; q set to 0 where
  the generator biased m at i, since it then points confidently to a confusable class), 0 elsewhere; plus
  10⁻³ × the learned score to break ties, exactly the form of the fixed-dominant ablation;
* ``anti``: the truly worse modality dominates (the same with the lowest quality);
* ``random``: a modality drawn uniformly per node once per fit dominates;
* ``randneg``: learned arbitration, but every guided node's negative set is replaced, each epoch, by as many
  non-target classes drawn uniformly at random (the target, the label or the teacher's prediction, stays out);
* ``none``: λ = 0 (no guidance; ``graphmnl-no-guidance``);
* ``proj``, ``proj-oracle``, ``proj-anti`` (eighteenth round): ``learned``, ``oracle``, ``anti`` with
  ``guide_heads_only=False``, the guidance reaching the modality's shared first-layer projection P_m as well as the
  branch's head.

* ``allfused`` (nineteenth round): ``guide_targets="all", teacher="fused"``, every present branch at a gated node (the
  struct GNN included) guided by the fused prediction.

``all`` runs the seventeenth round's seven variants; the ``proj*`` variants are named explicitly.

``compare`` prints per graph and pooled the paired differences variant − reference (default ``learned``) on
validation and test accuracy / macro-F1 (points), with the std of the differences and t = mean / (std / √n).
"""

import json
import statistics as st
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from robustness_panel import GRAPHS as PANEL  # noqa: E402

GRAPHS = {
    # the panel graph with the most node-level imbalance (a quarter of each modality confidently wrong)
    "biased": ("synthetic:balanced", "rate:0.05", PANEL["biased"]),
    # the benchmark's Grocery structure, balanced profile, 5% labels
    "grocery-bal-5": ("grocery-semi:balanced", "rate:0.05", {}),
}
VARIANTS = ("learned", "fixed", "oracle", "anti", "random", "randneg", "none", "proj", "proj-oracle", "proj-anti",
            "allfused")
# ``all`` on the command line: the seventeenth round's variants (the eighteenth round's ``proj*`` are named)
ROUND17 = VARIANTS[:7]
KEYS = ("val_acc", "val_f1", "test_acc", "test_f1")


def truth_indicator(graph, branches, k: int, mode: str, seed: int) -> torch.Tensor:
    """[n, B] float: 1 for the branches of the modality that dominates node i under ``mode``, 0 elsewhere."""
    from magkit.exceptions import ConfigError
    from magkit.train.propagation import propagate

    q = graph.get("gt_quality")
    if q is None:
        raise ConfigError(f"{graph.name}: no gt_quality (the oracle needs a generated graph with ground truth)")
    q = q.float()
    biased = graph.get("gt_biased")
    if biased is not None:
        q = q * (~biased.bool()).float()
    mask = graph.get("modality_mask")
    present = mask.bool() if mask is not None else torch.ones_like(q, dtype=torch.bool)
    qk = propagate(graph, q, k)
    n, nm = q.shape
    if mode == "random":
        g = torch.Generator().manual_seed(1000 + seed)
        draw = torch.rand(n, nm, generator=g).masked_fill(~present, -1.0)
        pick = {"raw": draw.argmax(1), "prop": draw.argmax(1)}
    else:
        pick = {}
        for kind, qq in (("raw", q), ("prop", qk)):
            if mode == "oracle":
                pick[kind] = qq.masked_fill(~present, -1.0).argmax(1)
            else:  # anti: the worse of the present modalities
                pick[kind] = qq.masked_fill(~present, 1e9).argmin(1)
    cols = []
    for b in branches:
        if ":" not in b or b.startswith("struct"):
            cols.append(torch.zeros(n))
            continue
        kind, m = b.split(":", 1)
        cols.append((pick[kind] == graph.modalities.index(m)).float())
    return torch.stack(cols, 1)


def random_negatives(neg: torch.Tensor, p_dom: torch.Tensor, target: torch.Tensor, labelled: torch.Tensor,
                     gen: torch.Generator) -> torch.Tensor:
    """As many classes per row as ``neg`` has, drawn uniformly among the non-target classes (target: the label on
    labelled nodes, the teacher's predicted class elsewhere)."""
    n, c = neg.shape
    tgt = torch.where(labelled.to(neg.device), target.to(neg.device), p_dom.argmax(1))
    score = torch.rand(n, c, generator=gen).to(neg.device)
    score[torch.arange(n), tgt] = 2.0  # never drawn
    rank = score.argsort(1).argsort(1)
    return rank < neg.sum(1, keepdim=True)


def fit(graph, variant: str, seed: int, prepare=None):
    """Fit ``variant`` on ``graph``; ``prepare(est)``, if given, is called on the estimator just before its fit."""
    import magkit.methods.graphmnl as gm
    from magkit.methods import create

    if variant == "none":
        est = create("graphmnl-no-guidance", seed=seed, epochs=200, patience=30)
        if prepare is not None:
            prepare(est)
        return est.fit(graph)
    params = {}
    if variant == "allfused":  # nineteenth round: every present branch, the struct GNN included, guided by the fusion
        params.update(guide_targets="all", teacher="fused")
        variant = "learned"
    if variant.startswith("proj"):  # eighteenth round: the guidance also reaches the shared projections P_m
        params["guide_heads_only"] = False
        variant = variant[5:] or "learned"
    if variant in ("fixed", "oracle", "anti", "random"):
        params["fixed_dominant"] = "auto"
    est = create("graphmnl", seed=seed, epochs=200, patience=30, **params)
    if variant in ("oracle", "anti", "random"):
        cache: dict = {}

        def fixed_rel(r, present):
            if "ind" not in cache:
                cache["ind"] = truth_indicator(graph, est.branches_, est.params["prop_k"], variant, seed).to(r.device)
            return torch.where(present, cache["ind"] + 1e-3 * r, torch.zeros_like(r))

        est._fixed_reliability = fixed_rel
    original = gm.negative_set
    if variant == "randneg":
        gen = torch.Generator().manual_seed(2000 + seed)

        def patched(p_dom, target, labelled, **kw):
            return random_negatives(original(p_dom, target, labelled, **kw), p_dom, target, labelled, gen)

        gm.negative_set = patched
    if prepare is not None:
        prepare(est)
    try:
        est.fit(graph)
    finally:
        gm.negative_set = original
    return est


def run(argv: list[str]) -> None:
    from magkit.data import load_dataset

    torch.set_num_threads(1)
    out = Path(argv[0])
    graphs = argv[1].split(",")
    seeds = [int(s) for s in argv[2].split(",")]
    variants = list(ROUND17) if argv[3] == "all" else argv[3].split(",")
    bad = [v for v in variants if v not in VARIANTS]
    if bad:
        raise SystemExit(f"unknown variant(s) {', '.join(bad)}; known: {', '.join(VARIANTS)}")
    done = set()
    if out.exists():
        done = {(r["graph"], r["variant"], r["seed"]) for r in map(json.loads, out.read_text().splitlines())}
    for gname in graphs:
        data, split, kwargs = GRAPHS[gname]
        for seed in seeds:
            todo = [v for v in variants if (gname, v, seed) not in done]
            if not todo:
                continue
            graph = load_dataset(data, split=split, seed=seed, **kwargs)
            for v in todo:
                t0 = time.time()
                est = fit(graph, v, seed)
                va, te = est.score(graph, "val"), est.score(graph, "test")
                rec = {"graph": gname, "variant": v, "seed": seed, "dataset": data, "split": split,
                       "val_acc": va["acc"], "val_f1": va["f1"], "test_acc": te["acc"], "test_f1": te["f1"],
                       "epochs": len(est.history_.series("time")), "seconds": round(time.time() - t0, 1)}
                with out.open("a") as f:
                    f.write(json.dumps(rec) + "\n")
                print(f"{gname:14s} {v:8s} seed {seed}  val {100 * va['acc']:.2f}/{100 * va['f1']:.2f}  "
                      f"test {100 * te['acc']:.2f}/{100 * te['f1']:.2f}  {rec['seconds']:.0f}s", flush=True)


def _line(diffs: dict[str, list[float]]) -> str:
    cells = []
    for k in KEYS:
        d = [100 * x for x in diffs[k]]
        if len(d) > 1:
            sd = st.stdev(d)
            t = st.mean(d) / (sd / len(d) ** 0.5) if sd > 0 else float("nan")
            cells.append(f"{st.mean(d):+.2f} ± {sd:.2f}" + (f" (t {t:.1f})" if abs(t) >= 2 else ""))
        else:
            cells.append(f"{st.mean(d):+.2f}")
    return " | ".join(cells)


def compare(argv: list[str]) -> None:
    rows = [json.loads(x) for x in Path(argv[0]).read_text().splitlines() if x]
    ref = argv[1] if len(argv) > 1 else "learned"
    by = {(r["graph"], r["variant"], r["seed"]): r for r in rows}
    graphs = sorted({r["graph"] for r in rows})
    print(f"variant − {ref}, paired on the seed (points): val acc | val F1 | test acc | test F1")
    print("| variant | graph | fits | val acc | val F1 | test acc | test F1 |\n| --- | --- | ---: | --- | --- | --- | --- |")
    for v in VARIANTS:
        if v == ref:
            continue
        pooled: dict[str, list[float]] = {k: [] for k in KEYS}
        for gname in graphs:
            pairs = [(by[key], by[(gname, ref, key[2])]) for key in by
                     if key[0] == gname and key[1] == v and (gname, ref, key[2]) in by]
            if not pairs:
                continue
            diffs = {k: [a[k] - b[k] for a, b in pairs] for k in KEYS}
            for k in KEYS:
                pooled[k] += diffs[k]
            print(f"| {v} | {gname} | {len(pairs)} | " + _line(diffs).replace(" | ", " | ") + " |")
        if len(graphs) > 1 and pooled["val_acc"]:
            print(f"| {v} | pooled | {len(pooled['val_acc'])} | " + _line(pooled) + " |")
    print()
    print("means (%), val acc / F1, test acc / F1:")
    for gname in graphs:
        for v in VARIANTS:
            rs = [r for r in rows if r["graph"] == gname and r["variant"] == v]
            if rs:
                m = [100 * st.mean(r[k] for r in rs) for k in KEYS]
                print(f"  {gname:14s} {v:8s} ({len(rs)}) {m[0]:.2f} / {m[1]:.2f}  {m[2]:.2f} / {m[3]:.2f}")


if __name__ == "__main__":
    {"run": run, "compare": compare}[sys.argv[1]](sys.argv[2:])
