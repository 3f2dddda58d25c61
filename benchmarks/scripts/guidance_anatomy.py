"""What the NL guidance actually teaches (session 16, after the seventeenth round): one GraphMNL fit per graph and
seed, with the guidance term observed (not changed) every epoch it is on. For the guided (node, inferior branch)
pairs it records:

* ``pairs``: how many there are, and the share of unlabelled nodes with at least one;
* ``neg_size``: the mean size of the negative set C̄(i), against C − 1 (the most it can be);
* ``agree``: the share of pairs whose student (the guided branch) already predicts the teacher's class;
* on the pairs where student and teacher disagree: the share where the teacher is right, and where the student is
  right (the graph's labels are read here for the diagnosis only; the fit never sees them off the training nodes);
* ``loss_on_student_top``: the share of the pairs' NL loss that falls on the student's own predicted class (the
  one place where the negative set can tell the student something it does not already believe);
* ``alpha``: the guided branch's weight α_b(i) in that epoch's fused prediction at its guided node, against the
  weight of its kind's dominant branch there (``alpha_dom``), and the share of pairs with α_b(i) < 0.05.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/scripts/guidance_anatomy.py GRAPH[,GRAPH] SEED[,SEED] [OUT.txt [VARIANT]]

GRAPH: a name of ``oracle_teacher.GRAPHS`` (``biased``, ``grocery-bal-5``); VARIANT: a guided variant of
``oracle_teacher.VARIANTS`` (default ``learned``, GraphMNL as it is; e.g. ``oracle``, ``anti``, ``proj``; not
``randneg``, whose random draws the observation would shift).
"""

import statistics as st
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from oracle_teacher import GRAPHS, fit  # noqa: E402


def anatomy(graph, seed: int, variant: str = "learned"):
    """Fit ``variant`` (a guided variant of ``oracle_teacher.VARIANTS``); returns one record per guided epoch and the
    fitted estimator."""
    records: list[dict] = []
    est = fit(graph, variant, seed, prepare=lambda est: observe(est, graph.y, records))
    return records, est


def observe(est, y, records: list[dict]) -> None:
    """Wrap ``est``'s loss, guidance state and guidance term so that every guided epoch appends a record."""
    import magkit.methods.graphmnl as gm
    from magkit.functional import _log1m_softmax

    original = est._guidance
    original_loss, original_state = est._loss, est._guidance_state
    seen: dict = {}

    def loss_seen(out, *a, **kw):
        seen["alpha"] = out["alpha"].detach()
        return original_loss(out, *a, **kw)

    def state_seen(*a, **kw):
        st_ = original_state(*a, **kw)
        seen["inferior"], seen["r"], seen["present"] = st_["inferior"], st_["r"], a[0]["present"]
        return st_

    est._loss, est._guidance_state = loss_seen, state_seen

    def observed(z, rows, p_dom, g, n_total, labelled=None, y_train=None):
        with torch.no_grad():
            lab = est._labelled if labelled is None else labelled
            ytr = est._y_train if y_train is None else y_train
            neg = gm.negative_set(p_dom, ytr, lab, rho=None if est.params["nl_k"] else est.params["rho"],
                                  k=est.params["nl_k"])[rows]
            cols = ((g > 0).unsqueeze(1) & seen["inferior"]).T.nonzero(as_tuple=True)[0]
            alpha = seen["alpha"]
            # the dominant of the guided branch's kind at the node: the kind's present branch of largest weight
            kind_cols = est.model_.kind_columns()
            kind_of = {j: cc for cc in kind_cols for j in cc}
            a_dom = torch.stack([alpha[:, kind_of[int(j)]].max(1).values for j in range(alpha.shape[1])], 1)
            keep = ~lab[rows].to(rows.device)
            r, zz, nn, cc = rows[keep], z[keep].detach(), neg[keep], cols[keep]
            if r.numel():
                t = p_dom[r].argmax(1)
                s = zz.argmax(1)
                yt = y[r.cpu()].to(t.device)
                dis = t != s
                per = -(_log1m_softmax(zz) * nn)
                top = torch.zeros_like(nn).scatter_(1, s.view(-1, 1), True) & nn
                records.append({
                    "pairs": int(r.numel()),
                    "nodes": int(torch.unique(r).numel()),
                    "neg_size": float(nn.float().sum(1).mean()),
                    "agree": float((~dis).float().mean()),
                    "disagree_teacher_right": float((t[dis] == yt[dis]).float().mean()) if dis.any() else float("nan"),
                    "disagree_student_right": float((s[dis] == yt[dis]).float().mean()) if dis.any() else float("nan"),
                    "teacher_right": float((t == yt).float().mean()),
                    "student_right": float((s == yt).float().mean()),
                    "loss_on_student_top": float((per * top).sum() / per.sum().clamp_min(1e-12)),
                    "alpha": float(alpha[r, cc].mean()),
                    "alpha_dom": float(a_dom[r, cc].mean()),
                    "alpha_small": float((alpha[r, cc] < 0.05).float().mean()),
                })
        return original(z, rows, p_dom, g, n_total, labelled, y_train)

    est._guidance = observed


def main(argv: list[str]) -> None:
    from magkit.data import load_dataset

    torch.set_num_threads(1)
    out = Path(argv[2]) if len(argv) > 2 and argv[2] != "-" else None
    variant = argv[3] if len(argv) > 3 else "learned"
    lines = []
    for gname in argv[0].split(","):
        data, split, kwargs = GRAPHS[gname]
        for seed in (int(s) for s in argv[1].split(",")):
            graph = load_dataset(data, split=split, seed=seed, **kwargs)
            recs, est = anatomy(graph, seed, variant)
            n_unl = int((~graph.train_mask).sum())
            c = graph.num_classes
            lines.append(f"{gname} seed {seed}, variant {variant}: C = {c}, unlabelled nodes {n_unl}, guided epochs {len(recs)}")
            accs = est.diagnostics_["branch_val_acc"]
            lines.append(f"  validation accuracy: fused {100 * est.score(graph, 'val')['acc']:.2f}; per branch "
                         + ", ".join(f"{b} {100 * a:.2f}" for b, a in accs.items()))
            if not recs:
                continue
            for name, sel in (("first 10 guided epochs", recs[:10]), ("last 10 guided epochs", recs[-10:]),
                              ("all guided epochs", recs)):
                def m(k, rs=sel):
                    v = [x[k] for x in rs if x[k] == x[k]]
                    return st.mean(v) if v else float("nan")
                lines.append(
                    f"  {name:22s} pairs {m('pairs'):8.0f}  guided nodes {100 * m('nodes') / n_unl:5.1f}%  "
                    f"|C̄| {m('neg_size'):5.2f} of {c - 1}  student = teacher {100 * m('agree'):5.1f}%  "
                    f"teacher right {100 * m('teacher_right'):5.1f}%  student right {100 * m('student_right'):5.1f}%  "
                    f"| disagreeing: teacher right {100 * m('disagree_teacher_right'):5.1f}%  "
                    f"student right {100 * m('disagree_student_right'):5.1f}%  "
                    f"| NL loss on the student's class {100 * m('loss_on_student_top'):5.1f}%  "
                    f"| fusion weight: guided {m('alpha'):.3f}, its kind's dominant {m('alpha_dom'):.3f}, "
                    f"guided < 0.05 on {100 * m('alpha_small'):5.1f}%")
            print("\n".join(lines[-5:]), flush=True)
    if out is not None:
        out.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main(sys.argv[1:])
