"""The exceptions magkit raises on bad input. Every one names what is wrong and what is allowed."""

from __future__ import annotations


class MagkitError(Exception):
    """Base class of every error magkit raises on purpose."""


class DatasetError(MagkitError):
    """A dataset is missing, truncated, corrupted or in an unexpected format."""


class GraphValidationError(MagkitError, ValueError):
    """A multimodal graph breaks an invariant.

    Attributes
    ----------
    field: the attribute of the graph at fault (``"x_text"``, ``"edge_index"``, ``"train_mask"``, ...).
    value: the offending value (shortened), or ``None``.
    allowed: what would have been accepted.
    """

    def __init__(self, field: str, message: str, value: object = None, allowed: str | None = None):
        self.field = field
        self.value = value
        self.allowed = allowed
        text = f"{field}: {message}"
        if value is not None:
            text += f" (got {value})"
        if allowed:
            text += f"; allowed: {allowed}"
        super().__init__(text)


class ConfigError(MagkitError, ValueError):
    """An argument or configuration value is out of its allowed range."""


class NotFittedError(MagkitError, AttributeError):
    """An estimator was used before ``fit``."""


class MissingDependencyError(MagkitError, ImportError):
    """An optional dependency is not installed; the message gives the install line."""


def require(module: str, extra: str, package: str | None = None):
    """Import an optional dependency or raise :class:`MissingDependencyError` with the install line."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:  # pragma: no cover - depends on the environment
        pkg = package or module
        raise MissingDependencyError(
            f"{pkg} is needed for this feature but is not installed; "
            f'install it with: pip install -e ".[{extra}]"'
        ) from exc


class StorageError(MagkitError):
    """Writing to disk failed (no space left, permissions, ...); what was there before is unchanged."""


class LockedError(MagkitError):
    """Another running process holds the lock of a resource (a sweep shard, ...); the message names it."""
