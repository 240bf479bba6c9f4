"""R-CNN's published selective-search boxes (``selective_search_data/*.mat``), read in numpy.

R-CNN released its VOC proposals as MATLAB files (``voc_2007_trainval.mat``,
``voc_2007_test.mat``, ...) holding two cell arrays of equal length:

``images``
    image ids (``'000001'``, ...)
``boxes``
    one ``[n, 4]`` double array per image, rows ``[y1 x1 y2 x2]`` in 1-based inclusive
    pixel coordinates (MATLAB's row-major image indexing), in R-CNN's own ranking order.

:func:`rcnn_mat_to_internal` is the one border conversion to the internal convention;
its inverse is :func:`internal_to_rcnn_mat`. The boxes are kept in the file's order (that
order is R-CNN's ranking, which the ``max_boxes`` cap then keeps a prefix of).
"""
from __future__ import annotations

import os
from typing import Collection

import numpy as np

from sppcore.boxes import as_boxes, internal_to_voc, voc_to_internal
from sppcore.errors import ProposalError

__all__ = ["rcnn_mat_to_internal", "internal_to_rcnn_mat", "load_rcnn_mat", "mat_files"]

# [y1 x1 y2 x2] -> [x1 y1 x2 y2] (the permutation is its own inverse)
_YX_TO_XY = [1, 0, 3, 2]


def rcnn_mat_to_internal(yxyx) -> np.ndarray:
    """R-CNN ``[y1 x1 y2 x2]`` (1-based inclusive) -> internal float32 ``[N, 4]``
    ``(x1, y1, x2, y2)`` (0-based continuous). Inverse: :func:`internal_to_rcnn_mat`."""
    return voc_to_internal(as_boxes(yxyx)[:, _YX_TO_XY])


def internal_to_rcnn_mat(boxes) -> np.ndarray:
    """Internal boxes -> R-CNN ``[y1 x1 y2 x2]`` (1-based inclusive), float64 as MATLAB
    stores them. Inverse of :func:`rcnn_mat_to_internal`."""
    return internal_to_voc(boxes)[:, _YX_TO_XY].astype(np.float64)


def mat_files(path: str) -> list[str]:
    """``path`` itself if it is a file, else the ``*.mat`` files of that directory, sorted."""
    if os.path.isfile(path):
        return [path]
    if os.path.isdir(path):
        files = sorted(os.path.join(path, f) for f in os.listdir(path) if f.endswith(".mat"))
        if files:
            return files
        raise ProposalError(f"{path}: no .mat files in this directory")
    raise ProposalError(f"{path}: proposal .mat file or directory not found (proposals.mat_path)")


def _cell_string(cell, path: str) -> str:
    value = np.asarray(cell).ravel()
    if value.dtype.kind == "O" and value.size == 1:  # a cell nested in a cell
        return _cell_string(value[0], path)
    if value.dtype.kind != "U" or value.size != 1:
        raise ProposalError(f"{path}: 'images' must be a cell array of strings")
    return str(value[0]).strip()


def load_rcnn_mat(path: str, image_ids: Collection[str] | None = None) -> dict[str, np.ndarray]:
    """Boxes of the images in ``path`` (only those in ``image_ids`` when given), as
    ``{image_id: float32 [N, 4] internal boxes}`` in the file's order."""
    import scipy.io

    try:
        mat = scipy.io.loadmat(path)
    except NotImplementedError:  # scipy reads MATLAB v4 to v7.2; v7.3 is HDF5
        raise ProposalError(f"{path}: MATLAB v7.3 (HDF5) file; re-save it with save(..., '-v7')") from None
    except (OSError, ValueError, TypeError, scipy.io.matlab.MatReadError) as e:
        raise ProposalError(f"{path}: not a readable MATLAB .mat file ({e})") from None
    if "images" not in mat or "boxes" not in mat:
        raise ProposalError(f"{path}: expected the variables 'images' and 'boxes' of R-CNN's selective-search files")
    names = [_cell_string(c, path) for c in np.asarray(mat["images"]).ravel()]
    cells = np.asarray(mat["boxes"]).ravel()
    if len(names) != len(cells):
        raise ProposalError(f"{path}: {len(names)} images but {len(cells)} box arrays")
    wanted = None if image_ids is None else set(image_ids)
    out = {}
    for name, cell in zip(names, cells):
        if wanted is not None and name not in wanted:
            continue
        arr = np.asarray(cell, dtype=np.float64)
        if arr.size == 0:
            out[name] = np.zeros((0, 4), np.float32)
            continue
        if arr.ndim != 2 or arr.shape[1] != 4:
            raise ProposalError(f"{path}: boxes of image {name} have shape {arr.shape}, expected [n, 4]")
        out[name] = rcnn_mat_to_internal(arr)
    return out
