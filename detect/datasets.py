"""``data.format`` -> dataset class: the one place a dataset format is registered.

Each class implements :class:`detect.dataset.DetectionDataset` and is built as
``cls(root, image_set, classes=None, ignore_other_classes=False)``; adding a format is one
module plus one line here (``RULES["data.format"]`` in detect/config.py reads this dict).
"""
from __future__ import annotations

from detect.coco import COCODataset
from detect.voc import VOCDataset

__all__ = ["DATASETS"]

DATASETS = {
    "voc": VOCDataset,  # VOC2007 layout: JPEGImages/, Annotations/*.xml, ImageSets/Main/<set>.txt
    "coco": COCODataset,  # annotations/instances_<set>.json + <set>/ images, read by pycocotools
}
