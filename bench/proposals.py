"""Benchmark every proposal backend on the same images.

Images: the first ``--num-images`` of the generated test split (made in the cache if
missing) plus the two photos scikit-learn ships (china.jpg, flower.jpg) resized to
500x375 (no ground truth: timing and box counts only). The pure-Python `selectivesearch`
backend runs twice, at its example's scale (500, the config default) and at a finer 100;
it takes seconds per image, so it runs on the first ``--ss-images`` images only.
Proposals are computed fresh in a temporary cache (2 worker processes, one thread each),
and the per-image compute time of each image is recorded. The photos are timed in this
process, one OpenCV thread, ``--repeats`` times each (median), since the generated images
(300 to 480 px a side) are somewhat smaller than 500x375.

Prints a table (boxes/img, recall@0.5, recall@0.7, AR, median seconds/img) and writes
JSON (default ``bench/results/proposals.json``) and a recall plot beside it.

Example::

    python bench/proposals.py --num-images 50
    python bench/proposals.py --num-images 250 --ss-images 20   # recall on the whole split
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time

# This file is named like the `proposals` package it measures; run as a script, its own
# directory would come first on the import path and shadow the package.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _HERE]


def _variants():
    """(row name, settings): every backend with its defaults, and the package at a finer scale."""
    from proposals import BACKENDS, ProposalConfig

    rows = [(b, ProposalConfig(backend=b)) for b in BACKENDS]
    return rows + [("selectivesearch/s100", ProposalConfig(backend="selectivesearch", ss_scale=100.0))]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num-images", type=int, default=50, help="generated test images (default: %(default)s)")
    parser.add_argument("--ss-images", type=int, default=10, help="images for the selectivesearch backend")
    parser.add_argument("--backends", nargs="+", default=None, help="only these rows (default: all)")
    parser.add_argument("--repeats", type=int, default=3, help="timings per photo (median)")
    parser.add_argument("--data", default="data/cache/bench/synthetic", help="where the generated data goes")
    parser.add_argument("--out", default="bench/results/proposals.json", help="JSON output")
    return parser


def sample_photos() -> dict:
    """scikit-learn's two sample photos, RGB uint8 resized to 500x375."""
    import cv2
    from sklearn.datasets import load_sample_images

    return {name: cv2.resize(img, (500, 375), interpolation=cv2.INTER_AREA)
            for name, img in zip(("china", "flower"), load_sample_images().images)}


def time_photo(image, cfg, repeats: int) -> tuple[int, float]:
    """(boxes, median seconds) of compute_proposals on one image."""
    import numpy as np

    from proposals import compute_proposals

    times = []
    for _ in range(max(1, repeats)):
        t0 = time.perf_counter()
        boxes = compute_proposals(image, cfg)
        times.append(time.perf_counter() - t0)
    return len(boxes), float(np.median(times))


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    import cv2

    from detect.fileio import atomic_write_json
    from detect.synthetic import generate_synthetic_voc
    from detect.voc import VOCDataset
    from proposals import ProposalStore
    from proposals.report import format_proposal_table, plot_recall_curves, proposal_summary

    root = generate_synthetic_voc(args.data, seed=0, num_trainval=0, num_test=max(args.num_images, 1))
    ds = VOCDataset(root, "test")
    ids = ds.image_ids[: args.num_images]
    gt = [ds.annotation(i).boxes[~ds.annotation(i).difficult] for i in ids]
    variants = [(name, cfg) for name, cfg in _variants() if not args.backends or name in args.backends]
    if not variants:
        raise SystemExit(f"--backends: none of {args.backends} is a row of this benchmark")
    rows, photo_rows = [], []
    photos = sample_photos()
    with tempfile.TemporaryDirectory() as tmp:
        for backend, cfg in variants:
            n = args.ss_images if cfg.backend == "selectivesearch" else len(ids)
            t0 = time.perf_counter()
            store = ProposalStore.build(cfg, ids[:n], [ds.image_path(i) for i in ids[:n]], os.path.join(tmp, "c"))
            wall = time.perf_counter() - t0
            props = [store[i] for i in ids[:n]]
            row = proposal_summary(backend, props, gt[:n], [store.seconds(i) for i in ids[:n]])
            row["wall_seconds_2_workers"] = wall
            rows.append(row)
    cv2.setNumThreads(1)  # as in the store's workers
    for backend, cfg in variants:
        timed = [time_photo(img, cfg, args.repeats) for img in photos.values()]
        photo_rows.append({"name": backend, "boxes": [t[0] for t in timed], "seconds": [t[1] for t in timed]})
    print(f"generated test split, first {len(ids)} images (selectivesearch: first {args.ss_images})")
    print(format_proposal_table(rows))
    print(f"\nsklearn sample photos, 500x375 (boxes, median seconds of {args.repeats}, one thread)")
    for r in photo_rows:
        print(f"  {r['name']:<20s} china {r['boxes'][0]:5d} boxes {r['seconds'][0]:5.2f} s   "
              f"flower {r['boxes'][1]:5d} boxes {r['seconds'][1]:5.2f} s")
    atomic_write_json(args.out, {"machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
                                 "generated": rows, "photos": photo_rows, "num_images": len(ids),
                                 "ss_images": args.ss_images, "photo_repeats": args.repeats})
    plot_recall_curves(rows, os.path.splitext(args.out)[0] + ".png", title="proposal backends, generated test split")
    print(f"\nwritten {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
