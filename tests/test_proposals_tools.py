import json
import os

from tooling import run_tool


def settings(voc_root, tmp_path):
    # images segmented at 250 px (boxes mapped back) keep these runs to a few seconds
    return ["--set", f"data.root={voc_root}", f"cache_dir={tmp_path / 'cache'}", f"output_dir={tmp_path / 'out'}",
            "proposals.max_side=250"]


def test_eval_proposals_report(synthetic_voc, tmp_path, capsys):
    out = tmp_path / "report"
    rc = run_tool("eval_proposals", ["--backends", "rcnn_fast", "opencv_fast", "--num-images", "3",
                                     "--out", str(out)] + settings(synthetic_voc, tmp_path))
    assert rc == 0
    report = json.loads((out / "proposal_recall.json").read_text())
    assert [r["name"] for r in report["rows"]] == ["rcnn_fast", "opencv_fast"]
    for row in report["rows"]:
        assert row["images"] == 3 and row["objects"] > 0
        assert 0.5 < row["recall_0.5"] <= 1 and row["recall_0.7"] <= row["recall_0.5"]
        assert row["average_recall"] <= row["recall_0.5"] and row["seconds_per_image"] > 0
        assert 0.5 * row["recall_0.5"] <= row["average_best_overlap"] <= 1
    assert (out / "proposal_recall.png").stat().st_size > 10_000 and (out / "config.yaml").is_file()
    assert "rcnn_fast" in capsys.readouterr().out


def test_compute_proposals_tool_and_errors(synthetic_voc, tmp_path, capsys):
    args = ["--image-set", "test", "--num-images", "2", "--workers", "1"] + settings(synthetic_voc, tmp_path)
    assert run_tool("compute_proposals", args) == 0
    assert "test: 2 images" in capsys.readouterr().out
    assert len(os.listdir(tmp_path / "cache" / "proposals")) == 1
    # bad settings: one line on stderr and exit code 2, no traceback
    assert run_tool("compute_proposals", args + ["proposals.backend=magic"]) == 2
    assert run_tool("compute_proposals", args + ["proposals.backend=rcnn_mat"]) == 2
    err = capsys.readouterr().err
    assert "unknown backend 'magic'" in err and "needs proposals.mat_path" in err and "Traceback" not in err


def write_photo_set(root):
    """A VOC-layout set like voc-photos-dev: an image set file but no <class>_<set>.txt."""
    import cv2
    import numpy as np

    for sub in ("JPEGImages", "Annotations", "ImageSets/Main"):
        (root / sub).mkdir(parents=True)
    boxes = {"p1": (20, 10, 69, 49), "p2": (90, 60, 149, 109)}  # 1-based inclusive, as in the devkit
    for image_id, (x1, y1, x2, y2) in boxes.items():
        img = np.full((120, 160, 3), 128, np.uint8)
        img[y1 - 1:y2, x1 - 1:x2] = (30, 30, 220)
        cv2.imwrite(str(root / "JPEGImages" / f"{image_id}.jpg"), img)
        (root / "Annotations" / f"{image_id}.xml").write_text(
            f"<annotation><filename>{image_id}.jpg</filename><size><width>160</width><height>120</height>"
            f"<depth>3</depth></size><object><name>person</name><difficult>0</difficult><bndbox><xmin>{x1}</xmin>"
            f"<ymin>{y1}</ymin><xmax>{x2}</xmax><ymax>{y2}</ymax></bndbox></object></annotation>")
    (root / "ImageSets" / "Main" / "dev.txt").write_text("p1\np2\n")
    return root


def test_eval_proposals_on_a_voc_layout_photo_set(tmp_path, capsys):
    root = write_photo_set(tmp_path / "photos" / "VOC2007")
    args = ["--image-set", "dev", "--out", str(tmp_path / "report"), "--set", f"data.root={root}",
            f"cache_dir={tmp_path / 'cache'}", f"output_dir={tmp_path / 'out'}"]
    # no per-class files to infer the classes from: a one-line error naming the fix
    assert run_tool("eval_proposals", args) == 2
    assert "set data.classes" in capsys.readouterr().err
    assert run_tool("eval_proposals", args + ["--voc-classes"]) == 0
    row = json.loads((tmp_path / "report" / "proposal_recall.json").read_text())["rows"][0]
    assert row["images"] == 2 and row["objects"] == 2 and row["recall_0.7"] == 1.0
