"""Named condensers: the methods ``magkit condense --method`` and the benchmark accept.

Gradient matching (one loop, :class:`~magkit.condense.base.GradientMatching`):

============================  =====================================================================
``gcond``                     learned structure (PGE), no decoupling, no damping (λ = 0)
``gcond-x``                   structure-free (A' = 0)
``srgm``                      PGE + decoupling + damping (``damping="structure"``, the official form)
``srgm-no-decoupling``        ``srgm`` without the projection
``srgm-no-damping``           ``srgm`` without the Dirichlet term
============================  =====================================================================

Coresets at the same budget: ``random``, ``herding``, ``kcenter``. ``whole`` (train on the full graph)
is the upper bound; it is an evaluation, not a condenser (see ``magkit.condense.evaluate.train_whole``).
"""

from __future__ import annotations

from typing import Any

from ..exceptions import ConfigError
from .base import Condenser, GradientMatching
from .coreset import CORESETS, Coreset

SRGM_DEFAULTS: dict[str, Any] = {"decouple": True, "damping": "structure", "damping_weight": 1.0}

CONDENSERS: dict[str, dict[str, Any]] = {
    "gcond": {},
    "gcond-x": {"structure": "none"},
    "srgm": dict(SRGM_DEFAULTS),
    "srgm-no-decoupling": {**SRGM_DEFAULTS, "decouple": False},
    "srgm-no-damping": {**SRGM_DEFAULTS, "damping": None},
}


class SRGM(GradientMatching):
    """SR-GM: gradient matching with gradient decoupling and structural damping (see docs/condensation.md)."""

    name = "srgm"
    defaults = {**GradientMatching.defaults, **SRGM_DEFAULTS}


def condenser_names() -> list[str]:
    return list(CONDENSERS) + list(CORESETS)


def make_condenser(name: str, **params: Any) -> Condenser:
    """A condenser by name with parameter overrides (``ConfigError`` on an unknown name or parameter)."""
    if name in CONDENSERS:
        cond = GradientMatching(**{**CONDENSERS[name], **params})
        cond.name = name
        return cond
    if name in CORESETS:
        return Coreset(method=name, **params)
    raise ConfigError(f"method: unknown condenser {name!r}; allowed: {', '.join(condenser_names())}")
