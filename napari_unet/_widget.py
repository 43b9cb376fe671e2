"""The napari dock widget: paint, train in the background, predict, correct, export.

Everything slow (training, prediction, post-processing) runs in napari
thread workers (:mod:`napari_unet._workers`); this module only reads
layers, copies their data on the GUI thread, starts workers and writes
results back into layers from the workers' signals, so the viewer stays
responsive while the network trains.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

import numpy as np
from napari.layers import Image, Labels
from napari.qt.threading import create_worker
from napari.utils.notifications import show_error, show_info, show_warning
from qtpy.QtCore import QEvent, QObject, Qt, QTimer, Signal
from qtpy.QtWidgets import QComboBox, QFileDialog, QMainWindow, QVBoxLayout, QWidget
from superqt import QCollapsible

from napari_unet.core.device import describe_device, resolve_device
from napari_unet.core.errors import UserInputError
from napari_unet.core.inference import TileProgress
from napari_unet.core.model import UNetConfig, default_config
from napari_unet.core.postprocess import InstanceParams
from napari_unet.core.segmenter import Segmenter
from napari_unet.core.training import TrainProgress

from ._advanced import AdvancedSettings
from ._colormaps import annotation_colormap, semantic_colormap
from ._history import describe_model, history_curves
from ._panels import DataPanel, FilesPanel, PredictionPanel, TrainingPanel
from ._reader import is_tiff, napari_get_reader
from ._result_layers import Target, find_layer, write_layer
from ._workers import Prediction, predict_steps, repostprocess, snapshot, train_steps
from ._writer import write_labels_layer

if TYPE_CHECKING:
    import napari

logger = logging.getLogger(__name__)

#: Milliseconds between two live-preview predictions while training.
PREVIEW_EVERY_MS = 4000
#: Wait after the last instance-parameter change before post-processing again.
POSTPROCESS_DEBOUNCE_MS = 150
#: How long closing the viewer waits for a worker to notice it must stop.
SHUTDOWN_TIMEOUT_S = 15.0


def _format_seconds(seconds: float) -> str:
    seconds = max(0, round(seconds))
    return f"{seconds // 60} min {seconds % 60:02d} s" if seconds >= 60 else f"{seconds} s"


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
    """

    training_finished = Signal()
    prediction_finished = Signal()
    postprocess_finished = Signal()

    def __init__(self, napari_viewer: "napari.viewer.Viewer", parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.viewer = napari_viewer
        self.segmenter = Segmenter(device="auto")
        #: Training seed (None: different every run); scripts and tests set it.
        self.seed: int | None = None

        self._workers: dict[str, tuple[Any, threading.Event]] = {}  # running: key -> (worker, done)
        self._stop_training = threading.Event()
        self._snapshot_request = threading.Event()
        self._cancel_prediction = threading.Event()
        self._train_image: Target | None = None
        self._train_failed = False
        self._last_progress: TrainProgress | None = None
        self._predict_target: Target | None = None
        self._pending_target: Target | None = None  # Predict pressed while training
        self._predict_again = False
        self._cache: tuple[Target, np.ndarray] | None = None  # probabilities of the last prediction
        self._postprocess_target: Target | None = None
        self._postprocess_again = False
        self._prediction_layers: set = set()  # unique_ids of the layers we write
        self._closing = False
        self._main_window: QObject | None = None

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
        self.train_button, self.stop_button, self.reset_button = training.train_button, training.stop_button, training.reset_button
        self.train_progress, self.loss_plot = training.progress, training.loss_plot
        self.device_label, self.model_label = training.device_label, training.model_label
        self.predict_button, self.predict_progress = prediction.predict_button, prediction.progress
        self.auto_predict, self.show_probabilities = prediction.auto_predict, prediction.show_probabilities
        self.threshold, self.min_size, self.split_strength = prediction.threshold, prediction.min_size, prediction.split_strength
        self.load_button = files.load_button

        data.image_combo.currentTextChanged.connect(self._on_image_changed)
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
        self.advanced.device_changed.connect(self._show_device)

        # Parameter changes re-run only post-processing, after a short pause.
        self._postprocess_timer = QTimer(self)
        self._postprocess_timer.setSingleShot(True)
        self._postprocess_timer.setInterval(POSTPROCESS_DEBOUNCE_MS)
        self._postprocess_timer.timeout.connect(self._start_postprocess)
        for control in (self.threshold, self.min_size, self.split_strength):
            control.valueChanged.connect(self._schedule_postprocess)

        self._preview_timer = QTimer(self)
        self._preview_timer.setInterval(PREVIEW_EVERY_MS)
        self._preview_timer.timeout.connect(self._request_preview)

    def _theme_colors(self) -> tuple[str, str]:
        """Plot background and text colours from the viewer's napari theme."""
        try:
            from napari.utils.theme import get_theme

            theme = get_theme(self.viewer.theme)
            return theme.background.as_hex(), theme.text.as_hex()
        except (ValueError, KeyError, AttributeError):  # custom or "system" theme without colours
            return "#262930", "#f0f1f2"

    # =========================================================================
    # layer choices
    # =========================================================================
    def _connect_viewer(self) -> None:
        events = self.viewer.layers.events
        events.inserted.connect(self._on_layer_inserted)
        events.removed.connect(self._refresh_layer_choices)
        events.moved.connect(self._refresh_layer_choices)
        for layer in self.viewer.layers:
            layer.events.name.connect(self._refresh_layer_choices)

    def _disconnect_viewer(self) -> None:
        events = self.viewer.layers.events
        events.inserted.disconnect(self._on_layer_inserted)
        events.removed.disconnect(self._refresh_layer_choices)
        events.moved.disconnect(self._refresh_layer_choices)
        for layer in self.viewer.layers:
            layer.events.name.disconnect(self._refresh_layer_choices)

    def _on_layer_inserted(self, event) -> None:
        event.value.events.name.connect(self._refresh_layer_choices)
        self._refresh_layer_choices()

    def _refresh_layer_choices(self, event=None) -> None:
        if self._closing:
            return
        ours = self._prediction_layers  # never offered: neither trained on nor painted into
        images = [layer.name for layer in self.viewer.layers if isinstance(layer, Image) and layer.unique_id not in ours]
        labels = [layer.name for layer in self.viewer.layers if isinstance(layer, Labels) and layer.unique_id not in ours]
        image = self._set_choices(self.image_combo, images)
        self._set_choices(self.annotations_combo, labels, prefer=f"{image} annotations" if image else None)

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

    def _on_image_changed(self, name: str) -> None:
        # Pair the image with its "<image> annotations" layer when there is one.
        paired = f"{name} annotations"
        if self.annotations_combo.findText(paired) >= 0:
            self.annotations_combo.setCurrentText(paired)

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
        if layer.multiscale or layer.rgb or layer.ndim != 2:
            kind = "multiscale" if layer.multiscale else "RGB" if layer.rgb else f"{layer.ndim}D"
            raise UserInputError(f"'{layer.name}' is a {kind} image; napari-unet handles single-channel 2D images for now")
        return layer

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
        self._cache = None
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

    def export_labels(self, path: str | Path, which: str = "instances") -> list[str]:
        """Write the image's predicted ``"instances"`` or ``"semantic"`` labels as TIFF.

        Uses the plugin's writer (:func:`napari_unet._writer.write_labels_layer`),
        so the file equals File ▸ Save Selected Layers with napari-unet.

        Returns
        -------
        list of str
            The written path (empty after an error notification).
        """
        if which not in ("instances", "semantic"):
            raise ValueError(f"which must be 'instances' or 'semantic', not {which!r}")
        image = self.image_combo.currentText()
        layer = find_layer(self.viewer, f"{image} {which}", Labels) if image else None
        if layer is None:
            show_error(f"Nothing to export: no '{image} {which}' layer yet. Press Predict first.")
            return []
        try:
            written = write_labels_layer(str(path), layer.data, {"name": layer.name})
        except (UserInputError, OSError) as exc:
            show_error(f"Could not export labels: {exc}")
            return []
        show_info(f"Exported {layer.name} to {written[0]}")
        return written

    # =========================================================================
    # annotations
    # =========================================================================
    def new_annotations(self) -> Labels | None:
        """Add (or select) the image's annotations layer, ready to paint background (1).

        Returns
        -------
        Labels or None
            The annotations layer, or None after an error notification.
        """
        try:
            image = self._require_image()
        except UserInputError as exc:
            show_error(str(exc))
            return None
        name = f"{image.name} annotations"
        layer = find_layer(self.viewer, name, Labels)
        if layer is not None and layer.data.shape == image.data.shape:
            # e.g. the sample's strokes: give them the legend's colours.
            layer.colormap = annotation_colormap()
            show_info(f"'{name}' already exists: selected it.")
        else:
            shape = tuple(image.data.shape)
            layer = self.viewer.add_labels(
                np.zeros(shape, dtype=np.uint8),
                name=name if layer is None else f"{name} {len(self.viewer.layers)}",
                scale=image.scale,
                translate=image.translate,
                colormap=annotation_colormap(),
                opacity=0.8,
            )
            layer.brush_size = max(3, min(shape) // 64)
        layer.selected_label = 1
        layer.mode = "paint"
        self.viewer.layers.selection.active = layer
        self.annotations_combo.setCurrentText(layer.name)
        return layer

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
        """Fine-tune the model on the chosen annotations in a background worker.

        The annotations are copied now, so painting may continue while it
        trains; the first training (or the first after Reset) starts a fresh
        model. Problems are shown as notifications.
        """
        if self.is_training:
            show_warning("Training is already running: press Stop first, or wait for it to finish.")
            return
        try:
            image_layer = self._require_image()
            annotations_layer = self.annotations_layer()
            if annotations_layer is None:
                raise UserInputError("no annotations layer: press New next to Annotations and paint 1 = background, 2 = object")
            if annotations_layer.unique_id in self._prediction_layers:
                raise UserInputError(f"'{annotations_layer.name}' is a prediction; choose (or create) an annotations layer")
            image = np.array(image_layer.data, copy=True)
            annotations = np.array(annotations_layer.data, copy=True)
            if annotations.shape != image.shape:
                raise UserInputError(
                    f"the annotations '{annotations_layer.name}' have shape {annotations.shape} "
                    f"but the image '{image_layer.name}' has shape {image.shape}"
                )
            config = self.advanced.train_config(seed=self.seed)
            self._prepare_model(annotations)
        except UserInputError as exc:
            show_error(str(exc))
            return

        self._train_image = Target.of(image_layer)
        self._train_failed = False
        self._last_progress = None
        self._stop_training.clear()
        self._snapshot_request.clear()
        worker = create_worker(
            train_steps, self.segmenter, image, annotations, config, self._stop_training, self._snapshot_request, _start_thread=False, _ignore_errors=True
        )
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

    def _prepare_model(self, annotations: np.ndarray) -> None:
        """Create the fresh model (with the Advanced size) or move the current one to the chosen device."""
        device = resolve_device(self.advanced.device_name())
        depth, width = self.advanced.architecture()
        if self.segmenter.model is not None or (depth is None and width is None):
            self.segmenter.to(device)  # a fresh model is then sized by the engine for the device
            return
        n_classes = max(2, int(annotations.max()))
        default = default_config(device, 1, n_classes)
        config = UNetConfig(1, n_classes, depth or default.depth, width or default.width)
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
        self._cache = None
        self.loss_plot.clear()
        self.train_progress.show_progress(0, 1, "not trained yet")
        self._show_model_info()

    def _on_train_yielded(self, item: TrainProgress | Segmenter) -> None:
        if self._closing:
            return
        if isinstance(item, Segmenter):  # a snapshot asked for by Predict or the live preview
            target = self._pending_target if self._pending_target is not None else self._train_image
            self._pending_target = None
            self._start_prediction(item, target)
            return
        progress = item
        self._last_progress = progress
        text = f"step {progress.step}/{progress.total_steps}" if progress.total_steps else f"step {progress.step}"
        if progress.time_left is not None and not progress.done:
            text += f" — {_format_seconds(progress.time_left)} left"
        if progress.val_iou is not None:
            text += f" — val IoU {progress.val_iou:.2f}"
        self.train_progress.show_progress(int(progress.fraction * 1000), 1000, text)
        curves = history_curves(list(self.segmenter.history))  # a copy: the worker appends to it
        run_start = curves.run_starts[-1] if curves.run_starts else 0
        self.loss_plot.set_curves(curves, planned_end=run_start + progress.total_steps if progress.total_steps else None)

    def _on_train_error(self, exc: Exception) -> None:
        self._train_failed = True
        self._report_error("Training", exc)

    def _on_train_finished(self) -> None:
        self._workers.pop("train", None)
        self._preview_timer.stop()
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
            summary = f"trained {last.step} steps in {_format_seconds(last.elapsed)}"
            if last.val_iou is not None:
                summary += f" — val IoU {last.val_iou:.2f}"
            self.train_progress.setFormat(("stopped: " if last.stopped else "") + summary)
            if last.stopped:
                show_info(f"Training stopped at step {last.step}; kept the best weights (step {last.best_step}).")
        pending, self._pending_target = self._pending_target, None
        self._snapshot_request.clear()
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

        While training runs, the prediction uses a snapshot of the weights
        taken between two steps. Writes (or updates) ``"<image> semantic"``
        and ``"<image> instances"``; never touches the annotations.
        """
        try:
            layer = self._require_image()
        except UserInputError as exc:
            show_error(str(exc))
            return
        target = Target.of(layer)
        if self.is_training:
            # Copying the weights here could catch an optimiser step half done;
            # the training thread hands over a copy between two steps instead.
            self._pending_target = target
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
        self._start_prediction(snapshot(self.segmenter), target)

    def _start_prediction(self, segmenter: Segmenter, target: Target) -> None:
        if self.is_predicting:
            self._predict_again = True  # once this one ends, predict again with the newest weights
            return
        layer = find_layer(self.viewer, target.name, Image)
        if layer is None:
            show_warning(f"The image '{target.name}' is gone; nothing to predict.")
            return
        image = np.array(layer.data, copy=True)
        self._predict_target = Target.of(layer)
        self._cancel_prediction.clear()
        worker = create_worker(predict_steps, segmenter, image, self.instance_params(), self._cancel_prediction, _start_thread=False, _ignore_errors=True)
        worker.yielded.connect(self._on_predict_progress)
        worker.returned.connect(self._on_predicted)
        worker.errored.connect(self._on_predict_error)
        worker.finished.connect(self._on_predict_finished)
        self._start("predict", worker)
        self.predict_progress.show_progress(0, 0)  # busy until the first tile reports

    def _on_predict_progress(self, progress: TileProgress) -> None:
        if not self._closing:
            self.predict_progress.show_progress(progress.done, progress.total)

    def _on_predicted(self, result: Prediction | None) -> None:
        if self._closing or result is None or self._predict_target is None:
            return
        target = self._predict_target
        self._cache = (target, result.probabilities)
        self._write_prediction(target, result)
        self.prediction_finished.emit()
        if result.params != self.instance_params():
            self._schedule_postprocess()  # the sliders moved while the network ran

    def _on_predict_error(self, exc: Exception) -> None:
        self._predict_again = False
        self._report_error("Prediction", exc)

    def _on_predict_finished(self) -> None:
        self._workers.pop("predict", None)
        if self._closing:
            return
        self.predict_progress.show_progress(1, 1)
        if self._predict_again:
            self._predict_again = False
            self.predict()

    def instance_params(self) -> InstanceParams:
        """The post-processing parameters set in the widget."""
        return self.prediction_panel.instance_params()

    def _schedule_postprocess(self, *_: Any) -> None:
        # (valueChanged's argument must not reach QTimer.start(msec).)
        self._postprocess_timer.start()

    def _start_postprocess(self) -> None:
        """Re-run post-processing on the cached probabilities (never the network)."""
        if self._cache is None or self._closing:
            return
        if "postprocess" in self._workers:
            self._postprocess_again = True
            return
        target, probabilities = self._cache
        worker = create_worker(repostprocess, probabilities, self.instance_params(), _start_thread=False, _ignore_errors=True)
        worker.returned.connect(self._on_postprocessed)
        worker.errored.connect(self._on_postprocess_error)
        worker.finished.connect(self._on_postprocess_finished)
        self._postprocess_target = target
        self._start("postprocess", worker)

    def _on_postprocessed(self, result: Prediction) -> None:
        if self._closing:
            return
        self._write_prediction(self._postprocess_target, result, probabilities=False)
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
    def _write_prediction(self, target: Target, result: Prediction, probabilities: bool = True) -> None:
        self._write(target, "semantic", result.semantic, Labels, colormap=semantic_colormap(), opacity=0.45)
        self._write(target, "instances", result.instances, Labels, contour=1, opacity=0.9)
        if probabilities and self.show_probabilities.isChecked():
            self._write_probability(target, result.probabilities)

    def _write_probability(self, target: Target, probabilities: np.ndarray) -> None:
        # One map for "any object class" keeps the layer 2D whatever the number of classes.
        foreground = 1.0 - probabilities[0]
        layer = self._write(target, "probability", foreground, Image, colormap="magma", blending="additive", contrast_limits=(0.0, 1.0), opacity=0.7)
        layer.visible = True

    def _write(self, target: Target, what: str, data: np.ndarray, kind: type, **kwargs) -> Any:
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
        target, probabilities = self._cache
        if checked:
            self._write_probability(target, probabilities)
        else:
            layer = find_layer(self.viewer, target.layer_name("probability"), Image)
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
