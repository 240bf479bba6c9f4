"""The dataset interface every stage reads: image ids, classes, image files, ground truth.

An implementation (``detect/voc.py``, ``detect/coco.py``) reads one image set of one
annotation format and converts its boxes, at that border, to the internal float32
0-based continuous ``(x1, y1, x2, y2)`` of :mod:`sppcore.boxes`. Everything downstream
(proposals, features, training, testing, evaluation) sees only this interface;
:data:`detect.datasets.DATASETS` maps ``data.format`` to the implementation.

What an implementation provides:

* ``root``, ``image_set``, ``classes`` (names in label order) and ``image_ids`` (plain
  file names: they name every cache file of an image), set by its constructor;
* :meth:`DetectionDataset.image_path` and :meth:`DetectionDataset.annotation`;
* :meth:`DetectionDataset.annotation_path`: the file holding an image's ground truth, so
  that :meth:`DetectionDataset.identity` changes when it is edited.
"""
from __future__ import annotations

import abc
import copy
import os
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from sppcore import images
from sppcore.errors import DatasetError

__all__ = ["Annotation", "DetectionDataset"]


@dataclass(frozen=True)
class Annotation:
    """Ground truth of one image. boxes float32 [N, 4] internal convention; labels int64
    [N] indexing the dataset's classes; difficult, truncated bool [N]."""

    image_id: str
    width: int
    height: int
    boxes: np.ndarray
    labels: np.ndarray
    difficult: np.ndarray
    truncated: np.ndarray
    # names of the objects skipped because their class is not among the dataset's classes
    # (only with ignore_other_classes), one entry per object
    ignored_classes: tuple[str, ...] = ()


class DetectionDataset(abc.ABC):
    """One image set of a detection dataset (see the module docstring).

    ``difficult`` objects are kept out of the evaluation's positives and count neither
    way when matched (VOC's rule); training uses them as positives unless
    ``data.train_difficult`` is false.
    """

    root: str
    image_set: str
    classes: tuple[str, ...]
    image_ids: list[str]

    @abc.abstractmethod
    def image_path(self, image_id: str) -> str:
        """Path of the image file of ``image_id``."""

    @abc.abstractmethod
    def annotation_path(self, image_id: str) -> str:
        """Path of the file holding the ground truth of ``image_id`` (one per image for
        VOC, the one json of the set for COCO)."""

    @abc.abstractmethod
    def annotation(self, image_id: str) -> Annotation:
        """Ground truth of ``image_id`` in the internal box convention."""

    def __len__(self) -> int:
        return len(self.image_ids)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({self.root!r}, {self.image_set!r}, {len(self)} images, "
                f"{len(self.classes)} classes)")

    def load_image(self, image_id: str) -> np.ndarray:
        """RGB uint8 ``[H, W, 3]`` of ``image_id``."""
        return images.load_image(self.image_path(image_id))

    def subset(self, image_ids: Sequence[str]) -> "DetectionDataset":
        """The same dataset restricted to ``image_ids`` (each one of its images), in that
        order; ``self`` is unchanged."""
        known = set(self.image_ids)
        for image_id in image_ids:
            if image_id not in known:
                raise DatasetError(f"{self.root}: image {image_id!r} is not in image set {self.image_set!r}")
        out = copy.copy(self)
        out.image_ids = list(image_ids)
        return out

    def check_annotations(self) -> dict[str, int]:
        """Read the ground truth of every image, so that a malformed file is an error
        before any long stage starts. Returns the number of objects of each class that
        was ignored (not among ``classes``), sorted by name."""
        ignored: dict[str, int] = {}
        for image_id in self.image_ids:
            for name in self.annotation(image_id).ignored_classes:
                ignored[name] = ignored.get(name, 0) + 1
        return dict(sorted(ignored.items()))

    def gt_lists(self) -> tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]]:
        """Per image, in ``image_ids`` order: boxes [N, 4], labels [N], difficult [N]."""
        anns = [self.annotation(i) for i in self.image_ids]
        return [a.boxes for a in anns], [a.labels for a in anns], [a.difficult for a in anns]

    def identity(self) -> list:
        """What outputs computed from this image set depend on: per image (in order), its
        id and the content digests of its image file and of its annotation file. A model,
        a work directory or a detection cache keyed by it is never reused after an image
        or an annotation changes."""
        from sppcore.fileio import file_digest

        out = []
        for image_id in self.image_ids:
            image, annotation = self.image_path(image_id), self.annotation_path(image_id)
            for path, what in ((image, "image"), (annotation, "annotation")):
                if not os.path.isfile(path):
                    raise DatasetError(f"{path}: {what} file not found")
            out.append([image_id, file_digest(image), file_digest(annotation)])
        return out
