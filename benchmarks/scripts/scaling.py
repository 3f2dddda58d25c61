"""Scaling benchmark: a generated graph of >= 1M nodes whose features stay memory-mapped on disk.

One command::

    python benchmarks/scripts/scaling.py --nodes 1000000

1. generates the graph once into ``--cache-dir`` (default ``/tmp/magkit-scaling/n<N>``, outside the repository;
   reused by later runs) with :func:`magkit.data.largegen.generate_mmap_graph`;
2. (a) trains ``sage-early`` in mini-batches (``--batch-size``, ``--fanouts``) for ``--epochs`` full epochs,
   reading feature rows from the memory-mapped files: time per epoch (updates only), seed nodes/s, peak RSS
   (and its anonymous / file-backed parts), validation accuracy and test accuracy on a fixed sample of the
   test split;
3. (b) propagates both modality blocks (Â² X) to disk in column blocks under ``--prop-memory-mb``: time, peak
   RSS, and the time of the cached second call;
4. (c) trains one epoch with data-parallel training (``distributed=True``, gloo) under
   ``python -m torch.distributed.run --nproc_per_node=W`` for W = 1 and 2: seed nodes/s of the process group
   and the 2-process / 1-process ratio.

Every phase runs in its own process (so each peak RSS is that phase's own), with ``OMP_NUM_THREADS=1`` per
process. Writes ``benchmarks/scaling/results.json`` and ``results.md`` (machine, command, numbers).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SCRIPT = Path(__file__).resolve()


# ---------------------------------------------------------------------------------------------- memory
class MemoryMonitor:
    """Peaks of this process's RSS and of its anonymous and file-backed parts (``/proc/self/status``, sampled
    every ``interval`` s), plus the kernel's own peak (VmHWM) since :meth:`start` reset it."""

    def __init__(self, interval: float = 0.02):
        self.interval = interval
        self.peak = {"VmRSS": 0, "RssAnon": 0, "RssFile": 0}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.reset_ok = False

    @staticmethod
    def read() -> dict[str, int]:
        out = {}
        with open("/proc/self/status") as fh:
            for line in fh:
                key = line.split(":")[0]
                if key in ("VmRSS", "RssAnon", "RssFile", "VmHWM"):
                    out[key] = int(line.split()[1])
        return out

    def _run(self) -> None:
        while not self._stop.is_set():
            cur = self.read()
            for k in self.peak:
                self.peak[k] = max(self.peak[k], cur.get(k, 0))
            self._stop.wait(self.interval)

    def start(self) -> MemoryMonitor:
        try:  # VmHWM := VmRSS, so the kernel's peak covers this phase only
            with open("/proc/self/clear_refs", "w") as fh:
                fh.write("5")
            self.reset_ok = True
        except OSError:
            pass
        self.start_rss = self.read()
        self._thread.start()
        return self

    def stop(self) -> dict[str, float]:
        self._stop.set()
        self._thread.join()
        cur = self.read()
        mb = 1 / 1024
        return {
            "peak_rss_mb": max(cur["VmHWM"], self.peak["VmRSS"]) * mb if self.reset_ok else self.peak["VmRSS"] * mb,
            "peak_rss_anon_mb": self.peak["RssAnon"] * mb,
            "peak_rss_file_mb": self.peak["RssFile"] * mb,
            "rss_at_start_mb": self.start_rss["VmRSS"] * mb,
        }


def _process_peak_mb() -> float:
    from magkit.eval.results import peak_memory_mb

    return peak_memory_mb()


# ---------------------------------------------------------------------------------------------- phases
def _setup_torch() -> None:
    import warnings

    import torch

    warnings.simplefilter("ignore", UserWarning)
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))


def _load(folder: str) -> tuple:
    from magkit.data.graph import validate
    from magkit.data.ondisk import load_mmap_graph

    t0 = time.perf_counter()
    g = load_mmap_graph(folder)
    t_load = time.perf_counter() - t0
    t0 = time.perf_counter()
    validate(g)
    return g, {"load_s": t_load, "validate_s": time.perf_counter() - t0, "setup_peak_rss_mb": _process_peak_mb()}


def phase_generate(a) -> dict:
    from magkit.data.largegen import generate_mmap_graph

    t0 = time.perf_counter()
    meta = generate_mmap_graph(a.graph, a.nodes, seed=0)
    wall = time.perf_counter() - t0
    return {"meta": meta, "wall_s": wall, "reused": wall < 0.5 * meta["generation_seconds"]["total"],
            "peak_rss_mb": _process_peak_mb()}


def _estimator(a, **extra):
    from magkit.methods import create

    fan = tuple(int(f) for f in a.fanouts.split(","))
    return create("sage-early", hidden=a.hidden, batch_size=a.batch_size, fanouts=fan, seed=0, patience=None, **extra)


def sample_test_split(g, size: int) -> tuple:
    """A shallow copy of ``g`` whose test split is a fixed random sample of ``size`` of its test nodes (seed 0)."""
    import torch

    test = g.split_index("test")
    sample = test[torch.randperm(test.numel(), generator=torch.Generator().manual_seed(0))[:size]]
    g2 = copy.copy(g)
    g2.test_mask = torch.zeros(g.num_nodes, dtype=torch.bool)
    g2.test_mask[sample] = True
    return g2, sample


def phase_train(a) -> dict:
    _setup_torch()
    g, setup = _load(a.graph)
    n_train = int(g.train_mask.sum())
    est = _estimator(a, epochs=a.epochs)
    epochs = []
    mon = MemoryMonitor().start()
    t0 = time.perf_counter()
    est.fit(g, progress=lambda rec: epochs.append({k: rec[k] for k in ("epoch", "time", "loss", "val_acc", "train_acc")}))
    fit_s = time.perf_counter() - t0
    mem = mon.stop()
    # test accuracy on a fixed sample of the test split (inference on all 850k test nodes would take minutes)
    g2, sample = sample_test_split(g, a.test_sample)
    t0 = time.perf_counter()
    test_acc = est.score(g2, "test")["acc"]
    infer_s = time.perf_counter() - t0
    times = [e["time"] for e in epochs]
    return {
        **setup, "train_nodes": n_train, "epochs": epochs, "epoch_time_s": sum(times) / len(times),
        "seed_nodes_per_s": n_train / (sum(times) / len(times)), "fit_wall_s": fit_s,
        "eval_s_per_epoch": (fit_s - sum(times)) / len(times), "val_acc_best": est.history_.best_score,
        "test_acc_sample": test_acc, "test_sample_nodes": int(sample.numel()),
        "inference_nodes_per_s": sample.numel() / infer_s, **mem,
    }


def phase_propagate(a) -> dict:
    import shutil

    from magkit.train import diskprop

    _setup_torch()
    g, setup = _load(a.graph)
    cache = Path(a.graph) / "cache-bench"
    shutil.rmtree(cache, ignore_errors=True)
    full_mb = sum(g.num_nodes * g.modality_dims[m] * 4 for m in g.modalities) / 2**20
    blocks = {m: g.feature(m).masked(g.presence(m)) for m in g.modalities}
    for x in blocks.values():  # the content hash is part of the cache key: computed before the timed part
        x.digest()
    def propagate_all():  # every block once; (per-block stats, seconds)
        stats, t0 = {}, time.perf_counter()
        for m, x in blocks.items():
            stats[m] = {}
            diskprop.propagate_to_disk(g.edge_index, x, a.k, cache, num_nodes=g.num_nodes,
                                       max_memory_mb=a.prop_memory_mb, undirected=True, stats=stats[m])
        return stats, time.perf_counter() - t0

    mon = MemoryMonitor().start()
    first, t_first = propagate_all()
    mem = mon.stop()
    second, t_second = propagate_all()  # the cache hit
    shutil.rmtree(cache, ignore_errors=True)
    return {**setup, "k": a.k, "max_memory_mb": a.prop_memory_mb, "seconds": t_first, "cached_seconds": t_second,
            "all_cached_second_time": all(s["cached"] for s in second.values()),
            "full_float32_output_mb": full_mb, "per_modality": first, **mem}


def phase_ddp_worker(a) -> None:
    from magkit import distributed as D

    _setup_torch()
    g, setup = _load(a.graph)
    D.init_from_env(device="cpu")
    est = _estimator(a, epochs=1, distributed=True)
    mon = MemoryMonitor().start()
    t0 = time.perf_counter()
    est.fit(g)
    fit_s = time.perf_counter() - t0
    mem = mon.stop()
    rec = {"rank": D.rank(), "world_size": D.world_size(), "epoch_time_s": est.history_.epochs[0]["time"],
           "fit_wall_s": fit_s, "train_nodes": int(g.train_mask.sum()), **setup, **mem}
    Path(a.json_out).parent.mkdir(parents=True, exist_ok=True)
    Path(f"{a.json_out}.rank{D.rank()}").write_text(json.dumps(rec))
    D.barrier()
    D.cleanup()


# ---------------------------------------------------------------------------------------------- driver
def _env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
            "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}


def _common(a) -> list[str]:
    return ["--graph", a.graph, "--nodes", str(a.nodes), "--batch-size", str(a.batch_size), "--fanouts", a.fanouts,
            "--hidden", str(a.hidden), "--epochs", str(a.epochs), "--k", str(a.k), "--prop-memory-mb",
            str(a.prop_memory_mb), "--test-sample", str(a.test_sample)]


def _run_phase(a, phase: str) -> dict:
    load0 = os.getloadavg()
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, str(SCRIPT), "--phase", phase, *_common(a)], env=_env(),
                          capture_output=True, text=True)
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr[-4000:])
        raise SystemExit(f"phase {phase} failed (exit {proc.returncode})")
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    res["phase_wall_s"] = time.perf_counter() - t0
    res["loadavg_before"], res["loadavg_after"] = load0, os.getloadavg()
    return res


def _run_ddp(a, world: int) -> dict:
    load0 = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "ddp.json"
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={world}", str(SCRIPT),
               "--phase", "ddp-worker", "--json-out", str(out), *_common(a)]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, env=_env(), capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            sys.stderr.write(proc.stderr[-4000:])
            raise SystemExit(f"ddp run with {world} processes failed (exit {proc.returncode})")
        ranks = [json.loads(Path(f"{out}.rank{r}").read_text()) for r in range(world)]
    epoch = max(r["epoch_time_s"] for r in ranks)  # the ranks step together (gradient all-reduce per batch)
    n_train = ranks[0]["train_nodes"]
    return {"world_size": world, "epoch_time_s": epoch, "seed_nodes_per_s": n_train / epoch, "train_nodes": n_train,
            "ranks": ranks, "wall_s": wall, "loadavg_before": load0, "loadavg_after": os.getloadavg(),
            "launcher": "python -m torch.distributed.run --standalone --nproc_per_node=" + str(world)}


def machine() -> dict:
    cpu = "unknown"
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    mem_gb = None
    try:
        mem_gb = next(int(line.split()[1]) for line in open("/proc/meminfo") if line.startswith("MemTotal")) / 2**20
    except (OSError, StopIteration):
        pass
    import numpy
    import torch

    return {"cpu": cpu, "cores": os.cpu_count(), "ram_gib": mem_gb, "platform": platform.platform(),
            "python": platform.python_version(), "torch": torch.__version__, "numpy": numpy.__version__,
            "threads_per_process": 1}


def _fmt(x: float, nd: int = 1) -> str:
    return f"{x:,.{nd}f}"


def render(res: dict) -> str:
    m, gen, tr, pr = res["machine"], res["generate"], res["train"], res["propagate"]
    meta = gen["meta"]
    st = meta["stats"]
    fanouts = res["config"]["fanouts"]
    lines = [
        f"# Scaling: a {res['config']['nodes']:,}-node graph with memory-mapped features",
        "",
        f"Command: `{res['command']}` ({res['date']}, {res['total_wall_s'] / 60:.1f} min in all).",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['ram_gib']:.1f} GiB RAM, torch {m['torch']}, one thread per "
        "process (`OMP_NUM_THREADS=1`). The machine is shared with other jobs: load averages (1 min) around each "
        "phase are in the tables; timings under load are slower than on an idle machine.",
        "",
        "## The graph",
        "",
        f"`magkit data generate --nodes {meta['num_nodes']}` (what the script calls): {meta['num_nodes']:,} nodes, "
        f"{st['edges_undirected']:,} undirected edges (mean degree {st['mean_degree']:.2f}, edge homophily "
        f"{st['edge_homophily']:.3f}), {meta['num_classes']} classes, text {meta['generator']['dims']['text']}-d and "
        f"image {meta['generator']['dims']['image']}-d features stored as {meta['generator']['dtype']} "
        f"({st['feature_bytes'] / 2**20:,.0f} MiB on disk; {meta['num_nodes'] * sum(meta['generator']['dims'].values()) * 4 / 2**20:,.0f} MiB as float32), split "
        f"{st['splits']['train']:,} / {st['splits']['val']:,} / {st['splits']['test']:,}.",
        f"Generation: {meta['generation_seconds']['total']:.1f} s (structure {meta['generation_seconds']['structure']:.1f} s, "
        f"features {meta['generation_seconds']['features']:.1f} s)"
        + (f"; this run reused it (opening: {gen['wall_s']:.2f} s)." if gen["reused"] else
           f", peak RSS {gen['peak_rss_mb']:,.0f} MiB."),
        "",
        "## (a) Mini-batch training, features read from the memory-mapped files",
        "",
        f"`sage-early`, hidden {res['config']['hidden']}, batch size {res['config']['batch_size']}, fan-outs {fanouts}, "
        f"{len(tr['epochs'])} full epoch(s) over the {tr['train_nodes']:,} training nodes; validation (train + val nodes) by "
        "sampled mini-batch inference after each epoch.",
        "",
        "| measure | value |",
        "| --- | --- |",
        f"| time per epoch (updates only) | {_fmt(tr['epoch_time_s'])} s ({', '.join(_fmt(e['time']) for e in tr['epochs'])}) |",
        f"| training throughput | {_fmt(tr['seed_nodes_per_s'], 0)} seed nodes/s |",
        f"| evaluation per epoch (sampled inference on {tr['train_nodes'] + st['splits']['val']:,} nodes) | {_fmt(tr['eval_s_per_epoch'])} s |",
        f"| peak RSS during training | {_fmt(tr['peak_rss_mb'], 0)} MiB (anonymous {_fmt(tr['peak_rss_anon_mb'], 0)}, file-backed {_fmt(tr['peak_rss_file_mb'], 0)}) |",
        f"| peak RSS while opening + validating | {_fmt(tr['setup_peak_rss_mb'], 0)} MiB (open {tr['load_s']:.1f} s, validate {tr['validate_s']:.1f} s) |",
        f"| validation accuracy (best epoch) | {tr['val_acc_best']:.3f} |",
        f"| test accuracy, {tr['test_sample_nodes']:,}-node sample of the test split | {tr['test_acc_sample']:.3f} |",
        f"| inference throughput | {_fmt(tr['inference_nodes_per_s'], 0)} nodes/s |",
        f"| load average (1 min) before / after | {tr['loadavg_before'][0]:.2f} / {tr['loadavg_after'][0]:.2f} |",
        "",
        "## (b) Propagation to disk (Â² X, column blocks)",
        "",
        f"Both blocks, k = {pr['k']}, `max_memory_mb={pr['max_memory_mb']:.0f}`: column blocks of "
        + ", ".join(f"{s['col_block']} ({m}, {s['passes']} passes)" for m, s in pr["per_modality"].items()) + ".",
        "",
        "| measure | value |",
        "| --- | --- |",
        f"| time, both modalities | {_fmt(pr['seconds'])} s |",
        f"| time of the second call (cache hit) | {_fmt(pr['cached_seconds'], 2)} s |",
        f"| peak RSS during propagation | {_fmt(pr['peak_rss_mb'], 0)} MiB, of which {_fmt(pr['rss_at_start_mb'], 0)} MiB held before it (graph structure, interpreter) |",
        f"| increase over the start | {_fmt(pr['peak_rss_mb'] - pr['rss_at_start_mb'], 0)} MiB (budget {pr['max_memory_mb']:.0f} MiB) |",
        f"| the float32 result, for scale | {_fmt(pr['full_float32_output_mb'], 0)} MiB |",
        f"| load average (1 min) before / after | {pr['loadavg_before'][0]:.2f} / {pr['loadavg_after'][0]:.2f} |",
        "",
    ]
    if res.get("ddp"):
        d1, d2 = res["ddp"]["1"], res["ddp"]["2"]
        lines += [
            "## (c) Data-parallel training: 1 process vs 2 processes",
            "",
            "`sage-early` with `distributed=True` (DistributedDataParallel, gloo; `magkit.distributed`), one epoch, "
            "launched by `python -m torch.distributed.run --standalone --nproc_per_node=W`; each rank maps the same "
            "feature files (the page cache is shared) and samples its shard of the seed nodes.",
            "",
            "| processes | epoch time | seed nodes/s | peak RSS per process | load avg before / after |",
            "| --- | --- | --- | --- | --- |",
        ]
        for d in (d1, d2):
            rss = ", ".join(_fmt(r["peak_rss_mb"], 0) for r in d["ranks"])
            lines.append(f"| {d['world_size']} | {_fmt(d['epoch_time_s'])} s | {_fmt(d['seed_nodes_per_s'], 0)} | {rss} MiB | "
                         f"{d['loadavg_before'][0]:.2f} / {d['loadavg_after'][0]:.2f} |")
        lines += ["", f"Throughput ratio, 2 processes / 1 process: **{res['ddp']['ratio']:.2f}** (ideal 2.00 on 2 idle cores).", ""]
    if res.get("notes"):
        lines += ["## Notes", ""] + [f"* {n}" for n in res["notes"]] + [""]
    return "\n".join(lines)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--nodes", type=int, default=1_000_000)
    p.add_argument("--cache-dir", default=os.environ.get("MAGKIT_SCALING_CACHE", "/tmp/magkit-scaling"),
                   help="where the generated graph lives (outside the repository; reused)")
    p.add_argument("--batch-size", type=int, default=1024)
    p.add_argument("--fanouts", default="10,5")
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--k", type=int, default=2)
    p.add_argument("--prop-memory-mb", type=float, default=400)
    p.add_argument("--test-sample", type=int, default=50_000)
    p.add_argument("--skip-ddp", action="store_true")
    p.add_argument("--phases", default="generate,train,propagate,ddp",
                   help="phases to run; the others are taken from the existing results.json in --out")
    p.add_argument("--out", default=str(REPO / "benchmarks" / "scaling"))
    p.add_argument("--phase", default=None, help=argparse.SUPPRESS)
    p.add_argument("--graph", default=None, help=argparse.SUPPRESS)
    p.add_argument("--json-out", default=None, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    a.graph = a.graph or str(Path(a.cache_dir) / f"n{a.nodes}")

    if a.phase == "ddp-worker":
        phase_ddp_worker(a)
        return
    if a.phase is not None:
        fn = {"generate": phase_generate, "train": phase_train, "propagate": phase_propagate}[a.phase]
        print(json.dumps(fn(a), default=str))
        return

    t0 = time.perf_counter()
    command = "python benchmarks/scripts/scaling.py " + " ".join(shlex.quote(s) for s in (argv or sys.argv[1:]))
    res = {"command": command.strip(), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
           "machine": machine(), "config": {"nodes": a.nodes, "batch_size": a.batch_size, "fanouts": a.fanouts,
                                            "hidden": a.hidden, "epochs": a.epochs, "k": a.k,
                                            "prop_memory_mb": a.prop_memory_mb, "graph": a.graph}}
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    wanted = set(a.phases.split(","))
    previous = json.loads((out / "results.json").read_text()) if (out / "results.json").is_file() else {}
    if previous.get("config") != res["config"]:
        previous = {}
    for phase in ("generate", "train", "propagate"):
        if phase not in wanted and phase in previous:
            res[phase] = previous[phase]
            continue
        print(f"[scaling] {phase} ...", flush=True)
        res[phase] = _run_phase(a, phase)
        print(f"[scaling] {phase} done in {res[phase]['phase_wall_s']:.0f} s", flush=True)
        (out / "results.partial.json").write_text(json.dumps(res, indent=2, default=str) + "\n")
    res["notes"] = []
    if "ddp" not in wanted and "ddp" in previous:
        res["ddp"] = previous["ddp"]
    elif not a.skip_ddp:
        res["ddp"] = {}
        for world in (1, 2):
            print(f"[scaling] ddp x{world} ...", flush=True)
            res["ddp"][str(world)] = _run_ddp(a, world)
            print(f"[scaling] ddp x{world}: {res['ddp'][str(world)]['seed_nodes_per_s']:.0f} seed nodes/s", flush=True)
        res["ddp"]["ratio"] = res["ddp"]["2"]["seed_nodes_per_s"] / res["ddp"]["1"]["seed_nodes_per_s"]
    (out / "results.partial.json").unlink(missing_ok=True)
    loads = {ph: res[ph]["loadavg_before"][0] for ph in ("train", "propagate")}
    if res.get("ddp"):
        loads.update({f"ddp x{w}": res["ddp"][w]["loadavg_before"][0] for w in ("1", "2")})
    busy = {k: v for k, v in loads.items() if v > 0.8}
    if busy:
        res["notes"].append("Other processes were running when these phases started (1-min load average on 2 cores): "
                            + ", ".join(f"{k} {v:.2f}" for k, v in busy.items())
                            + "; the 2-process run competes with them for the 2 cores most.")
    res["total_wall_s"] = time.perf_counter() - t0
    res["phases_run"] = sorted(wanted)
    (out / "results.json").write_text(json.dumps(res, indent=2, default=str) + "\n")
    (out / "results.md").write_text(render(res))
    print(f"[scaling] wrote {out / 'results.md'} and results.json ({res['total_wall_s'] / 60:.1f} min)")


if __name__ == "__main__":
    main()
