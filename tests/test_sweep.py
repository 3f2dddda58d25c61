"""Sweeps (grid, shards, resume, failures, Ray) and the report that merges their rows."""

import hashlib
import json
import logging
import os
import re
import sys
import time

import pytest
from typer.testing import CliRunner

from magkit.bench import cell as cell_mod
from magkit.bench import executors as executors_mod
from magkit.bench.executors import ray_options
from magkit.bench.report import merge, render
from magkit.bench.rows import read_rows, recorded, rows_file
from magkit.bench.spec import expand_grid, load_spec, shard_cells
from magkit.bench.sweep import plan, run_sweep
from magkit.cli import app
from magkit.exceptions import ConfigError, MissingDependencyError

runner = CliRunner()

FIT = """
name: tiny-fit
task: fit
datasets: [synthetic]
data_params: {num_nodes: 200}
splits: [magb]
methods: [mlp-early, sgc-early]
seeds: 0..1
params: {epochs: 3, hidden: 16}
resources: {num_cpus: 1, num_gpus: 0, memory_gb: 0.5}
"""

CONDENSE = """
name: tiny-condense
task: condense
datasets:
  tiny: {data: synthetic, num_nodes: 200}
ratios: [0.02, 0.05]
methods: [random, herding, whole]
seeds: 0..1
evaluate: {backbones: [gcn, mlp], runs: 2, epochs: 5, hidden: 16}
"""


def write_spec(tmp_path, text, name="spec.yaml"):
    p = tmp_path / name
    p.write_text(text)
    return p


@pytest.fixture()
def fit_spec(tmp_path):
    return load_spec(write_spec(tmp_path, FIT))


def flat(res):
    """The command's output with rich's line wrapping undone."""
    return " ".join(res.output.split())


def metrics_by_key(rows):
    return {r["key"]: r["metrics"] for r in rows if r["status"] == "ok"}


# ---------------------------------------------------------------------------------------------- grid
def test_grid_counts_and_stable_keys(tmp_path):
    big = FIT.replace("datasets: [synthetic]", "datasets: [synthetic, 'synthetic:balanced']") \
             .replace("splits: [magb]", "splits: [magb, 'rate:0.1']").replace("seeds: 0..1", "seeds: 0..2")
    spec = load_spec(write_spec(tmp_path, big))
    cells = expand_grid(spec)
    assert len(cells) == 2 * 2 * 2 * 3
    assert len({c.key for c in cells}) == 24 and len({c.id for c in cells}) == 24
    assert cells[0].key == "fit|dataset=synthetic|split=magb|method=mlp-early|seed=0"
    assert cells[0].id == hashlib.sha1(cells[0].key.encode()).hexdigest()[:12]
    # stable: the same spec read again, or written in another order, gives the same keys
    reordered = big.replace("methods: [mlp-early, sgc-early]", "methods: [sgc-early, mlp-early]")
    again = expand_grid(load_spec(write_spec(tmp_path, reordered, "b.yaml")))
    assert {c.key for c in again} == {c.key for c in cells}
    # a grown grid keeps every old key
    grown = expand_grid(load_spec(write_spec(tmp_path, big.replace("seeds: 0..2", "seeds: 0..3"), "c.yaml")))
    assert len(grown) == 32 and {c.key for c in cells} <= {c.key for c in grown}

    cond = load_spec(write_spec(tmp_path, CONDENSE, "cond.yaml"))
    ccells = expand_grid(cond)
    # whole: one cell per dataset; every other method: ratios x seeds
    assert len(ccells) == 1 + 2 * 2 * 2
    assert ccells[0].key == "condense|dataset=tiny|method=whole|ratio=1.0|seed=0"
    assert "condense|dataset=tiny|method=herding|ratio=0.05|seed=1" in {c.key for c in ccells}
    assert cond["effective_params"] == {"random": {}, "herding": {}, "whole": {}}


def test_exclude_drops_the_named_cells_and_refuses_values_outside_the_grid(tmp_path):
    big = FIT.replace("splits: [magb]", "splits: [magb, 'rate:0.1']").replace("seeds: 0..1", "seeds: 0..2")
    full = {c.key for c in expand_grid(load_spec(write_spec(tmp_path, big)))}
    cut = big + "exclude:\n  - {method: sgc-early, split: [magb]}\n  - {seed: 2, split: 'rate:0.1'}\n"
    cells = expand_grid(load_spec(write_spec(tmp_path, cut, "cut.yaml")))
    keys = {c.key for c in cells}
    assert keys < full and len(cells) == 12 - 3 - 2  # 3 sgc-early at magb, 2 more at rate:0.1 seed 2
    assert "fit|dataset=synthetic|split=magb|method=sgc-early|seed=0" not in keys
    assert "fit|dataset=synthetic|split=rate:0.1|method=mlp-early|seed=2" not in keys
    assert "fit|dataset=synthetic|split=rate:0.1|method=sgc-early|seed=0" in keys
    for bad, msg in (("{methd: sgc-early}", "exclude axis 'methd'; allowed: dataset, split, method, seed"),
                     ("{method: gat-early}", "exclude method 'gat-early' is not in the grid; allowed: mlp-early"),
                     ("{split: 'rate:0.5'}", "exclude split 'rate:0.5' is not in the grid")):
        with pytest.raises(ConfigError, match=re.escape(msg)):
            load_spec(write_spec(tmp_path, big + f"exclude:\n  - {bad}\n", "bad.yaml"))


def test_exclude_in_a_condense_sweep_reads_ratios_as_floats_and_seeds_as_the_seeds_key_does(tmp_path):
    full = {c.key for c in expand_grid(load_spec(write_spec(tmp_path, CONDENSE)))}
    cut = CONDENSE + "exclude:\n  - {method: herding, ratio: '5e-2', seed: '0..1'}\n  - {method: random, seed: ['1']}\n"
    keys = {c.key for c in expand_grid(load_spec(write_spec(tmp_path, cut, "cut.yaml")))}
    assert full - keys == {"condense|dataset=tiny|method=herding|ratio=0.05|seed=0",
                           "condense|dataset=tiny|method=herding|ratio=0.05|seed=1",
                           "condense|dataset=tiny|method=random|ratio=0.02|seed=1",
                           "condense|dataset=tiny|method=random|ratio=0.05|seed=1"}
    assert "condense|dataset=tiny|method=whole|ratio=1.0|seed=0" in keys
    for bad, msg in (("{ratio: abc}", "exclude ratio 'abc'; allowed: 0.02, 0.05"),
                     ("{ratio: [0.02, null]}", "exclude ratio None; allowed: 0.02, 0.05"),
                     ("{seed: '0-1'}", "exclude seed '0-1'; allowed: 0, 1 (one, a list or a range like 0..2)"),
                     ("{seed: [true]}", "exclude seed True; allowed: 0, 1"),
                     ("{seed: 0..3}", "exclude seed 2 is not in the grid; allowed: 0, 1"),
                     ("{method: []}", "exclude method []; allowed: random, herding, whole")):
        with pytest.raises(ConfigError, match=re.escape(msg)):
            load_spec(write_spec(tmp_path, CONDENSE + f"exclude:\n  - {bad}\n", "bad.yaml"))


def test_shards_are_disjoint_balanced_and_cover_the_grid(fit_spec):
    cells = expand_grid(dict(fit_spec, seeds=list(range(11))))  # 22 cells
    for n in range(1, 8):
        parts = [shard_cells(cells, (i, n)) for i in range(n)]
        keys = [c.key for part in parts for c in part]
        assert len(keys) == len(set(keys)) == len(cells) == 22
        assert max(map(len, parts)) - min(map(len, parts)) <= 1
    assert shard_cells(cells, "1/4") == cells[1::4]
    with pytest.raises(ConfigError, match=r"--shard: '1-4'; allowed: i/n"):
        shard_cells(cells, "1-4")
    with pytest.raises(ConfigError, match=r"shard: 4/4; allowed"):
        shard_cells(cells, "4/4")
    assert rows_file("d", "1/4").name == "rows.shard-1-of-4.jsonl" and rows_file("d").name == "rows.jsonl"


def test_resume_skips_done_cells_and_shards_equal_the_local_run(fit_spec, tmp_path, monkeypatch, caplog):
    calls = []
    real = cell_mod.run_cell
    monkeypatch.setattr(executors_mod, "run_cell", lambda spec, cell, executor="local": calls.append(cell.key) or real(spec, cell, executor))
    local = run_sweep(fit_spec, tmp_path / "local")
    assert len(calls) == 4 and local.skipped == 0 and len(local.rows) == 4
    assert all(r["status"] == "ok" and r["executor"] == "local" for r in local.rows)
    row = local.rows[0]
    for k in ("key", "id", "dataset", "split", "method", "seed", "params", "metrics", "wall_time_s", "peak_memory_mb",
              "environment", "dataset_checksum", "finished_at"):
        assert k in row, k
    assert row["params"] == {"epochs": 3, "hidden": 16} and row["metrics"]["epochs_run"] == 3
    assert row["peak_memory_mb"] > 0 and row["environment"]["torch"].startswith("2.")

    again = run_sweep(fit_spec, tmp_path / "local")
    assert len(calls) == 4 and again.rows == [] and again.skipped == 4  # nothing executed
    assert len(read_rows(tmp_path / "local" / "rows.jsonl")) == 4

    # other parameters: nothing reruns, a warning says why
    with caplog.at_level(logging.WARNING, logger="magkit.bench.sweep"):
        assert plan(dict(fit_spec, effective_params={m: {"epochs": 4} for m in fit_spec["methods"]}), tmp_path / "local").todo == []
    assert "4 recorded cell(s) ran with other parameters" in caplog.text

    # the grid grew by one seed: only its two cells run
    grown = dict(fit_spec, seeds=[0, 1, 2])
    more = run_sweep(grown, tmp_path / "local")
    assert len(calls) == 6 and {r["seed"] for r in more.rows} == {2} and more.skipped == 4

    # shards 0/2 and 1/2, in their own files, give exactly the local run's rows
    a = run_sweep(fit_spec, tmp_path / "sharded", shard=(0, 2))
    b = run_sweep(fit_spec, tmp_path / "sharded", shard="1/2")
    assert len(a.rows) == len(b.rows) == 2 and not {r["key"] for r in a.rows} & {r["key"] for r in b.rows}
    assert a.rows_path.name == "rows.shard-0-of-2.jsonl" and b.rows_path.name == "rows.shard-1-of-2.jsonl"
    assert metrics_by_key(a.rows + b.rows).keys() == metrics_by_key(local.rows).keys()
    for k, m in metrics_by_key(a.rows + b.rows).items():
        ref = metrics_by_key(local.rows)[k]
        for name in ("val_acc", "val_f1", "test_acc", "test_f1", "best_epoch"):
            assert m[name] == ref[name], (k, name)
    # a shard's rerun sees the other shard's file too: a local run over the folder has nothing left to do
    assert run_sweep(fit_spec, tmp_path / "sharded").skipped == 4


def test_failed_cells_are_recorded_then_retried(tmp_path, monkeypatch):
    spec = load_spec(write_spec(tmp_path, FIT.replace("datasets: [synthetic]", f"datasets: [synthetic, 'files:{tmp_path}/missing']")))
    res = run_sweep(spec, tmp_path / "out")
    assert len(res.rows) == 8 and len(res.failed) == 4  # the sweep went on after the first failure
    bad = res.failed[0]
    assert bad["dataset"] == f"files:{tmp_path}/missing" and bad["status"] == "error"
    assert bad["error"].startswith("DatasetError: ") and "\n" not in bad["error"] and "missing" in bad["error"]
    assert "Traceback" in bad["traceback"] and "metrics" not in bad
    assert all(r["status"] == "ok" for r in res.rows if r["dataset"] == "synthetic")
    p = plan(spec, tmp_path / "out")
    assert p.todo == [] and len(p.failed) == 4
    assert run_sweep(spec, tmp_path / "out").rows == []  # failures are not rerun without --retry-failed

    # a flaky cell: fails once, then succeeds when retried; the retry's row wins in the report
    spec = load_spec(write_spec(tmp_path, FIT, "flaky.yaml"))
    real = cell_mod._fit_metrics
    state = {"failed": False}

    def flaky(spec_, f):
        if f["method"] == "sgc-early" and f["seed"] == 1 and not state["failed"]:
            state["failed"] = True
            raise RuntimeError("worker lost\nsecond line")
        return real(spec_, f)

    monkeypatch.setattr(cell_mod, "_fit_metrics", flaky)
    first = run_sweep(spec, tmp_path / "flaky")
    assert [r["error"] for r in first.failed] == ["RuntimeError: worker lost"]
    retried = run_sweep(spec, tmp_path / "flaky", retry_failed=True)
    assert [r["key"] for r in retried.rows] == ["fit|dataset=synthetic|split=magb|method=sgc-early|seed=1"]
    assert retried.rows[0]["status"] == "ok" and retried.skipped == 3
    latest, n = merge([tmp_path / "flaky" / "rows.jsonl"])
    assert n == 5 and len(latest) == 4 and all(r["status"] == "ok" for r in latest.values())


# ---------------------------------------------------------------------------------------------- report
def test_report_merges_shards_into_the_local_table(fit_spec, tmp_path):
    run_sweep(fit_spec, tmp_path / "local")
    run_sweep(fit_spec, tmp_path / "sh", shard=(0, 2))
    run_sweep(fit_spec, tmp_path / "sh", shard=(1, 2))
    one = render([tmp_path / "local" / "rows.jsonl"], tmp_path / "rep1")
    two = render([tmp_path / "sh" / "rows.shard-0-of-2.jsonl", tmp_path / "sh" / "rows.shard-1-of-2.jsonl"], tmp_path / "rep2")
    assert one["cells"] == two["cells"] == 4 and one["ok"] == 4 and one["failed"] == 0

    def table(res):
        return {(g["dataset"], g["split"], g["method"]): (g["n"], g["seeds"], g["metrics"]["test_acc"]["mean"],
                                                          g["metrics"]["test_acc"]["std"], g["metrics"]["val_f1"]["mean"])
                for g in res["groups"]}

    assert table(one) == table(two) and len(table(one)) == 2
    rows = read_rows(tmp_path / "local" / "rows.jsonl")
    accs = [r["metrics"]["test_acc"] for r in rows if r["method"] == "mlp-early"]
    n, seeds, mean, std, _ = table(one)[("synthetic", "magb", "mlp-early")]
    assert n == 2 and seeds == [0, 1] and mean == pytest.approx(sum(accs) / 2)
    assert std == pytest.approx(abs(accs[0] - accs[1]) / 2 ** 0.5)
    md = one["markdown"].read_text()
    assert f"| mlp-early | {100 * mean:.2f} ± {100 * std:.2f}" in md.replace("**", "") and "| 2 | 0,1 |" in md
    # the same table from both (accuracy columns, n and seeds; times and memory are the runs' own)
    def md_rows(res):
        lines = [ln.split(" | ") for ln in res["markdown"].read_text().splitlines() if ln.startswith("| ") and "±" in ln]
        return [cells[:4] + cells[-2:] for cells in lines]

    assert md_rows(one) == md_rows(two) and len(md_rows(one)) == 2
    payload = json.loads(two["json"].read_text())
    assert payload["cells"] == 4 and len(payload["sources"]) == 2 and payload["errors"] == []
    assert all(p.stat().st_size > 5000 for p in one["plots"])


def test_report_lists_errors_apart_and_the_last_row_wins(fit_spec, tmp_path):
    res = run_sweep(fit_spec, tmp_path / "a")
    err = dict(res.rows[0], status="error", error="RuntimeError: out of memory", metrics=None)
    later = tmp_path / "later.jsonl"
    later.write_text(json.dumps(err) + "\n")
    merged = render([tmp_path / "a", later], tmp_path / "rep")  # a folder stands for its rows files
    assert merged["ok"] == 3 and merged["failed"] == 1
    md = merged["markdown"].read_text()
    assert "## Failed cells" in md and "RuntimeError: out of memory" in md and res.rows[0]["key"] in md
    assert json.loads(merged["json"].read_text())["errors"][0]["key"] == res.rows[0]["key"]
    # given the other way round, the ok row is the last one
    assert render([later, tmp_path / "a" / "rows.jsonl"], tmp_path / "rep2")["failed"] == 0
    with pytest.raises(ConfigError, match="does not exist; allowed: rows files"):
        render([tmp_path / "nope.jsonl"], tmp_path / "rep3")


def test_report_states_when_its_rows_were_recorded(fit_spec, tmp_path):
    """The report says from when to when its ok rows were recorded (their ``finished_at``, UTC, to the minute)."""
    res = run_sweep(fit_spec, tmp_path / "a")
    rows = [dict(r, finished_at=t) for r, t in zip(res.rows, ["2026-01-02T03:04:59+00:00", "2026-01-01T23:59:00+00:00",
                                                             "2026-01-03T10:00:00+00:00"])]
    (tmp_path / "b.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    md = render([tmp_path / "b.jsonl"], tmp_path / "rep")["markdown"].read_text()
    assert "Rows recorded from 2026-01-01 23:59 to 2026-01-03 10:00 UTC." in md


def test_report_reads_condense_sweeps_and_suite_rows(tmp_path):
    spec = load_spec(write_spec(tmp_path, CONDENSE))
    res = run_sweep(spec, tmp_path / "c")
    assert len(res.rows) == 9 and not res.failed
    r = next(r for r in res.rows if r["method"] == "random")
    assert set(r["runs"]) == {"gcn", "mlp"} and len(r["runs"]["gcn"]["test_acc"]) == 2
    assert r["metrics"]["test_acc"] == r["metrics"]["gcn_test_acc"] == pytest.approx(sum(r["runs"]["gcn"]["test_acc"]) / 2)
    assert r["metrics"]["num_nodes"] >= 5 and r["dataset_checksum"]
    # a `magkit bench run` row (no key) is read as a fit row
    suite_rows = tmp_path / "suite.jsonl"
    suite_rows.write_text(json.dumps({"dataset": "synthetic", "split": "magb", "method": "gcn-early", "seed": 0,
                                      "test_acc": 0.5, "test_f1": 0.4, "val_acc": 0.6, "val_f1": 0.5,
                                      "fit_time_s": 1.0, "peak_memory_mb": 100.0}) + "\n")
    rep = render([tmp_path / "c", suite_rows], tmp_path / "rep")
    md = rep["markdown"].read_text()
    assert "## condense · tiny" in md and "## fit · synthetic · split `magb`" in md and "| gcn-early | **50.00 ± 0.00**" in md
    assert "| method | 2% | 5% |" in md and "whole graph (upper bound)" in md
    assert {p.name for p in rep["plots"]} == {"condense_tiny.png", "fit_synthetic_magb.png"}
    groups = {(g["method"], g.get("ratio")): g for g in rep["groups"]}
    assert groups[("random", 0.02)]["n"] == 2 and groups[("whole", 1.0)]["n"] == 1


# ---------------------------------------------------------------------------------------------- spec errors
@pytest.mark.parametrize("text, message", [
    ("task: train\ndatasets: [synthetic]\nmethods: [mlp-early]", "task 'train'; allowed: fit, condense"),
    ("datasets: [synthetic]\nmethods: [mlp-early]\nratios: [0.1]", "unknown key(s) ratios for task fit; allowed:"),
    ("datasets: [synthetic]\nmethods: [nope]", "allowed: "),
    ("datasets: [synthetic]\nmethods: []", "'methods' must list at least one method"),
    ("methods: [mlp-early]", "'datasets' must list at least one dataset"),
    ("datasets: [synthetic]\nmethods: [mlp-early]\nparams: {lr_feat: 0.1}", "params lr_feat accepted by none of the methods"),
    ("datasets: [synthetic]\nmethods: [mlp-early]\nmethod_params: {mlp-early: {backbone: gcn}}", "backbone is fixed by the method"),
    ("datasets: [synthetic]\nmethods: [mlp-early]\nresources: {cpus: 2}", "unknown resource(s) cpus; allowed: num_cpus, num_gpus, memory_gb"),
    ("datasets: [synthetic]\nmethods: [mlp-early]\nresources: {num_cpus: 0}", "resources.num_cpus 0; allowed: a number > 0"),
    ("task: condense\ndatasets: [synthetic]\nmethods: [srgm]\nratios: [2]", "ratios [2]; allowed: a list of shares"),
    ("task: condense\ndatasets: [synthetic]\nmethods: [gcond-xx]", "unknown condenser 'gcond-xx'; allowed: gcond,"),
    ("task: condense\ndatasets: [synthetic]\nmethods: [srgm]\nevaluate: {backbones: [gin]}", "evaluate.backbones ['gin']; allowed: gcn"),
    ("task: condense\ndatasets: [synthetic]\nmethods: [srgm]\nevaluate: {protocol: fast, patience: -1}", "evaluate.patience -1; allowed: an integer >= 1 (validations) or 0 (no early stop)"),
    ("task: condense\ndatasets: [synthetic]\nmethods: [srgm]\nevaluate: {protocol: fast, patience: null}", "evaluate.patience null; allowed: an integer >= 1"),
    ("task: condense\ndatasets: [synthetic]\nmethods: [srgm]\nevaluate: {protocol: fast, patience: true}", "evaluate.patience True; allowed"),
    ("task: condense\ndatasets: [synthetic]\nmethods: [srgm]\nevaluate: {protocol: fast, val_dtype: half}", "evaluate.val_dtype 'half'; allowed: auto, float32, bfloat16"),
    ("task: condense\ndatasets: [synthetic]\nmethods: [srgm]\nevaluate: {protocol: fast, eval_every: 0}", "evaluate.eval_every 0; allowed: an integer >= 1"),
    ("task: condense\ndatasets: [synthetic]\nmethods: [srgm]\nevaluate: {patience: 10}", "evaluate.patience 10 applies to the fast protocol only; allowed: protocol: fast with it"),
    ("task: condense\ndatasets: [synthetic]\nmethods: [srgm]\nevaluate: {protocol: standard, val_dtype: auto}", "evaluate.val_dtype 'auto' applies to the fast protocol only"),
    ("task: condense\ndatasets: [synthetic]\nmethods: [srgm]\nevaluate: {protocol: quick}", "evaluate.protocol 'quick'; allowed: standard, fast"),
    ("task: condense\ndatasets: [synthetic]\nmethods: [srgm]\nevaluate: {patiense: 3}", "unknown evaluate option(s) patiense; allowed: backbones"),
    ("task: condense\ndatasets: [synthetic]\nmethods: [random]\nmethod_params: {random: {epochs: 3}}", "method_params.random: unknown parameter(s) epochs"),
])
def test_spec_errors_are_one_line(tmp_path, text, message):
    with pytest.raises(ConfigError) as info:
        load_spec(write_spec(tmp_path, text))
    assert message in str(info.value) and "\n" not in str(info.value)


def test_shared_params_go_to_the_methods_that_take_them(tmp_path):
    spec = load_spec(write_spec(tmp_path, "task: condense\ndatasets: [synthetic]\nmethods: [random, gcond]\nparams: {epochs: 7}"))
    assert spec["effective_params"] == {"random": {}, "gcond": {"epochs": 7}}


# ---------------------------------------------------------------------------------------------- CLI
def test_cli_sweep_dry_run_run_and_report(tmp_path):
    spec = write_spec(tmp_path, FIT)
    out = tmp_path / "out"
    res = runner.invoke(app, ["sweep", str(spec), "--out", str(out), "--dry-run"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert "4 cells in the grid: 0 done, 0 failed, 4 not run; shard 0/1: 4 cells, 4 to run" in res.output
    res = runner.invoke(app, ["sweep", str(spec), "--out", str(out), "--shard", "1/2"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert "ran 2 cells (2 ok, 0 failed), skipped 0 already recorded" in res.output
    res = runner.invoke(app, ["sweep", str(spec), "--out", str(out), "--dry-run"], catch_exceptions=False)
    assert "4 cells in the grid: 2 done, 0 failed, 2 not run; shard 0/1: 4 cells, 2 to run" in res.output
    assert res.output.count("  done ") == 2 and res.output.count("  run ") == 2
    res = runner.invoke(app, ["sweep", str(spec), "--out", str(out)], catch_exceptions=False)
    assert "ran 2 cells (2 ok, 0 failed), skipped 2 already recorded" in res.output
    res = runner.invoke(app, ["report", str(out / "rows.jsonl"), str(out / "rows.shard-1-of-2.jsonl"), "--out", str(tmp_path / "rep")],
                        catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert "4 cells: 4 ok, 0 failed; 2 groups" in res.output
    assert (tmp_path / "rep" / "results.md").is_file() and (tmp_path / "rep" / "fit_synthetic_magb.png").is_file()


def test_cli_errors_are_one_line(tmp_path, monkeypatch):
    spec = write_spec(tmp_path, FIT)
    res = runner.invoke(app, ["sweep", str(spec), "--out", str(tmp_path), "--executor", "dask"])
    assert res.exit_code == 2 and "--executor: 'dask'; allowed: local, ray" in flat(res) and "Traceback" not in flat(res)
    res = runner.invoke(app, ["sweep", str(spec), "--out", str(tmp_path), "--shard", "3/2"])
    assert res.exit_code == 2 and "shard: 3/2; allowed: i/n with 0 <= i < n" in flat(res)
    monkeypatch.setitem(sys.modules, "ray", None)  # as if ray were not installed
    with pytest.raises(MissingDependencyError, match=r'install it with: pip install -e "\.\[ray\]"'):
        run_sweep(load_spec(spec), tmp_path / "x", executor="ray")
    res = runner.invoke(app, ["sweep", str(spec), "--out", str(tmp_path / "x"), "--executor", "ray"])
    assert res.exit_code == 2 and 'pip install -e ".[ray]"' in flat(res)
    # a failed cell makes the command exit 1 after the whole grid ran
    bad = write_spec(tmp_path, FIT.replace("datasets: [synthetic]", f"datasets: ['files:{tmp_path}/missing']"), "bad.yaml")
    res = runner.invoke(app, ["sweep", str(bad), "--out", str(tmp_path / "bad")])
    assert res.exit_code == 1 and "ran 4 cells (0 ok, 4 failed)" in flat(res) and "--retry-failed" in flat(res)


# ---------------------------------------------------------------------------------------------- Ray
def test_ray_options_from_resources():
    assert ray_options({"num_cpus": 2.0, "num_gpus": 0.5, "memory_gb": 1.5}) == {
        "num_cpus": 2.0, "num_gpus": 0.5, "max_retries": 0, "memory": int(1.5 * 2**30)}
    assert "memory" not in ray_options({"num_cpus": 1.0, "num_gpus": 0.0, "memory_gb": None})


def test_ray_executor_on_two_local_workers_matches_local(tmp_path):
    ray = pytest.importorskip("ray", reason='ray is not installed (pip install -e ".[ray]")')
    fit = load_spec(write_spec(tmp_path, FIT))
    cond = load_spec(write_spec(tmp_path, CONDENSE, "cond.yaml"))
    local_fit = run_sweep(fit, tmp_path / "local_fit")
    local_cond = run_sweep(cond, tmp_path / "local_cond")
    t0 = time.perf_counter()
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    try:
        seen = []
        res = run_sweep(fit, tmp_path / "ray_fit", executor="ray", on_row=lambda row, i, n: seen.append((i, n)))
        res_cond = run_sweep(cond, tmp_path / "ray_cond", executor="ray")
        again = run_sweep(fit, tmp_path / "ray_fit", executor="ray")
        assert ray.is_initialized()  # an instance the caller started is left running
    finally:
        ray.shutdown()
    print(f"\nRay: start, 13 cells on 2 workers, shutdown: {time.perf_counter() - t0:.1f} s")
    assert seen == [(1, 4), (2, 4), (3, 4), (4, 4)]  # rows streamed back one by one
    assert again.rows == [] and again.skipped == 4
    rows = read_rows(tmp_path / "ray_fit" / "rows.jsonl")  # written by the driver, one line per cell
    assert len(rows) == 4 and all(r["executor"] == "ray" and r["pid"] != os.getpid() for r in rows)
    assert len({r["pid"] for r in rows + res_cond.rows}) <= 2
    for ray_rows, local_rows in ((res.rows, local_fit.rows), (res_cond.rows, local_cond.rows)):
        got, ref = metrics_by_key(ray_rows), metrics_by_key(local_rows)
        assert got.keys() == ref.keys() and len(got) == len(ray_rows)
        for k in ref:
            for name in ("test_acc", "test_f1", "val_acc"):
                assert got[k][name] == pytest.approx(ref[k][name], abs=1e-6), (k, name)


# ---------------------------------------------------------------------------------------------- rows files: trust
def _fake_cell(calls):
    def run(spec, cell, executor="local"):
        calls.append(cell.key)
        return {"key": cell.key, "id": cell.id, "task": cell.task, **cell.fields, "status": "ok",
                "metrics": {"test_acc": 0.5}}
    return run


def test_a_damaged_last_line_is_terminated_and_skipped_never_swallowing_a_row(fit_spec, tmp_path, monkeypatch, caplog):
    calls = []
    monkeypatch.setattr(executors_mod, "run_cell", _fake_cell(calls))
    out = tmp_path / "s"
    first = run_sweep(fit_spec, out)
    path = first.rows_path
    lines = path.read_text().splitlines()
    # the run was cut while writing its last row: half a line, no newline
    path.write_text("\n".join(lines[:3]) + "\n" + lines[3][: len(lines[3]) // 2])
    with caplog.at_level(logging.WARNING, logger="magkit.bench.rows"):
        again = run_sweep(fit_spec, out)
    assert len(again.rows) == 1 and again.rows[0]["key"] == json.loads(lines[3])["key"]  # only the cut cell reruns
    assert "line 4 is damaged" in caplog.text and "terminating it" in caplog.text
    text = path.read_text()
    assert text.endswith("\n") and len(text.splitlines()) == 5
    assert len(read_rows(path)) == 4 and len(recorded(out)) == 4  # every cell recorded
    assert run_sweep(fit_spec, out).rows == []
    path.write_bytes(path.read_bytes() + b"\xff\xfe[1, 2]\n")  # binary garbage and a non-object line
    assert len(read_rows(path)) == 4


def test_a_second_live_run_of_a_shard_is_refused_and_stale_locks_are_taken_over(fit_spec, tmp_path, monkeypatch):
    import subprocess

    from magkit.exceptions import LockedError

    calls = []
    monkeypatch.setattr(executors_mod, "run_cell", _fake_cell(calls))
    out = tmp_path / "s"
    out.mkdir()
    lock_path = rows_file(out, (0, 2)).with_name("rows.shard-0-of-2.jsonl.lock")
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from magkit.bench.rows import ShardLock\n"
         f"with ShardLock({str(rows_file(out, (0, 2)))!r}):\n    print('locked', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(LockedError) as err:
            run_sweep(fit_spec, out, shard=(0, 2))
        msg = str(err.value)
        assert f"pid {holder.pid}" in msg and "rows.shard-0-of-2.jsonl" in msg and "\n" not in msg
        assert calls == []  # nothing ran twice
        assert len(run_sweep(fit_spec, out, shard=(1, 2)).rows) == 2  # another shard is not blocked
    finally:
        holder.kill()
        holder.wait()
    assert lock_path.read_text().strip() == str(holder.pid)  # the dead holder's lock file is still there
    res = run_sweep(fit_spec, out, shard=(0, 2))  # ... and taken over: the kernel released its flock
    assert len(res.rows) == 2 and len(calls) == 4


# ---------------------------------------------------------------------------------------------- evaluation protocol
def test_condense_cells_carry_the_evaluation_protocol(tmp_path, monkeypatch, caplog):
    import magkit.condense as condense_mod
    from magkit.bench.spec import EVALUATE_DEFAULTS, cell_config
    from magkit.condense.evaluate import EVAL_PATIENCE

    # the default (standard) protocol normalises to the recorded benchmarks' keys alone, so their rows still match
    spec = load_spec(write_spec(tmp_path, CONDENSE))
    assert set(spec["evaluate"]) == set(EVALUATE_DEFAULTS) == {"backbones", "runs", "epochs", "hidden", "lr",
                                                               "weight_decay", "seed"}
    explicit = load_spec(write_spec(tmp_path, CONDENSE.replace("hidden: 16}", "hidden: 16, protocol: standard}"), "s.yaml"))
    assert explicit["evaluate"] == spec["evaluate"]
    # the fast protocol writes its options, defaults included, into the spec, hence into each row's `evaluate`
    fast = load_spec(write_spec(tmp_path, CONDENSE.replace("hidden: 16}", "hidden: 16, protocol: fast}"), "f.yaml"))
    assert {k: fast["evaluate"][k] for k in ("protocol", "eval_every", "patience", "val_dtype")} == {
        "protocol": "fast", "eval_every": 10, "patience": EVAL_PATIENCE, "val_dtype": "auto"}
    tuned = load_spec(write_spec(tmp_path, CONDENSE.replace("hidden: 16}", "hidden: 16, protocol: fast, patience: 0, "
                                                            "val_dtype: auto, eval_every: 5}"), "b.yaml"))
    assert (tuned["evaluate"]["patience"], tuned["evaluate"]["val_dtype"], tuned["evaluate"]["eval_every"]) == (0, "auto", 5)

    # the whole-graph bar and the condensed graphs are evaluated under the same protocol
    seen: dict[str, list] = {"whole": [], "S": []}
    real_whole, real_eval = condense_mod.train_whole, condense_mod.evaluate_condensed
    monkeypatch.setattr(condense_mod, "train_whole", lambda *a, **kw: seen["whole"].append(kw) or real_whole(*a, **kw))
    monkeypatch.setattr(condense_mod, "evaluate_condensed", lambda *a, **kw: seen["S"].append(kw) or real_eval(*a, **kw))
    protocol = {"protocol": "fast", "eval_every": 5, "patience": 0, "val_dtype": "auto"}
    res = run_sweep(dict(tuned, methods=["random", "whole"], ratios=[0.05], seeds=[0]), tmp_path / "p")
    assert not res.failed and len(res.rows) == 2
    for who in ("whole", "S"):
        assert {k: seen[who][-1][k] for k in protocol} == protocol, who
    assert res.rows[0]["evaluate"]["val_dtype"] == "auto"
    res = run_sweep(dict(spec, methods=["random", "whole"], ratios=[0.05], seeds=[0]), tmp_path / "d")
    assert not res.failed and len(res.rows) == 2
    for who in ("whole", "S"):  # the standard protocol passes none of the fast protocol's options
        assert not set(seen[who][-1]) & set(protocol), who
    assert "protocol" not in res.rows[0]["evaluate"]

    # rows recorded under the standard protocol are reported when the spec asks for the fast one, not mixed silently
    out = tmp_path / "old"
    out.mkdir()
    rows = []
    for c in expand_grid(fast):
        cfg = cell_config(spec, c)
        rows.append(json.dumps({"key": c.key, "task": c.task, **c.fields, "status": "ok", **cfg}))
    (out / "rows.jsonl").write_text("\n".join(rows) + "\n")
    with caplog.at_level(logging.WARNING, logger="magkit.bench.sweep"):
        assert plan(spec, out).todo == []
        assert "recorded cell(s) ran with other parameters" not in caplog.text
        assert plan(fast, out).todo == []
    assert f"{len(rows)} recorded cell(s) ran with other parameters" in caplog.text
