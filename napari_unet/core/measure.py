"""Per-object measurements of a prediction: one row per instance.

The same table fills an instance layer's ``features`` in napari (shown by
napari's features table and the status bar under the cursor) and the CSV
written by ``napari-unet predict --measurements``. It is computed plane by
plane (or volume by volume for a 3D model), right after a plane is
predicted, while its class probabilities still exist: a stack's
probabilities are never held whole.

Columns, in order (``<ax>`` is ``y``, ``x``, and ``z`` for 3D objects):

- ``label``: the instance id;
- ``class``: the name of the object's class (its most frequent semantic
  class);
- one column per loop axis of a stack other than Z (``t``): the plane
  (or volume) the object is in. A Z stack predicted by a 2D model holds
  3D objects (one id across planes): their per-plane rows are merged into
  one row with 3D columns (:func:`merge_planes`);
- ``area_px`` (2D) or ``volume_px`` (3D): pixels (voxels);
- ``area_scaled`` / ``volume_scaled``: the same times the pixel size of the
  layer's scale (only when a scale other than 1 is given);
- ``centroid_<ax>``: centre of mass, in pixels of the plane (or volume);
- ``bbox_<ax>0`` and ``bbox_<ax>1``: bounding box, start inclusive, end
  exclusive (as numpy slices);
- ``mean_intensity`` (``mean_intensity_c0``, ``_c1``, ... for several
  channels): the raw image's mean over the object;
- ``mean_probability``: the mean predicted probability of the object's
  class over its pixels (NaN when no probabilities are given).
"""

from __future__ import annotations

import csv
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage as ndi

from napari_unet.io.atomic import atomic_path

#: A measurement table: column name -> one value per object, all of one length.
Table = dict[str, np.ndarray]


def _spatial_names(ndim: int) -> str:
    return "zyx" if ndim == 3 else "yx"


def _size_name(ndim: int) -> str:
    return "volume" if ndim == 3 else "area"


def _channels_last(image: np.ndarray, spatial_ndim: int) -> np.ndarray:
    """``(C, *spatial)`` or ``(*spatial)`` as ``(*spatial, C)`` float32 for regionprops."""
    image = np.asarray(image, dtype=np.float32)
    if image.ndim == spatial_ndim:
        image = image[None]
    return np.moveaxis(image, 0, -1)


def _object_classes(instances: np.ndarray, semantic: np.ndarray, ids: np.ndarray, n_classes: int) -> np.ndarray:
    """Each object's most frequent semantic class (1.. ; objects may straddle classes)."""
    if n_classes <= 2:
        return np.ones(len(ids), np.int64)
    counts = np.stack([np.asarray(ndi.sum_labels(semantic == c, instances, ids)) for c in range(1, n_classes)], axis=1)
    return counts.argmax(axis=1) + 1


def _mean_probability(instances: np.ndarray, probabilities: np.ndarray | None, ids: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """Mean probability of each object's own class over its pixels."""
    out = np.full(len(ids), np.nan, np.float64)
    if probabilities is None:
        return out
    for c in np.unique(classes):
        chosen = classes == c
        out[chosen] = np.asarray(ndi.mean(np.asarray(probabilities[int(c)], np.float32), instances, ids[chosen]))
    return out


def measure_objects(
    instances: np.ndarray,
    semantic: np.ndarray,
    image: np.ndarray,
    class_names: Sequence[str],
    probabilities: np.ndarray | None = None,
    spacing: Sequence[float] | None = None,
    plane: Mapping[str, int] | None = None,
) -> Table:
    """Measure every object of one plane ``(Y, X)`` or volume ``(Z, Y, X)``.

    Parameters
    ----------
    instances : numpy.ndarray
        Instance ids (0 background).
    semantic : numpy.ndarray
        Semantic classes of the same shape (0 background, c for class c).
    image : numpy.ndarray
        The raw image ``(C, *spatial)`` (or ``(*spatial)`` for one channel).
    class_names : sequence of str
        Names of the classes, background first.
    probabilities : numpy.ndarray, optional
        ``(n_classes, *spatial)`` class probabilities.
    spacing : sequence of float, optional
        Pixel size along each spatial axis (a layer's scale); adds the
        ``area_scaled`` / ``volume_scaled`` column unless all are 1.
    plane : mapping of str to int, optional
        The plane's position in a stack, e.g. ``{"t": 3}``; one column each.

    Returns
    -------
    Table
        One row per object, ordered by label (see the module docstring).
    """
    from skimage.measure import regionprops_table

    instances = np.asarray(instances)
    semantic = np.asarray(semantic)
    ndim = instances.ndim
    if semantic.shape != instances.shape:
        raise ValueError(f"semantic labels {semantic.shape} and instances {instances.shape} differ in shape")
    intensity = _channels_last(image, ndim)
    if intensity.shape[:-1] != instances.shape:
        raise ValueError(f"image {image.shape} does not match labels of shape {instances.shape}")
    props = regionprops_table(instances, intensity_image=intensity, properties=("label", "area", "centroid", "bbox", "intensity_mean"))
    ids = np.asarray(props["label"], np.int64)
    classes = _object_classes(instances, semantic, ids, len(class_names))
    names = np.array([str(n) for n in class_names], dtype=object)
    axes = _spatial_names(ndim)
    size = _size_name(ndim)
    table: Table = {"label": ids, "class": names[classes] if len(ids) else np.array([], dtype=object)}
    for axis, position in (plane or {}).items():
        table[axis] = np.full(len(ids), int(position), np.int64)
    table[f"{size}_px"] = np.asarray(props["area"], np.int64)
    if spacing is not None and not np.allclose(spacing, 1.0):
        if len(spacing) != ndim:
            raise ValueError(f"spacing {tuple(spacing)} does not have one value per axis of {ndim}D labels")
        table[f"{size}_scaled"] = table[f"{size}_px"] * float(np.prod(spacing))
    for i, axis in enumerate(axes):
        table[f"centroid_{axis}"] = np.asarray(props[f"centroid-{i}"], np.float64)
    for i, axis in enumerate(axes):
        table[f"bbox_{axis}0"] = np.asarray(props[f"bbox-{i}"], np.int64)
    for i, axis in enumerate(axes):
        table[f"bbox_{axis}1"] = np.asarray(props[f"bbox-{i + ndim}"], np.int64)
    channels = intensity.shape[-1]
    for c in range(channels):
        key = "intensity_mean" if f"intensity_mean-{c}" not in props else f"intensity_mean-{c}"
        table["mean_intensity" if channels == 1 else f"mean_intensity_c{c}"] = np.asarray(props[key], np.float64)
    table["mean_probability"] = _mean_probability(instances, probabilities, ids, classes)
    return table


def concat_tables(tables: Sequence[Table]) -> Table:
    """Rows of several tables (e.g. one per plane) in one, columns of the first non-empty one."""
    tables = [t for t in tables if t]
    if not tables:
        return {}
    columns = next((t for t in tables if n_rows(t)), tables[0])
    return {k: np.concatenate([np.asarray(t[k]) for t in tables if k in t]) for k in columns}


def n_rows(table: Table) -> int:
    """Number of objects in a table."""
    return len(table["label"]) if table else 0


def write_csv(path: str | os.PathLike, table: Table) -> Path:
    """Write a table as CSV (header line, one object per line), atomically.

    Floats are written with 6 significant digits: more than the
    measurements are worth and short enough to read.
    """
    path = Path(path)
    columns = list(table)
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(columns)
        for row in zip(*(table[k] for k in columns)):
            writer.writerow([_cell(v) for v in row])
    return path


def _cell(value: Any) -> str:
    if isinstance(value, (float, np.floating)):
        return "" if np.isnan(value) else f"{float(value):.6g}"
    if isinstance(value, np.integer):
        return str(int(value))
    return str(value)


def objects_csv_path(labels_path: str | os.PathLike) -> Path:
    """``<name>_objects.csv`` beside a labels file ``<name>[_instances].tif``."""
    path = Path(labels_path)
    stem = path.stem[: -len("_instances")] if path.stem.endswith("_instances") else path.stem
    return path.with_name(f"{stem}_objects.csv")


def plane_spacing(scale: Sequence[float] | None, label_axes: str, spatial_axes: str) -> tuple[float, ...] | None:
    """The spatial axes' part of a label layer's ``scale`` (given in ``label_axes`` order)."""
    if scale is None:
        return None
    if len(scale) != len(label_axes):
        raise ValueError(f"scale {tuple(scale)} does not have one value per axis of {label_axes!r}")
    return tuple(float(scale[label_axes.index(a)]) for a in spatial_axes)


def merge_planes(table: Table, z_spacing: float | None = None, keep: Sequence[str] = ()) -> Table:
    """One row per 3D object from rows measured plane by plane (column ``z`` the plane).

    A 2D model predicts a Z stack plane by plane, and its instances are
    then labelled as 3D objects (one id across planes), so an object has a
    row in each plane it touches. Merged: ``volume_px`` sums the areas,
    centroids and mean intensity / probability are area-weighted means,
    ``centroid_z`` the area-weighted mean plane, bounding boxes span the
    planes' (``bbox_z1`` exclusive), ``class`` is the class with the most
    pixels, other loop axes (``t``) are kept.

    Parameters
    ----------
    table : Table
        Rows of 2D measurements with a ``z`` column.
    z_spacing : float, optional
        The Z pixel size, for ``volume_scaled`` (with ``area_scaled``).
    keep : sequence of str
        Columns of the other loop axes (e.g. ``"t"``), constant per object.

    Returns
    -------
    Table
        Columns as :func:`measure_objects` gives for 3D labels, ordered by label.
    """
    if not table or "z" not in table:
        return table
    labels = np.asarray(table["label"])
    ids, inverse = np.unique(labels, return_inverse=True)
    n = len(ids)
    area = np.asarray(table["area_px"], np.float64)
    volume = np.bincount(inverse, weights=area, minlength=n)

    def weighted_mean(values) -> np.ndarray:
        # NaN in a plane (no probabilities) makes the object's mean NaN, as it should.
        return np.bincount(inverse, weights=area * np.asarray(values, np.float64), minlength=n) / np.maximum(volume, 1)

    first = np.full(n, len(labels), np.int64)
    np.minimum.at(first, inverse, np.arange(len(labels)))
    names, name_index = np.unique(np.asarray(table["class"], dtype=object).astype(str), return_inverse=True)
    pixels_per_class = np.zeros((n, len(names)))
    np.add.at(pixels_per_class, (inverse, name_index), area)
    out: Table = {"label": ids, "class": names[pixels_per_class.argmax(axis=1)].astype(object) if n else np.array([], dtype=object)}
    for column in keep:
        out[column] = np.asarray(table[column])[first]
    out["volume_px"] = volume.astype(np.int64)
    if "area_scaled" in table:
        scale = (np.asarray(table["area_scaled"], np.float64) / np.maximum(area, 1))[first]
        out["volume_scaled"] = volume * scale * float(z_spacing if z_spacing is not None else 1.0)
    out["centroid_z"] = weighted_mean(table["z"])
    for axis in "yx":
        out[f"centroid_{axis}"] = weighted_mean(table[f"centroid_{axis}"])
    z0 = np.full(n, np.iinfo(np.int64).max)
    z1 = np.full(n, np.iinfo(np.int64).min)
    np.minimum.at(z0, inverse, np.asarray(table["z"], np.int64))
    np.maximum.at(z1, inverse, np.asarray(table["z"], np.int64) + 1)
    starts, ends = {"z": z0}, {"z": z1}
    for axis in "yx":
        starts[axis] = np.full(n, np.iinfo(np.int64).max)
        ends[axis] = np.full(n, np.iinfo(np.int64).min)
        np.minimum.at(starts[axis], inverse, np.asarray(table[f"bbox_{axis}0"], np.int64))
        np.maximum.at(ends[axis], inverse, np.asarray(table[f"bbox_{axis}1"], np.int64))
    for axis in "zyx":
        out[f"bbox_{axis}0"] = starts[axis]
    for axis in "zyx":
        out[f"bbox_{axis}1"] = ends[axis]
    for column in table:
        if column.startswith("mean_"):
            out[column] = weighted_mean(table[column])
    return out


class StackMeasurements:
    """Measurements of a stack's objects, collected plane by plane as planes are predicted.

    Pass an instance as ``plane_done`` to
    :func:`~napari_unet.core.stack.iter_predict_stack`: after each plane
    (or volume) it reads that plane's labels back from the outputs and
    measures them with the plane's probabilities.

    Parameters
    ----------
    planes : Planes
        The image.
    semantic, instances : array-like
        The label-shaped outputs being written.
    class_names : sequence of str
        Class names, background first.
    scale : sequence of float, optional
        The label layer's scale (``planes.label_axes`` order).
    """

    def __init__(self, planes, semantic, instances, class_names: Sequence[str], scale: Sequence[float] | None = None) -> None:
        self.planes = planes
        self.semantic = semantic
        self.instances = instances
        self.class_names = list(class_names)
        self.scale = None if scale is None else tuple(float(v) for v in scale)
        self.spacing = plane_spacing(scale, planes.label_axes, planes.spatial_axes)
        self.tables: dict[tuple, Table] = {}

    def __call__(self, index: tuple, probabilities: np.ndarray | None) -> None:
        self.tables[tuple(index)] = measure_plane(
            self.planes, index, self.semantic, self.instances, self.class_names, probabilities, self.spacing
        )

    def table(self) -> Table:
        """All rows so far: in plane order, or one per 3D object for a Z stack of 2D planes."""
        rows = concat_tables([self.tables[i] for i in sorted(self.tables)])
        if "Z" in self.planes.loop_axes:
            z_scale = None
            if self.scale is not None and len(self.scale) == len(self.planes.label_axes):
                z_scale = float(self.scale[self.planes.label_axes.index("Z")])
            others = [a.lower() for a in self.planes.loop_axes if a != "Z"]
            return merge_planes(rows, z_scale, others)
        return rows


def measure_plane(planes, index: tuple, semantic, instances, class_names: Sequence[str], probabilities=None, spacing=None) -> Table:
    """Measure the objects of plane ``index`` of label-shaped ``semantic``/``instances`` outputs.

    The loop axes' positions (``t``, ``z``) become columns, so rows of
    several planes can be told apart.
    """
    key = planes.label_index(index)
    where = dict(zip(planes.loop_axes.lower(), index))
    return measure_objects(
        np.asarray(instances[key]),
        np.asarray(semantic[key]),
        np.asarray(planes.image(index)),
        class_names,
        probabilities=None if probabilities is None else np.asarray(probabilities),
        spacing=spacing,
        plane=where,
    )
