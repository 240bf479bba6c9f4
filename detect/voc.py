"""PASCAL VOC-style datasets: image sets, XML annotations (numpy); images are read by
:func:`sppcore.images.load_image`.

``root`` is a VOC2007-layout directory::

    root/JPEGImages/<id>.jpg
    root/Annotations/<id>.xml
    root/ImageSets/Main/<set>.txt, <class>_<set>.txt

Boxes are converted at this border from VOC's 1-based inclusive pixels to the internal
float32 0-based continuous ``(x1, y1, x2, y2)`` with :func:`sppcore.boxes.voc_to_internal`
(inverse: :func:`sppcore.boxes.internal_to_voc`, used when result files are written).

Bad input raises :class:`sppcore.errors.DatasetError` with one line naming the file and the
field: a missing directory, a missing or empty image set, an image id that is not a plain
file name (it names cache files), malformed XML, a missing field, a number that is not
finite, an unknown class name (unless the caller asked to ignore classes it does not
train on); images that cannot be read raise it from :func:`sppcore.images.load_image`.
Boxes are repaired rather than refused, with a ``logging`` warning naming the file and the
object: a box reaching outside the image is clipped to it; a box with no area left after
clipping (or with xmax < xmin) is skipped.
"""
from __future__ import annotations

import logging
import math
import os
import xml.etree.ElementTree as ET
from typing import Sequence

import numpy as np

from detect.dataset import Annotation, DetectionDataset
from sppcore.boxes import voc_to_internal
from sppcore.errors import DatasetError

__all__ = [
    "VOC_CLASSES",
    "Annotation",
    "infer_classes",
    "read_image_set",
    "parse_voc_xml",
    "VOCDataset",
]

log = logging.getLogger(__name__)

PATH_SEPARATORS = ("/", "\\", "\0")
# image files looked up for an id, in this order
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".JPG", ".PNG", ".bmp", ".tif", ".tiff")

# The 20 PASCAL VOC classes in devkit order (which is alphabetical).
VOC_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor",
)


def _main_dir(root: str) -> str:
    if not os.path.isdir(root):
        raise DatasetError(f"{root}: dataset directory not found (see data/README.md for the layout)")
    main = os.path.join(root, "ImageSets", "Main")
    if not os.path.isdir(main):
        raise DatasetError(f"{main}: directory not found (expected a VOC layout: ImageSets/Main)")
    return main


def infer_classes(root: str, image_set: str = "trainval") -> tuple[str, ...]:
    """Class names from ``ImageSets/Main/<class>_<image_set>.txt``, sorted (VOC's order is
    alphabetical); falls back to any ``<class>_<set>.txt`` when that set has none."""
    main = _main_dir(root)
    files = os.listdir(main)
    suffix = f"_{image_set}.txt"
    names = sorted(f[: -len(suffix)] for f in files if f.endswith(suffix))
    if not names:
        sets = {f[:-4] for f in files if f.endswith(".txt") and "_" not in f}
        names = sorted({f.rsplit("_", 1)[0] for f in files if f.endswith(".txt") and "_" in f
                        and f.rsplit("_", 1)[1][:-4] in sets})
    if not names:
        raise DatasetError(f"{main}: no <class>_<set>.txt files to infer the classes from; set data.classes")
    return tuple(names)


def read_image_set(root: str, image_set: str) -> list[str]:
    """Image ids listed in ``ImageSets/Main/<image_set>.txt`` (first column), in order;
    blank lines are skipped. An id must be a plain file name: it names the image, the
    annotation and every cache file of the image, so a path in it would reach outside
    those directories."""
    path = os.path.join(_main_dir(root), f"{image_set}.txt")
    if not os.path.isfile(path):
        raise DatasetError(f"{path}: image set {image_set!r} not found")
    ids: list[str] = []
    seen: dict[str, int] = {}
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise DatasetError(f"{path}: unreadable image set ({e})") from None
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        image_id = line.split()[0]
        if any(sep in image_id for sep in PATH_SEPARATORS) or image_id in (".", "..") or os.path.isabs(image_id):
            raise DatasetError(f"{path}:{number}: image id {image_id!r} is not a plain file name "
                               "(no '/', '\\', '.' or '..')")
        if image_id in seen:
            raise DatasetError(f"{path}:{number}: duplicate image id {image_id!r} (first on line {seen[image_id]})")
        seen[image_id] = number
        ids.append(image_id)
    if not ids:
        raise DatasetError(f"{path}: image set {image_set!r} lists no image ids")
    return ids


def _text(node: ET.Element, tag: str, path: str, where: str) -> str:
    child = node.find(tag)
    if child is None or child.text is None or not child.text.strip():
        raise DatasetError(f"{path}: missing field {where}{tag}")
    return child.text.strip()


def _number(node: ET.Element, tag: str, path: str, where: str) -> float:
    text = _text(node, tag, path, where)
    try:
        value = float(text)
    except ValueError:
        raise DatasetError(f"{path}: field {where}{tag} is not a number: {text!r}") from None
    if not math.isfinite(value):
        raise DatasetError(f"{path}: field {where}{tag} is not a finite number: {text!r}")
    return value


def _flag(node: ET.Element, tag: str, path: str, where: str) -> bool:
    child = node.find(tag)
    if child is None or child.text is None or not child.text.strip():
        return False  # VOC omits these flags on some objects: absent means 0
    try:
        return bool(int(float(child.text.strip())))
    except ValueError:
        raise DatasetError(f"{path}: field {where}{tag} is not 0/1: {child.text.strip()!r}") from None


def parse_voc_xml(path: str, classes: Sequence[str], ignore_other_classes: bool = False) -> Annotation:
    """Parse one VOC annotation file (see the module docstring for the error policy).
    With ``ignore_other_classes`` an object whose class is not in ``classes`` is skipped
    (listed in ``ignored_classes``) instead of being an error."""
    if not os.path.isfile(path):
        raise DatasetError(f"{path}: annotation file not found")
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as e:
        raise DatasetError(f"{path}: malformed XML ({e})") from None
    image_id = os.path.splitext(os.path.basename(path))[0]
    size = root.find("size")
    if size is None:
        raise DatasetError(f"{path}: missing field size")
    width = int(_number(size, "width", path, "size/"))
    height = int(_number(size, "height", path, "size/"))
    if width <= 0 or height <= 0:
        raise DatasetError(f"{path}: size/width and size/height must be positive, got {width}x{height}")
    index = {name: i for i, name in enumerate(classes)}
    boxes, labels, difficult, truncated, ignored = [], [], [], [], []
    for k, obj in enumerate(root.findall("object")):
        where = f"object[{k}]/"
        name = _text(obj, "name", path, where)
        if name not in index and ignore_other_classes:
            ignored.append(name)
            continue
        if name not in index:
            raise DatasetError(f"{path}: {where}name: unknown class {name!r} (known: {', '.join(classes)})")
        bnd = obj.find("bndbox")
        if bnd is None:
            raise DatasetError(f"{path}: missing field {where}bndbox")
        voc = [_number(bnd, t, path, where + "bndbox/") for t in ("xmin", "ymin", "xmax", "ymax")]
        box = voc_to_internal(np.array([voc], dtype=np.float32))[0]
        clipped = box.copy()
        clipped[0::2] = np.clip(clipped[0::2], 0, width)
        clipped[1::2] = np.clip(clipped[1::2], 0, height)
        if clipped[2] <= clipped[0] or clipped[3] <= clipped[1]:
            log.warning("%s: %s%s box %s has no area inside the %dx%d image; skipped",
                        path, where, name, voc, width, height)
            continue
        if not np.array_equal(clipped, box):
            log.warning("%s: %s%s box %s reaches outside the %dx%d image; clipped",
                        path, where, name, voc, width, height)
        boxes.append(clipped)
        labels.append(index[name])
        difficult.append(_flag(obj, "difficult", path, where))
        truncated.append(_flag(obj, "truncated", path, where))
    return Annotation(
        image_id=image_id,
        width=width,
        height=height,
        boxes=np.asarray(boxes, dtype=np.float32).reshape(-1, 4),
        labels=np.asarray(labels, dtype=np.int64),
        difficult=np.asarray(difficult, dtype=bool),
        truncated=np.asarray(truncated, dtype=bool),
        ignored_classes=tuple(ignored),
    )


class VOCDataset(DetectionDataset):
    """One image set of a VOC-layout dataset (:class:`detect.dataset.DetectionDataset`).
    Annotations are parsed on first use and kept in memory only (no annotation cache on
    disk that could go stale)."""

    def __init__(self, root: str, image_set: str, classes: Sequence[str] | None = None,
                 ignore_other_classes: bool = False):
        """``ignore_other_classes``: objects of classes not in ``classes`` are skipped
        (training on a subset of the dataset's classes) instead of being an error."""
        self.root = root
        self.image_set = image_set
        self.ignore_other_classes = ignore_other_classes
        self.image_ids: list[str] = read_image_set(root, image_set)
        self.classes: tuple[str, ...] = tuple(classes) if classes else infer_classes(root)
        for sub in ("JPEGImages", "Annotations"):
            if not os.path.isdir(os.path.join(root, sub)):
                raise DatasetError(f"{os.path.join(root, sub)}: directory not found")
        self._annotations: dict[str, Annotation] = {}

    def image_path(self, image_id: str) -> str:
        base = os.path.join(self.root, "JPEGImages", image_id)
        for ext in IMAGE_EXTENSIONS:
            if os.path.isfile(base + ext):
                return base + ext
        return base + ".jpg"

    def annotation_path(self, image_id: str) -> str:
        return os.path.join(self.root, "Annotations", image_id + ".xml")

    def annotation(self, image_id: str) -> Annotation:
        ann = self._annotations.get(image_id)
        if ann is None:
            ann = parse_voc_xml(self.annotation_path(image_id), self.classes, self.ignore_other_classes)
            self._annotations[image_id] = ann
        return ann

    def check_annotations(self) -> dict[str, int]:
        """Parse every annotation file that exists now, so that a malformed one is an error
        before any long stage starts (images without an annotation file are left to fail
        when their annotation is needed). Returns the number of objects of each ignored
        class (empty unless ``ignore_other_classes``)."""
        ignored: dict[str, int] = {}
        for image_id in self.image_ids:
            if image_id in self._annotations or os.path.isfile(self.annotation_path(image_id)):
                for name in self.annotation(image_id).ignored_classes:
                    ignored[name] = ignored.get(name, 0) + 1
        return dict(sorted(ignored.items()))
