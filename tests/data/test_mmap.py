"""Memory-mapped graphs (``mmap:DIR``): lazy float32 blocks, identical training, errors, the on-disk generator."""

from __future__ import annotations

import copy
import json
import os
import pickle

import numpy as np
import pytest
import torch

from magkit.data import load_dataset
from magkit.data.graph import validate
from magkit.data.largegen import generate_mmap_graph
from magkit.data.ondisk import MappedFeatures, load_mmap_graph, save_mmap_graph, write_npy_chunks
from magkit.data.synthetic import make_synthetic_mag
from magkit.exceptions import ConfigError, DatasetError, GraphValidationError
from magkit.methods import create


@pytest.fixture(scope="module")
def ram_graph():
    return make_synthetic_mag(num_nodes=400, num_classes=4, homophily=0.8, seed=0, profile="text-dominant")


@pytest.fixture(scope="module")
def mapped(ram_graph, tmp_path_factory):
    folder = tmp_path_factory.mktemp("mmap") / "g"
    save_mmap_graph(ram_graph, folder)  # float32 on disk: values identical to the in-RAM graph
    return load_mmap_graph(folder)


def _block(tmp_path, dtype, n=37, d=5, name="x.npy"):
    rng = np.random.default_rng(1)
    arr = (rng.standard_normal((n, d)) * 3).astype(dtype)
    path = tmp_path / name
    np.save(path, arr)
    return path, arr


# ---------------------------------------------------------------------- the lazy block
@pytest.mark.parametrize("dtype", [np.float64, np.float16, np.float32, np.int16])
def test_blocks_cast_to_float32_chunk_by_chunk(tmp_path, dtype):
    path, arr = _block(tmp_path, dtype)
    want = torch.from_numpy(arr.astype(np.float32))  # numpy's own cast: the reference
    # tiny chunks and resident budget: every read is split and the mapping is released many times
    x = MappedFeatures(path, chunk_bytes=3 * 5 * arr.itemsize, resident_bytes=1)
    assert x.shape == (37, 5) and x.dtype == torch.float32 and x.storage_dtype == arr.dtype and len(x) == 37
    assert x.size(1) == 5 and x.dim() == 2 and x.is_floating_point()
    idx = torch.tensor([36, 0, 5, 5, 17, -1])
    out = x[idx]
    assert out.dtype == torch.float32 and torch.equal(out, want[idx])
    assert torch.equal(x[3:29], want[3:29]) and torch.equal(x[::4], want[::4])
    assert torch.equal(x[7], want[7]) and torch.equal(x[np.array([2, 1])], want[[2, 1]])
    mask = torch.zeros(37, dtype=torch.bool)
    mask[[1, 30]] = True
    assert torch.equal(x[mask], want[mask])
    assert torch.equal(x[:, 1:4], want[:, 1:4]) and torch.equal(x.columns(2, 5, chunk_rows=4), want[:, 2:5])
    assert torch.equal(x.materialize(), want)
    assert sum(b.size(0) for _, b in x.iter_rows(10)) == 37


def test_masked_view_zeroes_absent_rows_only(tmp_path):
    path, arr = _block(tmp_path, np.float16)
    present = torch.ones(37, dtype=torch.bool)
    present[[0, 9]] = False
    x = MappedFeatures(path)
    m = x.masked(present)
    want = torch.from_numpy(arr.astype(np.float32)) * present.unsqueeze(1)
    assert torch.equal(m[torch.arange(37)], want) and torch.equal(m[0:12], want[0:12])
    assert torch.equal(x[torch.tensor([0])], torch.from_numpy(arr[[0]].astype(np.float32)))  # the original is unmasked
    assert m.digest() != x.digest()
    assert m._mm is x._mm and copy.copy(x)._mm is x._mm  # views share one mapping (pages counted once)


def _mapped_kb(path) -> int:
    total, cur = 0, None
    with open("/proc/self/smaps") as fh:
        for line in fh:
            parts = line.split()
            if len(parts) >= 5 and "-" in parts[0] and ":" in parts[3]:
                cur = parts[5] if len(parts) > 5 else ""
            elif line.startswith("Rss:") and cur == str(path):
                total += int(parts[1])
    return total


@pytest.mark.skipif(not os.path.exists("/proc/self/smaps"), reason="reads /proc/self/smaps")
def test_sequential_reads_keep_the_mapped_pages_under_the_budget(tmp_path):
    path = tmp_path / "big.npy"
    np.save(path, np.ones((16384, 128), dtype=np.float32))  # 8 MiB
    x = MappedFeatures(path, chunk_bytes=1 << 20, resident_bytes=2 << 20)
    assert float(x.rows(0, 16384).sum()) == 16384 * 128
    assert _mapped_kb(path.resolve()) <= 3 * 1024  # at most the budget plus one chunk stays mapped
    assert float(x.columns(3, 9).sum()) == 16384 * 6 and float(x.materialize().sum()) == 16384 * 128
    assert _mapped_kb(path.resolve()) == 0  # whole passes drop their pages at the end
    y = MappedFeatures(path, resident_bytes=1 << 40)  # never released: the whole file stays mapped
    y.rows(0, 16384)
    assert _mapped_kb(path.resolve()) >= 7 * 1024


def test_block_pickles_and_copies_by_reopening_the_file(tmp_path):
    path, arr = _block(tmp_path, np.float64)
    x = MappedFeatures(path).masked(torch.arange(37) % 2 == 0)
    for y in (pickle.loads(pickle.dumps(x)), copy.deepcopy(x)):
        assert torch.equal(y[torch.arange(37)], x[torch.arange(37)])
    with pytest.raises(IndexError, match="out of range"):
        x[torch.tensor([37])]


# ---------------------------------------------------------------------- the graph
def test_mapped_graph_equals_the_in_ram_graph(ram_graph, mapped):
    g, h = ram_graph, mapped
    assert h.is_mapped and not g.is_mapped
    validate(h)
    assert h.modalities == g.modalities and h.num_classes == g.num_classes and h.modality_dims == g.modality_dims
    assert torch.equal(h.edge_index, g.edge_index) and torch.equal(h.y, g.y)
    assert torch.equal(h.modality_mask, g.modality_mask)
    for s in ("train", "val", "test"):
        assert torch.equal(h[f"{s}_mask"], g[f"{s}_mask"])
    for m in g.modalities:
        assert isinstance(h.feature(m), MappedFeatures)
        assert torch.equal(h.feature(m).materialize(), g.feature(m))
    assert h.checksum() == g.checksum()  # the same float32 bytes, streamed
    assert torch.equal(h.fused(), g.fused())
    sub_h, sub_g = h.subgraph(torch.arange(50)), g.subgraph(torch.arange(50))
    assert torch.equal(sub_h.x_text, sub_g.x_text) and torch.equal(sub_h.edge_index, sub_g.edge_index)


def test_minibatch_training_reads_the_same_rows_and_predicts_the_same(ram_graph, mapped):
    # fan-outs -1: sampled inference on the mapped graph sees every neighbour, so a 2-layer SAGE matches the
    # full-graph forward pass of the in-RAM graph up to summation order
    kw = {"hidden": 16, "epochs": 3, "patience": None, "batch_size": 64, "fanouts": (-1, -1), "seed": 0}
    a = create("sage-early", **kw).fit(ram_graph)
    b = create("sage-early", **kw).fit(mapped)
    assert a.history_.series("loss") == b.history_.series("loss")  # identical batches and updates
    for pa, pb in zip(a.model_.state_dict().values(), b.model_.state_dict().values()):
        assert torch.equal(pa, pb)
    assert torch.allclose(a.predict_proba(ram_graph), b.predict_proba(mapped), atol=1e-5)
    assert a.history_.series("val_acc") == pytest.approx(b.history_.series("val_acc"), abs=1e-6)
    assert b.score(mapped)["acc"] == pytest.approx(a.score(ram_graph)["acc"], abs=1e-6)


def test_full_batch_and_sgc_on_a_mapped_graph_match(ram_graph, mapped, monkeypatch, tmp_path):
    monkeypatch.setenv("MAGKIT_CACHE", str(tmp_path / "cache"))
    kw = {"hidden": 16, "epochs": 5, "patience": None, "seed": 0}
    a = create("gcn-early", **kw).fit(ram_graph)
    b = create("gcn-early", **kw).fit(mapped)  # full batch: blocks read into memory once
    assert torch.equal(a.predict_proba(ram_graph), b.predict_proba(mapped))
    a = create("sgc-early", batch_size=64, **kw).fit(ram_graph)
    b = create("sgc-early", batch_size=64, **kw).fit(mapped)  # propagated blocks cached on disk, read per batch
    assert a.history_.series("loss") == pytest.approx(b.history_.series("loss"), rel=1e-5)
    assert len(list((tmp_path / "cache" / "propagated").glob("prop-*.npy"))) == 2  # one per modality


def test_load_dataset_mmap_keeps_or_replaces_the_stored_split(mapped):
    folder = mapped.meta["mmap_dir"]
    g = load_dataset(f"mmap:{folder}")
    assert g.name == f"mmap:{folder}" and g.meta["split"] == "file" and torch.equal(g.train_mask, mapped.train_mask)
    g = load_dataset(f"mmap:{folder}", split="rate:0.1", seed=1)
    assert g.meta["split"] == "rate:0.1" and int(g.train_mask.sum()) == 40


def test_nonfinite_rows_on_disk_fail_validation(ram_graph, tmp_path):
    save_mmap_graph(ram_graph, tmp_path / "g", dtype="float16")
    arr = np.load(tmp_path / "g" / "features" / "image.npy", mmap_mode="r+")
    arr[3, 1] = np.inf
    arr.flush()
    del arr
    with pytest.raises(DatasetError, match=r"image\.npy does not match its sha256"):
        load_mmap_graph(tmp_path / "g")
    with pytest.raises(GraphValidationError, match="x_image.*NaN/Inf.*rows \\[3\\]"):
        validate(load_mmap_graph(tmp_path / "g", verify=False))


# ---------------------------------------------------------------------- errors: one line, the file, the shape
def test_missing_or_misshaped_files_name_the_file_and_the_shape(ram_graph, tmp_path):
    folder = tmp_path / "g"
    save_mmap_graph(ram_graph, folder)
    text = folder / "features" / "text.npy"
    np.save(text, np.zeros((399, 32), dtype=np.float32))
    with pytest.raises(DatasetError) as err:
        load_mmap_graph(folder)
    msg = str(err.value)
    assert "\n" not in msg and str(text) in msg and "(399, 32)" in msg and "[400, d]" in msg
    np.save(text, np.zeros(400, dtype=np.float32))
    with pytest.raises(DatasetError, match=r"text\.npy has shape \(400,\); expected \[400, d\]"):
        load_mmap_graph(folder)
    text.unlink()
    with pytest.raises(DatasetError) as err:
        load_mmap_graph(folder)
    assert str(text) in str(err.value) and "does not exist" in str(err.value) and "[400, d]" in str(err.value)
    (folder / "y.npy").unlink()
    with pytest.raises(DatasetError, match=r"y\.npy does not exist; expected a \[N\] \.npy array"):
        load_mmap_graph(folder)
    with pytest.raises(DatasetError, match="does not exist"):
        load_dataset(f"mmap:{tmp_path / 'nowhere'}")


def test_bad_edges_masks_and_dtypes_are_refused(ram_graph, tmp_path):
    folder = tmp_path / "g"
    save_mmap_graph(ram_graph, folder)
    np.save(folder / "edge_index.npy", np.array([[0, 1], [1, 400]]))
    with pytest.raises(DatasetError, match=r"edge_index\.npy holds node ids 0\.\.400; expected 0\.\.399"):
        load_mmap_graph(folder)
    np.save(folder / "edge_index.npy", np.zeros((3, 4), dtype=np.int64))
    with pytest.raises(DatasetError, match=r"has shape \(3, 4\); expected \[2, E\]"):
        load_mmap_graph(folder)
    save_mmap_graph(ram_graph, folder)
    (folder / "val_mask.npy").unlink()
    with pytest.raises(DatasetError, match="val_mask.npy missing"):
        load_mmap_graph(folder)
    np.save(tmp_path / "s.npy", np.array([["a"]]))
    with pytest.raises(DatasetError, match="expected a float or integer dtype"):
        MappedFeatures(tmp_path / "s.npy")


def test_write_npy_chunks_checks_rows(tmp_path):
    with pytest.raises(ValueError, match="wrote 4 rows; expected 5"):
        write_npy_chunks(tmp_path / "a.npy", (5, 2), np.float16, [np.zeros((4, 2))])


# ---------------------------------------------------------------------- the on-disk generator
def test_generator_writes_declared_shapes_and_a_valid_graph(tmp_path):
    meta = generate_mmap_graph(tmp_path / "g", 3000, num_classes=6, dims={"text": 24, "image": 16}, avg_degree=8,
                               dtype="float16", chunk_rows=1000)
    folder = tmp_path / "g"
    assert json.loads((folder / "meta.json").read_text()) == meta
    for m, d in (("text", 24), ("image", 16)):
        arr = np.load(folder / "features" / f"{m}.npy", mmap_mode="r")
        assert arr.shape == (3000, d) and arr.dtype == np.float16
        present = np.load(folder / "features" / f"{m}_present.npy")
        assert not np.asarray(arr[~present]).any()  # absent rows are zeros
    g = validate(load_mmap_graph(folder))
    assert g.num_nodes == 3000 and g.num_classes == 6 and g.is_mapped
    st = meta["stats"]
    # the DC-SBM sampler of magkit.data.dcsbm: exactly round(N d / 2) edges, round(h M) of them inside classes
    assert st["edges_undirected"] == g.num_undirected_edges == 12000 and st["mean_degree"] == 8.0
    assert st["edge_homophily"] == 0.7
    assert st["splits"] == {s: int(g[f"{s}_mask"].sum()) for s in ("train", "val", "test")}
    assert bool(g.modality_mask.any(1).all())  # every node keeps a modality
    # class-structured features: the class means of the text block differ clearly
    x, y = g.x_text.materialize(), g.y
    means = torch.stack([x[y == c].mean(0) for c in range(6)])
    assert torch.cdist(means, means).max() > 0.5


def test_generator_is_chunk_independent_and_reuses_a_finished_folder(tmp_path):
    kw = {"num_classes": 4, "dims": {"text": 8, "image": 8}, "avg_degree": 6, "seed": 3}
    generate_mmap_graph(tmp_path / "a", 70000, chunk_rows=65536, **kw)
    generate_mmap_graph(tmp_path / "b", 70000, chunk_rows=1, **kw)  # rounded up to whole seeded blocks
    for f in ("features/text.npy", "features/image.npy", "edge_index.npy", "y.npy", "train_mask.npy"):
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes()
    before = (tmp_path / "a" / "features" / "text.npy").stat().st_mtime_ns
    generate_mmap_graph(tmp_path / "a", 70000, **kw)  # same parameters: reused, nothing rewritten
    assert (tmp_path / "a" / "features" / "text.npy").stat().st_mtime_ns == before
    with pytest.raises(ConfigError, match="other parameters"):
        generate_mmap_graph(tmp_path / "a", 70000, **{**kw, "seed": 4})
    assert not list(tmp_path.glob(".a.partial-*"))


def test_generator_rejects_bad_parameters(tmp_path):
    with pytest.raises(ConfigError, match="dtype"):
        generate_mmap_graph(tmp_path / "g", 100, num_classes=4, dtype="int8")
    with pytest.raises(ConfigError, match="homophily"):
        generate_mmap_graph(tmp_path / "g", 100, num_classes=4, homophily=1.5)


# ---------------------------------------------------------------------- the command line
def test_cli_generate_then_info_and_fit_on_the_mapped_graph(tmp_path):
    from typer.testing import CliRunner

    from magkit.cli import app

    runner = CliRunner()
    out = tmp_path / "g"
    res = runner.invoke(app, ["data", "generate", "--nodes", "2000", "--classes", "4", "--dims", "text=16,image=8",
                              "--degree", "6", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "2,000 nodes" in res.output and f"mmap:{out}" in res.output.replace("\n", "")
    res = runner.invoke(app, ["data", "info", f"mmap:{out}", "--json"])
    assert res.exit_code == 0, res.output
    info = json.loads(res.output)
    assert info["nodes"] == 2000 and info["modalities"]["text"]["dim"] == 16 and info["splits"]["train"] == 200
    res = runner.invoke(app, ["fit", "-m", "sage-early", "-d", f"mmap:{out}", "--seeds", "0", "--set", "epochs=2",
                              "--set", "batch_size=128", "--set", "hidden=16"])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["data", "generate", "--nodes", "2000", "--classes", "4", "--dims", "text=16",
                              "--out", str(out)])
    assert res.exit_code == 2 and "other parameters" in res.output
    res = runner.invoke(app, ["data", "generate", "--nodes", "2000", "--dims", "text:16", "--out", str(tmp_path / "h")])
    assert res.exit_code == 2 and "--dims" in res.output


# ---------------------------------------------------------------------- trust: atomic writes, digests, checks
def _same_graph(a, b) -> bool:
    return a.checksum() == b.checksum() and a.num_classes == b.num_classes and a.modalities == b.modalities


def test_failed_overwrite_keeps_the_previous_graph_and_leaves_no_temp(ram_graph, tmp_path, monkeypatch):
    import errno

    from magkit.data import ondisk
    from magkit.exceptions import StorageError

    folder = tmp_path / "g"
    save_mmap_graph(ram_graph, folder)
    before = {p.relative_to(folder): p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    other = make_synthetic_mag(num_nodes=300, num_classes=3, seed=5)
    calls = {"n": 0}
    real = ondisk._write_npy

    def full_disk(path, arr):
        calls["n"] += 1
        if calls["n"] == 3:  # after the feature blocks, before the labels: a half-written graph
            raise OSError(errno.ENOSPC, "No space left on device")
        real(path, arr)

    monkeypatch.setattr(ondisk, "_write_npy", full_disk)
    with pytest.raises(StorageError) as err:
        save_mmap_graph(other, folder)
    msg = str(err.value)
    assert "\n" not in msg and "no space left on device" in msg and "previous graph there is unchanged" in msg
    after = {p.relative_to(folder): p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    assert after == before and sorted(p.name for p in tmp_path.iterdir()) == ["g"]  # no temp folder left
    assert _same_graph(load_mmap_graph(folder), ram_graph)
    monkeypatch.setattr(ondisk, "_write_npy", real)
    save_mmap_graph(other, folder)  # a complete write replaces the graph as a whole
    assert _same_graph(load_mmap_graph(folder), other) and sorted(p.name for p in tmp_path.iterdir()) == ["g"]


def test_saving_over_the_loaded_folder_and_refusing_foreign_folders(ram_graph, tmp_path):
    folder = tmp_path / "g"
    save_mmap_graph(ram_graph, folder)
    g = load_mmap_graph(folder)
    save_mmap_graph(g, folder, dtype="float16")  # reads the old mapped files while writing the new ones
    assert np.load(folder / "features" / "text.npy", mmap_mode="r").dtype == np.float16
    foreign = tmp_path / "docs"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(DatasetError, match="is not an mmap graph folder; refusing to replace it"):
        save_mmap_graph(ram_graph, foreign)
    assert (foreign / "notes.txt").read_text() == "keep me"


def test_digests_catch_a_flipped_feature_bit_and_cost_one_read(ram_graph, tmp_path):
    folder = tmp_path / "g"
    save_mmap_graph(ram_graph, folder)
    meta = json.loads((folder / "meta.json").read_text())
    assert set(meta["sha256"]["files"]) == {"y.npy", "edge_index.npy", "train_mask.npy", "val_mask.npy", "test_mask.npy",
                                            "features/text.npy", "features/text_present.npy", "features/image.npy",
                                            "features/image_present.npy"}
    path = folder / "features" / "text.npy"
    raw = bytearray(path.read_bytes())
    raw[-7] ^= 0x01  # one mantissa bit of one float: a value the reader cannot tell from a real one
    path.write_bytes(bytes(raw))
    with pytest.raises(DatasetError, match=r"text\.npy does not match its sha256 in meta\.json"):
        load_mmap_graph(folder)
    g = load_mmap_graph(folder, verify=False)  # accepted on request
    assert not torch.equal(g.x_text.materialize(), ram_graph.x_text)
    meta["name"] = "renamed"
    (folder / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(DatasetError, match=r"meta\.json does not match its sha256 \(edited or damaged\)"):
        load_mmap_graph(folder)


@pytest.mark.parametrize("key, value, message", [
    ("num_nodes", "400", "field 'num_nodes' is \"400\"; allowed: an integer >= 1"),
    ("num_classes", 1e9, "field 'num_classes' is 1000000000.0; allowed: an integer 1..100000"),
    ("num_classes", -2, "field 'num_classes' is -2"),
    ("class_names", "abc", "field 'class_names' is \"abc\"; allowed: a list of strings"),
    ("class_names", ["a"], "allowed: one name per class"),
    ("modalities", ["../../etc/passwd"], "field 'modalities'"),
    ("modalities", "text", "field 'modalities' is \"text\""),
    ("edges", 7, "field 'edges' is 7"),
    ("version", 99, "field 'version' is 99"),
    ("sha256", {"files": 3}, "field 'sha256'"),
])
def test_bad_meta_values_are_one_line_dataset_errors(ram_graph, tmp_path, key, value, message):
    folder = tmp_path / "g"
    save_mmap_graph(ram_graph, folder)
    meta = json.loads((folder / "meta.json").read_text())
    meta[key] = value
    (folder / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(DatasetError) as err:
        load_mmap_graph(folder, verify=False)
    assert message in str(err.value) and "meta.json" in str(err.value) and "\n" not in str(err.value)


def test_huge_label_is_refused_before_any_allocation(ram_graph, tmp_path):
    folder = tmp_path / "g"
    save_mmap_graph(ram_graph, folder)
    y = np.load(folder / "y.npy")
    y[7] = 1_000_000_000
    np.save(folder / "y.npy", y)
    with pytest.raises(DatasetError, match=r"y\.npy holds class id 1000000000; allowed: 0\.\.3 \(meta\.json num_classes\)"):
        load_mmap_graph(folder, verify=False)
    (folder / "meta.json").unlink()  # no declared class count: the node count bounds it
    with pytest.raises(DatasetError, match=r"y\.npy: labels: class id 1000000000 implies 1000000001 classes; allowed: at most 400"):
        load_mmap_graph(folder)
    np.save(folder / "y.npy", y.astype(np.float64))
    with pytest.raises(DatasetError, match=r"y\.npy has dtype float64; expected an integer \[N\] array"):
        load_mmap_graph(folder)


def test_truncated_header_shapes_and_bool_bytes_are_refused(ram_graph, tmp_path):
    folder = tmp_path / "g"
    save_mmap_graph(ram_graph, folder)
    ei = folder / "edge_index.npy"
    raw = ei.read_bytes()
    ei.write_bytes(raw.replace(b"(2, ", b"(9, ", 1))  # a shape the data cannot hold: refused, not allocated
    with pytest.raises(DatasetError, match=r"edge_index\.npy is truncated: shape \(9, \d+\) of int64"):
        load_mmap_graph(folder, verify=False)
    ei.write_bytes(raw)
    mask = folder / "train_mask.npy"
    raw = bytearray(mask.read_bytes())
    raw[-1] = 7
    mask.write_bytes(bytes(raw))
    with pytest.raises(DatasetError, match=r"train_mask\.npy holds bool byte 7; expected 0 or 1"):
        load_mmap_graph(folder, verify=False)


def test_big_endian_blocks_load(tmp_path):
    path, arr = _block(tmp_path, ">f8")
    x = MappedFeatures(path)
    want = torch.from_numpy(arr.astype(np.float32))
    assert torch.equal(x.materialize(), want) and torch.equal(x[torch.tensor([3, 1])], want[[3, 1]])


def test_the_coalesced_claim_is_checked_and_edges_canonicalised(ram_graph, tmp_path, caplog):
    folder = tmp_path / "g"
    save_mmap_graph(ram_graph, folder)
    ei = np.load(folder / "edge_index.npy")
    bad = np.concatenate([ei, ei[:, :3], np.array([[5], [5]])], axis=1)  # 3 duplicates and a self-loop
    np.save(folder / "edge_index.npy", bad)
    with caplog.at_level("INFO", logger="magkit"):
        g = load_mmap_graph(folder, verify=False)
    assert torch.equal(g.edge_index, ram_graph.edge_index)
    assert "not undirected-coalesced as meta.json claims" in caplog.text
    assert "dropped 1 self-loop(s) and 3 duplicate edge(s)" in caplog.text


def test_a_sorted_list_lacking_one_reverse_edge_is_not_taken_as_coalesced(ram_graph, tmp_path, caplog):
    folder = tmp_path / "g"
    save_mmap_graph(ram_graph, folder)
    ei = np.load(folder / "edge_index.npy")
    u, v = ei[:, 0]
    keep = ~((ei[0] == v) & (ei[1] == u))  # still sorted, unique and loop-free; (u, v) lacks its reverse
    np.save(folder / "edge_index.npy", np.ascontiguousarray(ei[:, keep]))
    with caplog.at_level("INFO", logger="magkit"):
        g = load_mmap_graph(folder, verify=False)
    assert "not undirected-coalesced as meta.json claims" in caplog.text
    assert torch.equal(g.edge_index, ram_graph.edge_index)  # the reverse edge is added back


@pytest.mark.skipif(not os.path.exists("/proc/self/smaps"), reason="reads /proc/self/smaps")
def test_scattered_gathers_keep_the_mapped_pages_at_one_window(tmp_path, monkeypatch):
    path = tmp_path / "big.npy"
    arr = np.arange(65536 * 128, dtype=np.float32).reshape(65536, 128)  # 32 MiB
    np.save(path, arr)
    idx = torch.randperm(65536, generator=torch.Generator().manual_seed(0))[:20000]
    idx = torch.cat([idx, idx[:7], -idx[7:9] - 1])  # repeats and negative ids
    x = MappedFeatures(path, resident_bytes=4 << 20)  # 8 windows
    seen = []
    take = np.take

    def watched_take(*args, **kwargs):  # the mapped pages right after every read step of the gather
        out = take(*args, **kwargs)
        seen.append(_mapped_kb(path.resolve()))
        return out

    monkeypatch.setattr(np, "take", watched_take)
    got = x[idx]
    monkeypatch.undo()
    assert torch.equal(got, torch.from_numpy(arr)[idx])  # the rows in the requested order
    # about one window of pages mapped at any time (plus the kernel's mapping granularity at its edges; the
    # whole gather touches most of the file)
    assert len(seen) == 8 and max(seen) <= 10 * 1024
    assert _mapped_kb(path.resolve()) <= 6 * 1024
    y = MappedFeatures(path, resident_bytes=1 << 40)  # one window: the pages a gather touched stay mapped
    assert torch.equal(y[idx], got)
    assert _mapped_kb(path.resolve()) >= 24 * 1024
