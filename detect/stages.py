"""The first stages shared by every tool: opening an image set, its proposal store."""
from __future__ import annotations

import logging
import os

from detect.config import Config
from sppcore.errors import UserError

__all__ = ["open_dataset", "build_proposal_store", "proposal_key"]

log = logging.getLogger(__name__)


def open_dataset(cfg: Config, image_set: str, num_images: int | None = None):
    """The image set ``image_set`` of ``cfg.data.root`` in the format ``cfg.data.format``
    (a :class:`detect.dataset.DetectionDataset` of :data:`detect.datasets.DATASETS`; its
    first ``num_images`` images), every annotation read, so that a malformed file is an
    error before any long stage.

    With ``data.classes`` given, objects of the dataset's other classes are ignored (one
    INFO line counts them); with ``data.classes`` empty every class name must be known.
    """
    from detect.datasets import DATASETS

    if cfg.data.format not in DATASETS:
        raise UserError(f"data.format: unknown dataset format {cfg.data.format!r} (known: {', '.join(DATASETS)})")
    explicit = bool(cfg.data.classes)
    ds = DATASETS[cfg.data.format](cfg.data.root, image_set, classes=cfg.data.classes or None,
                                   ignore_other_classes=explicit)
    if num_images is not None:
        if num_images <= 0:
            raise UserError(f"--num-images must be positive, got {num_images}")
        ds = ds.subset(ds.image_ids[:num_images])
    ignored = ds.check_annotations()
    if ignored:
        log.info("%s/%s: ignored %d objects of %d classes not in data.classes: %s", cfg.data.root, image_set,
                 sum(ignored.values()), len(ignored), ", ".join(f"{name} ({n})" for name, n in ignored.items()))
    return ds


def build_proposal_store(cfg: Config, dataset, progress: bool = True, workers: int | None = None,
                         background: bool | None = None):
    """The proposal store of ``dataset``'s images, computing the missing ones with
    ``workers`` processes (default ``proposals.workers``; 0: the cores this process may
    use, see :func:`detect.distributed.proposal_workers`). With ``background`` (default
    ``proposals.overlap``; one process only), returns at once while they are computed,
    each image's entry awaited when it is read (:class:`proposals.store.ProposalStore`):
    the caller then runs its network on the first images while the proposals of the later
    ones are computed; it calls the store's ``wait()`` when done.

    Under torchrun every process must call it (it waits at a barrier): each computes its
    shard of the images, then rank 0 gets the store of every image and the others the
    store of their shard."""
    from detect import distributed
    from proposals import ProposalStore

    world = distributed.current()
    workers = distributed.proposal_workers(cfg.proposals.workers if workers is None else workers, world)
    background = (cfg.proposals.overlap if background is None else background) and not world.parallel

    def build(ids, background=False):
        return ProposalStore.build(
            cfg.proposals, ids, [dataset.image_path(i) for i in ids], cache_root=os.path.join(cfg.cache_dir, "proposals"),
            workers=workers, progress=progress and world.is_main, background=background)

    if not world.parallel:
        return build(list(dataset.image_ids), background)
    shard = build(world.shard(dataset.image_ids))
    distributed.barrier()
    return build(list(dataset.image_ids)) if world.is_main else shard


def proposal_key(cfg: Config) -> str:
    """The key of the proposals ``cfg`` gives (settings, the algorithm's and the cache's
    versions, imported files): part of the key of every output computed from them."""
    from proposals import ProposalStore
    from sppcore.fileio import stable_hash

    return stable_hash(ProposalStore.cache_key(cfg.proposals))
