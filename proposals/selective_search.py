"""Selective-search proposals for any image: three backends behind one function.

``compute_proposals(image, cfg)`` takes an RGB (or grayscale / RGBA) uint8 image and
returns float32 ``[N, 4]`` boxes in the internal convention (0-based continuous
``(x1, y1, x2, y2)``), at most ``cfg.max_boxes``, in an order that depends only on the
image and the settings.

Backends (``cfg.backend``):

``rcnn_fast`` (default)
    R-CNN / SPP-net "fast" mode (Uijlings et al., IJCV 2013; R-CNN's
    ``selective_search_boxes.m``): colour spaces HSV and Lab, Felzenszwalb graph
    segmentation with k = 50 and 100 (min region size = k), sigma 0.8 (OpenCV contrib's
    implementation), and two similarity strategies (colour + texture + size + fill, and
    texture + size + fill): 2 x 2 x 2 = 8 hierarchies, grouped here in numpy
    (:func:`hierarchical_grouping`, checked against :func:`hierarchical_grouping_reference`).
    Boxes narrower or shorter than ``cfg.min_size`` (12 px; R-CNN: 20) are dropped and
    duplicates removed.
``opencv_fast`` / ``opencv_quality``
    OpenCV's own ``switchToSelectiveSearchFast`` / ``Quality`` as they are (k = 150..450,
    more hierarchies, no size filter beyond ``cfg.min_size``).
``selectivesearch``
    The PyPI ``selectivesearch`` package: a single Felzenszwalb segmentation in one colour
    space with one strategy, in pure Python. One hierarchy gives far fewer distinct boxes
    than eight, so recall is lower; a finer segmentation (smaller ``ss_scale``) gives more
    boxes but the pure-Python merging slows down with the number of regions (about 6 s for
    a 500 x 375 photo at scale 100). ``bench/proposal_recall.py`` measures both; it is a
    reference rather than a production choice.
``rcnn_mat`` (not computed)
    R-CNN's published ``selective_search_data/*.mat`` boxes for VOC images, imported by
    :class:`proposals.ProposalStore` (``cfg.mat_path``; see :mod:`proposals.matfile`).

Where small objects were lost, and what ``rcnn_fast`` does about it. The first version
assembled fast mode from OpenCV's ``SelectiveSearchSegmentation`` (one ``process()`` per
colour space and k) and reached recall@0.5 0.958 (@0.7 0.750, ABO 0.786) on the 50 photos
of ``voc-photos-dev`` with 1,711 boxes per image. Its 5 misses among 120 objects, traced
by comparing each step's boxes (all hierarchies' boxes, then filtered, then capped):

* the 20 px minimum box size dropped the only good box of 2 people of 19-21 px width
  (their best boxes were 19 x 50 and 24 x 18): all hierarchies' boxes together reached
  0.975, the filtered and capped list 0.958. ``min_size`` is 12 now: a segment hugs its
  object, so an object of 13-20 px (the size of the misses measured on 100 real photos)
  has a tight box that a 16 or 20 px minimum drops; on these photos 10, 12, 15 and 16 px
  gave the same recall (12 px: 67 more boxes per image than 16, 1,902 in all);
* OpenCV's 8-bit HSV stores hue in 0..180, so 7 of the 25 hue bins stay empty and hue
  steps weigh 0.7 of what they should in the segmentation; the full 0..255 range
  (``COLOR_BGR2HSV_FULL``, R-CNN's [0, 1] HSV scaled) raised the unfiltered recall to 0.983;
* OpenCV builds each region's colour histogram with one masked pass over the whole image
  per region (segments x pixels: 0.85 s of a 1 s hierarchy pair at k = 50); the numpy
  grouping computes all histograms in one pass (``np.bincount``), shares them between the
  two strategies, and took 0.55x OpenCV's time for the same 8 hierarchies (50 photos, one
  thread, interleaved), about 0.8 s per photo where OpenCV's took 1.46 s;
* OpenCV exposes no hierarchy levels, so the ranking used the box's area rank as the
  level; the numpy grouping knows each box's merge level (R-CNN's, below) and both were
  measured, one group per hierarchy. On these photos they were level at 0.5 (0.983) and
  the merge levels one object ahead at 0.7 (0.775 against 0.767); on 70 crowded BCCD
  test images, where the 2,000 cap binds on every image, the area levels kept more
  (0.918 against 0.940 at 0.5 on 30 images, 0.986 against 0.992 on 40 others; at 0.7
  0.529 / 0.558 and 0.770 / 0.788), so ``rcnn_fast`` ranks by area levels, and
  :func:`rcnn_fast_hierarchies` still returns the merge levels. The unfiltered recall
  of the boxes was 0.992;
* images are segmented at their own size (``max_side`` 1000 leaves VOC's 500 px photos
  alone), so downscaling lost nothing here.

Together: recall@0.5 0.983, @0.7 0.767, ABO 0.794 with 1,902 boxes per image on
``voc-photos-dev``; 1.000 and 0.991 on the generated test split. The 2 misses are a
30 x 50 person that every segmentation merges with its surroundings before it is a region
of its own, and one whose only good box (IoU 0.55) ranks beyond the 2,000 cap. More
hierarchies were measured and not adopted: k = 150 as a third segmentation (22% more
time) or RGB as a third colour space (54% more) raised the uncapped recall@0.7 to 0.792 /
0.825, but under the 2,000 cap recall@0.5 stayed 0.983 (@0.7 0.775 / 0.800).

Order. R-CNN's ranking rule (Uijlings et al. 2013, section 3.3; ``Image2HierarchicalGrouping.m``
and ``selective_search_boxes.m``): in each hierarchy a box's priority is ``rand() * level``,
where the level counts merges backwards from the top (the whole image is level 1, the last
merges before it 2, 3, ..., the initial segments come last, all at level R for R segments);
all hierarchies' boxes are sorted by ascending priority and a duplicate keeps its first
(best) place, so a box that several hierarchies find tends to rank early. The level used
here is the box's rank by area within its hierarchy, largest first (:func:`area_levels`):
a parent region is larger than its children, so this keeps the order of every merge
tree. ``rcnn_fast`` ranks its 8 hierarchies so (its merge levels measured slightly worse
under the cap, above); OpenCV's modes and the ``selectivesearch`` package expose neither
levels nor hierarchies (OpenCV's own ranking counts levels the other way, a region's
height in the merge tree, which puts small segments first, and uses the C library's
unseeded ``rand()``): their boxes form one group. :func:`rank_groups` also takes given
levels.

``rand()`` is replaced by a hash of the box's integer coordinates and its hierarchy
number (:func:`_hash_uniform`): the order is stable for a given image and settings, on
any platform. The ``max_boxes`` cap keeps the first boxes of that order.

Large images (longer side above ``cfg.max_side``) are segmented downscaled and the boxes
mapped back; an image smaller than ``cfg.min_size`` gives the whole-image box.
"""
from __future__ import annotations

import heapq
import logging
from typing import Sequence

import numpy as np

from proposals.config import ProposalConfig
from sppcore.boxes import xywh_to_xyxy
from sppcore.errors import ProposalError

__all__ = [
    "ALGORITHMS",
    "ALGORITHM_VERSION",
    "compute_proposals",
    "as_rgb_uint8",
    "selectivesearch_rect_to_xyxy",
    "unique_boxes",
    "stable_order",
    "rank_groups",
    "area_levels",
    "colour_space_image",
    "felzenszwalb_segments",
    "region_features",
    "adjacent_pairs",
    "hierarchical_grouping",
    "hierarchical_grouping_reference",
    "rcnn_fast_hierarchies",
]

log = logging.getLogger(__name__)

# Version of what compute_proposals returns for given settings: bump it whenever a change
# to the algorithm changes the boxes (or their order) for an unchanged ProposalConfig, so
# that every cached proposal computed by the older code is recomputed.
ALGORITHM_VERSION = 3


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


def rank_groups(groups: Sequence[np.ndarray], levels: Sequence[np.ndarray] | None = None) -> np.ndarray:
    """R-CNN's ranking over several groups (hierarchies) of boxes (see the module docstring).

    In group ``g`` each box gets ``priority = rand_g(box) * level_g(box)`` (level given, or
    from :func:`area_levels` within the group when ``levels`` is None; rand from
    :func:`_hash_uniform` with stream g); a box found several times keeps its smallest
    priority, as R-CNN's duplicate removal after sorting keeps the first copy. Boxes are
    returned by ascending priority, ties by coordinates. groups: float32 [N_g, 4] internal
    each; levels: float [N_g] each; returns float32 [M, 4], unique.
    """
    boxes, priority = [], []
    for g, group in enumerate(groups):
        group = np.asarray(group, dtype=np.float32).reshape(-1, 4)
        if levels is None:
            group = unique_boxes(group)
            level = area_levels(group)
        else:
            level = np.asarray(levels[g], dtype=np.float64).reshape(-1)
            if len(level) != len(group):
                raise ValueError(f"group {g}: {len(group)} boxes but {len(level)} levels")
        boxes.append(group)
        priority.append(_hash_uniform(group, g) * level)
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
    edge and :func:`sppcore.boxes.xywh_to_xyxy` is the exact conversion."""
    return xywh_to_xyxy(np.asarray(ss.process(), dtype=np.float32).reshape(-1, 4))


def _opencv_groups(bgr: np.ndarray, cfg: ProposalConfig) -> list[np.ndarray]:
    """Boxes of OpenCV's own selective search (``opencv_fast`` / ``opencv_quality``) on a
    BGR uint8 image, internal convention, as one ranking group."""
    import cv2

    ss = cv2.ximgproc.segmentation.createSelectiveSearchSegmentation()
    ss.setBaseImage(bgr)
    if cfg.backend == "opencv_fast":
        ss.switchToSelectiveSearchFast()
    else:
        ss.switchToSelectiveSearchQuality()
    return [_xywh_boxes(ss)]


# Uijlings et al. 2013, section 3.2: colour histograms of 25 bins per channel, texture
# histograms of Gaussian derivatives (sigma 1) in 8 orientations with 10 bins per
# orientation and channel; both L1-normalised per region.
COLOUR_BINS = 25
TEXTURE_ORIENTATIONS = 8
TEXTURE_BINS = 10
TEXTURE_SIGMA = 1.0
# derivative responses at most this large count as flat (a step of one grey level gives ~0.3)
FLAT_RESPONSE = 1e-3
# The two similarity strategies of R-CNN's fast mode: colour + texture + size + fill, and
# texture + size + fill.
FAST_STRATEGIES = (("colour", "texture", "size", "fill"), ("texture", "size", "fill"))


def colour_space_image(bgr: np.ndarray, space: str) -> np.ndarray:
    """The 3-channel uint8 image the segmentation and the histograms work on. HSV uses the
    full 0..255 hue range (OpenCV's plain HSV stops at 180, which would leave 7 of the 25
    hue bins empty and shrink hue differences by 0.7 in the segmentation)."""
    import cv2

    conversions = {"hsv": cv2.COLOR_BGR2HSV_FULL, "lab": cv2.COLOR_BGR2Lab, "rgb": cv2.COLOR_BGR2RGB}
    if space not in conversions:
        raise ProposalError(f"proposals.color_spaces: unknown colour space {space!r} (known: {sorted(conversions)})")
    return cv2.cvtColor(bgr, conversions[space])


def felzenszwalb_segments(image: np.ndarray, k: float, sigma: float, min_region: int) -> np.ndarray:
    """Felzenszwalb-Huttenlocher graph segmentation (OpenCV contrib's implementation):
    image uint8 [H, W, C]; returns int32 labels [H, W], consecutive from 0."""
    import cv2

    segmenter = cv2.ximgproc.segmentation.createGraphSegmentation(float(sigma), float(k), int(min_region))
    labels = np.asarray(segmenter.processImage(image), dtype=np.int32)
    present = np.bincount(labels.ravel()) > 0
    if not present.all():  # make the labels consecutive, whatever OpenCV returns
        labels = (np.cumsum(present) - 1).astype(np.int32)[labels]
    return labels


def region_features(labels: np.ndarray, image: np.ndarray) -> dict:
    """Per-region statistics of a segmentation: ``size`` float64 [R] (pixels), ``boxes``
    float64 [R, 4] internal (a region covering columns 20..69 has x1 = 20, x2 = 70),
    ``colour`` [R, 25 C] and ``texture`` [R, 80 C] L1-normalised histograms.
    labels: int [H, W] in 0..R-1, every label present; image: uint8 [H, W, C]."""
    import cv2

    h, w = labels.shape
    flat = labels.ravel().astype(np.int64)
    n = int(flat.max()) + 1
    size = np.bincount(flat, minlength=n).astype(np.float64)
    # pixels grouped by region in raster order: the first/last pixel of a group give y1/y2
    order = np.argsort(flat, kind="stable")
    ys, xs = np.divmod(order, w)
    starts = np.concatenate([[0], np.cumsum(size[:-1])]).astype(np.int64)
    ends = np.concatenate([starts[1:], [h * w]]) - 1
    boxes = np.stack([np.minimum.reduceat(xs, starts), ys[starts],
                      np.maximum.reduceat(xs, starts) + 1, ys[ends] + 1], axis=1).astype(np.float64)
    channels = image.shape[2]
    colour = np.empty((n, channels * COLOUR_BINS))
    texture = np.empty((n, channels * TEXTURE_ORIENTATIONS * TEXTURE_BINS))
    angles = np.arange(TEXTURE_ORIENTATIONS) * (2 * np.pi / TEXTURE_ORIENTATIONS)
    for c in range(channels):
        plane = image[:, :, c]
        bins = (plane.ravel().astype(np.int64) * COLOUR_BINS) >> 8
        colour[:, c * COLOUR_BINS:(c + 1) * COLOUR_BINS] = np.bincount(
            flat * COLOUR_BINS + bins, minlength=n * COLOUR_BINS).reshape(n, COLOUR_BINS)
        smooth = cv2.GaussianBlur(plane.astype(np.float32), (0, 0), TEXTURE_SIGMA)
        gx = cv2.Sobel(smooth, cv2.CV_32F, 1, 0, ksize=3).ravel()
        gy = cv2.Sobel(smooth, cv2.CV_32F, 0, 1, ksize=3).ravel()
        for o, angle in enumerate(angles):
            # the derivative along one of 8 directions; its positive part (the opposite
            # direction is another of the 8), binned over [0, image maximum]
            response = np.maximum(np.float32(np.cos(angle)) * gx + np.float32(np.sin(angle)) * gy, 0)
            top = float(response.max())
            # a flat image's blurred float values differ by rounding noise only: no texture
            bins = (np.minimum((response * (TEXTURE_BINS / top)).astype(np.int64), TEXTURE_BINS - 1)
                    if top > FLAT_RESPONSE else np.zeros(len(response), np.int64))
            col = (c * TEXTURE_ORIENTATIONS + o) * TEXTURE_BINS
            texture[:, col:col + TEXTURE_BINS] = np.bincount(
                flat * TEXTURE_BINS + bins, minlength=n * TEXTURE_BINS).reshape(n, TEXTURE_BINS)
    colour /= colour.sum(axis=1, keepdims=True)
    texture /= texture.sum(axis=1, keepdims=True)
    return {"size": size, "boxes": boxes, "colour": colour, "texture": texture}


def adjacent_pairs(labels: np.ndarray) -> np.ndarray:
    """Pairs (a, b), a < b, of regions that touch (4-connectivity); int64 [P, 2], sorted."""
    a = np.concatenate([labels[:, :-1].ravel(), labels[:-1, :].ravel()]).astype(np.int64)
    b = np.concatenate([labels[:, 1:].ravel(), labels[1:, :].ravel()]).astype(np.int64)
    differ = a != b
    a, b = a[differ], b[differ]
    n = int(labels.max()) + 1
    codes = np.unique(np.minimum(a, b) * n + np.maximum(a, b))
    return np.stack([codes // n, codes % n], axis=1)


def _grouping_state(features: dict, strategy: Sequence[str]):
    """Arrays for 2R - 1 regions (R initial ones and every merge): size, box, and the
    histograms the strategy compares, side by side in one matrix."""
    unknown = set(strategy) - {"colour", "texture", "size", "fill"}
    if unknown:
        raise ProposalError(f"unknown similarity {sorted(unknown)}")
    n = len(features["size"])
    m = 2 * n - 1
    size = np.zeros(m)
    size[:n] = features["size"]
    boxes = np.zeros((m, 4))
    boxes[:n] = features["boxes"]
    parts = [features[name] for name in ("colour", "texture") if name in strategy]
    hist = np.zeros((m, sum(p.shape[1] for p in parts)))
    if parts:
        hist[:n] = np.concatenate(parts, axis=1)
    return size, boxes, hist


def _similarity(size, boxes, hist, t, others, image_area, strategy) -> np.ndarray:
    """Uijlings et al.'s similarity of region t (an id, or int64 [K] paired elementwise)
    with each region in ``others`` (int64 [K]):
    the sum of the strategy's terms, each in [0, 1]: histogram intersections (colour,
    texture), size 1 - (s_i + s_j) / im, fill 1 - (bbox_ij - s_i - s_j) / im."""
    sim = np.minimum(hist[others], hist[t]).sum(axis=1) if hist.shape[1] else np.zeros(len(others))
    if "size" in strategy:
        sim += 1.0 - (size[others] + size[t]) / image_area
    if "fill" in strategy:
        bw = np.maximum(boxes[others, 2], boxes[t, 2]) - np.minimum(boxes[others, 0], boxes[t, 0])
        bh = np.maximum(boxes[others, 3], boxes[t, 3]) - np.minimum(boxes[others, 1], boxes[t, 1])
        sim += 1.0 - (bw * bh - size[others] - size[t]) / image_area
    return sim


def hierarchical_grouping(features: dict, pairs: np.ndarray, image_area: float,
                          strategy: Sequence[str]) -> np.ndarray:
    """Selective search's greedy grouping (Uijlings et al. 2013, algorithm 1): repeatedly
    merge the most similar pair of neighbouring regions (ties: the lower region ids) into a
    new region whose histograms are the size-weighted means of its parts, until no
    neighbours are left. Region ids: 0..R-1 initial, R + i the i-th merge.

    features: :func:`region_features`; pairs: :func:`adjacent_pairs`; returns the merged
    regions' boxes, float64 [M, 4] in merge order (M = R - 1 for a connected image).
    Fast version of :func:`hierarchical_grouping_reference` (a heap with stale entries
    skipped, similarities only recomputed for the new region's neighbours)."""
    size, boxes, hist = _grouping_state(features, strategy)
    n = len(features["size"])
    neighbours = [set() for _ in range(len(size))]
    alive = np.zeros(len(size), bool)
    alive[:n] = True
    heap = []
    if len(pairs):
        a, b = pairs[:, 0], pairs[:, 1]
        # all initial pairs at once (region b against region a, elementwise)
        sim = _similarity(size, boxes, hist, b, a, image_area, strategy)
        heap = list(zip((-sim).tolist(), a.tolist(), b.tolist()))
        heapq.heapify(heap)
        for i, j in pairs.tolist():
            neighbours[i].add(j)
            neighbours[j].add(i)
    merged = []
    t = n
    while heap:
        _, a, b = heapq.heappop(heap)
        if not (alive[a] and alive[b]):
            continue  # stale: one of the two was merged since
        size[t] = size[a] + size[b]
        boxes[t, :2] = np.minimum(boxes[a, :2], boxes[b, :2])
        boxes[t, 2:] = np.maximum(boxes[a, 2:], boxes[b, 2:])
        hist[t] = (size[a] * hist[a] + size[b] * hist[b]) / size[t]
        alive[a] = alive[b] = False
        alive[t] = True
        around = (neighbours[a] | neighbours[b]) - {a, b}
        for x in around:
            neighbours[x].discard(a)
            neighbours[x].discard(b)
            neighbours[x].add(t)
        neighbours[t] = around
        if around:
            others = np.fromiter(sorted(around), np.int64, len(around))
            for x, s in zip(others.tolist(), _similarity(size, boxes, hist, t, others, image_area, strategy).tolist()):
                heapq.heappush(heap, (-s, x, t))
        merged.append(t)
        t += 1
    return boxes[merged].reshape(-1, 4)


def hierarchical_grouping_reference(features: dict, pairs: np.ndarray, image_area: float,
                                    strategy: Sequence[str]) -> np.ndarray:
    """Slow, obviously-correct :func:`hierarchical_grouping`: at every step the similarity
    of every neighbouring pair of live regions is computed afresh and the best one merged
    (ties: the lower ids)."""
    size, boxes, hist = _grouping_state(features, strategy)
    n = len(features["size"])
    edges = {(int(a), int(b)) for a, b in pairs}
    merged = []
    t = n
    while edges:
        best = None
        for a, b in sorted(edges):
            s = float(_similarity(size, boxes, hist, b, np.array([a]), image_area, strategy)[0])
            if best is None or s > best[0]:
                best = (s, a, b)
        _, a, b = best
        size[t] = size[a] + size[b]
        boxes[t, :2] = np.minimum(boxes[a, :2], boxes[b, :2])
        boxes[t, 2:] = np.maximum(boxes[a, 2:], boxes[b, 2:])
        hist[t] = (size[a] * hist[a] + size[b] * hist[b]) / size[t]
        renamed = set()
        for x, y in edges:
            x, y = (t if x in (a, b) else x), (t if y in (a, b) else y)
            if x != y:
                renamed.add((min(x, y), max(x, y)))
        edges = renamed
        merged.append(t)
        t += 1
    return boxes[merged].reshape(-1, 4)


def rcnn_fast_hierarchies(bgr: np.ndarray, cfg: ProposalConfig) -> list[tuple[np.ndarray, np.ndarray]]:
    """R-CNN's fast mode: for each colour space and k, one Felzenszwalb segmentation
    (min region = k) and one hierarchy per similarity strategy. Returns per hierarchy
    (boxes float32 [B, 4] internal, levels float64 [B]): the initial segments, then the
    merges; R-CNN's level counts merges back from the top (the last merge, the whole
    image, is 1) and gives every initial segment the level R."""
    h, w = bgr.shape[:2]
    out = []
    for space in cfg.color_spaces:
        image = colour_space_image(bgr, space)
        for k in cfg.segmentation_ks:
            labels = felzenszwalb_segments(image, k, cfg.sigma, k)
            features = region_features(labels, image)
            pairs = adjacent_pairs(labels)
            n = len(features["size"])
            for strategy in FAST_STRATEGIES:
                merged = hierarchical_grouping(features, pairs, float(h * w), strategy)
                boxes = np.concatenate([features["boxes"], merged]).astype(np.float32)
                levels = np.concatenate([np.full(n, float(n)), np.arange(len(merged), 0, -1, dtype=np.float64)])
                out.append((boxes, levels))
    return out


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
    boxes, 1 <= N <= cfg.max_boxes. Raises :class:`sppcore.errors.ProposalError` on bad input.
    """
    import cv2

    cfg = cfg or ProposalConfig()
    if cfg.backend not in ALGORITHMS:
        from proposals.backends import BACKENDS

        if cfg.backend in BACKENDS:
            raise ProposalError(f"proposals.backend={cfg.backend} reads published boxes for known images "
                                "(ProposalStore); it cannot compute proposals for a new image")
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
    boxes = ALGORITHMS[cfg.backend](rgb, cfg)
    if scale != 1.0:
        boxes = boxes / scale
        boxes[:, 0::2] = np.clip(boxes[:, 0::2], 0, w)
        boxes[:, 1::2] = np.clip(boxes[:, 1::2], 0, h)
    keep = ((boxes[:, 2] - boxes[:, 0]) >= cfg.min_size) & ((boxes[:, 3] - boxes[:, 1]) >= cfg.min_size)
    boxes = boxes[keep][: cfg.max_boxes]
    if len(boxes) == 0:
        return whole
    return np.ascontiguousarray(boxes, dtype=np.float32)


def _rcnn_fast_ranked(rgb: np.ndarray, cfg: ProposalConfig) -> np.ndarray:
    import cv2

    # one group per hierarchy, ranked by area levels (module docstring: under the
    # 2,000 cap they kept more objects than the merge levels on crowded images)
    hierarchies = rcnn_fast_hierarchies(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), cfg)
    return rank_groups([b for b, _ in hierarchies])


def _opencv_ranked(rgb: np.ndarray, cfg: ProposalConfig) -> np.ndarray:
    import cv2

    # dedup + order on the segmented image's integer boxes
    return rank_groups(_opencv_groups(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), cfg))


def _selectivesearch_ranked(rgb: np.ndarray, cfg: ProposalConfig) -> np.ndarray:
    return rank_groups([_selectivesearch_boxes(rgb, cfg)])


#: the computing backends: ``proposals.backend`` -> fn(RGB uint8 image at the working
#: size, settings) -> ranked float boxes of that image (before the size filter and cap).
#: The store's registry, :data:`proposals.backends.BACKENDS`, adds the imported ``rcnn_mat``.
ALGORITHMS = {
    "rcnn_fast": _rcnn_fast_ranked,
    "opencv_fast": _opencv_ranked,
    "opencv_quality": _opencv_ranked,
    "selectivesearch": _selectivesearch_ranked,
}
