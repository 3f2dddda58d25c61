"""``magkit bench run``'s library side: a suite is a fit sweep with its own folder and tables."""

import json

import pytest

from magkit.bench.rows import read_rows
from magkit.bench.suite import load_suite, render, run_suite, suite_rows
from magkit.exceptions import ConfigError

SUITE = """
name: tiny
datasets: [synthetic]
splits: [magb]
seeds: 0..1
params: {epochs: 5, hidden: 16}
methods: [mlp-early, sgc-early]
"""


@pytest.fixture()
def suite(tmp_path):
    p = tmp_path / "tiny.yaml"
    p.write_text(SUITE)
    return load_suite(p)


def test_suite_runs_resumes_and_renders(suite, tmp_path):
    out = tmp_path / "res"
    rows = run_suite(suite, out)
    assert len(rows) == 4 and {r["method"] for r in rows} == {"mlp-early", "sgc-early"}
    assert all(r["status"] == "ok" and 0 <= r["metrics"]["test_acc"] <= 1 and r["metrics"]["epochs_run"] == 5
               for r in rows)
    # a damaged trailing line (an interrupted write) is ignored and its cell is not counted as done
    with (out / "rows.jsonl").open("a") as fh:
        fh.write('{"key": "fit|dataset=synth')
    again = run_suite(suite, out)
    assert [r["key"] for r in again] == [r["key"] for r in rows]  # nothing re-run
    assert len(read_rows(out / "rows.jsonl")) == 4
    res = render(suite, out, command="magkit bench run tiny.yaml")
    md = res["markdown"].read_text()
    assert md.startswith("# Benchmark `tiny`")
    assert "| mlp-early |" in md and "| sgc-early |" in md and "±" in md and "magkit bench run tiny.yaml" in md
    payload = json.loads(res["json"].read_text())
    assert len(payload["groups"]) == 2 and payload["groups"][0]["seeds"] == [0, 1]
    mean = sum(r["metrics"]["test_acc"] for r in rows if r["method"] == "mlp-early") / 2
    assert payload["groups"][0]["method"] == "mlp-early"
    assert payload["groups"][0]["metrics"]["test_acc"]["mean"] == pytest.approx(mean, abs=1e-12)


def test_shards_partition_the_grid(suite, tmp_path):
    a = run_suite(suite, tmp_path / "s", shard=(0, 2))
    assert len(a) == 2
    b = run_suite(suite, tmp_path / "s", shard="1/2")
    assert len(b) == 4 and len({r["key"] for r in b}) == 4
    assert len(read_rows(tmp_path / "s" / "rows.shard-0-of-2.jsonl")) == 2
    assert len(read_rows(tmp_path / "s" / "rows.shard-1-of-2.jsonl")) == 2
    with pytest.raises(ConfigError, match="shard: 2/2"):
        run_suite(suite, tmp_path / "s", shard=(2, 2))


def test_flat_rows_count_as_recorded_cells(suite, tmp_path):
    """Rows files written without keys (benchmarks/*/rows.jsonl) are the same cells: they are skipped and
    rendered; other files of the folder (rows_before_*.jsonl) are not read."""
    out = tmp_path / "res"
    out.mkdir()
    flat = [{"dataset": "synthetic", "split": "magb", "method": m, "seed": s, "val_acc": 0.5, "val_f1": 0.4,
             "test_acc": 0.25 + 0.5 * s, "test_f1": 0.3, "epochs_run": 5, "best_epoch": 2, "epoch_time_s": 0.01,
             "fit_time_s": 0.1, "peak_memory_mb": 100.0, "dataset_checksum": "x"}
            for m, s in (("mlp-early", 0), ("mlp-early", 1), ("sgc-early", 0))]
    (out / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in flat))
    (out / "rows_before_x.jsonl").write_text(json.dumps({**flat[0], "test_acc": 0.99}) + "\n")
    rows = run_suite(suite, out)
    assert len(rows) == 4 and len(read_rows(out / "rows.jsonl")) == 4  # only sgc-early seed 1 ran
    assert [r["metrics"]["test_acc"] for r in rows[:2]] == [0.25, 0.75]
    assert suite_rows(suite, out) == rows
    groups = json.loads(render(suite, out, command="x")["json"].read_text())["groups"]
    assert groups[0]["metrics"]["test_acc"]["mean"] == pytest.approx(0.5)


def test_bad_suite_files(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("name: x\ndatasets: [synthetic]\n")
    with pytest.raises(ConfigError, match="'methods' must list"):
        load_suite(p)
    with pytest.raises(ConfigError, match="does not exist"):
        load_suite(tmp_path / "nope.yaml")
    p.write_text(SUITE.replace("epochs: 5", "epochs: five"))
    with pytest.raises(ConfigError, match=r"params: epochs='five' is not an int \(mlp-early\)$"):
        load_suite(p)


def test_graphmnl_rows_record_the_reliability_auc(tmp_path):
    """On a generated graph (ground truth per node) GraphMNL's rows carry the reliability AUC per branch kind, and
    results.md gets a table of it; methods without it (baselines) get none."""
    p = tmp_path / "gm.yaml"
    p.write_text("name: gm\ndatasets: [synthetic:balanced]\nsplits: [magb]\nseeds: 0..1\n"
                 "params: {epochs: 30, hidden: 32}\nmethods: [graphmnl, mlp-early]\n"
                 "method_params: {graphmnl: {warmup: 5}}\n")
    cfg = load_suite(p)
    rows = run_suite(cfg, tmp_path / "out")
    gm = [r["metrics"] for r in rows if r["method"] == "graphmnl"]
    assert len(gm) == 2 and all(set(r["reliability_auc"]) == {"raw", "prop"} for r in gm)
    assert all(0.55 < r["reliability_auc"]["raw"] <= 1.0 for r in gm)  # better than chance
    assert not any("reliability_auc" in r["metrics"] for r in rows if r["method"] == "mlp-early")
    md = render(cfg, tmp_path / "out", command="x")["markdown"].read_text()
    table = md.split("## Reliability AUC")[1]
    mean_raw = sum(r["reliability_auc"]["raw"] for r in gm) / 2
    assert f"| synthetic:balanced | magb | graphmnl | {mean_raw:.3f} ± " in table and "mlp-early" not in table
