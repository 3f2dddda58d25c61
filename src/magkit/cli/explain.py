"""``magkit explain``: fit GraphMNL once and show how it arbitrated between the modalities."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from . import RootOpt, SplitOpt, app, console, friendly


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
    from ..data import load_dataset
    from ..eval.experiment import load_config
    from ..exceptions import ConfigError
    from ..methods import create, get_method
    from ..methods.graphmnl import GraphMNL, explain_report

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
    if report["method_params"].get("output_prop") is not None:
        a = report["output_alpha"]
        console.print("prediction propagated after training with a = " + f"{a:g}" if a < 1 else
                      "prediction not propagated (output_prop chose a = 1 on validation)")
    if report.get("reliability_auc"):
        console.print("reliability AUC against the generator's ground truth: "
                      + ", ".join(f"{k} branches {v:.3f}" for k, v in report["reliability_auc"].items()))
    if out is not None:
        from ..eval.results import atomic_write_json
        from ..methods.graphmnl import plot_diagnostics

        console.print(f"wrote {atomic_write_json(Path(out) / 'diagnostics.json', report)}")
        console.print(f"wrote {plot_diagnostics(report, Path(out) / 'diagnostics.png')}")
