"""mAP and seconds per image of trained models at each ``features.precision``, on one device.

Tests the quickstart's models (after ``make quickstart``): SPP-net at 1 scale and at 5
scales (the 1-scale SVMs) and R-CNN, each with ``features.device`` set to ``--device`` and
``features.precision`` to each of ``--precisions`` (the first is the baseline), through
:func:`detect.pipeline.test` (the same test loop as ``tools/test_net.py``; each run's
``results.json`` under ``--out-dir``). Where the post-processing runs on the device (a
GPU), the baseline's detections are also compared with the host (numpy) post-processing's
on the same features. Prints the table (mAP, its change from the baseline, seconds per
image after proposals) and writes JSON (default ``bench/results/precision_<device>.json``).

Example::

    python bench/precision.py --device cuda --precisions float32,bfloat16,float16
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import time


def build_parser() -> argparse.ArgumentParser:
    from detect.cli import BUILTIN_FIVE_SCALES

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N (default: %(default)s)")
    parser.add_argument("--precisions", default="float32,bfloat16,float16",
                        help="comma-separated features.precision values; the first is the baseline")
    parser.add_argument("--spp-model", default="output/default/spp/model")
    parser.add_argument("--rcnn-model", default="output/default/rcnn/model")
    parser.add_argument("--five-scales", type=int, nargs="+", default=list(BUILTIN_FIVE_SCALES))
    parser.add_argument("--num-images", type=int, default=None, help="first N test images (default: all)")
    parser.add_argument("--out-dir", default="output/default/precision", help="where the test runs write")
    parser.add_argument("--out", default=None, help="JSON (default: bench/results/precision_<device>.json)")
    return parser


def host_device_agreement(model_dir: str, overrides, dataset, store, num: int) -> dict:
    """Detections of the first ``num`` test images with the post-processing on the device
    and on the host (numpy), from the same features: the share of the device's detections
    that the host has too (the same class, the box within 0.01 px, the score within 1e-4;
    near-equal scores may come in the other order) and the largest differences of those."""
    from detect.detector import alike_detections
    from detect.detector_api import Detector

    on_device = Detector.load(model_dir, device=None, overrides=overrides, postprocess="device")
    on_host = Detector(on_device.model, on_device.features, postprocess="host")
    total, matched, box_diff, score_diff = 0, 0, 0.0, 0.0
    for image_id in dataset.image_ids[:num]:
        image, boxes = dataset.load_image(image_id), store[image_id]
        a, _ = on_device.detect_with_timings(image, boxes)
        b, _ = on_host.detect_with_timings(image, boxes)
        total += max(len(a), len(b))
        alike, d_box, d_score = alike_detections(a, b)
        matched += alike
        box_diff, score_diff = max(box_diff, d_box), max(score_diff, d_score)
    return {"images": num, "detections": total, "matched": matched, "max_box_difference": box_diff,
            "max_score_difference": score_diff}


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    import torch

    from detect import pipeline
    from detect.features import resolve_device
    from detect.stages import build_proposal_store, open_dataset
    from sppcore.fileio import atomic_write_json

    device = resolve_device(args.device)
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    precisions = [p.strip() for p in args.precisions.split(",") if p.strip()]
    five = "[" + ",".join(str(s) for s in args.five_scales) + "]"
    runs = [("SPP-net 1 scale", args.spp_model, []),
            ("SPP-net 5 scales", args.spp_model, [f"features.scales={five}"]),
            ("R-CNN", args.rcnn_model, [])]
    rows = []
    for name, model_dir, extra in runs:
        for precision in precisions:
            overrides = extra + [f"features.device={args.device}", f"features.precision={precision}"]
            slug = f"{name.lower().replace(' ', '_').replace('-', '')}_{device.type}_{precision}"
            t0 = time.perf_counter()
            results, out = pipeline.test(model_dir, num_images=args.num_images, overrides=overrides,
                                         out_dir=os.path.join(args.out_dir, slug), progress=False)
            row = {"method": name, "precision": precision, "map": results["map"],
                   "seconds_per_image": results["seconds_per_image"]["total_excluding_proposals"],
                   "stages": results["seconds_per_image"], "results": os.path.join(out, "results.json"),
                   "wall_seconds": time.perf_counter() - t0}
            if precision == precisions[0] and device.type != "cpu":
                from detect.config import load_config
                from detect.model import load_model

                cfg = load_config(None, overrides, base=load_model(model_dir).config)
                dataset = open_dataset(cfg, cfg.data.test_set, args.num_images)
                store = build_proposal_store(cfg, dataset, progress=False)
                row["host_vs_device_postprocess"] = host_device_agreement(model_dir, overrides, dataset, store,
                                                                          min(20, len(dataset)))
            rows.append(row)
            print(f"{name} {precision}: mAP {row['map']:.4f}, {row['seconds_per_image']:.4f} s/image", flush=True)
    base = {r["method"]: r["map"] for r in rows if r["precision"] == precisions[0]}
    print(f"\nmAP at each precision, network on {device_name} (seconds per image after proposals)")
    print(f"{'method':<18}{'precision':>10}{'mAP':>9}{'change':>9}{'s/image':>10}")
    for r in rows:
        r["map_change"] = r["map"] - base[r["method"]]
        print(f"{r['method']:<18}{r['precision']:>10}{r['map']:9.4f}{r['map_change']:+9.4f}{r['seconds_per_image']:10.4f}")
    for r in rows:
        if "host_vs_device_postprocess" in r:
            a = r["host_vs_device_postprocess"]
            print(f"{r['method']} {r['precision']}: device vs host post-processing on {a['images']} images: "
                  f"{a['matched']} of {a['detections']} detections alike (boxes within "
                  f"{a['max_box_difference']:.2g} px, scores within {a['max_score_difference']:.2g})")
    out = args.out or os.path.join("bench", "results", f"precision_{device.type}.json")
    atomic_write_json(out, {"machine": platform.processor() or platform.machine(), "device": device_name,
                            "torch": torch.__version__, "precisions": precisions, "rows": rows})
    print(f"\nwritten {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
