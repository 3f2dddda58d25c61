"""magkit.integrity: atomic writes (a failure keeps the previous file and leaves no temporary one), content
digests, and their use by the results JSON, the prediction CSV and the disk propagation cache."""

from __future__ import annotations

import errno
import json
import logging
import os
from pathlib import Path

import pytest
import torch

import magkit.integrity as integrity
from magkit.exceptions import DatasetError, MagkitError
from magkit.integrity import (
    IntegrityError,
    WriteError,
    atomic_write_bytes,
    content_digest,
    read_safetensors,
    write_safetensors,
)


def enospc(fd, data):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_atomic_write_replaces_or_keeps_the_old_file(tmp_path, monkeypatch):
    path = atomic_write_bytes(tmp_path / "sub" / "a.bin", b"old")
    assert path.read_bytes() == b"old" and isinstance(WriteError("x"), (MagkitError, OSError))
    monkeypatch.setattr(integrity, "_write_all", enospc)
    with pytest.raises(WriteError) as err:
        atomic_write_bytes(path, b"new")
    assert str(err.value) == (f"could not write {path}: No space left on device (ENOSPC); the previous file (if any) "
                              "is unchanged; free some space or write elsewhere")
    assert path.read_bytes() == b"old" and os.listdir(path.parent) == ["a.bin"]
    monkeypatch.undo()

    def interrupted(fd, data):
        raise KeyboardInterrupt

    monkeypatch.setattr(integrity, "_write_all", interrupted)
    with pytest.raises(KeyboardInterrupt):
        atomic_write_bytes(path, b"new")
    assert path.read_bytes() == b"old" and os.listdir(path.parent) == ["a.bin"]


def test_a_folder_that_cannot_be_created_is_one_line(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(WriteError, match=r"could not write .*file/a\.bin: .*\(E"):
        atomic_write_bytes(tmp_path / "file" / "a.bin", b"data")


def test_digest_covers_record_names_dtypes_shapes_and_bytes():
    t = {"a": torch.arange(6, dtype=torch.float32).reshape(2, 3)}
    d = content_digest('{"k": 1}', t)
    assert len(d) == 64
    assert content_digest('{"k": 2}', t) != d
    assert content_digest('{"k": 1}', {"b": t["a"]}) != d
    assert content_digest('{"k": 1}', {"a": t["a"].reshape(3, 2)}) != d
    assert content_digest('{"k": 1}', {"a": t["a"].view(torch.int32)}) != d
    bumped = t["a"].clone()
    bumped[1, 2] = torch.nextafter(bumped[1, 2], torch.tensor(100.0))
    assert content_digest('{"k": 1}', {"a": bumped}) != d


def test_safetensors_round_trip_and_refusals(tmp_path):
    path = write_safetensors(tmp_path / "f.safetensors", {"w": torch.ones(3)}, {"format": "x", "n": [1, 2]})
    record, tensors = read_safetensors(path)
    assert record == {"format": "x", "n": [1, 2]} and torch.equal(tensors["w"], torch.ones(3))
    with pytest.raises(DatasetError, match="no such file"):
        read_safetensors(tmp_path / "none.safetensors")
    data = path.read_bytes()
    assert b"[1, 2]" in data
    path.write_bytes(data.replace(b"[1, 2]", b"[1, 3]"))
    with pytest.raises(IntegrityError, match=r"f\.safetensors: content digest mismatch"):
        read_safetensors(path)


def test_results_json_is_written_atomically(tmp_path, monkeypatch):
    from magkit.eval.results import atomic_write_json

    path = atomic_write_json(tmp_path / "results.json", {"acc": 0.5})
    monkeypatch.setattr(integrity, "_write_all", enospc)
    with pytest.raises(WriteError, match="results.json: No space left on device"):
        atomic_write_json(path, {"acc": 0.9})
    assert json.loads(path.read_text()) == {"acc": 0.5} and os.listdir(tmp_path) == ["results.json"]


def test_a_damaged_propagation_cache_is_recomputed_with_a_warning(tmp_path, caplog):
    from magkit.train import diskprop

    g = torch.Generator().manual_seed(0)
    ei = torch.randint(0, 30, (2, 90), generator=g)
    x = torch.randn(30, 5, generator=g)
    stats: dict = {}
    good = diskprop.propagate_to_disk(ei, x, 2, tmp_path, stats=stats).materialize()
    npy = Path(stats["path"])
    record = npy.with_name(npy.name + ".sha256")
    assert json.loads(record.read_text())["sha256"] == integrity.file_digest(npy)
    data = bytearray(npy.read_bytes())
    data[-5] ^= 1  # one flipped bit in the data: same header, same size
    npy.write_bytes(bytes(data))
    before = diskprop.COMPUTED["count"]
    with caplog.at_level(logging.WARNING, logger="magkit.train.diskprop"):
        out = diskprop.propagate_to_disk(ei, x, 2, tmp_path).materialize()
    assert torch.equal(out, good) and diskprop.COMPUTED["count"] == before + 1
    assert any("content digest mismatch" in r.getMessage() and npy.name in r.getMessage() for r in caplog.records)
    record.unlink()  # no digest record: not trusted either
    diskprop.propagate_to_disk(ei, x, 2, tmp_path)
    assert diskprop.COMPUTED["count"] == before + 2 and record.exists()
    again = {}
    diskprop.propagate_to_disk(ei, x, 2, tmp_path, stats=again)
    assert again["cached"] and diskprop.COMPUTED["count"] == before + 2


def test_predict_writes_its_csv_atomically(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from magkit.cli import app
    from magkit.data import load_dataset
    from magkit.methods import create

    graph = load_dataset("synthetic")
    est = create("mlp-early", epochs=3, hidden=8).fit(graph)
    model = est.save(tmp_path / "m.safetensors", meta={"data": "synthetic", "seed": 0})
    runner = CliRunner()
    csv_path = tmp_path / "pred.csv"
    res = runner.invoke(app, ["predict", "--model", str(model), "--out", str(csv_path)])
    assert res.exit_code == 0, res.output
    before = csv_path.read_bytes()
    assert before.count(b"\n") == graph.num_nodes + 1
    real_replace = os.replace

    def full(src, dst):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "replace", full)
    res = runner.invoke(app, ["predict", "--model", str(model), "--out", str(csv_path)])
    monkeypatch.setattr(os, "replace", real_replace)
    assert res.exit_code == 2 and "No space left on device" in res.output and "Traceback" not in res.output
    assert csv_path.read_bytes() == before and sorted(os.listdir(tmp_path)) == ["m.safetensors", "pred.csv"]
