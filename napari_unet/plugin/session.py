"""The widget's session without Qt: paint -> train -> predict -> correct -> export.

:class:`Session` holds what an interactive segmentation needs between two
clicks: the :class:`~napari_unet.core.segmenter.Segmenter`, what the last
training learned from, requests waiting for a running job, the last plane's
probabilities (to post-process again without the network) and which planes
were predicted. It reads layers and the user's :class:`Settings`, runs the
slow work through a :class:`~napari_unet.plugin.runner.Runner` (napari
thread workers in the widget, :class:`~napari_unet.plugin.runner.InlineRunner`
in tests), writes results into layers on the main thread and tells
listeners what happened through psygnal :class:`SessionEvents`. The widget
(:mod:`napari_unet._qt.widget`) only wires buttons and timers to it.

Images may be 2D, (T)(Z)YX stacks, multichannel or RGB, several image
layers, and lazy (dask, zarr, multiscale) layers: each image layer is read
through a lazy :class:`~napari_unet.io.axes.Planes` view, so prediction
never materialises a whole stack.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Callable
from typing import Any

from napari.layers import Image, Labels
from napari.utils.notifications import show_error, show_info, show_warning

from napari_unet.core.device import resolve_device
from napari_unet.core.implied import whole_objects_hint
from napari_unet.core.inference import TileProgress
from napari_unet.core.jobs import (
    Prediction,
    Preview,
    StackPrediction,
    TrainingSet,
    predict_stack_steps,
    predict_steps,
    preview_steps,
    repostprocess,
    snapshot,
    train_steps,
)
from napari_unet.core.live import StrokeFeed
from napari_unet.core.model import default_config
from napari_unet.core.postprocess import InstanceParams
from napari_unet.core.segmenter import Segmenter, channel_mismatch
from napari_unet.core.stack import StackProgress
from napari_unet.core.training import TrainProgress
from napari_unet.errors import UserInputError
from napari_unet.io.axes import Planes
from napari_unet.plugin import annotations as pairs
from napari_unet.plugin.evaluation import TruthEvaluation
from napari_unet.plugin.events import Cached, Request, SessionEvents
from napari_unet.plugin.live_strokes import StrokeWatcher
from napari_unet.plugin.model_files import ModelFiles
from napari_unet.plugin.result_layers import Target, channel_misaligned, find_layer, image_planes, layer_axes, shown_index
from napari_unet.plugin.results import ResultLayers
from napari_unet.plugin.runner import Handlers, InlineRunner, Runner
from napari_unet.plugin.settings import Settings
from napari_unet.plugin.suggestions import Suggestions
from napari_unet.plugin.view import visible_box

logger = logging.getLogger(__name__)

#: How long closing the viewer waits for a job to notice it must stop.
SHUTDOWN_TIMEOUT_S = 15.0
_NOTIFY = {"error": show_error, "warning": show_warning, "info": show_info}


class Session(ModelFiles, Suggestions, TruthEvaluation):
    """Interactive segmentation of a viewer's layers, driven by a widget or a test.

    Parameters
    ----------
    viewer : napari.Viewer or napari.components.ViewerModel
        The layers to read and write (a viewer model without a window works).
    runner : Runner, optional
        Runs the slow jobs; :class:`~napari_unet.plugin.runner.InlineRunner` by default.
    settings : callable, optional
        Returns the user's current :class:`Settings`; by default the
        :attr:`settings` attribute, which tests set directly.
    """

    def __init__(self, viewer: Any, runner: Runner | None = None, settings: Callable[[], Settings] | None = None) -> None:
        self.viewer = viewer
        self.runner: Runner = runner if runner is not None else InlineRunner()
        self.events = SessionEvents()
        #: The settings used when no ``settings`` callable was given.
        self.settings = Settings()
        self._read_settings = settings or (lambda: self.settings)
        self.segmenter = Segmenter(device="auto")
        #: Training seed (None: different every run); scripts and tests set it.
        self.seed: int | None = None
        #: What the last training run learned from (after :meth:`train`).
        self.training_set: TrainingSet | None = None
        #: The last progress of the current or last training run.
        self.last_progress: TrainProgress | None = None
        #: True when the last training run failed.
        self.training_failed = False
        #: The last plane predicted (probabilities kept for post-processing again).
        self.last_prediction: Cached | None = None
        self.suggestions = []
        self._suggested = 0  # how many suggestions next_region() has shown
        self.results = ResultLayers(viewer, self.annotations_layer, self.notify, lambda: self._read_settings().results_dir)
        self.results.on_new_layer = self.events.choices_changed.emit

        self._stop_training = threading.Event()
        self._snapshot_request = threading.Event()
        self._cancel_prediction = threading.Event()
        #: The image layer the current or last training run was started on.
        self.training_image: str | None = None
        #: Sends strokes painted while training runs to the run (None when no run).
        self.stroke_watcher: StrokeWatcher | None = None
        self._predict_job: tuple[Target, Planes] | None = None
        self._predicting_stack = False
        self._pending: Request | None = None  # Predict asked while training: waits for a snapshot
        self._again: Request | None = None  # Predict asked while predicting: runs next
        self._postprocess_again = False
        self._predicted: dict[str, set] = {}  # image name -> plane indices predicted with this model and parameters
        self._warned: set[str] = set()
        self._size_set: int | None = None  # the Min size last set from a model (suggest_min_size)
        self._tiled_said = False  # the model's Segmenter.tiled last told the user (after training)
        self._half_contrast_said = False  # the same for Segmenter.half_contrast
        self.closing = False

    # -- state ---------------------------------------------------------------------
    @property
    def options(self) -> Settings:
        """The user's settings now."""
        return self._read_settings()

    @property
    def is_training(self) -> bool:
        """True while a training job runs."""
        return self.runner.is_running("train")

    @property
    def is_predicting(self) -> bool:
        """True while a prediction job runs."""
        return self.runner.is_running("predict")

    @property
    def is_busy(self) -> bool:
        """True while any job runs or a prediction waits for one."""
        return any(self.runner.is_running(k) for k in ("train", "predict", "postprocess", "export")) or self._again is not None

    @property
    def predicting_stack(self) -> bool:
        """True while a whole-stack prediction runs (predicting again cancels it)."""
        return self._predicting_stack

    def notify(self, level: str, message: str) -> None:
        """Tell the user (a napari notification) and the listeners."""
        if self.closing:
            return
        self.events.notified.emit(level, message)
        _NOTIFY[level](message)

    def warn_once(self, key: str, message: str, level: str = "warning") -> None:
        """A notification (a warning unless ``level`` says otherwise) shown once per ``key`` in this session."""
        if key not in self._warned:
            self._warned.add(key)
            self.notify(level, message)

    def report_error(self, what: str, exc: Exception) -> None:
        """A job's error in words: the user's mistake as it is, a bug briefly (traceback in the log)."""
        if isinstance(exc, UserInputError):
            self.notify("error", str(exc))
        else:
            logger.error("%s failed", what, exc_info=(type(exc), exc, exc.__traceback__))
            self.notify("error", f"{what} failed: {type(exc).__name__}: {exc}")

    # -- layers ----------------------------------------------------------------------
    def image_layer(self) -> Image | None:
        """The chosen image layer, if any."""
        return find_layer(self.viewer, self.options.image, Image)

    def annotations_layer(self) -> Labels | None:
        """The chosen annotations layer, if any."""
        return find_layer(self.viewer, self.options.annotations, Labels)

    def layer_choices(self) -> tuple[list[str], list[str]]:
        """Names of the image and label layers to offer (never our prediction layers)."""
        layers = [layer for layer in self.viewer.layers if not self.results.is_ours(layer)]
        return [la.name for la in layers if isinstance(la, Image)], [la.name for la in layers if isinstance(la, Labels)]

    def paired_name(self, image: str) -> str:
        """The annotations layer of ``image``: one made for it by New, else ``"<image> annotations"``."""
        return pairs.paired_name(self.viewer, image, self.results.is_ours)

    def annotation_pairs(self) -> list[tuple[Image, Labels]]:
        """The (image, annotations) pairs to train on, the chosen pair first (see :func:`~napari_unet.plugin.annotations.annotation_pairs`)."""
        return pairs.annotation_pairs(self.viewer, self.image_layer(), self.annotations_layer(), self.results.is_ours)

    def spatial_ndim(self) -> int:
        """2 or 3: the model's when there is one, else the chosen one."""
        if self.segmenter.model is not None and self.segmenter.config is not None:
            return int(self.segmenter.config.ndim)
        return self.options.ndim

    def image_options(self) -> tuple[int, bool, int]:
        """For the chosen image: (its data's ndim, has a Z axis, number of planes); (2, False, 0) without one."""
        layer = self.image_layer()
        if layer is None:
            return 2, False, 0
        ndim = len(layer.data[0].shape if layer.multiscale else layer.data.shape)
        try:
            axes = layer_axes(layer)
            count = len(image_planes(layer, self.spatial_ndim() if "Z" in axes else 2))
        except UserInputError:
            axes, count = "", 1
        return ndim, "Z" in axes, count

    def planes(self, layer: Image) -> Planes:
        """The layer as planes for the current model, warning once when napari cannot align its labels."""
        planes = image_planes(layer, self.spatial_ndim())
        if channel_misaligned(layer, planes.axes):
            self.warn_once(
                f"misaligned {layer.name}",
                f"'{layer.name}' has its channel axis at position {planes.axes.index('C')} (axes '{planes.axes}'): "
                "napari aligns label layers with the last axes, so annotations will not line up. "
                "Move the channel axis first.",
            )
        return planes

    def current_index(self, layer: Image, planes: Planes) -> tuple:
        """The loop index of the plane (or volume) napari's sliders show for ``layer``."""
        return shown_index(self.viewer, layer, planes)

    def _require_image(self) -> Image:
        layer = self.image_layer()
        if layer is None:
            raise UserInputError("no image selected: open an image (Open…) or choose one in the Image list")
        return layer

    # -- annotations -----------------------------------------------------------------------
    def new_annotations(self) -> Labels | None:
        """Add (or select) the chosen image's annotations layer, ready to paint background (1).

        Returns
        -------
        Labels or None
            The layer (its name is then the one to choose as annotations),
            or None after an error notification.
        """
        try:
            image = self._require_image()
            target = Target.of(image, self.planes(image).axes)
        except UserInputError as exc:
            self.notify("error", str(exc))
            return None
        warn = (lambda message: self.warn_once(f"large annotations {image.name}", message)) if self.results.is_large(target) else None
        layer, existed = pairs.add_annotations_layer(self.viewer, image, target, warn)
        if existed:
            self.notify("info", f"'{layer.name}' already exists: selected it.")
        layer.selected_label = 1
        layer.mode = "paint"
        self.viewer.layers.selection.active = layer
        return layer

    def collect_training_set(self, count_only: bool = False) -> TrainingSet:
        """The painted planes the next training learns from.

        Raises
        ------
        UserInputError
            No image or annotations chosen, or the chosen pair does not fit.
        """
        self._require_image()
        annotations = self.annotations_layer()
        if annotations is None:
            raise UserInputError("no annotations layer: press New next to Annotations and paint 1 = background, 2 = object")
        if self.results.is_ours(annotations):
            raise UserInputError(f"'{annotations.name}' is a prediction; choose (or create) an annotations layer")
        found = self.annotation_pairs()
        if not self.options.train_all:
            found = found[:1]
        ndim = self.spatial_ndim()
        planes_of = (lambda layer: image_planes(layer, ndim)) if count_only else self.planes
        warn = None if count_only else (lambda message: self.notify("warning", message))
        return pairs.training_set(found, planes_of, count_only=count_only, warn=warn)

    def training_status(self) -> str:
        """What the next training learns from: "Training on: 2 images, 5 painted planes"."""
        try:
            found = self.collect_training_set(count_only=True)
        except UserInputError:
            return "Training on: nothing yet (choose an image and its annotations)"
        unit = "volume" if self.spatial_ndim() == 3 else "plane"
        return f"Training on: {found.describe(unit)}" if found.sources else "Training on: nothing painted yet"

    # -- model -----------------------------------------------------------------------------
    def _set_segmenter(self, segmenter: Segmenter) -> None:
        self.segmenter = segmenter
        self._weights_changed()
        self.events.model_changed.emit()

    def instance_params(self) -> InstanceParams:
        """The panel's post-processing parameters, with what the model knows of its objects (:attr:`Segmenter.tiled`)."""
        return dataclasses.replace(self.options.instance_params, tiled=self.segmenter.tiled)

    def suggest_min_size(self) -> None:
        """Set "Min size" from the model: raised to the size it learned from objects painted whole, back to the default after.

        A model trained on objects painted whole (:attr:`Segmenter.min_object_size`)
        raises Min size to its own size. A later model without one puts
        back the default, but only while Min size still holds the size set
        here: a value the user chose stays.
        """
        size = self.segmenter.min_object_size
        current = self.options.instance_params.min_size
        if size is not None and size > current:
            self._size_set = size
            self.events.min_size_suggested.emit(size)
            self.notify("info", f'"Objects are painted whole": {self.segmenter.min_object_note()}. Min size is now {size} px.')
        elif size is None and self._size_set is not None and current == self._size_set:
            self._size_set = None
            default = InstanceParams.min_size
            self.events.min_size_suggested.emit(default)
            self.notify("info", f"This model was trained without objects painted whole: Min size is back to {default} px.")

    def _weights_changed(self) -> None:
        """New weights: cached probabilities and the record of predicted planes are stale."""
        self.last_prediction = None
        self.suggestions = []
        self.events.suggestions_changed.emit(0)
        self._predicted.clear()

    def reset_model(self) -> None:
        """Forget the weights and history; the next training starts from scratch."""
        if self.is_training:
            self.notify("warning", "Training is running: stop it before resetting the model.")
            return
        self._set_segmenter(Segmenter(device=self.segmenter.device))
        self.suggest_min_size()

    def _prepare_model(self, found: TrainingSet) -> None:
        """Create the fresh model (with the chosen size) or move the current one to the chosen device."""
        options = self.options
        device = resolve_device(options.device)
        if self.segmenter.model is not None or (options.depth is None and options.width is None) or not found.images:
            self.segmenter.to(device)  # a fresh model is then sized by the engine for the device
            return
        channels = int(found.images[0].shape[0])
        n_classes = found.n_classes
        default = default_config(device, channels, n_classes, **({"ndim": options.ndim} if options.ndim != 2 else {}))
        config = dataclasses.replace(default, depth=options.depth or default.depth, width=options.width or default.width)
        self.segmenter = Segmenter(config=config, device=device)

    # -- training --------------------------------------------------------------------------
    def train(self) -> bool:
        """Fine-tune the model on the painted annotations in a background job; True when it started.

        Only the painted planes are copied (now, so painting may continue
        while it trains), from the chosen image and, with "train all",
        every other image with its own annotations. Strokes painted, erased
        or undone while it trains join the run before its next step
        (:class:`~napari_unet.plugin.live_strokes.StrokeWatcher`), without
        a restart. The first training (or the first after a reset) starts a
        fresh model.
        """
        if self.is_training:
            self.notify("warning", "Training is already running: press Stop first, or wait for it to finish.")
            return False
        try:
            image = self._require_image()
            if self.segmenter.model is not None and self.options.ndim != self.spatial_ndim():
                self.notify("info", f"The model is a {self.spatial_ndim()}D U-Net: press Reset model to train a {self.options.ndim}D one.")
            found = self.collect_training_set()
            config = self.options.train_config(seed=self.seed)
            self._prepare_model(found)
        except UserInputError as exc:
            self.notify("error", str(exc))
            return False
        if not config.whole_objects and "whole objects" not in self._warned:  # said once: not worked out again
            hint = whole_objects_hint(found.annotations, '"Objects are painted whole" (Advanced)')
            if hint:
                self.warn_once("whole objects", hint, "info")
        self.training_set = found
        self.training_image = image.name
        self.training_failed = False
        self.last_progress = None
        self._stop_training.clear()
        self._snapshot_request.clear()
        feed = self._watch_strokes(found)
        self.events.training_started.emit()
        handlers = Handlers(yielded=self._on_train_yielded, errored=self._on_train_error, finished=self._on_train_finished)
        self.runner.start(
            "train", train_steps, self.segmenter, found.images, found.annotations, config, self._stop_training, self._snapshot_request,
            ndim=self.spatial_ndim(), strokes=feed, handlers=handlers, task=f"training the U-Net on '{image.name}'", cancel=self.stop,
        )
        return True

    def _watch_strokes(self, found: TrainingSet) -> StrokeFeed:
        """Listen to the trained annotation layers for the run about to start; the feed its training reads."""
        feed = StrokeFeed()
        pairs = self.annotation_pairs()
        if not self.options.train_all:
            pairs = pairs[:1]
        trained = {name for name, _ in found.sources} | {self.training_image}
        watched = []
        for image, labels in pairs:
            if image.name not in trained:
                continue
            planes = image_planes(image, self.spatial_ndim())
            if tuple(labels.data.shape) == planes.label_shape:
                watched.append((image, labels, planes))
        n_classes = self.segmenter.config.n_classes if self.segmenter.model is not None else found.n_classes
        self.stroke_watcher = StrokeWatcher(feed, found, watched, n_classes, lambda message: self.notify("warning", message))
        self.stroke_watcher.connect()
        return feed

    def _stop_watching_strokes(self) -> None:
        if self.stroke_watcher is not None:
            self.stroke_watcher.disconnect()
            self.stroke_watcher = None

    def stop(self) -> None:
        """Ask the training to stop after the current step; the best weights are kept."""
        if self.is_training:
            self._stop_training.set()

    def request_preview(self) -> None:
        """Predict with the weights of the next step (live preview); skipped while a prediction runs."""
        if self.is_training and not self.is_predicting:
            self._snapshot_request.set()

    def _on_train_yielded(self, item: TrainProgress | Segmenter) -> None:
        if self.closing:
            return
        if isinstance(item, Segmenter):  # a snapshot asked for by Predict or the live preview
            request = self._pending if self._pending is not None else self._preview_request()
            self._pending = None
            self._start_prediction(item, request)
            return
        self.last_progress = item
        self.events.training_progress.emit(item)

    def _on_train_error(self, exc: Exception) -> None:
        self.training_failed = True
        if not self.closing:
            self.report_error("Training", exc)

    def _on_train_finished(self) -> None:
        self._stop_watching_strokes()
        if self.closing:
            return
        last = self.last_progress
        trained = not self.training_failed and last is not None
        if trained:
            if self.segmenter.tiled != self._tiled_said:
                self._tiled_said = self.segmenter.tiled
                self.notify("info", f"Split: {self.segmenter.tiled_note() or 'the objects do not tile the image: instances are seeded by their own size'}.")
            if self.segmenter.half_contrast != self._half_contrast_said:
                self._half_contrast_said = self.segmenter.half_contrast
                self.notify("info", f"Edges: {self.segmenter.half_contrast_note() or 'strokes now show where objects end: edges are where the model puts them'}.")
            self._weights_changed()
            if last.stopped:
                self.notify("info", f"Training stopped at step {last.step}; {last.kept()}.")
            if last.rings_note():
                self.notify("warning", f'"Objects are painted whole" {last.rings_note()}.')
            self.suggest_min_size()
        pending, self._pending = self._pending, None
        self._snapshot_request.clear()
        self.events.training_finished.emit()
        if trained and (pending is not None or self.options.auto_predict):
            self._request_prediction(pending or self._request())

    # -- prediction ------------------------------------------------------------------------
    def _preview_request(self) -> Request:
        """A live preview of the training image: the part of its plane in view, or the whole plane when most of it shows."""
        name = self.training_image or ""
        layer = find_layer(self.viewer, name, Image)
        if layer is None:
            return Request(name)
        try:
            box = visible_box(self.viewer, layer, self.planes(layer))
        except UserInputError:
            box = None
        return Request(name, view=box)

    def _request(self) -> Request:
        layer = self._require_image()
        return Request(layer.name, self.options.whole_stack)

    def predict(self) -> None:
        """Predict the chosen image in a background job and write the label layers.

        Writes (or updates) ``"<image> semantic"`` and ``"<image> instances"``
        (label-shaped: a stack's planes not predicted yet stay 0); never
        touches the annotations. For a stack, the settings say whether the
        plane shown by the sliders or every plane is predicted; predicting
        during a whole-stack prediction cancels it. While training runs, the
        prediction uses a snapshot of the weights taken between two steps.
        """
        if self._predicting_stack:
            self._cancel_prediction.set()
            self.notify("info", "Cancelling the whole-stack prediction: the planes done so far are discarded.")
            return
        try:
            request = self._request()
        except UserInputError as exc:
            self.notify("error", str(exc))
            return
        self._request_prediction(request)

    def _request_prediction(self, request: Request) -> None:
        if self.is_training:
            # Copying the weights here could catch an optimiser step half done;
            # the training thread hands over a copy between two steps instead.
            self._pending = request
            self._snapshot_request.set()
            return
        if self.segmenter.model is None or not self.segmenter.is_trained:
            self.notify("error", "No model yet: train one (Train) or load a model file (Load model…) first.")
            return
        try:
            self.segmenter.to(resolve_device(self.options.device))
        except UserInputError as exc:
            self.notify("error", str(exc))
            return
        self._start_prediction(snapshot(self.segmenter), request)

    def _start_prediction(self, segmenter: Segmenter, request: Request) -> None:
        if self.is_predicting:
            self._again = request  # once this one ends, predict again with the newest weights
            return
        layer = find_layer(self.viewer, request.name, Image)
        if layer is None:
            self.notify("warning", f"The image '{request.name}' is gone; nothing to predict.")
            return
        try:
            planes = self.planes(layer)
            target = Target.of(layer, planes.axes)
            if planes.channels != segmenter.config.in_channels:  # said now rather than from the job
                mismatch = channel_mismatch(segmenter.config.in_channels, planes.channels, planes.axes)
                raise UserInputError(f"{mismatch}; check Advanced ▸ Channel axis")
        except UserInputError as exc:
            self.notify("error", str(exc))
            return
        # The job gets the lazy planes: a dask/zarr/multiscale image is read plane by plane, never copied whole.
        params = self.instance_params()
        whole = request.whole and len(planes) > 1
        handlers = Handlers(yielded=self._on_predict_progress, returned=self._on_predicted, errored=self._on_predict_error, finished=self._on_predict_finished)
        self._predict_job = (target, planes)
        self.note_weights(segmenter)  # the step its scores against a truth are plotted at
        self._predicting_stack = whole
        self._cancel_prediction.clear()
        self.events.prediction_started.emit(whole)
        if whole:
            store = self.results.store_dir(target) if self.results.is_large(target) else None
            self.runner.start("predict", predict_stack_steps, segmenter, planes, params, self._cancel_prediction, store, scale=target.scale, handlers=handlers)
        elif request.view is not None:
            handlers = Handlers(
                yielded=self._on_predict_progress, returned=self._on_previewed, errored=self._on_predict_error, finished=self._on_predict_finished
            )
            index = self.current_index(layer, planes)
            self.runner.start("predict", preview_steps, segmenter, planes, params, index, request.view, self._cancel_prediction, handlers=handlers)
        else:
            instances = find_layer(self.viewer, target.layer_name("instances"), Labels)
            ids = instances.data if instances is not None and tuple(instances.data.shape) == target.label_shape else None
            strokes = self.annotations_layer()
            strokes = strokes.data if strokes is not None and tuple(strokes.data.shape) == target.label_shape else None
            index = self.current_index(layer, planes)
            self.runner.start(
                "predict", predict_steps, segmenter, planes, params, self._cancel_prediction, index, ids,
                scale=target.scale, annotations=strokes, handlers=handlers,
            )

    def _on_predict_progress(self, progress: TileProgress | StackProgress) -> None:
        if self.closing:
            return
        if isinstance(progress, StackProgress):
            self.events.prediction_progress.emit(int(progress.fraction * 1000), 1000)
        else:
            self.events.prediction_progress.emit(progress.done, progress.total)

    def _on_predicted(self, result: Prediction | StackPrediction | None) -> None:
        # The result arrives before the job's end: a Predict in between queues a prediction instead of cancelling.
        self._predicting_stack = False
        if self.closing or result is None or self._predict_job is None:
            return
        target, planes = self._predict_job
        if isinstance(result, StackPrediction):
            self.results.write_stack(target, result)
            self._predicted[target.name] = set(planes.indices())
        else:
            if not self.results.has_results(target):  # layers removed or reshaped: nothing predicted any more
                self._predicted.pop(target.name, None)
            self.last_prediction = Cached(target, planes, result)
            self.results.write_prediction(target, planes, result, maps=self.options.maps())
            self._predicted.setdefault(target.name, set()).add(result.index)
            self.show_suggestions(result.suggestions)
            self.evaluate_prediction(target, planes, result)
        self.events.prediction_finished.emit()
        if result.params != self.instance_params():
            self.start_postprocess()  # the parameters changed while the network ran

    def _on_previewed(self, result: Preview | None) -> None:
        if self.closing or result is None or self._predict_job is None:
            return
        target, planes = self._predict_job
        self.results.write_preview(target, planes, result)
        self.events.prediction_finished.emit()

    def _on_predict_error(self, exc: Exception) -> None:
        self._again = None
        if not self.closing:
            self.report_error("Prediction", exc)

    def _on_predict_finished(self) -> None:
        self._predicting_stack = False
        if self.closing:
            return
        self.events.prediction_ended.emit()
        again, self._again = self._again, None
        if again is not None:
            self._request_prediction(again)

    def follow_slider(self) -> None:
        """Predict the plane now shown, if this image was predicted before and that plane was not."""
        layer = self.image_layer()
        options = self.options
        if self.closing or layer is None or layer.name not in self._predicted or self.is_training:
            return
        if not options.auto_predict or not self.segmenter.is_trained or options.whole_stack:
            return
        try:
            planes = image_planes(layer, self.spatial_ndim())
        except UserInputError:
            return
        if len(planes) < 2:
            return
        done = self._predicted[layer.name] if self.results.has_results(Target.of(layer, planes.axes)) else set()
        if self.current_index(layer, planes) not in done:
            self._request_prediction(Request(layer.name))

    # -- post-processing ---------------------------------------------------------------------
    def start_postprocess(self) -> None:
        """Post-process the last plane's cached probabilities again with the current parameters (never the network)."""
        if self.last_prediction is None or self.closing:
            return
        if self.runner.is_running("postprocess"):
            self._postprocess_again = True
            return
        cached = self.last_prediction
        handlers = Handlers(
            returned=lambda result: self._on_postprocessed(cached, result), errored=self._on_postprocess_error, finished=self._on_postprocess_finished
        )
        self.runner.start("postprocess", repostprocess, cached.prediction, self.instance_params(), cached.planes, self.segmenter.names(), cached.target.scale, handlers=handlers)

    def _on_postprocessed(self, cached: Cached, result: Prediction) -> None:
        if self.closing:
            return
        self.last_prediction = Cached(cached.target, cached.planes, result)
        self.results.write_prediction(cached.target, cached.planes, result)
        # Other planes were made with other parameters: moving the slider predicts them again.
        self._predicted = {cached.target.name: {result.index}}
        self.events.postprocess_finished.emit()

    def _on_postprocess_error(self, exc: Exception) -> None:
        self._postprocess_again = False
        self.report_error("Post-processing", exc)

    def _on_postprocess_finished(self) -> None:
        if self._postprocess_again and not self.closing:
            self._postprocess_again = False
            self.start_postprocess()

    def show_map(self, what: str, shown: bool) -> None:
        """Show (write) or hide the last plane's ``"probability"`` or ``"uncertainty"`` layer."""
        cached = self.last_prediction
        if cached is None:
            return
        if shown:
            self.results.write_map(cached.target, cached.planes, cached.prediction, what)
        else:
            self.results.hide_map(cached.target, what)

    # -- closing ----------------------------------------------------------------------------
    def shutdown(self, timeout: float = SHUTDOWN_TIMEOUT_S) -> None:
        """Stop training and prediction and wait for their jobs (the viewer is closing).

        Training ends after its current step with the best weights kept.
        Safe to call more than once.
        """
        if self.closing:
            return
        self.closing = True
        self._stop_training.set()
        self._cancel_prediction.set()
        if not self.runner.wait(timeout):
            logger.warning("a napari-unet job did not stop within %.0f s", timeout)
        self.results.close()
