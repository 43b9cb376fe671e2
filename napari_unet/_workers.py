"""The work the widget runs off the GUI thread, as plain generators (no Qt).

The widget wraps these in napari thread workers; keeping them Qt-free
means the benchmark can run exactly the same loop without a viewer. They
only touch the data they are given (copies made on the GUI thread) and a
:class:`~napari_unet.core.segmenter.Segmenter`; they never see a layer.
"""

from __future__ import annotations

import copy
import threading
from dataclasses import dataclass
from typing import Iterator

import numpy as np

from napari_unet.core.inference import TileProgress
from napari_unet.core.postprocess import InstanceParams, postprocess
from napari_unet.core.segmenter import Segmenter
from napari_unet.core.throttle import throttled
from napari_unet.core.training import TrainConfig, TrainProgress

#: Seconds between two progress reports sent to the GUI (about 4 a second).
PROGRESS_INTERVAL = 0.25


@dataclass(frozen=True)
class Prediction:
    """Probabilities of one image and what post-processing made of them."""

    probabilities: np.ndarray
    semantic: np.ndarray
    instances: np.ndarray
    params: InstanceParams


def snapshot(segmenter: Segmenter) -> Segmenter:
    """A copy of ``segmenter`` whose model training cannot change underneath it.

    Call it from the thread that trains (between two steps) or while no
    training runs; predicting on the copy can then overlap a training run.
    """
    clone = copy.copy(segmenter)
    if segmenter.model is not None:
        clone.model = copy.deepcopy(segmenter.model).eval()
    clone.history = list(segmenter.history)
    return clone


def train_steps(
    segmenter: Segmenter,
    image: np.ndarray,
    annotations: np.ndarray,
    config: TrainConfig,
    stop: threading.Event,
    snapshot_request: threading.Event | None = None,
    interval: float = PROGRESS_INTERVAL,
) -> Iterator[TrainProgress | Segmenter]:
    """Fine-tune ``segmenter``, yielding throttled progress (and snapshots on request).

    Parameters
    ----------
    segmenter : Segmenter
        Trained in place (fresh model on first use).
    image, annotations : numpy.ndarray
        2D image and its annotations (0 unlabeled, 1 background, 2.. classes).
    config : TrainConfig
        Budget and hyper-parameters.
    stop : threading.Event
        Set it to stop after the current step; the best weights are kept.
    snapshot_request : threading.Event, optional
        When set, a :func:`snapshot` of the model is yielded after the next
        report (for a live preview) and the event is cleared.
    interval : float
        Minimum seconds between two progress reports: one report per step
        would flood the Qt event loop on a GPU.

    Yields
    ------
    TrainProgress or Segmenter
        Progress, the last one with ``done=True``; snapshots when requested.

    Raises
    ------
    UserInputError
        Bad annotations (none, a single class, wrong shape), on first advance.
    """
    steps = segmenter.train(image, annotations, config, stop=stop.is_set)
    try:
        for progress in throttled(steps, interval, is_final=lambda p: p.done):
            yield progress
            if snapshot_request is not None and snapshot_request.is_set() and not progress.done:
                snapshot_request.clear()
                yield snapshot(segmenter)
    finally:
        # Closing the engine's generator restores its best weights even if
        # this generator is abandoned half-way.
        steps.close()


def predict_steps(
    segmenter: Segmenter,
    image: np.ndarray,
    params: InstanceParams,
    cancel: threading.Event | None = None,
) -> Iterator[TileProgress]:
    """Predict ``image`` tile by tile, yielding progress, and return a :class:`Prediction`.

    Parameters
    ----------
    segmenter : Segmenter
        A trained model (use a :func:`snapshot` if training may run meanwhile).
    image : numpy.ndarray
        2D image.
    params : InstanceParams
        Post-processing parameters for the returned labels.
    cancel : threading.Event, optional
        Checked between tiles; when set, the generator returns None.

    Returns
    -------
    Prediction or None
        As the generator's return value (the worker's ``returned`` signal).
    """
    probabilities = None
    for item in segmenter.iter_predict(image):
        if isinstance(item, TileProgress):
            yield item
            if cancel is not None and cancel.is_set():
                return None
        else:
            probabilities = item
    semantic, instances = postprocess(probabilities, params)
    return Prediction(probabilities, semantic, instances, params)


def repostprocess(probabilities: np.ndarray, params: InstanceParams) -> Prediction:
    """Post-process cached probabilities again with new parameters (no network)."""
    semantic, instances = postprocess(probabilities, params)
    return Prediction(probabilities, semantic, instances, params)
