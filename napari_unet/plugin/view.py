"""What the viewer shows: its camera, its canvas, and the part of a plane in view (no Qt)."""

from __future__ import annotations

import math
from typing import Any

from napari_unet.io.axes import Planes

#: Pixels of context predicted around the part in view (the network sees past the edge).
VIEW_MARGIN = 32
#: When the view holds at least this share of the plane, the whole plane is predicted.
MOST_OF_THE_PLANE = 0.6


def camera(viewer: Any) -> Any:
    """The viewer's camera (``viewer.scene.camera`` from napari 0.9, ``viewer.camera`` before)."""
    scene = getattr(viewer, "scene", None)
    return scene.camera if scene is not None and hasattr(scene, "camera") else viewer.camera


def canvas_size(viewer: Any) -> tuple[int, int] | None:
    """The canvas's (height, width) in screen pixels, when napari says."""
    size = getattr(getattr(viewer, "canvas", None), "size", None)
    if size is None:
        size = getattr(viewer, "_canvas_size", None)  # napari < 0.6
    if size is None or min(size) <= 1:
        return None
    return int(size[0]), int(size[1])


def visible_box(viewer: Any, layer: Any, planes: Planes) -> tuple[slice, slice] | None:
    """The YX box of ``layer``'s plane that the canvas shows, or None when it shows most of it (or the view is not a plain YX one).

    Parameters
    ----------
    viewer : napari.Viewer or ViewerModel
    layer : napari.layers.Image
        The image layer (its scale and translate map world to pixels).
    planes : Planes
        The layer's planes (a 2D model's spatial axes are YX).
    """
    size = canvas_size(viewer)
    if size is None or planes.spatial_axes != "YX" or viewer.dims.ndisplay != 2:
        return None
    if tuple(viewer.dims.order[-2:]) != (viewer.dims.ndim - 2, viewer.dims.ndim - 1):
        return None  # axes transposed in the view: not worth the bookkeeping
    cam = camera(viewer)
    if not cam.zoom or cam.zoom <= 0:
        return None
    box = []
    for axis, (centre, pixels, scale, translate, n) in enumerate(zip(cam.center[-2:], size, layer.scale[-2:], layer.translate[-2:], planes.spatial_shape)):
        half = pixels / cam.zoom / 2  # world units
        lo = math.floor((centre - half - translate) / scale)
        hi = math.ceil((centre + half - translate) / scale)
        lo, hi = max(lo, 0), min(hi, n)
        if hi <= lo:
            return None  # nothing of the plane in view
        box.append(slice(lo, hi))
    shown = (box[0].stop - box[0].start) * (box[1].stop - box[1].start)
    if shown >= MOST_OF_THE_PLANE * planes.spatial_shape[0] * planes.spatial_shape[1]:
        return None
    return box[0], box[1]
