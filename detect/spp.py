"""Spatial pyramid pooling of windows on a conv5 feature map (SPP-net, sections 2.3 and 4).

Two steps, both pure functions:

1. :func:`project_windows_to_map`: image windows -> inclusive cell ranges on the map.
2. :func:`spatial_pyramid_pool`: cell ranges -> fixed-length vectors (levels 6, 3, 2, 1 by
   default: 50 bins, 12,800-d with 256 channels), with a slow loop reference beside it.

Projection (paper, section 4, written there 1-based with offset 0): the left/top edge x
goes to cell ``floor(x / S) + 1`` and the right/bottom edge to ``ceil(x / S) - 1``. Here, in
0-based cells with the trunk's geometry (cell ``j`` of the map has its receptive-field
centre at image coordinate ``offset + S * j``)::

    cx1 = floor((x1 - offset) / S) + 1      first cell whose centre lies right of x1
    cx2 = ceil((x2 - offset) / S) - 1       last cell whose centre lies left of x2

i.e. the cells whose centres fall strictly inside the window. A window too small to
contain a centre (``cx1 > cx2``) collapses to the single cell whose centre is nearest the
window's centre (the official code collapses to the midpoint). Everything is clamped to
the map.

Pooling: over a window of ``w`` cells starting at ``cx1``, bin ``i`` of an ``n x n`` level
spans cells ``[cx1 + floor(i w / n), cx1 + ceil((i + 1) w / n) - 1]`` (likewise in y):
bins may overlap and are never empty; max pooling. Levels are concatenated in the order
given, each flattened channel-major ``(C, n, n)`` as ``torch.flatten`` does, so the 6 x 6
level lines up with torchvision's fc6.

The fast kernel answers each bin's rectangle-max in O(1) from a 2-D sparse table (maxima
over power-of-two rectangles, channels last) with four lookups; with this bin rule a bin of
level m is exactly the union of bins of level n when m divides n (e.g. ``floor(2i w / 6) =
floor(i w / 3)``), so only the finest level is looked up and the coarser ones are maxima
of it.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch

__all__ = [
    "project_windows_to_map",
    "spatial_pyramid_pool",
    "spatial_pyramid_pool_reference",
    "pool_whole_map",
    "pyramid_dim",
    "SpatialPyramidPool",
]


def pyramid_dim(channels: int, levels: Sequence[int] = (6, 3, 2, 1)) -> int:
    """Length of the pooled vector: ``C * sum(n * n)``."""
    return channels * sum(n * n for n in levels)


def project_windows_to_map(boxes, stride: float, offset: float, map_height: int, map_width: int) -> np.ndarray:
    """Internal-convention boxes [N, 4] (already in the scaled image's coordinates) ->
    int64 [N, 4] inclusive cells ``(cx1, cy1, cx2, cy2)`` (see the module docstring)."""
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    if len(b) == 0:
        return np.zeros((0, 4), dtype=np.int64)
    lo = np.floor((b[:, :2] - offset) / stride) + 1
    hi = np.ceil((b[:, 2:] - offset) / stride) - 1
    centre = np.round(((b[:, :2] + b[:, 2:]) / 2 - offset) / stride)
    inverted = lo > hi
    lo = np.where(inverted, centre, lo)
    hi = np.where(inverted, centre, hi)
    limits = np.array([map_width - 1, map_height - 1], dtype=np.float64)
    lo = np.clip(lo, 0, limits)
    hi = np.clip(hi, 0, limits)
    return np.concatenate([lo, hi], axis=1).astype(np.int64)


def _bin_edges(start: torch.Tensor, length: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Inclusive bin ranges [N, n] of windows (start, length in cells): the paper's rule."""
    i = torch.arange(n, dtype=torch.int64)
    lo = start[:, None] + torch.div(i[None] * length[:, None], n, rounding_mode="floor")
    hi = start[:, None] + torch.div((i[None] + 1) * length[:, None] + n - 1, n, rounding_mode="floor") - 1
    return lo, hi


def _sparse_table(fmap: torch.Tensor, max_kh: int, max_kw: int) -> torch.Tensor:
    """table[kh, kw, y, x, c] = max of fmap[c, y:y+2^kh, x:x+2^kw] (valid where inside),
    channels last so that one lookup reads C contiguous values."""
    c, h, w = fmap.shape
    base = fmap.permute(1, 2, 0).contiguous()  # [H, W, C]
    table = base.new_empty((max_kh + 1, max_kw + 1, h, w, c))
    row = base
    for kh in range(max_kh + 1):
        if kh > 0:
            step = 1 << (kh - 1)
            prev = table[kh - 1, 0]
            row = prev.clone()
            row[: h - step] = torch.maximum(prev[: h - step], prev[step:])
        table[kh, 0] = row
        for kw in range(1, max_kw + 1):
            step = 1 << (kw - 1)
            prev = table[kh, kw - 1]
            cur = table[kh, kw]
            cur.copy_(prev)
            cur[:, : w - step] = torch.maximum(prev[:, : w - step], prev[:, step:])
    return table


def _floor_log2(x: torch.Tensor) -> torch.Tensor:
    # exact for the small positive integers used here (bin sizes)
    return torch.floor(torch.log2(x.to(torch.float64))).to(torch.int64)


def _lookup_finest(table: torch.Tensor, cells: torch.Tensor, n: int, h: int, w: int) -> torch.Tensor:
    """Max over each bin of an n x n level via four sparse-table lookups -> [N, n, n, C]."""
    num = cells.shape[0]
    c = table.shape[-1]
    kw_count = table.shape[1]
    flat = table.view(-1, c)
    x_lo, x_hi = _bin_edges(cells[:, 0], cells[:, 2] - cells[:, 0] + 1, n)  # [N, n]
    y_lo, y_hi = _bin_edges(cells[:, 1], cells[:, 3] - cells[:, 1] + 1, n)
    kx = _floor_log2(x_hi - x_lo + 1)
    ky = _floor_log2(y_hi - y_lo + 1)
    x_far = x_hi - (1 << kx) + 1
    y_far = y_hi - (1 << ky) + 1
    # broadcast to [N, n (y), n (x)]
    Y0, Y1, KY = y_lo[:, :, None], y_far[:, :, None], ky[:, :, None]
    X0, X1, KX = x_lo[:, None, :], x_far[:, None, :], kx[:, None, :]
    base = (KY * kw_count + KX) * (h * w)
    out = flat.index_select(0, (base + Y0 * w + X0).reshape(-1))
    torch.maximum(out, flat.index_select(0, (base + Y0 * w + X1).reshape(-1)), out=out)
    torch.maximum(out, flat.index_select(0, (base + Y1 * w + X0).reshape(-1)), out=out)
    torch.maximum(out, flat.index_select(0, (base + Y1 * w + X1).reshape(-1)), out=out)
    return out.view(num, n, n, c)


# windows per chunk: keeps the lookups' temporaries in cache
POOL_CHUNK = 64


def spatial_pyramid_pool(feature_map: torch.Tensor, cells, levels: Sequence[int] = (6, 3, 2, 1)) -> torch.Tensor:
    """Pool windows of a feature map into fixed-length vectors (fast kernel).

    feature_map: Tensor[C, H, W]; cells: int64 [N, 4] inclusive ``(cx1, cy1, cx2, cy2)``
    as :func:`project_windows_to_map` returns them. Returns Tensor[N, C * sum(n * n)],
    levels in the order given, each flattened channel-major (C, n, n). Exactly equal to
    :func:`spatial_pyramid_pool_reference`. Not differentiable (inference and cached
    training use it; trainable pooling uses :func:`pool_whole_map`).
    """
    cells = torch.as_tensor(np.asarray(cells), dtype=torch.int64).reshape(-1, 4)
    c, h, w = feature_map.shape
    levels = tuple(int(n) for n in levels)
    if cells.shape[0] == 0:
        return feature_map.new_zeros((0, pyramid_dim(c, levels)))
    if (cells[:, 0] < 0).any() or (cells[:, 1] < 0).any() or (cells[:, 2] >= w).any() or (cells[:, 3] >= h).any() \
            or (cells[:, 2] < cells[:, 0]).any() or (cells[:, 3] < cells[:, 1]).any():
        raise ValueError("cells must be inclusive ranges inside the feature map")
    with torch.no_grad():
        fmap = feature_map.detach()
        # levels that divide a finer one are reductions of it; the others are looked up
        finest = max(levels)
        looked_up = sorted({n for n in levels if finest % n != 0} | {finest}, reverse=True)
        smallest = min(looked_up)
        widest_bin = int(((cells[:, 2] - cells[:, 0] + 1).max() + smallest - 1) // smallest) + 1
        tallest_bin = int(((cells[:, 3] - cells[:, 1] + 1).max() + smallest - 1) // smallest) + 1
        max_kw = max(0, int(math.floor(math.log2(min(widest_bin, w)))))
        max_kh = max(0, int(math.floor(math.log2(min(tallest_bin, h)))))
        table = _sparse_table(fmap, max_kh, max_kw)
        num = cells.shape[0]
        out = fmap.new_empty((num, pyramid_dim(c, levels)))
        offsets, pos = {}, 0
        for n in levels:
            offsets.setdefault(n, pos)
            pos += c * n * n
        for s in range(0, num, POOL_CHUNK):
            chunk = cells[s : s + POOL_CHUNK]
            b = chunk.shape[0]
            pooled = {n: _lookup_finest(table, chunk, n, h, w) for n in looked_up}  # [b, n, n, C]
            for n in levels:
                if n not in pooled:
                    src = next(m for m in looked_up if m % n == 0)
                    f = src // n
                    pooled[n] = pooled[src].view(b, n, f, n, f, c).amax(dim=(2, 4))
            for n in dict.fromkeys(levels):
                dst = out[s : s + b, offsets[n] : offsets[n] + c * n * n].view(b, c, n, n)
                dst.copy_(pooled[n].permute(0, 3, 1, 2))
        # a level listed twice is copied from its first occurrence
        pos = 0
        for n in levels:
            if pos != offsets[n]:
                out[:, pos : pos + c * n * n] = out[:, offsets[n] : offsets[n] + c * n * n]
            pos += c * n * n
        return out


def spatial_pyramid_pool_reference(feature_map: torch.Tensor, cells, levels: Sequence[int] = (6, 3, 2, 1)) -> torch.Tensor:
    """Slow, obviously correct loop over windows, levels and bins (tests only)."""
    cells = np.asarray(cells, dtype=np.int64).reshape(-1, 4)
    c = feature_map.shape[0]
    rows = []
    for cx1, cy1, cx2, cy2 in cells:
        w = cx2 - cx1 + 1
        h = cy2 - cy1 + 1
        parts = []
        for n in levels:
            level = torch.empty((c, n, n), dtype=feature_map.dtype)
            for j in range(n):  # rows
                y0 = cy1 + (j * h) // n
                y1 = cy1 + -((-(j + 1) * h) // n) - 1
                for i in range(n):  # columns
                    x0 = cx1 + (i * w) // n
                    x1 = cx1 + -((-(i + 1) * w) // n) - 1
                    level[:, j, i] = feature_map[:, y0 : y1 + 1, x0 : x1 + 1].amax(dim=(1, 2))
            parts.append(level.flatten())
        rows.append(torch.cat(parts))
    if not rows:
        return feature_map.new_zeros((0, pyramid_dim(c, levels)))
    return torch.stack(rows)


def pool_whole_map(feature_maps: torch.Tensor, levels: Sequence[int] = (6, 3, 2, 1)) -> torch.Tensor:
    """SPP of whole maps, differentiable: Tensor[B, C, H, W] -> [B, C * sum(n * n)].

    ``adaptive_max_pool2d`` bins are ``[floor(i H / n), ceil((i + 1) H / n))``: the paper's
    rule for a window covering the whole map, so this equals :func:`spatial_pyramid_pool`
    with cells ``(0, 0, W - 1, H - 1)``. Used for crops (R-CNN, pretraining).
    """
    b = feature_maps.shape[0]
    return torch.cat(
        [torch.nn.functional.adaptive_max_pool2d(feature_maps, n).reshape(b, -1) for n in levels], dim=1)


class SpatialPyramidPool(torch.nn.Module):
    """``nn.Module`` around :func:`spatial_pyramid_pool` (a pure function plus a thin module)."""

    def __init__(self, levels: Sequence[int] = (6, 3, 2, 1)):
        super().__init__()
        self.levels = tuple(int(n) for n in levels)

    def forward(self, feature_map: torch.Tensor, cells) -> torch.Tensor:
        return spatial_pyramid_pool(feature_map, cells, self.levels)

    def extra_repr(self) -> str:
        return f"levels={self.levels}"
