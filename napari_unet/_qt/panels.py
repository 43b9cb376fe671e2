"""The dock widget's sections as plain Qt group boxes: controls only, no behaviour.

:class:`~napari_unet._qt.widget.UNetWidget` lays these out and connects
their buttons; keeping construction here keeps the widget's file about
what the buttons *do*.
"""

from __future__ import annotations

from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QMenu,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)
from superqt import QLabeledDoubleSlider

from napari_unet._qt.loss_plot import LossPlot
from napari_unet._qt.progress_bar import ProgressBar
from napari_unet.core.postprocess import InstanceParams
from napari_unet.plugin.colormaps import class_color
from napari_unet.plugin.evaluation import NO_TRUTH

#: Prediction scopes of a stack.
CURRENT_PLANE, WHOLE_STACK = "current plane", "whole stack"


def _checkbox(text: str, tooltip: str, checked: bool = True) -> QCheckBox:
    """A checkbox with its tooltip, checked by default."""
    box = QCheckBox(text)
    box.setChecked(checked)
    box.setToolTip(tooltip)
    return box


def _row(*widgets: QWidget, stretch_first: bool = False) -> QHBoxLayout:
    row = QHBoxLayout()
    for i, widget in enumerate(widgets):
        row.addWidget(widget, 1 if stretch_first and i == 0 else 0)
    return row


def _form(parent: QWidget | None = None) -> QFormLayout:
    form = QFormLayout(parent)
    form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
    return form


class DataPanel(QGroupBox):
    """Image and annotations choosers, "Open…" and "New" buttons, the label legend."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__("Data", parent)
        form = _form(self)
        self.image_combo = QComboBox()
        self.image_combo.setToolTip("The image to train on and predict: 2D, a (T)(Z)YX stack, multichannel or RGB.")
        self.open_button = QPushButton("Open…")
        self.open_button.setToolTip("Add TIFF images (files or a whole folder) as image layers.")
        self.open_menu = QMenu(self.open_button)
        self.open_button.setMenu(self.open_menu)
        form.addRow("Image", _row(self.image_combo, self.open_button, stretch_first=True))

        self.annotations_combo = QComboBox()
        self.annotations_combo.setToolTip("The Labels layer you paint: 0 unlabeled, 1 background, 2.. object classes.")
        self.new_annotations_button = QPushButton("New")
        self.new_annotations_button.setToolTip("Add an empty annotations layer for the image, ready to paint background (1).")
        form.addRow("Annotations", _row(self.annotations_combo, self.new_annotations_button, stretch_first=True))
        hint = QLabel(
            f"<span style='color:{class_color(1)}'>■</span> 1 = background, "
            f"<span style='color:{class_color(2)}'>■</span> 2+ = objects; 0 erases"
        )
        hint.setTextFormat(Qt.TextFormat.RichText)
        form.addRow(hint)
        self.train_all = _checkbox(
            "Train on all annotated images",
            "Also train on every other image layer with its own painted annotations layer (made with New, or named '<image> annotations').",
        )
        form.addRow(self.train_all)
        self.training_status = QLabel("Training on: nothing painted yet")
        self.training_status.setWordWrap(True)
        self.training_status.setToolTip("The images and painted planes the next training learns from.")
        form.addRow(self.training_status)


class TrainingPanel(QGroupBox):
    """Train / Stop / Reset, progress, device and model labels, the live loss plot."""

    def __init__(self, background: str, foreground: str, parent: QWidget | None = None) -> None:
        super().__init__("Training", parent)
        layout = QVBoxLayout(self)
        self.train_button = QPushButton("Train")
        self.train_button.setToolTip("Fine-tune the current model on the painted annotations (a fresh model the first time).")
        self.stop_button = QPushButton("Stop")
        self.stop_button.setToolTip("Stop after the current step and keep the best weights so far.")
        self.stop_button.setEnabled(False)
        self.reset_button = QPushButton("Reset model")
        self.reset_button.setToolTip("Forget the weights: the next training starts from scratch (with the Advanced depth/width).")
        layout.addLayout(_row(self.train_button, self.stop_button, self.reset_button))
        self.progress = ProgressBar()
        self.progress.setTextVisible(True)
        self.progress.show_progress(0, 1, "not trained yet")
        layout.addWidget(self.progress)
        self.device_label = QLabel()
        self.model_label = QLabel()
        self.model_label.setWordWrap(True)
        layout.addWidget(self.device_label)
        layout.addWidget(self.model_label)
        self.loss_plot = LossPlot(background=background, foreground=foreground)
        layout.addWidget(self.loss_plot)


class PredictionPanel(QGroupBox):
    """Predict, its options and progress, and the instance (post-processing) parameters."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__("Prediction", parent)
        layout = QVBoxLayout(self)
        self.predict_button = QPushButton("Predict")
        self.predict_button.setToolTip("Segment the image with the current model (writes '<image> semantic' and '<image> instances').")
        self.auto_predict = QCheckBox("after training")
        self.auto_predict.setChecked(True)
        self.auto_predict.setToolTip("Predict the image automatically when a training run ends.")
        self.show_probabilities = QCheckBox("probabilities")
        self.show_probabilities.setToolTip("Also show the object probability as an image layer.")
        self.show_uncertainty = QCheckBox("uncertainty")
        self.show_uncertainty.setToolTip(
            "Also show where the model is unsure (1 - the margin between its two most likely classes, "
            "spread a couple of pixels around): bright where a stroke would help most."
        )
        layout.addLayout(_row(self.predict_button, self.auto_predict))
        self.next_region_button = QPushButton("Next region")
        self.next_region_button.setToolTip(
            "Go to where the model is least sure in the plane last predicted (regions already painted come last), "
            "ready to paint: the stroke that helps most. Press again for the next one."
        )
        self.next_region_button.setEnabled(False)  # until a prediction gives suggestions
        layout.addLayout(_row(self.show_probabilities, self.show_uncertainty, self.next_region_button))
        self.scope = QComboBox()
        self.scope.addItems([CURRENT_PLANE, WHOLE_STACK])
        self.scope.setToolTip(
            "Current plane: predict the plane shown (follows the slider when 'after training' is on). "
            "Whole stack: predict every plane, with progress."
        )
        self.scope.setEnabled(False)  # enabled for images with more than one plane
        form_scope = _form()
        form_scope.addRow("Predict", self.scope)
        layout.addLayout(form_scope)
        self.progress = ProgressBar()
        self.progress.setMaximumHeight(10)
        self.progress.setTextVisible(False)
        self.progress.show_progress(0, 1)
        layout.addWidget(self.progress)

        defaults = InstanceParams()
        form = _form()
        self.threshold = QLabeledDoubleSlider(Qt.Orientation.Horizontal)
        self.threshold.setRange(0.05, 0.95)
        self.threshold.setSingleStep(0.05)
        self.threshold.setValue(defaults.threshold)
        self.threshold.setToolTip("A pixel is an object when its object probability reaches this.")
        self.min_size = QSpinBox()
        self.min_size.setRange(0, 1_000_000)
        self.min_size.setValue(defaults.min_size)
        self.min_size.setSuffix(" px")
        self.min_size.setToolTip("Objects smaller than this are dropped from the instances.")
        self.split_strength = QLabeledDoubleSlider(Qt.Orientation.Horizontal)
        self.split_strength.setRange(0.0, 1.0)
        self.split_strength.setSingleStep(0.05)
        self.split_strength.setValue(defaults.split_strength)
        self.split_strength.setToolTip("0 keeps touching objects together; towards 1 they are split more readily. Cells that tile the image (membranes, EM: judged on the forest's answer when the model trains) are parted at their cores at any value above 0.")
        form.addRow("Threshold", self.threshold)
        form.addRow("Min size", self.min_size)
        form.addRow("Split", self.split_strength)
        layout.addLayout(form)

    def instance_params(self) -> InstanceParams:
        """The post-processing parameters as set (rounded: sliders give float noise)."""
        return InstanceParams(
            threshold=round(self.threshold.value(), 3),
            min_size=self.min_size.value(),
            split_strength=round(self.split_strength.value(), 3),
        )


class EvaluationPanel(QGroupBox):
    """The truth layer to score each prediction against, and the latest scores."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__("Evaluation", parent)
        form = _form(self)
        self.truth_combo = QComboBox()
        self.truth_combo.addItem(NO_TRUTH)
        self.truth_combo.setToolTip(
            "A Labels layer holding the right answer (instance ids, or classes for a multi-class model): "
            "each predicted plane is scored against its same plane, and the F1 is plotted at the training step."
        )
        form.addRow("Truth", self.truth_combo)
        self.scores = QLabel("")
        self.scores.setWordWrap(True)
        self.scores.setToolTip(
            "Against the truth's plane: object F1 at IoU 0.5 and averaged over IoU 0.5:0.95; true objects missed, "
            "predicted objects matching none, true objects split in pieces, predicted objects merging several; "
            "foreground IoU (and per-class IoU when scored as classes)."
        )
        form.addRow(self.scores)

    def truth(self) -> str:
        """The chosen truth layer's name ("" for none)."""
        text = self.truth_combo.currentText()
        return "" if text == NO_TRUTH else text


class FilesPanel(QGroupBox):
    """Save / load model and export labels buttons."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__("Files", parent)
        layout = QVBoxLayout(self)
        self.save_button = QPushButton("Save model…")
        self.load_button = QPushButton("Load model…")
        layout.addLayout(_row(self.save_button, self.load_button))
        self.export_which = QComboBox()
        self.export_which.addItems(["instances", "semantic"])
        self.export_button = QPushButton("Export labels…")
        self.export_button.setToolTip("Save the image's predicted labels as a TIFF.")
        layout.addLayout(_row(self.export_which, self.export_button))
        self.export_measurements = _checkbox(
            "with measurements (CSV)",
            "Exporting instances also writes <name>_objects.csv beside the TIFF: one row per object (the instance layer's features table).",
        )
        layout.addWidget(self.export_measurements)
        self.bioimageio_button = QPushButton("Export to bioimage.io…")
        self.bioimageio_button.setToolTip(
            "Write the model as a bioimage.io package (.zip) for Fiji/deepImageJ, ilastik, QuPath or "
            "bioimageio.core; the plane shown becomes its test image."
        )
        layout.addWidget(self.bioimageio_button)
