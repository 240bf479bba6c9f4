import hashlib
import json
import os

import numpy as np
import pytest

from detect.synthetic import SYNTHETIC_CLASSES, dataset_statistics, generate_synthetic_voc, render_image
from detect.voc import VOCDataset
from sppcore.errors import DatasetError


def digest(root):
    h = hashlib.sha256()
    for dirpath, _, files in sorted(os.walk(root)):
        for name in sorted(files):
            with open(os.path.join(dirpath, name), "rb") as f:
                h.update(name.encode() + f.read())
    return h.hexdigest()


def test_deterministic_for_a_seed(tmp_path, synthetic_voc):
    again = generate_synthetic_voc(str(tmp_path / "a"), seed=0, num_trainval=10, num_test=6, progress=False)
    assert digest(again) == digest(synthetic_voc)
    other = generate_synthetic_voc(str(tmp_path / "b"), seed=1, num_trainval=10, num_test=6, progress=False)
    assert digest(other) != digest(synthetic_voc)
    # drawn by two processes: the same files
    two = generate_synthetic_voc(str(tmp_path / "c"), seed=0, num_trainval=10, num_test=6, progress=False, workers=2)
    assert digest(two) == digest(synthetic_voc)


def test_layout_complete_and_readable(synthetic_voc):
    main = os.path.join(synthetic_voc, "ImageSets", "Main")
    for s in ("train", "val", "trainval", "test"):
        assert os.path.isfile(os.path.join(main, f"{s}.txt"))
        for c in SYNTHETIC_CLASSES:
            assert os.path.isfile(os.path.join(main, f"{c}_{s}.txt"))
    tv = VOCDataset(synthetic_voc, "trainval")
    te = VOCDataset(synthetic_voc, "test")
    assert tv.classes == SYNTHETIC_CLASSES
    assert len(tv) == 10 and len(te) == 6 and not set(tv.image_ids) & set(te.image_ids)
    assert sorted(VOCDataset(synthetic_voc, "train").image_ids + VOCDataset(synthetic_voc, "val").image_ids) == sorted(tv.image_ids)
    for i in tv.image_ids + te.image_ids:
        ds = tv if i in tv.image_ids else te
        a = ds.annotation(i)
        img = ds.load_image(i)
        assert img.shape == (a.height, a.width, 3)
        assert 300 <= a.width <= 500 and 300 <= a.height <= 500
        assert 1 <= len(a.labels) <= 8
        assert (a.boxes[:, 2] > a.boxes[:, 0]).all() and (a.boxes[:, 3] > a.boxes[:, 1]).all()
        assert (a.boxes >= 0).all() and (a.boxes[:, 2] <= a.width).all() and (a.boxes[:, 3] <= a.height).all()


def test_per_class_files_match_annotations(synthetic_voc):
    ds = VOCDataset(synthetic_voc, "test")
    for k, c in enumerate(ds.classes):
        with open(os.path.join(synthetic_voc, "ImageSets", "Main", f"{c}_test.txt")) as f:
            rows = dict((line.split()[0], int(line.split()[1])) for line in f)
        assert list(rows) == ds.image_ids
        for i in ds.image_ids:
            a = ds.annotation(i)
            mine = a.labels == k
            expected = 1 if (mine & ~a.difficult).any() else (0 if mine.any() else -1)
            assert rows[i] == expected


def test_statistics_span_the_requested_ranges():
    # 60 images straight from the renderer: no disk needed
    objects = []
    for i in range(60):
        _, objs = render_image(np.random.default_rng((7, 0, i)))
        assert 1 <= len(objs) <= 8
        objects += objs
    sides = np.array([max(o["box"][2] - o["box"][0], o["box"][3] - o["box"][1]) for o in objects])
    labels = {o["label"] for o in objects}
    assert len(labels) == len(SYNTHETIC_CLASSES)
    assert sides.min() < 30 and sides.max() > 200  # small to most of the image
    assert any(o["difficult"] for o in objects) and not all(o["difficult"] for o in objects)
    assert any(o["truncated"] for o in objects)
    assert any(o["visible_fraction"] < 0.9 for o in objects if not o["truncated"])  # occlusion


def test_statistics_report(synthetic_voc):
    s = dataset_statistics(synthetic_voc, "trainval")
    assert s["images"] == 10 and s["objects"] == sum(s["per_class"].values())
    assert 1 <= s["objects_per_image"]["min"] <= s["objects_per_image"]["max"] <= 8
    assert 0 <= s["difficult_fraction"] <= 1


def test_manifest_skip_and_regenerate(tmp_path):
    root = generate_synthetic_voc(str(tmp_path), seed=3, num_trainval=2, num_test=1, progress=False)
    marker = os.path.join(root, "JPEGImages", "marker")
    open(marker, "w").close()
    assert generate_synthetic_voc(str(tmp_path), seed=3, num_trainval=2, num_test=1, progress=False) == root
    assert os.path.exists(marker)  # same settings: nothing done
    generate_synthetic_voc(str(tmp_path), seed=3, num_trainval=3, num_test=1, progress=False)
    assert not os.path.exists(marker)
    with open(os.path.join(root, "manifest.json")) as f:
        assert json.load(f)["num_trainval"] == 3
    assert not [d for d in os.listdir(tmp_path) if d.startswith(".VOC2007.tmp")]


def test_refuses_to_overwrite_foreign_data(tmp_path):
    os.makedirs(tmp_path / "VOC2007" / "JPEGImages")
    with pytest.raises(DatasetError, match="not written by the generator"):
        generate_synthetic_voc(str(tmp_path), seed=0, num_trainval=1, num_test=1, progress=False)
