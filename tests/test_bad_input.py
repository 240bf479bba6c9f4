"""Bad settings and bad dataset files through the tools: exit code 2 and one line on stderr
naming the key or the file, never a traceback."""
import os
import shutil

import cv2
import numpy as np
import pytest

from tooling import load_tool


def run_tool(name, argv, capsys):
    """(exit code, stderr lines) of ``tools/<name>.py main(argv)``."""
    module = load_tool(name)
    capsys.readouterr()
    rc = module.main(argv)
    return rc, capsys.readouterr().err.splitlines()


def assert_one_line_error(rc, err, *fragments):
    assert rc == 2, err
    assert len(err) == 1, err
    assert "Traceback" not in err[0] and "error:" in err[0]
    for fragment in fragments:
        assert fragment in err[0], err[0]


# ----------------------------------------------------------------------------- settings


@pytest.mark.parametrize("override, fragments", [
    ("bbox_reg.ridge_lambda=nan", ["bbox_reg.ridge_lambda: nan", "positive finite"]),
    ("svm.hard_threshold=nan", ["svm.hard_threshold: nan", "finite"]),
    ("features.scales=[-300]", ["features.scales[0]: -300 is not allowed (a positive integer)"]),
    ("features.scales=[]", ["features.scales: []", "non-empty"]),
    ("features.max_side=0", ["features.max_side: 0", "positive integer"]),
    ("features.batch_size=0", ["features.batch_size: 0", "positive integer"]),
    ("test.nms_iou=nan", ["test.nms_iou: nan", "[0, 1]"]),
    ("test.max_per_class=-1", ["test.max_per_class: -1", "positive integer"]),
    ("features.method=sift", ["features.method", "'sift'", "spp, rcnn"]),
    ("features.device=gpu0", ["features.device", "cuda:N"]),
    ("finetune.bg_iou_low=0.7", ["finetune.bg_iou_low: 0.7", "finetune.fg_iou"]),
    ("pretrain.image_scales=[448,256]", ["pretrain.image_scales", "increasing"]),
    ("data.train_set=../../etc/x", ["data.train_set", "plain name"]),
])
def test_bad_setting_fails_before_any_data(override, fragments, tmp_path, capsys):
    # the data root does not exist: a setting that passed would fail there, naming the root
    base = ["--set", f"data.root={tmp_path / 'missing'}", f"cache_dir={tmp_path / 'cache'}",
            f"output_dir={tmp_path / 'out'}"]
    rc, err = run_tool("train_svm", base + [override, "--out", str(tmp_path / "model")], capsys)
    assert_one_line_error(rc, err, *fragments)
    assert not (tmp_path / "model").exists() and not (tmp_path / "cache").exists()


def test_bad_setting_in_a_config_file_names_the_file(tmp_path, capsys):
    path = tmp_path / "exp.yaml"
    path.write_text("test:\n  nms_iou: 1.5\n")
    rc, err = run_tool("compute_proposals", ["--config", str(path)], capsys)
    assert_one_line_error(rc, err, "exp.yaml", "test.nms_iou: 1.5 is not allowed (a number in [0, 1])")


# ----------------------------------------------------------------------------- dataset files


@pytest.fixture
def voc_copy(synthetic_voc, tmp_path):
    """A writable copy of the tiny generated dataset, test set cut to two images."""
    root = tmp_path / "VOC2007"
    shutil.copytree(synthetic_voc, root)
    test_ids = (root / "ImageSets/Main/test.txt").read_text().split()[:2]
    (root / "ImageSets/Main/test.txt").write_text("\n".join(test_ids) + "\n")
    return root, test_ids


def proposals_args(root, tmp_path):
    return ["--image-set", "test", "--workers", "1", "--set", f"data.root={root}",
            f"cache_dir={tmp_path / 'cache'}", "proposals.backend=opencv_fast", "proposals.max_side=200"]


@pytest.mark.parametrize("bad_id", ["../../escaped", "/abs/escaped", "sub\\escaped", ".."])
def test_image_id_with_a_path_is_refused(voc_copy, tmp_path, capsys, bad_id):
    root, ids = voc_copy
    (root / "ImageSets/Main/test.txt").write_text(f"{ids[0]}\n{bad_id}\n")
    rc, err = run_tool("compute_proposals", proposals_args(root, tmp_path), capsys)
    assert_one_line_error(rc, err, "test.txt:2", repr(bad_id), "plain file name")
    assert not (tmp_path / "cache").exists() and not (tmp_path / "escaped.npz").exists()


def test_empty_image_set_is_refused(voc_copy, tmp_path, capsys):
    root, _ = voc_copy
    (root / "ImageSets/Main/test.txt").write_text("\n  \n")
    rc, err = run_tool("compute_proposals", proposals_args(root, tmp_path), capsys)
    assert_one_line_error(rc, err, "test.txt", "lists no image ids")


@pytest.mark.parametrize("field, value", [("size/width", "nan"), ("bndbox/xmax", "inf"), ("bndbox/ymin", "-Infinity")])
def test_non_finite_annotation_number_is_refused(voc_copy, tmp_path, capsys, field, value):
    import re

    root, ids = voc_copy
    xml_path = root / "Annotations" / f"{ids[1]}.xml"
    tag = field.split("/")[1]
    xml, n = re.subn(f"<{tag}>[^<]*</{tag}>", f"<{tag}>{value}</{tag}>", xml_path.read_text(), count=1)
    assert n == 1
    xml_path.write_text(xml)
    rc, err = run_tool("compute_proposals", proposals_args(root, tmp_path), capsys)
    assert_one_line_error(rc, err, f"{ids[1]}.xml", tag, "not a finite number")
    assert not (tmp_path / "cache").exists()  # refused before any proposal was computed


def test_float_tiff_images(voc_copy, tmp_path, capsys):
    root, ids = voc_copy
    jpg = root / "JPEGImages" / f"{ids[0]}.jpg"
    image = cv2.imread(str(jpg))
    os.remove(jpg)
    tiff = root / "JPEGImages" / f"{ids[0]}.tif"
    # values in [0, 1]: read as x 255
    assert cv2.imwrite(str(tiff), image.astype(np.float32) / 255.0)
    rc, err = run_tool("compute_proposals", proposals_args(root, tmp_path), capsys)
    assert rc == 0 and not any("Traceback" in line for line in err)
    # values outside [0, 1]: refused, naming the file (after the progress bar and log lines)
    assert cv2.imwrite(str(tiff), image.astype(np.float32))
    rc, err = run_tool("compute_proposals", proposals_args(root, tmp_path), capsys)
    errors = [line for line in err if "error:" in line]
    assert rc == 2 and len(errors) == 1 and not any("Traceback" in line for line in err)
    assert f"{ids[0]}.tif" in errors[0] and "[0, 1]" in errors[0]
