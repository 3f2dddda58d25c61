"""Checkpoints of a gradient-matching run: written every ``checkpoint_every`` epochs, read by ``resume=True``.

One safetensors file: the tensors ``x_syn`` (X'), ``pge.<name>`` (Φ), ``opt_x.<param>.<key>`` /
``opt_a.<param>.<key>`` (the Adam states of X' and Φ) and ``best.x`` / ``best.adj`` (the best S so far); the
header's ``"magkit"`` metadata is JSON with the format name, the configuration key, the dataset checksum,
the epoch, the wall time of the runs so far, the per-epoch records, the optimizers' parameter groups and the
best epoch; the key ``"magkit.sha256"`` holds the content digest (:mod:`magkit.integrity`). Files are replaced
atomically; reading executes no code (no pickle), checks the digest and every tensor against the run before
restoring anything.
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
FORMAT_VERSION = 1
#: parameters that may differ between the run that wrote a checkpoint and the run that resumes it
RESUMABLE_CHANGES = ("epochs", "checkpoint_every", "eval_every", "distributed")


def config_key(params: Mapping[str, Any]) -> str:
    """The configuration a checkpoint belongs to: ``params`` without :data:`RESUMABLE_CHANGES`, as JSON."""
    keep = {k: v for k, v in params.items() if k not in RESUMABLE_CHANGES}
    return json.dumps(keep, sort_keys=True, default=str)


def save_checkpoint(path: str | Path, params: Mapping[str, Any], graph, state: dict, x_syn: Tensor,
                    pge: torch.nn.Module | None, opt_x: torch.optim.Optimizer,
                    opt_a: torch.optim.Optimizer | None) -> None:
    """Write the run ``state`` (``epoch``, ``elapsed``, ``records``, ``best``) with X', Φ and both optimizers,
    with a content digest, atomically (a failed write leaves the previous checkpoint intact and raises a
    one-line :class:`~magkit.integrity.WriteError`)."""
    from ..integrity import write_safetensors

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
    meta = {"format": FORMAT, "format_version": FORMAT_VERSION, "config": config_key(params),
            "dataset_checksum": graph.checksum(), "epoch": state["epoch"], "elapsed": state["elapsed"],
            "records": state["records"], "optim": opt_meta,
            "best": None if best is None else {"val_acc": best["val_acc"], "epoch": best["epoch"]}}
    write_safetensors(path, tensors, json.loads(json.dumps(meta, default=str)))


def load_checkpoint(path: str | Path, params: Mapping[str, Any], graph, x_syn: Tensor,
                    pge: torch.nn.Module | None, opt_x: torch.optim.Optimizer,
                    opt_a: torch.optim.Optimizer | None) -> dict:
    """Restore X', Φ and both optimizers in place from ``path``; return the run state.

    Raises :class:`~magkit.exceptions.DatasetError` when the file is written with another configuration
    (:func:`config_key`) or for another dataset (checksum), and its subclass
    :class:`~magkit.integrity.IntegrityError` when it is unreadable, truncated, fails its content digest, or
    its tensors do not fit this run. Nothing is restored unless everything fits."""
    from ..integrity import IntegrityError, read_safetensors

    meta, tensors = read_safetensors(path, "magkit condensation checkpoint")
    if meta.get("format") != FORMAT:
        raise DatasetError(f"checkpoint {path}: not a magkit condensation checkpoint")
    if meta.get("format_version") != FORMAT_VERSION:
        raise DatasetError(f"checkpoint {path}: format version {meta.get('format_version')!r}; this magkit reads "
                           f"{FORMAT_VERSION}: delete it and start over")
    if meta.get("config") != config_key(params):
        raise DatasetError(f"checkpoint {path}: written with another configuration ({meta.get('config')}); "
                           f"this run is {config_key(params)}. Delete it or use the same options.")
    if meta.get("dataset_checksum") != graph.checksum():
        raise DatasetError(f"checkpoint {path}: written for another dataset (checksum {meta.get('dataset_checksum')}, "
                           f"this graph {graph.checksum()})")
    try:
        return _restore(meta, tensors, x_syn, pge, opt_x, opt_a)
    except (KeyError, ValueError, TypeError, RuntimeError, IndexError, AttributeError) as exc:
        text = str(exc).splitlines()[0] if str(exc) else ""
        raise IntegrityError(f"checkpoint {path}: does not fit this run ({type(exc).__name__}: {text}); delete it "
                             "and start over") from None


def _restore(meta: dict, tensors: dict[str, Tensor], x_syn: Tensor, pge: torch.nn.Module | None,
             opt_x: torch.optim.Optimizer, opt_a: torch.optim.Optimizer | None) -> dict:
    """Check every piece of a checkpoint against this run, then restore it (all or nothing)."""
    epoch, elapsed, records = meta["epoch"], meta["elapsed"], meta["records"]
    if type(epoch) is not int or epoch < 0:
        raise ValueError(f"epoch {epoch!r}")
    if not isinstance(elapsed, (int, float)) or isinstance(elapsed, bool) or not elapsed >= 0:
        raise ValueError(f"elapsed {elapsed!r}")
    if not isinstance(records, list) or len(records) != epoch or not all(isinstance(r, dict) for r in records):
        raise ValueError("records do not match the epoch")
    _same_shape("x_syn", tensors["x_syn"], x_syn)
    pge_state = {k[4:]: v for k, v in tensors.items() if k.startswith("pge.")}
    if pge is not None:
        want = pge.state_dict()
        if set(pge_state) != set(want):
            raise KeyError(f"pge tensors {sorted(set(pge_state) ^ set(want))[:3]}")
        for k, v in want.items():
            _same_shape(f"pge.{k}", pge_state[k], v)
    elif pge_state:
        raise KeyError("pge tensors in a run without a PGE")
    optim = meta["optim"]
    if not isinstance(optim, dict):
        raise TypeError("optim")
    opt_states = {}
    for name, opt in (("opt_x", opt_x), ("opt_a", opt_a)):
        om = optim.get(name)
        if (opt is None) != (om is None):
            raise KeyError(f"{name} state")
        if opt is None:
            continue
        params = [p for g in opt.param_groups for p in g["params"]]
        st = {}
        for pid, keys in om["keys"].items():
            i = int(pid)
            if not 0 <= i < len(params) or not isinstance(keys, list):
                raise IndexError(f"{name}.{pid}")
            if isinstance(opt, torch.optim.Adam):  # Adam's per-parameter state, nothing less, nothing more
                want = {"step", "exp_avg", "exp_avg_sq"} | ({"max_exp_avg_sq"} if opt.defaults["amsgrad"] else set())
                if set(keys) != want or len(keys) != len(want):
                    raise KeyError(f"{name}.{pid} holds {sorted(map(str, keys))}, Adam needs {sorted(want)}")
            st[i] = {k: tensors[f"{name}.{pid}.{k}"] for k in keys}
            for k, v in st[i].items():
                if k == "step":
                    _same_shape(f"{name}.{pid}.step", v, torch.zeros((), dtype=torch.float32))
                else:
                    _same_shape(f"{name}.{pid}.{k}", v, params[i])
        groups = om["param_groups"]
        # the same configuration gives the same optimizer settings: anything else is a damaged record
        ref = json.loads(json.dumps(opt.state_dict()["param_groups"], default=str))
        if groups != ref:
            raise ValueError(f"{name} settings differ from this run's")
        opt_states[name] = {"state": st, "param_groups": groups}
    best = meta.get("best")
    if best is not None:
        val = best.get("val_acc") if isinstance(best, dict) else None
        if not isinstance(best, dict) or type(best.get("epoch")) is not int or type(val) not in (int, float):
            raise TypeError(f"best {best!r}")
        _same_shape("best.x", tensors["best.x"], x_syn)
        adj = tensors["best.adj"]
        if adj.dim() != 2 or adj.shape[0] != adj.shape[1] or adj.shape[0] != x_syn.shape[0] \
                or adj.dtype != x_syn.dtype:
            raise ValueError(f"best.adj {list(adj.shape)}")
    # everything fits: restore
    with torch.no_grad():
        x_syn.copy_(tensors["x_syn"])
    if pge is not None:
        pge.load_state_dict(pge_state, strict=True)
    for name, opt in (("opt_x", opt_x), ("opt_a", opt_a)):
        if name in opt_states:
            opt.load_state_dict(opt_states[name])
    if best is not None:
        dev = x_syn.device
        best = {**best, "x": tensors["best.x"].to(dev), "adj": tensors["best.adj"].to(dev)}
    return {"epoch": epoch, "records": list(records), "best": best, "elapsed": float(elapsed)}


def _same_shape(name: str, got: Tensor, want: Tensor) -> None:
    if got.shape != want.shape or got.dtype != want.dtype:
        raise ValueError(f"{name} is {got.dtype} {list(got.shape)}, this run has {want.dtype} {list(want.shape)}")
