"""TIFF reading and writing with tifffile.

Images are read whole and checked (:func:`read_image`), or opened lazily
(:func:`open_tiff_lazy`: memory-mapped, or through zarr for compressed or
tiled files) instead of read whole. Which axes they have is decided in one
place, :mod:`napari_unet.io.inputs`, built on these readers.

Labels are written as the smallest unsigned integer type that holds them
(uint8/16/32), zlib-compressed (readable by Fiji/Bio-Formats and tifffile),
atomically.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import tifffile

from napari_unet.errors import UserInputError
from napari_unet.io.atomic import AtomicGroup, atomic_path

#: File name endings read as TIFF (any case); the one definition in the package.
TIFF_SUFFIXES = (".tif", ".tiff")


def is_tiff(path: str | os.PathLike) -> bool:
    """True for a path ending in ``.tif`` or ``.tiff`` (any case)."""
    return str(path).lower().endswith(TIFF_SUFFIXES)


def smallest_uint_dtype(max_value: int) -> np.dtype:
    """The smallest unsigned integer dtype holding ``0..max_value``."""
    for dtype in (np.uint8, np.uint16, np.uint32, np.uint64):
        if max_value <= np.iinfo(dtype).max:
            return np.dtype(dtype)
    raise ValueError(f"label value {max_value} is too large")


def _existing_file(path: str | os.PathLike) -> Path:
    path = Path(path)
    if not path.is_file():
        raise UserInputError(f"file not found: {str(path)!r}")
    return path


def _unreadable(path: Path, exc: Exception) -> UserInputError:
    """The one-line error for a file tifffile (or zarr) could not open."""
    reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return UserInputError(f"cannot read {str(path)!r} as a TIFF image ({reason})")


def _check_not_empty(path: Path, data):
    # tifffile returns an empty array for some corrupt headers.
    if not hasattr(data, "shape") or 0 in data.shape:
        raise UserInputError(f"cannot read {str(path)!r} as a TIFF image (no image data found)")
    return data


def read_tiff(path: str | os.PathLike) -> np.ndarray:
    """Read a TIFF (all pages, as tifffile stacks them) into a numpy array.

    Raises
    ------
    UserInputError
        If the file is missing or is not a readable TIFF.
    """
    path = _existing_file(path)
    try:
        data = tifffile.imread(path)
    except Exception as exc:  # tifffile raises several types for corrupt files
        raise _unreadable(path, exc) from exc
    return _check_not_empty(path, data)


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


def open_tiff_lazy(path: str | os.PathLike):
    """Open a TIFF's first series without reading its pixels.

    Uncompressed, contiguous files are memory-mapped (numpy reads only the
    pages touched); others (compressed, tiled, pyramidal: full resolution)
    are opened through tifffile's zarr store, decoding only the chunks a
    slice touches. The zarr store keeps the file open while the array is
    in use (``array.store.close()`` closes it; garbage collection does too).

    Raises
    ------
    UserInputError
        If the file is missing or is not a readable TIFF.
    """
    path = _existing_file(path)
    try:
        return tifffile.memmap(path, mode="r")
    except Exception:  # not memory-mappable (compressed, tiled, ...) or not a TIFF: try zarr
        pass
    try:
        import zarr

        store = tifffile.imread(path, aszarr=True, series=0, level=0)
        data = zarr.open(store, mode="r")
    except Exception as exc:
        raise _unreadable(path, exc) from exc
    return _check_not_empty(path, data)


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


def write_labels(path: str | os.PathLike, labels: np.ndarray, group: AtomicGroup | None = None) -> Path:
    """Write integer labels atomically as the smallest fitting unsigned type.

    Parameters
    ----------
    path : str or PathLike
        Destination ``.tif`` file; replaced only once fully written.
    labels : numpy.ndarray
        Non-negative integer labels of any shape.
    group : AtomicGroup, optional
        Write as one of several outputs moved into place together
        (see :func:`write_tiff`).

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
    return write_tiff(path, labels.astype(dtype, copy=False), group)


def write_tiff(path: str | os.PathLike, data: np.ndarray, group: AtomicGroup | None = None) -> Path:
    """Write an array as a zlib-compressed TIFF, atomically.

    With ``group`` (:func:`~napari_unet.io.atomic.atomic_group`) the file
    is written to its temporary name now and moved onto ``path`` when the
    group commits, together with the group's other outputs; without, it
    replaces ``path`` before this returns.
    """
    path = Path(path)
    if group is not None:
        _imwrite(group.new_file(path), data)
        return path
    with atomic_path(path) as tmp:
        _imwrite(tmp, data)
    return path


def _imwrite(path: Path, data: np.ndarray) -> None:
    # bigtiff only when needed keeps files readable by older readers.
    # minisblack: a 3-plane label stack or 3-class probability array is
    # not an RGB picture (tifffile's guess), and must read back as planes.
    tifffile.imwrite(path, data, compression="zlib", photometric="minisblack", bigtiff=data.nbytes > 2**32 - 2**25)
