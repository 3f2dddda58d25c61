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


# ---------------------------------------------------------------------- trust: edges, ids, class counts
def test_validate_rejects_duplicate_edges_and_self_loops_with_counts():
    g = tiny()
    ei = g.edge_index
    g.edge_index = torch.cat([ei, ei[:, :2], torch.tensor([[3, 5], [3, 5]])], dim=1)  # 2 repeats, 2 loops
    with pytest.raises(GraphValidationError) as err:
        validate(g)
    msg = str(err.value)
    assert "2 duplicate edge(s) and 2 self-loop(s)" in msg and "magkit.data.to_undirected" in msg
    g.edge_index = to_undirected(g.edge_index, g.num_nodes)
    assert torch.equal(validate(g).edge_index, ei)


def test_float_labels_and_edge_ids_are_refused_not_truncated():
    x = {"text": torch.zeros(4, 2)}
    with pytest.raises(GraphValidationError, match=r"y: 1 non-integer value\(s\) would be truncated \(got \[1.5\]\)"):
        MultimodalGraph(x, None, torch.tensor([0.0, 1.5, 1.0, 0.0]))
    with pytest.raises(GraphValidationError, match="edge_index: 1 non-integer"):
        MultimodalGraph(x, torch.tensor([[0.0, 1.0], [2.5, 3.0]]), torch.tensor([0, 1, 1, 0]))
    with pytest.raises(GraphValidationError, match="edge_index: .*non-integer"):
        MultimodalGraph(x, torch.tensor([[0.0, float("nan")], [2.0, 3.0]]), torch.tensor([0, 1, 1, 0]))
    g = MultimodalGraph(x, torch.tensor([[0.0], [2.0]]), torch.tensor([0.0, 1.0, 1.0, 0.0]))  # whole floats
    assert g.y.dtype == torch.long and g.y.tolist() == [0, 1, 1, 0] and g.edge_index.tolist() == [[0, 2], [2, 0]]


def test_class_count_beyond_the_node_count_is_refused_before_allocating():
    from magkit.data.graph import MAX_CLASSES, check_class_count
    from magkit.exceptions import DatasetError

    g = tiny()
    g.y = g.y.clone()
    g.y[0] = 1_000_000_000
    g._set_meta(num_classes=1_000_000_001)
    with pytest.raises(GraphValidationError, match=r"num_classes: out of range \(got 1000000001\); allowed: 1\.\.12"):
        validate(g)
    with pytest.raises(DatasetError, match=r"labels\.npy: label: class id 999 implies 1000 classes; allowed: at most 12"):
        check_class_count(1000, 12, "labels.npy")
    assert check_class_count(12, 10**9, "x") == 12 and MAX_CLASSES == 100_000


# ---------------------------------------------------------------------- the chunked check of the canonical edge form
def _sorted_pairs(pairs):
    return torch.tensor(sorted(pairs)).t().contiguous()


@pytest.mark.parametrize("chunk", [1, 2, 3, 1 << 20])
def test_is_undirected_coalesced_is_exact_across_chunk_boundaries(monkeypatch, chunk):
    import magkit.data.graph as G

    monkeypatch.setattr(G, "EDGE_CHECK_CHUNK", chunk)
    n = 12
    ei = to_undirected(torch.randint(0, n, (2, 30), generator=torch.Generator().manual_seed(1)), n)
    pairs = [tuple(p) for p in ei.t().tolist()]
    assert G.is_undirected_coalesced(ei, n)
    assert G.is_undirected_coalesced(torch.empty(2, 0, dtype=torch.long), n)
    u, v = pairs[4]
    cases = {
        "a duplicate": _sorted_pairs(pairs + [pairs[4]]),
        "a self-loop": _sorted_pairs(pairs + [(n - 1, n - 1)]),
        "a missing reverse": _sorted_pairs([p for p in pairs if p != (v, u)]),
        "unsorted": ei[:, torch.tensor([1, 0] + list(range(2, ei.size(1))))],
        "directed": torch.tensor([[0, 1], [1, 2]]),
    }
    for what, bad in cases.items():
        assert not G.is_undirected_coalesced(bad, n), what


def test_is_undirected_coalesced_is_recomputed_after_an_in_place_change():
    from magkit.data.graph import is_undirected_coalesced

    ei = to_undirected(torch.tensor([[0, 1, 2], [1, 2, 3]]), 4)
    assert is_undirected_coalesced(ei, 4)
    ei[1, 0] = 3  # (0, 3) without its reverse
    assert not is_undirected_coalesced(ei, 4)
    ei[1, 0] = 1
    assert is_undirected_coalesced(ei, 4)


def test_validate_sorts_no_full_key_copy_for_the_canonical_form(monkeypatch):
    import magkit.data.graph as G

    def no_sort(*args):
        raise AssertionError("a full sort of the edge keys")

    monkeypatch.setattr(G, "_sorted_keys", no_sort)
    validate(tiny())
    g = tiny()
    g.edge_index = g.edge_index[:, torch.randperm(g.edge_index.size(1), generator=torch.Generator().manual_seed(0))]
    with pytest.raises(AssertionError, match="a full sort"):  # an unsorted list takes the sorting comparison
        validate(g)


@pytest.mark.parametrize("chunk", [2, 1 << 20])
def test_chunked_edge_check_reports_the_same_errors(monkeypatch, chunk):
    import magkit.data.graph as G

    monkeypatch.setattr(G, "EDGE_CHECK_CHUNK", chunk)
    pairs = [tuple(p) for p in tiny().edge_index.t().tolist()]
    for edges, fragment in [
        (pairs + [(3, 3)], r"^edge_index: 0 duplicate edge\(s\) and 1 self-loop\(s\)"),
        (pairs + [pairs[5]] * 2, r"^edge_index: 2 duplicate edge\(s\) and 0 self-loop\(s\)"),
        ([p for p in pairs if p != (4, 3)], r"^edge_index: graph is not undirected \(some edge lacks its reverse\)"),
    ]:
        g = tiny()
        g.edge_index = _sorted_pairs(edges)
        with pytest.raises(GraphValidationError, match=fragment):
            validate(g)
