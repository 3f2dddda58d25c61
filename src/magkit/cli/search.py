"""``magkit search``: architecture and hyper-parameter search on a condensed graph (or the whole graph), and
``magkit search --compare A B``: how well two searches rank the same candidates alike."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from . import RootOpt, SplitOpt, app, check_split, console, err_console, friendly
from ._render import progress_bar


def _pct(v) -> str:
    return "–" if v is None else f"{100 * v:.2f}"


def _compare(a: Path, b: Path, k: int) -> None:
    from ..search import compare

    for p, what in ((a, "first"), (b, "second")):
        if not p.exists():
            from ..exceptions import ConfigError

            raise ConfigError(f"--compare: {what} path {str(p)!r} does not exist; allowed: a search --out folder or "
                              "its rows file")
    res = compare(a, b, k=k)
    console.print(f"{res['n']} configurations in both: Spearman {res['spearman']:.3f} · Kendall {res['kendall']:.3f} · "
                  f"top-{res['k']} overlap {res['top_overlap']:.2f}", highlight=False, soft_wrap=True)
    console.print(f"best on {a}: {res['best_s']}\nbest on {b}: {res['best_whole']}", highlight=False, soft_wrap=True)


@app.command("search")
@friendly
def search_cmd(
    data: Annotated[str | None, typer.Argument(help="A dataset name (see `magkit data list`), e.g. citeseer.")] = None,
    space: Annotated[Path | None, typer.Option("--space", help="Search space YAML (docs/search.md): backbone, fusion, num_layers, hidden, dropout, lr, weight_decay; mode grid | sample.")] = None,
    out: Annotated[Path | None, typer.Option("--out", help="Search folder: rows.jsonl (one row per trial, resumable) and search.json.")] = None,
    condensed: Annotated[Path | None, typer.Option("--condensed", help="Search on this condensed graph (.safetensors from `magkit condense`).")] = None,
    condenser: Annotated[str | None, typer.Option("--condenser", help="Condense first with this method (srgm, gcond, gcond-x, random, kcenter, ...), then search on S.")] = None,
    ratio: Annotated[float, typer.Option(help="Budget of --condenser: synthetic nodes as a share of the training nodes.")] = 0.01,
    on: Annotated[str | None, typer.Option("--on", help="whole: search on the whole training graph (the reference).")] = None,
    top: Annotated[int, typer.Option(help="Re-train this many of the best trials on the whole graph (real val and test scores).")] = 5,
    epochs: Annotated[int, typer.Option(help="Most epochs of a training run.")] = 300,
    eval_every: Annotated[int, typer.Option("--eval-every", help="Validate on the real graph after every this many epochs.")] = 10,
    patience: Annotated[int, typer.Option(help="Stop a run after this many validations without improvement (0: never).")] = 10,
    seed: Annotated[int, typer.Option(help="Seed of every training run and of the condensation.")] = 0,
    setting: Annotated[str, typer.Option(help="transductive | inductive (see docs/condensation.md).")] = "transductive",
    split: SplitOpt = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="Condenser parameter: --set epochs=100 (repeatable).")] = None,
    data_set: Annotated[list[str] | None, typer.Option("--data-set", help="Dataset/generator option: --data-set space=aligned (repeatable).")] = None,
    executor: Annotated[str, typer.Option(help="local (one trial after another) | ray (one Ray task per trial).")] = "local",
    shard: Annotated[str, typer.Option(help="Run only shard i/n of the trials; an unsharded run on the same --out ranks and re-trains.")] = "0/1",
    ray_address: Annotated[str, typer.Option("--ray-address", help="local | auto | host:port | ray://host:10001.")] = "local",
    compare: Annotated[tuple[Path, Path] | None, typer.Option("--compare", help="Compare two searches' rankings: --compare S_OUT WHOLE_OUT (Spearman, Kendall, top-k overlap).")] = None,
    k: Annotated[int, typer.Option("-k", help="The head compared by --compare (top-k overlap).")] = 10,
    root: RootOpt = None,
):
    """Search a space of GNN configurations on a condensed graph S: train every candidate on S, select it on the
    real validation split, rank, and re-train the best on the whole graph (resumable; docs/search.md)."""
    from ..exceptions import ConfigError

    if compare is not None:
        _compare(Path(compare[0]), Path(compare[1]), k)
        return
    if data is None or space is None or out is None:
        missing = [n for n, v in (("DATA", data), ("--space", space), ("--out", out)) if v is None]
        raise ConfigError(f"search: missing {', '.join(missing)}; allowed: magkit search DATA --space SPACE.yaml --out DIR "
                          "(--condensed PATH | --condenser NAME --ratio R | --on whole), or --compare A B")
    import json

    from ..condense.registry import REGISTRY
    from ..eval.experiment import load_config
    from ..eval.results import atomic_write_json
    from ..search.runner import check_search_args, search
    from .condense import data_options

    condense_params = None
    if set_:
        if condenser is None:
            raise ConfigError("--set: condenser parameters need --condenser; allowed: --set only with --condenser NAME")
        if condenser in REGISTRY.names():
            condense_params = load_config(None, set_, cls=REGISTRY.get(condenser).cls)
    kw = dict(condensed=condensed, condenser=condenser, ratio=ratio, on=on, top=top, epochs=epochs,
              eval_every=eval_every, patience=patience or None, setting=setting, executor=executor, shard=shard)
    space_obj = check_search_args(space, **kw, condense_params=condense_params)  # before the dataset is loaded
    check_split(split)
    with progress_bar() as progress:
        task = progress.add_task(f"search {data}", total=None, info="loading")

        def show(rec: dict) -> None:
            from rich.markup import escape

            row = rec["row"]
            desc = f"{rec['stage']} {data}"
            if row is None:
                info = f"{rec['skipped']} already recorded" if rec["skipped"] else ""
                progress.reset(task, total=rec["total"], description=desc, info=info)
                return
            ok = row.get("status") in ("ok", "pruned")
            what = (f"val {row['metrics']['val_acc']:.3f}" + (" (pruned)" if row["status"] == "pruned" else "")
                    if ok else f"[red]{escape(str(row.get('error')))}[/]")
            progress.update(task, completed=rec["done"], info=f"{escape(row['method'])}: {what}")

        res = search(data, space_obj, out, seed=seed, split=split, root=root, data_options=data_options(data_set),
                     condense_params=condense_params, ray_address=ray_address, progress=show, **kw)
    atomic_write_json(Path(out) / "search.json", json.loads(json.dumps(res.summary(), default=str)))
    n_ok = sum(r["status"] == "ok" for r in res.trials)
    console.print(f"search on {res.on}: {len(res.trials)} trials ({n_ok} finished, {len(res.trials) - n_ok} pruned, "
                  f"{len(res.failed)} failed); ran {res.ran}, {res.skipped} already recorded; "
                  f"{res.search_time_s:.1f} s of trials ({res.trial_time_s:.3f} s each)", highlight=False, soft_wrap=True)
    if res.retrained:
        table = Table(title=f"top {len(res.retrained)} on {res.on}, re-trained on the whole graph")
        for col in ("rank", "configuration", f"val acc on {res.on}", "val acc (whole)", "test acc (whole)"):
            table.add_column(col)
        for i, (r, t) in enumerate(zip(res.trials, res.retrained), start=1):
            m = (t or {}).get("metrics", {})
            table.add_row(str(i), r["method"], _pct(r["metrics"]["val_acc"]), _pct(m.get("val_acc")),
                          _pct(m.get("test_acc")))
        console.print(table)
    if res.chosen is not None:
        console.print(f"chosen: {res.chosen['method']} · whole-graph val acc {_pct(res.chosen['metrics']['val_acc'])} · "
                      f"test acc {_pct(res.chosen['metrics']['test_acc'])}", highlight=False, soft_wrap=True)
    elif res.trials and shard != "0/1":
        console.print(f"shard {shard} done; rank and re-train with the same command without --shard", highlight=False)
    console.print(f"rows in {res.rows_path}; tables: magkit report {out} --out {out}", highlight=False, soft_wrap=True)
    if res.failed:
        err_console.print(f"[yellow]{len(res.failed)} trial(s) failed (see rows); a rerun tries them again[/]")
