"""SPP-net vs R-CNN feature extraction on the same trunk and fc weights.

For each of ``--num-images`` generated images (VOC-sized) and ``--windows`` random windows
per image (proposals are a separate, separately timed stage; ``--windows-source
selective_search`` uses the project's R-CNN fast-mode proposals instead, whose
near-duplicates SPP-net pools once), measures seconds per image
per stage for SPP-net at 1 scale (688) and 5 scales (480..1200), R-CNN (warp + whole
network per window), and SPP-net with truncated-SVD fc6/fc7; then the pooling kernel
alone against torchvision's ``roi_pool`` (4 calls, one per level) on a 256 x 43 x 57 map.
Random weights: timing does not depend on them. Medians over images, ratios from the same
run. Prints a table and writes JSON (default ``bench/results/spp_vs_rcnn.json``).

``--device cuda`` runs both methods on a GPU: the network layers, SPP-net's pooling (the
torch twin of the kernel) and R-CNN's warps (``grid_sample``, ``--crop-batch`` crops at a
time); the kernel comparison at the end is always the CPU one.

Example::

    python -m bench.spp_vs_rcnn --trunk alexnet --num-images 5 --windows 2000
    python -m bench.spp_vs_rcnn --trunk zf5 --windows-source selective_search \
        --out bench/results/spp_vs_rcnn_zf5_ss.json
    python -m bench.spp_vs_rcnn --device cuda --out bench/results/spp_vs_rcnn_cuda.json
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


def time_method(extractor, images, windows):
    rows = []
    for img, boxes in zip(images, windows):
        _, seconds = extractor.extract(img, boxes, ("fc7",))
        seconds["total"] = sum(seconds.values())
        rows.append(seconds)
    return {k: float(np.median([r[k] for r in rows])) for k in rows[0]}


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from detect.config import NetworkConfig
    from detect.features import RCNNFeatures, SPPFeatures, compress_head, resolve_device
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
    methods = {
        "spp_1scale": SPPFeatures(trunk, head, scales=(688,), device=dev),
        "spp_5scale": SPPFeatures(trunk, head, scales=five, device=dev),
        "spp_1scale_svd": SPPFeatures(trunk, svd_head, scales=(688,), device=dev),
        "spp_5scale_svd": SPPFeatures(trunk, svd_head, scales=five, device=dev),
        "rcnn": RCNNFeatures(trunk, head, crop_size=crop, context_pad=round(16 * crop / 227),
                             crop_batch_size=crop_batch, device=dev),
    }
    distinct = {"rcnn": float(np.mean([len(np.unique(b, axis=0)) / len(b) for b in windows]))}
    for name in ("spp_1scale", "spp_5scale"):
        spp = methods[name]
        distinct[name] = float(np.mean([len(spp.distinct_windows(spp.compute_maps(im), b)[0]) / len(b)
                                        for im, b in zip(images, windows)]))
    results = {}
    for name, extractor in methods.items():
        extractor.extract(images[0], windows[0][:50], ("fc7",))  # warm-up
        t0 = time.perf_counter()
        results[name] = time_method(extractor, images, windows)
        print(f"{name}: {results[name]['total']:.3f} s/image ({time.perf_counter() - t0:.0f} s)", flush=True)

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
    stages = ["warp", "conv", "pool", "fc", "total"]
    per_image = float(np.mean([len(b) for b in windows]))
    device_name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu"
    print(f"\n{args.trunk}, fc {args.fc_dim}, {per_image:.0f} {args.windows_source} windows/image, "
          f"median of {len(images)} images (seconds per image, proposals excluded), network on {device_name}")
    print(f"{'method':<16}" + "".join(f"{s:>9}" for s in stages))
    for name, r in results.items():
        print(f"{name:<16}" + "".join(f"{r.get(s, 0.0):9.3f}" for s in stages))
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
        "seconds_per_image": results, "pool_kernel_seconds": kernel, "ratios": ratios,
    })
    print(f"\nwritten {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
