"""Scoring, box regression and NMS on the network's device (detect.device_postprocess)
against the numpy steps they are twins of; on the CPU here, and on a GPU too where torch
sees one. Then mixed precision (features.precision)."""
import numpy as np
import pytest
import torch

from detect.detector import alike_detections, detections_from_scores
from detect.device_postprocess import (apply_bbox_deltas_tensor, batched_nms_topk, box_iou_tensor,
                                       clip_boxes_tensor, detections_from_scores_tensor, greedy_nms_mask,
                                       iou_exceeds)
from sppcore.boxes import apply_bbox_deltas, box_iou, clip_boxes, nms, nms_reference

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
DEVICES = ["cpu", pytest.param("cuda", marks=CUDA)]


def random_boxes(rng, n, side=300.0, min_size=4.0, max_size=150.0):
    xy = rng.uniform(0, side, (n, 2))
    wh = rng.uniform(min_size, max_size, (n, 2))
    return np.concatenate([xy, xy + wh], 1).astype(np.float32)


def t(array, device):
    return torch.from_numpy(np.ascontiguousarray(array)).to(device)


def assert_same_detections(a, b):
    np.testing.assert_array_equal(a.labels, b.labels)
    np.testing.assert_array_equal(a.boxes, b.boxes)
    np.testing.assert_array_equal(a.scores, b.scores)


@pytest.mark.parametrize("device", DEVICES)
def test_box_iou_is_the_numpy_one_bit_for_bit(device):
    rng = np.random.default_rng(0)
    a = random_boxes(rng, 40)
    b = np.concatenate([random_boxes(rng, 30), a[:5],  # identical boxes
                        np.array([[0, 0, 10, 10], [0, 0, 10, 3], [10, 0, 20, 10], [5, 5, 5, 9], [5, 5, 5, 5], [5, 5, 5, 5]],
                                 np.float32)])
    got = box_iou_tensor(t(a, device), t(b, device)).cpu().numpy()
    np.testing.assert_array_equal(got, box_iou(a, b))
    # batched over a leading dimension
    stacked = box_iou_tensor(t(np.stack([a, a]), device), t(np.stack([b, b]), device)).cpu().numpy()
    np.testing.assert_array_equal(stacked[1], box_iou(a, b))
    # the comparison the NMS makes, empty and degenerate boxes included
    for thr in (0.0, 0.3, 0.5, 1.0):
        np.testing.assert_array_equal(iou_exceeds(t(a, device), t(b, device), thr).cpu().numpy(), box_iou(a, b) > thr)
        np.testing.assert_array_equal(iou_exceeds(t(b, device), t(b, device), thr).cpu().numpy(), box_iou(b, b) > thr)
    # right at a threshold: [0,0,10,10] against [0,0,10,3] is 30 / 100, exactly 0.3
    edge = box_iou_tensor(t(np.array([[0, 0, 10, 10]], np.float32), device),
                          t(np.array([[0, 0, 10, 3]], np.float32), device)).item()
    assert edge == 0.3


@pytest.mark.parametrize("device", DEVICES)
def test_greedy_mask_is_the_reference_nms(device):
    rng = np.random.default_rng(1)
    for trial in range(20):
        n = int(rng.integers(1, 120))
        boxes = random_boxes(rng, n, side=120)
        if trial % 2:  # near-duplicates: long suppression chains
            boxes = (boxes[:1] + rng.normal(0, 3, (n, 4))).astype(np.float32)
        scores = rng.normal(size=n)
        order = np.argsort(-scores, kind="stable")
        keep = greedy_nms_mask(t(boxes[order][None], device), t(np.ones((1, n), bool), device), 0.3)
        got = order[keep[0].cpu().numpy()]
        np.testing.assert_array_equal(got, nms_reference(boxes, scores, 0.3))
    # a box at IoU exactly 0.3 with a kept one stays (R-CNN's "> iou" rule); at 0.31 it goes
    boxes = np.array([[0, 0, 10, 10], [0, 0, 10, 3]], np.float32)
    valid = t(np.ones((1, 2), bool), device)
    assert greedy_nms_mask(t(boxes[None], device), valid, 0.3)[0].tolist() == [True, True]
    assert greedy_nms_mask(t(boxes[None], device), valid, 0.29)[0].tolist() == [True, False]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("case", range(12))
def test_detections_are_the_numpy_ones(device, case):
    """Threshold, per-class NMS and top-k of every class at once: the very detections of
    detect.detector.detections_from_scores, on the same boxes and scores (ties, thresholds,
    class-specific boxes, boxes outside the image, small and large top-k)."""
    rng = np.random.default_rng(100 + case)
    n, k = int(rng.integers(1, 400)), int(rng.integers(1, 6))
    boxes = random_boxes(rng, n, side=380, max_size=200)  # some cross the 320 x 400 image's border
    scores = rng.normal(size=(n, k)).astype(np.float32)
    if case % 3 == 0:
        scores = np.round(scores, 1)  # many ties
    class_boxes = None
    if case % 2:
        class_boxes = (boxes[:, None, :] + rng.normal(0, 6, (n, k, 4))).astype(np.float32)
    threshold = 0.2 if case % 4 == 1 else -np.inf
    max_keep = [1, 5, 100, 1000][case % 4]
    ref = detections_from_scores(boxes, scores, (320, 400), 0.3, max_keep, threshold, class_boxes)
    got = detections_from_scores_tensor(t(boxes, device), t(scores, device), (320, 400), 0.3, max_keep, threshold,
                                        None if class_boxes is None else t(class_boxes, device))
    assert len(ref) > 0
    assert_same_detections(got, ref)


@pytest.mark.parametrize("device", DEVICES)
def test_the_ranking_prefix_grows_until_it_holds_the_top_k(device):
    """Clusters of near-identical boxes: the first 4 * max_keep ranked boxes hold fewer than
    max_keep survivors, so the prefix must double (twice here) to give the same result."""
    rng = np.random.default_rng(7)
    centres = random_boxes(rng, 30, side=2000, min_size=40, max_size=60)
    boxes = (np.repeat(centres, 40, axis=0) + rng.normal(0, 1, (1200, 4))).astype(np.float32)
    # each cluster's boxes ranked together: the top 40 ranks are one cluster (one survivor)
    scores = (-np.repeat(np.arange(30), 40) + rng.uniform(0, 0.5, 1200)).astype(np.float32)[:, None]
    keep_cls, keep_idx = batched_nms_topk(t(boxes[None], device), t(scores.T, device), 0.3, 25)
    np.testing.assert_array_equal(keep_idx.cpu().numpy(), nms(boxes, scores[:, 0], 0.3, max_keep=25))
    assert (keep_cls == 0).all() and len(keep_idx) == 25


@pytest.mark.parametrize("device", DEVICES)
def test_small_blocks_give_the_same_detections(device, monkeypatch):
    """The blocks' size bound (NMS_PAIRS) changes how the ranking is cut, not the result."""
    import detect.device_postprocess as dp

    rng = np.random.default_rng(11)
    boxes = random_boxes(rng, 700, side=300, max_size=200)
    scores = rng.normal(size=(700, 3)).astype(np.float32)
    ref = detections_from_scores(boxes, scores, (320, 400), 0.3, 60)
    monkeypatch.setattr(dp, "NMS_PAIRS", 3 * 100**2)  # blocks of 40 boxes for 3 classes
    got = detections_from_scores_tensor(t(boxes, device), t(scores, device), (320, 400), 0.3, 60)
    assert_same_detections(got, ref)


@pytest.mark.parametrize("device", DEVICES)
def test_empty_inputs(device):
    none = detections_from_scores_tensor(torch.zeros((0, 4), device=device), torch.zeros((0, 3), device=device),
                                         (10, 10))
    assert len(none) == 0 and none.boxes.shape == (0, 4)
    low = detections_from_scores_tensor(t(np.array([[0, 0, 5, 5]], np.float32), device),
                                        t(np.array([[-1.0]], np.float32), device), (10, 10), score_threshold=0.0)
    assert len(low) == 0
    cls, idx = batched_nms_topk(torch.zeros((2, 0, 4), device=device), torch.zeros((2, 0), device=device), 0.3, 5)
    assert len(cls) == len(idx) == 0


@pytest.mark.parametrize("device", DEVICES)
def test_box_regression_and_clipping_match_numpy(device):
    rng = np.random.default_rng(3)
    boxes = random_boxes(rng, 200)
    deltas = rng.normal(0, 0.3, (200, 4)).astype(np.float32)
    deltas[:3, 2:] = 50.0  # wild: capped at log(1000 / 16)
    got = apply_bbox_deltas_tensor(t(boxes, device), t(deltas, device)).cpu().numpy()
    np.testing.assert_allclose(got, apply_bbox_deltas(boxes, deltas), rtol=1e-6, atol=1e-4)
    np.testing.assert_array_equal(clip_boxes_tensor(t(got, device), 100, 150).cpu().numpy(), clip_boxes(got, 100, 150))


@pytest.mark.parametrize("device", DEVICES)
def test_classifiers_and_regressors_score_tensors_as_arrays(device):
    from detect.bbox_regression import BoxRegressor
    from detect.classifiers import LinearSVMClassifier, SoftmaxClassifier

    rng = np.random.default_rng(4)
    x = rng.normal(size=(50, 32)).astype(np.float32)
    svm = LinearSVMClassifier("fc7", rng.normal(size=(5, 32)).astype(np.float32),
                              rng.normal(size=5).astype(np.float32), 1.0)
    softmax = SoftmaxClassifier(rng.normal(size=(6, 32)).astype(np.float32), rng.normal(size=6).astype(np.float32))
    reg = BoxRegressor(weights=rng.normal(0, 0.01, (5, 32, 4)).astype(np.float32),
                       bias=rng.normal(0, 0.01, (5, 4)).astype(np.float32), feature_scale=0.5,
                       trained=np.ones(5, bool))
    for classifier in (svm, softmax):
        got = classifier.score_tensor(t(x, device))
        assert got.device.type == device and got.dtype == torch.float32
        np.testing.assert_allclose(got.cpu().numpy(), classifier.score(x), rtol=1e-5, atol=1e-5)
    got = reg.predict_all_classes_tensor(t(x, device))
    assert got.shape == (50, 5, 4)
    np.testing.assert_allclose(got.cpu().numpy(), reg.predict_all_classes(x), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="features must be"):
        svm.score_tensor(t(x[:, :10], device))


@pytest.mark.parametrize("device", DEVICES)
def test_detector_on_the_device_gives_the_host_detections(tiny_model, device):
    """The whole chain after the network on the device (only detections come back) against
    the numpy chain on the same model: the same detections, up to the float32 rounding of
    the scores' and regressions' matrix products."""
    from detect.detector_api import Detector
    from detect.stages import build_proposal_store, open_dataset

    _, model, _ = tiny_model
    on_device = Detector.load(model, device=device, postprocess="device")
    on_host = Detector(on_device.model, on_device.features, postprocess="host")
    assert Detector.load(model, device=device).postprocess_on == ("host" if device == "cpu" else "device")
    dataset = open_dataset(on_device.config, on_device.config.data.test_set)
    store = build_proposal_store(on_device.config, dataset, progress=False)
    total, matched = 0, 0
    for image_id in dataset.image_ids:
        image, boxes = dataset.load_image(image_id), store[image_id]
        got, seconds = on_device.detect_with_timings(image, boxes)
        ref, _ = on_host.detect_with_timings(image, boxes)
        assert {"conv", "pool", "fc", "svm", "bbox_reg", "nms"} <= set(seconds)
        np.testing.assert_array_equal(np.bincount(got.labels, minlength=len(on_host.classes)),
                                      np.bincount(ref.labels, minlength=len(on_host.classes)))
        # near-equal scores may swap places: each detection is matched to the host's of its
        # class with the nearest box (box within 0.01 px, score within 1e-4)
        matched += alike_detections(got, ref, box_tol=1e-2, score_tol=1e-4)[0]
        total += len(got)
    assert total > 0 and matched >= 0.99 * total
    # the scores before NMS too (Detector.score): computed there, only they come back
    image, boxes = dataset.load_image(dataset.image_ids[0]), store[dataset.image_ids[0]]
    got, ref = on_device.score(image, boxes), on_host.score(image, boxes)
    assert isinstance(got.scores, np.ndarray) and got.scores.shape == ref.scores.shape
    np.testing.assert_allclose(got.scores, ref.scores, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(got.class_boxes, ref.class_boxes, atol=1e-2)
    with pytest.raises(ValueError, match="postprocess"):
        Detector(on_device.model, on_device.features, postprocess="gpu")


# ------------------------------------------------------------------ mixed precision


@pytest.mark.parametrize("device", DEVICES)
def test_mixed_precision_features_are_near_the_float32_ones(device):
    from detect.config import NetworkConfig
    from detect.features import RCNNFeatures, SPPFeatures
    from detect.trunks import build_network

    trunk, head = build_network(NetworkConfig(trunk="compact", fc_dim=64, init_seed=0))
    rng = np.random.default_rng(5)
    img = rng.integers(0, 256, (120, 160, 3), dtype=np.uint8)
    boxes = random_boxes(rng, 40, side=100, min_size=16, max_size=60)
    precisions = ["bfloat16"] + (["float16"] if device == "cuda" else [])
    for make in (lambda p: SPPFeatures(trunk, head, scales=(100, 150), device=device, precision=p),
                 lambda p: RCNNFeatures(trunk, head, crop_size=32, context_pad=4, device=device, precision=p)):
        exact = make("float32").extract(img, boxes, ("fc7",))[0]["fc7"]
        for precision in precisions:
            mixed = make(precision).extract(img, boxes, ("fc7",))[0]["fc7"]
            assert mixed.dtype == np.float32 and mixed.shape == exact.shape
            assert not np.array_equal(mixed, exact)  # the layers did run in another precision
            assert np.abs(mixed - exact).mean() < 0.05 * np.abs(exact).mean()
    with pytest.raises(ValueError, match="precision"):
        SPPFeatures(trunk, head, precision="half")


def test_precision_is_a_checked_setting_keyed_where_it_matters(tmp_path):
    """features.precision changes the fc layers' outputs, so models and detections are keyed
    by it (keyed_settings' features section); the conv layers run in float32 whatever it
    is, so conv5 maps computed once serve every precision."""
    from detect.config import ConfigError, keyed_settings, load_config
    from detect.feature_sources import WindowFeatures

    from detect.config import RULES
    from detect.features import PRECISIONS

    assert tuple(RULES["features.precision"].values) == tuple(PRECISIONS)
    with pytest.raises(ConfigError, match="features.precision: unknown precision 'float64'"):
        load_config(None, ["features.precision=float64"])
    dirs = {}
    for precision in ("float32", "bfloat16"):
        cfg = load_config(None, ["network.trunk=compact", "network.weights=random", "network.fc_dim=64",
                                 f"features.precision={precision}"])
        assert keyed_settings(cfg)["features"]["precision"] == precision
        features = WindowFeatures.from_config(cfg, cache_root=str(tmp_path))
        dirs[precision] = features._conv_entries().directory
        img = np.random.default_rng(0).integers(0, 256, (90, 120, 3), dtype=np.uint8)
        maps = features.extractor.compute_maps(img)
        if precision == "float32":
            exact = maps
        else:
            for a, b in zip(maps.maps, exact.maps):
                assert torch.equal(a, b)
    assert dirs["float32"] == dirs["bfloat16"]


def test_where_the_layers_ran_keys_the_conv5_cache(tmp_path, monkeypatch):
    """layer_numerics: the CPU kernels' instruction set here, TF32 on a GPU; conv5 maps
    computed with others are never served (models and detections: tests/test_faults.py)."""
    import detect.features as features_module
    from detect.config import load_config
    from detect.feature_sources import WindowFeatures

    here = features_module.layer_numerics("cpu")
    assert here == {"device": "cpu", "cpu_kernels": str(torch.backends.cpu.get_cpu_capability())}
    cfg = load_config(None, ["network.trunk=compact", "network.weights=random", "network.fc_dim=64"])
    first = WindowFeatures.from_config(cfg, cache_root=str(tmp_path))._conv_entries().directory
    assert WindowFeatures.from_config(cfg, cache_root=str(tmp_path))._conv_entries().directory == first
    monkeypatch.setattr(features_module, "layer_numerics", lambda device: {**here, "cpu_kernels": "OTHER"})
    assert WindowFeatures.from_config(cfg, cache_root=str(tmp_path))._conv_entries().directory != first


def test_precision_bench_compares_the_device_and_host_post_processing(tiny_model):
    """bench/precision.py's agreement check, on the CPU: every detection alike."""
    import importlib.util
    import os

    from detect.detector_api import Detector
    from detect.stages import build_proposal_store, open_dataset
    from tooling import ROOT

    spec = importlib.util.spec_from_file_location("precision", os.path.join(ROOT, "bench", "precision.py"))
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    _, model, _ = tiny_model
    cfg = Detector.load(model).config
    dataset = open_dataset(cfg, cfg.data.test_set)
    store = build_proposal_store(cfg, dataset, progress=False)
    got = bench.host_device_agreement(model, ["features.device=cpu"], dataset, store, 2)
    assert got["images"] == 2 and got["detections"] > 0 and got["matched"] >= 0.99 * got["detections"]


def test_alike_detections_matches_each_to_its_nearest_twin():
    from detect.detector import Detections, alike_detections

    a = Detections(np.array([[0, 0, 10, 10], [20, 20, 30, 30], [5, 5, 9, 9]], np.float32),
                   np.array([0, 0, 1]), np.array([0.5, 0.5, 0.1], np.float32))
    b = Detections(a.boxes[[1, 0, 2]] + np.float32(0.001), a.labels[[1, 0, 2]], a.scores[[1, 0, 2]])
    count, box_diff, score_diff = alike_detections(a, b)
    assert count == 3 and 0 < box_diff < 0.01 and score_diff == 0  # order swapped: still twins
    moved = Detections(b.boxes + np.float32(1.0), b.labels, b.scores)
    assert alike_detections(a, moved)[0] == 0
    other_class = Detections(b.boxes, b.labels + 1, b.scores)
    assert alike_detections(a, other_class)[0] == 0
