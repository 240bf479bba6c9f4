"""Re-score a test run's saved detections without the network.

Reads ``<test dir>/detections.npz`` (written by ``tools/test_net.py``) and the dataset of
the config saved beside it (``<test dir>/config.yaml``), evaluates by ``--metric``
(default: the run's ``test.metric``), prints the per-class AP table and writes
``reval_<metric>.json`` in the test directory (``metric``, ``map``, ``ap_per_class``;
COCO adds ``ap50`` and ``ap75``).

Metrics: ``voc07`` (VOC2007 devkit, 11-point AP at IoU 0.5), ``voc_area`` (VOC2010+, area
under the monotone precision envelope), ``coco`` (pycocotools, AP over IoU 0.5:0.95).

Examples::

    python tools/reval.py output/default/spp/test_spp --metric voc_area
    python tools/reval.py output/default/spp/test_spp --metric coco --out coco.json
"""
from __future__ import annotations

import argparse
import sys

from detect.cli import run_tool, setup_logging
from detect.evaluation import METRICS

METRIC_CHOICES = tuple(METRICS)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("test_dir", help="output directory of tools/test_net.py")
    parser.add_argument("--metric", choices=METRIC_CHOICES, default=None,
                        help="evaluation (default: the test run's test.metric)")
    parser.add_argument("--out", default=None, help="JSON to write (default: <test dir>/reval_<metric>.json)")
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)

    def body() -> int:
        setup_logging()
        from detect.pipeline import reval

        results, path = reval(args.test_dir, metric=args.metric, out_path=args.out)
        print(results["table"])
        print(f"{results['metric']}: mAP {results['map']:.4f} on {results['num_images']} images")
        print(f"written {path}")
        return 0

    return run_tool(body)


if __name__ == "__main__":
    sys.exit(main())
