"""The SVM solver against liblinear and its loop reference; negative selection against its
reference and hand-made boxes; hard-negative mining (retrain, eviction, dedup, resume)."""
import json
import math

import numpy as np
import pytest

from sppcore.fileio import atomic_save_npz, load_npz
from svm import (
    FeatureStore,
    HardNegativeMiner,
    MiningStateError,
    SVMConfig,
    compute_feature_scale,
    feature_norms,
    feature_scale_from_norms,
    linear_scores,
    primal_objective,
    select_negative_candidates,
    select_negative_candidates_reference,
    train_linear_svm,
    train_linear_svm_reference,
)

# the papers' settings
C, BIAS_MULTIPLIER, POS_WEIGHT = 0.001, 10.0, 2.0


def make_problem(seed=0, n=400, dim=60, pos_fraction=0.2, shift=0.6):
    """Non-negative (ReLU-like) features, positives shifted on the first dims; overlapping."""
    rng = np.random.default_rng(seed)
    y = np.where(rng.random(n) < pos_fraction, 1, -1)
    X = np.maximum(rng.normal(size=(n, dim)), 0).astype(np.float32)
    X[y == 1, : dim // 6] += shift
    return X, y, compute_feature_scale(X, 20.0)


class World:
    """Synthetic detection features: K class prototypes; a window's feature is ReLU noise
    plus a fraction of one prototype (object parts make hard negatives)."""

    def __init__(self, num_classes=3, dim=48, seed=0):
        self.rng = np.random.default_rng(seed)
        self.K, self.D = num_classes, dim
        self.protos = 3.0 * np.maximum(self.rng.normal(size=(num_classes, dim)), 0)

    def windows(self, n, cls=None, strength=1.0):
        x = 0.3 * np.maximum(self.rng.normal(size=(n, self.D)), 0)
        if cls is not None:
            x = x + strength * self.protos[cls]
        return x.astype(np.float32)

    def positives(self, per_class=15):
        feats = np.concatenate([self.windows(per_class, k) for k in range(self.K)])
        return feats, np.repeat(np.arange(self.K), per_class)

    def image(self, n=25):
        feats = self.windows(n)
        parts = self.rng.integers(0, self.K, size=4)
        for j, k in enumerate(parts):
            feats[j] += 0.5 * self.protos[k]
        return feats, np.ones((self.K, n), dtype=bool)


def run_miner(world_seed=0, cfg=None, num_images=30, stop_after=None, miner=None, start=0):
    world = World(seed=world_seed)
    pos, labels = world.positives()
    images = [world.image() for _ in range(num_images)]
    cfg = cfg or SVMConfig(retrain_limit=40)
    if miner is None:
        miner = HardNegativeMiner(world.K, world.D, cfg, compute_feature_scale(pos))
        miner.add_positives(pos, labels)
    for i in range(start, num_images if stop_after is None else stop_after):
        miner.process_image(f"img{i:03d}", *images[i])
    return miner, world


# ----------------------------------------------------------------------------- solver


def test_primal_objective_by_hand():
    X = np.array([[1.0, 0.0], [0.0, 2.0]], np.float32)
    y = np.array([1, -1])
    weights, bias = np.array([0.5, 0.25], np.float32), 0.2
    # scores 0.7 and 0.7: hinge 0.3 (positive, weight 2) and 1.7 (negative)
    # w = weights / s with s = 2; w_bias = bias / B with B = 4
    expected = 0.5 * (0.25**2 + 0.125**2 + 0.05**2) + 0.1 * (2 * 0.3 + 1.7)
    got = primal_objective(X, y, weights, bias, C=0.1, pos_weight=2, bias_multiplier=4, feature_scale=2)
    assert got == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("block_size", [1, 7, 64])
def test_blocked_solver_equals_plain_coordinate_descent(block_size):
    X, y, s = make_problem(n=150, dim=30)
    ref = train_linear_svm_reference(X, y, C, POS_WEIGHT, BIAS_MULTIPLIER, s, tol=1e-3, seed=3)
    fast = train_linear_svm(X, y, C, POS_WEIGHT, BIAS_MULTIPLIER, s, tol=1e-3, shrinking=False,
                            block_size=block_size, seed=3)
    assert ref.converged and fast.converged and fast.epochs == ref.epochs
    np.testing.assert_allclose(fast.alpha, ref.alpha, atol=1e-8)
    np.testing.assert_allclose(fast.weights, ref.weights, rtol=1e-4, atol=1e-6)
    assert fast.bias == pytest.approx(ref.bias, rel=1e-4)
    assert fast.objective == pytest.approx(ref.objective, rel=1e-6)


def test_objective_matches_liblinear_within_one_percent():
    from sklearn.svm import LinearSVC

    X, y, s = make_problem(n=500, dim=80)
    clf = LinearSVC(loss="hinge", dual=True, C=C, intercept_scaling=BIAS_MULTIPLIER,
                    class_weight={1: POS_WEIGHT, -1: 1}, tol=1e-6, max_iter=200_000).fit(X * s, y)
    # liblinear's model acts on the scaled features: fold the scale in like the miner does
    reference = primal_objective(X, y, clf.coef_[0] * s, clf.intercept_[0], C, POS_WEIGHT, BIAS_MULTIPLIER, s)
    for tol, rel in ((0.1, 1e-2), (1e-3, 1e-4)):  # the papers' liblinear tolerance, and tight
        ours = train_linear_svm(X, y, C, POS_WEIGHT, BIAS_MULTIPLIER, s, tol=tol)
        assert ours.converged
        assert ours.objective == pytest.approx(primal_objective(X, y, ours.weights, ours.bias, C, POS_WEIGHT,
                                                                BIAS_MULTIPLIER, s), rel=1e-6)
        assert reference * (1 - 1e-4) <= ours.objective <= reference * (1 + rel), (tol, ours.objective, reference)
    # float16 rows, converted block by block, reach the same optimum
    half = train_linear_svm(X.astype(np.float16), y, C, POS_WEIGHT, BIAS_MULTIPLIER, s, tol=1e-3)
    assert half.objective == pytest.approx(reference, rel=1e-3)


def test_warm_start_converges_faster_to_the_same_objective():
    X, y, s = make_problem(n=400, dim=50, seed=1)
    first = train_linear_svm(X[:300], y[:300], C, POS_WEIGHT, BIAS_MULTIPLIER, s, tol=1e-3)
    cold = train_linear_svm(X, y, C, POS_WEIGHT, BIAS_MULTIPLIER, s, tol=1e-2)
    warm = train_linear_svm(X, y, C, POS_WEIGHT, BIAS_MULTIPLIER, s, tol=1e-2,
                            alpha_init=np.concatenate([first.alpha, np.zeros(100)]))
    assert warm.objective == pytest.approx(cold.objective, rel=1e-3)
    assert warm.epochs < cold.epochs
    # an infeasible warm start is clipped into the box constraints
    clipped = train_linear_svm(X, y, C, POS_WEIGHT, BIAS_MULTIPLIER, s, tol=1e-2, alpha_init=np.full(400, 5.0))
    assert clipped.objective == pytest.approx(cold.objective, rel=1e-2)


def test_solver_scores_and_empty_problem():
    X, y, s = make_problem(n=100, dim=20, seed=2)
    sol = train_linear_svm(X, y, C, POS_WEIGHT, BIAS_MULTIPLIER, s)
    np.testing.assert_allclose(sol.scores, X.astype(np.float64) @ sol.weights + sol.bias, rtol=1e-5, atol=1e-5)
    assert np.all((sol.alpha >= 0) & (sol.alpha <= np.where(y > 0, C * POS_WEIGHT, C) + 1e-15))
    empty = train_linear_svm(np.zeros((0, 5), np.float32), np.zeros(0), C)
    assert empty.weights.shape == (5,) and empty.bias == 0.0 and empty.converged
    with pytest.raises(ValueError, match=r"\+1 or -1"):
        train_linear_svm(X, np.zeros(len(X)), C)


# ----------------------------------------------------------------------------- negatives


def test_compute_feature_scale():
    X, _, _ = make_problem(n=50, dim=10)
    s = compute_feature_scale(X, 20.0)
    assert np.linalg.norm(X * s, axis=1).mean() == pytest.approx(20.0, rel=1e-6)
    with pytest.raises(ValueError, match="non-empty"):
        compute_feature_scale(np.zeros((0, 10)))
    with pytest.raises(ValueError, match="mean L2 norm"):
        compute_feature_scale(np.zeros((3, 10)))
    # from the rows' norms alone (what training keeps of its sample), float16 rows too
    assert feature_scale_from_norms(feature_norms(X), 20.0) == pytest.approx(s, rel=1e-12)
    np.testing.assert_allclose(feature_norms(X.astype(np.float16)),
                               np.linalg.norm(X.astype(np.float16).astype(np.float64), axis=1), rtol=1e-12)
    with pytest.raises(ValueError, match="non-empty"):
        feature_scale_from_norms(np.zeros(0))


def test_negative_candidates_iou_boundary():
    gt = np.array([[0, 0, 10, 10]], np.float32)
    props = np.array([
        [0, 0, 3, 10],     # IoU exactly 0.3: not a negative
        [0, 0, 2.9, 10],   # IoU 0.29: negative
        [50, 50, 60, 60],  # no overlap: negative
        [0, 0, 10, 10],    # the object itself
    ], np.float32)
    out = select_negative_candidates(props, gt, np.array([1]), num_classes=2, negative_overlap=1.0)
    assert out.shape == (2, 4) and out.dtype == bool
    assert out[1].tolist() == [False, True, True, False]
    assert out[0].all()  # class 0 has no ground truth here: every proposal is a negative


def test_negative_candidates_overlap_rule_is_greedy_over_kept():
    a = [0, 0, 100, 100]
    b = [0, 0, 100, 75]    # IoU(a, b) = 0.75 > 0.7: dropped after a
    c = [0, 0, 100, 56.25]  # IoU(b, c) = 0.75, but b was dropped; IoU(a, c) = 0.5625: kept
    d = [200, 0, 300, 100]
    e = [200, 0, 270, 100]  # IoU(d, e) = 0.7 exactly: kept
    props = np.array([a, b, c, d, e], np.float32)
    out = select_negative_candidates(props, np.zeros((0, 4)), np.zeros(0), num_classes=1)
    assert out[0].tolist() == [True, False, True, True, True]
    # the rule runs over each class's own candidates: with a excluded by a ground truth of
    # class 0, b is no longer suppressed, and c then is
    gt = np.array([[0, 0, 100, 100]], np.float32)
    out = select_negative_candidates(props, gt, np.array([0]), num_classes=2, negative_iou=0.8)
    assert out[0].tolist() == [False, True, False, True, True]
    assert out[1].tolist() == [True, False, True, True, True]
    assert select_negative_candidates(props, gt[:0], np.zeros(0), 1, negative_overlap=1.0)[0].all()


def test_negative_candidates_match_reference_and_handle_empty():
    rng = np.random.default_rng(0)
    for trial in range(3):
        xy = rng.uniform(0, 80, size=(40, 2))
        props = np.hstack([xy, xy + rng.uniform(5, 40, size=(40, 2))])
        near_duplicates = props[:20] + rng.uniform(-3, 3, size=(20, 4))
        props = np.concatenate([props, near_duplicates]).astype(np.float32)
        gxy = rng.uniform(0, 80, size=(4, 2))
        gt = np.hstack([gxy, gxy + rng.uniform(10, 40, size=(4, 2))]).astype(np.float32)
        labels = rng.integers(0, 3, size=4)
        fast = select_negative_candidates(props, gt, labels, 4)
        ref = select_negative_candidates_reference(props, gt, labels, 4)
        assert np.array_equal(fast, ref)
        assert 0 < fast.sum() < fast.size
        unthinned = select_negative_candidates(props, gt, labels, 4, negative_overlap=1.0)
        assert np.all(fast <= unthinned) and (fast != unthinned).sum() > 10
    assert select_negative_candidates(np.zeros((0, 4)), gt, labels, 4).shape == (4, 0)
    with pytest.raises(ValueError, match="labels"):
        select_negative_candidates(props, gt, labels + 10, 4)


# ----------------------------------------------------------------------------- store


def test_feature_store_dedup_paging_and_reuse():
    store = FeatureStore(3, "float32", page_rows=4)
    rows = np.arange(18, dtype=np.float32).reshape(6, 3)
    a = store.add(1, np.arange(6), rows)
    assert store.capacity == 8 and len(store) == 6
    b = store.add(1, np.array([2, 5]), rows[[2, 5]] + 100)  # same keys: same slots, kept data
    assert b.tolist() == a[[2, 5]].tolist() and len(store) == 6
    np.testing.assert_array_equal(store.gather(a[::-1]), rows[::-1])
    store.release(a)
    assert len(store) == 2  # rows 2 and 5 still have a reference
    c = store.add(2, np.array([0]), rows[:1] + 7)
    assert c[0] == a[0]  # lowest free slot reused
    np.testing.assert_array_equal(store.gather(np.array([c[0], a[5]])), np.stack([rows[0] + 7, rows[5]]))


# ----------------------------------------------------------------------------- mining


def test_miner_learns_a_separable_problem():
    miner, world = run_miner(num_images=30)
    W, b, report = miner.finish()
    assert W.shape == (3, world.D) and W.dtype == np.float32 and b.shape == (3,)
    background = world.windows(200)
    for k in range(world.K):
        pos_scores = world.windows(50, k) @ W[k] + b[k]
        other = world.windows(50, (k + 1) % world.K) @ W[k] + b[k]
        assert pos_scores.min() > 0 > max((background @ W[k] + b[k]).max(), other.max())
        assert report[k]["positives"] == 15 and report[k]["negatives"] > 0 and report[k]["converged"]


def test_retrain_triggers_after_retrain_limit():
    world = World()
    pos, labels = world.positives()
    miner = HardNegativeMiner(world.K, world.D, SVMConfig(retrain_limit=10), compute_feature_scale(pos))
    miner.add_positives(pos, labels)
    feats = world.windows(9)
    only_class_1 = np.zeros((world.K, 9), bool)
    only_class_1[1] = True
    miner.process_image("a", feats, only_class_1)  # zero model: all 9 are hard
    assert [c.retrains for c in miner.classes] == [0, 0, 0] and miner.classes[1].new_since_retrain == 9
    feats2 = world.windows(1)
    miner.process_image("b", feats2, only_class_1[:, :1])
    assert [c.retrains for c in miner.classes] == [0, 1, 0] and miner.classes[1].new_since_retrain == 0
    assert np.any(miner.weights[1] != 0) and not np.any(miner.weights[[0, 2]])
    _, _, report = miner.finish()
    assert [r["retrains"] for r in report] == [1, 2, 1]
    assert report[1]["hard_negatives_added"] == 10


def test_eviction_releases_easy_rows_only_when_no_class_holds_them():
    world = World()
    pos, labels = world.positives()
    # an odd positive of class 0 that its SVM will score far below the eviction threshold
    pos, labels = np.concatenate([pos, -world.protos[:1]]), np.concatenate([labels, [0]])
    # with a handful of examples the papers' C = 0.001 squeezes every score into
    # (-1, 1); a larger C lets them spread out
    cfg = SVMConfig(retrain_limit=20, C=0.1)
    miner = HardNegativeMiner(world.K, world.D, cfg, compute_feature_scale(pos))
    miner.add_positives(pos, labels)
    # background windows, then parts of class-0 objects: the parts set class 0's margin
    # and leave the background below the eviction threshold
    feats = np.concatenate([world.windows(10), world.windows(10, 0, strength=0.5)])
    cand = np.zeros((world.K, 20), bool)
    cand[0] = True
    cand[1, :5] = True
    miner.process_image("bg", feats, cand)  # class 0 reaches the limit and retrains
    c0, c1 = miner.classes[0], miner.classes[1]
    assert c0.retrains == 1 and c0.evicted > 0
    scores = feats @ miner.weights[0] + miner.bias[0]
    kept_keys = {int(miner.store.slot_index[s]) for s in c0.slots[c0.labels < 0]}
    assert kept_keys == set(np.flatnonzero(scores >= cfg.evict_threshold).tolist())
    assert len(c0.slots) == 16 + 20 - c0.evicted
    # positives stay, even one scoring below the threshold
    assert (c0.labels > 0).sum() == 16 and -world.protos[0] @ miner.weights[0] + miner.bias[0] < cfg.evict_threshold
    # rows evicted from class 0 that class 1 holds stay stored; the others are freed
    shared = set(range(5))
    assert not shared <= kept_keys and len(kept_keys | shared) < 20
    assert len(miner.store) == len(pos) + len(kept_keys | shared)
    assert len(c1.slots) == 15 + 5
    np.testing.assert_allclose(miner.store.gather(c1.slots[15:]).astype(np.float32),
                               feats[:5] * miner.feature_scale, rtol=1e-3)


def test_dedup_within_and_across_classes():
    world = World()
    pos, labels = world.positives()
    miner = HardNegativeMiner(world.K, world.D, SVMConfig(retrain_limit=1000), compute_feature_scale(pos))
    miner.add_positives(pos, labels)
    feats, cand = world.image(n=12)
    miner.process_image("x", feats, cand)
    miner.process_image("x", feats, cand)  # same image again (e.g. replayed after a resume)
    assert [c.hard_negatives_added for c in miner.classes] == [12, 12, 12]
    assert len(miner.store) == 3 * 15 + 12  # one row per window, shared by the 3 classes
    miner.process_image("y", feats, cand)  # another image: new keys
    assert len(miner.store) == 3 * 15 + 24


def test_score_invariant_and_equivalence_with_one_batch_solve():
    world = World()
    pos, labels = world.positives()
    s = compute_feature_scale(pos)
    cfg = SVMConfig(retrain_limit=10**6, cache_dtype="float32", tol=1e-4)
    miner = HardNegativeMiner(world.K, world.D, cfg, s)
    miner.add_positives(pos, labels)
    feats, cand = world.image(n=40)
    miner.process_image("only", feats, cand)  # zero model: every candidate is taken
    W, b, report = miner.finish()
    # no retrain before finish: the miner's SVM is the batch SVM on positives + candidates
    for k in range(world.K):
        X = np.concatenate([pos[labels == k], feats])
        y = np.concatenate([np.ones((labels == k).sum()), -np.ones(len(feats))])
        sol = train_linear_svm(X, y, cfg.C, cfg.pos_loss_weight, cfg.bias_multiplier, s, tol=1e-4)
        assert report[k]["objective"] == pytest.approx(sol.objective, rel=1e-4)
        np.testing.assert_allclose(linear_scores(X, W[k], b[k]), sol.scores, rtol=1e-3, atol=1e-3)
    # the check raises when the weights no longer match the duals
    miner.weights[1] *= 1.01
    with pytest.raises(AssertionError, match="class 1"):
        miner._check_score_invariant(1)


def test_state_dict_round_trip_resumes_to_the_same_result(tmp_path):
    full, _ = run_miner(num_images=24)
    W_full, b_full, report_full = full.finish()

    half, _ = run_miner(num_images=24, stop_after=13)
    arrays, meta = half.state_dict()
    atomic_save_npz(tmp_path / "state.npz", **arrays)
    (tmp_path / "state.json").write_text(json.dumps(meta))
    resumed = HardNegativeMiner.from_state_dict(load_npz(tmp_path / "state.npz"),
                                                json.loads((tmp_path / "state.json").read_text()))
    # image 12 is replayed, as after an interruption between an image and its checkpoint
    resumed, _ = run_miner(num_images=24, miner=resumed, start=12)
    W, b, report = resumed.finish()
    np.testing.assert_allclose(W, W_full, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(b, b_full, rtol=1e-5, atol=1e-6)
    for r, rf in zip(report, report_full):
        assert {k: v for k, v in r.items() if k != "seconds"} == pytest.approx(
            {k: v for k, v in rf.items() if k != "seconds"})
    assert sum(r["retrains"] for r in report) > 2 * len(report)  # mining retrained mid-pass

    meta_bad = dict(meta, version=99)
    with pytest.raises(MiningStateError, match="version"):
        HardNegativeMiner.from_state_dict(arrays, meta_bad)
    with pytest.raises(MiningStateError, match="malformed"):
        HardNegativeMiner.from_state_dict({k: v for k, v in arrays.items() if k != "class_alpha"}, meta)


def test_images_without_proposals_and_bad_input():
    world = World()
    pos, labels = world.positives()
    miner = HardNegativeMiner(world.K, world.D, SVMConfig(), compute_feature_scale(pos))
    miner.process_image("empty", np.zeros((0, world.D), np.float32), np.zeros((world.K, 0), bool))
    feats, _ = world.image(5)
    miner.process_image("none", feats, np.zeros((world.K, 5), bool))
    assert miner.images_processed == 2 and len(miner.store) == 0
    miner.add_positives(np.zeros((0, world.D), np.float32), np.zeros(0, np.int64))
    W, b, report = miner.finish()  # no data at all: zero models, still well formed
    assert W.shape == (world.K, world.D) and not W.any() and report[0]["negatives"] == 0
    with pytest.raises(ValueError, match=r"process_image\(bad\)"):
        miner.process_image("bad", feats, np.ones((world.K, 4), bool))
    with pytest.raises(ValueError, match="labels"):
        miner.add_positives(pos[:2], np.array([0, 7]))
    bad = feats.copy()
    bad[0, 0] = math.inf
    with pytest.raises(ValueError, match="not finite"):
        miner.process_image("inf", bad, np.ones((world.K, 5), bool))


def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match="cache_dtype"):
        SVMConfig(cache_dtype="int8")
    with pytest.raises(ValueError, match="evict_threshold"):
        SVMConfig(evict_threshold=0.0)
