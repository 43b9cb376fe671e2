"""Inputs: which files the user named, and each image file opened with its axes.

The one place that turns command-line inputs into files
(:func:`expand_inputs`: files, folders of TIFFs, glob patterns), opens an
image file lazily (:func:`open_image`) and decides its axes
(:func:`resolve_axes`: ``--axes``, else the file's metadata, else a guess).
The CLI, batch prediction and the napari reader all go through it, so an
image has the same axes everywhere.

Depends on nothing in the package outside :mod:`napari_unet.io` but
:mod:`napari_unet.errors`.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from napari_unet.errors import UserInputError
from napari_unet.io import stores
from napari_unet.io.axes import Planes, axes_from_tiff, normalize_axes
from napari_unet.io.tiff import TIFF_SUFFIXES, is_tiff, open_tiff_lazy, read_image

__all__ = [
    "TIFF_SUFFIXES",
    "declared_axes",
    "expand_inputs",
    "image_planes",
    "is_tiff",
    "open_image",
    "read_image_axes",
    "resolve_axes",
]


# -- which files -------------------------------------------------------------------
def _is_pattern(text: str) -> bool:
    return any(ch in text for ch in "*?[")


def _tiffs_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in TIFF_SUFFIXES and not p.name.startswith("."))


def expand_inputs(inputs: Sequence[str]) -> list[Path]:
    """Files named by the user: files, folders (their TIFFs) and glob patterns.

    Globs are expanded here rather than by the shell so that quoted patterns
    work the same on every shell (including Windows, whose shells do not
    expand them).

    Parameters
    ----------
    inputs : sequence of str
        File paths, folder paths (every ``*.tif``/``*.tiff`` inside, sorted,
        not recursive) or glob patterns (``**`` recurses).

    Returns
    -------
    list of pathlib.Path
        Absolute paths without duplicates, in the order given.

    Raises
    ------
    UserInputError
        For a missing path, an empty folder or a pattern matching nothing.
    """
    found: list[Path] = []
    for text in inputs:
        path = Path(text).expanduser()
        if path.is_dir():
            files = _tiffs_in(path)
            if not files:
                raise UserInputError(f"folder {text!r} has no .tif/.tiff files")
        elif path.is_file():
            files = [path]
        elif _is_pattern(text):
            files = sorted(Path(p) for p in glob.glob(str(path), recursive=True) if Path(p).is_file())
            if not files:
                raise UserInputError(f"no files match {text!r}")
        else:
            raise UserInputError(f"file not found: {text!r}")
        found.extend(files)
    unique: dict[Path, None] = {}
    for p in found:
        unique.setdefault(p.resolve(), None)
    return list(unique)


# -- one image file ---------------------------------------------------------------
def open_image(path: str | os.PathLike):
    """Open an image file lazily (nothing but the header is read).

    TIFFs are memory-mapped or opened through zarr
    (:func:`~napari_unet.io.tiff.open_tiff_lazy`); ``.zarr`` arrays
    through :func:`~napari_unet.io.stores.open_lazy`.

    Raises
    ------
    UserInputError
        If the file is missing or unreadable, has no pixels or pixels that
        are not numbers.
    """
    path = Path(path)
    if path.suffix.lower() == ".zarr" and path.exists():
        opener = stores.open_lazy
    elif not path.is_file():
        raise UserInputError(f"file not found: {str(path)!r}")
    else:
        opener = open_tiff_lazy
    try:
        data = opener(path)
    except UserInputError:
        raise
    except Exception as exc:  # readers raise many types for damaged files
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UserInputError(f"cannot read {str(path)!r} ({reason})") from exc
    if 0 in tuple(data.shape):
        raise UserInputError(f"cannot read {str(path)!r} as a TIFF image (no image data found)")
    if np.dtype(data.dtype).kind not in "uifb":
        raise UserInputError(f"{str(path)!r}: unsupported pixel type {data.dtype}")
    return data


def declared_axes(path: str | os.PathLike, shape: tuple[int, ...]) -> str | None:
    """The axes the file declares (ImageJ, OME, tifffile metadata) when they fit ``shape``, else None.

    Metadata is only a hint: an unreadable header gives None here and fails
    when the pixels are read.
    """
    try:
        stored = axes_from_tiff(path)
    except Exception:  # a bad header is reported by whoever reads the pixels
        return None
    return stored if stored is not None and len(stored) == len(shape) else None


def resolve_axes(path: str | os.PathLike, shape: tuple[int, ...], axes: str | None, name: str | None = None) -> tuple[str, str | None]:
    """The axes of an image file and a note for the user, if any.

    ``axes`` (from ``--axes``) wins when given, checked against the shape;
    else the file's own metadata (:func:`declared_axes`: ImageJ
    hyperstacks, OME-TIFF, RGB TIFFs); else a guess from the shape, with a
    note saying so.

    Parameters
    ----------
    path : str or PathLike
        The image file (its metadata is read, not its pixels).
    shape : tuple of int
        The image's shape.
    axes : str, optional
        Axes asked for (any case).
    name : str, optional
        What to call the file in messages (default: its file name).

    Returns
    -------
    (str, str or None)
        The axes string and a one-line note to print (None when nothing
        needs saying).

    Raises
    ------
    UserInputError
        If ``axes`` does not fit the shape, or no guess fits it.
    """
    name = Path(path).name if name is None else name
    stored = declared_axes(path, shape)
    if axes is not None:
        try:
            chosen = normalize_axes(axes.upper(), tuple(shape))
        except UserInputError as exc:
            raise UserInputError(f"{name}: {exc}") from exc
        note = None
        if stored is not None and stored != chosen:
            note = f"note: {name}'s metadata says {stored}; using --axes {chosen}"
        return chosen, note
    if stored is not None:
        return normalize_axes(stored, tuple(shape)), None
    guessed = normalize_axes(None, tuple(shape))
    # A 2D image can only be YX: nothing worth saying.
    note = None if len(shape) == 2 else f"reading {name} as {guessed} (guessed; use --axes to change)"
    return guessed, note


def read_image_axes(path: str | os.PathLike, axes: str | None = None, lazy: bool = False) -> tuple[object, str]:
    """Read (or open lazily) an N-D image file with its axes.

    Parameters
    ----------
    path : str or PathLike
        The image file.
    axes : str, optional
        The axes (e.g. ``"ZYX"``, ``"YXC"``), checked against the image's
        shape; by default those the file declares, else a guess
        (:func:`resolve_axes`).
    lazy : bool
        Open without reading the pixels (:func:`open_image`); NaN pixels
        are then not checked here (prediction meets them tile by tile).

    Returns
    -------
    image : numpy.ndarray or array-like
        The pixels (a memory map or zarr array when ``lazy``).
    axes : str
        Their axes.

    Raises
    ------
    UserInputError
        For unreadable files, non-numeric or NaN pixels, or axes that do
        not fit the image.
    """
    image = open_image(path) if lazy else read_image(path)
    chosen, _ = resolve_axes(path, tuple(int(s) for s in image.shape), axes, name=repr(str(path)))
    return image, chosen


def image_planes(path: str | os.PathLike, axes: str | None, spatial_ndim: int, data=None) -> tuple[Planes, str | None]:
    """Open ``path`` lazily as :class:`~napari_unet.io.axes.Planes` (planes, or volumes when ``spatial_ndim`` is 3).

    Parameters
    ----------
    path : str or PathLike
        The image file.
    axes : str, optional
        ``--axes``; see :func:`resolve_axes`.
    spatial_ndim : int
        2, or 3 for a 3D model's ZYX volumes.
    data : array-like, optional
        The file's pixels, already opened (by default :func:`open_image`).

    Returns
    -------
    (Planes, str or None)
        The planes and a note about the axes (see :func:`resolve_axes`).

    Raises
    ------
    UserInputError
        Naming the file: unreadable, axes that do not fit, or no Z axis for
        a 3D model.
    """
    if data is None:
        data = open_image(path)
    chosen, note = resolve_axes(path, tuple(data.shape), axes)
    name = Path(path).name
    if spatial_ndim == 3 and "Z" not in chosen:
        raise UserInputError(f"{name}: a 3D model needs volumes with a Z axis, but the image's axes are {chosen} (use --axes)")
    try:
        planes = Planes(data, chosen, spatial_ndim=spatial_ndim)
    except UserInputError as exc:
        raise UserInputError(f"{name}: {exc}") from exc
    return planes, note
