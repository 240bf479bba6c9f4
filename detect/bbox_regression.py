"""Class-specific bounding-box regression (R-CNN appendix C; SPP-net section 4).

Per class, a ridge regression from a window's feature vector (pool5 in the papers) to the
targets ``(tx, ty, tw, th)`` of :func:`sppcore.boxes.bbox_targets`, trained on proposals
whose IoU with their best ground truth is at least ``min_iou`` (SPP-net code: 0.5,
lambda 4000; R-CNN: 0.6, lambda 1000). As in R-CNN's code the targets are centred before
the fit (the mean is added back at prediction) and the bias is not penalised.

Numpy only: the caller extracts the features.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from sppcore.boxes import apply_bbox_deltas, bbox_targets
from sppcore.matcher import FOREGROUND, regression_matcher

__all__ = [
    "BoxRegressor",
    "select_regression_examples",
    "fit_ridge",
    "fit_ridge_reference",
    "fit_box_regressor",
]

log = logging.getLogger(__name__)


def select_regression_examples(proposals, gt_boxes, gt_labels, min_iou: float,
                               max_per_object: int = 0, rng: np.random.Generator | None = None):
    """Proposals matched to their best ground truth with IoU >= ``min_iou``
    (:func:`sppcore.matcher.regression_matcher`).

    Returns ``(index [M] into proposals, matched gt box [M, 4], label [M])``, indices
    ascending. Ground-truth boxes themselves are valid examples too (IoU 1) when they are
    among the proposals. With ``max_per_object > 0`` each ground truth keeps at most that
    many of its matches: the best-overlapping one (the ground truth itself, when present)
    and a random sample of the rest (``rng``, seeded by the caller), which bounds the
    store of regression features on data with many overlapping proposals.
    """
    proposals = np.asarray(proposals, dtype=np.float32).reshape(-1, 4)
    gt_boxes = np.asarray(gt_boxes, dtype=np.float32).reshape(-1, 4)
    gt_labels = np.asarray(gt_labels, dtype=np.int64).reshape(-1)
    matches = regression_matcher(min_iou).match_boxes(proposals, gt_boxes)
    best, best_iou = matches.gt_index, matches.iou
    keep = np.flatnonzero(matches.labels == FOREGROUND)
    if max_per_object > 0:
        rng = rng if rng is not None else np.random.default_rng(0)
        kept = []
        for j in range(len(gt_boxes)):
            mine = keep[best[keep] == j]
            if len(mine) > max_per_object:
                top = mine[np.argmax(best_iou[mine])]
                rest = mine[mine != top]
                mine = np.concatenate([[top], rng.choice(rest, size=max_per_object - 1, replace=False)])
            kept.append(mine)
        keep = np.sort(np.concatenate(kept)) if kept else keep
    return keep.astype(np.int64), gt_boxes[best[keep]], gt_labels[best[keep]]


def fit_ridge(X: np.ndarray, Y: np.ndarray, ridge_lambda: float) -> tuple[np.ndarray, np.ndarray]:
    """Minimise ``||X W + 1 b - Y||^2 + lambda ||W||^2`` (bias unpenalised).

    X float [M, D], Y float [M, T] -> (W [D, T], b [T]), float64. Solved in the smaller of
    the primal (D x D) and dual (M x M) forms. Reference: :func:`fit_ridge_reference`.
    """
    X = np.asarray(X, dtype=np.float64)
    Y = np.asarray(Y, dtype=np.float64)
    x_mean = X.mean(axis=0)
    y_mean = Y.mean(axis=0)
    Xc = X - x_mean
    Yc = Y - y_mean
    m, d = Xc.shape
    if d <= m:
        A = Xc.T @ Xc
        A[np.diag_indices_from(A)] += ridge_lambda
        W = np.linalg.solve(A, Xc.T @ Yc)
    else:  # dual: W = Xc^T (Xc Xc^T + lambda I)^-1 Yc
        K = Xc @ Xc.T
        K[np.diag_indices_from(K)] += ridge_lambda
        W = Xc.T @ np.linalg.solve(K, Yc)
    b = y_mean - x_mean @ W
    return W, b


def fit_ridge_reference(X, Y, ridge_lambda: float):
    """Obviously correct ridge: one least-squares solve on an augmented system where the
    bias column carries no penalty (used to test :func:`fit_ridge`)."""
    X = np.asarray(X, dtype=np.float64)
    Y = np.asarray(Y, dtype=np.float64)
    m, d = X.shape
    Xa = np.concatenate([X, np.ones((m, 1))], axis=1)
    reg = np.sqrt(ridge_lambda) * np.eye(d + 1)[:d]  # no row for the bias
    A = np.concatenate([Xa, reg], axis=0)
    B = np.concatenate([Y, np.zeros((d, Y.shape[1]))], axis=0)
    sol, *_ = np.linalg.lstsq(A, B, rcond=None)
    return sol[:d], sol[d]


@dataclass
class BoxRegressor:
    """Per-class linear regressors: ``deltas = (features * scale) @ weights[k] + bias[k]``.

    weights float32 [K, D, 4], bias float32 [K, 4]; a class with no training example has
    zero weights and bias (its boxes are left unchanged). ``trained`` bool [K].
    """

    weights: np.ndarray
    bias: np.ndarray
    feature_scale: float
    trained: np.ndarray

    def predict_deltas(self, features: np.ndarray, labels: np.ndarray) -> np.ndarray:
        """features [N, D], labels [N] -> deltas float32 [N, 4]."""
        features = np.asarray(features, dtype=np.float32)
        labels = np.asarray(labels, dtype=np.int64).reshape(-1)
        out = np.zeros((len(labels), 4), dtype=np.float32)
        for k in np.unique(labels):
            rows = labels == k
            out[rows] = (features[rows] * self.feature_scale) @ self.weights[k] + self.bias[k]
        return out

    def predict_all_classes(self, features: np.ndarray) -> np.ndarray:
        """features [N, D] -> deltas float32 [N, K, 4] (one regression per class)."""
        x = np.asarray(features, dtype=np.float32) * self.feature_scale
        return np.einsum("nd,kdt->nkt", x, self.weights, optimize=True) + self.bias[None]

    def predict_all_classes_tensor(self, features):
        """:meth:`predict_all_classes` of a Tensor [N, D] on any device: float32 Tensor
        [N, K, 4] there (the weights are copied to that device once)."""
        from detect.device_postprocess import arrays_on_device

        k, d, _ = self.weights.shape
        # weights as [D, K * 4]: one matrix product for every class
        t = arrays_on_device(self, features.device, weights=lambda: self.weights.transpose(1, 0, 2).reshape(d, k * 4),
                             bias=self.bias)
        x = features.float() * self.feature_scale
        return (x @ t["weights"]).reshape(len(x), -1, 4) + t["bias"][None]

    def apply(self, boxes: np.ndarray, features: np.ndarray, labels: np.ndarray) -> np.ndarray:
        """Regressed boxes [N, 4] for windows ``boxes`` of classes ``labels``."""
        return apply_bbox_deltas(boxes, self.predict_deltas(features, labels))

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {
            "weights": self.weights,
            "bias": self.bias,
            "feature_scale": np.float32(self.feature_scale),
            "trained": self.trained,
        }

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> "BoxRegressor":
        return cls(
            weights=np.asarray(arrays["weights"], dtype=np.float32),
            bias=np.asarray(arrays["bias"], dtype=np.float32),
            feature_scale=float(arrays["feature_scale"]),
            trained=np.asarray(arrays["trained"], dtype=bool),
        )


def fit_box_regressor(
    features: np.ndarray,
    proposals: np.ndarray,
    matched_gt: np.ndarray,
    labels: np.ndarray,
    num_classes: int,
    ridge_lambda: float,
    feature_scale: float = 1.0,
    min_examples: int = 4,
) -> BoxRegressor:
    """Fit one ridge regressor per class.

    features float [M, D] of the training windows, proposals [M, 4] the windows,
    matched_gt [M, 4] their best ground truth, labels [M] its class. Classes with fewer than
    ``min_examples`` windows keep zero weights.
    """
    # any float dtype (the training store keeps float16); each class's rows are converted
    # on their own, so the whole array is never copied
    features = np.asarray(features)
    labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    d = features.shape[1] if features.ndim == 2 else 0
    weights = np.zeros((num_classes, d, 4), dtype=np.float32)
    bias = np.zeros((num_classes, 4), dtype=np.float32)
    trained = np.zeros(num_classes, dtype=bool)
    targets = bbox_targets(proposals, matched_gt)
    for k in range(num_classes):
        rows = np.flatnonzero(labels == k)
        if len(rows) < min_examples:
            log.warning("bbox regression: class %d has %d examples; left untrained", k, len(rows))
            continue
        W, b = fit_ridge(features[rows].astype(np.float64) * feature_scale, targets[rows], ridge_lambda)
        weights[k], bias[k], trained[k] = W, b, True
    return BoxRegressor(weights=weights, bias=bias, feature_scale=float(feature_scale), trained=trained)
