"""SPP-net vs R-CNN detection on the same trunk and fc weights.

For each of ``--num-images`` generated images (VOC-sized) and ``--windows`` random windows
per image (proposals are a separate, separately timed stage; ``--windows-source
selective_search`` uses the project's R-CNN fast-mode proposals instead, whose
near-duplicates SPP-net pools once), measures seconds per image per stage of the whole
detection after proposals: the window features, the class scores of ``--classes`` random
linear SVMs on fc7, per-class box regression from pool5, and per-class NMS (0.3, 100 per
class), for SPP-net at 1 scale (688) and 5 scales (480..1200), R-CNN (warp + whole
network per window), and SPP-net with truncated-SVD fc6/fc7, at each of ``--precisions``
(``features.precision``); then the pooling kernel alone against torchvision's
``roi_pool`` (4 calls, one per level) on a 256 x 43 x 57 map. Random weights: timing
does not depend on them. Medians over images, ratios from the same run (the first
precision). Prints a table and writes JSON (default ``bench/results/spp_vs_rcnn.json``);
``--profile FILE`` adds torch.profiler's table of SPP-net 1 scale.

``--device cuda`` runs both methods on a GPU: the network layers, SPP-net's pooling (the
torch twin of the kernel), R-CNN's warps (``grid_sample``, ``--crop-batch`` crops at a
time) and, unless ``--postprocess host``, the scores, box regression and NMS
(:mod:`detect.device_postprocess`: only the detections come back to the host); the
kernel comparison at the end is always the CPU one.

Example::

    python -m bench.spp_vs_rcnn --trunk alexnet --num-images 5 --windows 2000
    python -m bench.spp_vs_rcnn --trunk zf5 --windows-source selective_search \
        --out bench/results/spp_vs_rcnn_zf5_ss.json
    python -m bench.spp_vs_rcnn --device cuda --precisions float32,bfloat16,float16 \
        --profile bench/results/profile_cuda.txt --out bench/results/spp_vs_rcnn_cuda.json
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import time

import numpy as np
import torch


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trunk", default="alexnet", help="compact | zf5 | alexnet | vgg16 (default: %(default)s)")
    parser.add_argument("--fc-dim", type=int, default=4096, help="fc6/fc7 width (default: %(default)s)")
    parser.add_argument("--num-images", type=int, default=5)
    parser.add_argument("--windows", type=int, default=2000, help="windows per image (at most, for selective_search)")
    parser.add_argument("--windows-source", choices=("random", "selective_search"), default="random")
    parser.add_argument("--svd-rank", type=int, default=256, help="rank of the compressed fc6/fc7")
    parser.add_argument("--device", default="cpu", help="where the network layers run: cpu | cuda | cuda:N")
    parser.add_argument("--crop-batch", type=int, default=None,
                        help="R-CNN crops per conv batch (default: 32 on the CPU, 256 on a GPU)")
    parser.add_argument("--precisions", default="float32",
                        help="comma-separated features.precision values to time (float32, bfloat16, float16)")
    parser.add_argument("--classes", type=int, default=20, help="classes of the random SVMs and box regressors")
    parser.add_argument("--postprocess", choices=("auto", "host", "device"), default="auto",
                        help="where scoring, box regression and NMS run (auto: on a GPU there, else numpy)")
    parser.add_argument("--profile", default=None,
                        help="write torch.profiler's table of SPP-net 1 scale (last precision) to this file")
    parser.add_argument("--kernel-repeats", type=int, default=21, help="timed calls of the pooling kernel")
    parser.add_argument("--data", default="data/cache/bench/synthetic")
    parser.add_argument("--out", default="bench/results/spp_vs_rcnn.json")
    return parser


def random_windows(rng, n, h, w):
    """Windows of varied size and aspect, like selective search's (20 px to the image)."""
    side = np.exp(rng.uniform(np.log(20), np.log(min(h, w)), n))
    aspect = np.exp(rng.uniform(np.log(0.5), np.log(2.0), n))
    bw = np.minimum(side * np.sqrt(aspect), w)
    bh = np.minimum(side / np.sqrt(aspect), h)
    x = rng.uniform(0, w - bw)
    y = rng.uniform(0, h - bh)
    return np.stack([x, y, x + bw, y + bh], 1).astype(np.float32)


def random_model(head, num_classes: int, seed: int = 0):
    """A detection model of random linear SVMs on fc7 and random box regressors on pool5,
    ``num_classes`` classes: what a trained model costs to apply (the values do not matter)."""
    from detect.bbox_regression import BoxRegressor
    from detect.classifiers import LinearSVMClassifier
    from detect.config import Config
    from detect.model import DetectionModel

    rng = np.random.default_rng(seed)
    fc7, pool5 = head.fc7.out_features if hasattr(head.fc7, "out_features") else head.fc7[-1].out_features, head.in_dim
    svm = LinearSVMClassifier("fc7", rng.normal(0, 0.01, (num_classes, fc7)).astype(np.float32),
                              rng.normal(0, 0.1, num_classes).astype(np.float32), 1.0)
    reg = BoxRegressor(weights=rng.normal(0, 1e-4, (num_classes, pool5, 4)).astype(np.float32),
                       bias=np.zeros((num_classes, 4), np.float32), feature_scale=1.0,
                       trained=np.ones(num_classes, bool))
    return DetectionModel(config=Config(), classes=tuple(f"class{k}" for k in range(num_classes)),
                          classifier=svm, regressor=reg, bbox_layer="pool5")


def time_method(detect_fn, images, windows):
    """Median seconds per stage over the images of ``detect_fn(image, boxes) -> (detections,
    {stage: seconds})``; ``total`` is the median of the per-image sums."""
    rows = []
    for img, boxes in zip(images, windows):
        _, seconds = detect_fn(img, boxes)
        seconds["total"] = sum(seconds.values())
        rows.append(seconds)
    return {k: float(np.median([r.get(k, 0.0) for r in rows])) for k in rows[0]}


def profile_method(detect_fn, images, windows, path: str, device) -> str:
    """torch.profiler's table of ``detect_fn`` over the images (by device time on a GPU,
    CPU time otherwise), written to ``path``; returns it."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        for img, boxes in zip(images, windows):
            detect_fn(img, boxes)
    sort = "cuda_time_total" if device.type == "cuda" else "cpu_time_total"
    table = prof.key_averages().table(sort_by=sort, row_limit=30)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write(table)
    return table


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from detect.config import NetworkConfig
    from detect.device_postprocess import detect_image_on_device
    from detect.features import RCNNFeatures, SPPFeatures, compress_head, resolve_device
    from detect.testing import detect_image
    from detect.spp import spatial_pyramid_pool
    from detect.synthetic import generate_synthetic_voc
    from detect.trunks import build_network
    from detect.voc import VOCDataset
    from sppcore.fileio import atomic_write_json
    from torchvision.ops import roi_pool

    torch.manual_seed(0)
    root = generate_synthetic_voc(args.data, seed=0, num_trainval=0, num_test=max(args.num_images, 50), progress=False)
    ds = VOCDataset(root, "test")
    rng = np.random.default_rng(0)
    images = [ds.load_image(i) for i in ds.image_ids[: args.num_images]]
    if args.windows_source == "random":
        windows = [random_windows(rng, args.windows, *im.shape[:2]) for im in images]
    else:
        from proposals.selective_search import compute_proposals

        windows = [compute_proposals(im)[: args.windows] for im in images]
    trunk, head = build_network(NetworkConfig(trunk=args.trunk, fc_dim=args.fc_dim))
    crop = trunk.crop_size
    dev = resolve_device(args.device)
    crop_batch = args.crop_batch or (256 if dev.type == "cuda" else 32)
    svd_head = compress_head(head, args.svd_rank)
    five = (480, 576, 688, 864, 1200)
    precisions = [p.strip() for p in args.precisions.split(",") if p.strip()]
    model = random_model(head, args.classes)

    def build_methods(precision):
        return {
            "spp_1scale": SPPFeatures(trunk, head, scales=(688,), device=dev, precision=precision),
            "spp_5scale": SPPFeatures(trunk, head, scales=five, device=dev, precision=precision),
            "spp_1scale_svd": SPPFeatures(trunk, svd_head, scales=(688,), device=dev, precision=precision),
            "spp_5scale_svd": SPPFeatures(trunk, svd_head, scales=five, device=dev, precision=precision),
            "rcnn": RCNNFeatures(trunk, head, crop_size=crop, context_pad=round(16 * crop / 227),
                                 crop_batch_size=crop_batch, device=dev, precision=precision),
        }

    def detector_of(extractor):
        """The whole detection of one image after proposals: features, scores, box
        regression, NMS (on the device, or numpy on the host)."""
        on_device = args.postprocess == "device" or (args.postprocess == "auto" and dev.type != "cpu")
        if on_device:
            return lambda img, boxes: detect_image_on_device(model, extractor, img, boxes)
        return lambda img, boxes: detect_image(model, extractor.extract, img, boxes)

    methods = build_methods(precisions[0])
    distinct = {"rcnn": float(np.mean([len(np.unique(b, axis=0)) / len(b) for b in windows]))}
    for name in ("spp_1scale", "spp_5scale"):
        spp = methods[name]
        distinct[name] = float(np.mean([len(spp.distinct_windows(spp.compute_maps(im), b)[0]) / len(b)
                                        for im, b in zip(images, windows)]))
    by_precision = {}
    profile_table = None
    for precision in precisions:
        methods = build_methods(precision)
        results = by_precision[precision] = {}
        for name, extractor in methods.items():
            detect_fn = detector_of(extractor)
            detect_fn(images[0], windows[0][:50])  # warm-up
            detect_fn(images[0], windows[0])
            t0 = time.perf_counter()
            results[name] = time_method(detect_fn, images, windows)
            print(f"{name} ({precision}): {results[name]['total']:.4f} s/image ({time.perf_counter() - t0:.0f} s)",
                  flush=True)
        if args.profile and precision == precisions[-1]:
            profile_table = profile_method(detector_of(methods["spp_1scale"]), images, windows, args.profile, dev)
    results = by_precision[precisions[0]]

    # the pooling kernel alone
    fmap = torch.randn(256, 43, 57)
    cells = np.stack([rng.integers(0, 20, args.windows), rng.integers(0, 15, args.windows),
                      rng.integers(20, 57, args.windows), rng.integers(15, 43, args.windows)], 1)
    rois = torch.zeros((args.windows, 5))
    rois[:, 1:] = torch.from_numpy(cells * 16.0)
    rois[:, 3:] += 15
    out = torch.empty((args.windows, 256 * 50))
    fns = {
        "spatial_pyramid_pool": lambda: spatial_pyramid_pool(fmap, cells),
        # as SPPFeatures calls it: into the extractor's reused output buffer
        "spatial_pyramid_pool_reused_out": lambda: spatial_pyramid_pool(fmap, cells, out=out),
        "torchvision_roi_pool": lambda: [roi_pool(fmap[None], rois, (n, n), 1 / 16) for n in (6, 3, 2, 1)],
    }
    # interleaved repetitions (medians): this machine's load drifts over seconds
    times = {name: [] for name in fns}
    for name, fn in fns.items():
        fn()
    for rep in range(args.kernel_repeats):
        for name, fn in fns.items():
            if name == "torchvision_roi_pool" and rep >= 5:
                continue  # ~1.4 s a call, and 20x off the pace: 5 are enough
            t = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t)
    kernel = {name: float(np.median(ts)) for name, ts in times.items()}

    spp1, spp5, rc = results["spp_1scale"], results["spp_5scale"], results["rcnn"]
    ratios = {
        "rcnn_over_spp_1scale": rc["total"] / spp1["total"],
        "rcnn_over_spp_5scale": rc["total"] / spp5["total"],
        "rcnn_over_spp_1scale_svd": rc["total"] / results["spp_1scale_svd"]["total"],
        "rcnn_over_spp_5scale_svd": rc["total"] / results["spp_5scale_svd"]["total"],
        # the most any SPP-net could gain while its exact fc layers cost what R-CNN's do
        "rcnn_over_spp_fc_alone": rc["total"] / spp1["fc"],
        "pool_share_of_spp_1scale": spp1["pool"] / spp1["total"],
        "roi_pool_over_spp_kernel": kernel["torchvision_roi_pool"] / kernel["spatial_pyramid_pool"],
    }
    stages = ["warp", "conv", "pool", "fc", "svm", "bbox_reg", "nms", "total"]
    per_image = float(np.mean([len(b) for b in windows]))
    device_name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu"
    digits = 4 if dev.type == "cuda" else 3
    print(f"\n{args.trunk}, fc {args.fc_dim}, {per_image:.0f} {args.windows_source} windows/image, "
          f"{args.classes} classes, median of {len(images)} images (seconds per image of the whole detection "
          f"after proposals), network on {device_name}")
    for precision, table in by_precision.items():
        print(f"{'method (' + precision + ')':<26}" + "".join(f"{s:>9}" for s in stages))
        for name, r in table.items():
            print(f"{name:<26}" + "".join(f"{r.get(s, 0.0):9.{digits}f}" for s in stages))
    if profile_table is not None:
        print(f"\nprofile of spp_1scale ({precisions[-1]}), written to {args.profile}:\n{profile_table}")
    print("\npooling kernel, 256x43x57 map, levels 6/3/2/1: "
          f"ours {1000 * kernel['spatial_pyramid_pool']:.1f} ms "
          f"({1000 * kernel['spatial_pyramid_pool_reused_out']:.1f} ms into a reused output), "
          f"roi_pool {1000 * kernel['torchvision_roi_pool']:.1f} ms")
    for k, v in ratios.items():
        print(f"{k:<28} {v:8.2f}")
    print("distinct windows (share of all): " + ", ".join(f"{k} {v:.2f}" for k, v in distinct.items()))
    atomic_write_json(args.out, {
        "machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(), "trunk": args.trunk, "fc_dim": args.fc_dim,
        "device": device_name, "rcnn_crop_batch": crop_batch, "rcnn_warp": methods["rcnn"].warp_backend,
        "torch": torch.__version__, "windows_source": args.windows_source, "windows": args.windows,
        "windows_per_image": per_image, "images": len(images), "svd_rank": args.svd_rank,
        "distinct_window_share": distinct,
        "classes": args.classes, "postprocess": args.postprocess,
        # the first precision's table; every precision's under seconds_per_image_by_precision
        "precision": precisions[0], "seconds_per_image": results,
        "seconds_per_image_by_precision": by_precision, "pool_kernel_seconds": kernel, "ratios": ratios,
    })
    print(f"\nwritten {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
