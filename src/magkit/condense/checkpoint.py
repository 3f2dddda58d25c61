"""Checkpoints of a gradient-matching run: written every ``checkpoint_every`` epochs, read by ``resume=True``.

One safetensors file: the tensors ``x_syn`` (X'), ``pge.<name>`` (Φ), ``opt_x.<param>.<key>`` /
``opt_a.<param>.<key>`` (the Adam states of X' and Φ) and ``best.x`` / ``best.adj`` (the best S so far); the
header's ``"magkit"`` metadata is JSON with the format name, the configuration key, the dataset checksum,
the epoch, the elapsed time, the per-epoch records, the optimizers' parameter groups and the best epoch.
Files are replaced atomically; reading executes no code (no pickle).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..exceptions import DatasetError

FORMAT = "magkit.condense_checkpoint"
#: parameters that may differ between the run that wrote a checkpoint and the run that resumes it
RESUMABLE_CHANGES = ("epochs", "checkpoint_every", "eval_every", "distributed")


def config_key(params: Mapping[str, Any]) -> str:
    """The configuration a checkpoint belongs to: ``params`` without :data:`RESUMABLE_CHANGES`, as JSON."""
    keep = {k: v for k, v in params.items() if k not in RESUMABLE_CHANGES}
    return json.dumps(keep, sort_keys=True, default=str)


def save_checkpoint(path: str | Path, params: Mapping[str, Any], graph, state: dict, x_syn: Tensor,
                    pge: torch.nn.Module | None, opt_x: torch.optim.Optimizer,
                    opt_a: torch.optim.Optimizer | None) -> None:
    """Write the run ``state`` (``epoch``, ``elapsed``, ``records``, ``best``) with X', Φ and both optimizers."""
    from safetensors.torch import save

    from ..eval.results import atomic_write_bytes

    tensors = {"x_syn": x_syn.detach().cpu().contiguous()}
    if pge is not None:
        for k, v in pge.state_dict().items():
            tensors[f"pge.{k}"] = v.cpu().contiguous()
    opt_meta = {}
    for name, opt in (("opt_x", opt_x), ("opt_a", opt_a)):
        if opt is None:
            continue
        sd = opt.state_dict()
        opt_meta[name] = {"param_groups": sd["param_groups"], "keys": {}}
        for pid, s in sd["state"].items():
            keys = []
            for k, v in s.items():
                if isinstance(v, Tensor):
                    tensors[f"{name}.{pid}.{k}"] = v.detach().cpu().contiguous().reshape(v.shape)
                    keys.append(k)
            opt_meta[name]["keys"][str(pid)] = keys
    best = state["best"]
    if best is not None:
        tensors["best.x"] = best["x"].cpu().contiguous()
        tensors["best.adj"] = best["adj"].cpu().contiguous()
    meta = {"format": FORMAT, "config": config_key(params), "dataset_checksum": graph.checksum(),
            "epoch": state["epoch"], "elapsed": state["elapsed"], "records": state["records"], "optim": opt_meta,
            "best": None if best is None else {"val_acc": best["val_acc"], "epoch": best["epoch"]}}
    data = save(tensors, metadata={"magkit": json.dumps(meta, default=str)})
    atomic_write_bytes(path, data)


def load_checkpoint(path: str | Path, params: Mapping[str, Any], graph, x_syn: Tensor,
                    pge: torch.nn.Module | None, opt_x: torch.optim.Optimizer,
                    opt_a: torch.optim.Optimizer | None) -> dict:
    """Restore X', Φ and both optimizers in place from ``path``; return the run state.

    Raises :class:`~magkit.exceptions.DatasetError` when the file is unreadable, of another format, written
    with another configuration (:func:`config_key`) or for another dataset (checksum)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = json.loads((f.metadata() or {}).get("magkit", "{}"))
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as exc:  # noqa: BLE001 - any parse failure is a bad checkpoint
        raise DatasetError(f"checkpoint {path}: not a readable magkit checkpoint ({exc})") from None
    if meta.get("format") != FORMAT:
        raise DatasetError(f"checkpoint {path}: not a magkit condensation checkpoint")
    if meta.get("config") != config_key(params):
        raise DatasetError(f"checkpoint {path}: written with another configuration ({meta.get('config')}); "
                           f"this run is {config_key(params)}. Delete it or use the same options.")
    if meta.get("dataset_checksum") != graph.checksum():
        raise DatasetError(f"checkpoint {path}: written for another dataset (checksum {meta.get('dataset_checksum')}, "
                           f"this graph {graph.checksum()})")
    with torch.no_grad():
        x_syn.copy_(tensors["x_syn"])
    if pge is not None:
        pge.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("pge.")})
    for name, opt in (("opt_x", opt_x), ("opt_a", opt_a)):
        om = meta["optim"].get(name)
        if opt is None or om is None:
            continue
        st = {int(pid): {k: tensors[f"{name}.{pid}.{k}"] for k in keys} for pid, keys in om["keys"].items()}
        opt.load_state_dict({"state": st, "param_groups": om["param_groups"]})
    best = None
    if meta.get("best") is not None:
        dev = x_syn.device
        best = {**meta["best"], "x": tensors["best.x"].to(dev), "adj": tensors["best.adj"].to(dev)}
    return {"epoch": int(meta["epoch"]), "records": list(meta["records"]), "best": best,
            "elapsed": float(meta["elapsed"])}
