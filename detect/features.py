"""Window features: SPP-net (pool from one whole-image conv5 map per scale) and its R-CNN
twin (warp every window and run the whole network), behind one interface::

    features, seconds = extractor.extract(image, boxes, layers=("fc7",))

Both implement :class:`WindowExtractor`, so nothing outside this module asks which one it
has: ``image_source(image)`` is the per-image work windows are pooled from (SPP-net: the
conv5 maps of every scale; R-CNN: the image itself), ``pool(source, boxes)`` gives the
pool5 vectors of the distinct windows, ``features_from_source(source, boxes, layers)`` the
requested layers, and ``source_is_cacheable`` says whether the source is worth keeping on
disk between passes (SPP-net's conv5 maps are; R-CNN has nothing to share between
windows). :data:`EXTRACTORS` maps ``features.method`` to the class.

image: RGB uint8 [H, W, 3]; boxes: float32 [N, 4] internal convention; returns
``{layer: float32 [N, D]}`` for each requested layer (``pool5``, ``fc6``, ``fc7``) and the
seconds spent per stage (SPP: ``conv``, ``pool``, ``fc``; R-CNN: ``warp``, ``conv``,
``pool``, ``fc``). Both run the same trunk and the same fc head, so the comparison is
fair by construction; only the way a window becomes a pooled vector differs.

SPP-net (paper, section 4): the image is resized so that its shorter side is each scale
``s`` (the longer side capped at ``max_side``) and the conv layers run once per scale.
With several scales, each window is pooled at the one scale where its scaled area is
closest to ``scale_target_size``^2 (224^2 in the paper). Windows that project onto the
same cells at the same scale give identical vectors: they are pooled and sent through the
fc layers once and scattered back (the official code's dedup).

R-CNN: each window is dilated so that there are ``context_pad`` pixels of context at the
warped size, warped (bilinear, anisotropic; outside the image the normalised value 0, the
mean) to ``crop_size`` x ``crop_size``, batched through the trunk, pooled by the same
pyramid over the whole crop map and the same fc layers.

Device: both run their network layers on ``device`` (``cpu`` by default; ``cuda`` or
``cuda:N`` where torch sees a GPU), moving the trunk and head there (in place). On a GPU,
SPP-net's conv5 maps stay there and are pooled there by the torch twin of the kernel, and
R-CNN warps there (``grid_sample``); resizing and window projection stay on the CPU.
:meth:`WindowExtractor.extract_tensors` leaves the features there (the detector scores
them there: :mod:`detect.device_postprocess`). Stage times synchronise the device, so
they are the real seconds.

Precision: ``precision`` (``features.precision``) is what the fc layers compute in:
float32, or bfloat16 / float16 under ``torch.autocast`` (mixed precision, for GPUs); the
features come back in float32 either way.
"""
from __future__ import annotations

import abc
import contextlib
import time
from dataclasses import dataclass
from typing import Sequence

import cv2
import numpy as np
import torch

from detect.spp import pool_whole_map, project_windows_to_map, spatial_pyramid_pool
from detect.trunks import FCHead, Trunk

__all__ = [
    "ConvMaps",
    "WindowExtractor",
    "EXTRACTORS",
    "SPPFeatures",
    "RCNNFeatures",
    "build_features",
    "compress_head",
    "dilate_windows",
    "warp_windows",
    "warp_windows_torch",
    "scaled_size",
    "resolve_device",
    "intra_op_threads",
    "autocast",
    "PRECISIONS",
    "layer_numerics",
]

LAYERS = ("pool5", "fc6", "fc7")


@dataclass
class ConvMaps:
    """conv5 maps of one image: per scale, the (x, y) resize factors and Tensor[C, H', W']."""

    factors: list[tuple[float, float]]
    maps: list[torch.Tensor]

    def to_arrays(self) -> dict[str, np.ndarray]:
        """float16 arrays for a disk cache (``from_arrays`` is the inverse)."""
        out = {"factors": np.asarray(self.factors, np.float64)}
        for i, m in enumerate(self.maps):
            out[f"map{i}"] = m.cpu().numpy().astype(np.float16, order="C")  # [C, H', W']
        return out

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> "ConvMaps":
        factors = [tuple(f) for f in np.asarray(arrays["factors"]).tolist()]
        # [C, H', W'] views of channels-last memory, as the trunk returns them
        maps = [torch.from_numpy(arrays[f"map{i}"].transpose(1, 2, 0).astype(np.float32)).permute(2, 0, 1)
                for i in range(len(factors))]
        return cls(factors, maps)


def _check_layers(layers: Sequence[str]) -> tuple[str, ...]:
    layers = tuple(layers)
    for layer in layers:
        if layer not in LAYERS:
            raise ValueError(f"unknown feature layer {layer!r} (known: {', '.join(LAYERS)})")
    return layers


def _to_tensor(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None]


@contextlib.contextmanager
def intra_op_threads(count: int):
    """torch's intra-op threads set to ``count`` inside the block (restored after); 0 leaves
    them as they are. What training produces depends on the count (pretraining's batch-norm
    statistics and gradients, fine-tuning's fc gradients are summed in per-thread parts, and
    the sums' rounding differs); inference here does not, beyond the last bits."""
    if count <= 0:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def resolve_device(name) -> torch.device:
    """``cpu``, ``cuda`` or ``cuda:N`` -> torch.device; a clear error when it is not there."""
    from sppcore.errors import UserError

    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise UserError(f"features.device: {name!r} is not a device (cpu, cuda, cuda:N)") from None
    if device.type not in ("cpu", "cuda"):
        raise UserError(f"features.device: {name!r} is not supported (cpu, cuda, cuda:N)")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError(f"features.device: {name!r} asked for, but torch sees no CUDA device here")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise UserError(f"features.device: {name!r}: torch sees {torch.cuda.device_count()} CUDA device(s)")
    return device


def layer_numerics(device) -> dict:
    """What the network layers' outputs depend on where they run, besides their weights,
    inputs and settings: on the CPU the instruction set of torch's kernels
    (sppcore/kernels.py pins it); on a GPU whether cuDNN's convolutions and cuBLAS's float32
    products may use TF32. Part of the key of everything computed from those outputs (the
    conv5 cache, models, detections), so that features computed elsewhere are never served
    as if computed here."""
    device = torch.device(device)
    if device.type == "cpu":
        return {"device": "cpu", "cpu_kernels": str(torch.backends.cpu.get_cpu_capability())}
    return {"device": device.type, "cudnn_tf32": bool(torch.backends.cudnn.allow_tf32),
            "matmul_tf32": bool(torch.backends.cuda.matmul.allow_tf32)}


def _sync(device: torch.device) -> None:
    """Wait for the device's queued work, so that a clock read after it is honest."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


#: ``features.precision`` -> the dtype the fc layers compute in (torch.autocast)
PRECISIONS = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def autocast(device: torch.device, precision: str):
    """The context the fc layers run in: float32 as they are, or ``torch.autocast`` to
    ``precision`` (bfloat16, float16) on ``device``. The conv layers stay in float32
    (on a GPU cuDNN runs them in TF32): SPP-net's whole-image convs ran several times
    slower in bfloat16 and float16 on an H100, and its fc layers are where a GPU's time
    goes (README, "Speed: SPP-net against R-CNN")."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "float32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=PRECISIONS[precision])


def _head_tensors(head: FCHead, pool5: torch.Tensor, layers: Sequence[str], batch_size: int,
                  precision: str = "float32") -> dict[str, torch.Tensor]:
    """Run the fc head once per batch, keeping every requested layer: float32 Tensors on
    the head's device."""
    out = {layer: [] for layer in layers}
    device = next(head.parameters()).device
    with autocast(device, precision):
        for s in range(0, max(1, pool5.shape[0]), batch_size):
            for layer, x in head.forward_layers(pool5[s : s + batch_size].to(device), layers).items():
                out[layer].append(x)
    return {k: torch.cat(v).float() for k, v in out.items()}


def _head_layers(head: FCHead, pool5: torch.Tensor, layers: Sequence[str], batch_size: int,
                 precision: str = "float32") -> dict[str, np.ndarray]:
    """:func:`_head_tensors` as float32 numpy arrays on the host."""
    return {k: v.cpu().numpy() for k, v in _head_tensors(head, pool5, layers, batch_size, precision).items()}


def dilate_windows(boxes: np.ndarray, crop_size: float, context_pad: float) -> np.ndarray:
    """Boxes grown so that, warped to ``crop_size``, the original box fills the central
    ``crop_size - 2 * context_pad`` pixels (R-CNN appendix A)."""
    b = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    grow = context_pad / (crop_size - 2 * context_pad)
    w = b[:, 2] - b[:, 0]
    h = b[:, 3] - b[:, 1]
    return np.stack([b[:, 0] - grow * w, b[:, 1] - grow * h, b[:, 2] + grow * w, b[:, 3] + grow * h], 1)


def warp_windows(image: np.ndarray, boxes: np.ndarray, crop_size: int, context_pad: float,
                 border: tuple[float, float, float]) -> np.ndarray:
    """RGB uint8 image + boxes [B, 4] -> uint8 crops [B, crop, crop, 3].

    Each window is dilated (:func:`dilate_windows`) and warped by one affine map
    (bilinear, anisotropic, sub-pixel exact in the continuous box convention); outside the
    image the ``border`` colour."""
    size = int(crop_size)
    out = np.empty((len(boxes), size, size, 3), dtype=np.uint8)
    for i, (x1, y1, x2, y2) in enumerate(dilate_windows(boxes, size, context_pad).astype(np.float64)):
        sx = size / max(x2 - x1, 1e-6)
        sy = size / max(y2 - y1, 1e-6)
        # continuous x maps to (x - x1) * sx; cv2 indexes pixel centres (the 0.5 shifts)
        m = np.array([[sx, 0.0, -x1 * sx + 0.5 * sx - 0.5], [0.0, sy, -y1 * sy + 0.5 * sy - 0.5]])
        out[i] = cv2.warpAffine(image, m, (size, size), flags=cv2.INTER_LINEAR,
                                borderMode=cv2.BORDER_CONSTANT, borderValue=border)
    return out


def warp_windows_torch(image: torch.Tensor, boxes: np.ndarray, crop_size: int, context_pad: float) -> torch.Tensor:
    """The warp of :func:`warp_windows` on any device: a normalised image Tensor[3, H, W]
    + boxes [B, 4] -> crops Tensor[B, 3, crop, crop] (bilinear ``grid_sample``; outside the
    image 0, the normalised mean colour).

    Crop pixel ``u`` samples the image at continuous ``x1 + (u + 0.5) / sx`` (``x1``, ``sx``
    of the dilated box), as ``warp_windows`` does; the two differ by cv2's fixed-point
    interpolation weights and its uint8 rounding (a few grey levels at sharp edges)."""
    size = int(crop_size)
    _, h, w = image.shape
    d = torch.from_numpy(dilate_windows(boxes, size, context_pad).astype(np.float64)).to(image.device)
    if len(d) == 0:
        return image.new_zeros((0, 3, size, size))
    x1, y1, x2, y2 = d.unbind(1)
    sx = size / (x2 - x1).clamp_min(1e-6)
    sy = size / (y2 - y1).clamp_min(1e-6)
    u = torch.arange(size, dtype=torch.float64, device=image.device) + 0.5
    # grid_sample (align_corners=False) reads continuous coordinate x at 2 x / W - 1
    gx = (2 * (x1[:, None] + u[None] / sx[:, None]) / w - 1).float()  # [B, S]
    gy = (2 * (y1[:, None] + u[None] / sy[:, None]) / h - 1).float()
    b = len(d)
    grid = torch.stack([gx[:, None, :].expand(b, size, size), gy[:, :, None].expand(b, size, size)], dim=-1)
    # one "image" whose grid stacks the crops: no copy of the image per crop
    out = torch.nn.functional.grid_sample(image[None].float(), grid.reshape(1, b * size, size, 2),
                                          mode="bilinear", padding_mode="zeros", align_corners=False)
    return out.reshape(3, b, size, size).permute(1, 0, 2, 3)


def scaled_size(height: int, width: int, shorter: float, max_side: float) -> tuple[int, int]:
    """(height, width) after resizing so that the shorter side is ``shorter``, unless
    that makes the longer side exceed ``max_side`` (then the longer side is ``max_side``)."""
    f = min(shorter / min(height, width), max_side / max(height, width))
    return max(1, round(height * f)), max(1, round(width * f))


class WindowExtractor(abc.ABC):
    """Window features from one image: what SPP-net and R-CNN both implement."""

    #: whether :meth:`image_source` is worth caching on disk (it is shared by every window)
    source_is_cacheable: bool = False
    levels: tuple[int, ...]
    device: torch.device
    #: what the fc layers compute in: float32, bfloat16 or float16 (:func:`autocast`)
    precision: str = "float32"

    @classmethod
    @abc.abstractmethod
    def from_config(cls, f, trunk: Trunk, head: FCHead) -> "WindowExtractor":
        """The extractor of the ``features`` config section ``f``."""

    @abc.abstractmethod
    def image_source(self, image: np.ndarray):
        """The per-image work the windows are pooled from."""

    @abc.abstractmethod
    def pool(self, source, boxes: np.ndarray) -> tuple[torch.Tensor, np.ndarray]:
        """pool5 of the distinct windows and, per box, the row it maps to: (Tensor[U, D], int64 [N])."""

    def features_from_source(self, source, boxes: np.ndarray, layers: Sequence[str] = ("fc7",)) -> dict[str, np.ndarray]:
        """``{layer: float32 [N, D]}`` of ``boxes`` pooled from ``source``."""
        layers = _check_layers(layers)
        with torch.inference_mode():
            pooled, inverse = self.pool(source, boxes)
            unique_feats = _head_layers(self.head, pooled, layers, self.batch_size, self.precision)
        return {k: v[inverse] for k, v in unique_feats.items()}

    @abc.abstractmethod
    def extract_tensors(self, image: np.ndarray, boxes: np.ndarray, layers: Sequence[str] = ("fc7",)):
        """``({layer: float32 Tensor[U, D]}, inverse int64 [N], {stage: seconds})`` for one
        image: the features of the U distinct windows, left on the device, and per box the
        row it maps to."""

    def extract(self, image: np.ndarray, boxes: np.ndarray, layers: Sequence[str] = ("fc7",)):
        """``({layer: float32 [N, D]}, {stage: seconds})`` for one image (on the host; the
        copy counts in ``fc``)."""
        unique_feats, inverse, seconds = self.extract_tensors(image, boxes, layers)
        t0 = time.perf_counter()
        feats = {k: v.cpu().numpy()[inverse] for k, v in unique_feats.items()}
        seconds["fc"] += time.perf_counter() - t0
        return feats, seconds


class SPPFeatures(WindowExtractor):
    """SPP-net window features (see the module docstring)."""

    source_is_cacheable = True

    def __init__(self, trunk: Trunk, head: FCHead, scales: Sequence[int] = (688,), max_side: int = 2000,
                 levels: Sequence[int] = (6, 3, 2, 1), batch_size: int = 1024, scale_target_size: int = 224,
                 device="cpu", precision: str = "float32"):
        self.device = resolve_device(device)
        autocast(self.device, precision)  # checks the name
        self.precision = precision
        self.trunk, self.head = trunk.eval().to(self.device), head.eval().to(self.device)
        self.scales = tuple(int(s) for s in scales)
        self.max_side = int(max_side)
        self.levels = tuple(levels)
        self.batch_size = int(batch_size)
        self.target_area = float(scale_target_size) ** 2
        self._buffer: torch.Tensor | None = None  # pool5 rows, reused image after image

    @classmethod
    def from_config(cls, f, trunk: Trunk, head: FCHead) -> "SPPFeatures":
        return cls(trunk, head, scales=f.scales, max_side=f.max_side, levels=head.levels or (6, 3, 2, 1),
                   batch_size=f.batch_size, scale_target_size=f.scale_target_size, device=f.device,
                   precision=f.precision)

    def image_source(self, image: np.ndarray) -> ConvMaps:
        return self.compute_maps(image)

    def resized_size(self, height: int, width: int, scale: int) -> tuple[int, int]:
        """(height, width) of the image with its shorter side ``scale``, capped at max_side."""
        return scaled_size(height, width, scale, self.max_side)

    def compute_maps(self, image: np.ndarray) -> ConvMaps:
        """conv5 of the image at every scale (one trunk pass per scale)."""
        h, w = image.shape[:2]
        factors, maps = [], []
        with torch.inference_mode():
            for s in self.scales:
                nh, nw = self.resized_size(h, w, s)
                resized = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_LINEAR) if (nh, nw) != (h, w) else image
                x = self.trunk.normalize(_to_tensor(resized).to(self.device))
                # channels-last memory, as the SPP kernel reads it; on a GPU it stays there
                # and is pooled there (spatial_pyramid_pool_torch). Rounded to float16, the
                # precision of the training-time conv5 cache, so that training and testing
                # pool the same values (the rounding keeps the memory format)
                maps.append(self.trunk(x)[0].to(torch.float16).to(torch.float32))
                factors.append((nw / w, nh / h))
        return ConvMaps(factors, maps)

    def choose_scales(self, factors: Sequence[tuple[float, float]], boxes: np.ndarray) -> np.ndarray:
        """Index of the scale whose scaled window area is closest to the target, per box."""
        if len(factors) == 1 or len(boxes) == 0:
            return np.zeros(len(boxes), dtype=np.int64)
        area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
        scaled = area[:, None] * np.array([fx * fy for fx, fy in factors])[None, :]
        return np.abs(scaled - self.target_area).argmin(axis=1)

    def distinct_windows(self, maps: ConvMaps, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The distinct (scale, cx1, cy1, cx2, cy2) the boxes pool from, int64 [U, 5] sorted,
        and per box the row it maps to, int64 [N]: boxes with one row share one feature."""
        boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
        which = self.choose_scales(maps.factors, boxes)
        keys = np.zeros((len(boxes), 5), dtype=np.int64)
        keys[:, 0] = which
        for k, ((fx, fy), fmap) in enumerate(zip(maps.factors, maps.maps)):
            rows = np.flatnonzero(which == k)
            if len(rows):
                scaled = boxes[rows] * np.array([fx, fy, fx, fy], dtype=np.float32)
                keys[rows, 1:] = project_windows_to_map(scaled, self.trunk.stride, self.trunk.offset,
                                                        fmap.shape[1], fmap.shape[2])
        # one integer per row, in the rows' own lexicographic order (mixed radix: each
        # column below its bound), so the scalar unique gives np.unique(keys, axis=0)'s
        # rows and inverse several times faster
        bounds = np.array([len(maps.maps), *([max([m.shape[2] for m in maps.maps] + [1]),
                                               max([m.shape[1] for m in maps.maps] + [1])] * 2)], np.int64)
        code = np.zeros(len(keys), np.int64)
        for col, bound in enumerate(bounds):
            code = code * bound + keys[:, col]
        first, inverse = np.unique(code, return_index=True, return_inverse=True)[1:]
        return keys[first], inverse.reshape(-1)

    def pool(self, maps: ConvMaps, boxes: np.ndarray, reuse_buffer: bool = False) -> tuple[torch.Tensor, np.ndarray]:
        """pool5 of the distinct windows and, per box, the row it maps to:
        (Tensor[U, D], int64 [N]). ``reuse_buffer``: write into this extractor's own
        buffer, reused from call to call (valid until the next such call; saves
        page-faulting ~100 MB per image), for callers that consume the result at once."""
        unique, inverse = self.distinct_windows(maps, boxes)
        device = maps.maps[0].device if maps.maps else torch.device("cpu")
        dim = self.head.in_dim
        if reuse_buffer:
            need = len(unique) * dim
            if self._buffer is None or self._buffer.numel() < need or self._buffer.device != device:
                self._buffer = torch.empty(need, device=device)
            out = self._buffer[:need].view(len(unique), dim)
        else:
            out = torch.empty((len(unique), dim), device=device)
        for k, fmap in enumerate(maps.maps):
            rows = np.flatnonzero(unique[:, 0] == k)
            if len(rows):
                # the keys are sorted by scale first, so each scale's rows are one block
                spatial_pyramid_pool(fmap, unique[rows, 1:], self.levels, out=out[rows[0] : rows[-1] + 1])
        return out, inverse

    def features_from_source(self, source: ConvMaps, boxes: np.ndarray, layers: Sequence[str] = ("fc7",)) -> dict[str, np.ndarray]:
        layers = _check_layers(layers)
        with torch.inference_mode():
            pooled, inverse = self.pool(source, boxes, reuse_buffer=True)
            unique_feats = _head_layers(self.head, pooled, layers, self.batch_size, self.precision)
        return {k: v[inverse] for k, v in unique_feats.items()}

    features_from_maps = features_from_source

    def extract_tensors(self, image: np.ndarray, boxes: np.ndarray, layers: Sequence[str] = ("fc7",)):
        layers = _check_layers(layers)
        t0 = time.perf_counter()
        maps = self.compute_maps(image)
        _sync(self.device)
        t1 = time.perf_counter()
        with torch.inference_mode():
            pooled, inverse = self.pool(maps, boxes, reuse_buffer=True)
            _sync(self.device)
            t2 = time.perf_counter()
            # new tensors (pool5 too): the reused buffer is free for the next image
            unique_feats = _head_tensors(self.head, pooled, layers, self.batch_size, self.precision)
            _sync(self.device)
        return unique_feats, inverse, {"conv": t1 - t0, "pool": t2 - t1, "fc": time.perf_counter() - t2}


class RCNNFeatures(WindowExtractor):
    """R-CNN window features on the same trunk and head (see the module docstring).

    Crops go through the conv layers ``crop_batch_size`` at a time (small batches keep
    the activations in reused memory, which is faster on a CPU than large ones); their
    pool5 vectors are then sent through the fc layers ``batch_size`` at a time exactly as
    SPP-net's are, so the two differ only in how a window becomes a pool5 vector.

    ``warp``: ``cv2`` (:func:`warp_windows`, one ``warpAffine`` per window on the CPU),
    ``torch`` (:func:`warp_windows_torch`, batched on the device) or ``auto`` (torch on a
    GPU, cv2 on the CPU, where it is the faster)."""

    def __init__(self, trunk: Trunk, head: FCHead, crop_size: int = 227, context_pad: int = 16,
                 levels: Sequence[int] = (6, 3, 2, 1), batch_size: int = 1024, crop_batch_size: int = 32,
                 device="cpu", warp: str = "auto", precision: str = "float32"):
        if crop_size <= 2 * context_pad:
            raise ValueError(f"crop_size {crop_size} leaves no room inside {context_pad} px of context")
        if warp not in ("auto", "cv2", "torch"):
            raise ValueError(f"warp must be auto, cv2 or torch, got {warp!r}")
        self.device = resolve_device(device)
        autocast(self.device, precision)  # checks the name
        self.precision = precision
        self.warp_backend = ("torch" if self.device.type == "cuda" else "cv2") if warp == "auto" else warp
        self.trunk, self.head = trunk.eval().to(self.device), head.eval().to(self.device)
        self.crop_size = int(crop_size)
        self.context_pad = int(context_pad)
        self.levels = tuple(levels)
        self.batch_size = int(batch_size)
        self.crop_batch_size = int(crop_batch_size)

    @classmethod
    def from_config(cls, f, trunk: Trunk, head: FCHead) -> "RCNNFeatures":
        return cls(trunk, head, crop_size=f.rcnn_crop_size, context_pad=f.rcnn_context_pad,
                   levels=head.levels or (6, 3, 2, 1),
                   batch_size=f.batch_size, crop_batch_size=f.rcnn_crop_batch_size, device=f.device,
                   precision=f.precision)

    def image_source(self, image: np.ndarray) -> np.ndarray:
        return image

    def dilate(self, boxes: np.ndarray) -> np.ndarray:
        return dilate_windows(boxes, self.crop_size, self.context_pad)

    def warp(self, image: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        """uint8 crops [B, crop, crop, 3]; outside the image the trunk's mean colour,
        which normalises to 0."""
        border = tuple(float(v) for v in self.trunk.pixel_mean.flatten().tolist())
        return warp_windows(image, boxes, self.crop_size, self.context_pad, border)

    def pool(self, image: np.ndarray, boxes: np.ndarray, seconds: dict | None = None) -> tuple[torch.Tensor, np.ndarray]:
        """pool5 of the distinct windows (on the device) and, per box, the row it maps to:
        (Tensor[U, D], int64 [N]), as :meth:`SPPFeatures.pool` gives them. Adds the
        seconds spent warping, in conv and in pooling to ``seconds`` when given."""
        boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
        unique, inverse = np.unique(boxes, axis=0, return_inverse=True)
        inverse = inverse.reshape(-1)
        seconds = seconds if seconds is not None else {}
        for stage in ("warp", "conv", "pool"):
            seconds.setdefault(stage, 0.0)
        image = np.ascontiguousarray(image)
        pooled = torch.empty((len(unique), self.head.in_dim), device=self.device)
        with torch.inference_mode():
            if self.warp_backend == "torch":
                t0 = time.perf_counter()
                normalized = self.trunk.normalize(_to_tensor(image).to(self.device))[0]
                _sync(self.device)
                seconds["warp"] += time.perf_counter() - t0
            for s in range(0, len(unique), self.crop_batch_size):
                t0 = time.perf_counter()
                batch = unique[s : s + self.crop_batch_size]
                if self.warp_backend == "torch":
                    crops = warp_windows_torch(normalized, batch, self.crop_size, self.context_pad)
                else:
                    crops = self.warp(image, batch)
                    crops = self.trunk.normalize(torch.from_numpy(crops).to(self.device).permute(0, 3, 1, 2))
                _sync(self.device)
                t1 = time.perf_counter()
                conv5 = self.trunk(crops, inputs="crop")
                _sync(self.device)
                t2 = time.perf_counter()
                pooled[s : s + len(crops)] = pool_whole_map(conv5, self.levels)
                _sync(self.device)
                t3 = time.perf_counter()
                seconds["warp"] += t1 - t0
                seconds["conv"] += t2 - t1
                seconds["pool"] += t3 - t2
        return pooled, inverse

    def extract_tensors(self, image: np.ndarray, boxes: np.ndarray, layers: Sequence[str] = ("fc7",)):
        layers = _check_layers(layers)
        seconds = {"warp": 0.0, "conv": 0.0, "pool": 0.0, "fc": 0.0}
        pooled, inverse = self.pool(image, boxes, seconds)
        t0 = time.perf_counter()
        with torch.inference_mode():
            unique_feats = _head_tensors(self.head, pooled, layers, self.batch_size, self.precision)
            _sync(self.device)
        seconds["fc"] = time.perf_counter() - t0
        return unique_feats, inverse, seconds


def compress_head(head: FCHead, rank: int) -> FCHead:
    """Truncated-SVD fc6 and fc7 (Fast R-CNN, section 3.1): each ``W`` [out, in] becomes
    ``U_r diag(S_r)`` after ``V_r^T``, two thinner layers with ``r (in + out)`` weights
    instead of ``in * out``. Returns a new head; the original is unchanged."""
    import copy

    from torch import nn

    new = copy.deepcopy(head)
    for name in ("fc6", "fc7"):
        layer = getattr(head, name)
        weight = layer.weight.detach().float()
        r = min(rank, *weight.shape)
        if 4 * r < min(weight.shape):
            # randomized range finder (Halko et al.): the top r singular triplets of a
            # 4096 x 12800 matrix in seconds, where a full SVD takes minutes on a CPU
            gen_state = torch.random.get_rng_state()
            torch.manual_seed(0)
            u, s, v = torch.svd_lowrank(weight, q=min(r + 32, min(weight.shape)), niter=6)
            torch.random.set_rng_state(gen_state)
            vh = v.T
        else:
            u, s, vh = torch.linalg.svd(weight, full_matrices=False)
        first = nn.Linear(layer.in_features, r, bias=False)
        second = nn.Linear(r, layer.out_features, bias=True)
        with torch.no_grad():
            first.weight.copy_(vh[:r])
            second.weight.copy_(u[:, :r] * s[:r])
            second.bias.copy_(layer.bias.detach())
        setattr(new, name, nn.Sequential(first, second))
    return new.eval()


#: ``features.method`` -> extractor class: a new method is one class and one line here
EXTRACTORS: dict[str, type[WindowExtractor]] = {"spp": SPPFeatures, "rcnn": RCNNFeatures}


def build_features(cfg, trunk: Trunk, head: FCHead) -> WindowExtractor:
    """The extractor of ``cfg.features.method`` (:data:`EXTRACTORS`)."""
    f = cfg.features
    if f.fc_svd_rank > 0:
        head = compress_head(head, f.fc_svd_rank)
    if f.method not in EXTRACTORS:
        from sppcore.errors import UserError

        raise UserError(f"features.method: unknown method {f.method!r} (known: {', '.join(EXTRACTORS)})")
    return EXTRACTORS[f.method].from_config(f, trunk, head)
