import numpy as np
import pytest

from detect.coco_eval import coco_to_detections, detections_to_coco, eval_detection_coco, voc_to_coco_gt


def data():
    gb = [np.array([[0, 0, 40, 40], [50, 50, 90, 100]], np.float32), np.array([[10, 10, 60, 30]], np.float32)]
    gl = [np.array([0, 1]), np.array([0])]
    gd = [np.array([False, False]), np.array([False])]
    return gb, gl, gd


def test_perfect_detections_score_one():
    gb, gl, gd = data()
    r = eval_detection_coco(gb, gl, [np.ones(len(b)) for b in gb], gb, gl, gd, ("a", "b"))
    assert r["ap"] == pytest.approx(1.0) and r["ap50"] == pytest.approx(1.0)
    np.testing.assert_allclose(r["ap_per_class"], [1.0, 1.0])


def test_shifted_detection_counts_below_its_iou_only():
    # a 40x40 box shifted by 8 px: IoU = 32*40 / (2*1600 - 1280) = 0.667
    gb = [np.array([[0, 0, 40, 40]], np.float32)]
    gl, gd = [np.array([0])], [np.array([False])]
    det = [np.array([[8, 0, 48, 40]], np.float32)]
    r = eval_detection_coco(det, gl, [np.ones(1)], gb, gl, gd, ("a",))
    assert r["ap50"] == pytest.approx(1.0) and r["ap75"] == pytest.approx(0.0)
    # thresholds .50, .55, .60, .65 of the ten pass: AP = 0.4
    assert r["ap"] == pytest.approx(0.4)


def test_difficult_is_ignored():
    gb = [np.array([[0, 0, 40, 40], [100, 100, 140, 140]], np.float32)]
    gl, gd = [np.array([0, 0])], [np.array([False, True])]
    det = [np.array([[0, 0, 40, 40], [100, 100, 140, 140]], np.float32)]
    r = eval_detection_coco(det, [np.array([0, 0])], [np.array([0.5, 0.9])], gb, gl, gd, ("a",))
    assert r["ap"] == pytest.approx(1.0)  # the higher-scored hit on the difficult box is no FP


def test_converters_round_trip():
    gb, gl, gd = data()
    scores = [np.array([0.5, 0.25], np.float32), np.array([1.0], np.float32)]
    back = coco_to_detections(detections_to_coco(gb, gl, scores), 2)
    for i in range(2):
        np.testing.assert_allclose(back[0][i], gb[i])
        np.testing.assert_array_equal(back[1][i], gl[i])
        np.testing.assert_allclose(back[2][i], scores[i])
    gt = voc_to_coco_gt(["x", "y"], gb, gl, gd, ("a", "b"))
    assert [a["bbox"] for a in gt["annotations"]][0] == [0, 0, 40, 40]
    assert gt["categories"][1] == {"id": 2, "name": "b"}


def test_no_detections():
    gb, gl, gd = data()
    empty = [np.zeros((0, 4), np.float32)] * 2
    r = eval_detection_coco(empty, [np.zeros(0, int)] * 2, [np.zeros(0)] * 2, gb, gl, gd, ("a", "b", "c"))
    assert r["ap"] == 0.0 and r["ap50"] == 0.0
    np.testing.assert_array_equal(r["ap_per_class"], [0.0, 0.0, np.nan])
