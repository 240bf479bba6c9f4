"""Proposal recall: how many ground-truth objects some proposal covers (numpy only).

Recall at IoU t is the fraction of (non-difficult) ground-truth boxes whose best proposal
has IoU >= t. Average recall (AR, Hosang et al.) is the mean recall over t in
0.5:0.05:0.95, which tracks detection mAP better than recall at any single threshold. The average best
overlap (ABO, Uijlings et al. 2013) is the mean of every object's best IoU.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from sppcore.boxes import box_iou

__all__ = ["best_overlaps", "recall_at", "average_recall", "average_best_overlap", "recall_vs_boxes", "AR_THRESHOLDS"]

AR_THRESHOLDS = np.round(np.arange(0.5, 0.951, 0.05), 2)


def best_overlaps(proposals: Sequence[np.ndarray], gt_boxes: Sequence[np.ndarray], top_n: int | None = None) -> np.ndarray:
    """Best IoU of every ground-truth box (all images concatenated) with the first
    ``top_n`` proposals of its image (all when None)."""
    out = []
    for props, gt in zip(proposals, gt_boxes):
        gt = np.asarray(gt, np.float32).reshape(-1, 4)
        if len(gt) == 0:
            continue
        p = np.asarray(props, np.float32).reshape(-1, 4)
        if top_n is not None:
            p = p[:top_n]
        out.append(box_iou(gt, p).max(axis=1) if len(p) else np.zeros(len(gt)))
    return np.concatenate(out) if out else np.zeros(0)


def recall_at(overlaps: np.ndarray, thresholds) -> np.ndarray:
    """Recall at each IoU threshold, from :func:`best_overlaps`."""
    overlaps = np.asarray(overlaps)
    if len(overlaps) == 0:
        return np.full(len(np.atleast_1d(thresholds)), np.nan)
    return np.array([(overlaps >= t).mean() for t in np.atleast_1d(thresholds)])


def average_recall(overlaps: np.ndarray) -> float:
    return float(recall_at(overlaps, AR_THRESHOLDS).mean())


def average_best_overlap(overlaps: np.ndarray) -> float:
    """Mean best IoU over the objects (NaN when there are none), from :func:`best_overlaps`."""
    overlaps = np.asarray(overlaps, dtype=np.float64)
    return float(overlaps.mean()) if len(overlaps) else float("nan")


def recall_vs_boxes(proposals, gt_boxes, counts: Sequence[int], iou: float = 0.5) -> np.ndarray:
    """Recall at ``iou`` when only the first n proposals of each image are kept."""
    return np.array([recall_at(best_overlaps(proposals, gt_boxes, n), [iou])[0] for n in counts])
