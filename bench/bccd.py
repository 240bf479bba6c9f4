"""BCCD end to end: SPP-net and R-CNN on EfficientNet-Lite0's ImageNet weights, and SPP-net
on the compact trunk pretrained on BCCD itself.

Rows (each trains SVMs + box regressors with ``detect.pipeline.train`` and tests with
``detect.pipeline.test``, as tools/train_svm.py and tools/test_net.py do):

* ``spp``: configs/bccd_spp_efficientnet.yaml, all 292 trainval / 72 test images;
* ``rcnn``: configs/bccd_rcnn_efficientnet.yaml on the first ``--rcnn-num-train`` /
  ``--rcnn-num-test`` images (R-CNN's 2,000 crops per image cost about 20 s on a 2-core
  CPU), and SPP-net on the same subset beside it (``spp-subset``), so the two methods
  compare on equal data;
* ``compact``: configs/bccd_spp_compact.yaml, pretraining the compact trunk first when its
  network file is missing (tools/pretrain.py).

Also the proposal recall on the test images (IoU 0.5 and 0.7, boxes per image, seconds
per image). A trained model is reused when its directory holds a sealed model of the
same key (config, images, proposals, network; ``--retrain`` trains again). Prints the table and writes
JSON (default ``bench/results/bccd.json``)::

    python bench/bccd.py                              # all rows
    python bench/bccd.py --rows spp,compact
    python bench/bccd.py --rcnn-num-train 40 --rcnn-num-test 24
"""
from __future__ import annotations

import argparse
import logging
import os
import platform
import sys
import time

import numpy as np

from detect import pipeline
from detect.config import load_config
from detect.stages import build_proposal_store, open_dataset
from proposals.recall import best_overlaps, recall_at
from sppcore.fileio import atomic_write_json

ROWS = ("spp", "rcnn", "compact")
STAGES = ("conv", "warp", "pool", "fc", "svm", "nms", "bbox_reg", "total_excluding_proposals")
DATASETS = os.path.join("..", "shared", "datasets", "bccd", "VOC2007")


def train_or_reuse(cfg, out_dir: str, num_train: int | None, retrain: bool, progress: bool) -> tuple[str, float | None]:
    """The model directory for ``cfg`` trained on the first ``num_train`` images, and the
    training seconds (None when the directory already held a model of the same key: the
    whole config, the images and annotations, the proposals and the network, see
    :func:`detect.pipeline.train`, so a model from other settings or older proposals is
    never reused)."""
    from detect.model import sealed_model_key
    from sppcore.fileio import unseal_directory

    if retrain:
        unseal_directory(out_dir)
    before = sealed_model_key(out_dir)
    t0 = time.perf_counter()
    pipeline.train(cfg, out_dir=out_dir, num_images=num_train, progress=progress)
    seconds = time.perf_counter() - t0
    if before is not None and sealed_model_key(out_dir) == before:
        return out_dir, None
    return out_dir, seconds


def proposal_recall(cfg, num_images: int | None, progress: bool) -> dict:
    """Recall of the cached (or computed) proposals on the test images."""
    dataset = open_dataset(cfg, cfg.data.test_set, num_images)
    store = build_proposal_store(cfg, dataset, progress)
    ids = list(dataset.image_ids)
    props = [store[i] for i in ids]
    gt = [dataset.annotation(i).boxes[~dataset.annotation(i).difficult] for i in ids]
    overlaps = best_overlaps(props, gt)
    r50, r70 = recall_at(overlaps, [0.5, 0.7])
    return {"images": len(ids), "objects": int(len(overlaps)), "recall_0.5": float(r50), "recall_0.7": float(r70),
            "boxes_per_image": float(np.mean([len(p) for p in props])),
            "seconds_per_image": float(np.median([store.seconds(i) for i in ids]))}


def run_row(label: str, config: str, overrides, num_train, num_test, args) -> dict:
    cfg = load_config(config, overrides)
    progress = not args.quiet
    if cfg.network.weights == pipeline.pretrained_network_path(cfg):
        # the compact trunk, on BCCD train; a finished pretraining of the same key is reused
        t0 = time.perf_counter()
        pipeline.run_pretraining(cfg, progress=progress)
        print(f"{label}: pretrained {cfg.network.weights} ({time.perf_counter() - t0:.0f} s)", flush=True)
    out_dir = os.path.join(cfg.output_dir, "bench_bccd", label, "model")
    model_dir, train_s = train_or_reuse(cfg, out_dir, num_train, args.retrain, progress)
    results, test_dir = pipeline.test(model_dir, num_images=num_test, progress=progress)
    row = {"row": label, "config": config, "overrides": list(overrides), "method": results["method"],
           "trunk": cfg.network.trunk, "layer": results["layer"], "scales": results["scales"],
           "num_train": len(open_dataset(cfg, cfg.data.train_set, num_train)), "num_test": results["num_images"],
           "map": results["map"], "ap_per_class": results["ap_per_class"],
           "seconds_per_image": results["seconds_per_image"], "train_seconds": train_s, "test_dir": test_dir}
    print(f"{label:<12} mAP {row['map']:.3f}  " + "  ".join(f"{k} {v:.3f}" for k, v in row["ap_per_class"].items())
          + f"  {row['seconds_per_image']['total_excluding_proposals']:.3f} s/image", flush=True)
    return row


def format_table(rows, recall) -> str:
    classes = list(rows[0]["ap_per_class"]) if rows else []
    head = f"{'row':<12}{'method':<8}{'trunk':<20}{'train/test':>11}" + "".join(f"{c:>10}" for c in classes) + f"{'mAP':>7}"
    head += "".join(f"{s.replace('total_excluding_proposals', 'total'):>9}" for s in STAGES)
    lines = ["BCCD test (VOC07 mAP); seconds per image per stage (median, proposals excluded)", head]
    for r in rows:
        s = r["seconds_per_image"]
        line = f"{r['row']:<12}{r['method']:<8}{r['trunk']:<20}{r['num_train']:>5}/{r['num_test']:<5}"
        line += "".join(f"{(r['ap_per_class'][c] or 0.0):10.3f}" for c in classes) + f"{r['map']:7.3f}"
        line += "".join(f"{s.get(k, 0.0):9.3f}" for k in STAGES)
        lines.append(line)
    if recall:
        lines.append(f"proposals ({recall['backend']}) on {recall['images']} test images, {recall['objects']} objects: "
                     f"recall@0.5 {recall['recall_0.5']:.3f}, recall@0.7 {recall['recall_0.7']:.3f}, "
                     f"{recall['boxes_per_image']:.0f} boxes/image, {recall['seconds_per_image']:.2f} s/image")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", default=",".join(ROWS), help="comma-separated: " + ", ".join(ROWS))
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="config overrides for every row")
    p.add_argument("--num-train", type=int, default=None, help="trainval images of the spp and compact rows (all)")
    p.add_argument("--num-test", type=int, default=None, help="test images of the spp and compact rows (all)")
    p.add_argument("--rcnn-num-train", type=int, default=40, help="trainval images of the rcnn rows")
    p.add_argument("--rcnn-num-test", type=int, default=24, help="test images of the rcnn rows")
    p.add_argument("--retrain", action="store_true", help="train again even when a finished model exists")
    p.add_argument("--out", default="bench/results/bccd.json")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    if not os.path.isdir(DATASETS):
        print(f"BCCD not found at {DATASETS} (run from the project root)", file=sys.stderr)
        return 2
    wanted = [r.strip() for r in args.rows.split(",") if r.strip()]
    for r in wanted:
        if r not in ROWS:
            p.error(f"unknown row {r!r} (known: {', '.join(ROWS)})")
    rows = []
    t0 = time.perf_counter()
    spp_cfg = "configs/bccd_spp_efficientnet.yaml"
    if "spp" in wanted:
        rows.append(run_row("spp", spp_cfg, args.set, args.num_train, args.num_test, args))
    if "rcnn" in wanted:
        rows.append(run_row("spp-subset", spp_cfg, args.set, args.rcnn_num_train, args.rcnn_num_test, args))
        rows.append(run_row("rcnn", "configs/bccd_rcnn_efficientnet.yaml", args.set, args.rcnn_num_train,
                            args.rcnn_num_test, args))
    if "compact" in wanted:
        rows.append(run_row("compact", "configs/bccd_spp_compact.yaml", args.set, args.num_train, args.num_test, args))
    # the proposals every row shares, on the test images of the full-data rows
    recall_images = args.num_test if ("spp" in wanted or "compact" in wanted) else args.rcnn_num_test
    recall = proposal_recall(load_config(spp_cfg, args.set), recall_images, not args.quiet)
    recall["backend"] = load_config(spp_cfg, args.set).proposals.backend
    table = format_table(rows, recall)
    print(table)
    atomic_write_json(args.out, {"rows": rows, "proposal_recall": recall, "table": table.splitlines(),
                                 "seconds": time.perf_counter() - t0,
                                 "machine": {"platform": platform.platform(), "cpus": os.cpu_count()}})
    print(f"written {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
