"""Menu commands: Train and Predict from napari's Layers ▸ Segment menu.

Each command opens the U-Net widget (or finds the open one), points it at
the active layer's image and presses its button, so the menu and the
widget do exactly the same thing.
"""

from __future__ import annotations

from napari.layers import Image, Labels
from napari.viewer import Viewer

from napari_unet import DISTRIBUTION
from napari_unet.plugin.result_layers import IMAGE_KEY

#: The widget's display name in napari.yaml.
WIDGET_NAME = "U-Net segmentation"


def dock_widget(viewer: Viewer):
    """The viewer's U-Net widget, docked now if it was not open."""
    _, widget = viewer.window.add_plugin_dock_widget(DISTRIBUTION, WIDGET_NAME)
    return widget


def _image_of_active_layer(viewer: Viewer) -> str | None:
    """The image the active layer is or annotates (its annotations or result layers name it)."""
    layer = viewer.layers.selection.active
    if isinstance(layer, Image):
        return layer.name
    if isinstance(layer, Labels):
        named = layer.metadata.get(IMAGE_KEY)
        if isinstance(named, str):
            return named
        for suffix in (" annotations", " semantic", " instances"):
            if layer.name.endswith(suffix):
                return layer.name[: -len(suffix)]
    return None


def _prepared_widget(viewer: Viewer):
    widget = dock_widget(viewer)
    name = _image_of_active_layer(viewer)
    if name is not None and widget.data_panel.image_combo.findText(name) >= 0:
        widget.data_panel.image_combo.setCurrentText(name)
    return widget


def train(viewer: Viewer) -> None:
    """Layers ▸ Segment ▸ Train U-Net on painted strokes."""
    _prepared_widget(viewer).session.train()


def predict(viewer: Viewer) -> None:
    """Layers ▸ Segment ▸ Predict with the U-Net."""
    _prepared_widget(viewer).predict()
