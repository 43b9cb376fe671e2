"""The work the widget runs off the GUI thread, as plain generators (no Qt).

The widget wraps these in napari thread workers; keeping them Qt-free
means the benchmark can run exactly the same loop without a viewer. They
only touch the data they are given (copies of the painted planes made on
the GUI thread, lazy :class:`~napari_unet.io.axes.Planes` views of image
layers whose pixels nobody edits) and a
:class:`~napari_unet.core.segmenter.Segmenter`; they never see a layer.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Generator, Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from napari_unet.core.inference import TileProgress
from napari_unet.core.live import StrokeFeed
from napari_unet.core.measure import StackMeasurements, measure_objects, plane_spacing
from napari_unet.core.postprocess import InstanceParams, postprocess, uncertainty_from_probabilities
from napari_unet.core.progress import forward, throttled
from napari_unet.core.segmenter import Segmenter
from napari_unet.core.stack import StackProgress, largest_id, painted_indices
from napari_unet.core.suggest import suggest_regions
from napari_unet.core.training import TrainConfig, TrainProgress
from napari_unet.io.axes import Planes, normalize_axes

#: Seconds between two progress reports sent to the GUI (about 4 a second).
PROGRESS_INTERVAL = 0.25


@dataclass(frozen=True)
class Prediction:
    """One plane (or volume) predicted: probabilities and what post-processing made of them.

    Attributes
    ----------
    probabilities : numpy.ndarray
        ``(n_classes, *spatial)`` float32.
    semantic, instances : numpy.ndarray
        ``(*spatial)`` uint8 classes and uint32 instance ids.
    params : InstanceParams
        The post-processing parameters used.
    index : tuple
        The plane's loop index in its :class:`Planes` (``()`` for a 2D image).
    id_offset : int
        Instance ids start after this (the largest id of the other planes),
        so ids stay unique across the stack.
    measurements : dict, optional
        One row per object of the plane (:mod:`napari_unet.core.measure`).
    uncertainty : numpy.ndarray, optional
        ``(*spatial)`` per-pixel uncertainty (:func:`~napari_unet.core.postprocess.uncertainty_from_probabilities`).
    suggestions : tuple of Region
        Where to paint next in this plane, best first (:func:`~napari_unet.core.suggest.suggest_regions`).
    """

    probabilities: np.ndarray
    semantic: np.ndarray
    instances: np.ndarray
    params: InstanceParams
    index: tuple = ()
    id_offset: int = 0
    measurements: dict | None = None
    uncertainty: np.ndarray | None = None
    suggestions: tuple = ()


@dataclass(frozen=True)
class StackPrediction:
    """A whole stack predicted into label-shaped arrays (in memory) or on-disk stores (paths)."""

    semantic: Any
    instances: Any
    params: InstanceParams
    paths: tuple[Path, Path] | None = None
    measurements: dict | None = None


@dataclass(frozen=True)
class TrainingSet:
    """What one training run learns from: painted planes (or volumes) of one or more images.

    Attributes
    ----------
    images : list
        ``(C, *spatial)`` arrays: copies, or lazy views of layers whose
        pixels nobody paints (read in the worker).
    annotations : list of numpy.ndarray
        ``(*spatial)`` copies of the painted annotation planes.
    sources : list of tuple
        ``(image name, painted planes)`` per image trained on.
    origins : list of tuple
        ``(image name, loop index)`` of each of ``images``: where strokes
        painted during the run belong (:mod:`napari_unet.core.live`).
    """

    images: list
    annotations: list
    sources: list
    origins: list = field(default_factory=list)

    @property
    def n_classes(self) -> int:
        """Classes the annotations ask for (annotation value k is class k - 1; at least 2)."""
        return max([2] + [int(np.max(a)) for a in self.annotations if a is not None])

    def describe(self, unit: str = "plane") -> str:
        """``"2 images, 5 painted planes"``."""
        images = len(self.sources)
        planes = sum(n for _, n in self.sources)
        return f"{images} image{'s' * (images != 1)}, {planes} painted {unit}{'s' * (planes != 1)}"


def painted_planes(planes: Planes, annotations: Any, copy_images: bool, indices: Sequence[tuple] | None = None) -> tuple[list, list]:
    """The planes of ``planes`` whose annotations have any painted pixel.

    Parameters
    ----------
    planes : Planes
        The image.
    annotations : array-like
        Label-shaped annotations (``planes.label_shape``).
    copy_images : bool
        Copy the image planes now (in-memory images); else keep lazy views,
        to be read by the training worker.
    indices : sequence of tuple, optional
        The painted planes' loop indices, when known (:func:`painted_indices`).

    Returns
    -------
    images, annotations : list
        ``(C, *spatial)`` image planes and copies of their ``(*spatial)`` annotations.
    """
    images, labels = [], []
    for index in painted_indices(planes, annotations) if indices is None else indices:
        image = planes.image(index)
        images.append(np.array(image, copy=True) if copy_images else image)
        labels.append(np.array(annotations[planes.label_index(index)], copy=True))
    return images, labels


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
    images: Sequence[Any] | np.ndarray,
    annotations: Sequence[np.ndarray] | np.ndarray,
    config: TrainConfig,
    stop: threading.Event,
    snapshot_request: threading.Event | None = None,
    interval: float = PROGRESS_INTERVAL,
    ndim: int = 2,
    strokes: StrokeFeed | None = None,
) -> Iterator[TrainProgress | Segmenter]:
    """Fine-tune ``segmenter``, yielding throttled progress (and snapshots on request).

    Parameters
    ----------
    segmenter : Segmenter
        Trained in place (fresh model on first use).
    images : array-like or sequence of them
        A 2D image, or ``(C, *spatial)`` planes/volumes (lazy ones are read here).
    annotations : numpy.ndarray or sequence of them
        Matching annotations (0 unlabeled, 1 background, 2.. classes).
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
    ndim : int
        Spatial dimensions of a fresh model: 2 (planes) or 3 (3D U-Net).
    strokes : StrokeFeed, optional
        Strokes painted while training runs (:mod:`napari_unet.core.live`).

    Yields
    ------
    TrainProgress or Segmenter
        Progress, the last one with ``done=True``; snapshots when requested.

    Raises
    ------
    UserInputError
        Bad annotations (none, a single class, wrong shape), on first advance.
    """
    if isinstance(images, (list, tuple)):
        images = [np.asarray(image) for image in images]  # lazy planes are read here, off the GUI thread
    # Only a 3D model needs the keyword: a 2D call stays exactly as before.
    steps = segmenter.train(images, annotations, config, stop=stop.is_set, strokes=strokes, **({"ndim": ndim} if ndim != 2 else {}))
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


def _as_planes(image: Any) -> Planes:
    return image if isinstance(image, Planes) else Planes(image, normalize_axes(None, tuple(image.shape)))


def predict_steps(
    segmenter: Segmenter,
    planes: Planes | Any,
    params: InstanceParams,
    cancel: threading.Event | None = None,
    index: tuple = (),
    instances: Any = None,
    tile: int | None = None,
    interval: float = PROGRESS_INTERVAL,
    scale: Sequence[float] | None = None,
    annotations: Any = None,
) -> Generator[TileProgress, None, Prediction | None]:
    """Predict one plane (or volume) tile by tile, yielding progress, and return a :class:`Prediction`.

    Parameters
    ----------
    segmenter : Segmenter
        A trained model (use a :func:`snapshot` if training may run meanwhile).
    planes : Planes or array-like
        The image (a plain 2D array is read as ``"YX"``); only plane ``index`` is read.
    params : InstanceParams
        Post-processing parameters for the returned labels.
    cancel : threading.Event, optional
        Checked between tiles; when set, the generator returns None.
    index : tuple
        Loop index of the plane (``()`` for a single plane).
    instances : array-like, optional
        The stack's current instance labels: the plane's ids start after the
        largest id of the other planes, so ids stay unique across the stack.
    tile : int, optional
        Tile side (engine default when None).
    interval : float
        Minimum seconds between two progress reports.
    scale : sequence of float, optional
        The label layers' scale (label axes order), for physical areas.
    annotations : array-like, optional
        Label-shaped strokes: painted regions rank lower in the suggestions.

    Returns
    -------
    Prediction or None
        As the generator's return value (the worker's ``returned`` signal),
        with the plane's objects measured.
    """
    planes = _as_planes(planes)
    index = tuple(index)
    offset = largest_id(instances, planes, skip=[index]) if instances is not None and len(planes) > 1 else 0
    spatial = tuple(planes.spatial_shape)
    probabilities = np.zeros((segmenter.config.n_classes,) + spatial, np.float32)
    semantic = np.zeros(spatial, np.uint8)
    labels = np.zeros(spatial, np.uint32)
    steps = segmenter.predict_plane(planes.image(index), semantic, labels, params, probabilities_out=probabilities, tile=tile, id_offset=offset)
    finished, _ = yield from forward(steps, interval, lambda p: p.done == p.total, cancel)
    if not finished:
        return None
    # Uncertainty and where to paint next are worked out here, off the GUI thread.
    uncertainty = uncertainty_from_probabilities(probabilities)
    strokes = np.asarray(annotations[planes.label_index(index)]) if annotations is not None else None
    prediction = Prediction(probabilities, semantic, labels, params, index, offset, None, uncertainty, tuple(suggest_regions(uncertainty, strokes)))
    return replace(prediction, measurements=measure_prediction(prediction, planes, segmenter.names(), scale))


@dataclass(frozen=True)
class Preview:
    """A live preview of the part of a plane in view: semantic labels in a box.

    Attributes
    ----------
    index : tuple
        Loop index of the plane.
    box : tuple of slice
        The plane's spatial box the labels cover.
    semantic : numpy.ndarray
        Semantic labels of the box.
    """

    index: tuple
    box: tuple
    semantic: np.ndarray


def preview_steps(
    segmenter: Segmenter,
    planes: Planes | Any,
    params: InstanceParams,
    index: tuple,
    box: tuple,
    cancel: threading.Event | None = None,
    interval: float = PROGRESS_INTERVAL,
    margin: int = 32,
) -> Generator[TileProgress, None, Preview | None]:
    """Predict the semantic labels of one box of a plane (a live preview of the part in view).

    Cheaper than :func:`predict_steps` in proportion to the box: only the
    box and ``margin`` pixels of context around it go through the network,
    and neither instances, uncertainty nor measurements are worked out
    (they come with the full prediction after training).

    Parameters
    ----------
    segmenter : Segmenter
        A :func:`snapshot` of the training model.
    planes : Planes or array-like
        The image; only the box of plane ``index`` is read.
    params : InstanceParams
        For the threshold.
    index : tuple
        Loop index of the plane.
    box : tuple of slice
        Spatial box of the plane.
    cancel : threading.Event, optional
        Checked between tiles; when set, the generator returns None.
    interval : float
        Minimum seconds between two progress reports.
    margin : int
        Pixels of context predicted around the box and then dropped.

    Returns
    -------
    Preview or None
    """
    planes = _as_planes(planes)
    index = tuple(index)
    grown = tuple(slice(max(s.start - margin, 0), min(s.stop + margin, n)) for s, n in zip(box, planes.spatial_shape))
    image = np.asarray(planes.image(index)[(slice(None), *grown)])
    semantic = np.zeros(image.shape[1:], np.uint8)
    steps = segmenter.predict_plane(image, semantic, None, params)
    finished, _ = yield from forward(steps, interval, lambda p: p.done == p.total, cancel)
    if not finished:
        return None
    inner = tuple(slice(s.start - g.start, s.stop - g.start) for s, g in zip(box, grown))
    return Preview(index, tuple(box), semantic[inner].copy())


def measure_prediction(prediction: Prediction, planes: Planes, class_names: Sequence[str], scale: Sequence[float] | None = None) -> dict:
    """One row per object of a predicted plane (:func:`~napari_unet.core.measure.measure_objects`)."""
    spacing = plane_spacing(scale, planes.label_axes, planes.spatial_axes)
    return measure_objects(
        prediction.instances,
        prediction.semantic,
        np.asarray(planes.image(prediction.index)),
        class_names,
        probabilities=prediction.probabilities,
        spacing=spacing,
        plane=dict(zip(planes.loop_axes.lower(), prediction.index)),
    )


class _Cancelled(Exception):
    """Raised inside the output stores' context so cancelled files are removed."""


def predict_stack_steps(
    segmenter: Segmenter,
    planes: Planes,
    params: InstanceParams,
    cancel: threading.Event | None = None,
    store_dir: str | Path | None = None,
    tile: int | None = None,
    interval: float = PROGRESS_INTERVAL,
    scale: Sequence[float] | None = None,
) -> Generator[StackProgress, None, StackPrediction | None]:
    """Predict every plane (or volume) of a stack, yielding throttled :class:`StackProgress`.

    Parameters
    ----------
    segmenter : Segmenter
        A trained model.
    planes : Planes
        The image, read plane by plane (lazy images stay lazy).
    params : InstanceParams
        Post-processing parameters.
    cancel : threading.Event, optional
        Checked between tiles; when set, returns None (store files removed).
    store_dir : str or Path, optional
        Write ``semantic.zarr`` and ``instances.zarr`` there instead of
        label-shaped numpy arrays (results larger than memory).
    tile : int, optional
        Tile side (engine default when None).
    interval : float
        Minimum seconds between two progress reports.
    scale : sequence of float, optional
        The label layers' scale, for physical areas.

    Returns
    -------
    StackPrediction or None
        With every plane's objects measured as the plane was predicted.
    """
    shape = tuple(planes.label_shape)
    is_final = lambda p: p.plane == p.planes  # noqa: E731
    if store_dir is None:
        semantic = np.zeros(shape, np.uint8)
        instances = np.zeros(shape, np.uint32)
        measure = StackMeasurements(planes, semantic, instances, segmenter.names(), scale)
        steps = segmenter.predict_stack(planes, semantic, instances, params, tile=tile, plane_done=measure)
        finished, _ = yield from forward(steps, interval, is_final, cancel)
        return StackPrediction(semantic, instances, params, measurements=measure.table()) if finished else None

    from napari_unet.io.stores import default_chunks, open_output

    store_dir = Path(store_dir)
    store_dir.mkdir(parents=True, exist_ok=True)
    paths = (store_dir / "semantic.zarr", store_dir / "instances.zarr")
    try:
        with ExitStack() as stack:
            semantic = stack.enter_context(open_output(paths[0], shape, np.uint8, chunks=default_chunks(shape, planes.spatial_ndim), durable=False))
            instances = stack.enter_context(open_output(paths[1], shape, np.uint32, chunks=default_chunks(shape, planes.spatial_ndim), durable=False))
            measure = StackMeasurements(planes, semantic, instances, segmenter.names(), scale)
            steps = segmenter.predict_stack(planes, semantic, instances, params, tile=tile, plane_done=measure)
            finished, _ = yield from forward(steps, interval, is_final, cancel)
            if not finished:
                raise _Cancelled  # the stores discard their temporaries
    except _Cancelled:
        return None
    return StackPrediction(None, None, params, paths, measurements=measure.table())


def repostprocess(
    prediction: Prediction,
    params: InstanceParams,
    planes: Planes | None = None,
    class_names: Sequence[str] | None = None,
    scale: Sequence[float] | None = None,
) -> Prediction:
    """Post-process a plane's cached probabilities again with new parameters (no network).

    With ``planes`` (the image) and ``class_names`` the new objects are
    measured again; otherwise the result has no measurements.
    """
    semantic, instances = postprocess(prediction.probabilities, params)
    instances = instances.astype(np.uint32)
    if prediction.id_offset:
        instances[instances > 0] += np.uint32(prediction.id_offset)
    result = replace(prediction, semantic=semantic, instances=instances, params=params, measurements=None)
    if planes is not None and class_names is not None:
        result = replace(result, measurements=measure_prediction(result, planes, class_names, scale))
    return result
