"""Strokes painted while training runs reach the run: the napari side (no Qt)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from napari.components import ViewerModel

from napari_unet.core.jobs import TrainingSet
from napari_unet.core.live import StrokeFeed
from napari_unet.io.axes import Planes
from napari_unet.plugin.live_strokes import CELL, StrokeWatcher, atom_box, snap_to_cells
from napari_unet.plugin.view import camera, visible_box
from tests.helpers import nuclei_session


def test_boxes_of_history_atoms():
    class Masked:
        slice_key = (slice(1, 2), slice(3, 9))

    assert atom_box(Masked()) == (slice(1, 2), slice(3, 9))
    assert atom_box(((np.array([4, 7]), np.array([2, 9])), None, 1)) == (slice(4, 8), slice(2, 10))
    assert atom_box(((np.array([], int), np.array([], int)), None, 1)) is None


def test_snapping_covers_the_box_with_few_cells():
    cells = snap_to_cells((slice(2, 3), slice(60, 70), slice(0, 5)), (5, 200, 100))
    assert cells == [(slice(2, 3), slice(0, 64), slice(0, 64)), (slice(2, 3), slice(64, 128), slice(0, 64))]
    assert snap_to_cells((slice(190, 200), slice(90, 100)), (200, 100)) == [(slice(2 * CELL, 3 * CELL), slice(64, 100)), (slice(3 * CELL, 200), slice(64, 100))]


@pytest.fixture
def stack_layers():
    """A 4-plane ZYX stack (2D model: planes) with planes 1 and 2 painted at Train time."""
    viewer = ViewerModel()
    image = viewer.add_image(np.random.default_rng(0).random((4, 100, 100)).astype(np.float32), name="stack")
    data = np.zeros((4, 100, 100), np.uint8)
    data[1, 10:20, 10:20] = 2
    data[2, 50:60, 50:60] = 1
    labels = viewer.add_labels(data, name="stack annotations")
    planes = Planes(image.data, "ZYX")
    found = TrainingSet([None, None], [data[1].copy(), data[2].copy()], [("stack", 2)], [("stack", (1,)), ("stack", (2,))])
    feed = StrokeFeed()
    warnings = []
    watcher = StrokeWatcher(feed, found, [(image, labels, planes)], n_classes=2, warn=warnings.append)
    watcher.connect()
    yield labels, feed, watcher, warnings
    watcher.disconnect()


def test_paint_on_a_trained_plane_is_sent_as_its_cell(stack_layers):
    labels, feed, _, warnings = stack_layers
    labels.brush_size = 3
    labels.paint((2, 70, 70), 2)
    *_, update = feed.drain()  # sent when napari records the edit, and again once the pixels are written
    assert update.item == 1 and update.image is None
    assert update.start == (64, 64) and update.labels.shape == (36, 36)
    np.testing.assert_array_equal(update.labels, labels.data[2, 64:100, 64:100])
    assert warnings == []


def test_a_new_plane_joins_with_its_image_and_a_new_class_is_said(stack_layers):
    labels, feed, _, warnings = stack_layers
    labels.data_setitem((np.array([3, 3]), np.array([5, 6]), np.array([5, 5])), 3)
    (update,) = feed.drain()  # the first send (pixels not written yet: nothing painted) is skipped
    assert update.item == 2 and update.image is not None and update.image.shape == (1, 100, 100)
    assert len(warnings) == 1 and "next Train" in warnings[0]
    labels.data_setitem((np.array([3]), np.array([7]), np.array([7])), 1)  # the same plane again: now known
    *_, again = feed.drain()
    assert again.item == 2 and again.image is None


def test_undo_sends_the_undone_box_again(stack_layers):
    labels, feed, _, _ = stack_layers
    labels.data_setitem((np.array([1]), np.array([30]), np.array([30])), 1)
    feed.drain()
    labels.undo()
    updates = feed.drain()
    assert updates and all(u.item == 0 for u in updates)
    assert any(u.start == (0, 0) and u.labels[30, 30] == 0 for u in updates)


def test_after_disconnect_nothing_is_sent(stack_layers):
    labels, feed, watcher, _ = stack_layers
    watcher.disconnect()
    labels.data_setitem((np.array([1]), np.array([30]), np.array([30])), 1)
    assert feed.drain() == []


def _trained_session(correct: bool):
    """Train on the left third of a nuclei image; with ``correct``, paint one object right of it as background during the run."""
    sample, viewer, session = nuclei_session(steps=60, patch_size=64, batch_size=8)
    annotations = session.new_annotations()
    session.settings = replace(session.settings, annotations=annotations.name)
    objects = sample.instances > 0
    strokes = np.zeros(objects.shape, np.uint8)
    strokes[:, :40] = np.where(objects[:, :40], 2, 1)  # the left third painted in full
    annotations.data = strokes
    # The largest object right of the painted part: the one the user calls background.
    right = np.where(np.arange(128)[None, :] >= 48, sample.instances, 0)
    corrected = sample.instances == int(np.bincount(right[right > 0]).argmax())

    def paint_correction(progress) -> None:
        if correct and session.stroke_watcher is not None and session.stroke_watcher.sent == 0:
            annotations.data_setitem(np.nonzero(corrected), 1)

    session.events.training_progress.connect(paint_correction)
    assert session.train()
    return session, corrected


@pytest.mark.usefixtures("one_torch_thread")
def test_a_correction_painted_while_training_changes_the_prediction_there():
    """No second Train: an object painted as background during the run is less of an object afterwards than without it."""
    plain, corrected = _trained_session(correct=False)
    session, _ = _trained_session(correct=True)
    assert plain.last_progress.strokes == 0
    assert session.last_progress.strokes >= 1 and 0 <= session.last_progress.stroke_latency < 5
    before = plain.last_prediction.probabilities[1][corrected].mean()
    after = session.last_prediction.probabilities[1][corrected].mean()
    assert after < before - 0.05, (before, after)
    assert session.stroke_watcher is None  # no listening after the run


def test_the_part_in_view():
    viewer = ViewerModel()
    layer = viewer.add_image(np.zeros((400, 600), np.float32), scale=(0.5, 0.5), translate=(10.0, 20.0))
    planes = Planes(layer.data, "YX")
    viewer.reset_view()
    assert visible_box(viewer, layer, planes) is None  # the whole plane shows
    cam = camera(viewer)
    cam.center, cam.zoom = (0.0, 60.0, 120.0), 8.0  # canvas 800 x 600: 100 x 75 world units in view
    box = visible_box(viewer, layer, planes)
    # Y: 60 +- 50 world -> pixels (10 - 10) / 0.5 .. (110 - 10) / 0.5; X: 120 +- 37.5 -> 125 .. 275.
    assert box == (slice(0, 200), slice(125, 275))
    viewer.dims.ndisplay = 3
    assert visible_box(viewer, layer, planes) is None


@pytest.mark.usefixtures("one_torch_thread")
def test_live_preview_predicts_the_part_in_view():
    """Zoomed in while training: the preview predicts (and writes) only what the canvas shows."""
    sample, viewer, session = nuclei_session((256, 256), steps=12, patch_size=64, batch_size=4, auto_predict=False)
    layer = viewer.layers["nuclei"]
    annotations = session.new_annotations()
    session.settings = replace(session.settings, annotations=annotations.name)
    objects = sample.instances > 0
    annotations.data = np.zeros(objects.shape, np.uint8)
    annotations.data[:, :80] = np.where(objects[:, :80], 2, 1)
    cam = camera(viewer)
    cam.center, cam.zoom = (0.0, 100.0, 150.0), 8.0
    box = visible_box(viewer, layer, Planes(layer.data, "YX"))
    assert box == (slice(50, 150), slice(112, 188))
    asked = []

    def preview(progress) -> None:
        if not asked:
            asked.append(progress.step)
            session.request_preview()

    session.events.training_progress.connect(preview)
    previews = []
    session.events.prediction_finished.connect(lambda: previews.append(viewer.layers["nuclei semantic"].data.copy()))
    assert session.train()
    assert len(previews) == 1
    semantic = previews[0]
    outside = np.ones(semantic.shape, bool)
    outside[box] = False
    assert semantic[box].any() and not semantic[outside].any()
    assert session.last_prediction is None  # a preview is not a prediction: nothing cached, no suggestions
