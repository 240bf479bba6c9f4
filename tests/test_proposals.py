import os
import subprocess
import sys

import cv2
import numpy as np
import pytest

from proposals import ALGORITHMS, ProposalConfig, ProposalStore, compute_proposals
from proposals.recall import average_best_overlap, average_recall, best_overlaps, recall_at, recall_vs_boxes
from proposals.selective_search import (
    FAST_STRATEGIES, adjacent_pairs, colour_space_image, felzenszwalb_segments, hierarchical_grouping,
    hierarchical_grouping_reference, rank_groups, rcnn_fast_hierarchies, region_features, selectivesearch_rect_to_xyxy,
    stable_order, unique_boxes)
from sppcore.errors import DatasetError, ProposalError

PROJECT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VOC_PHOTOS = os.path.normpath(os.path.join(PROJECT, "..", "shared", "datasets", "voc-photos-dev", "VOC2007"))


def blocks_image(h=120, w=160):
    """Three flat rectangles on a grey background: easy segments with known boxes."""
    img = np.full((h, w, 3), 128, np.uint8)
    img[10:50, 20:70] = (220, 30, 30)
    img[60:110, 90:150] = (30, 200, 40)
    img[70:100, 10:40] = (20, 20, 210)
    return img


def test_unique_and_stable_order():
    boxes = np.array([[0, 0, 30, 30], [5, 5, 40, 40], [0, 0, 30, 30], [1, 2, 60, 70]], np.float32)
    u = unique_boxes(boxes)
    assert len(u) == 3
    a = stable_order(boxes)
    b = stable_order(boxes[::-1].copy())
    np.testing.assert_array_equal(a, b)  # input order does not matter
    assert len(a) == 3


def rank_groups_reference(groups, levels=None):
    """R-CNN's ranking written out box by box: in each group level 1 for the largest area
    (or the given level) and priority = hash(box, group) * level; a box keeps its best
    priority; ascending."""
    from proposals.selective_search import _hash_uniform

    best = {}
    for g, group in enumerate(groups):
        if levels is None:
            unique = sorted({tuple(float(v) for v in b) for b in group})
            by_size = sorted(unique, key=lambda b: (-(b[2] - b[0]) * (b[3] - b[1]), b))
            pairs = [(b, level) for level, b in enumerate(by_size, start=1)]
        else:
            pairs = [(tuple(float(v) for v in b), float(level)) for b, level in zip(group, levels[g])]
        for b, level in pairs:
            priority = float(_hash_uniform(np.array([b], np.float32), g)[0]) * level
            best[b] = min(best.get(b, np.inf), priority)
    return np.array(sorted(best, key=lambda b: (best[b], b)), np.float32).reshape(-1, 4)


def test_rank_groups_with_given_levels():
    rng = np.random.default_rng(5)
    shared = random_boxes(rng, 50)
    groups = [np.concatenate([random_boxes(rng, 200), shared]) for _ in range(3)]
    levels = [rng.integers(1, 400, len(g)).astype(np.float64) for g in groups]
    ordered = rank_groups(groups, levels)
    np.testing.assert_array_equal(ordered, rank_groups_reference(groups, levels))
    # the levels decide: a group whose levels are all 1 fills the front of the order
    levels[1][:] = 1.0
    front = rank_groups(groups, levels)[:100]
    from_group_1 = (front[:, None, :] == groups[1][None]).all(axis=2).any(axis=1)
    assert from_group_1.mean() > 0.9
    with pytest.raises(ValueError, match="levels"):
        rank_groups(groups, [lv[:-1] for lv in levels])


def random_boxes(rng, n):
    xy = rng.integers(0, 300, (n, 2))
    return np.concatenate([xy, xy + rng.integers(1, 200, (n, 2))], axis=1).astype(np.float32)


def test_rank_groups_matches_reference_and_ranks_large_boxes_first():
    rng = np.random.default_rng(3)
    shared = random_boxes(rng, 100)  # found by several groups
    groups = [np.concatenate([random_boxes(rng, 300), shared, shared[:20]]) for _ in range(4)]
    ordered = rank_groups(groups)
    np.testing.assert_array_equal(ordered, rank_groups_reference(groups))
    assert len(ordered) == len(np.unique(np.concatenate(groups), axis=0))
    np.testing.assert_array_equal(stable_order(groups[0]), rank_groups_reference(groups[:1]))
    area = (ordered[:, 2] - ordered[:, 0]) * (ordered[:, 3] - ordered[:, 1])
    # rand * level: the top of the hierarchy (large regions) tends to come first
    assert np.median(area[:100]) > 2 * np.median(area[-100:])
    # boxes that several groups find keep their best draw and rank early
    is_shared = (ordered[:, None, :] == shared[None]).all(axis=2).any(axis=1)
    assert np.flatnonzero(is_shared).mean() < 0.8 * np.flatnonzero(~is_shared).mean()
    assert rank_groups([]).shape == (0, 4) and rank_groups([np.zeros((0, 4))]).shape == (0, 4)


def test_selectivesearch_rect_convention():
    # the package reports width = max_x - min_x for pixels min_x..max_x inclusive
    np.testing.assert_array_equal(selectivesearch_rect_to_xyxy([(3, 4, 9, 19)]), [[3, 4, 13, 24]])


@pytest.mark.parametrize("backend", [b for b in ALGORITHMS if b != "selectivesearch"])
def test_opencv_backends_find_the_blocks(backend):
    img = blocks_image()
    boxes = compute_proposals(img, ProposalConfig(backend=backend))
    assert boxes.dtype == np.float32 and boxes.ndim == 2 and boxes.shape[1] == 4
    assert (boxes[:, 2] - boxes[:, 0] >= 20).all() and (boxes[:, 3] - boxes[:, 1] >= 20).all()
    assert (boxes[:, :2] >= 0).all() and (boxes[:, 2] <= 160).all() and (boxes[:, 3] <= 120).all()
    gt = np.array([[20, 10, 70, 50], [90, 60, 150, 110], [10, 70, 40, 100]], np.float32)
    assert recall_at(best_overlaps([boxes], [gt]), [0.7])[0] == 1.0
    # OpenCV's (x, y, w, h) counts pixels: each flat block and the whole image come back
    # exactly (x + w is the continuous right edge; an off-by-one would miss all four)
    for box in [*gt, [0, 0, 160, 120]]:
        assert (boxes == np.asarray(box, np.float32)).all(axis=1).any(), box


def test_selectivesearch_backend_small_image():
    boxes = compute_proposals(blocks_image(60, 80), ProposalConfig(backend="selectivesearch", min_size=5))
    assert len(boxes) >= 1 and boxes.shape[1] == 4


def test_cap_and_determinism():
    rng = np.random.default_rng(0)
    img = cv2.resize(rng.integers(0, 255, (30, 40, 3), dtype=np.uint8), (200, 150), interpolation=cv2.INTER_NEAREST)
    full = compute_proposals(img)
    capped = compute_proposals(img, ProposalConfig(max_boxes=25))
    assert len(capped) == 25 and len(full) > 25
    np.testing.assert_array_equal(capped, full[:25])  # the cap keeps a prefix of the order
    np.testing.assert_array_equal(compute_proposals(img), full)


def test_same_output_in_another_process(tmp_path):
    rng = np.random.default_rng(1)
    img = cv2.resize(rng.integers(0, 255, (20, 30, 3), dtype=np.uint8), (150, 100), interpolation=cv2.INTER_NEAREST)
    np.save(tmp_path / "img.npy", img)
    code = ("import numpy as np, sys; from proposals import compute_proposals; "
            f"np.save(sys.argv[1], compute_proposals(np.load({str(tmp_path / 'img.npy')!r})))")
    for name in ("a.npy", "b.npy"):
        subprocess.run([sys.executable, "-c", code, str(tmp_path / name)], check=True)
    np.testing.assert_array_equal(np.load(tmp_path / "a.npy"), np.load(tmp_path / "b.npy"))
    np.testing.assert_array_equal(np.load(tmp_path / "a.npy"), compute_proposals(img))


def test_inputs_gray_rgba_tiny_and_large():
    img = blocks_image()
    gray = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)
    assert len(compute_proposals(gray)) > 0
    rgba = np.concatenate([img, np.full(img.shape[:2] + (1,), 255, np.uint8)], axis=2)
    np.testing.assert_array_equal(compute_proposals(rgba), compute_proposals(img))
    # smaller than the minimum box: the whole image
    np.testing.assert_array_equal(compute_proposals(np.zeros((1, 1, 3), np.uint8)), [[0, 0, 1, 1]])
    np.testing.assert_array_equal(compute_proposals(np.zeros((10, 15, 3), np.uint8)), [[0, 0, 15, 10]])
    # large images are segmented downscaled; boxes come back in original coordinates
    big = cv2.resize(img, (640, 480), interpolation=cv2.INTER_NEAREST)
    boxes = compute_proposals(big, ProposalConfig(max_side=200))
    assert boxes[:, 2].max() > 500 and boxes[:, 3].max() <= 480
    gt = np.array([[80, 40, 280, 200]], np.float32)  # the red block, scaled x4
    assert best_overlaps([boxes], [gt])[0] > 0.7


def test_bad_inputs():
    with pytest.raises(ProposalError, match="non-empty"):
        compute_proposals(np.zeros((0, 0, 3), np.uint8))
    with pytest.raises(ProposalError, match="image array"):
        compute_proposals("not an image")
    with pytest.raises(ProposalError, match="channels"):
        compute_proposals(np.zeros((30, 30, 2), np.uint8))
    with pytest.raises(ProposalError, match="unknown backend"):
        compute_proposals(blocks_image(), ProposalConfig(backend="magic"))


def test_recall_metrics():
    gt = [np.array([[0, 0, 10, 10]], np.float32), np.zeros((0, 4), np.float32), np.array([[0, 0, 10, 10]], np.float32)]
    props = [np.array([[0, 0, 10, 20], [0, 0, 10, 10]], np.float32), np.zeros((0, 4)), np.array([[50, 50, 60, 60]], np.float32)]
    ov = best_overlaps(props, gt)
    np.testing.assert_allclose(ov, [1.0, 0.0])
    np.testing.assert_allclose(recall_at(ov, [0.5, 0.7]), [0.5, 0.5])
    assert average_recall(ov) == pytest.approx(0.5)
    assert average_best_overlap(np.array([0.25, 0.75, 1.0])) == pytest.approx(2 / 3)
    assert np.isnan(average_best_overlap(np.zeros(0)))
    np.testing.assert_allclose(recall_vs_boxes(props, gt, [1, 2]), [0.5, 0.5])  # first box already IoU 0.5


def write_images(tmp_path, n=3):
    paths = []
    for i in range(n):
        p = tmp_path / f"img{i}.png"
        cv2.imwrite(str(p), np.roll(blocks_image(), 7 * i, axis=1))
        paths.append(str(p))
    return [f"im{i}" for i in range(n)], paths


def test_store_caches_and_keys(tmp_path):
    ids, paths = write_images(tmp_path)
    cfg = ProposalConfig()
    store = ProposalStore.build(cfg, ids, paths, str(tmp_path / "cache"), workers=1, progress=False)
    assert os.path.isfile(os.path.join(store.directory, "manifest.json"))
    np.testing.assert_array_equal(store["im1"], compute_proposals(cv2.cvtColor(cv2.imread(paths[1]), cv2.COLOR_BGR2RGB)))
    assert store.seconds("im0") > 0
    same = ProposalStore.build(cfg, ids, paths, str(tmp_path / "cache"), workers=1, progress=False)
    assert same.directory == store.directory
    other = ProposalStore.build(ProposalConfig(max_boxes=5), ids, paths, str(tmp_path / "cache"), workers=1, progress=False)
    assert other.directory != store.directory and len(other["im0"]) <= 5
    # an edited image is recomputed in the same store (entries are keyed by image content)
    cv2.imwrite(paths[0], blocks_image()[::-1].copy())
    os.utime(paths[0], ns=(1, 1))
    edited = ProposalStore.build(cfg, ids, paths, str(tmp_path / "cache"), workers=1, progress=False)
    assert edited.directory == store.directory
    np.testing.assert_array_equal(edited["im0"], compute_proposals(blocks_image()[::-1].copy()[:, :, ::-1]))
    with pytest.raises(KeyError):
        store["nope"]
    with pytest.raises(ProposalError, match="image file not found"):
        ProposalStore.build(cfg, ["x"], [str(tmp_path / "missing.jpg")], str(tmp_path / "cache"), progress=False)


def test_store_resumes_after_interruption(tmp_path, monkeypatch):
    ids, paths = write_images(tmp_path, 4)
    cfg = ProposalConfig()
    store = ProposalStore.build(cfg, ids, paths, str(tmp_path / "cache"), workers=1, progress=False)
    reference = {i: store[i] for i in ids}
    os.remove(os.path.join(store.directory, "im2.npz"))  # as if interrupted before im2
    calls = []
    import proposals.backends as ps

    real = ps._compute_one
    monkeypatch.setattr(ps, "_compute_one", lambda item: calls.append(item[0]) or real(item))
    again = ProposalStore.build(cfg, ids, paths, str(tmp_path / "cache"), workers=1, progress=False)
    assert calls == ["im2"]
    for i in ids:
        np.testing.assert_array_equal(again[i], reference[i])


def test_store_parallel_matches_serial(tmp_path):
    ids, paths = write_images(tmp_path, 3)
    a = ProposalStore.build(ProposalConfig(), ids, paths, str(tmp_path / "a"), workers=2, progress=False)
    b = ProposalStore.build(ProposalConfig(), ids, paths, str(tmp_path / "b"), workers=1, progress=False)
    for i in ids:
        np.testing.assert_array_equal(a[i], b[i])


def test_non_image_file_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"plain text")
    with pytest.raises(DatasetError, match=r"bad\.jpg: not a readable image"):
        ProposalStore.build(ProposalConfig(), ["bad"], [str(bad)], str(tmp_path / "c"), workers=1, progress=False)


def random_regions(seed, h=36, w=48, cells=(6, 8), colours=5):
    """A small image made of blocks in a few colours with noise, and its segmentation."""
    rng = np.random.default_rng(seed)
    palette = rng.integers(0, 256, (colours, 3))
    blocks = rng.integers(0, colours, cells)
    img = palette[cv2.resize(blocks.astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST)]
    img = np.clip(img + rng.integers(-20, 21, img.shape), 0, 255).astype(np.uint8)
    return img, felzenszwalb_segments(img, 50, 0.8, 10)


def test_region_features_match_a_loop_over_regions():
    img, labels = random_regions(0)
    f = region_features(labels, img)
    n = labels.max() + 1
    assert n >= 5 and f["colour"].shape == (n, 75) and f["texture"].shape == (n, 240)
    for r in range(n):
        ys, xs = np.nonzero(labels == r)
        assert f["size"][r] == len(ys)
        np.testing.assert_array_equal(f["boxes"][r], [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
        # 25 equal bins over 0..255 per channel: value v falls in bin floor(v * 25 / 256)
        expect = np.concatenate([np.histogram(img[ys, xs, c], bins=np.linspace(0, 256, 26))[0] for c in range(3)])
        np.testing.assert_allclose(f["colour"][r], expect / expect.sum())
    np.testing.assert_allclose(f["texture"].sum(axis=1), 1.0)
    # a flat region has all its gradient responses in the lowest bin
    flat = np.full((20, 30, 3), 90, np.uint8)
    t = region_features(np.zeros((20, 30), np.int32), flat)["texture"]
    np.testing.assert_allclose(t[0, ::10], 1 / 24)


def test_adjacent_pairs_and_consecutive_labels():
    labels = np.array([[0, 0, 1], [2, 2, 1], [2, 3, 3]], np.int32)
    np.testing.assert_array_equal(adjacent_pairs(labels), [[0, 1], [0, 2], [1, 2], [1, 3], [2, 3]])
    assert adjacent_pairs(np.zeros((3, 3), np.int32)).shape == (0, 2)
    _, seg = random_regions(1)
    assert seg.min() == 0 and len(np.unique(seg)) == seg.max() + 1


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("strategy", FAST_STRATEGIES + (("size",), ("fill",)))
def test_hierarchical_grouping_matches_reference(seed, strategy):
    img, labels = random_regions(seed)
    f, pairs = region_features(labels, img), adjacent_pairs(labels)
    area = float(labels.size)
    fast = hierarchical_grouping(f, pairs, area, strategy)
    np.testing.assert_array_equal(fast, hierarchical_grouping_reference(f, pairs, area, strategy))
    n = len(f["size"])
    assert fast.shape == (n - 1, 4)
    np.testing.assert_array_equal(fast[-1], [0, 0, 48, 36])  # the last merge is the whole image
    # a merged box is at least as large as the smallest region
    assert ((fast[:, 2] - fast[:, 0]) * (fast[:, 3] - fast[:, 1]) >= f["size"].min()).all()


def test_hierarchical_grouping_merges_the_most_similar_first():
    # three flat regions: left and middle have the same colour, right another one
    img = np.zeros((10, 30, 3), np.uint8)
    img[:, :10] = (200, 10, 10)
    img[:, 10:20] = (200, 10, 10)
    img[:, 20:] = (10, 10, 200)
    labels = np.repeat(np.repeat(np.array([[0, 1, 2]], np.int32), 10, axis=1), 10, axis=0)
    f = region_features(labels, img)
    merged = hierarchical_grouping(f, adjacent_pairs(labels), 300.0, ("colour",))
    np.testing.assert_array_equal(merged, [[0, 0, 20, 10], [0, 0, 30, 10]])
    assert hierarchical_grouping(f, np.zeros((0, 2), np.int64), 300.0, ("colour",)).shape == (0, 4)


def test_rcnn_fast_levels_count_back_from_the_top():
    img, _ = random_regions(3, 60, 80)
    hierarchies = rcnn_fast_hierarchies(cv2.cvtColor(img, cv2.COLOR_RGB2BGR), ProposalConfig())
    assert len(hierarchies) == 8  # 2 colour spaces x 2 k x 2 strategies
    for boxes, levels in hierarchies:
        n = (len(boxes) + 1) // 2  # R initial segments and R - 1 merges
        np.testing.assert_array_equal(levels[:n], n)
        np.testing.assert_array_equal(levels[n:], np.arange(n - 1, 0, -1))
        np.testing.assert_array_equal(boxes[-1], [0, 0, 80, 60])  # level 1: the whole image


def test_hsv_uses_the_full_hue_range():
    img = np.zeros((4, 4, 3), np.uint8)
    img[:, :2] = (255, 0, 128)  # RGB: a pink whose hue is about 330 degrees
    hsv = colour_space_image(cv2.cvtColor(img, cv2.COLOR_RGB2BGR), "hsv")
    assert 225 <= hsv[0, 0, 0] <= 240  # 330 / 360 * 256 (OpenCV's plain HSV would say 165)
    with pytest.raises(ProposalError, match="colour space"):
        compute_proposals(blocks_image(), ProposalConfig(color_spaces=("xyz",)))


def small_objects_image(seed=0):
    """Small saturated figures (shorter side 14-19 px) on a grey textured background, with
    their boxes."""
    rng = np.random.default_rng(seed)
    img = cv2.GaussianBlur(rng.integers(90, 170, (240, 320, 3), dtype=np.uint8), (0, 0), 2)
    boxes = []
    for i in range(12):
        w, h = int(rng.integers(14, 20)), int(rng.integers(25, 45))
        x, y = 10 + (i % 6) * 50 + int(rng.integers(0, 10)), 20 + (i // 6) * 110 + int(rng.integers(0, 40))
        colour = np.zeros(3, np.uint8)
        colour[i % 3] = 255
        img[y:y + h, x:x + w] = colour
        boxes.append([x, y, x + w, y + h])
    return img, np.array(boxes, np.float32)


def test_small_objects_are_covered():
    img, gt = small_objects_image()
    boxes = compute_proposals(img)
    assert len(boxes) <= 2000
    assert (best_overlaps([boxes], [gt]) >= 0.5).all()
    # R-CNN's 20 px minimum box size loses the narrowest ones
    old = compute_proposals(img, ProposalConfig(min_size=20))
    assert (best_overlaps([old], [gt]) < 0.5).sum() >= 3


@pytest.mark.slow
def test_recall_on_real_photos():
    if not os.path.isdir(VOC_PHOTOS):
        pytest.skip(f"voc-photos-dev not found at {VOC_PHOTOS} (../shared/datasets relative to the project root)")
    from detect.voc import VOC_CLASSES, VOCDataset

    ds = VOCDataset(VOC_PHOTOS, "dev", classes=VOC_CLASSES)
    props, gt = [], []
    for i in ds.image_ids:
        boxes = compute_proposals(ds.load_image(i))
        assert len(boxes) <= 2000
        props.append(boxes)
        ann = ds.annotation(i)
        gt.append(ann.boxes[~ann.difficult])
    assert recall_at(best_overlaps(props, gt), [0.5])[0] >= 0.975


def test_rcnn_fast_is_its_hierarchies_ranked_by_area_levels():
    img, _ = random_regions(4, 60, 80)
    cfg = ProposalConfig(min_size=0, max_boxes=150)
    hierarchies = rcnn_fast_hierarchies(cv2.cvtColor(img, cv2.COLOR_RGB2BGR), cfg)
    expect = rank_groups([boxes for boxes, _ in hierarchies])  # one group per hierarchy
    np.testing.assert_array_equal(compute_proposals(img, cfg), expect[:150])
    assert not np.array_equal(expect, rank_groups([b for b, _ in hierarchies], [lv for _, lv in hierarchies]))
