"""The ``magkit`` command line. Thin: parse, call the library, print with rich.

torch and the library are imported inside the commands so that ``magkit --help`` answers at once. Every
output path is checked before any work (:data:`OUTPUT_OPTIONS`), and every user mistake ends in one line
on stderr with exit code 2.
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(
    name="magkit",
    help="Learning on multimodal attributed graphs: datasets, baselines, GraphMNL and SR-GM.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
data_app = typer.Typer(help="Inspect datasets.", no_args_is_help=True)
app.add_typer(data_app, name="data")
bench_app = typer.Typer(help="Run benchmark suites and render their tables.", no_args_is_help=True)
app.add_typer(bench_app, name="bench")

console = Console()
err_console = Console(stderr=True)

RootOpt = Annotated[Path | None, typer.Option("--root", help="Data folder to search first (else $MAGKIT_DATA, ./data, ../shared/data).")]
SplitOpt = Annotated[str | None, typer.Option("--split", help="Split spec: magb | rate:0.05 | kshot:20 | random:0.6/0.2 (default: the dataset's own).")]


# command function -> {parameter: (option as typed, is a folder)}: checked by `friendly` before the command runs
OUTPUT_OPTIONS: dict[str, dict[str, tuple[str, bool]]] = {
    "data_generate": {"out": ("--out", True)},
    "encode": {"out": ("--out", True)},
    "fit_cmd": {"out": ("--out", True)},
    "predict_cmd": {"out": ("--out", False)},
    "explain_cmd": {"out": ("--out", True)},
    "demo": {"out": ("--out", True)},
    "bench_run": {"out": ("--out", True)},
    "condense_cmd": {"out": ("--out", False), "checkpoint": ("--checkpoint", False)},
    "evaluate_cmd": {"json_out": ("--json", False)},
    "sweep_cmd": {"out": ("--out", True)},
    "report_cmd": {"out": ("--out", True)},
}


def check_outputs(command: str, values: dict) -> None:
    """One-line ConfigError for an output path of ``command`` that cannot be written (see
    :func:`magkit.eval.results.check_writable`)."""
    for name, (option, folder) in OUTPUT_OPTIONS.get(command, {}).items():
        if values.get(name) is not None:
            from .eval.results import check_writable

            check_writable(values[name], option, folder=folder)
    root = values.get("root")
    if root is not None and not Path(root).expanduser().is_dir():
        from .exceptions import ConfigError

        raise ConfigError(f"--root: {str(root)!r} is not a folder; allowed: an existing data folder "
                          "(or leave it out: $MAGKIT_DATA, ./data, ../shared/data are searched)")


def friendly(fn):
    """Turn magkit's own errors into one red line and exit code 2 (no traceback); check the command's output
    paths first."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from .exceptions import MagkitError

        try:
            check_outputs(fn.__name__, kwargs)
            return fn(*args, **kwargs)
        except MagkitError as exc:
            from rich.markup import escape  # messages hold brackets: pip install -e ".[ray]"

            err_console.print(f"[bold red]error:[/] {escape(str(exc))}", soft_wrap=True, highlight=False)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            err_console.print("[yellow]interrupted[/]")
            raise typer.Exit(130) from None

    return wrapper


def _print_version(value: bool) -> None:
    if value:
        from . import __version__

        console.print(f"magkit {__version__}", highlight=False)
        raise typer.Exit()


@app.callback()
def _main(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log library progress to stderr.")] = False,
    version: Annotated[bool, typer.Option("--version", is_eager=True, callback=_print_version,
                                          help="Print the version and exit.")] = False,
):
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")


# ---------------------------------------------------------------------------------------------- data
def info_tables(info: dict) -> list[Table]:
    """Rich tables for a graph's :func:`~magkit.data.graph.describe` output."""
    t = Table(title=f"dataset {info['name']}", show_header=False)
    t.add_column("field", style="bold")
    t.add_column("value")
    t.add_row("nodes", f"{info['nodes']:,}")
    t.add_row("edges", f"{info['edges_undirected']:,} undirected ({info['edges_directed']:,} directed)")
    t.add_row("mean degree", f"{info['mean_degree']:.2f} ({info['isolated_nodes']:,} isolated nodes)")
    t.add_row("classes", str(info["classes"]))
    t.add_row("edge homophily", f"{info['homophily']:.3f}")
    sizes = info["class_sizes"]
    t.add_row("class sizes", f"min {min(sizes):,}, max {max(sizes):,} (balance {info['class_balance']:.3f})")
    t.add_row("splits", ", ".join(f"{k} {v:,}" for k, v in info["splits"].items()))
    t.add_row("checksum", info["checksum"])
    m = Table(title="modalities")
    for col in ("modality", "dim", "present", "present %"):
        m.add_column(col, justify="right" if col != "modality" else "left")
    for name, d in info["modalities"].items():
        m.add_row(name, str(d["dim"]), f"{d['present']:,}", f"{100 * d['present'] / info['nodes']:.1f}")
    tables = [t, m]
    if "ground_truth" in info:
        g = Table(title="ground truth (generator)")
        for col in ("modality", "mean quality", "biased %"):
            g.add_column(col)
        for name, d in info["ground_truth"].items():
            biased = "-" if d["biased_fraction"] is None else f"{100 * d['biased_fraction']:.1f}"
            g.add_row(name, f"{d['mean_quality']:.3f}", biased)
        tables.append(g)
    return tables


@data_app.command("info")
@friendly
def data_info(
    dataset: Annotated[str, typer.Argument(help="Dataset name, e.g. synthetic, grocery-semi:text-dominant, magb:Grocery.")],
    root: RootOpt = None,
    split: SplitOpt = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")] = False,
):
    """Print nodes, edges, classes, modalities (dims, presence), splits, homophily and class balance."""
    import json

    from .data import describe, load_dataset

    check_split(split)
    graph = load_dataset(dataset, root=root, split=split)
    info = describe(graph)
    if json_out:
        console.print_json(json.dumps(info))
        return
    for table in info_tables(info):
        console.print(table)


@data_app.command("list")
def data_list():
    """List the dataset names magkit understands."""
    from .data import dataset_names

    for name in dataset_names():
        console.print(name)


@data_app.command("generate")
@friendly
def data_generate(
    out: Annotated[Path, typer.Option("--out", help="Folder to write (mmap:DIR layout); reused when it holds the same graph.")],
    nodes: Annotated[int, typer.Option("--nodes", help="Number of nodes.")] = 1_000_000,
    classes: Annotated[int, typer.Option("--classes", help="Number of classes (communities).")] = 20,
    degree: Annotated[float, typer.Option("--degree", help="Target mean degree.")] = 15.0,
    homophily: Annotated[float, typer.Option("--homophily", help="Share of edges drawn inside a class.")] = 0.7,
    dims: Annotated[str, typer.Option("--dims", help="Modality widths, e.g. text=128,image=128.")] = "text=128,image=128",
    dtype: Annotated[str, typer.Option("--dtype", help="Stored feature dtype: float16 | float32 | float64.")] = "float16",
    split: Annotated[str, typer.Option("--split", help="Train/val fractions (test: the rest), e.g. 0.1/0.05.")] = "0.1/0.05",
    seed: Annotated[int, typer.Option("--seed", help="Generator seed.")] = 0,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace a folder holding a graph of other parameters.")] = False,
):
    """Generate a large multimodal graph straight to disk (features written in chunks; open it as mmap:DIR)."""
    from .data.largegen import generate_mmap_graph
    from .exceptions import ConfigError

    try:
        widths = {k.strip(): int(v) for k, v in (part.split("=") for part in dims.split(",") if part.strip())}
    except ValueError:
        raise ConfigError(f"--dims: {dims!r}; allowed: modality=width pairs, e.g. text=128,image=128") from None
    if not widths or any(w < 1 for w in widths.values()):
        raise ConfigError(f"--dims: {dims!r}; allowed: modality=width pairs with widths >= 1, e.g. text=128,image=128")
    try:
        train, val = (float(v) for v in split.split("/"))
    except ValueError:
        raise ConfigError(f"--split: {split!r}; allowed: TRAIN/VAL fractions, e.g. 0.1/0.05") from None
    if dtype not in ("float16", "float32", "float64"):
        raise ConfigError(f"--dtype: {dtype!r}; allowed: float16, float32, float64")
    with err_console.status("generating") as status:
        meta = generate_mmap_graph(out, nodes, num_classes=classes, dims=widths, avg_degree=degree, homophily=homophily,
                                   dtype=dtype, train=train, val=val, seed=seed, overwrite=overwrite,
                                   progress=lambda msg: status.update(msg))
    st = meta["stats"]
    console.print(f"{out}: {meta['num_nodes']:,} nodes, {st['edges_undirected']:,} undirected edges (mean degree "
                  f"{st['mean_degree']:.2f}, homophily {st['edge_homophily']:.3f}), features "
                  f"{st['feature_bytes'] / 2**20:.0f} MiB on disk, generated in {meta['generation_seconds']['total']:.1f} s")
    console.print(f"use it as: --data mmap:{out}")


@app.command("encode")
@friendly
def encode(
    nodes: Annotated[Path, typer.Argument(help="Nodes file (CSV: id, text, image, label).")],
    out: Annotated[Path, typer.Option("--out", help="Folder for the cached feature files.")],
    modalities: Annotated[str, typer.Option(help="Comma-separated modalities to encode.")] = "text,image",
    batch_size: Annotated[int, typer.Option(min=1)] = 32,
):
    """Turn raw text and images into cached feature files with the offline encoders.

    A rerun encodes only what changed: the nodes file, an image file (path, size, modification time) or the
    encoder."""
    from .data.encode import encode_nodes

    with _progress() as progress:
        task = progress.add_task("encoding", total=None, info="")

        def tick(done: int, total: int) -> None:
            progress.update(task, completed=done, total=total, info="texts and images" if total else "cached")

        paths = encode_nodes(nodes, out, modalities=tuple(m.strip() for m in modalities.split(",") if m.strip()),
                             batch_size=batch_size, progress=tick)
    for m, p in paths.items():
        console.print(f"{m}: {p}")


# ---------------------------------------------------------------------------------------------- methods
@app.command("methods")
def methods_cmd():
    """List every registered method (node classifiers, for fit) and condenser (for condense)."""
    from .condense.registry import REGISTRY
    from .methods import methods

    for title, specs in (("methods (magkit fit --method NAME)", methods()),
                         ("condensers (magkit condense --method NAME)", REGISTRY.specs())):
        t = Table(title=title)
        t.add_column("name", style="bold")
        t.add_column("group")
        t.add_column("description")
        for spec in specs:
            t.add_row(spec.name, spec.group, spec.description)
        console.print(t)


def results_table(rows: list[tuple[str, object]], title: str) -> Table:
    """A table of method -> RepeatResult rows (accuracy and macro-F1 on val and test, %)."""
    t = Table(title=title)
    for col in ("method", "val acc", "val F1", "test acc", "test F1", "epoch time (ms)"):
        t.add_column(col, justify="left" if col == "method" else "right")
    for name, res in rows:
        ep = res.summary()["epoch_time"]["mean"] * 1000
        t.add_row(name, res.fmt("val_acc"), res.fmt("val_f1"), res.fmt("test_acc"), res.fmt("test_f1"), f"{ep:.1f}")
    return t


def data_options(items: list[str] | None) -> dict:
    """``--data-set key=value`` options as a dict (values read as YAML scalars or lists)."""
    from .eval.experiment import parse_value
    from .exceptions import ConfigError

    options = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--data-set: {item!r}; allowed: key=value, e.g. --data-set space=aligned")
        options[key.strip()] = parse_value(value)
    return options


def check_split(split: str | None) -> None:
    """A split spec checked before any dataset is loaded: its form and its values (a label rate in (0, 0.6],
    k >= 1, random fractions summing below 1), by drawing it on ten toy labels."""
    if split is None:
        return
    import torch

    from .data.splits import kshot_split, label_rate_split, parse_split, ratio_split

    kind, a, b = parse_split(split)
    y = torch.arange(10) % 2
    if kind == "random":
        ratio_split(10, a, b)
    elif kind == "rate":
        label_rate_split(y, a)
    elif kind == "kshot":
        kshot_split(y, int(a))


def split_label(split: str | None) -> str:
    """How a split is named in tables: its spec string, or "from the nodes file" for own data's stored split."""
    return {"file": "from the nodes file", None: "the dataset's own"}.get(split, str(split))


def _progress(disable: bool = False, count: bool = True):
    """The progress bar of every long command: description, bar, done/total, a status text, elapsed time and
    the estimated time remaining (on stderr, removed when done)."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TaskProgressColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn() if count else TaskProgressColumn(),
                    TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
                    console=err_console, transient=True, disable=disable)


@app.command("fit")
@friendly
def fit_cmd(
    method: Annotated[str, typer.Option("--method", "-m", help="A method name (see `magkit methods`).")],
    data: Annotated[str, typer.Option("--data", "-d", help="A dataset name (see `magkit data list`).")] = "synthetic",
    split: SplitOpt = None,
    seeds: Annotated[str, typer.Option(help="Seeds: a range 0..4 or a list 0,1,2.")] = "0..4",
    config: Annotated[Path | None, typer.Option("--config", help="YAML file of estimator parameters.")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="Override a parameter: --set lr=0.005 (repeatable).")] = None,
    out: Annotated[Path | None, typer.Option("--out", help="Folder for results.json and learning_curves.png.")] = None,
    root: RootOpt = None,
    device: Annotated[str | None, typer.Option("--device", help="auto | cpu | cuda (default: the method's, cpu); with --distributed, cuda is cuda:LOCAL_RANK.")] = None,
    distributed: Annotated[bool, typer.Option("--distributed", help="Data-parallel (DDP) training; launch with torchrun --nproc_per_node=N -m magkit fit ... (docs/scaling.md).")] = False,
    save_model: Annotated[bool, typer.Option("--save-model", help="Also write each seed's fitted estimator to OUT/models/seed<S>.pt (read back by `magkit predict`).")] = False,
):
    """Fit a method on a dataset for several seeds; print mean ± std and write results.json + a plot."""
    from .eval.experiment import load_config, parse_seeds
    from .methods import get_method

    seed_list = parse_seeds(seeds)
    if save_model and out is None:
        from .exceptions import ConfigError

        raise ConfigError("--save-model writes the models under --out; give --out FOLDER")
    params = load_config(config, set_ or [], cls=get_method(method).cls)
    if device is not None:
        from .exceptions import ConfigError

        if device not in ("auto", "cpu", "cuda") and not device.startswith("cuda:"):
            raise ConfigError(f"--device: {device!r}; allowed: auto, cpu, cuda")
        params["device"] = device
    _check_early(method, params, split)
    quiet = False  # ranks other than 0 print and write nothing
    if distributed:
        from . import distributed as dist

        info = dist.init_from_env(device=params.get("device", "cpu"))
        params["distributed"] = True
        quiet = info.rank != 0
        if quiet:
            logging.getLogger().setLevel(logging.WARNING)
    try:
        _fit_run(method, data, seed_list, seeds, split, params, root, out, quiet, save_model)
        if distributed:
            dist.barrier()
    finally:
        if distributed:
            dist.cleanup()


def _check_early(method: str, params: dict, split: str | None) -> None:
    """Parameters and the split spec checked before the dataset is loaded (one line each)."""
    from .methods import create

    create(method, **params).check_params()
    check_split(split)


def _fit_run(method, data, seed_list, seeds, split, params, root, out, quiet: bool, save_model: bool = False) -> None:
    from .eval.experiment import run_experiment, write_experiment

    saved = []

    def on_fitted(seed: int, est) -> None:
        if save_model and not quiet:
            meta = {"data": data, "split": split, "seed": seed, "root": str(root) if root else None}
            saved.append(est.save(Path(out) / "models" / f"seed{seed}.pt", meta=meta))

    with _progress(disable=quiet) as progress:
        task = progress.add_task(f"{method}", total=len(seed_list), info="loading the dataset")
        done = {"runs": 0}

        def show_epoch(rec: dict) -> None:
            frac = min(1.0, (rec["epoch"] + 1) / max(1, rec.get("epochs") or 1))
            progress.update(task, completed=done["runs"] + frac,
                            info=f"seed {seed_list[done['runs']]} epoch {rec['epoch']}/{rec['epochs']}  "
                                 f"loss {rec.get('loss', float('nan')):.3f}  val acc {rec.get('val_acc', float('nan')):.3f}")

        def on_run(run) -> None:
            done["runs"] += 1
            progress.update(task, completed=done["runs"])

        payload, result = run_experiment(method, data, seed_list, split, params, root=root, on_run=on_run,
                                         progress=show_epoch, on_fitted=on_fitted)
    if quiet:
        return
    console.print(results_table([(method, result)], f"{payload['dataset']['name']} · split {split_label(payload['split'])} · seeds {seeds}"))
    console.print(f"wall time {payload['wall_time_s']:.1f} s · peak memory {payload['peak_memory_mb']:.0f} MiB · dataset checksum {payload['dataset']['checksum']}")
    if payload["distributed"]["world_size"] > 1:
        console.print(f"distributed: {payload['distributed']['world_size']} processes, backend {payload['distributed']['backend']}")
    if out is not None:
        paths = write_experiment(payload, result, out)
        for p in [*paths.values(), *saved]:
            console.print(f"wrote {p}")


@app.command("predict")
@friendly
def predict_cmd(
    model: Annotated[Path, typer.Option("--model", help="A fitted estimator file (magkit fit --save-model, or est.save()).")],
    data: Annotated[str | None, typer.Option("--data", "-d", help="Dataset to predict (default: the one the model was fitted on).")] = None,
    split: SplitOpt = None,
    seed: Annotated[int | None, typer.Option(help="Seed of a seed-dependent split (default: the model's).")] = None,
    out: Annotated[Path | None, typer.Option("--out", help="CSV file for the predictions (node, label, prediction, one probability column per class).")] = None,
    root: RootOpt = None,
):
    """Predict every node of a dataset with a saved estimator: print validation / test accuracy and macro-F1
    where the graph has labels, and write the predictions as CSV. GraphMNL reads the training labels at
    prediction time (its reliability scores), so give the split the model was fitted with (the default)."""
    import csv

    from .data import load_dataset
    from .methods import load_estimator

    est = load_estimator(model)
    meta = est.saved_meta_
    data = data or meta.get("data")
    if data is None:
        from .exceptions import ConfigError

        raise ConfigError(f"{model.name} does not record its dataset; give --data")
    same = data == meta.get("data")
    split = split if split is not None else (meta.get("split") if same else None)
    seed = seed if seed is not None else (meta.get("seed") or 0)
    root = root if root is not None else (meta.get("root") if same else None)
    graph = load_dataset(data, root=root, split=split, seed=seed)
    recorded = (est.__dict__.get("dataset_") or {}).get("checksum")
    if same and recorded and not getattr(graph, "is_mapped", False) and graph.checksum() != recorded:
        err_console.print(f"[yellow]warning:[/] {data} differs from the data {model.name} was fitted on (checksum "
                          f"{graph.checksum()}, recorded {recorded}): another version or split", highlight=False)
    proba = est.predict_proba(graph)
    t = Table(title=f"{est.name} ({model.name}) on {graph.name} · split {split or graph.meta.get('split', 'own')} · seed {seed}")
    for col in ("split", "nodes", "accuracy", "macro-F1"):
        t.add_column(col, justify="left" if col == "split" else "right")
    labelled = graph.get("y") is not None
    if labelled:
        from .functional import accuracy, macro_f1

        for name in ("train", "val", "test"):
            if graph.get(f"{name}_mask") is None:
                continue
            idx = graph.split_index(name)
            if idx.numel():
                t.add_row(name, str(idx.numel()), f"{100 * accuracy(proba[idx], graph.y[idx]):.2f}",
                          f"{100 * macro_f1(proba[idx], graph.y[idx], graph.num_classes):.2f}")
        console.print(t)
    if out is not None:  # temp file + fsync + rename: a failed write never replaces an older CSV
        from .integrity import atomic_path

        names = list(getattr(graph, "class_names", None) or [str(c) for c in range(proba.shape[1])])
        pred = proba.argmax(1)
        with atomic_path(out) as tmp, tmp.open("w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["node", "label", "prediction", *[f"p_{n}" for n in names]])
            for i in range(graph.num_nodes):
                label = int(graph.y[i]) if labelled else ""
                w.writerow([i, label, int(pred[i]), *(f"{v:.6f}" for v in proba[i].tolist())])
        console.print(f"wrote {out} ({graph.num_nodes} nodes)")


@app.command("explain")
@friendly
def explain_cmd(
    method: Annotated[str, typer.Option("--method", "-m", help="A GraphMNL method (graphmnl or an ablation).")] = "graphmnl",
    data: Annotated[str, typer.Option("--data", "-d", help="Dataset name.")] = "synthetic",
    split: SplitOpt = None,
    seed: Annotated[int, typer.Option(help="Seed of the run.")] = 0,
    set_: Annotated[list[str] | None, typer.Option("--set", help="Override a parameter (repeatable).")] = None,
    out: Annotated[Path | None, typer.Option("--out", help="Folder for diagnostics.json and diagnostics.png.")] = None,
    root: RootOpt = None,
):
    """Fit GraphMNL once and show how it arbitrated: per-branch accuracy, dominance, fusion weights, gate
    rate, and (on generated graphs) how well reliability ranks the truly better modality."""
    from .data import load_dataset
    from .eval.experiment import load_config
    from .exceptions import ConfigError
    from .methods import create, get_method
    from .methods.graphmnl import GraphMNL, explain_report

    spec = get_method(method)
    if spec.cls is not GraphMNL:
        raise ConfigError(f"method: {method!r} has no arbitration to explain; allowed: graphmnl and its ablations")
    graph = load_dataset(data, root=root, split=split, seed=seed)
    est = create(method, **{**load_config(None, set_ or [], cls=spec.cls), "seed": seed}).fit(graph)
    report = explain_report(est, graph)
    t = Table(title=f"{method} on {graph.name} (seed {seed}): test acc {100 * report['test']['acc']:.2f}, macro-F1 {100 * report['test']['f1']:.2f}")
    for col in ("branch", "val acc", "dominant on", "mean fusion weight", "mean reliability"):
        t.add_column(col, justify="left" if col == "branch" else "right")
    for b in report["branches"]:
        r = report["per_branch"][b]
        t.add_row(b, f"{100 * r['val_acc']:.2f}", f"{100 * r['dominant_share']:.1f}%", f"{r['mean_alpha']:.3f}", f"{r['mean_reliability']:.3f}")
    console.print(t)
    gate = report["gate_rate"]
    if report["method_params"].get("gate", True):
        console.print(f"gate open on {100 * report['final_gate_rate']:.1f}% of guided nodes at the selected epoch "
                      f"(max {100 * max(gate or [0]):.1f}% over {len(gate)} epochs)")
    else:
        console.print("instability gate off (gate=False, the default): every guided node is taught after the "
                      "warm-up; --set gate=true turns the gate on")
    if report.get("reliability_auc"):
        console.print("reliability AUC against the generator's ground truth: "
                      + ", ".join(f"{k} branches {v:.3f}" for k, v in report["reliability_auc"].items()))
    if out is not None:
        from .eval.results import atomic_write_json
        from .methods.graphmnl import plot_diagnostics

        console.print(f"wrote {atomic_write_json(Path(out) / 'diagnostics.json', report)}")
        console.print(f"wrote {plot_diagnostics(report, Path(out) / 'diagnostics.png')}")


@app.command("demo")
@friendly
def demo(
    out: Annotated[Path, typer.Option("--out", help="Folder for the results: per-method results.json, summary.json/.md, test_accuracy.png.")] = Path("magkit-demo"),
    full: Annotated[bool, typer.Option("--full", help="The longer tour: nine methods on the 2,000-node graph with their own epoch budgets (minutes).")] = False,
    methods: Annotated[str | None, typer.Option("--methods", help="Comma-separated methods to run instead (see `magkit methods`).")] = None,
    seeds: Annotated[str | None, typer.Option(help="Seeds instead of the tour's (0..2 quick, 0,1 full): a range 0..4 or a list 0,1,2.")] = None,
    root: RootOpt = None,
):
    """A tour in under a minute: a small generated graph with three modalities of unequal quality, an MLP, GCN,
    GraphSAGE and GraphMNL over three seeds, a comparison table, and the files a real run writes."""
    from .demo import FULL, QUICK, run_demo
    from .eval.experiment import parse_seeds
    from .methods import get_method

    plan = FULL if full else QUICK
    names = [m.strip() for m in methods.split(",") if m.strip()] if methods is not None else list(plan.methods)
    if not names:
        from .exceptions import ConfigError

        raise ConfigError(f"--methods: {methods!r}; allowed: comma-separated method names, e.g. gcn-early,mlp-early")
    for name in names:
        get_method(name)
    seed_list = parse_seeds(seeds) if seeds is not None else list(plan.seeds)
    total = len(names) * len(seed_list)
    console.print(f"magkit demo: {len(names)} methods x {len(seed_list)} seeds on {plan.data}"
                  f"{' (' + ', '.join(f'{k}={v}' for k, v in plan.data_options.items()) + ')' if plan.data_options else ''}; "
                  f"results go to {out}", highlight=False, soft_wrap=True)
    with _progress(count=False) as progress:
        task = progress.add_task("building the graph", total=total, info="")
        state = {"runs": 0, "method": ""}

        def on_graph(graph) -> None:
            progress.console.print(f"graph: {graph.num_nodes:,} nodes, {graph.edge_index.shape[1] // 2:,} edges, "
                                   f"{graph.num_classes} classes, modalities {', '.join(graph.modalities)}",
                                   highlight=False, soft_wrap=True)

        def on_method(name: str) -> None:
            state["method"] = name
            progress.update(task, description=name, info="")

        def show_epoch(rec: dict) -> None:
            frac = min(1.0, (rec["epoch"] + 1) / max(1, rec.get("epochs") or 1))
            progress.update(task, completed=state["runs"] + frac,
                            info=f"seed {seed_list[state['runs'] % len(seed_list)]} epoch {rec['epoch']}  "
                                 f"val acc {rec.get('val_acc', float('nan')):.3f}")

        def on_run(run) -> None:
            state["runs"] += 1
            progress.update(task, completed=state["runs"], info=f"seed {run.seed}: test acc {run.test_acc:.3f}")

        res = run_demo(out, plan, methods=names, seeds=seed_list, root=root, on_graph=on_graph, on_method=on_method,
                       on_run=on_run, progress=show_epoch)
    graph = res["graph"]
    table = Table(title=f"{graph.name} · {graph.num_nodes:,} nodes · split {split_label(res['split'])} · "
                        f"seeds {', '.join(map(str, res['seeds']))} · mean ± std (%)")
    for col in ("method", "test acc", "test macro-F1", "val acc", "epoch time (ms)"):
        table.add_column(col, justify="left" if col == "method" else "right")
    for name, r in res["rows"]:
        table.add_row(name, r.fmt("test_acc"), r.fmt("test_f1"), r.fmt("val_acc"),
                      f"{1000 * r.summary()['epoch_time']['mean']:.1f}")
    console.print(table)
    console.print(f"results written to {out.resolve()}/ : <method>/results.json, <method>/learning_curves.png, "
                  "summary.json, summary.md, test_accuracy.png", highlight=False, soft_wrap=True)
    console.print("next: magkit fit --method gcn-early --data synthetic --out runs/gcn  (one method, five seeds, "
                  "results.json and learning curves)", highlight=False, soft_wrap=True)


# ---------------------------------------------------------------------------------------------- bench
@bench_app.command("run")
@friendly
def bench_run(
    suite: Annotated[Path, typer.Argument(help="Suite YAML (e.g. benchmarks/nodecls.yaml).")],
    out: Annotated[Path | None, typer.Option("--out", help="Results folder (default: next to the suite, named after it).")] = None,
    root: RootOpt = None,
    throughput: Annotated[bool, typer.Option(help="Also measure GCN throughput against a dense matmul.")] = True,
    shard: Annotated[str, typer.Option(help="Run only shard i/n of the grid (e.g. 0/2), for parallel processes or job arrays.")] = "0/1",
    run: Annotated[bool, typer.Option("--run/--render-only", help="--render-only: write the tables from the rows recorded so far.")] = True,
):
    """Run every cell of a suite not yet recorded (resumable), then write results.md and results.json.

    A suite is a fit sweep spec (see `magkit sweep`) whose rows live next to it."""
    import json

    from .bench.spec import parse_shard
    from .bench.suite import load_suite, render, run_suite

    parse_shard(shard)
    spec = load_suite(suite)
    if out is None:
        from .eval.results import check_writable

        out = check_writable(suite.with_suffix(""), "--out (default: next to the suite)", folder=True)
    if run:
        with _progress() as progress:
            task = progress.add_task(spec["name"], total=None, info="")

            def on_cell(row, i, n):
                from rich.markup import escape

                ok = row.get("status") == "ok"
                what = f"test acc {row['metrics']['test_acc']:.3f}" if ok else f"[red]{escape(str(row.get('error')))}[/]"
                progress.update(task, completed=i, total=n, info=f"{escape(row['key'])}: {what}")

            run_suite(spec, out, root=root, on_cell=on_cell, shard=shard)
    extra = ""
    if throughput:
        from .bench.throughput import gcn_throughput
        from .data import load_dataset

        first = next(iter(spec["datasets"].values()))
        with err_console.status(f"measuring GCN throughput on {first['data']}"):
            tp = gcn_throughput(load_dataset(first["data"], root=root, **first["options"]),
                                hidden=spec["params"].get("hidden", 128))
        (out / "throughput.json").write_text(json.dumps(tp, indent=2) + "\n")
        extra = ("## Engine throughput\n\n"
                 f"2-layer GCN training step (forward + backward) on `{first['data']}` ({tp['nodes']:,} nodes, "
                 f"{tp['nnz']:,} non-zeros in Â, widths {tp['d_in']} -> {tp['hidden']} -> {tp['classes']}), "
                 f"{tp['threads']} threads: {tp['step_time_ms']:.1f} ms per step = {tp['achieved_gflops']:.1f} GFLOP/s, "
                 f"against {tp['dense_matmul_gflops']:.1f} GFLOP/s for a dense [{tp['nodes']} x {tp['d_in']}] @ "
                 f"[{tp['d_in']} x {tp['hidden']}] matmul in the same run: **{100 * tp['ratio_to_dense']:.0f}% of the dense rate**.")
    res = render(spec, out, command=f"magkit bench run {suite}", extra_md=extra)
    console.print(f"{res['cells']} cells: {res['ok']} ok, {res['failed']} failed", highlight=False, soft_wrap=True)
    for p in [res["markdown"], res["json"], *res["plots"]]:
        console.print(f"wrote {p}", highlight=False, soft_wrap=True)
    if res["failed"]:
        err_console.print(f"[yellow]{res['failed']} cell(s) failed (see results.md); rerun them with "
                          f"magkit sweep {suite} --out {out} --retry-failed[/]")
        raise typer.Exit(1)


@app.command("condense")
@friendly
def condense_cmd(
    method: Annotated[str, typer.Option("--method", "-m", help="srgm | gcond | gcond-x | srgm-no-decoupling | srgm-no-damping | random | herding | kcenter.")],
    data: Annotated[str, typer.Option("--data", "-d", help="A dataset name (see `magkit data list`).")],
    out: Annotated[Path, typer.Option("--out", help="Where to write the condensed graph (.safetensors).")],
    ratio: Annotated[float, typer.Option(help="Budget: synthetic nodes as a share of the training nodes.")] = 0.01,
    setting: Annotated[str, typer.Option(help="transductive (condense from the whole graph) | inductive (train-induced subgraph).")] = "transductive",
    split: SplitOpt = None,
    seed: Annotated[int, typer.Option(help="Seed of the condensation.")] = 0,
    epochs: Annotated[int | None, typer.Option(help="Condensation epochs (default: the method's).")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="Override a condenser parameter: --set lr_feat=0.001 (repeatable).")] = None,
    data_set: Annotated[list[str] | None, typer.Option("--data-set", help="Dataset/generator option: --data-set space=aligned (repeatable).")] = None,
    checkpoint: Annotated[Path | None, typer.Option("--checkpoint", help="Checkpoint file (default: OUT with .ckpt.safetensors).")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue from the checkpoint after an interruption.")] = False,
    distributed: Annotated[bool, typer.Option("--distributed", help="Shard the real-graph gradients over processes; launch with torchrun --nproc_per_node=N -m magkit condense ... (docs/scaling.md).")] = False,
    device: Annotated[str | None, typer.Option("--device", help="auto | cpu | cuda (default cpu); with --distributed, cuda is cuda:LOCAL_RANK.")] = None,
    root: RootOpt = None,
):
    """Condense a dataset into a tiny synthetic graph; writes OUT (safetensors + JSON metadata)."""
    quiet = False
    if distributed:
        from . import distributed as dist
        from .condense.coreset import CORESETS
        from .exceptions import ConfigError

        if method in CORESETS:
            raise ConfigError(f"--distributed: {method} is a coreset (milliseconds on one process); "
                              "allowed with: srgm, srgm-no-decoupling, srgm-no-damping, gcond, gcond-x")
        info = dist.init_from_env(device=device or "cpu")
        set_ = [*(set_ or []), "distributed=true"]
        quiet = info.rank != 0
        if quiet:
            logging.getLogger().setLevel(logging.WARNING)
    if device is not None:
        set_ = [*(set_ or []), f"device={device}"]
    try:
        _condense_run(method, data, out, ratio, setting, split, seed, epochs, set_, data_set, checkpoint, resume, root,
                      quiet)
        if distributed:
            dist.barrier()
    finally:
        if distributed:
            dist.cleanup()


def _condense_run(method, data, out, ratio, setting, split, seed, epochs, set_, data_set, checkpoint, resume, root,
                  quiet: bool) -> None:
    import time as _time

    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from .condense.registry import REGISTRY, make_condenser
    from .data.datasets import load_dataset
    from .eval.experiment import load_config

    params = load_config(None, set_ or [], cls=REGISTRY.get(method).cls)
    params.update(ratio=ratio, setting=setting, seed=seed)
    if epochs is not None:
        params["epochs"] = epochs
    cond = make_condenser(method, **params)
    cond.check_params()  # a bad value is reported before the dataset is loaded
    check_split(split)
    graph = load_dataset(data, root=root, split=split, **data_options(data_set))
    ckpt = checkpoint or out.with_name(out.name.removesuffix(".safetensors") + ".ckpt.safetensors")
    t0 = _time.perf_counter()
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
                  TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(), console=err_console, transient=True,
                  disable=quiet) as progress:
        total = cond.params.get("epochs", 1)
        task = progress.add_task(f"{method} {graph.name}", total=total, info="")
        last_val = {"v": float("nan")}

        def show_epoch(rec: dict) -> None:
            last_val["v"] = rec.get("val_acc", last_val["v"])
            progress.update(task, completed=rec["epoch"],
                            info=f"epoch {rec['epoch']}  loss {rec['loss']:.3f}  val acc {last_val['v']:.3f}")

        kwargs = {"progress": show_epoch, "checkpoint": ckpt, "resume": resume} if "epochs" in cond.params else {}
        condensed = cond.condense(graph, **kwargs)
    if quiet:  # every rank holds the same S; rank 0 writes it
        return
    if data_set:
        condensed.meta["dataset_options"] = data_options(data_set)  # read back by `magkit evaluate`
    path = condensed.save(out)
    if ckpt.exists():
        ckpt.unlink()
    st = condensed.stats()
    hist = cond.history_ or {}
    console.print(f"{method}: {condensed.num_nodes} synthetic nodes from {graph.name} ({setting}, ratio {ratio}) "
                  f"in {_time.perf_counter() - t0:.1f} s")
    if hist.get("best_epoch") is not None:
        console.print(f"best validation accuracy of S {hist['best_val_acc']:.4f} at epoch {hist['best_epoch']} "
                      f"(selected on the validation split)")
    console.print(f"edge density {st['edge_density']:.4f} · max edge weight {st['weight_max']:.4f} · "
                  f"components {st['components']}")
    console.print(f"wrote {path}")


@app.command("evaluate")
@friendly
def evaluate_cmd(
    path: Annotated[Path, typer.Argument(help="A condensed graph (.safetensors) written by `magkit condense`.")],
    data: Annotated[str, typer.Option("--data", "-d", help="The real dataset it was condensed from.")],
    backbones: Annotated[str, typer.Option(help="Comma-separated: gcn,sgc,sage,appnp,gat,cheb,mlp.")] = "gcn,sgc,sage,appnp,gat,cheb,mlp",
    runs: Annotated[int, typer.Option(min=1, help="Fresh models per backbone.")] = 5,
    seed: Annotated[int, typer.Option(help="Seed of the first run.")] = 0,
    split: SplitOpt = None,
    data_set: Annotated[list[str] | None, typer.Option("--data-set", help="Dataset/generator option, as given to condense (repeatable).")] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="Also write the results as JSON here.")] = None,
    device: Annotated[str, typer.Option("--device", help="auto | cpu | cuda.")] = "cpu",
    root: RootOpt = None,
):
    """Train fresh GNNs on a condensed graph, select on the real validation split, test on the real graph."""
    from .base import did_you_mean
    from .condense import CondensedGraph, evaluate_condensed
    from .condense.evaluate import EVAL_BACKBONES
    from .data.datasets import load_dataset
    from .eval.results import atomic_write_json
    from .exceptions import ConfigError, DatasetError

    names = [b.strip() for b in backbones.split(",") if b.strip()]
    bad = [b for b in names if b not in EVAL_BACKBONES]
    if bad or not names:
        hint = did_you_mean(bad[0], EVAL_BACKBONES) if bad else ""
        raise ConfigError(f"--backbones: {backbones!r}{hint}; allowed: comma-separated names from {', '.join(EVAL_BACKBONES)}")
    if device not in ("auto", "cpu", "cuda") and not device.startswith("cuda:"):
        raise ConfigError(f"--device: {device!r}; allowed: auto, cpu, cuda")
    check_split(split)
    condensed = CondensedGraph.load(path)
    options = data_options(data_set)
    with err_console.status(f"loading {data}"):
        graph = load_dataset(data, root=root, split=split, **options)
    try:
        condensed.check_compatible(graph, strict_checksum=True)
    except DatasetError as exc:
        if "dataset_checksum" not in str(exc):
            raise
        recorded = condensed.meta.get("dataset_options")
        differ = {k: v for k, v in (recorded or {}).items() if options.get(k) != v}
        if differ:
            given = " ".join(f"--data-set {k}={v}" for k, v in differ.items())
            raise DatasetError(f"{exc}; it was condensed with {given} (missing or different here): give evaluate "
                               "the same --data-set options as condense") from None
        if not options:
            raise DatasetError(f"{exc}; if condense was given --data-set options (e.g. --data-set space=aligned), "
                               "give evaluate the same ones") from None
        raise
    res = {}
    with _progress() as progress:
        task = progress.add_task(f"{path.name}", total=len(names), info="")
        for i, b in enumerate(names):
            progress.update(task, info=f"{b}: {runs} runs")
            res.update(evaluate_condensed(condensed, graph, [b], runs=runs, seed=seed, device=device))
            progress.update(task, completed=i + 1)
    table = Table(title=f"{path.name} on {graph.name} · {runs} runs · mean ± std")
    for col in ("backbone", "test acc", "test macro-F1", "val acc"):
        table.add_column(col)
    for b, r in res.items():
        table.add_row(b, *(f"{100 * r[k][0]:.2f} ± {100 * r[k][1]:.2f}" for k in ("test_acc", "test_f1", "val_acc")))
    console.print(table)
    if json_out is not None:
        atomic_write_json(json_out, {"condensed": str(path), "dataset": graph.name, "runs": runs, "seed": seed,
                                     "meta": condensed.meta, "results": res})
        console.print(f"wrote {json_out}")


# ---------------------------------------------------------------------------------------------- sweep
@app.command("sweep")
@friendly
def sweep_cmd(
    spec_path: Annotated[Path, typer.Argument(metavar="SPEC", help="Sweep spec YAML (task fit or condense; see docs/scaling.md).")],
    out: Annotated[Path, typer.Option("--out", help="Sweep folder: rows.jsonl (rows.shard-i-of-n.jsonl for a shard) is appended there.")],
    executor: Annotated[str, typer.Option(help="local (in this process, one cell after another) | ray (one Ray task per cell).")] = "local",
    shard: Annotated[str, typer.Option(help="Run only shard i/n of the grid, e.g. --shard $SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT.")] = "0/1",
    ray_address: Annotated[str, typer.Option("--ray-address", help="local (start a Ray instance here) | auto (this machine's cluster) | host:port | ray://host:10001.")] = "local",
    retry_failed: Annotated[bool, typer.Option("--retry-failed", help="Also rerun the cells whose recorded row is an error.")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the cells and how many are already done; run nothing.")] = False,
    root: RootOpt = None,
):
    """Run a grid of cells (methods x seeds x budgets x profiles); resumable: recorded cells are skipped."""
    from .bench.executors import EXECUTORS
    from .bench.spec import load_spec, parse_shard
    from .bench.sweep import plan, run_sweep

    parse_shard(shard)
    if executor not in EXECUTORS:
        from .base import did_you_mean
        from .exceptions import ConfigError

        raise ConfigError(f"--executor: {executor!r}{did_you_mean(executor, EXECUTORS)}; allowed: {', '.join(EXECUTORS)}")
    spec = load_spec(spec_path)
    if root is not None:
        spec["root"] = str(root)
    if dry_run:
        p = plan(spec, out, shard, retry_failed)
        mine = {c.key for c in p.shard_cells}
        todo = {c.key for c in p.todo}
        for c in p.cells:
            state = "other shard" if c.key not in mine else ("run" if c.key in todo else p.state(c))
            console.print(f"{c.id}  {state:<11}  {c.key}", highlight=False, soft_wrap=True)
        n_done = sum(1 for c in p.cells if p.state(c) == "done")
        n_failed = sum(1 for c in p.cells if p.state(c) == "failed")
        console.print(f"{len(p.cells)} cells in the grid: {n_done} done, {n_failed} failed, {len(p.cells) - n_done - n_failed} not run; "
                      f"shard {shard}: {len(p.shard_cells)} cells, {len(p.todo)} to run (rows to {p.rows_path})", highlight=False, soft_wrap=True)
        return
    with _progress() as progress:
        task = progress.add_task(spec["name"], total=None, info="")

        def on_start(p) -> None:
            progress.update(task, total=len(p.todo), info=f"{len(p.shard_cells) - len(p.todo)} cells already done")

        def on_row(row, i, n) -> None:
            from rich.markup import escape

            ok = row.get("status") == "ok"
            what = f"test acc {row['metrics']['test_acc']:.3f}" if ok else f"[red]{escape(str(row.get('error')))}[/]"
            progress.update(task, completed=i, info=f"{escape(row['key'])}: {what}")
            if not ok:
                progress.console.print(f"[red]failed[/] {escape(row['key'])}: {escape(str(row.get('error')))}", highlight=False, soft_wrap=True)

        res = run_sweep(spec, out, executor=executor, shard=shard, retry_failed=retry_failed, ray_address=ray_address,
                        on_start=on_start, on_row=on_row)
    ok = len(res.rows) - len(res.failed)
    console.print(f"{spec['name']}: ran {len(res.rows)} cells ({ok} ok, {len(res.failed)} failed), skipped {res.skipped} already "
                  f"recorded; rows in {res.rows_path}", highlight=False, soft_wrap=True)
    console.print(f"tables and plots: magkit report {out} --out {out}", highlight=False, soft_wrap=True)
    if res.failed:
        err_console.print(f"[yellow]{len(res.failed)} cell(s) failed; rerun them with --retry-failed[/]")
        raise typer.Exit(1)


@app.command("report")
@friendly
def report_cmd(
    rows: Annotated[list[Path], typer.Argument(metavar="ROWS...", help="Rows files (.jsonl) or sweep / bench folders; merged in order, the last row of a cell wins.")],
    out: Annotated[Path, typer.Option("--out", help="Folder for results.md, results.json and the plots.")],
):
    """Merge sweep or bench rows files into results.md (mean ± std per method and setting), results.json and plots."""
    from .bench.report import render

    res = render(rows, out)
    console.print(f"{res['cells']} cells: {res['ok']} ok, {res['failed']} failed; {len(res['groups'])} groups", highlight=False, soft_wrap=True)
    for p in [res["markdown"], res["json"], *res["plots"]]:
        console.print(f"wrote {p}", highlight=False, soft_wrap=True)


def main() -> None:
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
