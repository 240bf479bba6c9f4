"""Per-class linear SVMs trained with hard-negative mining (R-CNN / SPP-net), on feature
arrays only: no network code and nothing from ``detect``; numpy and :mod:`sppcore`."""
from svm.config import SVMConfig
from svm.mining import (
    NEGATIVE_IOU,
    NEGATIVE_OVERLAP,
    FeatureStore,
    HardNegativeMiner,
    MiningStateError,
    compute_feature_scale,
    feature_norms,
    feature_scale_from_norms,
    select_negative_candidates,
    select_negative_candidates_reference,
)
from svm.solver import (
    SVMSolution,
    linear_scores,
    primal_objective,
    sample_costs,
    train_linear_svm,
    train_linear_svm_reference,
)

__all__ = [
    "SVMConfig",
    "NEGATIVE_IOU",
    "NEGATIVE_OVERLAP",
    "FeatureStore",
    "HardNegativeMiner",
    "MiningStateError",
    "compute_feature_scale",
    "feature_norms",
    "feature_scale_from_norms",
    "select_negative_candidates",
    "select_negative_candidates_reference",
    "SVMSolution",
    "linear_scores",
    "primal_objective",
    "sample_costs",
    "train_linear_svm",
    "train_linear_svm_reference",
]
