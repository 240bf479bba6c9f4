"""Scoring, box regression and NMS on the network's device: the torch twins of
:mod:`detect.detector`'s numpy steps, so that a detector on a GPU sends back only its
detections (a few hundred rows), never the [N, 4096] fc7 of its windows.

The chain for one image is the numpy one (:mod:`detect.detector`) step for step:

1. class scores of the distinct windows' features (the classifier's
   ``score_tensor``), scattered to every window;
2. optional per-class box regression (:meth:`detect.bbox_regression.BoxRegressor.predict_all_classes_tensor`,
   :func:`apply_bbox_deltas_tensor`) and clipping to the image;
3. :func:`batched_nms_topk`: per class, the threshold, greedy NMS and top-k of every class
   at once.

The NMS is the greedy rule of :func:`sppcore.boxes.nms` (a box is suppressed when its IoU
with a kept, higher-scoring box is ``> iou``; ties in score keep the lower index first),
computed without a sequential loop over boxes: with the boxes of each class in score
order and ``S[i, j]`` = "i comes before j and IoU(i, j) > iou", the greedy result is the
unique ``keep`` with ``keep[j] = valid[j] and not any_i(keep[i] and S[i, j])`` (by
induction over positions), and the iteration ``keep <- valid & ~(keep @ S)`` from
``keep = valid`` reaches it: after t steps the first t positions are final, so it stops
at the latest after P steps and, in practice, after a few (it stops when a step changes
nothing, which only the fixed point does). Only a prefix of each class's ranking is
needed: the first ``max_keep`` kept boxes depend only on the boxes ranked above the last
of them, so the ranking is taken in blocks until every class has ``max_keep`` kept boxes
or no candidates left (:func:`batched_nms_topk`). The IoUs are computed in float64 by
the formula of :func:`sppcore.boxes.box_iou` (:func:`iou_exceeds`), so on the same
boxes and scores the result is :func:`sppcore.boxes.nms`'s (tests/test_device_postprocess.py).

Every function works on any device (the tests run them on the CPU against the numpy
steps); :class:`detect.detector_api.Detector` uses them where its network runs on a GPU.
"""
from __future__ import annotations

import time

import numpy as np
import torch

from detect.detector import Detections

__all__ = [
    "arrays_on_device",
    "box_iou_tensor",
    "clip_boxes_tensor",
    "apply_bbox_deltas_tensor",
    "iou_exceeds",
    "greedy_nms_mask",
    "batched_nms_topk",
    "detections_from_scores_tensor",
    "score_image_on_device",
    "detect_image_on_device",
]

# box pairs compared at once by batched_nms_topk (its blocks' size follows): each float64
# temporary of a block's IoUs is then 256 MB at most
NMS_PAIRS = 2**25

# log(1000 / 16): the cap on regressed log-scale changes (sppcore.boxes.apply_bbox_deltas)
_MAX_LOG = float(np.log(1000.0 / 16))


def arrays_on_device(owner, device, **arrays) -> dict:
    """``arrays`` as torch tensors on ``device``, copied there once per device and kept on
    ``owner`` (a classifier or regressor, whose arrays do not change): what the
    ``score_tensor`` / ``predict_all_classes_tensor`` methods multiply by. Each value is a
    numpy array or a function giving one, called only when the copy is made (so that
    preparing it costs nothing on later calls)."""
    cache = owner.__dict__.setdefault("_tensors", {})
    key = str(device)
    if key not in cache:
        cache[key] = {name: torch.from_numpy(np.ascontiguousarray(a() if callable(a) else a)).to(device)
                      for name, a in arrays.items()}
    return cache[key]


def box_iou_tensor(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pairwise IoU of boxes ``a`` [..., N, 4] and ``b`` [..., M, 4] (batched over the
    leading dimensions) -> float64 [..., N, M], by :func:`sppcore.boxes.box_iou`'s formula
    and in its order of operations (so the same values, bit for bit)."""
    a, b = a.double(), b.double()
    area_a = (a[..., 2] - a[..., 0]).clamp_min(0) * (a[..., 3] - a[..., 1]).clamp_min(0)
    area_b = (b[..., 2] - b[..., 0]).clamp_min(0) * (b[..., 3] - b[..., 1]).clamp_min(0)
    ix1 = torch.maximum(a[..., :, None, 0], b[..., None, :, 0])
    iy1 = torch.maximum(a[..., :, None, 1], b[..., None, :, 1])
    ix2 = torch.minimum(a[..., :, None, 2], b[..., None, :, 2])
    iy2 = torch.minimum(a[..., :, None, 3], b[..., None, :, 3])
    inter = (ix2 - ix1).clamp_min(0) * (iy2 - iy1).clamp_min(0)
    union = area_a[..., :, None] + area_b[..., None, :] - inter
    return torch.where(union > 0, inter / torch.where(union > 0, union, torch.ones_like(union)),
                       torch.zeros_like(union))


def clip_boxes_tensor(boxes: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """:func:`sppcore.boxes.clip_boxes` of boxes [..., 4] (a new tensor, same dtype)."""
    out = boxes.clone()
    out[..., 0::2] = out[..., 0::2].clamp(0, width)
    out[..., 1::2] = out[..., 1::2].clamp(0, height)
    return out


def apply_bbox_deltas_tensor(proposals: torch.Tensor, deltas: torch.Tensor) -> torch.Tensor:
    """:func:`sppcore.boxes.apply_bbox_deltas`: deltas ``(tx, ty, tw, th)`` [..., 4] applied
    to proposals [..., 4] (broadcast), in float64; float32 boxes back."""
    p, d = proposals.double(), deltas.double()
    pw = p[..., 2] - p[..., 0]
    ph = p[..., 3] - p[..., 1]
    px, py = p[..., 0] + 0.5 * pw, p[..., 1] + 0.5 * ph
    cx = px + d[..., 0] * pw
    cy = py + d[..., 1] * ph
    w = pw * torch.exp(d[..., 2].clamp(max=_MAX_LOG))
    h = ph * torch.exp(d[..., 3].clamp(max=_MAX_LOG))
    return torch.stack([cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h], dim=-1).float()


def iou_exceeds(a: torch.Tensor, b: torch.Tensor, iou: float) -> torch.Tensor:
    """``box_iou(a_i, b_j) > iou`` for boxes a [..., M, 4] and b [..., B, 4] -> bool
    [..., M, B]: :func:`box_iou_tensor`'s values in fewer passes over memory, without its
    guard for empty unions (a pair with union 0 has intersection 0; 0 / 0 is NaN, and
    NaN > iou is False, as box_iou's 0 is never above a threshold in [0, 1])."""
    a, b = a.double(), b.double()
    area_a = (a[..., 2] - a[..., 0]).clamp_min(0) * (a[..., 3] - a[..., 1]).clamp_min(0)
    area_b = (b[..., 2] - b[..., 0]).clamp_min(0) * (b[..., 3] - b[..., 1]).clamp_min(0)
    w = torch.minimum(a[..., :, None, 2], b[..., None, :, 2])
    w.sub_(torch.maximum(a[..., :, None, 0], b[..., None, :, 0])).clamp_min_(0)
    h = torch.minimum(a[..., :, None, 3], b[..., None, :, 3])
    h.sub_(torch.maximum(a[..., :, None, 1], b[..., None, :, 1])).clamp_min_(0)
    inter = w.mul_(h)
    union = (area_a[..., :, None] + area_b[..., None, :]).sub_(inter)
    return inter.div_(union) > iou


def greedy_nms_mask(boxes: torch.Tensor, valid: torch.Tensor, iou: float, prior: torch.Tensor | None = None,
                    prior_valid: torch.Tensor | None = None, check_every: int = 3) -> torch.Tensor:
    """Greedy NMS of boxes already in score order, every class at once: boxes [K, P, 4],
    valid bool [K, P] (candidates; others neither kept nor suppressing) -> kept bool [K, P]
    (see the module docstring for the iteration and why it is exact). ``prior`` [K, M, 4]
    with ``prior_valid`` bool [K, M]: boxes kept before these (ranked above them), which
    suppress them too."""
    k, p = valid.shape
    if p == 0:
        return valid.clone()
    m = 0 if prior is None else prior.shape[1]
    exceeds = iou_exceeds(boxes if not m else torch.cat([prior, boxes], 1), boxes, iou)  # [K, M + P, P]
    if m:
        valid = valid & ~(exceeds[:, :m] & prior_valid[:, :, None]).any(1)
    # i suppresses j: i ranked above j, both candidates, IoU above the threshold; counts
    # of kept suppressors stay exact integers in float32 (at most P < 2^24)
    suppress = (exceeds[:, m:].triu_(1) & valid[:, :, None]).float()
    valid_f = valid.float()
    keep = valid_f
    for step in range(p):
        new = valid_f.masked_fill(torch.bmm(keep[:, None, :], suppress)[:, 0] > 0, 0.0)
        if ((step + 1) % check_every == 0 or step == p - 1) and torch.equal(new, keep):
            break
        keep = new
    return new > 0


def batched_nms_topk(boxes: torch.Tensor, scores: torch.Tensor, iou: float, max_keep: int,
                     score_threshold: float = -np.inf) -> tuple[torch.Tensor, torch.Tensor]:
    """Per class: drop scores below ``score_threshold``, greedy NMS at ``iou``, keep the
    ``max_keep`` best. boxes [K, N, 4] (each class's own boxes), scores [K, N] ->
    (class int64 [M], window index int64 [M]) of the kept boxes, by class and within a
    class by descending score (ties: lower index first), as
    :func:`detect.detector.detections_from_scores` orders them.

    The ranking is taken in blocks (the first ``8 * max_keep`` boxes, then blocks that
    double the prefix, each of at most about ``sqrt(NMS_PAIRS / K)`` boxes, as long as a
    class has fewer than ``max_keep`` kept boxes and candidates left): a block's boxes are
    suppressed by the boxes kept before it (at most ``max_keep`` per class matter) and by
    each other (:func:`greedy_nms_mask`), so no pair of boxes is compared twice."""
    k, n = scores.shape
    device = scores.device
    if k == 0 or n == 0 or max_keep <= 0:
        empty = torch.zeros(0, dtype=torch.int64, device=device)
        return empty, empty
    # descending, stable: the sort of -score ascending keeps equal scores in index order
    order = torch.sort(-scores, dim=1, stable=True).indices  # [K, N]
    valid = torch.gather(scores, 1, order) >= score_threshold
    ranked = torch.gather(boxes, 1, order[:, :, None].expand(k, n, 4))
    keep = torch.zeros((k, n), dtype=torch.bool, device=device)
    kept_boxes = kept_valid = None
    # blocks of at most `most` boxes: about NMS_PAIRS pairs compared at once, whatever K
    most = max(16, int((NMS_PAIRS / k) ** 0.5) - max_keep)
    start, end = 0, min(n, 8 * max_keep, most)
    while True:
        keep[:, start:end] = greedy_nms_mask(ranked[:, start:end], valid[:, start:end], iou, kept_boxes, kept_valid)
        if end == n:
            break
        counts, left = torch.stack([keep[:, :end].sum(1), valid[:, end:].sum(1)]).tolist()
        if all(c >= max_keep or r == 0 for c, r in zip(counts, left)):
            break
        # each class's first (at most max_keep) kept boxes, padded with rows that are not
        m = min(max_keep, max(counts))
        first = torch.sort((~keep[:, :end]).to(torch.uint8), dim=1, stable=True).indices[:, :m]
        kept_boxes = torch.gather(ranked, 1, first[:, :, None].expand(k, m, 4))
        kept_valid = torch.gather(keep, 1, first)
        start, end = end, min(n, end + min(end, most))
    keep &= keep.cumsum(1) <= max_keep
    cls, pos = keep.nonzero(as_tuple=True)  # row-major: by class, then by rank
    return cls, order[cls, pos]


def detections_from_scores_tensor(boxes: torch.Tensor, scores: torch.Tensor, image_size: tuple[int, int],
                                  nms_iou: float = 0.3, max_per_class: int = 100,
                                  score_threshold: float = -np.inf,
                                  class_boxes: torch.Tensor | None = None) -> Detections:
    """:func:`detect.detector.detections_from_scores` on tensors of any device: windows
    boxes [N, 4], scores [N, K], image_size (height, width), class_boxes optional [N, K, 4]
    (per-class regressed boxes replacing ``boxes`` for class k). Only the detections come
    back to the host (numpy :class:`Detections`)."""
    n, k = scores.shape
    if len(boxes) != n:
        raise ValueError(f"scores must be [N, K] with N = {len(boxes)}, got {list(scores.shape)}")
    height, width = image_size
    per_class = (boxes.float()[None].expand(k, n, 4) if class_boxes is None
                 else class_boxes.float().permute(1, 0, 2))
    per_class = clip_boxes_tensor(per_class, height, width)
    cls, idx = batched_nms_topk(per_class, scores.float().T, nms_iou, max_per_class, score_threshold)
    if len(cls) == 0:
        return Detections.empty()
    return Detections(per_class[cls, idx].cpu().numpy().astype(np.float32),
                      cls.cpu().numpy().astype(np.int64),
                      scores.float()[idx, cls].cpu().numpy().astype(np.float32))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def score_image_on_device(model, extractor, image: np.ndarray, boxes: np.ndarray):
    """:func:`detect.testing.score_image` with the features left on ``extractor``'s
    device: window features of the distinct windows
    (:meth:`detect.features.WindowExtractor.extract_tensors`), class scores and per-class
    regressed boxes there. Returns (windows Tensor[N, 4], scores Tensor[N, K], class boxes
    Tensor[N, K, 4] or None, {stage: seconds}), all on the device."""
    from detect.testing import model_layers

    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    feats, inverse, timings = extractor.extract_tensors(image, boxes, model_layers(model))
    device = extractor.device
    t0 = time.perf_counter()
    with torch.inference_mode():
        rows = torch.from_numpy(np.asarray(inverse, np.int64)).to(device)
        scores = model.classifier.score_tensor(feats[model.classifier.layer])[rows]
        _sync(device)
        t1 = time.perf_counter()
        windows = torch.from_numpy(boxes).to(device)
        class_boxes = None
        if model.regressor is not None and len(boxes):
            deltas = model.regressor.predict_all_classes_tensor(feats[model.bbox_layer])[rows]  # [N, K, 4]
            class_boxes = apply_bbox_deltas_tensor(windows[:, None, :], deltas)
        _sync(device)
    timings = {k: float(v) for k, v in timings.items()}
    timings.update(svm=t1 - t0, bbox_reg=time.perf_counter() - t1)
    return windows, scores, class_boxes, timings


def detect_image_on_device(model, extractor, image: np.ndarray, boxes: np.ndarray) -> tuple[Detections, dict]:
    """:func:`detect.testing.detect_image` on ``extractor``'s device: scores and regressed
    boxes (:func:`score_image_on_device`) and NMS there; only the detections come back.
    Returns the detections and the seconds per stage (``svm``, ``bbox_reg`` and ``nms``
    beside the extractor's)."""
    windows, scores, class_boxes, timings = score_image_on_device(model, extractor, image, boxes)
    t0 = time.perf_counter()
    tcfg = model.config.test
    with torch.inference_mode():
        det = detections_from_scores_tensor(windows, scores, tuple(image.shape[:2]), nms_iou=tcfg.nms_iou,
                                            max_per_class=tcfg.max_per_class, score_threshold=tcfg.score_threshold,
                                            class_boxes=class_boxes)
    timings["nms"] = time.perf_counter() - t0
    return det, timings
