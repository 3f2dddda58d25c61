"""Named configurations of estimator classes: one registry style for methods and condensers.

A registry maps a name to a class and the parameters the name fixes (``gcn-early`` is
``FusionClassifier(backbone="gcn", fusion="early")``, ``srgm`` is :class:`~magkit.condense.SRGM`). A miss is a
:class:`~magkit.exceptions.ConfigError` with the closest name and the valid ones.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .base import did_you_mean, param_defaults
from .exceptions import ConfigError


@dataclass(frozen=True)
class Spec:
    """One registered name: the class, a one-line description, the parameters the name fixes, its group."""

    name: str
    cls: type
    description: str
    fixed: dict[str, Any] = field(default_factory=dict)
    group: str = ""

    def defaults(self) -> dict[str, Any]:
        """The parameters a user may set under this name, with their defaults (fixed ones left out)."""
        return {k: v for k, v in param_defaults(self.cls).items() if k not in self.fixed}

    def create(self, **params: Any):
        clash = sorted(set(params) & set(self.fixed))
        if clash:
            raise ConfigError(f"{self.name}: fixes {', '.join(f'{k}={self.fixed[k]!r}' for k in clash)}; "
                              "choose another name instead of overriding it")
        obj = self.cls.__new__(self.cls)
        obj.__init__(**{**self.fixed, **params})  # unknown names: a ConfigError from the class (see below)
        obj.name = self.name
        return obj


class Registry:
    """Names -> :class:`Spec`; ``populate`` fills it on first use (so importing magkit stays cheap)."""

    def __init__(self, kind: str, populate: Callable[[Registry], None]):
        self.kind = kind
        self._populate = populate
        self._specs: dict[str, Spec] = {}
        self._ready = False

    def register(self, name: str, cls: type, description: str, group: str = "", **fixed: Any) -> None:
        self._specs[name] = Spec(name, cls, description, fixed, group)

    def _fill(self) -> None:
        if not self._ready:
            try:
                self._populate(self)
            except BaseException:
                self._specs.clear()  # a failed fill is retried (and raises its cause) on the next call
                raise
            self._ready = True

    def names(self) -> list[str]:
        self._fill()
        return list(self._specs)

    def specs(self) -> list[Spec]:
        self._fill()
        return list(self._specs.values())

    def __contains__(self, name: object) -> bool:
        self._fill()
        return name in self._specs

    def get(self, name: str) -> Spec:
        self._fill()
        if name not in self._specs:
            raise ConfigError(f"{self.kind}: unknown name {name!r}{did_you_mean(name, list(self._specs))}; "
                              f"allowed: {', '.join(self._specs)}")
        return self._specs[name]

    def create(self, name: str, **params: Any):
        """An unfitted instance of ``name`` with ``params``; unknown parameters are a ConfigError."""
        spec = self.get(name)
        allowed = param_defaults(spec.cls)
        unknown = [k for k in params if k not in allowed]
        if unknown:
            names = [k for k in allowed if k not in spec.fixed]
            raise ConfigError(f"{name}: unknown parameter {unknown[0]!r}{did_you_mean(unknown[0], names)}; "
                              f"allowed: {', '.join(names)}")
        return spec.create(**params)
