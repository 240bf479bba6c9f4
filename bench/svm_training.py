"""Benchmark SVM training with hard-negative mining on simulated detection features.

No network: window features are drawn from a structured random model, so the benchmark
isolates the ``svm`` package (mining bookkeeping, the solver, memory). A window's feature
is ``relu(z @ G + noise)`` (12,800-d by default, like SPP's pool5) with a 64-d latent
``z``: ground-truth boxes have ``z`` near their class's direction, most proposals are
background, and a few per image are parts of objects (half a class's direction), which
are the hard negatives. Each image has a few objects, as in VOC07 trainval (15,662
objects in 5,011 images).

Two parts:

1. one mining pass over ``--images`` images with ``--windows`` candidates each, at the
   papers' settings, recording the shared store's size, the peak RSS
   (``resource.getrusage``) and the time, and extrapolating them to VOC07 trainval
   (5,011 images; ``--voc-windows`` candidates per image);
2. the solver alone: a cold solve on ``--solver-rows`` cached rows, then a warm-started
   solve after 2,000 new hard negatives (what each mining round does).

Prints a table and writes JSON (default ``bench/results/svm_training.json``). The file is
not called ``bench/svm.py``: run as a script, that name would shadow the ``svm`` package.

Example::

    python bench/svm_training.py --images 1000 --windows 500
"""
from __future__ import annotations

import argparse
import os
import platform
import resource
import sys
import time

import numpy as np

VOC07_TRAINVAL_IMAGES = 5011
VOC07_TRAINVAL_OBJECTS = 15662
LATENT = 64


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--classes", type=int, default=20, help="classes (default: %(default)s)")
    parser.add_argument("--dim", type=int, default=12800, help="feature dimension (default: %(default)s)")
    parser.add_argument("--images", type=int, default=1000, help="images mined (default: %(default)s)")
    parser.add_argument("--windows", type=int, default=500, help="candidates per image (default: %(default)s)")
    parser.add_argument("--voc-windows", type=int, default=2000, help="candidates per VOC image, for the extrapolation")
    parser.add_argument("--solver-rows", type=int, default=20000, help="rows of the solver-only timing (0: skip)")
    parser.add_argument("--retrain-limit", type=int, default=2000, help="svm.retrain_limit (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="bench/results/svm_training.json", help="JSON output")
    return parser


class FeatureModel:
    """Structured random window features (see the module docstring)."""

    def __init__(self, num_classes: int, dim: int, seed: int):
        self.rng = np.random.default_rng(seed)
        self.dim = dim
        self.G = (self.rng.normal(size=(LATENT, dim)) / np.sqrt(LATENT)).astype(np.float32)
        self.directions = self.rng.normal(size=(num_classes, LATENT)).astype(np.float32) * 2.5
        # a bank of noise rows reused at random offsets: drawing fresh normals would
        # dominate the benchmark's time
        self.noise = (0.3 * self.rng.normal(size=(4096, dim))).astype(np.float32)

    def windows(self, latent: np.ndarray) -> np.ndarray:
        rows = self.rng.integers(0, len(self.noise), size=len(latent))
        return np.maximum(latent.astype(np.float32) @ self.G + self.noise[rows], 0.0)

    def objects(self, labels: np.ndarray) -> np.ndarray:
        return self.windows(self.directions[labels] + self.rng.normal(size=(len(labels), LATENT)))

    def image(self, n: int, num_classes: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Candidate features [n, D], the image's object labels, and a candidate mask."""
        num_objects = max(1, self.rng.poisson(VOC07_TRAINVAL_OBJECTS / VOC07_TRAINVAL_IMAGES))
        labels = self.rng.integers(0, num_classes, size=num_objects)
        latent = self.rng.normal(size=(n, LATENT))
        parts = self.rng.choice(n, size=min(n, 10 * len(labels)), replace=False)
        latent[parts] += 0.5 * self.directions[self.rng.choice(labels, size=len(parts))]
        candidates = np.ones((num_classes, n), dtype=bool)
        return self.windows(latent), labels, candidates


def peak_rss_mib() -> float:
    # ru_maxrss is KiB on Linux, bytes on macOS
    scale = 1 if sys.platform == "darwin" else 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2**20


def bench_solver(model: FeatureModel, rows: int, seed: int) -> dict:
    from svm import SVMConfig, compute_feature_scale, train_linear_svm

    cfg = SVMConfig()
    rng = np.random.default_rng(seed)
    y = np.where(rng.random(rows) < 0.05, 1, -1)
    latent = rng.normal(size=(rows, LATENT))
    latent[y > 0] += model.directions[0]
    hard = rng.random(rows) < 0.2
    latent[hard & (y < 0)] += 0.5 * model.directions[0]
    X = np.concatenate([model.windows(latent[i : i + 2048]) for i in range(0, rows, 2048)])
    s = compute_feature_scale(X[:2000], cfg.target_norm)
    X *= s
    base = rows - min(2000, rows // 4)
    args = (cfg.C, cfg.pos_loss_weight, cfg.bias_multiplier, 1.0)
    t0 = time.perf_counter()
    first = train_linear_svm(X[:base], y[:base], *args, tol=cfg.tol)
    t1 = time.perf_counter()
    cold = train_linear_svm(X, y, *args, tol=cfg.tol)
    t2 = time.perf_counter()
    warm = train_linear_svm(X, y, *args, tol=cfg.tol, alpha_init=np.concatenate([first.alpha, np.zeros(rows - base)]))
    t3 = time.perf_counter()
    return {
        "rows": rows, "dim": model.dim, "first_rows": base,
        "first_seconds": t1 - t0,
        "cold_seconds": t2 - t1, "cold_epochs": cold.epochs, "cold_objective": cold.objective,
        "warm_seconds": t3 - t2, "warm_epochs": warm.epochs, "warm_objective": warm.objective,
        "support_vectors": int((cold.alpha > 0).sum()),
    }


def bench_mining(model: FeatureModel, args) -> dict:
    from svm import HardNegativeMiner, SVMConfig, compute_feature_scale

    cfg = SVMConfig(retrain_limit=args.retrain_limit)
    K = args.classes
    images = [model.image(args.windows, K) for _ in range(min(args.images, 8))]
    scale_sample = np.concatenate([f[: 2000 // len(images)] for f, _, _ in images])
    miner = HardNegativeMiner(K, args.dim, cfg, compute_feature_scale(scale_sample, cfg.target_norm))
    rss_start = peak_rss_mib()
    trace, positives = [], 0
    feature_seconds = mine_seconds = 0.0
    for i in range(args.images):
        t0 = time.perf_counter()
        feats, labels, candidates = images[i] if i < len(images) else model.image(args.windows, K)
        objects = model.objects(labels)
        t1 = time.perf_counter()
        miner.add_positives(objects, labels)
        positives += len(labels)
        miner.process_image(f"{i:06d}", feats, candidates)
        mine_seconds += time.perf_counter() - t1
        feature_seconds += t1 - t0
        trace.append((i + 1, len(miner.store), sum(len(c.slots) for c in miner.classes)))
    images.clear()
    t0 = time.perf_counter()
    W, b, report = miner.finish()
    finish_seconds = time.perf_counter() - t0
    solver_seconds = sum(r["seconds"] for r in report)
    store_rows = len(miner.store)
    # the store's growth over the second half of the pass, extrapolated linearly (eviction
    # makes the true curve flatten, so this overestimates)
    half = trace[len(trace) // 2]
    rows_per_image = (trace[-1][1] - half[1]) / max(1, trace[-1][0] - half[0])
    hard_per_image = sum(r["hard_negatives_added"] for r in report) / args.images
    window_ratio = args.voc_windows / args.windows
    voc_rows = store_rows + rows_per_image * window_ratio * (VOC07_TRAINVAL_IMAGES - args.images)
    largest_class = max(r["positives"] + r["negatives"] for r in report)
    voc_largest_class = largest_class * (voc_rows / max(1, store_rows))
    row_bytes = args.dim * np.dtype(cfg.cache_dtype).itemsize
    voc_bytes = {
        "store": voc_rows * row_bytes,
        "largest_class_float32_copy": voc_largest_class * args.dim * 4,
        "one_image_features_float32": args.voc_windows * args.dim * 4,
    }
    return {
        "images": args.images, "windows": args.windows, "classes": K, "dim": args.dim,
        "positives": positives, "retrain_limit": cfg.retrain_limit,
        "store_rows": store_rows, "store_mib": miner.store.nbytes / 2**20,
        "class_rows": trace[-1][2], "sharing": trace[-1][2] / max(1, store_rows),
        "hard_negatives_per_image": hard_per_image,
        "retrains": sum(r["retrains"] for r in report),
        "seconds_mining_per_image": mine_seconds / args.images,
        "seconds_solver_total": solver_seconds, "seconds_finish": finish_seconds,
        "seconds_feature_simulation": feature_seconds,
        "peak_rss_mib": peak_rss_mib(), "rss_before_mining_mib": rss_start,
        "store_rows_per_image_late": rows_per_image,
        "voc07_store_rows": voc_rows,
        "voc07_bytes": voc_bytes,
        "voc07_total_gib": sum(voc_bytes.values()) / 2**30,
        "voc07_mining_seconds": mine_seconds / args.images * window_ratio * VOC07_TRAINVAL_IMAGES,
        "trace_images_store_rows_class_rows": trace[:: max(1, len(trace) // 50)] + trace[-1:],
        "per_class": report,
    }


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from sppcore.fileio import atomic_write_json

    model = FeatureModel(args.classes, args.dim, args.seed)
    result = {"platform": platform.platform(), "processor": platform.processor(), "cpus": os.cpu_count()}
    # mining first, so that the peak RSS it reports is its own
    result["mining"] = m = bench_mining(model, args)
    print(f"mining, {m['images']} images x {m['windows']} candidates, {m['classes']} classes, {m['dim']}-d:")
    rows = [
        ("positives", f"{m['positives']}"),
        ("hard negatives added / image", f"{m['hard_negatives_per_image']:.1f} (all classes)"),
        ("retrains (incl. final)", f"{m['retrains']}"),
        ("store rows / class rows", f"{m['store_rows']} / {m['class_rows']} (sharing x{m['sharing']:.2f})"),
        ("store rows / image, 2nd half", f"{m['store_rows_per_image_late']:.1f}"),
        ("store", f"{m['store_mib']:.0f} MiB"),
        ("peak RSS", f"{m['peak_rss_mib']:.0f} MiB ({m['rss_before_mining_mib']:.0f} before mining)"),
        ("mining s / image", f"{m['seconds_mining_per_image']:.3f} (solver {m['seconds_solver_total']:.1f} s in all, "
                             f"finish {m['seconds_finish']:.1f} s)"),
        ("VOC07 store rows (extrap.)", f"{m['voc07_store_rows']:.0f}"),
        ("VOC07 memory (extrap.)", f"{m['voc07_total_gib']:.2f} GiB = store + largest class float32 copy + one image"),
        ("VOC07 mining time (extrap.)", f"{m['voc07_mining_seconds'] / 3600:.2f} h (features excluded)"),
    ]
    width = max(len(r[0]) for r in rows)
    for name, value in rows:
        print(f"  {name:<{width}}  {value}")
    if args.solver_rows:
        result["solver"] = sv = bench_solver(model, args.solver_rows, args.seed)
        print(f"\nsolver, {sv['rows']} x {sv['dim']} float32 rows (papers' C, tol):")
        notes = {"cold": "", "warm": f"  (from {sv['first_rows']} rows + {sv['rows'] - sv['first_rows']} new)"}
        for kind, note in notes.items():
            print(f"  {kind}  {sv[kind + '_seconds']:7.2f} s  {sv[kind + '_epochs']:4d} epochs  "
                  f"objective {sv[kind + '_objective']:.5g}{note}")
    atomic_write_json(args.out, result)
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
