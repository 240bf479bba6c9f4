"""A trained detector on disk: the model directory written by ``tools/train_svm.py``.

Layout (plain formats only, no pickle)::

    MODEL_DIR/
        config.yaml         the resolved config the model was trained with
        classes.txt         class names in label order
        svm.npz             classifier ``svm``: weights [K, D] float32, bias [K] float32
                            (score = x @ W.T + b on unscaled features of layer
                            ``svm_layer``), feature_scale
        softmax.npz         classifier ``softmax``: fc8's weights [K + 1, D] float32 and bias
                            [K + 1] (on fc7; row 0 background), see detect/classifiers.py
        bbox_reg.npz        optional: BoxRegressor arrays (layer in model.json)
        model.json          classifier type, layers (``svm_layer``: the layer the classifier
                            reads, whichever it is), feature dimension, method, network file
        network.npz/.json   the trunk + fc head the features came from (absent when the
                            config's ImageNet weights reproduce it exactly)
        train_report.json   per-class positives, negatives, mining rounds, seconds
        manifest.json       the seal, written last: the training key and the SHA-256 of
                            every file above; the model's digest identifies it in results
        train.log           the training log (not sealed)
        work/               training checkpoints (positives, mining state; not sealed)

A model directory is complete or unusable: :func:`save_model` first removes the seal, then
writes the files (each atomically) and writes the seal last; :func:`load_model` refuses a
directory whose seal is missing or whose files no longer match it (a retrain interrupted
while writing, a truncated or edited file). Training writes nothing into the directory
before its model files are ready, so an interrupted retrain leaves the previous model
usable.

Format 3 records the classifier type in model.json; a format 2 directory names none, holds
SVMs and still loads.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass

import numpy as np

from detect.bbox_regression import BoxRegressor
from detect.classifiers import CLASSIFIERS
from detect.config import Config, load_config, save_config
from sppcore.errors import UserError
from sppcore.fileio import (atomic_save_npz, atomic_write_json, atomic_write_text, load_npz, read_seal,
                           seal_directory, unseal_directory)

__all__ = ["DetectionModel", "save_model", "load_model", "sealed_model_key"]

MODEL_FORMAT_VERSION = 3
# the formats load_model reads; format 2 has no "classifier" in model.json: SVMs
READABLE_FORMATS = (2, 3)


@dataclass
class DetectionModel:
    """Everything needed to score windows, besides the network itself. ``classifier`` is
    one of :data:`detect.classifiers.CLASSIFIERS` (its ``score`` gives the class scores)."""

    config: Config
    classes: tuple[str, ...]
    classifier: object
    regressor: BoxRegressor | None = None
    bbox_layer: str = "pool5"
    network_file: str | None = None  # path of the network weights (inside the model dir)
    digest: str = ""  # the sealed content's digest (set by save_model / load_model)

    @property
    def svm_layer(self) -> str:
        """The feature layer the classifier reads (SVMs: ``features.layer``; softmax: fc7)."""
        return self.classifier.layer

    def _svm(self):
        if self.classifier.name != "svm":
            raise AttributeError(f"a {self.classifier.name} model has no SVMs")
        return self.classifier

    @property
    def svm_weights(self) -> np.ndarray:
        """float32 [K, D] of an SVM model (AttributeError for another classifier)."""
        return self._svm().weights

    @property
    def svm_bias(self) -> np.ndarray:
        """float32 [K] of an SVM model (AttributeError for another classifier)."""
        return self._svm().bias

    @property
    def feature_scale(self) -> float:
        """The SVMs' training feature scale (AttributeError for another classifier)."""
        return self._svm().feature_scale


def save_model(model: DetectionModel, directory: str, key: object = "") -> str:
    """Write the model directory (see the module docstring) and seal it with ``key`` (what
    the model was trained from); returns the model's digest."""
    os.makedirs(directory, exist_ok=True)
    unseal_directory(directory)
    classifier = model.classifier
    if classifier.num_classes != len(model.classes):
        raise ValueError(f"the classifier scores {classifier.num_classes} classes, the model has {len(model.classes)}")
    files = ["config.yaml", "classes.txt", classifier.file, "model.json"]
    save_config(model.config, os.path.join(directory, "config.yaml"))
    atomic_write_text(os.path.join(directory, "classes.txt"), "\n".join(model.classes) + "\n")
    atomic_save_npz(os.path.join(directory, classifier.file), **classifier.to_arrays())
    if model.regressor is not None:
        atomic_save_npz(os.path.join(directory, "bbox_reg.npz"), **model.regressor.to_arrays())
        files.append("bbox_reg.npz")
    network_file = None
    if model.network_file:
        network_file = os.path.relpath(os.path.abspath(model.network_file), os.path.abspath(directory))
        files += [network_file, network_file + ".json"]
    atomic_write_json(
        os.path.join(directory, "model.json"),
        {
            "format_version": MODEL_FORMAT_VERSION,
            "classifier": classifier.name,
            "method": model.config.features.method,
            "levels": list(model.config.network.levels),
            "svm_layer": classifier.layer,
            "bbox_layer": model.bbox_layer,
            "feature_dim": int(classifier.feature_dim),
            "num_classes": len(model.classes),
            "bbox_regression": model.regressor is not None,
            "network_file": network_file,
        },
    )
    if os.path.isfile(os.path.join(directory, "train_report.json")):
        files.append("train_report.json")
    model.digest = seal_directory(directory, files, key)
    return model.digest


def sealed_model_key(directory: str) -> str | None:
    """The key a complete, intact model directory was sealed with (None otherwise)."""
    manifest, _ = read_seal(directory)
    return None if manifest is None else manifest["key"]


def load_model(directory: str) -> DetectionModel:
    """Read a model directory; a missing, incomplete or malformed part is a one-line
    UserError."""
    meta_path = os.path.join(directory, "model.json")
    if not os.path.isfile(meta_path):
        raise UserError(f"{directory}: not a model directory (no model.json); train one with tools/train_svm.py")
    manifest, reason = read_seal(directory)
    if manifest is None:
        raise UserError(f"not a usable model: {reason}; train it again with tools/train_svm.py")
    try:
        with open(meta_path, encoding="utf-8") as f:
            meta = json.load(f)
        if meta.get("format_version") not in READABLE_FORMATS:
            raise UserError(f"{meta_path}: unsupported model format {meta.get('format_version')!r} "
                            f"(this version reads {', '.join(map(str, READABLE_FORMATS))}); train the model again")
        name = meta.get("classifier", "svm") if meta["format_version"] == 2 else meta["classifier"]
        if name not in CLASSIFIERS:
            raise UserError(f"{meta_path}: unknown classifier {name!r} (this version knows "
                            f"{', '.join(CLASSIFIERS)}); train the model again")
        kind = CLASSIFIERS[name]
        cfg = load_config(os.path.join(directory, "config.yaml"))
        with open(os.path.join(directory, "classes.txt"), encoding="utf-8") as f:
            classes = tuple(line.strip() for line in f if line.strip())
        classifier = kind.from_arrays(load_npz(os.path.join(directory, kind.file)), meta["svm_layer"])
        regressor = None
        if meta["bbox_regression"]:
            regressor = BoxRegressor.from_arrays(load_npz(os.path.join(directory, "bbox_reg.npz")))
        feature_dim = int(meta["feature_dim"])
        bbox_layer, network_file = meta["bbox_layer"], meta["network_file"]
    except UserError:
        raise
    except Exception as e:  # whatever a damaged file raises: one line, never a traceback
        raise UserError(f"{directory}: cannot read model ({type(e).__name__}: {e})") from None
    if network_file:
        network_file = os.path.join(directory, network_file)
    if (classifier.num_classes, classifier.feature_dim) != (len(classes), feature_dim):
        raise UserError(f"{directory}/{kind.file}: weights shape {list(classifier.weights.shape)} does not match "
                        f"classes.txt ({len(classes)} classes) and model.json (feature_dim {feature_dim})")
    return DetectionModel(
        config=cfg,
        classes=classes,
        classifier=classifier,
        regressor=regressor,
        bbox_layer=bbox_layer,
        network_file=network_file,
        digest=manifest["digest"],
    )
