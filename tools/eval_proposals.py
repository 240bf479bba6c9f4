"""Proposal recall of one or more backends on an image set.

Prints recall at IoU 0.5 and 0.7, average recall over IoU 0.5:0.95, mean boxes per
image and seconds per image for each backend; writes ``proposal_recall.json`` and a PNG
with recall-vs-IoU and recall-vs-number-of-boxes curves.

Examples::

    python tools/eval_proposals.py --config configs/default.yaml
    python tools/eval_proposals.py --backends rcnn_fast opencv_fast --num-images 50 --out output/proposals
    # any VOC-layout set of real photos; --voc-classes when it has no <class>_<set>.txt files
    python tools/eval_proposals.py --image-set dev --voc-classes \
        --set data.root=../shared/datasets/voc-photos-dev/VOC2007
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys

from detect.cli import DEFAULT_CONFIG, add_config_arguments, config_from_args, run_tool, setup_logging


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_arguments(parser, DEFAULT_CONFIG)
    parser.add_argument("--backends", nargs="+", default=None, help="backends to compare (default: the config's)")
    parser.add_argument("--image-set", default=None, help="image set (default: the config's test set)")
    parser.add_argument("--num-images", type=int, default=None, help="only the first N images")
    parser.add_argument("--voc-classes", action="store_true",
                        help="the 20 PASCAL VOC classes (default: the config's data.classes)")
    parser.add_argument("--out", default=None, help="output directory (default: <output_dir>/<name>/proposals)")
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)

    def body() -> int:
        setup_logging()
        cfg = config_from_args(args)
        from detect.config import save_config
        from detect.stages import build_proposal_store, open_dataset
        from detect.voc import VOC_CLASSES
        from sppcore.fileio import atomic_write_json

        if args.voc_classes:
            cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, classes=VOC_CLASSES))
        from proposals.report import format_proposal_table, plot_recall_curves, proposal_summary

        dataset = open_dataset(cfg, args.image_set or cfg.data.test_set, args.num_images)
        gt = [a.boxes[~a.difficult] for a in (dataset.annotation(i) for i in dataset.image_ids)]
        rows = []
        for backend in args.backends or [cfg.proposals.backend]:
            run_cfg = dataclasses.replace(cfg, proposals=dataclasses.replace(cfg.proposals, backend=backend))
            store = build_proposal_store(run_cfg, dataset)
            props = [store[i] for i in dataset.image_ids]
            rows.append(proposal_summary(backend, props, gt, [store.seconds(i) for i in dataset.image_ids]))
        out = args.out or os.path.join(cfg.output_dir, cfg.name, "proposals")
        save_config(cfg, os.path.join(out, "config.yaml"))
        atomic_write_json(os.path.join(out, "proposal_recall.json"), {"image_set": dataset.image_set, "rows": rows})
        plot_recall_curves(rows, os.path.join(out, "proposal_recall.png"), title=f"{cfg.data.root} {dataset.image_set}")
        print(format_proposal_table(rows))
        print(f"report written to {out}")
        return 0

    return run_tool(body)


if __name__ == "__main__":
    sys.exit(main())
