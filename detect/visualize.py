"""Drawing detections on images (cv2; no torch)."""
from __future__ import annotations

import colorsys
import zlib
from typing import Sequence

import cv2
import numpy as np

from sppcore.fileio import atomic_write_bytes

__all__ = ["class_colour", "draw_detections"]


def class_colour(name: str) -> tuple[int, int, int]:
    """A stable, saturated RGB colour per class name."""
    hue = (zlib.crc32(name.encode("utf-8")) % 360) / 360.0
    r, g, b = colorsys.hsv_to_rgb(hue, 0.85, 1.0)
    return int(r * 255), int(g * 255), int(b * 255)


def draw_detections(
    image: np.ndarray,
    boxes: Sequence[Sequence[float]],
    names: Sequence[str],
    scores: Sequence[float],
    path: str | None = None,
) -> np.ndarray:
    """Draw boxes (internal convention) with ``name score`` labels on a copy of the RGB
    image; write it as PNG to ``path`` (atomically) when given. Returns the drawing."""
    canvas = np.ascontiguousarray(image.copy())
    thickness = max(1, round(min(canvas.shape[:2]) / 250))
    for box, name, score in zip(boxes, names, scores):
        colour = class_colour(name)
        x1, y1, x2, y2 = (int(round(v)) for v in box)
        cv2.rectangle(canvas, (x1, y1), (max(x1, x2 - 1), max(y1, y2 - 1)), colour, thickness, cv2.LINE_AA)
        label = f"{name} {score:.2f}"
        (tw, th), base = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, 0.45, 1)
        ty = max(y1, th + base + 2)
        cv2.rectangle(canvas, (x1, ty - th - base - 2), (x1 + tw + 2, ty), colour, -1)
        cv2.putText(canvas, label, (x1 + 1, ty - base), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    if path is not None:
        ok, buf = cv2.imencode(".png", cv2.cvtColor(canvas, cv2.COLOR_RGB2BGR))
        if not ok:
            raise OSError(f"{path}: PNG encoding failed")
        atomic_write_bytes(path, buf.tobytes())
    return canvas
