"""Stacked runs and scored-node readouts of the condensed-graph evaluator's fast protocol (magkit.condense.batched),
and the default standard protocol's runs, equal to the lone runs bit for bit."""

from __future__ import annotations

from functools import partial

import pytest
import torch

from magkit.condense import Coreset, evaluate_condensed, graph_views, train_on_condensed
from magkit.condense.batched import BATCHED, Readout, _RunStack, train_runs
from magkit.condense.evaluate import FAST_OPTIONS, View, _build, _condensed_inputs, _forward
from magkit.data.datasets import load_dataset
from magkit.exceptions import ConfigError
from magkit.functional.ops import dropout

NOT_TIMES = ("val_acc", "val_f1", "best_epoch", "epochs_run", "test_acc", "test_f1")
#: the opt-in fast protocol (stacked runs, scored-node readout)
fast_eval = partial(evaluate_condensed, protocol="fast")


@pytest.fixture(scope="module")
def graph():
    return load_dataset("synthetic:balanced", num_nodes=600, num_classes=4, split="magb")


@pytest.fixture(scope="module")
def condensed(graph):
    return Coreset(method="random", ratio=0.05).condense(graph)


def _models(kind: str, d: int, layers: int, seeds: range) -> list[torch.nn.Module]:
    out = []
    for s in seeds:
        torch.manual_seed(s)
        out.append(_build(kind, d, 16, 4, 0.5, layers))
    return out


@pytest.mark.parametrize("setting", ["transductive", "inductive"])
@pytest.mark.parametrize(("kind", "layers"), [("gcn", 2), ("gcn", 3), ("sage", 2), ("sage", 3), ("sgc", 2),
                                               ("mlp", 2)])
def test_readout_on_the_scored_nodes_equals_the_whole_view_forward(graph, setting, kind, layers):
    view = graph_views(graph, setting)["val"]
    models = _models(kind, view.x.size(1), layers, range(3))
    stack = _RunStack(kind, models, 0.5).eval()
    ro = Readout(kind, view, layers)
    got = stack.readout(ro)
    assert got.shape == (3, view.idx.numel(), 4)
    for r, m in enumerate(models):
        m.eval()
        with torch.no_grad():
            want = _forward(m, kind, view.x, view.structure(kind))[view.idx]
        torch.testing.assert_close(got[r], want, atol=1e-5, rtol=1e-4)
    # a subset of the runs reads the same logits
    torch.testing.assert_close(stack.readout(ro, torch.tensor([2, 0])), got[[2, 0]])
    if kind in ("gcn", "sage"):  # only the receptive field is read: fewer rows than the view for a 2-layer net
        assert ro.x0.size(0) <= view.num_nodes
        assert ro.x0.size(0) >= view.idx.numel()


@pytest.mark.parametrize("kind", ["gcn", "sage"])
def test_bfloat16_validation_reads_close_logits_and_reports_float32_scores(graph, condensed, kind):
    view = graph_views(graph)["val"]
    stack = _RunStack(kind, _models(kind, view.x.size(1), 2, range(2)), 0.5).eval()
    ro = Readout(kind, view)
    exact, low = stack.readout(ro), stack.readout(ro, dtype=torch.bfloat16)
    assert low.dtype == torch.float32
    assert not torch.equal(exact, low)  # the first product did read bfloat16 inputs
    torch.testing.assert_close(low, exact, atol=0.05 * float(exact.abs().max()), rtol=0.05)
    assert (low.argmax(-1) == exact.argmax(-1)).float().mean() > 0.95
    views = graph_views(graph)
    a = fast_eval(condensed, graph, kind, runs=2, epochs=60, views=views, val_dtype="bfloat16")[kind]["runs"]
    b = fast_eval(condensed, graph, kind, runs=2, epochs=60, views=views, val_dtype="float32")[kind]["runs"]
    for x, y in zip(a, b):
        # the selected state is scored in float32: with the same selection, the same reported accuracies
        if x["best_epoch"] == y["best_epoch"]:
            assert (x["val_acc"], x["test_acc"]) == (y["val_acc"], y["test_acc"])
        assert x["test_acc"] == pytest.approx(y["test_acc"], abs=0.05)


@pytest.mark.parametrize(("kind", "layers"), [("gcn", 2), ("gcn", 3), ("sage", 2), ("sage", 3), ("sgc", 2),
                                               ("mlp", 2), ("mlp", 3)])
def test_written_out_gradients_equal_autograd(graph, condensed, kind, layers):
    views = graph_views(graph)
    xs, structure = _condensed_inputs(condensed, kind, views["val"])
    adj = structure.to_dense() if kind in ("gcn", "sage") else None
    inp = structure if kind == "sgc" else xs
    stack = _RunStack(kind, _models(kind, xs.size(1), layers, range(3)), 0.5).train()
    for runs in (None, torch.tensor([2, 0])):
        n_runs = 3 if runs is None else 2
        gens = [torch.Generator().manual_seed(10 + r) for r in range(n_runs)]
        states = [g.get_state() for g in gens]
        stack.zero_grad()
        out = stack(inp, adj, gens, runs)
        loss = torch.nn.functional.cross_entropy(out.reshape(-1, 4), condensed.y.repeat(n_runs), reduction="sum")
        (loss / condensed.y.numel()).backward()
        want = [p.grad.clone() for p in stack.parameters()]
        for g, st in zip(gens, states):
            g.set_state(st)
        stack.gradients(inp, adj, condensed.y, gens, runs)
        for got, exp in zip([p.grad for p in stack.parameters()], want):
            torch.testing.assert_close(got, exp, atol=1e-5, rtol=1e-4)
        if runs is not None:  # a run left out gets no gradient
            assert all(float(p.grad[1].abs().max()) == 0.0 for p in stack.parameters())
        assert any(float(p.grad.abs().max()) > 0.0 for p in stack.parameters())


def test_each_stacked_run_starts_from_its_own_seeded_initialisation(graph):
    d = graph_views(graph)["val"].x.size(1)
    stack = _RunStack("gcn", _models("gcn", d, 2, range(5, 8)), 0.5)
    for r, seed in enumerate(range(5, 8)):
        lone = _models("gcn", d, 2, [seed])[0]
        torch.testing.assert_close(stack.w[0][r], lone.convs[0].lin.weight.T, atol=0, rtol=0)
    assert not torch.equal(stack.w[0][0], stack.w[0][1])


def test_stacked_dropout_masks_are_the_lone_runs_masks():
    stack = _RunStack("mlp", _models("mlp", 9, 2, [0]), 0.5).train()
    x = torch.randn(7, 9)
    torch.manual_seed(3)
    want = [dropout(x, 0.5, True), dropout(x, 0.5, True)]
    torch.manual_seed(3)
    g = torch.Generator()
    g.set_state(torch.get_rng_state())
    got = [stack._drop(x, [g])[0], stack._drop(x, [g])[0]]
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, atol=0, rtol=0)
    assert not torch.equal(got[0], got[1])


@pytest.mark.parametrize("kind", BATCHED)
def test_stacked_runs_follow_the_lone_runs(graph, condensed, kind):
    views = graph_views(graph)
    res = fast_eval(condensed, graph, kind, runs=2, seed=4, epochs=60, views=views, patience=0,
                             val_dtype="float32")[kind]
    for r, got in enumerate(res["runs"]):
        lone = train_on_condensed(condensed, kind, views["val"], views["test"], epochs=60, seed=4 + r)
        assert got["best_epoch"] == lone["best_epoch"]
        assert got["val_acc"] == pytest.approx(lone["val_acc"], abs=0.011)
        assert got["test_acc"] == pytest.approx(lone["test_acc"], abs=0.011)


def test_same_seed_same_runs_and_runs_differ(graph, condensed):
    a = fast_eval(condensed, graph, ["gcn", "sage"], runs=3, seed=0, epochs=60)
    b = fast_eval(condensed, graph, ["gcn", "sage"], runs=3, seed=0, epochs=60)
    for k in ("gcn", "sage"):
        assert [{m: r[m] for m in NOT_TIMES} for r in a[k]["runs"]] == [{m: r[m] for m in NOT_TIMES} for r in b[k]["runs"]]
        outcomes = {(r["best_epoch"], r["val_acc"], r["test_acc"]) for r in a[k]["runs"]}
        assert len(outcomes) > 1, k  # each run has its own initialisation and dropout


def test_selection_reads_only_the_validation_labels(graph, condensed):
    views = graph_views(graph)
    t = views["test"]
    y = t.y.clone()
    y[t.idx] = y[t.idx][torch.randperm(t.idx.numel(), generator=torch.Generator().manual_seed(0))]
    permuted = {**views, "test": View(t.x, t.edge_index, y, t.idx)}
    for kind in BATCHED:
        a = fast_eval(condensed, graph, kind, runs=2, epochs=60, views=views)[kind]["runs"]
        b = fast_eval(condensed, graph, kind, runs=2, epochs=60, views=permuted)[kind]["runs"]
        assert [(r["best_epoch"], r["val_acc"]) for r in a] == [(r["best_epoch"], r["val_acc"]) for r in b]
        assert [r["test_acc"] for r in a] != [r["test_acc"] for r in b]


def test_patience_counts_validations_and_matches_the_lone_runs(graph, condensed):
    views = graph_views(graph)
    xs, structure = _condensed_inputs(condensed, "sgc", views["val"])
    runs = train_runs("sgc", xs, structure, condensed.y, views["val"], views["test"], num_classes=4, runs=3,
                      epochs=200, eval_every=5, patience=2, seed=0, lr=0.05, val_dtype="float32")
    stopped = 0
    for r, got in enumerate(runs):
        assert got["best_epoch"] % 5 == 0 or got["best_epoch"] == 200
        # stops 2 validations after its best, or runs to the end
        assert got["epochs_run"] in (got["best_epoch"] + 10, 200)
        stopped += got["epochs_run"] < 200
        lone = train_on_condensed(condensed, "sgc", views["val"], views["test"], epochs=200, eval_every=5,
                                  patience=2, seed=r, lr=0.05)
        assert (got["best_epoch"], got["epochs_run"]) == (lone["best_epoch"], lone["epochs_run"])
    assert stopped > 0
    full = train_runs("sgc", xs, structure, condensed.y, views["val"], None, num_classes=4, runs=2, epochs=30,
                      eval_every=5, patience=None)
    assert [r["epochs_run"] for r in full] == [30, 30]
    assert "test_acc" not in full[0]


def test_train_runs_refuses_bad_arguments(graph, condensed):
    views = graph_views(graph)
    xs, structure = _condensed_inputs(condensed, "gcn", views["val"])
    with pytest.raises(ConfigError, match="patience: 0; allowed"):
        train_runs("gcn", xs, structure, condensed.y, views["val"], num_classes=4, patience=0)
    with pytest.raises(ConfigError, match="runs: 0; allowed"):
        train_runs("gcn", xs, structure, condensed.y, views["val"], num_classes=4, runs=0)
    with pytest.raises(ConfigError, match="backbone: 'gat'; allowed: gcn, sgc, sage, mlp"):
        train_runs("gat", xs, structure, condensed.y, views["val"], num_classes=4)
    with pytest.raises(ConfigError, match="val_dtype: 'half'; allowed: auto, float32, bfloat16"):
        fast_eval(condensed, graph, "gcn", runs=1, val_dtype="half")


@pytest.mark.parametrize("kind", ["gcn", "sage"])
def test_inductive_runs_with_patience_follow_the_lone_runs(graph, condensed, kind):
    views = graph_views(graph, "inductive")  # val and test are different subgraphs: one readout each
    res = fast_eval(condensed, graph, kind, runs=3, seed=2, epochs=120, views=views, eval_every=5,
                             patience=3, val_dtype="float32")[kind]["runs"]
    assert len({r["epochs_run"] for r in res} | {120}) > 1  # some run stopped early while others trained on
    for r, got in enumerate(res):
        lone = train_on_condensed(condensed, kind, views["val"], views["test"], epochs=120, eval_every=5,
                                  patience=3, seed=2 + r)
        assert (got["best_epoch"], got["epochs_run"]) == (lone["best_epoch"], lone["epochs_run"])
        assert got["val_acc"] == pytest.approx(lone["val_acc"], abs=0.011)
        assert got["test_acc"] == pytest.approx(lone["test_acc"], abs=0.011)


def test_auto_precision_is_float32_without_native_bfloat16(graph, condensed, monkeypatch):
    import magkit.condense.batched as batched

    views = graph_views(graph)
    keys = ("val_acc", "test_acc", "best_epoch", "epochs_run")

    def run(val_dtype: str) -> list[tuple]:
        res = fast_eval(condensed, graph, "gcn", runs=2, epochs=60, views=views, val_dtype=val_dtype)
        return [tuple(r[k] for k in keys) for r in res["gcn"]["runs"]]

    calls = []
    monkeypatch.setattr(batched, "native_bfloat16", lambda device: calls.append(device) or False)
    auto_plain = run("auto")
    assert calls  # "auto" asked the device
    monkeypatch.setattr(batched, "native_bfloat16", lambda device: True)
    auto_native = run("auto")
    assert auto_plain == run("float32")
    assert auto_native == run("bfloat16")


def test_readout_of_fewer_runs_reuses_the_kept_output(graph):
    view = graph_views(graph)["val"]
    stack = _RunStack("gcn", _models("gcn", view.x.size(1), 2, range(4)), 0.5).eval()
    ro = Readout("gcn", view)
    full = stack.readout(ro)
    for on in ([3, 1, 0], [2], [0, 1]):
        torch.testing.assert_close(stack.readout(ro, torch.tensor(on)), full[on])
    assert len(ro._buffers) == 1 and ro._buffers[(torch.float32, 16)].size(0) == 4


def test_evaluation_refuses_bad_eval_every_patience_and_dropout(graph, condensed):
    for kw, msg in (({"eval_every": 0}, "eval_every: 0; allowed: an integer >= 1"),
                    ({"patience": -1}, r"patience: -1; allowed: an integer >= 1 \(validations\) or 0 \(no early stop\)"),
                    ({"patience": 2.5}, "patience: 2.5; allowed: an integer >= 1"),
                    ({"patience": True}, "patience: True; allowed: an integer >= 1")):
        with pytest.raises(ConfigError, match=msg):
            fast_eval(condensed, graph, "gat", runs=1, **kw)  # refused before any training
    views = graph_views(graph)
    xs, structure = _condensed_inputs(condensed, "gcn", views["val"])
    for kw, msg in (({"eval_every": 0}, "eval_every: 0; allowed: >= 1"), ({"epochs": 0}, "epochs: 0; allowed"),
                    ({"dropout_p": 1.0}, "dropout_p: 1.0; allowed: 0 <= dropout_p < 1")):
        with pytest.raises(ConfigError, match=msg):
            train_runs("gcn", xs, structure, condensed.y, views["val"], num_classes=4, **kw)


def test_fast_protocol_selects_in_bfloat16_only_where_native_and_float32_on_request(graph, condensed, monkeypatch):
    import magkit.condense.batched as batched

    native = {"value": True}
    asked, dtypes = [], []
    monkeypatch.setattr(batched, "native_bfloat16", lambda device: asked.append(device) or native["value"])
    real = batched._RunStack.readout

    def spy(self, ro, on=None, dtype=torch.float32):
        dtypes.append(dtype)
        return real(self, ro, on, dtype)

    monkeypatch.setattr(batched._RunStack, "readout", spy)
    views = graph_views(graph)
    assert FAST_OPTIONS["val_dtype"] == "auto"
    fast_eval(condensed, graph, "gcn", runs=2, epochs=30, views=views, val_dtype=FAST_OPTIONS["val_dtype"])
    assert asked and torch.bfloat16 in dtypes  # the fast protocol's default: bfloat16 where the device has it
    asked.clear(), dtypes.clear()
    native["value"] = False
    fast_eval(condensed, graph, "gcn", runs=2, epochs=30, views=views, val_dtype="auto")
    assert asked and set(dtypes) == {torch.float32}  # no native bfloat16: float32
    asked.clear(), dtypes.clear()
    fast_eval(condensed, graph, "gcn", runs=2, epochs=30, views=views, val_dtype="float32")
    assert asked == [] and set(dtypes) == {torch.float32}  # float32 never asks the device


# ------------------------------------------------------------------------------------------- the default protocol
def test_default_protocol_is_the_lone_runs_bit_for_bit(graph, condensed, monkeypatch):
    import magkit.condense.evaluate as ev

    views = graph_views(graph)
    calls = []
    real = ev.train_model
    monkeypatch.setattr(ev, "train_model", lambda *a, **kw: calls.append(sorted(kw)) or real(*a, **kw))
    monkeypatch.setattr(ev, "train_runs", lambda *a, **kw: pytest.fail("the default protocol stacked runs"))
    kinds = ["gcn", "sgc", "sage"]
    got = evaluate_condensed(condensed, graph, kinds, runs=3, seed=1, epochs=60, views=views)
    # each run alone through train_model, given no validation interval, patience or precision: its defaults
    assert calls == [["epochs", "hidden", "lr", "num_classes", "seed", "weight_decay"]] * 9
    monkeypatch.setattr(ev, "train_model", real)
    for kind in kinds:
        for r, run in enumerate(got[kind]["runs"]):
            lone = train_on_condensed(condensed, kind, views["val"], views["test"], epochs=60, hidden=256, lr=0.01,
                                      weight_decay=5e-4, seed=1 + r)
            assert torch.equal(torch.tensor([run[k] for k in NOT_TIMES]), torch.tensor([lone[k] for k in NOT_TIMES]))
            assert run["epochs_run"] == 60  # no early stop
            assert run["best_epoch"] % 10 == 0  # validated after every 10th epoch (and the last: 60)
        assert got[kind]["test_acc"][0] == pytest.approx(sum(r["test_acc"] for r in got[kind]["runs"]) / 3, abs=1e-12)


def test_fast_protocol_options_are_refused_without_it(graph, condensed):
    from magkit.condense import train_whole

    for kw, msg in (({"patience": 10}, "patience: 10 applies to the fast protocol only; allowed: protocol='fast' with it"),
                    ({"eval_every": 5}, "eval_every: 5 applies to the fast protocol only; allowed: protocol='fast'"),
                    ({"val_dtype": "auto"}, "val_dtype: 'auto' applies to the fast protocol only"),
                    ({"protocol": "quick"}, "protocol: 'quick'; allowed: standard, fast")):
        for fn in (lambda **k: evaluate_condensed(condensed, graph, "gcn", runs=1, **k),
                   lambda **k: train_whole(graph, "gcn", epochs=5, **k)):
            with pytest.raises(ConfigError, match=msg) as err:
                fn(**kw)
            assert "\n" not in str(err.value)
    # the fast protocol's defaults: validated every 10th epoch, 10 validations' patience, float32
    assert FAST_OPTIONS == {"eval_every": 10, "patience": 10, "val_dtype": "auto"}
