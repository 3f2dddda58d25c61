"""The method registry: names -> node-classifier classes with the parameters the name fixes.

``gcn-early`` is ``FusionClassifier(backbone="gcn", fusion="early")``, ``mnl-gcn`` is
``MNLClassifier(backbone="gcn")``; GraphMNL and its ablations register themselves through
``magkit.methods.graphmnl.register_graphmnl(register)``. One :class:`magkit.registry.Registry` holds them; a miss
is a one-line :class:`~magkit.exceptions.ConfigError` with the closest name and the valid ones.
"""

from __future__ import annotations

from typing import Any

from ..registry import Registry, Spec

BACKBONE_NAMES = {"mlp": "MLP", "gcn": "GCN", "sage": "GraphSAGE", "gat": "GAT", "sgc": "SGC", "appnp": "APPNP"}


def _populate(reg: Registry) -> None:
    from ..models.backbones import BACKBONES
    from .baselines import DistillationClassifier, FusionClassifier, MNLClassifier

    def add(name: str, cls: type, description: str, **fixed: Any) -> None:
        reg.register(name, cls, description, group="baselines", **fixed)

    for b in BACKBONES:
        n = BACKBONE_NAMES[b]
        add(f"{b}-text", FusionClassifier, f"{n} on text features only", backbone=b, fusion="text")
        add(f"{b}-image", FusionClassifier, f"{n} on image features only", backbone=b, fusion="image")
        add(f"{b}-early", FusionClassifier, f"{n}, early fusion (concatenated modalities)", backbone=b, fusion="early")
        add(f"{b}-late", FusionClassifier, f"{n}, late fusion (mean of per-modality logits)", backbone=b, fusion="late")
        add(f"{b}-learned", FusionClassifier, f"{n} on an attention fusion of per-modality encoders", backbone=b,
            fusion="learned")
    for b in ("mlp", "gcn", "sage"):
        n = BACKBONE_NAMES[b]
        add(f"kd-{b}", DistillationClassifier, f"{n} branches, positive distillation to the dominant (KL)", backbone=b)
        add(f"mnl-{b}", MNLClassifier, f"{n} branches, Multimodal Negative Learning (Gong et al. 2025)", backbone=b)
    from .graphmnl import register_graphmnl

    register_graphmnl(register)


#: every registered method
REGISTRY = Registry("method", _populate)


def register(name: str, cls: type, description: str, group: str = "baselines", **fixed: Any) -> None:
    """Register ``cls`` under ``name`` with the parameters the name fixes."""
    REGISTRY.register(name, cls, description, group=group, **fixed)


def method_names() -> list[str]:
    """Every registered method name, in registration order."""
    return REGISTRY.names()


def methods() -> list[Spec]:
    """Every registered :class:`~magkit.registry.Spec`."""
    return REGISTRY.specs()


def get_method(name: str) -> Spec:
    """The :class:`~magkit.registry.Spec` of ``name`` (a ConfigError listing the valid names on a miss)."""
    return REGISTRY.get(name)


def create(name: str, **params: Any):
    """An unfitted estimator of method ``name`` with ``params`` (unknown parameters: a ConfigError)."""
    return REGISTRY.create(name, **params)
