"""The proposal store: proposals of a whole image set, computed once, cached on disk.

Layout::

    <cache_root>/<backend>-<key>/
        manifest.json        settings, image count, cache version
        <image_id>.npz       boxes float32 [N, 4] (internal convention), seconds (float)

``key`` hashes the proposal settings (the whole ``ProposalConfig``, nothing else from the
experiment's config), the image list and every image file's size and modification time,
and the cache version: change any of them and a new directory is used; nothing stale is
ever served. Images are processed in parallel (``workers`` processes, one OpenCV thread
each) with a progress bar; every image's file is written atomically as soon as it is
done, so an interrupted build resumes with the images still missing.

With ``backend = "rcnn_mat"`` nothing is computed: the boxes come from R-CNN's published
``.mat`` files (``cfg.mat_path``, see :mod:`proposals.matfile`), capped at ``max_boxes``
in the file's order, and the key also covers those files' names, sizes and modification
times. Their compute time is unknown: :meth:`ProposalStore.seconds` gives NaN for them.
"""
from __future__ import annotations

import logging
import multiprocessing as mp
import os
import time
from typing import Sequence

import numpy as np
from tqdm import tqdm

from detect.errors import ProposalError
from detect.fileio import atomic_save_npz, atomic_write_json, load_npz, stable_hash
from proposals.config import ProposalConfig
from proposals.matfile import load_rcnn_mat, mat_files
from proposals.selective_search import BACKENDS, IMPORTED_BACKEND

__all__ = ["ProposalStore", "CACHE_VERSION"]

log = logging.getLogger(__name__)

# 2: R-CNN's ranking with the whole image at level 1, per (colour space, k) group
CACHE_VERSION = 2


def _config_dict(cfg: ProposalConfig) -> dict:
    from dataclasses import asdict

    return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(cfg).items()}


def _file_signature(path: str) -> list:
    try:
        st = os.stat(path)
    except OSError:
        raise ProposalError(f"{path}: image file not found") from None
    return [os.path.basename(path), st.st_size, st.st_mtime_ns]


def _compute_one(args) -> tuple[str, np.ndarray, float]:
    image_id, path, cfg, out_path = args
    from detect.voc import load_image
    from proposals.selective_search import compute_proposals

    image = load_image(path)
    t0 = time.perf_counter()
    boxes = compute_proposals(image, cfg)
    seconds = time.perf_counter() - t0
    atomic_save_npz(out_path, boxes=boxes, seconds=np.float64(seconds))
    return image_id, boxes, seconds


def _mat_path(cfg: ProposalConfig) -> str:
    if not cfg.mat_path:
        raise ProposalError(f"proposals.backend={IMPORTED_BACKEND} needs proposals.mat_path "
                            "(R-CNN's selective_search_data .mat file or its directory)")
    return cfg.mat_path


def _import_mat(cfg: ProposalConfig, todo: list, bar) -> None:
    """Write the cache files of the ``todo`` images from the ``.mat`` files, one file at a
    time (R-CNN's VOC 2007 test file holds about 10 million boxes)."""
    missing = {item[0]: item[3] for item in todo}
    for path in mat_files(_mat_path(cfg)):
        for image_id, boxes in load_rcnn_mat(path, missing).items():
            atomic_save_npz(missing.pop(image_id), boxes=boxes[: cfg.max_boxes], seconds=np.float64(np.nan))
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

    def __init__(self, directory: str, image_ids: Sequence[str]):
        self.directory = directory
        self.image_ids = list(image_ids)
        self._index = set(self.image_ids)

    @staticmethod
    def cache_key(cfg: ProposalConfig, image_ids: Sequence[str], image_paths: Sequence[str]) -> str:
        """Hash of the settings, the images (ids, file sizes and times), the cache version
        and, for ``rcnn_mat``, the ``.mat`` files."""
        key = {
            "version": CACHE_VERSION,
            "proposals": _config_dict(cfg),
            "images": [[i] + _file_signature(p) for i, p in zip(image_ids, image_paths)],
        }
        if cfg.backend == IMPORTED_BACKEND:
            key["mat_files"] = [_file_signature(f) for f in mat_files(_mat_path(cfg))]
        return stable_hash(key)

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
        key = cls.cache_key(cfg, image_ids, image_paths)
        directory = os.path.join(cache_root, f"{cfg.backend}-{key}")
        os.makedirs(directory, exist_ok=True)
        manifest = os.path.join(directory, "manifest.json")
        if not os.path.isfile(manifest):
            atomic_write_json(manifest, {
                "cache_version": CACHE_VERSION,
                "proposals": _config_dict(cfg),
                "num_images": len(image_ids),
                "first_image": image_ids[0] if len(image_ids) else None,
            })
        store = cls(directory, image_ids)
        todo = [(i, p, cfg, store._path(i)) for i, p in zip(image_ids, image_paths)
                if not os.path.isfile(store._path(i))]
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
                        for _ in pool.imap_unordered(_compute_one, todo, chunksize=1):
                            bar.update(1)
                else:
                    for item in todo:
                        _compute_one(item)
                        bar.update(1)
            finally:
                bar.close()
        return store

    def _path(self, image_id: str) -> str:
        return os.path.join(self.directory, f"{image_id}.npz")

    def _load(self, image_id: str) -> dict:
        if image_id not in self._index:
            raise KeyError(f"{image_id}: not in this proposal store")
        path = self._path(image_id)
        try:
            return load_npz(path)
        except (OSError, ValueError) as e:
            raise ProposalError(f"{path}: unreadable proposal cache file ({e}); delete it to recompute") from None

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
