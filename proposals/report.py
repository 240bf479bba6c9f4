"""Proposal quality reports: a table row per backend and recall plots (numpy, matplotlib)."""
from __future__ import annotations

from typing import Sequence

import numpy as np

from proposals.recall import (AR_THRESHOLDS, average_best_overlap, average_recall, best_overlaps, recall_at,
                             recall_vs_boxes)
from sppcore.fileio import atomic_open

__all__ = ["proposal_summary", "format_proposal_table", "plot_recall_curves", "BOX_COUNTS"]

BOX_COUNTS = (10, 20, 50, 100, 200, 500, 1000, 2000, 3000)


def proposal_summary(name: str, proposals: Sequence[np.ndarray], gt_boxes: Sequence[np.ndarray],
                     seconds: Sequence[float]) -> dict:
    """One row: boxes per image, recall at 0.5 / 0.7, AR, ABO, median seconds, and the curves."""
    ov = best_overlaps(proposals, gt_boxes)
    iou_grid = np.round(np.arange(0.5, 1.0001, 0.05), 2)
    return {
        "name": name,
        "images": len(proposals),
        "objects": int(len(ov)),
        "boxes_per_image": float(np.mean([len(p) for p in proposals])) if len(proposals) else 0.0,
        "recall_0.5": float(recall_at(ov, [0.5])[0]),
        "recall_0.7": float(recall_at(ov, [0.7])[0]),
        "average_recall": average_recall(ov),
        "average_best_overlap": average_best_overlap(ov),
        "seconds_per_image": float(np.median(seconds)) if len(seconds) else float("nan"),
        "recall_vs_iou": {"iou": iou_grid.tolist(), "recall": recall_at(ov, iou_grid).tolist()},
        "recall_vs_boxes": {"boxes": list(BOX_COUNTS),
                            "recall": recall_vs_boxes(proposals, gt_boxes, BOX_COUNTS).tolist()},
        "ar_thresholds": AR_THRESHOLDS.tolist(),
    }


def format_proposal_table(rows: Sequence[dict]) -> str:
    width = max([len(r["name"]) for r in rows] + [7])
    lines = [f"{'backend':<{width}}  {'images':>6}  {'boxes/img':>9}  {'R@0.5':>6}  {'R@0.7':>6}  {'AR':>6}  {'ABO':>6}  {'s/img':>6}"]
    for r in rows:
        lines.append(f"{r['name']:<{width}}  {r['images']:6d}  {r['boxes_per_image']:9.0f}  {r['recall_0.5']:6.3f}  "
                     f"{r['recall_0.7']:6.3f}  {r['average_recall']:6.3f}  {r['average_best_overlap']:6.3f}  "
                     f"{r['seconds_per_image']:6.2f}")
    return "\n".join(lines)


def plot_recall_curves(rows: Sequence[dict], path: str, title: str = "") -> str:
    """Recall vs IoU (at all boxes) and recall at IoU 0.5 vs boxes per image, one line per
    backend, side by side in one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4), dpi=110)
    for r in rows:
        label = f"{r['name']} (AR {r['average_recall']:.3f})"
        a.plot(r["recall_vs_iou"]["iou"], r["recall_vs_iou"]["recall"], marker=".", label=label)
        b.semilogx(r["recall_vs_boxes"]["boxes"], r["recall_vs_boxes"]["recall"], marker=".", label=r["name"])
    a.set_xlabel("IoU")
    a.set_ylabel("recall")
    a.set_title("recall vs IoU (all boxes)")
    b.set_xlabel("proposals per image")
    b.set_ylabel("recall at IoU 0.5")
    b.set_title("recall vs number of boxes")
    for ax in (a, b):
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    with atomic_open(path, "wb") as f:
        fig.savefig(f, format="png")
    plt.close(fig)
    return path
