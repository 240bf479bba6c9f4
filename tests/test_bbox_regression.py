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
