"""The README's main job on the built-in default.

Generates the built-in dataset (``data.root`` of the config, seed 0, 250 trainval and
250 test images; nothing is done when it is already there) and prints its statistics.

Example::

    python tools/quickstart.py
    python tools/quickstart.py --config configs/default.yaml
"""
from __future__ import annotations

import argparse
import os
import sys

from detect.cli import DEFAULT_CONFIG, add_config_arguments, config_from_args, run_tool, setup_logging

BUILTIN_SEED = 0
BUILTIN_TRAINVAL = 250
BUILTIN_TEST = 250


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_arguments(parser, DEFAULT_CONFIG)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)

    def body() -> int:
        setup_logging()
        cfg = config_from_args(args)
        from detect.synthetic import dataset_statistics, format_statistics, generate_synthetic_voc

        root = generate_synthetic_voc(os.path.dirname(os.path.normpath(cfg.data.root)), seed=BUILTIN_SEED,
                                      num_trainval=BUILTIN_TRAINVAL, num_test=BUILTIN_TEST)
        for image_set in (cfg.data.train_set, cfg.data.test_set):
            print(format_statistics(dataset_statistics(root, image_set)))
        print(f"built-in dataset: {root}")
        return 0

    return run_tool(body)


if __name__ == "__main__":
    sys.exit(main())
