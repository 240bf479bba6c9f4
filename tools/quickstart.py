"""The README's main job: the whole chain on the built-in default, from nothing.

1. generates the built-in data (procedurally drawn objects, VOC2007 layout): the
   detection dataset ``data.root`` and a larger pretraining dataset ``pretrain.root``
   (the role ImageNet plays for the paper);
2. pretrains the compact trunk with an SPP classification head (multi-size crop epochs
   alternating with whole-image epochs; ``tools/pretrain.py``), or, when the shipped
   network (``pretrain.shipped``: ``data/pretrained/default``) was trained with exactly
   these settings, images and CPU kernels, uses that one (``--from-scratch`` trains);
3. computes selective-search proposals, SPP features, SVMs with hard-negative mining and
   box regressors (``tools/train_svm.py``), for SPP-net and for R-CNN on the same weights;
4. tests SPP-net at 1 scale and at 5 scales (``--five-scales``, with the 1-scale SVMs) and
   R-CNN on the test set (``tools/test_net.py``);
5. draws the 1-scale model's detections on one test image (``tools/demo.py``);

and prints one table: mAP, seconds per image and R-CNN's time over each method's. Every
stage is cached (data, pretrained network, proposals, conv5 maps, models and per-image
detections, each keyed by its settings, inputs and network; see sppcore/fileio.py), so a
second run takes seconds; ``--force-test`` recomputes the detections. Outputs go to
``<output_dir>/<name>/``.

Example::

    python tools/quickstart.py
    python tools/quickstart.py --detect-images 40 --pretrain-images 200   # a smaller run
    python tools/quickstart.py --from-scratch   # pretrain here even where a shipped network fits
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time

from detect.cli import (BUILTIN_FIVE_SCALES, DEFAULT_CONFIG, add_config_arguments, config_from_args, run_tool,
                        setup_logging)

BUILTIN_SEED = 0
PRETRAIN_SEED = 1
# the demo draws the DEMO_TOP best-scoring detections, whatever their SVM scores (a weak
# default model may score nothing above the margin's negative side, -1)
DEMO_THRESHOLD = float("-inf")
DEMO_TOP = 5


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_arguments(parser, DEFAULT_CONFIG)
    parser.add_argument("--detect-images", type=int, default=100,
                        help="trainval and test images of the detection dataset, each (default: %(default)s)")
    parser.add_argument("--pretrain-images", type=int, default=800,
                        help="trainval images of the pretraining dataset; a quarter as many more for its "
                             "validation (default: %(default)s)")
    parser.add_argument("--five-scales", type=int, nargs="+", default=list(BUILTIN_FIVE_SCALES),
                        help="scales of the multi-scale test (default: %(default)s)")
    parser.add_argument("--from-scratch", action="store_true",
                        help="pretrain the trunk here instead of using the shipped network (pretrain.shipped)")
    parser.add_argument("--force-test", action="store_true", help="re-run the tests even when results exist")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser


def _test(model_dir: str, out_dir: str, overrides, force: bool, progress: bool) -> dict:
    """pipeline.test: per-image detections are reused when the model, the settings and the
    image are the same (``--force-test`` deletes them first)."""
    import shutil

    from detect.pipeline import test

    if force:
        shutil.rmtree(os.path.join(out_dir, "detections"), ignore_errors=True)
    results, _ = test(model_dir, out_dir=out_dir, overrides=list(overrides), progress=progress)
    print(results.pop("table"))
    return results


def format_final_table(rows: list[dict]) -> str:
    """rows: dicts with ``name``, ``map``, ``seconds`` (per image, proposals excluded)."""
    rcnn = next((r for r in rows if r["name"] == "R-CNN"), None)
    lines = [f"{'method':<22}{'mAP':>7}{'s/image':>10}{'R-CNN time / this':>20}"]
    for r in rows:
        ratio = f"{rcnn['seconds'] / r['seconds']:.1f}x" if rcnn and r["seconds"] > 0 else "-"
        lines.append(f"{r['name']:<22}{r['map']:7.3f}{r['seconds']:10.3f}{ratio:>20}")
    return "\n".join(lines)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)

    def body() -> int:
        setup_logging()
        t_start = time.perf_counter()
        cfg = config_from_args(args)
        if args.from_scratch:
            cfg = dataclasses.replace(cfg, pretrain=dataclasses.replace(cfg.pretrain, shipped=""))
        progress = not args.quiet
        from detect.pipeline import cpu_kernels, demo, pretrained_network_path, run_pretraining, train
        from detect.synthetic import generate_synthetic_voc

        n = args.detect_images
        generate_synthetic_voc(os.path.dirname(os.path.normpath(cfg.data.root)), seed=BUILTIN_SEED,
                               num_trainval=n, num_test=n, progress=progress)
        pre_root = cfg.pretrain.root or cfg.data.root
        if os.path.normpath(pre_root) != os.path.normpath(cfg.data.root):
            generate_synthetic_voc(os.path.dirname(os.path.normpath(pre_root)), seed=PRETRAIN_SEED,
                                   num_trainval=args.pretrain_images, num_test=max(1, args.pretrain_images // 4),
                                   progress=progress)
        t_data = time.perf_counter()

        report = run_pretraining(cfg, progress=progress)
        t_pretrain = time.perf_counter()
        weights = pretrained_network_path(cfg)
        base = dataclasses.replace(cfg, network=dataclasses.replace(cfg.network, weights=weights))
        out_root = os.path.join(cfg.output_dir, cfg.name)

        spp_cfg = dataclasses.replace(base, features=dataclasses.replace(base.features, method="spp"))
        rcnn_cfg = dataclasses.replace(base, features=dataclasses.replace(base.features, method="rcnn"))
        # each model directory is sealed with its training key: an up-to-date one is reused
        spp_model = train(spp_cfg, out_dir=os.path.join(out_root, "spp", "model"), progress=progress)
        rcnn_model = train(rcnn_cfg, out_dir=os.path.join(out_root, "rcnn", "model"), progress=progress)
        t_train = time.perf_counter()

        five = "[" + ",".join(str(s) for s in args.five_scales) + "]"
        runs = [
            (f"SPP-net 1 scale ({spp_cfg.features.scales[0]})", spp_model, os.path.join(out_root, "spp", "test_1scale"), []),
            ("SPP-net 5 scales", spp_model, os.path.join(out_root, "spp", "test_5scale"), [f"features.scales={five}"]),
            ("R-CNN", rcnn_model, os.path.join(out_root, "rcnn", "test"), []),
        ]
        rows = []
        for name, model_dir, out_dir, overrides in runs:
            res = _test(model_dir, out_dir, overrides, args.force_test, progress)
            rows.append({"name": name, "map": res["map"], "seconds": res["seconds_per_image"]["total_excluding_proposals"],
                         "results": os.path.join(out_dir, "results.json")})
        t_test = time.perf_counter()

        from detect.stages import open_dataset

        test_set = open_dataset(cfg, cfg.data.test_set)
        image_path = test_set.image_path(test_set.image_ids[0])
        demo_png = os.path.join(out_root, "demo.png")
        dets, _ = demo(spp_model, image_path, demo_png, threshold=DEMO_THRESHOLD, top=DEMO_TOP)
        t_end = time.perf_counter()

        table = format_final_table(rows)
        kernels = cpu_kernels()  # sppcore/kernels.py
        runs_report = report.get("runs", [{}])
        summary = {
            "table": rows,
            "pretrain_val_accuracy": runs_report[0].get("val_accuracy"),
            "pretrain_val_image_accuracy": runs_report[0].get("val_image_accuracy"),
            # the shipped network's directory when it was used, and the seconds its
            # training took where it was trained
            "pretrain_shipped": report.get("shipped"),
            "pretrain_training_seconds": runs_report[0].get("seconds"),
            "seconds": {"data": t_data - t_start, "pretrain": t_pretrain - t_data, "train": t_train - t_pretrain,
                        "test": t_test - t_train, "demo": t_end - t_test, "total": t_end - t_start},
            "demo": demo_png, "pretrained_network": weights, "cpu_kernels": kernels,
        }
        from sppcore.fileio import atomic_write_json

        atomic_write_json(os.path.join(out_root, "quickstart.json"), summary)
        origin = (f"shipped in {report['shipped']}, --from-scratch trains it here in about "
                  f"{summary['pretrain_training_seconds'] or 0:.0f} s; " if report.get("shipped") else "")
        print()
        print(f"built-in default: {len(test_set)} test images, SVMs trained on {n} trainval images, "
              f"trunk pretrained on {report.get('train_images')} images ({origin}validation accuracy on crops "
              f"{summary['pretrain_val_accuracy']:.3f}, on windows of whole images "
              f"{summary['pretrain_val_image_accuracy'] or float('nan'):.3f}; {kernels} CPU kernels)")
        print(table)
        best = ", ".join(f"{c} {score:.2f}" for c, score, _ in dets)
        print(f"demo: {demo_png} (the {len(dets)} best detections on {image_path}: {best})")
        print(f"results: {', '.join(r['results'] for r in rows)}")
        print(f"summary: {os.path.join(out_root, 'quickstart.json')}; {t_end - t_start:.0f} s in all")
        return 0

    return run_tool(body)


if __name__ == "__main__":
    sys.exit(main())
