"""Named datasets, usable everywhere (library, CLI, benchmarks).

==============================  =====================================================================
name                            what it is
==============================  =====================================================================
``synthetic``                   built in: a 2,000-node degree-corrected SBM, 5 classes, text + image,
                                ``text-dominant`` features (the demo's default). ``synthetic:<profile>``
                                picks another feature profile.
``<graph>-semi:<profile>``      a real MAGB graph's structure and labels (``grocery``, ``movies``, ``toys``,
                                ``reddit-s``, ``reddit-m``) with generated features of ``<profile>``
                                (``text-dominant``, ``image-dominant``, ``balanced``, ...), e.g.
                                ``grocery-semi:text-dominant``. Needs only ``<Name>Graph.pt``.
                                ``grocery-semi`` alone is ``grocery-semi:grocery-calibrated``, the profile
                                fitted to MAGB Grocery's published accuracies with real encoders.
``magb:<Name>``                 the real MAGB benchmark with its text/image feature files.
``mmgraph:<name>``              an MM-Graph benchmark (``ele-fashion``, ``books-nc``, ...).
``citeseer``                    CiteSeer with raw titles and abstracts (3,186 papers, 6 classes): views ``text``
                                (MiniLM sentence embedding) and ``lexical`` (TF-IDF + SVD), encoded once and
                                cached; ``citeseer:text`` / ``citeseer:lexical`` keep one view.
``files:<dir>``                 your own graph in the neutral format: ``<dir>/nodes.csv`` (or ``.jsonl``),
                                ``<dir>/edges.csv`` and the feature files ``<dir>/features/<m>.npy`` written by
                                ``magkit encode <dir>/nodes.csv --out <dir>/features``.
``mmap:<dir>``                  a graph in the binary on-disk layout (``y.npy``, ``edge_index.npy``,
                                ``features/<m>.npy``, optional masks): feature blocks stay memory-mapped and
                                are read in float32 chunks (``magkit data generate`` writes one).
==============================  =====================================================================

Data roots are searched in this order: the ``root`` argument, ``$MAGKIT_DATA``, ``./data``,
``../shared/data``. A MAGB graph is found at ``<root>/<Name>/`` or ``<root>/magb/<Name>/``.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..base import did_you_mean
from ..exceptions import ConfigError, DatasetError

MAGB_NAMES = {"movies": "Movies", "toys": "Toys", "grocery": "Grocery", "reddit-s": "Reddit-S", "reddit-m": "Reddit-M"}


def dataset_names() -> list[str]:
    """The dataset name patterns accepted by :func:`load_dataset`."""
    from .synthetic import PROFILES

    profiles = "|".join(PROFILES)
    return [
        "synthetic",
        f"synthetic:<{profiles}>",
        f"<{'|'.join(MAGB_NAMES)}>-semi:<{profiles}>",
        "magb:<Movies|Toys|Grocery|Reddit-S|Reddit-M>",
        "mmgraph:<name>",
        "citeseer[:text|lexical]",
        "files:<dir>",
        "mmap:<dir>",
    ]


def data_roots(root: str | os.PathLike | None = None) -> list[Path]:
    """Candidate data folders, in search order."""
    cands: list[Path] = []
    if root is not None:
        cands.append(Path(root))
    if os.environ.get("MAGKIT_DATA"):
        cands.append(Path(os.environ["MAGKIT_DATA"]))
    cands += [Path.cwd() / "data", Path.cwd().parent / "shared" / "data"]
    return cands


def find_magb_root(name: str, root: str | os.PathLike | None = None) -> Path:
    """The folder that holds ``<Name>/<Name>Graph.pt``; DatasetError lists every place looked at."""
    tried = []
    for cand in data_roots(root):
        for base in (cand, cand / "magb"):
            f = base / name / f"{name}Graph.pt"
            tried.append(str(f))
            if f.is_file():
                return base
    raise DatasetError(
        f"MAGB graph {name!r} not found; looked for: {', '.join(tried)}. "
        "Pass root=... (CLI: --root) or set MAGKIT_DATA to the folder holding <Name>/<Name>Graph.pt"
    )


def _magb_name(key: str) -> str:
    k = key.strip().lower()
    if k in MAGB_NAMES:
        return MAGB_NAMES[k]
    raise ConfigError(f"dataset: unknown MAGB graph {key!r}; allowed: {', '.join(MAGB_NAMES.values())}")


def load_dataset(
    name: str,
    root: str | os.PathLike | None = None,
    split: str | None = None,
    seed: int = 0,
    data_seed: int = 0,
    **kwargs,
):
    """Load a named dataset as a validated :class:`~magkit.data.graph.MultimodalGraph`.

    Args:
        name: a dataset name (see the module docstring or :func:`dataset_names`).
        root: a data folder to search first.
        split: a split spec (``magb``, ``rate:0.05``, ``kshot:20``, ``random:0.6/0.2``); ``None`` keeps the
            dataset's own split (MAGB's 60/20/20 for MAGB graphs and generated ones, the official split of
            MM-Graph).
        seed: the split seed (label-rate and k-shot draws, random splits).
        data_seed: the seed of generated features/graphs (fixed per dataset, independent of ``seed``).
        **kwargs: passed to the generator or reader (e.g. ``num_nodes`` for ``synthetic``).
    """
    from .graph import validate
    from .splits import apply_split

    if not isinstance(name, str) or not name.strip():
        raise ConfigError(f"dataset: {name!r} is not a dataset name; allowed: {', '.join(dataset_names())}")
    key = name.strip()
    kind, _, arg = key.partition(":")
    kind_l = kind.lower()
    if kind_l == "synthetic":
        from .synthetic import make_synthetic_mag

        params = {"num_nodes": 2000, "num_classes": 5, "homophily": 0.75, "profile": arg or "text-dominant"}
        params.update(kwargs)
        graph = make_synthetic_mag(seed=data_seed, **params)
        graph.name = key
    elif kind_l.endswith("-semi"):
        from .magb import load_magb_structure
        from .synthetic import attach_synthetic_features

        gname = _magb_name(kind_l[: -len("-semi")])
        if not arg and gname == "Grocery":  # the profile fitted to Grocery's published figures
            arg = "grocery-calibrated"
        if not arg:
            raise ConfigError(f"dataset: {key!r} needs a feature profile, e.g. {kind_l}:text-dominant")
        structure = load_magb_structure(find_magb_root(gname, root), gname)
        graph = attach_synthetic_features(structure, profile=arg, seed=data_seed, **kwargs)
        graph.name = key
    elif kind_l == "magb":
        from .magb import load_magb

        gname = _magb_name(arg)
        graph = load_magb(find_magb_root(gname, root), gname, **kwargs)
    elif kind_l == "mmgraph":
        from .mmgraph import load_mmgraph

        tried = [c / "mmgraph" for c in data_roots(root)] + list(data_roots(root))
        base = next((t for t in tried if (t / arg).is_dir()), None)
        if base is None:
            raise DatasetError(f"MM-Graph dataset {arg!r} not found; looked in: {', '.join(str(t / arg) for t in tried)}")
        graph = load_mmgraph(base, arg, **kwargs)
    elif kind_l == "citeseer":
        from .citeseer import CITESEER_VIEWS, find_citeseer_dir, load_citeseer

        if arg and arg.lower() not in CITESEER_VIEWS:
            raise ConfigError(f"dataset: {key!r} has an unknown CiteSeer view {arg!r}; allowed: citeseer, "
                              + ", ".join(f"citeseer:{v}" for v in CITESEER_VIEWS))
        views = (arg.lower(),) if arg else CITESEER_VIEWS
        graph = load_citeseer(find_citeseer_dir(root), views=views, name=key, **kwargs)
    elif kind_l == "files":
        from .io import load_graph_files

        folder = Path(arg).expanduser()
        nodes = next((folder / f for f in ("nodes.csv", "nodes.jsonl") if (folder / f).is_file()), None)
        if nodes is None or not (folder / "edges.csv").is_file():
            raise DatasetError(f"dataset {key!r}: expected {folder / 'nodes.csv'} (or nodes.jsonl) and {folder / 'edges.csv'}")
        feats = {p.stem: p for p in sorted((folder / "features").glob("*.npy")) if not p.stem.endswith("_present")}
        if not feats:
            raise DatasetError(f"dataset {key!r}: no feature files in {folder / 'features'}; "
                               f"run: magkit encode {nodes} --out {folder / 'features'}")
        graph = load_graph_files(nodes, folder / "edges.csv", features=feats, name=key, **kwargs)
    elif kind_l == "mmap":
        from .ondisk import load_mmap_graph

        # its own stored split unless one is asked for (no stored masks: the default "magb")
        return validate(load_mmap_graph(arg, split=split, seed=seed, name=key, **kwargs))
    else:
        hint = did_you_mean(kind_l, ["synthetic", "magb", "mmgraph", "citeseer", "files", "mmap", *(f"{g}-semi" for g in ("movies", "toys", "grocery", "reddit-s", "reddit-m"))])
        raise ConfigError(f"dataset: unknown name {name!r}{hint}; allowed: {', '.join(dataset_names())}")
    if split is not None or kind_l not in ("mmgraph", "files"):  # own data keeps its file's split
        apply_split(graph, split or "magb", seed=seed)
    return validate(graph)
