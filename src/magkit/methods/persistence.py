"""Writing a fitted node classifier to one file and reading it back (same predictions, bitwise, on the same graph).

:func:`save_estimator` (also :meth:`NodeClassifier.save <magkit.methods.base.NodeClassifier.save>`) writes the
parameters, the fitted state (the attributes ending in ``_``: ``model_``, ``history_``, ``diagnostics_``, ...) and
what the estimator was fitted on (method, modalities, magkit and torch versions) in torch's format;
:func:`load_estimator` reads it back. ``magkit fit --save-model`` and ``magkit predict`` use them.
"""

from __future__ import annotations

import importlib
import os
import warnings
from pathlib import Path
from typing import Any

import torch

from ..base import param_defaults
from ..exceptions import ConfigError

#: the header of files written by :func:`save_estimator`
SAVE_FORMAT = "magkit-estimator"
SAVE_VERSION = 1


def save_estimator(est: Any, path: str | os.PathLike, meta: dict | None = None) -> Path:
    """Write the fitted estimator ``est`` to ``path`` (the parent folder is created; written to a temporary file
    and renamed) and return the path.

    Args:
        est: a fitted :class:`~magkit.methods.base.NodeClassifier`.
        path: the file to write.
        meta: any JSON-like record to keep beside it (``magkit fit --save-model`` keeps the dataset, split and
            seed); read back as ``saved_meta_``. (default: :obj:`None`)
    """
    est._check_fitted()
    from .. import __version__

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    cls = type(est)
    params = est.get_params()
    payload = {
        "format": SAVE_FORMAT, "format_version": SAVE_VERSION, "magkit_version": __version__,
        "torch_version": torch.__version__, "method": est.name or cls.__name__,
        "class": f"{cls.__module__}:{cls.__qualname__}", "params": params, "modalities": list(est.modalities_),
        "meta": dict(meta or {}),
        # fitted state only: parameters are stored above, training-time state (a leading "_") is left out
        "state": {k: v for k, v in vars(est).items() if k not in params and k != "name" and not k.startswith("_")},
    }
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)
    return path


def load_estimator(path: str | os.PathLike, map_location: str = "cpu"):
    """Read an estimator written by :func:`save_estimator`; its model is put on ``map_location`` (default cpu,
    whatever device it was fitted on). The file is unpickled: load only files you trust (as with any pickle).
    Raises :class:`~magkit.exceptions.ConfigError` for a missing file or one that is not a magkit estimator."""
    from .. import __version__

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"model file {str(path)!r} does not exist")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as exc:  # not a torch file at all
        raise ConfigError(f"{str(path)!r} is not a magkit estimator file ({type(exc).__name__}: {exc})") from exc
    if not isinstance(payload, dict) or payload.get("format") != SAVE_FORMAT:
        raise ConfigError(f"{str(path)!r} is not a magkit estimator file (written by NodeClassifier.save)")
    if payload.get("format_version", 0) > SAVE_VERSION:
        raise ConfigError(f"{str(path)!r} has format version {payload['format_version']}; this magkit "
                          f"({__version__}) reads up to {SAVE_VERSION}: upgrade magkit")
    if payload.get("magkit_version") != __version__:
        warnings.warn(f"{path.name} was written by magkit {payload.get('magkit_version')}, this is {__version__}: "
                      "predictions may differ", stacklevel=2)
    module, _, qual = payload["class"].partition(":")
    cls = getattr(importlib.import_module(module), qual)
    est = cls.__new__(cls)
    defaults = param_defaults(cls)
    vars(est).update({**defaults, **{k: v for k, v in payload["params"].items() if k in defaults}})
    est.name = payload.get("method") or cls.__name__
    est.saved_meta_ = dict(payload.get("meta") or {})
    vars(est).update(payload["state"])
    device = torch.device(map_location)
    est.device_ = device
    est.model_.to(device)
    return est
