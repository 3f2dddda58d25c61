"""GraphMNL's time per training epoch against an early-fusion GCN of the same width, measured in one run.

    python benchmarks/scripts/cost.py [DATASET] [EPOCHS] [SPLIT] [GRAPHMNL_PARAMS] [DATASET_KWARGS]

Both models train full-batch for EPOCHS epochs (default 40; no early stopping) on the same graph in the
same process, alternating GCN, GraphMNL, GCN, GraphMNL so that machine noise hits both; torch runs on one
thread. Printed: the ratio of median epoch times (training step only, as History.epoch_time) over all
epochs, and separately over GraphMNL's warm-up epochs (no guidance term) and its guided epochs (epoch >=
``warmup``, where the gated negative-learning pass runs: most of a real fit). EPOCHS <= warmup (20)
measures warm-up epochs only, as this script did before it reported the two phases. GRAPHMNL_PARAMS is a
Python dict literal of GraphMNL parameters (e.g. "{'prop_mode': 'input'}"), or a list of them
(e.g. "[{}, {'struct_guide': 'shared'}]") to measure several variants in the same run, each against the same
gcn-early epochs (one line per variant); SPLIT may be "-" for the default.
DATASET_KWARGS is a dict literal for ``load_dataset``, e.g. "{'dims': 768}" for generated features of the widths
real text / image encoders give (the default generated features are 128-wide).
"""

import ast
import statistics
import sys

import torch

from magkit.data import load_dataset
from magkit.methods import create
from magkit.methods.graphmnl import GraphMNL


def main(argv: list[str]) -> None:
    data = argv[0] if argv else "grocery-semi:balanced"
    epochs = int(argv[1]) if len(argv) > 1 else 40
    split = argv[2] if len(argv) > 2 and argv[2] != "-" else None
    parsed = ast.literal_eval(argv[3]) if len(argv) > 3 else {}
    variants = parsed if isinstance(parsed, list) else [parsed]
    if not variants or not all(isinstance(v, dict) for v in variants):
        sys.exit("GRAPHMNL_PARAMS must be a dict literal or a non-empty list of dict literals")
    data_kwargs = ast.literal_eval(argv[4]) if len(argv) > 4 else {}
    torch.set_num_threads(1)
    graph = load_dataset(data, split=split, seed=0, **data_kwargs) if split else load_dataset(data, **data_kwargs)
    warmup = GraphMNL.defaults["warmup"]
    gcn_times: list[float] = []
    gm_times: list[list[float]] = [[] for _ in variants]
    phase: list[bool] = []  # per recorded GraphMNL epoch: guided (epoch >= warmup)? (the same for every variant)
    for _ in range(2):
        est = create("gcn-early", seed=0, hidden=128, epochs=epochs, patience=None).fit(graph)
        gcn_times += est.history_.series("time")[1:]  # the first epoch includes one-off set-up
        for k, params in enumerate(variants):
            est = create("graphmnl", seed=0, hidden=128, epochs=epochs, patience=None, **params).fit(graph)
            t = est.history_.series("time")
            gm_times[k] += t[1:]
            if k == 0:
                phase += [e >= warmup for e in range(1, len(t))]
    gcn = statistics.median(gcn_times)
    for params, gm in zip(variants, gm_times):
        line = (f"{data}{' ' + split if split else ''}{' ' + repr(params) if params else ''}"
                f"{' ' + repr(data_kwargs) if data_kwargs else ''}, {epochs} epochs: gcn-early {1000 * gcn:.1f} ms/epoch, "
                f"graphmnl {1000 * statistics.median(gm):.1f} ms/epoch, ratio {statistics.median(gm) / gcn:.2f}x")
        for name, flag in (("warm-up", False), ("guided", True)):
            sel = [t for t, f in zip(gm, phase) if f == flag]
            if sel:
                line += f"; {name} {1000 * statistics.median(sel):.1f} ms ({statistics.median(sel) / gcn:.2f}x)"
        print(line)

if __name__ == "__main__":
    main(sys.argv[1:])
