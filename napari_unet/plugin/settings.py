"""What the user chose in the widget, as one value the session reads (no Qt)."""

from __future__ import annotations

from dataclasses import dataclass, field

from napari_unet.core.postprocess import InstanceParams
from napari_unet.core.training import TrainConfig


@dataclass(frozen=True)
class Settings:
    """The widget's choices; the session reads a fresh copy for every action.

    Attributes
    ----------
    image, annotations : str
        Names of the chosen image and annotations layers ("" for none).
    train_all : bool
        Also train on every other image with an annotations layer of its own.
    device : str
        auto, cpu, cuda or mps.
    ndim : int
        2, or 3 for a fresh 3D U-Net (chosen, and possible for the image).
    depth, width : int or None
        Size of a fresh model; None: the device's default.
    steps, max_time, patch_size, batch_size, learning_rate, whole_objects
        Training settings (see :class:`~napari_unet.core.training.TrainConfig`).
    results_dir : str or None
        Folder for results too large for memory; None: a temporary one.
    live_preview : bool
        Predict every few seconds while training.
    auto_predict : bool
        Predict when training ends, and the plane shown when the slider moves.
    show_probabilities, show_uncertainty : bool
        Also write the object probability / the per-pixel uncertainty as image layers.
    whole_stack : bool
        Predict every plane of a stack (else the plane shown).
    instance_params : InstanceParams
        Post-processing parameters.
    export_measurements : bool
        Exporting instances also writes their measurements (CSV).
    truth : str
        Name of the Labels layer each predicted plane is scored against
        ("" for none; see :mod:`napari_unet.plugin.evaluation`).
    """

    image: str = ""
    annotations: str = ""
    train_all: bool = True
    device: str = "auto"
    ndim: int = 2
    depth: int | None = None
    width: int | None = None
    steps: int | None = TrainConfig.steps
    max_time: float | None = None
    patch_size: int = TrainConfig.patch_size
    batch_size: int = TrainConfig.batch_size
    learning_rate: float | None = None
    whole_objects: bool = TrainConfig.whole_objects
    results_dir: str | None = None
    live_preview: bool = False
    auto_predict: bool = True
    show_probabilities: bool = False
    show_uncertainty: bool = False
    whole_stack: bool = False
    instance_params: InstanceParams = field(default_factory=InstanceParams)
    export_measurements: bool = True
    truth: str = ""

    def train_config(self, seed: int | None = None) -> TrainConfig:
        """The training settings as a :class:`TrainConfig`.

        Raises
        ------
        UserInputError
            If the values do not make a valid configuration.
        """
        return TrainConfig(
            steps=self.steps,
            max_time=self.max_time,
            patch_size=self.patch_size,
            batch_size=self.batch_size,
            learning_rate=self.learning_rate,
            seed=seed,
            whole_objects=self.whole_objects,
        )

    def maps(self) -> tuple[str, ...]:
        """The per-pixel maps to show with each prediction ("probability", "uncertainty")."""
        return tuple(name for name, shown in (("probability", self.show_probabilities), ("uncertainty", self.show_uncertainty)) if shown)
