"""save / load_estimator: a saved estimator predicts bitwise as the fitted one; bad files give one clear error."""

import pytest
import torch

import magkit
from magkit.exceptions import ConfigError
from magkit.methods import create, load_estimator

FAST = {"hidden": 32, "epochs": 25, "patience": 25}


@pytest.mark.parametrize("method, extra", [
    ("gcn-early", {}),
    ("mnl-sage", {}),
    ("graphmnl-gate", {"warmup": 3}),
    ("graphmnl", {"warmup": 3, "branches": ["+struct:gcn"]}),
])
def test_a_saved_estimator_predicts_as_the_fitted_one(homophilous_graph, tmp_path, method, extra):
    est = create(method, seed=0, **FAST, **extra).fit(homophilous_graph)
    path = est.save(tmp_path / "sub" / "model.pt", meta={"data": "x", "seed": 3})
    back = magkit.load_estimator(path)
    assert type(back) is type(est) and back.get_params() == est.get_params()
    assert back.name == method and back.saved_meta_ == {"data": "x", "seed": 3}
    assert torch.equal(back.predict_proba(homophilous_graph), est.predict_proba(homophilous_graph))
    assert back.history_.best_epoch == est.history_.best_epoch
    # training-time state is not saved
    assert not [k for k in torch.load(path, weights_only=False)["state"] if k.startswith("_")]


def test_save_needs_a_fitted_estimator(tmp_path):
    with pytest.raises(magkit.NotFittedError):
        create("gcn-early").save(tmp_path / "m.pt")


def test_bad_model_files_are_one_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_estimator(tmp_path / "none.pt")
    (tmp_path / "junk.pt").write_text("not a model")
    with pytest.raises(ConfigError, match="is not a magkit estimator file"):
        load_estimator(tmp_path / "junk.pt")
    torch.save({"weights": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(ConfigError, match="is not a magkit estimator file"):
        load_estimator(tmp_path / "other.pt")


def test_a_graph_with_other_feature_widths_is_refused(homophilous_graph):
    est = create("gcn-early", seed=0, **FAST).fit(homophilous_graph)
    g = homophilous_graph.clone()
    m = g.modalities[0]
    g[f"x_{m}"] = torch.cat([g.feature(m), g.feature(m)], 1)
    with pytest.raises(ConfigError, match="feature widths"):
        est.predict(g)
