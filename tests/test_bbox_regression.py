import numpy as np
import pytest

from detect.bbox_regression import (
    BoxRegressor,
    fit_box_regressor,
    fit_ridge,
    fit_ridge_reference,
    select_regression_examples,
)


@pytest.mark.parametrize("m, d", [(50, 8), (8, 50)])  # primal and dual branches
def test_ridge_matches_reference(m, d):
    rng = np.random.default_rng(m)
    X = rng.normal(size=(m, d)) + 3.0
    Y = rng.normal(size=(m, 4))
    for lam in (0.1, 10.0):
        W, b = fit_ridge(X, Y, lam)
        W_ref, b_ref = fit_ridge_reference(X, Y, lam)
        np.testing.assert_allclose(W, W_ref, atol=1e-8)
        np.testing.assert_allclose(b, b_ref, atol=1e-8)


def test_select_regression_examples_threshold():
    gt = np.array([[0, 0, 10, 10], [50, 50, 70, 70]], dtype=np.float32)
    props = np.array([[0, 0, 10, 20], [0, 0, 10, 19], [50, 50, 70, 70], [30, 30, 40, 40]], dtype=np.float32)
    idx, matched, labels = select_regression_examples(props, gt, np.array([3, 5]), min_iou=0.5)
    # IoU([0,0,10,20], gt0) = 0.5 exactly -> kept; [0,0,10,19] -> 100/190 > 0.5 kept too
    np.testing.assert_array_equal(idx, [0, 1, 2])
    np.testing.assert_array_equal(labels, [3, 3, 5])
    np.testing.assert_array_equal(matched[2], gt[1])
    assert select_regression_examples(np.zeros((0, 4)), gt, [0, 1], 0.5)[0].shape == (0,)


def test_regressor_learns_a_systematic_shift():
    rng = np.random.default_rng(0)
    n = 400
    xy = rng.uniform(0, 200, size=(n, 2))
    wh = rng.uniform(20, 80, size=(n, 2))
    gt = np.concatenate([xy, xy + wh], axis=1).astype(np.float32)
    # proposals shifted right by 10% of the width: the feature encodes the shift exactly
    shift = rng.uniform(-0.2, 0.2, size=n)
    props = gt.copy()
    props[:, [0, 2]] += (shift * wh[:, 0])[:, None]
    feats = np.stack([shift, np.ones(n), rng.normal(size=n)], axis=1).astype(np.float32)
    labels = np.zeros(n, dtype=np.int64)
    reg = fit_box_regressor(feats, props, gt, labels, num_classes=2, ridge_lambda=1e-3)
    assert reg.trained.tolist() == [True, False]
    out = reg.apply(props, feats, labels)
    assert np.abs(out - gt).max() < 0.5
    again = BoxRegressor.from_arrays(reg.to_arrays())
    np.testing.assert_array_equal(again.apply(props, feats, labels), out)
    np.testing.assert_allclose(reg.predict_all_classes(feats)[:, 0], reg.predict_deltas(feats, labels), atol=1e-5)
    # the untrained class leaves boxes unchanged
    np.testing.assert_allclose(reg.apply(props, feats, np.ones(n, np.int64)), props, atol=1e-3)


def test_select_regression_examples_cap_per_object():
    rng = np.random.default_rng(3)
    gt = np.array([[0, 0, 100, 100], [200, 200, 260, 300]], dtype=np.float32)
    # 30 jittered copies of each object (all IoU >= 0.5) and the ground truths themselves
    jitter = rng.uniform(-6, 6, size=(60, 4)).astype(np.float32)
    props = np.concatenate([np.repeat(gt, 30, axis=0) + jitter, gt])
    labels = np.array([1, 4])
    full_idx, _, full_labels = select_regression_examples(props, gt, labels, 0.5)
    assert np.bincount(full_labels, minlength=5)[[1, 4]].tolist() == [31, 31]
    idx, matched, lab = select_regression_examples(props, gt, labels, 0.5, max_per_object=5,
                                                   rng=np.random.default_rng(0))
    assert np.bincount(lab, minlength=5)[[1, 4]].tolist() == [5, 5]
    assert np.all(np.diff(idx) > 0) and set(idx) <= set(full_idx)
    assert {60, 61} <= set(idx.tolist())  # each ground truth itself (IoU 1) is always kept
    np.testing.assert_array_equal(matched, gt[(lab == 4).astype(int)])
    again = select_regression_examples(props, gt, labels, 0.5, max_per_object=5, rng=np.random.default_rng(0))
    np.testing.assert_array_equal(again[0], idx)  # seeded: the same sample
    # a cap above the matches changes nothing
    np.testing.assert_array_equal(select_regression_examples(props, gt, labels, 0.5, max_per_object=40)[0], full_idx)


def test_box_regressor_reads_float16_features_as_their_float32_values():
    rng = np.random.default_rng(1)
    n = 60
    gt = np.concatenate([rng.uniform(0, 100, (n, 2)), rng.uniform(120, 200, (n, 2))], 1).astype(np.float32)
    props = gt + rng.uniform(-5, 5, (n, 4)).astype(np.float32)
    feats16 = rng.uniform(0, 4, (n, 6)).astype(np.float16)
    labels = rng.integers(0, 2, n)
    a = fit_box_regressor(feats16, props, gt, labels, 2, ridge_lambda=1.0, feature_scale=0.5)
    b = fit_box_regressor(feats16.astype(np.float32), props, gt, labels, 2, ridge_lambda=1.0, feature_scale=0.5)
    np.testing.assert_array_equal(a.weights, b.weights)
    np.testing.assert_array_equal(a.bias, b.bias)
