"""Named condensers: the methods ``magkit condense --method`` and the benchmarks accept.

One class per family; a variant is its family's class with parameters the name fixes:

============================  ==========================================================================
``gcond``                     :class:`~magkit.condense.gcond.GCond`: learned structure (PGE), no decoupling,
                              no damping
``gcond-x``                   ``GCond(structure="none")``: structure-free (A' = 0)
``srgm``                      :class:`~magkit.condense.srgm.SRGM`: PGE + decoupling + damping
                              (``damping="structure"``, the official form)
``srgm-no-decoupling``        ``SRGM(decouple=False)``
``srgm-no-damping``           ``SRGM(damping=None)``
``srgm-x``                    ``SRGM(structure="none", damping="proximal", damping_graph="knn")``:
                              structure-free, decoupling + damping of the update over the within-class
                              kNN graph of X'
``random``, ``herding``,      :class:`~magkit.condense.coreset.Coreset` with ``method`` fixed
``kcenter``
============================  ==========================================================================

``whole`` (train on the full graph) is the upper bound; it is an evaluation, not a condenser (see
:func:`~magkit.condense.evaluate.train_whole`).
"""

from __future__ import annotations

from typing import Any

from ..registry import Registry
from .base import Condenser


def _populate(reg: Registry) -> None:
    from .coreset import Coreset
    from .gcond import GCond
    from .srgm import SRGM

    reg.register("gcond", GCond, "GCond: gradient matching with a learned structure (PGE)", group="gcond")
    reg.register("gcond-x", GCond, "GCond-X: structure-free gradient matching", group="gcond", structure="none")
    reg.register("srgm", SRGM, "SR-GM: gradient matching with decoupling and structural damping", group="srgm")
    reg.register("srgm-no-decoupling", SRGM, "SR-GM without gradient decoupling", group="srgm", decouple=False)
    reg.register("srgm-no-damping", SRGM, "SR-GM without structural damping", group="srgm", damping=None)
    reg.register("srgm-x", SRGM, "SR-GM-X: structure-free SR-GM, update damped over the within-class kNN graph of X'",
                 group="srgm", structure="none", damping="proximal", damping_graph="knn")
    for method, what in (("random", "uniform"), ("herding", "herding (mean matching)"),
                         ("kcenter", "greedy k-center")):
        reg.register(method, Coreset, f"coreset: {what} choice of real training nodes", group="coreset",
                     method=method)


REGISTRY = Registry("condenser", _populate)


def condenser_names() -> list[str]:
    """Every registered condenser name: gradient matching (GCond, SR-GM), then the coresets."""
    return REGISTRY.names()


def make_condenser(name: str, **params: Any) -> Condenser:
    """An unfitted condenser by name with parameter overrides (``make_condenser("srgm")`` is an
    :class:`~magkit.condense.srgm.SRGM`); a :class:`~magkit.exceptions.ConfigError` on an unknown name, an
    unknown parameter or one the name fixes."""
    return REGISTRY.create(name, **params)
