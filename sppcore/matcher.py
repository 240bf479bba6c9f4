"""Labelling windows by their IoU with the ground truth: one rule for every sampler.

The role of torchvision's and detectron2's ``Matcher``: IoU thresholds in, a label per
window out. Every place that decides from overlaps whether a window is an object, a
background example or left out builds a :class:`Matcher` here, with its own thresholds:

* fine-tuning fc6-fc8: IoU >= ``fg_iou`` foreground, ``[bg_iou_low, fg_iou)``
  background; an image without objects: all ignored;
* box-regression examples: IoU >= ``min_iou`` foreground; no background;
* SVM negatives, class by class: IoU < ``negative_iou`` with every object of the class is
  background (the positives are the ground-truth boxes); a class without objects in the
  image: all background;
* pretraining background crops: IoU < 0.3 background, or only [0.1, 0.3) for a crop near
  an object; an image without objects: all background.

(:func:`finetune_matcher`, :func:`regression_matcher`, :func:`svm_negative_matcher`,
:func:`pretrain_background_matcher`; the thresholds come from the config or the callers'
named constants.) Every other IoU is ignored. The comparisons are the papers' code's: a
lower bound is inclusive and an upper bound exclusive, so an IoU exactly at a threshold
belongs to the interval that starts there (0.5 is foreground for fine-tuning; 0.3 is not
an SVM negative).

A window's IoU is its largest IoU with any ground-truth box, and it is matched to that box;
of several boxes with the same largest IoU the first (lowest index) wins, as MATLAB's
``max`` and numpy's ``argmax`` choose. A NaN in an IoU matrix leaves its window ignored.
An image without ground truth has no IoU: every window gets the matcher's
``no_gt_label`` (ignored for fine-tuning, whose background interval needs an object to be
near; background for the SVMs and the pretraining crops, where "overlaps no object" holds).

Ground-truth boxes are training windows too (R-CNN and SPP-net add them to the proposals):
:func:`with_ground_truth` appends them, and each matches itself with IoU 1, so every
object is a foreground window even when no proposal covers it.

Numpy only. IoU matrices are ``[N windows, G ground-truth boxes]``; boxes are float32
``[N, 4]`` ``(x1, y1, x2, y2)`` (:mod:`sppcore.boxes`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from sppcore.boxes import box_iou

__all__ = [
    "FOREGROUND",
    "BACKGROUND",
    "IGNORED",
    "Matches",
    "Matcher",
    "finetune_matcher",
    "regression_matcher",
    "svm_negative_matcher",
    "pretrain_background_matcher",
    "with_ground_truth",
]

# window labels (int8)
FOREGROUND = 1
BACKGROUND = 0
IGNORED = -1
_LABEL_NAMES = {FOREGROUND: "FOREGROUND", BACKGROUND: "BACKGROUND", IGNORED: "IGNORED"}


@dataclass(frozen=True)
class Matches:
    """What a :class:`Matcher` says about N windows.

    gt_index int64 [N]: the matched ground-truth box (largest IoU, first on ties), -1 when
    the image has none; iou float64 [N]: the IoU with it (0 without ground truth);
    labels int8 [N]: FOREGROUND, BACKGROUND or IGNORED.
    """

    gt_index: np.ndarray
    iou: np.ndarray
    labels: np.ndarray

    def class_targets(self, gt_labels) -> np.ndarray:
        """int64 [N] classification targets: the matched box's class + 1 for foreground
        windows, 0 for background, -1 for ignored ones. ``gt_labels`` int [G] in [0, K)."""
        gt_labels = np.asarray(gt_labels, dtype=np.int64).reshape(-1)
        targets = np.full(len(self.labels), -1, dtype=np.int64)
        targets[self.labels == BACKGROUND] = 0
        fg = self.labels == FOREGROUND
        targets[fg] = gt_labels[self.gt_index[fg]] + 1
        return targets


class Matcher:
    """Labels windows by their IoU with the ground truth.

    Args:
        thresholds: t_1 <= ... <= t_m, splitting the IoU axis into the m + 1 intervals
            ``(-inf, t_1), [t_1, t_2), ..., [t_m, +inf)``: lower bounds inclusive, upper
            bounds exclusive (equal thresholds make an empty interval).
        labels: m + 1 labels (FOREGROUND, BACKGROUND or IGNORED), one per interval.
        no_gt_label: the label of every window of an image without ground truth
            (BACKGROUND or IGNORED).

    ``Matcher([0.1, 0.5], [IGNORED, BACKGROUND, FOREGROUND])`` is fine-tuning's rule:
    IoU >= 0.5 foreground, [0.1, 0.5) background, below 0.1 ignored.
    """

    def __init__(self, thresholds: Sequence[float], labels: Sequence[int], no_gt_label: int = IGNORED):
        thresholds = tuple(float(t) for t in thresholds)
        labels = tuple(int(v) for v in labels)
        if any(math.isnan(t) for t in thresholds) or any(a > b for a, b in zip(thresholds, thresholds[1:])):
            raise ValueError(f"Matcher thresholds must be non-decreasing numbers, got {list(thresholds)}")
        if len(labels) != len(thresholds) + 1:
            raise ValueError(f"Matcher needs one label per interval: {len(thresholds)} thresholds make "
                             f"{len(thresholds) + 1} intervals, got {len(labels)} labels")
        if any(v not in _LABEL_NAMES for v in labels):
            raise ValueError(f"Matcher labels must be FOREGROUND (1), BACKGROUND (0) or IGNORED (-1), got {list(labels)}")
        if no_gt_label not in (BACKGROUND, IGNORED):
            raise ValueError(f"Matcher no_gt_label must be BACKGROUND (0) or IGNORED (-1), got {no_gt_label}")
        self.thresholds = thresholds
        self.labels = labels
        self.no_gt_label = int(no_gt_label)

    def __repr__(self) -> str:
        names = ", ".join(_LABEL_NAMES[v] for v in self.labels)
        return (f"Matcher(thresholds={list(self.thresholds)}, labels=[{names}], "
                f"no_gt_label={_LABEL_NAMES[self.no_gt_label]})")

    def label_iou(self, iou) -> np.ndarray:
        """int8 labels of IoU values (any shape): the label of the interval each falls
        in; NaN is IGNORED."""
        iou = np.asarray(iou, dtype=np.float64)
        out = np.full(iou.shape, self.labels[0], dtype=np.int8)
        for threshold, label in zip(self.thresholds, self.labels[1:]):
            out[iou >= threshold] = label
        out[np.isnan(iou)] = IGNORED
        return out

    def __call__(self, iou) -> Matches:
        """Match windows to ground truth from their IoU matrix float [N, G] (N = 0 and
        G = 0 work)."""
        iou = np.asarray(iou, dtype=np.float64)
        if iou.ndim != 2:
            raise ValueError(f"Matcher needs an IoU matrix [windows, ground truth], got shape {iou.shape}")
        n, g = iou.shape
        if g == 0:
            return Matches(np.full(n, -1, dtype=np.int64), np.zeros(n, dtype=np.float64),
                           np.full(n, self.no_gt_label, dtype=np.int8))
        gt_index = iou.argmax(axis=1).astype(np.int64)  # the first of equal maxima
        best = iou[np.arange(n), gt_index]
        return Matches(gt_index, best, self.label_iou(best))

    def match_boxes(self, windows, gt_boxes) -> Matches:
        """:meth:`__call__` on ``box_iou(windows [N, 4], gt_boxes [G, 4])``."""
        return self(box_iou(windows, gt_boxes))

    def labels_per_class(self, iou, gt_labels, num_classes: int) -> np.ndarray:
        """int8 [K, N]: row k labels the windows against the ground truth of class k only
        (a class without objects in the image gets ``no_gt_label``), for rules applied
        class by class such as the SVMs' negatives. ``iou`` [N, G], ``gt_labels`` int [G]."""
        iou = np.asarray(iou, dtype=np.float64)
        gt_labels = np.asarray(gt_labels, dtype=np.int64).reshape(-1)
        if iou.ndim != 2 or iou.shape[1] != len(gt_labels):
            raise ValueError(f"labels_per_class: IoU matrix of shape {iou.shape} for {len(gt_labels)} "
                             "ground-truth labels")
        out = np.empty((int(num_classes), iou.shape[0]), dtype=np.int8)
        for k in range(int(num_classes)):
            out[k] = self(iou[:, gt_labels == k]).labels
        return out


def finetune_matcher(fg_iou: float, bg_iou_low: float) -> Matcher:
    """Fine-tuning's sampling (SPP-net section 4, after R-CNN): IoU >= ``fg_iou``
    foreground (the matched object's class), ``[bg_iou_low, fg_iou)`` background, lower
    ignored; an image without objects gives no background interval, so all ignored."""
    return Matcher([bg_iou_low, fg_iou], [IGNORED, BACKGROUND, FOREGROUND], no_gt_label=IGNORED)


def regression_matcher(min_iou: float) -> Matcher:
    """Box-regression examples (R-CNN appendix C): IoU >= ``min_iou`` with the matched
    object, whose box is the regression target; everything else unused."""
    return Matcher([min_iou], [IGNORED, FOREGROUND], no_gt_label=IGNORED)


def svm_negative_matcher(negative_iou: float) -> Matcher:
    """R-CNN's SVM negatives, applied per class (:meth:`Matcher.labels_per_class`): IoU <
    ``negative_iou`` with every object of the class is background; the positives are the
    ground-truth boxes themselves, so nothing here is foreground."""
    return Matcher([negative_iou], [BACKGROUND, IGNORED], no_gt_label=BACKGROUND)


def pretrain_background_matcher(background_iou: float, near_iou: float | None = None) -> Matcher:
    """Background crops of pretraining: IoU < ``background_iou`` with every object; with
    ``near_iou`` only ``[near_iou, background_iou)`` (a background window near an object).
    An image without objects takes any window as background."""
    if near_iou is None:
        return Matcher([background_iou], [BACKGROUND, IGNORED], no_gt_label=BACKGROUND)
    return Matcher([near_iou, background_iou], [IGNORED, BACKGROUND, IGNORED], no_gt_label=BACKGROUND)


def with_ground_truth(windows, gt_boxes) -> np.ndarray:
    """float32 [N + G, 4]: the windows followed by the ground-truth boxes, which then
    count as windows matching themselves (IoU 1)."""
    windows = np.asarray(windows).reshape(-1, 4)
    gt_boxes = np.asarray(gt_boxes).reshape(-1, 4)
    return np.concatenate([windows, gt_boxes]).astype(np.float32)
