"""Per-class NMS as the detector runs it: the blocked greedy kernel against its reference.

For each of ``--images`` generated images (the built-in generator, seed 0) its
selective-search proposals (``rcnn_fast``, up to 2,000 boxes) get ``--classes`` columns
of random scores with many ties (integers), and every class's windows go through NMS at
the test setting (IoU 0.3, the top ``--max-keep`` kept), timed for:

* ``sppcore.boxes.nms`` with ``max_keep`` (what ``detect.detector`` calls): candidates
  in score order, ``NMS_BLOCK`` at a time, one IoU matrix per block;
* the same kernel without ``max_keep`` (every box's fate decided, then the first kept);
* ``--reference`` also the one-box-at-a-time greedy loop written here (the plain numpy
  NMS most codebases carry), and ``torchvision.ops.nms`` (C++, float64 boxes, score order
  fixed by ranks so that ties break the same way).

Every variant's kept indices are checked equal to the kernel's (the kernel itself is
tested against ``nms_reference`` in tests/test_boxes.py). Seconds per image (all
classes) are medians over images; prints a table and writes JSON (default
``bench/results/nms.json``).

Example::

    python bench/nms.py --images 10 --classes 20 --reference
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=10, help="generated images (default: %(default)s)")
    parser.add_argument("--classes", type=int, default=20, help="score columns per image (default: %(default)s, VOC's)")
    parser.add_argument("--max-keep", type=int, default=100, help="test.max_per_class (default: %(default)s)")
    parser.add_argument("--iou", type=float, default=0.3, help="test.nms_iou (default: %(default)s)")
    parser.add_argument("--reference", action="store_true", help="also the plain greedy loop and torchvision's nms")
    parser.add_argument("--out", default="bench/results/nms.json", help="JSON output")
    return parser


def greedy_loop(boxes: np.ndarray, scores: np.ndarray, iou_thresh: float) -> np.ndarray:
    """One kept box at a time against every remaining one: the usual numpy NMS."""
    b = np.asarray(boxes, dtype=np.float64)
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
    areas = np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)
    keep = []
    while order.size > 0:
        i = order[0]
        keep.append(i)
        rest = order[1:]
        inter = (np.clip(np.minimum(b[i, 2], b[rest, 2]) - np.maximum(b[i, 0], b[rest, 0]), 0, None)
                 * np.clip(np.minimum(b[i, 3], b[rest, 3]) - np.maximum(b[i, 1], b[rest, 1]), 0, None))
        union = areas[i] + areas[rest] - inter
        iou = np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)
        order = rest[iou <= iou_thresh]
    return np.asarray(keep, dtype=np.int64)


def torchvision_nms(boxes: np.ndarray, scores: np.ndarray, iou_thresh: float) -> np.ndarray:
    import torch
    import torchvision

    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
    b = torch.from_numpy(np.asarray(boxes, dtype=np.float64)[order])
    kept = torchvision.ops.nms(b, -torch.arange(len(order), dtype=torch.float64), iou_thresh).numpy()
    return order[kept]


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from detect.synthetic import generate_synthetic_voc
    from detect.voc import VOCDataset
    from proposals.config import ProposalConfig
    from proposals.selective_search import compute_proposals
    from sppcore.boxes import NMS_BLOCK, nms
    from sppcore.images import load_image

    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        root = generate_synthetic_voc(tmp, seed=0, num_trainval=0, num_test=args.images, progress=False)
        dataset = VOCDataset(root, "test")
        images = [compute_proposals(load_image(dataset.image_path(i)), ProposalConfig()) for i in dataset.image_ids]
    variants = {"kernel, max_keep": lambda b, s: nms(b, s, args.iou, max_keep=args.max_keep),
                "kernel, all kept": lambda b, s: nms(b, s, args.iou)[: args.max_keep]}
    if args.reference:
        variants["greedy loop"] = lambda b, s: greedy_loop(b, s, args.iou)[: args.max_keep]
        variants["torchvision.ops.nms"] = lambda b, s: torchvision_nms(b, s, args.iou)[: args.max_keep]
    seconds = {name: [] for name in variants}
    for boxes in images:
        scores = rng.integers(0, 50, size=(len(boxes), args.classes)).astype(np.float32)
        expected = [nms(boxes, scores[:, k], args.iou, max_keep=args.max_keep) for k in range(args.classes)]
        for name, fn in variants.items():  # interleaved, image by image
            t0 = time.perf_counter()
            got = [fn(boxes, scores[:, k]) for k in range(args.classes)]
            seconds[name].append(time.perf_counter() - t0)
            assert all(np.array_equal(g, e) for g, e in zip(got, expected)), f"{name}: other boxes kept"
    medians = {name: float(np.median(v)) for name, v in seconds.items()}
    base = medians["kernel, max_keep"]
    print(f"NMS of {args.classes} classes per image, {args.images} generated images "
          f"({int(np.median([len(b) for b in images]))} proposals median), IoU {args.iou}, top {args.max_keep}")
    print(f"{'variant':<22}{'s/image':>10}{'x kernel':>10}")
    for name, value in medians.items():
        print(f"{name:<22}{value:10.4f}{value / base:10.1f}")
    from sppcore.fileio import atomic_write_json

    out = os.path.join(ROOT, args.out) if not os.path.isabs(args.out) else args.out
    atomic_write_json(out, {"images": args.images, "classes": args.classes, "iou": args.iou, "max_keep": args.max_keep,
                            "block": NMS_BLOCK, "proposals_per_image": [len(b) for b in images],
                            "seconds_per_image_median": medians, "machine": platform.platform(),
                            "cores": len(os.sched_getaffinity(0))})
    print(f"written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
