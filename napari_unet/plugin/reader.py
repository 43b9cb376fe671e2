"""npe2 reader: TIFF images opened with napari-unet's checked TIFF reader.

Uses :func:`napari_unet.io.tiff.read_image` and
:mod:`napari_unet.io.inputs`, the same functions as the CLI, so an image
opens in napari exactly as the engine will see it (and a corrupt file or
NaN pixels give a readable message rather than a traceback).

N-D files keep their axes (ImageJ/OME/tifffile metadata, read by
:func:`napari_unet.io.inputs.declared_axes`) in the layer's
``metadata["axes"]``, which the widget uses to tell channels, planes and
space apart:

- RGB(A) colour (a last channel axis of 3 or 4 uint8 samples) opens as an
  ``rgb=True`` layer, axes ``"...YXC"``.
- Other channels stay in **one** layer, because the model trains on all
  channels of an image together; napari's ``channel_axis`` (one layer per
  channel) is deliberately not used. The channel axis is moved first
  (e.g. ImageJ's ``"TZCYX"`` opens as ``"CTZYX"``): napari aligns layers of
  different dimensionality by their last axes, so only then do the
  annotation and result layers (the image's shape without channels) line
  up with the image. The channel axis shows as a slider.
- Files larger than :data:`LAZY_BYTES` open lazily (a dask array over a
  memory map or tifffile's zarr store), so they are never read whole; their
  pixels are not checked for NaNs.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from napari_unet.io.inputs import declared_axes, is_tiff, open_image
from napari_unet.io.tiff import read_image
from napari_unet.plugin.result_layers import AXES_KEY

__all__ = ["is_tiff", "napari_get_reader", "read_tiff_layer", "read_tiffs"]

#: Files larger than this (bytes) open lazily instead of being read into memory.
LAZY_BYTES = 2**30

LayerData = tuple[Any, dict[str, Any], str]
PathLike = str | os.PathLike


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


def _read_lazy(path: PathLike) -> Any:
    import dask.array as da

    from napari_unet.io.stores import default_chunks

    array = open_image(path)
    return da.from_array(array, chunks=default_chunks(array.shape, block=2048))


def read_tiff_layer(path: PathLike) -> LayerData:
    """One TIFF as napari layer data: pixels, ``{"name", "rgb", "metadata": {"axes"}}``, ``"image"``.

    Raises
    ------
    UserInputError
        If the file is missing, unreadable or (when read whole) has NaN/infinite pixels.
    """
    path = Path(path)
    lazy = path.is_file() and path.stat().st_size > LAZY_BYTES
    data = _read_lazy(path) if lazy else read_image(path)
    stem = path.stem[: -len(".ome")] if path.stem.lower().endswith(".ome") else path.stem
    meta: dict[str, Any] = {"name": stem}
    axes = declared_axes(path, data.shape)
    if axes is None:
        return data, meta, "image"  # no usable axes: napari (and the widget) guess
    rgb = axes[-1] == "C" and data.shape[-1] in (3, 4) and data.dtype == np.uint8
    if "C" in axes and not rgb and axes[0] != "C":
        c = axes.index("C")
        data = data.transpose((c,) + tuple(i for i in range(data.ndim) if i != c))  # a view (lazy for dask)
        axes = "C" + axes.replace("C", "")
    meta.update(rgb=rgb, metadata={AXES_KEY: axes})
    return data, meta, "image"


def read_tiffs(path: PathLike | Sequence[PathLike]) -> list[LayerData]:
    """Read one or more TIFF images as napari image layers named after the files.

    Parameters
    ----------
    path : str, PathLike or sequence of them
        TIFF file(s).

    Returns
    -------
    list of tuple
        ``(data, meta, "image")`` per file, see :func:`read_tiff_layer`.

    Raises
    ------
    UserInputError
        If a file is missing, unreadable or has NaN/infinite pixels.
    """
    paths = [path] if isinstance(path, (str, os.PathLike)) else list(path)
    return [read_tiff_layer(p) for p in paths]
