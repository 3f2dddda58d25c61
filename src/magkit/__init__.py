"""magkit: learning on multimodal attributed graphs (GraphMNL node classification, SR-GM condensation).

Heavy modules (torch, torch_geometric) are imported on first use so that ``import magkit`` and the CLI's
``--help`` stay fast.
"""

from __future__ import annotations

import importlib
import warnings

# torch warns once per process that sparse CSR support is "in beta" the first time magkit builds an adjacency;
# magkit's CSR use (sparse @ dense products) is covered by its tests, so the notice is noise for users
warnings.filterwarnings("ignore", message=r"Sparse CSR tensor support is in beta", category=UserWarning)

__version__ = "0.1.0"

_EXPORTS = {
    "MultimodalGraph": "magkit.data.graph",
    "validate": "magkit.data.graph",
    "load_dataset": "magkit.data.datasets",
    "MagkitError": "magkit.exceptions",
    "DatasetError": "magkit.exceptions",
    "GraphValidationError": "magkit.exceptions",
    "ConfigError": "magkit.exceptions",
    "NotFittedError": "magkit.exceptions",
    "GraphMNL": "magkit.methods.graphmnl",
    "load_estimator": "magkit.methods.persistence",
    "SRGM": "magkit.condense",
    "CondensedGraph": "magkit.condense",
    "evaluate_condensed": "magkit.condense",
    "make_condenser": "magkit.condense",
}

__all__ = sorted([*_EXPORTS, "search"]) + ["__version__"]


def __getattr__(name: str):
    if name == "search":  # the package magkit.search is callable: magkit.search(data, space, out, ...)
        return importlib.import_module("magkit.search")
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'magkit' has no attribute {name!r}")
