"""Train a detector: proposals (cached) -> window features -> SVMs (+ box regressors).

Writes a model directory (default ``output/<config name>/model``) holding the SVM and
regressor weights in plain ``.npz``, the resolved config, a training log and a per-class
training report. Every stage is cached, and an interrupted run resumes. Under torchrun the
processes share the proposals and conv5 maps, rank 0 trains (README, "More than one process").

Examples::

    python tools/train_svm.py --config configs/spp_alexnet_voc07.yaml
    python tools/train_svm.py --config configs/default.yaml --set svm.C=0.01 --out output/c01
    torchrun --standalone --nproc-per-node 2 tools/train_svm.py --config configs/default.yaml
"""
from __future__ import annotations

import argparse
import sys

from detect.cli import DEFAULT_CONFIG, add_config_arguments, config_from_args, run_tool, setup_logging


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_arguments(parser, DEFAULT_CONFIG)
    parser.add_argument("--out", help="model directory (default: <output_dir>/<name>/model)")
    parser.add_argument("--num-images", type=int, default=None, help="train on the first N images only")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)

    def body() -> int:
        setup_logging()
        cfg = config_from_args(args)
        from detect import distributed
        from detect.pipeline import train

        model_dir = train(cfg, out_dir=args.out, num_images=args.num_images, progress=not args.quiet)
        if distributed.current().is_main:
            print(f"model written to {model_dir}")
        distributed.finish()
        return 0

    return run_tool(body)


if __name__ == "__main__":
    sys.exit(main())
