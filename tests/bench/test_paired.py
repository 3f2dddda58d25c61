"""The suite's ``reference`` table: a method against the best baseline per setting, paired over seeds."""

import math
import re

import pytest

from magkit.bench.paired import check_reference, paired_markdown, paired_rows
from magkit.bench.spec import normalize_spec
from magkit.exceptions import ConfigError


def _row(method, seed, acc, f1, split="rate:0.05", dataset="d"):
    return {"dataset": dataset, "split": split, "method": method, "seed": seed, "status": "ok",
            "metrics": {"test_acc": acc, "test_f1": f1}}


ROWS = ([_row("ref", s, a, f) for s, a, f in [(0, 0.80, 0.70), (1, 0.82, 0.66), (2, 0.78, 0.68)]]
        + [_row("b1", s, a, f) for s, a, f in [(0, 0.79, 0.72), (1, 0.80, 0.70), (2, 0.77, 0.71)]]
        + [_row("b2", s, a, f) for s, a, f in [(0, 0.70, 0.60), (1, 0.71, 0.61)]])


def test_best_baseline_and_paired_difference():
    recs = {r["metric"]: r for r in paired_rows(ROWS, "ref", ["b1", "b2"])}
    acc, f1 = recs["acc"], recs["macro-F1"]
    assert acc["best"] == "b1" and f1["best"] == "b1" and acc["n"] == 3
    d = [1.0, 2.0, 1.0]  # paired accuracy differences in points
    assert acc["diff"][0] == pytest.approx(sum(d) / 3)
    sd = math.sqrt(sum((x - 4 / 3) ** 2 for x in d) / 2)
    assert acc["diff"][1] == pytest.approx(sd) and acc["t"] == pytest.approx((4 / 3) / (sd / math.sqrt(3)))
    assert f1["diff"][0] == pytest.approx(-3.0)  # (-2 - 4 - 3) / 3


def test_markdown_marks_the_settings_below():
    md = paired_markdown(ROWS, "ref", ["b1", "b2"])
    acc_line = next(line for line in md.splitlines() if "| acc |" in line)
    f1_line = next(line for line in md.splitlines() if "| macro-F1 |" in line)
    assert "**below**" not in acc_line and "+1.33" in acc_line
    assert "-3.00" in f1_line and "**below**" in f1_line and f1_line.rstrip().endswith("| 3 |")
    assert paired_markdown(ROWS, "ref", ["absent"]) == ""


def test_failed_cells_are_left_out():
    rows = ROWS + [{**_row("b2", 2, 0.99, 0.99), "status": "error"}]
    recs = {r["metric"]: r for r in paired_rows(rows, "ref", ["b2"])}
    assert recs["acc"]["n"] == 2 and recs["acc"]["base"][0] == pytest.approx(70.5)


@pytest.mark.parametrize("value, fragment", [
    ({"method": "nope"}, "reference names nope, not in methods"),
    ({"method": "gcn-early", "baselines": ["sage-early"]}, "reference names sage-early"),
    ({"methods": "gcn-early"}, "allowed: a mapping with 'method'"),
    ({"method": "gcn-early", "baselines": ["gcn-early"]}, "at least one baseline"),
])
def test_reference_errors_are_one_line(value, fragment):
    with pytest.raises(ConfigError, match=re.escape(fragment)) as err:
        check_reference(value, ["gcn-early", "mlp-early"], "s.yaml")
    assert "\n" not in str(err.value)


def test_spec_reads_the_reference_key():
    spec = normalize_spec({"datasets": ["synthetic"], "methods": ["gcn-early", "mlp-early"],
                           "reference": {"method": "gcn-early"}})
    assert spec["reference"] == {"method": "gcn-early", "baselines": ["mlp-early"]}
    with pytest.raises(ConfigError, match="unknown key"):
        normalize_spec({"task": "condense", "datasets": ["synthetic"], "methods": ["random"],
                        "reference": {"method": "random"}})


def test_a_retry_recorded_later_wins_over_an_earlier_failure_in_another_file(tmp_path):
    from magkit.bench.rows import recorded

    key = "fit|dataset=d|split=s|method=m|seed=0"
    ok = {"key": key, "task": "fit", "status": "ok", "finished_at": "2026-01-02T00:00:00+00:00"}
    failed = {"key": key, "task": "fit", "status": "error", "finished_at": "2026-01-01T00:00:00+00:00"}
    import json

    (tmp_path / "rows.jsonl").write_text(json.dumps(ok) + "\n")  # read first (name order)
    (tmp_path / "rows.shard-0-of-2.jsonl").write_text(json.dumps(failed) + "\n")
    assert recorded(tmp_path)[key]["status"] == "ok"
