r"""A large multimodal graph generated straight to disk in the ``mmap:DIR`` layout (features never all in RAM).

:func:`generate_mmap_graph` writes ``N`` nodes (a million and more) with two (or more) modality blocks, a sparse
graph with community structure, labels and a split. Features are produced and written row block by row block
(``chunk_rows`` rows at a time, each block from its own seeded stream, so the result does not depend on the
chunk size); the structure is built in memory, vectorised (``O(E)``: 7.5M undirected edges = 15M directed
pairs = 240 MB of int64, a few times that at the peak of the sorts).

Structure: the degree-corrected stochastic block model of :func:`magkit.data.dcsbm.sample_dcsbm`, with the same
edge sampler (:func:`magkit.data.dcsbm.sample_edges`). Class sizes follow a geometric progression (smallest /
largest = ``class_ratio``), labels are shuffled over the nodes; propensities :math:`\theta_i` have a Pareto tail
(:math:`\gamma` = ``degree_exponent``) capped so the expected top degree stays near :math:`\sqrt{N \bar d}`.
Exactly :math:`\mathrm{round}(N \bar d / 2)` distinct undirected edges are placed, a share ``homophily`` of them
inside classes, so the mean degree is :math:`\bar d` and the edge homophily is ``homophily`` (up to rounding).

Features of node :math:`i`, modality :math:`m` (latent width :math:`k`, unit class prototypes
:math:`\mu_{m,c} \in \mathbb R^k`, a random projection :math:`W_m \in \mathbb R^{k \times d_m}`):

.. math::

    t_{i,m} = y_i \text{ (or, with probability } \text{flip}_m\text{, a random other class)}, \quad
    q_{i,m} \sim \mathrm{Beta}(a_m, b_m)\\
    z_{i,m} = q_{i,m}\, s\, \mu_{m, t_{i,m}} + \varepsilon_{i,m},\ \varepsilon \sim \mathcal N(0, I_k), \qquad
    x_{i,m} = \tanh\big(g\, W_m^\top z_{i,m} / \sqrt{1 + s^2/k}\big) + \tau \nu_{i,m},\ \nu \sim \mathcal N(0, I),\
    (W_m)_{lj} \sim \mathcal N(0, 1/k)

so a modality alone classifies a node only as well as its quality allows, neighbours (same class with
probability ``homophily``) add evidence, and accuracy is meaningful. A modality is absent with probability
``missing`` (its row is zeros and ``features/<m>_present.npy`` is false; every node keeps at least one).

The folder is written under a temporary name and renamed when complete; calling again with the same
parameters reuses it.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ..exceptions import ConfigError
from .dcsbm import class_sizes, propensities, sample_edges, undirected_edge_index
from .ondisk import FORMAT, FORMAT_VERSION, write_npy_chunks

#: per-modality defaults: (Beta a, Beta b, flip probability): text the stronger modality, image the weaker
MODALITY_QUALITY = {"text": (5.0, 2.0, 0.05), "image": (3.0, 3.0, 0.08)}
_BLOCK = 65536  # rows per seeded stream: features do not depend on the I/O chunk size


def _check(name: str, ok: bool, value: Any, allowed: str) -> None:
    if not ok:
        raise ConfigError(f"{name}: {value!r}; allowed: {allowed}")


def _feature_block(seed: int, mi: int, block: int, y: np.ndarray, proto: np.ndarray, proj: np.ndarray,
                   quality: tuple[float, float, float], signal: float, gain: float, noise: float,
                   num_classes: int) -> np.ndarray:
    rng = np.random.default_rng([seed, 1 + mi, block])
    rows = y.size
    k = proto.shape[1]
    a, b, flip = quality
    target = y.copy()
    flipped = rng.random(rows) < flip
    if flipped.any():
        shift = rng.integers(1, num_classes, size=int(flipped.sum()))
        target[flipped] = (y[flipped] + shift) % num_classes
    q = rng.beta(a, b, size=rows).astype(np.float32)
    z = (q * signal)[:, None] * proto[target] + rng.standard_normal((rows, k), dtype=np.float32)
    x = np.tanh((z @ proj) * (gain / math.sqrt(1.0 + signal**2 / k)))
    x += noise * rng.standard_normal(x.shape, dtype=np.float32)
    return x


def generate_mmap_graph(
    out_dir: str | os.PathLike,
    num_nodes: int = 1_000_000,
    *,
    num_classes: int = 20,
    dims: Mapping[str, int] | None = None,
    avg_degree: float = 15.0,
    homophily: float = 0.7,
    degree_exponent: float = 2.5,
    class_ratio: float = 0.5,
    latent_dim: int = 32,
    signal: float = 3.0,
    gain: float = 1.5,
    feature_noise: float = 0.3,
    missing: float = 0.03,
    dtype: str = "float16",
    train: float = 0.1,
    val: float = 0.05,
    seed: int = 0,
    chunk_rows: int = 65536,
    overwrite: bool = False,
    progress: Callable[[str], None] | None = None,
) -> dict:
    """Write a generated multimodal graph to ``out_dir`` in the ``mmap:DIR`` layout; return its manifest.

    Args:
        out_dir: the graph folder (reused when it holds a complete graph of the same parameters).
        num_nodes: N. num_classes: C. dims: ``{modality: width}`` (default text 128, image 128).
        avg_degree: target mean degree. homophily: share of edges drawn inside a class.
        degree_exponent: Pareto exponent of the degree propensities (> 2). class_ratio: smallest / largest class.
        latent_dim, signal, gain, feature_noise: the feature model (module docstring).
        missing: probability that a node lacks a modality. dtype: stored feature dtype (float16/32/64).
        train, val: split fractions (test: the rest), drawn with ``seed``.
        chunk_rows: rows written per step. overwrite: replace a folder holding other parameters.
        progress: called with a short status line now and then.

    The manifest (``meta.json``) records every parameter, the actual edge count, mean degree and homophily,
    file sizes and the generation time.
    """
    dims = dict(dims or {"text": 128, "image": 128})
    _check("num_nodes", isinstance(num_nodes, int) and num_nodes >= 10, num_nodes, "an integer >= 10")
    _check("num_classes", isinstance(num_classes, int) and 2 <= num_classes <= num_nodes // 5, num_classes,
           "an integer, 2 <= classes <= num_nodes / 5")
    _check("dims", bool(dims) and all(isinstance(v, int) and v >= 1 for v in dims.values()), dims, "{modality: width >= 1}")
    _check("avg_degree", 0 < avg_degree < num_nodes / 2, avg_degree, "0 < avg_degree < num_nodes / 2")
    _check("homophily", 0 <= homophily <= 1, homophily, "0 <= homophily <= 1")
    _check("degree_exponent", degree_exponent > 2, degree_exponent, "> 2")
    _check("class_ratio", 0 < class_ratio <= 1, class_ratio, "0 < class_ratio <= 1")
    _check("missing", 0 <= missing < 1, missing, "0 <= missing < 1")
    _check("split", 0 < train < 1 and 0 < val < 1 and train + val < 1, (train, val), "0 < train, 0 < val, train + val < 1")
    _check("seed", isinstance(seed, int) and seed >= 0, seed, "an integer >= 0")
    try:
        np_dtype = np.dtype(dtype)
    except TypeError:
        np_dtype = None
    _check("dtype", np_dtype is not None and np_dtype.kind == "f", dtype, "float16, float32 or float64")
    sizes = class_sizes(num_nodes, num_classes, 1.0 / class_ratio)
    _check("class_ratio", int(sizes.min()) >= 3, class_ratio,
           f"a ratio that leaves every class at least 3 nodes (smallest: {int(sizes.min())})")
    params = {
        "num_nodes": num_nodes, "num_classes": num_classes, "dims": dims, "avg_degree": avg_degree,
        "homophily": homophily, "degree_exponent": degree_exponent, "class_ratio": class_ratio,
        "latent_dim": latent_dim, "signal": signal, "gain": gain, "feature_noise": feature_noise,
        "missing": missing, "dtype": np_dtype.name, "train": train, "val": val, "seed": seed,
        "quality": {m: list(MODALITY_QUALITY.get(m, (4.0, 2.5, 0.06))) for m in dims}, "version": 2,
    }
    out = Path(out_dir)
    if (out / "meta.json").is_file():
        meta = json.loads((out / "meta.json").read_text())
        if meta.get("generator") == params:
            if progress:
                progress(f"reusing {out}")
            return meta
        if not overwrite:
            raise ConfigError(f"out_dir: {out} holds a graph generated with other parameters; allowed: another folder, "
                              "or overwrite=True (CLI: --overwrite)")
    elif out.exists() and any(out.iterdir()) and not overwrite:
        raise ConfigError(f"out_dir: {out} exists and is not a generated graph; allowed: an empty or new folder")

    t0 = time.perf_counter()
    tmp = out.parent / f".{out.name}.partial-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    (tmp / "features").mkdir(parents=True)
    try:
        rng = np.random.default_rng([seed, 0])
        y = rng.permutation(np.repeat(np.arange(num_classes, dtype=np.int64), sizes))
        np.save(tmp / "y.npy", y)
        perm = rng.permutation(num_nodes)
        a, b = int(train * num_nodes), int((train + val) * num_nodes)
        for name, ids in (("train", perm[:a]), ("val", perm[a:b]), ("test", perm[b:])):
            mask = np.zeros(num_nodes, dtype=bool)
            mask[ids] = True
            np.save(tmp / f"{name}_mask.npy", mask)
        del perm
        mods = list(dims)
        present = {m: rng.random(num_nodes) >= missing for m in mods}
        none = ~np.any(np.stack([present[m] for m in mods]), axis=0)
        present[mods[0]] |= none
        for m in mods:
            np.save(tmp / "features" / f"{m}_present.npy", present[m])

        t_edges = time.perf_counter()
        theta = propensities(rng, num_nodes, degree_exponent, avg_degree, math.sqrt(num_nodes * avg_degree))
        keys = sample_edges(rng, y, theta, sizes, int(round(num_nodes * avg_degree / 2)), homophily)
        del theta
        if progress:
            progress(f"edges: {keys.size:,} undirected")
        ei = undirected_edge_index(keys, num_nodes)
        del keys
        np.save(tmp / "edge_index.npy", ei)
        num_edges = int(ei.shape[1])
        same = 0
        for s in range(0, num_edges, 1 << 22):
            same += int((y[ei[0, s:s + (1 << 22)]] == y[ei[1, s:s + (1 << 22)]]).sum())
        isolated = int(num_nodes - np.count_nonzero(np.bincount(ei[0], minlength=num_nodes)))
        del ei
        t_edges = time.perf_counter() - t_edges

        t_feat = time.perf_counter()
        for mi, m in enumerate(mods):
            frng = np.random.default_rng([seed, 100 + mi])
            proto = frng.standard_normal((num_classes, latent_dim)).astype(np.float32)
            proto /= np.linalg.norm(proto, axis=1, keepdims=True)
            proj = (frng.standard_normal((latent_dim, dims[m])) / math.sqrt(latent_dim)).astype(np.float32)
            quality = tuple(params["quality"][m])

            def chunks(m=m, mi=mi, proto=proto, proj=proj, quality=quality):
                step = max(_BLOCK, (chunk_rows // _BLOCK) * _BLOCK)
                for start in range(0, num_nodes, step):
                    parts = []
                    for blk in range(start // _BLOCK, min(start + step, num_nodes) // _BLOCK + 1):
                        lo_, hi_ = blk * _BLOCK, min((blk + 1) * _BLOCK, num_nodes, start + step)
                        if lo_ >= hi_:
                            continue
                        x = _feature_block(seed, mi, blk, y[lo_:hi_], proto, proj, quality, signal, gain,
                                           feature_noise, num_classes)
                        x[~present[m][lo_:hi_]] = 0.0
                        parts.append(x)
                    if progress:
                        progress(f"{m} features {min(start + step, num_nodes):,}/{num_nodes:,}")
                    yield np.concatenate(parts) if len(parts) > 1 else parts[0]

            write_npy_chunks(tmp / "features" / f"{m}.npy", (num_nodes, dims[m]), np_dtype, chunks())
        t_feat = time.perf_counter() - t_feat

        sizes = {p.relative_to(tmp).as_posix(): p.stat().st_size for p in sorted(tmp.rglob("*.npy"))}
        meta = {
            "format": FORMAT, "version": FORMAT_VERSION, "name": f"generated-{num_nodes}",
            "num_nodes": num_nodes, "num_classes": num_classes, "class_names": None, "modalities": mods,
            "edges": "undirected-coalesced",
            "generator": params,
            "stats": {
                "edges_undirected": num_edges // 2, "mean_degree": num_edges / num_nodes,
                "edge_homophily": same / max(num_edges, 1), "isolated_nodes": isolated,
                "present": {m: int(present[m].sum()) for m in mods},
                "splits": {"train": a, "val": b - a, "test": num_nodes - b},
                "file_bytes": sizes, "feature_bytes": sum(v for k, v in sizes.items() if k.startswith("features/")
                                                          and not k.endswith("_present.npy")),
            },
            "generation_seconds": {"structure": t_edges, "features": t_feat, "total": time.perf_counter() - t0},
        }
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return meta
