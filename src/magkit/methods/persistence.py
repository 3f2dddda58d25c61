"""Writing a fitted node classifier to one file and reading it back (same predictions, bitwise, on the same graph).

File format (``format_version`` :data:`SAVE_VERSION`): one safetensors file (conventionally
``*.safetensors``) holding the network's ``state_dict`` as tensors ``model.<name>`` and any fitted tensor
(e.g. GraphMNL's per-node diagnostics) as ``fitted.<k>``. The safetensors header's ``"magkit"`` metadata is a
JSON object::

    {"format": "magkit.estimator", "format_version": 2,
     "method": "gcn-early",                  # the registered name: the class comes from the registry only
     "params": {...},                        # get_params(), tuples tagged {"__tuple__": [...]}
     "shape": {"modalities": [...], "modality_dims": {...}, "num_classes": C, "num_nodes": N,
               "class_names": [...] | null}, # what the network is rebuilt from (NetShape)
     "state": {...},                         # fitted non-tensor state: history_, branches_, diagnostics_, ...
     "dataset": {"name": ..., "checksum": ...},
     "versions": {"magkit": ..., "torch": ..., ...},
     "meta": {...}}                          # the caller's record (magkit fit --save-model: dataset, split, seed)

and ``"magkit.sha256"`` the content digest of that JSON and every tensor (:mod:`magkit.integrity`).

Loading parses JSON and tensor bytes only: it checks the digest, resolves the class through
:func:`magkit.methods.registry.get_method` (never an import of a name found in the file), checks the
parameters as ``fit`` does, rebuilds the network from the recorded shape with ``_build`` and loads the weights
with ``load_state_dict(strict=True)`` after checking every name, shape and dtype. Model files of earlier
magkit versions (pickles written by ``torch.save``) are refused without being unpickled.
"""

from __future__ import annotations

import logging
import math
import numbers
import os
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..exceptions import ConfigError, MagkitError
from ..integrity import IntegrityError, is_pickle, read_safetensors, write_safetensors

log = logging.getLogger(__name__)

#: the ``format`` of files written by :func:`save_estimator`
SAVE_FORMAT = "magkit.estimator"
#: the format version written and read (1 was a pickle, refused)
SAVE_VERSION = 2
#: fitted attributes not stored in the ``state`` record (the network, the device, the shape and data records)
_SPECIAL = ("model_", "device_", "net_shape_", "dataset_", "saved_meta_")


# ---------------------------------------------------------------------------------------------- JSON encoding
def _encode(value: Any, tensors: dict[str, Tensor], where: str) -> Any:
    """The JSON form of a fitted value; tensors (and arrays) go to ``tensors`` and are referenced by name."""
    from ..train.loop import History

    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        v = float(value)
        return v if math.isfinite(v) else {"__float__": repr(v)}
    if isinstance(value, Tensor):
        key = f"fitted.{len([k for k in tensors if k.startswith('fitted.')])}"
        tensors[key] = value.detach().cpu().contiguous().clone()
        return {"__tensor__": key}
    if isinstance(value, np.ndarray):
        return {"__ndarray__": _encode(torch.from_numpy(np.ascontiguousarray(value)), tensors, where)["__tensor__"]}
    if isinstance(value, tuple):
        return {"__tuple__": [_encode(v, tensors, f"{where}[{i}]") for i, v in enumerate(value)]}
    if isinstance(value, list):
        return [_encode(v, tensors, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, dict):
        if all(isinstance(k, str) and not k.startswith("__") for k in value):
            return {k: _encode(v, tensors, f"{where}.{k}") for k, v in sorted(value.items())}  # as JSON holds it
        return {"__items__": [[_encode(k, tensors, where), _encode(v, tensors, f"{where}[{k!r}]")]
                              for k, v in value.items()]}
    if isinstance(value, History):
        return {"__history__": _encode(asdict(value), tensors, where)}
    raise ConfigError(f"save: fitted attribute {where} holds a {type(value).__name__}, which an estimator file "
                      "cannot hold; allowed: numbers, strings, lists, tuples, dicts, tensors, arrays, History")


def _decode(value: Any, tensors: dict[str, Tensor], used: set[str]) -> Any:
    """The inverse of :func:`_encode` (a ``ValueError`` for a malformed record)."""
    from ..train.loop import History

    if value is None or isinstance(value, (bool, str, int, float)):
        return value
    if isinstance(value, list):
        return [_decode(v, tensors, used) for v in value]
    if not isinstance(value, dict):
        raise ValueError(f"unexpected JSON value {value!r}")
    if len(value) == 1:
        (tag, inner), = value.items()
        if tag in ("__tensor__", "__ndarray__"):
            if not isinstance(inner, str) or inner not in tensors or not inner.startswith("fitted."):
                raise ValueError(f"reference to a missing tensor {inner!r}")
            used.add(inner)
            t = tensors[inner]
            return t.numpy() if tag == "__ndarray__" else t
        if tag == "__float__":
            if inner not in ("nan", "inf", "-inf"):
                raise ValueError(f"__float__: {inner!r}")
            return float(inner)
        if tag == "__tuple__":
            if not isinstance(inner, list):
                raise ValueError("__tuple__ must hold a list")
            return tuple(_decode(v, tensors, used) for v in inner)
        if tag == "__items__":
            if not isinstance(inner, list) or not all(isinstance(p, list) and len(p) == 2 for p in inner):
                raise ValueError("__items__ must hold [key, value] pairs")
            out = {}
            for k, v in inner:
                k = _decode(k, tensors, used)
                if isinstance(k, (list, dict, Tensor, np.ndarray)):
                    raise ValueError(f"unhashable key {k!r}")
                out[k] = _decode(v, tensors, used)
            return out
        if tag == "__history__":
            d = _decode(inner, tensors, used)
            names = {f.name for f in fields(History)}
            if not isinstance(d, dict) or not set(d) <= names or not isinstance(d.get("epochs", []), list):
                raise ValueError("__history__: not a History record")
            return History(**d)
    if any(k.startswith("__") for k in value):
        raise ValueError(f"unknown tag in {sorted(value)[:3]}")
    return {k: _decode(v, tensors, used) for k, v in value.items()}


# ---------------------------------------------------------------------------------------------- save
def _registered_name(est: Any) -> str:
    """The registry name of ``est``: its own, or the one whose class and fixed parameters it matches."""
    from .registry import REGISTRY

    if est.name and est.name in REGISTRY and REGISTRY.get(est.name).cls is type(est):
        return est.name
    params = est.get_params()
    for spec in REGISTRY.specs():
        if spec.cls is type(est) and all(params.get(k) == v for k, v in spec.fixed.items()):
            return spec.name
    raise ConfigError(f"save: {type(est).__name__} is not a registered method; allowed: an estimator of a registered "
                      "name (magkit.methods.registry.register) so that it can be rebuilt on load")


def save_estimator(est: Any, path: str | os.PathLike, meta: dict | None = None) -> Path:
    """Write the fitted estimator ``est`` to ``path`` (see the module docstring) and return the path.

    The file is written to a temporary name in the target folder (created), ``fsync``-ed and renamed: a failure
    (a full disk included) leaves no temporary file and the previous file intact, and raises a one-line
    :class:`~magkit.integrity.WriteError`.

    Args:
        est: a fitted :class:`~magkit.methods.base.NodeClassifier`.
        path: the file to write (conventionally ``*.safetensors``).
        meta: any JSON-like record to keep beside it (``magkit fit --save-model`` keeps the dataset, split and
            seed); read back as ``saved_meta_``. (default: the loaded estimator's ``saved_meta_`` or :obj:`{}`)
    """
    from ..eval.results import environment

    est._check_fitted()
    name = _registered_name(est)
    tensors: dict[str, Tensor] = {}
    for key, value in est.model_.state_dict().items():
        tensors[f"model.{key}"] = value.detach().cpu().contiguous().clone()
    skip = set(est.get_params()) | {"name"}
    state = {k: _encode(v, tensors, k) for k, v in sorted(vars(est).items())
             if k.endswith("_") and not k.startswith("_") and k not in skip and k not in _SPECIAL}
    shape = est.__dict__.get("net_shape_")
    if shape is None:
        raise ConfigError(f"save: {type(est).__name__} was fitted without a recorded network shape; re-fit it")
    if meta is None:
        meta = est.__dict__.get("saved_meta_", {})
    record = {
        "format": SAVE_FORMAT, "format_version": SAVE_VERSION, "method": name, "class": type(est).__name__,
        "params": _encode(est.get_params(), {}, "params"), "shape": shape.to_json(), "state": state,
        "dataset": _encode(est.__dict__.get("dataset_", {}), {}, "dataset"), "versions": environment(),
        "meta": _encode(dict(meta), {}, "meta"),
    }
    return write_safetensors(path, tensors, record)


# ---------------------------------------------------------------------------------------------- load
def _pickle_refusal(path: Path) -> ConfigError:
    return ConfigError(f"{path}: a pickle-era magkit model file (torch.save); magkit never unpickles model files, "
                       "since unpickling can run code: re-fit the model, or load it with magkit<0.2 in a trusted "
                       "environment and re-save it")


def load_estimator(path: str | os.PathLike, map_location: str = "cpu"):
    """Read an estimator written by :func:`save_estimator`; its model is put on ``map_location`` (default cpu,
    whatever device it was fitted on). Executes no code from the file.

    Raises:
        ConfigError: the file does not exist, is a pickle (a model file of an earlier magkit), is not a magkit
            estimator, names an unregistered method or holds parameters the method refuses.
        IntegrityError: the file is truncated or corrupted, fails its content digest, or its weights do not fit
            the network its record describes.
    """
    from .. import __version__
    from .registry import REGISTRY, get_method

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"model file {str(path)!r} does not exist")
    if is_pickle(path):
        raise _pickle_refusal(path)
    try:
        record, tensors = read_safetensors(path, "magkit estimator file")
    except IntegrityError as exc:
        if "no 'magkit' metadata" in str(exc):
            raise ConfigError(f"{str(path)!r} is not a magkit estimator file (written by NodeClassifier.save)") from None
        raise
    if record.get("format") != SAVE_FORMAT:
        raise ConfigError(f"{str(path)!r} is not a magkit estimator file (written by NodeClassifier.save)")
    version = record.get("format_version")
    if version != SAVE_VERSION:
        raise ConfigError(f"{path}: estimator format version {version!r}; this magkit ({__version__}) reads "
                          f"{SAVE_VERSION}: re-fit the model or use the magkit that wrote it")
    versions = record.get("versions") if isinstance(record.get("versions"), dict) else {}
    if versions.get("magkit") != __version__:
        log.warning("%s was written by magkit %s, this is %s: predictions may differ", path.name,
                    versions.get("magkit"), __version__)
    method = record.get("method")
    if not isinstance(method, str):
        raise IntegrityError(f"{path}: metadata field 'method' is invalid (got {method!r}); allowed: a method name")
    spec = get_method(method)
    used: set[str] = set()
    try:
        params = _decode(record.get("params"), {}, used)
        state = _decode(record.get("state"), tensors, used)
        meta = _decode(record.get("meta", {}), {}, used)
        dataset = _decode(record.get("dataset", {}), {}, used)
        from .shape import NetShape

        shape = NetShape.from_json(record.get("shape"))
    except (ValueError, TypeError) as exc:
        raise IntegrityError(f"{path}: malformed estimator record ({exc})") from None
    if not isinstance(params, dict) or not isinstance(state, dict) or not isinstance(meta, dict):
        raise IntegrityError(f"{path}: malformed estimator record (params, state and meta must be objects)")
    for key, value in spec.fixed.items():
        if params.get(key) != value:
            raise IntegrityError(f"{path}: parameter {key}={params.get(key)!r} contradicts method {method!r} "
                                 f"(which fixes {key}={value!r})")
    est = REGISTRY.create(method, **{k: v for k, v in params.items() if k not in spec.fixed})
    est.check_params()
    try:
        # built on the meta device: no memory for initial values that are overwritten, no draw from the caller's
        # RNG, and a record claiming huge sizes allocates nothing before its weights are compared with it
        with torch.device("meta"):
            model = est._build(shape)
        _load_weights(path, model, tensors)
    except IntegrityError:
        raise
    except MagkitError as exc:
        raise IntegrityError(f"{path}: the recorded network does not rebuild ({exc})") from None
    except (RuntimeError, ValueError, TypeError, KeyError, IndexError, OverflowError, MemoryError) as exc:
        raise IntegrityError(f"{path}: the recorded network does not rebuild ({type(exc).__name__}: "
                             f"{str(exc).splitlines()[0] if str(exc) else ''})") from None
    unused = sorted(k for k in tensors if k.startswith("fitted.") and k not in used)
    stray = sorted(k for k in tensors if not k.startswith(("fitted.", "model.")))
    if unused or stray:
        raise IntegrityError(f"{path}: tensors {(unused + stray)[:3]} are not referenced by the record")
    bad = [k for k in state if not (isinstance(k, str) and k.endswith("_") and not k.startswith("_"))
           or k in _SPECIAL or k in params]
    if bad:
        raise IntegrityError(f"{path}: fitted state {bad[:3]} is not fitted state; allowed: names ending in '_'")
    device = torch.device(map_location)
    vars(est).update(state)
    est.model_ = model.to(device).eval()
    est.device_ = device
    est.net_shape_ = shape
    est.num_classes_ = shape.num_classes
    est.modalities_ = shape.modalities
    est.modality_dims_ = dict(shape.modality_dims)
    est.dataset_ = dataset
    est.saved_meta_ = meta
    return est


def _load_weights(path: Path, model: torch.nn.Module, tensors: dict[str, Tensor]) -> None:
    """``load_state_dict(strict=True)`` after checking every name, shape and dtype (no silent cast)."""
    want = model.state_dict()
    got = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
    missing, extra = sorted(set(want) - set(got)), sorted(set(got) - set(want))
    if missing or extra:
        raise IntegrityError(f"{path}: the weights do not fit the recorded network (missing {missing[:3]}, "
                             f"unexpected {extra[:3]})")
    for k, w in want.items():
        g = got[k]
        if g.dtype != w.dtype or g.shape != w.shape:
            raise IntegrityError(f"{path}: weight {k!r} is {g.dtype} {list(g.shape)}; the recorded network needs "
                                 f"{w.dtype} {list(w.shape)}")
    model.load_state_dict(got, strict=True, assign=True)
    left = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if left:
        raise IntegrityError(f"{path}: the recorded network has state outside its weights ({left[:3]})")
