"""npe2 writer: a labels layer saved as a compact TIFF.

The widget's "Export labels…" calls :func:`write_labels_layer` too, so
File ▸ Save Selected Layers and the widget write identical files: the
smallest unsigned integer type that holds the labels, zlib-compressed,
written atomically (a crash never leaves half a file). Layers backed by an
on-disk store (results larger than memory) are streamed slab by slab into an
uncompressed TIFF in their own integer type instead of being read whole.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from napari_unet.errors import UserInputError
from napari_unet.io.stores import copy_to_output
from napari_unet.io.tiff import write_labels
from napari_unet.plugin.reader import is_tiff


def write_labels_layer(path: str, data: Any, meta: dict[str, Any]) -> list[str]:
    """Write one labels layer to ``path`` as TIFF.

    Parameters
    ----------
    path : str
        Destination; ``.tif`` is appended when it has no TIFF extension.
    data : array-like
        The layer's integer labels (non-negative).
    meta : dict
        Layer metadata from napari (unused: TIFF keeps just the pixels).

    Returns
    -------
    list of str
        The path written.

    Raises
    ------
    UserInputError
        For non-integer or negative labels.
    """
    target = Path(path) if is_tiff(path) else Path(f"{path}.tif")
    if hasattr(data, "dtype") and (not isinstance(data, np.ndarray) or isinstance(data, np.memmap)):
        # A result layer backed by an on-disk store (larger than memory):
        # stream it into an uncompressed TIFF instead of reading it whole.
        if np.dtype(data.dtype).kind not in "ub":
            raise UserInputError(f"labels must be unsigned integers to be exported from disk, got {data.dtype}")
        return [str(copy_to_output(data, target))]
    written = write_labels(target, np.asarray(data))
    return [str(written)]
