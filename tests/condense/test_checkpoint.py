"""Condensation checkpoints: digest-checked and all-or-nothing on resume, a missing one is said, wall time is the
real one, and a failed write keeps the previous checkpoint."""

from __future__ import annotations

import errno
import logging
import os
import time

import pytest
import torch

import magkit.integrity as integrity
from magkit.condense import make_condenser
from magkit.data.synthetic import make_synthetic_mag
from magkit.exceptions import DatasetError
from magkit.integrity import IntegrityError, WriteError

PARAMS = dict(ratio=0.1, epochs=4, outer_steps=1, inner_steps=1, eval_every=1, eval_epochs=3, hidden=8,
              checkpoint_every=1, structure_epochs=(1, 1))


@pytest.fixture(scope="module")
def graph():
    return make_synthetic_mag(num_nodes=120, num_classes=3, dims=8, seed=0, avg_degree=6.0)


class Stop(Exception):
    pass


def stop_at(epoch):
    def progress(rec):
        if rec["epoch"] == epoch:
            raise Stop
    return progress


def interrupted(graph, ckpt, epoch=3):
    with pytest.raises(Stop):
        make_condenser("srgm", **PARAMS).condense(graph, checkpoint=ckpt, progress=stop_at(epoch))
    assert ckpt.exists()


def test_resume_without_a_checkpoint_says_so(graph, tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="magkit.condense.matching"):
        out = make_condenser("srgm", **PARAMS).condense(graph, checkpoint=tmp_path / "none.ckpt", resume=True)
    assert out.num_nodes > 0
    assert any("resume: no checkpoint at" in r.getMessage() and "none.ckpt" in r.getMessage()
               and "starting from epoch 0" in r.getMessage() for r in caplog.records)


def test_wall_time_counts_each_second_once(graph, tmp_path):
    ckpt = tmp_path / "run.ckpt"
    t0 = time.perf_counter()
    cond = make_condenser("srgm", **PARAMS)
    cond.condense(graph, checkpoint=ckpt)  # a checkpoint every epoch
    took = time.perf_counter() - t0
    walls = [r["wall_time_s"] for r in cond.history_["epochs"]]
    assert walls == sorted(walls) and 0 < cond.history_["wall_time_s"] <= took
    assert walls[-1] <= cond.history_["wall_time_s"]
    # interrupted, then resumed: the earlier run's recorded time plus the resumed run's, nothing counted twice
    ckpt.unlink()
    t0 = time.perf_counter()
    interrupted(graph, ckpt)
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    resumed = make_condenser("srgm", **PARAMS)
    resumed.condense(graph, checkpoint=ckpt, resume=True)
    second = time.perf_counter() - t0
    total = resumed.history_["wall_time_s"]
    assert second < total <= first + second
    walls = [r["wall_time_s"] for r in resumed.history_["epochs"]]
    assert walls == sorted(walls) and walls[-1] <= total


def test_a_corrupted_checkpoint_is_a_typed_error_and_restores_nothing(graph, tmp_path):
    ckpt = tmp_path / "run.ckpt"
    interrupted(graph, ckpt)
    data = ckpt.read_bytes()
    for bad in (data[:-3], data[: len(data) // 2], data[:100], b""):
        ckpt.write_bytes(bad)
        with pytest.raises(IntegrityError, match=r"run\.ckpt: not a readable safetensors file") as err:
            make_condenser("srgm", **PARAMS).condense(graph, checkpoint=ckpt, resume=True)
        assert "\n" not in str(err.value)
    flipped = bytearray(data)
    flipped[-10] ^= 4
    ckpt.write_bytes(bytes(flipped))
    with pytest.raises(IntegrityError, match=r"run\.ckpt: content digest mismatch"):
        make_condenser("srgm", **PARAMS).condense(graph, checkpoint=ckpt, resume=True)
    ckpt.write_bytes(data)
    with pytest.raises(DatasetError, match="another configuration"):
        make_condenser("srgm", **{**PARAMS, "hidden": 16}).condense(graph, checkpoint=ckpt, resume=True)


def test_a_checkpoint_that_does_not_fit_the_run_is_refused_before_anything_is_restored(graph, tmp_path):
    from safetensors import safe_open

    from magkit.condense.checkpoint import load_checkpoint

    ckpt = tmp_path / "run.ckpt"
    interrupted(graph, ckpt)
    with safe_open(str(ckpt), framework="pt") as fh:
        tensors = {k: fh.get_tensor(k) for k in fh.keys()}
        import json

        record = json.loads(fh.metadata()["magkit"])
    tensors["x_syn"] = torch.zeros(tensors["x_syn"].shape[0] + 1, tensors["x_syn"].shape[1])
    integrity.write_safetensors(ckpt, tensors, record)  # a valid digest over a wrong shape
    cond = make_condenser("srgm", **PARAMS)
    x = torch.ones(7, 16)
    before = x.clone()
    opt = torch.optim.Adam([x.requires_grad_()])
    with pytest.raises(IntegrityError, match=r"run\.ckpt: does not fit this run .*x_syn"):
        load_checkpoint(ckpt, cond.get_params(), graph, x, None, opt, None)
    assert torch.equal(x.detach(), before)


def test_a_full_disk_keeps_the_previous_checkpoint(graph, tmp_path, monkeypatch):
    ckpt = tmp_path / "run.ckpt"
    interrupted(graph, ckpt, epoch=2)  # checkpoint of epoch 1
    before = ckpt.read_bytes()

    def full(fd, data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(integrity, "_write_all", full)
    with pytest.raises(WriteError, match=r"could not write .*run\.ckpt: No space left on device \(ENOSPC\)"):
        make_condenser("srgm", **PARAMS).condense(graph, checkpoint=ckpt, resume=True)
    assert ckpt.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["run.ckpt"]
    monkeypatch.undo()
    ref = make_condenser("srgm", **PARAMS).condense(graph)
    out = make_condenser("srgm", **PARAMS).condense(graph, checkpoint=ckpt, resume=True)  # resumes from epoch 1
    for m in ref.modalities:
        assert torch.equal(out.features[m], ref.features[m])
    assert torch.equal(out.adj, ref.adj)


@pytest.mark.parametrize("mutate, match", [
    (lambda r: r["best"].update(val_acc=None), r"best"),
    (lambda r: r.update(epoch=-1), r"epoch -1"),
    (lambda r: r.update(records=r["records"][:-1]), r"records do not match"),
    (lambda r: r["optim"]["opt_a"]["keys"]["0"].remove("exp_avg"), r"Adam needs"),
    (lambda r: r["optim"]["opt_a"]["param_groups"][0].update(amsgrad=True), r"settings differ"),
    (lambda r: r.pop("optim"), r"KeyError: 'optim'"),
])
def test_a_resigned_checkpoint_record_that_does_not_fit_is_refused(graph, tmp_path, mutate, match):
    import json

    from safetensors import safe_open

    ckpt = tmp_path / "run.ckpt"
    interrupted(graph, ckpt)
    with safe_open(str(ckpt), framework="pt") as fh:
        tensors = {k: fh.get_tensor(k) for k in fh.keys()}
        record = json.loads(fh.metadata()["magkit"])
    mutate(record)
    integrity.write_safetensors(ckpt, tensors, record)
    with pytest.raises(IntegrityError, match=rf"run\.ckpt: does not fit this run .*{match}") as err:
        make_condenser("srgm", **PARAMS).condense(graph, checkpoint=ckpt, resume=True)
    assert "\n" not in str(err.value)
