"""Fine-tune fc6, fc7 and a new (K+1)-way fc8 on pool5 vectors (conv frozen).

SPP-net (``features.method=spp``) pools them from the conv5 cache of training (computed
if missing); R-CNN (``features.method=rcnn``) warps each sampled window and runs the
frozen conv layers. The paper's sampling (IoU [0.5, 1] positives, [0.1, 0.5) negatives,
25% positives per mini-batch). Writes the
network (default ``<output_dir>/<name>/finetune/network.npz``); SVMs then train on the
fine-tuned fc7 with ``--set network.weights=<that file>``. Under torchrun the processes
compute the proposals and SPP-net's conv5 maps of their shares of the images, then rank 0
fine-tunes (the SGD steps are sequential): the network one process gives.

Example::

    python tools/finetune_fc.py --config configs/default.yaml --set finetune.iterations=1000
    python tools/train_svm.py --config configs/default.yaml --set network.weights=output/default/finetune/network.npz
"""
from __future__ import annotations

import argparse
import sys

from detect.cli import DEFAULT_CONFIG, add_config_arguments, config_from_args, run_tool, setup_logging


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_arguments(parser, DEFAULT_CONFIG)
    parser.add_argument("--out", default=None, help="network file to write")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)

    def body() -> int:
        setup_logging()
        cfg = config_from_args(args)
        from detect import distributed
        from detect.pipeline import run_finetuning

        path, report = run_finetuning(cfg, out_path=args.out, progress=not args.quiet)
        distributed.finish()
        if report is None:  # a process other than rank 0 under torchrun
            return 0
        print(f"fine-tuned {report['iterations']} iterations in {report['seconds']:.0f} s: "
              f"running loss {report['final_loss']:.3f}, accuracy {report['final_accuracy']:.3f}")
        print(f"network written to {path}; train SVMs on it with --set network.weights={path}")
        return 0

    return run_tool(body)


if __name__ == "__main__":
    sys.exit(main())
