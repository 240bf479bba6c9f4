"""Box utilities (numpy, no torch).

Convention everywhere inside the project: float32 ``[N, 4]`` arrays of
``(x1, y1, x2, y2)`` in continuous, 0-based image coordinates; a box covering pixel
columns 0..9 is ``x1 = 0, x2 = 10``. Conversions to other conventions happen at the
borders of the system, one named function each:

* VOC XML / devkit result files (1-based inclusive pixels): :func:`voc_to_internal`,
  inverse :func:`internal_to_voc`.
* selective search ``(x, y, w, h)``: :func:`xywh_to_xyxy`, inverse :func:`xyxy_to_xywh`.

With this convention the plain IoU equals the devkit's "+1 pixel" IoU on the 1-based
boxes, since ``(x2 - x1)`` here is ``(xmax - xmin + 1)`` there.
"""
from __future__ import annotations

import numpy as np

__all__ = [
    "voc_to_internal",
    "internal_to_voc",
    "xywh_to_xyxy",
    "xyxy_to_xywh",
    "as_boxes",
    "box_area",
    "box_iou",
    "clip_boxes",
    "nms",
    "nms_reference",
    "bbox_targets",
    "apply_bbox_deltas",
]


def as_boxes(boxes) -> np.ndarray:
    """Return ``boxes`` as a float32 ``[N, 4]`` array (``N = 0`` gives shape ``(0, 4)``)."""
    arr = np.asarray(boxes, dtype=np.float32)
    if arr.size == 0:
        return np.zeros((0, 4), dtype=np.float32)
    if arr.ndim != 2 or arr.shape[1] != 4:
        raise ValueError(f"boxes must have shape [N, 4], got {arr.shape}")
    return arr


def voc_to_internal(voc_boxes) -> np.ndarray:
    """VOC ``(xmin, ymin, xmax, ymax)``, 1-based inclusive -> internal 0-based continuous.

    Inverse: :func:`internal_to_voc`.
    """
    b = as_boxes(voc_boxes).copy()
    b[:, 0] -= 1.0
    b[:, 1] -= 1.0
    return b


def internal_to_voc(boxes) -> np.ndarray:
    """Internal 0-based continuous -> VOC 1-based inclusive ``(xmin, ymin, xmax, ymax)``.

    Inverse of :func:`voc_to_internal`. Values are not rounded: the devkit reads floats.
    """
    b = as_boxes(boxes).copy()
    b[:, 0] += 1.0
    b[:, 1] += 1.0
    return b


def xywh_to_xyxy(xywh) -> np.ndarray:
    """Selective-search ``(x, y, w, h)`` (0-based pixel of the top-left corner, size in
    pixels) -> internal ``(x1, y1, x2, y2)``. Inverse: :func:`xyxy_to_xywh`."""
    b = as_boxes(xywh).copy()
    b[:, 2] = b[:, 0] + b[:, 2]
    b[:, 3] = b[:, 1] + b[:, 3]
    return b


def xyxy_to_xywh(boxes) -> np.ndarray:
    """Internal ``(x1, y1, x2, y2)`` -> ``(x, y, w, h)``. Inverse of :func:`xywh_to_xyxy`."""
    b = as_boxes(boxes).copy()
    b[:, 2] = b[:, 2] - b[:, 0]
    b[:, 3] = b[:, 3] - b[:, 1]
    return b


def box_area(boxes) -> np.ndarray:
    """Areas ``[N]`` of internal-convention boxes (negative extents count as zero)."""
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    return np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)


def box_iou(a, b) -> np.ndarray:
    """Pairwise IoU ``[N, M]`` (float64) of two sets of internal-convention boxes."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)), dtype=np.float64)
    ix1 = np.maximum(a[:, None, 0], b[None, :, 0])
    iy1 = np.maximum(a[:, None, 1], b[None, :, 1])
    ix2 = np.minimum(a[:, None, 2], b[None, :, 2])
    iy2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(ix2 - ix1, 0, None) * np.clip(iy2 - iy1, 0, None)
    union = box_area(a)[:, None] + box_area(b)[None, :] - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)
    return iou


def clip_boxes(boxes, height: int, width: int) -> np.ndarray:
    """Clip internal-convention boxes to an image of ``height`` x ``width`` pixels."""
    b = as_boxes(boxes).copy()
    b[:, 0::2] = np.clip(b[:, 0::2], 0, width)
    b[:, 1::2] = np.clip(b[:, 1::2], 0, height)
    return b


# candidates per step of :func:`nms`: their IoUs with each other and with the boxes kept
# so far are computed at once
NMS_BLOCK = 256


def nms(boxes, scores, iou_thresh: float, max_keep: int | None = None) -> np.ndarray:
    """Greedy non-maximum suppression; returns kept indices (int64) by descending score.

    A box is suppressed when its IoU with a kept, higher-scoring box is ``> iou_thresh``
    (R-CNN's ``nms.m`` convention). Ties in score keep the lower index first (stable sort).
    With ``max_keep``, stops after the first ``max_keep`` kept boxes: exactly the first
    ``max_keep`` of the whole result (a box's fate depends only on the boxes kept before
    it), in a fraction of the time (the detector keeps 100 per class of 2,000 windows).

    The boxes are taken in score order, :data:`NMS_BLOCK` at a time: one :func:`box_iou`
    of the block with the boxes kept so far and one of the block with itself, then the
    greedy pass over the block reads those matrices. The IoUs are the reference's to the
    bit (the same formula), so the result is :func:`nms_reference`'s.
    """
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    if len(b) == 0:
        return np.zeros((0,), dtype=np.int64)
    order = np.argsort(-s, kind="stable")
    b = b[order]
    limit = len(b) if max_keep is None else int(max_keep)
    keep: list[int] = []  # positions in score order
    for start in range(0, len(b), NMS_BLOCK):
        if len(keep) >= limit:
            break
        block = b[start : start + NMS_BLOCK]
        alive = np.ones(len(block), dtype=bool)
        if keep:
            alive &= ~(box_iou(b[keep], block) > iou_thresh).any(axis=0)
        suppresses = box_iou(block, block) > iou_thresh
        for j in range(len(block)):
            if not alive[j]:
                continue
            keep.append(start + j)
            if len(keep) >= limit:
                break
            alive[j + 1 :] &= ~suppresses[j, j + 1 :]
    return order[np.asarray(keep, dtype=np.int64)]


def nms_reference(boxes, scores, iou_thresh: float) -> np.ndarray:
    """Slow, obviously correct NMS used to test :func:`nms`."""
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    order = sorted(range(len(b)), key=lambda k: (-s[k], k))
    keep = []
    for i in order:
        if all(box_iou(b[i : i + 1], b[j : j + 1])[0, 0] <= iou_thresh for j in keep):
            keep.append(i)
    return np.asarray(keep, dtype=np.int64)


def bbox_targets(proposals, gt_boxes) -> np.ndarray:
    """Regression targets ``(tx, ty, tw, th)`` from proposals P to ground truth G
    (R-CNN appendix C): ``((Gx-Px)/Pw, (Gy-Py)/Ph, log(Gw/Pw), log(Gh/Ph))`` with centres
    and sizes in the internal continuous convention. Inverse: :func:`apply_bbox_deltas`."""
    p = np.asarray(proposals, dtype=np.float64).reshape(-1, 4)
    g = np.asarray(gt_boxes, dtype=np.float64).reshape(-1, 4)
    pw = np.maximum(p[:, 2] - p[:, 0], 1e-6)
    ph = np.maximum(p[:, 3] - p[:, 1], 1e-6)
    gw = np.maximum(g[:, 2] - g[:, 0], 1e-6)
    gh = np.maximum(g[:, 3] - g[:, 1], 1e-6)
    px, py = p[:, 0] + 0.5 * pw, p[:, 1] + 0.5 * ph
    gx, gy = g[:, 0] + 0.5 * gw, g[:, 1] + 0.5 * gh
    t = np.stack([(gx - px) / pw, (gy - py) / ph, np.log(gw / pw), np.log(gh / ph)], axis=1)
    return t.astype(np.float32)


def apply_bbox_deltas(proposals, deltas) -> np.ndarray:
    """Apply ``(tx, ty, tw, th)`` deltas ``[N, 4]`` to proposals ``[N, 4]``.

    Inverse of :func:`bbox_targets`. ``tw``/``th`` are clipped at log(1000/16) as in
    Fast R-CNN so that a wild regressor cannot overflow.
    """
    p = np.asarray(proposals, dtype=np.float64).reshape(-1, 4)
    d = np.asarray(deltas, dtype=np.float64).reshape(-1, 4)
    pw = p[:, 2] - p[:, 0]
    ph = p[:, 3] - p[:, 1]
    px, py = p[:, 0] + 0.5 * pw, p[:, 1] + 0.5 * ph
    max_log = np.log(1000.0 / 16)
    cx = px + d[:, 0] * pw
    cy = py + d[:, 1] * ph
    w = pw * np.exp(np.minimum(d[:, 2], max_log))
    h = ph * np.exp(np.minimum(d[:, 3], max_log))
    out = np.stack([cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h], axis=1)
    return out.astype(np.float32)
