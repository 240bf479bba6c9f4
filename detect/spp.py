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
over power-of-two rectangles, channels last, built and read with numpy, which is several
times faster than torch for these mid-sized strided maxima) with four lookups; with this bin rule a bin of
level m is exactly the union of bins of level n when m divides n (e.g. ``floor(2i w / 6) =
floor(i w / 3)``), so only the finest level is looked up and the coarser ones are maxima
of it.

On a GPU the same algorithm runs in torch (:func:`spatial_pyramid_pool_torch`, chosen
by :func:`spatial_pyramid_pool` for a map that is not on the CPU), so the map never
leaves the device.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Sequence

import numpy as np
import torch

__all__ = [
    "project_windows_to_map",
    "spatial_pyramid_pool",
    "spatial_pyramid_pool_reference",
    "spatial_pyramid_pool_torch",
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


def _maximum_of(array):
    """The elementwise maximum for numpy arrays or torch tensors (the two kernels share
    their table and level code)."""
    return torch.maximum if isinstance(array, torch.Tensor) else np.maximum


def _sparse_table(base, max_kh: int, max_kw: int):
    """table[kh, kw, y, x, c] = max of base[y:y+2^kh, x:x+2^kw, c] (valid where inside).

    ``base`` is the map channels last, [H, W, C], so one lookup reads C contiguous values;
    a numpy array (the CPU kernel: several times faster than torch for these mid-sized
    strided maxima) or a torch tensor on any device."""
    h, w, c = base.shape
    shape = (max_kh + 1, max_kw + 1, h, w, c)
    table = base.new_empty(shape) if isinstance(base, torch.Tensor) else np.empty(shape, dtype=base.dtype)
    maximum = _maximum_of(base)
    table[0, 0] = base
    for kh in range(max_kh + 1):
        if kh > 0:
            step = 1 << (kh - 1)
            prev, cur = table[kh - 1, 0], table[kh, 0]
            cur[h - step :] = prev[h - step :]
            maximum(prev[: h - step], prev[step:], out=cur[: h - step])
        for kw in range(1, max_kw + 1):
            step = 1 << (kw - 1)
            prev, cur = table[kh, kw - 1], table[kh, kw]
            cur[:, w - step :] = prev[:, w - step :]
            maximum(prev[:, : w - step], prev[:, step:], out=cur[:, : w - step])
    return table


def _floor_log2(x):
    """floor(log2(x)) of positive integers (numpy or torch, int64 back); exact below 2^52
    (bin sizes)."""
    if isinstance(x, torch.Tensor):
        return torch.frexp(x.double()).exponent.long() - 1
    return np.frexp(x.astype(np.float64))[1].astype(np.int64) - 1


def _bin_edges(start, length, n: int):
    """Inclusive bin ranges [N, n] of windows (start, length in cells; numpy or torch):
    the paper's rule."""
    if isinstance(start, torch.Tensor):
        i = torch.arange(n, dtype=torch.int64, device=start.device)
    else:
        i = np.arange(n, dtype=np.int64)
    lo = start[:, None] + (i[None] * length[:, None]) // n
    hi = start[:, None] + -((-(i[None] + 1) * length[:, None]) // n) - 1
    return lo, hi


def _lookup_indices(cells, n: int, h: int, w: int, kw_count: int):
    """Row indices [N, n, n] into the flattened table of the four corners of every bin.
    ``cells``: int64 [N, 4], a numpy array (the CPU kernel) or a torch Tensor, whose own
    device computes them (the torch kernel: a GPU then receives N cells rather than
    4 N n^2 indices); floor divisions both ways, so the same indices."""
    x_lo, x_hi = _bin_edges(cells[:, 0], cells[:, 2] - cells[:, 0] + 1, n)
    y_lo, y_hi = _bin_edges(cells[:, 1], cells[:, 3] - cells[:, 1] + 1, n)
    kx = _floor_log2(x_hi - x_lo + 1)
    ky = _floor_log2(y_hi - y_lo + 1)
    x_far = x_hi - (1 << kx) + 1
    y_far = y_hi - (1 << ky) + 1
    Y0, Y1, KY = y_lo[:, :, None], y_far[:, :, None], ky[:, :, None]
    X0, X1, KX = x_lo[:, None, :], x_far[:, None, :], kx[:, None, :]
    base = (KY * kw_count + KX) * (h * w)
    return [base + Y0 * w + X0, base + Y0 * w + X1, base + Y1 * w + X0, base + Y1 * w + X1]


# windows per chunk: keeps the lookups' temporaries in cache
POOL_CHUNK = 32
# fewest windows per worker thread: below this a thread costs more than it saves
MIN_WINDOWS_PER_THREAD = 128


def _reduce_level(finer, n: int):
    """[B, m, m, C] bins of level m -> [B, n, n, C] of level n (n divides m): each coarse
    bin is the union of f x f fine bins (the module docstring), taken as pairwise maxima of
    strided views, vectorised over the contiguous channels (numpy or torch)."""
    maximum = _maximum_of(finer)
    f = finer.shape[1] // n
    rows = finer[:, 0::f]
    for dy in range(1, f):
        rows = maximum(rows, finer[:, dy::f])
    out = rows[:, :, 0::f]
    for dx in range(1, f):
        out = maximum(out, rows[:, :, dx::f])
    return out


def spatial_pyramid_pool(feature_map: torch.Tensor, cells, levels: Sequence[int] = (6, 3, 2, 1),
                         out: torch.Tensor | None = None) -> torch.Tensor:
    """Pool windows of a feature map into fixed-length vectors (fast kernel).

    feature_map: Tensor[C, H, W]; cells: int64 [N, 4] inclusive ``(cx1, cy1, cx2, cy2)``
    as :func:`project_windows_to_map` returns them. Returns Tensor[N, C * sum(n * n)],
    levels in the order given, each flattened channel-major (C, n, n). Exactly equal to
    :func:`spatial_pyramid_pool_reference`. Not differentiable (inference and cached
    training use it; trainable pooling uses :func:`pool_whole_map`). CPU float tensors.
    Windows are split over ``torch.get_num_threads()`` threads (numpy releases the GIL).
    A map on another device (a GPU) goes to :func:`spatial_pyramid_pool_torch` and the
    result stays on that device.

    ``out``: optionally a contiguous Tensor[N, D] of the map's dtype and device to write
    into and return (a caller pooling image after image reuses one, instead of
    page-faulting a fresh 100 MB for 2,000 windows of 12,800-d every time).
    """
    if feature_map.device.type != "cpu":
        return spatial_pyramid_pool_torch(feature_map, cells, levels, out=out)
    cells, (c, h, w), levels = _kernel_inputs(feature_map, cells, levels, out)
    if cells.shape[0] == 0:
        return feature_map.new_zeros((0, pyramid_dim(c, levels)))
    base = feature_map.detach().permute(1, 2, 0).contiguous().numpy()  # [H, W, C]
    looked_up, derived, max_kh, max_kw = _plan(cells, levels, h, w)
    flat = _sparse_table(base, max_kh, max_kw).reshape(-1, c)
    corners = {n: _lookup_indices(cells, n, h, w, max_kw + 1) for n in looked_up}
    num = cells.shape[0]
    shape = (num, pyramid_dim(c, levels))
    result = torch.from_numpy(np.empty(shape, dtype=base.dtype)) if out is None else out
    out = result.numpy()
    offsets, pos = {}, 0
    for n in levels:
        offsets.setdefault(n, pos)
        pos += c * n * n

    def pool_range(first: int, stop: int) -> None:
        # this thread's gather buffers, reused chunk after chunk
        buffers = {n: (np.empty((POOL_CHUNK * n * n, c), base.dtype), np.empty((POOL_CHUNK * n * n, c), base.dtype))
                   for n in looked_up}
        for s in range(first, stop, POOL_CHUNK):
            b = min(POOL_CHUNK, stop - s)
            pooled = {}
            for n in looked_up:
                p, extra = (buf[: b * n * n] for buf in buffers[n])
                first_corner, *others = corners[n]
                np.take(flat, first_corner[s : s + b].reshape(-1), axis=0, out=p)
                for k in others:
                    np.take(flat, k[s : s + b].reshape(-1), axis=0, out=extra)
                    np.maximum(p, extra, out=p)
                pooled[n] = p.reshape(b, n, n, c)
            for n in derived:  # from the coarsest computed level that n divides
                src = min(m for m in pooled if m % n == 0)
                pooled[n] = _reduce_level(pooled[src], n)
            for n, start in offsets.items():
                dst = out[s : s + b, start : start + c * n * n].reshape(b, c, n, n)
                dst[...] = pooled[n].transpose(0, 3, 1, 2)

    workers = max(1, min(torch.get_num_threads(), num // MIN_WINDOWS_PER_THREAD))
    if workers == 1:
        pool_range(0, num)
    else:
        # contiguous, chunk-aligned ranges: each thread writes its own rows of `out`
        share = -(-num // (workers * POOL_CHUNK)) * POOL_CHUNK
        with ThreadPoolExecutor(workers) as executor:
            for done in [executor.submit(pool_range, i, min(num, i + share)) for i in range(0, num, share)]:
                done.result()
    # a level listed twice is copied from its first occurrence
    pos = 0
    for n in levels:
        if pos != offsets[n]:
            out[:, pos : pos + c * n * n] = out[:, offsets[n] : offsets[n] + c * n * n]
        pos += c * n * n
    return result


def _kernel_inputs(feature_map: torch.Tensor, cells, levels, out: torch.Tensor | None = None):
    """The kernels' checked inputs: int64 cells [N, 4], the map's (C, H, W), the levels as
    ints. Raises ValueError for cells that are not inclusive ranges inside the map, or an
    ``out`` that is not a contiguous [N, D] tensor of the map's dtype and device."""
    cells = np.asarray(cells, dtype=np.int64).reshape(-1, 4)
    c, h, w = feature_map.shape
    levels = tuple(int(n) for n in levels)
    if (cells[:, :2] < 0).any() or (cells[:, 2] >= w).any() or (cells[:, 3] >= h).any() \
            or (cells[:, 2] < cells[:, 0]).any() or (cells[:, 3] < cells[:, 1]).any():
        raise ValueError("cells must be inclusive ranges inside the feature map")
    shape = (cells.shape[0], pyramid_dim(c, levels))
    if out is not None and (tuple(out.shape) != shape or out.dtype != feature_map.dtype
                            or not out.is_contiguous() or out.device != feature_map.device):
        raise ValueError(f"out must be a contiguous {feature_map.dtype} tensor of shape {shape} "
                         f"on {feature_map.device}")
    return cells, (c, h, w), levels


def _plan(cells: np.ndarray, levels: tuple[int, ...], h: int, w: int):
    """Which levels are looked up in the sparse table (the finest, and any that divides no
    finer one), which are reduced from a finer one, and the table's largest power-of-two
    rectangle exponents (max_kh, max_kw) that those bins need."""
    finest = max(levels)
    looked_up = sorted({n for n in levels if finest % n != 0} | {finest}, reverse=True)
    derived = sorted(set(levels) - set(looked_up), reverse=True)
    smallest = min(looked_up)
    widest_bin = int((cells[:, 2] - cells[:, 0] + 1).max() + smallest - 1) // smallest + 1
    tallest_bin = int((cells[:, 3] - cells[:, 1] + 1).max() + smallest - 1) // smallest + 1
    max_kw = int(_floor_log2(np.array([min(widest_bin, w)]))[0])
    max_kh = int(_floor_log2(np.array([min(tallest_bin, h)]))[0])
    return looked_up, derived, max_kh, max_kw


# windows per step of the torch kernel: bounds its gathered [B, n, n, C] temporaries
TORCH_POOL_CHUNK = 4096


def spatial_pyramid_pool_torch(feature_map: torch.Tensor, cells, levels: Sequence[int] = (6, 3, 2, 1),
                               out: torch.Tensor | None = None) -> torch.Tensor:
    """:func:`spatial_pyramid_pool` in torch operations on the map's own device (a GPU;
    on the CPU the numpy kernel is the faster): the same sparse table, lookups and level
    reductions, so the result is exactly the reference's. ``out`` as there. Not
    differentiable."""
    cells, (c, h, w), levels = _kernel_inputs(feature_map, cells, levels, out)
    if cells.shape[0] == 0:
        return feature_map.new_zeros((0, pyramid_dim(c, levels)))
    looked_up, derived, max_kh, max_kw = _plan(cells, levels, h, w)
    if out is None:
        out = feature_map.new_empty((cells.shape[0], pyramid_dim(c, levels)))
    with torch.no_grad():
        base = feature_map.detach().permute(1, 2, 0).contiguous()  # [H, W, C]
        table = _sparse_table(base, max_kh, max_kw)
        flat = table.reshape(-1, c)
        device_cells = torch.from_numpy(cells).to(feature_map.device)
        for s in range(0, len(cells), TORCH_POOL_CHUNK):
            part = device_cells[s : s + TORCH_POOL_CHUNK]
            b = len(part)
            pooled = {}
            for n in looked_up:
                corners = [k.reshape(-1) for k in _lookup_indices(part, n, h, w, max_kw + 1)]
                p = flat.index_select(0, corners[0])
                for extra in corners[1:]:
                    p = torch.maximum(p, flat.index_select(0, extra))
                pooled[n] = p.reshape(b, n, n, c)
            for n in derived:
                pooled[n] = _reduce_level(pooled[min(m for m in pooled if m % n == 0)], n)
            pos = 0
            for n in levels:  # each level straight into its columns, channel-major
                out[s : s + b, pos : pos + c * n * n] = pooled[n].permute(0, 3, 1, 2).reshape(b, -1)
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
