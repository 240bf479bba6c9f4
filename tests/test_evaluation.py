"""The VOC evaluator against hand-computed golden cases and a loop-based reference.

(That the plain IoU on internal boxes equals the devkit's +1-pixel IoU on 1-based boxes is
proved in tests/test_boxes.py::test_iou_equals_devkit_plus_one_iou.)
"""
import cv2
import numpy as np
import pytest

from detect.evaluation import (
    VOC07_RECALL_THRESHOLDS,
    ResultFileError,
    eval_detection_voc,
    eval_detection_voc_reference,
    format_ap_table,
    plot_pr_curves,
    read_voc_results,
    write_voc_results,
)
from sppcore.boxes import box_iou


def A(*rows):
    return np.array(rows, dtype=np.float32).reshape(-1, 4)


def L(*v):
    return np.array(v, dtype=np.int64)


def S(*v):
    return np.array(v, dtype=np.float32)


def run(dets, gts, **kw):
    pb, pl, ps = zip(*dets)
    gb, gl, gd = zip(*gts)
    fast = eval_detection_voc(pb, pl, ps, gb, gl, gd, **kw)
    ref = eval_detection_voc_reference(pb, pl, ps, gb, gl, gd, **kw)
    np.testing.assert_allclose(fast["ap"], ref["ap"], atol=1e-12, equal_nan=True)
    return fast


def test_duplicate_is_false_positive_and_metrics_differ():
    # dets: TP on gt0 (0.9), duplicate of gt0 (0.8, IoU 0.81), a miss (0.7); gt1 never found
    # tp = [1, 0, 0], fp = [0, 1, 1]; precision [1, 1/2, 1/3]; recall [1/2, 1/2, 1/2]
    dets = [(A([0, 0, 10, 10], [1, 1, 10, 10], [50, 50, 60, 60]), L(0, 0, 0), S(0.9, 0.8, 0.7))]
    gts = [(A([0, 0, 10, 10], [20, 20, 30, 30]), L(0, 0), np.array([False, False]))]
    r07 = run(dets, gts)
    # 11-point: t = 0, .1, ..., .5 -> max precision 1; t >= .6 -> 0: AP = 6/11
    assert r07["ap"][0] == pytest.approx(6 / 11)
    np.testing.assert_allclose(r07["precision"][0], [1, 1 / 2, 1 / 3])
    np.testing.assert_allclose(r07["recall"][0], [0.5, 0.5, 0.5])
    # area under the envelope: recall 0 -> 0.5 at precision 1 = 0.5
    assert run(dets, gts, use_07_metric=False)["ap"][0] == pytest.approx(0.5)


def test_difficult_match_is_neither_tp_nor_fp():
    # det on the difficult gt is ignored; det on gt1 is the only TP; one positive
    dets = [(A([0, 0, 10, 10], [20, 20, 30, 30]), L(0, 0), S(0.9, 0.8))]
    gts = [(A([0, 0, 10, 10], [20, 20, 30, 30]), L(0, 0), np.array([True, False]))]
    r = run(dets, gts)
    assert r["num_positives"][0] == 1
    assert r["ap"][0] == pytest.approx(1.0)  # counting the difficult match as FP would give 0.5
    np.testing.assert_allclose(r["recall"][0], [0, 1])


def test_ties_in_score_keep_image_order():
    # image 0: TP (0.5); image 1: FP (0.5) then TP (0.4). Stable order: TP, FP, TP
    # precision [1, 1/2, 2/3], recall [1/2, 1/2, 1]
    # AP07 = (6 * 1 + 5 * 2/3) / 11
    dets = [
        (A([0, 0, 10, 10]), L(0), S(0.5)),
        (A([100, 100, 110, 110], [0, 0, 10, 10]), L(0, 0), S(0.5, 0.4)),
    ]
    gts = [(A([0, 0, 10, 10]), L(0), np.zeros(1, bool)), (A([0, 0, 10, 10]), L(0), np.zeros(1, bool))]
    r = run(dets, gts)
    assert r["ap"][0] == pytest.approx((6 + 5 * 2 / 3) / 11)


def test_iou_exactly_one_half_counts():
    # [0,0,10,20] vs [0,0,10,10]: intersection 100, union 200: IoU is exactly 0.5 in floats
    dets = [(A([0, 0, 10, 20]), L(0), S(1.0))]
    gts = [(A([0, 0, 10, 10]), L(0), np.zeros(1, bool))]
    assert box_iou(dets[0][0], gts[0][0])[0, 0] == 0.5
    assert run(dets, gts)["ap"][0] == pytest.approx(1.0)  # the devkit's >=
    assert run(dets, gts, iou_thresh=0.5000001)["ap"][0] == 0.0


def test_recall_of_exactly_three_tenths_misses_the_devkit_threshold():
    # MATLAB's 0:0.1:1 has 3*0.1 = 0.30000000000000004 as its fourth value, above 3/10
    assert VOC07_RECALL_THRESHOLDS[3] == 3 * 0.1 > 0.3
    assert [VOC07_RECALL_THRESHOLDS[k] for k in (0, 1, 2, 4, 5, 6, 7, 8, 9, 10)] == [
        k / 10 for k in (0, 1, 2, 4, 5, 6, 7, 8, 9, 10)]
    # 10 positives; in score order: TP TP TP FP TP, so
    # precision [1, 1, 1, 3/4, 4/5], recall [.1, .2, .3, .3, .4]
    # t = 0, .1, .2 -> 1; t = 0.30000000000000004 -> only the recall-.4 row -> 4/5;
    # t = .4 -> 4/5; t >= .5 -> 0.  AP07 = (3 + 2 * 4/5) / 11 = 4.6/11
    # (with t = 0.3 exactly it would be (4 + 4/5) / 11)
    gt = A(*[[20 * j, 0, 20 * j + 10, 10] for j in range(10)])
    det = A(gt[0], gt[1], gt[2], [500, 500, 510, 510], gt[3])
    dets = [(det, L(0, 0, 0, 0, 0), S(0.9, 0.8, 0.7, 0.6, 0.5))]
    gts = [(gt, np.zeros(10, np.int64), np.zeros(10, bool))]
    r = run(dets, gts)
    np.testing.assert_allclose(r["recall"][0], [0.1, 0.2, 0.3, 0.3, 0.4])
    assert r["ap"][0] == pytest.approx(4.6 / 11)


def test_labels_out_of_range_are_an_error():
    with pytest.raises(ValueError, match="pred_labels outside 0..1"):
        eval_detection_voc([A([0, 0, 1, 1])], [L(2)], [S(1.0)], [A()], [L()], None, num_classes=2)


def test_empty_images_and_classes():
    # class 0 has a positive but no detection -> AP 0; class 1 has detections but no
    # positives -> NaN; class 2 has neither -> NaN; image 1 has no ground truth at all
    dets = [(A(), L(), S()), (A([0, 0, 5, 5]), L(1), S(0.3))]
    gts = [(A([0, 0, 10, 10]), L(0), np.zeros(1, bool)), (A(), L(), np.zeros(0, bool))]
    r = run(dets, gts, num_classes=3)
    assert r["ap"][0] == 0.0 and np.isnan(r["ap"][1]) and np.isnan(r["ap"][2])
    assert r["map"] == 0.0
    assert r["num_detections"].tolist() == [0, 1, 0]
    none = eval_detection_voc([A()], [L()], [S()], [A()], [L()], None, num_classes=2)
    assert np.isnan(none["map"])


def test_detection_matches_the_best_gt_even_if_taken():
    # both dets best-match gt0 (the second overlaps gt1 less): the second is a duplicate FP,
    # gt1 stays unfound, exactly as the devkit (which never falls back to the second best)
    dets = [(A([0, 0, 10, 10], [2, 0, 12, 10]), L(0, 0), S(0.9, 0.8))]
    gts = [(A([0, 0, 10, 10], [4, 0, 14, 10]), L(0, 0), np.zeros(2, bool))]
    r = run(dets, gts)
    np.testing.assert_allclose(r["recall"][0], [0.5, 0.5])


@pytest.mark.parametrize("seed", range(40))
@pytest.mark.parametrize("use_07", [True, False])
def test_randomized_against_reference(seed, use_07):
    rng = np.random.default_rng(seed)
    n_img, k = int(rng.integers(1, 6)), 3
    dets, gts = [], []
    for _ in range(n_img):
        g = int(rng.integers(0, 5))
        gxy = rng.integers(0, 40, size=(g, 2))
        gb = np.concatenate([gxy, gxy + rng.integers(2, 20, size=(g, 2))], 1)
        gl = rng.integers(0, k, size=g)
        gd = rng.random(g) < 0.25
        d = int(rng.integers(0, 9))
        # detections near ground truth (integer jitter: exact IoU ties and 0.5 boundaries)
        src = gb[rng.integers(0, g, size=d)] if g else rng.integers(0, 40, size=(d, 4))
        db = np.sort(src.reshape(d, 2, 2) + rng.integers(-3, 4, size=(d, 2, 2)), axis=1).reshape(d, 4)
        db[:, 2:] = np.maximum(db[:, 2:], db[:, :2] + 1)
        dl = np.where(rng.random(d) < 0.8, gl[rng.integers(0, g, size=d)] if g else 0, rng.integers(0, k, size=d))
        ds = rng.integers(0, 4, size=d) / 4.0  # many ties
        dets.append((db.astype(np.float32), dl.astype(np.int64), ds.astype(np.float32)))
        gts.append((gb.astype(np.float32), gl.astype(np.int64), gd))
    run(dets, gts, num_classes=k, use_07_metric=use_07)


def test_result_files_round_trip(tmp_path):
    classes = ("cat", "dog")
    ids = ["000001", "000002"]
    boxes = [A([0, 0, 10, 10], [5.5, 6, 20, 30]), A([1, 2, 3, 4])]
    labels = [L(0, 1), L(1)]
    scores = [S(0.5, -1.25), S(3.0)]
    paths = write_voc_results(str(tmp_path), "test", classes, ids, boxes, labels, scores)
    assert [p.rsplit("/", 1)[1] for p in paths] == ["comp4_det_test_cat.txt", "comp4_det_test_dog.txt"]
    with open(paths[0]) as f:
        assert f.read() == "000001 0.5 1.0 1.0 10.0 10.0\n"  # 1-based on disk
    b, lab, s = read_voc_results(str(tmp_path), "test", classes, ids)
    for i in range(2):
        order = np.argsort(lab[i], kind="stable")
        ref = np.argsort(labels[i], kind="stable")
        np.testing.assert_allclose(b[i][order], boxes[i][ref])
        np.testing.assert_allclose(s[i][order], scores[i][ref])


def test_malformed_result_file(tmp_path):
    (tmp_path / "comp4_det_test_cat.txt").write_text("000001 0.5 1 1 10\n")
    with pytest.raises(ResultFileError, match=r"comp4_det_test_cat\.txt:1: expected"):
        read_voc_results(str(tmp_path), "test", ("cat",), ["000001"])
    (tmp_path / "comp4_det_test_cat.txt").write_text("000009 0.5 1 1 10 10\n")
    with pytest.raises(ResultFileError, match="unknown image id '000009'"):
        read_voc_results(str(tmp_path), "test", ("cat",), ["000001"])
    with pytest.raises(ResultFileError, match="not found"):
        read_voc_results(str(tmp_path), "test", ("dog",), ["000001"])


def test_reports(tmp_path):
    dets = [(A([0, 0, 10, 10], [50, 50, 60, 60]), L(0, 1), S(0.9, 0.2))]
    gts = [(A([0, 0, 10, 10], [50, 50, 60, 61]), L(0, 1), np.zeros(2, bool))]
    r = run(dets, gts)
    table = format_ap_table(r, ("cat", "dog"))
    assert "mAP" in table and "cat" in table
    path = plot_pr_curves(r, ("cat", "dog"), str(tmp_path / "pr.png"))
    img = cv2.imread(path)
    assert img is not None and img.shape[0] > 100


def test_metrics_by_name_on_the_golden_case():
    from detect.evaluation import METRICS, evaluate_detections
    from sppcore.errors import UserError

    # the case of test_duplicate_is_false_positive_and_metrics_differ, a second class without gt
    dets = [A([0, 0, 10, 10], [1, 1, 10, 10], [50, 50, 60, 60])], [L(0, 0, 0)], [S(0.9, 0.8, 0.7)]
    gts = [A([0, 0, 10, 10], [20, 20, 30, 30])], [L(0, 0)], [np.array([False, False])]
    classes = ("a", "b")
    voc07 = evaluate_detections("voc07", *dets, *gts, classes=classes)
    area = evaluate_detections("voc_area", *dets, *gts, classes=classes)
    assert voc07["metric"] == "voc07" and voc07["map"] == pytest.approx(6 / 11)
    assert area["metric"] == "voc_area" and area["map"] == pytest.approx(0.5)
    assert np.isnan(voc07["ap"][1]) and np.isnan(area["ap"][1])
    coco = evaluate_detections("coco", *dets, *gts, classes=classes)
    # gt0 is found exactly (IoU 1 at every threshold) at precision 1, gt1 never: COCO's
    # 101-point AP is the recall points 0..0.5 at precision 1, 51/101, at every IoU
    assert coco["metric"] == "coco" and coco["map"] == pytest.approx(51 / 101) and coco["ap50"] == coco["map"]
    assert list(coco["num_positives"]) == [2, 0] and list(coco["num_detections"]) == [3, 0]
    assert np.isnan(coco["ap"][1])
    assert set(METRICS) == {"voc07", "voc_area", "coco"}
    with pytest.raises(UserError, match="unknown metric"):
        evaluate_detections("voc12", *dets, *gts, classes=classes)
