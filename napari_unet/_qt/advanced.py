"""The "Advanced" settings of the dock widget: device, architecture, training budget, axes, outputs.

Turns its spin boxes into engine objects (:class:`TrainConfig`, a device
name, an optional depth/width, a channel-axis choice, a 2D/3D model, a
folder for large results) so the widget never parses numbers itself.
"""

from __future__ import annotations

from qtpy.QtCore import Signal
from qtpy.QtWidgets import QCheckBox, QComboBox, QDoubleSpinBox, QFileDialog, QFormLayout, QHBoxLayout, QLineEdit, QPushButton, QSpinBox, QWidget

from napari_unet.core.device import DEVICE_CHOICES
from napari_unet.core.training import TrainConfig

AUTO = "auto"
#: Channel-axis choice: no channel axis (every axis is a plane/stack axis).
NO_CHANNEL = "none"


class AdvancedSettings(QWidget):
    """Device, U-Net size, patch/batch size, learning rate, budget and live preview.

    Signals
    -------
    device_changed(str)
        The device choice changed (applied at the next training/prediction).
    """

    device_changed = Signal(str)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        form = QFormLayout(self)
        form.setContentsMargins(4, 4, 4, 4)
        form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)

        self.device = QComboBox()
        self.device.addItems(DEVICE_CHOICES)
        self.device.setToolTip("Where to train and predict; applied when the next training or prediction starts.")
        self.device.currentTextChanged.connect(self.device_changed)
        form.addRow("Device", self.device)

        # The minimum value of each spin box stands for "auto" (engine default for the device).
        self.depth = QSpinBox()
        self.depth.setRange(1, 6)
        self.depth.setSpecialValueText(AUTO)
        self.depth.setToolTip("U-Net levels (auto: 3 on CPU, 4 on GPU). Applies to a fresh model: press Reset model.")
        self.width = QSpinBox()
        self.width.setRange(0, 128)
        self.width.setSingleStep(8)
        self.width.setSpecialValueText(AUTO)
        self.width.setToolTip("Feature channels of the first level (auto: 16 on CPU, 32 on GPU). Applies to a fresh model.")
        arch = QHBoxLayout()
        arch.addWidget(self.depth)
        arch.addWidget(self.width)
        form.addRow("Depth / width", arch)

        self.patch_size = QSpinBox()
        self.patch_size.setRange(16, 1024)
        self.patch_size.setSingleStep(16)
        self.patch_size.setValue(TrainConfig.patch_size)
        self.patch_size.setToolTip("Side of the square training patches, in pixels.")
        self.batch_size = QSpinBox()
        self.batch_size.setRange(1, 128)
        self.batch_size.setValue(TrainConfig.batch_size)
        self.batch_size.setToolTip("Patches per training step.")
        patches = QHBoxLayout()
        patches.addWidget(self.patch_size)
        patches.addWidget(self.batch_size)
        form.addRow("Patch / batch", patches)

        self.learning_rate = QDoubleSpinBox()
        self.learning_rate.setDecimals(5)
        self.learning_rate.setRange(0.0, 1.0)
        self.learning_rate.setSingleStep(5e-4)
        # 0 shows as "auto": the engine's default for the model (TrainConfig.learning_rate).
        self.learning_rate.setSpecialValueText("auto")
        self.learning_rate.setValue(0.0)
        self.learning_rate.setToolTip("auto: 1e-3 for a model with its random forest (the default), 3e-3 for a plain U-Net.")
        form.addRow("Learning rate", self.learning_rate)

        self.budget = QSpinBox()
        self.budget.setRange(1, 1_000_000)
        self.budget.setValue(TrainConfig.steps)
        self.budget_unit = QComboBox()
        self.budget_unit.addItems(["steps", "seconds"])
        self.budget_unit.setToolTip("Train for a number of steps or for a time.")
        budget = QHBoxLayout()
        budget.addWidget(self.budget)
        budget.addWidget(self.budget_unit)
        form.addRow("Budget", budget)

        self.whole_objects = QCheckBox("Objects are painted whole")
        self.whole_objects.setChecked(TrainConfig.whole_objects)
        self.whole_objects.setToolTip(
            "Tick when you paint objects whole, up to their outline, and background only away from them: "
            "the pixels right around each painted object are then taken as background, so the model learns "
            "where objects end. Leave unticked when you paint inside objects (cores, scribbles)."
        )
        form.addRow(self.whole_objects)

        self.live_preview = QCheckBox("Live preview while training")
        self.live_preview.setToolTip(
            "Every few seconds, predict the part of the plane in view with the current weights, to watch strokes painted "
            "while training take hold (slows CPU training a little)."
        )
        form.addRow(self.live_preview)

        self.channel_axis = QComboBox()
        self.channel_axis.setToolTip(
            "Which axis of the image holds its channels. auto: the file's axes, RGB colours, else none. "
            "Stored with the image layer."
        )
        self.set_channel_choices(2)
        form.addRow("Channel axis", self.channel_axis)

        self.model_3d = QCheckBox("3D U-Net (volumes)")
        self.model_3d.setToolTip(
            "Train and predict whole Z volumes with a 3D U-Net (images with a Z axis; on by default there). "
            "Off: a 2D U-Net applied plane by plane, whose objects are still joined across planes. "
            "Applies to a fresh model: press Reset model."
        )
        # Checked, and enabled only for images with a Z axis: Z stacks get a 3D
        # model unless the user says otherwise (as the command line does).
        self.model_3d.setChecked(True)
        self.model_3d.setEnabled(False)
        form.addRow(self.model_3d)

        self.results_folder = QLineEdit()
        self.results_folder.setPlaceholderText("temporary folder")
        self.results_folder.setToolTip(
            "Where predictions too large for memory are written (zarr stores); a temporary folder when empty."
        )
        self.results_browse = QPushButton("…")
        self.results_browse.setMaximumWidth(30)
        self.results_browse.clicked.connect(self._choose_results_folder)
        folder = QHBoxLayout()
        folder.addWidget(self.results_folder, 1)
        folder.addWidget(self.results_browse)
        form.addRow("Large results", folder)

    def _choose_results_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Folder for large prediction results")
        if folder:
            self.results_folder.setText(folder)

    def set_channel_choices(self, ndim: int, current: str = AUTO) -> None:
        """Offer auto, none and the axis numbers of an ``ndim``-dimensional image (signals blocked)."""
        self.channel_axis.blockSignals(True)
        self.channel_axis.clear()
        self.channel_axis.addItems([AUTO, NO_CHANNEL] + [str(i) for i in range(ndim)])
        self.channel_axis.setCurrentText(current if self.channel_axis.findText(current) >= 0 else AUTO)
        self.channel_axis.blockSignals(False)

    def spatial_ndim(self) -> int:
        """3 when the 3D U-Net is chosen (and possible), else 2."""
        return 3 if self.model_3d.isEnabled() and self.model_3d.isChecked() else 2

    def results_dir(self) -> str | None:
        """The chosen folder for large results, or None for a temporary one."""
        return self.results_folder.text().strip() or None

    # -- values ----------------------------------------------------------------
    def device_name(self) -> str:
        """The chosen device: auto, cpu, cuda or mps."""
        return self.device.currentText()

    def architecture(self) -> tuple[int | None, int | None]:
        """Depth and width for a fresh model; None means the device's default."""
        depth = self.depth.value()
        width = self.width.value()
        return (None if depth == self.depth.minimum() else depth, None if width == self.width.minimum() else width)

    def train_config(self, seed: int | None = None) -> TrainConfig:
        """The training settings as a :class:`TrainConfig`.

        Raises
        ------
        UserInputError
            If the values do not make a valid configuration.
        """
        by_time = self.budget_unit.currentText() == "seconds"
        return TrainConfig(
            steps=None if by_time else self.budget.value(),
            max_time=float(self.budget.value()) if by_time else None,
            patch_size=self.patch_size.value(),
            batch_size=self.batch_size.value(),
            learning_rate=self.learning_rate.value() or None,
            seed=seed,
            whole_objects=self.whole_objects.isChecked(),
        )
