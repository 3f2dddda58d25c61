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
