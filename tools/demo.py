"""Detect objects in one image with a trained model and draw them.

Computes proposals for the image, scores them, prints the detections above the
threshold and writes a PNG with boxes, class names and scores.

Example::

    python tools/demo.py --model output/default/model --image photo.jpg --out detections.png
"""
from __future__ import annotations

import argparse
import sys

from detect.cli import run_tool, setup_logging


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="model directory written by train_svm.py")
    parser.add_argument("--image", required=True, help="a JPEG or PNG image")
    parser.add_argument("--out", default=None, help="output PNG (default: <image name>_detections.png)")
    parser.add_argument("--threshold", type=float, default=None,
                        help="minimum score to show (default: 0 for an SVM model, 0.5 for a softmax model)")
    parser.add_argument("--config", default=None, help="optional YAML whose settings override the model's")
    parser.add_argument("--set", dest="overrides", metavar="KEY=VALUE", nargs="+", action="extend", default=[],
                        help="override the model's config, e.g. --set proposals.backend=opencv_fast")
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)

    def body() -> int:
        setup_logging()
        from detect.pipeline import demo

        detections, out_path = demo(args.model, args.image, out_path=args.out, threshold=args.threshold,
                                    config_path=args.config, overrides=args.overrides)
        for name, score, box in detections:
            print(f"{name:>14s} {score:7.3f}  [{box[0]:.0f}, {box[1]:.0f}, {box[2]:.0f}, {box[3]:.0f}]")
        print(f"{len(detections)} detections drawn to {out_path}")
        return 0

    return run_tool(body)


if __name__ == "__main__":
    sys.exit(main())
