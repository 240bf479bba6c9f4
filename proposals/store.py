"""The proposal store: proposals of image sets, computed once, cached on disk per image.

Layout::

    <cache_root>/<backend>-<key>/
        manifest.json        the settings the key stands for (for people)
        <image_id>.npz       boxes float32 [N, 4] (internal convention), seconds (float),
                             and the digest of the image file they were computed from

``key`` hashes the proposal settings (the whole ``ProposalConfig``, nothing else from the
experiment's config), the cache version, the algorithm's version
(:data:`proposals.selective_search.ALGORITHM_VERSION`) and, for ``rcnn_mat``, the ``.mat``
files' names, sizes and modification times. It does not hash the image list: each entry is
keyed by its own image's content (:class:`sppcore.fileio.KeyedEntries`), so any subset or
superset of an image set shares the entries already computed, an edited image is
recomputed, and a corrupt or truncated entry is recomputed with a warning naming it.
Images are processed in parallel (``workers`` processes, one OpenCV thread each) with a
progress bar; every image's entry is written atomically as soon as it is done, so an
interrupted build resumes with the images still missing, and two processes building the
same store at once never corrupt it.

With ``backend = "rcnn_mat"`` nothing is computed: the boxes come from R-CNN's published
``.mat`` files (``cfg.mat_path``, see :mod:`proposals.matfile`), capped at ``max_boxes``
in the file's order. Their compute time is unknown: :meth:`ProposalStore.seconds` gives
NaN for them.
"""
from __future__ import annotations

import logging
import multiprocessing as mp
import os
import time
from typing import Sequence

import numpy as np
from tqdm import tqdm

from proposals.config import ProposalConfig
from proposals.matfile import load_rcnn_mat, mat_files
from proposals.selective_search import ALGORITHM_VERSION, BACKENDS, IMPORTED_BACKEND
from sppcore.errors import ProposalError
from sppcore.faults import kill_point
from sppcore.fileio import KeyedEntries, file_digest, keyed_directory

__all__ = ["ProposalStore", "CACHE_VERSION"]

log = logging.getLogger(__name__)

# 3: one entry per image keyed by the image's content (no image list in the key)
CACHE_VERSION = 3


# settings that change how fast proposals are computed, not which: kept out of the key
SPEED_SETTINGS = ("workers",)


def _config_dict(cfg: ProposalConfig) -> dict:
    from dataclasses import asdict

    return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(cfg).items() if k not in SPEED_SETTINGS}


def _file_signature(path: str) -> list:
    try:
        st = os.stat(path)
    except OSError:
        raise ProposalError(f"{path}: file not found") from None
    return [os.path.basename(path), st.st_size, st.st_mtime_ns]


def _image_digest(path: str) -> str:
    try:
        return file_digest(path)
    except OSError:
        raise ProposalError(f"{path}: image file not found") from None


def _compute_one(args) -> str:
    image_id, path, cfg, directory, key, digest = args
    from proposals.selective_search import compute_proposals
    from sppcore.images import load_image

    image = load_image(path)
    t0 = time.perf_counter()
    boxes = compute_proposals(image, cfg)
    seconds = time.perf_counter() - t0
    KeyedEntries(directory, key).save(image_id, digest, boxes=boxes, seconds=np.float64(seconds))
    return image_id


def _mat_path(cfg: ProposalConfig) -> str:
    if not cfg.mat_path:
        raise ProposalError(f"proposals.backend={IMPORTED_BACKEND} needs proposals.mat_path "
                            "(R-CNN's selective_search_data .mat file or its directory)")
    return cfg.mat_path


def _import_mat(cfg: ProposalConfig, todo: list, bar) -> None:
    """Write the cache entries of the ``todo`` images from the ``.mat`` files, one file at a
    time (R-CNN's VOC 2007 test file holds about 10 million boxes)."""
    missing = {item[0]: item for item in todo}
    for path in mat_files(_mat_path(cfg)):
        for image_id, boxes in load_rcnn_mat(path, missing).items():
            _, _, _, directory, key, digest = missing.pop(image_id)
            KeyedEntries(directory, key).save(image_id, digest, boxes=boxes[: cfg.max_boxes],
                                              seconds=np.float64(np.nan))
            bar.update(1)
        if not missing:
            return
    first = sorted(missing)[0]
    raise ProposalError(f"{cfg.mat_path}: no boxes for image {first} ({len(missing)} images missing)")


def _init_worker() -> None:
    import cv2

    cv2.setNumThreads(1)


class ProposalStore:
    """Cached proposals of an image set; ``store[image_id]`` -> float32 [N, 4]."""

    def __init__(self, directory: str, image_ids: Sequence[str], key: str = "", digests: Sequence[str] = ()):
        self.directory = directory
        self.image_ids = list(image_ids)
        self._entries = KeyedEntries(directory, key, what="proposal cache entry")
        self._digests = dict(zip(self.image_ids, digests))
        self._index = set(self.image_ids)

    @staticmethod
    def cache_key(cfg: ProposalConfig) -> dict:
        """What every entry of the store depends on besides its own image: the settings,
        the cache and algorithm versions and, for ``rcnn_mat``, the ``.mat`` files."""
        key = {"version": CACHE_VERSION, "algorithm": ALGORITHM_VERSION, "proposals": _config_dict(cfg)}
        if cfg.backend == IMPORTED_BACKEND:
            key["mat_files"] = [_file_signature(f) for f in mat_files(_mat_path(cfg))]
        return key

    @classmethod
    def build(
        cls,
        cfg: ProposalConfig,
        image_ids: Sequence[str],
        image_paths: Sequence[str],
        cache_root: str,
        workers: int = 2,
        progress: bool = True,
    ) -> "ProposalStore":
        """Compute (or find) the proposals of every image; returns the store."""
        if len(image_ids) != len(image_paths):
            raise ValueError("image_ids and image_paths differ in length")
        if cfg.backend not in BACKENDS + (IMPORTED_BACKEND,):
            raise ProposalError(f"proposals.backend: unknown backend {cfg.backend!r} "
                                f"(known: {', '.join(BACKENDS + (IMPORTED_BACKEND,))})")
        key = cls.cache_key(cfg)
        directory = keyed_directory(cache_root, cfg.backend, key)
        digests = [_image_digest(p) for p in image_paths]
        store = cls(directory, image_ids, key, digests)
        todo = [(i, p, cfg, directory, key, d) for i, p, d in zip(image_ids, image_paths, digests)
                if store._entries.load(i, d) is None]
        if todo:
            log.info("proposals (%s): %d of %d images to compute in %s", cfg.backend, len(todo),
                     len(image_ids), directory)
            bar = tqdm(total=len(image_ids), initial=len(image_ids) - len(todo),
                       desc=f"proposals {cfg.backend}", disable=not progress)
            try:
                if cfg.backend == IMPORTED_BACKEND:
                    _import_mat(cfg, todo, bar)
                elif workers > 1 and len(todo) > 1:
                    ctx = mp.get_context("spawn")  # safe whatever threads the parent runs
                    with ctx.Pool(min(workers, len(todo)), initializer=_init_worker) as pool:
                        for n, _ in enumerate(pool.imap_unordered(_compute_one, todo, chunksize=1)):
                            bar.update(1)
                            kill_point("proposals", n)
                else:
                    for n, item in enumerate(todo):
                        _compute_one(item)
                        bar.update(1)
                        kill_point("proposals", n)
            finally:
                bar.close()
        return store

    def _load(self, image_id: str) -> dict:
        if image_id not in self._index:
            raise KeyError(f"{image_id}: not in this proposal store")
        arrays = self._entries.load(image_id, self._digests.get(image_id, ""))
        if arrays is None:
            raise ProposalError(f"{self._entries.path(image_id)}: proposal cache entry missing or changed "
                                "while in use (another process rebuilding the store?); run again")
        return arrays

    def __getitem__(self, image_id: str) -> np.ndarray:
        return self._load(image_id)["boxes"].astype(np.float32).reshape(-1, 4)

    def __len__(self) -> int:
        return len(self.image_ids)

    def __contains__(self, image_id: str) -> bool:
        return image_id in self._index

    def seconds(self, image_id: str) -> float:
        """Seconds it took to compute this image's proposals (proposal time is reported
        separately from detection time, as in the papers); NaN for imported boxes."""
        return float(self._load(image_id)["seconds"])
