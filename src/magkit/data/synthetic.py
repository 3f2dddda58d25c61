r"""Synthetic and semi-synthetic multimodal attributed graphs with known per-node modality quality.

Two generators share one feature model:

* :func:`make_synthetic_mag` draws a whole graph: a degree-corrected stochastic block model (DC-SBM) with
  power-law degree propensities, a requested edge homophily and mean degree, mildly imbalanced classes,
  then per-modality features.
* :func:`attach_synthetic_features` keeps a given structure and its labels (a real graph such as MAGB's
  Grocery) and draws only the features.

Structure (DC-SBM). Class sizes follow a geometric progression from the largest to the smallest class
(ratio ``class_ratio``). Every node gets a propensity :math:`\theta_i = \min((1-u_i)^{-1/(\gamma-1)},
\theta_{\max})`, :math:`u_i \sim U(0,1)` (a Pareto tail :math:`P(\theta) \propto \theta^{-\gamma}` with
:math:`\gamma` = ``degree_exponent``, capped so the expected degree stays below ``max_degree``, by default the
structural cut-off :math:`\sqrt{N \bar d}`). Exactly :math:`M = \mathrm{round}(N \bar d / 2)` distinct
undirected edges are placed, :math:`\mathrm{round}(hM)` of them inside classes and the rest between classes.
One endpoint is drawn with probability :math:`\propto \theta_u`; the other with probability
:math:`\propto \theta_v` among the nodes of the same class (intra edges) or of every other class (inter edges).
Self-loops and duplicates are dropped and redrawn, so the edge homophily is :math:`h` up to rounding and
the mean degree is :math:`\bar d`. Cost: :math:`O(E \log N)`, no :math:`N \times N` matrix.

Features (per modality :math:`m`, node :math:`i` with class :math:`y_i`; ``docs/generators.md`` gives the
full process):

.. math::

    \mu_{m,c} &= \sqrt{\rho}\, a_{m,g(c)} + \sqrt{1-\rho}\, b_{m,c} \quad(\text{unit; } \cos(\mu_{m,c},
    \mu_{m,\pi(c)}) = \rho)\\
    q_{i,m} &\sim \mathrm{Beta}(\alpha_m, \beta_m) \text{ (graph-smoothed by a rank copula)}, \qquad
    t_{i,m} = y_i \text{, or } \pi(y_i) \text{ for a biased node (then } q_{i,m} \sim \mathrm{Beta}(8, 2))\\
    a_i &\sim \mathrm{Beta}(1, 3.5) \text{ (semantic ambiguity, shared by the node's modalities)}\\
    z_{i,m} &= q_{i,m}\, s\, \big((1-a_i)\,\mu_{m, t_{i,m}} + a_i\, \mu_{m,\pi(t_{i,m})}\big) + \varepsilon_{i,m},
    \qquad \varepsilon_{i,m} \sim \mathcal N(0, \sigma^2 I_k)\\
    x_{i,m} &= \tanh\big(g\,(W_m^\top z_{i,m} / c + \tau \nu_{i,m})\big), \quad W_m \in \mathbb R^{k \times d_m},\
    (W_m)_{lj} \sim \mathcal N(0, 1/k),\ c = \sqrt{\sigma^2 + s^2/k},\ \nu \sim \mathcal N(0, I)

:math:`\pi(c)` is the confusable partner of class :math:`c` (classes are put in random groups of
``group_size`` and :math:`\pi` cycles inside each group). A modality is absent with probability
``missing[m]`` (every node keeps at least one); absent rows are zeros and ``modality_mask`` is false.
A fraction ``outliers`` of the nodes (0 except in ``grocery-calibrated``) have every modality encode
:math:`c'_i`, the class other than :math:`y_i` most frequent among their neighbours' labels, taking the nodes
whose neighbourhood leans most toward it: content and links then err together on them, as with the label noise
and overlapping categories of real product taxonomies, so neither fusion nor neighbour averaging corrects them.

``space="aligned"`` puts every modality in one CLIP-like space: the same prototypes and the same projection
for all modalities (equal widths), and a share ``shared_noise`` of the noise variance common to a node's
modalities, so a node's text and image vectors are close. A fraction ``misaligned`` of the nodes that have
every modality get non-anchor modalities (all but the first) that point elsewhere: another class's prototype
(``misalign_to="class"``) or a random direction (``"random"``) with independent noise.

Ground truth stored on the graph: ``gt_quality`` (float ``[N, M]``, :math:`q_{i,m}`, 0 where absent),
``gt_biased`` (bool ``[N, M]``), ``gt_target`` (long ``[N, M]``, :math:`t_{i,m}`, ``-1`` where absent or where
a misaligned modality points in a random direction), ``gt_ambiguity`` (float ``[N]``, :math:`a_i`),
``gt_misaligned`` (bool ``[N]``, aligned space only) and, in ``meta["generator"]``, every parameter used
(with ``meta["profile"]``).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..exceptions import ConfigError
from .graph import SPLITS, MultimodalGraph, edge_homophily, to_undirected, validate
from .splits import apply_split

__all__ = [
    "PROFILES",
    "ModalityProfile",
    "FeatureProfile",
    "make_synthetic_mag",
    "attach_synthetic_features",
    "sample_dcsbm",
    "calibrate",
]


# ---------------------------------------------------------------------- profiles
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


# ---------------------------------------------------------------------- parameter checks
def _config_error(name: str, value: Any, allowed: str) -> ConfigError:
    return ConfigError(f"{name}: {value!r} is out of range; allowed: {allowed}")


def _check_range(name: str, value: Any, lo: float, hi: float, *, lo_open: bool = False, hi_open: bool = False) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name}: {value!r} is not a number") from None
    lo_ok = v > lo if lo_open else v >= lo
    hi_ok = v < hi if hi_open else v <= hi
    if not (lo_ok and hi_ok and math.isfinite(v)):
        lb = "(" if lo_open else "["
        rb = ")" if hi_open else "]"
        raise _config_error(name, value, f"{lb}{lo}, {hi}{rb}")
    return v


def _check_int(name: str, value: Any, lo: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or int(value) < lo:
        raise _config_error(name, value, f"an integer >= {lo}")
    return int(value)


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
        raise ConfigError(f"profile: {profile!r} is not a known profile; allowed: {', '.join(PROFILES)}")

    fields = {f.name for f in dataclasses.fields(FeatureProfile)} - {"name", "description", "modalities"}
    unknown = sorted(set(overrides) - fields - set(_PER_MODALITY))
    if unknown:
        raise ConfigError(
            f"unknown generator parameter(s) {', '.join(unknown)}; allowed: "
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


# ---------------------------------------------------------------------- helpers
def _seed_streams(seed: int) -> tuple[np.random.Generator, np.random.Generator]:
    """Independent generators for structure and features derived from one seed."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or int(seed) < 0:
        raise _config_error("seed", seed, "an integer >= 0")
    s_struct, s_feat = np.random.SeedSequence(int(seed)).spawn(2)
    return np.random.default_rng(s_struct), np.random.default_rng(s_feat)


def _draw_quality(rng: np.random.Generator, spec: tuple[float, float] | float, n: int) -> np.ndarray:
    if isinstance(spec, tuple):
        return rng.beta(spec[0], spec[1], size=n)
    return np.full(n, float(spec))


def _neighbour_mean(src: np.ndarray, dst: np.ndarray, deg: np.ndarray, v: np.ndarray) -> np.ndarray:
    s = np.bincount(src, weights=v[dst], minlength=deg.size)
    return np.where(deg > 0, s / np.maximum(deg, 1), v)


def _partners(num_classes: int, group_size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Random confusable groups: returns (group id per class, partner class per class)."""
    perm = rng.permutation(num_classes)
    n_groups = max(num_classes // group_size, 1)
    group = np.empty(num_classes, dtype=np.int64)
    partner = np.empty(num_classes, dtype=np.int64)
    for g in range(n_groups):
        members = perm[g * group_size:] if g == n_groups - 1 else perm[g * group_size:(g + 1) * group_size]
        group[members] = g
        partner[members] = np.roll(members, -1)
    return group, partner


def _prototypes(rng: np.random.Generator, group: np.ndarray, k: int, rho: float) -> np.ndarray:
    """Unit class prototypes [C, k]; classes of one group have cosine ``rho``, other classes about 0.

    The group directions and the class directions are orthonormal when there is room (groups + classes
    <= k), so the geometry is exact; otherwise they are independent Gaussian directions (nearly orthogonal).
    """
    c = group.size
    n_groups = int(group.max()) + 1
    if n_groups + c <= k:
        basis, _ = np.linalg.qr(rng.standard_normal((k, n_groups + c)))
        basis = basis.T
        shared, own = basis[:n_groups], basis[n_groups:]
    else:
        shared = rng.standard_normal((n_groups, k)) / math.sqrt(k)
        own = rng.standard_normal((c, k)) / math.sqrt(k)
    mu = math.sqrt(rho) * shared[group] + math.sqrt(1.0 - rho) * own
    return mu / np.linalg.norm(mu, axis=1, keepdims=True)


def _structure_arrays(structure: Any) -> tuple[Tensor, Tensor, int, MultimodalGraph | None]:
    if isinstance(structure, MultimodalGraph):
        return structure.edge_index.clone(), structure.y.clone(), structure.num_classes, structure
    if isinstance(structure, (tuple, list)) and len(structure) == 3:
        edge_index, y, num_classes = structure
        edge_index = torch.as_tensor(edge_index, dtype=torch.long)
        y = torch.as_tensor(y, dtype=torch.long).clone()
        num_classes = _check_int("structure num_classes", num_classes, 1)
        if y.dim() != 1 or y.numel() == 0:
            raise ConfigError(f"structure y: shape {tuple(y.shape)}; allowed: 1-D with one label per node")
        if edge_index.dim() != 2 or edge_index.size(0) != 2:
            raise ConfigError(f"structure edge_index: shape {tuple(edge_index.shape)}; allowed: [2, E]")
        n = y.numel()
        if edge_index.numel() and (int(edge_index.min()) < 0 or int(edge_index.max()) >= n):
            raise ConfigError(
                f"structure edge_index: node ids {int(edge_index.min())}..{int(edge_index.max())}; allowed: 0..{n - 1}"
            )
        if int(y.min()) < -1 or int(y.max()) >= num_classes:
            raise ConfigError(
                f"structure y: labels {int(y.min())}..{int(y.max())}; allowed: 0..{num_classes - 1} (or -1)"
            )
        return to_undirected(edge_index, n), y, num_classes, None
    raise ConfigError(
        f"structure: {type(structure).__name__} is not a graph; allowed: a MultimodalGraph or a tuple "
        "(edge_index [2, E], y [N], num_classes)"
    )


# ---------------------------------------------------------------------- the feature model
def _draw_features(
    edge_index: Tensor, y: Tensor, num_classes: int, p: FeatureProfile, rng: np.random.Generator
) -> dict[str, Any]:
    """Every random draw of the feature model (see the module docstring); returns tensors and facts."""
    n = int(y.numel())
    mods = tuple(p.modalities)
    nm = len(mods)
    k = p.latent_dim
    y_np = y.cpu().numpy().astype(np.int64)
    ei = edge_index.cpu().numpy()
    src, dst = ei[0], ei[1]
    deg = np.bincount(src, minlength=n).astype(np.float64)

    # latent classes: the label, or a draw from the label distribution for unlabelled nodes
    cls = y_np.copy()
    unl = cls < 0
    if unl.any():
        counts = np.bincount(cls[~unl], minlength=num_classes).astype(np.float64) + 1.0
        cls[unl] = rng.choice(num_classes, size=int(unl.sum()), p=counts / counts.sum())

    group, partner = _partners(num_classes, p.group_size, rng)
    # semantic ambiguity, shared by a node's modalities: the node sits between its class and the partner
    ambiguity = _draw_quality(rng, p.ambiguity, n) if num_classes > 1 else np.zeros(n)
    aligned = p.space == "aligned"
    if aligned:
        mu_shared = _prototypes(rng, group, k, p.partner_corr)
        d = next(iter(p.modalities.values())).dim
        w_shared = rng.standard_normal((k, d)) / math.sqrt(k)

    # presence: independent per modality, then every node keeps at least one modality
    present = np.stack([rng.random(n) >= p.modalities[m].missing for m in mods], axis=1)
    none = ~present.any(axis=1)
    if none.any():
        pick = rng.integers(0, nm, size=int(none.sum()))
        present[np.nonzero(none)[0], pick] = True

    # quality: Beta draws, assigned to nodes by the ranks of a graph-smoothed Gaussian field (rank copula:
    # the marginal stays exactly the Beta sample, neighbouring nodes get similar quality)
    quality = np.zeros((n, nm))
    biased = np.zeros((n, nm), dtype=bool)
    target = np.full((n, nm), -1, dtype=np.int64)
    common = rng.standard_normal(n)  # node difficulty shared by the modalities (weight quality_corr)
    for j, m in enumerate(mods):
        spec = p.modalities[m]
        qv = _draw_quality(rng, spec.quality, n)
        field_ = math.sqrt(p.quality_corr) * common + math.sqrt(1.0 - p.quality_corr) * rng.standard_normal(n)
        if p.smoothing > 0 and src.size:
            for _ in range(p.smoothing_steps):
                field_ = (1.0 - p.smoothing) * field_ + p.smoothing * _neighbour_mean(src, dst, deg, field_)
        q = np.empty(n)
        q[np.argsort(field_, kind="stable")] = np.sort(qv)
        t = cls.copy()
        have = np.nonzero(present[:, j])[0]
        nb = int(round(spec.biased * have.size))
        if nb:
            b = rng.choice(have, size=nb, replace=False)
            biased[b, j] = True
            t[b] = partner[cls[b]]
            q[b] = _draw_quality(rng, p.biased_quality, nb)
        quality[:, j] = np.where(present[:, j], q, 0.0)
        target[:, j] = np.where(present[:, j], t, -1)

    # outliers: content of every modality encodes the class the node's neighbourhood leans to
    if p.outliers > 0 and num_classes > 1:
        counts = np.zeros((n, num_classes))
        np.add.at(counts, (src, cls[dst]), 1.0)
        own = counts[np.arange(n), cls]
        counts[np.arange(n), cls] = -1.0
        alt = np.where(counts.max(axis=1) > 0, counts.argmax(axis=1), partner[cls])
        lean = (counts.max(axis=1).clip(min=0) - own) / np.maximum(deg, 1.0) + 1e-6 * rng.random(n)
        out_idx = np.argsort(-lean, kind="stable")[: int(round(p.outliers * n))]
        for j in range(nm):
            on = out_idx[present[out_idx, j]]
            target[on, j] = alt[on]
            biased[on, j] = True

    # misalignment (aligned space): non-anchor modalities of some fully-present nodes point elsewhere
    misaligned = np.zeros(n, dtype=bool)
    random_dir = np.zeros(n, dtype=bool)
    if aligned and p.misaligned > 0:
        full = present.all(axis=1) & ~biased[:, 1:].any(axis=1)
        pool = np.nonzero(full)[0]
        n_full = int(present.all(axis=1).sum())
        nmis = min(int(round(p.misaligned * n_full)), pool.size)
        if nmis:
            chosen = rng.choice(pool, size=nmis, replace=False)
            misaligned[chosen] = True
            if p.misalign_to == "class" and num_classes > 1:
                other = (cls[chosen] + rng.integers(1, num_classes, size=nmis)) % num_classes
                target[chosen, 1:] = other[:, None]
            else:
                random_dir[chosen] = True
                target[chosen, 1:] = -1

    scale = math.sqrt(p.noise**2 + p.signal**2 / k)
    shared_eps = rng.standard_normal((n, k)) if aligned else None
    features: dict[str, Tensor] = {}
    for j, m in enumerate(mods):
        spec = p.modalities[m]
        if aligned:
            mu, w = mu_shared, w_shared
        else:
            mu = _prototypes(rng, group, k, p.partner_corr)
            w = rng.standard_normal((k, spec.dim)) / math.sqrt(k)
        eps = rng.standard_normal((n, k))
        if aligned:
            own = ~misaligned if j > 0 else np.ones(n, dtype=bool)
            mix = np.where(own, math.sqrt(p.shared_noise), 0.0)[:, None]
            eps = mix * shared_eps + np.sqrt(1.0 - mix**2) * eps
        t = np.maximum(target[:, j], 0)
        direction = (1.0 - ambiguity)[:, None] * mu[t] + ambiguity[:, None] * mu[partner[t]]
        if j > 0 and random_dir.any():
            r = rng.standard_normal((int(random_dir.sum()), k))
            direction[random_dir] = r / np.linalg.norm(r, axis=1, keepdims=True)
        z = (quality[:, j] * p.signal)[:, None] * direction + p.noise * eps
        obs = rng.standard_normal((n, spec.dim))
        x = np.tanh(p.gain * ((z @ w) / scale + p.feature_noise * obs))
        x[~present[:, j]] = 0.0
        features[m] = torch.from_numpy(x.astype(np.float32))

    out = {
        "features": features,
        "present": torch.from_numpy(present),
        "gt_quality": torch.from_numpy(quality.astype(np.float32)),
        "gt_biased": torch.from_numpy(biased),
        "gt_target": torch.from_numpy(target),
        "gt_ambiguity": torch.from_numpy(ambiguity.astype(np.float32)),
        "partner": tuple(int(v) for v in partner),
    }
    if aligned:
        out["gt_misaligned"] = torch.from_numpy(misaligned)
    return out


def _assemble(
    edge_index: Tensor,
    y: Tensor,
    num_classes: int,
    p: FeatureProfile,
    drawn: dict[str, Any],
    *,
    name: str,
    class_names: Sequence[str] | None,
    extra_meta: Mapping[str, Any],
) -> MultimodalGraph:
    graph = MultimodalGraph(  # edge_index is already undirected and coalesced
        drawn["features"], edge_index, y, num_classes=num_classes, modality_mask=drawn["present"],
        class_names=class_names, name=name, canonicalize_edges=False,
    )
    for key in ("gt_quality", "gt_biased", "gt_target", "gt_ambiguity", "gt_misaligned"):
        if key in drawn:
            graph[key] = drawn[key]
    meta = dict(graph.meta)
    meta["profile"] = p.name
    meta["generator"] = {**dict(extra_meta), "features": _profile_record(p), "partner": drawn["partner"]}
    graph.meta = meta
    return graph


# ---------------------------------------------------------------------- structure: DC-SBM
def _class_sizes(n: int, c: int, ratio: float) -> np.ndarray:
    w = ratio ** (-np.arange(c) / max(c - 1, 1))
    share = w / w.sum() * n
    sizes = np.floor(share).astype(np.int64)
    rest = n - int(sizes.sum())
    sizes[np.argsort(-(share - sizes), kind="stable")[:rest]] += 1
    return sizes


def _place_edges(
    rng: np.random.Generator,
    count: int,
    intra: bool,
    node_order: np.ndarray,
    cum: np.ndarray,
    cls_sorted_start: np.ndarray,
    vol_start: np.ndarray,
    vol: np.ndarray,
    labels: np.ndarray,
    n: int,
) -> np.ndarray:
    """``count`` distinct undirected edges (keys ``u * n + v`` with ``u < v``) inside or between classes."""
    total = cum[-1]
    keys = np.empty(0, dtype=np.int64)
    stalled = 0
    while keys.size < count:
        need = count - keys.size
        draw = int(need * 1.25) + 64
        pos_u = np.minimum(np.searchsorted(cum, rng.random(draw) * total, side="right"), n - 1)
        u = node_order[pos_u]
        cu = labels[u]
        if intra:
            r = vol_start[cu] + rng.random(draw) * vol[cu]
            pos_v = np.searchsorted(cum, r, side="right")
            lo = cls_sorted_start[cu]
            hi = cls_sorted_start[cu + 1] - 1
            pos_v = np.clip(pos_v, lo, hi)
        else:
            r = rng.random(draw) * (total - vol[cu])
            r = np.where(r >= vol_start[cu], r + vol[cu], r)
            pos_v = np.minimum(np.searchsorted(cum, r, side="right"), n - 1)
        v = node_order[pos_v]
        ok = u != v
        ok &= (labels[v] == cu) if intra else (labels[v] != cu)
        a, b = np.minimum(u[ok], v[ok]), np.maximum(u[ok], v[ok])
        new = np.setdiff1d(np.unique(a * n + b), keys, assume_unique=True)
        if new.size > need:
            new = rng.choice(new, size=need, replace=False)
        stalled = stalled + 1 if new.size == 0 else 0
        if stalled >= 20:
            kind = "intra-class" if intra else "inter-class"
            raise ConfigError(
                f"avg_degree/homophily: cannot place {count} distinct {kind} edges (placed {keys.size}); "
                "allowed: lower avg_degree, or a homophily the class sizes can hold"
            )
        keys = np.union1d(keys, new)
    return keys


def sample_dcsbm(
    num_nodes: int = 2000,
    num_classes: int = 5,
    homophily: float = 0.8,
    avg_degree: float = 10.0,
    degree_exponent: float = 2.5,
    seed: int = 0,
    class_ratio: float = 3.0,
    max_degree: float | None = None,
) -> tuple[Tensor, Tensor, int]:
    r"""Draw a degree-corrected SBM; returns ``(edge_index, y, num_classes)`` (undirected, coalesced).

    Args:
        num_nodes: :math:`N`.
        num_classes: :math:`C \ge 2`.
        homophily: share :math:`h` of edges inside classes, in ``[0, 1]``.
        avg_degree: mean degree :math:`\bar d` (exact: :math:`\mathrm{round}(N\bar d/2)` undirected edges).
        degree_exponent: :math:`\gamma > 1` of the Pareto propensities :math:`P(\theta) \propto \theta^{-\gamma}`.
        seed: seed of the draw (the structure stream of :func:`make_synthetic_mag` for the same seed).
        class_ratio: expected largest/smallest class size ratio (1 = balanced).
        max_degree: cap of the expected degree (default :math:`\sqrt{N\bar d}`).
    """
    rng, _ = _seed_streams(seed)
    n = _check_int("num_nodes", num_nodes, 2)
    c = _check_int("num_classes", num_classes, 2)
    h = _check_range("homophily", homophily, 0.0, 1.0)
    dbar = _check_range("avg_degree", avg_degree, 0.0, n - 1, lo_open=True)
    gamma = _check_range("degree_exponent", degree_exponent, 1.0, math.inf, lo_open=True, hi_open=True)
    ratio = _check_range("class_ratio", class_ratio, 1.0, math.inf, hi_open=True)
    cap = math.sqrt(n * dbar) if max_degree is None else _check_range("max_degree", max_degree, dbar, math.inf, hi_open=True)

    sizes = _class_sizes(n, c, ratio)
    if int(sizes.min()) < 3:
        raise ConfigError(
            f"num_nodes: {n} gives a class of {int(sizes.min())} node(s) with num_classes={c}, class_ratio={ratio}; "
            "allowed: at least 3 nodes per class (raise num_nodes or lower class_ratio)"
        )
    labels = rng.permutation(np.repeat(np.arange(c), sizes))

    theta = (1.0 - rng.random(n)) ** (-1.0 / (gamma - 1.0))
    for _ in range(5):  # cap the expected degree theta_i * dbar / mean(theta)
        theta = np.minimum(theta, cap / dbar * theta.mean())

    node_order = np.argsort(labels, kind="stable")
    cum = np.cumsum(theta[node_order])
    cls_sorted_start = np.concatenate([[0], np.cumsum(sizes)])
    vol = np.bincount(labels, weights=theta, minlength=c)
    vol_start = np.concatenate([[0.0], cum[cls_sorted_start[1:-1] - 1]])

    m_total = int(round(n * dbar / 2))
    m_intra = int(round(h * m_total))
    args = (node_order, cum, cls_sorted_start, vol_start, vol, labels, n)
    keys = np.concatenate([
        _place_edges(rng, m_intra, True, *args),
        _place_edges(rng, m_total - m_intra, False, *args),
    ])
    ei = torch.from_numpy(np.stack([keys // n, keys % n]))
    return to_undirected(ei, n), torch.from_numpy(labels), c


# ---------------------------------------------------------------------- public generators
def attach_synthetic_features(
    structure: MultimodalGraph | tuple[Tensor, Tensor, int],
    profile: str | FeatureProfile = "text-dominant",
    seed: int = 0,
    dims: Mapping[str, int] | int | None = None,
    *,
    modalities: Sequence[str] | None = None,
    split: str | None = None,
    name: str | None = None,
    **overrides: Any,
) -> MultimodalGraph:
    r"""Keep a graph's structure and labels; draw per-modality features with node-level modality quality.

    The generative process (per modality :math:`m`, node :math:`i` of class :math:`y_i`; details in
    ``docs/generators.md``):

    1. prototypes :math:`\mu_{m,c}` (unit, in :math:`\mathbb R^k`); classes in one confusable group (partner
       :math:`\pi(c)`) have :math:`\cos \approx \rho` (``partner_corr``);
    2. presence: absent with probability ``missing[m]`` (every node keeps at least one modality);
    3. quality :math:`q_{i,m} \sim \mathrm{Beta}(\alpha_m, \beta_m)`, made graph-correlated by assigning the
       draws to nodes in the rank order of a Gaussian field smoothed :math:`K` times by
       :math:`f \leftarrow (1-\beta) f + \beta\, D^{-1} A f` (``smoothing``, ``smoothing_steps``);
    4. target :math:`t_{i,m} = y_i`, except a fraction ``biased[m]`` of present nodes with
       :math:`t_{i,m} = \pi(y_i)` and :math:`q_{i,m} \sim \mathrm{Beta}(8, 2)` (confidently wrong);
    5. ambiguity :math:`a_i \sim \mathrm{Beta}(1, 3.5)`, one per node, shared by its modalities;
    6. latent :math:`z_{i,m} = q_{i,m} s ((1-a_i)\mu_{m,t_{i,m}} + a_i \mu_{m,\pi(t_{i,m})}) + \varepsilon_{i,m}`,
       :math:`\varepsilon \sim \mathcal N(0, \sigma^2 I_k)`;
    7. features :math:`x_{i,m} = \tanh(g (W_m^\top z_{i,m}/c + \tau\nu_{i,m}))`, float32, zero rows where absent.

    Args:
        structure: a :class:`MultimodalGraph` (its features are replaced; its splits kept) or a tuple
            ``(edge_index, y, num_classes)`` (made undirected; nodes with ``y = -1`` get a latent class drawn
            from the label distribution).
        profile: a name in :data:`PROFILES` or a :class:`FeatureProfile`.
        seed: seed of every draw (a ``numpy`` Generator; no global state).
        dims: feature width per modality (``{"text": 768, "image": 512}``) or one width for all.
        modalities: which modalities to generate (default: the profile's); a modality outside the profile
            needs ``quality={name: (a, b)}``.
        split: split spec for :func:`~magkit.data.apply_split`; default: keep the graph's splits, or ``"magb"``.
        name: dataset name (default: the graph's name, or ``"synthetic-<profile>"``).
        **overrides: any :class:`FeatureProfile` field (``signal=``, ``space="aligned"``, ``misaligned=``, ...)
            and the per-modality ``quality=``, ``biased=``, ``missing=`` (a dict by modality or one value).

    Returns:
        A validated :class:`MultimodalGraph` with ``gt_quality``, ``gt_biased``, ``gt_target`` (and
        ``gt_misaligned`` in the aligned space); ``meta["profile"]`` and ``meta["generator"]``.

    Raises:
        ConfigError: unknown profile (the message lists the valid ones) or a parameter out of range.
    """
    p = _resolve_profile(profile, dims, modalities, overrides)
    edge_index, y, num_classes, src_graph = _structure_arrays(structure)
    _, rng = _seed_streams(seed)
    drawn = _draw_features(edge_index, y, num_classes, p, rng)
    if name is None:
        name = src_graph.name if src_graph is not None else f"synthetic-{p.name}"
    graph = _assemble(
        edge_index, y, num_classes, p, drawn, name=name,
        class_names=src_graph.class_names if src_graph is not None else None,
        extra_meta={"kind": "attach_synthetic_features", "seed": int(seed)},
    )
    kept = src_graph is not None and all(src_graph.get(f"{s}_mask") is not None for s in SPLITS)
    if split is None and kept:
        for s in SPLITS:
            graph[f"{s}_mask"] = src_graph[f"{s}_mask"].clone()
        if "split" in src_graph.meta:
            meta = dict(graph.meta)
            meta["split"] = src_graph.meta["split"]
            graph.meta = meta
    else:
        apply_split(graph, split or "magb", seed=seed)
    return validate(graph)


def make_synthetic_mag(
    num_nodes: int = 2000,
    num_classes: int = 5,
    modalities: Sequence[str] = ("text", "image"),
    homophily: float = 0.8,
    seed: int = 0,
    avg_degree: float = 10.0,
    degree_exponent: float = 2.5,
    profile: str | FeatureProfile = "balanced",
    dims: Mapping[str, int] | int | None = None,
    split: str = "magb",
    *,
    class_ratio: float = 3.0,
    max_degree: float | None = None,
    name: str | None = None,
    **overrides: Any,
) -> MultimodalGraph:
    """A fully synthetic MAG: a DC-SBM structure (:func:`sample_dcsbm`) with the features of
    :func:`attach_synthetic_features` (the same code and, for the same seed, the same feature draws).

    Args:
        num_nodes, num_classes, homophily, avg_degree, degree_exponent, class_ratio, max_degree: the
            structure (see :func:`sample_dcsbm`).
        modalities: modality names, each defined by the profile (or given ``quality=`` in ``overrides``).
        seed: one seed for structure and features (independent streams).
        profile, dims, **overrides: the feature model (see :func:`attach_synthetic_features`).
        split: split spec applied with :func:`~magkit.data.apply_split`.
        name: dataset name (default ``"dcsbm-<profile>"``).

    Returns:
        A validated :class:`MultimodalGraph`; ``meta["generator"]`` records every parameter.
    """
    p = _resolve_profile(profile, dims, modalities, overrides)
    edge_index, y, c = sample_dcsbm(
        num_nodes, num_classes, homophily, avg_degree, degree_exponent, seed, class_ratio, max_degree
    )
    _, rng = _seed_streams(seed)
    drawn = _draw_features(edge_index, y, c, p, rng)
    graph = _assemble(
        edge_index, y, c, p, drawn, name=name or f"dcsbm-{p.name}", class_names=None,
        extra_meta={
            "kind": "make_synthetic_mag", "seed": int(seed), "num_nodes": int(num_nodes), "num_classes": int(c),
            "homophily": float(homophily), "avg_degree": float(avg_degree),
            "degree_exponent": float(degree_exponent), "class_ratio": float(class_ratio),
            "max_degree": None if max_degree is None else float(max_degree),
        },
    )
    apply_split(graph, split, seed=seed)
    return validate(graph)


# ---------------------------------------------------------------------- calibration probe
def _probe(
    x: Tensor,
    y: Tensor,
    train: Tensor,
    val: Tensor,
    num_classes: int,
    *,
    hidden: int = 0,
    epochs: int = 200,
    lr: float | None = None,
    weight_decay: float = 5e-4,
    seed: int = 0,
) -> tuple[float, Tensor]:
    """Full-batch logistic regression (``hidden=0``) or one-hidden-layer MLP, trained with Adam on ``train``.

    Returns the best validation accuracy over epochs and the predictions of that epoch's model for all
    nodes. Only the validation split is read for selection; test labels are never touched. Default learning
    rate: 0.05 (logistic), 0.01 (MLP).
    """
    g = torch.Generator().manual_seed(seed)
    d = x.size(1)
    if lr is None:
        lr = 0.05 if hidden == 0 else 0.01
    if hidden > 0:
        params = [
            (torch.randn(d, hidden, generator=g) * math.sqrt(2.0 / d)).requires_grad_(),
            torch.zeros(hidden, requires_grad=True),
            (torch.randn(hidden, num_classes, generator=g) * math.sqrt(1.0 / hidden)).requires_grad_(),
            torch.zeros(num_classes, requires_grad=True),
        ]
    else:
        params = [torch.zeros(d, num_classes, requires_grad=True), torch.zeros(num_classes, requires_grad=True)]

    def forward(inp: Tensor) -> Tensor:
        if hidden > 0:
            return torch.relu(inp @ params[0] + params[1]) @ params[2] + params[3]
        return inp @ params[0] + params[1]

    x_tr, y_tr, x_va, y_va = x[train], y[train], x[val], y[val]
    opt = torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    best, best_state = -1.0, [t.detach().clone() for t in params]
    for _ in range(epochs):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(forward(x_tr), y_tr)
        loss.backward()
        opt.step()
        with torch.no_grad():
            acc = float((forward(x_va).argmax(1) == y_va).float().mean())
        if acc > best:
            best, best_state = acc, [t.detach().clone() for t in params]
    with torch.no_grad():
        for t, b in zip(params, best_state):
            t.copy_(b)
        pred = forward(x).argmax(1)
    return best, pred


def _propagate(edge_index: Tensor, x: Tensor, steps: int) -> Tensor:
    """:math:`\\hat A^K x` with :math:`\\hat A = \\tilde D^{-1/2}(A + I)\\tilde D^{-1/2}` (SGC's propagation)."""
    n = x.size(0)
    loop = torch.arange(n)
    src = torch.cat([edge_index[0], loop])
    dst = torch.cat([edge_index[1], loop])
    deg = torch.bincount(dst, minlength=n).to(x.dtype)
    w = (deg[src] * deg[dst]).rsqrt().unsqueeze(1)
    for _ in range(steps):
        x = torch.zeros_like(x).index_add_(0, dst, x[src] * w)
    return x


def calibrate(
    profile: str | FeatureProfile = "text-dominant",
    structure: MultimodalGraph | tuple[Tensor, Tensor, int] | None = None,
    seed: int = 0,
    *,
    hidden: int = 0,
    epochs: int = 200,
    **overrides: Any,
) -> dict[str, Any]:
    """Generate features for ``structure`` (default: a 2000-node DC-SBM) and measure each modality alone.

    For each modality, a full-batch logistic regression (``hidden=0``) or MLP (``hidden > 0``) on that block
    alone (absent rows are zeros) is trained on the training split and its best validation accuracy
    reported; likewise for the early fusion of all blocks (``val_acc_fused``) and for that fusion propagated
    twice over the graph, SGC style (``val_acc_fused_sgc2``), which show the headroom fusion and the graph
    leave; also the share of nodes with every modality where the
    image quality exceeds the text quality. Returns a dict of these numbers.
    """
    if structure is None:
        structure = sample_dcsbm(seed=seed)
    graph = attach_synthetic_features(structure, profile, seed=seed, **overrides)
    train, val = graph.train_mask, graph.val_mask
    out: dict[str, Any] = {
        "profile": graph.meta["profile"], "nodes": graph.num_nodes, "classes": graph.num_classes,
        "homophily": edge_homophily(graph.edge_index, graph.y),
    }
    for m in graph.modalities:
        acc, _ = _probe(graph.feature(m), graph.y, train, val, graph.num_classes, hidden=hidden, epochs=epochs, seed=seed)
        out[f"val_acc_{m}"] = acc
    fused = graph.fused()
    out["val_acc_fused"], _ = _probe(fused, graph.y, train, val, graph.num_classes, hidden=hidden, epochs=epochs, seed=seed)
    prop = _propagate(graph.edge_index, fused, steps=2)
    out["val_acc_fused_sgc2"], _ = _probe(prop, graph.y, train, val, graph.num_classes, hidden=hidden, epochs=epochs, seed=seed)
    mods = graph.modalities
    if "text" in mods and "image" in mods:
        both = graph.modality_mask.all(dim=1)
        q = graph.gt_quality[both]
        out["share_image_better"] = float((q[:, mods.index("image")] > q[:, mods.index("text")]).float().mean())
    return out


def _main(argv: Sequence[str] | None = None) -> None:  # pragma: no cover - a command-line helper
    parser = argparse.ArgumentParser(
        prog="python -m magkit.data.synthetic",
        description="Measure text-only / image-only validation accuracy of a synthetic feature profile.",
    )
    parser.add_argument("--profile", action="append", choices=sorted(PROFILES), help="profile(s); default: all")
    parser.add_argument("--magb-root", help="a MAGB root holding Grocery/GroceryGraph.pt: use the real structure")
    parser.add_argument("--dataset", default="Grocery")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--nodes", type=int, default=2000)
    parser.add_argument("--classes", type=int, default=5)
    parser.add_argument("--hidden", type=int, default=0, help="0: logistic regression (default); >0: MLP width")
    parser.add_argument("--epochs", type=int, default=200)
    args = parser.parse_args(argv)
    if args.magb_root:
        from .magb import load_magb_structure

        structure = load_magb_structure(args.magb_root, args.dataset)
        where = f"MAGB {args.dataset} structure"
    else:
        structure = sample_dcsbm(args.nodes, args.classes, seed=args.seed)
        where = f"DC-SBM N={args.nodes} C={args.classes}"
    for prof in args.profile or list(PROFILES):
        r = calibrate(prof, structure, seed=args.seed, hidden=args.hidden, epochs=args.epochs)
        accs = "  ".join(f"{k[8:]}={v:.3f}" for k, v in r.items() if k.startswith("val_acc_"))
        probe = "logistic" if args.hidden == 0 else f"MLP-{args.hidden}"
        share = r.get("share_image_better", float("nan"))
        print(f"{where} seed={args.seed} {probe}  profile={prof:15s} {accs}  image-better share={share:.3f}")


if __name__ == "__main__":  # pragma: no cover
    _main()
