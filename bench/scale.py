"""Images per second against the number of processes (torchrun), and what that predicts.

For each process count P of ``--procs`` the tools run as they would in production,
under ``torchrun --standalone --nproc-per-node P`` (P = 1: a plain ``python`` run):

* ``tools/compute_proposals.py`` on the first ``--num-images`` generated test images, in
  a fresh cache each time;
* ``tools/test_net.py`` on the same images with a model trained once beforehand (its
  proposals cached, so only detection is timed), into a fresh output directory each time.

Each process gets an equal share of the cores (``OMP_NUM_THREADS`` = cores / P, and
``proposals.workers`` = 0, the share of the cores). Every command runs twice, on half of
the images and on all of them, each time from scratch: images per second of the larger
run counts start-up (Python, torch, the process group, hashing the images) in; the steady
rate, the extra images over the extra seconds, leaves it out, and speed-up (against the
smallest P) and scaling efficiency (speed-up / P) are the steady rate's. It is NaN when
the larger run was not the slower one: the noise of start-up (seconds on a shared machine)
exceeded the extra images' work; time more images.

Extrapolated wall time for VOC07 (9,963 images) and 118k images (COCO train2017's
size) on 1, 4 and 16 machines of ``--cores-per-machine`` cores assumes that the steady
images per second per core of the largest P measured (all cores here busy) hold at that size (no
start-up, no shared-filesystem limit), and covers the per-image work only: rank 0's sequential part
(evaluation here; SVM mining in training) is not in it.

Prints a table and writes JSON (default ``bench/results/scale.json``).

Example::

    python bench/scale.py                                  # P = 1, 2 on 8 images
    python bench/scale.py --procs 1,2,4,8,16 --num-images 64   # a larger machine
"""
from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# image counts the extrapolation is made for: VOC 2007 trainval + test, COCO train2017
DATASETS = {"VOC07 (9,963)": 9963, "118k": 118287}
MACHINES = (1, 4, 16)
# a small network and proposal cap: the tools' speed-up, not the detector's accuracy
SETTINGS = ["network.weights=random", "network.fc_dim=256", "features.scales=[300]", "proposals.max_boxes=500"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--procs", default="1,2", help="process counts, comma-separated (default: %(default)s)")
    parser.add_argument("--num-images", type=int, default=8, help="generated test images timed (default: %(default)s)")
    parser.add_argument("--train-images", type=int, default=6, help="training images of the timed model")
    parser.add_argument("--cores-per-machine", type=int, default=16, help="cores of the machines extrapolated to")
    parser.add_argument("--work", default="data/cache/bench/scale", help="generated data, model and caches")
    parser.add_argument("--out", default="bench/results/scale.json", help="JSON output")
    return parser


def parse_procs(text: str) -> list[int]:
    try:
        procs = sorted({int(p) for p in text.split(",") if p.strip()})
    except ValueError:
        raise SystemExit(f"--procs: {text!r} is not a comma-separated list of integers") from None
    if not procs or procs[0] < 1:
        raise SystemExit(f"--procs: {text!r}: give positive process counts")
    return procs


def run(argv: list[str], procs: int, cores: int) -> float:
    """Wall seconds of one tool run with ``procs`` processes sharing ``cores`` cores."""
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "LOCAL_WORLD_SIZE")}
    threads = str(max(1, cores // procs))
    env.update(PYTHONPATH=ROOT, OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads)
    launcher = [sys.executable] if procs == 1 else [
        sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={procs}"]
    t0 = time.perf_counter()
    proc = subprocess.run([*launcher, *argv], cwd=ROOT, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv[:1])} with {procs} processes failed:\n{proc.stderr[-3000:]}")
    return seconds


def scaling_rows(stage: str, counts: tuple[int, int], seconds: dict[int, tuple[float, float]]) -> list[dict]:
    """Per process count, from the wall seconds of runs on ``counts`` = (fewer, more)
    images: images per second of the larger run (start-up included), the steady rate
    (the extra images over the extra seconds: start-up cancels) and the start-up it
    implies, and the steady rate's speed-up and efficiency against the smallest count."""
    fewer, more = counts
    rows = []
    for procs in sorted(seconds):
        t_fewer, t_more = seconds[procs]
        steady = (more - fewer) / (t_more - t_fewer) if t_more > t_fewer else float("nan")
        rows.append({"stage": stage, "procs": procs, "images": more, "seconds": t_more,
                     "images_per_second": more / t_more, "steady_images_per_second": steady,
                     "startup_seconds": t_fewer - fewer / steady, "seconds_fewer": t_fewer, "images_fewer": fewer})
    base = rows[0]
    for r in rows:
        r["speedup"] = r["steady_images_per_second"] / base["steady_images_per_second"] * base["procs"]
        r["efficiency"] = r["speedup"] / r["procs"]
    return rows


def extrapolate(row: dict, cores_used: int, cores_per_machine: int) -> dict:
    """Hours per dataset and machine count at ``row``'s images per second per core (the
    run used ``cores_used`` cores, so its efficiency is in that rate)."""
    per_core = row["steady_images_per_second"] / cores_used
    return {name: {str(m): images / (per_core * cores_per_machine * m) / 3600 for m in MACHINES}
            for name, images in DATASETS.items()}


def format_tables(rows: list[dict], predictions: dict, cores_per_machine: int) -> str:
    lines = [f"{'stage':<12s}{'procs':>6s}{'images':>8s}{'seconds':>9s}{'images/s':>10s}{'steady':>9s}"
             f"{'start-up s':>12s}{'speed-up':>10s}{'efficiency':>12s}"]
    for r in rows:
        lines.append(f"{r['stage']:<12s}{r['procs']:>6d}{r['images']:>8d}{r['seconds']:>9.1f}"
                     f"{r['images_per_second']:>10.3f}{r['steady_images_per_second']:>9.3f}{r['startup_seconds']:>12.1f}"
                     f"{r['speedup']:>10.2f}{r['efficiency']:>12.2f}")
    lines.append("")
    head = "".join(f"{f'{m} x {cores_per_machine} cores':>16s}" for m in MACHINES)
    lines.append(f"{'hours':<12s}{'images':>16s}{head}")
    for stage, by_dataset in predictions.items():
        for name, hours in by_dataset.items():
            lines.append(f"{stage:<12s}{name:>16s}" + "".join(f"{hours[str(m)]:>16.2f}" for m in MACHINES))
    return "\n".join(lines)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    procs = parse_procs(args.procs)
    if args.num_images < 2:
        raise SystemExit(f"--num-images: at least 2 (runs on half of them measure the start-up), got {args.num_images}")
    from detect.distributed import cores_available
    from sppcore.fileio import atomic_write_json
    from detect.synthetic import generate_synthetic_voc

    cores = cores_available()
    work = os.path.abspath(args.work)
    root = generate_synthetic_voc(os.path.join(work, "data"), seed=0, num_trainval=args.train_images,
                                  num_test=args.num_images, progress=False)
    common = [f"data.root={root}", *SETTINGS]
    model = os.path.join(work, "model")
    model_cache = f"cache_dir={os.path.join(work, 'cache')}"
    run(["tools/train_svm.py", "--quiet", "--out", model, "--set", *common, model_cache], 1, cores)
    run(["tools/compute_proposals.py", "--image-set", "test", "--set", *common, model_cache], 1, cores)
    counts = (args.num_images // 2, args.num_images)
    seconds: dict[str, dict[int, tuple[float, float]]] = {"proposals": {}, "test_net": {}}
    for p in procs:
        timed = {"proposals": [], "test_net": []}
        for n in counts:
            fresh = os.path.join(work, f"runs-{p}-{n}")
            shutil.rmtree(fresh, ignore_errors=True)
            timed["proposals"].append(run(["tools/compute_proposals.py", "--image-set", "test", "--num-images", str(n),
                                           "--set", *common, f"cache_dir={os.path.join(fresh, 'cache')}"], p, cores))
            timed["test_net"].append(run(["tools/test_net.py", "--quiet", "--model", model, "--num-images", str(n),
                                          "--out", os.path.join(fresh, "test")], p, cores))
        for stage, pair in timed.items():
            seconds[stage][p] = tuple(pair)
    rows = [r for stage, s in seconds.items() for r in scaling_rows(stage, counts, s)]
    largest = max(procs)
    predictions = {stage: extrapolate(next(r for r in rows if r["stage"] == stage and r["procs"] == largest),
                                      cores, args.cores_per_machine) for stage in seconds}
    print(f"{counts[0]} and {counts[1]} generated images, {cores} cores here; images/s: of the larger run, "
          f"start-up included; steady: the extra images over the extra seconds")
    print(format_tables(rows, predictions, args.cores_per_machine))
    atomic_write_json(args.out, {"machine": platform.processor() or platform.machine(), "cores": cores,
                                 "settings": SETTINGS, "rows": rows, "extrapolated_hours": predictions,
                                 "cores_per_machine": args.cores_per_machine, "machines": list(MACHINES),
                                 "datasets": DATASETS})
    print(f"\nwritten {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
