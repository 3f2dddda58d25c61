"""Provenance of a condensed graph: the ``meta`` a condenser attaches to its
:class:`~magkit.condense.artifact.CondensedGraph` (method, configuration, seed, budget, dataset checksum,
package versions, creation time, a summary of the condensation history)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from typing import Any

from .artifact import to_json


def condensation_meta(
    graph: Any,
    *,
    method: str,
    config: Mapping[str, Any] | Any | None = None,
    seed: int | None = None,
    ratio: float | None = None,
    history: Any = None,
    **extra: Any,
) -> dict[str, Any]:
    """The ``meta`` dict a condenser attaches to its :class:`CondensedGraph`.

    Keys: ``method``, ``config`` (a mapping or dataclass), ``seed``, ``ratio``, ``dataset`` (``graph.name``),
    ``dataset_checksum`` (``graph.checksum()``), ``versions`` (:func:`magkit.eval.results.environment`),
    ``created`` (UTC, ISO 8601), ``history`` (see :func:`summarize_history`), plus any ``extra`` keys
    (e.g. ``wall_time``, ``peak_memory_mb``).
    """
    from ..eval.results import environment

    meta: dict[str, Any] = {
        "method": method,
        "config": config,
        "seed": seed,
        "ratio": ratio,
        "dataset": graph.name,
        "dataset_checksum": graph.checksum(),
        "versions": environment(),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "history": summarize_history(history),
    }
    meta.update(extra)
    return to_json(meta)


def summarize_history(history: Any, max_points: int = 50) -> dict[str, Any] | None:
    """A compact, JSON-ready summary of a condensation history.

    Accepts ``None``, an object with ``to_dict()`` (e.g. :class:`magkit.train.loop.History`), a dict with an
    ``"epochs"`` list of per-epoch records, or such a list itself. The summary keeps every other top-level
    entry, ``num_records``, the ``last`` record, and ``curve``: at most ``max_points`` records evenly
    spaced over the run (first and last included), enough to plot the convergence curve.
    """
    if history is None:
        return None
    if hasattr(history, "to_dict"):
        history = history.to_dict()
    if isinstance(history, Sequence) and not isinstance(history, (str, bytes)):
        history = {"epochs": list(history)}
    if not isinstance(history, Mapping):
        return {"value": to_json(history)}
    out = {k: v for k, v in history.items() if k != "epochs"}
    records = history.get("epochs")
    if isinstance(records, Sequence) and not isinstance(records, (str, bytes)):
        records = list(records)
        k = len(records)
        if k <= max_points:
            idx = list(range(k))
        else:
            idx = sorted({round(i * (k - 1) / (max_points - 1)) for i in range(max_points)})
        out.update(num_records=k, last=records[-1] if records else None, curve=[records[i] for i in idx])
    return to_json(out)
