"""The method registry: names -> estimator classes with fixed parameters. A miss lists the valid names."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..exceptions import ConfigError


@dataclass(frozen=True)
class MethodSpec:
    name: str
    cls: type
    description: str
    fixed: dict[str, Any] = field(default_factory=dict)
    group: str = "baselines"

    def create(self, **params: Any):
        clash = sorted(set(params) & set(self.fixed))
        if clash:
            raise ConfigError(f"method {self.name!r} fixes {', '.join(clash)}; choose another method name instead")
        est = self.cls(**{**self.fixed, **params})
        est.__dict__["_method"] = self.name  # the registry name, for save() and reports
        return est


_REGISTRY: dict[str, MethodSpec] = {}


def register(name: str, cls: type, description: str, group: str = "baselines", **fixed: Any) -> None:
    _REGISTRY[name] = MethodSpec(name, cls, description, fixed, group)


def _populate() -> None:
    if _REGISTRY:
        return
    from ..models.backbones import BACKBONES
    from .baselines import DistillationClassifier, FusionClassifier, MNLClassifier

    names = {"mlp": "MLP", "gcn": "GCN", "sage": "GraphSAGE", "gat": "GAT", "sgc": "SGC", "appnp": "APPNP"}
    for b in BACKBONES:
        register(f"{b}-text", FusionClassifier, f"{names[b]} on text features only", backbone=b, fusion="text")
        register(f"{b}-image", FusionClassifier, f"{names[b]} on image features only", backbone=b, fusion="image")
        register(f"{b}-early", FusionClassifier, f"{names[b]}, early fusion (concatenated modalities)", backbone=b, fusion="early")
        register(f"{b}-late", FusionClassifier, f"{names[b]}, late fusion (mean of per-modality logits)", backbone=b, fusion="late")
        register(f"{b}-learned", FusionClassifier, f"{names[b]} on an attention fusion of per-modality encoders", backbone=b, fusion="learned")
    for b in ("mlp", "gcn", "sage"):
        register(f"kd-{b}", DistillationClassifier, f"{names[b]} branches, positive distillation to the dominant (KL)", backbone=b)
        register(f"mnl-{b}", MNLClassifier, f"{names[b]} branches, Multimodal Negative Learning (Gong et al. 2025)", backbone=b)
    try:
        from .graphmnl import register_graphmnl
    except ImportError:  # GraphMNL not built yet
        return
    register_graphmnl(register)


def method_names() -> list[str]:
    _populate()
    return list(_REGISTRY)


def methods() -> list[MethodSpec]:
    _populate()
    return list(_REGISTRY.values())


def get_method(name: str) -> MethodSpec:
    _populate()
    if name not in _REGISTRY:
        raise ConfigError(f"method: unknown name {name!r}; allowed: {', '.join(_REGISTRY)}")
    return _REGISTRY[name]


def create(name: str, **params: Any):
    """An unfitted estimator of method ``name`` with ``params``."""
    return get_method(name).create(**params)
