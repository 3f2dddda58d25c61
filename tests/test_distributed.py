"""Data-parallel training (DDP) on 2 gloo processes on CPU, spawned inside pytest with a file:// rendezvous.

One spawn (module fixture ``ddp``) runs every distributed scenario and saves what each rank ends with; the
tests below assert on it:

* the all-reduced full-batch gradient equals the single-process gradient (one plain-SGD step from the same
  initialisation; 183 training nodes, odd, so the shards differ in size and the ``W |S_r| / N`` scaling
  matters: measured relative error 1.8e-7 with it, 1.5e-3 without it; asserted < 1e-5);
* gcn-early (full batch), sage-early (mini-batch) and GraphMNL end with bitwise identical parameters on both
  ranks; mini-batch DDP repeats bitwise from the same seed;
* full-batch DDP matches the single-process fit: |Δ test acc| <= 0.02 asserted for gcn-early and GraphMNL
  (measured: 0.0 for both; gcn-early has the same best epoch and per-epoch losses within ~1e-7);
* ranks holding different graphs fail with one clear error instead of averaging unrelated gradients.

Shard helper properties and the CLI's error without torchrun's variables need no processes.
"""

from __future__ import annotations

import json
import os

import pytest
import torch
from typer.testing import CliRunner

from magkit import distributed as D
from magkit.cli import app
from magkit.exceptions import ConfigError
from magkit.methods import create
from magkit.methods.baselines import FusionClassifier

WORLD = 2
GCN = {"hidden": 16, "epochs": 60, "patience": 20, "seed": 0}
SAGE = {"hidden": 16, "epochs": 20, "patience": 10, "seed": 0, "batch_size": 64, "fanouts": (5, 5)}
MNL = {"hidden": 16, "epochs": 80, "patience": 30, "seed": 0, "warmup": 5}
ACC_TOLERANCE = 0.02  # |DDP − single-process| test accuracy, full batch (measured 0.0)
MNL_MB = {**MNL, "batch_size": 32, "fanouts": (5, 5)}
MNL_FLOOR = 0.75  # GraphMNL DDP test accuracy (measured 0.90, as single-process); the majority class ≈ 0.3


def small_graph(seed: int = 0, num_nodes: int = 305):
    """305 nodes, 4 classes, 16-d text + image: 183 training nodes (odd, so the two shards differ in size)."""
    from magkit.data.synthetic import make_synthetic_mag

    return make_synthetic_mag(num_nodes, 4, homophily=0.85, seed=seed, profile="balanced", dims=16, avg_degree=6)


class SGDFusion(FusionClassifier):
    """gcn-early trained with plain SGD: one step moves the parameters by minus ``lr`` times the gradient."""

    def _optimizer(self, model):
        return torch.optim.SGD(model.parameters(), lr=self.params["lr"])


def _state(est) -> dict:
    return {k: v.detach().clone() for k, v in est.model_.state_dict().items()}


def _worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    D.init(rank, world, init_method=f"file://{init_file}")
    g = small_graph()
    res: dict = {}
    # one step of SGD from the same initialisation, DDP and single-process (same dropout masks)
    # (a large lr makes the step, not the float32 rounding of the parameters, dominate the difference)
    lr = 1e4
    sgd = {"backbone": "gcn", "fusion": "early", "hidden": 16, "epochs": 1, "seed": 0, "weight_decay": 0.0}
    init = _state(SGDFusion(**sgd, lr=1e-30).fit(g))  # lr≈0: the initial parameters
    single = _state(SGDFusion(**sgd, lr=lr).fit(g))
    ddp = _state(SGDFusion(**sgd, lr=lr, distributed=True).fit(g))
    res["grad_single"] = {k: (init[k] - single[k]) / lr for k in init}
    res["grad_ddp"] = {k: (init[k] - ddp[k]) / lr for k in init}
    est = create("gcn-early", **GCN, distributed=True).fit(g)
    res["gcn"] = {"state": _state(est), "test": est.score(g)["acc"], "best_epoch": est.history_.best_epoch,
                  "losses": est.history_.series("loss"), "info": est.distributed_}
    est = create("sage-early", **SAGE, distributed=True).fit(g)
    again = create("sage-early", **SAGE, distributed=True).fit(g)
    res["sage"] = {"state": _state(est), "again": _state(again), "test": est.score(g)["acc"],
                   "epochs": len(est.history_.epochs)}
    est = create("graphmnl", **MNL, distributed=True).fit(g)
    res["graphmnl"] = {"state": _state(est), "test": est.score(g)["acc"],
                       "guided": max(est.history_.series("guide"))}
    # mini-batch GraphMNL: each rank its shard of labelled seeds and its own guided seeds, the state replicated
    est = create("graphmnl", **MNL_MB, distributed=True).fit(g)
    again = create("graphmnl", **MNL_MB, distributed=True).fit(g)
    res["graphmnl_mb"] = {"state": _state(est), "again": _state(again), "test": est.score(g)["acc"],
                          "f1": est.score(g)["f1"], "guide": est.history_.series("guide"),
                          "loss": est.history_.series("loss")}
    # different data on the two ranks: one clear error on both
    try:
        create("gcn-early", **GCN, distributed=True).fit(small_graph(seed=rank))
        res["mismatch"] = None
    except ConfigError as exc:
        res["mismatch"] = str(exc)
    torch.save(res, os.path.join(out_dir, f"rank{rank}.pt"))
    D.cleanup()


@pytest.fixture(scope="module")
def ddp(tmp_path_factory, spawn_ranks):
    """What each of the 2 ranks ended with: ``[rank0_results, rank1_results]``."""
    return spawn_ranks(_worker, tmp_path_factory.mktemp("ddp"), WORLD)


def _assert_same_state(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), f"parameter {k} differs between ranks"


# ---------------------------------------------------------------------- DDP fits
def test_full_batch_ddp_gradient_equals_single_process_gradient(ddp):
    g = small_graph()
    assert g.split_index("train").numel() % 2 == 1  # uneven shards: the W |S_r| / N scaling is exercised
    for r in ddp:
        for k, single in r["grad_single"].items():
            rel = (r["grad_ddp"][k] - single).abs().max() / single.abs().max().clamp(min=1e-12)
            assert rel < 1e-5, f"{k}: relative gradient error {rel:.2e}"


def test_gcn_full_batch_ranks_end_identical(ddp):
    _assert_same_state(ddp[0]["gcn"]["state"], ddp[1]["gcn"]["state"])
    assert ddp[0]["gcn"]["test"] == ddp[1]["gcn"]["test"]
    assert ddp[0]["gcn"]["info"] == {"world_size": 2, "backend": "gloo", "rank": 0}
    assert ddp[1]["gcn"]["info"]["rank"] == 1


def test_gcn_full_batch_ddp_matches_single_process(ddp):
    g = small_graph()
    torch.set_num_threads(1)
    est = create("gcn-early", **GCN).fit(g)
    acc = est.score(g)["acc"]
    print(f"single {acc:.4f} ddp {ddp[0]['gcn']['test']:.4f}")
    assert abs(ddp[0]["gcn"]["test"] - acc) <= ACC_TOLERANCE
    # in fact the same trajectory up to float rounding: same dropout masks, same gradient
    assert ddp[0]["gcn"]["best_epoch"] == est.history_.best_epoch
    losses = est.history_.series("loss")
    assert len(ddp[0]["gcn"]["losses"]) == len(losses)
    assert max(abs(a - b) for a, b in zip(ddp[0]["gcn"]["losses"], losses)) < 1e-4


def test_graphmnl_mini_batch_ddp(ddp):
    """Data-parallel mini-batch GraphMNL: the ranks end with identical parameters, a fit repeats bitwise, the
    guidance term runs after warm-up, the quality floor holds, and it is not the single-process fit (each rank
    draws its own guided seeds and neighbourhoods, and the effective batch is twice as large)."""
    r0, r1 = ddp[0]["graphmnl_mb"], ddp[1]["graphmnl_mb"]
    _assert_same_state(r0["state"], r1["state"])
    _assert_same_state(r0["state"], r0["again"])
    assert r0["test"] == r1["test"] and r0["loss"] == r1["loss"]  # the logged terms are all-reduced
    warm = MNL_MB["warmup"]
    assert all(v == 0.0 for v in r0["guide"][:warm]) and any(v > 0.0 for v in r0["guide"][warm:])
    g = small_graph()
    torch.set_num_threads(1)
    single = create("graphmnl", **MNL_MB).fit(g)
    print(f"graphmnl mini-batch test acc: ddp {r0['test']:.4f} (F1 {r0['f1']:.4f}), "
          f"single process {single.score(g)['acc']:.4f}")
    assert r0["test"] >= MNL_FLOOR
    assert abs(r0["test"] - single.score(g)["acc"]) <= 0.05
    assert r0["loss"] != single.history_.series("loss")[: len(r0["loss"])]


def test_sage_mini_batch_ranks_end_identical_and_repeat(ddp):
    _assert_same_state(ddp[0]["sage"]["state"], ddp[1]["sage"]["state"])
    _assert_same_state(ddp[0]["sage"]["state"], ddp[0]["sage"]["again"])  # shuffles from (seed, epoch)
    print(f"sage-early mini-batch ddp test acc {ddp[0]['sage']['test']:.4f}")
    assert ddp[0]["sage"]["test"] == ddp[1]["sage"]["test"] >= 0.8  # measured 0.98
    assert ddp[0]["sage"]["epochs"] == ddp[1]["sage"]["epochs"]


def test_graphmnl_ddp_ranks_end_identical_above_floor(ddp):
    _assert_same_state(ddp[0]["graphmnl"]["state"], ddp[1]["graphmnl"]["state"])
    assert ddp[0]["graphmnl"]["guided"] > 0  # the guidance term (branches used twice in one step) ran
    g = small_graph()
    torch.set_num_threads(1)
    single = create("graphmnl", **MNL).fit(g).score(g)["acc"]
    print(f"graphmnl test acc: ddp {ddp[0]['graphmnl']['test']:.4f}, single process {single:.4f}")
    assert ddp[0]["graphmnl"]["test"] >= MNL_FLOOR
    assert abs(ddp[0]["graphmnl"]["test"] - single) <= ACC_TOLERANCE


def test_ranks_with_different_graphs_fail_clearly(ddp):
    for r in ddp:
        assert r["mismatch"] is not None and "the ranks disagree on the graph" in r["mismatch"]


# ---------------------------------------------------------------------- shard helper
@pytest.mark.parametrize("n", [0, 1, 2, 5, 7, 100, 183])
@pytest.mark.parametrize("world", [1, 2, 3, 8])
def test_shard_properties(n, world):
    idx = torch.randperm(1000, generator=torch.Generator().manual_seed(n))[:n]
    exact = [D.shard(idx, r, world, pad=False) for r in range(world)]
    assert sorted(torch.cat(exact).tolist()) == sorted(idx.tolist())  # disjoint cover
    assert max(s.numel() for s in exact) - min(s.numel() for s in exact) <= 1
    padded = [D.shard(idx, r, world) for r in range(world)]
    sizes = {s.numel() for s in padded}
    assert sizes == {D.shard_size(n, world)}  # equal sizes: every rank runs the same number of steps
    flat = torch.cat(padded)
    assert set(flat.tolist()) == set(idx.tolist())  # cover
    if n >= world:  # the wrap-around repeats only the first ceil(n/W) W − n indices, once each
        counts = torch.bincount(flat, minlength=1000)
        assert counts.max() <= 2 and int((counts == 2).sum()) == D.shard_size(n, world) * world - n
    assert torch.equal(D.shard(idx, 0, world), padded[0])  # deterministic


def test_shard_rejects_bad_rank():
    with pytest.raises(ConfigError, match=r"rank: 2; allowed: 0 <= rank < world \(2\)"):
        D.shard(torch.arange(4), 2, 2)


def test_helpers_are_no_ops_in_one_process():
    assert not D.is_distributed() and D.rank() == 0 and D.world_size() == 1 and D.is_rank0()
    assert D.all_reduce_mean({"a": 1.5}) == {"a": 1.5}
    assert torch.equal(D.all_reduce_sum(torch.ones(3)), torch.ones(3))
    assert D.describe() == {"world_size": 1, "backend": None}
    assert D.derive_seed(0, 1) == D.derive_seed(0, 1) != D.derive_seed(1, 0)


# ---------------------------------------------------------------------- errors without torchrun
@pytest.fixture
def no_torchrun_env(monkeypatch):
    for k in D.TORCHRUN_ENV:
        monkeypatch.delenv(k, raising=False)


def test_fit_distributed_without_torchrun_is_one_clear_line(no_torchrun_env):
    res = CliRunner().invoke(app, ["fit", "--method", "gcn-early", "--seeds", "0", "--distributed"])
    assert res.exit_code == 2, res.output
    text = " ".join(res.output.split())  # rich wraps at the terminal width
    assert text.startswith("error: distributed: --distributed needs the environment torchrun sets (missing RANK, "
                           "WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT)")
    assert text.endswith("launch with: torchrun --nproc_per_node=2 -m magkit.cli fit ... --distributed")
    assert "Traceback" not in res.output


def test_estimator_distributed_without_torchrun_raises(no_torchrun_env):
    with pytest.raises(ConfigError, match="needs the environment torchrun sets"):
        create("gcn-early", epochs=1, distributed=True).fit(small_graph())
    with pytest.raises(ConfigError, match=r"FusionClassifier: distributed='yes' is not a bool or one of 'auto'$"):
        create("gcn-early", epochs=1, distributed="yes").fit(small_graph())


def test_fit_device_option(tmp_path):
    res = CliRunner().invoke(app, ["fit", "--method", "gcn-early", "--device", "tpu"])
    assert res.exit_code == 2 and "--device: 'tpu'; allowed: auto, cpu, cuda" in " ".join(res.output.split())
    res = CliRunner().invoke(app, ["fit", "-m", "mlp-early", "--seeds", "0", "--device", "cpu", "--set", "epochs=3",
                                   "--out", str(tmp_path)])
    assert res.exit_code == 0, res.output
    payload = json.loads((tmp_path / "results.json").read_text())
    assert payload["config"]["device"] == "cpu" and payload["config"]["distributed"] is False
    assert payload["distributed"] == {"world_size": 1, "backend": None}
