"""MM-Graph reader on tiny files written with torch.save, including refused pickles."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from magkit.data.graph import validate
from magkit.data.mmgraph import load_mmgraph, safe_torch_load
from magkit.exceptions import DatasetError

N, D = 12, 3
EDGES = [[0, 1], [1, 2], [2, 3], [3, 4], [4, 5], [5, 6], [6, 7], [7, 8], [8, 9], [9, 10], [10, 11], [11, 0], [3, 3]]


class _Exploit:
    """Unpickling this would create the marker file (a stand-in for running arbitrary code)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


@pytest.fixture
def mm_root(tmp_path) -> Path:
    root = tmp_path / "mm"
    folder = root / "ele-fashion"
    folder.mkdir(parents=True)
    gen = torch.Generator().manual_seed(0)
    feat = torch.randn(N, 2 * D, generator=gen)
    torch.save(feat, folder / "clip_feat.pt")
    torch.save(torch.randn(N, 8, generator=gen).double(), folder / "t5vit_feat.pt")
    torch.save(torch.tensor(EDGES), folder / "nc_edges-nodeid.pt")
    labels = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1, float("nan"), 2, -1, 1])
    torch.save(labels, folder / "labels-w-missing.pt")
    split = {
        "train_idx": torch.tensor([0, 1, 2, 3, 4, 5, 8]),  # node 8 has no label: left out
        "val_idx": [6, 7],  # a plain list
        "test_idx": np.array([9, 10, 11]),  # a numpy array; node 10 has no label
    }
    torch.save(split, folder / "split.pt")
    return root


def test_load_official(mm_root):
    g = load_mmgraph(mm_root, "ele-fashion")
    feat = torch.load(mm_root / "ele-fashion" / "clip_feat.pt", weights_only=True)
    assert g.name == "mmgraph:ele-fashion" and g.modalities == ("text", "image")
    assert torch.equal(g.x_text, feat[:, :D]) and torch.equal(g.x_image, feat[:, D:])
    assert g.y.tolist() == [0, 1, 2, 0, 1, 2, 0, 1, -1, 2, -1, 1]
    assert g.num_classes == 3
    assert g.train_mask.nonzero().flatten().tolist() == [0, 1, 2, 3, 4, 5]
    assert g.val_mask.nonzero().flatten().tolist() == [6, 7]
    assert g.test_mask.nonzero().flatten().tolist() == [9, 11]
    assert g.edge_index.shape == (2, 24)  # 12 ring edges, both directions; the self-loop dropped
    assert g.meta["split"] == "official"
    validate(g)


def test_edges_as_2_by_e_and_other_features(mm_root):
    folder = mm_root / "ele-fashion"
    ref = load_mmgraph(mm_root, "ele-fashion").edge_index
    torch.save(torch.tensor(EDGES).T.contiguous(), folder / "nc_edges-nodeid.pt")
    g = load_mmgraph(mm_root, "ele-fashion", features="T5VIT")
    assert torch.equal(g.edge_index, ref)
    assert g.modality_dims == {"text": 4, "image": 4} and g.x_text.dtype == torch.float32


def test_split_variants(mm_root):
    folder = mm_root / "ele-fashion"
    torch.save({"train": torch.arange(6), "valid": torch.tensor([6, 7]), "test": torch.tensor([9, 11])}, folder / "split.pt")
    assert load_mmgraph(mm_root, "ele-fashion").val_mask.nonzero().flatten().tolist() == [6, 7]
    torch.save({"train_idx": torch.arange(6), "test_idx": torch.tensor([9])}, folder / "split.pt")
    with pytest.raises(DatasetError, match=r"split\.pt: no val split; expected one of the keys val_idx, valid_idx.*found: train_idx, test_idx"):
        load_mmgraph(mm_root, "ele-fashion")
    torch.save({"train_idx": torch.arange(6), "val_idx": [5, 6], "test_idx": [9]}, folder / "split.pt")
    with pytest.raises(DatasetError, match=r"the train and val splits share 1 node\(s\) \(e\.g\. node 5\)"):
        load_mmgraph(mm_root, "ele-fashion")
    torch.save({"train_idx": torch.arange(6), "val_idx": [6], "test_idx": [12]}, folder / "split.pt")
    with pytest.raises(DatasetError, match=r"split 'test_idx' has node index 12; expected 0\.\.11"):
        load_mmgraph(mm_root, "ele-fashion")


def test_split_spec_instead_of_official(mm_root):
    g = load_mmgraph(mm_root, "ele-fashion", split="random:0.5/0.25", seed=3)
    assert g.meta["split"] == "random:0.5/0.25"
    assert not bool((g.train_mask & (g.y < 0)).any())
    assert int(g.train_mask.sum()) + int(g.val_mask.sum()) + int(g.test_mask.sum()) == 10  # the labelled nodes


def test_malicious_pickle_refused(mm_root, tmp_path):
    marker = tmp_path / "pwned"
    folder = mm_root / "ele-fashion"
    torch.save({"train_idx": _Exploit(marker), "val_idx": [6], "test_idx": [9]}, folder / "split.pt")
    with pytest.raises(DatasetError, match=r"split\.pt: refused to load: .*references io\.open.*weights_only=True"):
        load_mmgraph(mm_root, "ele-fashion")
    torch.save(_Exploit(marker), folder / "clip_feat.pt")
    with pytest.raises(DatasetError, match=r"clip_feat\.pt: refused to load"):
        load_mmgraph(mm_root, "ele-fashion")
    assert not marker.exists()


def test_object_array_refused(tmp_path):
    p = tmp_path / "obj.pt"
    torch.save(np.array(["a", 1], dtype=object), p)
    with pytest.raises(DatasetError, match=r"obj\.pt: (refused to load|the file is a numpy array of dtype object)"):
        safe_torch_load(p)


def test_numpy_payloads_accepted(mm_root):
    folder = mm_root / "ele-fashion"
    torch.save(np.array(EDGES, dtype=np.int64), folder / "nc_edges-nodeid.pt")
    torch.save([0, 1, 2, 0, 1, 2, 0, 1, -1, 2, -1, 1], folder / "labels-w-missing.pt")
    g = load_mmgraph(mm_root, "ele-fashion")
    assert g.y.tolist() == [0, 1, 2, 0, 1, 2, 0, 1, -1, 2, -1, 1] and g.edge_index.shape == (2, 24)


def test_bad_feature_files(mm_root):
    folder = mm_root / "ele-fashion"
    torch.save(torch.randn(N, 2 * D + 1), folder / "clip_feat.pt")
    with pytest.raises(DatasetError, match=r"clip_feat\.pt: feature matrix has shape \(12, 7\); expected \[N, 2d\]"):
        load_mmgraph(mm_root, "ele-fashion")
    torch.save(torch.randn(N * 2 * D), folder / "clip_feat.pt")
    with pytest.raises(DatasetError, match=r"feature matrix has shape \(72,\)"):
        load_mmgraph(mm_root, "ele-fashion")
    x = torch.randn(N, 2 * D)
    x[4, 1] = float("inf")
    torch.save(x, folder / "clip_feat.pt")
    with pytest.raises(DatasetError, match=r"1 row\(s\) with NaN/Inf values \(first: row 4\)"):
        load_mmgraph(mm_root, "ele-fashion")
    (folder / "clip_feat.pt").write_bytes(b"this is not a torch file")
    with pytest.raises(DatasetError, match=r"clip_feat\.pt: (not a readable torch file|refused to load)"):
        load_mmgraph(mm_root, "ele-fashion")


def test_unknown_features_and_dataset(mm_root):
    with pytest.raises(DatasetError, match=r"features: 'dinov2' has no file dinov2_feat\.pt .*available: clip, t5vit .*labels-w-missing\.pt"):
        load_mmgraph(mm_root, "ele-fashion", features="dinov2")
    with pytest.raises(DatasetError, match=r"MM-Graph books-nc: folder .*books-nc does not exist"):
        load_mmgraph(mm_root, "books-nc")


def test_labels_and_edges_checked(mm_root):
    folder = mm_root / "ele-fashion"
    torch.save(torch.tensor([0, 1, 2]), folder / "labels-w-missing.pt")
    with pytest.raises(DatasetError, match=r"labels have shape \(3,\); expected \[12\]"):
        load_mmgraph(mm_root, "ele-fashion")
    torch.save(torch.tensor([0.5] * N), folder / "labels-w-missing.pt")
    with pytest.raises(DatasetError, match="non-integer"):
        load_mmgraph(mm_root, "ele-fashion")
    torch.save(torch.zeros(N, dtype=torch.long), folder / "labels-w-missing.pt")
    torch.save(torch.tensor([[0, 1], [1, 12]]), folder / "nc_edges-nodeid.pt")
    with pytest.raises(DatasetError, match=r"node id 12 out of range; expected 0\.\.11"):
        load_mmgraph(mm_root, "ele-fashion")
    torch.save(torch.zeros(3, 3, dtype=torch.long), folder / "nc_edges-nodeid.pt")
    with pytest.raises(DatasetError, match=r"edge list has shape \(3, 3\); expected \[E, 2\] or \[2, E\]"):
        load_mmgraph(mm_root, "ele-fashion")
    (folder / "split.pt").unlink()
    torch.save(torch.tensor(EDGES), folder / "nc_edges-nodeid.pt")
    with pytest.raises(DatasetError, match=r"split\.pt: file does not exist"):
        load_mmgraph(mm_root, "ele-fashion")


def test_huge_label_and_big_endian_arrays(mm_root):
    folder = mm_root / "ele-fashion"
    labels = np.array([0, 1, 2, 0, 1, 2, 0, 1, -1, 2, -1, 1], dtype=">i8")  # big-endian numpy payload
    torch.save(labels, folder / "labels-w-missing.pt")
    g = load_mmgraph(mm_root, "ele-fashion")
    assert g.y.tolist() == labels.astype(np.int64).tolist() and g.num_classes == 3
    labels[3] = 1_000_000_000
    torch.save(labels, folder / "labels-w-missing.pt")
    with pytest.raises(DatasetError, match=r"labels-w-missing\.pt: labels: class id 1000000000 implies"):
        load_mmgraph(mm_root, "ele-fashion")
    torch.save(torch.tensor([0, 1, 2, 0.5, 1, 2, 0, 1, -1, 2, -1, 1]), folder / "labels-w-missing.pt")
    with pytest.raises(DatasetError, match="labels hold non-integer values"):
        load_mmgraph(mm_root, "ele-fashion")
