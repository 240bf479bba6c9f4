"""Settings of the proposal stage (kept free of network code)."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ProposalConfig:
    # rcnn_fast | opencv_fast | opencv_quality | selectivesearch
    backend: str = "rcnn_fast"
    # at most this many boxes per image (R-CNN / SPP-net: about 2,000)
    max_boxes: int = 2000
    # images whose longer side exceeds this are segmented downscaled, boxes mapped back
    max_side: int = 1000
    # boxes narrower or shorter than this many pixels are dropped (R-CNN fast mode: 20)
    min_size: int = 20
