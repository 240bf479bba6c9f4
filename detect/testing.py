"""Testing a trained detector on an image set: single-image scoring and the test loop.

Per image: proposals (from the proposal store, timed when they were computed) -> window
features (``extract_fn(image, boxes, layers) -> ({layer: [N, D]}, {stage: seconds})``)
-> class scores (the model's classifier: SVMs or the fine-tuned softmax,
:mod:`detect.classifiers`) -> box regression -> per-class NMS. Each image's detections and timings are
written to ``out_dir/detections/<image_id>.npz`` as soon as they exist, keyed by the model,
the test-time settings and the image, so an interrupted run resumes where it stopped and a
run with another model or other settings recomputes; the raw detections of the whole set are saved in
``detections.npz`` so that evaluation can be re-run without the network
(``tools/reval.py``). The user-facing object around these steps is
:class:`detect.detector_api.Detector`.
"""
from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
from tqdm import tqdm

from detect.detector import Detections, concatenate_detections, detections_from_scores
from detect.model import DetectionModel
from sppcore.boxes import apply_bbox_deltas
from sppcore.faults import kill_point
from sppcore.fileio import KeyedEntries, atomic_save_npz, file_digest

__all__ = ["ExtractFn", "DetectFn", "WindowScores", "score_image", "detections_from_window_scores", "detect_image", "model_layers", "score_and_regress", "run_test", "STAGES", "median_timings"]

log = logging.getLogger(__name__)

ExtractFn = Callable[[np.ndarray, np.ndarray, Sequence[str]], tuple[dict, dict]]
DetectFn = Callable[[np.ndarray, np.ndarray], tuple[Detections, dict]]

# Stages reported in results.json["seconds_per_image"] (median over images). ``svm`` is
# the classifier's scoring, whichever the model's is.
# ``warp`` is R-CNN's (cropping and warping each window; 0 for SPP-net), last so that
# detections cached with the older stage list still read back in order.
STAGES = ("proposals", "conv", "pool", "fc", "svm", "nms", "bbox_reg", "warp")


@dataclass
class WindowScores:
    """What one image's windows scored, before NMS: ``boxes`` float32 [N, 4] (the
    windows, internal convention), ``scores`` float32 [N, K] (the classifier's), ``class_boxes``
    float32 [N, K, 4] (each window regressed for each class; None without regressors),
    ``image_size`` (height, width) and the seconds per stage so far."""

    boxes: np.ndarray
    scores: np.ndarray
    class_boxes: np.ndarray | None
    image_size: tuple[int, int]
    timings: dict[str, float]


def score_image(model: DetectionModel, extract_fn: ExtractFn, image: np.ndarray, boxes: np.ndarray) -> WindowScores:
    """Features, class scores and regressed boxes of one image's windows (no NMS)."""
    feats, timings = extract_fn(image, boxes, model_layers(model))
    timings = {k: float(v) for k, v in timings.items()}
    scores, class_boxes, svm_s, reg_s = score_and_regress(model, feats, boxes)
    timings.update(svm=svm_s, bbox_reg=reg_s)
    return WindowScores(np.asarray(boxes, np.float32).reshape(-1, 4), scores, class_boxes,
                        tuple(image.shape[:2]), timings)


def detections_from_window_scores(model: DetectionModel, scored: WindowScores,
                                  regress: bool = True) -> tuple[Detections, float]:
    """Per-class threshold, NMS and top-k of scored windows (with the model's test
    settings), on the regressed boxes unless ``regress`` is False; returns the detections
    and the seconds this took."""
    t0 = time.perf_counter()
    tcfg = model.config.test
    det = detections_from_scores(
        scored.boxes, scored.scores, scored.image_size, nms_iou=tcfg.nms_iou, max_per_class=tcfg.max_per_class,
        score_threshold=tcfg.score_threshold, class_boxes=scored.class_boxes if regress else None)
    return det, time.perf_counter() - t0


def detect_image(
    model: DetectionModel,
    extract_fn: ExtractFn,
    image: np.ndarray,
    boxes: np.ndarray,
) -> tuple[Detections, dict[str, float]]:
    """Detections of one image from its proposal boxes, and seconds per stage."""
    scored = score_image(model, extract_fn, image, boxes)
    det, nms_s = detections_from_window_scores(model, scored)
    return det, {**scored.timings, "nms": nms_s}


def model_layers(model: DetectionModel) -> tuple[str, ...]:
    """The feature layers a model reads: its classifier's and, with regressors, theirs."""
    layer = model.classifier.layer
    use_reg = model.regressor is not None
    return (layer,) + ((model.bbox_layer,) if use_reg and model.bbox_layer != layer else ())


def score_and_regress(model: DetectionModel, feats: dict[str, np.ndarray], boxes: np.ndarray):
    """Class scores [N, K] of the windows (the model's classifier), their per-class
    regressed boxes [N, K, 4] (None without regressors) and the seconds each took."""
    t0 = time.perf_counter()
    scores = model.classifier.score(feats[model.classifier.layer])
    t1 = time.perf_counter()
    class_boxes = None
    if model.regressor is not None and len(boxes):
        deltas = model.regressor.predict_all_classes(feats[model.bbox_layer])  # [N, K, 4]
        n, k = deltas.shape[:2]
        rep = np.repeat(np.asarray(boxes, np.float32), k, axis=0)
        class_boxes = apply_bbox_deltas(rep, deltas.reshape(-1, 4)).reshape(n, k, 4)
    return scores, class_boxes, t1 - t0, time.perf_counter() - t1


def median_timings(per_image: list[dict[str, float]]) -> dict[str, float]:
    """Median seconds per stage over images, plus ``total_excluding_proposals`` (the
    median of the per-image sums, so it is a real image's time)."""
    out = {}
    for stage in STAGES:
        vals = [t.get(stage, 0.0) for t in per_image]
        out[stage] = float(np.median(vals)) if vals else 0.0
    totals = [sum(v for k, v in t.items() if k in STAGES and k != "proposals") for t in per_image]
    out["total_excluding_proposals"] = float(np.median(totals)) if totals else 0.0
    return out


def run_test(
    detect_fn: DetectFn,
    dataset,
    proposals,
    image_ids: Sequence[str],
    out_dir: str,
    progress: bool = True,
    key: object = "",
    save_all: bool = True,
) -> tuple[list[Detections], list[dict[str, float]]]:
    """Detect on every image of ``image_ids`` (resumable); returns detections and timings.

    ``detect_fn(image, boxes) -> (Detections, {stage: seconds})`` detects on one image
    (:meth:`detect.detector_api.Detector.detect_with_timings`).

    ``key`` names everything the detections depend on besides the image (the model's
    digest, the test-time settings): each image's entry in ``out_dir/detections/`` is reused
    only for the same key and the same image content (:class:`sppcore.fileio.KeyedEntries`).
    ``save_all`` False leaves ``out_dir/detections.npz`` alone (a process filling its
    shard's entries under torchrun, :mod:`detect.distributed`)."""
    entries = KeyedEntries(os.path.join(out_dir, "detections"), key, what="detection cache entry")
    all_dets, all_times = [], []
    for n, image_id in enumerate(tqdm(image_ids, desc="test", disable=not progress)):
        kill_point("test", n)
        digest = file_digest(dataset.image_path(image_id))
        z = entries.load(image_id, digest)
        if z is not None:
            det = Detections(z["boxes"], z["labels"], z["scores"])
            timings = dict(zip(STAGES, z["timings"].tolist()))
        else:
            boxes = proposals[image_id]
            image = dataset.load_image(image_id)
            det, timings = detect_fn(image, boxes)
            timings["proposals"] = float(proposals.seconds(image_id))
            entries.save(image_id, digest, boxes=det.boxes, labels=det.labels, scores=det.scores,
                         timings=np.array([timings.get(s, 0.0) for s in STAGES], np.float64))
        all_dets.append(det)
        all_times.append(timings)
    if save_all:
        atomic_save_npz(os.path.join(out_dir, "detections.npz"),
                        image_ids=np.array(list(image_ids)), **concatenate_detections(all_dets))
    return all_dets, all_times
