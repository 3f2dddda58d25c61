import json

import pytest

from magkit.bench.suite import load_suite, read_rows, render, run_suite
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
    assert all(0 <= r["test_acc"] <= 1 and r["epochs_run"] == 5 for r in rows)
    # a damaged trailing line (an interrupted write) is ignored and its cell is not counted as done
    with (out / "rows.jsonl").open("a") as fh:
        fh.write('{"dataset": "synth')
    again = run_suite(suite, out)
    assert len(again) == 4  # nothing re-run
    paths = render(suite, again, out, command="magkit bench run tiny.yaml")
    md = paths["markdown"].read_text()
    assert "| mlp-early |" in md and "| sgc-early |" in md and "±" in md and "magkit bench run tiny.yaml" in md
    payload = json.loads(paths["json"].read_text())
    assert len(payload["results"]) == 2 and payload["results"][0]["seeds"] == [0, 1]


def test_shards_partition_the_grid(suite, tmp_path):
    a = run_suite(suite, tmp_path / "s", shard=(0, 2))
    assert len(a) == 2
    b = run_suite(suite, tmp_path / "s", shard=(1, 2))
    keys = {(r["method"], r["seed"]) for r in read_rows(tmp_path / "s" / "rows.jsonl")}
    assert len(b) == 4 and len(keys) == 4
    with pytest.raises(ConfigError, match="shard: 2/2"):
        run_suite(suite, tmp_path / "s", shard=(2, 2))


def test_bad_suite_files(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("name: x\ndatasets: [synthetic]\n")
    with pytest.raises(ConfigError, match="'methods' must list"):
        load_suite(p)
    with pytest.raises(ConfigError, match="does not exist"):
        load_suite(tmp_path / "nope.yaml")


def test_graphmnl_rows_record_the_reliability_auc(tmp_path):
    """On a generated graph (ground truth per node) GraphMNL's rows carry the reliability AUC per branch kind, and
    results.md gets a table of it; methods without it (baselines) get none."""
    p = tmp_path / "gm.yaml"
    p.write_text("name: gm\ndatasets: [synthetic:balanced]\nsplits: [magb]\nseeds: 0..1\n"
                 "params: {epochs: 30, hidden: 32}\nmethods: [graphmnl, mlp-early]\n"
                 "method_params: {graphmnl: {warmup: 5}}\n")
    cfg = load_suite(p)
    rows = run_suite(cfg, tmp_path / "out")
    gm = [r for r in rows if r["method"] == "graphmnl"]
    assert len(gm) == 2 and all(set(r["reliability_auc"]) == {"raw", "prop"} for r in gm)
    assert all(0.55 < r["reliability_auc"]["raw"] <= 1.0 for r in gm)  # better than chance
    assert not any("reliability_auc" in r for r in rows if r["method"] == "mlp-early")
    md = render(cfg, rows, tmp_path / "out", command="x")["markdown"].read_text()
    table = md.split("## Reliability AUC")[1]
    mean_raw = sum(r["reliability_auc"]["raw"] for r in gm) / 2
    assert f"| synthetic:balanced | magb | graphmnl | {mean_raw:.3f} ± " in table and "mlp-early" not in table
