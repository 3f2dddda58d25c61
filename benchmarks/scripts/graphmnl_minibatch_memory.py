"""Peak memory and epoch time of GraphMNL full batch against mini-batch, each fit in its own process.

    OMP_NUM_THREADS=1 python benchmarks/scripts/graphmnl_minibatch_memory.py [NODES] [EPOCHS] [BATCH_SIZES]

A generated graph (``synthetic:balanced``, NODES nodes, default 200,000; 10 classes; 128-wide text and image
features; 5% labels, seed 0) is fitted for EPOCHS epochs (default 5, no early stopping) with ``batch_size=None``
and with each of BATCH_SIZES (comma-separated, default 1024). Printed per fit: the process's peak RSS
(ru_maxrss) and the RSS after loading the graph (so the difference is what training added), the median epoch
time (training steps) and the fit's wall time. One torch thread per process.
"""

import json
import resource
import subprocess
import sys
import time


def child(nodes: int, epochs: int, bs: str) -> None:
    import statistics

    import torch

    from magkit.data import load_dataset
    from magkit.methods import create

    torch.set_num_threads(1)
    g = load_dataset("synthetic:balanced", split="rate:0.05", seed=0, num_nodes=nodes, num_classes=10)
    loaded = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t = time.time()
    est = create("graphmnl", seed=0, epochs=epochs, patience=None, warmup=1,
                 batch_size=None if bs == "full" else int(bs)).fit(g)
    wall = time.time() - t
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"batch_size": bs, "peak_rss_mb": peak, "rss_after_load_mb": loaded, "wall_s": wall,
                      "epoch_s": statistics.median(est.history_.series("time")[1:]),
                      "val_acc": est.history_.series("val_acc")[-1]}))


def main(argv: list[str]) -> None:
    if argv and argv[0] == "--child":
        child(int(argv[1]), int(argv[2]), argv[3])
        return
    nodes = int(argv[0]) if argv else 200_000
    epochs = int(argv[1]) if len(argv) > 1 else 5
    sizes = argv[2].split(",") if len(argv) > 2 else ["1024"]
    print(f"synthetic:balanced, {nodes} nodes, 5% labels, {epochs} epochs (guidance from epoch 1), one thread")
    print("| batch_size | peak RSS (MiB) | after loading | added by training | epoch (s) | fit wall (s) |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for bs in ["full"] + sizes:
        out = subprocess.run([sys.executable, __file__, "--child", str(nodes), str(epochs), bs],
                             capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
        r = json.loads(out)
        print(f"| {bs} | {r['peak_rss_mb']:.0f} | {r['rss_after_load_mb']:.0f} | "
              f"{r['peak_rss_mb'] - r['rss_after_load_mb']:.0f} | {r['epoch_s']:.2f} | {r['wall_s']:.1f} |", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
