"""Settings of the proposal stage (kept free of network code)."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ProposalConfig:
    # rcnn_fast | opencv_fast | opencv_quality | selectivesearch | rcnn_mat (R-CNN's published files)
    backend: str = "rcnn_fast"
    # at most this many boxes per image (R-CNN / SPP-net: about 2,000)
    max_boxes: int = 2000
    # images whose longer side exceeds this are segmented downscaled, boxes mapped back
    max_side: int = 1000
    # boxes narrower or shorter than this many pixels are dropped (R-CNN: 20; 12 keeps the tight boxes of 13-20 px objects)
    min_size: int = 12
    # rcnn_fast: colour spaces of the hierarchies (R-CNN fast mode: HSV and Lab)
    color_spaces: tuple[str, ...] = ("hsv", "lab")
    # rcnn_fast: Felzenszwalb k values, min region size = k (R-CNN fast mode: 50, 100)
    segmentation_ks: tuple[int, ...] = (50, 100)
    # rcnn_fast: Felzenszwalb Gaussian sigma (R-CNN: 0.8)
    sigma: float = 0.8
    # selectivesearch package: Felzenszwalb scale (the package's default: 1.0; 500 in its example)
    ss_scale: float = 500.0
    # selectivesearch package: Gaussian sigma
    ss_sigma: float = 0.9
    # selectivesearch package: minimum component size
    ss_min_size: int = 10
    # rcnn_mat: R-CNN's selective_search_data .mat file, or a directory of them (ids looked up in all)
    mat_path: str = ""
    # processes computing proposals; 0: the cores this process may use (its share of them
    # under torchrun). How fast, not what: no cache key holds it
    workers: int = 0
    # train_svm / test_net / finetune_fc in one process: compute the missing proposals in
    # the background while the network runs on the images whose proposals are ready. The
    # wall time drops a little, but the seconds per stage then include the two sharing the
    # cores: off for timing comparisons. How fast, not what: no cache key holds it
    overlap: bool = False
