"""Benchmark every proposal backend on the same images.

Two image sets with ground truth, one table each (boxes/img, recall@0.5, recall@0.7, AR,
median seconds/img):

* the first ``--num-images`` of the generated test split (made in ``--data`` if missing);
* real PASCAL VOC photos: ``voc-photos-dev`` (50 photos, the 20 VOC classes) found at
  ``../shared/datasets`` from the project root, or any VOC-layout ``--photos`` root with
  its ``--photos-set``; skipped with a message when absent.

Besides every backend with its defaults, ``rcnn_fast/min20`` is the default with R-CNN's
20 px minimum box size, and ``selectivesearch/s100`` the package at a finer scale (100
instead of its example's 500). The pure-Python ``selectivesearch`` takes seconds per image,
so it runs on the first ``--ss-images`` images of each set only. Proposals are computed
fresh in a temporary cache (2 worker processes, one thread each), and each image's
compute time is recorded. The two photos scikit-learn ships (china.jpg, flower.jpg,
resized to 500x375, no ground truth) are timed in this process, one OpenCV thread,
``--repeats`` times each (median).

Writes JSON (default ``bench/results/proposals.json``) and a recall plot per image set
beside it.

Example::

    python bench/proposal_recall.py --num-images 50
    python bench/proposal_recall.py --backends rcnn_fast rcnn_fast/min20 --num-images 100
    python bench/proposal_recall.py --num-images 250 --ss-images 20   # recall on the whole split
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time

_HERE = os.path.dirname(os.path.abspath(__file__))
VOC_PHOTOS = os.path.normpath(os.path.join(_HERE, "..", "..", "shared", "datasets", "voc-photos-dev", "VOC2007"))


def _variants():
    """(row name, settings): every backend with its defaults, and the package at a finer scale."""
    from proposals import ALGORITHMS, ProposalConfig

    rows = [(b, ProposalConfig(backend=b)) for b in ALGORITHMS]
    return rows + [("rcnn_fast/min20", ProposalConfig(min_size=20)),
                   ("selectivesearch/s100", ProposalConfig(backend="selectivesearch", ss_scale=100.0))]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num-images", type=int, default=50, help="generated test images (default: %(default)s)")
    parser.add_argument("--ss-images", type=int, default=10, help="images for the selectivesearch backend")
    parser.add_argument("--backends", nargs="+", default=None, help="only these rows (default: all)")
    parser.add_argument("--repeats", type=int, default=3, help="timings per photo (median)")
    parser.add_argument("--data", default="data/cache/bench/synthetic", help="where the generated data goes")
    parser.add_argument("--photos", default=VOC_PHOTOS, help="VOC-layout root of real photos (default: voc-photos-dev)")
    parser.add_argument("--photos-set", default="dev", help="image set of --photos (default: %(default)s)")
    parser.add_argument("--photos-classes", nargs="+", default=None,
                        help="classes of --photos (default: the 20 VOC classes)")
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


def image_sets(args) -> list[tuple[str, object, list]]:
    """(title, dataset, image ids) of the generated split and, when present, the photos."""
    from detect.synthetic import generate_synthetic_voc
    from detect.voc import VOC_CLASSES, VOCDataset

    root = generate_synthetic_voc(args.data, seed=0, num_trainval=0, num_test=max(args.num_images, 1))
    ds = VOCDataset(root, "test")
    sets = [(f"generated test split, first {args.num_images} images", ds, ds.image_ids[: args.num_images])]
    if os.path.isdir(args.photos):
        photos = VOCDataset(args.photos, args.photos_set, classes=args.photos_classes or VOC_CLASSES)
        sets.append((f"real photos {args.photos} ({args.photos_set}, {len(photos)} images)", photos, photos.image_ids))
    else:
        print(f"real photos skipped: {args.photos} not found (voc-photos-dev lives in ../shared/datasets "
              "relative to the project root; --photos names another VOC-layout root)")
    return sets


def measure(title, ds, ids, variants, ss_images, tmp) -> list[dict]:
    """One summary row per variant on these images, computed in a fresh cache."""
    from proposals import ProposalStore
    from proposals.report import proposal_summary

    gt = [ds.annotation(i).boxes[~ds.annotation(i).difficult] for i in ids]
    rows = []
    for backend, cfg in variants:
        n = ss_images if cfg.backend == "selectivesearch" else len(ids)
        t0 = time.perf_counter()
        store = ProposalStore.build(cfg, ids[:n], [ds.image_path(i) for i in ids[:n]], os.path.join(tmp, "c"))
        wall = time.perf_counter() - t0
        row = proposal_summary(backend, [store[i] for i in ids[:n]], gt[:n], [store.seconds(i) for i in ids[:n]])
        row["wall_seconds_2_workers"] = wall
        rows.append(row)
    return rows


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    import cv2

    from proposals.report import format_proposal_table, plot_recall_curves
    from sppcore.fileio import atomic_write_json

    variants = [(name, cfg) for name, cfg in _variants() if not args.backends or name in args.backends]
    if not variants:
        raise SystemExit(f"--backends: none of {args.backends} is a row of this benchmark")
    tables = []
    with tempfile.TemporaryDirectory() as tmp:
        for title, ds, ids in image_sets(args):
            tables.append((title, measure(title, ds, ids, variants, args.ss_images, tmp)))
    cv2.setNumThreads(1)  # as in the store's workers
    photo_rows = []
    for backend, cfg in variants:
        timed = [time_photo(img, cfg, args.repeats) for img in sample_photos().values()]
        photo_rows.append({"name": backend, "boxes": [t[0] for t in timed], "seconds": [t[1] for t in timed]})
    for title, rows in tables:
        print(f"{title} (selectivesearch: first {args.ss_images})")
        print(format_proposal_table(rows) + "\n")
    print(f"sklearn sample photos, 500x375 (boxes, median seconds of {args.repeats}, one thread)")
    for r in photo_rows:
        print(f"  {r['name']:<20s} china {r['boxes'][0]:5d} boxes {r['seconds'][0]:5.2f} s   "
              f"flower {r['boxes'][1]:5d} boxes {r['seconds'][1]:5.2f} s")
    result = {"machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
              "generated": tables[0][1], "photos": photo_rows, "num_images": args.num_images,
              "ss_images": args.ss_images, "photo_repeats": args.repeats}
    if len(tables) > 1:
        result["real_photos"] = {"root": args.photos, "image_set": args.photos_set, "rows": tables[1][1]}
    atomic_write_json(args.out, result)
    base = os.path.splitext(args.out)[0]
    plot_recall_curves(tables[0][1], base + ".png", title="proposal backends, generated test split")
    if len(tables) > 1:
        plot_recall_curves(tables[1][1], base + "_real_photos.png", title=f"proposal backends, {args.photos_set} photos")
    print(f"\nwritten {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
