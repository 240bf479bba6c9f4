"""The window-labelling rule (sppcore/matcher.py): hand-computed IoU matrices, thresholds at
the boundary, ties, no ground truth, no windows, and a loop-based reference."""
import numpy as np
import pytest

from sppcore.matcher import (BACKGROUND, FOREGROUND, IGNORED, Matcher, finetune_matcher, pretrain_background_matcher,
                             regression_matcher, svm_negative_matcher, with_ground_truth)

FG, BG, IG = FOREGROUND, BACKGROUND, IGNORED


def match_reference(iou, thresholds, labels, no_gt_label):
    """Obviously correct matcher: one window at a time, the first largest IoU, then the
    intervals walked from the top."""
    iou = np.asarray(iou, dtype=np.float64)
    n, g = iou.shape
    index, best, out = np.full(n, -1), np.zeros(n), np.full(n, no_gt_label)
    if g == 0:
        return index, best, out
    for i in range(n):
        j = 0
        for k in range(1, g):
            if iou[i, k] > iou[i, j] or (np.isnan(iou[i, k]) and not np.isnan(iou[i, j])):
                j = k
        index[i], best[i] = j, iou[i, j]
        if np.isnan(best[i]):
            out[i] = IG
            continue
        out[i] = labels[0]
        for t, label in reversed(list(zip(thresholds, labels[1:]))):
            if best[i] >= t:
                out[i] = label
                break
    return index, best, out


def test_finetune_rule_on_a_hand_computed_matrix():
    iou = np.array([
        [0.5, 0.2],      # exactly fg_iou: foreground (the interval is closed below)
        [0.4999, 0.1],   # just below: background
        [0.1, 0.05],     # exactly bg_iou_low: background
        [0.0999, 0.05],  # below bg_iou_low: ignored
        [0.3, 0.7],      # best is gt 1: foreground of gt 1
        [0.6, 0.6],      # a tie: the first ground truth wins
        [0.0, 0.0],      # overlaps nothing: ignored (below bg_iou_low)
    ])
    m = finetune_matcher(0.5, 0.1)(iou)
    assert m.labels.dtype == np.int8 and m.gt_index.dtype == np.int64 and m.iou.dtype == np.float64
    np.testing.assert_array_equal(m.labels, [FG, BG, BG, IG, FG, FG, IG])
    np.testing.assert_array_equal(m.gt_index, [0, 0, 0, 0, 1, 0, 0])
    np.testing.assert_array_equal(m.iou, [0.5, 0.4999, 0.1, 0.0999, 0.7, 0.6, 0.0])
    # classes 3 and 5: foreground -> class + 1, background 0, ignored -1
    np.testing.assert_array_equal(m.class_targets([3, 5]), [4, 0, 0, -1, 6, 4, -1])


def test_regression_and_svm_rules_at_their_thresholds():
    iou = np.array([[0.5], [0.4999], [0.3], [0.2999], [1.0]])
    np.testing.assert_array_equal(regression_matcher(0.5)(iou).labels, [FG, IG, IG, IG, FG])
    # an SVM negative needs IoU < 0.3: exactly 0.3 is not one
    np.testing.assert_array_equal(svm_negative_matcher(0.3)(iou).labels, [IG, IG, IG, BG, IG])


def test_pretraining_background_rules():
    iou = np.array([[0.3], [0.2999], [0.1], [0.0999], [0.0]])
    np.testing.assert_array_equal(pretrain_background_matcher(0.3)(iou).labels, [IG, BG, BG, BG, BG])
    np.testing.assert_array_equal(pretrain_background_matcher(0.3, 0.1)(iou).labels, [IG, BG, BG, IG, IG])


def test_ties_pick_the_first_largest_overlap():
    iou = np.array([[0.2, 0.7, 0.7], [0.7, 0.2, 0.7], [0.4, 0.4, 0.4]])
    m = Matcher([0.5], [BG, FG])(iou)
    np.testing.assert_array_equal(m.gt_index, [1, 0, 0])
    np.testing.assert_array_equal(m.labels, [FG, FG, BG])


def test_no_ground_truth_labels_every_window_with_no_gt_label():
    iou = np.zeros((3, 0))
    for matcher, label in [(finetune_matcher(0.5, 0.1), IG), (regression_matcher(0.5), IG),
                           (svm_negative_matcher(0.3), BG), (pretrain_background_matcher(0.3), BG),
                           (pretrain_background_matcher(0.3, 0.1), BG)]:
        m = matcher(iou)
        np.testing.assert_array_equal(m.labels, [label] * 3)
        np.testing.assert_array_equal(m.gt_index, [-1, -1, -1])
        np.testing.assert_array_equal(m.iou, [0.0, 0.0, 0.0])
        assert m.class_targets(np.zeros(0, np.int64)).tolist() == [-1 if label == IG else 0] * 3


def test_no_windows():
    for iou in (np.zeros((0, 2)), np.zeros((0, 0))):
        m = finetune_matcher(0.5, 0.1)(iou)
        assert m.labels.shape == m.gt_index.shape == m.iou.shape == (0,)
        assert m.labels.dtype == np.int8 and m.gt_index.dtype == np.int64
        assert m.class_targets(np.array([1, 2])[: iou.shape[1]]).shape == (0,)
    m = regression_matcher(0.5).match_boxes(np.zeros((0, 4), np.float32), np.zeros((0, 4), np.float32))
    assert m.labels.shape == (0,)
    assert svm_negative_matcher(0.3).labels_per_class(np.zeros((0, 2)), [0, 1], 3).shape == (3, 0)


def test_nan_overlap_is_ignored():
    iou = np.array([[np.nan, 0.9], [0.05, np.nan], [np.nan, np.nan]])
    for matcher in (finetune_matcher(0.5, 0.1), regression_matcher(0.5), svm_negative_matcher(0.3),
                    pretrain_background_matcher(0.3)):
        np.testing.assert_array_equal(matcher(iou).labels, [IG, IG, IG])


def test_labels_per_class():
    # windows x ground truth; gt 0 and 2 are class 1, gt 1 is class 0; class 2 has none
    iou = np.array([
        [0.3, 0.0, 0.1],   # class 1: 0.3 (not a negative); class 0: 0.0
        [0.0, 0.2999, 0.2],
        [0.0, 0.31, 0.35],
    ])
    out = svm_negative_matcher(0.3).labels_per_class(iou, [1, 0, 1], 3)
    assert out.dtype == np.int8 and out.shape == (3, 3)
    np.testing.assert_array_equal(out[0], [BG, BG, IG])
    np.testing.assert_array_equal(out[1], [IG, BG, IG])
    np.testing.assert_array_equal(out[2], [BG, BG, BG])  # no object of class 2: all negatives
    with pytest.raises(ValueError, match="ground-truth labels"):
        svm_negative_matcher(0.3).labels_per_class(iou, [0, 1], 3)


def test_match_boxes_and_ground_truth_windows():
    gt = np.array([[0, 0, 10, 10], [50, 50, 70, 70]], np.float32)
    proposals = np.array([
        [0, 0, 10, 20],    # IoU 100 / 200 = 0.5 with gt 0
        [5, 0, 15, 10],    # IoU 50 / 150 = 1/3 with gt 0
        [80, 80, 90, 90],  # overlaps nothing
    ], np.float32)
    windows = with_ground_truth(proposals, gt)
    assert windows.dtype == np.float32 and windows.shape == (5, 4)
    np.testing.assert_array_equal(windows[3:], gt)
    m = regression_matcher(0.5).match_boxes(windows, gt)
    np.testing.assert_array_equal(m.labels, [FG, IG, IG, FG, FG])
    np.testing.assert_array_equal(m.gt_index, [0, 0, 0, 0, 1])
    np.testing.assert_allclose(m.iou, [0.5, 1 / 3, 0.0, 1.0, 1.0])
    assert with_ground_truth(np.zeros((0, 4)), np.zeros((0, 4))).shape == (0, 4)


def test_matches_the_loop_reference_on_quantised_overlaps():
    # IoUs on a 0.1 grid: many exact ties and values exactly at the thresholds
    rng = np.random.default_rng(0)
    layouts = [([0.1, 0.5], [IG, BG, FG], IG), ([0.5], [IG, FG], IG), ([0.3], [BG, IG], BG),
               ([0.1, 0.3], [IG, BG, IG], BG), ([0.2, 0.2, 0.6], [BG, IG, FG, IG], IG)]
    for trial in range(20):
        n, g = rng.integers(0, 30), rng.integers(0, 4)
        iou = rng.integers(0, 11, size=(n, g)) / 10.0
        if trial % 5 == 4 and iou.size:
            iou[rng.random(iou.shape) < 0.1] = np.nan
        for thresholds, labels, no_gt in layouts:
            m = Matcher(thresholds, labels, no_gt)(iou)
            index, best, out = match_reference(iou, thresholds, labels, no_gt)
            np.testing.assert_array_equal(m.gt_index, index)
            np.testing.assert_array_equal(m.iou, best)
            np.testing.assert_array_equal(m.labels, out)


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="non-decreasing"):
        Matcher([0.5, 0.1], [IG, BG, FG])
    with pytest.raises(ValueError, match="non-decreasing"):
        Matcher([float("nan")], [BG, FG])
    with pytest.raises(ValueError, match="one label per interval"):
        Matcher([0.5], [FG])
    with pytest.raises(ValueError, match="labels must be"):
        Matcher([0.5], [BG, 2])
    with pytest.raises(ValueError, match="no_gt_label"):
        Matcher([0.5], [BG, FG], no_gt_label=FG)
    with pytest.raises(ValueError, match="IoU matrix"):
        Matcher([0.5], [BG, FG])(np.zeros(3))
    assert repr(finetune_matcher(0.5, 0.1)) == (
        "Matcher(thresholds=[0.1, 0.5], labels=[IGNORED, BACKGROUND, FOREGROUND], no_gt_label=IGNORED)")
