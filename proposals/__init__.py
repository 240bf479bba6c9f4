"""Region proposals: selective search for any image, a cached store, recall metrics.

No network code here: images and arrays in, boxes out. R-CNN's published VOC boxes
(``.mat`` files) can be imported into the same store (:mod:`proposals.matfile`).
"""
from proposals.config import ProposalConfig
from proposals.backends import BACKENDS
from proposals.selective_search import ALGORITHMS, compute_proposals
from proposals.store import ProposalStore

__all__ = ["ProposalConfig", "compute_proposals", "ProposalStore", "BACKENDS", "ALGORITHMS"]
