"""Mini-batch GraphMNL out of core on the scaling benchmark's generated graph (features memory-mapped on disk).

    OMP_NUM_THREADS=1 python benchmarks/scripts/graphmnl_scaling.py --nodes 1000000

Generates the graph once into ``--cache-dir`` (the same graph and cache as ``benchmarks/scripts/scaling.py``), then
fits ``graphmnl`` with ``batch_size`` / ``fanouts`` for ``--epochs`` epochs (guidance from epoch ``--warmup``) reading
feature rows from the mapped files: per epoch the training-step time (the epoch state's whole-graph pass included)
and the evaluation time; the fit's wall time (the fitted model's reliability and diagnostics included), peak RSS
and its anonymous / file-backed parts, the best validation accuracy, test accuracy on a fixed sample of the test
split, and the time of ``predict_proba`` over the whole graph. Writes ``benchmarks/scaling/graphmnl.json`` and ``graphmnl.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from scaling import REPO, MemoryMonitor, _load, _setup_torch, machine, sample_test_split  # noqa: E402


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--nodes", type=int, default=1_000_000)
    p.add_argument("--cache-dir", default=os.environ.get("MAGKIT_SCALING_CACHE", "/tmp/magkit-scaling"))
    p.add_argument("--batch-size", type=int, default=1024)
    p.add_argument("--fanouts", default="10,5")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--test-sample", type=int, default=50_000)
    p.add_argument("--out", default=str(REPO / "benchmarks" / "scaling"))
    a = p.parse_args(argv)
    from magkit.data.largegen import generate_mmap_graph
    from magkit.methods import create

    _setup_torch()
    folder = str(Path(a.cache_dir) / f"n{a.nodes}")
    t0 = time.perf_counter()
    generate_mmap_graph(folder, a.nodes, seed=0)
    gen_s = time.perf_counter() - t0
    g, setup = _load(folder)
    fan = tuple(int(f) for f in a.fanouts.split(","))
    est = create("graphmnl", batch_size=a.batch_size, fanouts=fan, seed=0, epochs=a.epochs, patience=None,
                 warmup=a.warmup)
    epochs = []
    load_before = os.getloadavg()[0]
    mon = MemoryMonitor().start()
    t0 = time.perf_counter()
    est.fit(g, progress=lambda rec: epochs.append({k: rec.get(k) for k in ("epoch", "time", "loss", "guide",
                                                                           "inferior_rate", "val_acc", "train_acc")}))
    fit_s = time.perf_counter() - t0
    mem = mon.stop()
    t0 = time.perf_counter()
    est.predict_proba(g)
    pass_s = time.perf_counter() - t0
    g2, sample = sample_test_split(g, a.test_sample)
    t0 = time.perf_counter()
    sc = est.score(g2, "test")
    score_s = time.perf_counter() - t0
    res = {
        "command": "OMP_NUM_THREADS=1 python benchmarks/scripts/graphmnl_scaling.py " + " ".join(sys.argv[1:]),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "machine": machine(), "nodes": g.num_nodes,
        "edges_directed": int(g.edge_index.shape[1]), "train_nodes": int(g.train_mask.sum()),
        "generate_or_open_s": gen_s, **setup, "batch_size": a.batch_size, "fanouts": list(fan), "epochs": epochs,
        "fit_wall_s": fit_s, "whole_graph_pass_s": pass_s, "val_acc_best": est.history_.best_score,
        "test_acc_sample": sc["acc"], "test_f1_sample": sc["f1"], "test_sample_nodes": int(sample.numel()),
        "score_s": score_s, "load_avg_before": load_before, "load_avg_after": os.getloadavg()[0], **mem,
    }
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "graphmnl.json").write_text(json.dumps(res, indent=2, default=str))
    lines = [
        f"# Mini-batch GraphMNL out of core: a {res['nodes']:,}-node graph with memory-mapped features", "",
        f"Command: `{res['command']}` ({res['date']}). Machine: {res['machine']['cpu']}, {res['machine']['cores']} "
        f"cores, {res['machine']['ram_gib']:.1f} GiB RAM, torch {res['machine']['torch']}, one thread; 1-minute load "
        f"average {res['load_avg_before']:.1f} before the fit, {res['load_avg_after']:.1f} after (above 1: other "
        "processes shared the cores, and the times are longer than on an idle machine).", "",
        f"Graph: the scaling benchmark's ({res['nodes']:,} nodes, {res['edges_directed']:,} directed edges, "
        f"{res['train_nodes']:,} training nodes). graphmnl with its defaults, batch size {a.batch_size}, fan-outs "
        f"{a.fanouts}, {a.epochs} epochs, guidance from epoch {a.warmup}.", "",
        "| epoch | training step (s, epoch state included) | loss | guidance term | inferior share | val acc |",
        "| ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for e in epochs:
        lines.append(f"| {e['epoch']} | {e['time']:.1f} | {e['loss']:.3f} | {e['guide']:.4f} | {e['inferior_rate']:.2f} | "
                     f"{e['val_acc']:.4f} |")
    lines += [
        "", "| measure | value |", "| --- | --- |",
        f"| fit wall time (evaluation, fitted reliability and diagnostics included) | {fit_s:.1f} s |",
        f"| predict_proba over the whole graph (reliability fixed point, block-by-block first layers) | {pass_s:.1f} s |",
        f"| peak RSS during the fit | {mem['peak_rss_mb']:,.0f} MiB (anonymous {mem['peak_rss_anon_mb']:,.0f}, "
        f"file-backed {mem['peak_rss_file_mb']:,.0f}; {mem['rss_at_start_mb']:,.0f} at the start) |",
        f"| best validation accuracy | {res['val_acc_best']:.4f} |",
        f"| test accuracy / macro-F1, {res['test_sample_nodes']:,}-node sample | {sc['acc']:.4f} / {sc['f1']:.4f} "
        f"({score_s:.1f} s) |",
    ]
    (out / "graphmnl.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
