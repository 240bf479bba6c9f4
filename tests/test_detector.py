import numpy as np
import pytest

from detect.detector import (
    Detections,
    concatenate_detections,
    detections_from_scores,
    score_windows,
    split_detections,
)
from sppcore.boxes import nms


def test_score_windows_is_affine():
    rng = np.random.default_rng(0)
    X, W, b = rng.normal(size=(7, 5)), rng.normal(size=(3, 5)), rng.normal(size=3)
    np.testing.assert_allclose(score_windows(X, W, b), X @ W.T + b, rtol=1e-5)
    assert score_windows(np.zeros((0, 5)), W, b).shape == (0, 3)


def test_postprocess_per_class_nms_threshold_topk():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60], [0, 0, 10, 10]], np.float32)
    scores = np.array([[0.9, -5], [0.8, 0.1], [0.7, 0.3], [-2, 0.2]], np.float32)
    det = detections_from_scores(boxes, scores, (100, 100), nms_iou=0.3, max_per_class=100, score_threshold=-1)
    # class 0: box 1 overlaps box 0 (IoU 0.68) -> suppressed; box 3 below threshold
    c0 = det.boxes[det.labels == 0]
    np.testing.assert_array_equal(c0, boxes[[0, 2]])
    # class 1: box 0 below threshold; boxes 1 and 3 overlap -> keep the higher (3, 0.2);
    # box 2 separate
    c1 = det.scores[det.labels == 1]
    np.testing.assert_allclose(sorted(c1), [0.2, 0.3])
    top1 = detections_from_scores(boxes, scores, (100, 100), max_per_class=1)
    assert len(top1) == 2 and top1.scores.tolist() == [np.float32(0.9), np.float32(0.3)]


def test_postprocess_uses_class_boxes_and_clips():
    boxes = np.array([[0, 0, 10, 10]], np.float32)
    class_boxes = np.array([[[-5, -5, 8, 8], [2, 2, 500, 20]]], np.float32)
    det = detections_from_scores(boxes, np.array([[1.0, 2.0]]), (50, 60), class_boxes=class_boxes)
    np.testing.assert_array_equal(det.boxes, [[0, 0, 8, 8], [2, 2, 60, 20]])


def test_empty_and_round_trip():
    det = detections_from_scores(np.zeros((0, 4)), np.zeros((0, 3)), (10, 10))
    assert len(det) == 0 and det.boxes.shape == (0, 4)
    rng = np.random.default_rng(0)
    per_image = [Detections.empty()]
    for _ in range(3):
        xy = rng.uniform(0, 100, size=(30, 2))
        b = np.concatenate([xy, xy + 20], axis=1)
        per_image.append(detections_from_scores(b, rng.normal(size=(30, 4)), (200, 200)))
    back = split_detections(concatenate_detections(per_image), len(per_image))
    for a, b in zip(per_image, back):
        np.testing.assert_array_equal(a.boxes, b.boxes)
        np.testing.assert_array_equal(a.labels, b.labels)
    # every class's output is NMS-clean
    for d in per_image[1:]:
        for k in range(4):
            sel = d.labels == k
            assert len(nms(d.boxes[sel], d.scores[sel], 0.3)) == sel.sum()


def test_median_timings_count_rcnn_warp_and_leave_out_proposals():
    from detect.testing import median_timings

    per_image = [{"proposals": 5.0, "warp": 0.3, "conv": 1.0, "pool": 0.0, "fc": 0.2, "svm": 0.01, "nms": 0.01, "bbox_reg": 0.0},
                 {"proposals": 7.0, "warp": 0.5, "conv": 2.0, "pool": 0.0, "fc": 0.4, "svm": 0.01, "nms": 0.01, "bbox_reg": 0.0},
                 {"proposals": 6.0, "warp": 0.4, "conv": 1.5, "pool": 0.0, "fc": 0.3, "svm": 0.01, "nms": 0.01, "bbox_reg": 0.0}]
    m = median_timings(per_image)
    assert m["warp"] == pytest.approx(0.4) and m["proposals"] == pytest.approx(6.0)
    # the median of the per-image sums (warp included, proposals not): 0.3+1.0+0.2+0.02 = 1.52, ...
    assert m["total_excluding_proposals"] == pytest.approx(0.4 + 1.5 + 0.3 + 0.02)
