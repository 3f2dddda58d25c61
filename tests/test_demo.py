"""`magkit demo`: the quick tour runs end to end, prints its table and folder, and writes its files."""

import json
import math

from typer.testing import CliRunner

from magkit.cli import app
from magkit.demo import QUICK

runner = CliRunner()

# measured (1,000-node synthetic graph, seeds 0..2, patience 20): mlp-early 80.2, gcn-early 98.2, sage-early 97.0,
# graphmnl 97.2 (% test accuracy); floors are those minus a margin
FLOORS = {"mlp-early": 0.72, "gcn-early": 0.92, "sage-early": 0.90, "graphmnl": 0.90}
PNG = b"\x89PNG\r\n\x1a\n"


def test_quick_demo_prints_its_table_and_writes_results_and_a_plot(tmp_path):
    out = tmp_path / "tour"
    res = runner.invoke(app, ["demo", "--out", str(out)], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    text = res.stdout
    assert str(out.resolve()) in text  # the folder is named on screen
    assert "test acc" in text and "test macro-F1" in text and "±" in text
    assert set(QUICK.methods) == set(FLOORS)
    for name in QUICK.methods:
        assert f"│ {name}" in text
        payload = json.loads((out / name / "results.json").read_text())
        assert payload["method"] == name and payload["seeds"] == [0, 1, 2]
        accs = [r["test_acc"] for r in payload["runs"]]
        assert len(accs) == 3 and all(math.isfinite(a) for a in accs)
        assert payload["summary"]["test_acc"]["mean"] >= FLOORS[name], (name, accs)
        assert payload["dataset"]["nodes"] == 1000
        assert (out / name / "learning_curves.png").read_bytes()[:8] == PNG
    # the graph carries the story: every graph method beats the MLP on fused features
    mean = {n: json.loads((out / n / "results.json").read_text())["summary"]["test_acc"]["mean"] for n in FLOORS}
    assert min(mean["gcn-early"], mean["sage-early"], mean["graphmnl"]) > mean["mlp-early"] + 0.05
    summary = json.loads((out / "summary.json").read_text())
    assert list(summary["methods"]) == list(QUICK.methods) and summary["split"] == "magb"
    assert summary["methods"]["gcn-early"]["test_acc"]["mean"] == mean["gcn-early"]
    md = (out / "summary.md").read_text()
    assert "| gcn-early |" in md and "| graphmnl |" in md
    plot = (out / "test_accuracy.png").read_bytes()
    assert plot[:8] == PNG and len(plot) > 5000
    from magkit.eval.results import file_mode

    assert (out / "summary.json").stat().st_mode & 0o777 == file_mode()
    assert (out / "gcn-early" / "results.json").stat().st_mode & 0o777 == file_mode()


def test_demo_with_chosen_methods_and_seeds(tmp_path):
    res = runner.invoke(app, ["demo", "--methods", "mlp-early", "--seeds", "0", "--out", str(tmp_path)])
    assert res.exit_code == 0, res.output
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert list(summary["methods"]) == ["mlp-early"] and summary["seeds"] == [0]
    assert (tmp_path / "test_accuracy.png").read_bytes()[:8] == PNG
