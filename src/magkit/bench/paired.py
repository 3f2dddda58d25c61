"""A method against the best baseline of each setting, paired over seeds (a suite's ``reference`` key).

For every (dataset, split) of a fit suite and each of test accuracy and test macro-F1, the best baseline is the
baseline with the highest mean over the seeds; the table gives the reference method's mean ± std, the best
baseline's, and the paired difference d_s = reference_s − baseline_s over the seeds both finished: mean ± sample
std and the paired t statistic t = mean(d) / (std(d) / √n).
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from typing import Any

from ..exceptions import ConfigError

METRICS = (("test_acc", "acc"), ("test_f1", "macro-F1"))


def check_reference(value: Any, methods: list[str], where: str) -> dict[str, Any] | None:
    """The suite's ``reference: {method: NAME, baselines: [...]}``, checked against its methods."""
    if value is None:
        return None
    if not isinstance(value, dict) or set(value) - {"method", "baselines"} or "method" not in value:
        raise ConfigError(f"{where}: reference {value!r}; allowed: a mapping with 'method' and optional 'baselines'")
    method = str(value["method"])
    baselines = value.get("baselines")
    baselines = [str(b) for b in (baselines if baselines is not None else methods) if str(b) != method]
    missing = [m for m in [method, *baselines] if m not in methods]
    if missing:
        raise ConfigError(f"{where}: reference names {', '.join(missing)}, not in methods; allowed: {', '.join(methods)}")
    if not baselines:
        raise ConfigError(f"{where}: reference needs at least one baseline beside {method!r}")
    return {"method": method, "baselines": baselines}


def _ms(values: list[float]) -> tuple[float, float]:
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def paired_rows(rows: list[dict], method: str, baselines: list[str]) -> list[dict[str, Any]]:
    """One record per (dataset, split, metric): the reference's and the best baseline's mean ± std (in %), the
    paired difference's mean ± std and t, and n (seeds both finished)."""
    cells: dict[tuple[str, str], dict[str, dict[int, dict]]] = defaultdict(dict)
    for r in rows:
        if r.get("status", "ok") == "ok" and isinstance(r.get("metrics"), dict):
            cells[(r["dataset"], r["split"])].setdefault(r["method"], {})[r["seed"]] = r["metrics"]
    out = []
    for (dataset, split), by_method in cells.items():
        ref = by_method.get(method)
        base = {m: v for m, v in by_method.items() if m in baselines}
        if not ref or not base:
            continue
        for key, label in METRICS:
            best = max(base, key=lambda m: statistics.mean(100 * s[key] for s in base[m].values()))
            seeds = sorted(set(ref) & set(base[best]))
            if not seeds:
                continue
            a = [100 * ref[s][key] for s in seeds]
            b = [100 * base[best][s][key] for s in seeds]
            d = [x - y for x, y in zip(a, b, strict=True)]
            dm, ds = _ms(d)
            t = dm / (ds / math.sqrt(len(d))) if ds > 0 else float("nan")
            out.append({"dataset": dataset, "split": split, "metric": label, "method": method, "ref": _ms(a),
                        "best": best, "base": _ms(b), "diff": (dm, ds), "t": t, "n": len(seeds)})
    return out


def paired_markdown(rows: list[dict], method: str, baselines: list[str]) -> str:
    """The ``reference`` section of a suite's results.md."""
    recs = paired_rows(rows, method, baselines)
    if not recs:
        return ""
    lines = [f"## {method} against the best baseline", "",
             f"Per setting and metric, the best of {', '.join(baselines)} by its mean over the seeds; difference = "
             f"{method} − that baseline, paired on the seed (mean ± sample std, t = mean / (std / √n)). "
             "**below**: the mean difference is negative.", "",
             f"| dataset | split | metric | {method} | best baseline | difference | t | n |",
             "| --- | --- | --- | ---: | --- | ---: | ---: | ---: |"]
    for r in recs:
        below = " **below**" if r["diff"][0] < 0 else ""
        t = "" if math.isnan(r["t"]) else f"{r['t']:+.1f}"
        lines.append(f"| {r['dataset']} | `{r['split']}` | {r['metric']} | {r['ref'][0]:.2f} ± {r['ref'][1]:.2f} | "
                     f"{r['best']} {r['base'][0]:.2f} ± {r['base'][1]:.2f} | {r['diff'][0]:+.2f} ± {r['diff'][1]:.2f}"
                     f"{below} | {t} | {r['n']} |")
    return "\n".join(lines)
