"""Shape and label checks shared by the functional modules (private)."""

from __future__ import annotations

from torch import Tensor

from magkit.exceptions import ConfigError


def _check_shape(name: str, t: Tensor, shape: tuple) -> None:
    if tuple(t.shape) != tuple(shape):
        raise ConfigError(f"{name}: expected shape {tuple(shape)}, got {tuple(t.shape)}")


def _check_logits(name: str, logits: Tensor, needs: str) -> tuple[int, int]:
    """[n, C] logits with C ≥ 2 (``needs`` names the loss in the error); returns (n, C)."""
    if logits.dim() != 2:
        raise ConfigError(f"{name}: expected a [n, C] tensor, got shape {tuple(logits.shape)}")
    n, c = logits.shape
    if c < 2:
        raise ConfigError(f"{name}: {needs} needs at least 2 classes, got C = {c}")
    return n, c


def _check_targets(target: Tensor, labelled: Tensor, num_classes: int) -> None:
    """Labelled nodes must carry a class id in [0, C); unlabelled ones may carry anything (−1 by convention)."""
    t = target[labelled]
    if t.numel() and (int(t.min()) < 0 or int(t.max()) >= num_classes):
        raise ConfigError(
            f"target: labelled nodes need class ids in [0, {num_classes - 1}], "
            f"got values in [{int(t.min())}, {int(t.max())}]"
        )
