"""Multimodal graph data: the container, validation, splits, readers of real benchmarks and generators.

Names are imported lazily so that ``import magkit.data`` stays cheap.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "MultimodalGraph": ".graph",
    "validate": ".graph",
    "describe": ".graph",
    "edge_homophily": ".graph",
    "to_undirected": ".graph",
    "apply_split": ".splits",
    "ratio_split": ".splits",
    "label_rate_split": ".splits",
    "kshot_split": ".splits",
    "parse_split": ".splits",
    "load_magb": ".magb",
    "read_dgl_graph": ".magb",
    "load_magb_structure": ".magb",
    "load_mmgraph": ".mmgraph",
    "load_graph_files": ".io",
    "make_synthetic_mag": ".synthetic",
    "attach_synthetic_features": ".synthetic",
    "PROFILES": ".synthetic",
    "load_dataset": ".datasets",
    "dataset_names": ".datasets",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        module = importlib.import_module(_EXPORTS[name], __name__)
        return getattr(module, name)
    raise AttributeError(f"module 'magkit.data' has no attribute {name!r}")
