"""The sizes a node classifier's network is built from (:class:`NetShape`), recorded at fit and read back on load."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class NetShape:
    """What :meth:`NodeClassifier._build <magkit.methods.base.NodeClassifier._build>` may read of a graph.

    ``fit`` takes it from the training graph (:meth:`of`); loading a saved estimator rebuilds the network from
    the recorded one (:meth:`from_json`), so the saved weights fit it exactly.

    Args:
        modalities (tuple of str): modality names, in the graph's order.
        modality_dims (dict): feature width d_m of each modality.
        num_classes (int): the number of classes C.
        num_nodes (int): the number of nodes N (read by per-node parameters such as GraphMNL's ``topo`` branch).
        class_names (tuple of str, optional): names of the C classes. (default: :obj:`None`)
    """

    modalities: tuple[str, ...]
    modality_dims: dict[str, int] = field(hash=False)
    num_classes: int
    num_nodes: int
    class_names: tuple[str, ...] | None = None

    @classmethod
    def of(cls, graph: Any) -> NetShape:
        """The shape of a :class:`~magkit.data.graph.MultimodalGraph`."""
        names = getattr(graph, "class_names", None)
        return cls(tuple(graph.modalities), {m: int(d) for m, d in dict(graph.modality_dims).items()},
                   int(graph.num_classes), int(graph.num_nodes), tuple(names) if names is not None else None)

    def to_json(self) -> dict[str, Any]:
        return {"modalities": list(self.modalities), "modality_dims": dict(self.modality_dims),
                "num_classes": self.num_classes, "num_nodes": self.num_nodes,
                "class_names": list(self.class_names) if self.class_names is not None else None}

    @classmethod
    def from_json(cls, record: Any) -> NetShape:
        """The shape of a JSON record written by :meth:`to_json`; a ``ValueError`` names the first bad field."""
        if not isinstance(record, dict):
            raise ValueError(f"shape: {record!r}; allowed: a JSON object")
        mods = record.get("modalities")
        if (not isinstance(mods, list) or not mods or len(set(mods)) != len(mods)
                or not all(isinstance(m, str) and m for m in mods)):
            raise ValueError(f"shape.modalities: {mods!r}; allowed: a non-empty list of unique names")
        dims = record.get("modality_dims")
        if (not isinstance(dims, dict) or set(dims) != set(mods)
                or not all(type(d) is int and d >= 1 for d in dims.values())):
            raise ValueError(f"shape.modality_dims: {dims!r}; allowed: a width >= 1 for each of {mods}")
        for key in ("num_classes", "num_nodes"):
            v = record.get(key)
            if type(v) is not int or v < 1:
                raise ValueError(f"shape.{key}: {v!r}; allowed: an int >= 1")
        names = record.get("class_names")
        if names is not None and (not isinstance(names, list) or len(names) != record["num_classes"]
                                  or not all(isinstance(s, str) for s in names)):
            raise ValueError(f"shape.class_names: {names!r}; allowed: null or one name per class")
        return cls(tuple(mods), {m: dims[m] for m in mods}, record["num_classes"], record["num_nodes"],
                   tuple(names) if names is not None else None)
