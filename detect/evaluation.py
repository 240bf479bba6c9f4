"""PASCAL VOC detection evaluation, exactly as the official devkit (``VOCevaldet.m``).

Pure and in memory: lists of numpy arrays in, a dict out; no temporary files, no cached
annotations. Boxes are the internal float32 ``(x1, y1, x2, y2)``, 0-based continuous; on
that convention the plain IoU equals the devkit's "+1 pixel" IoU on its 1-based inclusive
boxes, so no pixel offsets appear here (``tests/test_evaluation.py`` proves it).

The protocol, per class (``../shared/REFERENCE.md`` section 3):

* all detections of the class over the whole set sorted by descending score (ties keep
  image order, then the order of the detections within an image: a stable sort);
* each detection takes the ground truth of its image and class with the highest IoU
  (first one on a tie), whether or not that ground truth is already matched;
* IoU >= ``iou_thresh`` (the devkit's ``>=``; the common Python port uses ``>``): a
  difficult ground truth makes the detection neither TP nor FP; otherwise the first
  detection of that ground truth is a TP and any later one an FP (duplicate); below the
  threshold (or no ground truth in the image): FP;
* positives = non-difficult objects only;
* VOC07 11-point AP: mean over t in {0, 0.1, ..., 1} of the maximum precision at recall
  >= t (0 where none). The thresholds are exactly the doubles of the devkit's MATLAB loop
  ``for t=0:0.1:1`` (:data:`VOC07_RECALL_THRESHOLDS`): MATLAB's colon operator builds
  the first half of a range as ``a + k*d`` and the second half as ``b - (n-k)*d``, which
  gives k/10 except for the fourth value, ``3*0.1 = 0.30000000000000004``. So a recall of
  exactly 3/10 (3 of 10 positives, 144 of 480...) does not reach t = 0.3 in the devkit.
  The Python port's ``np.arange(0, 1.1, 0.1)`` differs again (0.3, 0.6 and 0.7 are all one
  ulp above k/10). ``use_07_metric=False``: the area under the monotone precision
  envelope (VOC2010+).

Detections matched to a difficult object stay in the precision/recall arrays as rows that
count neither way, as in the devkit. Precision at such a row before any TP/FP is 0
where MATLAB's 0/0 gives NaN, which its ``max`` ignores, so the APs agree; the one
exception is a class whose every detection matches a difficult object, where MATLAB's AP
comes out NaN and ours is 0 (there are positives and none was found).
"""
from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from sppcore.boxes import box_iou, internal_to_voc, voc_to_internal
from sppcore.errors import UserError
from sppcore.fileio import atomic_open, atomic_write_bytes

__all__ = [
    "eval_detection_voc",
    "eval_detection_voc_reference",
    "average_precision",
    "matlab_colon",
    "VOC07_RECALL_THRESHOLDS",
    "write_voc_results",
    "read_voc_results",
    "format_ap_table",
    "plot_pr_curves",
    "ResultFileError",
    "METRICS",
    "Metric",
    "evaluate_detections",
]

log = logging.getLogger(__name__)



def matlab_colon(start: float, step: float, stop: float) -> np.ndarray:
    """The doubles of MATLAB's ``start:step:stop`` for a positive ``step`` that divides the
    range: the first half counted up from ``start``, the second half down from ``stop``,
    the midpoint of an even count as ``(start + stop) / 2``."""
    n = int(np.floor((stop - start) / step + 0.5))
    out = np.empty(n + 1)
    for k in range(n // 2 + 1):
        out[k] = start + k * step
        out[n - k] = stop - k * step
    if n % 2 == 0:
        out[n // 2] = (start + stop) / 2
    return out


# VOCevaldet.m's ``for t=0:0.1:1`` (VOC2007 11-point AP)
VOC07_RECALL_THRESHOLDS = matlab_colon(0.0, 0.1, 1.0)


class ResultFileError(UserError):
    """A devkit result file is malformed or names an unknown image."""


def average_precision(precision: np.ndarray, recall: np.ndarray, use_07_metric: bool = True) -> float:
    """AP of one class from its precision/recall arrays (one value per detection)."""
    precision = np.asarray(precision, dtype=np.float64)
    recall = np.asarray(recall, dtype=np.float64)
    if use_07_metric:
        ap = 0.0
        for t in VOC07_RECALL_THRESHOLDS:
            above = recall >= t
            ap += (precision[above].max() if above.any() else 0.0) / 11.0
        return float(ap)
    mrec = np.concatenate([[0.0], recall, [1.0]])
    mpre = np.concatenate([[0.0], precision, [0.0]])
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]  # monotone envelope
    steps = np.flatnonzero(mrec[1:] != mrec[:-1]) + 1
    return float(np.sum((mrec[steps] - mrec[steps - 1]) * mpre[steps]))


def _as_list(arrays, n: int, dtype, shape_tail=()) -> list[np.ndarray]:
    if arrays is None:
        return [np.zeros((0,) + shape_tail, dtype=dtype) for _ in range(n)]
    return [np.asarray(a, dtype=dtype).reshape((-1,) + shape_tail) for a in arrays]


def eval_detection_voc(
    pred_boxes: Sequence[np.ndarray],
    pred_labels: Sequence[np.ndarray],
    pred_scores: Sequence[np.ndarray],
    gt_boxes: Sequence[np.ndarray],
    gt_labels: Sequence[np.ndarray],
    gt_difficult: Sequence[np.ndarray] | None = None,
    iou_thresh: float = 0.5,
    use_07_metric: bool = True,
    num_classes: int | None = None,
) -> dict:
    """Evaluate detections against ground truth, one list entry per image.

    pred_boxes [N_i, 4], pred_labels [N_i] int, pred_scores [N_i]; gt_boxes [G_i, 4],
    gt_labels [G_i], gt_difficult [G_i] bool (None: all False). Returns a dict:

    * ``ap``: float64 [K], NaN for a class with no (non-difficult) positives;
    * ``map``: nan-mean of ``ap`` (NaN when every class is NaN);
    * ``precision``, ``recall``: lists of K float64 arrays, one value per detection of the
      class in descending-score order (empty for a class without detections; recall is NaN
      throughout for a class without positives);
    * ``num_positives``, ``num_detections``: int64 [K].

    K is ``num_classes`` or, when None, 1 + the largest label seen.
    """
    n = len(gt_boxes)
    if not (len(pred_boxes) == len(pred_labels) == len(pred_scores) == n == len(gt_labels)):
        raise ValueError("every argument needs one entry per image")
    pb = _as_list(pred_boxes, n, np.float64, (4,))
    pl = _as_list(pred_labels, n, np.int64)
    ps = _as_list(pred_scores, n, np.float64)
    gb = _as_list(gt_boxes, n, np.float64, (4,))
    gl = _as_list(gt_labels, n, np.int64)
    gd = _as_list(gt_difficult, n, bool)
    if num_classes is None:
        labels = [x.max() for x in pl + gl if x.size]
        num_classes = int(max(labels)) + 1 if labels else 0
    for name, arrays in (("pred_labels", pl), ("gt_labels", gl)):
        for i, x in enumerate(arrays):
            if x.size and (x.min() < 0 or x.max() >= num_classes):
                raise ValueError(f"image {i}: {name} outside 0..{num_classes - 1}")

    # One pass over images: best ground truth (same class) of every detection.
    det_image, det_label, det_score, det_best_iou, det_gt = [], [], [], [], []
    gt_offset = 0
    for i in range(n):
        d = len(pl[i])
        if len(pb[i]) != d or len(ps[i]) != d:
            raise ValueError(f"image {i}: boxes, labels and scores differ in length")
        if len(gb[i]) != len(gl[i]) or len(gd[i]) != len(gl[i]):
            raise ValueError(f"image {i}: gt boxes, labels and difficult differ in length")
        best_iou = np.full(d, -np.inf)
        best_gt = np.full(d, -1, dtype=np.int64)
        if d and len(gl[i]):
            iou = box_iou(pb[i], gb[i])
            iou[pl[i][:, None] != gl[i][None, :]] = -np.inf
            j = iou.argmax(axis=1)  # first maximum, like MATLAB's max
            best_iou = iou[np.arange(d), j]
            best_gt = np.where(np.isfinite(best_iou), gt_offset + j, -1)
        det_image.append(np.full(d, i, dtype=np.int64))
        det_label.append(pl[i])
        det_score.append(ps[i])
        det_best_iou.append(best_iou)
        det_gt.append(best_gt)
        gt_offset += len(gl[i])
    det_label_all = np.concatenate(det_label) if n else np.zeros(0, np.int64)
    det_score_all = np.concatenate(det_score) if n else np.zeros(0)
    det_iou_all = np.concatenate(det_best_iou) if n else np.zeros(0)
    det_gt_all = np.concatenate(det_gt) if n else np.zeros(0, np.int64)
    gt_label_all = np.concatenate(gl) if n else np.zeros(0, np.int64)
    gt_diff_all = np.concatenate(gd) if n else np.zeros(0, bool)

    ap = np.full(num_classes, np.nan)
    precision, recall = [], []
    num_pos = np.zeros(num_classes, dtype=np.int64)
    num_det = np.zeros(num_classes, dtype=np.int64)
    for k in range(num_classes):
        npos = int(((gt_label_all == k) & ~gt_diff_all).sum())
        num_pos[k] = npos
        rows = np.flatnonzero(det_label_all == k)
        num_det[k] = len(rows)
        order = rows[np.argsort(-det_score_all[rows], kind="stable")]
        matched = det_iou_all[order] >= iou_thresh
        gt_idx = det_gt_all[order]
        difficult = np.zeros(len(order), dtype=bool)
        difficult[matched] = gt_diff_all[gt_idx[matched]]
        candidate = matched & ~difficult
        tp = np.zeros(len(order), dtype=bool)
        # the first (highest-scoring) detection of each ground truth is the TP
        cand_pos = np.flatnonzero(candidate)
        _, first = np.unique(gt_idx[cand_pos], return_index=True)
        tp[cand_pos[first]] = True
        fp = ~tp & ~difficult
        ctp = np.cumsum(tp, dtype=np.float64)
        cfp = np.cumsum(fp, dtype=np.float64)
        prec = ctp / np.maximum(ctp + cfp, np.finfo(np.float64).eps)
        rec = ctp / npos if npos > 0 else np.full(len(order), np.nan)
        precision.append(prec)
        recall.append(rec)
        if npos > 0:
            ap[k] = average_precision(prec, rec, use_07_metric)
    valid = ~np.isnan(ap)
    return {
        "ap": ap,
        "map": float(ap[valid].mean()) if valid.any() else float("nan"),
        "precision": precision,
        "recall": recall,
        "num_positives": num_pos,
        "num_detections": num_det,
    }


def _eval_voc07(pred_boxes, pred_labels, pred_scores, gt_boxes, gt_labels, gt_difficult, classes) -> dict:
    return eval_detection_voc(pred_boxes, pred_labels, pred_scores, gt_boxes, gt_labels, gt_difficult,
                              iou_thresh=0.5, use_07_metric=True, num_classes=len(classes))


def _eval_voc_area(pred_boxes, pred_labels, pred_scores, gt_boxes, gt_labels, gt_difficult, classes) -> dict:
    return eval_detection_voc(pred_boxes, pred_labels, pred_scores, gt_boxes, gt_labels, gt_difficult,
                              iou_thresh=0.5, use_07_metric=False, num_classes=len(classes))


def _eval_coco(pred_boxes, pred_labels, pred_scores, gt_boxes, gt_labels, gt_difficult, classes) -> dict:
    from detect.coco_eval import eval_detection_coco

    coco = eval_detection_coco(pred_boxes, pred_labels, pred_scores, gt_boxes, gt_labels, gt_difficult, classes)
    k = len(classes)
    labels = np.concatenate([np.asarray(x, np.int64).reshape(-1) for x in gt_labels] or [np.zeros(0, np.int64)])
    difficult = (np.concatenate([np.asarray(x, bool).reshape(-1) for x in gt_difficult] or [np.zeros(0, bool)])
                 if gt_difficult is not None else np.zeros(len(labels), bool))
    dets = np.concatenate([np.asarray(x, np.int64).reshape(-1) for x in pred_labels] or [np.zeros(0, np.int64)])
    return {"ap": np.asarray(coco["ap_per_class"], np.float64), "map": coco["ap"],
            "ap50": coco["ap50"], "ap75": coco["ap75"],
            "num_positives": np.bincount(labels[~difficult], minlength=k)[:k],
            "num_detections": np.bincount(dets, minlength=k)[:k]}


@dataclass(frozen=True)
class Metric:
    """One evaluation ``test.metric`` can name: ``evaluate(pred_boxes, pred_labels,
    pred_scores, gt_boxes, gt_labels, gt_difficult, classes)`` -> {"map", "ap" [K],
    "num_positives" [K], "num_detections" [K], ...} (the VOC ones add "precision" and
    "recall" for the PR plot, COCO "ap50" and "ap75"); ``title`` names its main number in
    tables and plot titles."""

    evaluate: Callable[..., dict]
    title: str


# test.metric -> evaluation: the one registry of metrics (detect/config.py's
# RULES["test.metric"] and tools/reval.py's --metric choices read its keys)
METRICS = {
    # VOC2007 devkit: 11-point interpolated AP at IoU 0.5
    "voc07": Metric(_eval_voc07, "mAP (VOC07 11-point)"),
    # VOC2010+: area under the monotone precision envelope, IoU 0.5
    "voc_area": Metric(_eval_voc_area, "mAP (VOC area)"),
    # pycocotools: AP averaged over IoU 0.5:0.05:0.95 (coco_eval.py)
    "coco": Metric(_eval_coco, "mAP@[.5:.95] (COCO)"),
}


def evaluate_detections(metric: str, pred_boxes, pred_labels, pred_scores, gt_boxes, gt_labels, gt_difficult,
                        classes: Sequence[str]) -> dict:
    """Per-image detections against ground truth by the metric named ``metric`` (a key of
    :data:`METRICS`): a dict with at least ``map`` (the metric's main number), ``ap``
    float64 [K] (NaN for a class without positives), ``num_positives`` and
    ``num_detections`` int [K], and ``metric``."""
    if metric not in METRICS:
        raise UserError(f"unknown metric {metric!r} (known: {', '.join(METRICS)})")
    result = METRICS[metric].evaluate(pred_boxes, pred_labels, pred_scores, gt_boxes, gt_labels, gt_difficult, classes)
    result["metric"] = metric
    return result


def eval_detection_voc_reference(
    pred_boxes, pred_labels, pred_scores, gt_boxes, gt_labels, gt_difficult=None,
    iou_thresh: float = 0.5, use_07_metric: bool = True, num_classes: int | None = None,
) -> dict:
    """Slow, loop-based transcription of ``VOCevaldet.m`` on 1-based inclusive boxes with
    the +1 pixel IoU. Used only by tests to check :func:`eval_detection_voc`."""
    n = len(gt_boxes)
    if gt_difficult is None:
        gt_difficult = [np.zeros(len(g), bool) for g in gt_labels]
    if num_classes is None:
        labels = [int(x) for a in list(pred_labels) + list(gt_labels) for x in a]
        num_classes = max(labels) + 1 if labels else 0
    ap = np.full(num_classes, np.nan)
    for k in range(num_classes):
        gts = {}  # image -> list of [box(1-based), difficult, detected]
        npos = 0
        for i in range(n):
            voc = internal_to_voc(np.asarray(gt_boxes[i], np.float64).reshape(-1, 4)) if len(gt_boxes[i]) else []
            gts[i] = []
            for b, lab, dif in zip(voc, gt_labels[i], gt_difficult[i]):
                if int(lab) == k:
                    gts[i].append([b, bool(dif), False])
                    npos += 0 if dif else 1
        dets = []
        for i in range(n):
            voc = internal_to_voc(np.asarray(pred_boxes[i], np.float64).reshape(-1, 4)) if len(pred_boxes[i]) else []
            for b, lab, s in zip(voc, pred_labels[i], pred_scores[i]):
                if int(lab) == k:
                    dets.append((float(s), i, b))
        # descending score; Python's sort is stable, so ties keep image/detection order
        dets.sort(key=lambda t: -t[0])
        tp, fp = [], []
        for _, i, bb in dets:
            ovmax, jmax = -np.inf, -1
            for j, (bbgt, _, _) in enumerate(gts[i]):
                bi = [max(bb[0], bbgt[0]), max(bb[1], bbgt[1]), min(bb[2], bbgt[2]), min(bb[3], bbgt[3])]
                iw = bi[2] - bi[0] + 1
                ih = bi[3] - bi[1] + 1
                if iw > 0 and ih > 0:
                    ua = ((bb[2] - bb[0] + 1) * (bb[3] - bb[1] + 1)
                          + (bbgt[2] - bbgt[0] + 1) * (bbgt[3] - bbgt[1] + 1) - iw * ih)
                    ov = iw * ih / ua
                    if ov > ovmax:
                        ovmax, jmax = ov, j
            if ovmax >= iou_thresh:
                if gts[i][jmax][1]:
                    tp.append(0)
                    fp.append(0)
                elif not gts[i][jmax][2]:
                    tp.append(1)
                    fp.append(0)
                    gts[i][jmax][2] = True
                else:
                    tp.append(0)
                    fp.append(1)
            else:
                tp.append(0)
                fp.append(1)
        if npos == 0:
            continue
        ctp = np.cumsum(tp, dtype=np.float64)
        cfp = np.cumsum(fp, dtype=np.float64)
        rec = ctp / npos
        prec = np.array([a / (a + b) if a + b > 0 else 0.0 for a, b in zip(ctp, cfp)])
        if use_07_metric:
            total = 0.0
            # MATLAB's 0:0.1:1: k/10, except that its fourth value is 3*0.1, not 0.3
            thresholds = [0.0, 0.1, 0.2, 3 * 0.1, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]
            for t in thresholds:
                ps = [p for p, r in zip(prec, rec) if r >= t]
                total += (max(ps) if ps else 0.0) / 11.0
            ap[k] = total
        else:
            mrec = [0.0] + list(rec) + [1.0]
            mpre = [0.0] + list(prec) + [0.0]
            for j in range(len(mpre) - 2, -1, -1):
                mpre[j] = max(mpre[j], mpre[j + 1])
            ap[k] = sum((mrec[j] - mrec[j - 1]) * mpre[j] for j in range(1, len(mrec)) if mrec[j] != mrec[j - 1])
    valid = ~np.isnan(ap)
    return {"ap": ap, "map": float(ap[valid].mean()) if valid.any() else float("nan")}


# ----------------------------------------------------------------------------- result files

_LINE = re.compile(r"^\s*(\S+)\s+(\S+)\s+(\S+)\s+(\S+)\s+(\S+)\s+(\S+)\s*$")


def _result_path(out_dir: str, prefix: str, image_set: str, cls: str) -> str:
    return os.path.join(out_dir, f"{prefix}_det_{image_set}_{cls}.txt")


def write_voc_results(
    out_dir: str,
    image_set: str,
    classes: Sequence[str],
    image_ids: Sequence[str],
    pred_boxes: Sequence[np.ndarray],
    pred_labels: Sequence[np.ndarray],
    pred_scores: Sequence[np.ndarray],
    prefix: str = "comp4",
) -> list[str]:
    """Write devkit result files ``<prefix>_det_<image_set>_<class>.txt``, one per class
    (empty when the class has no detection): lines ``image_id score x1 y1 x2 y2`` with
    1-based boxes (:func:`sppcore.boxes.internal_to_voc`; inverse on reading:
    :func:`sppcore.boxes.voc_to_internal`). Returns the paths.

    Lines go in image order, then detection order, so the devkit's stable sort breaks
    score ties as :func:`eval_detection_voc` does. Coordinates are written to 0.1 px and
    scores to 6 significant digits (the devkit scripts' format): re-scoring the files can
    differ from the in-memory AP in the last digits where that rounding moves an IoU
    across the threshold or makes two scores tie."""
    os.makedirs(out_dir, exist_ok=True)
    lines: list[list[str]] = [[] for _ in classes]
    for image_id, boxes, labels, scores in zip(image_ids, pred_boxes, pred_labels, pred_scores):
        voc = internal_to_voc(boxes)
        for b, lab, s in zip(voc, np.asarray(labels), np.asarray(scores)):
            lines[int(lab)].append(f"{image_id} {float(s):.6g} {b[0]:.1f} {b[1]:.1f} {b[2]:.1f} {b[3]:.1f}\n")
    paths = []
    for cls, cls_lines in zip(classes, lines):
        path = _result_path(out_dir, prefix, image_set, cls)
        atomic_write_bytes(path, "".join(cls_lines).encode("utf-8"))
        paths.append(path)
    return paths


def read_voc_results(
    out_dir: str,
    image_set: str,
    classes: Sequence[str],
    image_ids: Sequence[str],
    prefix: str = "comp4",
) -> tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]]:
    """Read the files of :func:`write_voc_results` back into per-image
    ``(boxes [N, 4] internal, labels [N], scores [N])`` lists in ``image_ids`` order.
    A malformed line or an unknown image id raises :class:`ResultFileError` naming the file
    and line."""
    index = {i: n for n, i in enumerate(image_ids)}
    boxes = [[] for _ in image_ids]
    labels = [[] for _ in image_ids]
    scores = [[] for _ in image_ids]
    for k, cls in enumerate(classes):
        path = _result_path(out_dir, prefix, image_set, cls)
        if not os.path.isfile(path):
            raise ResultFileError(f"{path}: result file not found")
        with open(path, encoding="utf-8") as f:
            for line_no, line in enumerate(f, 1):
                if not line.strip():
                    continue
                m = _LINE.match(line)
                if m is None:
                    raise ResultFileError(f"{path}:{line_no}: expected 'image_id score x1 y1 x2 y2'")
                image_id = m.group(1)
                if image_id not in index:
                    raise ResultFileError(f"{path}:{line_no}: unknown image id {image_id!r}")
                try:
                    values = [float(m.group(g)) for g in range(2, 7)]
                except ValueError:
                    raise ResultFileError(f"{path}:{line_no}: not a number in {line.strip()!r}") from None
                n = index[image_id]
                scores[n].append(values[0])
                boxes[n].append(values[1:])
                labels[n].append(k)
    out_boxes = [voc_to_internal(np.asarray(b, np.float32).reshape(-1, 4)) for b in boxes]
    out_labels = [np.asarray(x, np.int64) for x in labels]
    out_scores = [np.asarray(x, np.float32) for x in scores]
    return out_boxes, out_labels, out_scores


# ----------------------------------------------------------------------------- reports


def format_ap_table(result: dict, classes: Sequence[str]) -> str:
    """Per-class AP, positives and detections, then the mAP, as a text table."""
    width = max([len(c) for c in classes] + [5])
    lines = [f"{'class':<{width}}  {'AP':>6}  {'gt':>6}  {'dets':>7}"]
    for k, c in enumerate(classes):
        ap = result["ap"][k]
        ap_text = "   n/a" if np.isnan(ap) else f"{ap:6.3f}"
        lines.append(f"{c:<{width}}  {ap_text}  {int(result['num_positives'][k]):6d}  {int(result['num_detections'][k]):7d}")
    lines.append(f"{'mAP':<{width}}  {result['map']:6.3f}")
    return "\n".join(lines)


def plot_pr_curves(result: dict, classes: Sequence[str], path: str, title: str | None = None) -> str:
    """One PNG with every class's precision-recall curve, AP in the legend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8.5, 5.5), dpi=110)
    cmap = plt.get_cmap("tab20")
    for k, c in enumerate(classes):
        rec, prec = result["recall"][k], result["precision"][k]
        if len(rec) == 0 or np.isnan(result["ap"][k]):
            continue
        ax.plot(rec, prec, color=cmap(k % 20), lw=1.4, label=f"{c} {result['ap'][k]:.3f}")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.grid(alpha=0.3)
    ax.set_title(title or f"mAP {result['map']:.3f}")
    # beside the axes: inside, it would hide the curves' tails for one kind of detector or another
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), title="class, AP", title_fontsize=7)
    fig.tight_layout()
    with atomic_open(path, "wb") as f:
        fig.savefig(f, format="png")
    plt.close(fig)
    return path
