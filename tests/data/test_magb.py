"""MAGB reader: the DGL binary parser against the real Grocery file, corrupted copies, and load_magb."""

from __future__ import annotations

import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from magkit.data.graph import edge_homophily, validate
from magkit.data.magb import load_magb, load_magb_structure, magb_name, parse_dgl_bytes, read_dgl_graph
from magkit.exceptions import DatasetError

# ---------------------------------------------------------------------- a DGL binary writer for tests
GRAPH_MAGIC = 0xDD2E4FF046B4A13F
ND_MAGIC = 0xDD5E40F096B4A13F
HG_MAGIC = 0xDD589FBE35224ABF
IMG_MAGIC = 0xDD3C5FFE20046ABF
CSR_MAGIC = 0xDD6CD31205DFF127
COO_MAGIC = 0xDD61FFD305DFF127
UG_MAGIC = 0xDD2E60F0F6B4A127
_CODES = {"i": 0, "u": 1, "f": 2, "b": 6}


def _u64(v: int) -> bytes:
    return struct.pack("<Q", v)


def _i64(v: int) -> bytes:
    return struct.pack("<q", v)


def _nd(a) -> bytes:
    a = np.ascontiguousarray(np.asarray(a))
    head = _u64(ND_MAGIC) + b"\0" * 8 + struct.pack("<iii", 1, 0, a.ndim)
    head += struct.pack("<BBH", _CODES[a.dtype.kind], a.dtype.itemsize * 8, 1)
    head += b"".join(_i64(s) for s in a.shape) + _i64(a.nbytes)
    return head + a.astype(a.dtype.newbyteorder("<")).tobytes()


def _str(s: str) -> bytes:
    b = s.encode()
    return _u64(len(b)) + b


def _metagraph(nv: int = 1, ne: int = 1) -> bytes:
    indptr = np.array([0] + [ne] * nv, dtype=np.int64)
    ids = np.zeros(ne, dtype=np.int64)
    return _u64(IMG_MAGIC) + _u64(CSR_MAGIC) + _i64(nv) + _i64(nv) + _nd(indptr) + _nd(ids) + _nd(ids) + b"\0"


def write_dgl(path: Path, src, dst, num_nodes: int, ndata: dict | None = None, *, fmt: str = "coo",
              eids=None, num_graphs: int = 1, meta: tuple[int, int] = (1, 1), save_code: int | None = None) -> Path:
    """Write a homogeneous graph the way ``dgl.save_graphs`` does (format version 2)."""
    src, dst = np.asarray(src, dtype=np.int64), np.asarray(dst, dtype=np.int64)
    out = bytearray(_u64(GRAPH_MAGIC) + _u64(2) + _u64(2) + _u64(num_graphs))
    out += b"\0" * (4096 - len(out))
    gstart = 4096 + 16
    out += _u64(gstart) + _u64(0)  # start of the graph data, empty graph-label dict
    out += _u64(HG_MAGIC) + _metagraph(*meta) + _u64(1) + _u64(UG_MAGIC)
    code = {"coo": 1, "csr": 2, "csc": 4}[fmt]
    out += _i64(save_code if save_code is not None else code | (1 << 32)) + _i64(7 | (1 << 32))
    out += _metagraph()
    data = np.asarray(eids if eids is not None else np.empty(0), dtype=np.int64)
    if fmt == "coo":
        out += _u64(COO_MAGIC) + _i64(num_nodes) + _i64(num_nodes) + _nd(src) + _nd(dst) + _nd(data) + b"\0\0"
    else:
        rows, cols = (src, dst) if fmt == "csr" else (dst, src)
        order = np.argsort(rows, kind="stable")
        indptr = np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=num_nodes))]).astype(np.int64)
        out += _u64(CSR_MAGIC) + _i64(num_nodes) + _i64(num_nodes) + _nd(indptr) + _nd(cols[order])
        out += _nd(np.arange(src.size, dtype=np.int64)[order]) + b"\0"
    out += _u64(1) + _i64(num_nodes)
    ndata = ndata or {}
    out += _u64(1) + _u64(len(ndata)) + b"".join(_str(k) + _nd(v) for k, v in ndata.items())
    out += _u64(1) + _u64(0) + _u64(1) + _str("_N") + _u64(1) + _str("_E")
    out += _u64(16) + _u64(1) + _u64(gstart) + _u64(16)
    path.write_bytes(bytes(out))
    return path


def _tiny(path: Path, **kw) -> Path:
    src = [0, 1, 2, 3, 4, 5, 0, 7]
    dst = [1, 2, 3, 0, 5, 6, 0, 6]
    return write_dgl(path, src, dst, 8, {"label": np.array([0, 0, 1, 1, 2, 2, 0, 1])}, **kw)


# ---------------------------------------------------------------------- the real Grocery graph
N, E = 17074, 85670
SRC_AT, DST_AT, LABEL_AT = 4594, 690002, 1375505  # NDArray offsets in GroceryGraph.pt
NDIM, DTYPE, SHAPE, NBYTES, DATA = 24, 28, 32, 40, 48  # field offsets inside an NDArray


def test_real_file_layout(grocery_path):
    raw = grocery_path.read_bytes()
    for at in (SRC_AT, DST_AT, LABEL_AT):
        assert struct.unpack_from("<Q", raw, at)[0] == ND_MAGIC
    assert raw[LABEL_AT - 5:LABEL_AT] == b"label"


def test_real_grocery_graph(grocery_path):
    g = read_dgl_graph(grocery_path)
    assert g["num_nodes"] == N
    assert g["src"].dtype == np.int64 and g["dst"].dtype == np.int64
    assert g["src"].shape == (E,) and g["dst"].shape == (E,)
    assert int((g["src"] == g["dst"]).sum()) == 1
    assert list(g["ndata"]) == ["label"] and g["edata"] == {} and g["graph_labels"] == {}
    assert g["ntypes"] == ["_N"] and g["etypes"] == ["_E"]
    counts = np.bincount(g["ndata"]["label"])
    assert counts.size == 20 and counts.min() == 71 and counts.max() == 2416 and counts.sum() == N


def test_real_grocery_structure(magb_root, grocery_path):
    edge_index, y, c = load_magb_structure(magb_root, "grocery")
    assert edge_index.dtype == torch.long and y.dtype == torch.long
    assert edge_index.shape == (2, 2 * 71131)
    assert c == 20 and y.numel() == N
    assert not bool((edge_index[0] == edge_index[1]).any())
    key = edge_index[0] * N + edge_index[1]
    assert torch.equal(key, torch.unique(key))  # coalesced: sorted, no duplicates
    assert torch.equal(torch.sort(edge_index[1] * N + edge_index[0]).values, key)  # undirected
    assert round(edge_homophily(edge_index, y), 3) == 0.681


def test_writer_reproduces_real_layout(grocery_path, tmp_path):
    """Our understanding of the format: rewriting the parsed graph gives the same bytes after the 4 KiB header."""
    g = read_dgl_graph(grocery_path)
    out = write_dgl(tmp_path / "g.pt", g["src"], g["dst"], g["num_nodes"], g["ndata"], save_code=1)
    assert out.read_bytes()[4096:] == grocery_path.read_bytes()[4096:]


@pytest.mark.parametrize("cut", [0, 10, 31, 2000, 4100, SRC_AT + 20, SRC_AT + DATA + 1000,
                                 DST_AT + 3, LABEL_AT + DATA + 500, -9, -1])
def test_truncated_real_file(grocery_path, tmp_path, cut):
    raw = grocery_path.read_bytes()
    bad = tmp_path / "cut.pt"
    bad.write_bytes(raw[:cut])
    with pytest.raises(DatasetError, match=r"cut\.pt: offset \d+ .*truncated"):
        read_dgl_graph(bad)


def _patch(raw: bytes, at: int, fmt: str, value) -> bytes:
    b = bytearray(raw)
    struct.pack_into(fmt, b, at, value)
    return bytes(b)


CORRUPTIONS = {
    "graph magic": (lambda r: _patch(r, 0, "<Q", 0xDEADBEEF), r"offset 0 .*magic.*0xDD2E4FF046B4A13F"),
    "version": (lambda r: _patch(r, 8, "<Q", 7), r"version 7 is not supported"),
    "two graphs": (lambda r: _patch(r, 24, "<Q", 2), r"holds 2 graphs"),
    "ndarray magic": (lambda r: _patch(r, SRC_AT, "<Q", 1), rf"offset {SRC_AT} .*NDArray magic"),
    "flipped ndim": (lambda r: _patch(r, SRC_AT + NDIM, "<I", 1 | (0xFF << 24)), r"ndim -16777215 is not in 0..8"),
    "ndim 200": (lambda r: _patch(r, LABEL_AT + NDIM, "<i", 200), r"'label'.*ndim 200"),
    "dtype": (lambda r: _patch(r, SRC_AT + DTYPE, "<B", 3), r"unsupported dtype \(code 3"),
    "lanes": (lambda r: _patch(r, DST_AT + DTYPE + 2, "<H", 4), r"lanes 4"),
    "inflated byte count": (lambda r: _patch(r, SRC_AT + NBYTES, "<q", E * 8 + 8), r"byte count 685368 disagrees"),
    "shape vs byte count": (lambda r: _patch(r, DST_AT + SHAPE, "<q", E - 1), r"byte count 685360 disagrees with shape \(85669,\)"),
    "huge consistent array": (
        lambda r: _patch(_patch(r, SRC_AT + SHAPE, "<q", 10**15), SRC_AT + NBYTES, "<q", 8 * 10**15),
        r"truncated: the array needs 8000000000000000 byte",
    ),
    "negative shape": (lambda r: _patch(r, SRC_AT + SHAPE, "<q", -5), r"negative dimension -5"),
    "node count": (lambda r: _patch(r, LABEL_AT - 37, "<q", N + 1), r"records 17075 nodes .* 17074 x 17074"),
    "coo rows": (lambda r: _patch(r, SRC_AT - 8, "<q", 10), r"records 17074 nodes but its adjacency matrix is 10 x 17074"),
    "edge id out of range": (lambda r: _patch(r, DST_AT + DATA, "<q", N), r"destination node ids: 1 node id\(s\) out of range .*17074"),
    "negative edge id": (lambda r: _patch(r, SRC_AT + DATA + 8, "<q", -3), r"source node ids.*e\.g\. -3"),
    "label length": (
        lambda r: _patch(_patch(r, LABEL_AT + SHAPE, "<q", N - 1), LABEL_AT + NBYTES, "<q", (N - 1) * 8),
        r"GroceryGraph_bad\.pt: offset",
    ),
    "label name length": (lambda r: _patch(r, LABEL_AT - 13, "<Q", 2**40), r"node data\[0\] name length.*count 1099511627776"),
    "label name bytes": (lambda r: r[:LABEL_AT - 5] + b"\xff\xfe\xfd\xfc\xfb" + r[LABEL_AT:], r"not valid UTF-8"),
    "trailer": (lambda r: _patch(r, len(r) - 8, "<Q", 24), r"trailer"),
    "appended bytes": (lambda r: r + b"\0" * 8, r"8 unexpected byte\(s\)"),
}


@pytest.mark.parametrize("kind", list(CORRUPTIONS))
def test_corrupted_real_file(grocery_path, tmp_path, kind):
    make, pattern = CORRUPTIONS[kind]
    bad = tmp_path / "GroceryGraph_bad.pt"
    bad.write_bytes(make(grocery_path.read_bytes()))
    with pytest.raises(DatasetError, match=pattern) as info:
        read_dgl_graph(bad)
    assert "GroceryGraph_bad.pt" in str(info.value)


# ---------------------------------------------------------------------- small written files
@pytest.mark.parametrize("fmt", ["coo", "csr", "csc"])
def test_tiny_graph_formats(tmp_path, fmt):
    g = read_dgl_graph(_tiny(tmp_path / "t.pt", fmt=fmt))
    assert g["num_nodes"] == 8
    pairs = sorted(zip(g["src"].tolist(), g["dst"].tolist()))
    assert pairs == sorted(zip([0, 1, 2, 3, 4, 5, 0, 7], [1, 2, 3, 0, 5, 6, 0, 6]))
    assert g["ndata"]["label"].tolist() == [0, 0, 1, 1, 2, 2, 0, 1]


def test_edge_id_order(tmp_path):
    # the COO entries are stored permuted; the data array gives each entry's edge id
    p = write_dgl(tmp_path / "p.pt", [2, 0, 1], [0, 1, 2], 3, {"label": np.arange(3)}, eids=[2, 0, 1])
    g = read_dgl_graph(p)
    assert g["src"].tolist() == [0, 1, 2] and g["dst"].tolist() == [1, 2, 0]
    bad = write_dgl(tmp_path / "b.pt", [2, 0, 1], [0, 1, 2], 3, {"label": np.arange(3)}, eids=[0, 0, 1])
    with pytest.raises(DatasetError, match="not a permutation"):
        read_dgl_graph(bad)


def test_tiny_label_length_mismatch(tmp_path):
    p = write_dgl(tmp_path / "l.pt", [0, 1], [1, 2], 4, {"label": np.array([0, 1, 0])})
    with pytest.raises(DatasetError, match=r"l\.pt: node data 'label' has shape \(3,\); expected first dimension = number of nodes 4"):
        read_dgl_graph(p)


def test_tiny_edge_out_of_range(tmp_path):
    p = write_dgl(tmp_path / "e.pt", [0, 1], [1, 4], 4, {"label": np.zeros(4, dtype=np.int64)})
    with pytest.raises(DatasetError, match=r"destination node ids: 1 node id\(s\) out of range \(e\.g\. 4\); expected 0\.\.3"):
        read_dgl_graph(p)


def test_heterograph_refused(tmp_path):
    p = _tiny(tmp_path / "h.pt", meta=(2, 3))
    with pytest.raises(DatasetError, match=r"2 node type\(s\) and 3 edge type\(s\)"):
        read_dgl_graph(p)


def test_missing_file():
    with pytest.raises(DatasetError, match="cannot read"):
        read_dgl_graph("/nonexistent/dir/G.pt")


def test_every_truncation_and_byte_flip_is_caught(tmp_path):
    """Cut the file at every structural offset and flip every byte after the header: never another exception."""
    raw = _tiny(tmp_path / "t.pt").read_bytes()
    assert parse_dgl_bytes(raw)["num_nodes"] == 8
    for cut in list(range(0, 40)) + list(range(4090, len(raw))):
        with pytest.raises(DatasetError, match="truncated"):
            parse_dgl_bytes(raw[:cut], "bad.pt")
    silent = 0
    for at in list(range(0, 32)) + list(range(4096, len(raw))):
        b = bytearray(raw)
        b[at] ^= 0xFF
        try:
            g = parse_dgl_bytes(bytes(b), "bad.pt")
        except DatasetError:
            continue
        silent += 1  # a flip inside array data or a flag can give another valid graph: check it is one
        assert 0 <= g["src"].min() and g["src"].max() < g["num_nodes"] and g["dst"].max() < g["num_nodes"]
        assert g["ndata"]["label"].shape == (g["num_nodes"],)
    assert silent < (len(raw) - 4096) // 2


# ---------------------------------------------------------------------- load_magb
def _features(folder: Path, n: int, dims: dict[str, int], seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    out = {}
    for fname, d in dims.items():
        x = rng.normal(size=(n, d))  # float64, as on the hub
        folder.mkdir(parents=True, exist_ok=True)
        np.save(folder / fname, x)
        out[fname] = x
    return out


@pytest.fixture
def tiny_root(tmp_path) -> Path:
    """A MAGB-shaped folder around a small written graph: <root>/Grocery/GroceryGraph.pt + feature files."""
    root = tmp_path / "magb"
    (root / "Grocery").mkdir(parents=True)
    rng = np.random.default_rng(0)
    n = 60
    y = np.arange(n) % 3
    src, dst = rng.integers(0, n, 150), rng.integers(0, n, 150)
    write_dgl(root / "Grocery" / "GroceryGraph.pt", src, dst, n, {"label": y})
    _features(root / "Grocery" / "TextFeature", n, {"Grocery_roberta_base_512_mean.npy": 16})
    _features(root / "Grocery" / "ImageFeature", n, {"Grocery_clip.npy": 8}, seed=1)
    return root


def test_load_magb_tiny(tiny_root):
    g = load_magb(tiny_root, "grocery")
    x64 = np.load(tiny_root / "Grocery" / "TextFeature" / "Grocery_roberta_base_512_mean.npy")
    assert g.name == "magb:Grocery" and g.modalities == ("text", "image")
    assert g.modality_dims == {"text": 16, "image": 8}
    assert g.x_text.dtype == torch.float32 and g.x_image.dtype == torch.float32
    assert np.allclose(g.x_text.numpy(), x64, atol=1e-6)
    assert bool(g.modality_mask.all()) and g.num_classes == 3
    assert g.meta["feature_files"] == {"text": "Grocery_roberta_base_512_mean.npy", "image": "Grocery_clip.npy"}
    assert [int(g[f"{s}_mask"].sum()) for s in ("train", "val", "test")] == [36, 12, 12]
    validate(g)


def test_load_magb_picks_feature_files(tiny_root):
    tf = tiny_root / "Grocery" / "TextFeature"
    _features(tf, 60, {"Grocery_llama_8b_256_mean.npy": 4, "Grocery_ablation_2.npy": 5})
    assert load_magb(tiny_root, "Grocery").modality_dims["text"] == 5  # first file by name
    assert load_magb(tiny_root, "Grocery", text_features="llama").modality_dims["text"] == 4
    assert load_magb(tiny_root, "Grocery", text_features="Grocery_roberta_base_512_mean").modality_dims["text"] == 16
    assert load_magb(tiny_root, "Grocery", text_features=tf / "Grocery_llama_8b_256_mean.npy").modality_dims["text"] == 4
    with pytest.raises(DatasetError, match=r"'_mean' matches 2 files"):
        load_magb(tiny_root, "Grocery", text_features="_mean")
    with pytest.raises(DatasetError, match=r"'bge' matches no file .*available: Grocery_ablation_2\.npy"):
        load_magb(tiny_root, "Grocery", text_features="bge")
    with pytest.raises(DatasetError, match=r"image_features: file .*nope\.npy does not exist"):
        load_magb(tiny_root, "Grocery", image_features=tiny_root / "nope.npy")


def test_load_magb_feature_errors(tiny_root):
    tf = tiny_root / "Grocery" / "TextFeature" / "Grocery_roberta_base_512_mean.npy"
    np.save(tf, np.zeros((59, 4)))
    with pytest.raises(DatasetError, match=r"text features: .*Grocery_roberta_base_512_mean\.npy has 59 rows; expected one per node \(60\)"):
        load_magb(tiny_root, "Grocery")
    x = np.zeros((60, 4))
    x[17, 2] = np.nan
    np.save(tf, x)
    with pytest.raises(DatasetError, match=r"Grocery_roberta_base_512_mean\.npy has NaN/Inf .* row 17"):
        load_magb(tiny_root, "Grocery")
    np.save(tf, np.zeros(60))
    with pytest.raises(DatasetError, match=r"shape \(60,\); expected 2-D"):
        load_magb(tiny_root, "Grocery")


def test_load_magb_missing_features(tiny_root):
    shutil.rmtree(tiny_root / "Grocery" / "ImageFeature")
    expected = str(tiny_root / "Grocery" / "ImageFeature")
    with pytest.raises(DatasetError) as info:
        load_magb(tiny_root, "Grocery")
    msg = str(info.value)
    assert "no image features" in msg and expected in msg and "*.npy" in msg
    assert "does not exist" in msg and "load_magb_structure" in msg and "text features" not in msg
    shutil.rmtree(tiny_root / "Grocery" / "TextFeature")
    (tiny_root / "Grocery" / "TextFeature").mkdir()
    with pytest.raises(DatasetError) as info:
        load_magb(tiny_root, "Grocery", text_features="roberta")
    msg = str(info.value)
    assert "no text features" in msg and "TextFeature" in msg and "has no .npy file" in msg
    assert "no image features" in msg and expected in msg


def test_load_magb_names(tiny_root):
    assert magb_name("reddit_s") == "Reddit-S" and magb_name("MOVIES") == "Movies"
    with pytest.raises(DatasetError, match=r"unknown MAGB dataset 'Cora'; allowed: Movies, Toys, Grocery, Reddit-S, Reddit-M"):
        load_magb(tiny_root, "Cora")
    with pytest.raises(DatasetError, match=r"graph file not found: expected .*Toys.*ToysGraph\.pt"):
        load_magb(tiny_root, "toys")


def test_load_magb_raw_text(tiny_root):
    csv_path = tiny_root / "Grocery" / "Grocery.csv"
    lines = ["id,label,title"] + [f'{i},{i % 3},"item {i}, ""quoted"""' for i in range(60)]
    csv_path.write_text("\n".join(lines) + "\n")
    g = load_magb(tiny_root, "Grocery")
    assert len(g.raw_text) == 60 and g.raw_text[5] == 'item 5, "quoted"'
    sub = g.subgraph(torch.tensor([3, 5, 7]))
    assert sub.raw_text == ["item 3, \"quoted\"", "item 5, \"quoted\"", "item 7, \"quoted\""]
    assert not hasattr(load_magb(tiny_root, "Grocery", raw_text=False), "raw_text")
    csv_path.write_text("\n".join(lines[:-1]) + "\n")
    with pytest.raises(DatasetError, match=r"Grocery\.csv: 59 text rows; expected one per node \(60\)"):
        load_magb(tiny_root, "Grocery")


def test_load_magb_real_graph(grocery_path, tmp_path):
    folder = tmp_path / "Grocery"
    folder.mkdir()
    shutil.copy(grocery_path, folder / "GroceryGraph.pt")
    _features(folder / "TextFeature", N, {"Grocery_roberta_base_512_mean.npy": 6})
    _features(folder / "ImageFeature", N, {"Grocery_clip_vit.npy": 4})
    g = load_magb(tmp_path, "Grocery", split="magb")
    assert g.num_nodes == N and g.edge_index.shape == (2, 142262) and g.num_classes == 20
    sizes = [int(g[f"{s}_mask"].sum()) for s in ("train", "val", "test")]
    assert sizes == [int(N * 0.6), int(N * 0.8) - int(N * 0.6), N - int(N * 0.8)] == [10244, 3415, 3415]
    validate(g)


# ---------------------------------------------------------------------- trust: class counts, canonical edges
def test_huge_label_is_a_dataset_error_not_an_allocation(tmp_path):
    from magkit.data.magb import magb_structure

    path = write_dgl(tmp_path / "t.pt", [0, 1], [1, 2], 4, {"label": np.array([0, 1, 1_000_000_000, 0])})
    with pytest.raises(DatasetError, match=r"t\.pt: node data 'label': class id 1000000000 implies 1000000001 "
                                           r"classes; allowed: at most 4"):
        magb_structure(read_dgl_graph(path), path)
    path = write_dgl(tmp_path / "f.pt", [0, 1], [1, 2], 4, {"label": np.array([0.0, 1.5, 1.0, 0.0])})
    with pytest.raises(DatasetError, match="node data 'label' must be 1-D integer class ids"):
        magb_structure(read_dgl_graph(path), path)


def test_structure_drops_and_logs_self_loops_and_duplicates(tmp_path, caplog):
    from magkit.data.magb import magb_structure

    path = _tiny(tmp_path / "t.pt")  # one self-loop (0, 0)
    with caplog.at_level("INFO", logger="magkit"):
        ei, y, c = magb_structure(read_dgl_graph(path), path)
    assert "dropped 1 self-loop(s) and 0 duplicate edge(s)" in caplog.text
    assert not bool((ei[0] == ei[1]).any()) and ei.size(1) == 14 and c == 3
