"""Pretraining a trunk as the paper's classification half does (SPP-net, sections 2.3, 3.1).

The network is the detector's own: trunk -> spatial pyramid pooling of the whole crop ->
fc6 -> fc7 -> a (K + 1)-way fc8. Training examples are crops of one VOC-layout image set:
every object (its box jittered by up to ``jitter`` of its size, dilated by R-CNN's context
(16 px at 227, in proportion), randomly mirrored) labelled with its
class, and background windows (IoU < 0.3 with every object, half of them near objects:
IoU in [0.1, 0.3)) labelled 0. Fresh crops are drawn every epoch.

Multi-size training (section 2.3): the pyramid makes the fc input independent of the crop
size, so the same weights can be trained at several input sizes; epochs alternate between
the sizes in ``sizes`` (224 and 180 in the paper; scaled to the compact trunk here).
Section 3.1.3's experiment in miniature compares single-size with multi-size training by
accuracy on a held-out image set.

Whole-image epochs (``image_scales``): a network that has only seen warped crops pools
poorly from a whole-image conv5 map, where a window keeps its aspect ratio, spans any
number of cells and is surrounded by real clutter instead of padding (on the built-in
data, fc8 accuracy on ground-truth boxes was 0.30 through SPP against 0.87 through warped
crops). With ``image_scales = (lo, hi)``, every other epoch instead resizes each training
image so that its shorter side is uniform in [lo, hi], runs the trunk once, and pools
every window (two jittered copies of each object, background windows) from the map by
the detection-time rule: the same objects and backgrounds, presented as SPP-net's
detector will see them. Epochs then alternate crop, image, crop, image, ...
Batch-norm layers keep separate running statistics for crops and whole images
(:class:`detect.trunks.PerInputBatchNorm2d`), so R-CNN (crops) and SPP-net (whole images)
each normalise with the statistics of their own input.
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field

import cv2
import numpy as np
import torch
from tqdm import tqdm

from detect.features import resolve_device, scaled_size, warp_windows
from detect.spp import pool_whole_map, project_windows_to_map
from detect.trunks import FCHead, Trunk
from sppcore.faults import kill_point
from sppcore.matcher import BACKGROUND, pretrain_background_matcher

__all__ = ["CropSampler", "PretrainResult", "pretrain", "evaluate_accuracy", "evaluate_image_accuracy"]

log = logging.getLogger(__name__)

BACKGROUND_IOU = 0.3  # a background crop overlaps no object more than this
NEAR_BACKGROUND_IOU = 0.1  # "near" background: IoU in [0.1, 0.3) with some object


class CropSampler:
    """Draws labelled crops (uint8 [B, S, S, 3], labels 0..K with 0 = background) from the
    images of a dataset, deterministically for a given ``numpy.random.Generator``."""

    def __init__(self, dataset, jitter: float = 0.1, context_fraction: float = 16 / 227, background_per_image: int = 4,
                 min_background_side: int = 16):
        self.dataset = dataset
        self.images = [dataset.load_image(i) for i in dataset.image_ids]
        self.annotations = [dataset.annotation(i) for i in dataset.image_ids]
        self.jitter = jitter
        self.context_fraction = context_fraction
        self.background_per_image = background_per_image
        self.min_background_side = min_background_side

    def _background(self, rng, ann, count: int) -> np.ndarray:
        h, w = ann.height, ann.width
        anywhere = pretrain_background_matcher(BACKGROUND_IOU)
        near_object = pretrain_background_matcher(BACKGROUND_IOU, NEAR_BACKGROUND_IOU)
        out = []
        for _ in range(40 * count):
            if len(out) >= count:
                break
            side = float(np.exp(rng.uniform(np.log(self.min_background_side), np.log(0.8 * min(h, w)))))
            aspect = float(np.exp(rng.uniform(np.log(0.5), np.log(2.0))))
            bw, bh = side * math.sqrt(aspect), side / math.sqrt(aspect)
            x, y = rng.uniform(0, max(1.0, w - bw)), rng.uniform(0, max(1.0, h - bh))
            box = np.array([[x, y, min(w, x + bw), min(h, y + bh)]], np.float32)
            matcher = near_object if len(out) % 2 == 0 else anywhere  # alternate the two kinds
            if matcher.match_boxes(box, ann.boxes).labels[0] == BACKGROUND:
                out.append(box[0])
        return np.asarray(out, np.float32).reshape(-1, 4)

    def _jitter(self, rng, boxes: np.ndarray) -> np.ndarray:
        boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
        if len(boxes) == 0:
            return boxes
        wh = boxes[:, 2:] - boxes[:, :2]
        shift = rng.uniform(-self.jitter, self.jitter, (len(boxes), 2)) * wh
        scale = np.exp(rng.uniform(-self.jitter, self.jitter, (len(boxes), 2)))
        centre = (boxes[:, :2] + boxes[:, 2:]) / 2 + shift
        half = wh * scale / 2
        return np.concatenate([centre - half, centre + half], 1).astype(np.float32)

    def epoch(self, rng: np.random.Generator, size: int, border: tuple[float, float, float]):
        """All crops of one epoch, shuffled: (uint8 [N, S, S, 3], int64 [N])."""
        crops, labels = [], []
        pad = self.context_fraction * size  # R-CNN's 16 px of context at 227, scaled
        for image, ann in zip(self.images, self.annotations):
            boxes = self._jitter(rng, ann.boxes)
            bg = self._background(rng, ann, self.background_per_image)
            windows = np.concatenate([boxes, bg]) if len(bg) else boxes
            if len(windows) == 0:
                continue
            crops.append(warp_windows(image, windows, size, pad, border))
            labels.append(np.concatenate([ann.labels + 1, np.zeros(len(bg), np.int64)]))
        crops = np.concatenate(crops)
        labels = np.concatenate(labels)
        flip = rng.random(len(crops)) < 0.5
        crops[flip] = crops[flip, :, ::-1]
        order = rng.permutation(len(crops))
        return crops[order], labels[order]


    def image_windows(self, rng: np.random.Generator, index: int, copies: int = 2):
        """Windows of one image for a whole-image step: ``copies`` jittered boxes per
        object and ``background_per_image`` background windows (float32 [W, 4] in the
        image's pixels, int64 [W] labels)."""
        ann = self.annotations[index]
        boxes = self._jitter(rng, np.repeat(ann.boxes, copies, axis=0))
        bg = self._background(rng, ann, self.background_per_image)
        labels = np.concatenate([np.repeat(ann.labels + 1, copies), np.zeros(len(bg), np.int64)])
        return np.concatenate([boxes.reshape(-1, 4), bg]).astype(np.float32), labels


class ClassifierNet(torch.nn.Module):
    """trunk -> pyramid over the whole crop -> fc6 -> fc7 -> fc8."""

    def __init__(self, trunk: Trunk, head: FCHead, levels):
        super().__init__()
        self.trunk, self.head, self.levels = trunk, head, tuple(levels)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def forward(self, crops_uint8: torch.Tensor) -> torch.Tensor:
        x = self.trunk.normalize(crops_uint8.to(self.device).permute(0, 3, 1, 2))
        return self.head(pool_whole_map(self.trunk(x, inputs="crop"), self.levels), "fc8")

    def forward_image(self, image_uint8: np.ndarray, windows: np.ndarray) -> torch.Tensor:
        """fc8 of windows pooled from one image's conv5 map, as SPP-net detects
        (differentiable: one adaptive pyramid per window's cells)."""
        x = self.trunk.normalize(torch.from_numpy(np.ascontiguousarray(image_uint8)).to(self.device).permute(2, 0, 1)[None])
        fmap = self.trunk(x)
        cells = project_windows_to_map(windows, self.trunk.stride, self.trunk.offset, fmap.shape[2], fmap.shape[3])
        pooled = torch.cat([pool_whole_map(fmap[:, :, y1 : y2 + 1, x1 : x2 + 1], self.levels)
                            for x1, y1, x2, y2 in cells.tolist()])
        return self.head(pooled, "fc8")


def evaluate_accuracy(net: ClassifierNet, crops: np.ndarray, labels: np.ndarray, batch_size: int = 256) -> float:
    net.eval()
    correct = 0
    with torch.inference_mode():
        for s in range(0, len(crops), batch_size):
            logits = net(torch.from_numpy(crops[s : s + batch_size]))
            correct += int((logits.argmax(1).cpu().numpy() == labels[s : s + batch_size]).sum())
    return correct / max(1, len(crops))


def evaluate_image_accuracy(net: ClassifierNet, sampler: CropSampler, scale: float, seed: int = 0,
                            max_images: int = 200) -> float:
    """Accuracy on windows pooled from whole images (shorter side ``scale``), as SPP-net
    detects: every object's own box and ``background_per_image`` background windows."""
    net.eval()
    rng = np.random.default_rng(seed)
    correct = total = 0
    with torch.inference_mode():
        for index in range(min(max_images, len(sampler.images))):
            ann = sampler.annotations[index]
            bg = sampler._background(rng, ann, sampler.background_per_image)
            windows = np.concatenate([ann.boxes.reshape(-1, 4), bg]).astype(np.float32)
            labels = np.concatenate([ann.labels + 1, np.zeros(len(bg), np.int64)])
            if len(labels) == 0:
                continue
            resized, fx, fy = _resize_shorter(sampler.images[index], scale)
            logits = net.forward_image(resized, windows * np.float32([fx, fy, fx, fy]))
            correct += int((logits.argmax(1).cpu().numpy() == labels).sum())
            total += len(labels)
    return correct / max(1, total)


@dataclass
class PretrainResult:
    sizes: tuple[int, ...]
    val_accuracy: float
    # accuracy on windows pooled from whole validation images (NaN without image epochs)
    val_image_accuracy: float = float("nan")
    history: list[dict] = field(default_factory=list)
    seconds: float = 0.0


def _resize_shorter(image: np.ndarray, shorter: float, max_side: int = 2000) -> tuple[np.ndarray, float, float]:
    """The image with its shorter side ``shorter`` (the longer at most ``max_side``) and
    the x and y factors applied."""
    h, w = image.shape[:2]
    nh, nw = scaled_size(h, w, shorter, max_side)
    return cv2.resize(image, (nw, nh), interpolation=cv2.INTER_LINEAR), nw / w, nh / h


def _resized_image(rng, image: np.ndarray, scales: tuple[float, float]):
    """The image with its shorter side uniform in ``scales``, mirrored half the time:
    (image, [fx, fy, fx, fy] box factors, mirrored)."""
    out, fx, fy = _resize_shorter(image, rng.uniform(*scales))
    mirrored = bool(rng.random() < 0.5)
    return (out[:, ::-1] if mirrored else out), np.float32([fx, fy, fx, fy]), mirrored


def pretrain(trunk: Trunk, head: FCHead, levels, train_sampler: CropSampler, val_sampler: CropSampler | None,
             sizes=(64, 52), epochs: int = 8, batch_size: int = 32, lr: float = 1e-3,
             weight_decay: float = 1e-4, seed: int = 0, eval_size: int | None = None, progress: bool = True,
             image_scales: tuple[float, float] | None = None, warmup: float = 0.03,
             device="cpu") -> PretrainResult:
    """Train trunk + head + fc8 (created by the caller with ``head.add_classifier``) in
    place. Crop epochs cycle through ``sizes``; with ``image_scales`` every other epoch is
    a whole-image epoch (module docstring). AdamW, learning rate warmed up linearly over
    the first ``warmup`` of the steps, then cosine decay to 0 per step. Validation crops
    are drawn once, at ``eval_size`` (default: the first size), from ``val_sampler``'s
    images. Trains on ``device`` (``features.device``: cpu, cuda or cuda:N) and leaves the
    trunk and head on the CPU."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    net = ClassifierNet(trunk, head, levels).to(resolve_device(device))
    border = tuple(float(v) for v in trunk.pixel_mean.flatten().tolist())
    params_decay = [p for n, p in net.named_parameters() if p.ndim > 1]
    params_other = [p for n, p in net.named_parameters() if p.ndim <= 1]
    # AdamW: plain SGD at any stable rate stalls for many epochs at the class prior on
    # this from-scratch problem, which the CPU budget cannot afford
    opt = torch.optim.AdamW([{"params": params_decay, "weight_decay": weight_decay},
                             {"params": params_other, "weight_decay": 0.0}], lr=lr,
                            fused=True)  # one fused kernel: 7 ms a step against 20 ms
    eval_size = eval_size or sizes[0]
    val = None
    if val_sampler is not None:
        val = val_sampler.epoch(np.random.default_rng(seed + 1), eval_size, border)
    # the schedule needs the number of steps: crop epochs have about (crops / batch)
    # steps, image epochs one step per image
    n_images = len(train_sampler.images)
    crops_per_epoch = sum(len(a.boxes) for a in train_sampler.annotations) + train_sampler.background_per_image * n_images
    kinds = ["image" if image_scales and e % 2 == 1 else "crop" for e in range(epochs)]
    total_steps = sum(n_images if k == "image" else -(-crops_per_epoch // batch_size) for k in kinds)
    step = 0

    def set_lr():
        nonlocal step
        ramp = min(1.0, (step + 1) / max(1.0, warmup * total_steps))
        for g in opt.param_groups:
            g["lr"] = lr * ramp * 0.5 * (1 + math.cos(math.pi * min(step, total_steps) / total_steps))
        step += 1

    tally = {}  # this epoch's examples, right answers and summed loss

    def update(logits, y):
        """One optimiser step (at this step's learning rate) on a batch's loss."""
        set_lr()
        y = y.to(logits.device)
        loss = torch.nn.functional.cross_entropy(logits, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        tally["total"] += len(y)
        tally["correct"] += int((logits.detach().argmax(1) == y).sum())
        tally["loss"] += loss.item() * len(y)

    history = []
    t0 = time.perf_counter()
    bar = tqdm(range(epochs), desc=f"pretrain {'/'.join(map(str, sizes))}", disable=not progress)
    crop_epoch = 0
    for epoch in bar:
        kill_point("pretrain", epoch)
        net.train()
        tally.update(total=0, correct=0, loss=0.0)
        if kinds[epoch] == "image":
            size = "image"
            for index in rng.permutation(n_images):
                windows, labels = train_sampler.image_windows(rng, int(index))
                if len(labels) < 2:
                    continue
                image, box_factor, mirrored = _resized_image(rng, train_sampler.images[index], image_scales)
                windows = windows * box_factor
                if mirrored:
                    w = image.shape[1]
                    windows = np.stack([w - windows[:, 2], windows[:, 1], w - windows[:, 0], windows[:, 3]], 1)
                update(net.forward_image(image, windows.astype(np.float32)), torch.from_numpy(labels))
        else:
            size = sizes[crop_epoch % len(sizes)]
            crop_epoch += 1
            crops, labels = train_sampler.epoch(rng, size, border)
            for s in range(0, len(crops), batch_size):
                x = torch.from_numpy(crops[s : s + batch_size])
                y = torch.from_numpy(labels[s : s + batch_size])
                if len(y) < 2:
                    continue  # batch norm needs two samples
                update(net(x), y)
        n = max(1, tally["total"])
        row = {"epoch": epoch + 1, "size": size, "loss": tally["loss"] / n, "train_accuracy": tally["correct"] / n}
        if val is not None and epoch + 1 == epochs:
            row["val_accuracy"] = evaluate_accuracy(net, *val)
        history.append(row)
        bar.set_postfix(loss=f"{row['loss']:.3f}", acc=f"{row['train_accuracy']:.3f}")
        log.info("pretrain epoch %d (%s): loss %.4f train acc %.4f%s", epoch + 1, size, row["loss"],
                 row["train_accuracy"], f" val acc {row['val_accuracy']:.4f}" if "val_accuracy" in row else "")
    net.eval()
    if not image_scales:
        trunk.copy_statistics("crop", "image")  # crops only: whole images get the crops' statistics
    val_acc = evaluate_accuracy(net, *val) if val is not None else float("nan")
    val_image_acc = float("nan")
    if val_sampler is not None and image_scales:
        val_image_acc = evaluate_image_accuracy(net, val_sampler, sum(image_scales) / 2, seed + 2)
        log.info("pretraining: accuracy on windows of whole validation images %.4f", val_image_acc)
    net.to("cpu")
    return PretrainResult(tuple(sizes), val_acc, val_image_acc, history, time.perf_counter() - t0)
