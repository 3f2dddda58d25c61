"""Every registered method and every condenser follows the estimator protocol of :mod:`magkit.base`.

Parametrised over ``magkit.methods.registry.method_names()`` and ``magkit.condense.registry.condenser_names()``:
construction from defaults, fitted state before fit, get_params / set_params round trip, same seed -> same
numbers, and one-line ConfigErrors for an unknown parameter and a value of the wrong type. Case ids are
``method-<name>`` and ``condense-<name>``.
"""

from __future__ import annotations

import inspect
from typing import Any

import pytest
import torch

from magkit.base import Estimator, param_defaults, param_types
from magkit.condense.registry import condenser_names, make_condenser
from magkit.data.synthetic import make_synthetic_mag
from magkit.exceptions import ConfigError, NotFittedError
from magkit.methods.registry import create, method_names

CASES = [("method", m) for m in method_names()] + [("condense", c) for c in condenser_names()]
IDS = [f"{kind}-{name}" for kind, name in CASES]
#: small settings for a fast run on the tiny graph (each given only to the estimators that declare it)
SMALL = {"epochs": 3, "hidden": 16, "ratio": 0.1, "outer_steps": 2, "eval_every": 1, "eval_epochs": 5, "warmup": 1}


@pytest.fixture(scope="module")
def tiny():
    torch.set_num_threads(1)
    return make_synthetic_mag(num_nodes=120, num_classes=3, dims=8, seed=0, avg_degree=6.0)


def make(kind: str, name: str, **params):
    obj = create(name) if kind == "method" else make_condenser(name)
    small = {k: v for k, v in SMALL.items() if k in obj.get_params()}
    return obj.set_params(**{**small, **params})


def run(kind: str, obj, graph, progress=None):
    """fit / condense; returns numbers that must repeat under the same seed."""
    if kind == "method":
        obj.fit(graph, progress=progress)
        return [obj.predict_proba(graph)]
    condensed = obj.condense(graph, progress=progress)
    return [condensed.features[m] for m in condensed.modalities] + [condensed.adj, condensed.y]


@pytest.mark.parametrize(("kind", "name"), CASES, ids=IDS)
def test_constructs_from_defaults(kind, name):
    obj = create(name) if kind == "method" else make_condenser(name)
    assert isinstance(obj, Estimator) and obj.name == name
    cls = type(obj)
    sig = inspect.signature(cls.__init__)
    assert all(p.kind is p.KEYWORD_ONLY for n, p in sig.parameters.items() if n != "self"), "keyword-only parameters"
    assert list(obj.get_params()) == list(param_defaults(cls))
    types = param_types(cls)
    assert all(t is not Any for t in types.values()), "every parameter has a declared type"
    assert "seed" in types
    assert repr(obj).startswith(cls.__name__ + "(")


@pytest.mark.parametrize(("kind", "name"), CASES, ids=IDS)
def test_fitted_state_before_fit(kind, name, tiny):
    obj = make(kind, name)
    with pytest.raises(NotFittedError, match="not fitted yet"):
        _ = obj.history_
    if kind == "method":
        with pytest.raises(NotFittedError):
            obj.predict(tiny)


@pytest.mark.parametrize(("kind", "name"), CASES, ids=IDS)
def test_params_round_trip(kind, name):
    obj = make(kind, name)
    params = obj.get_params()
    clone = type(obj)(**params)
    assert clone.get_params() == params
    assert obj.set_params(**params) is obj and obj.get_params() == params
    copy = obj.params
    copy["seed"] = 12345
    assert obj.get_params()["seed"] == params["seed"]  # params is a copy
    obj.set_params(seed=params["seed"] + 1)
    assert obj.get_params()["seed"] == params["seed"] + 1 and obj.seed == params["seed"] + 1


@pytest.mark.parametrize(("kind", "name"), CASES, ids=IDS)
def test_same_seed_same_numbers(kind, name, tiny):
    records: list[dict] = []
    a = run(kind, make(kind, name, seed=3), tiny, progress=records.append)
    b = run(kind, make(kind, name, seed=3), tiny)
    assert len(a) == len(b) and all(torch.equal(x, y) for x, y in zip(a, b))
    if kind == "method":
        assert records and all({"epoch", "epochs"} <= set(r) for r in records)
        assert records[-1]["epochs"] == 3 and len(records) <= 3
        proba = a[0]
        assert proba.shape == (tiny.num_nodes, tiny.num_classes)
        assert torch.allclose(proba.sum(1), torch.ones(tiny.num_nodes), atol=1e-5)
    else:
        assert all({"epoch", "epochs"} <= set(r) for r in records)


@pytest.mark.parametrize(("kind", "name"), CASES, ids=IDS)
def test_unknown_parameter_is_one_line(kind, name):
    obj = make(kind, name)
    with pytest.raises(ConfigError) as err:
        obj.set_params(sede=1)
    msg = str(err.value)
    assert "\n" not in msg and "'sede'" in msg and "did you mean 'seed'" in msg and "allowed:" in msg
    if kind == "method":
        with pytest.raises(ConfigError, match=r"unknown parameter 'sede'") as err:
            create(name, sede=1)
        assert "\n" not in str(err.value)


@pytest.mark.parametrize(("kind", "name"), CASES, ids=IDS)
def test_bad_type_is_one_line(kind, name, tiny):
    obj = make(kind, name, seed="zero")
    with pytest.raises(ConfigError) as err:
        run(kind, obj, tiny)
    assert str(err.value) == f"{type(obj).__name__}: seed='zero' is not an int"
