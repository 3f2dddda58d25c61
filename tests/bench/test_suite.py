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
