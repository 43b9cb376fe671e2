"""Prediction results written into the viewer's layers (main thread only).

:class:`ResultLayers` remembers which layers are ours (never offered for
training or painting), where large results are stored on disk (zarr stores
in a temporary or chosen folder), and writes a plane's or a stack's result
into ``"<image> semantic"``, ``"<image> instances"`` and ``"<image>
probability"``, updating existing layers in place.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from napari.layers import Image, Labels

from napari_unet.core.jobs import Prediction, Preview, StackPrediction
from napari_unet.core.postprocess import uncertainty_from_probabilities
from napari_unet.io.axes import Planes
from napari_unet.io.stores import default_chunks
from napari_unet.plugin.colormaps import semantic_colormap
from napari_unet.plugin.result_layers import LARGE_LABELS, Target, find_layer, set_plane_features, write_layer, write_plane

#: Metadata key of a stack's probability layer: the plane it shows.
PLANE_KEY = "napari_unet_plane"
#: Probability layers of stacks are kept in memory up to this many voxels.
PROBABILITY_MAX_VOXELS = 2**25
#: How each result layer looks.
STYLES = {
    "semantic": {"opacity": 0.45},
    "instances": {"contour": 1, "opacity": 0.9},
    "probability": {"colormap": "magma", "blending": "additive", "contrast_limits": (0.0, 1.0), "opacity": 0.7},
    "uncertainty": {"colormap": "viridis", "blending": "additive", "contrast_limits": (0.0, 1.0), "opacity": 0.7},
}
#: The per-pixel maps a prediction can show as image layers.
MAPS = ("probability", "uncertainty")


class ResultLayers:
    """Writes predictions into layers and keeps track of the layers written.

    Parameters
    ----------
    viewer : napari.Viewer
        Where the layers live.
    annotations : callable
        Returns the annotations layer chosen now (never written; new result
        layers go below it).
    notify : callable
        ``notify(level, message)`` for what the user should hear.
    results_dir : callable
        Returns the folder chosen for large results, or None for a temporary one.
    """

    def __init__(self, viewer: Any, annotations: Callable[[], Labels | None], notify: Callable[[str, str], None], results_dir: Callable[[], str | None]) -> None:
        self.viewer = viewer
        self._annotations = annotations
        self._notify = notify
        self._results_dir = results_dir
        #: Label shapes with more voxels than this get results in on-disk stores.
        self.large_labels = LARGE_LABELS
        self._ours: set = set()  # unique_ids of the layers we write
        self._temp_dirs: list[Path] = []
        self._plane_stores: dict[str, Path] = {}  # image name -> folder of the empty stores made for plane results
        #: Called after a result layer was added (the layer lists change).
        self.on_new_layer: Callable[[], None] | None = None

    def is_ours(self, layer: Any) -> bool:
        """True for a layer this session wrote (a prediction)."""
        return layer.unique_id in self._ours

    def is_large(self, target: Target) -> bool:
        """True when the image's results go to on-disk stores."""
        return target.voxels > self.large_labels

    def store_dir(self, target: Target) -> Path:
        """A fresh folder for a large prediction's zarr stores."""
        chosen = self._results_dir()
        if chosen is None:
            folder = Path(tempfile.mkdtemp(prefix="napari-unet-"))
            self._temp_dirs.append(folder)  # removed by close()
            return folder
        base = Path(chosen) / "".join(c if c.isalnum() or c in "-_." else "_" for c in target.name)
        number = 1
        while (base.parent / f"{base.name}-{number}").exists():
            number += 1
        return base.parent / f"{base.name}-{number}"

    def has_results(self, target: Target) -> bool:
        """True when the image's semantic and instances layers exist with its label shape."""
        for what in ("semantic", "instances"):
            layer = find_layer(self.viewer, target.layer_name(what), Labels)
            if layer is None or tuple(layer.data.shape) != target.label_shape:
                return False
        return True

    def write_prediction(self, target: Target, planes: Planes, result: Prediction, maps: tuple[str, ...] = ()) -> None:
        """Write one plane's result: the whole layers for a single-plane image, that plane of a stack."""
        for what, data in (("semantic", result.semantic), ("instances", result.instances)):
            if len(planes) == 1:
                layer = self._write(target, what, data, Labels, **self._style(what))
            else:
                layer = self._result_layer(target, what, data.dtype)
                write_plane(layer, planes.label_index(result.index), data)
        if result.measurements is not None:
            # `layer` is the instances layer: its features hold one row per object (napari's features table).
            set_plane_features(layer, result.measurements, dict(zip(planes.loop_axes.lower(), result.index)))
        for what in maps:
            self.write_map(target, planes, result, what)

    def write_preview(self, target: Target, planes: Planes, preview: Preview) -> None:
        """Write a live preview's semantic labels into the box of the plane it covers; the rest keeps what it showed."""
        layer = self._result_layer(target, "semantic", preview.semantic.dtype)
        write_plane(layer, planes.label_box(preview.index, preview.box), preview.semantic)

    def write_stack(self, target: Target, result: StackPrediction) -> None:
        """Write a whole stack's result (in memory, or the zarr stores it was written to)."""
        if result.paths is not None:
            import zarr

            # Opened writable: a later current-plane prediction updates them in place.
            semantic, instances = (zarr.open_array(str(path), mode="r+") for path in result.paths)
            self._notify("info", f"Wrote the prediction of '{target.name}' to {result.paths[0].parent}")
        else:
            semantic, instances = result.semantic, result.instances
        self._write(target, "semantic", semantic, Labels, **self._style("semantic"))
        layer = self._write(target, "instances", instances, Labels, **self._style("instances"))
        if result.measurements is not None:
            set_plane_features(layer, result.measurements, None)

    def write_map(self, target: Target, planes: Planes, result: Prediction, what: str) -> None:
        """Show ``result``'s plane as an image layer: the object ``"probability"`` or the ``"uncertainty"``."""
        if what == "probability":
            # One map for "any object class" keeps the layer label-shaped whatever the number of classes.
            values = 1.0 - result.probabilities[0]
        else:  # worked out in the prediction job; computed here only for older results
            values = result.uncertainty if result.uncertainty is not None else uncertainty_from_probabilities(result.probabilities)
        style = self._style(what)
        if len(planes) == 1:
            layer = self._write(target, what, values, Image, **style)
        elif target.voxels <= PROBABILITY_MAX_VOXELS:
            # Only the last predicted plane is shown (its probabilities are all that is kept); other planes are 0.
            layer = find_layer(self.viewer, target.layer_name(what), Image)
            if layer is None or tuple(layer.data.shape) != target.label_shape or not self.is_ours(layer):
                layer = self._write(target, what, np.zeros(target.label_shape, np.float32), Image, **style)
            previous = layer.metadata.get(PLANE_KEY)
            if previous is not None and tuple(previous) != tuple(result.index):
                layer.data[planes.label_index(previous)] = 0
            layer.metadata[PLANE_KEY] = tuple(result.index)
            write_plane(layer, planes.label_index(result.index), values)
        else:
            self._notify("warning", f"'{target.name}' is too large to show its {what}.")
            return
        layer.visible = True

    def hide_map(self, target: Target, what: str) -> None:
        """Hide the image's ``what`` layer (probability, uncertainty), if there is one."""
        layer = find_layer(self.viewer, target.layer_name(what), Image)
        if layer is not None:
            layer.visible = False

    def close(self) -> None:
        """Remove the temporary folders of large results (the viewer is closing)."""
        for folder in self._temp_dirs:
            shutil.rmtree(folder, ignore_errors=True)
        self._temp_dirs.clear()

    @staticmethod
    def _style(what: str) -> dict:
        style = dict(STYLES[what])
        if what == "semantic":
            style["colormap"] = semantic_colormap()
        return style

    def _result_layer(self, target: Target, what: str, dtype: np.dtype) -> Labels:
        """The image's full-size ``what`` layer, created empty (zeros: not predicted) when missing."""
        layer = find_layer(self.viewer, target.layer_name(what), Labels)
        if layer is not None and tuple(layer.data.shape) == target.label_shape and layer is not self._annotations():
            return layer
        if self.is_large(target):
            import zarr

            folder = self._plane_stores.get(target.name)
            if folder is None or (folder / f"{what}.zarr").exists():
                folder = self._plane_stores[target.name] = self.store_dir(target)
            path = folder / f"{what}.zarr"
            data = zarr.open_array(str(path), mode="w", shape=target.label_shape, dtype=dtype, fill_value=0, chunks=default_chunks(target.label_shape))
        else:
            data = np.zeros(target.label_shape, dtype)
        return self._write(target, what, data, Labels, **self._style(what))

    def _write(self, target: Target, what: str, data: Any, kind: type, **kwargs) -> Any:
        annotations = find_layer(self.viewer, target.layer_name("annotations"), Labels)
        if annotations is None:
            annotations = self._annotations()
        # Below the annotations, so corrections stay visible while painting.
        layer = write_layer(self.viewer, target.layer_name(what), data, target, kind, protected=self._annotations(), below=annotations, **kwargs)
        if layer.unique_id not in self._ours:
            self._ours.add(layer.unique_id)
            if self.on_new_layer is not None:
                self.on_new_layer()
        return layer
