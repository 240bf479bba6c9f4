"""The shape of the SPP-net paper's Table 9 on any config (default: the built-in data).

For SPP-net (1 scale and, with ``--five-scales``, 5 scales) and R-CNN on the same
network: SVMs on pool5, on fc7 and on fine-tuned fc7 (fc6, fc7 and a new fc8 fine-tuned
on each method's own pool5 vectors of the whole train set, conv frozen,
``tools/finetune_fc.py``), each tested without and with bounding-box regression, plus the
seconds per image per stage of every row. Beside the fine-tuned SVMs, the fine-tuned
network's own softmax (``classifier.type=softmax``: fc8 on the same fine-tuned fc7, no
SVMs; what Fast R-CNN used, and what cost R-CNN 3.3 points) with the same box regressors'
settings: SVM against softmax on the same features.
Every row trains its own model (``pipeline.train``, cached per name) and is tested once:
the detections with and without the regressors come from the same window scores. A
fine-tuned network is reused only when its directory is sealed with the same key
(settings, data, starting network: :func:`detect.pipeline.run_finetuning`).

Prints the table and writes JSON (default ``bench/results/table9.json``). Needs the
configured network (for the default: ``make quickstart`` first)::

    python -m bench.table9                         # built-in default, 100 + 100 images
    python -m bench.table9 --num-train 50 --num-test 50 --methods spp
"""
from __future__ import annotations

import argparse
import logging
import os
import platform
import time

from tqdm import tqdm

from detect import pipeline
from detect.cli import BUILTIN_FIVE_SCALES
from detect.config import load_config
from detect.detector_api import Detector
from detect.evaluation import evaluate_detections
from detect.stages import build_proposal_store, open_dataset
from detect.testing import median_timings
from sppcore.fileio import atomic_write_json

FIVE_SCALES = list(BUILTIN_FIVE_SCALES)  # tools/quickstart.py's five scales for the default


def evaluate_with_and_without_regression(model_dir: str, num_images: int | None, overrides, progress: bool):
    """(mAP without box regression, mAP with it, median seconds per stage) of a model,
    by its ``test.metric`` (default VOC07); both from the same window scores."""
    detector = Detector.load(model_dir, device=None, overrides=overrides)
    cfg = detector.config
    dataset = open_dataset(cfg, cfg.data.test_set, num_images)
    store = build_proposal_store(cfg, dataset, progress)
    plain, regressed, timings = [], [], []
    for image_id in tqdm(dataset.image_ids, desc=os.path.basename(os.path.dirname(model_dir)), disable=not progress):
        scored = detector.score(dataset.load_image(image_id), store[image_id])
        without, nms_s = detector.postprocess(scored, regress=False)
        with_reg, _ = detector.postprocess(scored)
        plain.append(without)
        regressed.append(with_reg)
        timings.append({**scored.timings, "nms": nms_s, "proposals": float(store.seconds(image_id))})
    gt = dataset.gt_lists()
    maps = []
    for dets in (plain, regressed):
        ev = evaluate_detections(cfg.test.metric, [d["boxes"] for d in dets], [d["labels"] for d in dets],
                                 [d["scores"] for d in dets], *gt, classes=detector.classes)
        maps.append(float(ev["map"]))
    return maps[0], maps[1], median_timings(timings)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="configs/default.yaml")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="config overrides")
    p.add_argument("--methods", default="spp,rcnn", help="comma-separated: spp, rcnn")
    p.add_argument("--five-scales", action="store_true", help="also SPP-net at 5 scales (the 1-scale SVMs)")
    p.add_argument("--num-train", type=int, default=None, help="trainval images for SVMs and fine-tuning")
    p.add_argument("--num-test", type=int, default=None, help="test images")
    p.add_argument("--out", default="bench/results/table9.json")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    progress = not args.quiet
    base = load_config(args.config, args.set)
    # every row's outputs under <output_dir>/table9/<name>/ (names are plain names)
    table_dir = f"output_dir={os.path.join(base.output_dir, 'table9')}"
    rows = []

    def run(label, method, layer, weights=None, five=False, classifier="svm"):
        over = [f"features.method={method}", f"features.layer={layer}", f"classifier.type={classifier}",
                table_dir, f"name={base.name}_{method}_{label.replace(' ', '_')}"]
        if weights:
            over.append(f"network.weights={weights}")
        cfg = load_config(args.config, args.set + over)
        t0 = time.perf_counter()
        model_dir = pipeline.train(cfg, num_images=args.num_train, progress=progress)
        t_train = time.perf_counter() - t0
        entries = [("1 scale", [])] + ([("5 scales", [f"features.scales={FIVE_SCALES}"])] if five else [])
        for scales, test_over in entries:
            no_bb, bb, secs = evaluate_with_and_without_regression(model_dir, args.num_test, test_over, progress)
            name = "R-CNN" if method == "rcnn" else f"SPP-net {scales}"
            rows.append({"method": name, "features": label, "classifier": classifier, "map": no_bb,
                         "map_bbox": bb, "seconds_per_image": secs, "train_seconds": t_train})
            print(f"{name:<18}{label:<11} mAP {no_bb:.3f}  + bbox {bb:.3f}  "
                  f"{secs['total_excluding_proposals']:.3f} s/image", flush=True)

    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    for method in methods:
        if method not in ("spp", "rcnn"):
            p.error(f"unknown method {method!r}")
        run("pool5", method, "pool5")
        run("fc7", method, "fc7", five=args.five_scales and method == "spp")
        suffix = "" if method == "spp" else "_rcnn"
        ft_cfg = load_config(args.config, args.set + [f"features.method={method}", table_dir,
                                                      f"name={base.name}_finetune{suffix}"])
        path = os.path.join(ft_cfg.output_dir, ft_cfg.name, "finetune", "network.npz")
        # reused when sealed with the same key (settings, data, network), trained otherwise
        pipeline.run_finetuning(ft_cfg, path, progress=progress)
        run("ft fc7", method, "fc7", weights=path, five=args.five_scales and method == "spp")
        run("ft softmax", method, "fc7", weights=path, five=args.five_scales and method == "spp",
            classifier="softmax")

    header = f"{'method':<18}{'layer':<11}{'mAP':>7}{'+bbox':>8}{'s/image':>10}{'conv':>8}{'pool/warp':>10}{'fc':>8}"
    lines = [header]
    for r in rows:
        s = r["seconds_per_image"]
        lines.append(f"{r['method']:<18}{r['features']:<11}{r['map']:7.3f}{r['map_bbox']:8.3f}"
                     f"{s['total_excluding_proposals']:10.3f}{s.get('conv', 0):8.3f}{s.get('pool', 0) + s.get('warp', 0):10.3f}{s.get('fc', 0):8.3f}")
    print("\n".join(lines))
    atomic_write_json(args.out, {"config": args.config, "overrides": args.set, "num_train": args.num_train,
                                 "num_test": args.num_test, "rows": rows,
                                 "machine": {"platform": platform.platform(), "cpus": os.cpu_count()}})
    print(f"written {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
