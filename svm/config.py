"""Settings of the per-class linear SVMs and hard-negative mining (R-CNN / SPP-net code)."""
from __future__ import annotations

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
        if not (self.C > 0 and self.bias_multiplier > 0 and self.pos_loss_weight > 0 and self.target_norm > 0):
            raise ValueError("C, bias_multiplier, pos_loss_weight and target_norm must be positive")
        if self.evict_threshold > self.hard_threshold:
            raise ValueError(f"evict_threshold {self.evict_threshold} must not exceed "
                             f"hard_threshold {self.hard_threshold}")
        if self.retrain_limit < 1 or self.max_epochs < 1 or not self.tol > 0:
            raise ValueError("retrain_limit and max_epochs must be >= 1 and tol > 0")
        if not 0 < self.negative_iou <= 1 or not self.negative_overlap > 0:
            raise ValueError("negative_iou must lie in (0, 1] and negative_overlap be > 0")
        if self.cache_dtype not in ("float16", "float32"):
            raise ValueError(f"cache_dtype must be float16 or float32, got {self.cache_dtype!r}")
