"""The method registry: the grid of names, misses listing the valid names, fixed parameters."""

from __future__ import annotations

import pytest

from magkit.exceptions import ConfigError
from magkit.methods import create, get_method, method_names, methods
from magkit.methods.baselines import DistillationClassifier, FusionClassifier, MNLClassifier
from magkit.models.backbones import BACKBONES

FUSION_SUFFIXES = ("text", "image", "early", "late", "learned")
GRID = [f"{b}-{f}" for b in ("mlp", "gcn", "sage", "gat", "sgc", "appnp") for f in FUSION_SUFFIXES]
BRANCH = [f"{m}-{b}" for m in ("kd", "mnl") for b in ("mlp", "gcn", "sage")]


def test_backbones_are_the_six_expected():
    assert BACKBONES == ("mlp", "gcn", "sage", "gat", "sgc", "appnp")


def test_method_names_contain_the_full_grid():
    names = method_names()
    missing = [n for n in GRID + BRANCH if n not in names]
    assert not missing
    assert len(names) == len(set(names))
    assert len(GRID) == 30 and len(BRANCH) == 6


def test_no_branch_methods_for_other_backbones():
    names = method_names()
    for b in ("gat", "sgc", "appnp"):
        assert f"kd-{b}" not in names and f"mnl-{b}" not in names


@pytest.mark.parametrize("name", GRID)
def test_fusion_grid_entries(name):
    backbone, fusion = name.split("-")
    spec = get_method(name)
    assert spec.name == name and spec.cls is FusionClassifier
    assert spec.fixed == {"backbone": backbone, "fusion": fusion}
    assert spec.description
    est = create(name)
    assert isinstance(est, FusionClassifier)
    assert est.get_params()["backbone"] == backbone and est.get_params()["fusion"] == fusion


@pytest.mark.parametrize("name", BRANCH)
def test_branch_entries(name):
    kind, backbone = name.split("-")
    spec = get_method(name)
    assert spec.cls is (DistillationClassifier if kind == "kd" else MNLClassifier)
    assert spec.fixed == {"backbone": backbone}
    est = create(name, hidden=8)
    assert est.get_params()["backbone"] == backbone and est.get_params()["hidden"] == 8


def test_methods_lists_specs_in_name_order():
    assert [m.name for m in methods()] == method_names()


def test_unknown_name_lists_valid_names():
    with pytest.raises(ConfigError, match=r"^method: unknown name 'gcn-fused' \(did you mean 'gcn-learned'\?\); allowed: ") as exc:
        get_method("gcn-fused")
    msg = str(exc.value)
    for name in GRID + BRANCH:
        assert name in msg
    with pytest.raises(ConfigError, match=r"unknown name 'nope'"):
        create("nope")


@pytest.mark.parametrize("name,param,value", [
    ("gcn-early", "backbone", "mlp"),
    ("gcn-early", "fusion", "late"),
    ("kd-sage", "backbone", "gcn"),
    ("mnl-mlp", "backbone", "gat"),
])
def test_fixed_parameters_cannot_be_overridden(name, param, value):
    with pytest.raises(ConfigError, match=rf"^{name}: fixes {param}=.*; choose another name"):
        create(name, **{param: value})


def test_fixed_clash_lists_every_clashing_parameter():
    with pytest.raises(ConfigError, match=r"fixes backbone='sage', fusion='late';"):
        create("sage-late", fusion="early", backbone="gcn", hidden=8)


def test_create_passes_free_parameters_and_checks_them():
    est = create("appnp-learned", k=5, alpha=0.2, seed=7)
    p = est.get_params()
    assert (p["k"], p["alpha"], p["seed"]) == (5, 0.2, 7)
    with pytest.raises(ConfigError, match=r"^appnp-learned: unknown parameter 'kk' \(did you mean 'k'\?\); allowed:"):
        create("appnp-learned", kk=5)


def test_create_returns_fresh_estimators():
    a, b = create("gcn-early"), create("gcn-early")
    assert a is not b
    a.set_params(hidden=8)
    assert b.get_params()["hidden"] == 128
