"""What a :class:`~napari_unet.plugin.session.Session` tells its listeners, and the requests and results it keeps."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from psygnal import Signal, SignalGroup

from napari_unet.core.jobs import Prediction
from napari_unet.io.axes import Planes
from napari_unet.plugin.result_layers import Target


class SessionEvents(SignalGroup):
    """What a session tells its listeners (all emitted on the main thread)."""

    #: A message for the user: (level "error" | "warning" | "info", text).
    notified = Signal(str, str)
    #: A training run started.
    training_started = Signal()
    #: Throttled training progress (a :class:`~napari_unet.core.training.TrainProgress`).
    training_progress = Signal(object)
    #: A training run ended (normally, stopped or failed); see ``last_progress`` / ``training_failed``.
    training_finished = Signal()
    #: The model says how small an object may be (pixels): it learned that from objects painted whole.
    min_size_suggested = Signal(int)
    #: The weights were replaced (trained, loaded or reset).
    model_changed = Signal()
    #: A prediction job started; True when it is a whole stack (cancellable).
    prediction_started = Signal(bool)
    #: Prediction progress as (done, total).
    prediction_progress = Signal(int, int)
    #: Prediction layers were written (also after a live preview).
    prediction_finished = Signal()
    #: A prediction job ended (written, cancelled or failed).
    prediction_ended = Signal()
    #: Prediction layers were rewritten after an instance-parameter change.
    postprocess_finished = Signal()
    #: A bioimage.io export started.
    export_started = Signal()
    #: A bioimage.io export ended: the package written, or "" after an error.
    export_finished = Signal(str)
    #: The layers offered as image / annotations changed (a result layer was added).
    choices_changed = Signal()
    #: New suggestions of where to paint next (how many regions).
    suggestions_changed = Signal(int)
    #: A predicted plane was scored against the truth layer: a :class:`~napari_unet.plugin.evaluation.Scored`
    #: (with the training step it belongs to), or None when there are no scores (no truth chosen).
    evaluated = Signal(object)


@dataclass(frozen=True)
class Request:
    """A prediction asked for: the image's layer name, the whole stack or the plane shown, and for a live preview the box in view."""

    name: str
    whole: bool = False
    view: tuple | None = None


@dataclass(frozen=True)
class Cached:
    """The last plane predicted: its probabilities, for re-post-processing without the network."""

    target: Target
    planes: Planes
    prediction: Prediction

    @property
    def probabilities(self) -> np.ndarray:
        return self.prediction.probabilities
