import numpy as np
import pytest

from sppcore.boxes import (
    apply_bbox_deltas,
    as_boxes,
    bbox_targets,
    box_iou,
    clip_boxes,
    internal_to_voc,
    nms,
    nms_reference,
    voc_to_internal,
    xywh_to_xyxy,
    xyxy_to_xywh,
)


def test_voc_conversion_round_trip():
    voc = np.array([[1, 1, 10, 10], [5, 7, 5, 7]], dtype=np.float32)
    internal = voc_to_internal(voc)
    # pixel columns 1..10 (1-based) are 0..9 (0-based): continuous extent 0..10
    np.testing.assert_array_equal(internal, [[0, 0, 10, 10], [4, 6, 5, 7]])
    np.testing.assert_array_equal(internal_to_voc(internal), voc)


def test_xywh_conversion_round_trip():
    xywh = np.array([[3, 4, 10, 20]], dtype=np.float32)
    xyxy = xywh_to_xyxy(xywh)
    np.testing.assert_array_equal(xyxy, [[3, 4, 13, 24]])
    np.testing.assert_array_equal(xyxy_to_xywh(xyxy), xywh)


def test_empty_boxes_keep_shape():
    for fn in (voc_to_internal, internal_to_voc, xywh_to_xyxy, xyxy_to_xywh, as_boxes):
        assert fn(np.zeros((0, 4))).shape == (0, 4)
    assert box_iou(np.zeros((0, 4)), np.ones((3, 4))).shape == (0, 3)
    assert nms(np.zeros((0, 4)), np.zeros(0), 0.3).shape == (0,)
    with pytest.raises(ValueError):
        as_boxes(np.zeros((3, 5)))


def test_iou_equals_devkit_plus_one_iou():
    rng = np.random.default_rng(0)
    a = rng.integers(1, 50, size=(40, 2))
    a = np.concatenate([a, a + rng.integers(0, 30, size=(40, 2))], axis=1).astype(np.float32)
    b = a[rng.permutation(40)] + rng.integers(-5, 6, size=(40, 4))
    b[:, 2:] = np.maximum(b[:, 2:], b[:, :2])

    def devkit_iou(p, q):  # VOCevaldet.m, 1-based inclusive pixels
        iw = min(p[2], q[2]) - max(p[0], q[0]) + 1
        ih = min(p[3], q[3]) - max(p[1], q[1]) + 1
        if iw <= 0 or ih <= 0:
            return 0.0
        ua = (p[2] - p[0] + 1) * (p[3] - p[1] + 1) + (q[2] - q[0] + 1) * (q[3] - q[1] + 1) - iw * ih
        return iw * ih / ua

    ours = box_iou(voc_to_internal(a), voc_to_internal(b))
    for i in range(len(a)):
        for j in range(len(b)):
            assert ours[i, j] == pytest.approx(devkit_iou(a[i], b[j]), abs=1e-12)


@pytest.mark.parametrize("seed", range(5))
def test_nms_matches_reference(seed):
    rng = np.random.default_rng(seed)
    xy = rng.uniform(0, 100, size=(60, 2))
    boxes = np.concatenate([xy, xy + rng.uniform(5, 50, size=(60, 2))], axis=1)
    scores = rng.integers(0, 10, size=60).astype(np.float32)  # many ties
    for thresh in (0.0, 0.3, 0.5, 0.7):
        ref = nms_reference(boxes, scores, thresh)
        np.testing.assert_array_equal(nms(boxes, scores, thresh), ref)
        for max_keep in (0, 1, 5, len(ref), len(ref) + 3):  # stopping early: the first ones of the whole result
            np.testing.assert_array_equal(nms(boxes, scores, thresh, max_keep=max_keep), ref[:max_keep])


def test_nms_in_blocks_matches_reference(monkeypatch):
    # 200 boxes in blocks of every size: suppression across blocks, ties, identical boxes
    import sppcore.boxes as boxes_module

    rng = np.random.default_rng(0)
    xy = rng.uniform(0, 150, size=(200, 2))
    boxes = np.concatenate([xy, xy + rng.uniform(1, 60, size=(200, 2))], axis=1)
    boxes[150:160] = boxes[10]  # duplicates: IoU exactly 1
    boxes[160:165, 2:] = boxes[160:165, :2]  # empty boxes: union 0 where they meet each other
    scores = rng.integers(0, 30, size=200).astype(np.float32)
    for thresh in (0.0, 0.3, 0.7):
        ref = nms_reference(boxes, scores, thresh)
        for block in (1, 7, 64, 256):
            monkeypatch.setattr(boxes_module, "NMS_BLOCK", block)
            np.testing.assert_array_equal(nms(boxes, scores, thresh), ref)
            np.testing.assert_array_equal(nms(boxes, scores, thresh, max_keep=40), ref[:40])


def test_clip():
    out = clip_boxes([[-5, -5, 20, 30]], height=25, width=15)
    np.testing.assert_array_equal(out, [[0, 0, 15, 25]])


def test_bbox_targets_inverse():
    rng = np.random.default_rng(1)
    xy = rng.uniform(0, 100, size=(20, 2))
    p = np.concatenate([xy, xy + rng.uniform(5, 50, size=(20, 2))], axis=1)
    g = p + rng.uniform(-4, 4, size=(20, 4))
    t = bbox_targets(p, g)
    np.testing.assert_allclose(apply_bbox_deltas(p, t), g, atol=1e-3)
    np.testing.assert_allclose(bbox_targets(p, p), 0, atol=1e-6)
