"""The napari dock widget: paint, train in the background, predict, correct, export.

Everything slow (training, prediction, post-processing) runs in napari
thread workers (:mod:`napari_unet.core.jobs`); this module only reads
layers, copies the painted planes on the GUI thread, starts workers and
writes results back into layers from the workers' signals, so the viewer
stays responsive while the network trains.

Images may be 2D, (T)(Z)YX stacks, multichannel or RGB, several image
layers, and lazy (dask, zarr, multiscale) layers: each image layer is read
through a lazy :class:`~napari_unet.io.axes.Planes` view, so prediction
never materialises a whole stack; label layers (annotations and results)
have the image's *label shape*, its shape without the channel axis.
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

import numpy as np
from napari.layers import Image, Labels
from napari.qt.threading import create_worker
from napari.utils.notifications import show_error, show_info, show_warning
from qtpy.QtCore import QEvent, QObject, Qt, QTimer, Signal
from qtpy.QtWidgets import QComboBox, QFileDialog, QMainWindow, QVBoxLayout, QWidget
from superqt import QCollapsible

from napari_unet.io.axes import Planes
from napari_unet.core.device import describe_device, resolve_device
from napari_unet.errors import UserInputError
from napari_unet.bioimage_io import sample_from_planes
from napari_unet.core.inference import TileProgress
from napari_unet.core.measure import objects_csv_path, write_csv
from napari_unet.core.model import default_config
from napari_unet.core.postprocess import InstanceParams
from napari_unet.core.segmenter import Segmenter, channel_mismatch
from napari_unet.core.stack import StackProgress
from napari_unet.core.training import TrainProgress

from napari_unet._qt.advanced import AdvancedSettings
from napari_unet.plugin.colormaps import annotation_colormap, semantic_colormap
from napari_unet.core.history import describe_model, history_curves
from napari_unet._qt.panels import WHOLE_STACK, DataPanel, FilesPanel, PredictionPanel, TrainingPanel
from napari_unet.plugin.reader import is_tiff, napari_get_reader
from napari_unet._qt.tasks import ViewerTask, create_quiet_worker
from napari_unet.plugin.result_layers import (
    AUTO,
    CHANNEL_KEY,
    IMAGE_KEY,
    LARGE_LABELS,
    Target,
    channel_misaligned,
    find_layer,
    full_resolution,
    image_planes,
    is_lazy,
    layer_axes,
    measurement_table,
    set_plane_features,
    write_layer,
    write_plane,
)
from napari_unet.core.jobs import (
    Prediction,
    StackPrediction,
    TrainingSet,
    painted_indices,
    painted_planes,
    predict_stack_steps,
    predict_steps,
    repostprocess,
    snapshot,
    train_steps,
)
from napari_unet.plugin.writer import write_labels_layer

if TYPE_CHECKING:
    import napari

logger = logging.getLogger(__name__)

#: Milliseconds between two live-preview predictions while training.
PREVIEW_EVERY_MS = 4000
#: Wait after the last instance-parameter change before post-processing again.
POSTPROCESS_DEBOUNCE_MS = 150
#: Wait after the slider stops before predicting the plane it shows.
FOLLOW_DEBOUNCE_MS = 250
#: Wait after painting or layer changes before recounting the painted planes.
STATUS_DEBOUNCE_MS = 400
#: How long closing the viewer waits for a worker to notice it must stop.
SHUTDOWN_TIMEOUT_S = 15.0
#: Probability layers of stacks are kept in memory up to this many voxels.
PROBABILITY_MAX_VOXELS = 2**25


def _format_seconds(seconds: float) -> str:
    seconds = max(0, round(seconds))
    return f"{seconds // 60} min {seconds % 60:02d} s" if seconds >= 60 else f"{seconds} s"


@dataclass(frozen=True)
class _Request:
    """A prediction asked for: the image's layer name, and the whole stack or the plane shown."""

    name: str
    whole: bool = False


@dataclass(frozen=True)
class _Cached:
    """The last plane predicted: its probabilities, for re-post-processing without the network."""

    target: Target
    planes: Planes
    prediction: Prediction

    @property
    def probabilities(self) -> np.ndarray:
        return self.prediction.probabilities


class UNetWidget(QWidget):
    """Interactive U-Net segmentation: paint strokes, train, predict, correct, export.

    Parameters
    ----------
    napari_viewer : napari.viewer.Viewer
        The viewer whose layers the widget reads and writes.

    Signals
    -------
    training_finished
        A training run ended (normally, stopped or with an error) and the
        controls are usable again.
    prediction_finished
        Prediction layers were written (also after a live preview).
    postprocess_finished
        Prediction layers were rewritten after an instance-parameter change.

    Notes
    -----
    The buttons call :meth:`open_images`, :meth:`new_annotations`,
    :meth:`train`, :meth:`stop`, :meth:`reset_model`, :meth:`predict`,
    :meth:`save_model`, :meth:`load_model` and :meth:`export_labels`, which
    scripts and tests may call directly (the file methods take a path and
    skip the dialogs).

    Stacks: strokes on any planes train the model; Predict writes the plane
    shown by napari's sliders ("current plane", which then follows the
    slider while "after training" is on) or every plane ("whole stack").
    Results larger than :data:`~napari_unet.plugin.result_layers.LARGE_LABELS`
    voxels are written to zarr stores (Advanced ▸ Large results).
    """

    training_finished = Signal()
    prediction_finished = Signal()
    postprocess_finished = Signal()
    #: A bioimage.io export ended: the package written, or "" after an error.
    export_finished = Signal(str)

    def __init__(self, napari_viewer: "napari.viewer.Viewer", parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.viewer = napari_viewer
        self.segmenter = Segmenter(device="auto")
        #: Training seed (None: different every run); scripts and tests set it.
        self.seed: int | None = None
        #: What the last training run learned from (after :meth:`train`).
        self.training_set: TrainingSet | None = None

        self._workers: dict[str, tuple[Any, threading.Event]] = {}  # running: key -> (worker, done)
        self._stop_training = threading.Event()
        self._snapshot_request = threading.Event()
        self._cancel_prediction = threading.Event()
        self._train_image: str | None = None
        self._train_failed = False
        self._last_progress: TrainProgress | None = None
        self._predict_job: tuple[Target, Planes] | None = None
        self._predicting_stack = False  # a whole-stack prediction runs: Predict cancels it
        self._pending_request: _Request | None = None  # Predict pressed while training
        self._again_request: _Request | None = None  # Predict pressed while predicting
        self._cache: _Cached | None = None  # probabilities of the last plane predicted (one plane: bounded memory)
        self._postprocess_again = False
        self._predicted: dict[str, set] = {}  # image name -> plane indices predicted with this model and parameters
        self._prediction_layers: set = set()  # unique_ids of the layers we write
        self._warned: set[str] = set()
        self._temp_dirs: list[Path] = []
        self._plane_stores: dict[str, Path] = {}  # image name -> folder of the empty stores made for plane results
        self._closing = False
        self._main_window: QObject | None = None
        self._train_task: ViewerTask | None = None  # napari's task manager asks before closing while it runs

        self._build_ui()
        self._connect_viewer()
        self._refresh_layer_choices()
        self._show_model_info()
        self._show_device()

    # =========================================================================
    # UI
    # =========================================================================
    def _build_ui(self) -> None:
        layout = QVBoxLayout(self)
        layout.setContentsMargins(6, 6, 6, 6)
        layout.setSpacing(6)
        self.data_panel = DataPanel()
        self.training_panel = TrainingPanel(*self._theme_colors())
        self.prediction_panel = PredictionPanel()
        self.files_panel = FilesPanel()
        self.advanced = AdvancedSettings()
        self.advanced_section = QCollapsible("Advanced")
        self.advanced_section.addWidget(self.advanced)
        for part in (self.data_panel, self.training_panel, self.prediction_panel, self.files_panel, self.advanced_section):
            layout.addWidget(part)
        layout.addStretch(1)

        # Short names for the controls used most (tests and scripts use them too).
        data, training, prediction, files = self.data_panel, self.training_panel, self.prediction_panel, self.files_panel
        self.image_combo, self.annotations_combo = data.image_combo, data.annotations_combo
        self.train_all, self.training_status = data.train_all, data.training_status
        self.train_button, self.stop_button, self.reset_button = training.train_button, training.stop_button, training.reset_button
        self.train_progress, self.loss_plot = training.progress, training.loss_plot
        self.device_label, self.model_label = training.device_label, training.model_label
        self.predict_button, self.predict_progress = prediction.predict_button, prediction.progress
        self.auto_predict, self.show_probabilities = prediction.auto_predict, prediction.show_probabilities
        self.predict_scope = prediction.scope
        self.threshold, self.min_size, self.split_strength = prediction.threshold, prediction.min_size, prediction.split_strength
        self.load_button = files.load_button

        data.image_combo.currentTextChanged.connect(self._on_image_changed)
        data.annotations_combo.currentTextChanged.connect(self._schedule_status)
        data.train_all.toggled.connect(self._schedule_status)
        data.open_menu.addAction("TIFF files…", self._open_files_dialog)
        data.open_menu.addAction("Folder of TIFFs…", self._open_folder_dialog)
        data.new_annotations_button.clicked.connect(self.new_annotations)
        training.train_button.clicked.connect(self.train)
        training.stop_button.clicked.connect(self.stop)
        training.reset_button.clicked.connect(self.reset_model)
        prediction.predict_button.clicked.connect(self.predict)
        prediction.show_probabilities.toggled.connect(self._on_show_probabilities)
        files.save_button.clicked.connect(self._save_model_dialog)
        files.load_button.clicked.connect(self._load_model_dialog)
        files.export_button.clicked.connect(self._export_labels_dialog)
        files.bioimageio_button.clicked.connect(self._export_bioimageio_dialog)
        self.advanced.device_changed.connect(self._show_device)
        self.advanced.channel_axis.currentTextChanged.connect(self._on_channel_axis_changed)
        self.advanced.model_3d.toggled.connect(self._schedule_status)

        # Parameter changes re-run only post-processing, after a short pause.
        self._postprocess_timer = self._single_shot(POSTPROCESS_DEBOUNCE_MS, self._start_postprocess)
        for control in (self.threshold, self.min_size, self.split_strength):
            control.valueChanged.connect(self._schedule_postprocess)
        # Slider moves predict the plane shown once the slider rests.
        self._follow_timer = self._single_shot(FOLLOW_DEBOUNCE_MS, self._follow_slider)
        self._status_timer = self._single_shot(STATUS_DEBOUNCE_MS, self._update_training_status)

        self._preview_timer = QTimer(self)
        self._preview_timer.setInterval(PREVIEW_EVERY_MS)
        self._preview_timer.timeout.connect(self._request_preview)

    def _single_shot(self, msec: int, slot: Any) -> QTimer:
        timer = QTimer(self)
        timer.setSingleShot(True)
        timer.setInterval(msec)
        timer.timeout.connect(slot)
        return timer

    def _theme_colors(self) -> tuple[str, str]:
        """Plot background and text colours from the viewer's napari theme."""
        try:
            from napari.utils.theme import get_theme

            theme = get_theme(self.viewer.theme)
            return theme.background.as_hex(), theme.text.as_hex()
        except (ValueError, KeyError, AttributeError):  # custom or "system" theme without colours
            return "#262930", "#f0f1f2"

    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            show_warning(message)

    # =========================================================================
    # layer choices
    # =========================================================================
    def _layer_events(self, layer: Any) -> list:
        events = [layer.events.name]
        if isinstance(layer, Labels):  # painting changes what the next training sees
            events += [layer.events.data] + ([layer.events.paint] if hasattr(layer.events, "paint") else [])
        return events

    def _connect_viewer(self) -> None:
        events = self.viewer.layers.events
        events.inserted.connect(self._on_layer_inserted)
        events.removed.connect(self._refresh_layer_choices)
        events.moved.connect(self._refresh_layer_choices)
        for layer in self.viewer.layers:
            self._connect_layer(layer)
        self.viewer.dims.events.current_step.connect(self._on_step_changed)

    def _connect_layer(self, layer: Any) -> None:
        layer.events.name.connect(self._refresh_layer_choices)
        for event in self._layer_events(layer)[1:]:
            event.connect(self._schedule_status)

    def _disconnect_viewer(self) -> None:
        events = self.viewer.layers.events
        events.inserted.disconnect(self._on_layer_inserted)
        events.removed.disconnect(self._refresh_layer_choices)
        events.moved.disconnect(self._refresh_layer_choices)
        self.viewer.dims.events.current_step.disconnect(self._on_step_changed)
        for layer in self.viewer.layers:
            layer.events.name.disconnect(self._refresh_layer_choices)
            for event in self._layer_events(layer)[1:]:
                event.disconnect(self._schedule_status)

    def _on_layer_inserted(self, event) -> None:
        self._connect_layer(event.value)
        self._refresh_layer_choices()

    def _refresh_layer_choices(self, event=None) -> None:
        if self._closing:
            return
        ours = self._prediction_layers  # never offered: neither trained on nor painted into
        images = [layer.name for layer in self.viewer.layers if isinstance(layer, Image) and layer.unique_id not in ours]
        labels = [layer.name for layer in self.viewer.layers if isinstance(layer, Labels) and layer.unique_id not in ours]
        image = self._set_choices(self.image_combo, images)
        self._set_choices(self.annotations_combo, labels, prefer=self._paired_name(image) if image else None)
        self._schedule_status()

    @staticmethod
    def _set_choices(combo: QComboBox, names: list[str], prefer: str | None = None) -> str:
        """Refill ``combo`` keeping the current choice when it still exists."""
        current = combo.currentText()
        if [combo.itemText(i) for i in range(combo.count())] == names and current:
            return current
        combo.blockSignals(True)
        combo.clear()
        combo.addItems(names)
        if current in names:
            combo.setCurrentText(current)
        elif prefer in names:
            combo.setCurrentText(prefer)
        combo.blockSignals(False)
        if combo.currentText() != current:
            combo.currentTextChanged.emit(combo.currentText())
        return combo.currentText()

    def _paired_name(self, image: str) -> str:
        """The annotations layer of ``image``: one made for it by New, else ``"<image> annotations"``."""
        for layer in self.viewer.layers:
            if isinstance(layer, Labels) and layer.metadata.get(IMAGE_KEY) == image and layer.unique_id not in self._prediction_layers:
                return layer.name
        return f"{image} annotations"

    def _on_image_changed(self, name: str) -> None:
        # Pair the image with its annotations layer when there is one.
        paired = self._paired_name(name)
        if self.annotations_combo.findText(paired) >= 0:
            self.annotations_combo.setCurrentText(paired)
        self._update_image_options()

    def _update_image_options(self) -> None:
        """Channel-axis choices, the 3D option and the prediction scope for the chosen image."""
        layer = self.image_layer()
        if layer is None:
            self.advanced.set_channel_choices(2)
            self.advanced.model_3d.setEnabled(False)
            self.predict_scope.setEnabled(False)
            return
        self.advanced.set_channel_choices(full_resolution(layer).ndim, str(layer.metadata.get(CHANNEL_KEY, AUTO)))
        try:
            axes = layer_axes(layer)
            planes = len(image_planes(layer, self._spatial_ndim() if "Z" in axes else 2))
        except UserInputError:
            axes, planes = "", 1
        self.advanced.model_3d.setEnabled("Z" in axes)
        self.predict_scope.setEnabled(planes > 1)
        self._schedule_status()

    def _on_channel_axis_changed(self, choice: str) -> None:
        layer = self.image_layer()
        if layer is None:
            return
        layer.metadata[CHANNEL_KEY] = choice  # remembered per image (training on several images reads it)
        self._update_image_options()
        try:
            layer_axes(layer)
        except UserInputError as exc:
            show_error(str(exc))

    def image_layer(self) -> Image | None:
        """The image layer chosen in the widget, if any."""
        return find_layer(self.viewer, self.image_combo.currentText(), Image)

    def annotations_layer(self) -> Labels | None:
        """The annotations layer chosen in the widget, if any."""
        return find_layer(self.viewer, self.annotations_combo.currentText(), Labels)

    def _require_image(self) -> Image:
        layer = self.image_layer()
        if layer is None:
            raise UserInputError("no image selected: open an image (Open…) or choose one in the Image list")
        return layer

    def _spatial_ndim(self) -> int:
        """2 or 3: the model's when there is one, else the Advanced choice."""
        if self.segmenter.model is not None and self.segmenter.config is not None:
            return int(getattr(self.segmenter.config, "ndim", 2))
        return self.advanced.spatial_ndim()

    def _planes(self, layer: Image) -> Planes:
        """The layer as planes for the current model, warning once when napari cannot align its labels."""
        planes = image_planes(layer, self._spatial_ndim())
        if channel_misaligned(layer, planes.axes):
            self._warn_once(
                f"misaligned {layer.name}",
                f"'{layer.name}' has its channel axis at position {planes.axes.index('C')} (axes '{planes.axes}'): "
                "napari aligns label layers with the last axes, so annotations will not line up. "
                "Move the channel axis first.",
            )
        return planes

    def _current_index(self, layer: Image, planes: Planes) -> tuple:
        """The loop index of the plane (or volume) napari's sliders show for ``layer``."""
        if not planes.loop_axes:
            return ()
        position = layer.world_to_data(self.viewer.dims.point)
        layer_dims = planes.axes[:-1] if layer.rgb else planes.axes  # an RGB layer has no colour dimension
        index = []
        for letter, size in zip(planes.loop_axes, planes.loop_shape):
            value = position[layer_dims.index(letter)]
            index.append(int(np.clip(np.round(value), 0, size - 1)))
        return tuple(index)

    # =========================================================================
    # files
    # =========================================================================
    def _open_files_dialog(self) -> None:
        paths, _ = QFileDialog.getOpenFileNames(self, "Open TIFF images", "", "TIFF images (*.tif *.tiff)")
        if paths:
            self.open_images(paths)

    def _open_folder_dialog(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Open a folder of TIFF images")
        if folder:
            self.open_images([folder])

    def open_images(self, paths: Iterable[str | Path]) -> list[Image]:
        """Add TIFF images (files, or every TIFF in a folder) as image layers.

        Parameters
        ----------
        paths : iterable of str or Path
            TIFF files and/or folders.

        Returns
        -------
        list of Image
            The layers added; unreadable files are reported and skipped.
        """
        files: list[Path] = []
        for path in map(Path, paths):
            if path.is_dir():
                found = sorted(p for p in path.iterdir() if p.is_file() and is_tiff(p))
                if not found:
                    show_warning(f"No TIFF images in folder {str(path)!r}.")
                files.extend(found)
            else:
                files.append(path)
        added: list[Image] = []
        for path in files:
            reader = napari_get_reader(str(path))
            if reader is None:
                show_warning(f"{path.name}: not a TIFF file, skipped.")
                continue
            try:
                layer_data = reader(str(path))
            except UserInputError as exc:
                show_error(str(exc))
                continue
            for data, meta, _kind in layer_data:
                added.append(self.viewer.add_image(data, **meta))
        if added:
            self.image_combo.setCurrentText(added[-1].name)
        return added

    def _save_model_dialog(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Save model", "model.pt", "napari-unet model (*.pt)")
        if path:
            self.save_model(path)

    def save_model(self, path: str | Path) -> Path | None:
        """Write the model (weights, normalisation, classes, history) to ``path``.

        Returns
        -------
        pathlib.Path or None
            The file written, or None after a notification saying why not.
        """
        if self.is_training:
            show_warning("Training is running: stop it (or let it finish) before saving the model.")
            return None
        try:
            written = self.segmenter.save(path)
        except (UserInputError, OSError) as exc:
            show_error(f"Could not save the model: {exc}")
            return None
        show_info(f"Saved model to {written}")
        return written

    def _load_model_dialog(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Load model", "", "napari-unet model (*.pt);;All files (*)")
        if path:
            self.load_model(path)

    def load_model(self, path: str | Path) -> bool:
        """Replace the current model by the one in ``path``.

        Returns
        -------
        bool
            True when loaded; False after an error notification.
        """
        if self.is_training:
            show_warning("Training is running: stop it before loading another model.")
            return False
        try:
            segmenter = Segmenter.load(path, device=resolve_device(self.advanced.device_name()))
        except UserInputError as exc:  # ModelFileError included
            show_error(str(exc))
            return False
        except OSError as exc:
            show_error(f"Could not read the model file: {exc}")
            return False
        self.segmenter = segmenter
        self._model_changed()
        self.loss_plot.set_curves(history_curves(segmenter.history))
        self._show_model_info()
        self._show_device()
        self.train_progress.show_progress(1, 1, "model loaded")
        show_info(f"Loaded model: {self.model_label.text()}")
        return True

    def _export_labels_dialog(self) -> None:
        which = self.files_panel.export_which.currentText()
        image = self.image_combo.currentText() or "labels"
        path, _ = QFileDialog.getSaveFileName(self, f"Export {which} labels", f"{image}_{which}.tif", "TIFF (*.tif *.tiff)")
        if path:
            self.export_labels(path, which)

    def export_labels(self, path: str | Path, which: str = "instances", measurements: bool | None = None) -> list[str]:
        """Write the image's predicted ``"instances"`` or ``"semantic"`` labels as TIFF.

        Uses the plugin's writer (:func:`napari_unet.plugin.writer.write_labels_layer`),
        so the file equals File ▸ Save Selected Layers with napari-stroke-unet.
        Exporting instances with ``measurements`` (default: the "with
        measurements" box) also writes the layer's features table as
        ``<name>_objects.csv`` beside the TIFF.

        Returns
        -------
        list of str
            The written paths (empty after an error notification).
        """
        if which not in ("instances", "semantic"):
            raise ValueError(f"which must be 'instances' or 'semantic', not {which!r}")
        image = self.image_combo.currentText()
        layer = find_layer(self.viewer, f"{image} {which}", Labels) if image else None
        if layer is None:
            show_error(f"Nothing to export: no '{image} {which}' layer yet. Press Predict first.")
            return []
        if measurements is None:
            measurements = self.files_panel.export_measurements.isChecked()
        table = measurement_table(layer) if measurements and which == "instances" else None
        try:
            written = write_labels_layer(str(path), layer.data, {"name": layer.name})
            if table is not None:
                written.append(str(write_csv(objects_csv_path(written[0]), table)))
        except (UserInputError, OSError) as exc:
            show_error(f"Could not export labels: {exc}")
            return []
        show_info(f"Exported {layer.name} to {', '.join(written)}")
        return written

    # -- bioimage.io ------------------------------------------------------------
    def _export_bioimageio_dialog(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Export the model to bioimage.io", "model.zip", "bioimage.io model package (*.zip)")
        if path:
            self.export_bioimageio(path)

    def export_bioimageio(self, path: str | Path, test: bool = True) -> bool:
        """Write the model as a bioimage.io package in a background worker.

        The plane shown of the chosen image (if the model fits it) becomes
        the package's test input and cover; the package is checked with
        bioimageio.core before it is moved into place (``test``).
        :attr:`export_finished` is emitted at the end.

        Returns
        -------
        bool
            True when the export started.
        """
        if self.is_training:
            show_warning("Training is running: stop it (or let it finish) before exporting the model.")
            return False
        if "export" in self._workers:
            show_warning("An export is already running.")
            return False
        if not self.segmenter.is_trained:
            show_error("No model yet: train one (Train) or load a model file (Load model…) first.")
            return False
        from napari_unet.bioimage_io import export_model

        worker = create_worker(
            export_model, snapshot(self.segmenter), str(path), sample=self._export_sample(), name=Path(path).stem, test=test,
            _start_thread=False, _ignore_errors=True,
        )
        worker.returned.connect(self._on_exported)
        worker.errored.connect(self._on_export_error)
        worker.finished.connect(lambda: self._workers.pop("export", None))
        self.files_panel.bioimageio_button.setEnabled(False)
        self._start("export", worker)
        show_info(f"Exporting the model to {path} (checked with bioimageio.core; this takes a minute)…")
        return True

    def _export_sample(self) -> np.ndarray | None:
        """The plane shown of the chosen image, cropped, when the model can run on it; else None (synthetic)."""
        layer = self.image_layer()
        if layer is None:
            return None
        try:
            planes = image_planes(layer, self._spatial_ndim())
            if planes.channels != self.segmenter.config.in_channels:
                return None
            return sample_from_planes(planes, self._current_index(layer, planes))
        except UserInputError:
            return None

    def _on_exported(self, path: Path) -> None:
        self.files_panel.bioimageio_button.setEnabled(True)
        if not self._closing:
            show_info(f"Exported the model to bioimage.io: {path}")
            self.export_finished.emit(str(path))

    def _on_export_error(self, exc: Exception) -> None:
        self.files_panel.bioimageio_button.setEnabled(True)
        self._report_error("Export to bioimage.io", exc)
        if not self._closing:
            self.export_finished.emit("")

    # =========================================================================
    # annotations
    # =========================================================================
    def new_annotations(self) -> Labels | None:
        """Add (or select) the image's annotations layer, ready to paint background (1).

        The layer has the image's label shape (its shape without the channel
        axis) and the image's scale and translate, and remembers its image in
        ``metadata["napari_unet_image"]``.

        Returns
        -------
        Labels or None
            The annotations layer, or None after an error notification.
        """
        try:
            image = self._require_image()
            target = Target.of(image, self._planes(image).axes)
        except UserInputError as exc:
            show_error(str(exc))
            return None
        name = f"{image.name} annotations"
        layer = find_layer(self.viewer, name, Labels)
        if layer is not None and layer.data.shape == target.label_shape:
            # e.g. the sample's strokes: give them the legend's colours.
            layer.colormap = annotation_colormap()
            layer.metadata[IMAGE_KEY] = image.name
            show_info(f"'{name}' already exists: selected it.")
        else:
            shape = target.label_shape
            if target.voxels > LARGE_LABELS:
                self._warn_once(f"large annotations {image.name}", f"'{image.name}' is large: its annotations layer takes {target.voxels / 2**30:.1f} GB of memory.")
            layer = self.viewer.add_labels(
                np.zeros(shape, dtype=np.uint8),
                name=name if layer is None else f"{name} {len(self.viewer.layers)}",
                scale=target.scale,
                translate=target.translate,
                colormap=annotation_colormap(),
                opacity=0.8,
                metadata={IMAGE_KEY: image.name},
            )
            layer.brush_size = max(3, min(shape[-2:]) // 64)
        layer.selected_label = 1
        layer.mode = "paint"
        self.viewer.layers.selection.active = layer
        self.annotations_combo.setCurrentText(layer.name)
        return layer

    def annotation_pairs(self) -> list[tuple[Image, Labels]]:
        """The (image, annotations) layer pairs to train on, the chosen pair first.

        Besides the pair chosen in the Image/Annotations lists, and when
        "Train on all annotated images" is on, every other image layer with an
        annotations layer of its own (made by New, or named
        ``"<image> annotations"``).
        """
        ours = self._prediction_layers
        image, annotations = self.image_layer(), self.annotations_layer()
        pairs: list[tuple[Image, Labels]] = []
        if image is not None and annotations is not None and annotations.unique_id not in ours:
            pairs.append((image, annotations))
        used = {id(layer) for pair in pairs for layer in pair}
        for labels in self.viewer.layers:
            if not isinstance(labels, Labels) or labels.unique_id in ours or id(labels) in used:
                continue
            name = labels.metadata.get(IMAGE_KEY)
            if name is None and labels.name.endswith(" annotations"):
                name = labels.name[: -len(" annotations")]
            other = find_layer(self.viewer, name, Image) if name else None
            if other is not None and id(other) not in used and other.unique_id not in ours:
                pairs.append((other, labels))
                used.update((id(other), id(labels)))
        return pairs

    def _check_pair(self, image: Image, annotations: Labels, planes: Planes) -> None:
        if tuple(annotations.data.shape) != tuple(planes.label_shape):
            raise UserInputError(
                f"the annotations '{annotations.name}' have shape {tuple(annotations.data.shape)} but the image "
                f"'{image.name}' needs shape {tuple(planes.label_shape)} (axes '{planes.axes}' without C): they do not match"
            )

    def _training_set(self, quiet: bool = False) -> TrainingSet:
        """The painted planes to train on (copies; lazy image planes stay lazy until the worker reads them).

        Raises
        ------
        UserInputError
            No image or annotations chosen, or the chosen pair does not fit.
        """
        image = self._require_image()
        annotations = self.annotations_layer()
        if annotations is None:
            raise UserInputError("no annotations layer: press New next to Annotations and paint 1 = background, 2 = object")
        if annotations.unique_id in self._prediction_layers:
            raise UserInputError(f"'{annotations.name}' is a prediction; choose (or create) an annotations layer")
        pairs = self.annotation_pairs()
        if not self.train_all.isChecked():
            pairs = pairs[:1]
        ndim = self._spatial_ndim()
        images, labels, sources = [], [], []
        for number, (image_layer, annotations_layer) in enumerate(pairs):
            try:
                planes = self._planes(image_layer) if not quiet else image_planes(image_layer, ndim)
                self._check_pair(image_layer, annotations_layer, planes)
            except UserInputError as exc:
                if number == 0:
                    raise
                if not quiet:
                    show_warning(f"Not training on '{image_layer.name}': {exc}")
                continue
            if quiet:  # count only: no copies
                count = len(painted_indices(planes, annotations_layer.data))
                images += [None] * count
                labels += [None] * count
            else:
                found, painted = painted_planes(planes, annotations_layer.data, copy_images=not is_lazy(planes.data))
                images += found
                labels += painted
                count = len(found)
            if count:
                sources.append((image_layer.name, count))
        return TrainingSet(images, labels, sources)

    def _schedule_status(self, *_: Any) -> None:
        if not self._closing:
            self._status_timer.start()

    def _update_training_status(self) -> None:
        """Say what the next training learns from: "Training on: 2 images, 5 painted planes"."""
        if self._closing:
            return
        self.train_all.setEnabled(len(self.annotation_pairs()) > 1)
        try:
            found = self._training_set(quiet=True)
        except UserInputError:
            self.training_status.setText("Training on: nothing yet (choose an image and its annotations)")
            return
        unit = "volume" if self._spatial_ndim() == 3 else "plane"
        self.training_status.setText(f"Training on: {found.describe(unit)}" if found.sources else "Training on: nothing painted yet")

    # =========================================================================
    # training
    # =========================================================================
    @property
    def is_training(self) -> bool:
        """True while a training worker runs."""
        return "train" in self._workers

    @property
    def is_predicting(self) -> bool:
        """True while a prediction worker runs."""
        return "predict" in self._workers

    def train(self) -> None:
        """Fine-tune the model on the painted annotations in a background worker.

        Only the painted planes are copied (now, so painting may continue
        while it trains), from the chosen image and, with "Train on all
        annotated images", every other image with its own annotations. The
        first training (or the first after Reset) starts a fresh model (a 3D
        U-Net when chosen in Advanced). Problems are shown as notifications.
        """
        if self.is_training:
            show_warning("Training is already running: press Stop first, or wait for it to finish.")
            return
        try:
            image_layer = self._require_image()
            if self.segmenter.model is not None and self.advanced.spatial_ndim() != self._spatial_ndim():
                show_info(f"The model is a {self._spatial_ndim()}D U-Net: press Reset model to train a {self.advanced.spatial_ndim()}D one.")
            found = self._training_set()
            config = self.advanced.train_config(seed=self.seed)
            self._prepare_model(found)
        except UserInputError as exc:
            show_error(str(exc))
            return

        self.training_set = found
        unit = "volume" if self._spatial_ndim() == 3 else "plane"
        self.training_status.setText(f"Training on: {found.describe(unit)}" if found.sources else "Training on: nothing painted yet")
        self._train_image = image_layer.name
        self._train_failed = False
        self._last_progress = None
        self._stop_training.clear()
        self._snapshot_request.clear()
        # Registered with napari's task manager as ours alone (see napari_unet._qt.tasks).
        worker = create_quiet_worker(
            train_steps,
            self.segmenter,
            found.images,
            found.annotations,
            config,
            self._stop_training,
            self._snapshot_request,
            ndim=self._spatial_ndim(),
        )
        self._train_task = ViewerTask(self.viewer, f"training the U-Net on '{image_layer.name}'", cancel=self.stop)
        worker.yielded.connect(self._on_train_yielded)
        worker.errored.connect(self._on_train_error)
        worker.finished.connect(self._on_train_finished)
        self._start("train", worker)

        self.train_button.setEnabled(False)
        self.stop_button.setEnabled(True)
        self.reset_button.setEnabled(False)
        self.load_button.setEnabled(False)
        self.train_progress.show_progress(0, 1000, "preparing…")
        self._show_device()
        if self.advanced.live_preview.isChecked():
            self._preview_timer.start()

    def _prepare_model(self, found: TrainingSet) -> None:
        """Create the fresh model (with the Advanced size) or move the current one to the chosen device."""
        device = resolve_device(self.advanced.device_name())
        depth, width = self.advanced.architecture()
        if self.segmenter.model is not None or (depth is None and width is None) or not found.images:
            self.segmenter.to(device)  # a fresh model is then sized by the engine for the device
            return
        channels = int(found.images[0].shape[0])
        n_classes = max(2, max(int(a.max()) for a in found.annotations))
        ndim = self.advanced.spatial_ndim()
        default = default_config(device, channels, n_classes, **({"ndim": ndim} if ndim != 2 else {}))
        config = dataclasses.replace(default, depth=depth or default.depth, width=width or default.width)
        self.segmenter = Segmenter(config=config, device=device)

    def stop(self) -> None:
        """Ask the training to stop after the current step; the best weights are kept."""
        if not self.is_training:
            return
        self._stop_training.set()
        self.stop_button.setEnabled(False)
        self.train_progress.setFormat("stopping…")

    def reset_model(self) -> None:
        """Forget the weights and history; the next training starts from scratch."""
        if self.is_training:
            show_warning("Training is running: stop it before resetting the model.")
            return
        self.segmenter = Segmenter(device=self.segmenter.device)
        self._model_changed()
        self.loss_plot.clear()
        self.train_progress.show_progress(0, 1, "not trained yet")
        self._show_model_info()
        self._update_image_options()

    def _model_changed(self) -> None:
        """New weights: cached probabilities and the record of predicted planes are stale."""
        self._cache = None
        self._predicted.clear()

    def _on_train_yielded(self, item: TrainProgress | Segmenter) -> None:
        if self._closing:
            return
        if isinstance(item, Segmenter):  # a snapshot asked for by Predict or the live preview
            request = self._pending_request if self._pending_request is not None else _Request(self._train_image or "")
            self._pending_request = None
            self._start_prediction(item, request)
            return
        progress = item
        self._last_progress = progress
        text = f"step {progress.step}/{progress.total_steps}" if progress.total_steps else f"step {progress.step}"
        if progress.time_left is not None and not progress.done:
            text += f" — {_format_seconds(progress.time_left)} left"
        if progress.val_iou is not None:
            text += f" — IoU on held-out strokes {progress.val_iou:.2f}"
        self.train_progress.show_progress(int(progress.fraction * 1000), 1000, text)
        if self._train_task is not None:
            self._train_task.update(f"training the U-Net on '{self._train_image}': {text}")
        curves = history_curves(list(self.segmenter.history))  # a copy: the worker appends to it
        run_start = curves.run_starts[-1] if curves.run_starts else 0
        self.loss_plot.set_curves(curves, planned_end=run_start + progress.total_steps if progress.total_steps else None)

    def _on_train_error(self, exc: Exception) -> None:
        self._train_failed = True
        self._report_error("Training", exc)

    def _on_train_finished(self) -> None:
        self._workers.pop("train", None)
        self._preview_timer.stop()
        if self._train_task is not None:
            self._train_task.finish(failed=self._train_failed)
            self._train_task = None
        if self._closing:
            return
        self.train_button.setEnabled(True)
        self.stop_button.setEnabled(False)
        self.reset_button.setEnabled(True)
        self.load_button.setEnabled(True)
        self.loss_plot.set_curves(history_curves(list(self.segmenter.history)))
        self._show_model_info()
        self._show_device()
        last = self._last_progress
        if self._train_failed or last is None:
            self.train_progress.setFormat("training failed" if self._train_failed else "not trained")
        else:
            self._model_changed()
            summary = f"trained {last.step} steps in {_format_seconds(last.elapsed)}"
            if last.val_iou is not None:
                summary += f" — IoU on held-out strokes {last.val_iou:.2f}"
            self.train_progress.setFormat(("stopped: " if last.stopped else "") + summary)
            if last.stopped:
                show_info(f"Training stopped at step {last.step}; kept the best weights (step {last.best_step}).")
        pending, self._pending_request = self._pending_request, None
        self._snapshot_request.clear()
        self._update_image_options()
        self.training_finished.emit()
        if not self._train_failed and last is not None and (pending is not None or self.auto_predict.isChecked()):
            if pending is not None:
                self.image_combo.setCurrentText(pending.name)
            self.predict()

    def _request_preview(self) -> None:
        # Skip a tick rather than queue predictions behind each other.
        if self.is_training and not self.is_predicting:
            self._snapshot_request.set()

    # =========================================================================
    # prediction
    # =========================================================================
    def predict(self) -> None:
        """Predict the chosen image in a background worker and write the label layers.

        Writes (or updates) ``"<image> semantic"`` and ``"<image> instances"``
        (label-shaped: a stack's planes not predicted yet stay 0); never
        touches the annotations. For a stack, the Predict choice says whether
        the plane shown by the sliders or every plane is predicted; pressing
        the button (then labelled Cancel) during a whole-stack prediction
        cancels it. While training runs, the prediction uses a snapshot of the
        weights taken between two steps.
        """
        if self._predicting_stack:
            self._cancel_prediction.set()
            self.predict_button.setEnabled(False)  # until the worker has stopped
            show_info("Cancelling the whole-stack prediction: the planes done so far are discarded.")
            return
        try:
            layer = self._require_image()
        except UserInputError as exc:
            show_error(str(exc))
            return
        whole = self.predict_scope.isEnabled() and self.predict_scope.currentText() == WHOLE_STACK
        self._request_prediction(_Request(layer.name, whole))

    def _request_prediction(self, request: _Request) -> None:
        if self.is_training:
            # Copying the weights here could catch an optimiser step half done;
            # the training thread hands over a copy between two steps instead.
            self._pending_request = request
            self._snapshot_request.set()
            return
        if self.segmenter.model is None or not self.segmenter.is_trained:
            show_error("No model yet: train one (Train) or load a model file (Load model…) first.")
            return
        try:
            self.segmenter.to(resolve_device(self.advanced.device_name()))
        except UserInputError as exc:
            show_error(str(exc))
            return
        self._show_device()
        self._start_prediction(snapshot(self.segmenter), request)

    def _store_dir(self, target: Target) -> Path:
        """A fresh folder for a large prediction's zarr stores."""
        chosen = self.advanced.results_dir()
        if chosen is None:
            folder = Path(tempfile.mkdtemp(prefix="napari-unet-"))
            self._temp_dirs.append(folder)  # removed when the widget closes
            return folder
        base = Path(chosen) / "".join(c if c.isalnum() or c in "-_." else "_" for c in target.name)
        number = 1
        while (base.parent / f"{base.name}-{number}").exists():
            number += 1
        return base.parent / f"{base.name}-{number}"

    def _start_prediction(self, segmenter: Segmenter, request: _Request) -> None:
        if self.is_predicting:
            self._again_request = request  # once this one ends, predict again with the newest weights
            return
        layer = find_layer(self.viewer, request.name, Image)
        if layer is None:
            show_warning(f"The image '{request.name}' is gone; nothing to predict.")
            return
        try:
            planes = self._planes(layer)
            target = Target.of(layer, planes.axes)
            if planes.channels != segmenter.config.in_channels:  # said now rather than from the worker
                mismatch = channel_mismatch(segmenter.config.in_channels, planes.channels, planes.axes)
                raise UserInputError(f"{mismatch}; check Advanced ▸ Channel axis")
        except UserInputError as exc:
            show_error(str(exc))
            return
        # The worker gets the lazy planes: a dask/zarr/multiscale image is read plane by plane, never copied whole.
        params = self.instance_params()
        if request.whole and len(planes) > 1:
            store = self._store_dir(target) if target.voxels > LARGE_LABELS else None
            worker = create_worker(
                predict_stack_steps, segmenter, planes, params, self._cancel_prediction, store,
                scale=target.scale, _start_thread=False, _ignore_errors=True,
            )
        else:
            index = self._current_index(layer, planes)
            instances = find_layer(self.viewer, target.layer_name("instances"), Labels)
            ids = instances.data if instances is not None and tuple(instances.data.shape) == target.label_shape else None
            worker = create_worker(
                predict_steps, segmenter, planes, params, self._cancel_prediction, index, ids,
                scale=target.scale, _start_thread=False, _ignore_errors=True,
            )
        self._predict_job = (target, planes)
        self._predicting_stack = request.whole and len(planes) > 1
        if self._predicting_stack:
            self.predict_button.setText("Cancel")
        self._cancel_prediction.clear()
        worker.yielded.connect(self._on_predict_progress)
        worker.returned.connect(self._on_predicted)
        worker.errored.connect(self._on_predict_error)
        worker.finished.connect(self._on_predict_finished)
        self._start("predict", worker)
        self.predict_progress.show_progress(0, 0)  # busy until the first tile reports

    def _on_predict_progress(self, progress: TileProgress | StackProgress) -> None:
        if self._closing:
            return
        if isinstance(progress, StackProgress):
            self.predict_progress.show_progress(int(progress.fraction * 1000), 1000)
        else:
            self.predict_progress.show_progress(progress.done, progress.total)

    def _stack_prediction_ended(self) -> None:
        # Also called on the result, which arrives before the worker's end:
        # a Predict pressed in between queues a prediction instead of cancelling.
        if self._predicting_stack:
            self._predicting_stack = False
            self.predict_button.setText("Predict")
            self.predict_button.setEnabled(True)

    def _on_predicted(self, result: Prediction | StackPrediction | None) -> None:
        if not self._closing:
            self._stack_prediction_ended()
        if self._closing or result is None or self._predict_job is None:
            return
        target, planes = self._predict_job
        if isinstance(result, StackPrediction):
            self._write_stack(target, result)
            self._predicted[target.name] = set(planes.indices())
        else:
            if not self._has_results(target):  # layers removed or reshaped: nothing predicted any more
                self._predicted.pop(target.name, None)
            self._cache = _Cached(target, planes, result)
            self._write_prediction(target, planes, result)
            self._predicted.setdefault(target.name, set()).add(result.index)
        self.prediction_finished.emit()
        if result.params != self.instance_params():
            self._schedule_postprocess()  # the sliders moved while the network ran

    def _on_predict_error(self, exc: Exception) -> None:
        self._again_request = None
        self._report_error("Prediction", exc)

    def _on_predict_finished(self) -> None:
        self._workers.pop("predict", None)
        if self._closing:
            return
        self._stack_prediction_ended()
        self.predict_progress.show_progress(1, 1)
        again, self._again_request = self._again_request, None
        if again is not None:
            self._request_prediction(again)

    # -- following napari's slider ------------------------------------------------
    def _on_step_changed(self, event=None) -> None:
        if not self._closing and self.auto_predict.isChecked():
            self._follow_timer.start()

    def _follow_slider(self) -> None:
        """Predict the plane now shown, if this image was predicted before and that plane was not."""
        layer = self.image_layer()
        if self._closing or layer is None or layer.name not in self._predicted or self.is_training:
            return
        if not self.auto_predict.isChecked() or not self.segmenter.is_trained:
            return
        if self.predict_scope.currentText() == WHOLE_STACK:
            return
        try:
            planes = image_planes(layer, self._spatial_ndim())
        except UserInputError:
            return
        if len(planes) < 2:
            return
        done = self._predicted[layer.name] if self._has_results(Target.of(layer, planes.axes)) else set()
        if self._current_index(layer, planes) not in done:
            self._request_prediction(_Request(layer.name))

    def _has_results(self, target: Target) -> bool:
        """True when the image's semantic and instances layers exist with its label shape."""
        for what in ("semantic", "instances"):
            layer = find_layer(self.viewer, target.layer_name(what), Labels)
            if layer is None or tuple(layer.data.shape) != target.label_shape:
                return False
        return True

    # -- post-processing -------------------------------------------------------------
    def instance_params(self) -> InstanceParams:
        """The post-processing parameters set in the widget."""
        return self.prediction_panel.instance_params()

    def _schedule_postprocess(self, *_: Any) -> None:
        # (valueChanged's argument must not reach QTimer.start(msec).)
        self._postprocess_timer.start()

    def _start_postprocess(self) -> None:
        """Re-run post-processing on the last plane's cached probabilities (never the network)."""
        if self._cache is None or self._closing:
            return
        if "postprocess" in self._workers:
            self._postprocess_again = True
            return
        cached = self._cache
        worker = create_worker(
            repostprocess, cached.prediction, self.instance_params(), cached.planes, self.segmenter.names(), cached.target.scale,
            _start_thread=False, _ignore_errors=True,
        )
        worker.returned.connect(lambda result: self._on_postprocessed(cached, result))
        worker.errored.connect(self._on_postprocess_error)
        worker.finished.connect(self._on_postprocess_finished)
        self._start("postprocess", worker)

    def _on_postprocessed(self, cached: _Cached, result: Prediction) -> None:
        if self._closing:
            return
        self._cache = _Cached(cached.target, cached.planes, result)
        self._write_prediction(cached.target, cached.planes, result, probabilities=False)
        # Other planes were made with other parameters: moving the slider predicts them again.
        self._predicted = {cached.target.name: {result.index}}
        self.postprocess_finished.emit()

    def _on_postprocess_error(self, exc: Exception) -> None:
        self._postprocess_again = False
        self._report_error("Post-processing", exc)

    def _on_postprocess_finished(self) -> None:
        self._workers.pop("postprocess", None)
        if self._postprocess_again and not self._closing:
            self._postprocess_again = False
            self._start_postprocess()

    # -- writing layers (GUI thread) --------------------------------------------
    def _write_prediction(self, target: Target, planes: Planes, result: Prediction, probabilities: bool = True) -> None:
        """Write one plane's result: the whole layers for a single-plane image, that plane of a stack."""
        styles = {"semantic": {"colormap": semantic_colormap(), "opacity": 0.45}, "instances": {"contour": 1, "opacity": 0.9}}
        for what, data in (("semantic", result.semantic), ("instances", result.instances)):
            if len(planes) == 1:
                layer = self._write(target, what, data, Labels, **styles[what])
            else:
                layer = self._result_layer(target, what, data.dtype, **styles[what])
                write_plane(layer, planes.label_index(result.index), data)
        if result.measurements is not None:
            # `layer` is the instances layer: its features hold one row per object (napari's features table).
            set_plane_features(layer, result.measurements, dict(zip(planes.loop_axes.lower(), result.index)))
        if probabilities and self.show_probabilities.isChecked():
            self._write_probability(target, planes, result)

    def _result_layer(self, target: Target, what: str, dtype: np.dtype, **kwargs) -> Labels:
        """The image's full-size ``what`` layer, created empty (zeros: not predicted) when missing."""
        layer = find_layer(self.viewer, target.layer_name(what), Labels)
        if layer is not None and tuple(layer.data.shape) == target.label_shape and layer is not self.annotations_layer():
            return layer
        if target.voxels > LARGE_LABELS:
            import zarr

            folder = self._plane_stores.get(target.name)
            if folder is None or (folder / f"{what}.zarr").exists():
                folder = self._plane_stores[target.name] = self._store_dir(target)
            path = folder / f"{what}.zarr"
            data = zarr.open_array(str(path), mode="w", shape=target.label_shape, dtype=dtype, fill_value=0, chunks=_plane_chunks(target.label_shape))
        else:
            data = np.zeros(target.label_shape, dtype)
        return self._write(target, what, data, Labels, **kwargs)

    def _write_stack(self, target: Target, result: StackPrediction) -> None:
        if result.paths is not None:
            import zarr

            # Opened writable: a later current-plane prediction updates them in place.
            semantic, instances = (zarr.open_array(str(path), mode="r+") for path in result.paths)
            show_info(f"Wrote the prediction of '{target.name}' to {result.paths[0].parent}")
        else:
            semantic, instances = result.semantic, result.instances
        self._write(target, "semantic", semantic, Labels, colormap=semantic_colormap(), opacity=0.45)
        layer = self._write(target, "instances", instances, Labels, contour=1, opacity=0.9)
        if result.measurements is not None:
            set_plane_features(layer, result.measurements, None)

    def _write_probability(self, target: Target, planes: Planes, result: Prediction) -> None:
        # One map for "any object class" keeps the layer label-shaped whatever the number of classes.
        foreground = 1.0 - result.probabilities[0]
        style = {"colormap": "magma", "blending": "additive", "contrast_limits": (0.0, 1.0), "opacity": 0.7}
        if len(planes) == 1:
            layer = self._write(target, "probability", foreground, Image, **style)
        elif target.voxels <= PROBABILITY_MAX_VOXELS:
            # Only the last predicted plane is shown (its probabilities are all that is kept); other planes are 0.
            layer = find_layer(self.viewer, target.layer_name("probability"), Image)
            if layer is None or tuple(layer.data.shape) != target.label_shape or layer.unique_id not in self._prediction_layers:
                layer = self._write(target, "probability", np.zeros(target.label_shape, np.float32), Image, **style)
            previous = layer.metadata.get("napari_unet_plane")
            if previous is not None and tuple(previous) != tuple(result.index):
                layer.data[planes.label_index(previous)] = 0
            layer.metadata["napari_unet_plane"] = tuple(result.index)
            write_plane(layer, planes.label_index(result.index), foreground)
        else:
            self._warn_once(f"probability {target.name}", f"'{target.name}' is too large to show probabilities.")
            return
        layer.visible = True

    def _write(self, target: Target, what: str, data: Any, kind: type, **kwargs) -> Any:
        annotations = find_layer(self.viewer, target.layer_name("annotations"), Labels)
        if annotations is None:
            annotations = self.annotations_layer()
        # Below the annotations, so corrections stay visible while painting.
        layer = write_layer(self.viewer, target.layer_name(what), data, target, kind, protected=self.annotations_layer(), below=annotations, **kwargs)
        if layer.unique_id not in self._prediction_layers:
            self._prediction_layers.add(layer.unique_id)
            self._refresh_layer_choices()
        return layer

    def _on_show_probabilities(self, checked: bool) -> None:
        if self._cache is None:
            return
        cached = self._cache
        if checked:
            self._write_probability(cached.target, cached.planes, cached.prediction)
        else:
            layer = find_layer(self.viewer, cached.target.layer_name("probability"), Image)
            if layer is not None:
                layer.visible = False

    # =========================================================================
    # workers and errors
    # =========================================================================
    def _start(self, key: str, worker: Any) -> None:
        """Track a worker and start it; its errors go to our handlers only."""
        # napari relays worker errors as traceback notifications; ours says
        # what went wrong in words instead (see _report_error).
        relay = getattr(worker, "_relay_error", None)
        if relay is not None:
            try:
                worker.errored.disconnect(relay)
            except TypeError:
                pass  # not connected: napari 0.9's mixin __init__ does not run for these workers
        self._watch_main_window()
        done = threading.Event()
        # Set from the worker thread itself, so closing can wait for it
        # without the GUI event loop running.
        worker.finished.connect(done.set, Qt.ConnectionType.DirectConnection)
        self._workers[key] = (worker, done)
        worker.start()

    def _report_error(self, what: str, exc: Exception) -> None:
        if self._closing:
            return
        if isinstance(exc, UserInputError):
            show_error(str(exc))
        else:  # a bug: keep the traceback in the log, tell the user briefly
            logger.error("%s failed", what, exc_info=(type(exc), exc, exc.__traceback__))
            show_error(f"{what} failed: {type(exc).__name__}: {exc}")

    # =========================================================================
    # model and device labels
    # =========================================================================
    def _show_model_info(self) -> None:
        seg = self.segmenter
        if seg.model is None and not seg.history:
            self.model_label.setText("Model: none yet (Train creates one)")
        else:
            size = f"depth {seg.config.depth}, width {seg.config.width}; " if seg.config else ""
            self.model_label.setText(f"Model: {size}{describe_model(seg.names(), seg.history)}")

    def _show_device(self, *_: Any) -> None:
        choice = self.advanced.device_name()
        try:
            wanted = describe_device(resolve_device(choice))
        except UserInputError:
            wanted = f"{choice} (not available here)"
        in_use = self.segmenter.device_label
        text = f"Device: {in_use}"
        if wanted != in_use and not self.is_training:
            text += f" → {wanted} from next run"
        self.device_label.setText(text)

    # =========================================================================
    # closing
    # =========================================================================
    def _watch_main_window(self) -> None:
        """Watch the main window this widget is docked in, to stop workers when it closes.

        Looked up through Qt parents (the viewer's window attribute is
        private in napari); called when the widget shows and before any
        worker starts, by which time the widget is docked.
        """
        window = self.parentWidget()
        while window is not None and not isinstance(window, QMainWindow):
            window = window.parentWidget()
        if window is None or window is self._main_window:
            return
        if self._main_window is not None:
            self._main_window.removeEventFilter(self)
        window.installEventFilter(self)
        self._main_window = window

    def showEvent(self, event) -> None:  # noqa: N802 (Qt API)
        self._watch_main_window()
        super().showEvent(event)

    def eventFilter(self, obj: QObject, event: QEvent) -> bool:  # noqa: N802 (Qt API)
        # A programmatic close (viewer.close(), File ▸ Close Window after its
        # confirmation) is never refused; a close from the window manager may
        # be cancelled in napari's dialog, and is final once the window hides.
        if obj is self._main_window and not event.spontaneous() and event.type() in (QEvent.Type.Close, QEvent.Type.Hide):
            self.shutdown()
        return False

    def closeEvent(self, event) -> None:  # noqa: N802 (Qt API)
        self.shutdown()
        super().closeEvent(event)

    def shutdown(self, timeout: float = SHUTDOWN_TIMEOUT_S) -> None:
        """Stop training and prediction and wait for their threads (viewer closing).

        Training ends after its current step with the best weights kept.
        Safe to call more than once.
        """
        if self._closing:
            return
        self._closing = True
        self._stop_training.set()
        self._cancel_prediction.set()
        self._preview_timer.stop()
        self._postprocess_timer.stop()
        self._follow_timer.stop()
        self._status_timer.stop()
        for worker, done in list(self._workers.values()):
            # A worker queued but not yet started will see the stop flag at once.
            if worker.is_running and not done.wait(timeout):
                logger.warning("a napari-unet worker did not stop within %.0f s", timeout)
        if self._main_window is not None:
            self._main_window.removeEventFilter(self)
            self._main_window = None
        try:
            self._disconnect_viewer()
        except (RuntimeError, AttributeError):  # the viewer is already half torn down
            pass
        for folder in self._temp_dirs:  # large results written to temporary stores
            shutil.rmtree(folder, ignore_errors=True)



def _plane_chunks(shape: tuple) -> tuple:
    """Store chunks for label-shaped results: one plane deep, 1024² blocks in Y and X."""
    return tuple(1 for _ in shape[:-2]) + tuple(min(s, 1024) for s in shape[-2:])
