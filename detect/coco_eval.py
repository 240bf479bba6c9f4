"""COCO-style AP@[.5:.95] (plus AP50 and AP75) of VOC-style detections, via pycocotools.

An extra metric beside the VOC07 AP. Converters go both ways between the project's
per-image lists (internal boxes, 0-based continuous ``(x1, y1, x2, y2)``) and COCO json
(``bbox = [x, y, w, h]`` in the same continuous coordinates, so ``w = x2 - x1``).

``difficult`` objects become ``iscrowd = 1`` regions, the only way pycocotools ignores a
ground truth: detections matching them count neither way, which is what VOC does with
difficult objects. It is a close analogue rather than an exact one: COCO matches a crowd
region by intersection over the *detection's* area and lets several detections match it.
"""
from __future__ import annotations

import contextlib
import io
from typing import Sequence

import numpy as np

__all__ = ["voc_to_coco_gt", "detections_to_coco", "coco_to_detections", "eval_detection_coco"]


def voc_to_coco_gt(
    image_ids: Sequence[str],
    gt_boxes: Sequence[np.ndarray],
    gt_labels: Sequence[np.ndarray],
    gt_difficult: Sequence[np.ndarray] | None,
    classes: Sequence[str],
    sizes: Sequence[tuple[int, int]] | None = None,
) -> dict:
    """Ground truth as a COCO dataset dict. COCO image ids are 1..N in ``image_ids`` order
    (the VOC id is kept as ``file_name``); category ids are label + 1. ``sizes``: optional
    (height, width) per image."""
    images, annotations = [], []
    ann_id = 1
    for n, image_id in enumerate(image_ids):
        h, w = sizes[n] if sizes is not None else (0, 0)
        images.append({"id": n + 1, "file_name": str(image_id), "height": int(h), "width": int(w)})
        boxes = np.asarray(gt_boxes[n], np.float64).reshape(-1, 4)
        difficult = np.zeros(len(boxes), bool) if gt_difficult is None else np.asarray(gt_difficult[n], bool)
        for b, lab, dif in zip(boxes, np.asarray(gt_labels[n]), difficult):
            w_, h_ = float(b[2] - b[0]), float(b[3] - b[1])
            annotations.append({
                "id": ann_id, "image_id": n + 1, "category_id": int(lab) + 1,
                "bbox": [float(b[0]), float(b[1]), w_, h_], "area": w_ * h_, "iscrowd": int(bool(dif)),
            })
            ann_id += 1
    categories = [{"id": k + 1, "name": c} for k, c in enumerate(classes)]
    return {"images": images, "annotations": annotations, "categories": categories}


def detections_to_coco(pred_boxes, pred_labels, pred_scores) -> list[dict]:
    """Per-image detection lists -> COCO result dicts (image ids 1..N, category label + 1)."""
    out = []
    for n, (boxes, labels, scores) in enumerate(zip(pred_boxes, pred_labels, pred_scores)):
        for b, lab, s in zip(np.asarray(boxes, np.float64).reshape(-1, 4), np.asarray(labels), np.asarray(scores)):
            out.append({"image_id": n + 1, "category_id": int(lab) + 1,
                        "bbox": [float(b[0]), float(b[1]), float(b[2] - b[0]), float(b[3] - b[1])],
                        "score": float(s)})
    return out


def coco_to_detections(results: Sequence[dict], num_images: int):
    """Inverse of :func:`detections_to_coco`: per-image (boxes [N, 4], labels [N], scores [N])."""
    boxes = [[] for _ in range(num_images)]
    labels = [[] for _ in range(num_images)]
    scores = [[] for _ in range(num_images)]
    for r in results:
        n = int(r["image_id"]) - 1
        x, y, w, h = r["bbox"]
        boxes[n].append([x, y, x + w, y + h])
        labels[n].append(int(r["category_id"]) - 1)
        scores[n].append(float(r["score"]))
    return ([np.asarray(b, np.float32).reshape(-1, 4) for b in boxes],
            [np.asarray(x, np.int64) for x in labels],
            [np.asarray(x, np.float32) for x in scores])


def eval_detection_coco(pred_boxes, pred_labels, pred_scores, gt_boxes, gt_labels, gt_difficult,
                        classes: Sequence[str], max_detections: int = 10000) -> dict:
    """COCO metrics: ``ap`` (AP@[.5:.95]), ``ap50``, ``ap75`` and ``ap_per_class`` [K]
    (NaN for a class without ground truth). Up to ``max_detections`` per image count
    (COCO's default of 100 would cut VOC's 100 per class)."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    n = len(gt_boxes)
    ids = [str(i) for i in range(n)]
    gt = voc_to_coco_gt(ids, gt_boxes, gt_labels, gt_difficult, classes)
    dets = detections_to_coco(pred_boxes, pred_labels, pred_scores)
    k = len(classes)
    if not dets or not gt["annotations"]:
        # pycocotools cannot load an empty result list: nothing found is AP 0 where there
        # is ground truth, NaN where there is none
        has_gt = np.zeros(k, bool)
        has_gt[[a["category_id"] - 1 for a in gt["annotations"]]] = True
        empty = 0.0 if has_gt.any() else float("nan")
        return {"ap": empty, "ap50": empty, "ap75": empty,
                "ap_per_class": np.where(has_gt, 0.0, np.nan)}
    sink = io.StringIO()  # pycocotools prints; library code must not
    with contextlib.redirect_stdout(sink):
        coco_gt = COCO()
        coco_gt.dataset = gt
        coco_gt.createIndex()
        coco_dt = coco_gt.loadRes(dets)
        ev = COCOeval(coco_gt, coco_dt, "bbox")
        ev.params.maxDets = [1, 100, max_detections]
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    prec = ev.eval["precision"]  # [T, R, K, A, M]
    per_class = np.full(k, np.nan)
    for c in range(k):
        p = prec[:, :, c, 0, -1]
        per_class[c] = p[p > -1].mean() if (p > -1).any() else np.nan
    return {"ap": float(ev.stats[0]), "ap50": float(ev.stats[1]), "ap75": float(ev.stats[2]),
            "ap_per_class": per_class}
