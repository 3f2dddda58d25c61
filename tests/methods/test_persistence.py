"""save / load_estimator: safetensors + JSON, rebuilt through the registry; every registered method predicts
bitwise as the fitted one after a round trip; pickles are refused unread; corruption is a typed error; writes
are atomic (a full disk keeps the old file)."""

import errno
import json
import os
import pickle

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save as st_save

import magkit
import magkit.integrity as integrity
from magkit.data.synthetic import make_synthetic_mag
from magkit.exceptions import ConfigError, DatasetError, MagkitError
from magkit.integrity import IntegrityError, WriteError, content_digest
from magkit.methods import create, load_estimator
from magkit.methods.registry import method_names

FAST = {"hidden": 32, "epochs": 25, "patience": 25}
#: settings of the every-method round trip on the tiny graph (each given only to the methods that declare it)
SMALL = {"epochs": 3, "hidden": 16, "warmup": 1}


@pytest.fixture(scope="module")
def tiny():
    return make_synthetic_mag(num_nodes=120, num_classes=3, dims=8, seed=0, avg_degree=6.0)


def fit_small(name, graph, **params):
    est = create(name)
    est.set_params(**{k: v for k, v in SMALL.items() if k in est.get_params()}, **params)
    return est.fit(graph)


def parts(path):
    with safe_open(str(path), framework="pt") as fh:
        return {k: fh.get_tensor(k) for k in fh.keys()}, json.loads(fh.metadata()["magkit"])


def resign(path, tensors, record):
    """Write a file with a valid digest over a (mutated) record: what the checks behind the digest see."""
    text = json.dumps(record, sort_keys=True)
    path.write_bytes(st_save(tensors, metadata={"magkit": text, "magkit.sha256": content_digest(text, tensors)}))
    return path


@pytest.mark.parametrize("name", method_names())
def test_every_registered_method_predicts_bitwise_after_a_round_trip(tiny, tmp_path, name):
    est = fit_small(name, tiny, seed=1)
    path = est.save(tmp_path / f"{name}.safetensors")
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary file left
    rng = torch.random.get_rng_state()
    back = load_estimator(path)
    assert torch.equal(torch.random.get_rng_state(), rng)  # loading draws nothing from the caller's RNG
    assert type(back) is type(est) and back.name == name and back.get_params() == est.get_params()
    assert torch.equal(back.predict_proba(tiny), est.predict_proba(tiny))
    assert back.history_.best_epoch == est.history_.best_epoch and back.history_.epochs == est.history_.epochs
    assert back.modalities_ == est.modalities_ and back.num_classes_ == tiny.num_classes
    _, record = parts(path)
    assert record["method"] == name and record["shape"]["num_nodes"] == tiny.num_nodes
    assert record["dataset"] == {"name": tiny.name, "checksum": tiny.checksum()}


@pytest.mark.parametrize("method, extra", [
    ("gcn-early", {}),
    ("mnl-sage", {}),
    ("graphmnl-gate", {"warmup": 3}),
    ("graphmnl", {"warmup": 3, "branches": ["+struct:gcn", "+topo"]}),
    ("graphmnl", {"warmup": 3, "batch_size": 64}),
])
def test_a_saved_estimator_predicts_as_the_fitted_one(homophilous_graph, tmp_path, method, extra):
    est = create(method, seed=0, **FAST, **extra).fit(homophilous_graph)
    path = est.save(tmp_path / "sub" / "model.safetensors", meta={"data": "x", "seed": 3, "split": None})
    back = magkit.load_estimator(path)
    assert type(back) is type(est) and back.get_params() == est.get_params()
    assert back.name == method and back.saved_meta_ == {"data": "x", "seed": 3, "split": None}
    assert torch.equal(back.predict_proba(homophilous_graph), est.predict_proba(homophilous_graph))
    assert back.history_.best_epoch == est.history_.best_epoch
    if method.startswith("graphmnl"):
        assert back.branches_ == est.branches_
        for key, value in est.diagnostics_.items():  # fitted tensors and JSON diagnostics come back as they were
            got = back.diagnostics_[key]
            assert torch.equal(got, value) if isinstance(value, torch.Tensor) else got == value
    tensors, record = parts(path)
    assert set(record) >= {"format", "format_version", "method", "params", "shape", "state", "versions", "meta"}
    assert not [k for k in record["state"] if k.startswith("_")] and "model_" not in record["state"]
    assert all(k.startswith(("model.", "fitted.")) for k in tensors)
    # a re-save of a loaded estimator is the same file content
    again = back.save(tmp_path / "again.safetensors")
    assert parts(again)[1]["state"] == record["state"]


def test_an_estimator_made_without_the_registry_saves_under_its_registered_name(homophilous_graph, tmp_path):
    from magkit.methods.baselines import FusionClassifier

    est = FusionClassifier(backbone="sage", fusion="late", **FAST).fit(homophilous_graph)
    back = load_estimator(est.save(tmp_path / "m.safetensors"))
    assert back.name == "sage-late" and torch.equal(back.predict(homophilous_graph), est.predict(homophilous_graph))


def test_save_needs_a_fitted_estimator(tmp_path):
    with pytest.raises(magkit.NotFittedError):
        create("gcn-early").save(tmp_path / "m.safetensors")
    assert list(tmp_path.iterdir()) == []


def test_bad_model_files_are_one_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_estimator(tmp_path / "none.safetensors")
    (tmp_path / "junk.safetensors").write_text("not a model")
    with pytest.raises(IntegrityError, match="not a readable safetensors file"):
        load_estimator(tmp_path / "junk.safetensors")
    (tmp_path / "other.safetensors").write_bytes(st_save({"weights": torch.zeros(2)}))
    with pytest.raises(ConfigError, match="is not a magkit estimator file"):
        load_estimator(tmp_path / "other.safetensors")


class _Payload:
    """Unpickling this object creates a folder: proof that code ran."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def test_pickle_era_model_files_are_refused_unread(tmp_path):
    marker = tmp_path / "ran"
    pickle.loads(pickle.dumps(_Payload(tmp_path / "sanity")))
    assert (tmp_path / "sanity").exists()  # the payload is live
    torch.save({"format": "magkit-estimator", "state": {"model_": _Payload(marker)}}, tmp_path / "old.pt")
    (tmp_path / "raw.pt").write_bytes(pickle.dumps(_Payload(marker)))
    for name in ("old.pt", "raw.pt"):
        with pytest.raises(ConfigError) as err:
            load_estimator(tmp_path / name)
        msg = str(err.value)
        assert "\n" not in msg and "pickle-era" in msg and "re-fit" in msg and "trusted environment and re-save" in msg
    assert not marker.exists()


def test_the_class_comes_from_the_registry_only(tiny, tmp_path):
    path = fit_small("gcn-early", tiny).save(tmp_path / "m.safetensors")
    tensors, record = parts(path)
    resign(path, tensors, {**record, "method": "os:system", "class": "os:system"})
    with pytest.raises(ConfigError, match=r"method: unknown name 'os:system'"):
        load_estimator(path)
    resign(path, tensors, {**record, "params": {**record["params"], "fusion": "late"}})
    with pytest.raises(IntegrityError, match=r"fusion='late' contradicts method 'gcn-early'"):
        load_estimator(path)


@pytest.mark.parametrize("mutate, error, match", [
    (lambda t, r: (t, {**r, "params": {**r["params"], "hidden": 17}}), IntegrityError, r"weight .* needs"),
    (lambda t, r: (t, {**r, "params": {**r["params"], "hidden": "x"}}), ConfigError, r"hidden='x' is not an int"),
    (lambda t, r: (t, {**r, "params": {**r["params"], "bogus": 1}}), ConfigError, r"unknown parameter 'bogus'"),
    (lambda t, r: (t, {**r, "shape": {**r["shape"], "num_classes": 4}}), IntegrityError, r"weight .* needs"),
    (lambda t, r: (t, {**r, "shape": {**r["shape"], "num_classes": -1}}), IntegrityError, r"shape\.num_classes"),
    (lambda t, r: (t, {**r, "shape": {**r["shape"], "modalities": ["text"]}}), IntegrityError, r"modality_dims"),
    (lambda t, r: ({k: v for k, v in t.items() if not k.endswith(".bias")}, r), IntegrityError, r"missing \["),
    (lambda t, r: ({**t, "model.evil": torch.zeros(1)}, r), IntegrityError, r"unexpected \['evil'\]"),
    (lambda t, r: ({k: v.double() if v.is_floating_point() else v for k, v in t.items()}, r), IntegrityError,
     r"torch\.float64"),
    (lambda t, r: (t, {**r, "format_version": 1}), ConfigError, r"format version 1"),
    (lambda t, r: (t, {**r, "state": {**r["state"], "history_": {"__tensor__": "fitted.9"}}}), IntegrityError,
     r"missing tensor"),
    (lambda t, r: (t, {**r, "state": {**r["state"], "lr": 1.0}}), IntegrityError, r"not fitted state"),
])
def test_a_record_that_does_not_fit_its_weights_is_a_typed_error(tiny, tmp_path, mutate, error, match):
    path = fit_small("gcn-early", tiny).save(tmp_path / "m.safetensors")
    tensors, record = mutate(*parts(path))
    resign(path, tensors, record)
    with pytest.raises(error, match=match) as err:
        load_estimator(path)
    assert "\n" not in str(err.value)


def test_flipped_bits_and_truncation_never_load(tiny, tmp_path):
    path = fit_small("gcn-early", tiny).save(tmp_path / "m.safetensors")
    data = path.read_bytes()
    gen = torch.Generator().manual_seed(0)
    for pos in torch.randint(0, len(data), (80,), generator=gen).tolist():
        bad = bytearray(data)
        bad[pos] ^= 1 << int(torch.randint(0, 8, (1,), generator=gen))
        path.write_bytes(bytes(bad))
        with pytest.raises(MagkitError):
            load_estimator(path)
    for cut in (1, 100, len(data) // 2, len(data) - 1):
        path.write_bytes(data[:cut])
        with pytest.raises(DatasetError):
            load_estimator(path)
    path.write_bytes(data[:-4] + bytes(4))
    with pytest.raises(IntegrityError, match=r"m\.safetensors: content digest mismatch"):
        load_estimator(path)


def test_a_full_disk_keeps_the_old_model_file(tiny, tmp_path, monkeypatch):
    est = fit_small("gcn-early", tiny)
    path = est.save(tmp_path / "m.safetensors")
    before = path.read_bytes()

    def full(fd, data):
        os.write(fd, bytes(data[:10]))  # a partial write, then the disk is full
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(integrity, "_write_all", full)
    with pytest.raises(WriteError) as err:
        fit_small("gcn-early", tiny, seed=5).save(path)
    msg = str(err.value)
    assert "\n" not in msg and str(path) in msg and "No space left on device (ENOSPC)" in msg
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["m.safetensors"]
    monkeypatch.undo()
    assert torch.equal(load_estimator(path).predict_proba(tiny), est.predict_proba(tiny))


def test_temporary_files_of_killed_writers_are_swept(tiny, tmp_path):
    path = tmp_path / "m.safetensors"
    dead = tmp_path / f".m.safetensors.{integrity._HOST}.999999999.deadbeef.tmp"  # no such pid
    dead.write_bytes(b"half")
    other = tmp_path / ".m.safetensors.otherhost.1.deadbeef.tmp"  # another host's writer: left alone
    other.write_bytes(b"half")
    fit_small("gcn-early", tiny).save(path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([other.name, "m.safetensors"])


def test_a_graph_with_other_feature_widths_is_refused(homophilous_graph):
    est = create("gcn-early", seed=0, **FAST).fit(homophilous_graph)
    g = homophilous_graph.clone()
    m = g.modalities[0]
    g[f"x_{m}"] = torch.cat([g.feature(m), g.feature(m)], 1)
    with pytest.raises(ConfigError, match="feature widths"):
        est.predict(g)
