"""Experiment configuration: frozen dataclasses loaded from YAML, ``--set`` overrides.

A config file is YAML whose top-level keys are the sections of :class:`Config`. A file may
start from another with ``_base_: other.yaml`` (path relative to the file); its keys are
merged over the base, section by section. Command-line overrides use dotted keys,
``--set svm.C=0.01 features.scales=[480,688]``; values are parsed as YAML.

An unknown key or a value of the wrong type is a :class:`ConfigError` naming the key.
Each section is its own dataclass so that a stage can hash exactly the settings it depends
on (changing the SVM's C must not recompute proposals): see :func:`section_hash`.
"""
from __future__ import annotations

import dataclasses
import math
import os
import types
import typing
from dataclasses import dataclass, field
from typing import Any

import yaml

from detect.errors import UserError
from detect.fileio import atomic_write_text, stable_hash
from proposals.config import ProposalConfig
from svm.config import SVMConfig

__all__ = [
    "ConfigError",
    "Config",
    "DataConfig",
    "NetworkConfig",
    "FeatureConfig",
    "BBoxRegConfig",
    "FinetuneConfig",
    "TestConfig",
    "PretrainConfig",
    "ProposalConfig",
    "SVMConfig",
    "load_config",
    "build_config",
    "config_to_dict",
    "save_config",
    "parse_overrides",
    "section_hash",
]


class ConfigError(UserError, ValueError):
    """A config file or override is malformed: unknown key, wrong type, bad value."""


@dataclass(frozen=True)
class DataConfig:
    # VOC2007-layout directory holding JPEGImages/, Annotations/, ImageSets/Main/
    root: str = "data/builtin/VOC2007"
    # image set used for training (SVMs, regressors, fine-tuning)
    train_set: str = "trainval"
    # image set used by test_net
    test_set: str = "test"
    # class names in label order; empty: inferred from ImageSets/Main/<class>_<set>.txt
    classes: tuple[str, ...] = ()
    # "difficult" ground truth used as training positives (R-CNN/SPP-net scripts: yes)
    train_difficult: bool = True


@dataclass(frozen=True)
class NetworkConfig:
    # conv trunk: compact | zf5 | alexnet | vgg16
    trunk: str = "compact"
    # imagenet (torchvision weights) | random | path to a state-dict file (trunk + heads)
    weights: str = "random"
    # seed for random initialisation
    init_seed: int = 0
    # width of fc6 and fc7 (4096 in the papers)
    fc_dim: int = 4096
    # dropout before fc7 and fc8 while training
    dropout: float = 0.5


@dataclass(frozen=True)
class FeatureConfig:
    # spp: pool windows from one whole-image conv5 map per scale; rcnn: warp each window
    method: str = "spp"
    # shorter image side at each scale (paper: 688 for 1 scale; 480..1200 for 5 scales)
    scales: tuple[int, ...] = (688,)
    # cap on the longer side after scaling, so huge inputs cannot exhaust memory
    max_side: int = 2000
    # multi-scale: each window is pooled at the scale where its area is closest to this^2
    scale_target_size: int = 224
    # pyramid levels n (n x n bins each); paper: 6, 3, 2, 1 -> 50 bins
    levels: tuple[int, ...] = (6, 3, 2, 1)
    # feature layer fed to the SVMs: pool5 | fc6 | fc7
    layer: str = "fc7"
    # R-CNN: warped crop side (227 for AlexNet/ZF-5, 224 for VGG16)
    rcnn_crop_size: int = 227
    # R-CNN: context pixels around each window at the warped size
    rcnn_context_pad: int = 16
    # windows per batch through the fc layers (larger batches run faster on a CPU)
    batch_size: int = 1024
    # R-CNN: warped crops per batch through the conv layers
    rcnn_crop_batch_size: int = 32
    # 0: exact fc6/fc7; > 0: truncated-SVD fc6/fc7 with this rank (Fast R-CNN, section 3.1)
    fc_svd_rank: int = 0
    # where the network layers run: cpu, cuda or cuda:N (pooling and warping stay on the CPU)
    device: str = "cpu"


@dataclass(frozen=True)
class BBoxRegConfig:
    # train and apply class-specific bounding-box regression
    enabled: bool = True
    # ridge penalty (SPP-net code: 4000; R-CNN: 1000)
    ridge_lambda: float = 4000.0
    # proposals with IoU >= this to their best ground truth are training examples
    min_iou: float = 0.5
    # at most this many examples per ground-truth object (itself and a seeded sample of its
    # matching proposals; 0: all). The papers used all; the cap bounds the stored pool5
    # vectors (VOC07 trainval at 12,800-d: ~21 per object would be ~7 GB in float16)
    max_examples_per_object: int = 8
    # feature layer the regressors read (the paper: pool5)
    layer: str = "pool5"


@dataclass(frozen=True)
class FinetuneConfig:
    # fine-tune fc6, fc7 and a new (K+1)-way fc8 on pooled conv5 vectors before the SVMs
    enabled: bool = False
    # SGD iterations (mini-batches)
    iterations: int = 2000
    # learning rate (paper: 1e-4, then 1e-5 for the last sixth)
    lr: float = 1e-3
    # windows per mini-batch
    batch_size: int = 128
    # fraction of positives per mini-batch (paper: 25%)
    fg_fraction: float = 0.25
    # positives: IoU in [fg_iou, 1]
    fg_iou: float = 0.5
    # negatives: IoU in [bg_iou_low, fg_iou)
    bg_iou_low: float = 0.1


@dataclass(frozen=True)
class TestConfig:
    # per-class greedy NMS threshold (R-CNN / SPP-net: 0.3)
    nms_iou: float = 0.3
    # detections kept per class per image after NMS
    max_per_class: int = 100
    # detections scoring below this are dropped before NMS
    score_threshold: float = -math.inf


@dataclass(frozen=True)
class PretrainConfig:
    # VOC-layout root of the pretraining images ("" = data.root): the role ImageNet plays
    # for the paper, a larger set than the detector's own training images
    root: str = ""
    # image set whose object and background crops train the classifier
    train_set: str = "train"
    # held-out image set for the accuracy report
    val_set: str = "val"
    # crop sizes, one per crop epoch in turn (paper: 224 and 180; scaled to the compact trunk)
    sizes: tuple[int, ...] = (64, 52)
    # (lo, hi): every other epoch pools windows from whole images whose shorter side is
    # uniform in [lo, hi] (see detect/pretrain.py); empty: crop epochs only
    image_scales: tuple[float, ...] = ()
    # epochs over freshly drawn crops (and images)
    epochs: int = 8
    # crops per mini-batch
    batch_size: int = 32
    # peak AdamW learning rate (3% linear warm-up, cosine decay to 0)
    lr: float = 0.001
    # decoupled weight decay on weights (not on biases or batch-norm parameters)
    weight_decay: float = 0.0001
    # object boxes are jittered by up to this fraction of their size
    jitter: float = 0.1
    # background windows drawn per image and epoch
    background_per_image: int = 4
    # where the pretrained network is written ("" = <output_dir>/<name>/pretrain/network.npz)
    out: str = ""


@dataclass(frozen=True)
class Config:
    # experiment name, used for output directories
    name: str = "default"
    # where models and results go
    output_dir: str = "output"
    # where caches go (always safe to delete)
    cache_dir: str = "data/cache"
    # global random seed
    seed: int = 0
    data: DataConfig = field(default_factory=DataConfig)
    proposals: ProposalConfig = field(default_factory=ProposalConfig)
    network: NetworkConfig = field(default_factory=NetworkConfig)
    features: FeatureConfig = field(default_factory=FeatureConfig)
    svm: SVMConfig = field(default_factory=SVMConfig)
    bbox_reg: BBoxRegConfig = field(default_factory=BBoxRegConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    test: TestConfig = field(default_factory=TestConfig)
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)


# ----------------------------------------------------------------------------- building


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against the annotation ``tp``; return it in canonical form."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping (section), got {value!r}")
        return _build_dataclass(tp, value, key + ".")
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for alt in args:
            if alt is type(None):
                continue
            try:
                return _coerce(value, alt, key)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(f"{key}: {value!r} matches none of {_type_name(tp)}")
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"{key}: {value!r} is not one of {list(args)}")
        return value
    if origin is tuple:
        if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], f"{key}[{i}]") for i, v in enumerate(value))
        if len(args) != len(value):
            raise ConfigError(f"{key}: expected {len(args)} values, got {len(value)}")
        return tuple(_coerce(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(args, value)))
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true/false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads "1e-3" as a string
            try:
                value = float(value)
            except ValueError:
                raise ConfigError(f"{key}: expected a number, got {value!r}") from None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return value
    raise ConfigError(f"{key}: unsupported config type {_type_name(tp)}")


def _build_dataclass(cls: type, values: dict, prefix: str = "") -> Any:
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ConfigError(
            f"unknown key {prefix}{unknown[0]!s} (known in {prefix.rstrip('.') or 'top level'}: "
            f"{', '.join(sorted(fields))})"
        )
    kwargs = {name: _coerce(v, hints[name], prefix + name) for name, v in values.items()}
    try:
        obj = cls(**kwargs)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{prefix or 'config'}: {e}") from None
    return obj


def build_config(values: dict | None = None) -> Config:
    """Build a :class:`Config` from a nested dict (missing keys take their defaults)."""
    return _build_dataclass(Config, dict(values or {}))


def _deep_merge(base: dict, update: dict) -> dict:
    out = dict(base)
    for k, v in update.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _deep_merge(out[k], v)
        else:
            out[k] = v
    return out


def _read_yaml(path: str, seen: tuple[str, ...] = ()) -> dict:
    path = os.path.abspath(path)
    if path in seen:
        raise ConfigError(f"{path}: _base_ cycle")
    if not os.path.isfile(path):
        raise ConfigError(f"{path}: config file not found")
    try:
        with open(path, encoding="utf-8") as f:
            values = yaml.safe_load(f) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: top level must be a mapping")
    base = values.pop("_base_", None)
    if base is not None:
        base_path = os.path.join(os.path.dirname(path), base)
        values = _deep_merge(_read_yaml(base_path, seen + (path,)), values)
    return values


def parse_overrides(overrides: list[str] | tuple[str, ...] | None) -> dict:
    """``["svm.C=0.01", "features.scales=[480,688]"]`` -> nested dict (values as YAML)."""
    out: dict = {}
    for item in overrides or ():
        if "=" not in item:
            raise ConfigError(f"override {item!r}: expected key=value")
        key, raw = item.split("=", 1)
        key = key.strip()
        if not key or any(not part for part in key.split(".")):
            raise ConfigError(f"override {item!r}: bad key")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        node = out
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r}: {part} is not a section")
        node[parts[-1]] = value
    return out


def load_config(
    path: str | None = None, overrides: list[str] | None = None, base: Config | None = None
) -> Config:
    """Load a YAML config (or the defaults when ``path`` is None) and apply overrides.

    With ``base``, the file's and the overrides' keys are merged over that config instead
    of over the defaults (how a trained model's config is adjusted at test time).
    """
    values = config_to_dict(base) if base is not None else {}
    values = _deep_merge(values, _read_yaml(path) if path else {})
    values = _deep_merge(values, parse_overrides(overrides))
    try:
        return build_config(values)
    except ConfigError as e:
        raise ConfigError(f"{path or 'defaults'}: {e}") from None


def config_to_dict(cfg: Any) -> dict:
    """Plain nested dict (tuples as lists) of a config or one of its sections."""

    def plain(v):
        if dataclasses.is_dataclass(v):
            return {f.name: plain(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, tuple):
            return [plain(x) for x in v]
        return v

    return plain(cfg)


def save_config(cfg: Config, path: str) -> None:
    """Write the resolved config as YAML (atomically); :func:`load_config` reads it back."""
    text = yaml.safe_dump(config_to_dict(cfg), sort_keys=False)
    atomic_write_text(path, text)


def section_hash(*parts: Any, version: int = 1) -> str:
    """Cache key of the settings and inputs a stage depends on (sections, ids, ...)."""
    return stable_hash({"version": version, "parts": [config_to_dict(p) for p in parts]})
