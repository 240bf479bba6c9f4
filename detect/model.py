"""A trained detector on disk: the model directory written by ``tools/train_svm.py``.

Layout (plain formats only, no pickle)::

    MODEL_DIR/
        config.yaml         the resolved config the model was trained with
        classes.txt         class names in label order
        svm.npz             weights [K, D] float32, bias [K] float32 (score = x @ W.T + b on
                            unscaled features of layer ``svm_layer``), feature_scale
        bbox_reg.npz        optional: BoxRegressor arrays (layer in model.json)
        model.json          layers, feature dimension, method, network file
        network.npz/.json   the trunk + fc head the features came from (absent when the
                            config's ImageNet weights reproduce it exactly)
        train_report.json   per-class positives, negatives, mining rounds, seconds
        train.log           the training log
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass

import numpy as np

from detect.bbox_regression import BoxRegressor
from detect.config import Config, load_config, save_config
from detect.errors import UserError
from detect.fileio import atomic_save_npz, atomic_write_json, atomic_write_text, load_npz

__all__ = ["DetectionModel", "save_model", "load_model"]

MODEL_FORMAT_VERSION = 1


@dataclass
class DetectionModel:
    """Everything needed to score windows, besides the network itself."""

    config: Config
    classes: tuple[str, ...]
    svm_layer: str
    svm_weights: np.ndarray  # float32 [K, D]
    svm_bias: np.ndarray  # float32 [K]
    feature_scale: float
    regressor: BoxRegressor | None = None
    bbox_layer: str = "pool5"
    network_file: str | None = None  # path of the network weights (inside the model dir)


def save_model(model: DetectionModel, directory: str) -> None:
    os.makedirs(directory, exist_ok=True)
    save_config(model.config, os.path.join(directory, "config.yaml"))
    atomic_write_text(os.path.join(directory, "classes.txt"), "\n".join(model.classes) + "\n")
    atomic_save_npz(
        os.path.join(directory, "svm.npz"),
        weights=np.asarray(model.svm_weights, np.float32),
        bias=np.asarray(model.svm_bias, np.float32),
        feature_scale=np.float32(model.feature_scale),
    )
    if model.regressor is not None:
        atomic_save_npz(os.path.join(directory, "bbox_reg.npz"), **model.regressor.to_arrays())
    network_file = None
    if model.network_file:
        network_file = os.path.relpath(os.path.abspath(model.network_file), os.path.abspath(directory))
    atomic_write_json(
        os.path.join(directory, "model.json"),
        {
            "format_version": MODEL_FORMAT_VERSION,
            "method": model.config.features.method,
            "svm_layer": model.svm_layer,
            "bbox_layer": model.bbox_layer,
            "feature_dim": int(np.asarray(model.svm_weights).shape[1]),
            "num_classes": len(model.classes),
            "bbox_regression": model.regressor is not None,
            "network_file": network_file,
        },
    )


def load_model(directory: str) -> DetectionModel:
    """Read a model directory; a missing or malformed part is a one-line UserError."""
    meta_path = os.path.join(directory, "model.json")
    if not os.path.isfile(meta_path):
        raise UserError(f"{directory}: not a model directory (no model.json); train one with tools/train_svm.py")
    try:
        with open(meta_path, encoding="utf-8") as f:
            meta = json.load(f)
        if meta.get("format_version") != MODEL_FORMAT_VERSION:
            raise UserError(f"{meta_path}: unsupported model format {meta.get('format_version')!r}")
        cfg = load_config(os.path.join(directory, "config.yaml"))
        with open(os.path.join(directory, "classes.txt"), encoding="utf-8") as f:
            classes = tuple(line.strip() for line in f if line.strip())
        svm = load_npz(os.path.join(directory, "svm.npz"))
        regressor = None
        if meta.get("bbox_regression"):
            regressor = BoxRegressor.from_arrays(load_npz(os.path.join(directory, "bbox_reg.npz")))
    except (OSError, ValueError, KeyError) as e:
        raise UserError(f"{directory}: cannot read model ({e})") from None
    network_file = meta.get("network_file")
    if network_file:
        network_file = os.path.join(directory, network_file)
    if svm["weights"].shape != (len(classes), meta["feature_dim"]):
        raise UserError(f"{directory}/svm.npz: weights shape {svm['weights'].shape} does not match classes.txt")
    return DetectionModel(
        config=cfg,
        classes=classes,
        svm_layer=meta["svm_layer"],
        svm_weights=svm["weights"],
        svm_bias=svm["bias"],
        feature_scale=float(svm["feature_scale"]),
        regressor=regressor,
        bbox_layer=meta.get("bbox_layer", "pool5"),
        network_file=network_file,
    )
