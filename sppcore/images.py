"""Reading image files as RGB uint8 arrays (numpy + OpenCV, no torch).

One function, :func:`load_image`, for every image the project reads: dataset images,
images given to the detector by path, and the images proposals are computed on. An
unreadable file raises :class:`sppcore.errors.DatasetError` with one line naming the file
and the problem (missing, corrupt, an unsupported channel count or pixel type).
"""
from __future__ import annotations

import os

import numpy as np

from sppcore.errors import DatasetError

__all__ = ["load_image"]


def _pixels_as_uint8(image: np.ndarray, path: str) -> np.ndarray:
    """8-bit pixels of a decoded image: unsigned integers rescaled from their full range
    (16-bit PNG/TIFF), floats in [0, 1] times 255 (float TIFF); any other pixel type is
    refused."""
    if image.dtype == np.uint8:
        return image
    if image.dtype.kind == "u":
        return (image / (np.iinfo(image.dtype).max / 255.0)).round().astype(np.uint8)
    if image.dtype.kind == "f":
        finite = np.isfinite(image).all()
        if not finite or image.min() < 0 or image.max() > 1:
            what = "non-finite values" if not finite else f"values in [{image.min():g}, {image.max():g}]"
            raise DatasetError(f"{path}: {image.dtype} pixels with {what}; floating-point images must hold "
                               "values in [0, 1] (or use 8- or 16-bit unsigned pixels)")
        return (image.astype(np.float64) * 255.0).round().astype(np.uint8)
    raise DatasetError(f"{path}: {image.dtype} pixels are not supported "
                       "(8- or 16-bit unsigned, or floating point in [0, 1])")


def load_image(path: str) -> np.ndarray:
    """Read an image file as RGB uint8 ``[H, W, 3]`` (grayscale and RGBA are converted;
    see :func:`_pixels_as_uint8` for pixel types other than 8-bit)."""
    import cv2

    if not os.path.isfile(path):
        raise DatasetError(f"{path}: image file not found")
    data = np.fromfile(path, dtype=np.uint8)
    try:
        image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    except cv2.error:
        image = None
    if image is None or image.size == 0:
        raise DatasetError(f"{path}: not a readable image (corrupt or unsupported format)")
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (1, 3, 4)):
        channels = image.shape[2] if image.ndim == 3 else image.shape
        raise DatasetError(f"{path}: {channels} channels are not supported (grayscale, RGB or RGBA)")
    image = _pixels_as_uint8(image, path)
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    if image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2RGB)
    if image.shape[2] == 1:
        return cv2.cvtColor(image[:, :, 0], cv2.COLOR_GRAY2RGB)
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
