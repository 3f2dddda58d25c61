"""magkit search: the space, trials on S or the whole graph, resume, shards, ranking, re-training, the rank
comparison, errors, and that trials never read test labels."""

import json
import math
import sys

import pytest
import torch
from typer.testing import CliRunner

import magkit
from magkit.bench.rows import read_rows
from magkit.cli import app
from magkit.condense.evaluate import View, _build, _forward, score
from magkit.data import load_dataset
from magkit.exceptions import ConfigError, MissingDependencyError
from magkit.models.late_fusion import LateFusion
from magkit.search import compare, config_key, load_space, rank
from magkit.search.target import Target, _local_view

runner = CliRunner()
FAST = {"epochs": 12, "eval_every": 3, "patience": 2}
SMALL = {"backbone": ["gcn", "mlp"], "hidden": 8, "lr": [0.01, 0.05]}  # 4 configurations


def flat(res):
    return " ".join(res.output.split())


@pytest.fixture(scope="module")
def graph():
    return load_dataset("synthetic:balanced", num_nodes=240, num_classes=3, split="magb")


# ---------------------------------------------------------------------------------------------- space
def test_grid_enumerates_every_configuration_once():
    space = load_space({"backbone": ["gcn", "sgc", "mlp"], "fusion": ["early", "late"], "hidden": [16, 32],
                        "num_layers": [1, 2], "lr": [0.01, 0.1], "dropout": 0.5})
    grid = space.grid()
    # gcn, mlp: 2 fusions x 2 widths x 2 depths x 2 lr = 16 each; sgc (no depth, width, dropout): 2 x 2 = 4
    assert len(grid) == 36 == len(space)
    assert len({config_key(c) for c in grid}) == 36
    sgc = [c for c in grid if c["backbone"] == "sgc"]
    assert len(sgc) == 4 and all(c["hidden"] is None and c["num_layers"] is None for c in sgc)
    assert config_key(grid[0]) == "gcn-early-L1-h16-d0.5-lr0.01-wd0.0005"
    assert load_space({"depth": [2, 3], "width": 8}).choices["num_layers"] == [2, 3]


@pytest.mark.parametrize("raw, needle", [
    ({"backbone": ["gcn", "gatt"]}, "backbone 'gatt' (did you mean 'gat'?)"),
    ({"hiden": [8]}, "unknown key 'hiden' (did you mean 'hidden'?)"),
    ({"dropout": [0.5, 1.5]}, "dropout 1.5; allowed: 0 <= dropout < 1"),
    ({"lr": {"low": 0.1, "high": 0.01}}, "range {'low': 0.1, 'high': 0.01} with mode: grid"),
    ({"mode": "sample", "trials": 3, "lr": {"low": 0.1, "high": 0.01}}, "lr range low 0.1 > high 0.01"),
    ({"mode": "sample"}, "trials None; allowed: an integer >= 1"),
    ({"mode": "random"}, "mode 'random'"),
    ({"fusion": "mid"}, "fusion 'mid'; allowed: early, late"),
    ({"num_layers": 0}, "num_layers 0; allowed: an integer in 1..16"),
    ({"trials": 5}, "trials 5 with mode: grid"),
    ({"mode": "sample", "trials": 3, "num_layers": {"low": 1, "high": 4, "step": 0.5}},
     "num_layers step 0.5; allowed: a whole number"),
])
def test_space_errors_are_one_line_with_the_bad_value(raw, needle):
    with pytest.raises(ConfigError) as err:
        load_space(raw)
    assert needle in str(err.value) and "\n" not in str(err.value)


def test_search_argument_errors(graph, tmp_path):
    with pytest.raises(ConfigError, match=r"--condenser: 'srgn' \(did you mean 'srgm'\?\)"):
        magkit.search(graph, SMALL, tmp_path, condenser="srgn")
    with pytest.raises(ConfigError, match="exactly one of --condensed PATH, --condenser NAME"):
        magkit.search(graph, SMALL, tmp_path, condenser="random", on="whole")
    with pytest.raises(ConfigError, match="--top: -1; allowed: an integer >= 0"):
        magkit.search(graph, SMALL, tmp_path, on="whole", top=-1)
    with pytest.raises(ConfigError, match=r"--executor: 'rey' \(did you mean 'ray'\?\)"):
        magkit.search(graph, SMALL, tmp_path, on="whole", executor="rey")
    assert not (tmp_path / "rows.jsonl").exists()  # nothing ran


def test_missing_optuna_is_one_line_with_the_install_hint(graph, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "optuna", None)
    with pytest.raises(MissingDependencyError, match=r'install it with: pip install -e "\.\[search\]"'):
        magkit.search(graph, {"mode": "sample", "trials": 2}, tmp_path, on="whole")


# ---------------------------------------------------------------------------------------------- metrics
def test_compare_spearman_kendall_and_top_overlap_on_known_inputs():
    s = {"a": 0.1, "b": 0.2, "c": 0.3, "d": 0.4}
    w = {"a": 0.1, "b": 0.3, "c": 0.2, "d": 0.4, "e": 0.9}  # e: not searched on S, left out
    res = compare(s, w, k=2)
    assert res["n"] == 4
    assert res["spearman"] == pytest.approx(0.8)  # 1 - 6 * 2 / (4 * 15)
    assert res["kendall"] == pytest.approx(4 / 6)  # 5 concordant, 1 discordant pair
    assert res["top_overlap"] == pytest.approx(0.5)  # {d, c} against {d, b}
    assert res["best_s"] == res["best_whole"] == "d"
    rev = compare(s, {k: -v for k, v in s.items()}, k=4)
    assert rev["spearman"] == pytest.approx(-1.0) and rev["kendall"] == pytest.approx(-1.0) and rev["top_overlap"] == 1.0
    assert math.isnan(compare({"a": 1.0}, {"a": 2.0})["spearman"])


def test_rank_orders_by_validation_and_keeps_pruned_after():
    rows = [{"method": m, "status": st, "metrics": {"val_acc": v}} for m, st, v in
            [("a", "ok", 0.5), ("b", "ok", 0.7), ("c", "pruned", 0.9), ("d", "error", 0.0), ("e", "ok", 0.7)]]
    assert [r["method"] for r in rank(rows)] == ["b", "e", "a", "c"]


# ---------------------------------------------------------------------------------------------- trials
def test_validation_view_cut_to_the_receptive_field_scores_as_the_whole_view():
    # a ring with chords (degrees 2 to 4): the neighbourhoods of the scored nodes are a small part of it
    n = 300
    g = torch.Generator().manual_seed(0)
    src = torch.cat([torch.arange(n), torch.randint(0, n, (60,), generator=g)])
    dst = torch.cat([(torch.arange(n) + 1) % n, torch.randint(0, n, (60,), generator=g)])
    keep = src != dst
    ei = torch.cat([torch.stack([src[keep], dst[keep]]), torch.stack([dst[keep], src[keep]])], dim=1).unique(dim=1)
    x, y = torch.randn(n, 12, generator=g), torch.randint(0, 3, (n,), generator=g)
    val = View(x, ei, y, torch.tensor([0, 50, 100, 150, 200, 250]))
    torch.manual_seed(0)
    for kind in ("gcn", "sage", "gat", "cheb", "mlp", "sgc"):
        for depth in (1, 2):
            model = _build(kind, 12, 8, 3, 0.0, depth)
            local = _local_view(val, kind, depth)
            assert local.num_nodes < n // 2, (kind, depth)
            full = View(val.x, val.edge_index, val.y, val.idx)
            a, b = score(model, kind, local), score(model, kind, full)
            assert torch.equal(a[2], b[2]) and a[0] == b[0], (kind, depth)
            model.eval()
            with torch.no_grad():  # the logits too, not only their argmax
                za = _forward(model, kind, local.x, local.structure(kind))[local.idx]
                zb = _forward(model, kind, full.x, full.structure(kind))[full.idx]
            assert torch.allclose(za, zb, atol=1e-5), (kind, depth)


def test_late_fusion_averages_one_network_per_block():
    a, b = torch.nn.Linear(3, 2), torch.nn.Linear(5, 2)
    x = torch.randn(4, 8)
    out = LateFusion([a, b], (3, 5))(x)
    assert torch.allclose(out, (a(x[:, :3]) + b(x[:, 3:])) / 2)


def _count_trains(monkeypatch):
    calls = []
    real = Target.train

    def counted(self, config, **kw):
        calls.append((self.test is not None, config_key(config)))
        return real(self, config, **kw)

    monkeypatch.setattr(Target, "train", counted)
    return calls


def test_killed_search_resumes_without_rerunning_recorded_trials(graph, tmp_path, monkeypatch):
    calls = _count_trains(monkeypatch)

    def kill_after_two(rec):
        if rec["stage"] == "trial" and rec["done"] == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        magkit.search(graph, SMALL, tmp_path, condenser="random", ratio=0.05, top=2, progress=kill_after_two, **FAST)
    assert len(calls) == 2 and len(read_rows(tmp_path / "rows.jsonl")) == 2
    s_file = next(tmp_path.glob("S-random-*.safetensors"))  # S is kept: the resumed search trains on the same S
    calls.clear()
    res = magkit.search(graph, SMALL, tmp_path, condenser="random", ratio=0.05, top=2, **FAST)
    assert [c for c in calls if not c[0]] == [(False, config_key(c)) for c in load_space(SMALL).grid()[2:]]
    assert sum(c[0] for c in calls) == 2  # the top 2 re-trained on the whole graph
    assert res.ran == 2 and res.skipped == 2 and len(res.trials) == 4 and s_file.exists()
    calls.clear()
    again = magkit.search(graph, SMALL, tmp_path, condenser="random", ratio=0.05, top=2, **FAST)
    assert calls == [] and again.ran == 0
    assert [r["method"] for r in again.trials] == [r["method"] for r in res.trials]


def test_top_k_is_picked_by_validation_and_the_chosen_by_whole_graph_validation(graph, tmp_path, monkeypatch):
    # S scores rank lr 0.05 configurations first; on the whole graph mlp wins: the chosen one is the re-trained
    # configuration with the best whole-graph validation accuracy, and only the top 2 are re-trained
    s_val = {"gcn-early-L2-h8-d0.5-lr0.01-wd0.0005": 0.4, "gcn-early-L2-h8-d0.5-lr0.05-wd0.0005": 0.9,
             "mlp-early-L2-h8-d0.5-lr0.01-wd0.0005": 0.3, "mlp-early-L2-h8-d0.5-lr0.05-wd0.0005": 0.8}

    def fake(self, config, **kw):
        key = config_key(config)
        if self.test is None:
            return {"val_acc": s_val[key], "train_time_s": 0.0}
        return {"val_acc": 0.95 if key.startswith("mlp") else 0.6, "test_acc": 0.5, "train_time_s": 0.0}

    monkeypatch.setattr(Target, "train", fake)
    res = magkit.search(graph, SMALL, tmp_path, on="whole", top=2, **FAST)
    assert [r["method"] for r in res.trials] == sorted(s_val, key=lambda k: -s_val[k])
    assert [r["method"] for r in res.retrained] == [res.trials[0]["method"], res.trials[1]["method"]]
    assert res.chosen["method"] == "mlp-early-L2-h8-d0.5-lr0.05-wd0.0005"
    assert all(r["stage"] == "retrain" and "test_acc" in r["metrics"] for r in res.retrained)
    assert all("test_acc" not in r["metrics"] for r in res.trials)


def test_trials_never_read_test_labels(graph, tmp_path):
    permuted = graph.clone()
    y = permuted.y.clone()
    test = permuted.split_index("test")
    y[test] = y[test][torch.randperm(test.numel(), generator=torch.Generator().manual_seed(1))]
    y[test[0]] = (y[test[0]] + 1) % graph.num_classes  # at least one test label differs
    permuted.y = y
    assert not torch.equal(permuted.y, graph.y)
    space = {"backbone": ["gcn", "sgc", "mlp"], "fusion": ["early", "late"], "hidden": 8}
    for kw in ({"condenser": "random", "ratio": 0.05}, {"on": "whole"}):
        a = magkit.search(graph, space, tmp_path / "a" / str(len(kw)), top=0, **kw, **FAST)
        b = magkit.search(permuted, space, tmp_path / "b" / str(len(kw)), top=0, **kw, **FAST)
        assert [(r["method"], r["metrics"]["val_acc"]) for r in a.trials] == \
               [(r["method"], r["metrics"]["val_acc"]) for r in b.trials]
        assert len(a.trials) == 6 and a.retrained == []


def test_shards_split_the_trials_and_an_unsharded_run_ranks_them(graph, tmp_path, monkeypatch):
    calls = _count_trains(monkeypatch)
    r0 = magkit.search(graph, SMALL, tmp_path, on="whole", shard="0/2", top=1, **FAST)
    r1 = magkit.search(graph, SMALL, tmp_path, on="whole", shard="1/2", top=1, **FAST)
    assert r0.ran == r1.ran == 2 and r0.retrained == r1.retrained == []
    assert (tmp_path / "rows.shard-0-of-2.jsonl").is_file() and (tmp_path / "rows.shard-1-of-2.jsonl").is_file()
    calls.clear()
    res = magkit.search(graph, SMALL, tmp_path, on="whole", top=1, **FAST)
    assert res.ran == 0 and len(res.trials) == 4 and calls == [(True, res.trials[0]["method"])]


def test_sampled_search_with_optuna_resumes(graph, tmp_path):
    pytest.importorskip("optuna")
    space = {"mode": "sample", "trials": 3, "backbone": ["mlp", "sgc"], "hidden": 8,
             "lr": {"low": 0.001, "high": 0.1, "log": True}}
    res = magkit.search(graph, space, tmp_path, on="whole", top=1, **FAST)
    assert res.ran == 3 and len(res.trials) == 3
    assert all(0.001 <= r["config"]["lr"] <= 0.1 for r in res.trials)
    again = magkit.search(graph, space, tmp_path, on="whole", top=1, **FAST)
    assert again.ran == 0 and again.skipped == 3


# ---------------------------------------------------------------------------------------------- CLI
def test_cli_search_compare_and_report(tmp_path):
    space = tmp_path / "space.yaml"
    space.write_text("backbone: [sgc, mlp]\nhidden: 8\n")
    common = ["synthetic:balanced", "--data-set", "num_nodes=200", "--data-set", "num_classes=3", "--split", "magb",
              "--space", str(space), "--epochs", "9", "--eval-every", "3", "--patience", "2", "--top", "1"]
    res = runner.invoke(app, ["search", *common, "--out", str(tmp_path / "s"), "--condenser", "kcenter",
                              "--ratio", "0.05"])
    assert res.exit_code == 0, res.output
    assert "search on kcenter@0.05: 2 trials" in flat(res) and "chosen:" in flat(res)
    summary = json.loads((tmp_path / "s" / "search.json").read_text())
    assert summary["on"] == "kcenter@0.05" and len(summary["retrained"]) == 1
    res = runner.invoke(app, ["search", *common, "--out", str(tmp_path / "w"), "--on", "whole"])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["search", "--compare", str(tmp_path / "s"), str(tmp_path / "w")])
    assert res.exit_code == 0 and "2 configurations in both" in flat(res)
    res = runner.invoke(app, ["report", str(tmp_path / "s"), "--out", str(tmp_path / "rep")])
    assert res.exit_code == 0, res.output
    md = (tmp_path / "rep" / "results.md").read_text()
    assert "## search · synthetic:balanced · trained on `kcenter@0.05`" in md and "Re-trained on the whole" in md


def test_cli_errors_are_one_line_before_any_work(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("backbone: [gcn, grafsage]\n")
    res = runner.invoke(app, ["search", "citeseer", "--space", str(bad), "--out", str(tmp_path / "o"), "--on", "whole"])
    assert res.exit_code == 2 and "backbone 'grafsage'" in flat(res) and "Traceback" not in res.output
    afile = tmp_path / "file"
    afile.write_text("")
    res = runner.invoke(app, ["search", "citeseer", "--space", str(bad), "--out", str(afile), "--on", "whole"])
    assert res.exit_code == 2 and "--out:" in flat(res) and "is an existing file" in flat(res)
    res = runner.invoke(app, ["search", "citeseer", "--out", str(tmp_path / "o")])
    assert res.exit_code == 2 and "missing --space" in flat(res)
    assert not (tmp_path / "o").exists()


def test_ray_executor_matches_local(graph, tmp_path):
    ray = pytest.importorskip("ray", reason='ray is not installed (pip install -e ".[ray]")')
    local = magkit.search(graph, SMALL, tmp_path / "local", on="whole", top=0, **FAST)
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    try:
        res = magkit.search(graph, SMALL, tmp_path / "ray", on="whole", top=1, executor="ray", **FAST)
    finally:
        ray.shutdown()
    assert res.ran == 4 and all(r["pid"] != __import__("os").getpid() for r in read_rows(tmp_path / "ray" / "rows.jsonl")
                                if r["stage"] == "trial")
    assert [(r["method"], r["metrics"]["val_acc"]) for r in res.trials] == \
           [(r["method"], r["metrics"]["val_acc"]) for r in local.trials]
