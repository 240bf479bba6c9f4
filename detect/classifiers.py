"""What turns a window's feature vector into K class scores (numpy, no torch).

Two implementations, chosen by ``classifier.type`` and recorded in the model directory:

* ``svm``: per-class linear SVMs trained with hard-negative mining on the features of
  ``features.layer`` (R-CNN and SPP-net): ``score = x @ W.T + b``, a margin, not a
  probability.
* ``softmax``: the fine-tuned (K + 1)-way fc8 on fc7 (what Fast R-CNN later used): the
  softmax over its K + 1 outputs with the background column (column 0, the label
  :func:`detect.finetune.label_windows` gives background) dropped, so column k is
  ``classes[k]``. Nothing is trained for it besides the network: R-CNN reports that
  replacing the SVMs by the fine-tuned softmax cost 3.3 points of mAP (54.2 -> 50.9).

Every classifier has the same small interface, so loading, scoring and the tools never
ask which one a model holds (only training differs: SVMs are mined, the softmax is taken
from the network):

* ``name`` (its key in :data:`CLASSIFIERS`), ``file`` (its arrays in the model directory);
* ``layer``: the feature layer it reads; ``num_classes``, ``feature_dim``;
* ``score(features float32 [N, D]) -> float32 [N, K]``, and ``score_tensor``, its twin on
  a torch Tensor of any device (the scores stay there: :mod:`detect.device_postprocess`);
* ``show_threshold``: the score above which a detection is worth showing by default
  (``tools/demo.py``);
* ``to_arrays()`` and ``from_arrays(arrays, layer)`` for the ``.npz`` file; ``from_arrays``
  raises ``ValueError`` for arrays of the wrong shape.
"""
from __future__ import annotations

import numpy as np

from detect.detector import score_windows
from sppcore.errors import UserError


def _check_tensor(features, dim: int):
    if features.ndim != 2 or features.shape[1] != dim:
        raise ValueError(f"features must be [N, {dim}], got {list(features.shape)}")
    return features

__all__ = ["LinearSVMClassifier", "SoftmaxClassifier", "CLASSIFIERS", "softmax_from_fc8", "FC8_INPUT_LAYER"]

# fc8 reads fc7 (detect.trunks.FCHead)
FC8_INPUT_LAYER = "fc7"


def _features(features: np.ndarray, dim: int) -> np.ndarray:
    features = np.asarray(features, dtype=np.float32)
    if features.ndim != 2 or features.shape[1] != dim:
        raise ValueError(f"features must be [N, {dim}], got {list(features.shape)}")
    return features


class LinearSVMClassifier:
    """Per-class linear SVMs: ``weights`` float32 [K, D], ``bias`` float32 [K] on the
    unscaled features of ``layer``; ``feature_scale`` is the factor they were trained
    with (already folded into the weights, kept for the record)."""

    name = "svm"
    file = "svm.npz"
    show_threshold = 0.0  # a positive margin: on the object's side of the hyperplane

    def __init__(self, layer: str, weights: np.ndarray, bias: np.ndarray, feature_scale: float):
        self.layer = layer
        self.weights = np.asarray(weights, np.float32)
        self.bias = np.asarray(bias, np.float32)
        self.feature_scale = float(feature_scale)
        if self.weights.ndim != 2 or self.bias.shape != (self.weights.shape[0],):
            raise ValueError(f"SVM weights {list(self.weights.shape)} and bias {list(self.bias.shape)} do not match")

    @property
    def num_classes(self) -> int:
        return self.weights.shape[0]

    @property
    def feature_dim(self) -> int:
        return self.weights.shape[1]

    def score(self, features: np.ndarray) -> np.ndarray:
        """features float32 [N, D] -> scores float32 [N, K] = ``features @ W.T + b``."""
        return score_windows(_features(features, self.feature_dim), self.weights, self.bias)

    def score_tensor(self, features):
        """:meth:`score` of a Tensor [N, D] on any device: float32 Tensor [N, K] there."""
        from detect.device_postprocess import arrays_on_device

        t = arrays_on_device(self, features.device, weights=self.weights, bias=self.bias)
        return _check_tensor(features, self.feature_dim).float() @ t["weights"].T + t["bias"]

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {"weights": self.weights, "bias": self.bias, "feature_scale": np.float32(self.feature_scale)}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], layer: str) -> "LinearSVMClassifier":
        return cls(layer, arrays["weights"], arrays["bias"], float(arrays["feature_scale"]))


class SoftmaxClassifier:
    """The (K + 1)-way fc8 as a classifier: ``weights`` float32 [K + 1, D] and ``bias``
    float32 [K + 1] on fc7 (row 0 background, row k + 1 class k); scores are the class
    probabilities, background's column dropped."""

    name = "softmax"
    file = "softmax.npz"
    show_threshold = 0.5  # the class is likelier than background and every other class together

    def __init__(self, weights: np.ndarray, bias: np.ndarray, layer: str = FC8_INPUT_LAYER):
        if layer != FC8_INPUT_LAYER:
            raise ValueError(f"fc8 reads {FC8_INPUT_LAYER}, not {layer}")
        self.layer = layer
        self.weights = np.asarray(weights, np.float32)
        self.bias = np.asarray(bias, np.float32)
        if self.weights.ndim != 2 or self.weights.shape[0] < 2 or self.bias.shape != (self.weights.shape[0],):
            raise ValueError(f"fc8 weights {list(self.weights.shape)} and bias {list(self.bias.shape)} "
                             "do not form a (K + 1)-way classifier")

    @property
    def num_classes(self) -> int:
        return self.weights.shape[0] - 1

    @property
    def feature_dim(self) -> int:
        return self.weights.shape[1]

    def score(self, features: np.ndarray) -> np.ndarray:
        """fc7 float32 [N, D] -> float32 [N, K]: softmax over fc8's K + 1 outputs, column 0
        (background) dropped; each row sums to 1 minus the background probability."""
        features = _features(features, self.feature_dim)
        if features.shape[0] == 0:
            return np.zeros((0, self.num_classes), np.float32)
        logits = features.astype(np.float64) @ self.weights.T.astype(np.float64) + self.bias
        logits -= logits.max(axis=1, keepdims=True)  # exp cannot overflow; the softmax is unchanged
        prob = np.exp(logits)
        prob /= prob.sum(axis=1, keepdims=True)
        return prob[:, 1:].astype(np.float32)

    def score_tensor(self, features):
        """:meth:`score` of a Tensor [N, D] on any device (float64 logits, as there):
        float32 Tensor [N, K] there."""
        import torch

        from detect.device_postprocess import arrays_on_device

        t = arrays_on_device(self, features.device, weights=lambda: self.weights.astype(np.float64),
                             bias=lambda: self.bias.astype(np.float64))
        logits = _check_tensor(features, self.feature_dim).double() @ t["weights"].T + t["bias"]
        return torch.softmax(logits, dim=1)[:, 1:].float()

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {"weights": self.weights, "bias": self.bias}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], layer: str = FC8_INPUT_LAYER) -> "SoftmaxClassifier":
        return cls(arrays["weights"], arrays["bias"], layer)


# classifier.type -> implementation (detect.config RULES["classifier.type"] names the same)
CLASSIFIERS = {"svm": LinearSVMClassifier, "softmax": SoftmaxClassifier}


def softmax_from_fc8(weights: np.ndarray | None, bias: np.ndarray | None, trained_classes, classes,
                     where: str) -> SoftmaxClassifier:
    """The softmax classifier of a network's fc8 (``weights`` [K + 1, D], ``bias`` [K + 1];
    None when the network has no fc8) trained for ``trained_classes`` (the class names
    fine-tuning recorded, in label order; None when no record exists), for a dataset of
    ``classes``. Anything but an fc8 trained for exactly these classes, in this
    order, is a one-line :class:`UserError` naming ``where`` (the network file)."""
    remedy = "fine-tune one on this dataset with tools/finetune_fc.py and set network.weights to it"
    if weights is None:
        raise UserError(f"{where}: the network has no fc8, which classifier.type=softmax scores with; {remedy}")
    if trained_classes is None:
        raise UserError(f"{where}: no record of the classes its fc8 was trained for (classifier.type=softmax "
                        f"needs an fc8 trained for {list(classes)}); {remedy}")
    if list(trained_classes) != list(classes):
        raise UserError(f"{where}: fc8 was trained for classes {list(trained_classes)}, not the dataset's "
                        f"{list(classes)}; {remedy}")
    if np.shape(weights)[0] != len(classes) + 1:
        raise UserError(f"{where}: fc8 has {np.shape(weights)[0]} outputs, not {len(classes) + 1} "
                        f"(background + {len(classes)} classes); {remedy}")
    return SoftmaxClassifier(weights, bias)
