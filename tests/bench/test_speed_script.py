"""benchmarks/speed/run.py names the measured trees by version and records a command free of local paths."""

from __future__ import annotations

import importlib.util
import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _script():
    spec = importlib.util.spec_from_file_location("speed_run", ROOT / "benchmarks" / "speed" / "run.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_label_names_the_commit(tmp_path):
    run = _script()
    label = run.version_label(ROOT / "src")
    sha = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short=7", "HEAD"], capture_output=True,
                         text=True).stdout.strip()
    if sha:
        assert label.startswith(f"magkit {sha}"), label
    else:
        assert label == "magkit 0.1.0" or label.startswith("magkit "), label
    assert not re.search(r"branch|before|after|main", label), label
    # outside any git checkout the package's version names the tree
    (tmp_path / "magkit").mkdir()
    (tmp_path / "magkit" / "__init__.py").write_text('__version__ = "9.9.9"\n')
    assert run.version_label(tmp_path) == "magkit 9.9.9"


def test_recorded_command_hides_the_compare_path():
    run = _script()
    assert run.command_line(["--compare-src", "/tmp/x/src", "--hidden", "64"]) == (
        "python benchmarks/speed/run.py --compare-src OTHER/src --hidden 64")
    assert run.command_line(["--compare-src=/tmp/x/src"]) == "python benchmarks/speed/run.py --compare-src=OTHER/src"
    assert run.command_line([]) == "python benchmarks/speed/run.py"


def _trace():
    # epochs 1-3 structure, 4-6 feature; epochs 3 and 6 validated (their times include the validation)
    return [
        {"epoch": 1, "structure_step": True, "s": 5.0, "cpu": 5.0},
        {"epoch": 2, "structure_step": True, "s": 1.0, "cpu": 6.0},
        {"epoch": 3, "structure_step": True, "s": 9.0, "cpu": 15.0, "val_acc": 0.5},
        {"epoch": 4, "structure_step": False, "s": 3.0, "cpu": 18.0},
        {"epoch": 5, "structure_step": False, "s": 0.2, "cpu": 18.2},
        {"epoch": 6, "structure_step": False, "s": 0.4, "cpu": 18.6},
        {"epoch": 7, "structure_step": False, "s": 2.0, "cpu": 20.6, "val_acc": 0.7},
        {"epoch": 8, "structure_step": False, "s": 2.0, "cpu": 22.6, "val_acc": 0.9},
    ]


def test_epoch_medians_skip_the_first_epoch_and_validations():
    run = _script()
    med = run.epoch_medians(_trace())
    assert med["structure"] == 1.0  # epoch 1 (first) and 3 (validated) left out
    assert abs(med["feature"] - 0.3) < 1e-12  # epochs 5, 6; not 4 (first), 7, 8 (validated)
    assert run.epoch_medians([r for r in _trace() if not r["structure_step"]])["structure"] is None


def test_time_to_threshold_is_the_first_validation_reaching_it():
    run = _script()
    assert run.time_to_threshold(_trace(), 0.6) == (20.6, 7)
    assert run.time_to_threshold(_trace(), 0.7) == (20.6, 7)  # reaching counts
    assert run.time_to_threshold(_trace(), 0.5) == (15.0, 3)
    assert run.time_to_threshold(_trace(), 0.95) is None


def test_wall_seconds_to_the_bar_are_read_and_shown_on_more_than_one_thread():
    run = _script()
    trace = [{**r, "wall": r["cpu"] / 2} for r in _trace()]  # two busy threads: half the CPU seconds
    assert run.time_to_threshold(trace, 0.6, "wall") == (10.3, 7)
    rows = run.cond_summary({"srgm": {"trace": trace, "n_syn": 102}}, 0.6)
    assert rows["srgm"]["to_threshold_wall_s"] == 10.3 and rows["srgm"]["to_threshold_s"] == 20.6
    one, two = run._cond_table("t", rows), run._cond_table("t", rows, wall=True)
    assert "wall s" not in one[2] and one[3].count("---") == 8
    assert "| to 86% of whole, wall s |" in two[2] and two[3].count("---") == 9
    assert two[4].startswith("| srgm | 102 | 0.300 | 1.000 | 3.3 | 20.6 (7) | 10.3 | 90.00 | 22.6 |")
    # a trace without wall seconds (one thread) has none
    assert run.cond_summary({"srgm": {"trace": _trace(), "n_syn": 102}}, 0.6)["srgm"]["to_threshold_wall_s"] is None


def test_evaluation_names_the_fast_protocols_own_val_dtype_default():
    from magkit.condense.evaluate import FAST_OPTIONS

    run = _script()
    assert run.fast_val_dtype(None) == FAST_OPTIONS["val_dtype"] == "auto"
    assert run.fast_val_dtype("float32") == "float32"


def test_two_trees_at_one_version_keep_separate_headings():
    run = _script()
    assert run.distinct_label("magkit abc1234", "magkit abc1234") == "magkit abc1234 (--compare-src)"
    assert run.distinct_label("magkit 0.1.0", "magkit abc1234") == "magkit 0.1.0"


def test_all_runs_training_then_evaluation_then_condensation(monkeypatch):
    run = _script()
    calls = []
    for name in ("training", "evaluation", "condensation"):
        monkeypatch.setattr(run, name, lambda a, argv, name=name: calls.append((name, list(argv))))
    run.main(["--all", "--compare-src", "OTHER/src"])
    assert calls == [(n, ["--all", "--compare-src", "OTHER/src"]) for n in ("training", "evaluation", "condensation")]
    calls.clear()
    run.main([])
    assert calls == [("training", [])]
