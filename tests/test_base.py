"""The parameter protocol: signatures, type checks, command-line conversion, fitted-state errors."""

from __future__ import annotations

from typing import Literal

import pytest

from magkit.base import Estimator, coerce_param, param_defaults, param_types
from magkit.exceptions import ConfigError, NotFittedError
from magkit.registry import Registry


class Toy(Estimator):
    def __init__(self, hidden: int = 16, lr: float = 0.01, mode: Literal["a", "b"] = "a",
                 fanouts: tuple[int, ...] = (10, 10), batch_size: int | None = None, name_: str = "x",
                 branches: list[str] | None = None):
        self.hidden = hidden
        self.lr = lr
        self.mode = mode
        self.fanouts = fanouts
        self.batch_size = batch_size
        self.name_ = name_
        self.branches = branches

    def fit(self):
        self.check_params()
        self.model_ = 1
        return self


def test_signature_is_the_parameter_list():
    assert list(param_defaults(Toy)) == ["hidden", "lr", "mode", "fanouts", "batch_size", "name_", "branches"]
    assert param_types(Toy)["lr"] is float
    t = Toy(lr=0.1)
    assert t.get_params()["lr"] == 0.1 and t.params["hidden"] == 16
    assert t.set_params(hidden=32) is t and t.hidden == 32
    assert repr(t) == "Toy(hidden=32, lr=0.1)"


def test_unknown_parameter_suggests_the_closest():
    with pytest.raises(ConfigError, match=r"unknown parameter 'hiden' \(did you mean 'hidden'\?\)"):
        Toy().set_params(hiden=3)


def test_type_check_is_one_line():
    with pytest.raises(ConfigError, match=r"^Toy: lr='fast' is not a float$"):
        Toy(lr="fast").fit()
    with pytest.raises(ConfigError, match=r"hidden=True is not an int"):
        Toy(hidden=True).fit()
    with pytest.raises(ConfigError, match=r"mode='c' is not one of 'a', 'b'"):
        Toy(mode="c").fit()
    Toy(lr=1, fanouts=(5,), batch_size=64, branches=["x"]).fit()  # an int is a valid float


@pytest.mark.parametrize(("name", "text", "value"), [
    ("lr", "1e-3", 0.001), ("lr", "2", 2.0), ("hidden", "64", 64), ("mode", "b", "b"), ("batch_size", "none", None),
    ("batch_size", "256", 256), ("fanouts", "[5, 5]", (5, 5)), ("branches", '["raw:text", "struct"]', ["raw:text", "struct"]),
    ("name_", "123", "123"),
])
def test_coerce_through_declared_type(name, text, value):
    got = coerce_param(Toy, name, text)
    assert got == value and type(got) is type(value)


@pytest.mark.parametrize(("name", "text", "message"), [
    ("lr", "fast", "Toy: lr='fast' is not a float"),
    ("hidden", "1.5", "Toy: hidden='1.5' is not an int"),
    ("mode", "c", "Toy: mode='c' is not one of 'a', 'b'"),
    ("fanouts", "[a", "Toy: fanouts='[a' is not a sequence of int"),
    ("lrr", "1", "Toy: unknown parameter 'lrr' (did you mean 'lr'?)"),
])
def test_coerce_errors(name, text, message):
    with pytest.raises(ConfigError) as err:
        coerce_param(Toy, name, text)
    assert str(err.value).startswith(message) and "\n" not in str(err.value)


def test_fitted_state_before_fit():
    with pytest.raises(NotFittedError, match="Toy is not fitted yet"):
        _ = Toy().model_
    assert Toy().fit().model_ == 1


def test_store_takes_every_parameter_from_the_signature():
    class Stored(Estimator):
        def __init__(self, *, a: int = 1, b: str = "x"):
            self._store(locals())

    assert Stored(b="y").get_params() == {"a": 1, "b": "y"}


def test_no_catch_all_signature():
    class Bad(Estimator):
        def __init__(self, **kw):
            pass

    with pytest.raises(TypeError, match="explicitly"):
        param_defaults(Bad)


def test_registry_fixes_and_suggests():
    reg = Registry("method", lambda r: r.register("toy-b", Toy, "a toy", mode="b"))
    t = reg.create("toy-b", lr=0.5)
    assert isinstance(t, Toy) and t.mode == "b" and t.lr == 0.5 and t.name == "toy-b"
    with pytest.raises(ConfigError, match=r"unknown name 'toy-a' \(did you mean 'toy-b'\?\)"):
        reg.get("toy-a")
    with pytest.raises(ConfigError, match="fixes mode='b'"):
        reg.create("toy-b", mode="a")
    with pytest.raises(ConfigError, match=r"unknown parameter 'hiddn' \(did you mean 'hidden'\?\)"):
        reg.create("toy-b", hiddn=3)


def test_name_subset_keeps_order_and_rejects_unknown_or_empty():
    from magkit.base import name_subset

    assert name_subset(["b", "a", "b"], ("a", "b"), "views") == ["b", "a"]
    assert name_subset("a", ("a", "b"), "views") == ["a"]
    for bad in (["c"], []):
        with pytest.raises(ConfigError, match=r"^views: unknown or empty .*allowed: a non-empty subset of \['a', 'b'\]$"):
            name_subset(bad, ("a", "b"), "views")
