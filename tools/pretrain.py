"""Pretrain a trunk (+ fc6/fc7) on object and background crops, multi-size (SPP-net 2.3).

Trains the configured trunk with an SPP classification head on crops of
``pretrain.train_set`` and reports accuracy on ``pretrain.val_set``; the weights go to
``pretrain.out`` (default ``<output_dir>/<name>/pretrain/network.npz``), which a detection
config then names as ``network.weights``. ``--compare`` also trains a single-size network
(the first size only) with the same budget and prints both accuracies (the paper's
section 3.1.3 experiment in miniature). One process only: refused under torchrun.

A network trained elsewhere with exactly these settings, images and CPU kernels is used
instead of training when ``pretrain.shipped`` names its directory (the built-in default
ships one in ``data/pretrained/default``; ``--set pretrain.shipped=""`` trains anyway).
``--ship DIR`` writes the pretrained network with its key into DIR for that use.

Examples::

    python tools/pretrain.py --config configs/default.yaml
    python tools/pretrain.py --compare --set pretrain.epochs=20
    python tools/pretrain.py --set pretrain.shipped="" --ship data/pretrained/default
"""
from __future__ import annotations

import argparse
import sys

from detect.cli import DEFAULT_CONFIG, add_config_arguments, config_from_args, run_tool, setup_logging


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_arguments(parser, DEFAULT_CONFIG)
    parser.add_argument("--compare", action="store_true", help="also train single-size and compare")
    parser.add_argument("--ship", metavar="DIR", default="",
                        help="afterwards, write the network and its key into DIR (what pretrain.shipped names)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)

    def body() -> int:
        setup_logging()
        cfg = config_from_args(args)
        from detect.pipeline import run_pretraining, ship_pretrained_network

        report = run_pretraining(cfg, compare=args.compare, progress=not args.quiet)
        for row in report["runs"]:
            image_acc = row.get("val_image_accuracy")
            whole = f", on windows of whole images {image_acc:.4f}" if image_acc is not None else ""
            print(f"sizes {'/'.join(map(str, row['sizes'])):>9}: validation accuracy on crops {row['val_accuracy']:.4f}"
                  f"{whole} ({row['seconds']:.0f} s)")
        print(f"pretrained network: {report['network']}")
        if args.ship:
            print(f"shipped in {ship_pretrained_network(cfg, args.ship)}")
        return 0

    return run_tool(body)


if __name__ == "__main__":
    sys.exit(main())
