"""COCO-json datasets (detect/coco.py) against VOC on the same images, the dataset
registry, the dataset interface's identity, and bad COCO input through the tools."""
import json
import logging
import os
import shutil

import cv2
import numpy as np
import pytest

from detect.coco import COCODataset
from sppcore.errors import DatasetError
from detect.voc import VOCDataset
from tooling import FAST_MODEL, run_tool

# category ids of the converted set: increasing with the VOC label, not contiguous, and
# listed in the json in reverse, so that labels must come from sorting the ids
CATEGORY_ID_STEP = 7


def voc_to_coco_layout(voc_root, out, image_sets=("trainval", "test")):
    """Write ``out/annotations/instances_<set>.json`` and ``out/<set>/<id>.jpg`` from a
    VOC-layout set: 1-based inclusive VOC corners -> COCO's 0-based ``[x, y, w, h]``
    (xmin - 1, ymin - 1, xmax - xmin + 1, ymax - ymin + 1), difficult -> iscrowd."""
    import xml.etree.ElementTree as ET

    os.makedirs(os.path.join(out, "annotations"), exist_ok=True)
    classes = VOCDataset(voc_root, image_sets[0]).classes
    categories = [{"id": CATEGORY_ID_STEP * (k + 1), "name": c, "supercategory": "shape"}
                  for k, c in enumerate(classes)][::-1]
    for image_set in image_sets:
        os.makedirs(os.path.join(out, image_set), exist_ok=True)
        with open(os.path.join(voc_root, "ImageSets", "Main", f"{image_set}.txt")) as f:
            ids = [line.split()[0] for line in f if line.strip()]
        images, annotations = [], []
        for n, image_id in enumerate(ids):
            shutil.copy(os.path.join(voc_root, "JPEGImages", f"{image_id}.jpg"),
                        os.path.join(out, image_set, f"{image_id}.jpg"))
            root = ET.parse(os.path.join(voc_root, "Annotations", f"{image_id}.xml")).getroot()
            size = root.find("size")
            images.append({"id": 100 + n, "file_name": f"{image_id}.jpg", "width": int(size.findtext("width")),
                           "height": int(size.findtext("height"))})
            for obj in root.findall("object"):
                b = obj.find("bndbox")
                x1, y1, x2, y2 = (float(b.findtext(t)) for t in ("xmin", "ymin", "xmax", "ymax"))
                w, h = x2 - x1 + 1, y2 - y1 + 1
                annotations.append({"id": len(annotations) + 1, "image_id": 100 + n,
                                    "category_id": CATEGORY_ID_STEP * (classes.index(obj.findtext("name")) + 1),
                                    "bbox": [x1 - 1, y1 - 1, w, h], "area": w * h,
                                    "iscrowd": int(obj.findtext("difficult") or 0)})
        with open(os.path.join(out, "annotations", f"instances_{image_set}.json"), "w") as f:
            json.dump({"images": images, "annotations": annotations, "categories": categories}, f)
    return out


@pytest.fixture(scope="module")
def voc_root(synthetic_voc, tmp_path_factory):
    """A copy of the tiny generated set whose first object in every third image is
    difficult (the generated set has none), so that difficult objects are compared too."""
    root = str(tmp_path_factory.mktemp("voc") / "VOC2007")
    shutil.copytree(synthetic_voc, root)
    annotations = os.path.join(root, "Annotations")
    for name in sorted(os.listdir(annotations))[::3]:
        path = os.path.join(annotations, name)
        with open(path) as f:
            xml = f.read()
        with open(path, "w") as f:
            f.write(xml.replace("<difficult>0</difficult>", "<difficult>1</difficult>", 1))
    return root


@pytest.fixture(scope="module")
def coco_root(voc_root, tmp_path_factory):
    return voc_to_coco_layout(voc_root, str(tmp_path_factory.mktemp("coco") / "shapes"))


def write_json(root, image_set, data, image_sizes=None):
    """A hand-written COCO set: the json and a grey image per ``(file_name, (h, w))``."""
    os.makedirs(os.path.join(root, "annotations"), exist_ok=True)
    for name, (h, w) in (image_sizes or {}).items():
        os.makedirs(os.path.join(root, image_set), exist_ok=True)
        cv2.imwrite(os.path.join(root, image_set, name), np.full((h, w, 3), 127, np.uint8))
    path = os.path.join(root, "annotations", f"instances_{image_set}.json")
    with open(path, "w") as f:
        f.write(data if isinstance(data, str) else json.dumps(data))
    return path


HAND = {
    "images": [{"id": 9, "file_name": "b.png", "width": 100, "height": 80},
               {"id": 2, "file_name": "a.png", "width": 100, "height": 80}],
    "categories": [{"id": 5, "name": "dog"}, {"id": 1, "name": "cat"}, {"id": 3, "name": "bird"}],
    "annotations": [
        {"id": 1, "image_id": 2, "category_id": 1, "bbox": [0, 0, 10, 20], "iscrowd": 0},
        {"id": 2, "image_id": 2, "category_id": 5, "bbox": [49.5, 39, 11, 41], "iscrowd": 1},
        {"id": 3, "image_id": 2, "category_id": 3, "bbox": [90, 70, 20, 20]},  # clipped to the image
        {"id": 4, "image_id": 2, "category_id": 1, "bbox": [30, 30, 0, 12]},  # no area: dropped
        {"id": 5, "image_id": 9, "category_id": 3, "bbox": [1, 2, 3, 4], "iscrowd": 0},
    ],
}


# ----------------------------------------------------------------------------- conversion


def test_hand_written_json_converts_to_the_internal_convention(tmp_path, caplog):
    root = str(tmp_path / "set")
    write_json(root, "train", HAND, {"a.png": (80, 100), "b.png": (80, 100)})
    with caplog.at_level(logging.WARNING):
        ds = COCODataset(root, "train")
    # categories by id: cat (1), bird (3), dog (5); images by id: a (2), b (9)
    assert ds.classes == ("cat", "bird", "dog") and ds.image_ids == ["a", "b"] and len(ds) == 2
    a = ds.annotation("a")
    # COCO [x, y, w, h] is already 0-based continuous: x2 = x + w, no pixel offset
    np.testing.assert_array_equal(a.boxes, np.array([[0, 0, 10, 20], [49.5, 39, 60.5, 80], [90, 70, 100, 80]],
                                                    np.float32))
    assert a.labels.tolist() == [0, 2, 1] and a.difficult.tolist() == [False, True, False]
    assert a.truncated.tolist() == [False] * 3 and (a.width, a.height) == (100, 80)
    assert a.boxes.dtype == np.float32 and a.labels.dtype == np.int64
    assert "1 boxes reaching outside their image clipped, 1 boxes with no area" in caplog.text
    assert ds.image_path("b") == os.path.join(root, "train", "b.png")
    assert ds.annotation_path("a") == ds.annotation_path("b") == os.path.join(root, "annotations",
                                                                              "instances_train.json")
    assert ds.load_image("a").shape == (80, 100, 3)
    boxes, labels, difficult = ds.gt_lists()
    assert [len(b) for b in boxes] == [3, 1] and labels[1].tolist() == [1]


def test_an_image_without_objects_has_empty_arrays(tmp_path):
    root = str(tmp_path / "set")
    data = dict(HAND, annotations=[])
    write_json(root, "train", data)
    a = COCODataset(root, "train").annotation("b")
    assert a.boxes.shape == (0, 4) and a.labels.shape == (0,) and a.difficult.shape == (0,)


def test_data_classes_choose_and_order_the_labels_and_count_the_others(tmp_path, caplog):
    from detect.config import load_config
    from detect.stages import open_dataset

    root = str(tmp_path / "set")
    write_json(root, "train", HAND)
    cfg = load_config(None, [f"data.root={root}", "data.format=coco", "data.classes=[dog, cat]"])
    with caplog.at_level(logging.INFO):
        ds = open_dataset(cfg, "train")
    assert ds.classes == ("dog", "cat")
    a = ds.annotation("a")
    assert a.labels.tolist() == [1, 0] and a.ignored_classes == ("bird",)
    assert "ignored 2 objects of 1 classes not in data.classes: bird (2)" in caplog.text
    # without ignore_other_classes an object of another category is an error naming the json
    with pytest.raises(DatasetError, match=r"instances_train\.json: annotation 3: category 'bird'"):
        COCODataset(root, "train", classes=("dog", "cat"))


def test_coco_yields_the_voc_ground_truth_of_the_same_images(voc_root, coco_root):
    for image_set in ("trainval", "test"):
        voc, coco = VOCDataset(voc_root, image_set), COCODataset(coco_root, image_set)
        assert coco.classes == voc.classes and coco.image_ids == voc.image_ids
        assert sum(int(voc.annotation(i).difficult.sum()) for i in voc.image_ids) > 0  # the case is exercised
        for image_id in voc.image_ids:
            a, b = voc.annotation(image_id), coco.annotation(image_id)
            np.testing.assert_array_equal(b.boxes, a.boxes)
            np.testing.assert_array_equal(b.labels, a.labels)
            np.testing.assert_array_equal(b.difficult, a.difficult)
            assert (b.width, b.height) == (a.width, a.height)
            np.testing.assert_array_equal(coco.load_image(image_id), voc.load_image(image_id))


def test_registry_and_config_rule_name_the_same_formats():
    from detect.config import RULES, ConfigError, load_config
    from detect.dataset import DetectionDataset
    from detect.datasets import DATASETS

    assert set(RULES["data.format"].values) == set(DATASETS) >= {"voc", "coco"}
    assert all(issubclass(cls, DetectionDataset) for cls in DATASETS.values())
    assert load_config(None, ["data.format=coco"]).data.format == "coco"
    assert load_config(None).data.format == "voc"
    with pytest.raises(ConfigError, match="data.format: unknown dataset format 'yolo'"):
        load_config(None, ["data.format=yolo"])


def test_subset_keeps_the_order_and_refuses_unknown_ids(coco_root):
    ds = COCODataset(coco_root, "test")
    sub = ds.subset(ds.image_ids[:3][::-1])
    assert sub.image_ids == ds.image_ids[:3][::-1] and len(ds) > 3
    assert len(sub.gt_lists()[0]) == 3
    with pytest.raises(DatasetError, match="'nope' is not in image set 'test'"):
        ds.subset(["nope"])


def test_identity_changes_with_the_json_and_with_an_image(coco_root, tmp_path):
    root = shutil.copytree(coco_root, tmp_path / "copy")
    identity = COCODataset(str(root), "test").identity()
    assert COCODataset(str(root), "test").identity() == identity
    path = root / "annotations" / "instances_test.json"
    data = json.loads(path.read_text())
    data["annotations"][0]["bbox"][0] += 1.0
    path.write_text(json.dumps(data))
    edited = COCODataset(str(root), "test").identity()
    assert [row[2] for row in edited] != [row[2] for row in identity]
    first = COCODataset(str(root), "test").image_ids[0]
    image = root / "test" / f"{first}.jpg"
    cv2.imwrite(str(image), 255 - cv2.imread(str(image)))
    assert COCODataset(str(root), "test").identity()[0][1] != edited[0][1]
    image.unlink()
    with pytest.raises(DatasetError, match=rf"{first}\.jpg: image file not found"):
        COCODataset(str(root), "test").identity()


# ----------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("data, fragment", [
    (None, "instances_train.json: annotation file not found"),
    ("{not json", "instances_train.json: not valid json"),
    ("[1, 2]", "instances_train.json: not a COCO instances json"),
    ({"categories": HAND["categories"], "annotations": []}, "instances_train.json: no images"),
    ({"images": HAND["images"], "annotations": [], "categories": []}, "instances_train.json: no categories"),
    (dict(HAND, images=[{"id": 2, "file_name": "a.png"}]), "image 2 (a.png): width and height"),
    (dict(HAND, images=[{"id": 2, "file_name": "../a.png", "width": 9, "height": 9}]), "not a relative path"),
    (dict(HAND, annotations=[{"id": 7, "image_id": 2, "category_id": 4, "bbox": [0, 0, 1, 1]}]),
     "annotation 7: category_id 4 names no category"),
    (dict(HAND, annotations=[{"id": 7, "image_id": 2, "category_id": 1, "bbox": [0, 0, "nan", 1]}]),
     "annotation 7: bbox"),
    (dict(HAND, categories=[{"id": 1, "name": "cat"}, {"id": 2, "name": "cat"}]), "appears twice"),
])
def test_bad_json_is_a_one_line_error_naming_the_file(tmp_path, capsys, data, fragment):
    root = str(tmp_path / "set")
    if data is None:
        os.makedirs(root)
    else:
        write_json(root, "train", data)
    rc = run_tool("compute_proposals", ["--set", f"data.root={root}", "data.format=coco", "data.train_set=train",
                                        f"cache_dir={tmp_path / 'cache'}", "--image-set", "train"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "Traceback" not in err[0], err
    assert fragment in err[0] and "instances_train.json" in err[0], err[0]


def test_unknown_category_in_data_classes_and_missing_image_are_one_line_errors(coco_root, tmp_path, capsys):
    base = ["--set", f"data.root={coco_root}", "data.format=coco", f"cache_dir={tmp_path / 'cache'}",
            f"output_dir={tmp_path / 'out'}", "network.fc_dim=64", "network.weights=random"]
    assert run_tool("train_svm", base + ["data.classes=[star, unicorn]", "--out", str(tmp_path / "m")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "instances_trainval.json: data.classes names 'unicorn'" in err[0], err
    root = shutil.copytree(coco_root, tmp_path / "copy")
    missing = sorted(os.listdir(root / "trainval"))[0]
    os.remove(root / "trainval" / missing)
    assert run_tool("train_svm", ["--set", f"data.root={root}", *base[2:], "--out", str(tmp_path / "m")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"{missing}: image file not found" in err[0], err


# ----------------------------------------------------------------------------- end to end


def train_and_test_both_formats(voc_root, coco_root, tmp_path, num_train=None, num_test=None):
    """results.json of test_net by each metric, for a model trained on each format."""
    fast = FAST_MODEL
    limit_train = ["--num-images", str(num_train)] if num_train else []
    limit_test = ["--num-images", str(num_test)] if num_test else []
    results = {}
    for fmt, root in (("voc", voc_root), ("coco", coco_root)):
        out = tmp_path / fmt
        overrides = [f"data.root={root}", f"data.format={fmt}", f"cache_dir={tmp_path / 'cache'}",
                     f"output_dir={out}", *fast]
        argv = ["--set", *overrides, "--out", str(out / "model"), "--quiet", *limit_train]
        assert run_tool("train_svm", argv) == 0
        for metric in ("voc07", "coco"):
            test_dir = out / f"test_{metric}"
            assert run_tool("test_net", ["--model", str(out / "model"), "--out", str(test_dir), "--quiet",
                                         "--set", f"test.metric={metric}", *limit_test]) == 0
            with open(test_dir / "results.json") as f:
                results[fmt, metric] = json.load(f)
    return results


def assert_same_results(results):
    for metric in ("voc07", "coco"):
        voc, coco = results["voc", metric], results["coco", metric]
        assert coco["metric"] == voc["metric"] == metric and coco["num_images"] == voc["num_images"]
        assert coco["map"] == pytest.approx(voc["map"], abs=1e-9) and voc["map"] > 0
        assert coco["ap_per_class"].keys() == voc["ap_per_class"].keys()
        for name, ap in voc["ap_per_class"].items():
            assert coco["ap_per_class"][name] == pytest.approx(ap, abs=1e-9, nan_ok=True)
    assert "ap50" in results["coco", "coco"]


def test_train_and_test_on_coco_give_the_voc_results(voc_root, coco_root, tmp_path):
    assert_same_results(train_and_test_both_formats(voc_root, coco_root, tmp_path, num_train=4, num_test=3))


@pytest.mark.slow
def test_train_and_test_on_every_image_of_coco_give_the_voc_results(voc_root, coco_root, tmp_path):
    assert_same_results(train_and_test_both_formats(voc_root, coco_root, tmp_path))


@pytest.mark.slow
def test_an_edited_json_retrains_from_fresh_positives(coco_root, tmp_path, capsys):
    root = shutil.copytree(coco_root, tmp_path / "copy")
    model = str(tmp_path / "model")
    argv = ["--set", f"data.root={root}", "data.format=coco", f"cache_dir={tmp_path / 'cache'}",
            f"output_dir={tmp_path / 'out'}", *FAST_MODEL, "--out", model, "--quiet", "--num-images", "4"]
    assert run_tool("train_svm", argv) == 0
    with open(os.path.join(model, "train_report.json")) as f:
        before = json.load(f)["num_positives"]
    assert run_tool("train_svm", argv) == 0 and "up to date" in capsys.readouterr().err
    path = root / "annotations" / "instances_trainval.json"
    data = json.loads(path.read_text())
    first = min(img["id"] for img in data["images"])
    drop = next(a for a in data["annotations"] if a["image_id"] == first and not a["iscrowd"])
    data["annotations"].remove(drop)
    path.write_text(json.dumps(data))
    assert run_tool("train_svm", argv) == 0
    assert "up to date" not in capsys.readouterr().err
    with open(os.path.join(model, "train_report.json")) as f:
        assert json.load(f)["num_positives"] == before - 1
