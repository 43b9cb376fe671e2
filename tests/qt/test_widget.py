"""The napari dock widget, driven like a user would: paint, train, predict, correct, export.

Training runs for real (tiny patches, a few dozen steps, 1 torch thread:
on a shared 2-core machine Xvfb, the GUI thread and two OpenMP threads
oversubscribe the CPU and spin-waiting makes training crawl).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from napari.layers import Image, Labels
from scipy import ndimage as ndi

import napari_unet._qt.widget as widget_module
import napari_unet.plugin.session as session_module
from napari_unet import DISTRIBUTION
from napari_unet.core.history import run_lengths
from napari_unet.core.postprocess import UNCERTAINTY_SPREAD
from napari_unet.eval.metrics import foreground_iou
from napari_unet.eval.synthetic import make_nuclei
from napari_unet.plugin.colormaps import annotation_colormap

pytestmark = [pytest.mark.gui, pytest.mark.usefixtures("one_torch_thread")]

WIDGET_NAME = "U-Net segmentation"
#: Training settings of these tests: 64² patches, 8 per step.
PATCH, BATCH = 64, 8
#: The first training of the loop test.
LOOP_STEPS = 80
#: Foreground IoU of the loop test's first prediction against the generated truth.
#: Measured 0.740-0.754 with these settings and strokes (seeds 0-4, 1 thread;
#: 0.743 in the widget with seed 0). It cannot reach 1: the strokes call the
#: dim nuclei background. Predicting everything as foreground scores 0.14.
LOOP_IOU_BOUND = 0.6
#: The short retraining after a correction.
CORRECTION_STEPS = 40
TRAIN_TIMEOUT_MS = 240_000  # generous: the CPU is shared with other work


# -- fixtures and helpers ---------------------------------------------------------
@pytest.fixture(scope="module")
def sample():
    return make_nuclei((256, 256), seed=0)


@pytest.fixture
def notes() -> list[tuple[str, str]]:
    """Every notification the widget shows, as (level, message) (filled by :func:`dock`)."""
    return []


def dock(viewer, notes: list) -> widget_module.UNetWidget:
    """The plugin's widget docked in ``viewer``, its session's notifications collected in ``notes``."""
    _, widget = viewer.window.add_plugin_dock_widget(DISTRIBUTION, WIDGET_NAME)
    widget.session.events.notified.connect(lambda level, text: notes.append((level, text)))
    return widget


@pytest.fixture
def viewer_and_widget(make_napari_viewer, notes):
    viewer = make_napari_viewer()
    return viewer, dock(viewer, notes)


def errors(notes) -> list[str]:
    return [message for level, message in notes if level == "error"]


def dim_nuclei(sample) -> np.ndarray:
    """Mask of the generator's dim nuclei: less than 1.3x brighter than their surroundings."""
    ids = np.arange(1, int(sample.instances.max()) + 1)
    objects = sample.instances > 0
    inside = ndi.mean(sample.image.astype(float), sample.instances, ids)
    around = ndi.mean(sample.image.astype(float), ndi.grey_dilation(sample.instances, size=9) * ~objects, ids)
    return np.isin(sample.instances, ids[inside / around < 1.3])


def dense_strokes(sample, dim_as_background: bool = True) -> np.ndarray:
    """What a patient user paints: the sample's strokes, object cores (2) and a background ring (1).

    With ``dim_as_background`` the user first takes the dim nuclei for
    background and paints them 1: the mistake the loop test corrects.
    """
    objects = sample.instances > 0
    cores = ndi.binary_erosion(objects, iterations=1)
    strokes = sample.annotations.copy()
    strokes[ndi.binary_dilation(objects, iterations=5) & ~ndi.binary_dilation(objects, iterations=1)] = 1
    strokes[cores] = 2
    if dim_as_background:
        strokes[cores & dim_nuclei(sample)] = 1
    return strokes


def fast_settings(widget, steps: int, seed: int = 0, model_3d: bool = False) -> None:
    # Z stacks get a 3D U-Net by default; most tests check the 2D model plane by plane (faster).
    widget.advanced.model_3d.setChecked(model_3d)
    widget.advanced.patch_size.setValue(PATCH)
    widget.advanced.batch_size.setValue(BATCH)
    widget.advanced.budget_unit.setCurrentText("steps")
    widget.advanced.budget.setValue(steps)
    widget.session.seed = seed


def add_painted_sample(viewer, widget, sample, strokes=None):
    image = viewer.add_image(sample.image, name="nuclei", scale=(0.5, 0.25), translate=(10.0, -4.0))
    annotations = widget.new_annotations()
    annotations.data = dense_strokes(sample) if strokes is None else strokes
    return image, annotations


def wait_idle(qtbot, widget, timeout: int = 120_000) -> None:
    """Wait until no worker runs and no prediction is queued.

    A prediction's result (``prediction_finished``) arrives before its worker
    has ended, and a Predict pressed in between is queued behind it instead
    of starting: tests wait on this state, never on how fast the machine is.
    """
    qtbot.waitUntil(lambda: not widget.session.is_busy, timeout=timeout)


def train_and_wait(qtbot, widget, predictions: list | None = None) -> None:
    """Press Train, wait for the end of training (and of the automatic prediction)."""
    before = len(predictions) if predictions is not None else 0
    with qtbot.waitSignal(widget.training_finished, timeout=TRAIN_TIMEOUT_MS):
        widget.session.train()
    if predictions is not None:
        qtbot.waitUntil(lambda: len(predictions) > before, timeout=60_000)
    wait_idle(qtbot, widget)


def predictions_of(widget) -> list:
    seen: list = []
    widget.prediction_finished.connect(lambda: seen.append(widget.session.last_prediction.probabilities.copy()))
    return seen


# -- discovery, layers, files ------------------------------------------------------
def test_widget_is_found_through_the_manifest(viewer_and_widget) -> None:
    viewer, widget = viewer_and_widget
    assert isinstance(widget, widget_module.UNetWidget)
    assert not widget.training_panel.stop_button.isEnabled()
    assert "CPU" in widget.training_panel.device_label.text() or "CUDA" in widget.training_panel.device_label.text()


def test_new_annotations_match_the_image_and_are_ready_to_paint(viewer_and_widget, sample, notes) -> None:
    viewer, widget = viewer_and_widget
    image = viewer.add_image(np.zeros((300, 200), np.uint16), name="cells", scale=(2.0, 3.0), translate=(5.0, 7.0))
    layer = widget.new_annotations()
    assert isinstance(layer, Labels) and layer.name == "cells annotations"
    assert layer.data.shape == (300, 200) and layer.data.dtype == np.uint8 and not layer.data.any()
    np.testing.assert_array_equal(layer.scale, image.scale)
    np.testing.assert_array_equal(layer.translate, image.translate)
    assert layer.mode == "paint" and layer.selected_label == 1
    assert layer.brush_size == max(3, 200 // 64)
    assert viewer.layers.selection.active == layer  # the widget sees napari's proxies
    assert widget.data_panel.annotations_combo.currentText() == "cells annotations"
    # The legend's colours: 0 transparent, 1 background blue, 2 first class orange.
    colors = layer.colormap.map(np.array([0, 1, 2]))
    assert colors[0][3] == 0 and colors[1][3] > 0 and colors[2][3] > 0 and not np.allclose(colors[1], colors[2])
    # A second press selects the existing layer instead of piling up copies.
    assert widget.new_annotations() == layer
    assert len([lay for lay in viewer.layers if isinstance(lay, Labels)]) == 1


def test_new_on_the_samples_strokes_selects_them_with_the_legend_colours(viewer_and_widget) -> None:
    viewer, widget = viewer_and_widget
    viewer.open_sample(DISTRIBUTION, "nuclei")  # image, its strokes and the hidden truth
    assert widget.data_panel.image_combo.currentText() == "nuclei"
    assert widget.data_panel.annotations_combo.currentText() == "nuclei annotations"
    strokes = viewer.layers["nuclei annotations"]
    before = strokes.data.copy()
    assert widget.new_annotations() == strokes
    np.testing.assert_array_equal(strokes.data, before)
    np.testing.assert_allclose(strokes.colormap.map(np.array([1, 2])), annotation_colormap().map(np.array([1, 2])))


def test_layer_lists_follow_the_viewer(viewer_and_widget) -> None:
    viewer, widget = viewer_and_widget
    images = lambda: [widget.data_panel.image_combo.itemText(i) for i in range(widget.data_panel.image_combo.count())]  # noqa: E731
    labels = lambda: [widget.data_panel.annotations_combo.itemText(i) for i in range(widget.data_panel.annotations_combo.count())]  # noqa: E731
    a = viewer.add_image(np.zeros((8, 8)), name="a")
    viewer.add_image(np.zeros((8, 8)), name="b")
    viewer.add_labels(np.zeros((8, 8), int), name="b annotations")
    assert images() == ["a", "b"] and labels() == ["b annotations"]
    widget.data_panel.image_combo.setCurrentText("b")
    assert widget.data_panel.annotations_combo.currentText() == "b annotations"  # paired by name
    a.name = "renamed"
    assert images() == ["renamed", "b"]
    viewer.layers.remove("b")
    assert images() == ["renamed"]


def test_open_images_files_and_folders(viewer_and_widget, tmp_path, notes) -> None:
    import tifffile

    viewer, widget = viewer_and_widget
    folder = tmp_path / "stack"
    folder.mkdir()
    for i in range(2):
        tifffile.imwrite(folder / f"img{i}.tif", np.full((16, 12), i, np.uint16))
    (folder / "notes.txt").write_text("not an image")
    tifffile.imwrite(tmp_path / "single.tiff", np.ones((10, 10), np.uint8))
    (tmp_path / "broken.tif").write_bytes(b"garbage")

    added = widget.open_images([folder, tmp_path / "single.tiff", tmp_path / "broken.tif"])
    assert [layer.name for layer in added] == ["img0", "img1", "single"]
    assert all(isinstance(layer, Image) for layer in added)
    assert widget.data_panel.image_combo.currentText() == "single"
    assert any("broken.tif" in message for message in errors(notes))

    # An ImageJ hyperstack keeps its channels in one layer, channels first, and its annotations have no C.
    tifffile.imwrite(tmp_path / "hyper.tif", np.zeros((3, 2, 16, 12), np.uint16), imagej=True, metadata={"axes": "ZCYX"})
    [hyper] = widget.open_images([tmp_path / "hyper.tif"])
    assert hyper.data.shape == (2, 3, 16, 12) and hyper.metadata["axes"] == "CZYX"
    assert widget.new_annotations().data.shape == (3, 16, 12)
    assert widget.advanced.model_3d.isEnabled() and widget.prediction_panel.scope.isEnabled()


# -- errors --------------------------------------------------------------------------
def test_user_errors_are_notifications(viewer_and_widget, tmp_path, notes, qtbot, sample) -> None:
    viewer, widget = viewer_and_widget

    widget.session.train()
    assert "no image selected" in errors(notes)[-1]
    widget.predict()
    assert "no image selected" in errors(notes)[-1]

    viewer.add_image(sample.image, name="nuclei")
    widget.session.train()
    assert "no annotations layer" in errors(notes)[-1]

    widget.predict()
    assert "No model yet" in errors(notes)[-1]

    viewer.add_labels(np.zeros((10, 10), np.uint8), name="wrong size")
    widget.data_panel.annotations_combo.setCurrentText("wrong size")
    widget.session.train()
    assert "do not match" in errors(notes)[-1] or "shape" in errors(notes)[-1]

    bad_model = tmp_path / "model.pt"
    bad_model.write_bytes(b"not a model")
    assert widget.session.load_model(bad_model) is False
    assert "model.pt" in errors(notes)[-1]

    assert widget.session.export_labels(tmp_path / "x.tif") == []
    assert "Press Predict first" in errors(notes)[-1]
    assert widget.session.save_model(tmp_path / "none.pt") is None
    assert "no model" in errors(notes)[-1].lower()

    # Annotation problems found by the engine come back from the worker.
    annotations = widget.new_annotations()
    with qtbot.waitSignal(widget.training_finished, timeout=60_000):
        widget.session.train()
    assert "no annotations" in errors(notes)[-1]
    annotations.data[100:110, 100:110] = 1
    with qtbot.waitSignal(widget.training_finished, timeout=60_000):
        widget.session.train()
    assert "only background" in errors(notes)[-1]
    assert widget.training_panel.train_button.isEnabled() and not widget.session.is_training
    assert widget.training_panel.progress.format() == "training failed"
    assert not annotations.data[:100].any()  # the annotations were only read


def test_train_while_training_warns_and_keeps_the_run(viewer_and_widget, notes, qtbot, sample) -> None:
    viewer, widget = viewer_and_widget
    add_painted_sample(viewer, widget, sample)
    fast_settings(widget, steps=5000)
    widget.prediction_panel.auto_predict.setChecked(False)
    widget.session.train()
    qtbot.waitUntil(lambda: widget.session.last_progress is not None, timeout=TRAIN_TIMEOUT_MS)
    widget.session.train()
    assert notes[-1][0] == "warning" and "already running" in notes[-1][1]
    assert widget.session.is_training
    with qtbot.waitSignal(widget.training_finished, timeout=60_000):
        widget.stop()
    assert len(run_lengths(widget.session.segmenter.history)) == 1  # one run: the second press started nothing


# -- the loop ----------------------------------------------------------------------
@pytest.mark.slow
def test_paint_train_predict_correct_export_loop(viewer_and_widget, qtbot, sample, notes, tmp_path, monkeypatch) -> None:
    viewer, widget = viewer_and_widget
    image, annotations = add_painted_sample(viewer, widget, sample)
    painted = annotations.data.copy()
    fast_settings(widget, steps=LOOP_STEPS)
    predictions = predictions_of(widget)

    with qtbot.waitSignal(widget.training_finished, timeout=TRAIN_TIMEOUT_MS):
        widget.session.train()
        assert widget.session.is_training and widget.training_panel.stop_button.isEnabled() and not widget.training_panel.train_button.isEnabled()
    qtbot.waitUntil(lambda: len(predictions) == 1, timeout=60_000)  # "predict after training" is on
    assert not errors(notes)

    semantic, instances = viewer.layers["nuclei semantic"], viewer.layers["nuclei instances"]
    for layer, dtype in ((semantic, np.uint8), (instances, np.uint32)):
        assert isinstance(layer, Labels)
        assert layer.data.shape == sample.image.shape and layer.data.dtype == dtype
        np.testing.assert_array_equal(layer.scale, image.scale)
        np.testing.assert_array_equal(layer.translate, image.translate)
    iou = foreground_iou(semantic.data, sample.semantic)
    print(f"loop test: foreground IoU after {LOOP_STEPS} steps = {iou:.3f}")
    assert iou > LOOP_IOU_BOUND, f"foreground IoU {iou:.3f}"
    assert instances.data.max() >= 5
    np.testing.assert_array_equal(annotations.data, painted)  # prediction never writes annotations
    assert viewer.layers[-1] == annotations  # strokes stay on top

    assert run_lengths(widget.session.segmenter.history) == [LOOP_STEPS]
    assert len(widget.training_panel.loss_plot.curves.steps) == LOOP_STEPS and widget.training_panel.loss_plot.curves.val_steps
    assert widget.training_panel.loss_plot.draw_count >= 2
    assert f"trained 1 run, {LOOP_STEPS} steps" in widget.training_panel.model_label.text()
    assert widget.training_panel.progress.format().startswith(f"trained {LOOP_STEPS} steps")
    assert widget.training_panel.progress.format().endswith(f"kept step {widget.session.last_progress.best_step}")
    assert widget.training_panel.progress.toolTip().startswith("Kept the ")
    assert widget.session.segmenter.device_label in widget.training_panel.device_label.text()

    # Instance parameters re-run only post-processing, on cached probabilities.
    n_objects = int(instances.data.max())
    with monkeypatch.context() as patched:
        patched.setattr(session_module, "predict_steps", lambda *a, **k: pytest.fail("the network ran again"))
        with qtbot.waitSignal(widget.postprocess_finished, timeout=30_000):
            widget.prediction_panel.min_size.setValue(100_000)
        assert instances.data.max() == 0 and semantic.data.any()
        foreground = np.count_nonzero(semantic.data)
        with qtbot.waitSignal(widget.postprocess_finished, timeout=30_000):
            widget.prediction_panel.min_size.setValue(16)
            widget.prediction_panel.threshold.setValue(0.9)
        assert np.count_nonzero(semantic.data) < foreground and 0 < instances.data.max() <= n_objects + 5
        with qtbot.waitSignal(widget.postprocess_finished, timeout=30_000):
            widget.prediction_panel.threshold.setValue(0.5)
    assert not widget.session.is_predicting

    widget.prediction_panel.show_probabilities.setChecked(True)
    probability = viewer.layers["nuclei probability"]
    assert probability.data.shape == sample.image.shape and 0 <= probability.data.min() <= probability.data.max() <= 1
    # Uncertainty: highest where the two classes are closest (1 - margin), spread into the neighbourhood, in [0, 1].
    widget.prediction_panel.show_uncertainty.setChecked(True)
    uncertainty = viewer.layers["nuclei uncertainty"].data
    own = 1 - np.abs(2 * probability.data - 1)
    np.testing.assert_allclose(uncertainty, np.maximum(own, ndi.gaussian_filter(own, UNCERTAINTY_SPREAD)), atol=1e-5)
    widget.prediction_panel.show_uncertainty.setChecked(False)
    assert not viewer.layers["nuclei uncertainty"].visible
    # "Next region" takes the user to the most uncertain unpainted region, ready to paint.
    button = widget.prediction_panel.next_region_button
    assert button.isEnabled() and button.text().startswith("Next region (")
    viewer.layers.selection.active = semantic
    button.click()
    first = widget.session.suggestions[0]
    y, x = (np.asarray(viewer.camera.center[-2:]) - np.asarray(image.translate)) / np.asarray(image.scale)
    assert first.y0 <= y < first.y1 and first.x0 <= x < first.x1
    assert viewer.layers.selection.active == annotations  # (== : the widget's layers are napari's public proxies)
    assert str(annotations.mode) == "paint", annotations.mode

    # Export goes through the writer: smallest dtype, same values.
    import tifffile

    written, csv = widget.session.export_labels(tmp_path / "instances.tif", "instances")
    assert csv.endswith("instances_objects.csv")
    saved = tifffile.imread(written)
    assert saved.dtype == (np.uint8 if instances.data.max() < 256 else np.uint16)
    np.testing.assert_array_equal(saved, instances.data)
    [written] = widget.session.export_labels(tmp_path / "semantic", "semantic")
    assert written.endswith("semantic.tif")
    np.testing.assert_array_equal(tifffile.imread(written), semantic.data)

    # Correct the mistake: the dim nuclei, painted and predicted as background, become objects;
    # a short retrain from the current weights turns the prediction there.
    dim = dim_nuclei(sample) & (painted == 1)
    background = sample.instances == 0
    before = predictions[-1][1]
    corrected = painted.copy()
    corrected[dim] = 2
    annotations.data = corrected
    fast_settings(widget, steps=CORRECTION_STEPS, seed=1)
    train_and_wait(qtbot, widget, predictions)
    after = predictions[-1][1]
    assert before[dim].mean() < 0.5, "the first model should miss the dim nuclei it was told were background"
    assert after[dim].mean() > before[dim].mean() + 0.25, f"object probability on the dim nuclei: {before[dim].mean():.3f} -> {after[dim].mean():.3f}"
    assert after[background].mean() < before[background].mean() + 0.1  # the change is local
    assert run_lengths(widget.session.segmenter.history) == [LOOP_STEPS, CORRECTION_STEPS]
    assert widget.training_panel.loss_plot.curves.run_starts == [LOOP_STEPS]
    assert len(viewer.layers) == 6  # image, probability, uncertainty, semantic, instances, annotations: updated, not added
    assert not errors(notes)


@pytest.mark.slow
def test_stop_keeps_a_usable_model_and_train_continues(viewer_and_widget, qtbot, sample, notes) -> None:
    viewer, widget = viewer_and_widget
    add_painted_sample(viewer, widget, sample)
    budget = 5000
    fast_settings(widget, steps=budget)
    predictions = predictions_of(widget)
    widget.session.train()
    qtbot.waitUntil(lambda: widget.session.last_progress is not None and widget.session.last_progress.step >= 12, timeout=TRAIN_TIMEOUT_MS)
    with qtbot.waitSignal(widget.training_finished, timeout=30_000):
        started = time.perf_counter()
        widget.stop()
    assert time.perf_counter() - started < 10
    [steps] = run_lengths(widget.session.segmenter.history)
    assert 12 <= steps < budget
    assert widget.session.last_progress.stopped and widget.training_panel.progress.format().startswith("stopped")
    assert any(level == "info" and message.startswith("Training stopped at step") and "; kept the " in message for level, message in notes)
    qtbot.waitUntil(lambda: len(predictions) == 1, timeout=60_000)  # predicting works with the kept weights
    assert viewer.layers["nuclei semantic"].data.shape == sample.image.shape

    fast_settings(widget, steps=3)
    train_and_wait(qtbot, widget)
    assert run_lengths(widget.session.segmenter.history) == [steps, 3]  # continued, not restarted
    assert not errors(notes)


def test_save_and_load_model_restore_classes_history_and_plot(viewer_and_widget, qtbot, sample, notes, tmp_path) -> None:
    viewer, widget = viewer_and_widget
    add_painted_sample(viewer, widget, sample)
    fast_settings(widget, steps=12)
    predictions = predictions_of(widget)
    train_and_wait(qtbot, widget, predictions)
    path = widget.session.save_model(tmp_path / "model.pt")
    assert path is not None and path.is_file()

    widget.session.reset_model()
    assert widget.session.segmenter.model is None and not widget.training_panel.loss_plot.curves.steps
    widget.predict()
    assert "No model yet" in errors(notes)[-1]

    assert widget.session.load_model(path)
    assert "classes: background, class 1" in widget.training_panel.model_label.text()
    assert "trained 1 run, 12 steps" in widget.training_panel.model_label.text()
    assert len(widget.training_panel.loss_plot.curves.steps) == 12
    widget.predict()
    qtbot.waitUntil(lambda: len(predictions) == 2, timeout=60_000)
    np.testing.assert_allclose(predictions[1], predictions[0], atol=1e-5)  # same weights, same prediction


def test_a_model_that_knows_its_objects_size_sets_min_size(viewer_and_widget) -> None:
    """The session's suggestion (a model trained on objects painted whole) lands in Min size, which predictions read."""
    _, widget = viewer_and_widget
    widget.prediction_panel.min_size.setValue(16)
    widget.session.events.min_size_suggested.emit(40)
    assert widget.prediction_panel.min_size.value() == 40
    assert widget.settings().instance_params.min_size == 40


def test_closing_the_viewer_stops_training(make_napari_viewer, qtbot, sample, notes) -> None:
    viewer = make_napari_viewer()
    widget = dock(viewer, notes)
    add_painted_sample(viewer, widget, sample)
    fast_settings(widget, steps=5000)
    widget.session.train()
    qtbot.waitUntil(lambda: widget.session.last_progress is not None, timeout=TRAIN_TIMEOUT_MS)
    segmenter = widget.session.segmenter
    started = time.perf_counter()
    viewer.close()
    assert widget.session.runner.wait(0), "the training thread was still running after the viewer closed"
    assert time.perf_counter() - started < 15
    assert len(segmenter.history) < 5000 and not segmenter.model.training  # best weights restored, eval mode


@pytest.mark.slow
def test_predict_and_live_preview_while_training(viewer_and_widget, qtbot, sample, notes, monkeypatch) -> None:
    viewer, widget = viewer_and_widget
    add_painted_sample(viewer, widget, sample)
    fast_settings(widget, steps=5000)
    widget.prediction_panel.auto_predict.setChecked(False)
    widget.preview_timer.setInterval(500)  # instead of every few seconds
    widget.advanced.live_preview.setChecked(True)
    predictions = predictions_of(widget)
    widget.session.train()
    qtbot.waitUntil(lambda: widget.session.last_progress is not None, timeout=TRAIN_TIMEOUT_MS)
    widget.predict()  # served by a snapshot of the weights taken between two steps
    qtbot.waitUntil(lambda: len(predictions) >= 2, timeout=60_000)
    assert widget.session.is_training  # the predictions came while it trained
    assert viewer.layers["nuclei instances"].data.shape == sample.image.shape
    with qtbot.waitSignal(widget.training_finished, timeout=30_000):
        widget.stop()
    assert not errors(notes)


def test_buttons_call_the_actions(viewer_and_widget, qtbot, notes) -> None:
    from qtpy.QtCore import Qt

    viewer, widget = viewer_and_widget
    viewer.add_image(np.zeros((64, 64), np.uint16), name="cells")
    qtbot.mouseClick(widget.data_panel.new_annotations_button, Qt.MouseButton.LeftButton)
    assert "cells annotations" in [layer.name for layer in viewer.layers]
    qtbot.mouseClick(widget.prediction_panel.predict_button, Qt.MouseButton.LeftButton)
    assert "No model yet" in errors(notes)[-1]
    qtbot.mouseClick(widget.training_panel.train_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: not widget.session.is_training, timeout=60_000)
    assert "no annotations" in errors(notes)[-1]


# -- stacks, channels, several images, lazy layers (issue 5) ---------------------------
STACK_STEPS = 40


def blob_stack(planes: int, shape=(64, 64), truth: bool = False) -> tuple[np.ndarray, ...]:
    """A (Z, Y, X) stack of disc images (a different image per plane), full strokes per plane (and the truth)."""
    from tests.helpers import blobs_image

    made = [blobs_image(shape, seed=z) for z in range(planes)]
    stack, strokes = np.stack([m[0] for m in made]), np.stack([m[2] for m in made])
    return (stack, strokes, np.stack([m[1] for m in made])) if truth else (stack, strokes)


def wait_prediction(qtbot, widget, action) -> None:
    """Do ``action`` once the widget is idle and wait until the prediction it starts has ended."""
    wait_idle(qtbot, widget)
    with qtbot.waitSignal(widget.prediction_finished, timeout=120_000):
        action()
    wait_idle(qtbot, widget)


class CountingArray:
    """An array-like that records every read, for checking a layer is never read whole."""

    def __init__(self, data: np.ndarray) -> None:
        self.data, self.shape, self.dtype, self.ndim = data, data.shape, data.dtype, data.ndim
        self.reads: list[int] = []  # voxels per read

    def __getitem__(self, key):
        part = self.data[key]
        self.reads.append(int(np.size(part)))
        return part


def test_stack_annotated_on_two_planes_trains_and_predicts_every_plane(viewer_and_widget, qtbot, notes) -> None:
    viewer, widget = viewer_and_widget
    stack, strokes, truth = blob_stack(4, truth=True)
    image = viewer.add_image(stack, name="stack", scale=(2.0, 0.5, 0.5))
    annotations = widget.new_annotations()
    assert annotations.data.shape == stack.shape and annotations.metadata["napari_unet_image"] == "stack"
    np.testing.assert_array_equal(annotations.scale, image.scale)
    annotations.data[0] = strokes[0]
    annotations.data[2] = strokes[2]
    painted = annotations.data.copy()
    widget.update_training_status()
    assert widget.prediction_panel.scope.isEnabled() and widget.advanced.model_3d.isEnabled()
    assert widget.advanced.spatial_ndim() == 3  # a Z stack gets a 3D U-Net unless told otherwise
    assert widget.data_panel.training_status.text() == "Training on: 1 image, 1 painted volume"

    fast_settings(widget, steps=STACK_STEPS)  # here: the 2D model, plane by plane
    widget.update_training_status()
    assert widget.data_panel.training_status.text() == "Training on: 1 image, 2 painted planes"
    widget.prediction_panel.auto_predict.setChecked(False)
    train_and_wait(qtbot, widget)
    assert not errors(notes)
    assert widget.session.training_set.sources == [("stack", 2)]

    # The whole stack: every plane, painted or not, gets objects; a Z stack's are 3D objects
    # (one id across the planes an object spans), measured once each.
    widget.prediction_panel.scope.setCurrentText("whole stack")
    wait_prediction(qtbot, widget, widget.predict)
    semantic, instances = viewer.layers["stack semantic"], viewer.layers["stack instances"]
    assert semantic.data.shape == stack.shape and instances.data.shape == stack.shape
    np.testing.assert_array_equal(semantic.scale, image.scale)
    for z in range(4):
        assert instances.data[z].max() > 0, f"plane {z} is empty"
        iou = foreground_iou(semantic.data[z], truth[z] > 0)
        assert iou > 0.5, f"plane {z}: foreground IoU {iou:.2f}"
    ids = [set(np.unique(instances.data[z])) - {0} for z in range(4)]
    assert any(ids[z] & ids[z + 1] for z in range(3))  # discs overlapping in Z are one object
    every = set().union(*ids)
    assert sorted(instances.features["label"]) == sorted(every)  # one row per 3D object
    assert "volume_px" in instances.features.columns
    np.testing.assert_array_equal(annotations.data, painted)

    # Predict again during a whole-stack prediction cancels it; the layers are left as they were.
    before = semantic.data.copy()
    wait_idle(qtbot, widget)  # else this Predict is queued behind the ending one and shows no Cancel
    widget.predict()
    assert widget.prediction_panel.predict_button.text() == "Cancel"
    widget.predict()
    qtbot.waitUntil(lambda: not widget.session.is_predicting, timeout=60_000)
    assert widget.prediction_panel.predict_button.text() == "Predict" and widget.prediction_panel.predict_button.isEnabled()
    np.testing.assert_array_equal(semantic.data, before)

    # The current plane only: the plane the slider shows, nothing else.
    viewer.layers.remove(semantic)
    viewer.layers.remove(instances)
    widget.prediction_panel.scope.setCurrentText("current plane")
    viewer.dims.set_current_step(0, 1)
    wait_prediction(qtbot, widget, widget.predict)
    semantic, instances = viewer.layers["stack semantic"], viewer.layers["stack instances"]
    assert semantic.data.shape == stack.shape
    assert semantic.data[1].any() and not semantic.data[[0, 2, 3]].any() and not instances.data[[0, 2, 3]].any()
    assert widget.session.last_prediction.prediction.index == (1,) and widget.session.last_prediction.probabilities.shape == (2, 64, 64)

    # With "after training" on, moving the slider predicts the plane shown, in place.
    widget.prediction_panel.auto_predict.setChecked(True)
    wait_prediction(qtbot, widget, lambda: viewer.dims.set_current_step(0, 3))
    assert viewer.layers["stack semantic"] is semantic  # updated, not replaced
    assert semantic.data[3].any() and semantic.data[1].any() and not semantic.data[[0, 2]].any()
    assert not set(np.unique(instances.data[3])) - {0} & set(np.unique(instances.data[1])) - {0}
    assert widget.session.last_prediction.prediction.index == (3,)  # one plane's probabilities kept, not the stack's

    # The probability layer shows the last plane predicted, the only one whose probabilities are kept.
    widget.prediction_panel.show_probabilities.setChecked(True)
    probability = viewer.layers["stack probability"]
    assert probability.data.shape == stack.shape and probability.data[3].max() > 0.5 and not probability.data[1].any()

    # The sliders re-post-process the cached plane only.
    before = semantic.data.copy()
    with qtbot.waitSignal(widget.postprocess_finished, timeout=30_000):
        widget.prediction_panel.threshold.setValue(0.9)
    assert semantic.data[3].sum() < before[3].sum()
    np.testing.assert_array_equal(semantic.data[1], before[1])
    assert not errors(notes)


def test_rgb_layer_trains_and_predicts(viewer_and_widget, qtbot, notes) -> None:
    from tests.helpers import blobs_image

    viewer, widget = viewer_and_widget
    grey, _, strokes = blobs_image((64, 64), seed=1)
    scaled = np.clip((grey + 0.5) * 120, 0, 255).astype(np.uint8)
    rgb = np.stack([scaled, scaled // 2, 255 - scaled], axis=-1)
    viewer.add_image(rgb, name="colour", rgb=True)
    annotations = widget.new_annotations()
    assert annotations.data.shape == (64, 64)
    annotations.data = strokes
    assert not widget.prediction_panel.scope.isEnabled() and not widget.advanced.model_3d.isEnabled()
    fast_settings(widget, steps=STACK_STEPS)
    predictions = predictions_of(widget)
    train_and_wait(qtbot, widget, predictions)
    assert widget.session.segmenter.config.in_channels == 3
    semantic = viewer.layers["colour semantic"]
    assert semantic.data.shape == (64, 64) and semantic.data.any()
    assert foreground_iou(semantic.data, strokes == 2) > 0.3
    assert not errors(notes)


def test_two_images_with_their_own_annotations_train_together(viewer_and_widget, qtbot, notes) -> None:
    viewer, widget = viewer_and_widget
    stack, strokes = blob_stack(3)
    viewer.add_image(stack[0], name="a")
    widget.new_annotations().data = strokes[0]
    viewer.add_image(stack[1:], name="b")  # a 2-plane stack, painted on its second plane
    widget.data_panel.image_combo.setCurrentText("b")
    b_annotations = widget.new_annotations()
    b_annotations.data[1] = strokes[2]
    viewer.add_image(np.zeros((16, 16)), name="unpainted")
    viewer.add_labels(np.zeros((16, 16), np.uint8), name="unpainted annotations")
    widget.data_panel.image_combo.setCurrentText("b")
    assert widget.data_panel.annotations_combo.currentText() == "b annotations"
    fast_settings(widget, steps=5)  # the 2D model: image a has no Z axis to join a 3D one
    widget.update_training_status()
    assert widget.data_panel.train_all.isChecked() and widget.data_panel.train_all.isEnabled()
    assert widget.data_panel.training_status.text() == "Training on: 2 images, 2 painted planes"

    widget.prediction_panel.auto_predict.setChecked(False)
    train_and_wait(qtbot, widget)
    assert not errors(notes)
    assert widget.session.training_set.sources == [("b", 1), ("a", 1)]

    widget.data_panel.train_all.setChecked(False)
    widget.update_training_status()
    assert widget.data_panel.training_status.text() == "Training on: 1 image, 1 painted plane"


def test_lazy_and_multiscale_layers_predict_plane_by_plane(viewer_and_widget, qtbot, notes, monkeypatch) -> None:
    import dask.array as da

    viewer, widget = viewer_and_widget
    stack, strokes = blob_stack(3)
    plane = stack[0].size
    # Materialising a whole layer would go through one of these: record any call on a full-size array.
    whole: list[str] = []
    for name in ("__array__", "compute"):
        original = getattr(da.Array, name)

        def spy(self, *args, _original=original, _name=name, **kwargs):
            if self.shape == stack.shape:
                whole.append(_name)
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(da.Array, name, spy)
    source = CountingArray(stack)
    lazy = da.from_array(source, chunks=stack.shape)  # one chunk: only sliced reads stay small
    viewer.add_image(lazy, name="lazy", contrast_limits=(-1.0, 2.0))
    annotations = widget.new_annotations()
    annotations.data[1] = strokes[1]
    fast_settings(widget, steps=5)
    widget.prediction_panel.auto_predict.setChecked(False)
    train_and_wait(qtbot, widget)
    assert not errors(notes)
    assert widget.session.training_set.sources == [("lazy", 1)]

    source.reads.clear()
    widget.prediction_panel.scope.setCurrentText("whole stack")
    wait_prediction(qtbot, widget, widget.predict)
    assert viewer.layers["lazy semantic"].data.shape == stack.shape
    assert source.reads and max(source.reads) <= plane, "the lazy image was read more than a plane at a time"
    assert not whole, f"the whole lazy image was materialised ({whole})"

    # A multiscale layer is predicted on its full-resolution level.
    full = CountingArray(stack)
    levels = [da.from_array(full, chunks=stack.shape), da.from_array(stack[:, ::2, ::2], chunks=(1, 32, 32))]
    viewer.add_image(levels, name="pyramid", multiscale=True, contrast_limits=(-1.0, 2.0))
    widget.data_panel.image_combo.setCurrentText("pyramid")
    full.reads.clear()
    wait_prediction(qtbot, widget, widget.predict)
    semantic = viewer.layers["pyramid semantic"]
    assert semantic.data.shape == stack.shape  # full resolution
    assert full.reads and max(full.reads) <= plane
    assert not whole and not errors(notes)


def test_large_results_go_to_zarr_stores(viewer_and_widget, qtbot, notes, tmp_path, monkeypatch) -> None:
    import zarr

    viewer, widget = viewer_and_widget
    widget.session.results.large_labels = 100  # every result counts as large
    stack, strokes = blob_stack(2)
    viewer.add_image(stack, name="big")
    widget.new_annotations().data[0] = strokes[0]
    fast_settings(widget, steps=5)
    widget.prediction_panel.auto_predict.setChecked(False)
    train_and_wait(qtbot, widget)
    widget.advanced.results_folder.setText(str(tmp_path))

    # One plane: empty stores are made for the stack, and the plane written into them.
    viewer.dims.set_current_step(0, 1)
    wait_prediction(qtbot, widget, widget.predict)
    semantic = viewer.layers["big semantic"]
    assert isinstance(semantic.data, zarr.Array) and semantic.data.shape == stack.shape
    assert (tmp_path / "big-1" / "semantic.zarr").exists() and (tmp_path / "big-1" / "instances.zarr").exists()
    assert not semantic.data[0].any() and semantic.data[1].any()

    # The whole stack: written by the worker into new stores, then shown.
    widget.prediction_panel.scope.setCurrentText("whole stack")
    wait_prediction(qtbot, widget, widget.predict)
    instances = viewer.layers["big instances"]
    assert isinstance(instances.data, zarr.Array) and instances.data.shape == stack.shape
    assert (tmp_path / "big-2" / "instances.zarr").exists()
    assert viewer.layers["big semantic"].data[0].any()
    assert not errors(notes)


def test_two_channel_image_with_a_chosen_channel_axis(viewer_and_widget, qtbot, notes) -> None:
    from tests.helpers import blobs_image

    viewer, widget = viewer_and_widget
    grey, truth, strokes = blobs_image((64, 64), seed=2)
    two = np.stack([grey, np.random.default_rng(0).normal(0, 1, grey.shape).astype(np.float32)])  # signal + noise
    image = viewer.add_image(two, name="two", scale=(1.0, 0.5, 0.5))
    assert widget.advanced.model_3d.isEnabled()  # read as ZYX until told otherwise
    widget.advanced.channel_axis.setCurrentText("0")
    assert image.metadata["napari_unet_channel_axis"] == "0"
    assert not widget.advanced.model_3d.isEnabled() and not widget.prediction_panel.scope.isEnabled()
    annotations = widget.new_annotations()
    assert annotations.data.shape == (64, 64)
    np.testing.assert_array_equal(annotations.scale, (0.5, 0.5))
    annotations.data = strokes
    fast_settings(widget, steps=STACK_STEPS)
    predictions = predictions_of(widget)
    train_and_wait(qtbot, widget, predictions)
    assert widget.session.segmenter.config.in_channels == 2
    semantic = viewer.layers["two semantic"]
    assert semantic.data.shape == (64, 64) and foreground_iou(semantic.data, truth > 0) > 0.5
    assert not errors(notes)

    # The reader's axes do the same without a choice; a model refuses other channel counts in words.
    viewer.add_image(np.stack([grey] * 3), name="three", metadata={"axes": "CYX"})
    widget.data_panel.image_combo.setCurrentText("three")
    widget.predict()
    assert "channel" in errors(notes)[-1] and "3" in errors(notes)[-1]


def test_3d_unet_option_trains_on_volumes(viewer_and_widget, qtbot, notes) -> None:
    viewer, widget = viewer_and_widget
    stack, strokes = blob_stack(8, shape=(32, 32))
    viewer.add_image(np.zeros((32, 32)), name="flat")
    assert not widget.advanced.model_3d.isEnabled()  # no Z axis
    viewer.add_image(stack, name="volume")
    widget.data_panel.image_combo.setCurrentText("volume")
    assert widget.advanced.model_3d.isEnabled()
    widget.advanced.model_3d.setChecked(True)
    annotations = widget.new_annotations()
    annotations.data[2:6] = strokes[2:6]
    widget.update_training_status()
    assert widget.data_panel.training_status.text() == "Training on: 1 image, 1 painted volume"
    fast_settings(widget, steps=3, model_3d=True)
    widget.advanced.patch_size.setValue(32)
    widget.advanced.batch_size.setValue(2)
    predictions = predictions_of(widget)
    train_and_wait(qtbot, widget, predictions)
    assert not errors(notes)
    assert widget.session.segmenter.config.ndim == 3
    assert widget.session.last_prediction.probabilities.shape == (2,) + stack.shape  # the whole volume at once
    assert viewer.layers["volume semantic"].data.shape == stack.shape


def test_shape_mismatches_are_notifications(viewer_and_widget, qtbot, notes) -> None:
    viewer, widget = viewer_and_widget
    stack, strokes = blob_stack(2, shape=(32, 32))
    viewer.add_image(stack, name="stack")
    viewer.add_labels(strokes[0], name="flat strokes")
    widget.data_panel.annotations_combo.setCurrentText("flat strokes")
    widget.session.train()
    assert "do not match" in errors(notes)[-1] and "(2, 32, 32)" in errors(notes)[-1]
    assert not widget.session.is_training

    # A second image whose annotations do not fit is skipped with a warning, not a crash.
    widget.new_annotations().data[0] = strokes[0]
    viewer.add_image(np.zeros((20, 20)), name="other")
    viewer.add_labels(np.zeros((10, 10), np.uint8), name="other annotations").data[0, 0] = 1
    widget.data_panel.image_combo.setCurrentText("stack")
    widget.data_panel.annotations_combo.setCurrentText("stack annotations")
    fast_settings(widget, steps=3)
    widget.prediction_panel.auto_predict.setChecked(False)
    train_and_wait(qtbot, widget)
    assert any(level == "warning" and "Not training on 'other'" in message for level, message in notes)
    assert widget.session.training_set.sources == [("stack", 1)]

    # A channel axis that does not fit the image is refused in words.
    widget.advanced.channel_axis.setCurrentText("2")  # 32 "channels": allowed, but then the annotations do not fit
    widget.session.train()
    assert "do not match" in errors(notes)[-1]


# -- ecosystem: measurements, bioimage.io, menus, napari's task manager ---------------
def _object_ids(labels: np.ndarray) -> list[int]:
    return sorted(int(i) for i in np.unique(labels) if i)


def test_prediction_fills_the_features_table_export_writes_it_and_bioimageio(viewer_and_widget, qtbot, sample, notes, tmp_path) -> None:
    """One row per object in the instance layer's features, shown by napari's features table."""
    import csv
    import zipfile

    viewer, widget = viewer_and_widget
    image, _ = add_painted_sample(viewer, widget, sample)  # scale (0.5, 0.25): 0.125 per pixel
    fast_settings(widget, steps=8)
    widget.prediction_panel.threshold.setValue(0.05)  # objects even from a barely trained net
    train_and_wait(qtbot, widget, predictions_of(widget))
    assert not errors(notes)
    instances = viewer.layers["nuclei instances"]
    features = instances.features
    ids = _object_ids(instances.data)
    assert ids and features["label"].tolist() == ids and features["index"].tolist() == ids
    for column in ("class", "area_px", "area_scaled", "centroid_y", "bbox_x1", "mean_intensity", "mean_probability"):
        assert column in features.columns, column
    first = instances.data == ids[0]
    assert features["area_px"][0] == first.sum() and features["area_scaled"][0] == pytest.approx(first.sum() * 0.125)
    assert features["mean_intensity"][0] == pytest.approx(sample.image[first].mean())
    assert set(features["class"]) == {"class 1"}

    # napari's own features table (Layers ▸ Metadata ▸ Features table widget) lists the rows.
    _, table = viewer.window.add_plugin_dock_widget("napari", "Features table widget")
    viewer.layers.selection.active = instances
    qtbot.waitUntil(lambda: table.table.model().rowCount() == len(ids), timeout=10_000)

    # Post-processing again re-measures: rows follow the new objects.
    with qtbot.waitSignal(widget.postprocess_finished, timeout=60_000):
        widget.prediction_panel.threshold.setValue(0.5)
    assert instances.features["label"].tolist() == _object_ids(instances.data)

    written = widget.session.export_labels(tmp_path / "nuclei_instances.tif", "instances")
    assert [Path(p).name for p in written] == ["nuclei_instances.tif", "nuclei_objects.csv"]
    with open(tmp_path / "nuclei_objects.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["label"]) for r in rows] == instances.features["label"].tolist() and "index" not in rows[0]
    assert widget.session.export_labels(tmp_path / "sem.tif", "semantic") == [str(tmp_path / "sem.tif")]  # no CSV for semantic

    # Export to bioimage.io in the background (its bioimageio.core check runs in test_bioimageio.py).
    pytest.importorskip("bioimageio.spec")
    with qtbot.waitSignal(widget.export_finished, timeout=240_000) as done:
        assert widget.session.export_bioimageio(tmp_path / "nuclei.zip", test=False)
    assert done.args == [str(tmp_path / "nuclei.zip")]
    with zipfile.ZipFile(tmp_path / "nuclei.zip") as z:
        assert {"rdf.yaml", "weights_torchscript.pt", "cover.png"} <= set(z.namelist())
    assert widget.files_panel.bioimageio_button.isEnabled()


def test_stack_features_are_3d_objects_then_per_plane(viewer_and_widget, qtbot, notes) -> None:
    viewer, widget = viewer_and_widget
    stack, strokes = blob_stack(3)
    viewer.add_image(stack, name="stack")
    annotations = widget.new_annotations()
    annotations.data[0] = strokes[0]
    fast_settings(widget, steps=8)
    widget.prediction_panel.auto_predict.setChecked(False)
    widget.prediction_panel.threshold.setValue(0.05)
    train_and_wait(qtbot, widget)
    widget.prediction_panel.scope.setCurrentText("whole stack")
    wait_prediction(qtbot, widget, widget.predict)
    instances = viewer.layers["stack instances"]
    features = instances.features
    # A Z stack's objects are 3D: one row each, its volume over every plane it spans.
    assert features["label"].tolist() == _object_ids(instances.data)
    assert "z" not in features.columns
    for row in features.itertuples():
        assert np.count_nonzero(instances.data == row.label) == row.volume_px
        planes = np.flatnonzero([np.any(p == row.label) for p in instances.data])
        assert (row.bbox_z0, row.bbox_z1) == (planes.min(), planes.max() + 1)

    # One plane predicted again: objects lying only in it are replaced, the others kept.
    only_elsewhere = features[(features["bbox_z0"] != 1) | (features["bbox_z1"] != 2)]["label"].tolist()
    widget.prediction_panel.scope.setCurrentText("current plane")
    viewer.dims.set_current_step(0, 1)
    widget.prediction_panel.threshold.setValue(0.1)
    qtbot.waitUntil(lambda: not widget.session.is_busy, timeout=60_000)
    wait_prediction(qtbot, widget, widget.predict)
    after = instances.features
    assert after["label"].tolist() == _object_ids(instances.data)
    new_rows = after[after["z"] == 1]
    assert sorted(new_rows["label"]) == sorted(set(np.unique(instances.data[1])) - {0})
    assert set(after["label"]) - set(new_rows["label"]) == set(only_elsewhere) & set(_object_ids(instances.data))


def test_menu_commands_train_and_predict_and_training_is_a_napari_task(make_napari_viewer, qtbot, sample, notes) -> None:
    """Layers ▸ Segment ▸ Train / Predict; closing while training is announced by napari's task manager."""
    from napari._app_model import get_app_model

    from napari_unet.plugin import commands as _commands
    viewer = make_napari_viewer()
    menu = [item.command.id for item in get_app_model().menus.get_menu("napari/layers/segment") if hasattr(item, "command")]
    assert f"{DISTRIBUTION}.train" in menu and f"{DISTRIBUTION}.predict" in menu
    image = viewer.add_image(sample.image, name="nuclei")
    viewer.layers.selection.active = image
    widget = _commands.dock_widget(viewer)  # docked by the command; the same widget every time
    assert _commands.dock_widget(viewer) is widget
    annotations = widget.new_annotations()
    annotations.data = dense_strokes(sample)
    fast_settings(widget, steps=400)
    widget.prediction_panel.auto_predict.setChecked(False)
    viewer.layers.selection.active = annotations  # the command finds the image the strokes belong to
    manager = viewer.window._task_status_manager
    with qtbot.waitSignal(widget.training_finished, timeout=TRAIN_TIMEOUT_MS):
        _commands.train(viewer)
        assert widget.session.is_training
        qtbot.waitUntil(lambda: widget.session.last_progress is not None, timeout=TRAIN_TIMEOUT_MS)
        status = manager.get_status()
        # Only ours, in words (napari's generic "napari-worker: <function ...>" entry is not added).
        assert len(status) == 1 and status[0].startswith("napari-unet: training the U-Net on 'nuclei'"), status
        widget.stop()
    assert not manager.is_busy()
    with qtbot.waitSignal(widget.prediction_finished, timeout=120_000):
        _commands.predict(viewer)
    assert "nuclei instances" in viewer.layers and not errors(notes)
