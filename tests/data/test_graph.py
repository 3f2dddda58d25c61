"""The container and every validation error (each message checked)."""

import copy

import pytest
import torch
import torch_geometric.transforms as T

from magkit.data import MultimodalGraph, apply_split, describe, edge_homophily, to_undirected, validate
from magkit.exceptions import GraphValidationError


def tiny(n=12, c=3):
    g = torch.Generator().manual_seed(0)
    y = torch.arange(n) % c
    ei = torch.stack([torch.arange(n - 1), torch.arange(1, n)])
    graph = MultimodalGraph(
        {"text": torch.randn(n, 4, generator=g), "image": torch.randn(n, 3, generator=g)}, ei, y,
        modality_mask={"image": torch.arange(n) % 4 != 0}, name="tiny",
    )
    idx = torch.arange(n)
    graph.train_mask = idx < 6
    graph.val_mask = (idx >= 6) & (idx < 9)
    graph.test_mask = idx >= 9
    return graph


def test_container_fields():
    g = tiny()
    assert g.modalities == ("text", "image")
    assert g.num_classes == 3
    assert g.modality_dims == {"text": 4, "image": 3}
    assert g.x_text.dtype == torch.float32
    assert g.edge_index.size(1) == 22  # 11 path edges, both directions
    assert g.num_undirected_edges == 11
    assert g.presence("image").sum() == 9
    assert g.fused().shape == (12, 7)
    # absent image rows contribute nothing to early fusion
    assert torch.all(g.fused()[0, 4:] == 0)
    validate(g)


def test_to_undirected_coalesces_and_drops_self_loops():
    ei = torch.tensor([[0, 1, 1, 2, 2], [1, 0, 1, 0, 0]])
    out = to_undirected(ei, 3)
    assert out.tolist() == [[0, 0, 1, 2], [1, 2, 0, 0]]


def test_subgraph_and_transforms_keep_the_layout():
    g = tiny()
    s = g.subgraph(torch.tensor([0, 1, 2, 3]))
    assert isinstance(s, MultimodalGraph)
    assert s.num_nodes == 4 and s.x_image.shape == (4, 3) and s.modality_mask.shape == (4, 2)
    assert s.modalities == g.modalities and s.edge_index.size(1) == 6
    t = T.AddSelfLoops()(copy.copy(g))
    assert t.edge_index.size(1) == 22 + 12 and t.modalities == g.modalities


def test_add_modality_and_checksum_changes():
    g = tiny()
    before = g.checksum()
    g.add_modality("audio", torch.ones(12, 2), present=torch.arange(12) < 5)
    assert g.modalities == ("text", "image", "audio")
    assert g.modality_mask.shape == (12, 3) and int(g.presence("audio").sum()) == 5
    assert g.checksum() != before
    validate(g)


def test_describe_numbers():
    g = tiny()
    info = describe(g)
    assert info["nodes"] == 12 and info["edges_undirected"] == 11 and info["classes"] == 3
    assert info["class_sizes"] == [4, 4, 4]
    assert info["splits"] == {"train": 6, "val": 3, "test": 3}
    assert info["modalities"]["image"] == {"dim": 3, "present": 9}
    assert info["homophily"] == pytest.approx(edge_homophily(g.edge_index, g.y)) and info["homophily"] == 0.0


@pytest.mark.parametrize(
    "mutate, field, fragment",
    [
        (lambda g: setattr(g, "x_text", torch.randn(11, 4)), "x_text", "row count differs from the node count"),
        (lambda g: g.x_image.__setitem__((2, 1), float("nan")), "x_image", "NaN/Inf"),
        (lambda g: g.x_text.__setitem__((5, 0), float("inf")), "x_text", r"rows \[5\]"),
        (lambda g: g.y.__setitem__(3, 7), "y", r"out of range.*got \[7\].*0\.\.2"),
        (lambda g: g.y.__setitem__(3, -5), "y", "out of range"),
        (lambda g: setattr(g, "edge_index", torch.tensor([[0, 12], [12, 0]])), "edge_index", r"out of range \(got 12\); allowed: 0\.\.11"),
        (lambda g: setattr(g, "edge_index", torch.tensor([[0, -1], [-1, 0]])), "edge_index", "negative node index"),
        (lambda g: setattr(g, "edge_index", torch.tensor([[0], [1]])), "edge_index", "not undirected"),
        (lambda g: setattr(g, "val_mask", torch.zeros(12, dtype=torch.bool)), "val_mask", "split is empty"),
        (lambda g: g.test_mask.__setitem__(0, True), "train_mask/test_mask", r"overlap on 1 node\(s\)"),
        (lambda g: setattr(g, "train_mask", torch.arange(12) < 2), "train_mask", r"class\(es\) absent from training.*classes \[2\]"),
        (lambda g: setattr(g, "modality_mask", torch.ones(12, 3, dtype=torch.bool)), "modality_mask", "wrong shape"),
        (lambda g: setattr(g, "y", g.y.float()), "y", "int64"),
        (lambda g: delattr(g, "test_mask"), "test_mask", "split is missing"),
    ],
)
def test_validation_errors_name_the_field(mutate, field, fragment):
    g = tiny()
    mutate(g)
    with pytest.raises(GraphValidationError, match=fragment) as info:
        validate(g)
    assert info.value.field == field
    assert str(info.value).startswith(field)


def test_unlabelled_nodes_only_outside_splits():
    g = tiny()
    g.y[10] = -1
    with pytest.raises(GraphValidationError, match="unlabelled"):
        validate(g)
    g.test_mask[10] = False
    validate(g)


def test_apply_split_magb_sizes():
    g = tiny(n=100, c=3)
    g.train_mask = g.val_mask = g.test_mask = None
    apply_split(g, "magb")
    assert (int(g.train_mask.sum()), int(g.val_mask.sum()), int(g.test_mask.sum())) == (60, 20, 20)
