"""Tests of the synthetic generators: DC-SBM structure and the node-level modality-quality feature model."""

from __future__ import annotations

import importlib
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from magkit.data.graph import MultimodalGraph, edge_homophily, validate
from magkit.data.synthetic import (
    PROFILES,
    _probe,
    attach_synthetic_features,
    calibrate,
    make_synthetic_mag,
    sample_dcsbm,
)
from magkit.exceptions import ConfigError

GROCERY = Path(__file__).parents[2].parent / "shared/data/magb/Grocery/GroceryGraph.pt"


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Small dense ops run fastest on one thread (and do not fight other processes for the cores)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def text_dominant() -> MultimodalGraph:
    return make_synthetic_mag(3000, num_classes=8, profile="text-dominant", seed=0)


def _val_acc(graph: MultimodalGraph, modality: str) -> float:
    acc, _ = _probe(graph.feature(modality), graph.y, graph.train_mask, graph.val_mask, graph.num_classes, epochs=120)
    return acc


def _degrees(edge_index: torch.Tensor, n: int) -> np.ndarray:
    return np.bincount(edge_index[0].numpy(), minlength=n)


# ---------------------------------------------------------------------- determinism and validity
def test_same_seed_same_graph_and_different_seed_differs():
    a = make_synthetic_mag(600, num_classes=4, seed=3)
    b = make_synthetic_mag(600, num_classes=4, seed=3)
    c = make_synthetic_mag(600, num_classes=4, seed=4)
    for key in ("edge_index", "y", "x_text", "x_image", "modality_mask", "gt_quality", "gt_biased", "gt_target"):
        assert torch.equal(a[key], b[key]), key
    assert a.checksum() == b.checksum()
    assert a.edge_index.shape == c.edge_index.shape  # the edge count is exact
    assert not torch.equal(a.edge_index, c.edge_index)
    assert not torch.allclose(a.x_text, c.x_text)
    assert a.checksum() != c.checksum()


def test_make_and_attach_share_the_feature_model():
    g = make_synthetic_mag(500, num_classes=4, profile="text-dominant", seed=7)
    h = attach_synthetic_features((g.edge_index, g.y, g.num_classes), "text-dominant", seed=7)
    assert torch.equal(g.x_text, h.x_text) and torch.equal(g.x_image, h.x_image)
    assert torch.equal(g.gt_quality, h.gt_quality)


def test_outputs_validate_and_carry_ground_truth(text_dominant):
    g = validate(text_dominant)
    n, mods = g.num_nodes, g.modalities
    assert mods == ("text", "image")
    for m in mods:
        assert g.feature(m).dtype == torch.float32 and g.feature(m).shape == (n, 128)
    assert g.gt_quality.shape == (n, 2) and g.gt_quality.dtype == torch.float32
    assert g.gt_biased.shape == (n, 2) and g.gt_biased.dtype == torch.bool
    assert g.gt_target.shape == (n, 2) and g.gt_target.dtype == torch.long
    q = g.gt_quality[g.modality_mask]
    assert float(q.min()) >= 0 and float(q.max()) <= 1
    assert g.meta["profile"] == "text-dominant"
    assert g.meta["generator"]["features"]["modalities"]["text"]["quality"] == PROFILES["text-dominant"].modalities["text"].quality
    assert g.meta["split"] == "magb"
    # unbiased present modalities encode the node's own class
    ok = g.modality_mask & ~g.gt_biased
    assert torch.equal(g.gt_target[ok], g.y.unsqueeze(1).expand(-1, 2)[ok])


def test_shared_ambiguity_caps_fusion_and_can_be_switched_off():
    # ambiguity is common to a node's modalities, so fusing two views cannot remove it
    g = make_synthetic_mag(3000, num_classes=8, profile="balanced", seed=0)
    flat = make_synthetic_mag(3000, num_classes=8, profile="balanced", seed=0, ambiguity=0.0)
    assert g.gt_ambiguity.shape == (3000,) and float(g.gt_ambiguity.mean()) > 0.1
    assert (flat.gt_ambiguity == 0).all()

    def fused_acc(graph):
        acc, _ = _probe(graph.fused(), graph.y, graph.train_mask, graph.val_mask, graph.num_classes, epochs=120)
        return acc

    assert fused_acc(flat) >= fused_acc(g) + 0.03


def test_features_are_not_axis_aligned(text_dominant):
    # class information is spread over many coordinates: no single coordinate classifies well
    x, y = text_dominant.x_text, text_dominant.y
    means = torch.stack([x[y == c].mean(0) for c in range(text_dominant.num_classes)])
    spread = means.std(0)
    top = torch.topk(spread, 10).values
    assert float(top[-1] / top[0]) > 0.3


# ---------------------------------------------------------------------- DC-SBM structure
@pytest.mark.parametrize("h", [0.2, 0.5, 0.8])
def test_dcsbm_homophily_and_mean_degree(h):
    n, dbar = 3000, 10.0
    ei, y, c = sample_dcsbm(n, 6, homophily=h, avg_degree=dbar, seed=1)
    assert abs(edge_homophily(ei, y) - h) <= 0.05
    deg = _degrees(ei, n)
    assert abs(deg.mean() - dbar) <= 0.15 * dbar
    assert deg.max() >= 5 * deg.mean()  # heavy tail
    assert (ei[0] != ei[1]).all()


def test_dcsbm_degree_distribution_is_heavy_tailed_not_poisson():
    n = 4000
    ei, _, _ = sample_dcsbm(n, 5, homophily=0.7, avg_degree=8, degree_exponent=2.5, seed=0)
    deg = _degrees(ei, n)
    # a Poisson(8) graph has essentially no node above 3x the mean; a power law has many
    assert (deg > 3 * deg.mean()).mean() > 0.01
    ei2, _, _ = sample_dcsbm(n, 5, homophily=0.7, avg_degree=8, degree_exponent=6.0, seed=0)
    assert _degrees(ei2, n).max() < deg.max()


def test_dcsbm_class_sizes_mildly_imbalanced():
    _, y, c = sample_dcsbm(2000, 5, seed=0, class_ratio=3.0)
    counts = torch.bincount(y, minlength=c).float()
    assert 2.5 <= float(counts.max() / counts.min()) <= 3.5
    _, y, _ = sample_dcsbm(2000, 5, seed=0, class_ratio=1.0)
    counts = torch.bincount(y, minlength=5)
    assert int(counts.max() - counts.min()) <= 1


# ---------------------------------------------------------------------- profiles
def test_text_dominant_text_beats_image(text_dominant):
    assert _val_acc(text_dominant, "text") >= _val_acc(text_dominant, "image") + 0.05


def test_image_dominant_image_beats_text():
    g = make_synthetic_mag(3000, num_classes=8, profile="image-dominant", seed=0)
    assert _val_acc(g, "image") >= _val_acc(g, "text") + 0.05


def test_balanced_modalities_are_close():
    graphs = [make_synthetic_mag(4000, num_classes=8, profile="balanced", seed=s) for s in (0, 1)]
    text = np.mean([_val_acc(g, "text") for g in graphs])
    image = np.mean([_val_acc(g, "image") for g in graphs])
    assert abs(text - image) <= 0.04


def test_node_level_imbalance_share(text_dominant):
    g = text_dominant
    both = g.modality_mask.all(dim=1)
    q = g.gt_quality[both]
    share = float((q[:, 1] > q[:, 0]).float().mean())
    assert 0.2 <= share <= 0.35  # text is better on average, but not for every node
    bal = make_synthetic_mag(3000, num_classes=8, profile="balanced", seed=0)
    qb = bal.gt_quality[bal.modality_mask.all(dim=1)]
    assert abs(float((qb[:, 1] > qb[:, 0]).float().mean()) - 0.5) <= 0.05


def test_node_level_quality_shows_in_modality_only_predictions(text_dominant):
    g = text_dominant
    preds = {
        m: _probe(g.feature(m), g.y, g.train_mask, g.val_mask, g.num_classes, epochs=120)[1] for m in g.modalities
    }
    ok = g.val_mask & g.modality_mask.all(dim=1) & ~g.gt_biased.any(dim=1)
    q = g.gt_quality

    def acc(m, sel):
        return float((preds[m][sel] == g.y[sel]).float().mean())

    image_better = ok & (q[:, 1] > q[:, 0])
    text_better = ok & (q[:, 0] > q[:, 1])
    assert int(image_better.sum()) >= 100
    assert acc("image", image_better) > acc("text", image_better)  # the globally weaker modality wins here
    assert acc("text", text_better) >= acc("image", text_better) + 0.08


def test_biased_fraction_and_biased_nodes_predict_the_partner():
    g = make_synthetic_mag(3000, num_classes=8, profile="text-dominant", seed=2, biased={"text": 0.15, "image": 0.1})
    partner = torch.tensor(g.meta["generator"]["partner"])
    assert (partner != torch.arange(8)).all()
    for j, (m, want) in enumerate(zip(g.modalities, (0.15, 0.1))):
        present = g.modality_mask[:, j]
        b = g.gt_biased[:, j]
        assert not bool((b & ~present).any())
        assert abs(float(b[present].float().mean()) - want) <= 0.005
        assert torch.equal(g.gt_target[b, j], partner[g.y[b]])
        assert float(g.gt_quality[b, j].mean()) > 0.7  # confidently wrong
        _, pred = _probe(g.feature(m), g.y, g.train_mask, g.val_mask, g.num_classes, epochs=120)
        vb = b & g.val_mask
        vu = ~b & present & g.val_mask
        rate_b = float((pred[vb] == partner[g.y[vb]]).float().mean())
        rate_u = float((pred[vu] == partner[g.y[vu]]).float().mean())
        assert rate_b >= 0.5 and rate_b >= 3 * rate_u, (m, rate_b, rate_u)


def test_missing_modalities():
    g = make_synthetic_mag(3000, num_classes=5, profile="balanced", seed=0, missing={"text": 0.3, "image": 0.2})
    mask = g.modality_mask
    assert mask.any(dim=1).all()
    # nodes that lost both get one back, so the rates sit just below the requested ones
    assert abs(float((~mask[:, 0]).float().mean()) - 0.3 * (1 - 0.2 / 2)) <= 0.03
    assert abs(float((~mask[:, 1]).float().mean()) - 0.2 * (1 - 0.3 / 2)) <= 0.03
    for j, m in enumerate(g.modalities):
        absent = ~mask[:, j]
        assert (g.feature(m)[absent] == 0).all()
        assert (g.feature(m)[~absent].abs().sum(dim=1) > 0).all()
        assert (g.gt_quality[absent, j] == 0).all() and (g.gt_target[absent, j] == -1).all()
        assert not bool(g.gt_biased[absent, j].any())


def test_profile_missing_rates(text_dominant):
    miss = (~text_dominant.modality_mask).float().mean(dim=0)
    assert abs(float(miss[0]) - 0.02) <= 0.01 and abs(float(miss[1]) - 0.05) <= 0.015


def test_graph_correlated_quality_and_its_switch():
    def edge_corr(g):
        q = g.gt_quality[:, 0].double()
        src, dst = g.edge_index
        keep = g.modality_mask[src, 0] & g.modality_mask[dst, 0] & ~g.gt_biased[src, 0] & ~g.gt_biased[dst, 0]
        return float(torch.corrcoef(torch.stack([q[src[keep]], q[dst[keep]]]))[0, 1])

    smooth = make_synthetic_mag(3000, profile="text-dominant", seed=0)
    flat = make_synthetic_mag(3000, profile="text-dominant", seed=0, smoothing=0.0)
    assert edge_corr(smooth) > 0.15
    assert abs(edge_corr(flat)) < 0.05
    # the rank copula keeps the marginal: same multiset of quality draws in both
    a = torch.sort(smooth.gt_quality[:, 0]).values
    assert float(a.mean()) == pytest.approx(float(flat.gt_quality[:, 0].mean()), abs=0.02)


# ---------------------------------------------------------------------- aligned space
@pytest.mark.parametrize("misalign_to", ["class", "random"])
def test_aligned_space_misalignment(misalign_to):
    g = make_synthetic_mag(2000, profile="balanced", seed=0, space="aligned", dims=64, misalign_to=misalign_to)
    assert g.modality_dims == {"text": 64, "image": 64}
    both = g.modality_mask.all(dim=1)
    mis = g.gt_misaligned
    assert mis.dtype == torch.bool and mis.shape == (g.num_nodes,)
    assert not bool((mis & ~both).any())
    assert abs(float(mis[both].float().mean()) - 0.3) <= 0.01
    cos = F.cosine_similarity(g.x_text, g.x_image, dim=1)
    aligned_cos = float(cos[both & ~mis].mean())
    mis_cos = float(cos[both & mis].mean())
    assert aligned_cos > 0.6 and mis_cos < 0.2 and aligned_cos - mis_cos > 0.4
    if misalign_to == "class":
        assert (g.gt_target[mis, 1] != g.y[mis]).all() and (g.gt_target[mis, 1] >= 0).all()
    else:
        assert (g.gt_target[mis, 1] == -1).all()


def test_aligned_misaligned_fraction_is_configurable():
    g = make_synthetic_mag(2000, profile="balanced", seed=1, space="aligned", misaligned=0.1)
    both = g.modality_mask.all(dim=1)
    assert abs(float(g.gt_misaligned[both].float().mean()) - 0.1) <= 0.01
    sep = make_synthetic_mag(300, num_classes=3, seed=1)
    assert sep.get("gt_misaligned") is None


def test_separate_space_is_not_aligned(text_dominant):
    g = make_synthetic_mag(2000, profile="balanced", seed=0, dims=64)
    cos = F.cosine_similarity(g.x_text, g.x_image, dim=1)
    assert abs(float(cos[g.modality_mask.all(dim=1)].mean())) < 0.2


# ---------------------------------------------------------------------- inputs and shapes
def test_unequal_widths():
    g = make_synthetic_mag(400, num_classes=4, seed=0, dims={"text": 96, "image": 40})
    assert g.modality_dims == {"text": 96, "image": 40}
    validate(g)


def test_attach_keeps_structure_labels_and_splits():
    base = make_synthetic_mag(800, num_classes=4, seed=0, split="random:0.5/0.25")
    g = attach_synthetic_features(base, "image-dominant", seed=5, dims=32)
    assert torch.equal(g.edge_index, base.edge_index) and torch.equal(g.y, base.y)
    for s in ("train", "val", "test"):
        assert torch.equal(g[f"{s}_mask"], base[f"{s}_mask"])
    assert g.meta["split"] == "random:0.5/0.25" and g.meta["profile"] == "image-dominant"
    assert g.modality_dims == {"text": 32, "image": 32}
    assert base.meta["profile"] == "balanced"  # the input graph is untouched


def test_attach_on_tuple_with_unlabelled_nodes_and_directed_edges():
    ei, y, c = sample_dcsbm(600, 3, seed=0)
    directed = ei[:, ei[0] < ei[1]]
    y = y.clone()
    y[:30] = -1
    g = attach_synthetic_features((directed, y, c), "balanced", seed=0)
    validate(g)
    assert g.num_undirected_edges == directed.size(1)
    assert not bool((g.train_mask | g.val_mask | g.test_mask)[:30].any())
    assert (g.gt_target[:30][g.modality_mask[:30]] >= 0).all()  # a latent class is drawn for them


def test_extra_modality_needs_parameters():
    g = make_synthetic_mag(300, num_classes=3, seed=0, modalities=("text", "image", "audio"), quality={"audio": (2.0, 2.0)}, dims={"audio": 16})
    assert g.modalities == ("text", "image", "audio") and g.x_audio.shape == (300, 16)
    with pytest.raises(ConfigError, match="audio"):
        make_synthetic_mag(300, num_classes=3, seed=0, modalities=("text", "audio"))
    single = make_synthetic_mag(300, num_classes=3, seed=0, modalities=("text",))
    assert single.modality_mask.all()


# ---------------------------------------------------------------------- errors
def test_unknown_profile_lists_valid_ones():
    with pytest.raises(ConfigError) as err:
        make_synthetic_mag(300, profile="nope")
    for name in PROFILES:
        assert name in str(err.value)


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"quality": {"text": 1.5}}, ["quality[text]", "1.5", "[0.0, 1.0]"]),
        ({"quality": {"image": (0.0, 2.0)}}, ["quality[image] alpha", "0.0"]),
        ({"biased": {"text": 1.0}}, ["biased[text]", "1.0", "[0.0, 1.0)"]),
        ({"missing": -0.1}, ["missing[text]", "-0.1", "[0.0, 1.0)"]),
        ({"dims": {"text": 0}}, ["dims[text]", "0", ">= 1"]),
        ({"homophily": 1.2}, ["homophily", "1.2", "[0.0, 1.0]"]),
        ({"misaligned": 0.2}, ["misaligned", "aligned"]),
        ({"space": "shared"}, ["space", "separate, aligned"]),
        ({"space": "aligned", "dims": {"text": 32, "image": 64}}, ["dims", "equal"]),
        ({"bogus": 1}, ["bogus"]),
        ({"ambiguity": 1.5}, ["ambiguity", "1.5", "[0.0, 1.0]"]),
        ({"quality_corr": -0.5}, ["quality_corr", "-0.5"]),
        ({"seed": -1}, ["seed", "-1"]),
    ],
)
def test_config_errors_name_parameter_value_and_range(kwargs, words):
    with pytest.raises(ConfigError) as err:
        make_synthetic_mag(300, num_classes=3, **kwargs)
    for w in words:
        assert w in str(err.value), (w, str(err.value))


def test_structure_errors():
    with pytest.raises(ConfigError, match="structure"):
        attach_synthetic_features("graph")
    with pytest.raises(ConfigError, match="structure y"):
        attach_synthetic_features((torch.zeros(2, 0, dtype=torch.long), torch.tensor([0, 5]), 2))
    with pytest.raises(ConfigError, match="avg_degree"):
        sample_dcsbm(50, 2, avg_degree=60)


def test_calibrate_reports_per_modality_accuracy():
    r = calibrate("text-dominant", sample_dcsbm(1200, 4, seed=0), seed=0)
    assert set(r) >= {"val_acc_text", "val_acc_image", "val_acc_fused", "val_acc_fused_sgc2", "share_image_better"}
    assert r["val_acc_text"] > r["val_acc_image"]


# ---------------------------------------------------------------------- real structure (MAGB Grocery)
def test_grocery_structure_text_dominant():
    if not GROCERY.exists():
        pytest.skip(f"MAGB Grocery graph not found at {GROCERY}")
    try:
        magb = importlib.import_module("magkit.data.magb")
    except ImportError:
        pytest.skip("magkit.data.magb is not available")
    if not hasattr(magb, "load_magb_structure"):
        pytest.skip("magkit.data.magb.load_magb_structure is not available")
    structure = magb.load_magb_structure(GROCERY.parents[1], "Grocery")
    t0 = time.perf_counter()
    g = attach_synthetic_features(structure, "text-dominant", seed=0)
    elapsed = time.perf_counter() - t0
    assert g.num_nodes == 17074 and g.num_classes == 20
    assert edge_homophily(g.edge_index, g.y) == pytest.approx(0.681, abs=0.002)
    assert elapsed < 10.0  # about 0.5 s on an idle machine; generous for loaded CI
    text, image = _val_acc(g, "text"), _val_acc(g, "image")
    assert 0.75 <= text <= 0.82 and 0.60 <= image <= 0.70


# ---------------------------------------------------------------------- outliers and the calibrated profile
def test_outliers_are_off_in_the_other_profiles_and_on_in_the_calibrated_one():
    assert PROFILES["grocery-calibrated"].outliers > 0
    for name in ("text-dominant", "image-dominant", "balanced"):
        assert PROFILES[name].outliers == 0.0


def test_outliers_encode_the_neighbourhood_class_and_shrink_the_graph_gain():
    structure = sample_dcsbm(3000, 8, homophily=0.7, avg_degree=8, seed=0)
    plain = attach_synthetic_features(structure, "text-dominant", seed=0, signal=9.0)
    noisy = attach_synthetic_features(structure, "text-dominant", seed=0, signal=9.0, outliers=0.15)
    n = noisy.num_nodes
    # ground truth: exactly round(f N) nodes encode another class in every present modality
    present = noisy.modality_mask
    assert torch.equal(plain.modality_mask, present)
    out = ((noisy.gt_target != noisy.y[:, None]) | ~present).all(dim=1) & (noisy.gt_biased | ~present).all(dim=1)
    twice = (plain.gt_biased | ~present).all(dim=1)  # biased in every modality without outliers
    assert round(0.15 * n) <= int(out.sum()) <= round(0.15 * n) + int(twice.sum())
    for key in ("gt_quality", "gt_biased", "gt_target", "gt_ambiguity"):
        assert noisy[key].shape[0] == n
    # that class is the one most frequent among the node's neighbours (other than its label)
    src, dst = noisy.edge_index
    counts = torch.zeros(n, noisy.num_classes).index_put_((src, noisy.y[dst]), torch.ones(src.numel()), accumulate=True)
    counts[torch.arange(n), noisy.y] = -1
    idx = torch.nonzero(out & ~twice & (counts.max(dim=1).values > 0)).flatten()
    assert idx.numel() > 0.12 * n
    t = noisy.gt_target[idx].max(dim=1).values
    assert float((counts[idx, t] == counts[idx].max(dim=1).values).float().mean()) == 1.0
    raw_plain, _ = _probe(plain.fused(), plain.y, plain.train_mask, plain.val_mask, plain.num_classes, epochs=120)
    raw_noisy, _ = _probe(noisy.fused(), noisy.y, noisy.train_mask, noisy.val_mask, noisy.num_classes, epochs=120)
    assert raw_noisy < raw_plain - 0.08  # the outliers are wrong for a feature-only model


def test_outliers_out_of_range():
    with pytest.raises(ConfigError, match=r"outliers.*1\.0.*\[0\.0, 1\.0\)"):
        make_synthetic_mag(300, outliers=1.0)


def test_calibrated_profile_on_grocery_keeps_ground_truth():
    if not GROCERY.is_file():
        pytest.skip(f"MAGB Grocery graph not found at {GROCERY}")
    from magkit.data.magb import load_magb_structure

    g = attach_synthetic_features(load_magb_structure(GROCERY.parents[1], "Grocery"), "grocery-calibrated", seed=0)
    f = PROFILES["grocery-calibrated"].outliers
    assert g.meta["profile"] == "grocery-calibrated" and g.meta["generator"]["features"]["outliers"] == f
    present = g.modality_mask
    every = (g.gt_biased | ~present).all(dim=1)
    assert float(every.float().mean()) == pytest.approx(f, abs=0.01)
    assert float(g.gt_quality[present].min()) >= 0.0 and float(g.gt_quality[present].mean()) > 0.4
    assert g.gt_ambiguity.shape == (g.num_nodes,)
    text, image = _val_acc(g, "text"), _val_acc(g, "image")
    assert 0.74 <= text <= 0.82 and 0.63 <= image <= 0.72 and text - image > 0.05

    # content and links err together: adding the 2-hop propagated features (a SAGE-like probe that keeps the
    # node's own features) gains much less than on text-dominant
    from magkit.train.propagation import propagate

    def gain(h):
        x = h.fused()
        raw, _ = _probe(x, h.y, h.train_mask, h.val_mask, h.num_classes, epochs=120)
        both = torch.cat([x, propagate(h, x, 2)], dim=1)
        graph, _ = _probe(both, h.y, h.train_mask, h.val_mask, h.num_classes, epochs=120)
        return graph - raw, raw

    # at a feature-only accuracy close to text-dominant's, the graph adds far fewer points
    plain = attach_synthetic_features(g, "text-dominant", seed=0)
    (gain_cal, raw_cal), (gain_plain, raw_plain) = gain(g), gain(plain)
    assert abs(raw_cal - raw_plain) < 0.05, (raw_cal, raw_plain)
    assert gain_cal < gain_plain - 0.03, (gain_cal, gain_plain)
