"""The neutral graph-files format (nodes table, edges table, .npy features) and the feature-matrix loader."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from magkit.data import io as mio
from magkit.data.graph import validate
from magkit.data.io import load_feature_matrix, load_graph_files
from magkit.exceptions import DatasetError

NODES = """id,text,image,label
p1,red apple,img/p1.jpg,fruit
p2,green apple,,fruit
p3,,img/p3.jpg,tool
p4,"hammer, steel",img/p4.jpg,tool
p5,banana,img/p5.jpg,fruit
p6,saw,img/p6.jpg,
p7,pear,img/p7.jpg,fruit
p8,drill,img/p8.jpg,tool
p9,wrench,,tool
p10,plum,img/p10.jpg,fruit
"""
EDGES = "source,target\np1,p2\np2,p5\np3,p4\np4,p8\np8,p9\np5,p7\np7,p10\np1,p1\np2,p1\n"


def _write(folder: Path, nodes: str = NODES, edges: str = EDGES, n: int = 10, dims=(4, 3)) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "nodes.csv").write_text(nodes)
    (folder / "edges.csv").write_text(edges)
    rng = np.random.default_rng(0)
    np.save(folder / "text.npy", rng.normal(size=(n, dims[0])))
    np.save(folder / "image.npy", rng.normal(size=(n, dims[1])).astype(np.float32))
    return {"nodes": folder / "nodes.csv", "edges": folder / "edges.csv",
            "text": folder / "text.npy", "image": folder / "image.npy"}


def _load(p: dict[str, Path], **kw):
    kw.setdefault("features", {"text": p["text"], "image": p["image"]})
    return load_graph_files(p["nodes"], p["edges"], **kw)


def test_csv_graph(tmp_path):
    p = _write(tmp_path)
    g = _load(p, split="random:0.5/0.2")
    assert g.name == "files:nodes" and g.num_nodes == 10
    assert g.class_names == ("fruit", "tool") and g.num_classes == 2
    assert g.y.tolist() == [0, 0, 1, 1, 0, -1, 0, 1, 1, 0]
    assert g.presence("text").tolist() == [True, True, False, True, True, True, True, True, True, True]
    assert g.presence("image").tolist() == [True, False, True, True, True, True, True, True, False, True]
    assert g.edge_index.shape == (2, 14)  # 7 distinct undirected edges; the self-loop and the repeat dropped
    assert g.node_id[3] == "p4" and g.raw_text[3] == "hammer, steel" and g.image_path[2] == "img/p3.jpg"
    assert np.allclose(g.x_text.numpy(), np.load(p["text"]), atol=1e-6) and g.x_text.dtype == torch.float32
    assert not bool(g.train_mask[5] | g.val_mask[5] | g.test_mask[5])  # p6 has no label
    assert g.meta["split"] == "random:0.5/0.2"


def test_jsonl_nodes_with_integer_ids_and_labels(tmp_path):
    p = _write(tmp_path, n=4)
    rows = [{"id": 10, "text": "a", "label": 1}, {"id": 11, "text": "", "label": 0},
            {"id": 12, "text": "c", "label": None}, {"id": 13, "label": 2}]
    jp = tmp_path / "nodes.jsonl"
    jp.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    (tmp_path / "edges.csv").write_text("source,target\n10,11\n12,13\n")
    g = load_graph_files(jp, p["edges"], features={"text": p["text"]}, split="random:0.5/0.25")
    assert g.y.tolist() == [1, 0, -1, 2] and g.class_names is None and g.num_classes == 3
    assert g.presence("text").tolist() == [True, False, True, False]
    assert g.edge_index.tolist() == [[0, 1, 2, 3], [1, 0, 3, 2]]
    assert g.modalities == ("text",)


def test_split_column_overrides_spec(tmp_path):
    nodes = "id,label,split\na,x,train\nb,y,train\nc,x,VAL\nd,y,valid\ne,x,test\nf,y,\ng,,\n"
    p = _write(tmp_path, nodes=nodes, edges="source,target\na,b\n", n=7)
    g = _load(p, split="kshot:1")
    assert g.train_mask.tolist() == [True, True, False, False, False, False, False]
    assert g.val_mask.tolist() == [False, False, True, True, False, False, False]
    assert g.test_mask.tolist() == [False, False, False, False, True, False, False]
    assert g.meta["split"] == "file"
    validate(g)


def test_split_column_errors(tmp_path):
    p = _write(tmp_path, nodes="id,label,split\na,x,train\nb,y,holdout\n", edges="source,target\n", n=2)
    with pytest.raises(DatasetError, match=r"nodes\.csv line 3: split 'holdout' is not a split; allowed: train, val"):
        _load(p)
    p = _write(tmp_path, nodes="id,label,split\na,x,train\nb,,test\n", edges="source,target\n", n=2)
    with pytest.raises(DatasetError, match=r"line 3: node 'b' is in split 'test' but has no label"):
        _load(p)


def test_edge_with_unknown_node(tmp_path):
    p = _write(tmp_path, edges="source,target\np1,p2\np3,p42\n")
    with pytest.raises(DatasetError, match=r"edges\.csv line 3: target 'p42' is not an id of the nodes file nodes\.csv"):
        _load(p)


def test_duplicate_and_empty_ids(tmp_path):
    p = _write(tmp_path, nodes="id,label\na,x\nb,y\na,y\n", n=3)
    with pytest.raises(DatasetError, match=r"line 4: duplicate id 'a' \(first on line 2\)"):
        _load(p)
    p = _write(tmp_path, nodes="id,label\na,x\n,y\n", n=2)
    with pytest.raises(DatasetError, match=r"line 3: empty id"):
        _load(p)


def test_missing_columns(tmp_path):
    p = _write(tmp_path, nodes="id,text\na,hello\n", n=1)
    with pytest.raises(DatasetError, match=r"nodes\.csv lacks column\(s\) 'label'; found: id, text; expected at least: id, label"):
        _load(p)
    p = _write(tmp_path, edges="src,dst\np1,p2\n")
    with pytest.raises(DatasetError, match=r"edges\.csv lacks column\(s\) 'source', 'target'; found: src, dst"):
        _load(p)
    p = _write(tmp_path, nodes="id,label\na,x,extra\n", n=1)
    with pytest.raises(DatasetError, match=r"line 2 has 3 fields; the header has 2"):
        _load(p)


def test_feature_errors(tmp_path):
    p = _write(tmp_path)
    np.save(p["image"], np.zeros((9, 3)))
    with pytest.raises(DatasetError, match=r"features\['image'\]: .*image\.npy has 9 rows; expected one per node \(10\)"):
        _load(p)
    with pytest.raises(DatasetError, match=r"features: no feature file given"):
        _load(p, features=None)
    with pytest.raises(DatasetError, match=r"features\['text'\]: file .*missing\.npy does not exist"):
        _load(p, features={"text": tmp_path / "missing.npy"})
    with pytest.raises(DatasetError, match=r"nodes file: file .*none\.csv does not exist"):
        load_graph_files(tmp_path / "none.csv", p["edges"], features={"text": p["text"]})


def test_labels_negative_id_refused(tmp_path):
    p = _write(tmp_path, nodes="id,label\na,1\nb,-3\n", edges="source,target\n", n=2)
    with pytest.raises(DatasetError, match=r"class id -3 is negative"):
        _load(p)


# ---------------------------------------------------------------------- load_feature_matrix
def test_feature_matrix_chunks_and_cast(tmp_path, monkeypatch):
    monkeypatch.setattr(mio, "_CHUNK_BYTES", 64)  # 2 rows of 4 float64 per chunk
    x = np.arange(40, dtype=np.float64).reshape(10, 4) / 3
    np.save(tmp_path / "x.npy", x)
    out = load_feature_matrix(tmp_path / "x.npy", 10)
    assert out.dtype == np.float32 and np.array_equal(out, x.astype(np.float32))
    x[7, 1] = np.inf
    np.save(tmp_path / "x.npy", x)
    with pytest.raises(DatasetError, match=r"x\.npy has NaN/Inf .* in row 7; expected finite values"):
        load_feature_matrix(tmp_path / "x.npy", 10)
    x[7, 1] = 1e300  # finite in float64, infinite in float32
    np.save(tmp_path / "x.npy", x)
    with pytest.raises(DatasetError, match=r"row 7"):
        load_feature_matrix(tmp_path / "x.npy")


def test_feature_matrix_refuses_bad_files(tmp_path):
    np.save(tmp_path / "o.npy", np.array([["a"], ["b"]], dtype=object), allow_pickle=True)
    with pytest.raises(DatasetError, match=r"o\.npy is not a readable \.npy array"):
        load_feature_matrix(tmp_path / "o.npy")
    np.save(tmp_path / "s.npy", np.array([["a"], ["b"]]))
    with pytest.raises(DatasetError, match=r"s\.npy has dtype <U1; expected a float or integer dtype"):
        load_feature_matrix(tmp_path / "s.npy")
    (tmp_path / "junk.npy").write_bytes(b"not numpy at all")
    with pytest.raises(DatasetError, match=r"junk\.npy is not a readable \.npy array"):
        load_feature_matrix(tmp_path / "junk.npy")


# ---------------------------------------------------------------------- trust: presence files, labels
def test_presence_files_written_by_encode_mark_nodes_absent(tmp_path):
    """60 nodes, every image path given, 30 image files missing: ``magkit encode`` marks them absent in
    ``image_present.npy``, and the loader honours it (with the empty ``text`` cells)."""
    n = 60
    rows = ["id,text,image,label"] + [f"n{i},{'' if i % 7 == 0 else f'text {i}'},img/{i}.jpg,{i % 3}" for i in range(n)]
    folder = tmp_path / "g"
    (folder / "features").mkdir(parents=True)
    (folder / "nodes.csv").write_text("\n".join(rows) + "\n")
    (folder / "edges.csv").write_text("source,target\n" + "".join(f"n{i},n{i + 1}\n" for i in range(n - 1)))
    image_present = np.arange(n) % 2 == 0  # the odd images are missing on disk
    image = np.random.default_rng(0).normal(size=(n, 5)).astype(np.float32) * image_present[:, None]
    np.save(folder / "features" / "image.npy", image)
    np.save(folder / "features" / "image_present.npy", image_present)
    np.save(folder / "features" / "text.npy", np.ones((n, 3), dtype=np.float32))
    np.save(folder / "features" / "text_present.npy", np.ones(n, dtype=bool))
    from magkit.data import load_dataset

    g = load_dataset(f"files:{folder}")
    assert int(g.presence("image").sum()) == 30 and torch.equal(g.presence("image"), torch.from_numpy(image_present))
    assert int(g.presence("text").sum()) == n - len(range(0, n, 7))  # empty text cells stay absent
    np.save(folder / "features" / "image_present.npy", np.ones(n - 1, dtype=bool))
    with pytest.raises(DatasetError, match=r"presence\['image'\]: .*image_present\.npy has shape \(59,\); expected bool \[60\]"):
        load_dataset(f"files:{folder}")
    np.save(folder / "features" / "image_present.npy", np.full(n, 2, dtype=np.int8))
    with pytest.raises(DatasetError, match="holds value 2; expected a bool or 0/1"):
        load_dataset(f"files:{folder}")


@pytest.mark.parametrize("bad, message", [
    ("1.5", r"'1\.5' is a non-integer number in a column of integer class ids"),
    ("1e9", r"'1e9' is a non-integer number in a column of integer class ids"),
    ("cat", r"'cat' is a name in a column of integer class ids"),
    ("1000000000", r"nodes\.csv: label: class id 1000000000 implies 1000000001 classes; allowed: at most 10 classes"),
])
def test_damaged_label_columns_are_refused(tmp_path, bad, message):
    nodes = "id,label\n" + "".join(f"p{i},{bad if i == 4 else i % 2}\n" for i in range(1, 11))
    p = _write(tmp_path, nodes=nodes)
    with pytest.raises(DatasetError, match=message):
        _load(p)
    nodes = "id,label\n" + "".join(f"p{i},{i % 2}.5\n" for i in range(1, 11))
    with pytest.raises(DatasetError, match=r"'1\.5' is not an integer class id"):
        _load(_write(tmp_path, nodes=nodes))


def test_big_endian_features_load_as_native_float32(tmp_path):
    p = _write(tmp_path)
    want = np.random.default_rng(3).normal(size=(10, 4))
    np.save(p["text"], want.astype(">f8"))
    g = _load(p)
    assert g.x_text.dtype == torch.float32 and torch.equal(g.x_text, torch.from_numpy(want.astype(np.float32)))


def test_truncated_or_padded_feature_files_are_refused(tmp_path):
    p = _write(tmp_path)
    raw = p["image"].read_bytes()
    p["image"].write_bytes(raw[:-4])
    with pytest.raises(DatasetError, match=r"image\.npy is truncated: shape \(10, 3\) of float32 needs 120 data bytes"):
        _load(p)
    p["image"].write_bytes(raw + b"\0" * 8)
    with pytest.raises(DatasetError, match="longer than its header says"):
        _load(p)
