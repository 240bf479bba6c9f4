"""Selective-search proposals for any image: three backends behind one function.

``compute_proposals(image, cfg)`` takes an RGB (or grayscale / RGBA) uint8 image and
returns float32 ``[N, 4]`` boxes in the internal convention (0-based continuous
``(x1, y1, x2, y2)``), at most ``cfg.max_boxes``, in an order that depends only on the
image and the settings.

Backends (``cfg.backend``):

``rcnn_fast`` (default)
    R-CNN / SPP-net "fast" mode (Uijlings et al.; R-CNN's ``selective_search_boxes.m``)
    assembled from OpenCV contrib's building blocks: colour spaces HSV and Lab,
    Felzenszwalb graph segmentation with k = 50 and 100 (min size = k), sigma 0.8, and two
    similarity strategies (colour + texture + size + fill, and texture + size + fill):
    2 x 2 x 2 = 8 hierarchies. Boxes narrower or shorter than ``cfg.min_size`` (20 px)
    are dropped and duplicates removed.
``opencv_fast`` / ``opencv_quality``
    OpenCV's own ``switchToSelectiveSearchFast`` / ``Quality`` as they are (k = 150..450,
    more hierarchies, no size filter beyond ``cfg.min_size``).
``selectivesearch``
    The PyPI ``selectivesearch`` package: a single Felzenszwalb segmentation in one colour
    space with one strategy, in pure Python. One hierarchy gives far fewer distinct boxes
    than eight, so recall is lower; a finer segmentation (smaller ``ss_scale``) gives more
    boxes but the pure-Python merging slows down with the number of regions (about 6 s for
    a 500 x 375 photo at scale 100). ``bench/proposals.py`` measures both; it is a
    reference rather than a production choice.
``rcnn_mat`` (not computed)
    R-CNN's published ``selective_search_data/*.mat`` boxes for VOC images, imported by
    :class:`proposals.ProposalStore` (``cfg.mat_path``; see :mod:`proposals.matfile`).

Order. OpenCV ranks its boxes with the C library's unseeded ``rand()``, so its order
differs from run to run and between platforms. Here the *set* of boxes comes from the
backend and the order is imposed afterwards, for every backend alike, by R-CNN's ranking
rule (Uijlings et al. 2013, section 3.3; ``Image2HierarchicalGrouping.m`` and
``selective_search_boxes.m``): in each hierarchy a box's priority is ``rand() * level``,
where the level counts merges backwards from the top (the whole image is level 1, the last
merges before it 2, 3, ..., the initial segments come last); all hierarchies' boxes are
sorted by ascending priority and a duplicate keeps its first (best) place, so a box that
several hierarchies find tends to rank early. OpenCV's own ranking counts levels the other
way (a region's height in the merge tree), which puts small segments first. Two
substitutes, because the OpenCV API exposes neither levels nor hierarchies:

* the level is the box's rank by area, largest first (:func:`area_levels`): a parent
  region is larger than its children, so this keeps the order of every merge tree;
* ``rcnn_fast`` runs one ``process()`` per (colour space, k), each holding the two
  strategies' hierarchies, and ranks the four groups like hierarchies (levels about twice
  a single hierarchy's, the same factor for every group, which does not change the order).
  The OpenCV modes and the ``selectivesearch`` package are one group each.

``rand()`` is replaced by a hash of the box's integer coordinates and its group number
(:func:`_hash_uniform`): the order is stable for a given image and settings, on any
platform. The ``max_boxes`` cap keeps the first boxes of that order. Measured on the
generated test split (``bench/proposals.py``), this order reaches a given recall with
fewer boxes than one global ranking of the deduplicated boxes, at no extra cost.

Large images (longer side above ``cfg.max_side``) are segmented downscaled and the boxes
mapped back; an image smaller than ``cfg.min_size`` gives the whole-image box.
"""
from __future__ import annotations

import logging
from typing import Sequence

import numpy as np

from detect.boxes import xywh_to_xyxy
from detect.errors import ProposalError
from proposals.config import ProposalConfig

__all__ = [
    "BACKENDS",
    "IMPORTED_BACKEND",
    "ALGORITHM_VERSION",
    "compute_proposals",
    "as_rgb_uint8",
    "selectivesearch_rect_to_xyxy",
    "unique_boxes",
    "stable_order",
    "rank_groups",
    "area_levels",
]

log = logging.getLogger(__name__)

BACKENDS = ("rcnn_fast", "opencv_fast", "opencv_quality", "selectivesearch")
# not computed: R-CNN's published selective-search boxes, read by the store (proposals.matfile)
IMPORTED_BACKEND = "rcnn_mat"
# Version of what compute_proposals returns for given settings: bump it whenever a change
# to the algorithm changes the boxes (or their order) for an unchanged ProposalConfig, so
# that every cached proposal computed by the older code is recomputed.
ALGORITHM_VERSION = 1


def as_rgb_uint8(image) -> np.ndarray:
    """Validate an image array and return it as contiguous RGB uint8 [H, W, 3]."""
    if not isinstance(image, np.ndarray):
        raise ProposalError(f"expected an image array, got {type(image).__name__}")
    if image.size == 0 or image.ndim not in (2, 3):
        raise ProposalError(f"expected a non-empty [H, W] or [H, W, C] image, got shape {image.shape}")
    if image.dtype != np.uint8:
        if np.issubdtype(image.dtype, np.floating) and image.size and 0 <= image.min() and image.max() <= 1:
            image = np.round(image * 255)
        image = np.clip(image, 0, 255).astype(np.uint8)
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    elif image.shape[2] == 1:
        image = np.repeat(image, 3, axis=2)
    elif image.shape[2] == 4:
        image = image[:, :, :3]
    elif image.shape[2] != 3:
        raise ProposalError(f"expected 1, 3 or 4 channels, got {image.shape[2]}")
    return np.ascontiguousarray(image)


def selectivesearch_rect_to_xyxy(rects) -> np.ndarray:
    """The ``selectivesearch`` package's ``rect`` is ``(min_x, min_y, max_x - min_x,
    max_y - min_y)`` over inclusive pixel indices, one pixel short of OpenCV's (x, y, w, h):
    the internal box is ``(min_x, min_y, max_x + 1, max_y + 1)``."""
    r = np.asarray(rects, dtype=np.float32).reshape(-1, 4)
    out = r.copy()
    out[:, 2] = r[:, 0] + r[:, 2] + 1
    out[:, 3] = r[:, 1] + r[:, 3] + 1
    return out


def unique_boxes(boxes: np.ndarray) -> np.ndarray:
    """Exact duplicates removed; the survivors are sorted by (x1, y1, x2, y2)."""
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    if len(boxes) == 0:
        return boxes
    return np.unique(boxes, axis=0)


def _hash_uniform(boxes: np.ndarray, stream: int = 0) -> np.ndarray:
    """A deterministic pseudo-random number in (0, 1] per box from its integer coordinates
    and a ``stream`` number (independent draws per stream; splitmix64 finaliser, identical
    on every platform). boxes: [N, 4]; returns float64 [N]."""
    v = np.round(np.asarray(boxes, dtype=np.float64).reshape(-1, 4)).astype(np.int64).astype(np.uint64)
    mask = np.uint64(0xFFFF)
    h = ((v[:, 0] & mask) << np.uint64(48)) | ((v[:, 1] & mask) << np.uint64(32)) \
        | ((v[:, 2] & mask) << np.uint64(16)) | (v[:, 3] & mask)
    with np.errstate(over="ignore"):
        h = h ^ (np.uint64(stream) * np.uint64(0xD1B54A32D192ED03))
        h = h + np.uint64(0x9E3779B97F4A7C15)
        h = (h ^ (h >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        h = (h ^ (h >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        h = h ^ (h >> np.uint64(31))
    return ((h >> np.uint64(11)).astype(np.float64) + 1.0) / float(1 << 53)


def area_levels(boxes: np.ndarray) -> np.ndarray:
    """Stand-in for R-CNN's hierarchy level: 1 for the largest box, ``N`` for the smallest
    (ties broken by the coordinates, so the result does not depend on the input order).
    boxes: float32 [N, 4] internal; returns float64 [N]."""
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    area = (boxes[:, 2] - boxes[:, 0]).astype(np.float64) * (boxes[:, 3] - boxes[:, 1])
    order = np.lexsort((boxes[:, 3], boxes[:, 2], boxes[:, 1], boxes[:, 0], -area))
    level = np.empty(len(boxes), dtype=np.float64)
    level[order] = np.arange(1, len(boxes) + 1)
    return level


def rank_groups(groups: Sequence[np.ndarray]) -> np.ndarray:
    """R-CNN's ranking over several groups of boxes (see the module docstring).

    In group ``g`` each box gets ``priority = rand_g(box) * level_g(box)`` (level from
    :func:`area_levels` within the group, rand from :func:`_hash_uniform` with stream g); a
    box found by several groups keeps its smallest priority, as R-CNN's duplicate removal
    after sorting keeps the first copy. Boxes are returned by ascending priority, ties by
    coordinates. groups: float32 [N_g, 4] internal each; returns float32 [M, 4], unique.
    """
    boxes, priority = [], []
    for g, group in enumerate(groups):
        group = unique_boxes(group)
        boxes.append(group)
        priority.append(_hash_uniform(group, g) * area_levels(group))
    if not boxes:
        return np.zeros((0, 4), np.float32)
    boxes, priority = np.concatenate(boxes), np.concatenate(priority)
    order = np.lexsort((boxes[:, 3], boxes[:, 2], boxes[:, 1], boxes[:, 0], priority))
    boxes = boxes[order]
    _, first = np.unique(boxes, axis=0, return_index=True)
    return boxes[np.sort(first)]


def stable_order(boxes: np.ndarray) -> np.ndarray:
    """:func:`rank_groups` of a single group: duplicates removed, R-CNN's ranking imposed.
    boxes: float32 [N, 4] internal; returns float32 [M, 4], M <= N."""
    return rank_groups([boxes])


def _xywh_boxes(ss) -> np.ndarray:
    """Run an OpenCV selective search; its int32 ``(x, y, w, h)`` come from ``boundingRect``
    of each region: ``w`` and ``h`` count pixels (a region covering columns 20..69 gives
    x = 20, w = 50; the whole image gives (0, 0, W, H)), so ``x + w`` is the continuous right
    edge and :func:`detect.boxes.xywh_to_xyxy` is the exact conversion."""
    return xywh_to_xyxy(np.asarray(ss.process(), dtype=np.float32).reshape(-1, 4))


def _opencv_groups(bgr: np.ndarray, cfg: ProposalConfig) -> list[np.ndarray]:
    """Boxes of OpenCV's selective search on a BGR uint8 image, internal convention, as
    ranking groups: one group for OpenCV's own modes; for ``rcnn_fast`` one group per
    (colour space, k), each holding the hierarchies of both strategies (one
    ``process()`` call each: every segmentation is still computed once)."""
    import cv2

    seg = cv2.ximgproc.segmentation
    if cfg.backend in ("opencv_fast", "opencv_quality"):
        ss = seg.createSelectiveSearchSegmentation()
        ss.setBaseImage(bgr)
        if cfg.backend == "opencv_fast":
            ss.switchToSelectiveSearchFast()
        else:
            ss.switchToSelectiveSearchQuality()
        return [_xywh_boxes(ss)]
    # rcnn_fast: R-CNN's fast mode from the building blocks
    conversions = {"hsv": cv2.COLOR_BGR2HSV, "lab": cv2.COLOR_BGR2Lab, "rgb": cv2.COLOR_BGR2RGB}
    for space in cfg.color_spaces:
        if space not in conversions:
            raise ProposalError(f"proposals.color_spaces: unknown colour space {space!r} (known: {sorted(conversions)})")
    colour = seg.createSelectiveSearchSegmentationStrategyColor
    texture = seg.createSelectiveSearchSegmentationStrategyTexture
    size = seg.createSelectiveSearchSegmentationStrategySize
    fill = seg.createSelectiveSearchSegmentationStrategyFill
    groups = []
    for space in cfg.color_spaces:
        converted = cv2.cvtColor(bgr, conversions[space])
        for k in cfg.segmentation_ks:
            ss = seg.createSelectiveSearchSegmentation()
            ss.setBaseImage(bgr)
            ss.clearImages()
            ss.clearGraphSegmentations()
            ss.clearStrategies()
            ss.addImage(converted)
            ss.addGraphSegmentation(seg.createGraphSegmentation(cfg.sigma, float(k), int(k)))
            ss.addStrategy(seg.createSelectiveSearchSegmentationStrategyMultiple(colour(), texture(), size(), fill()))
            ss.addStrategy(seg.createSelectiveSearchSegmentationStrategyMultiple(texture(), size(), fill()))
            groups.append(_xywh_boxes(ss))
    return groups


def _selectivesearch_boxes(rgb: np.ndarray, cfg: ProposalConfig) -> np.ndarray:
    import warnings

    import selectivesearch

    with warnings.catch_warnings():  # the package feeds floats to skimage's LBP
        warnings.simplefilter("ignore", UserWarning)
        _, regions = selectivesearch.selective_search(
            rgb, scale=cfg.ss_scale, sigma=cfg.ss_sigma, min_size=cfg.ss_min_size)
    return selectivesearch_rect_to_xyxy([r["rect"] for r in regions])


def compute_proposals(image: np.ndarray, cfg: ProposalConfig | None = None) -> np.ndarray:
    """Selective-search boxes of one image (see the module docstring).

    image: uint8 [H, W], [H, W, 3] (RGB) or [H, W, 4]; returns float32 [N, 4] internal
    boxes, 1 <= N <= cfg.max_boxes. Raises :class:`detect.errors.ProposalError` on bad input.
    """
    import cv2

    cfg = cfg or ProposalConfig()
    if cfg.backend == IMPORTED_BACKEND:
        raise ProposalError(f"proposals.backend={IMPORTED_BACKEND} reads R-CNN's published boxes for known "
                            "images (ProposalStore); it cannot compute proposals for a new image")
    if cfg.backend not in BACKENDS:
        raise ProposalError(f"proposals.backend: unknown backend {cfg.backend!r} (known: {', '.join(BACKENDS)})")
    if cfg.max_boxes < 1:
        raise ProposalError(f"proposals.max_boxes must be positive, got {cfg.max_boxes}")
    rgb = as_rgb_uint8(image)
    h, w = rgb.shape[:2]
    whole = np.array([[0, 0, w, h]], dtype=np.float32)
    if min(h, w) < max(cfg.min_size, 2):
        return whole
    scale = 1.0
    if max(h, w) > cfg.max_side:
        scale = cfg.max_side / max(h, w)
        rgb = cv2.resize(rgb, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
    if cfg.backend == "selectivesearch":
        groups = [_selectivesearch_boxes(rgb, cfg)]
    else:
        groups = _opencv_groups(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), cfg)
    boxes = rank_groups(groups)  # dedup + order on the segmented image's integer boxes
    if scale != 1.0:
        boxes = boxes / scale
        boxes[:, 0::2] = np.clip(boxes[:, 0::2], 0, w)
        boxes[:, 1::2] = np.clip(boxes[:, 1::2], 0, h)
    keep = ((boxes[:, 2] - boxes[:, 0]) >= cfg.min_size) & ((boxes[:, 3] - boxes[:, 1]) >= cfg.min_size)
    boxes = boxes[keep][: cfg.max_boxes]
    if len(boxes) == 0:
        return whole
    return np.ascontiguousarray(boxes, dtype=np.float32)
