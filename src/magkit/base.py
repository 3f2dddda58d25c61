"""The parameter protocol shared by every estimator and condenser (scikit-learn's convention).

* ``__init__`` takes explicit, typed keyword arguments with their defaults in the signature and only stores
  them as attributes of the same name (its body: ``self._store(locals())``); :meth:`Estimator.get_params` reads them back through the signature,
  :meth:`Estimator.set_params` changes them (an unknown name is a :class:`~magkit.exceptions.ConfigError`
  that lists the valid ones).
* ``fit`` / ``condense`` call :meth:`Estimator.check_params` first: every value is checked against its
  declared type (one-line ``ConfigError`` naming the parameter, the value and the type), then the
  subclass's own range checks in ``_check_params``.
* Learned state carries a trailing underscore (``model_``, ``history_``, ``diagnostics_``) and is created only
  by ``fit`` / ``condense``; reading it before raises :class:`~magkit.exceptions.NotFittedError`.
* :func:`coerce_param` converts a command-line string (``--set lr=1e-3``) through the parameter's declared
  type.
"""

from __future__ import annotations

import difflib
import inspect
import types
import typing
from collections.abc import Mapping, Sequence
from functools import cache
from typing import Any, ClassVar, Literal, Union

import yaml

from .exceptions import ConfigError, NotFittedError

_MISSING = object()


def did_you_mean(name: str, choices: Sequence[str]) -> str:
    """``" (did you mean 'x'?)"`` for the closest of ``choices``, or ``""``."""
    close = difflib.get_close_matches(str(name), [str(c) for c in choices], n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def name_subset(value: str | Sequence[str], allowed: Sequence[str], what: str) -> list[str]:
    """``value`` (one name or several) as a list without repeats, in order; a one-line :class:`ConfigError`
    naming ``what`` when it is empty or holds a name outside ``allowed``."""
    names = list(dict.fromkeys((value,) if isinstance(value, str) else value))
    if not names or any(n not in allowed for n in names):
        raise ConfigError(f"{what}: unknown or empty (got {list(names)!r}); allowed: a non-empty subset of "
                          f"{list(allowed)}")
    return names


# ---------------------------------------------------------------------------------------------- type checks
def type_name(tp: Any) -> str:
    """A readable name of an annotation: ``float``, ``int or None``, ``one of 'a', 'b'``, ``list of str``."""
    if tp is Any:
        return "any value"
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (Union, types.UnionType):
        return " or ".join(type_name(a) for a in typing.get_args(tp))
    if tp is type(None):
        return "None"
    if origin in (list, tuple, Sequence):
        args = [a for a in typing.get_args(tp) if a is not Ellipsis]
        kind = "list" if origin is list else "sequence"
        return f"{kind} of {type_name(args[0])}" if args else kind
    if origin in (dict, Mapping):
        args = typing.get_args(tp)
        return f"mapping of {type_name(args[0])} to {type_name(args[1])}" if len(args) == 2 else "mapping"
    return getattr(tp, "__name__", str(tp))


def matches(value: Any, tp: Any) -> bool:
    """Whether ``value`` is an instance of the annotation ``tp`` (ints pass as floats; bools are not numbers)."""
    if tp is Any:
        return True
    origin = typing.get_origin(tp)
    if origin is Literal:
        return any(value == a and type(value) is type(a) for a in typing.get_args(tp))
    if origin in (Union, types.UnionType):
        return any(matches(value, a) for a in typing.get_args(tp))
    if tp is type(None):
        return value is None
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if origin in (list, tuple, Sequence):
        if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
            return False
        args = [a for a in typing.get_args(tp) if a is not Ellipsis]
        if origin is tuple and len(args) > 1 and Ellipsis not in typing.get_args(tp):
            return len(value) == len(args) and all(matches(v, a) for v, a in zip(value, args))
        return not args or all(matches(v, args[0]) for v in value)
    if origin in (dict, Mapping):
        if not isinstance(value, Mapping):
            return False
        args = typing.get_args(tp)
        return len(args) != 2 or all(matches(k, args[0]) and matches(v, args[1]) for k, v in value.items())
    if isinstance(tp, type):
        return isinstance(value, tp)
    return True


def coerce_param(cls: type, name: str, text: str) -> Any:
    """Convert the command-line string ``text`` to the declared type of ``cls``'s parameter ``name``.

    Numbers, booleans, ``null``/``none`` and YAML lists/mappings are parsed; a ``str`` parameter keeps the text
    as it is. Raises a one-line :class:`ConfigError` naming the parameter and its type when the text does not
    convert."""
    hints = param_types(cls)
    if name not in hints:
        names = list(param_defaults(cls))
        raise ConfigError(f"{cls.__name__}: unknown parameter {name!r}{did_you_mean(name, names)}; "
                          f"allowed: {', '.join(names)}")
    tp = hints[name]
    if matches(text, tp):  # a str parameter (or one that accepts a str) keeps the text as typed
        if not (isinstance(text, str) and text.strip().lower() in ("none", "null") and matches(None, tp)):
            return text
    try:
        value = yaml.safe_load(text) if isinstance(text, str) else text
    except yaml.YAMLError:
        value = _MISSING
    if isinstance(value, str) and value.strip().lower() == "none":
        value = None
    if isinstance(value, str):  # YAML reads 1e-3 as a string
        try:
            value = float(value)
        except ValueError:
            pass
    if isinstance(value, list) and _wants_tuple(tp):
        value = tuple(value)
    if value is _MISSING or not matches(value, tp):
        raise ConfigError(f"{cls.__name__}: {name}={text!r} is not {_article(type_name(tp))}")
    if tp is float or (typing.get_origin(tp) in (Union, types.UnionType) and float in typing.get_args(tp)
                       and isinstance(value, int) and not isinstance(value, bool)):
        value = float(value)
    return value


def _wants_tuple(tp: Any) -> bool:
    if typing.get_origin(tp) in (Union, types.UnionType):
        return any(_wants_tuple(a) for a in typing.get_args(tp))
    return tp is tuple or typing.get_origin(tp) is tuple


def _article(name: str) -> str:
    if name.startswith(("one of", "any")):
        return name
    return ("an " if name[:1] in "aeiou" else "a ") + name


@cache
def _signature(cls: type) -> inspect.Signature:
    sig = inspect.signature(cls.__init__)
    for p in sig.parameters.values():
        if p.kind in (p.VAR_KEYWORD, p.VAR_POSITIONAL):
            raise TypeError(f"{cls.__name__}.__init__ must list its parameters explicitly (no *args / **kwargs)")
    return sig


def param_defaults(cls: type) -> dict[str, Any]:
    """The parameters of ``cls.__init__`` and their defaults, in signature order."""
    return {n: p.default for n, p in _signature(cls).parameters.items() if n != "self"}


@cache
def _hints(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls.__init__)
    return {n: hints.get(n, Any) for n in param_defaults(cls)}


def param_types(cls: type) -> dict[str, Any]:
    """The declared type of every parameter of ``cls.__init__`` (``Any`` where none is declared)."""
    return dict(_hints(cls))


class Estimator:
    """Base of magkit's estimators and condensers: the parameter protocol of the module docstring."""

    #: the registry name this instance was created under (set by the registry; the class name otherwise)
    name: ClassVar[str] = ""

    def get_params(self) -> dict[str, Any]:
        """The constructor's parameters and their current values."""
        return {n: getattr(self, n) for n in param_defaults(type(self))}

    @property
    def params(self) -> dict[str, Any]:
        """A read-only copy of :meth:`get_params` (changing it changes nothing; use :meth:`set_params`)."""
        return self.get_params()

    def set_params(self, **params: Any) -> Estimator:
        """Change parameters by name; returns ``self``. Unknown names are a :class:`ConfigError`."""
        names = param_defaults(type(self))
        for key in params:
            if key not in names:
                raise ConfigError(f"{type(self).__name__}: unknown parameter {key!r}{did_you_mean(key, list(names))}; "
                                  f"allowed: {', '.join(names)}")
        for key, value in params.items():
            setattr(self, key, value)
        return self

    def _store(self, values: Mapping[str, Any]) -> None:
        """Store every constructor parameter from ``values`` (``__init__`` passes its ``locals()``): the whole body
        of an ``__init__`` that follows the protocol."""
        for name in param_defaults(type(self)):
            setattr(self, name, values[name])

    def check_params(self) -> None:
        """Check every parameter against its declared type, then the subclass's ``_check_params``."""
        for key, tp in _hints(type(self)).items():
            value = getattr(self, key)
            if not matches(value, tp):
                raise ConfigError(f"{type(self).__name__}: {key}={value!r} is not {_article(type_name(tp))}")
        self._check_params()

    def _check_params(self) -> None:
        """Range and consistency checks of a subclass (one-line ConfigErrors)."""

    def __getattr__(self, key: str):
        # only reached when normal lookup fails: fitted state read before fit / condense
        if key.endswith("_") and not key.startswith("__"):
            raise NotFittedError(f"{type(self).__name__} is not fitted yet (no {key}); call "
                                 f"{'condense' if hasattr(type(self), 'condense') else 'fit'}(graph) first")
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {key!r}")

    def __repr__(self) -> str:
        defaults = param_defaults(type(self))
        changed = {k: v for k, v in self.get_params().items() if not _same(defaults[k], v)}
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in changed.items())})"


def _same(a: Any, b: Any) -> bool:
    try:
        return bool(a == b)
    except Exception:  # tensors and other objects without a boolean equality
        return a is b
