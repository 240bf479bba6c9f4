"""Test a trained detector: detections on the test set, mAP, seconds per image.

Writes, in the output directory (default ``<model dir>/../test_<method>``): raw
detections (``detections.npz``, so evaluation can be re-run without the network), devkit
result files (``comp4_det_<set>_<class>.txt``), ``results.json`` (method, num_images,
metric, map, ap_per_class, seconds_per_image per stage), a PR-curve PNG (VOC metrics) and
the resolved config. Prints the per-class AP table. The metric is ``test.metric``:
``voc07`` (default, the VOC2007 devkit's 11-point AP), ``voc_area`` (VOC2010+) or ``coco``
(AP over IoU 0.5:0.95); ``tools/reval.py`` re-scores the saved detections by another. Under torchrun each process detects on its shard of the images and rank 0
evaluates (README, "More than one process").

Examples::

    python tools/test_net.py --model output/spp_alexnet_voc07/model
    python tools/test_net.py --model output/default/model --num-images 50
    python tools/test_net.py --model output/default/model --set features.scales=[480,576,688,864,1200]
    python tools/test_net.py --model output/default/model --set test.metric=coco
    torchrun --standalone --nproc-per-node 2 tools/test_net.py --model output/default/model
"""
from __future__ import annotations

import argparse
import sys

from detect.cli import run_tool, setup_logging


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="model directory written by train_svm.py")
    parser.add_argument("--method", choices=("spp", "rcnn"), default=None,
                        help="feature method; must be the one the model was trained with (default: the model's)")
    parser.add_argument("--num-images", type=int, default=None, help="test on the first N images only")
    parser.add_argument("--out", help="output directory (default: <name>/test_<method> beside <name>/model, <dir>_test_<method> beside any other model directory)")
    parser.add_argument("--config", default=None, help="optional YAML whose settings override the model's (e.g. other test settings)")
    parser.add_argument("--set", dest="overrides", metavar="KEY=VALUE", nargs="+", action="extend", default=[],
                        help="override the model's config, e.g. --set test.nms_iou=0.4")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)

    def body() -> int:
        setup_logging()
        from detect import distributed
        from detect.pipeline import test

        results, out_dir = test(args.model, method=args.method, num_images=args.num_images, out_dir=args.out,
                                config_path=args.config, overrides=args.overrides, progress=not args.quiet)
        if results is None:  # a process other than rank 0: its shard's detections are written
            distributed.finish()
            return 0
        print(results["table"])
        print(f"mAP {results['map']:.4f} ({results['metric']}) on {results['num_images']} images; "
              f"{results['seconds_per_image']['total_excluding_proposals']:.3f} s/image excluding proposals")
        print(f"results written to {out_dir}")
        distributed.finish()
        return 0

    return run_tool(body)


if __name__ == "__main__":
    sys.exit(main())
