"""Where a GraphMNL fit's time goes: wraps the forward pieces, the loss pieces and backward with timers.

    OMP_NUM_THREADS=1 python benchmarks/scripts/cost_breakdown.py [DATASET] [EPOCHS]

Prints cumulative seconds per piece over a fit of EPOCHS epochs (default 40, no early stopping, warm-up 20),
then an early-fusion GCN's fit on the same graph. Forward totals include the per-epoch evaluation pass.
"""

import collections
import sys
import time

import torch

import magkit.methods.graphmnl as gm
from magkit.data import load_dataset
from magkit.methods import create
from magkit.methods.graphmnl import GraphMNL, GraphMNLNet

TIMES: dict[str, float] = collections.defaultdict(float)


def wrap(obj, name: str, key: str) -> None:
    f = getattr(obj, name)

    def timed(*a, **k):
        t = time.perf_counter()
        r = f(*a, **k)
        TIMES[key] += time.perf_counter() - t
        return r

    setattr(obj, name, timed)


def main(argv: list[str]) -> None:
    data = argv[0] if argv else "grocery-semi:balanced"
    epochs = int(argv[1]) if len(argv) > 1 else 40
    torch.set_num_threads(1)
    graph = load_dataset(data)
    wrap(GraphMNLNet, "forward", "forward (training + evaluation passes)")
    wrap(GraphMNLNet, "_input_prop", "  first-layer projections (raw, prop)")
    wrap(GraphMNLNet, "_heads", "  struct GNN + heads + fusion")
    wrap(GraphMNL, "_loss", "loss")
    wrap(GraphMNL, "_scores", "  reliability scores + smoothing")
    wrap(GraphMNL, "_guidance", "  guidance term")
    wrap(torch.Tensor, "backward", "backward")
    for fn in ("arbitrate", "transfer_gate", "instability", "ema_update"):
        wrap(gm, fn, "  " + fn)
    est = create("graphmnl", seed=0, hidden=128, epochs=epochs, patience=None, warmup=20)
    t0 = time.perf_counter()
    est.fit(graph)
    print(f"graphmnl: fit {time.perf_counter() - t0:.1f} s, training steps {sum(est.history_.series('time')):.1f} s")
    for k, v in TIMES.items():
        print(f"  {k:42s} {v:6.2f} s")
    gcn = create("gcn-early", seed=0, hidden=128, epochs=epochs, patience=None)
    t0 = time.perf_counter()
    gcn.fit(graph)
    print(f"gcn-early: fit {time.perf_counter() - t0:.1f} s, training steps {sum(gcn.history_.series('time')):.1f} s")


if __name__ == "__main__":
    main(sys.argv[1:])
