"""CondensedGraph: invariants, stats, the graph view, and the safetensors artifact (round trip, atomic
writes, every kind of corrupted or foreign file refused with a clear DatasetError, no code executed)."""

from __future__ import annotations

import errno
import json
import logging
import os
import pickle

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save as st_save

from magkit.condense import FORMAT_VERSION, CondensedGraph, condensation_meta, summarize_history
from magkit.data.graph import MultimodalGraph, validate
from magkit.exceptions import DatasetError
from magkit.integrity import IntegrityError, WriteError, content_digest


def two_pairs_adj(w01: float = 0.5, w23: float = 1.0) -> torch.Tensor:
    """4 nodes, edges 0-1 and 2-3: two connected components."""
    adj = torch.zeros(4, 4)
    adj[0, 1] = adj[1, 0] = w01
    adj[2, 3] = adj[3, 2] = w23
    return adj


def make(adj: torch.Tensor | None = None, **overrides) -> CondensedGraph:
    g = torch.Generator().manual_seed(0)
    kwargs = dict(
        features={"text": torch.randn(4, 3, generator=g), "image": torch.randn(4, 5, generator=g)},
        adj=two_pairs_adj() if adj is None else adj,
        y=torch.tensor([0, 1, 0, 1]),
        num_classes=2,
        class_names=("cats", "dogs"),
        meta={"method": "srgm", "config": {"lam": 3000.0, "hidden": (256, 256)}, "seed": 7, "ratio": 0.01,
              "dataset": "toy", "dataset_checksum": "abc"},
    )
    kwargs.update(overrides)
    return CondensedGraph(**kwargs)


def real_graph(**kw) -> MultimodalGraph:
    g = torch.Generator().manual_seed(1)
    feats = kw.pop("features", {"text": torch.randn(10, 3, generator=g), "image": torch.randn(10, 5, generator=g)})
    return MultimodalGraph(feats, torch.tensor([[0, 1, 2], [1, 2, 3]]), torch.tensor([0, 1] * 5), name="toy", **kw)


def header_of(path) -> dict:
    with safe_open(str(path), framework="pt") as fh:
        return json.loads(fh.metadata()["magkit"])


def good_parts(tmp_path):
    """Tensors and header of a valid saved file, to corrupt one thing at a time."""
    path = make().save(tmp_path / "good.safetensors")
    with safe_open(str(path), framework="pt") as fh:
        tensors = {k: fh.get_tensor(k) for k in fh.keys()}
        header = json.loads(fh.metadata()["magkit"])
    return tensors, header


def write_raw(path, tensors, header=None, raw_meta=None):
    """A file with a valid content digest over ``header`` (so the checks behind the digest are reached)."""
    if raw_meta is None and header is not None:
        text = json.dumps(header, sort_keys=True)
        raw_meta = {"magkit": text, "magkit.sha256": content_digest(text, tensors)}
    elif raw_meta is not None and "magkit" in raw_meta:
        raw_meta = {**raw_meta, "magkit.sha256": content_digest(raw_meta["magkit"], tensors)}
    path.write_bytes(st_save(tensors, metadata=raw_meta))
    return path


# ---------------------------------------------------------------------- construction and validate
def test_constructor_normalises_and_validates():
    cg = make(features={"image": torch.randn(4, 5, dtype=torch.float64), "text": torch.randn(4, 3)},
              modalities=("text", "image"), y=torch.tensor([0, 1, 0, 1], dtype=torch.int32))
    assert list(cg.features) == ["text", "image"]  # reordered to the modality order
    assert cg.features["image"].dtype == torch.float32 and cg.y.dtype == torch.long
    assert cg.meta["config"]["hidden"] == [256, 256]  # JSON form held in memory
    assert cg.validate() is cg and cg.num_nodes == 4 and cg.modality_dims == {"text": 3, "image": 5}
    param = torch.nn.Parameter(torch.randn(4, 3))
    assert not make(features={"text": param, "image": torch.randn(4, 5)}).features["text"].requires_grad


@pytest.mark.parametrize(
    "overrides, match",
    [
        (dict(adj=torch.tensor([[0, 1, 0, 0], [0.5, 0, 0, 0], [0, 0, 0, 1], [0, 0, 1, 0.0]])), r"adj: not symmetric.*<= 1e-05"),
        (dict(adj=two_pairs_adj(w01=-0.2)), r"adj: 2 negative weight\(s\).*min -0\.2.*>= 0"),
        (dict(adj=two_pairs_adj() + torch.eye(4) * 0.3), r"adj: 4 non-zero diagonal.*zero diagonal"),
        (dict(adj=two_pairs_adj(w01=float("nan"))), r"adj: 2 NaN/Inf weight"),
        (dict(adj=torch.zeros(3, 3)), r"adj: must be a square matrix.*\[4, 4\]"),
        (dict(features={"text": torch.tensor([[float("nan"), 0, 0]] + [[0.0] * 3] * 3), "image": torch.zeros(4, 5)}),
         r"x\.text: 1 NaN/Inf value\(s\) in 1 row\(s\).*rows \[0\].*finite"),
        (dict(features={"text": torch.zeros(3, 3), "image": torch.zeros(4, 5)}), r"x\.text: row count.*got 3.*4 rows"),
        (dict(y=torch.tensor([0, 1, 2, 1])), r"y: 1 label\(s\) out of range.*got \[2\].*0\.\.1"),
        (dict(y=torch.tensor([0, -1, 0, 1])), r"y: 1 label\(s\) out of range.*got \[-1\]"),
        (dict(y=torch.tensor([0, 0, 0, 0])), r"y: 1 class\(es\) without a synthetic node.*classes \[1\]"),
        (dict(y=torch.tensor([0.0, 1, 0, 1])), r"y: labels must be int64"),
        (dict(modalities=("text", "audio")), r"features: feature keys do not match.*\['text', 'audio'\]"),
        (dict(num_classes=0), r"num_classes: must be a positive int"),
        (dict(class_names=("cats",)), r"class_names: must name every class.*2 strings"),
    ],
)
def test_validate_rejects(overrides, match):
    with pytest.raises(DatasetError, match=match):
        make(**overrides).validate()


def test_save_refuses_an_invalid_graph(tmp_path):
    with pytest.raises(DatasetError, match="not symmetric"):
        make(adj=torch.triu(torch.ones(4, 4), diagonal=1)).save(tmp_path / "bad.safetensors")
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------- stats and the graph view
def test_stats_two_disconnected_pairs():
    s = make().stats()
    assert s["num_nodes"] == 4 and s["class_counts"] == [2, 2]
    assert s["num_edges"] == 2 and s["edge_density"] == pytest.approx(2 / 6)
    assert s["weight_max"] == pytest.approx(1.0)
    assert s["weight_mean"] == pytest.approx((0.5 + 1.0) / 6)  # over the 6 off-diagonal pairs
    assert s["weight_mean_edges"] == pytest.approx(0.75)
    assert s["components"] == 2 and s["isolated_nodes"] == 0
    # each single edge has normalised-Laplacian eigenvalues {0, 2}
    assert s["laplacian_eig_min"] == pytest.approx(0, abs=1e-9)
    assert s["laplacian_eig_fiedler"] == pytest.approx(0, abs=1e-9)
    assert s["laplacian_eig_max"] == pytest.approx(2.0)
    x = make().features["text"]
    assert s["feature_norms"]["text"]["mean"] == pytest.approx(float(x.norm(dim=1).mean()), rel=1e-6)
    assert s["feature_norms"]["image"]["dim"] == 5


def test_stats_connected_empty_and_faint_structures():
    path = torch.zeros(4, 4)
    for i in range(3):
        path[i, i + 1] = path[i + 1, i] = 1.0
    s = make(adj=path).stats()
    assert s["components"] == 1 and s["edge_density"] == pytest.approx(3 / 6)
    assert 0 < s["laplacian_eig_fiedler"] < 2
    empty = make(adj=torch.zeros(4, 4)).stats()  # structure-free (GCond-X)
    assert empty["components"] == 4 and empty["edge_density"] == 0 and empty["weight_max"] == 0
    assert empty["isolated_nodes"] == 4
    faint = make(adj=two_pairs_adj(1e-4, 1e-4)).stats()  # collapsed weights: no edge above 1e-3
    assert faint["edge_density"] == 0 and faint["weight_max"] == pytest.approx(1e-4)


def test_to_graph():
    cg = make()
    g = cg.to_graph()
    assert isinstance(g, MultimodalGraph)
    assert g.modalities == ("text", "image") and g.num_classes == 2 and g.class_names == ("cats", "dogs")
    assert g.num_nodes == 4 and g.num_undirected_edges == 2
    assert g.edge_index.tolist() == [[0, 1, 2, 3], [1, 0, 3, 2]]
    assert g.edge_weight.tolist() == [0.5, 0.5, 1.0, 1.0]
    assert torch.equal(g.adj_dense, cg.adj) and torch.equal(g.x_text, cg.features["text"])
    assert bool(g.train_mask.all()) and g.get("val_mask") is None and g.get("test_mask") is None
    assert bool(g.modality_mask.all())
    validate(g, require_splits=False)
    assert make(adj=torch.zeros(4, 4)).to_graph().edge_index.shape == (2, 0)


# ---------------------------------------------------------------------- compatibility with a real graph
def test_check_compatible(caplog):
    cg = make()
    real = real_graph()
    cg.meta["dataset_checksum"] = real.checksum()
    with caplog.at_level(logging.WARNING, logger="magkit.condense.artifact"):
        cg.check_compatible(real)
    assert not caplog.records
    swapped = real_graph(features={"image": torch.zeros(10, 5), "text": torch.zeros(10, 3)})
    with pytest.raises(DatasetError, match=r"modalities: .*condensed \['text', 'image'\], graph \['image', 'text'\]"):
        cg.check_compatible(swapped)
    wider = real_graph(features={"text": torch.zeros(10, 4), "image": torch.zeros(10, 5)})
    with pytest.raises(DatasetError, match=r"dims: feature widths differ.*text: condensed 3, graph 4"):
        cg.check_compatible(wider)
    with pytest.raises(DatasetError, match=r"num_classes: class counts differ.*condensed 2, graph 3"):
        cg.check_compatible(real_graph(num_classes=3))
    cg.meta["dataset_checksum"] = "0000"
    with caplog.at_level(logging.WARNING, logger="magkit.condense.artifact"):
        cg.check_compatible(real)
    assert "made from different data" in caplog.text
    with pytest.raises(DatasetError, match="dataset_checksum: .*recorded 0000"):
        cg.check_compatible(real, strict_checksum=True)


def test_condensation_meta_and_history_summary():
    real = real_graph()
    hist = {"epochs": [{"epoch": i, "val_acc": i / 200} for i in range(200)], "best_epoch": 150}
    meta = condensation_meta(real, method="srgm", config={"lam": 1.0, "dims": (1, 2)}, seed=3, ratio=0.05,
                             history=hist, wall_time=1.5)
    assert meta["dataset"] == "toy" and meta["dataset_checksum"] == real.checksum()
    assert meta["method"] == "srgm" and meta["seed"] == 3 and meta["ratio"] == 0.05 and meta["wall_time"] == 1.5
    assert meta["config"] == {"lam": 1.0, "dims": [1, 2]}
    assert {"magkit", "torch", "numpy"} <= set(meta["versions"]) and meta["created"].endswith("+00:00")
    h = meta["history"]
    assert h["num_records"] == 200 and h["best_epoch"] == 150 and h["last"]["epoch"] == 199
    assert len(h["curve"]) == 50 and h["curve"][0]["epoch"] == 0 and h["curve"][-1]["epoch"] == 199
    assert summarize_history(None) is None
    assert summarize_history([{"epoch": 0}])["num_records"] == 1
    json.dumps(meta)


# ---------------------------------------------------------------------- the artifact
def test_round_trip(tmp_path):
    cg = make()
    path = cg.save(tmp_path / "sub" / "cond.safetensors")
    assert path.is_file() and [p.name for p in path.parent.iterdir()] == ["cond.safetensors"]
    back = CondensedGraph.load(path)
    assert back.modalities == cg.modalities and back.num_classes == 2 and back.class_names == ("cats", "dogs")
    for m in cg.modalities:
        assert torch.equal(back.features[m], cg.features[m]) and back.features[m].dtype == torch.float32
    assert torch.equal(back.adj, cg.adj) and torch.equal(back.y, cg.y) and back.y.dtype == torch.long
    assert back.meta == cg.meta
    header = header_of(path)
    assert header["format"] == "magkit.condensed_graph" and header["format_version"] == FORMAT_VERSION == 2
    assert header["num_nodes"] == 4 and header["dims"] == {"text": 3, "image": 5}
    assert header["stats"]["edge_density"] == pytest.approx(2 / 6) and header["stats"]["components"] == 2
    with safe_open(str(path), framework="pt") as fh:
        assert sorted(fh.keys()) == ["adj", "x.image", "x.text", "y"]
        assert len(fh.metadata()["magkit.sha256"]) == 64


def test_atomic_write_leaves_no_partial_file(tmp_path, monkeypatch):
    target = tmp_path / "cond.safetensors"

    def boom(src, dst):
        raise OSError(errno.EIO, "input/output error (simulated)")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(WriteError, match=r"could not write .*cond\.safetensors: input/output error"):
        make().save(target)
    assert not target.exists() and list(tmp_path.iterdir()) == []
    monkeypatch.undo()
    make().save(target)  # an existing artifact survives a failed overwrite intact
    before = target.read_bytes()
    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError):
        make(adj=torch.zeros(4, 4)).save(target)
    assert target.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["cond.safetensors"]


def test_a_full_disk_keeps_the_old_file_and_says_so_in_one_line(tmp_path, monkeypatch):
    import magkit.integrity as integrity

    target = make().save(tmp_path / "cond.safetensors")
    before = target.read_bytes()
    calls = {"n": 0}

    def full(fd, data):
        calls["n"] += 1
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(integrity, "_write_all", full)
    with pytest.raises(WriteError) as err:
        make(adj=torch.zeros(4, 4)).save(target)
    msg = str(err.value)
    assert calls["n"] == 1 and "\n" not in msg and str(target) in msg and "ENOSPC" in msg and "unchanged" in msg
    assert err.value.errno == errno.ENOSPC
    assert target.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["cond.safetensors"]


def test_every_flipped_bit_of_the_payload_is_caught(tmp_path):
    path = make().save(tmp_path / "good.safetensors")
    data = path.read_bytes()
    header_end = 8 + int.from_bytes(data[:8], "little")
    gen = torch.Generator().manual_seed(0)
    positions = torch.randint(header_end, len(data), (60,), generator=gen).tolist()
    positions += torch.randint(8, header_end, (60,), generator=gen).tolist()
    for pos in positions:
        bad = bytearray(data)
        bad[pos] ^= 1 << int(torch.randint(0, 8, (1,), generator=gen))
        path.write_bytes(bytes(bad))
        with pytest.raises(DatasetError):
            CondensedGraph.load(path)
    path.write_bytes(data[:header_end] + bytes(len(data) - header_end))  # zeroed tensor data
    with pytest.raises(IntegrityError, match=r"good\.safetensors: content digest mismatch"):
        CondensedGraph.load(path)


def test_a_file_without_digest_is_refused(tmp_path):
    tensors, header = good_parts(tmp_path)
    path = tmp_path / "nodigest.safetensors"
    path.write_bytes(st_save(tensors, metadata={"magkit": json.dumps(header)}))
    with pytest.raises(IntegrityError, match=r"nodigest\.safetensors: no content digest"):
        CondensedGraph.load(path)
    write_raw(path, tensors, {**header, "format_version": 1})
    with pytest.raises(DatasetError, match=r"format version 1.*no content digest: re-create"):
        CondensedGraph.load(path)


def _corrupt_bytes(tmp_path, kind):
    data = make().save(tmp_path / "good.safetensors").read_bytes()
    return {
        "truncated": data[:-7],
        "truncated_header": data[:40],
        "random": bytes(torch.randint(0, 256, (300,), generator=torch.Generator().manual_seed(0)).tolist()),
        "empty": b"",
        "text": b"hello, this is not a tensor file\n",
    }[kind]


@pytest.mark.parametrize("kind", ["truncated", "truncated_header", "random", "empty", "text"])
def test_load_refuses_broken_bytes(tmp_path, kind):
    path = tmp_path / f"{kind}.safetensors"
    path.write_bytes(_corrupt_bytes(tmp_path, kind))
    with pytest.raises(DatasetError, match=rf"{kind}\.safetensors: not a readable safetensors file"):
        CondensedGraph.load(path)


def test_load_refuses_missing_file(tmp_path):
    with pytest.raises(DatasetError, match=r"nope\.safetensors: no such file"):
        CondensedGraph.load(tmp_path / "nope.safetensors")


def _mutations():
    def header(**changes):
        def f(t, h):
            h.update(changes)
            return t, h, None
        return f

    def tensor(key, value):
        def f(t, h):
            t = dict(t)
            if value is None:
                del t[key]
            else:
                t[key] = value
            return t, h, None
        return f

    def meta_str(raw):
        return lambda t, h: (t, None, raw)

    return [
        ("no_metadata", lambda t, h: (t, None, None), r"no 'magkit' metadata.*not a magkit condensed graph written by magkit"),
        ("foreign_metadata", meta_str({"format": "pt"}), r"no 'magkit' metadata"),
        ("malformed_json", meta_str({"magkit": '{"format": "magkit.condensed_graph",'}), r"'magkit' metadata is malformed JSON"),
        ("json_not_object", meta_str({"magkit": "[1, 2]"}), r"must be a JSON object"),
        ("wrong_version", header(format_version=3), r"unsupported format version 3; this magkit reads format_version 2"),
        ("wrong_format", header(format="other"), r"metadata format is 'other'"),
        ("bad_num_nodes", header(num_nodes="4"), r"metadata field 'num_nodes' is invalid \(got '4'\)"),
        ("bad_dims", header(dims={"text": 3}), r"metadata field 'dims' is invalid"),
        ("shape_vs_dims", header(dims={"text": 4, "image": 5}), r"tensor 'x\.text' has shape \[4, 3\] but the metadata .* says \[4, 4\]"),
        ("shape_vs_num_nodes", header(num_nodes=5), r"has shape \[4, \d\] but the metadata \(num_nodes=5"),
        ("modalities_vs_tensors", header(modalities=["text", "audio"], dims={"text": 3, "audio": 5}),
         r"tensors disagree with the metadata \(missing \['x\.audio'\], unexpected \['x\.image'\]\)"),
        ("missing_tensor", tensor("adj", None), r"missing \['adj'\], unexpected \[\]"),
        ("extra_tensor", tensor("evil", torch.zeros(1)), r"missing \[\], unexpected \['evil'\]"),
        ("dtype_features", tensor("x.text", torch.zeros(4, 3, dtype=torch.float64)), r"tensor 'x\.text' has dtype F64; allowed: F32"),
        ("dtype_labels", tensor("y", torch.tensor([0, 1, 0, 1], dtype=torch.int32)), r"tensor 'y' has dtype I32; allowed: I64"),
        ("asymmetric_adj", tensor("adj", torch.triu(two_pairs_adj())), r"adj: not symmetric"),
        ("negative_weights", tensor("adj", two_pairs_adj(w01=-1.0)), r"adj: 2 negative weight"),
        ("nan_feature", tensor("x.image", torch.full((4, 5), float("nan"))), r"x\.image: 20 NaN/Inf value"),
        ("label_out_of_range", tensor("y", torch.tensor([0, 1, 0, 5])), r"y: 1 label\(s\) out of range.*got \[5\]"),
        ("missing_class", tensor("y", torch.tensor([1, 1, 1, 1])), r"y: 1 class\(es\) without a synthetic node.*classes \[0\]"),
        ("class_names_count", header(class_names=["a", "b", "c"]), r"class_names: must name every class"),
        ("missing_field", lambda t, h: (t, {k: v for k, v in h.items() if k != "class_names"}, None),
         r"metadata fields \['class_names'\] are missing"),
    ]


@pytest.mark.parametrize("name, mutate, match", _mutations(), ids=[m[0] for m in _mutations()])
def test_load_refuses_corrupted_content(tmp_path, name, mutate, match):
    tensors, header = good_parts(tmp_path)
    tensors, header, raw = mutate(tensors, header)
    path = write_raw(tmp_path / f"{name}.safetensors", tensors, header, raw)
    with pytest.raises(DatasetError, match=rf"{name}\.safetensors: .*{match}"):
        CondensedGraph.load(path)


class _Payload:
    """Unpickling this object creates a folder: proof that code ran."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def test_pickles_are_refused_and_never_executed(tmp_path):
    sanity = tmp_path / "sanity_marker"
    pickle.loads(pickle.dumps(_Payload(sanity)))
    assert sanity.exists()  # the payload is live: unpickling it does run code

    marker = tmp_path / "marker"
    as_pickle = tmp_path / "pickled.safetensors"
    as_pickle.write_bytes(pickle.dumps(_Payload(marker)))
    as_torch = tmp_path / "torchsaved.safetensors"
    torch.save({"adj": _Payload(marker)}, as_torch)
    for path in (as_pickle, as_torch):
        with pytest.raises(DatasetError, match=r"a pickle, not a condensed graph; magkit never unpickles"):
            CondensedGraph.load(path)
    assert not marker.exists()
