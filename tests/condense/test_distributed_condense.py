"""Distributed condensation on 2 gloo processes on CPU (spawned inside pytest, file:// rendezvous).

The real side of the matching (class-wise gradients over the real training nodes) is sharded over the ranks
and all-reduced; the synthetic graph is updated identically on every rank. One spawn (module fixture) runs
the scenarios and saves what each rank ends with; the tests assert:

* both ranks end with bitwise identical condensed graphs (SGC and GCN condensation backbones, checkpoints);
* the distributed condensation matches the single-process one: X' within 1e-4 (max abs; the class sums
  are added in another order, measured ~1e-6) and the GCN accuracy of S on the real test split within 0.02
  (measured 0.0);
* a run interrupted after a checkpoint and resumed under 2 processes equals the uninterrupted 2-process run;
* the real-side gradient assembled from the two shards equals the single-process gradient.
"""

from __future__ import annotations

import copy
import os

import pytest
import torch
from typer.testing import CliRunner

from magkit import distributed as D
from magkit.cli import app
from magkit.condense import FunctionalNet, evaluate_condensed, make_condenser
from magkit.exceptions import ConfigError

WORLD = 2
X_TOLERANCE = 1e-4
ACC_TOLERANCE = 0.02
SGC = {"ratio": 0.05, "epochs": 6, "eval_every": 3, "eval_epochs": 40, "seed": 0}
GCN = {"ratio": 0.05, "epochs": 3, "eval_every": 3, "eval_epochs": 40, "seed": 0, "backbone": "gcn", "hidden": 16,
       "outer_steps": 4, "inner_steps": 2, "real_batch": 40}


def graph():
    from magkit.data.datasets import load_dataset

    return load_dataset("synthetic:balanced", num_nodes=600, num_classes=4, split="magb")


def _s(c) -> dict:
    return {"x": torch.cat([c.features[m] for m in c.modalities], 1), "adj": c.adj.clone()}


def _worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    D.init(rank, world, init_method=f"file://{init_file}")
    g = graph()
    res = {}
    res["sgc"] = _s(make_condenser("gcond", **SGC, distributed=True).condense(g))
    res["gcn"] = _s(make_condenser("gcond-x", **GCN, distributed=True).condense(g))
    ck = os.path.join(out_dir, "ckpt.safetensors")
    make_condenser("gcond", **{**SGC, "epochs": 3}, checkpoint_every=3, distributed=True).condense(g, checkpoint=ck)
    res["resumed"] = _s(make_condenser("gcond", **SGC, checkpoint_every=3, distributed=True)
                        .condense(g, checkpoint=ck, resume=True))
    # the real-side gradients of one step, sharded and all-reduced
    cond = make_condenser("gcond", **SGC, distributed=True)
    prob = cond.prepare(g)
    net = FunctionalNet("sgc", prob.d, 16, g.num_classes, torch.Generator().manual_seed(1))
    res["grad"] = prob.real_grads(net, torch.Generator().manual_seed(2))
    torch.save(res, os.path.join(out_dir, f"rank{rank}.pt"))
    D.cleanup()


@pytest.fixture(scope="module")
def dist_runs(tmp_path_factory, spawn_ranks):
    return spawn_ranks(_worker, tmp_path_factory.mktemp("ddp_condense"), WORLD)


@pytest.fixture(scope="module")
def single():
    g = graph()
    return {"sgc": make_condenser("gcond", **SGC).condense(g), "gcn": make_condenser("gcond-x", **GCN).condense(g)}


def test_ranks_end_with_identical_condensed_graphs(dist_runs):
    a, b = dist_runs
    for key in ("sgc", "gcn", "resumed"):
        assert torch.equal(a[key]["x"], b[key]["x"]), key
        assert torch.equal(a[key]["adj"], b[key]["adj"]), key


def test_sharded_real_gradient_equals_single_process():
    g = graph()
    cond = make_condenser("gcond", **SGC)
    prob = cond.prepare(g)
    net = FunctionalNet("sgc", prob.d, 16, g.num_classes, torch.Generator().manual_seed(1))
    full = prob.real_grads(net, torch.Generator().manual_seed(2))
    # the two shards' partial sums, added by hand, are what the all-reduce returns
    parts = []
    for r in range(WORLD):
        shard = copy.copy(prob)
        shard.rank = r
        shard.class_local = {k: D.shard(v, r, WORLD, pad=False) for k, v in prob.class_idx.items()}
        shard.world = 1  # compute this shard's partial sum without a process group
        parts.append(shard.real_grads(net, torch.Generator().manual_seed(2)))
    assert torch.allclose(parts[0] + parts[1], full, atol=1e-6)
    assert not torch.allclose(parts[0], full, atol=1e-3)  # a shard alone is not the class gradient


def test_distributed_gradient_matches_single_process(dist_runs):
    g = graph()
    cond = make_condenser("gcond", **SGC)
    prob = cond.prepare(g)
    net = FunctionalNet("sgc", prob.d, 16, g.num_classes, torch.Generator().manual_seed(1))
    full = prob.real_grads(net, torch.Generator().manual_seed(2))
    assert torch.allclose(dist_runs[0]["grad"], full, atol=1e-6)


@pytest.mark.parametrize("key", ["sgc", "gcn"])
def test_distributed_condensation_matches_single_process(dist_runs, single, key):
    s = single[key]
    x1 = torch.cat([s.features[m] for m in s.modalities], 1)
    diff = float((dist_runs[0][key]["x"] - x1).abs().max())
    assert diff <= X_TOLERANCE, diff
    g = graph()
    from magkit.condense.artifact import CondensedGraph

    xs, start = {}, 0
    for m in s.modalities:
        w = s.features[m].size(1)
        xs[m] = dist_runs[0][key]["x"][:, start:start + w]
        start += w
    d = CondensedGraph(xs, dist_runs[0][key]["adj"], s.y, num_classes=s.num_classes, modalities=s.modalities,
                       meta=dict(s.meta))
    acc_d = evaluate_condensed(d, g, "gcn", runs=1, epochs=60)["gcn"]["test_acc"][0]
    acc_s = evaluate_condensed(s, g, "gcn", runs=1, epochs=60)["gcn"]["test_acc"][0]
    assert abs(acc_d - acc_s) <= ACC_TOLERANCE, (acc_d, acc_s)
    assert acc_s > 0.5  # 4 classes: well above chance


def test_resumed_distributed_run_equals_uninterrupted(dist_runs):
    assert torch.equal(dist_runs[0]["resumed"]["x"], dist_runs[0]["sgc"]["x"])


def test_condense_distributed_without_torchrun_is_one_clear_line(tmp_path, monkeypatch):
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(var, raising=False)
    r = CliRunner().invoke(app, ["condense", "--method", "gcond-x", "--data", "synthetic", "--out",
                                 str(tmp_path / "s.safetensors"), "--distributed"])
    assert r.exit_code != 0
    assert "torchrun" in r.output and "Traceback" not in r.output


def test_condense_distributed_refuses_coresets(tmp_path):
    r = CliRunner().invoke(app, ["condense", "--method", "herding", "--data", "synthetic", "--out",
                                 str(tmp_path / "s.safetensors"), "--distributed"])
    assert r.exit_code != 0
    assert "coreset" in r.output


def test_distributed_true_without_process_group_raises():
    with pytest.raises(ConfigError, match="torchrun"):
        make_condenser("gcond-x", **SGC, distributed=True).condense(graph())


def test_bad_distributed_value():
    with pytest.raises(ConfigError, match="distributed"):
        make_condenser("gcond-x", distributed="yes").condense(graph())


def test_device_cpu_is_the_default_path():
    g = graph()
    a = make_condenser("gcond", **SGC).condense(g)
    b = make_condenser("gcond", **SGC, device="cpu").condense(g)
    assert torch.equal(a.features["text"], b.features["text"]) and torch.equal(a.adj, b.adj)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without CUDA")
def test_device_cuda_without_cuda_is_one_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="CUDA is not available"):
        make_condenser("gcond-x", **SGC, device="cuda").condense(graph())
    r = CliRunner().invoke(app, ["condense", "--method", "gcond-x", "--data", "synthetic", "--out",
                                 str(tmp_path / "s.safetensors"), "--device", "cuda"])
    assert r.exit_code != 0 and "CUDA is not available" in r.output and "Traceback" not in r.output


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_condensation_matches_cpu():
    g = graph()
    a = make_condenser("gcond", **SGC).condense(g)
    b = make_condenser("gcond", **SGC, device="cuda").condense(g)
    assert b.features["text"].device.type == "cpu"  # S comes back on the CPU
    assert float((a.features["text"] - b.features["text"]).abs().max()) < 1e-3
    ra = evaluate_condensed(a, g, "gcn", runs=1, epochs=60)["gcn"]["test_acc"][0]
    rb = evaluate_condensed(b, g, "gcn", runs=1, epochs=60, device="cuda")["gcn"]["test_acc"][0]
    assert abs(ra - rb) <= ACC_TOLERANCE
