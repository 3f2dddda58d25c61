"""GraphMNL's time per training epoch against an early-fusion GCN of the same width, measured in one run.

    python benchmarks/scripts/cost.py [DATASET] [EPOCHS]

Both models train full-batch for EPOCHS epochs (no early stopping) on the same graph in the same process,
alternating GCN, GraphMNL, GCN, GraphMNL so that machine noise hits both; the ratio of the median epoch
times is printed (training step only, as History.epoch_time).
"""

import statistics
import sys

from magkit.data import load_dataset
from magkit.methods import create


def main(argv: list[str]) -> None:
    data = argv[0] if argv else "grocery-semi:balanced"
    epochs = int(argv[1]) if len(argv) > 1 else 20
    graph = load_dataset(data)
    times = {"gcn-early": [], "graphmnl": []}
    for _ in range(2):
        for method in times:
            est = create(method, seed=0, hidden=128, epochs=epochs, patience=None).fit(graph)
            times[method] += est.history_.series("time")[1:]  # the first epoch includes one-off set-up
    med = {m: statistics.median(t) for m, t in times.items()}
    print(f"{data}: gcn-early {1000 * med['gcn-early']:.1f} ms/epoch, graphmnl {1000 * med['graphmnl']:.1f} ms/epoch, "
          f"ratio {med['graphmnl'] / med['gcn-early']:.2f}x")


if __name__ == "__main__":
    main(sys.argv[1:])
