"""Files the session reads and writes through napari: images opened as layers, labels exported as TIFF."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
from napari.layers import Image, Labels

from napari_unet.core.measure import objects_csv_path, write_csv
from napari_unet.errors import UserInputError
from napari_unet.io.axes import Planes
from napari_unet.plugin.reader import is_tiff, napari_get_reader
from napari_unet.plugin.result_layers import find_layer, image_planes, measurement_table
from napari_unet.plugin.writer import write_labels_layer

Notify = Callable[[str, str], None]


def open_images(viewer: Any, paths: Iterable[str | Path], notify: Notify) -> list[Image]:
    """Add TIFF images (files, or every TIFF in a folder) as image layers, through the plugin's reader.

    Returns
    -------
    list of Image
        The layers added; unreadable files are reported and skipped.
    """
    found: list[Path] = []
    for path in map(Path, paths):
        if path.is_dir():
            tiffs = sorted(p for p in path.iterdir() if p.is_file() and is_tiff(p))
            if not tiffs:
                notify("warning", f"No TIFF images in folder {str(path)!r}.")
            found.extend(tiffs)
        else:
            found.append(path)
    added: list[Image] = []
    for path in found:
        reader = napari_get_reader(str(path))
        if reader is None:
            notify("warning", f"{path.name}: not a TIFF file, skipped.")
            continue
        try:
            layer_data = reader(str(path))
        except UserInputError as exc:
            notify("error", str(exc))
            continue
        for data, meta, _kind in layer_data:
            added.append(viewer.add_image(data, **meta))
    return added


def export_labels(viewer: Any, image: str, path: str | Path, which: str, measurements: bool, notify: Notify) -> list[str]:
    """Write the image's predicted ``"instances"`` or ``"semantic"`` labels as TIFF.

    Uses the plugin's writer (:func:`napari_unet.plugin.writer.write_labels_layer`),
    so the file equals File ▸ Save Selected Layers with napari-stroke-unet.
    Exporting instances with ``measurements`` also writes the layer's
    features table as ``<name>_objects.csv`` beside the TIFF.

    Returns
    -------
    list of str
        The written paths (empty after an error notification).
    """
    if which not in ("instances", "semantic"):
        raise ValueError(f"which must be 'instances' or 'semantic', not {which!r}")
    layer = find_layer(viewer, f"{image} {which}", Labels) if image else None
    if layer is None:
        notify("error", f"Nothing to export: no '{image} {which}' layer yet. Press Predict first.")
        return []
    table = measurement_table(layer) if measurements and which == "instances" else None
    try:
        written = write_labels_layer(str(path), layer.data, {"name": layer.name})
        if table is not None:
            written.append(str(write_csv(objects_csv_path(written[0]), table)))
    except (UserInputError, OSError) as exc:
        notify("error", f"Could not export labels: {exc}")
        return []
    notify("info", f"Exported {layer.name} to {', '.join(written)}")
    return written


def export_sample(layer: Image | None, spatial_ndim: int, channels: int, index_of: Callable[[Image, Planes], tuple]) -> np.ndarray | None:
    """The plane shown of ``layer``, cropped, as a bioimage.io test input when the model can run on it; else None."""
    from napari_unet.bioimage_io import sample_from_planes

    if layer is None:
        return None
    try:
        planes = image_planes(layer, spatial_ndim)
        if planes.channels != channels:
            return None
        return sample_from_planes(planes, index_of(layer, planes))
    except UserInputError:
        return None
