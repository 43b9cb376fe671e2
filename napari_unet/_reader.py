"""npe2 reader: TIFF images opened with napari-unet's checked TIFF reader.

Uses :func:`napari_unet.core.tiff_io.read_image`, the same function as the
CLI, so an image opens in napari exactly as the engine will see it (and a
corrupt file or NaN pixels give a readable message rather than a traceback).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Sequence

from napari_unet.core.tiff_io import read_image

TIFF_SUFFIXES = (".tif", ".tiff")

LayerData = tuple[Any, dict[str, Any], str]
PathLike = str | os.PathLike


def is_tiff(path: PathLike) -> bool:
    """True for a path ending in ``.tif`` or ``.tiff`` (any case)."""
    return str(path).lower().endswith(TIFF_SUFFIXES)


def napari_get_reader(path: PathLike | Sequence[PathLike]) -> Callable[[Any], list[LayerData]] | None:
    """Return a reader for TIFF paths, or None so napari tries other readers.

    Parameters
    ----------
    path : str, PathLike or sequence of them
        One path or several (napari passes a list when stacking).

    Returns
    -------
    callable or None
        :func:`read_tiffs` when every path is a TIFF file, else None.
    """
    paths = [path] if isinstance(path, (str, os.PathLike)) else list(path)
    if not paths or not all(is_tiff(p) for p in paths):
        return None
    return read_tiffs


def read_tiffs(path: PathLike | Sequence[PathLike]) -> list[LayerData]:
    """Read one or more TIFF images as napari image layers named after the files.

    Parameters
    ----------
    path : str, PathLike or sequence of them
        TIFF file(s).

    Returns
    -------
    list of tuple
        ``(data, {"name": stem}, "image")`` per file.

    Raises
    ------
    UserInputError
        If a file is missing, unreadable or has NaN/infinite pixels.
    """
    paths = [path] if isinstance(path, (str, os.PathLike)) else list(path)
    return [(read_image(p), {"name": Path(p).stem}, "image") for p in paths]
