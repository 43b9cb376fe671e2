"""Image layers as planes, and prediction results written into layers (GUI thread only).

Reading: :func:`image_planes` turns an image layer into a lazy
:class:`~napari_unet.io.axes.Planes` view (axes from the layer's
``metadata["axes"]``, its RGB flag or the channel axis chosen in the
widget; the full-resolution level of a multiscale layer), without reading
its pixels.

Writing: a later prediction updates the existing ``"<image> semantic"`` /
``"<image> instances"`` layers in place rather than stacking new ones, new
layers go just below the annotations so the strokes stay visible, and the
annotations layer itself is never written. Result layers have the image's
label shape (its shape without the channel axis): a prediction of one
plane writes that plane only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from napari.layers import Image

from napari_unet.errors import UserInputError
from napari_unet.io.axes import Planes, normalize_axes

#: Metadata key of an image layer holding its axes as the reader found them (e.g. "ZYX").
AXES_KEY = "axes"
#: Metadata key of an annotations layer naming the image it annotates.
IMAGE_KEY = "napari_unet_image"
#: Metadata key of an image layer holding the channel axis chosen in the widget.
CHANNEL_KEY = "napari_unet_channel_axis"
#: Channel-axis choices besides an axis number.
AUTO, NONE = "auto", "none"
#: Label shapes with more voxels than this get results in on-disk stores.
LARGE_LABELS = 2**28


def full_resolution(layer: Image) -> Any:
    """The layer's pixel data at full resolution (level 0 of a multiscale layer), never copied."""
    return layer.data[0] if layer.multiscale else layer.data


def is_lazy(data: Any) -> bool:
    """True for data that is not an in-memory numpy array (dask, zarr, tifffile stores, memmaps)."""
    return not isinstance(data, np.ndarray) or isinstance(data, np.memmap)


def _axes_with_channel(ndim: int, channel: int | None) -> str:
    """``"TZYX"``-style axes for ``ndim`` dimensions with C at ``channel`` (or none)."""
    others = ndim - (channel is not None)
    if not 2 <= others <= 4:
        raise UserInputError(f"cannot use a {ndim}D image: napari-unet reads (T)(Z)(C)YX images")
    axes = "TZYX"[-others:]
    return axes if channel is None else axes[:channel] + "C" + axes[channel:]


def layer_axes(layer: Image) -> str:
    """The axes of an image layer's data, e.g. ``"ZYX"``, ``"YXC"`` (RGB) or ``"CZYX"``.

    In order of precedence: the channel axis chosen in the widget (stored in
    ``metadata["napari_unet_channel_axis"]``), the reader's
    ``metadata["axes"]``, the RGB flag (channels last), else no channel axis
    and the last two (or three) axes spatial.

    Raises
    ------
    UserInputError
        If the axes do not fit the data's shape.
    """
    shape = tuple(full_resolution(layer).shape)
    choice = str(layer.metadata.get(CHANNEL_KEY, AUTO))
    if choice == NONE:
        return normalize_axes(_axes_with_channel(len(shape), None), shape)
    if choice != AUTO:
        channel = int(choice)
        if not 0 <= channel < len(shape):
            raise UserInputError(f"channel axis {channel} does not exist in '{layer.name}' of shape {shape}")
        return normalize_axes(_axes_with_channel(len(shape), channel), shape)
    axes = layer.metadata.get(AXES_KEY)
    if isinstance(axes, str) and len(axes) == len(shape):
        return normalize_axes(axes, shape, rgb=layer.rgb)
    if layer.rgb:
        return normalize_axes(_axes_with_channel(len(shape), len(shape) - 1), shape, rgb=True)
    return normalize_axes(_axes_with_channel(len(shape), None), shape)


def image_planes(layer: Image, spatial_ndim: int = 2) -> Planes:
    """A lazy plane-by-plane (or volume-by-volume) view of an image layer.

    Raises
    ------
    UserInputError
        If the axes do not fit, or a 3D model meets an image without Z.
    """
    axes = layer_axes(layer)
    if spatial_ndim == 3 and "Z" not in axes:
        raise UserInputError(f"the model is a 3D U-Net but '{layer.name}' has no Z axis (axes '{axes}')")
    return Planes(full_resolution(layer), axes, spatial_ndim)


def label_geometry(layer: Image, axes: str) -> tuple[tuple, tuple]:
    """Scale and translate for label layers of an image layer (its channel axis left out)."""
    scale, translate = tuple(layer.scale), tuple(layer.translate)
    if "C" in axes and not layer.rgb:  # RGB layers have no layer dimension for the colours
        c = axes.index("C")
        scale, translate = scale[:c] + scale[c + 1 :], translate[:c] + translate[c + 1 :]
    return scale, translate


def channel_misaligned(layer: Image, axes: str) -> bool:
    """True when napari cannot align label layers with the image (a channel axis not first, not RGB).

    napari aligns layers of different dimensionality by their trailing
    axes, so labels without the channel axis line up only when channels
    come first (or are RGB colours, which are not a layer dimension).
    """
    return "C" in axes and not layer.rgb and axes.index("C") != 0


def shown_index(viewer: Any, layer: Image, planes: Planes) -> tuple:
    """The loop index of the plane (or volume) of ``layer`` that napari's sliders show."""
    if not planes.loop_axes:
        return ()
    position = layer.world_to_data(viewer.dims.point)
    layer_dims = planes.axes[:-1] if layer.rgb else planes.axes  # an RGB layer has no colour dimension
    return tuple(int(np.clip(np.round(position[layer_dims.index(a)]), 0, n - 1)) for a, n in zip(planes.loop_axes, planes.loop_shape))


@dataclass(frozen=True)
class Target:
    """The image a prediction belongs to: its layer name and the geometry of its label layers."""

    name: str
    scale: tuple
    translate: tuple
    label_shape: tuple = ()

    @classmethod
    def of(cls, layer: Image, axes: str | None = None) -> Target:
        """The target for an image layer (``axes`` from :func:`layer_axes` by default)."""
        axes = axes or layer_axes(layer)
        scale, translate = label_geometry(layer, axes)
        shape = tuple(s for s, a in zip(full_resolution(layer).shape, axes) if a != "C")
        return cls(layer.name, scale, translate, shape)

    def layer_name(self, what: str) -> str:
        """``"<image> semantic"``, ``"<image> instances"``, ...."""
        return f"{self.name} {what}"

    @property
    def voxels(self) -> int:
        """Number of label voxels."""
        return int(np.prod(self.label_shape, dtype=np.int64)) if self.label_shape else 0


def find_layer(viewer: Any, name: str, kind: type) -> Any:
    """The layer called ``name`` if it is a ``kind`` layer, else None."""
    for layer in viewer.layers:
        if layer.name == name and isinstance(layer, kind):
            return layer
    return None


def write_layer(viewer: Any, name: str, data: Any, target: Target, kind: type, protected: Any = None, below: Any = None, **kwargs) -> Any:
    """Update layer ``name`` with ``data``, or add it.

    Parameters
    ----------
    viewer : napari.Viewer
        Where the layer lives.
    name : str
        Layer name.
    data : array-like
        New data (numpy, or an on-disk store); a layer of another shape is replaced.
    target : Target
        Scale and translate to give the layer (those of the source image).
    kind : type
        ``Labels`` or ``Image``.
    protected : Layer, optional
        A layer never to overwrite (the annotations): a clash gets a new name.
    below : Layer, optional
        Insert a new layer just below this one (else on top).
    **kwargs
        Layer properties for a new layer (``contour`` is set after creation).

    Returns
    -------
    Layer
        The written layer.
    """
    layer = find_layer(viewer, name, kind)
    if layer is not None and protected is not None and layer == protected:
        layer, name = None, f"{name} (prediction)"
    if layer is not None and layer.data.shape == data.shape and isinstance(layer.data, np.ndarray) == isinstance(data, np.ndarray):
        layer.data = data
        layer.scale, layer.translate = target.scale, target.translate
        return layer
    if layer is not None:  # the image changed shape (or memory for disk): start the layer again
        viewer.layers.remove(layer)
    contour = kwargs.pop("contour", None)  # a property only, not a constructor argument
    layer = kind(data, name=name, scale=target.scale, translate=target.translate, **kwargs)
    if contour is not None:
        layer.contour = contour
    index = viewer.layers.index(below) if below is not None else len(viewer.layers)
    viewer.layers.insert(index, layer)
    return layer


def write_plane(layer: Any, index: tuple, plane: np.ndarray) -> None:
    """Write one plane (``index`` from :meth:`Planes.label_index`) into a layer's data and redraw it."""
    layer.data[index] = plane
    layer.refresh()


def set_plane_features(layer: Any, table: dict, plane: dict | None) -> None:
    """Put measurements (:mod:`napari_unet.core.measure`) into an instance layer's ``features``.

    napari finds a label's row by the ``index`` column (shown in its
    features table and, under the cursor, in the status bar), so it is
    added, equal to ``label``.

    Parameters
    ----------
    layer : napari.layers.Labels
        The instances layer.
    table : dict
        One row per object.
    plane : dict or None
        The stack position of a single plane measured (e.g. ``{"t": 3}``):
        that plane's rows are replaced and the other planes' kept. ``None``
        or ``{}`` (a whole stack, or an image of one plane) replaces all rows.
        When the rows are 3D objects of a Z stack (no ``z`` column), a new
        plane ``{"z": k}`` replaces the objects that lay in that plane
        alone; objects reaching other planes keep their rows as measured
        (predict the whole stack again to measure them anew).
    """
    import pandas as pd

    new = pd.DataFrame({"index": np.asarray(table.get("label", []), np.int64), **table})
    old = layer.features
    if plane and len(old):
        same = None
        if all(k in old.columns for k in plane):
            same = np.ones(len(old), bool)
            for axis, position in plane.items():
                same &= old[axis].to_numpy() == position
        elif "z" in plane and {"bbox_z0", "bbox_z1"} <= set(old.columns):
            z = plane["z"]
            same = (old["bbox_z0"].to_numpy() == z) & (old["bbox_z1"].to_numpy() == z + 1)
            for axis, position in plane.items():
                if axis != "z" and axis in old.columns:
                    same &= old[axis].to_numpy() == position
        if same is not None:
            new = pd.concat([old[~same], new], ignore_index=True).sort_values("index", kind="stable")
    layer.features = new.reset_index(drop=True)


def measurement_table(layer: Any) -> dict | None:
    """An instance layer's measurements as a table (``index`` left out), or None if it has none."""
    features = layer.features
    if "label" not in features.columns:
        return None
    return {k: features[k].to_numpy() for k in features.columns if k != "index"}
