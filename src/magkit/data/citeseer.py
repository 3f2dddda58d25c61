"""CiteSeer with raw titles and abstracts, read into a two-view multimodal graph.

The CiteSeer citation graph (Giles, Bollacker and Lawrence, "CiteSeer: An Automatic Citation Indexing
System", 1998; the LINQS selection of Sen et al., "Collective Classification in Network Data", 2008) with
each paper's raw title and abstract as published with TAPE (He et al., "Harnessing Explanations: LLM-to-LM
Interpreter for Enhanced Text-Attributed Graph Representation Learning", ICLR 2024)::

    <root>/citeseer/citeseer_texts.txt   three lines per paper: id, title + abstract (one line), class
    <root>/citeseer/citeseer.cites       one citation a line: "<cited id>\\t<citing id>"

3,186 papers in 6 classes (``Agents``, ``AI``, ``DB``, ``HCI``, ``IR``, ``ML``; ids ``0..5`` in sorted order
of the names) and 4,225 undirected citation edges. Citations naming a paper outside the text file
(dangling), self-citations and repeated pairs are dropped; their counts are kept in ``graph.meta["citations"]``.
The text file is decoded as UTF-8 with undecodable bytes replaced by U+FFFD.

Two views of the same text, each a modality of the graph, computed offline and cached:

* ``text``: the all-MiniLM-L6-v2 sentence embedding of title + abstract (384-d, unit norm; see
  :func:`magkit.data.encode.encode_texts`; texts are cut at 256 tokens).
* ``lexical``: latent semantic analysis (Deerwester et al., 1990) of the TF-IDF matrix. With term
  frequency ``tf(i, t)`` of token ``t`` in paper ``i``, document frequency ``df(t)`` and ``N`` papers,
  ``w(i, t) = (1 + log tf(i, t)) * (log((1 + N) / (1 + df(t))) + 1)``, each row L2-normalised; tokens are
  lower-cased runs ``[a-z][a-z0-9]+`` kept when ``min_df <= df(t) <= max_df * N``. A rank-``k`` randomized
  SVD ``W ~ U S V^T`` (Halko, Martinsson and Tropp, "Finding Structure with Randomness", SIAM Review 2011:
  Gaussian test matrix from ``seed``, ``oversample`` extra columns, ``power_iters`` QR-stabilised power
  iterations) gives the features ``normalize(U S)`` (256-d), each singular vector's sign fixed so that the
  largest-magnitude entry of ``V``'s column is positive.

The features of each view are cached as ``<cache>/citeseer/<view>-<key>.npy`` (+ ``.json``), where the key is
the sha256 of the text file's bytes, the encoder name and weights-package version, and the view's parameters;
a changed text file, encoder or parameter is re-encoded, an unchanged one is read back in well under a
second. The cache folder is ``cache_dir`` when given, else ``$MAGKIT_CACHE``, else ``<data dir>/.magkit_cache``
when the data folder is writable, else ``$XDG_CACHE_HOME/magkit`` (``~/.cache/magkit``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..base import name_subset
from ..exceptions import ConfigError, DatasetError
from .graph import MultimodalGraph

__all__ = [
    "CITESEER_CLASSES",
    "CITESEER_VIEWS",
    "CiteSeerRaw",
    "find_citeseer_dir",
    "read_citeseer",
    "lexical_features",
    "load_citeseer",
]

log = logging.getLogger(__name__)

TEXTS_FILE = "citeseer_texts.txt"
CITES_FILE = "citeseer.cites"
FOLDER = "citeseer"
CITESEER_CLASSES = ("AI", "Agents", "DB", "HCI", "IR", "ML")  # sorted(): class id = position
CITESEER_VIEWS = ("text", "lexical")
LEXICAL_DEFAULTS = {"dim": 256, "min_df": 2, "max_df": 0.5, "oversample": 16, "power_iters": 4, "seed": 0}
_TOKEN = re.compile(r"[a-z][a-z0-9]+")
_CACHE_FORMAT = 1


@dataclass(frozen=True)
class CiteSeerRaw:
    """The parsed files: one entry per paper in file order, and the kept citations.

    Attributes:
        ids: paper ids (strings), ``N``.
        texts: title + abstract, ``N``.
        y: class ids, long ``[N]`` (position of the class name in ``class_names``).
        class_names: the class names, sorted.
        edges: kept citations as node-index pairs, long ``[2, E]`` (one direction, ``row < col``, unique).
        stats: ``lines``, ``dangling``, ``self_loops``, ``duplicates``, ``edges`` and ``replaced_chars``.
    """

    ids: tuple[str, ...]
    texts: tuple[str, ...]
    y: torch.Tensor
    class_names: tuple[str, ...]
    edges: torch.Tensor
    stats: dict[str, int]


# ------------------------------------------------------------------------------------------- finding
def find_citeseer_dir(root: str | os.PathLike | None = None) -> Path:
    """The folder holding ``citeseer_texts.txt``: ``<r>/citeseer`` (any case) for each data root ``r`` in
    :func:`magkit.data.datasets.data_roots` order, or ``root`` itself when it holds the files.

    Raises:
        DatasetError: no such folder; the message lists every path looked at.
    """
    from .datasets import data_roots
    from .magb import dataset_dir

    tried: list[str] = []
    cands = ([Path(root)] if root is not None else []) + [dataset_dir(r, FOLDER) for r in data_roots(root)]
    for folder in cands:
        f = folder / TEXTS_FILE
        tried.append(str(f))
        if f.is_file():
            return folder
    raise DatasetError(
        f"CiteSeer not found; looked for: {', '.join(tried)}. Pass root=... (CLI: --root) or set MAGKIT_DATA to "
        f"a folder holding citeseer/{TEXTS_FILE} and citeseer/{CITES_FILE}"
    )


# ------------------------------------------------------------------------------------------- parsing
def _read_lines(path: Path) -> tuple[list[str], int]:
    try:
        raw = path.read_bytes()
    except FileNotFoundError as exc:
        raise DatasetError(f"CiteSeer: file {path} does not exist") from exc
    except OSError as exc:
        raise DatasetError(f"CiteSeer: cannot read {path} ({exc})") from exc
    text = raw.decode("utf-8", errors="replace")
    replaced = text.count("\ufffd") - raw.count("\ufffd".encode())
    if text.startswith("\ufeff"):
        text = text[1:]
    # split on "\n" only: str.splitlines() would also cut at form feeds and U+2028 inside an abstract
    lines = [line[:-1] if line.endswith("\r") else line for line in text.split("\n")]
    if lines and lines[-1] == "":
        lines.pop()
    return lines, replaced


def _short(value: str, k: int = 60) -> str:
    return repr(value if len(value) <= k else value[:k] + "...")


def _read_texts(path: Path) -> tuple[list[str], list[str], list[int], int]:
    lines, replaced = _read_lines(path)
    if not lines:
        raise DatasetError(f"CiteSeer: {path} is empty; expected three lines per paper (id, title + abstract, class)")
    ids: list[str] = []
    texts: list[str] = []
    labels: list[int] = []
    first_line: dict[str, int] = {}
    for start in range(0, len(lines), 3):
        rec = lines[start : start + 3]
        if len(rec) < 3:
            raise DatasetError(
                f"CiteSeer: {path} has {len(lines)} lines, not a multiple of 3: the record starting at line "
                f"{start + 1} ({_short(rec[0])}) is cut short; expected three lines per paper (id, title + abstract, class)"
            )
        pid, body, cls = rec[0].strip(), rec[1].strip(), rec[2].strip()
        if not pid or any(c.isspace() for c in pid):
            raise DatasetError(
                f"CiteSeer: {path} line {start + 1}: paper id {_short(rec[0])} is empty or contains whitespace; "
                "expected one id token on the first line of each three-line record"
            )
        if pid in first_line:
            raise DatasetError(
                f"CiteSeer: {path} line {start + 1}: paper id {pid!r} repeats the record at line {first_line[pid]}; "
                "expected unique ids"
            )
        if cls not in CITESEER_CLASSES:
            raise DatasetError(
                f"CiteSeer: {path} line {start + 3}: class {_short(rec[2])} is unknown; allowed: "
                f"{', '.join(CITESEER_CLASSES)} (a missing or extra line shifts the id/text/class records)"
            )
        first_line[pid] = start + 1
        ids.append(pid)
        texts.append(body)
        labels.append(CITESEER_CLASSES.index(cls))
    return ids, texts, labels, replaced


def _read_cites(path: Path, index: dict[str, int]) -> tuple[torch.Tensor, dict[str, int]]:
    lines, _ = _read_lines(path)
    pairs: set[tuple[int, int]] = set()
    n_lines = dangling = self_loops = duplicates = 0
    for no, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        fields = line.split()
        if len(fields) != 2:
            raise DatasetError(
                f"CiteSeer: {path} line {no}: {_short(line)} has {len(fields)} field(s); expected "
                "'<cited id><TAB><citing id>'"
            )
        n_lines += 1
        a, b = index.get(fields[0]), index.get(fields[1])
        if a is None or b is None:
            dangling += 1
            continue
        if a == b:
            self_loops += 1
            continue
        key = (min(a, b), max(a, b))
        if key in pairs:
            duplicates += 1
            continue
        pairs.add(key)
    edges = torch.tensor(sorted(pairs), dtype=torch.long).reshape(-1, 2).t().contiguous()
    stats = {"lines": n_lines, "dangling": dangling, "self_loops": self_loops, "duplicates": duplicates,
             "edges": len(pairs)}
    return edges, stats


def read_citeseer(folder: str | os.PathLike) -> CiteSeerRaw:
    """Parse ``citeseer_texts.txt`` and ``citeseer.cites`` in ``folder`` (no features are computed).

    Raises:
        DatasetError: a file is missing, or a line is malformed (the message names file, line and value).
    """
    folder = Path(folder)
    missing = [str(folder / f) for f in (TEXTS_FILE, CITES_FILE) if not (folder / f).is_file()]
    if missing:
        raise DatasetError(f"CiteSeer: missing file(s): {', '.join(missing)}; expected {TEXTS_FILE} and {CITES_FILE}")
    ids, texts, labels, replaced = _read_texts(folder / TEXTS_FILE)
    edges, stats = _read_cites(folder / CITES_FILE, {pid: i for i, pid in enumerate(ids)})
    stats["replaced_chars"] = replaced
    if stats["dangling"]:
        log.info("CiteSeer: dropped %d of %d citations naming a paper outside %s", stats["dangling"], stats["lines"],
                 TEXTS_FILE)
    return CiteSeerRaw(tuple(ids), tuple(texts), torch.tensor(labels, dtype=torch.long), CITESEER_CLASSES, edges,
                       stats)


# ------------------------------------------------------------------------------------------- lexical view
def _tfidf(texts: Sequence[str], min_df: int, max_df: float) -> tuple[torch.Tensor, int]:
    """Sparse COO TF-IDF ``[N, V]`` (float64, rows L2-normalised) and the vocabulary size ``V``."""
    docs = [Counter(_TOKEN.findall(t.lower())) for t in texts]
    df: Counter[str] = Counter()
    for d in docs:
        df.update(d.keys())
    n = len(docs)
    vocab = sorted(t for t, c in df.items() if min_df <= c <= max_df * n)
    col = {t: j for j, t in enumerate(vocab)}
    idf = np.array([math.log((1 + n) / (1 + df[t])) + 1.0 for t in vocab])
    rows: list[int] = []
    cols: list[int] = []
    vals: list[float] = []
    for i, d in enumerate(docs):
        items = sorted((col[t], c) for t, c in d.items() if t in col)
        w = np.array([(1.0 + math.log(c)) * idf[j] for j, c in items])
        if w.size:
            w /= np.linalg.norm(w)
        rows += [i] * len(items)
        cols += [j for j, _ in items]
        vals += w.tolist()
    x = torch.sparse_coo_tensor(torch.tensor([rows, cols], dtype=torch.long).reshape(2, -1),
                                torch.tensor(vals, dtype=torch.float64), size=(n, len(vocab)),
                                check_invariants=True).coalesce()
    return x, len(vocab)


def lexical_features(
    texts: Sequence[str],
    dim: int = 256,
    min_df: int = 2,
    max_df: float = 0.5,
    oversample: int = 16,
    power_iters: int = 4,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """TF-IDF followed by a randomized truncated SVD (latent semantic analysis), deterministic for a seed.

    Args:
        texts: one document per node.
        dim: number of SVD components ``k`` (default: ``256``).
        min_df: smallest document frequency of a kept token (default: ``2``).
        max_df: largest document frequency of a kept token, as a fraction of ``N`` (default: ``0.5``).
        oversample: extra random columns of the range finder (default: ``16``).
        power_iters: power iterations of the range finder (default: ``4``).
        seed: seed of the Gaussian test matrix (default: ``0``).

    Returns:
        ``(features, present)``: ``float32 [N, dim]`` with unit-norm rows, zero rows for documents without any
        kept token, and ``bool [N]``.
    """
    if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
        raise ConfigError(f"lexical dim: {dim!r}; allowed: an integer >= 1")
    if not (0 < max_df <= 1):
        raise ConfigError(f"lexical max_df: {max_df!r}; allowed: 0 < max_df <= 1")
    x, v = _tfidf(texts, int(min_df), float(max_df))
    n = x.size(0)
    k = min(dim, n, v)
    if k < dim:
        raise ConfigError(f"lexical dim: {dim} exceeds min(papers, vocabulary) = {min(n, v)}; allowed: dim <= {min(n, v)}")
    xt = x.t().coalesce()
    rng = np.random.default_rng(seed)
    width = min(k + oversample, n, v)
    q = torch.linalg.qr(x @ torch.from_numpy(rng.standard_normal((v, width)))).Q
    for _ in range(power_iters):
        q = torch.linalg.qr(xt @ q).Q
        q = torch.linalg.qr(x @ q).Q
    b = (xt @ q).t()  # Q^T X, [width, V]
    ub, s, vt = torch.linalg.svd(b, full_matrices=False)
    ub, s, vt = ub[:, :k], s[:k], vt[:k]
    signs = torch.sign(vt.gather(1, vt.abs().argmax(1, keepdim=True))).squeeze(1)
    signs[signs == 0] = 1.0
    u = (q @ ub) * signs
    feats = u * s
    norms = feats.norm(dim=1, keepdim=True)
    present = (norms.squeeze(1) > 1e-12) & (torch.bincount(x.indices()[0], minlength=n) > 0)
    feats = torch.where(present.unsqueeze(1), feats / norms.clamp_min(1e-12), torch.zeros_like(feats))
    return feats.float().numpy(), present.numpy()


# ------------------------------------------------------------------------------------------- caching
def _writable(path: Path) -> bool:
    """Writable by this process and not marked read-only (a superuser's ``os.access`` ignores the mode bits)."""
    try:
        return path.is_dir() and os.access(path, os.W_OK) and bool(path.stat().st_mode & 0o222)
    except OSError:
        return False


def _default_cache_dir(folder: Path) -> Path:
    if os.environ.get("MAGKIT_CACHE"):
        return Path(os.environ["MAGKIT_CACHE"])
    local = folder / ".magkit_cache"
    if _writable(local) if local.exists() else _writable(folder):
        return local
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "magkit"


def _view_params(view: str, lexical: dict) -> dict:
    if view == "text":
        from .encode import TEXT_DIM, TEXT_ENCODER, TEXT_MAX_TOKENS, TEXT_PACKAGE, _version

        return {"encoder": TEXT_ENCODER, "weights": f"{TEXT_PACKAGE}=={_version(TEXT_PACKAGE)}", "dim": TEXT_DIM,
                "max_tokens": TEXT_MAX_TOKENS, "pooling": "masked mean, L2-normalised"}
    return {"encoder": "tfidf-randomized-svd", "token": _TOKEN.pattern, "sublinear_tf": True,
            "idf": "log((1+N)/(1+df))+1", **lexical}


def _encode_view(view: str, texts: Sequence[str], lexical: dict) -> tuple[np.ndarray, np.ndarray]:
    if view == "text":
        from .encode import encode_texts

        return encode_texts(list(texts))
    return lexical_features(texts, **lexical)


def _cached_view(view: str, texts: Sequence[str], text_sha: str, lexical: dict, cache: Path) -> tuple[np.ndarray, np.ndarray]:
    from .encode import _atomic_write, _save_npy

    params = _view_params(view, lexical)
    key = hashlib.sha256(json.dumps({"format": _CACHE_FORMAT, "view": view, "texts_sha256": text_sha,
                                     "params": params}, sort_keys=True).encode()).hexdigest()
    stem = cache / FOLDER / f"{view}-{key[:20]}"
    feats_path, meta_path = stem.with_suffix(".npy"), stem.with_suffix(".json")
    n = len(texts)
    if feats_path.is_file() and meta_path.is_file():
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
            feats = np.load(feats_path, allow_pickle=False)
            if meta.get("key") == key and feats.ndim == 2 and feats.shape[0] == n and feats.dtype == np.float32:
                log.info("CiteSeer %s view: reusing cache %s", view, feats_path)
                return feats, np.abs(feats).sum(1) > 0  # every present row is unit-norm, absent rows are zero
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("CiteSeer %s view: ignoring unreadable cache %s (%s); re-encoding", view, feats_path, exc)
    log.info("CiteSeer %s view: encoding %d papers (cached afterwards in %s)", view, n, feats_path.parent)
    t0 = time.perf_counter()
    feats, present = _encode_view(view, texts, lexical)
    seconds = time.perf_counter() - t0
    log.info("CiteSeer %s view: encoded in %.1f s", view, seconds)
    try:
        feats_path.parent.mkdir(parents=True, exist_ok=True)
        _save_npy(feats_path, np.ascontiguousarray(feats, dtype=np.float32))
        meta = {"key": key, "view": view, "texts_sha256": text_sha, "params": params, "n_rows": n,
                "encode_seconds": round(seconds, 2), "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        text = json.dumps(meta, indent=1) + "\n"
        _atomic_write(meta_path, lambda fh: fh.write(text.encode("utf-8")))
    except OSError as exc:
        log.warning("CiteSeer %s view: cannot write the cache in %s (%s); features are not cached", view,
                    feats_path.parent, exc)
    return np.ascontiguousarray(feats, dtype=np.float32), present


# ------------------------------------------------------------------------------------------- loading
def load_citeseer(
    folder: str | os.PathLike,
    views: Sequence[str] = CITESEER_VIEWS,
    cache_dir: str | os.PathLike | None = None,
    name: str = "citeseer",
    lexical: dict | None = None,
) -> MultimodalGraph:
    """Read CiteSeer from ``folder`` into a :class:`MultimodalGraph` with one modality per view.

    Args:
        folder: the folder holding ``citeseer_texts.txt`` and ``citeseer.cites``.
        views: any of ``("text", "lexical")``, in modality order (default: both).
        cache_dir: the feature cache folder (default: ``$MAGKIT_CACHE``, else ``<folder>/.magkit_cache`` when
            writable, else ``~/.cache/magkit``).
        name: the graph's name.
        lexical: overrides of the lexical view's parameters (``dim``, ``min_df``, ``max_df``, ``oversample``,
            ``power_iters``, ``seed``; see :func:`lexical_features`).

    Returns:
        The graph (no split applied): ``x_<view>`` float32 ``[3186, d]``, ``y`` ``[3186]``, undirected
        ``edge_index``, ``class_names``, and ``meta["citations"]`` / ``meta["node_ids"]``.
    """
    views = name_subset(views, CITESEER_VIEWS, "CiteSeer views")
    unknown = sorted(set(lexical or {}) - set(LEXICAL_DEFAULTS))
    if unknown:
        raise ConfigError(f"CiteSeer lexical parameter(s) {unknown}; allowed: {', '.join(LEXICAL_DEFAULTS)}")
    lex = {**LEXICAL_DEFAULTS, **(lexical or {})}
    folder = Path(folder)
    raw = read_citeseer(folder)
    text_sha = hashlib.sha256((folder / TEXTS_FILE).read_bytes()).hexdigest()
    cache = Path(cache_dir) if cache_dir is not None else _default_cache_dir(folder)
    features, masks = {}, {}
    for view in views:
        feats, present = _cached_view(view, raw.texts, text_sha, lex, cache)
        features[view] = torch.from_numpy(feats)
        masks[view] = torch.from_numpy(np.asarray(present, dtype=bool))
    graph = MultimodalGraph(features, raw.edges, raw.y, num_classes=len(raw.class_names), modality_mask=masks,
                            class_names=raw.class_names, name=name)
    meta = dict(graph.meta)
    meta["citations"] = dict(raw.stats)
    meta["node_ids"] = list(raw.ids)
    meta["source"] = str(folder)
    graph.meta = meta
    return graph
