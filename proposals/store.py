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

With ``background=True`` the missing entries are computed by a thread of the process
(its worker processes doing the work) while the caller goes on: ``store[image_id]`` waits
for that image's entry only, so a caller that reads the images in order (feature
extraction, testing) works on the first images while the later ones' proposals are being
computed. :meth:`ProposalStore.wait` waits for every entry and raises the fill's error,
if any.

With ``backend = "rcnn_mat"`` nothing is computed: the boxes come from R-CNN's published
``.mat`` files (``cfg.mat_path``, see :mod:`proposals.matfile`), capped at ``max_boxes``
in the file's order. Their compute time is unknown: :meth:`ProposalStore.seconds` gives
NaN for them.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Sequence

import numpy as np
from tqdm import tqdm

from proposals.backends import BACKENDS
from proposals.config import ProposalConfig
from proposals.selective_search import ALGORITHM_VERSION
from sppcore.errors import ProposalError
from sppcore.fileio import KeyedEntries, file_digest, keyed_directory

__all__ = ["ProposalStore", "CACHE_VERSION"]

log = logging.getLogger(__name__)

# 3: one entry per image keyed by the image's content (no image list in the key)
CACHE_VERSION = 3


# settings that change how fast proposals are computed, not which: kept out of the key
SPEED_SETTINGS = ("workers", "overlap")


def _config_dict(cfg: ProposalConfig) -> dict:
    from dataclasses import asdict

    return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(cfg).items() if k not in SPEED_SETTINGS}


def _backend(cfg: ProposalConfig):
    if cfg.backend not in BACKENDS:
        raise ProposalError(f"proposals.backend: unknown backend {cfg.backend!r} (known: {', '.join(BACKENDS)})")
    return BACKENDS[cfg.backend]


def _image_digest(path: str) -> str:
    try:
        return file_digest(path)
    except OSError:
        raise ProposalError(f"{path}: image file not found") from None


class ProposalStore:
    """Cached proposals of an image set; ``store[image_id]`` -> float32 [N, 4]."""

    def __init__(self, directory: str, image_ids: Sequence[str], key: str = "", digests: Sequence[str] = ()):
        self.directory = directory
        self.image_ids = list(image_ids)
        self._entries = KeyedEntries(directory, key, what="proposal cache entry")
        self._digests = dict(zip(self.image_ids, digests))
        self._index = set(self.image_ids)
        # a fill running in the background: the images still missing, its error, its thread
        self._pending: set[str] = set()
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None
        self._changed = threading.Condition()
        #: wall seconds the missing entries took to compute (0 when none was missing)
        self.fill_seconds = 0.0

    @staticmethod
    def cache_key(cfg: ProposalConfig) -> dict:
        """What every entry of the store depends on besides its own image: the settings,
        the cache and algorithm versions and, for ``rcnn_mat``, the ``.mat`` files."""
        key = {"version": CACHE_VERSION, "algorithm": ALGORITHM_VERSION, "proposals": _config_dict(cfg)}
        key.update(_backend(cfg).key(cfg))
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
        background: bool = False,
    ) -> "ProposalStore":
        """Compute (or find) the proposals of every image; returns the store. With
        ``background``, returns at once while a thread computes the missing entries
        (module docstring)."""
        if len(image_ids) != len(image_paths):
            raise ValueError("image_ids and image_paths differ in length")
        backend = _backend(cfg)
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
            if background:
                store._fill_in_background(lambda done: backend.fill(cfg, todo, workers, done),
                                          [item[0] for item in todo], bar)
                return store
            t0 = time.perf_counter()
            try:
                backend.fill(cfg, todo, workers, lambda image_id: bar.update(1))
            finally:
                bar.close()
            store.fill_seconds = time.perf_counter() - t0
        return store

    def _fill_in_background(self, fill, image_ids: Sequence[str], bar) -> None:
        self._pending = set(image_ids)

        def done(image_id: str) -> None:
            with self._changed:
                self._pending.discard(image_id)
                self._changed.notify_all()
            bar.update(1)

        def run() -> None:
            t0 = time.perf_counter()
            try:
                fill(done)
                self.fill_seconds = time.perf_counter() - t0
            except BaseException as e:  # handed to the reader, in its thread
                with self._changed:
                    self._error = e
            finally:
                bar.close()
                with self._changed:
                    self._thread = None
                    self._changed.notify_all()

        with self._changed:
            self._thread = threading.Thread(target=run, name="proposals", daemon=True)
        self._thread.start()

    def _wait_for(self, image_id: str | None = None) -> None:
        """Until ``image_id``'s entry (None: every entry) is written by a background fill;
        raises the fill's error, or a :class:`ProposalError` when the fill ended without it."""
        with self._changed:
            # one entry: until it is written; every entry: until the fill has ended
            while self._thread is not None and (image_id in self._pending if image_id else True):
                self._changed.wait()
            missing = (image_id in self._pending) if image_id else bool(self._pending)
            if missing and self._error is not None:
                raise self._error
            if missing:
                raise ProposalError(f"{self.directory}: proposals of {image_id or sorted(self._pending)[0]} "
                                    "were not computed")

    def wait(self) -> "ProposalStore":
        """Every entry written (a background fill finished); raises the fill's error."""
        self._wait_for(None)
        return self

    def _load(self, image_id: str) -> dict:
        if image_id not in self._index:
            raise KeyError(f"{image_id}: not in this proposal store")
        if self._pending:
            self._wait_for(image_id)
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
