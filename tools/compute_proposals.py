"""Compute (or find in the cache) selective-search proposals for an image set.

Proposals are cached under ``<cache_dir>/proposals/<backend>-<key>/`` keyed by the proposal
settings and the image files; an interrupted run resumes. Under torchrun each process
computes its shard of the images (see README, "More than one process").

Examples::

    python tools/compute_proposals.py --config configs/default.yaml
    python tools/compute_proposals.py --config configs/spp_alexnet_voc07.yaml --image-set test
    python tools/compute_proposals.py --set proposals.backend=opencv_fast proposals.max_boxes=1000
    torchrun --standalone --nproc-per-node 2 tools/compute_proposals.py --config configs/default.yaml
    # R-CNN's published VOC boxes instead of computing them
    python tools/compute_proposals.py --set proposals.backend=rcnn_mat proposals.mat_path=data/selective_search_data
"""
from __future__ import annotations

import argparse
import sys

from detect.cli import DEFAULT_CONFIG, UserError, add_config_arguments, config_from_args, run_tool, setup_logging


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_arguments(parser, DEFAULT_CONFIG)
    parser.add_argument("--image-set", default=None, help="image set (default: the config's train and test sets)")
    parser.add_argument("--num-images", type=int, default=None, help="only the first N images")
    parser.add_argument("--workers", type=int, default=None,
                        help="parallel processes per tool process (default: proposals.workers; 0: the cores available)")
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)

    def body() -> int:
        setup_logging()
        cfg = config_from_args(args)
        if args.workers is not None and args.workers < 0:
            raise UserError(f"--workers must be 0 (the cores available) or positive, got {args.workers}")
        from detect import distributed
        from detect.stages import build_proposal_store, open_dataset

        world = distributed.init("cpu")  # selective search runs on the CPU
        for image_set in [args.image_set] if args.image_set else [cfg.data.train_set, cfg.data.test_set]:
            dataset = open_dataset(cfg, image_set, args.num_images)
            store = build_proposal_store(cfg, dataset, workers=args.workers)
            if world.is_main:
                counts = [len(store[i]) for i in dataset.image_ids]
                print(f"{image_set}: {len(dataset)} images, {sum(counts) / max(1, len(counts)):.0f} boxes/image "
                      f"({cfg.proposals.backend}) in {store.directory}")
        distributed.finish()
        return 0

    return run_tool(body)


if __name__ == "__main__":
    sys.exit(main())
