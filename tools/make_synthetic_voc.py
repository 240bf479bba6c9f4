"""Generate the built-in VOC2007-layout dataset of procedurally drawn objects.

Writes DIR/VOC2007/{JPEGImages,Annotations,ImageSets/Main} and a manifest; a second run
with the same settings does nothing. Prints the statistics of both image sets.

Example::

    python tools/make_synthetic_voc.py --out data/builtin --seed 0 --num-trainval 250 --num-test 250
"""
from __future__ import annotations

import argparse
import sys

from detect.cli import run_tool, setup_logging


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="output directory (plays the role of VOCdevkit)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    parser.add_argument("--num-trainval", type=int, default=250, help="trainval images (default: %(default)s)")
    parser.add_argument("--num-test", type=int, default=250, help="test images (default: %(default)s)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)

    def body() -> int:
        setup_logging()
        from detect.synthetic import dataset_statistics, format_statistics, generate_synthetic_voc

        root = generate_synthetic_voc(args.out, seed=args.seed, num_trainval=args.num_trainval,
                                      num_test=args.num_test, progress=not args.quiet)
        for image_set, n in (("trainval", args.num_trainval), ("test", args.num_test)):
            if n:
                print(format_statistics(dataset_statistics(root, image_set)))
        print(f"dataset written to {root}")
        return 0

    return run_tool(body)


if __name__ == "__main__":
    sys.exit(main())
