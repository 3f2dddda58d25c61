"""``magkit condense`` and ``magkit evaluate``: condense a dataset into a small synthetic graph, and train
fresh GNNs on it to test on the real graph."""

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
from ._render import progress_bar


def data_options(items: list[str] | None) -> dict:
    """``--data-set key=value`` options as a dict (values read as YAML scalars or lists)."""
    from ..eval.experiment import parse_value
    from ..exceptions import ConfigError

    options = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--data-set: {item!r}; allowed: key=value, e.g. --data-set space=aligned")
        options[key.strip()] = parse_value(value)
    return options


@app.command("condense")
@friendly
def condense_cmd(
    method: Annotated[str, typer.Option("--method", "-m", help="srgm | srgm-x | gcond | gcond-x | srgm-no-decoupling | srgm-no-damping | random | herding | kcenter.")],
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
    if distributed:
        from ..condense.coreset import CORESETS
        from ..exceptions import ConfigError

        if method in CORESETS:
            raise ConfigError(f"--distributed: {method} is a coreset (milliseconds on one process); "
                              "allowed with: srgm, srgm-x, srgm-no-decoupling, srgm-no-damping, gcond, gcond-x")
        set_ = [*(set_ or []), "distributed=true"]
    if device is not None:
        set_ = [*(set_ or []), f"device={device}"]
    with distributed_run(distributed, device or "cpu") as quiet:  # ranks other than 0: quiet
        _condense_run(method, data, out, ratio, setting, split, seed, epochs, set_, data_set, checkpoint, resume, root,
                      quiet)


def _condense_run(method, data, out, ratio, setting, split, seed, epochs, set_, data_set, checkpoint, resume, root,
                  quiet: bool) -> None:
    import time as _time

    from ..condense.registry import REGISTRY, make_condenser
    from ..data.datasets import load_dataset
    from ..eval.experiment import load_config

    params = load_config(None, set_ or [], cls=REGISTRY.get(method).cls)
    params.update(ratio=ratio, setting=setting, seed=seed)
    if epochs is not None:
        params["epochs"] = epochs
    cond = make_condenser(method, **params)
    cond.check_params()  # a bad value is reported before the dataset is loaded
    check_split(split)
    graph = load_dataset(data, root=root, split=split, **data_options(data_set))
    ckpt = checkpoint or out.with_name(out.name.removesuffix(".safetensors") + ".ckpt.safetensors")
    if resume and not Path(ckpt).exists():
        err_console.print(f"--resume: no checkpoint at {ckpt}; starting from epoch 0", highlight=False)
    t0 = _time.perf_counter()
    with progress_bar(disable=quiet) as progress:
        total = cond.params.get("epochs", 1)
        task = progress.add_task(f"{method} {graph.name}", total=total, info="")
        last_val = {"v": float("nan")}

        def show_epoch(rec: dict) -> None:
            last_val["v"] = rec.get("val_acc", last_val["v"])
            val = "—" if last_val["v"] != last_val["v"] else f"{last_val['v']:.3f}"  # nan before the first check
            progress.update(task, completed=rec["epoch"], info=f"epoch {rec['epoch']}  loss {rec['loss']:.3f}  val acc {val}")

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
    if st["edge_density"] == 0:  # GCond-X, the coresets' feature-only settings: S carries no edges
        console.print(f"structure: none (A' = 0: {method} learns node features only; a GNN on S sees self-loops only)")
    else:
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
    fast: Annotated[bool, typer.Option("--fast", help="The fast protocol (opt-in): runs stacked, scored-node readout, early stop; matches the default within seed noise, not bit for bit.")] = False,
    eval_every: Annotated[int | None, typer.Option("--eval-every", help="With --fast: validate after every N-th epoch and the last. [default: 10]")] = None,
    patience: Annotated[int | None, typer.Option("--patience", help="With --fast: stop a run after this many validations without improvement (0: never). [default: 10]")] = None,
    val_dtype: Annotated[str | None, typer.Option("--val-dtype", help="With --fast: precision of the selecting validations: float32 (exact, any machine) | auto (bfloat16 where native: faster, hardware-dependent) | bfloat16. [default: auto]")] = None,
    root: RootOpt = None,
):
    """Train fresh GNNs on a condensed graph, select on the real validation split, test on the real graph."""
    from ..base import did_you_mean
    from ..condense import CondensedGraph, evaluate_condensed
    from ..condense.evaluate import EVAL_BACKBONES, protocol_options
    from ..data.datasets import load_dataset
    from ..eval.results import atomic_write_json
    from ..exceptions import ConfigError, DatasetError

    names = [b.strip() for b in backbones.split(",") if b.strip()]
    bad = [b for b in names if b not in EVAL_BACKBONES]
    if bad or not names:
        hint = did_you_mean(bad[0], EVAL_BACKBONES) if bad else ""
        raise ConfigError(f"--backbones: {backbones!r}{hint}; allowed: comma-separated names from {', '.join(EVAL_BACKBONES)}")
    protocol = "fast" if fast else "standard"
    fast_kw = protocol_options(protocol, {"eval_every": eval_every, "patience": patience, "val_dtype": val_dtype},
                               arg=lambda k: f"--{k.replace('_', '-')}:", fast_flag="--fast")
    protocol_kw = {} if fast_kw is None else {"protocol": protocol, **fast_kw}
    check_device(device)
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
    with progress_bar() as progress:
        task = progress.add_task(f"{path.name}", total=len(names), info="")
        for i, b in enumerate(names):
            progress.update(task, info=f"{b}: {runs} runs")
            res.update(evaluate_condensed(condensed, graph, [b], runs=runs, seed=seed, device=device, **protocol_kw))
            progress.update(task, completed=i + 1)
    table = Table(title=f"{path.name} on {graph.name} · {runs} runs{' · fast protocol' if fast else ''} · mean ± std")
    for col in ("backbone", "test acc", "test macro-F1", "val acc"):
        table.add_column(col)
    for b, r in res.items():
        table.add_row(b, *(f"{100 * r[k][0]:.2f} ± {100 * r[k][1]:.2f}" for k in ("test_acc", "test_f1", "val_acc")))
    console.print(table)
    if json_out is not None:
        atomic_write_json(json_out, {"condensed": str(path), "dataset": graph.name, "runs": runs, "seed": seed,
                                     **protocol_kw, "meta": condensed.meta, "results": res})
        console.print(f"wrote {json_out}")
