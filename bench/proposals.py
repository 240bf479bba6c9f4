"""Benchmark every proposal backend on the same images.

Images: the first ``--num-images`` of the generated test split (made in the cache if
missing) plus the two photos scikit-learn ships (china.jpg, flower.jpg) resized to
500x375 (no ground truth: timing and box counts only). The pure-Python `selectivesearch`
backend takes seconds per image, so it runs on the first ``--ss-images`` images only.
Proposals are computed fresh in a temporary cache (2 worker processes, one thread each),
and the per-image compute time of each image is recorded.

Prints a table (boxes/img, recall@0.5, recall@0.7, AR, median seconds/img) and writes
JSON (default ``bench/results/proposals.json``) and a recall plot beside it.

Example::

    python bench/proposals.py --num-images 50
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num-images", type=int, default=50, help="generated test images (default: %(default)s)")
    parser.add_argument("--ss-images", type=int, default=10, help="images for the selectivesearch backend")
    parser.add_argument("--data", default="data/cache/bench/synthetic", help="where the generated data goes")
    parser.add_argument("--out", default="bench/results/proposals.json", help="JSON output")
    return parser


def sample_photos(out_dir: str) -> list[str]:
    import cv2
    from sklearn.datasets import load_sample_images

    paths = []
    for name, img in zip(("china", "flower"), load_sample_images().images):
        path = os.path.join(out_dir, f"{name}.png")
        cv2.imwrite(path, cv2.cvtColor(cv2.resize(img, (500, 375), interpolation=cv2.INTER_AREA), cv2.COLOR_RGB2BGR))
        paths.append(path)
    return paths


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from detect.fileio import atomic_write_json
    from detect.synthetic import generate_synthetic_voc
    from detect.voc import VOCDataset
    from proposals import BACKENDS, ProposalConfig, ProposalStore
    from proposals.report import format_proposal_table, plot_recall_curves, proposal_summary

    root = generate_synthetic_voc(args.data, seed=0, num_trainval=0, num_test=max(args.num_images, 1))
    ds = VOCDataset(root, "test")
    ids = ds.image_ids[: args.num_images]
    gt = [ds.annotation(i).boxes[~ds.annotation(i).difficult] for i in ids]
    rows, photo_rows = [], []
    with tempfile.TemporaryDirectory() as tmp:
        photos = sample_photos(tmp)
        for backend in BACKENDS:
            n = args.ss_images if backend == "selectivesearch" else len(ids)
            cfg = ProposalConfig(backend=backend)
            t0 = time.perf_counter()
            store = ProposalStore.build(cfg, ids[:n], [ds.image_path(i) for i in ids[:n]], os.path.join(tmp, "c"))
            wall = time.perf_counter() - t0
            props = [store[i] for i in ids[:n]]
            row = proposal_summary(backend, props, gt[:n], [store.seconds(i) for i in ids[:n]])
            row["wall_seconds_2_workers"] = wall
            rows.append(row)
            pstore = ProposalStore.build(cfg, ["china", "flower"], photos, os.path.join(tmp, "p"), workers=1, progress=False)
            photo_rows.append({"name": backend, "boxes": [len(pstore[i]) for i in ("china", "flower")],
                               "seconds": [pstore.seconds(i) for i in ("china", "flower")]})
    print(f"generated test split, first {len(ids)} images (selectivesearch: first {args.ss_images})")
    print(format_proposal_table(rows))
    print("\nsklearn sample photos, 500x375 (boxes, seconds)")
    for r in photo_rows:
        print(f"  {r['name']:<16s} china {r['boxes'][0]:5d} boxes {r['seconds'][0]:5.2f} s   "
              f"flower {r['boxes'][1]:5d} boxes {r['seconds'][1]:5.2f} s")
    atomic_write_json(args.out, {"machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
                                 "generated": rows, "photos": photo_rows, "num_images": len(ids)})
    plot_recall_curves(rows, os.path.splitext(args.out)[0] + ".png", title="proposal backends, generated test split")
    print(f"\nwritten {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
