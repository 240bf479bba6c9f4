"""Settings of the per-class linear SVMs and hard-negative mining (R-CNN / SPP-net code)."""
from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class SVMConfig:
    # liblinear C (R-CNN / SPP-net: 0.001)
    C: float = 0.001
    # constant appended to every feature to learn the bias (R-CNN: 10)
    bias_multiplier: float = 10.0
    # loss weight of positives relative to negatives (R-CNN: 2)
    pos_loss_weight: float = 2.0
    # features are rescaled so that their mean L2 norm is this (R-CNN: 20)
    target_norm: float = 20.0
    # a negative is hard when its score exceeds this (R-CNN: -1.0001)
    hard_threshold: float = -1.0001
    # cached easy negatives scoring below this are evicted (R-CNN: -1.2)
    evict_threshold: float = -1.2
    # retrain after this many new hard negatives (R-CNN: 2000)
    retrain_limit: int = 2000
    # negatives: proposals with IoU below this to every ground truth of the class
    negative_iou: float = 0.3
    # SPP-net drops a negative overlapping another negative by more than this; 1.0: off
    negative_overlap: float = 0.7
    # solver stops when the dual projected gradients spread <= this (liblinear -e: 0.1)
    tol: float = 0.1
    # solver's cap on passes over the cached rows (liblinear: 1000)
    max_epochs: int = 1000
    # storage of cached feature rows: float16 (half the memory) | float32
    cache_dtype: str = "float16"

    def __post_init__(self):
        # A library-level guard for configs built in code; configs loaded from files are
        # checked key by key first (detect/config.py RULES), with the same messages.
        def bad(key: str, allowed: str) -> ValueError:
            return ValueError(f"svm.{key}: {getattr(self, key)!r} is not allowed ({allowed})")

        for key in ("C", "bias_multiplier", "pos_loss_weight", "target_norm", "tol"):
            if not 0 < getattr(self, key) < math.inf:
                raise bad(key, "a positive finite number")
        for key in ("hard_threshold", "evict_threshold"):
            if not math.isfinite(getattr(self, key)):
                raise bad(key, "a finite number")
        if self.evict_threshold > self.hard_threshold:
            raise bad("evict_threshold", f"at most svm.hard_threshold, {self.hard_threshold!r}")
        for key in ("retrain_limit", "max_epochs"):
            if not getattr(self, key) >= 1:
                raise bad(key, "a positive integer")
        for key in ("negative_iou", "negative_overlap"):
            if not 0 < getattr(self, key) <= 1:
                raise bad(key, "a number in (0, 1]")
        if self.cache_dtype not in ("float16", "float32"):
            raise bad("cache_dtype", "float16 or float32")
