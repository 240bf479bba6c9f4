"""Proposal backends, one registry: ``proposals.backend`` -> how the proposal store fills
the entries of the images it is missing.

* a computing backend runs one of :data:`proposals.selective_search.ALGORITHMS` on each
  image, in ``workers`` processes (one OpenCV thread each), each entry written as soon as
  its image is done;
* ``rcnn_mat`` reads R-CNN's published selective-search boxes from its ``.mat`` files
  (``proposals.mat_path``, :mod:`proposals.matfile`), capped at ``max_boxes`` in the file's
  order; their compute time is unknown (NaN), and the files' names, sizes and
  modification times are part of the store's key.

A new backend is one :class:`ProposalBackend` (or one algorithm in
:data:`proposals.selective_search.ALGORITHMS`) plus one line in :data:`BACKENDS`.
"""
from __future__ import annotations

import multiprocessing as mp
import os
import threading
import time
from typing import Callable, Sequence

import numpy as np

from proposals.config import ProposalConfig
from proposals.matfile import load_rcnn_mat, mat_files
from proposals.selective_search import ALGORITHMS
from sppcore.errors import ProposalError
from sppcore.faults import kill_point
from sppcore.fileio import KeyedEntries

__all__ = ["ProposalBackend", "ComputedBackend", "RcnnMatBackend", "BACKENDS", "Todo"]

# an image the store is missing: (image_id, image path, settings, entry directory, key, image digest)
Todo = tuple


class ProposalBackend:
    """How a proposal store gets the boxes of the images it lacks."""

    #: whether the boxes are computed from the image (any image), or imported (known images only)
    computes = True

    def key(self, cfg: ProposalConfig) -> dict:
        """What the store's entries depend on besides the settings and the versions."""
        return {}

    def fill(self, cfg: ProposalConfig, todo: Sequence[Todo], workers: int, done: Callable[[str], None]) -> None:
        """Write the entries of ``todo`` (atomically, one by one), calling ``done(image_id)``
        after each."""
        raise NotImplementedError


def _init_worker() -> None:
    import cv2

    cv2.setNumThreads(1)


def _compute_one(item: Todo) -> str:
    image_id, path, cfg, directory, key, digest = item
    from proposals.selective_search import compute_proposals
    from sppcore.images import load_image

    image = load_image(path)
    t0 = time.perf_counter()
    boxes = compute_proposals(image, cfg)
    seconds = time.perf_counter() - t0
    KeyedEntries(directory, key).save(image_id, digest, boxes=boxes, seconds=np.float64(seconds))
    return image_id


class ComputedBackend(ProposalBackend):
    """Selective search (:func:`proposals.selective_search.compute_proposals`) per image."""

    def fill(self, cfg, todo, workers, done):
        # worker processes; also a single one when filling from a background thread, so
        # that the selective search's Python loops never hold the caller's interpreter lock
        in_background = threading.current_thread() is not threading.main_thread()
        if (workers > 1 and len(todo) > 1) or in_background:
            ctx = mp.get_context("spawn")  # safe whatever threads the parent runs
            with ctx.Pool(min(workers, len(todo)), initializer=_init_worker) as pool:
                # in order: a store filled in the background is read in the images' order
                for n, image_id in enumerate(pool.imap(_compute_one, todo, chunksize=1)):
                    done(image_id)
                    kill_point("proposals", n)
        else:
            for n, item in enumerate(todo):
                done(_compute_one(item))
                kill_point("proposals", n)


def _file_signature(path: str) -> list:
    try:
        st = os.stat(path)
    except OSError:
        raise ProposalError(f"{path}: file not found") from None
    return [os.path.basename(path), st.st_size, st.st_mtime_ns]


class RcnnMatBackend(ProposalBackend):
    """R-CNN's published boxes (``.mat`` files): nothing is computed."""

    computes = False

    @staticmethod
    def _mat_path(cfg: ProposalConfig) -> str:
        if not cfg.mat_path:
            raise ProposalError(f"proposals.backend={cfg.backend} needs proposals.mat_path "
                                "(R-CNN's selective_search_data .mat file or its directory)")
        return cfg.mat_path

    def key(self, cfg):
        return {"mat_files": [_file_signature(f) for f in mat_files(self._mat_path(cfg))]}

    def fill(self, cfg, todo, workers, done):
        """One file at a time (R-CNN's VOC 2007 test file holds about 10 million boxes)."""
        missing = {item[0]: item for item in todo}
        for path in mat_files(self._mat_path(cfg)):
            for image_id, boxes in load_rcnn_mat(path, missing).items():
                _, _, _, directory, key, digest = missing.pop(image_id)
                KeyedEntries(directory, key).save(image_id, digest, boxes=boxes[: cfg.max_boxes],
                                                  seconds=np.float64(np.nan))
                done(image_id)
            if not missing:
                return
        first = sorted(missing)[0]
        raise ProposalError(f"{cfg.mat_path}: no boxes for image {first} ({len(missing)} images missing)")


#: ``proposals.backend`` -> backend
BACKENDS: dict[str, ProposalBackend] = {
    **{name: ComputedBackend() for name in ALGORITHMS},
    "rcnn_mat": RcnnMatBackend(),
}
