"""Which term of the spec's gate closes it under the current transfer (fused teacher, every branch guided).

    OMP_NUM_THREADS=1 python benchmarks/scripts/gate_terms.py DATASET SPLIT [SEED]

Fits GraphMNL with ``gate=True`` (the ``graphmnl-gate`` ablation) at the benchmark's parameters (hidden 128, 200
epochs, patience 30) and prints, at a few epochs from the warm-up on, the share of nodes the instability term shuts
(s(i) >= τ_s), the share where the margin term σ(κ (m(i) − τ_m)) is below 1/2, its mean, the share with g > 1/2 and
the mean gate (nodes outside the guided set included: the gate is computed for all of them); then the teacher's
accuracy on the validation nodes where each term shuts the gate and where it is open (does the term pick the nodes
where the teacher is wrong?), and how often the true class is in the negative set C̄(i) there (what the transfer
would teach wrongly: NL only rules classes out, so a teacher wrong at its top class can still teach right).
"""

import sys

import torch

import magkit.methods.graphmnl as gm
from magkit.data import load_dataset
from magkit.functional import negative_set
from magkit.methods import create


def main(argv: list[str]) -> None:
    data, split = argv[0], argv[1]
    seed = int(argv[2]) if len(argv) > 2 else 0
    torch.set_num_threads(1)
    graph = load_dataset(data, split=split, seed=seed)
    log: list[tuple[float, ...]] = []
    orig = gm.transfer_gate

    def spy(s, m, tau_s, tau_m, kappa):
        out = orig(s, m, tau_s, tau_m, kappa)
        term = torch.sigmoid(kappa * (m - tau_m))
        log.append((float((s >= tau_s).float().mean()), float((term < 0.5).float().mean()), float(term.mean()),
                    float((out > 0.5).float().mean()), float(out.mean())))
        return out

    val = graph.split_index("val")
    yv = graph.y[val]
    acc: list[tuple[float, ...]] = []
    orig_state = gm.GraphMNL._guidance_state

    def state(self, out, epoch):
        st_ = orig_state(self, out, epoch)
        if len(acc) < len(log):  # the gate ran in this state: split the validation nodes by each term
            s, m = last["s"][val], last["m"][val]
            right = st_["teacher"][val].argmax(1) == yv
            shut_s, shut_m = s >= self.params["tau_s"], torch.sigmoid(self.params["kappa"] * (m - self.params["tau_m"])) < 0.5

            def a(mask, hit=right):
                return float(hit[mask].float().mean()) if bool(mask.any()) else float("nan")

            p = self.params
            prior = torch.bincount(self._y_train[self._labelled], minlength=graph.num_classes).float() + 1.0
            neg = negative_set(st_["teacher"], self._y_train, self._labelled, rho=p["rho"],
                               class_prior=prior if p["nl_prior"] else None)[val]
            wrong = neg[torch.arange(val.numel()), yv]  # the true class taught as unlikely
            acc.append((a(shut_s), a(~shut_s), a(shut_m), a(~shut_m), a(shut_s, wrong), a(~shut_s, wrong)))
        return st_

    last: dict = {}
    inner = spy

    def spy2(s, m, tau_s, tau_m, kappa):
        last["s"], last["m"] = s, m
        return inner(s, m, tau_s, tau_m, kappa)

    gm.transfer_gate = spy2
    gm.GraphMNL._guidance_state = state
    try:
        est = create("graphmnl-gate" if "graphmnl-gate" in gm.ABLATIONS else "graphmnl", seed=seed, hidden=128,
                     epochs=200, patience=30, gate=True).fit(graph)
    finally:
        gm.transfer_gate = orig
        gm.GraphMNL._guidance_state = orig_state
    w = est.params["warmup"]
    print(f"{data} {split} seed {seed}, gate=True")
    for e in sorted({w, w + 10, w + 30, w + 60, len(log) - 1}):
        if e < len(log):
            a, b, c, d, f = log[e]
            print(f"epoch {e}: s >= tau_s {a:.3f} | margin term < 1/2 {b:.3f}, mean {c:.3f} | g > 1/2 {d:.3f}, "
                  f"mean g {f:.3f}")
            ts, to, tm, tmo, ws, wo = (100 * v for v in acc[e])
            print(f"    teacher val acc: shut by s {ts:.1f} / open {to:.1f} | shut by margin {tm:.1f} / open {tmo:.1f}"
                  f" | true class in C̄: shut by s {ws:.1f}% / open {wo:.1f}%")
    sc = est.score(graph, "val")
    print(f"best epoch {est.history_.best_epoch}, val acc {100 * sc['acc']:.2f}, val F1 {100 * sc['f1']:.2f}")


if __name__ == "__main__":
    main(sys.argv[1:])
