"""How well a search on a condensed graph ranks candidates as the search on the whole graph does."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from ..exceptions import ConfigError


def trial_scores(source: Any, metric: str = "val_acc") -> dict[str, float]:
    """``{configuration key: score}`` of the finished trials of a search: a
    :class:`~magkit.search.runner.SearchResult`, a search ``--out`` folder or rows file, an iterable of rows,
    or a mapping already. Only ``stage: trial`` rows with ``status: ok`` count (pruned trials did not finish);
    a folder holding the trials of several searches (``on``) is a one-line :class:`ConfigError`."""
    if isinstance(source, Mapping):
        return {str(k): float(v) for k, v in source.items()}
    if hasattr(source, "trials") and hasattr(source, "on"):
        rows: Iterable[dict] = source.trials
    elif isinstance(source, (str, Path)):
        from ..bench.report import merge

        rows = [r for r in merge([source])[0].values() if r.get("task") == "search"]
        ons = sorted({r.get("on") for r in rows if r.get("stage") == "trial"})
        if len(ons) > 1:
            raise ConfigError(f"compare: {str(source)!r} holds the trials of {len(ons)} searches ({', '.join(ons)}); "
                              "allowed: one search per folder or rows file")
    else:
        rows = source
    return {r["method"]: float(r["metrics"][metric]) for r in rows
            if r.get("stage", "trial") == "trial" and r.get("status", "ok") == "ok" and metric in r.get("metrics", {})}


def top_k(scores: Mapping[str, float], k: int) -> list[str]:
    """The ``k`` best keys by score (ties keep the mapping's order)."""
    return [key for key, _ in sorted(scores.items(), key=lambda kv: -kv[1])[:k]]


def compare(rows_s: Any, rows_whole: Any, k: int = 10, metric: str = "val_acc") -> dict[str, Any]:
    r"""Rank agreement between a search on S and the search on the whole graph, over the configurations both ran.

    * Spearman's :math:`\rho` (Pearson correlation of the ranks) and Kendall's :math:`\tau_b` (concordant minus
      discordant pairs, tie-corrected) between the two scores (``scipy.stats``);
    * top-``k`` overlap: :math:`|T_k(S) \cap T_k(\text{whole})| / k` with :math:`T_k` the ``k`` best
      configurations (``k`` capped at the number of common configurations);
    * the configuration each search ranks first.

    GCond (Jin et al., ICLR 2022, Table 6) reports these correlations for a search on condensed graphs.

    Args:
        rows_s: the trials on S (anything :func:`trial_scores` reads).
        rows_whole: the trials on the whole graph (the same).
        k (int, optional): the head compared. (default: :obj:`10`)
        metric (str, optional): the score of a trial. (default: ``"val_acc"``)

    Returns:
        dict: ``n`` (common configurations), ``spearman``, ``kendall`` (NaN below 2 configurations or for
        constant scores), ``k``, ``top_overlap``, ``best_s``, ``best_whole``.
    """
    from scipy.stats import kendalltau, spearmanr

    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ConfigError(f"compare: k {k!r}; allowed: an integer >= 1")
    s, w = trial_scores(rows_s, metric), trial_scores(rows_whole, metric)
    common = [key for key in s if key in w]
    out: dict[str, Any] = {"n": len(common), "spearman": math.nan, "kendall": math.nan, "k": min(k, len(common)),
                           "top_overlap": math.nan, "best_s": None, "best_whole": None}
    if not common:
        return out
    a, b = [s[c] for c in common], [w[c] for c in common]
    if len(common) >= 2 and len(set(a)) > 1 and len(set(b)) > 1:
        out["spearman"] = float(spearmanr(a, b).statistic)
        out["kendall"] = float(kendalltau(a, b).statistic)
    kk = out["k"]
    ts, tw = top_k({c: s[c] for c in common}, kk), top_k({c: w[c] for c in common}, kk)
    out["top_overlap"] = len(set(ts) & set(tw)) / kk
    out["best_s"], out["best_whole"] = ts[0], tw[0]
    return out
