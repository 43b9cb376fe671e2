"""How good the result is: each predicted plane scored against a truth layer, as session methods (:class:`TruthEvaluation`).

The user may choose any Labels layer as ground truth (``Settings.truth``;
never one of our prediction layers). After each prediction of a plane,
live previews while training included, the plane is scored against the
truth's same plane with :func:`~napari_unet.eval.evaluate.evaluate` (the
code ``napari-unet evaluate`` and the benchmarks use), in a background job
so that a large plane never blocks the GUI (512²: about 10 ms, 2048²:
about 0.2 s). The whole plane is scored, painted strokes included.

Which of the prediction layers is compared:

- a model with several object classes whose truth holds only its class
  values (0 .. n_classes - 1) is scored as classes: the ``semantic``
  layer, per-class IoU, each class one "object";
- anything else (a binary model, or a truth with more ids than classes) is
  scored as instances: the ``instances`` layer against the truth's ids.

A whole-stack prediction is not scored: the plane shown is scored when it
is predicted on its own. Kept in its own module so each file stays short;
it uses the session's ``viewer``, ``events``, ``options``, ``runner``,
``results``, ``segmenter``, ``last_prediction``, ``notify``, ``warn_once``
and ``report_error``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from napari.layers import Labels

from napari_unet.core.history import run_lengths
from napari_unet.core.jobs import Prediction
from napari_unet.errors import UserInputError
from napari_unet.eval.evaluate import Evaluation, evaluate
from napari_unet.io.axes import Planes
from napari_unet.plugin.result_layers import Target, find_layer
from napari_unet.plugin.runner import Handlers

#: What the truth list shows for "no truth".
NO_TRUTH = "none"


@dataclass(frozen=True)
class Scored:
    """One predicted plane scored against the truth.

    Attributes
    ----------
    evaluation : Evaluation
        The scores (:class:`~napari_unet.eval.evaluate.Evaluation`).
    step : int
        Training steps behind the weights that predicted it, counted across
        runs as the loss plot's x axis (a live preview: the step it was taken at).
    semantic : bool
        Scored as classes (the semantic layer) rather than as instances.
    truth : str
        The truth layer's name.
    index : tuple
        The plane's loop index (``()`` for a 2D image).
    """

    evaluation: Evaluation
    step: int
    semantic: bool
    truth: str
    index: tuple = ()


def looks_semantic(truth: np.ndarray, n_classes: int) -> bool:
    """True when ``truth`` is a class map of a multi-class model: only values 0 .. ``n_classes`` - 1, and more than 2 classes.

    A binary model's truth is always read as instance ids: a 0/1 truth of a
    binary model then holds a single object.
    """
    if n_classes <= 2 or truth.dtype.kind not in "uib" or not truth.size:
        return False
    return int(truth.min()) >= 0 and int(truth.max()) < n_classes


def score_plane(instances: np.ndarray, semantic: np.ndarray, truth: Any, n_classes: int) -> tuple[Evaluation, bool]:
    """Score a predicted plane against ``truth`` (read here, off the GUI thread); returns (scores, scored as classes)."""
    truth = np.asarray(truth)
    as_classes = looks_semantic(truth, n_classes)
    return evaluate(semantic if as_classes else instances, truth, semantic=as_classes), as_classes


def describe_scores(scored: Scored, class_names: list[str] | None = None) -> str:
    """One line for the widget: ``"F1@0.5 0.87 · F1 0.5:0.95 0.61 · missed 3 · false 2 · split 1 · merged 0 · fg IoU 0.91"``.

    Scored as classes, the IoU of each object class follows (named by
    ``class_names`` where given).
    """
    e = scored.evaluation
    parts = [
        f"F1@0.5 {e.f1:.2f}", f"F1 0.5:0.95 {e.f1_mean:.2f}", f"missed {e.missed}", f"false {e.false}",
        f"split {e.split}", f"merged {e.merged}", f"fg IoU {e.foreground_iou:.2f}",
    ]
    if scored.semantic:
        names = class_names or []
        for key, iou in e.class_iou.items():
            c = int(key)
            if c > 0:
                parts.append(f"IoU {names[c] if c < len(names) else f'class {c}'} {iou:.2f}")
    return " · ".join(parts)


class TruthEvaluation:
    """The session's scores of its predictions against the truth layer the user chose."""

    #: Every plane scored with the current model and truth, oldest first (what the loss plot shows).
    truth_scores: tuple[Scored, ...] = ()
    _weights_step = 0  # training steps behind the weights of the prediction running
    _scored_for: tuple = (None, "")  # (model, truth name) the scores belong to
    _evaluate_next: tuple | None = None  # an evaluation asked for while one runs
    _failed_truth = ""  # the truth whose scoring failed last: said once, not after every live preview

    def truth_layer(self) -> Labels | None:
        """The chosen truth layer, if any (never one of our prediction layers)."""
        name = self.options.truth
        layer = find_layer(self.viewer, name, Labels) if name and name != NO_TRUTH else None
        if layer is not None and self.results.is_ours(layer):
            self.warn_once(f"truth is ours {name}", f"'{name}' is a prediction of this plugin, not a ground truth: choose another Truth layer.")
            return None
        return layer

    @property
    def last_scores(self) -> Scored | None:
        """The latest scores, if any (with the current model and truth)."""
        self._forget_stale_scores()
        return self.truth_scores[-1] if self.truth_scores else None

    def truth_points(self) -> tuple[list[int], list[float]]:
        """(training steps, F1 at IoU 0.5) of every plane scored with the current model and truth."""
        self._forget_stale_scores()
        return [s.step for s in self.truth_scores], [s.evaluation.f1 for s in self.truth_scores]

    def _forget_stale_scores(self) -> None:
        # Scores of another model (reset, loaded, fresh) or another truth say nothing about this one.
        if self._scored_for[0] is not self.segmenter or self._scored_for[1] != self.options.truth:
            self.truth_scores = ()
            self._scored_for = (self.segmenter, self.options.truth)

    def note_weights(self, segmenter: Any) -> None:
        """Remember the training step of the weights a prediction is about to use (a snapshot's, while training)."""
        self._weights_step = sum(run_lengths(segmenter.history))

    def evaluate_last(self) -> None:
        """Score the last predicted plane against the truth chosen now (the truth choice changed).

        The listeners hear the scores kept for this truth at once (None for
        a new one), then the new scores when they are ready.
        """
        self.events.evaluated.emit(self.last_scores)
        cached = self.last_prediction
        if cached is not None:
            self.evaluate_prediction(cached.target, cached.planes, cached.prediction)

    def evaluate_prediction(self, target: Target, planes: Planes, prediction: Prediction) -> None:
        """Score a plane just predicted against the truth's same plane, in a background job."""
        self._forget_stale_scores()
        truth = self.truth_layer()
        if truth is None or self.closing:
            return
        data = truth.data[0] if truth.multiscale else truth.data
        if tuple(data.shape) != target.label_shape:
            self.warn_once(
                f"truth shape {truth.name} {target.name}",
                f"Truth '{truth.name}' has shape {tuple(data.shape)} but the predictions of '{target.name}' {target.label_shape}: "
                "choose a truth of the same shape, or none.",
            )
            return
        plane = data[planes.label_index(prediction.index)]  # a lazy truth stays lazy: it is read in the job
        job = (plane, prediction, truth.name, self._weights_step)
        if self.runner.is_running("evaluate"):
            self._evaluate_next = job  # only the newest plane is worth scoring
            return
        self._start_evaluation(job)

    def _start_evaluation(self, job: tuple) -> None:
        plane, prediction, name, step = job
        n_classes = int(prediction.probabilities.shape[0])
        handlers = Handlers(
            returned=lambda result: self._on_evaluated(result, name, step, prediction.index),
            errored=lambda exc: self._on_evaluation_error(exc, name),
            finished=self._on_evaluation_finished,
        )
        self.runner.start("evaluate", score_plane, prediction.instances, prediction.semantic, plane, n_classes, handlers=handlers)

    def _on_evaluated(self, result: tuple[Evaluation, bool], truth: str, step: int, index: tuple) -> None:
        self._forget_stale_scores()
        if self.closing or truth != self.options.truth:
            return  # the truth changed while it was scored
        evaluation, semantic = result
        self._failed_truth = ""  # a later failure is news again
        scored = Scored(evaluation, step, semantic, truth, tuple(index))
        self.truth_scores = (*self.truth_scores, scored)
        self.events.evaluated.emit(scored)

    def _on_evaluation_error(self, exc: Exception, truth: str) -> None:
        if self.closing or truth == self._failed_truth:
            return
        self._failed_truth = truth
        if isinstance(exc, UserInputError):  # the truth is not labels: say which layer
            self.notify("error", f"Cannot score against the truth '{truth}': {exc}")
        else:
            self.report_error(f"Scoring against the truth '{truth}'", exc)

    def _on_evaluation_finished(self) -> None:
        job, self._evaluate_next = self._evaluate_next, None
        if job is not None and not self.closing:
            self._start_evaluation(job)
