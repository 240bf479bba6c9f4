"""Region proposals: selective search for any image, a cached store, recall metrics.

No network code here: images and arrays in, boxes out.
"""
from proposals.config import ProposalConfig
from proposals.selective_search import BACKENDS, compute_proposals
from proposals.store import ProposalStore

__all__ = ["ProposalConfig", "compute_proposals", "ProposalStore", "BACKENDS"]
