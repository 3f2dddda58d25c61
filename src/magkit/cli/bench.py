"""``magkit bench run``, ``magkit sweep`` and ``magkit report``: benchmark suites, sweeps over a grid of cells,
and the tables and plots of their rows."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from . import RootOpt, app, bench_app, console, err_console, friendly
from ._render import progress_bar, row_status


@bench_app.command("run")
@friendly
def bench_run(
    suite: Annotated[Path, typer.Argument(help="Suite YAML (e.g. benchmarks/citeseer.yaml).")],
    out: Annotated[Path | None, typer.Option("--out", help="Results folder (default: next to the suite, named after it).")] = None,
    root: RootOpt = None,
    throughput: Annotated[bool, typer.Option(help="Also measure GCN throughput against a dense matmul (with --render-only: show the one recorded).")] = True,
    shard: Annotated[str, typer.Option(help="Run only shard i/n of the grid (e.g. 0/2), for parallel processes or job arrays.")] = "0/1",
    run: Annotated[bool, typer.Option("--run/--render-only", help="--render-only: write the tables from the rows recorded so far.")] = True,
):
    """Run every cell of a suite not yet recorded (resumable), then write results.md and results.json.

    A suite is a fit sweep spec (see `magkit sweep`) whose rows live next to it."""
    import json

    from ..bench.spec import parse_shard
    from ..bench.suite import load_suite, render, run_suite

    parse_shard(shard)
    spec = load_suite(suite)
    if out is None:
        from ..eval.results import check_writable

        out = check_writable(suite.with_suffix(""), "--out (default: next to the suite)", folder=True)
    if run:
        with progress_bar() as progress:
            task = progress.add_task(spec["name"], total=None, info="")

            def on_cell(row, i, n):
                progress.update(task, completed=i, total=n, info=row_status(row))

            run_suite(spec, out, root=root, on_cell=on_cell, shard=shard)
    else:
        from ..bench.rows import rows_files
        from ..exceptions import ConfigError

        if not Path(out).is_dir() or not rows_files(out):
            raise ConfigError(f"--render-only: no rows recorded yet in {str(out)!r}; allowed: a suite folder with "
                              f"rows (run `magkit bench run {suite}` first)")
    extra, tp = "", None
    tp_file = Path(out) / "throughput.json"
    if throughput and run:
        from ..bench.throughput import gcn_throughput
        from ..data import load_dataset

        first = next(iter(spec["datasets"].values()))
        with err_console.status(f"measuring GCN throughput on {first['data']}"):
            tp = gcn_throughput(load_dataset(first["data"], root=root, **first["options"]),
                                hidden=spec["params"].get("hidden", 128))
        tp = dict(tp, data=first["data"])
        tp_file.write_text(json.dumps(tp, indent=2) + "\n")
    elif throughput and tp_file.is_file():  # --render-only shows the throughput recorded with the rows
        tp = json.loads(tp_file.read_text())
    if tp is not None:
        first_data = tp.get("data") or next(iter(spec["datasets"].values()))["data"]
        threads = "1 thread" if tp["threads"] == 1 else f"{tp['threads']} threads"
        extra = ("## Engine throughput\n\n"
                 f"2-layer GCN training step (forward + backward) on `{first_data}` ({tp['nodes']:,} nodes, "
                 f"{tp['nnz']:,} non-zeros in Â, widths {tp['d_in']} -> {tp['hidden']} -> {tp['classes']}), "
                 f"{threads}: {tp['step_time_ms']:.1f} ms per step = {tp['achieved_gflops']:.1f} GFLOP/s, "
                 f"against {tp['dense_matmul_gflops']:.1f} GFLOP/s for a dense [{tp['nodes']} x {tp['d_in']}] @ "
                 f"[{tp['d_in']} x {tp['hidden']}] matmul in the same run: **{100 * tp['ratio_to_dense']:.0f}% of the dense rate**.")
    res = render(spec, out, command=f"magkit bench run {suite}" + ("" if throughput else " --no-throughput"), extra_md=extra)
    console.print(f"{res['cells']} cells: {res['ok']} ok, {res['failed']} failed", highlight=False, soft_wrap=True)
    for p in [res["markdown"], res["json"], *res["plots"]]:
        console.print(f"wrote {p}", highlight=False, soft_wrap=True)
    if res["failed"]:
        err_console.print(f"[yellow]{res['failed']} cell(s) failed (see results.md); rerun them with "
                          f"magkit sweep {suite} --out {out} --retry-failed[/]")
        raise typer.Exit(1)


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
    from ..bench.executors import EXECUTORS
    from ..bench.spec import load_spec, parse_shard
    from ..bench.sweep import plan, run_sweep

    parse_shard(shard)
    if executor not in EXECUTORS:
        from ..base import did_you_mean
        from ..exceptions import ConfigError

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
    with progress_bar() as progress:
        task = progress.add_task(spec["name"], total=None, info="")

        def on_start(p) -> None:
            progress.update(task, total=len(p.todo), info=f"{len(p.shard_cells) - len(p.todo)} cells already done")

        def on_row(row, i, n) -> None:
            from rich.markup import escape

            progress.update(task, completed=i, info=row_status(row))
            if row.get("status") != "ok":
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
    rows: Annotated[list[Path], typer.Argument(metavar="ROWS...", help="Rows files (.jsonl) or sweep / bench folders; merged in order; of the rows of a cell the one finished last wins.")],
    out: Annotated[Path, typer.Option("--out", help="Folder for results.md, results.json and the plots.")],
):
    """Merge sweep or bench rows files into results.md (mean ± std per method and setting), results.json and plots."""
    from ..bench.report import render

    res = render(rows, out)
    console.print(f"{res['cells']} cells: {res['ok']} ok, {res['failed']} failed; {len(res['groups'])} groups", highlight=False, soft_wrap=True)
    for p in [res["markdown"], res["json"], *res["plots"]]:
        console.print(f"wrote {p}", highlight=False, soft_wrap=True)
