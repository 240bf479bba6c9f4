import logging
import os

import cv2
import numpy as np
import pytest

from detect.voc import VOC_CLASSES, VOCDataset, infer_classes, parse_voc_xml, read_image_set
from sppcore.errors import DatasetError
from sppcore.images import load_image

XML = """<annotation>
  <filename>000001.jpg</filename>
  <size><width>100</width><height>80</height><depth>3</depth></size>
  <object><name>{a}</name><truncated>1</truncated><difficult>0</difficult>
    <bndbox><xmin>1</xmin><ymin>1</ymin><xmax>10</xmax><ymax>20</ymax></bndbox></object>
  <object><name>dog</name><difficult>1</difficult>
    <bndbox><xmin>50</xmin><ymin>40</ymin><xmax>{xmax}</xmax><ymax>80</ymax></bndbox></object>
</annotation>
"""


def make_voc(tmp_path, xml=None, image=True):
    root = tmp_path / "VOC2007"
    for sub in ("JPEGImages", "Annotations", "ImageSets/Main"):
        (root / sub).mkdir(parents=True)
    (root / "ImageSets/Main/trainval.txt").write_text("000001\n")
    for c in ("cat", "dog"):
        (root / f"ImageSets/Main/{c}_trainval.txt").write_text("000001  1\n")
    (root / "Annotations/000001.xml").write_text(xml or XML.format(a="cat", xmax=60))
    if image:
        cv2.imwrite(str(root / "JPEGImages/000001.jpg"), np.full((80, 100, 3), 127, np.uint8))
    return str(root)


def test_parse_hand_written_xml(tmp_path):
    root = make_voc(tmp_path)
    ds = VOCDataset(root, "trainval")
    assert ds.classes == ("cat", "dog") and len(ds) == 1
    a = ds.annotation("000001")
    # VOC 1-based inclusive (1, 1, 10, 20) -> internal (0, 0, 10, 20)
    np.testing.assert_array_equal(a.boxes, [[0, 0, 10, 20], [49, 39, 60, 80]])
    assert a.labels.tolist() == [0, 1]
    assert a.difficult.tolist() == [False, True]
    assert a.truncated.tolist() == [True, False]  # absent flag means 0
    assert (a.width, a.height) == (100, 80)
    img = ds.load_image("000001")
    assert img.shape == (80, 100, 3) and img.dtype == np.uint8
    boxes, labels, difficult = ds.gt_lists()
    assert len(boxes) == 1 and boxes[0].shape == (2, 4)


def test_voc_classes_are_the_devkit_order():
    assert len(VOC_CLASSES) == 20 and list(VOC_CLASSES) == sorted(VOC_CLASSES)


def test_missing_directory_and_image_set(tmp_path):
    with pytest.raises(DatasetError, match="dataset directory not found"):
        VOCDataset(str(tmp_path / "nope"), "trainval")
    root = make_voc(tmp_path)
    with pytest.raises(DatasetError, match=r"test\.txt: image set 'test' not found"):
        read_image_set(root, "test")


def test_malformed_xml_names_the_file(tmp_path):
    root = make_voc(tmp_path, xml="<annotation><size>")
    with pytest.raises(DatasetError, match=r"000001\.xml: malformed XML"):
        VOCDataset(root, "trainval").annotation("000001")


def test_unknown_class_and_missing_field(tmp_path):
    root = make_voc(tmp_path, xml=XML.format(a="unicorn", xmax=60))
    with pytest.raises(DatasetError, match=r"000001\.xml: object\[0\]/name: unknown class 'unicorn'"):
        VOCDataset(root, "trainval").annotation("000001")
    bad = XML.format(a="cat", xmax=60).replace("<ymin>1</ymin>", "")
    (tmp_path / "x.xml").write_text(bad)
    with pytest.raises(DatasetError, match=r"x\.xml: missing field object\[0\]/bndbox/ymin"):
        parse_voc_xml(str(tmp_path / "x.xml"), ("cat", "dog"))
    (tmp_path / "y.xml").write_text(XML.format(a="cat", xmax="abc"))
    with pytest.raises(DatasetError, match="is not a number"):
        parse_voc_xml(str(tmp_path / "y.xml"), ("cat", "dog"))


def test_box_outside_image_is_clipped_and_empty_box_skipped(tmp_path, caplog):
    path = tmp_path / "a.xml"
    path.write_text(XML.format(a="cat", xmax=130))  # xmax beyond width 100
    with caplog.at_level(logging.WARNING):
        a = parse_voc_xml(str(path), ("cat", "dog"))
    np.testing.assert_array_equal(a.boxes[1], [49, 39, 100, 80])
    assert "clipped" in caplog.text and "a.xml" in caplog.text
    caplog.clear()
    path.write_text(XML.format(a="cat", xmax=30))  # xmax < xmin
    with caplog.at_level(logging.WARNING):
        a = parse_voc_xml(str(path), ("cat", "dog"))
    assert len(a.labels) == 1 and "skipped" in caplog.text


def test_unreadable_image(tmp_path):
    root = make_voc(tmp_path, image=False)
    (tmp_path / "VOC2007/JPEGImages/000001.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(DatasetError, match=r"000001\.jpg: not a readable image"):
        VOCDataset(root, "trainval").load_image("000001")
    with pytest.raises(DatasetError, match="image file not found"):
        load_image(str(tmp_path / "missing.png"))


def test_gray_and_rgba_load_as_rgb(tmp_path):
    gray = np.arange(60, dtype=np.uint8).reshape(6, 10)
    cv2.imwrite(str(tmp_path / "g.png"), gray)
    out = load_image(str(tmp_path / "g.png"))
    assert out.shape == (6, 10, 3) and (out[..., 0] == gray).all()
    bgra = np.zeros((4, 5, 4), np.uint8)
    bgra[..., 0] = 200  # blue in OpenCV's BGRA
    cv2.imwrite(str(tmp_path / "a.png"), bgra)
    out = load_image(str(tmp_path / "a.png"))
    assert out.shape == (4, 5, 3) and (out[..., 2] == 200).all() and (out[..., 0] == 0).all()


def test_infer_classes(tmp_path):
    root = make_voc(tmp_path)
    assert infer_classes(root) == ("cat", "dog")
    os.remove(os.path.join(root, "ImageSets/Main/cat_trainval.txt"))
    os.remove(os.path.join(root, "ImageSets/Main/dog_trainval.txt"))
    with pytest.raises(DatasetError, match="infer the classes"):
        infer_classes(root)


def test_image_ids_must_be_plain_names(tmp_path):
    root = make_voc(tmp_path)
    image_set = tmp_path / "VOC2007/ImageSets/Main/trainval.txt"
    for bad in ("../../x", "/abs/x", "a\\b", "..", "."):
        image_set.write_text(f"000001\n\n{bad}\n")
        with pytest.raises(DatasetError, match=r"trainval\.txt:3: image id .* is not a plain file name"):
            read_image_set(root, "trainval")
    image_set.write_text("000001\n000002\n000001\n")
    with pytest.raises(DatasetError, match=r"trainval\.txt:3: duplicate image id '000001' \(first on line 1\)"):
        read_image_set(root, "trainval")
    image_set.write_text("000001  1\n\n000002 -1\n")  # class-set columns and blank lines
    assert read_image_set(root, "trainval") == ["000001", "000002"]


def test_empty_image_set(tmp_path):
    root = make_voc(tmp_path)
    (tmp_path / "VOC2007/ImageSets/Main/trainval.txt").write_text("\n   \n")
    with pytest.raises(DatasetError, match=r"trainval\.txt: image set 'trainval' lists no image ids"):
        VOCDataset(root, "trainval")


@pytest.mark.parametrize("old, new, field", [
    ("<width>100</width>", "<width>nan</width>", "size/width"),
    ("<height>80</height>", "<height>inf</height>", "size/height"),
    ("<xmin>1</xmin>", "<xmin>-inf</xmin>", r"object\[0\]/bndbox/xmin"),
    ("<ymax>80</ymax>", "<ymax>NaN</ymax>", r"object\[1\]/bndbox/ymax"),
])
def test_non_finite_numbers_in_xml(tmp_path, old, new, field):
    xml = XML.format(a="cat", xmax=60)
    assert old in xml
    (tmp_path / "a.xml").write_text(xml.replace(old, new))
    with pytest.raises(DatasetError, match=rf"a\.xml: field {field} is not a finite number"):
        parse_voc_xml(str(tmp_path / "a.xml"), ("cat", "dog"))


def test_float_and_other_pixel_types(tmp_path):
    rgb = np.zeros((4, 5, 3), np.float32)
    rgb[..., 0] = 1.0  # red, as floats in [0, 1]
    rgb[..., 1] = 0.5
    cv2.imwrite(str(tmp_path / "f.tif"), np.ascontiguousarray(rgb[..., ::-1]))  # OpenCV writes BGR
    out = load_image(str(tmp_path / "f.tif"))
    assert out.dtype == np.uint8 and out.shape == (4, 5, 3)
    assert (out[..., 0] == 255).all() and (out[..., 1] == 128).all() and (out[..., 2] == 0).all()
    cv2.imwrite(str(tmp_path / "big.tif"), np.full((4, 5), 300.0, np.float32))
    with pytest.raises(DatasetError, match=r"big\.tif: float32 pixels with values in \[300, 300\]"):
        load_image(str(tmp_path / "big.tif"))
    cv2.imwrite(str(tmp_path / "nan.tif"), np.full((4, 5), np.nan, np.float32))
    with pytest.raises(DatasetError, match=r"nan\.tif: float32 pixels with non-finite values"):
        load_image(str(tmp_path / "nan.tif"))
    cv2.imwrite(str(tmp_path / "s.tif"), np.full((4, 5, 3), -3, np.int16))
    with pytest.raises(DatasetError, match=r"s\.tif: int16 pixels are not supported"):
        load_image(str(tmp_path / "s.tif"))
    cv2.imwrite(str(tmp_path / "w.png"), np.full((4, 5, 3), 65535, np.uint16))
    assert (load_image(str(tmp_path / "w.png")) == 255).all()


def test_tiff_images_are_found(tmp_path):
    root = make_voc(tmp_path, image=False)
    cv2.imwrite(str(tmp_path / "VOC2007/JPEGImages/000001.tif"), np.full((80, 100, 3), 0.25, np.float32))
    ds = VOCDataset(root, "trainval")
    assert ds.image_path("000001").endswith(".tif")
    assert (ds.load_image("000001") == 64).all()


def _config(root, classes=()):
    from detect.config import load_config

    return load_config(None, [f"data.root={root}", f"data.classes=[{', '.join(classes)}]"])


def test_training_on_a_subset_of_the_classes(tmp_path, caplog):
    from detect.stages import open_dataset

    xml = XML.format(a="cat", xmax=60).replace("</annotation>", """  <object><name>bird</name>
    <bndbox><xmin>5</xmin><ymin>5</ymin><xmax>30</xmax><ymax>30</ymax></bndbox></object>
</annotation>""")
    root = make_voc(tmp_path, xml=xml)
    with caplog.at_level(logging.INFO, logger="detect.stages"):
        ds = open_dataset(_config(root, ["dog"]), "trainval")
    a = ds.annotation("000001")
    assert ds.classes == ("dog",) and a.labels.tolist() == [0]
    np.testing.assert_array_equal(a.boxes, [[49, 39, 60, 80]])
    assert a.ignored_classes == ("cat", "bird")
    lines = [r.getMessage() for r in caplog.records if "ignored" in r.getMessage()]
    assert lines == [f"{root}/trainval: ignored 2 objects of 2 classes not in data.classes: bird (1), cat (1)"]
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="detect.stages"):
        open_dataset(_config(root, ["bird", "cat", "dog"]), "trainval")
    assert "ignored" not in caplog.text
    # classes inferred from the dataset (cat, dog): an unknown class name stays an error,
    # raised when the dataset is opened, before any long stage
    with pytest.raises(DatasetError, match=r"000001\.xml: object\[2\]/name: unknown class 'bird'"):
        open_dataset(_config(root), "trainval")
