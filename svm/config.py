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
