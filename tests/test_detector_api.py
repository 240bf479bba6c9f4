"""Detector: the user-facing object around a trained model, and the evaluation metrics
test_net and reval report, on a model trained here on the tiny generated dataset."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from sppcore.errors import UserError
from tooling import ROOT, TOOLS, load_tool, run_tool


@pytest.fixture(scope="module")
def trained(tiny_model):
    """The session's cheap model (random fc7 of width 64, 1 scale), and its test run on the 6
    test images."""
    out, model, _ = tiny_model
    test_dir = str(out / "test_detector_api")
    assert run_tool("test_net", ["--model", model, "--out", test_dir, "--quiet"]) == 0
    return out, model, test_dir


@pytest.fixture(scope="module")
def detector(trained):
    from detect.detector_api import Detector

    return Detector.load(trained[1])


@pytest.fixture(scope="module")
def test_images(detector):
    """(dataset, proposal store) of the test set, as test_net opened them."""
    from detect.stages import build_proposal_store, open_dataset

    dataset = open_dataset(detector.config, detector.config.data.test_set)
    return dataset, build_proposal_store(detector.config, dataset, progress=False)


def saved_detections(test_dir):
    from detect.detector import split_detections
    from sppcore.fileio import load_npz

    arrays = load_npz(os.path.join(test_dir, "detections.npz"))
    ids = [str(i) for i in arrays["image_ids"]]
    return dict(zip(ids, split_detections(arrays, len(ids))))


def test_detector_gives_exactly_the_detections_of_test_net_and_detect_image(trained, detector, test_images):
    from detect.testing import detect_image

    dataset, store = test_images
    saved = saved_detections(trained[2])
    assert list(saved) == list(dataset.image_ids)
    total = 0
    for image_id in dataset.image_ids:
        image, boxes = dataset.load_image(image_id), store[image_id]
        out = detector(image, proposals=boxes)
        ref, _ = detect_image(detector.model, detector.features.extract, image, boxes)
        for got in (saved[image_id], ref):
            np.testing.assert_array_equal(out["boxes"], got.boxes)
            np.testing.assert_array_equal(out["labels"], got.labels)
            np.testing.assert_array_equal(out["scores"], got.scores)
        total += len(out["scores"])
    assert total > 0


def test_output_types_shapes_and_zero_proposals(detector, test_images):
    dataset, store = test_images
    image_id = dataset.image_ids[0]
    image = dataset.load_image(image_id)
    out = detector(image, proposals=store[image_id])
    assert set(out) == {"boxes", "labels", "scores"}
    n = len(out["scores"])
    assert n > 0
    assert out["boxes"].dtype == np.float32 and out["boxes"].shape == (n, 4)
    assert out["labels"].dtype == np.int64 and out["labels"].shape == (n,)
    assert out["scores"].dtype == np.float32 and out["scores"].shape == (n,)
    assert 0 <= out["labels"].min() and out["labels"].max() < len(detector.classes)
    h, w = image.shape[:2]
    b = out["boxes"]
    assert (b[:, 0] >= 0).all() and (b[:, 1] >= 0).all() and (b[:, 2] <= w).all() and (b[:, 3] <= h).all()
    assert (b[:, 2] >= b[:, 0]).all() and (b[:, 3] >= b[:, 1]).all()
    # at most max_per_class per class
    assert np.bincount(out["labels"]).max() <= detector.config.test.max_per_class
    for empty in (np.zeros((0, 4), np.float32), []):
        none = detector(image, proposals=empty)
        assert none["boxes"].shape == (0, 4) and none["boxes"].dtype == np.float32
        assert none["labels"].shape == (0,) and none["labels"].dtype == np.int64
        assert none["scores"].shape == (0,) and none["scores"].dtype == np.float32


def test_list_and_path_inputs(detector, test_images):
    dataset, store = test_images
    ids = dataset.image_ids[:2]
    images = [dataset.load_image(i) for i in ids]
    props = [store[i] for i in ids]
    outs = detector(images, proposals=props)
    assert isinstance(outs, list) and len(outs) == 2
    mixed = detector([dataset.image_path(ids[0]), images[1]], proposals=props)
    for out, again, image, boxes in zip(outs, mixed, images, props):
        one = detector(image, proposals=boxes)
        for key in ("boxes", "labels", "scores"):
            np.testing.assert_array_equal(out[key], one[key])
            np.testing.assert_array_equal(again[key], one[key])
    assert detector([]) == []
    with pytest.raises(UserError, match="2 images"):
        detector(images, proposals=props[:1])


def test_selective_search_when_no_proposals_are_given(detector, test_images):
    from proposals import compute_proposals

    dataset, _ = test_images
    path = dataset.image_path(dataset.image_ids[1])
    image = dataset.load_image(dataset.image_ids[1])
    out = detector(path)
    ref = detector(image, proposals=compute_proposals(image, detector.config.proposals))
    for key in ("boxes", "labels", "scores"):
        np.testing.assert_array_equal(out[key], ref[key])
    det, timings = detector.detect_with_timings(image)
    assert timings["proposals"] > 0 and {"conv", "pool", "fc", "svm", "nms", "bbox_reg"} <= set(timings)


def test_score_and_postprocess_give_detections_with_and_without_regression(detector, test_images):
    dataset, store = test_images
    image_id = dataset.image_ids[0]
    image, boxes = dataset.load_image(image_id), store[image_id]
    scored = detector.score(image, boxes)
    k = len(detector.classes)
    assert scored.scores.shape == (len(boxes), k) and scored.class_boxes.shape == (len(boxes), k, 4)
    regressed, _ = detector.postprocess(scored)
    plain, _ = detector.postprocess(scored, regress=False)
    np.testing.assert_array_equal(regressed["boxes"], detector(image, proposals=boxes)["boxes"])
    # without regression every box is one of the (clipped) proposals
    assert all((np.abs(boxes - b).max(axis=1) < 1e-4).any() for b in plain["boxes"])
    assert not np.array_equal(plain["boxes"], regressed["boxes"])


def test_bad_inputs_are_user_errors(detector):
    with pytest.raises(UserError, match="RGB uint8"):
        detector(np.zeros((20, 20), np.uint8), proposals=np.zeros((0, 4)))
    with pytest.raises(UserError, match="RGB uint8"):
        detector(np.zeros((20, 20, 3), np.float32), proposals=np.zeros((0, 4)))
    with pytest.raises(UserError, match=r"\[M, 4\]"):
        detector(np.zeros((20, 20, 3), np.uint8), proposals=np.zeros((3, 5)))
    with pytest.raises(UserError, match="not found"):
        detector("/nonexistent/image.jpg")


def test_load_refuses_a_model_with_other_settings(trained):
    from detect.detector_api import Detector

    for override in ("network.levels=[4,2,1]", "features.levels=[4,2,1]"):  # the setting's earlier name too
        with pytest.raises(UserError, match=r"network\.levels=\[4, 2, 1\] differs from the trained \[6, 3, 2, 1\]"):
            Detector.load(trained[1], overrides=[override])
    detector = Detector.load(trained[1], overrides=["test.nms_iou=0.5"])
    assert detector.config.test.nms_iou == 0.5 and detector.config.features.device == "cpu"
    assert "Detector(" in repr(detector)


def test_importing_detect_stays_light():
    code = "import sys, detect; d = detect.Detector; print('torch' in sys.modules, d.__name__)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "Detector"]


def test_table9_scores_through_the_detector(trained):
    import importlib.util

    root = os.path.dirname(TOOLS)
    spec = importlib.util.spec_from_file_location("table9", os.path.join(root, "bench", "table9.py"))
    table9 = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(table9)
    _, model, test_dir = trained
    plain, regressed, seconds = table9.evaluate_with_and_without_regression(model, None, [], progress=False)
    with open(os.path.join(test_dir, "results.json")) as f:
        assert regressed == json.load(f)["map"]  # the same detections as test_net's
    assert plain != regressed and seconds["total_excluding_proposals"] > 0


@pytest.mark.parametrize("script", sorted(f[:-3] for f in os.listdir(os.path.join(os.path.dirname(TOOLS), "bench"))
                                           if f.endswith(".py")))
def test_bench_scripts_run_without_path_edits(script):
    root = os.path.dirname(TOOLS)
    path = os.path.join(root, "bench", f"{script}.py")
    with open(path) as f:
        assert "sys.path" not in f.read()
    for argv in ([path], ["-m", f"bench.{script}"]):  # as a script and as a module
        out = subprocess.run([sys.executable, *argv, "--help"], cwd=root, capture_output=True, text=True)
        assert out.returncode == 0 and "usage" in out.stdout, out.stderr


# ---------------------------------------------------------------------------- metrics


def test_metric_registry_matches_the_config_rule():
    from detect.config import RULES
    from detect.evaluation import METRICS

    assert set(RULES["test.metric"].values) == set(METRICS)
    assert set(load_tool("reval").METRIC_CHOICES) == set(METRICS)


def test_reval_reproduces_test_net_and_scores_other_metrics(trained, capsys):
    from detect.coco_eval import eval_detection_coco
    from detect.evaluation import eval_detection_voc
    from detect.stages import open_dataset
    from detect.config import load_config

    _, _, test_dir = trained
    with open(os.path.join(test_dir, "results.json")) as f:
        results = json.load(f)
    assert results["metric"] == "voc07"
    capsys.readouterr()
    assert run_tool("reval", [test_dir]) == 0  # the run's own metric
    assert "mAP (VOC07 11-point)" in capsys.readouterr().out
    with open(os.path.join(test_dir, "reval_voc07.json")) as f:
        again = json.load(f)
    assert again["map"] == results["map"] and again["ap_per_class"] == results["ap_per_class"]

    # the other metrics, against the evaluators called directly on the saved detections
    cfg = load_config(os.path.join(test_dir, "config.yaml"))
    dataset = open_dataset(cfg, cfg.data.test_set)
    dets = list(saved_detections(test_dir).values())
    pred = ([d.boxes for d in dets], [d.labels for d in dets], [d.scores for d in dets])
    gt = dataset.gt_lists()
    area = eval_detection_voc(*pred, *gt, use_07_metric=False, num_classes=len(dataset.classes))
    coco = eval_detection_coco(*pred, *gt, classes=dataset.classes)
    assert run_tool("reval", [test_dir, "--metric", "voc_area"]) == 0
    assert run_tool("reval", [test_dir, "--metric", "coco"]) == 0
    with open(os.path.join(test_dir, "reval_voc_area.json")) as f:
        voc_area = json.load(f)
    with open(os.path.join(test_dir, "reval_coco.json")) as f:
        coco_json = json.load(f)
    assert voc_area["metric"] == "voc_area" and voc_area["map"] == pytest.approx(area["map"], abs=1e-12)
    assert coco_json["metric"] == "coco" and coco_json["map"] == pytest.approx(coco["ap"], abs=1e-12)
    assert coco_json["ap50"] == pytest.approx(coco["ap50"], abs=1e-12)
    # AP over IoU 0.5:0.95 is below AP at 0.5; the metrics differ on these detections
    assert 0 < coco_json["map"] < coco_json["ap50"] <= 1
    assert voc_area["map"] != results["map"]


def test_reval_of_a_directory_without_detections_is_exit_2(tmp_path, capsys):
    assert run_tool("reval", [str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "detections.npz" in err and len(err.strip().splitlines()) == 1


def test_test_net_with_coco_metric_reuses_the_detections(trained, capsys):
    _, model, test_dir = trained
    entries = os.path.join(test_dir, "detections")
    before = {n: os.stat(os.path.join(entries, n)).st_mtime_ns for n in os.listdir(entries)}
    assert run_tool("test_net", ["--model", model, "--out", test_dir, "--quiet", "--set", "test.metric=coco"]) == 0
    assert "mAP@[.5:.95] (COCO)" in capsys.readouterr().out
    after = {n: os.stat(os.path.join(entries, n)).st_mtime_ns for n in os.listdir(entries)}
    assert after == before  # the metric is not part of the detections' key
    with open(os.path.join(test_dir, "results.json")) as f:
        results = json.load(f)
    assert results["metric"] == "coco" and {"ap50", "ap75"} <= set(results)
    assert run_tool("reval", [test_dir, "--metric", "coco"]) == 0
    with open(os.path.join(test_dir, "reval_coco.json")) as f:
        assert json.load(f)["map"] == results["map"]
    assert not os.path.exists(os.path.join(test_dir, "pr_curves.png"))
