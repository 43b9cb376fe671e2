"""The napari dock widget: buttons, lists and timers wired to a :class:`~napari_unet.plugin.session.Session`.

Everything the widget does goes through its session (``widget.session``),
which holds the model and the state between clicks and runs the slow work
in napari thread workers (:class:`~napari_unet._qt.workers.QtRunner`); this
module only builds the panels, turns their values into
:class:`~napari_unet.plugin.settings.Settings`, shows the session's events
(progress, loss plot, buttons) and opens file dialogs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from napari.layers import Image, Labels
from qtpy.QtCore import QEvent, QObject, QTimer, Signal
from qtpy.QtWidgets import QComboBox, QFileDialog, QMainWindow, QVBoxLayout, QWidget
from superqt import QCollapsible

from napari_unet._qt.advanced import AdvancedSettings
from napari_unet._qt.panels import WHOLE_STACK, DataPanel, EvaluationPanel, FilesPanel, PredictionPanel, TrainingPanel
from napari_unet._qt.workers import QtRunner
from napari_unet.core.device import describe_device, resolve_device
from napari_unet.core.history import history_curves
from napari_unet.core.training import TrainProgress
from napari_unet.errors import UserInputError
from napari_unet.plugin.evaluation import NO_TRUTH, Scored, describe_scores
from napari_unet.plugin.result_layers import AUTO, CHANNEL_KEY, layer_axes
from napari_unet.plugin.session import SHUTDOWN_TIMEOUT_S, Session
from napari_unet.plugin.settings import Settings

if TYPE_CHECKING:
    import napari

#: Milliseconds between two live-preview predictions while training.
PREVIEW_EVERY_MS = 4000
#: Wait after the last instance-parameter change before post-processing again.
POSTPROCESS_DEBOUNCE_MS = 150
#: Wait after the slider stops before predicting the plane it shows.
FOLLOW_DEBOUNCE_MS = 250
#: Wait after painting or layer changes before recounting the painted planes.
STATUS_DEBOUNCE_MS = 400


def format_seconds(seconds: float) -> str:
    """``"42 s"`` or ``"3 min 05 s"``."""
    seconds = max(0, round(seconds))
    return f"{seconds // 60} min {seconds % 60:02d} s" if seconds >= 60 else f"{seconds} s"


def describe_progress(progress: TrainProgress) -> str:
    """One line of training progress: step, time left, strokes taken in while training, held-out IoU."""
    text = f"step {progress.step}/{progress.total_steps}" if progress.total_steps else f"step {progress.step}"
    if progress.time_left is not None and not progress.done:
        text += f" — {format_seconds(progress.time_left)} left"
    if progress.strokes:
        text += f" — {progress.strokes} new stroke{'s' * (progress.strokes != 1)} in"
    if progress.val_iou is not None:
        text += f" — IoU on held-out strokes {progress.val_iou:.2f}"
    return text


class UNetWidget(QWidget):
    """Interactive U-Net segmentation: paint strokes, train, predict, correct, export.

    Parameters
    ----------
    napari_viewer : napari.viewer.Viewer
        The viewer whose layers the session reads and writes.

    Attributes
    ----------
    session : Session
        What the buttons do (``train``, ``predict``, ``save_model``, ...);
        scripts and tests may call it directly, with the widget's choices.
    data_panel, training_panel, prediction_panel, evaluation_panel, files_panel, advanced
        The controls.

    Signals
    -------
    training_finished, prediction_finished, postprocess_finished, export_finished(str)
        The session's events of the same names, as Qt signals.
    """

    training_finished = Signal()
    prediction_finished = Signal()
    postprocess_finished = Signal()
    export_finished = Signal(str)

    def __init__(self, napari_viewer: napari.viewer.Viewer, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.viewer = napari_viewer
        self._main_window: QObject | None = None
        self.session = Session(napari_viewer, QtRunner(napari_viewer, before_start=self._watch_main_window), settings=self.settings)
        self._build_ui()
        self._connect_session()
        self._connect_viewer()
        self.refresh_layer_choices()
        self._show_model()

    # -- building ------------------------------------------------------------------------------
    def _build_ui(self) -> None:
        layout = QVBoxLayout(self)
        layout.setContentsMargins(6, 6, 6, 6)
        layout.setSpacing(6)
        self.data_panel = data = DataPanel()
        self.training_panel = training = TrainingPanel(*self._theme_colors())
        self.prediction_panel = prediction = PredictionPanel()
        self.evaluation_panel = evaluation = EvaluationPanel()
        self.files_panel = files = FilesPanel()
        self.advanced = AdvancedSettings()
        self.advanced_section = QCollapsible("Advanced")
        self.advanced_section.addWidget(self.advanced)
        for part in (data, training, prediction, evaluation, files, self.advanced_section):
            layout.addWidget(part)
        layout.addStretch(1)

        data.image_combo.currentTextChanged.connect(self._on_image_changed)
        data.annotations_combo.currentTextChanged.connect(self.schedule_status)
        data.train_all.toggled.connect(self.schedule_status)
        data.open_menu.addAction("TIFF files…", self._open_files_dialog)
        data.open_menu.addAction("Folder of TIFFs…", self._open_folder_dialog)
        data.new_annotations_button.clicked.connect(self.new_annotations)
        training.train_button.clicked.connect(self.session.train)
        training.stop_button.clicked.connect(self.stop)
        training.reset_button.clicked.connect(self.session.reset_model)
        prediction.predict_button.clicked.connect(self.predict)
        prediction.show_probabilities.toggled.connect(lambda shown: self.session.show_map("probability", shown))
        prediction.show_uncertainty.toggled.connect(lambda shown: self.session.show_map("uncertainty", shown))
        prediction.next_region_button.clicked.connect(self.session.next_region)
        evaluation.truth_combo.currentTextChanged.connect(lambda *_: self.session.evaluate_last())
        files.save_button.clicked.connect(self._save_model_dialog)
        files.load_button.clicked.connect(self._load_model_dialog)
        files.export_button.clicked.connect(self._export_labels_dialog)
        files.bioimageio_button.clicked.connect(self._export_bioimageio_dialog)
        self.advanced.device_changed.connect(self._show_device)
        self.advanced.channel_axis.currentTextChanged.connect(self._on_channel_axis_changed)
        self.advanced.model_3d.toggled.connect(self.schedule_status)

        # Parameter changes re-run only post-processing, after a short pause.
        self._postprocess_timer = self._single_shot(POSTPROCESS_DEBOUNCE_MS, self.session.start_postprocess)
        for control in (prediction.threshold, prediction.min_size, prediction.split_strength):
            control.valueChanged.connect(lambda *_: self._postprocess_timer.start())
        # Slider moves predict the plane shown once the slider rests.
        self._follow_timer = self._single_shot(FOLLOW_DEBOUNCE_MS, self.session.follow_slider)
        self._status_timer = self._single_shot(STATUS_DEBOUNCE_MS, self.update_training_status)
        #: Asks the training for a live preview while it runs (interval: PREVIEW_EVERY_MS).
        self.preview_timer = QTimer(self)
        self.preview_timer.setInterval(PREVIEW_EVERY_MS)
        self.preview_timer.timeout.connect(self.session.request_preview)

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

    def settings(self) -> Settings:
        """The choices made in the controls now (the session reads them for every action)."""
        advanced, prediction, budget = self.advanced, self.prediction_panel, self.advanced.budget.value()
        depth, width = advanced.architecture()
        by_time = advanced.budget_unit.currentText() == "seconds"
        return Settings(
            image=self.data_panel.image_combo.currentText(),
            annotations=self.data_panel.annotations_combo.currentText(),
            train_all=self.data_panel.train_all.isChecked(),
            device=advanced.device_name(),
            ndim=advanced.spatial_ndim(),
            depth=depth,
            width=width,
            steps=None if by_time else budget,
            max_time=float(budget) if by_time else None,
            patch_size=advanced.patch_size.value(),
            batch_size=advanced.batch_size.value(),
            learning_rate=advanced.learning_rate.value() or None,
            whole_objects=advanced.whole_objects.isChecked(),
            results_dir=advanced.results_dir(),
            live_preview=advanced.live_preview.isChecked(),
            auto_predict=prediction.auto_predict.isChecked(),
            show_probabilities=prediction.show_probabilities.isChecked(),
            show_uncertainty=prediction.show_uncertainty.isChecked(),
            whole_stack=prediction.scope.isEnabled() and prediction.scope.currentText() == WHOLE_STACK,
            instance_params=prediction.instance_params(),
            export_measurements=self.files_panel.export_measurements.isChecked(),
            truth=self.evaluation_panel.truth(),
        )

    # -- session events ------------------------------------------------------------------------
    def _connect_session(self) -> None:
        events = self.session.events
        events.training_started.connect(self._on_training_started)
        events.training_progress.connect(self._on_training_progress)
        events.training_finished.connect(self._on_training_finished)
        events.model_changed.connect(self._on_model_changed)
        events.min_size_suggested.connect(self.prediction_panel.min_size.setValue)
        events.prediction_started.connect(self._on_prediction_started)
        events.prediction_progress.connect(self.prediction_panel.progress.show_progress)
        events.prediction_finished.connect(self._on_prediction_written)
        events.prediction_ended.connect(self._on_prediction_ended)
        events.postprocess_finished.connect(self.postprocess_finished.emit)
        events.export_started.connect(lambda: self.files_panel.bioimageio_button.setEnabled(False))
        events.export_finished.connect(self._on_export_finished)
        events.choices_changed.connect(self.refresh_layer_choices)
        events.suggestions_changed.connect(self._on_suggestions)
        events.evaluated.connect(self._on_evaluated)

    def _set_training_controls(self, training: bool) -> None:
        panel = self.training_panel
        panel.train_button.setEnabled(not training)
        panel.stop_button.setEnabled(training)
        panel.reset_button.setEnabled(not training)
        self.files_panel.load_button.setEnabled(not training)

    def _on_training_started(self) -> None:
        found = self.session.training_set
        unit = "volume" if self.session.spatial_ndim() == 3 else "plane"
        self.data_panel.training_status.setText(f"Training on: {found.describe(unit)}" if found and found.sources else "Training on: nothing painted yet")
        self._set_training_controls(True)
        self.training_panel.progress.show_progress(0, 1000, "preparing…")
        self.training_panel.progress.setToolTip("")  # the last run's kept weights no longer apply
        self._show_device()
        if self.advanced.live_preview.isChecked():
            self.preview_timer.start()

    def _on_training_progress(self, progress: TrainProgress) -> None:
        text = describe_progress(progress)
        self.training_panel.progress.show_progress(int(progress.fraction * 1000), 1000, text)
        self.session.runner.describe("train", f"training the U-Net on '{self.session.training_image}': {text}")
        curves = history_curves(list(self.session.segmenter.history))  # a copy: the worker appends to it
        run_start = curves.run_starts[-1] if curves.run_starts else 0
        self.training_panel.loss_plot.set_curves(curves, planned_end=run_start + progress.total_steps if progress.total_steps else None)

    def _on_training_finished(self) -> None:
        self.preview_timer.stop()
        self._set_training_controls(False)
        session, progress = self.session, self.training_panel.progress
        self.training_panel.loss_plot.set_curves(history_curves(list(session.segmenter.history)))
        self._show_model()
        last = session.last_progress
        if session.training_failed or last is None:
            progress.setFormat("training failed" if session.training_failed else "not trained")
        else:
            # Which weights the model kept (step 0 is the forest's answer for a new
            # model); the sentence and the held-out IoU go to the tooltip, as the bar
            # has room for one short line.
            summary = f"trained {last.step} steps in {format_seconds(last.elapsed)} — kept step {last.best_step}"
            progress.setFormat(("stopped: " if last.stopped else "") + summary)
            kept = last.kept()
            held_out = f" Last IoU on held-out strokes: {last.val_iou:.2f}." if last.val_iou is not None else ""
            progress.setToolTip(kept[0].upper() + kept[1:] + "." + held_out)
        self._update_image_options()
        self.training_finished.emit()

    def _on_model_changed(self) -> None:
        segmenter = self.session.segmenter
        if segmenter.history:
            self.training_panel.loss_plot.set_curves(history_curves(segmenter.history))
        else:
            self.training_panel.loss_plot.clear()
        self._on_evaluated(self.session.last_scores)  # scores of another model are forgotten
        self._show_model()
        trained = segmenter.is_trained
        self.training_panel.progress.show_progress(int(trained), 1, "model loaded" if trained else "not trained yet")
        self._update_image_options()

    def _on_prediction_started(self, whole: bool) -> None:
        if whole:
            self.prediction_panel.predict_button.setText("Cancel")
        self.prediction_panel.progress.show_progress(0, 0)  # busy until the first tile reports

    def _reset_predict_button(self) -> None:
        if not self.session.predicting_stack:
            self.prediction_panel.predict_button.setText("Predict")
            self.prediction_panel.predict_button.setEnabled(True)

    def _on_prediction_written(self) -> None:
        self._reset_predict_button()
        self.prediction_finished.emit()

    def _on_prediction_ended(self) -> None:
        self._reset_predict_button()
        self.prediction_panel.progress.show_progress(1, 1)

    def _on_suggestions(self, count: int) -> None:
        button = self.prediction_panel.next_region_button
        button.setEnabled(count > 0)
        button.setText(f"Next region ({count})" if count else "Next region")

    def _on_evaluated(self, scored: Scored | None) -> None:
        names = self.session.segmenter.names() if self.session.segmenter.config is not None else None
        self.evaluation_panel.scores.setText(describe_scores(scored, names) if scored is not None else "")
        self.training_panel.loss_plot.set_truth(*self.session.truth_points())

    def _on_export_finished(self, path: str) -> None:
        self.files_panel.bioimageio_button.setEnabled(True)
        self.export_finished.emit(path)

    def _show_model(self) -> None:
        self.training_panel.model_label.setText(f"Model: {self.session.describe_model()}")
        self._show_device()

    def _show_device(self, *_: Any) -> None:
        choice = self.advanced.device_name()
        try:
            wanted = describe_device(resolve_device(choice))
        except UserInputError:
            wanted = f"{choice} (not available here)"
        in_use = self.session.segmenter.device_label
        text = f"Device: {in_use}"
        if wanted != in_use and not self.session.is_training:
            text += f" → {wanted} from next run"
        self.training_panel.device_label.setText(text)

    # -- actions that also touch the controls ----------------------------------------------------
    def new_annotations(self) -> Labels | None:
        """Add (or select) the chosen image's annotations layer and choose it."""
        layer = self.session.new_annotations()
        if layer is not None:
            self.data_panel.annotations_combo.setCurrentText(layer.name)
        return layer

    def stop(self) -> None:
        """Ask the training to stop after the current step."""
        if self.session.is_training:
            self.session.stop()
            self.training_panel.stop_button.setEnabled(False)
            self.training_panel.progress.setFormat("stopping…")

    def predict(self) -> None:
        """Predict (or cancel the running whole-stack prediction)."""
        if self.session.predicting_stack:
            self.prediction_panel.predict_button.setEnabled(False)  # until the job has stopped
        else:
            self._show_device()
        self.session.predict()

    def open_images(self, paths) -> list[Image]:
        """Open TIFF files or folders as image layers and choose the last one."""
        added = self.session.open_images(paths)
        if added:
            self.data_panel.image_combo.setCurrentText(added[-1].name)
        return added

    # -- layer lists -----------------------------------------------------------------------------
    def _connect_viewer(self, connect: bool = True) -> None:
        events = self.viewer.layers.events
        for event, slot in ((events.inserted, self._on_layer_inserted), (events.removed, self.refresh_layer_choices), (events.moved, self.refresh_layer_choices)):
            (event.connect if connect else event.disconnect)(slot)
        current_step = self.viewer.dims.events.current_step
        (current_step.connect if connect else current_step.disconnect)(self._on_step_changed)
        for layer in self.viewer.layers:
            self._connect_layer(layer, connect)

    def _connect_layer(self, layer: Any, connect: bool = True) -> None:
        pairs = [(layer.events.name, self.refresh_layer_choices)]
        if isinstance(layer, Labels):  # painting changes what the next training sees
            pairs += [(layer.events.data, self.schedule_status)] + ([(layer.events.paint, self.schedule_status)] if hasattr(layer.events, "paint") else [])
        for event, slot in pairs:
            (event.connect if connect else event.disconnect)(slot)

    def _on_layer_inserted(self, event) -> None:
        self._connect_layer(event.value)
        self.refresh_layer_choices()

    def refresh_layer_choices(self, event=None) -> None:
        """Offer the viewer's image and label layers (never our prediction layers) in the lists."""
        if self.session.closing:
            return
        images, labels = self.session.layer_choices()
        image = _set_choices(self.data_panel.image_combo, images)
        _set_choices(self.data_panel.annotations_combo, labels, prefer=self.session.paired_name(image) if image else None)
        _set_choices(self.evaluation_panel.truth_combo, [NO_TRUTH, *labels])
        self.schedule_status()

    def _on_image_changed(self, name: str) -> None:
        # Pair the image with its annotations layer when there is one.
        paired = self.session.paired_name(name)
        if self.data_panel.annotations_combo.findText(paired) >= 0:
            self.data_panel.annotations_combo.setCurrentText(paired)
        self._update_image_options()

    def _update_image_options(self) -> None:
        """Channel-axis choices, the 3D option and the prediction scope for the chosen image."""
        layer = self.session.image_layer()
        ndim, has_z, planes = self.session.image_options()
        current = str(layer.metadata.get(CHANNEL_KEY, AUTO)) if layer is not None else AUTO
        self.advanced.set_channel_choices(ndim, current)
        self.advanced.model_3d.setEnabled(has_z)
        self.prediction_panel.scope.setEnabled(planes > 1)
        self.schedule_status()

    def _on_channel_axis_changed(self, choice: str) -> None:
        layer = self.session.image_layer()
        if layer is None:
            return
        layer.metadata[CHANNEL_KEY] = choice  # remembered per image (training on several images reads it)
        self._update_image_options()
        try:
            layer_axes(layer)
        except UserInputError as exc:
            self.session.notify("error", str(exc))

    def _on_step_changed(self, event=None) -> None:
        if not self.session.closing and self.prediction_panel.auto_predict.isChecked():
            self._follow_timer.start()

    def schedule_status(self, *_: Any) -> None:
        """Recount the painted planes shortly (painting sends many events)."""
        if not self.session.closing:
            self._status_timer.start()

    def update_training_status(self) -> None:
        """Say what the next training learns from: "Training on: 2 images, 5 painted planes"."""
        if self.session.closing:
            return
        self.data_panel.train_all.setEnabled(len(self.session.annotation_pairs()) > 1)
        self.data_panel.training_status.setText(self.session.training_status())

    # -- dialogs ---------------------------------------------------------------------------------
    def _open_files_dialog(self) -> None:
        paths, _ = QFileDialog.getOpenFileNames(self, "Open TIFF images", "", "TIFF images (*.tif *.tiff)")
        if paths:
            self.open_images(paths)

    def _open_folder_dialog(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Open a folder of TIFF images")
        if folder:
            self.open_images([folder])

    def _save_model_dialog(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Save model", "model.pt", "napari-unet model (*.pt)")
        if path:
            self.session.save_model(path)

    def _load_model_dialog(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Load model", "", "napari-unet model (*.pt);;All files (*)")
        if path:
            self.session.load_model(path)

    def _export_labels_dialog(self) -> None:
        which = self.files_panel.export_which.currentText()
        image = self.data_panel.image_combo.currentText() or "labels"
        path, _ = QFileDialog.getSaveFileName(self, f"Export {which} labels", f"{image}_{which}.tif", "TIFF (*.tif *.tiff)")
        if path:
            self.session.export_labels(path, which)

    def _export_bioimageio_dialog(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Export the model to bioimage.io", "model.zip", "bioimage.io model package (*.zip)")
        if path:
            self.session.export_bioimageio(path)

    # -- closing ---------------------------------------------------------------------------------
    def _watch_main_window(self) -> None:
        """Watch the main window this widget is docked in, to stop the jobs when it closes.

        Looked up through Qt parents (the viewer's window attribute is
        private in napari); called when the widget shows and before any job
        starts, by which time the widget is docked.
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
        """Stop the timers and the session's jobs and wait for them (viewer closing); safe to call twice."""
        if self.session.closing:
            return
        for timer in (self.preview_timer, self._postprocess_timer, self._follow_timer, self._status_timer):
            timer.stop()
        self.session.shutdown(timeout)
        if self._main_window is not None:
            self._main_window.removeEventFilter(self)
            self._main_window = None
        try:
            self._connect_viewer(connect=False)
        except (RuntimeError, AttributeError, TypeError, ValueError):  # the viewer is already half torn down
            pass


def _set_choices(combo: QComboBox, names: list[str], prefer: str | None = None) -> str:
    """Refill ``combo`` keeping the current choice when it still exists; returns the choice."""
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
