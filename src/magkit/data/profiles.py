"""Named settings of the synthetic feature model (:mod:`magkit.data.synthetic`) and their validation."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..base import did_you_mean
from ..exceptions import ConfigError
from ._params import _check_int, _check_range

__all__ = ["PROFILES", "ModalityProfile", "FeatureProfile"]


@dataclass(frozen=True)
class ModalityProfile:
    """How one modality is generated.

    Attributes:
        quality: ``(alpha, beta)`` of the Beta distribution of node quality :math:`q_{i,m}`, or a constant in
            ``[0, 1]``.
        biased: fraction of the nodes having this modality whose modality is confidently wrong (it encodes
            the confusable partner class :math:`\\pi(y_i)` with high quality).
        missing: probability that a node lacks this modality.
        dim: feature width :math:`d_m`.
    """

    quality: tuple[float, float] | float
    biased: float
    missing: float
    dim: int = 128


@dataclass(frozen=True)
class FeatureProfile:
    """A named setting of the feature model; every field but ``name``/``description`` can be overridden.

    Attributes:
        modalities: ``{name: ModalityProfile}`` in column order.
        latent_dim: :math:`k`, the dimension of the class-prototype space.
        signal: :math:`s`, the prototype scale at quality 1.
        noise: :math:`\\sigma`, the latent noise standard deviation.
        partner_corr: :math:`\\rho`, cosine between the prototypes of classes of one confusable group.
        group_size: classes per confusable group (a last short group joins its predecessor).
        biased_quality: Beta parameters of the quality of biased modalities (high: confidently wrong).
        smoothing: :math:`\\beta` of the graph smoothing of quality (0 = independent across nodes).
        smoothing_steps: :math:`K`, neighbour-averaging steps of that smoothing.
        quality_corr: correlation of the Gaussian fields behind a node's modality qualities (0 = independent;
            > 0 makes a node weak or strong in all modalities at once).
        ambiguity: Beta parameters (or a constant in ``[0, 1]``; 0 switches it off) of :math:`a_i`, how far a
            node's semantics lean toward the partner class, shared by all its modalities: the part of the
            difficulty that fusing modalities cannot remove (neighbours can).
        gain: :math:`g`, the strength of the tanh nonlinearity (small = nearly linear).
        feature_noise: :math:`\\tau`, observation noise added after the projection.
        space: ``"separate"`` (one encoder per modality) or ``"aligned"`` (one shared space).
        misaligned: fraction of misaligned nodes in the aligned space (``None`` = 0.3 when aligned, else 0).
        misalign_to: ``"class"`` (another class's prototype) or ``"random"`` (a random direction).
        shared_noise: share of the noise variance common to a node's modalities in the aligned space.
        outliers: fraction :math:`f` of the nodes whose every modality encodes another class :math:`c'_i`
            (``gt_target``; ``gt_biased`` is true for all their modalities): the class other than :math:`y_i`
            most frequent among their neighbours' labels (:math:`\\pi(y_i)` without such neighbours), for the
            :math:`fN` nodes whose neighbourhood leans most toward :math:`c'_i` (label noise and taxonomy
            ambiguity shared by content and links, which neither fusion nor neighbours correct; 0 = none).
    """

    name: str
    description: str
    modalities: Mapping[str, ModalityProfile]
    latent_dim: int = 32
    signal: float = 6.2
    noise: float = 1.0
    partner_corr: float = 0.5
    group_size: int = 2
    biased_quality: tuple[float, float] = (8.0, 2.0)
    smoothing: float = 0.5
    smoothing_steps: int = 2
    quality_corr: float = 0.0
    ambiguity: tuple[float, float] | float = (1.0, 3.5)
    gain: float = 0.8
    feature_noise: float = 0.1
    space: str = "separate"
    misaligned: float | None = None
    misalign_to: str = "class"
    shared_noise: float = 0.7
    outliers: float = 0.0


PROFILES: dict[str, FeatureProfile] = {
    "text-dominant": FeatureProfile(
        name="text-dominant",
        description="text clearly stronger on average, image better for a sizeable minority of nodes (like MAGB Grocery)",
        modalities={
            "text": ModalityProfile(quality=(5.5, 2.0), biased=0.05, missing=0.02),
            "image": ModalityProfile(quality=(3.5, 2.5), biased=0.06, missing=0.05),
        },
    ),
    "image-dominant": FeatureProfile(
        name="image-dominant",
        description="the mirror of text-dominant: image clearly stronger on average (like MAGB Reddit-M)",
        modalities={
            "text": ModalityProfile(quality=(3.5, 2.5), biased=0.06, missing=0.05),
            "image": ModalityProfile(quality=(5.5, 2.0), biased=0.05, missing=0.02),
        },
    ),
    "balanced": FeatureProfile(
        name="balanced",
        description="both modalities equally strong on average; per node either can be the better one",
        modalities={
            "text": ModalityProfile(quality=(4.5, 2.25), biased=0.06, missing=0.03),
            "image": ModalityProfile(quality=(4.5, 2.25), biased=0.06, missing=0.03),
        },
    ),
    "grocery-calibrated": FeatureProfile(
        name="grocery-calibrated",
        description="text-dominant, fitted on MAGB Grocery's structure to the published RoBERTa+CLIP MLP, GCN and "
        "GraphSAGE accuracies: 15% outliers whose content and links both point to another class",
        modalities={
            "text": ModalityProfile(quality=(5.5, 2.0), biased=0.05, missing=0.02),
            "image": ModalityProfile(quality=(2.7, 3.0), biased=0.06, missing=0.05),
        },
        signal=12.0,
        ambiguity=(1.0, 8.0),
        outliers=0.15,
    ),
}

_SPACES = ("separate", "aligned")
_MISALIGN = ("class", "random")
_PER_MODALITY = ("quality", "biased", "missing")


def _check_quality(name: str, value: Any) -> tuple[float, float] | float:
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise ConfigError(f"{name}: {value!r} must be a Beta (alpha, beta) pair or a constant in [0, 1]")
        a = _check_range(f"{name} alpha", value[0], 0.0, math.inf, lo_open=True, hi_open=True)
        b = _check_range(f"{name} beta", value[1], 0.0, math.inf, lo_open=True, hi_open=True)
        return (a, b)
    return _check_range(name, value, 0.0, 1.0)


def _resolve_profile(
    profile: str | FeatureProfile,
    dims: Mapping[str, int] | int | None,
    modalities: Sequence[str] | None,
    overrides: Mapping[str, Any],
) -> FeatureProfile:
    """The profile with every override applied and every value checked."""
    if isinstance(profile, FeatureProfile):
        base = profile
    elif isinstance(profile, str) and profile in PROFILES:
        base = PROFILES[profile]
    else:
        raise ConfigError(f"profile: {profile!r} is not a known profile{did_you_mean(profile, list(PROFILES))}; allowed: {', '.join(PROFILES)}")

    fields = {f.name for f in dataclasses.fields(FeatureProfile)} - {"name", "description", "modalities"}
    unknown = sorted(set(overrides) - fields - set(_PER_MODALITY))
    if unknown:
        raise ConfigError(
            f"unknown generator parameter(s) {', '.join(unknown)}{did_you_mean(unknown[0], sorted(fields | set(_PER_MODALITY)))}; allowed: "
            f"{', '.join(sorted(fields | set(_PER_MODALITY)))}, dims, modalities"
        )

    mods_in = dict(base.modalities)
    names = tuple(modalities) if modalities is not None else tuple(mods_in)
    if not names:
        raise ConfigError("modalities: () is empty; allowed: at least one modality name")
    if len(set(names)) != len(names):
        raise ConfigError(f"modalities: {names!r} has duplicates")

    mods: dict[str, ModalityProfile] = {}
    for m in names:
        spec = {}
        for key in _PER_MODALITY:
            over = overrides.get(key)
            if isinstance(over, Mapping):
                unknown_m = set(over) - set(names)
                if unknown_m:
                    raise ConfigError(f"{key}: modality {sorted(unknown_m)} not generated; allowed: {', '.join(names)}")
                if m in over:
                    spec[key] = over[m]
            elif over is not None:
                spec[key] = over
        if m in mods_in:
            mp = dataclasses.replace(mods_in[m], **spec)
        elif set(spec) >= {"quality"}:
            mp = ModalityProfile(quality=spec["quality"], biased=spec.get("biased", 0.0), missing=spec.get("missing", 0.0))
        else:
            raise ConfigError(
                f"modalities: {m!r} has no parameters in profile {base.name!r} (which defines "
                f"{', '.join(mods_in)}); pass quality={{{m!r}: (alpha, beta)}} (and optionally biased=, missing=)"
            )
        if dims is not None:
            if isinstance(dims, Mapping):
                if m in dims:
                    mp = dataclasses.replace(mp, dim=dims[m])
            else:
                mp = dataclasses.replace(mp, dim=dims)
        mp = ModalityProfile(
            quality=_check_quality(f"quality[{m}]", mp.quality),
            biased=_check_range(f"biased[{m}]", mp.biased, 0.0, 1.0, hi_open=True),
            missing=_check_range(f"missing[{m}]", mp.missing, 0.0, 1.0, hi_open=True),
            dim=_check_int(f"dims[{m}]", mp.dim, 1),
        )
        mods[m] = mp
    if isinstance(dims, Mapping):
        extra = set(dims) - set(names)
        if extra:
            raise ConfigError(f"dims: modality {sorted(extra)} not generated; allowed: {', '.join(names)}")

    kw = {k: v for k, v in overrides.items() if k in fields}
    p = dataclasses.replace(base, modalities=mods, **kw)
    if p.space not in _SPACES:
        raise ConfigError(f"space: {p.space!r} is not a feature space; allowed: {', '.join(_SPACES)}")
    if p.misalign_to not in _MISALIGN:
        raise ConfigError(f"misalign_to: {p.misalign_to!r}; allowed: {', '.join(_MISALIGN)}")
    misaligned = p.misaligned
    if misaligned is None:
        misaligned = 0.3 if p.space == "aligned" else 0.0
    misaligned = _check_range("misaligned", misaligned, 0.0, 1.0, hi_open=True)
    if p.space == "separate" and misaligned > 0:
        raise ConfigError(f"misaligned: {misaligned} needs space='aligned' (a separate space has no alignment)")
    if p.space == "aligned":
        widths = {mp.dim for mp in mods.values()}
        if len(widths) != 1:
            raise ConfigError(
                f"dims: {({m: mp.dim for m, mp in mods.items()})} must be equal in the aligned space "
                "(one shared projection); allowed: one common width"
            )
        if misaligned > 0 and len(mods) < 2:
            raise ConfigError("misaligned: needs at least two modalities in the aligned space")
    return dataclasses.replace(
        p,
        latent_dim=_check_int("latent_dim", p.latent_dim, 2),
        signal=_check_range("signal", p.signal, 0.0, math.inf, hi_open=True),
        noise=_check_range("noise", p.noise, 0.0, math.inf, lo_open=True, hi_open=True),
        partner_corr=_check_range("partner_corr", p.partner_corr, 0.0, 1.0, hi_open=True),
        group_size=_check_int("group_size", p.group_size, 1),
        biased_quality=_check_quality("biased_quality", p.biased_quality),
        smoothing=_check_range("smoothing", p.smoothing, 0.0, 1.0),
        quality_corr=_check_range("quality_corr", p.quality_corr, 0.0, 1.0),
        ambiguity=_check_quality("ambiguity", p.ambiguity),
        smoothing_steps=_check_int("smoothing_steps", p.smoothing_steps, 0),
        gain=_check_range("gain", p.gain, 0.0, math.inf, lo_open=True, hi_open=True),
        feature_noise=_check_range("feature_noise", p.feature_noise, 0.0, math.inf, hi_open=True),
        misaligned=misaligned,
        shared_noise=_check_range("shared_noise", p.shared_noise, 0.0, 1.0, hi_open=True),
        outliers=_check_range("outliers", p.outliers, 0.0, 1.0, hi_open=True),
    )


def _profile_record(p: FeatureProfile) -> dict[str, Any]:
    """A plain, JSON-able description of a resolved profile (for ``graph.meta``)."""
    rec = dataclasses.asdict(p)
    rec["modalities"] = {m: dataclasses.asdict(mp) for m, mp in p.modalities.items()}
    return rec
