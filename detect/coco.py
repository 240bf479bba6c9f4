"""COCO-json datasets (``data.format: coco``): an instances json read by pycocotools.

``root`` holds one json and one image directory per image set::

    root/annotations/instances_<set>.json
    root/<set>/<file_name>            (file_name as the json's images[] give it)

Classes: the json's categories in category-id order, or ``data.classes`` (each must be
a category name; objects of the other categories are skipped and counted, as VOC's
objects of classes outside ``data.classes``). Labels are contiguous, 0..K-1 in that order.

An image's id is its file name without the extension (it names the image's cache files,
so it must be unique in the set). Boxes are converted at this border from COCO's
``[x, y, w, h]`` with :func:`sppcore.boxes.xywh_to_xyxy` (inverse
:func:`sppcore.boxes.xyxy_to_xywh`; :mod:`detect.coco_eval` writes COCO json the same
way): COCO's coordinates are already 0-based and continuous (a box over pixel columns
0..9 has ``x = 0, w = 10``), so no pixel offset is added, unlike VOC's 1-based XML.
``iscrowd`` objects are marked difficult: the evaluation ignores them as it ignores
VOC's difficult objects. Boxes reaching outside the image are clipped, boxes with no
area left are dropped; each is counted in one warning per json.

Bad input raises :class:`sppcore.errors.DatasetError` in one line naming the file: a
missing directory or json, a file that is not an instances json, an images or
categories list that is missing or empty, an entry without a field the conversion needs,
a category in ``data.classes`` that the json does not have.
"""
from __future__ import annotations

import contextlib
import io
import logging
import math
import os
from typing import Sequence

import numpy as np

from sppcore.boxes import xywh_to_xyxy
from detect.dataset import Annotation, DetectionDataset
from sppcore.errors import DatasetError

__all__ = ["COCODataset", "coco_annotation_file", "coco_image_dir"]

log = logging.getLogger(__name__)


def coco_annotation_file(root: str, image_set: str) -> str:
    """``<root>/annotations/instances_<image_set>.json``."""
    return os.path.join(root, "annotations", f"instances_{image_set}.json")


def coco_image_dir(root: str, image_set: str) -> str:
    """``<root>/<image_set>``: where the json's file names are found."""
    return os.path.join(root, image_set)


def _read_instances(path: str):
    """The pycocotools index of ``path`` (its printing silenced: library code never prints)."""
    from pycocotools.coco import COCO

    if not os.path.isfile(path):
        raise DatasetError(f"{path}: annotation file not found (expected <root>/annotations/instances_<set>.json)")
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            coco = COCO(path)
    except (ValueError, UnicodeDecodeError) as e:  # json.JSONDecodeError is a ValueError
        raise DatasetError(f"{path}: not valid json ({e})") from None
    except AssertionError:
        raise DatasetError(f"{path}: not a COCO instances json (the top level must be an object)") from None
    except (KeyError, TypeError) as e:
        raise DatasetError(f"{path}: not a COCO instances json (an entry lacks field {e})") from None
    for field in ("images", "categories"):
        if not isinstance(coco.dataset.get(field), list) or not coco.dataset[field]:
            raise DatasetError(f"{path}: no {field} (a COCO instances json lists images and categories)")
    return coco


def _finite(values, n: int) -> bool:
    return (isinstance(values, (list, tuple)) and len(values) == n
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in values))


class COCODataset(DetectionDataset):
    """One image set of a COCO-json dataset (see the module docstring). The json is read
    once when the dataset is opened; the ground truth is kept in memory."""

    def __init__(self, root: str, image_set: str, classes: Sequence[str] | None = None,
                 ignore_other_classes: bool = False):
        """``classes``: category names in label order (default: every category, by id);
        ``ignore_other_classes``: objects of the other categories are skipped instead of
        being an error (with ``classes`` empty every category is a class)."""
        if not os.path.isdir(root):
            raise DatasetError(f"{root}: dataset directory not found (see README, 'Your own dataset', for the layout)")
        self.root = root
        self.image_set = image_set
        self.ignore_other_classes = ignore_other_classes
        self.json_path = coco_annotation_file(root, image_set)
        coco = _read_instances(self.json_path)
        path = self.json_path
        names: dict[int, str] = {}
        for cat in coco.dataset["categories"]:
            if not isinstance(cat, dict) or not isinstance(cat.get("id"), int) or not isinstance(cat.get("name"), str):
                raise DatasetError(f"{path}: category {cat!r} lacks an integer id or a name")
            name = cat["name"]
            if not name.strip() or name.strip() != name or any(c in name for c in "/\\\0"):
                raise DatasetError(f"{path}: category name {name!r} is not a plain name (it names result files)")
            if name in names.values() or cat["id"] in names:
                raise DatasetError(f"{path}: category {cat['id']} ({name!r}): its id or its name appears twice")
            names[cat["id"]] = name
        if classes:
            missing = [c for c in classes if c not in names.values()]
            if missing:
                raise DatasetError(f"{path}: data.classes names {missing[0]!r}, which is not a category here "
                                   f"(categories: {', '.join(names[i] for i in sorted(names))})")
            self.classes: tuple[str, ...] = tuple(classes)
        else:
            self.classes = tuple(names[i] for i in sorted(names))
        label_of = {cid: self.classes.index(name) for cid, name in names.items() if name in self.classes}

        self._file_names: dict[str, str] = {}
        entries: dict[int, dict] = {}
        for img in coco.dataset["images"]:
            if not isinstance(img, dict) or not isinstance(img.get("id"), int) or isinstance(img["id"], bool):
                raise DatasetError(f"{path}: image entry {img!r} lacks an integer id")
            if img["id"] in entries:
                raise DatasetError(f"{path}: image id {img['id']} appears twice")
            entries[img["id"]] = img
        sizes: dict[int, tuple[str, int, int]] = {}
        for coco_id in sorted(entries):
            img = entries[coco_id]
            file_name, width, height = img.get("file_name"), img.get("width"), img.get("height")
            if not isinstance(file_name, str) or not file_name or os.path.isabs(file_name) \
                    or ".." in file_name.replace("\\", "/").split("/"):
                raise DatasetError(f"{path}: image {coco_id}: file_name {file_name!r} is not a relative path "
                                   f"under {coco_image_dir(root, image_set)}")
            if not (isinstance(width, int) and isinstance(height, int) and width > 0 and height > 0):
                raise DatasetError(f"{path}: image {coco_id} ({file_name}): width and height must be positive "
                                   f"integers, got {width!r} x {height!r}")
            image_id = os.path.splitext(os.path.basename(file_name.replace("\\", "/")))[0]
            if not image_id or image_id in (".", ".."):
                raise DatasetError(f"{path}: image {coco_id}: file_name {file_name!r} gives no image id")
            if image_id in self._file_names:
                raise DatasetError(f"{path}: image id {image_id!r} (file name without extension) is given by "
                                   f"{self._file_names[image_id]!r} and {file_name!r}; it must be unique")
            self._file_names[image_id] = file_name
            sizes[coco_id] = (image_id, width, height)
        self.image_ids: list[str] = [sizes[i][0] for i in sizes]

        objects: dict[str, list] = {image_id: [] for image_id, _, _ in sizes.values()}
        for ann in coco.dataset.get("annotations", []):
            if not isinstance(ann, dict) or ann.get("image_id") not in sizes:
                raise DatasetError(f"{path}: annotation {ann.get('id') if isinstance(ann, dict) else ann!r}: "
                                   "image_id names no image of the file")
            if ann.get("category_id") not in names:
                raise DatasetError(f"{path}: annotation {ann.get('id')}: category_id {ann.get('category_id')!r} "
                                   "names no category of the file")
            if not _finite(ann.get("bbox"), 4):
                raise DatasetError(f"{path}: annotation {ann.get('id')}: bbox {ann.get('bbox')!r} is not "
                                   "[x, y, w, h] of finite numbers")
            objects[sizes[ann["image_id"]][0]].append(ann)
        self._annotations: dict[str, Annotation] = {}
        clipped = dropped = 0
        for image_id, width, height in sizes.values():
            ann, n_clipped, n_dropped = self._convert(image_id, width, height, objects[image_id], names, label_of)
            self._annotations[image_id] = ann
            clipped += n_clipped
            dropped += n_dropped
        if clipped or dropped:
            log.warning("%s: %d boxes reaching outside their image clipped, %d boxes with no area inside it "
                        "dropped", path, clipped, dropped)

    def _convert(self, image_id, width, height, objects, names, label_of) -> tuple[Annotation, int, int]:
        boxes, labels, difficult, ignored = [], [], [], []
        clipped = dropped = 0
        for ann in objects:
            name = names[ann["category_id"]]
            if ann["category_id"] not in label_of:
                if not self.ignore_other_classes:
                    raise DatasetError(f"{self.json_path}: annotation {ann.get('id')}: category {name!r} is not "
                                       f"among the classes ({', '.join(self.classes)})")
                ignored.append(name)
                continue
            box = xywh_to_xyxy(np.array([ann["bbox"]], dtype=np.float32))[0]
            inside = box.copy()
            inside[0::2] = np.clip(inside[0::2], 0, width)
            inside[1::2] = np.clip(inside[1::2], 0, height)
            if inside[2] <= inside[0] or inside[3] <= inside[1]:
                dropped += 1
                continue
            clipped += int(not np.array_equal(inside, box))
            boxes.append(inside)
            labels.append(label_of[ann["category_id"]])
            difficult.append(bool(ann.get("iscrowd", 0)))
        return Annotation(
            image_id=image_id, width=width, height=height,
            boxes=np.asarray(boxes, dtype=np.float32).reshape(-1, 4),
            labels=np.asarray(labels, dtype=np.int64),
            difficult=np.asarray(difficult, dtype=bool),
            truncated=np.zeros(len(labels), dtype=bool),
            ignored_classes=tuple(ignored),
        ), clipped, dropped

    def image_path(self, image_id: str) -> str:
        return os.path.join(coco_image_dir(self.root, self.image_set), self._file_names[image_id])

    def annotation_path(self, image_id: str) -> str:
        return self.json_path

    def annotation(self, image_id: str) -> Annotation:
        return self._annotations[image_id]
