"""``magkit demo``: the guided tour (the library part is :mod:`magkit.demo`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from . import RootOpt, app, console, friendly
from ._render import epoch_callback, progress_bar, split_label


@app.command("demo")
@friendly
def demo(
    out: Annotated[Path, typer.Option("--out", help="Folder for the results: per-method results.json, summary.json/.md, test_accuracy.png.")] = Path("magkit-demo"),
    full: Annotated[bool, typer.Option("--full", help="The longer tour: nine methods on the 2,000-node graph with their own epoch budgets (minutes).")] = False,
    methods: Annotated[str | None, typer.Option("--methods", help="Comma-separated methods to run instead (see `magkit methods`).")] = None,
    seeds: Annotated[str | None, typer.Option(help="Seeds instead of the tour's (0..2 quick, 0,1 full): a range 0..4 or a list 0,1,2.")] = None,
    root: RootOpt = None,
):
    """A tour in under a minute: a small generated graph with text and image features of unequal quality, an MLP, GCN,
    GraphSAGE and GraphMNL over three seeds, a comparison table, and the files a real run writes."""
    from ..demo import FULL, QUICK, run_demo
    from ..eval.experiment import parse_seeds
    from ..methods import get_method

    plan = FULL if full else QUICK
    names = [m.strip() for m in methods.split(",") if m.strip()] if methods is not None else list(plan.methods)
    if not names:
        from ..exceptions import ConfigError

        raise ConfigError(f"--methods: {methods!r}; allowed: comma-separated method names, e.g. gcn-early,mlp-early")
    for name in names:
        get_method(name)
    seed_list = parse_seeds(seeds) if seeds is not None else list(plan.seeds)
    total = len(names) * len(seed_list)
    console.print(f"magkit demo: {len(names)} methods x {len(seed_list)} seeds on {plan.data}"
                  f"{' (' + ', '.join(f'{k}={v}' for k, v in plan.data_options.items()) + ')' if plan.data_options else ''}; "
                  f"results go to {out}", highlight=False, soft_wrap=True)
    with progress_bar(count=False) as progress:
        task = progress.add_task("building the graph", total=total, info="")
        state = {"runs": 0, "method": ""}

        def on_graph(graph) -> None:
            progress.console.print(f"graph: {graph.num_nodes:,} nodes, {graph.edge_index.shape[1] // 2:,} edges, "
                                   f"{graph.num_classes} classes, modalities {', '.join(graph.modalities)}",
                                   highlight=False, soft_wrap=True)

        def on_method(name: str) -> None:
            state["method"] = name
            progress.update(task, description=name, info="")

        def on_run(run) -> None:
            state["runs"] += 1
            progress.update(task, completed=state["runs"], info=f"seed {run.seed}: test acc {run.test_acc:.3f}")

        show_epoch = epoch_callback(progress, task, seed_list, state, loss=False)
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
