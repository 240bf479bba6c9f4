"""Training a detector on window features: SVMs with hard-negative mining + box regression.

With ``classifier.type: softmax`` the network's fine-tuned fc8 scores the windows
(:mod:`detect.classifiers`): nothing is mined and only the box regressors are trained.

Network-agnostic: windows become features through ``feature_fn(image_id, boxes, layers)
-> {layer: float32 [N, D]}`` (SPP-net pools them from cached conv5 maps, R-CNN warps and
runs the whole net; see :mod:`detect.feature_sources`), so SPP-net and R-CNN share this
code line for line.

The two passes of R-CNN's ``rcnn_train.m``:

1. positives: the ground-truth boxes' features (``difficult`` ones too when
   ``data.train_difficult``), the box-regression examples (proposals with IoU >=
   ``bbox_reg.min_iou`` to their best ground truth, at most
   ``bbox_reg.max_examples_per_object`` per object; their features stored in float16),
   and the L2 norms of a sample of proposal features to fix the feature scale (mean
   norm -> ``svm.target_norm``);
2. one hard-negative mining pass over the images (``svm.HardNegativeMiner``).

Both passes checkpoint to ``work_dir`` (atomic ``.npz`` / ``.json``), so an interrupted
run resumes at the image where it stopped.
"""
from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
from tqdm import tqdm

from detect.bbox_regression import BoxRegressor, fit_box_regressor, select_regression_examples
from detect.config import Config
from sppcore.errors import UserError
from sppcore.faults import kill_point
from sppcore.fileio import atomic_save_npz, load_npz_or_none
from sppcore.matcher import with_ground_truth
from svm.mining import (HardNegativeMiner, compute_feature_scale, feature_norms, feature_scale_from_norms,
                        select_negative_candidates)

__all__ = ["FeatureFn", "TrainingResult", "collect_positives", "mine_svms", "train_detector"]

log = logging.getLogger(__name__)

FeatureFn = Callable[[str, np.ndarray, Sequence[str]], dict]

# proposals per image whose features are sampled to estimate the mean feature norm
SCALE_SAMPLES_PER_IMAGE = 32
# a mining checkpoint (the whole negative cache) is written when this much time has passed
# or this many images were mined since the last one, whichever comes first
CHECKPOINT_SECONDS = 60.0
CHECKPOINT_IMAGES = 50


@dataclass
class TrainingResult:
    """What training produced; the SVM fields are None when no SVMs were trained
    (``classifier.type: softmax``)."""

    svm_weights: np.ndarray | None
    svm_bias: np.ndarray | None
    feature_scale: float | None
    regressor: BoxRegressor | None
    report: dict = field(default_factory=dict)


def _training_gt(annotation, train_difficult: bool):
    keep = np.ones(len(annotation.labels), bool) if train_difficult else ~annotation.difficult
    return annotation.boxes[keep], annotation.labels[keep]


def collect_positives(
    cfg: Config,
    dataset,
    proposals,
    feature_fn: FeatureFn,
    work_dir: str,
    progress: bool = True,
) -> dict[str, np.ndarray]:
    """Pass 1. Returns arrays: for the SVMs (``classifier.type: svm``) ``pos_features``
    [P, D] float32, ``pos_labels`` [P], ``scale_norms`` [S] (L2 norms of the sampled
    proposals' features), and for regression ``reg_features`` [M, Dr] float16 (exact for
    SPP-net's pool5, which is pooled from float16 conv5 maps), ``reg_boxes``, ``reg_gt``
    [M, 4], ``reg_labels`` [M]. Cached in ``work_dir/positives.npz``."""
    path = os.path.join(work_dir, "positives.npz")
    stored = load_npz_or_none(path, "positives checkpoint")
    if stored is not None:
        log.info("positives: reusing %s", path)
        return stored
    svms = cfg.classifier.type == "svm"  # softmax: regression examples only
    svm_layer, reg_layer = cfg.features.layer, cfg.bbox_reg.layer
    layers = tuple(dict.fromkeys(((svm_layer,) if svms else ()) + ((reg_layer,) if cfg.bbox_reg.enabled else ())))
    rng = np.random.default_rng(cfg.seed)
    parts: dict[str, list] = {k: [] for k in ("pos_features", "pos_labels", "scale_norms",
                                              "reg_features", "reg_boxes", "reg_gt", "reg_labels")}
    for n, image_id in enumerate(tqdm(dataset.image_ids, desc="positives", disable=not progress)):
        kill_point("positives", n)
        ann = dataset.annotation(image_id)
        gt_boxes, gt_labels = _training_gt(ann, cfg.data.train_difficult)
        props = proposals[image_id]
        sample = rng.choice(len(props), size=min(SCALE_SAMPLES_PER_IMAGE, len(props)), replace=False)
        reg_idx = np.zeros(0, np.int64)
        reg_gt = np.zeros((0, 4), np.float32)
        reg_labels = np.zeros(0, np.int64)
        if cfg.bbox_reg.enabled:
            # regression examples: proposals and the ground-truth boxes themselves
            windows = with_ground_truth(props, gt_boxes)
            reg_idx, reg_gt, reg_labels = select_regression_examples(
                windows, ann.boxes, ann.labels, cfg.bbox_reg.min_iou,
                max_per_object=cfg.bbox_reg.max_examples_per_object, rng=rng)
        else:
            windows = props
        # one feature computation for every window this image needs (the sample is drawn
        # either way, so that both classifiers get the same regression examples)
        wanted = np.unique(np.concatenate([sample if svms else sample[:0], reg_idx]).astype(np.int64))
        svm_gt = gt_boxes if svms else np.zeros((0, 4), np.float32)
        all_windows = np.concatenate([svm_gt, windows[wanted]]).astype(np.float32)
        feats = feature_fn(image_id, all_windows, layers)
        g = len(svm_gt)
        if svms:
            parts["pos_features"].append(feats[svm_layer][:g])
            parts["pos_labels"].append(gt_labels)
            pos_in_wanted = np.searchsorted(wanted, sample)
            parts["scale_norms"].append(feature_norms(feats[svm_layer][g:][pos_in_wanted]))
        if cfg.bbox_reg.enabled:
            rows = g + np.searchsorted(wanted, reg_idx)
            reg_feats = feats[reg_layer][rows].astype(np.float16)
            if not np.isfinite(reg_feats).all():
                raise UserError(f"{image_id}: {reg_layer} features exceed the float16 range of the "
                                "regression store (a network with unnormalised activations?)")
            parts["reg_features"].append(reg_feats)
            parts["reg_boxes"].append(windows[reg_idx])
            parts["reg_gt"].append(reg_gt)
            parts["reg_labels"].append(reg_labels)
    out = {}
    for k, v in parts.items():
        if v:
            out[k] = np.concatenate(v)
    if svms:
        out["pos_labels"] = out["pos_labels"].astype(np.int64)
    atomic_save_npz(path, **out)
    return out


def mine_svms(
    cfg: Config,
    dataset,
    proposals,
    feature_fn: FeatureFn,
    positives: dict[str, np.ndarray],
    feature_scale: float,
    work_dir: str,
    progress: bool = True,
):
    """Pass 2: one hard-negative mining pass, checkpointed every few images."""
    num_classes = len(dataset.classes)
    layer = cfg.features.layer
    dim = positives["pos_features"].shape[1]
    ckpt_path = os.path.join(work_dir, "mining_state.npz")
    done = 0
    miner = None
    arrays = load_npz_or_none(ckpt_path, "mining checkpoint")
    if arrays is not None:
        try:
            meta = json.loads(arrays.pop("checkpoint_meta").tobytes().decode("utf-8"))
            miner = HardNegativeMiner.from_state_dict(arrays, meta["miner"])
            done = int(meta["images_done"])
            log.info("mining: resuming after %d of %d images", done, len(dataset))
        except (KeyError, ValueError, TypeError) as e:
            log.warning("%s: unusable mining checkpoint (%s: %s); mining from the first image",
                        ckpt_path, type(e).__name__, e)
            miner, done = None, 0
    if miner is None:
        miner = HardNegativeMiner(num_classes, dim, cfg.svm, feature_scale=feature_scale)
        miner.add_positives(positives["pos_features"], positives["pos_labels"])
    ids = dataset.image_ids
    bar = tqdm(total=len(ids), initial=done, desc="mining", disable=not progress)
    last_checkpoint, last_done = time.perf_counter(), done
    for i in range(done, len(ids)):
        kill_point("mining", i)
        image_id = ids[i]
        ann = dataset.annotation(image_id)
        props = proposals[image_id]
        # every ground truth (difficult included) keeps its neighbourhood out of the negatives
        candidates = select_negative_candidates(
            props, ann.boxes, ann.labels, num_classes,
            negative_iou=cfg.svm.negative_iou, negative_overlap=cfg.svm.negative_overlap)
        feats = feature_fn(image_id, props, (layer,))[layer]
        miner.process_image(image_id, feats, candidates)
        bar.update(1)
        due = time.perf_counter() - last_checkpoint > CHECKPOINT_SECONDS or i + 1 - last_done >= CHECKPOINT_IMAGES
        if due and i + 1 < len(ids):
            arrays, meta = miner.state_dict()
            # one file, written atomically: the miner's arrays and, as JSON bytes, how far
            # the pass got and the miner's metadata
            state = json.dumps({"images_done": i + 1, "miner": meta}).encode("utf-8")
            atomic_save_npz(ckpt_path, checkpoint_meta=np.frombuffer(state, dtype=np.uint8), **arrays)
            last_checkpoint, last_done = time.perf_counter(), i + 1
    bar.close()
    return miner.finish()


def train_detector(
    cfg: Config,
    dataset,
    proposals,
    feature_fn: FeatureFn,
    work_dir: str,
    progress: bool = True,
) -> TrainingResult:
    """Both passes plus box regression (``classifier.type: softmax``: box regression
    only). ``proposals[image_id]`` -> float32 [N, 4]."""
    os.makedirs(work_dir, exist_ok=True)
    svms = cfg.classifier.type == "svm"
    t0 = time.perf_counter()
    positives = {}
    if svms or cfg.bbox_reg.enabled:
        positives = collect_positives(cfg, dataset, proposals, feature_fn, work_dir, progress)
    t1 = time.perf_counter()
    W = b = feature_scale = None
    svm_report: dict = {}
    if svms:
        feature_scale = feature_scale_from_norms(positives["scale_norms"], cfg.svm.target_norm)
        log.info("feature scale %.4g (mean norm -> %g); %d positives", feature_scale,
                 cfg.svm.target_norm, len(positives["pos_labels"]))
        W, b, svm_report = mine_svms(cfg, dataset, proposals, feature_fn, positives, feature_scale,
                                     work_dir, progress)
        feature_scale = float(feature_scale)
    else:
        log.info("classifier %s: no SVMs to train", cfg.classifier.type)
    t2 = time.perf_counter()
    regressor = None
    if cfg.bbox_reg.enabled:
        reg_scale = compute_feature_scale(positives["reg_features"], cfg.svm.target_norm)
        regressor = fit_box_regressor(
            positives["reg_features"], positives["reg_boxes"], positives["reg_gt"],
            positives["reg_labels"], len(dataset.classes), cfg.bbox_reg.ridge_lambda,
            feature_scale=reg_scale)
    t3 = time.perf_counter()
    report = {
        "classifier": cfg.classifier.type,
        "classes": {name: dict(svm_report[k]) for k, name in enumerate(dataset.classes)} if svms else {},
        "num_images": len(dataset),
        "num_positives": int(len(positives.get("pos_labels", []))),
        "bbox_examples": int(len(positives.get("reg_labels", []))),
        "feature_scale": feature_scale,
        "seconds": {"positives": t1 - t0, "mining": t2 - t1, "bbox_regression": t3 - t2},
    }
    return TrainingResult(W, b, feature_scale, regressor, report)
