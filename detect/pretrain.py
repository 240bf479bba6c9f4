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
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm import tqdm

from detect.boxes import box_iou
from detect.features import warp_windows
from detect.spp import pool_whole_map
from detect.trunks import FCHead, Trunk

__all__ = ["CropSampler", "PretrainResult", "pretrain", "evaluate_accuracy"]

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
        out = []
        for _ in range(40 * count):
            if len(out) >= count:
                break
            side = float(np.exp(rng.uniform(np.log(self.min_background_side), np.log(0.8 * min(h, w)))))
            aspect = float(np.exp(rng.uniform(np.log(0.5), np.log(2.0))))
            bw, bh = side * math.sqrt(aspect), side / math.sqrt(aspect)
            x, y = rng.uniform(0, max(1.0, w - bw)), rng.uniform(0, max(1.0, h - bh))
            box = np.array([[x, y, min(w, x + bw), min(h, y + bh)]], np.float32)
            iou = box_iou(box, ann.boxes).max() if len(ann.boxes) else 0.0
            near = len(out) % 2 == 0  # alternate near-object and anywhere windows
            if iou < BACKGROUND_IOU and (not near or iou >= NEAR_BACKGROUND_IOU or len(ann.boxes) == 0):
                out.append(box[0])
        return np.asarray(out, np.float32).reshape(-1, 4)

    def epoch(self, rng: np.random.Generator, size: int, border: tuple[float, float, float]):
        """All crops of one epoch, shuffled: (uint8 [N, S, S, 3], int64 [N])."""
        crops, labels = [], []
        pad = self.context_fraction * size  # R-CNN's 16 px of context at 227, scaled
        for image, ann in zip(self.images, self.annotations):
            boxes = ann.boxes.copy()
            if len(boxes):
                wh = boxes[:, 2:] - boxes[:, :2]
                shift = rng.uniform(-self.jitter, self.jitter, (len(boxes), 2)) * wh
                scale = np.exp(rng.uniform(-self.jitter, self.jitter, (len(boxes), 2)))
                centre = (boxes[:, :2] + boxes[:, 2:]) / 2 + shift
                half = wh * scale / 2
                boxes = np.concatenate([centre - half, centre + half], 1).astype(np.float32)
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


class ClassifierNet(torch.nn.Module):
    """trunk -> pyramid over the whole crop -> fc6 -> fc7 -> fc8."""

    def __init__(self, trunk: Trunk, head: FCHead, levels):
        super().__init__()
        self.trunk, self.head, self.levels = trunk, head, tuple(levels)

    def forward(self, crops_uint8: torch.Tensor) -> torch.Tensor:
        x = self.trunk.normalize(crops_uint8.permute(0, 3, 1, 2))
        return self.head(pool_whole_map(self.trunk(x), self.levels), "fc8")


def evaluate_accuracy(net: ClassifierNet, crops: np.ndarray, labels: np.ndarray, batch_size: int = 256) -> float:
    net.eval()
    correct = 0
    with torch.inference_mode():
        for s in range(0, len(crops), batch_size):
            logits = net(torch.from_numpy(crops[s : s + batch_size]))
            correct += int((logits.argmax(1).numpy() == labels[s : s + batch_size]).sum())
    return correct / max(1, len(crops))


@dataclass
class PretrainResult:
    sizes: tuple[int, ...]
    val_accuracy: float
    history: list[dict] = field(default_factory=list)
    seconds: float = 0.0


def pretrain(trunk: Trunk, head: FCHead, levels, train_sampler: CropSampler, val_sampler: CropSampler | None,
             sizes=(96, 77), epochs: int = 30, batch_size: int = 64, lr: float = 5e-4,
             weight_decay: float = 1e-4, seed: int = 0, eval_size: int | None = None, progress: bool = True) -> PretrainResult:
    """Train trunk + head + fc8 (created by the caller with ``head.add_classifier``) in
    place; epochs cycle through ``sizes``. Validation crops are drawn once, at
    ``eval_size`` (default: the first size), from ``val_sampler``'s images."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    net = ClassifierNet(trunk, head, levels)
    border = tuple(float(v) for v in trunk.pixel_mean.flatten().tolist())
    params_decay = [p for n, p in net.named_parameters() if p.ndim > 1]
    params_other = [p for n, p in net.named_parameters() if p.ndim <= 1]
    # AdamW: plain SGD at any stable rate stalls for many epochs at the class prior on
    # this from-scratch problem, which the CPU budget cannot afford
    opt = torch.optim.AdamW([{"params": params_decay, "weight_decay": weight_decay},
                             {"params": params_other, "weight_decay": 0.0}], lr=lr)
    eval_size = eval_size or sizes[0]
    val = None
    if val_sampler is not None:
        val = val_sampler.epoch(np.random.default_rng(seed + 1), eval_size, border)
    history = []
    t0 = time.perf_counter()
    bar = tqdm(range(epochs), desc=f"pretrain {'/'.join(map(str, sizes))}", disable=not progress)
    for epoch in bar:
        size = sizes[epoch % len(sizes)]
        crops, labels = train_sampler.epoch(rng, size, border)
        # cosine learning-rate decay over the epochs
        for g in opt.param_groups:
            g["lr"] = lr * 0.5 * (1 + math.cos(math.pi * epoch / epochs))
        net.train()
        total, correct, loss_sum = 0, 0, 0.0
        for s in range(0, len(crops), batch_size):
            x = torch.from_numpy(crops[s : s + batch_size])
            y = torch.from_numpy(labels[s : s + batch_size])
            if len(y) < 2:
                continue  # batch norm needs two samples
            logits = net(x)
            loss = torch.nn.functional.cross_entropy(logits, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += len(y)
            correct += int((logits.detach().argmax(1) == y).sum())
            loss_sum += loss.item() * len(y)
        row = {"epoch": epoch + 1, "size": size, "loss": loss_sum / max(1, total), "train_accuracy": correct / max(1, total)}
        if val is not None and (epoch + 1 == epochs or (epoch + 1) % 5 == 0):
            row["val_accuracy"] = evaluate_accuracy(net, *val)
        history.append(row)
        bar.set_postfix(loss=f"{row['loss']:.3f}", acc=f"{row['train_accuracy']:.3f}")
        log.info("pretrain epoch %d (size %d): loss %.4f train acc %.4f%s", epoch + 1, size, row["loss"],
                 row["train_accuracy"], f" val acc {row['val_accuracy']:.4f}" if "val_accuracy" in row else "")
    net.eval()
    val_acc = evaluate_accuracy(net, *val) if val is not None else float("nan")
    return PretrainResult(tuple(sizes), val_acc, history, time.perf_counter() - t0)
