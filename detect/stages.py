"""The first stages shared by every tool: opening an image set, its proposal store."""
from __future__ import annotations

import os

from detect.config import Config
from detect.errors import UserError

__all__ = ["open_dataset", "build_proposal_store"]


def open_dataset(cfg: Config, image_set: str, num_images: int | None = None):
    from detect.voc import VOCDataset

    ds = VOCDataset(cfg.data.root, image_set, classes=cfg.data.classes or None)
    if num_images is not None:
        if num_images <= 0:
            raise UserError(f"--num-images must be positive, got {num_images}")
        ds.image_ids = ds.image_ids[:num_images]
    return ds


def build_proposal_store(cfg: Config, dataset, progress: bool = True, workers: int = 2):
    from proposals import ProposalStore

    ids = list(dataset.image_ids)
    return ProposalStore.build(
        cfg.proposals, ids, [dataset.image_path(i) for i in ids],
        cache_root=os.path.join(cfg.cache_dir, "proposals"), workers=workers, progress=progress)
