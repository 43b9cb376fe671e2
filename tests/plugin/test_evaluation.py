"""Predictions scored against a truth layer, without Qt (:mod:`napari_unet.plugin.evaluation`).

Drives a :class:`~napari_unet.plugin.session.Session` through
:class:`~napari_unet.plugin.runner.InlineRunner` on a viewer model: train a
few dozen steps, predict, and check the scores the session reports against
:func:`~napari_unet.eval.evaluate.evaluate` of the layers themselves.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from napari_unet.core.history import run_lengths
from napari_unet.eval.evaluate import evaluate
from napari_unet.plugin.evaluation import Scored, describe_scores, looks_semantic, score_plane
from tests.helpers import nuclei_session
from tests.plugin.test_session import strokes_of

STEPS = 30
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def scored():
    """A session on a nuclei image with painted strokes and a truth layer, and the scores it reports."""
    sample, viewer, session = nuclei_session(annotations="nuclei annotations", steps=STEPS, patch_size=64, batch_size=8)
    viewer.add_labels(strokes_of(sample), name="nuclei annotations")
    viewer.add_labels(sample.instances.astype(np.int32), name="truth")
    heard: list = []
    session.events.evaluated.connect(heard.append)
    messages: list[tuple[str, str]] = []
    session.events.notified.connect(lambda level, text: messages.append((level, text)))
    return sample, viewer, session, heard, messages


@pytest.mark.slow
def test_each_prediction_is_scored_against_the_truth_at_its_training_step(scored) -> None:
    sample, viewer, session, heard, messages = scored
    assert session.train()  # no truth chosen: predicted after training, not scored
    assert heard == [] and session.last_scores is None

    # Choosing a truth scores the last prediction at once.
    session.settings = replace(session.settings, truth="truth")
    session.evaluate_last()
    assert len(heard) == 2 and heard[0] is None and isinstance(heard[1], Scored)
    expected = evaluate(viewer.layers["nuclei instances"].data, sample.instances)
    assert heard[1].evaluation == expected and not heard[1].semantic
    assert heard[1].step == STEPS and heard[1].truth == "truth"
    assert session.truth_points() == ([STEPS], [expected.f1])
    assert describe_scores(heard[1]).startswith(f"F1@0.5 {expected.f1:.2f} · F1 0.5:0.95 {expected.f1_mean:.2f} · missed {expected.missed}")

    # Live previews while training are scored at the step of their snapshot.
    session.events.training_progress.connect(lambda progress: session.request_preview() if progress.step < STEPS else None)
    assert session.train()
    steps, f1 = session.truth_points()
    assert len(steps) >= 3 and steps == sorted(steps) and steps[0] == STEPS and steps[-1] == 2 * STEPS, steps
    assert STEPS < steps[1] < 2 * STEPS and all(0 <= f <= 1 for f in f1)
    assert session.last_scores.evaluation == evaluate(viewer.layers["nuclei instances"].data, sample.instances)
    assert run_lengths(session.segmenter.history) == [STEPS, STEPS]
    assert not [m for m in messages if m[0] != "info"], messages

    # No truth: no scores, and the listeners are told.
    session.settings = replace(session.settings, truth="")
    session.evaluate_last()
    assert heard[-1] is None and session.truth_points() == ([], [])
    # A new model forgets the scores of the old one.
    session.settings = replace(session.settings, truth="truth")
    session.evaluate_last()
    assert session.truth_points()[0] == [2 * STEPS]
    session.reset_model()
    assert session.truth_points() == ([], [])


@pytest.mark.slow
def test_a_truth_that_cannot_be_scored_is_said(scored) -> None:
    sample, viewer, session, heard, messages = scored
    assert session.train()
    viewer.add_labels(np.zeros((64, 64), np.int32), name="small")
    session.settings = replace(session.settings, truth="small")
    session.evaluate_last()
    assert heard == [None]
    assert messages[-1][0] == "warning" and "'small' has shape (64, 64)" in messages[-1][1] and "(128, 128)" in messages[-1][1]
    # Our own prediction layers are never a truth.
    session.settings = replace(session.settings, truth="nuclei instances")
    assert session.truth_layer() is None
    assert "'nuclei instances' is a prediction of this plugin" in messages[-1][1]
    assert "truth" not in session.layer_choices()[0] and "nuclei instances" not in session.layer_choices()[1]
    # Negative values are no labels: an error in words, no scores.
    viewer.add_labels(-np.ones((128, 128), np.int32), name="negative")
    session.settings = replace(session.settings, truth="negative")
    session.evaluate_last()
    assert messages[-1] == ("error", "Cannot score against the truth 'negative': the truth holds negative values, not labels")
    assert session.last_scores is None
    session.evaluate_last()  # said once, not after every prediction
    assert messages.count(messages[-1]) == 1


def test_a_class_map_of_a_multi_class_model_is_scored_as_classes() -> None:
    semantic = np.zeros((32, 32), np.uint8)
    semantic[4:12, 4:12], semantic[20:28, 20:28] = 1, 2
    instances = np.zeros((32, 32), np.uint32)
    instances[4:12, 4:12], instances[20:28, 20:28] = 7, 8
    truth = semantic.copy()
    truth[20:28, 20:24] = 1  # half the class-2 square is class 1 in the truth
    assert looks_semantic(truth, 3) and not looks_semantic(truth, 2) and not looks_semantic(truth * 5, 3)
    evaluation, as_classes = score_plane(instances, semantic, truth, 3)
    assert as_classes and evaluation == evaluate(semantic, truth, semantic=True)
    assert evaluation.class_iou["2"] == pytest.approx(0.5)
    text = describe_scores(Scored(evaluation, 10, True, "truth"), ["background", "nucleus", "membrane"])
    assert text.endswith(f"IoU nucleus {evaluation.class_iou['1']:.2f} · IoU membrane 0.50")
    # A binary model's truth is always instances.
    evaluation, as_classes = score_plane(instances, semantic > 0, (truth > 0).astype(np.uint8), 2)
    assert not as_classes and evaluation.n_true == 1 and evaluation.n_pred == 2
