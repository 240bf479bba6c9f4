"""Scoring and post-processing shared by SPP-net and R-CNN (numpy, no torch).

The two methods differ only in how a window becomes a feature vector
(:mod:`detect.features`); everything here is common to both, so the comparison is fair by
construction. The chain for one image, as small pure steps:

1. :func:`score_windows`: per-class linear SVM scores ``features @ W.T + b``.
2. optional bounding-box regression of every window for every class
   (:class:`detect.bbox_regression.BoxRegressor`), then clipping to the image. Regression
   comes before NMS, as in Fast R-CNN's test code, so that NMS sees the final boxes.
3. :func:`detections_from_scores`: per class, drop scores below the threshold, greedy NMS
   at IoU 0.3 (R-CNN / SPP-net), keep the ``max_per_class`` best.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sppcore.boxes import as_boxes, clip_boxes, nms

__all__ = [
    "Detections",
    "score_windows",
    "detections_from_scores",
    "concatenate_detections",
    "split_detections",
    "alike_detections",
]


@dataclass
class Detections:
    """Detections of one image: boxes float32 [M, 4] internal, labels int64 [M],
    scores float32 [M]."""

    boxes: np.ndarray
    labels: np.ndarray
    scores: np.ndarray

    @classmethod
    def empty(cls) -> "Detections":
        return cls(np.zeros((0, 4), np.float32), np.zeros(0, np.int64), np.zeros(0, np.float32))

    def __len__(self) -> int:
        return len(self.labels)


def score_windows(features: np.ndarray, weights: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """features float32 [N, D], weights [K, D], bias [K] -> scores float32 [N, K]."""
    features = np.asarray(features, dtype=np.float32)
    if features.shape[0] == 0:
        return np.zeros((0, len(bias)), dtype=np.float32)
    return features @ np.asarray(weights, dtype=np.float32).T + np.asarray(bias, dtype=np.float32)


def detections_from_scores(
    boxes: np.ndarray,
    scores: np.ndarray,
    image_size: tuple[int, int],
    nms_iou: float = 0.3,
    max_per_class: int = 100,
    score_threshold: float = -np.inf,
    class_boxes: np.ndarray | None = None,
) -> Detections:
    """Per-class threshold, NMS and top-k.

    boxes [N, 4] windows; scores [N, K]; image_size (height, width); class_boxes
    optional [N, K, 4] per-class regressed boxes (replacing ``boxes`` for class k).
    """
    boxes = as_boxes(boxes)
    scores = np.asarray(scores, dtype=np.float32)
    if scores.ndim != 2 or scores.shape[0] != len(boxes):
        raise ValueError(f"scores must be [N, K] with N = {len(boxes)}, got {scores.shape}")
    height, width = image_size
    out_boxes, out_labels, out_scores = [], [], []
    for k in range(scores.shape[1]):
        s = scores[:, k]
        keep = np.flatnonzero(s >= score_threshold)
        if keep.size == 0:
            continue
        b = boxes[keep] if class_boxes is None else class_boxes[keep, k]
        b = clip_boxes(b, height, width)
        kept = nms(b, s[keep], nms_iou, max_keep=max_per_class)
        out_boxes.append(b[kept])
        out_scores.append(s[keep][kept])
        out_labels.append(np.full(len(kept), k, dtype=np.int64))
    if not out_boxes:
        return Detections.empty()
    return Detections(
        np.concatenate(out_boxes).astype(np.float32),
        np.concatenate(out_labels),
        np.concatenate(out_scores).astype(np.float32),
    )


def concatenate_detections(per_image: list[Detections]) -> dict[str, np.ndarray]:
    """Flatten per-image detections into arrays for one ``.npz`` (no pickle):
    boxes [M, 4], labels [M], scores [M], image_index [M]."""
    if not per_image:
        return {
            "boxes": np.zeros((0, 4), np.float32),
            "labels": np.zeros(0, np.int64),
            "scores": np.zeros(0, np.float32),
            "image_index": np.zeros(0, np.int64),
        }
    return {
        "boxes": np.concatenate([d.boxes for d in per_image]).astype(np.float32).reshape(-1, 4),
        "labels": np.concatenate([d.labels for d in per_image]).astype(np.int64),
        "scores": np.concatenate([d.scores for d in per_image]).astype(np.float32),
        "image_index": np.concatenate(
            [np.full(len(d), i, dtype=np.int64) for i, d in enumerate(per_image)]
        ),
    }


def split_detections(arrays: dict[str, np.ndarray], num_images: int) -> list[Detections]:
    """Inverse of :func:`concatenate_detections`."""
    idx = np.asarray(arrays["image_index"], dtype=np.int64)
    out = []
    for i in range(num_images):
        rows = idx == i
        out.append(
            Detections(
                np.asarray(arrays["boxes"], np.float32)[rows].reshape(-1, 4),
                np.asarray(arrays["labels"], np.int64)[rows],
                np.asarray(arrays["scores"], np.float32)[rows],
            )
        )
    return out


def alike_detections(a: Detections, b: Detections, box_tol: float = 1e-2, score_tol: float = 1e-4):
    """How many detections of ``a`` have a twin in ``b``: the same class, the box within
    ``box_tol`` px and the score within ``score_tol`` (each is compared with the detection
    of its class in ``b`` whose box is nearest, so detections of near-equal scores may come
    in either order). Returns (count, the largest box and score differences among them):
    what two computations of the same detections (on a GPU and on the host) are checked by."""
    count, box_diff, score_diff = 0, 0.0, 0.0
    for label, box, score in zip(a.labels, a.boxes, a.scores):
        same = np.flatnonzero(b.labels == label)
        if not len(same):
            continue
        best = same[np.abs(b.boxes[same] - box).max(1).argmin()]
        d_box, d_score = float(np.abs(b.boxes[best] - box).max()), float(abs(b.scores[best] - score))
        if d_box < box_tol and d_score < score_tol:
            count += 1
            box_diff, score_diff = max(box_diff, d_box), max(score_diff, d_score)
    return count, box_diff, score_diff
