"""Writing prediction results into napari layers (GUI thread only).

A later prediction updates the existing ``"<image> semantic"`` /
``"<image> instances"`` layers in place rather than stacking new ones, new
layers go just below the annotations so the strokes stay visible, and the
annotations layer itself is never written.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from napari.layers import Image


@dataclass(frozen=True)
class Target:
    """The image a prediction belongs to: its layer name and geometry."""

    name: str
    scale: tuple
    translate: tuple

    @classmethod
    def of(cls, layer: Image) -> "Target":
        """The target for an image layer."""
        return cls(layer.name, tuple(layer.scale), tuple(layer.translate))

    def layer_name(self, what: str) -> str:
        """``"<image> semantic"``, ``"<image> instances"``, ...."""
        return f"{self.name} {what}"


def find_layer(viewer: Any, name: str, kind: type) -> Any:
    """The layer called ``name`` if it is a ``kind`` layer, else None."""
    for layer in viewer.layers:
        if layer.name == name and isinstance(layer, kind):
            return layer
    return None


def write_layer(viewer: Any, name: str, data: np.ndarray, target: Target, kind: type, protected: Any = None, below: Any = None, **kwargs) -> Any:
    """Update layer ``name`` with ``data``, or add it.

    Parameters
    ----------
    viewer : napari.Viewer
        Where the layer lives.
    name : str
        Layer name.
    data : numpy.ndarray
        New data; a layer of another shape is replaced.
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
    if layer is not None and layer.data.shape == data.shape:
        layer.data = data
        layer.scale, layer.translate = target.scale, target.translate
        return layer
    if layer is not None:  # the image changed shape: start the layer again
        viewer.layers.remove(layer)
    contour = kwargs.pop("contour", None)  # a property only, not a constructor argument
    layer = kind(data, name=name, scale=target.scale, translate=target.translate, **kwargs)
    if contour is not None:
        layer.contour = contour
    index = viewer.layers.index(below) if below is not None else len(viewer.layers)
    viewer.layers.insert(index, layer)
    return layer

