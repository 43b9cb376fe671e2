"""TIFF reading and writing with tifffile.

Labels are written as the smallest unsigned integer type that holds them
(uint8/16/32), zlib-compressed (readable by Fiji/Bio-Formats and tifffile),
atomically.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import tifffile

from .atomic import atomic_path
from .errors import UserInputError


def smallest_uint_dtype(max_value: int) -> np.dtype:
    """The smallest unsigned integer dtype holding ``0..max_value``."""
    for dtype in (np.uint8, np.uint16, np.uint32, np.uint64):
        if max_value <= np.iinfo(dtype).max:
            return np.dtype(dtype)
    raise ValueError(f"label value {max_value} is too large")


def read_tiff(path: str | os.PathLike) -> np.ndarray:
    """Read a TIFF (all pages, as tifffile stacks them) into a numpy array.

    Raises
    ------
    UserInputError
        If the file is missing or is not a readable TIFF.
    """
    path = Path(path)
    if not path.is_file():
        raise UserInputError(f"file not found: {str(path)!r}")
    try:
        data = tifffile.imread(path)
    except Exception as exc:  # tifffile raises several types for corrupt files
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UserInputError(f"cannot read {str(path)!r} as a TIFF image ({reason})") from exc
    if data.size == 0:
        # tifffile returns an empty array for some corrupt headers.
        raise UserInputError(f"cannot read {str(path)!r} as a TIFF image (no image data found)")
    return data


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read an image TIFF and check its pixels are finite numbers.

    Raises
    ------
    UserInputError
        For unreadable files, non-numeric data or NaN/infinite pixels.
    """
    image = read_tiff(path)
    if image.dtype.kind not in "uifb":
        raise UserInputError(f"{str(path)!r}: unsupported pixel type {image.dtype}")
    if image.dtype.kind == "f" and not np.all(np.isfinite(image)):
        raise UserInputError(f"{str(path)!r} contains NaN or infinite pixel values")
    return image


def read_labels(path: str | os.PathLike) -> np.ndarray:
    """Read a labels/annotations TIFF; values must be non-negative integers.

    Raises
    ------
    UserInputError
        For unreadable files, float data with fractions, or negative values.
    """
    labels = read_tiff(path)
    if labels.dtype.kind == "f":
        if not np.all(np.isfinite(labels)) or not np.all(labels == np.round(labels)):
            raise UserInputError(f"{str(path)!r} is not a labels image: it has non-integer values")
        labels = labels.astype(np.int64)
    if labels.dtype.kind not in "uib":
        raise UserInputError(f"{str(path)!r} is not a labels image (pixel type {labels.dtype})")
    if labels.size and labels.min() < 0:
        raise UserInputError(f"{str(path)!r} has negative label values")
    return labels


def write_labels(path: str | os.PathLike, labels: np.ndarray) -> Path:
    """Write integer labels atomically as the smallest fitting unsigned type.

    Parameters
    ----------
    path : str or PathLike
        Destination ``.tif`` file; replaced only once fully written.
    labels : numpy.ndarray
        Non-negative integer labels of any shape.

    Returns
    -------
    pathlib.Path
        The written path.
    """
    labels = np.asarray(labels)
    if labels.dtype.kind not in "uib":
        raise UserInputError(f"labels must be integers, got {labels.dtype}")
    if labels.size and labels.min() < 0:
        raise UserInputError("labels must be non-negative to be written as TIFF")
    dtype = smallest_uint_dtype(int(labels.max()) if labels.size else 0)
    return write_tiff(path, labels.astype(dtype, copy=False))


def write_tiff(path: str | os.PathLike, data: np.ndarray) -> Path:
    """Write an array as a zlib-compressed TIFF, atomically."""
    path = Path(path)
    with atomic_path(path) as tmp:
        # bigtiff only when needed keeps files readable by older readers.
        tifffile.imwrite(tmp, data, compression="zlib", bigtiff=data.nbytes > 2**32 - 2**25)
    return path
