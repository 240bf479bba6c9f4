"""Fine-tuning fc6, fc7 and a new (K + 1)-way fc8 on pooled conv5 vectors (SPP-net 4).

The conv layers stay frozen: every mini-batch takes the pool5 vectors of its windows in
``images_per_batch`` images (Fast R-CNN's sampling; SPP-net's own code sampled across
images) from ``pool_fn`` and only the fc layers see gradients. For SPP-net ``pool_fn``
pools from the cached conv5 maps; for R-CNN it warps each window and runs the frozen conv
layers (R-CNN fine-tuned the whole network; here, as for SPP-net, only the fc layers).
Windows are labelled by their best IoU with the image's ground truth: ``[fg_iou, 1]`` ->
that object's class, ``[bg_iou_low, fg_iou)`` -> background (0), the rest unused; a
mini-batch holds ``fg_fraction`` positives (25% in the paper) when the images have them.
SGD with momentum; the learning rate drops tenfold for the last sixth of the iterations
(the paper: 1e-4 for 250k mini-batches, then 1e-5 for 50k).

With ``checkpoint`` the state (weights, optimiser, random generators, history) is written
atomically every ``checkpoint_every`` iterations, and a run started again with the same
``key`` resumes there and ends with the same weights as an uninterrupted one.
"""
from __future__ import annotations

import logging
import math
import os
import time

import numpy as np
import torch
from tqdm import tqdm

from sppcore.faults import kill_point
from sppcore.fileio import atomic_open
from sppcore.matcher import finetune_matcher, with_ground_truth

__all__ = ["label_windows", "finetune_head"]

log = logging.getLogger(__name__)


def label_windows(boxes: np.ndarray, gt_boxes: np.ndarray, gt_labels: np.ndarray, fg_iou: float, bg_iou_low: float):
    """Per window: label (class + 1 for positives, 0 for background, -1 unused), by
    :func:`sppcore.matcher.finetune_matcher` (an image without objects: all unused)."""
    return finetune_matcher(fg_iou, bg_iou_low).match_boxes(boxes, gt_boxes).class_targets(gt_labels)


def finetune_head(head, pool_fn, dataset, proposals, cfg_finetune, seed: int = 0,
                  images_per_batch: int = 2, momentum: float = 0.9, weight_decay: float = 5e-4,
                  progress: bool = True, checkpoint: str | None = None, checkpoint_every: int = 250,
                  key: str = "") -> dict:
    """Train ``head`` (with fc8 already added) in place, on its device; returns a small
    report.

    ``pool_fn(image_id, windows [N, 4]) -> Tensor[N, D]``: the pool5 vector of every window
    of the image, in order (no gradient needed). ``checkpoint``: a file for resuming (see
    the module docstring); ``key`` names what it belongs to (another key: start afresh)."""
    f = cfg_finetune
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    per_image = max(1, f.batch_size // images_per_batch)
    n_fg = int(round(per_image * f.fg_fraction))
    params = list(head.fc6.parameters()) + list(head.fc7.parameters()) + list(head.fc8.parameters())
    opt = torch.optim.SGD(params, lr=f.lr, momentum=momentum, weight_decay=weight_decay)
    drop_at = int(math.ceil(f.iterations * 5 / 6))
    ids = list(dataset.image_ids)
    labels_cache: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    history = []
    t0 = time.perf_counter()
    device = next(head.parameters()).device
    running_loss, running_acc = 0.0, 0.0
    start = 0
    if checkpoint and os.path.isfile(checkpoint):
        # on the CPU: the generators' states must be CPU tensors; load_state_dict moves the rest
        try:
            state = torch.load(checkpoint, map_location="cpu", weights_only=True)
            if not isinstance(state, dict):
                raise ValueError(f"expected a dict, got {type(state).__name__}")
        except Exception as e:  # truncated or corrupt: start afresh (weights_only never runs code)
            log.warning("%s: corrupt fine-tuning state (%s: %s); starting afresh", checkpoint, type(e).__name__, e)
            os.remove(checkpoint)
            state = {}
        if state.get("key") == key:
            head.load_state_dict(state["head"])
            opt.load_state_dict(state["optimizer"])
            rng.bit_generator.state = state["numpy_rng"]
            torch.set_rng_state(state["torch_rng"])
            if device.type == "cuda":
                torch.cuda.set_rng_state(state["cuda_rng"], device)
            start, history = int(state["iteration"]), list(state["history"])
            running_loss, running_acc = float(state["running_loss"]), float(state["running_acc"])
            log.info("fine-tuning: resuming after %d of %d iterations", start, f.iterations)

    def save_state(iteration: int) -> None:
        state = {"key": key, "iteration": iteration, "head": head.state_dict(), "optimizer": opt.state_dict(),
                 "numpy_rng": rng.bit_generator.state, "torch_rng": torch.get_rng_state(),
                 "history": history, "running_loss": running_loss, "running_acc": running_acc}
        if device.type == "cuda":
            state["cuda_rng"] = torch.cuda.get_rng_state(device)
        with atomic_open(checkpoint) as fh:
            torch.save(state, fh)

    head.train()
    bar = tqdm(range(start, f.iterations), initial=start, total=f.iterations, desc="fine-tune fc",
               disable=not progress)
    for it in bar:
        kill_point("finetune", it)
        if checkpoint and it > start and it % checkpoint_every == 0:
            save_state(it)  # the state before iteration ``it``
        if it == drop_at:
            for g in opt.param_groups:
                g["lr"] = f.lr * 0.1
        pooled, targets = [], []
        for image_id in rng.choice(ids, size=min(images_per_batch, len(ids)), replace=False):
            if image_id not in labels_cache:
                ann = dataset.annotation(image_id)
                windows = with_ground_truth(proposals[image_id], ann.boxes)
                labels_cache[image_id] = (windows, label_windows(windows, ann.boxes, ann.labels, f.fg_iou, f.bg_iou_low))
            windows, labels = labels_cache[image_id]
            fg = np.flatnonzero(labels > 0)
            bg = np.flatnonzero(labels == 0)
            take_fg = rng.choice(fg, size=min(n_fg, len(fg)), replace=False) if len(fg) else fg
            take_bg = rng.choice(bg, size=min(per_image - len(take_fg), len(bg)), replace=False) if len(bg) else bg
            rows = np.concatenate([take_fg, take_bg]).astype(np.int64)
            if len(rows) == 0:
                continue
            with torch.no_grad():
                pooled.append(pool_fn(image_id, windows[rows]).to(device))
            targets.append(torch.from_numpy(labels[rows]))
        if not pooled:
            continue
        x = torch.cat(pooled)
        y = torch.cat(targets).to(device)
        logits = head(x, "fc8")
        loss = torch.nn.functional.cross_entropy(logits, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        running_loss = 0.98 * running_loss + 0.02 * loss.item() if it else loss.item()
        acc = float((logits.detach().argmax(1) == y).float().mean())
        running_acc = 0.98 * running_acc + 0.02 * acc if it else acc
        if (it + 1) % 50 == 0 or it + 1 == f.iterations:
            history.append({"iteration": it + 1, "loss": running_loss, "accuracy": running_acc})
            bar.set_postfix(loss=f"{running_loss:.3f}", acc=f"{running_acc:.3f}")
    head.eval()
    return {"iterations": f.iterations, "seconds": time.perf_counter() - t0, "history": history,
            "final_loss": running_loss, "final_accuracy": running_acc}
