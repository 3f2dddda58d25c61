r"""Synthetic and semi-synthetic multimodal attributed graphs with known per-node modality quality.

Two generators share one feature model:

* :func:`make_synthetic_mag` draws a whole graph: a degree-corrected stochastic block model (DC-SBM) with
  power-law degree propensities, a requested edge homophily and mean degree, mildly imbalanced classes,
  then per-modality features.
* :func:`attach_synthetic_features` keeps a given structure and its labels (a real graph such as MAGB's
  Grocery) and draws only the features.

The structure is drawn by :func:`magkit.data.dcsbm.sample_dcsbm`; calibration probes are in
:mod:`magkit.data.calibrate`.

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

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..exceptions import ConfigError
from ._params import _check_int, _seed_streams
from .dcsbm import sample_dcsbm
from .graph import SPLITS, MultimodalGraph, to_undirected, validate
from .profiles import PROFILES, FeatureProfile, ModalityProfile, _profile_record, _resolve_profile
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


# ---------------------------------------------------------------------- helpers
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


from .calibrate import _probe, calibrate  # noqa: E402, F401  (re-exported; calibrate imports this module lazily)

if __name__ == "__main__":  # pragma: no cover
    from .calibrate import _main

    _main()
