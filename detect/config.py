"""Experiment configuration: frozen dataclasses loaded from YAML, ``--set`` overrides.

A config file is YAML whose top-level keys are the sections of :class:`Config`. A file may
start from another with ``_base_: other.yaml`` (path relative to the file); its keys are
merged over the base, section by section. Command-line overrides use dotted keys,
``--set svm.C=0.01 features.scales=[480,688]``; values are parsed as YAML.

An unknown key, a value of the wrong type or a value outside its allowed range (NaN, a
negative size, an IoU above 1, an unknown method, see :data:`RULES`) is a one-line
:class:`ConfigError` naming the key, the value and what is allowed, raised when the config
is built, before any data is touched.
Each section is its own dataclass so that a stage can hash exactly the settings it depends
on (changing the SVM's C must not recompute proposals): see :func:`section_hash`.
"""
from __future__ import annotations

import dataclasses
import math
import os
import re
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Callable

import yaml

from detect.datasets import DATASETS
from detect.evaluation import METRICS
from proposals.config import ProposalConfig
from proposals.backends import BACKENDS
from proposals.store import SPEED_SETTINGS as PROPOSAL_SPEED_SETTINGS
from sppcore.errors import UserError
from sppcore.fileio import atomic_write_text, stable_hash
from svm.config import SVMConfig

__all__ = [
    "ConfigError",
    "Config",
    "DataConfig",
    "NetworkConfig",
    "FeatureConfig",
    "ClassifierConfig",
    "BBoxRegConfig",
    "FinetuneConfig",
    "TestConfig",
    "PretrainConfig",
    "ProposalConfig",
    "SVMConfig",
    "load_config",
    "find_config",
    "builtin_config_dir",
    "build_config",
    "config_to_dict",
    "keyed_settings",
    "SPEED_SETTINGS",
    "SOURCE_SETTINGS",
    "save_config",
    "parse_overrides",
    "section_hash",
    "validate_config",
    "setting_keys",
    "RULES",
    "CROSS_RULES",
]


class ConfigError(UserError, ValueError):
    """A config file or override is malformed: unknown key, wrong type, bad value."""


@dataclass(frozen=True)
class DataConfig:
    # annotation format, a key of detect.datasets.DATASETS: voc | coco
    format: str = "voc"
    # voc: VOC2007-layout directory holding JPEGImages/, Annotations/, ImageSets/Main/;
    # coco: directory holding annotations/instances_<set>.json and <set>/ (the images)
    root: str = "data/builtin/VOC2007"
    # image set used for training (SVMs, regressors, fine-tuning)
    train_set: str = "trainval"
    # image set used by test_net
    test_set: str = "test"
    # class names in label order; empty: inferred (voc: ImageSets/Main/<class>_<set>.txt;
    # coco: every category, in category-id order)
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
    # spatial pyramid levels n (n x n bins each) between conv5 and fc6; paper: 6, 3, 2, 1
    # -> 50 bins. A property of the network: fc6's input is laid out level by level in
    # this order (read from its earlier place, features.levels, too)
    levels: tuple[int, ...] = (6, 3, 2, 1)


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
    # where the network layers run: cpu, cuda or cuda:N (on a GPU, SPP pooling, R-CNN's
    # warps, scoring, box regression and NMS run there too)
    device: str = "cpu"
    # what the fc layers compute in: float32, or bfloat16 / float16 (torch.autocast: mixed
    # precision, for GPUs); conv layers, pretraining and fine-tuning stay float32
    precision: str = "float32"


@dataclass(frozen=True)
class ClassifierConfig:
    # what scores windows: svm (per-class linear SVMs, hard-negative mining, on features.layer)
    # or softmax (the fine-tuned fc8 on fc7, background dropped; no SVMs are trained)
    type: str = "svm"


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
    # torch's intra-op threads while fine-tuning: the fine-tuned layers depend on them (the
    # fc layers' gradients are summed in per-thread parts), as pretrain.threads; 0 = torch's
    # own choice (all cores: faster on a large machine, other figures)
    threads: int = 2


@dataclass(frozen=True)
class TestConfig:
    # per-class greedy NMS threshold (R-CNN / SPP-net: 0.3)
    nms_iou: float = 0.3
    # detections kept per class per image after NMS
    max_per_class: int = 100
    # detections scoring below this are dropped before NMS
    score_threshold: float = -math.inf
    # evaluation test_net reports: voc07 (11-point), voc_area (VOC2010+ area) or coco (AP@[.5:.95])
    metric: str = "voc07"


@dataclass(frozen=True)
class PretrainConfig:
    # root of the pretraining images, in data.format's layout ("" = data.root): the role ImageNet plays
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
    # torch's intra-op threads while pretraining: the trained network depends on them
    # (batch-norm statistics and gradients are summed in per-thread parts), so the built-in
    # default's figures need 2 on every machine; 0 = torch's own choice (all cores: faster on
    # a large machine, other figures)
    threads: int = 2
    # where the pretrained network is written ("" = <output_dir>/<name>/pretrain/network.npz)
    out: str = ""
    # a directory holding a network pretrained elsewhere (tools/pretrain.py's sealed output
    # with its key, e.g. data/pretrained/default): used instead of training when it was
    # trained with exactly these settings, these images and the same CPU kernels (the key
    # of the network this run would train), otherwise ignored with a log line saying what
    # differs; "" = always train
    shipped: str = ""


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
    classifier: ClassifierConfig = field(default_factory=ClassifierConfig)
    svm: SVMConfig = field(default_factory=SVMConfig)
    bbox_reg: BBoxRegConfig = field(default_factory=BBoxRegConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    test: TestConfig = field(default_factory=TestConfig)
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)


# ----------------------------------------------------------------------------- validation
#
# Every setting has one rule in RULES, keyed by its dotted name: its allowed values, in
# words for the error message. A value is checked when the config is built (before its
# section is constructed), then CROSS_RULES check settings that constrain each other.
# Adding a setting means adding one line to RULES; tests/test_config.py fails for a
# setting that has none. Until it has one, a setting is checked against its type only
# (numbers must be finite): the fallback of _fallback_rule.


@dataclass(frozen=True)
class Rule:
    """Allowed values of one scalar setting: ``test(value)`` holds for them; ``allowed``
    says which they are, for the one-line error."""

    test: Callable[[Any], bool]
    allowed: str

    def check(self, key: str, value: Any) -> None:
        if not self.test(value):
            raise ConfigError(f"{key}: {_show(value)} is not allowed ({self.allowed})")


@dataclass(frozen=True)
class Choice:
    """A setting that names one of a fixed set of things (``noun``: what they are)."""

    values: tuple[str, ...]
    noun: str = "value"

    def check(self, key: str, value: Any) -> None:
        if value not in self.values:
            raise ConfigError(f"{key}: unknown {self.noun} {value!r} (allowed: {', '.join(self.values)})")


@dataclass(frozen=True)
class ListRule:
    """A list setting: its length in [min_len, max_len], each item by ``item``, and the
    whole list by ``whole`` (e.g. increasing); ``allowed`` describes the whole list."""

    item: Any
    allowed: str
    min_len: int = 0
    max_len: int | None = None
    whole: Callable[[tuple], bool] | None = None

    def check(self, key: str, value: Any) -> None:
        if len(value) < self.min_len or (self.max_len is not None and len(value) > self.max_len):
            raise ConfigError(f"{key}: {_show(value)} is not allowed ({self.allowed})")
        for i, v in enumerate(value):
            self.item.check(f"{key}[{i}]", v)
        if self.whole is not None and not self.whole(value):
            raise ConfigError(f"{key}: {_show(value)} is not allowed ({self.allowed})")


def _show(value: Any) -> str:
    if isinstance(value, tuple):
        return "[" + ", ".join(_show(v) for v in value) + "]"
    if isinstance(value, float) and value.is_integer():
        return str(int(value)) if abs(value) < 1e16 else repr(value)
    return repr(value)  # floats: nan, inf; strings quoted


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and not math.isnan(v)


def integer(lo: int, hi: int | None = None) -> Rule:
    """An integer in [lo, hi] (hi None: no upper bound)."""
    if hi is not None:
        words = f"an integer in [{lo}, {hi}]"
    else:
        words = {0: "a non-negative integer", 1: "a positive integer"}.get(lo, f"an integer >= {lo}")
    return Rule(lambda v: _is_int(v) and v >= lo and (hi is None or v <= hi), words)


def number(lo: float = -math.inf, hi: float = math.inf, *, lo_open: bool = False, hi_open: bool = False,
           allow_neg_inf: bool = False) -> Rule:
    """A number in the interval from ``lo`` to ``hi`` (each end open or closed); never NaN,
    and infinite only when ``allow_neg_inf`` admits -inf."""

    def test(v: Any) -> bool:
        if not _is_number(v):
            return False
        if math.isinf(v):
            return allow_neg_inf and v < 0
        return (v > lo if lo_open else v >= lo) and (v < hi if hi_open else v <= hi)

    if lo == 0 and lo_open and hi == math.inf:
        words = "a positive finite number"
    elif lo == 0 and hi == math.inf:
        words = "a non-negative finite number"
    elif lo == -math.inf and hi == math.inf:
        words = "a finite number"
    else:
        words = f"a number in {'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}"
    if allow_neg_inf:
        words += " or -inf"
    return Rule(test, words)


def text(non_empty: bool = True) -> Rule:
    return Rule(lambda v: isinstance(v, str) and (bool(v.strip()) or not non_empty),
                "a non-empty string" if non_empty else "a string")


def _is_plain_name(v: Any) -> bool:
    return (isinstance(v, str) and v.strip() == v and v not in ("", ".", "..")
            and not any(c in v for c in "/\\\0") and not os.path.isabs(v))


# a file or directory name without any path in it (image sets, class names, experiment names)
PLAIN_NAME = Rule(_is_plain_name, "a plain name: not empty, no '/', '\\' or surrounding spaces, not '.' or '..'")
BOOL = Rule(lambda v: isinstance(v, bool), "true or false")
SEED = integer(0, 2**32 - 1)  # numpy's legacy RandomState takes seeds below 2**32
POSITIVE_INT = integer(1)
NON_NEGATIVE_INT = integer(0)
POSITIVE = number(0, lo_open=True)
NON_NEGATIVE = number(0)
FINITE = number()
FRACTION = number(0, 1)  # probabilities, fractions and IoU thresholds
POSITIVE_FRACTION = number(0, 1, lo_open=True)
FEATURE_LAYERS = Choice(("pool5", "fc6", "fc7"), "layer")
# detect.trunks.TRUNKS (a test keeps the two equal; detect.trunks imports torch)
TRUNK_NAMES = ("compact", "zf5", "alexnet", "vgg16", "efficientnet_lite0")
# detect.features.EXTRACTORS (a test keeps the two equal; detect.features imports torch)
EXTRACTOR_NAMES = ("spp", "rcnn")
# the colour spaces proposals/selective_search.py converts to
COLOR_SPACES = ("hsv", "lab", "rgb")
DEVICE = Rule(lambda v: isinstance(v, str) and re.fullmatch(r"cpu|cuda(:[0-9]+)?", v) is not None,
              "cpu, cuda or cuda:N")


def positive_ints(what: str = "a non-empty list of positive integers") -> ListRule:
    return ListRule(POSITIVE_INT, what, min_len=1)


RULES: dict[str, Any] = {
    "name": PLAIN_NAME,
    "output_dir": text(),
    "cache_dir": text(),
    "seed": SEED,
    "data.format": Choice(tuple(DATASETS), "dataset format"),
    "data.root": text(),
    "data.train_set": PLAIN_NAME,
    "data.test_set": PLAIN_NAME,
    "data.classes": ListRule(PLAIN_NAME, "distinct class names; empty: inferred from the dataset",
                             whole=lambda v: len(set(v)) == len(v)),
    "data.train_difficult": BOOL,
    "proposals.backend": Choice(tuple(BACKENDS), "backend"),
    "proposals.max_boxes": POSITIVE_INT,
    "proposals.max_side": POSITIVE_INT,
    "proposals.min_size": NON_NEGATIVE_INT,
    "proposals.color_spaces": ListRule(Choice(COLOR_SPACES, "colour space"), "a non-empty list of colour spaces",
                                       min_len=1),
    "proposals.segmentation_ks": positive_ints(),
    "proposals.sigma": NON_NEGATIVE,
    "proposals.ss_scale": POSITIVE,
    "proposals.ss_sigma": NON_NEGATIVE,
    "proposals.ss_min_size": NON_NEGATIVE_INT,
    "proposals.mat_path": text(non_empty=False),
    "proposals.workers": NON_NEGATIVE_INT,
    "proposals.overlap": BOOL,
    "network.trunk": Choice(TRUNK_NAMES, "trunk"),
    "network.weights": text(),
    "network.init_seed": SEED,
    "network.fc_dim": POSITIVE_INT,
    "network.dropout": number(0, 1, hi_open=True),
    "network.levels": ListRule(POSITIVE_INT, "a non-empty list of distinct positive integers", min_len=1,
                               whole=lambda v: len(set(v)) == len(v)),
    "features.method": Choice(tuple(EXTRACTOR_NAMES), "method"),
    "features.scales": positive_ints(),
    "features.max_side": POSITIVE_INT,
    "features.scale_target_size": POSITIVE_INT,
    "features.layer": FEATURE_LAYERS,
    "features.rcnn_crop_size": POSITIVE_INT,
    "features.rcnn_context_pad": NON_NEGATIVE_INT,
    "features.batch_size": POSITIVE_INT,
    "features.rcnn_crop_batch_size": POSITIVE_INT,
    "features.fc_svd_rank": NON_NEGATIVE_INT,
    "features.device": DEVICE,
    "features.precision": Choice(("float32", "bfloat16", "float16"), "precision"),  # detect.features.PRECISIONS
    "classifier.type": Choice(("svm", "softmax"), "classifier"),  # detect.classifiers.CLASSIFIERS
    "svm.C": POSITIVE,
    "svm.bias_multiplier": POSITIVE,
    "svm.pos_loss_weight": POSITIVE,
    "svm.target_norm": POSITIVE,
    "svm.hard_threshold": FINITE,
    "svm.evict_threshold": FINITE,
    "svm.retrain_limit": POSITIVE_INT,
    "svm.negative_iou": POSITIVE_FRACTION,
    "svm.negative_overlap": POSITIVE_FRACTION,
    "svm.tol": POSITIVE,
    "svm.max_epochs": POSITIVE_INT,
    "svm.cache_dtype": Choice(("float16", "float32"), "dtype"),
    "bbox_reg.enabled": BOOL,
    "bbox_reg.ridge_lambda": POSITIVE,
    "bbox_reg.min_iou": POSITIVE_FRACTION,
    "bbox_reg.max_examples_per_object": NON_NEGATIVE_INT,
    "bbox_reg.layer": FEATURE_LAYERS,
    "finetune.enabled": BOOL,
    "finetune.iterations": POSITIVE_INT,
    "finetune.lr": POSITIVE,
    "finetune.batch_size": POSITIVE_INT,
    "finetune.threads": NON_NEGATIVE_INT,
    "finetune.fg_fraction": FRACTION,
    "finetune.fg_iou": POSITIVE_FRACTION,
    "finetune.bg_iou_low": FRACTION,
    "test.nms_iou": FRACTION,
    "test.max_per_class": POSITIVE_INT,
    "test.score_threshold": number(allow_neg_inf=True),
    "test.metric": Choice(tuple(METRICS), "metric"),
    "pretrain.root": text(non_empty=False),
    "pretrain.train_set": PLAIN_NAME,
    "pretrain.val_set": PLAIN_NAME,
    "pretrain.sizes": positive_ints(),
    "pretrain.image_scales": ListRule(POSITIVE, "empty, or two increasing shorter sides [lo, hi]", max_len=2,
                                      whole=lambda v: len(v) == 0 or (len(v) == 2 and v[0] < v[1])),
    "pretrain.epochs": POSITIVE_INT,
    "pretrain.batch_size": POSITIVE_INT,
    "pretrain.lr": POSITIVE,
    "pretrain.weight_decay": NON_NEGATIVE,
    "pretrain.jitter": FRACTION,
    "pretrain.background_per_image": NON_NEGATIVE_INT,
    "pretrain.threads": NON_NEGATIVE_INT,
    "pretrain.out": text(non_empty=False),
    "pretrain.shipped": text(non_empty=False),
}

# Settings that constrain each other: (key, test(cfg), allowed(cfg) in words).
CROSS_RULES: tuple[tuple[str, Callable[[Any], bool], Callable[[Any], str]], ...] = (
    ("finetune.bg_iou_low", lambda c: c.finetune.bg_iou_low < c.finetune.fg_iou,
     lambda c: f"below finetune.fg_iou, {_show(c.finetune.fg_iou)}"),
    ("svm.evict_threshold", lambda c: c.svm.evict_threshold <= c.svm.hard_threshold,
     lambda c: f"at most svm.hard_threshold, {_show(c.svm.hard_threshold)}"),
    ("features.rcnn_context_pad", lambda c: 2 * c.features.rcnn_context_pad < c.features.rcnn_crop_size,
     lambda c: f"less than half of features.rcnn_crop_size, {c.features.rcnn_crop_size}"),
    ("features.layer", lambda c: c.classifier.type != "softmax" or c.features.layer == "fc7",
     lambda c: "fc7 with classifier.type softmax, whose fc8 reads fc7"),
)


def setting_keys(cls: type | None = None, prefix: str = "") -> dict[str, Any]:
    """Dotted key -> type annotation of every setting of ``cls`` (default: :class:`Config`)."""
    cls = cls or Config
    out: dict[str, Any] = {}
    for name, tp in typing.get_type_hints(cls).items():
        if dataclasses.is_dataclass(tp):
            out.update(setting_keys(tp, f"{prefix}{name}."))
        else:
            out[prefix + name] = tp
    return out


def _fallback_rule(tp: Any) -> Any:
    """The check of a setting with no rule in RULES: its type's, numbers finite."""
    if typing.get_origin(tp) is tuple:
        return ListRule(_fallback_rule(typing.get_args(tp)[0]), "a list")
    return {bool: BOOL, int: Rule(_is_int, "an integer"), float: FINITE}.get(tp, Rule(lambda v: True, "any value"))


def _check_setting(key: str, value: Any, tp: Any) -> None:
    rule = RULES.get(key)
    (rule if rule is not None else _fallback_rule(tp)).check(key, value)


def _get(cfg: Any, key: str) -> Any:
    for part in key.split("."):
        cfg = getattr(cfg, part)
    return cfg


def validate_config(cfg: Config) -> Config:
    """Check every setting of ``cfg`` against its rule and the cross rules; returns ``cfg``.
    Raises :class:`ConfigError` naming the first bad key, its value and what is allowed."""
    for key, tp in setting_keys().items():
        _check_setting(key, _get(cfg, key), tp)
    for key, test, allowed in CROSS_RULES:
        if not test(cfg):
            raise ConfigError(f"{key}: {_show(_get(cfg, key))} is not allowed ({allowed(cfg)})")
    return cfg


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
    for name, v in kwargs.items():
        if not dataclasses.is_dataclass(hints[name]):
            _check_setting(prefix + name, v, hints[name])
    try:
        obj = cls(**kwargs)
    except (TypeError, ValueError) as e:
        message = str(e) if str(e).startswith(prefix) and prefix else f"{prefix.rstrip('.') or 'config'}: {e}"
        raise ConfigError(message) from None
    return obj


# Settings that moved: earlier dotted key -> its key now. Config files, overrides and the
# configs saved in model directories may still use the earlier key.
MOVED_SETTINGS = {"features.levels": "network.levels"}


def _move_settings(values: dict) -> dict:
    """``values`` with every setting of :data:`MOVED_SETTINGS` under its current key; the
    same setting given under both keys with different values is a :class:`ConfigError`."""
    out = dict(values)
    for old, new in MOVED_SETTINGS.items():
        old_section, old_name = old.split(".")
        section = out.get(old_section)
        if not isinstance(section, dict) or old_name not in section:
            continue
        section = dict(section)
        value = section.pop(old_name)
        out[old_section] = section
        new_section, new_name = new.split(".")
        target = dict(out.get(new_section) or {})
        if new_name in target and target[new_name] != value:
            raise ConfigError(f"{old}: {_show(value)} conflicts with {new}: {_show(target[new_name])} "
                              f"(the same setting; {old} is its earlier name)")
        target[new_name] = value
        out[new_section] = target
    return out


def build_config(values: dict | None = None) -> Config:
    """Build a :class:`Config` from a nested dict (missing keys take their defaults); every
    setting is checked against its rule (:data:`RULES`, :func:`validate_config`). Settings
    under an earlier key (:data:`MOVED_SETTINGS`) are read at their current one."""
    return validate_config(_build_dataclass(Config, _move_settings(dict(values or {}))))


def _deep_merge(base: dict, update: dict) -> dict:
    out = dict(base)
    for k, v in update.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _deep_merge(out[k], v)
        else:
            out[k] = v
    return out


def builtin_config_dir() -> str:
    """The directory of the built-in configs: ``detect/configs/`` inside an installed
    package (the wheel ships the checkout's ``configs/`` there, see pyproject.toml), else
    the ``configs/`` directory of the checkout this package runs from (a source checkout
    or an editable install)."""
    from importlib.resources import files

    installed = files("detect").joinpath("configs")
    if installed.is_dir():
        return str(installed)
    return os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")


def find_config(path: str) -> str:
    """``path`` when that file exists; else, for a built-in config named by its file name
    (``default.yaml``, ``default``) or by its checkout path (``configs/default.yaml``),
    that config's file in :func:`builtin_config_dir`; else ``path`` unchanged (the
    reader then reports it as not found)."""
    if os.path.isfile(path) or os.path.isabs(path):
        return path
    folder, name = os.path.split(os.path.normpath(path))
    if folder not in ("", "configs"):
        return path
    for candidate in (name, name + ".yaml"):
        builtin = os.path.join(builtin_config_dir(), candidate)
        if os.path.isfile(builtin):
            return builtin
    return path


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
    try:
        values = _move_settings(values)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None
    base = values.pop("_base_", None)
    if base is not None:
        if not isinstance(base, str) or not base:
            raise ConfigError(f"{path}: _base_ must name a config file, got {base!r}")
        base_path = os.path.join(os.path.dirname(path), base)
        if not os.path.isfile(base_path):
            base_path = find_config(base)  # a built-in config named from another directory
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
    ``path`` may name a built-in config (``default.yaml``, ``configs/default.yaml``) from
    any directory, also when the package is installed without its checkout
    (:func:`find_config`).

    With ``base``, the file's and the overrides' keys are merged over that config instead
    of over the defaults (how a trained model's config is adjusted at test time).
    """
    values = config_to_dict(base) if base is not None else {}
    path = find_config(path) if path else path
    values = _deep_merge(values, _read_yaml(path) if path else {})
    try:
        values = _deep_merge(values, _move_settings(parse_overrides(overrides)))
        return build_config(values)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}" if path else str(e)) from None


def config_to_dict(cfg: Any) -> dict:
    """Plain nested dict (tuples as lists) of a config or one of its sections."""

    def plain(v):
        if dataclasses.is_dataclass(v):
            return {f.name: plain(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, tuple):
            return [plain(x) for x in v]
        return v

    return plain(cfg)


# Settings that change how fast a stage runs, never what it produces: left out of every
# cache and model key (keyed_settings), so that they can differ between runs, machines and
# processes that share outputs. The proposal store's own list, which its key leaves out, is
# the one source.
SPEED_SETTINGS = tuple(f"proposals.{name}" for name in PROPOSAL_SPEED_SETTINGS)
# Settings that say where an output may be found ready-made, never what it is (it is used
# only when its own key equals the one computed): left out of every key as well.
SOURCE_SETTINGS = ("pretrain.shipped",)


def keyed_settings(cfg: Config) -> dict:
    """:func:`config_to_dict` of ``cfg`` without :data:`SPEED_SETTINGS` and
    :data:`SOURCE_SETTINGS`: what keys hold."""
    out = config_to_dict(cfg)
    for key in SPEED_SETTINGS + SOURCE_SETTINGS:
        section, name = key.split(".")
        out[section].pop(name, None)
    return out


def save_config(cfg: Config, path: str) -> None:
    """Write the resolved config as YAML (atomically); :func:`load_config` reads it back."""
    text = yaml.safe_dump(config_to_dict(cfg), sort_keys=False)
    atomic_write_text(path, text)


def section_hash(*parts: Any, version: int = 1) -> str:
    """Cache key of the settings and inputs a stage depends on (sections, ids, ...)."""
    return stable_hash({"version": version, "parts": [config_to_dict(p) for p in parts]})
