"""Graph condensation: synthesise a tiny graph that trains GNNs almost as well as the real one.

Every condenser (SR-GM, GCond, coresets) returns a :class:`CondensedGraph`, the artifact that is saved
and loaded as one safetensors file (see :mod:`magkit.condense.artifact` for the format) and evaluated on
the real graph.
"""

from .artifact import FORMAT_VERSION, CondensedGraph, condensation_meta, summarize_history

__all__ = ["FORMAT_VERSION", "CondensedGraph", "condensation_meta", "summarize_history"]
