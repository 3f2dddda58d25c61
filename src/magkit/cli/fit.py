"""``magkit methods``, ``magkit fit`` and ``magkit predict``: list the methods, fit one over seeds, predict
with a saved estimator."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from . import (
    RootOpt,
    SplitOpt,
    app,
    check_device,
    check_split,
    console,
    distributed_run,
    err_console,
    friendly,
)
from ._render import epoch_callback, progress_bar, split_label


@app.command("methods")
def methods_cmd():
    """List every registered method (node classifiers, for fit) and condenser (for condense)."""
    from ..condense.registry import REGISTRY
    from ..methods import methods

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
    save_model: Annotated[bool, typer.Option("--save-model", help="Also write each seed's fitted estimator to OUT/models/seed<S>.safetensors (read back by `magkit predict`).")] = False,
):
    """Fit a method on a dataset for several seeds; print mean ± std and write results.json + a plot."""
    from ..eval.experiment import load_config, parse_seeds
    from ..methods import get_method

    seed_list = parse_seeds(seeds)
    if save_model and out is None:
        from ..exceptions import ConfigError

        raise ConfigError("--save-model writes the models under --out; give --out FOLDER")
    params = load_config(config, set_ or [], cls=get_method(method).cls)
    if device is not None:
        check_device(device)
        params["device"] = device
    _check_early(method, params, split)
    if distributed:
        params["distributed"] = True
    with distributed_run(distributed, params.get("device", "cpu")) as quiet:  # ranks other than 0: quiet
        _fit_run(method, data, seed_list, seeds, split, params, root, out, quiet, save_model)


def _check_early(method: str, params: dict, split: str | None) -> None:
    """Parameters and the split spec checked before the dataset is loaded (one line each)."""
    from ..methods import create

    create(method, **params).check_params()
    check_split(split)


def _fit_run(method, data, seed_list, seeds, split, params, root, out, quiet: bool, save_model: bool = False) -> None:
    from ..eval.experiment import run_experiment, write_experiment

    saved = []

    def on_fitted(seed: int, est) -> None:
        if save_model and not quiet:
            meta = {"data": data, "split": split, "seed": seed, "root": str(root) if root else None}
            saved.append(est.save(Path(out) / "models" / f"seed{seed}.safetensors", meta=meta))

    with progress_bar(disable=quiet) as progress:
        task = progress.add_task(f"{method}", total=len(seed_list), info="loading the dataset")
        done = {"runs": 0}
        show_epoch = epoch_callback(progress, task, seed_list, done)

        def on_run(run) -> None:
            done["runs"] += 1
            progress.update(task, completed=done["runs"])

        payload, result = run_experiment(method, data, seed_list, split, params, root=root, on_run=on_run,
                                         progress=show_epoch, on_fitted=on_fitted)
    if quiet:
        return
    console.print(results_table([(method, result)], f"{payload['dataset']['name']} · split {split_label(payload['split'])} · seeds {seeds}"))
    alphas = [r.chosen["output_alpha"] for r in result.runs if "output_alpha" in r.chosen]
    if alphas:
        console.print("output_prop: a = " + ", ".join(f"{a:g}" for a in alphas) + " (per seed; 1 = not propagated)")
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

    from ..data import load_dataset
    from ..methods import load_estimator

    est = load_estimator(model)
    meta = est.saved_meta_
    data = data or meta.get("data")
    if data is None:
        from ..exceptions import ConfigError

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
        from ..functional import accuracy, macro_f1

        for name in ("train", "val", "test"):
            if graph.get(f"{name}_mask") is None:
                continue
            idx = graph.split_index(name)
            if idx.numel():
                t.add_row(name, str(idx.numel()), f"{100 * accuracy(proba[idx], graph.y[idx]):.2f}",
                          f"{100 * macro_f1(proba[idx], graph.y[idx], graph.num_classes):.2f}")
        console.print(t)
    if out is not None:  # temp file + fsync + rename: a failed write never replaces an older CSV
        from ..integrity import atomic_path

        names = list(getattr(graph, "class_names", None) or [str(c) for c in range(proba.shape[1])])
        pred = proba.argmax(1)
        with atomic_path(out) as tmp, tmp.open("w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["node", "label", "prediction", *[f"p_{n}" for n in names]])
            for i in range(graph.num_nodes):
                label = int(graph.y[i]) if labelled else ""
                w.writerow([i, label, int(pred[i]), *(f"{v:.6f}" for v in proba[i].tolist())])
        console.print(f"wrote {out} ({graph.num_nodes} nodes)")
