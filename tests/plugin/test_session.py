"""The widget's session without Qt: the paint -> train -> predict -> correct -> retrain -> export loop on a viewer model.

Runs the real engine (a few dozen steps on 64² patches) through
:class:`~napari_unet.plugin.runner.InlineRunner`, which runs each job at
once on this thread, so no window, event loop or waiting is involved.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import tifffile
from scipy import ndimage as ndi

from napari_unet.core.history import run_lengths
from napari_unet.core.postprocess import InstanceParams
from napari_unet.eval.metrics import foreground_iou
from tests.helpers import nuclei_session

STEPS = 40
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def loop():
    """A viewer model with a generated nuclei image, a session on it, and what it tells its listeners."""
    sample, viewer, session = nuclei_session(steps=STEPS, patch_size=64, batch_size=8)
    heard: list[str] = []
    for name in ("training_started", "training_finished", "prediction_finished", "prediction_ended", "postprocess_finished", "model_changed"):
        getattr(session.events, name).connect(lambda *_, name=name: heard.append(name))
    messages: list[tuple[str, str]] = []
    session.events.notified.connect(lambda level, text: messages.append((level, text)))
    return sample, viewer, session, heard, messages


def strokes_of(sample) -> np.ndarray:
    """Object cores (2) and a background ring (1) around every other nucleus."""
    objects = sample.instances > 0
    painted = np.zeros(sample.image.shape, np.uint8)
    keep = np.isin(sample.instances, np.arange(1, sample.instances.max() + 1, 2))
    painted[ndi.binary_dilation(keep, iterations=4) & ~ndi.binary_dilation(objects, iterations=1)] = 1
    painted[ndi.binary_erosion(keep, iterations=1)] = 2
    return painted


@pytest.mark.slow
def test_paint_train_predict_correct_retrain_export_without_qt(loop, tmp_path) -> None:
    sample, viewer, session, heard, messages = loop
    assert session.training_status() == "Training on: nothing yet (choose an image and its annotations)"
    annotations = session.new_annotations()
    session.settings = replace(session.settings, annotations=annotations.name)
    assert session.training_status() == "Training on: nothing painted yet"
    annotations.data = strokes_of(sample)
    painted = annotations.data.copy()
    assert session.training_status() == "Training on: 1 image, 1 painted plane"

    assert session.train()
    # Training ended, then "predict after training" wrote the layers.
    assert heard[:3] == ["training_started", "training_finished", "prediction_finished"], heard
    assert not [m for m in messages if m[0] == "error"], messages
    assert run_lengths(session.segmenter.history) == [STEPS]
    assert session.last_progress.step == STEPS and not session.training_failed
    semantic, instances = viewer.layers["nuclei semantic"], viewer.layers["nuclei instances"]
    first_iou = foreground_iou(semantic.data, sample.semantic)
    assert first_iou > 0.5, first_iou
    assert instances.data.max() >= 3
    np.testing.assert_array_equal(annotations.data, painted)  # predictions never write the annotations
    # Result layers are never offered for training or painting.
    images, labels = session.layer_choices()
    assert images == ["nuclei"] and labels == [annotations.name]

    # Where to paint next: the most uncertain unpainted region, shown with the annotations ready to paint.
    assert session.suggestions and heard.count("prediction_finished") == 1
    region = session.next_region()
    assert region == session.suggestions[0]
    assert region.y0 <= viewer.camera.center[-2] < region.y1 and region.x0 <= viewer.camera.center[-1] < region.x1
    assert viewer.layers.selection.active is annotations and annotations.mode == "paint"
    painted_there = annotations.data.copy()
    painted_there[region.y0 : region.y1, region.x0 : region.x1] = np.where(sample.semantic[region.y0 : region.y1, region.x0 : region.x1] > 0, 2, 1)
    annotations.data = painted_there
    assert (session.suggest()[0].y0, session.suggest()[0].x0) != (region.y0, region.x0)  # painted: no longer first
    annotations.data = painted

    # Instance parameters re-run post-processing only, on the cached probabilities.
    session.settings = replace(session.settings, instance_params=InstanceParams(min_size=100_000))
    session.start_postprocess()
    assert heard[-1] == "postprocess_finished" and instances.data.max() == 0 and semantic.data.any()
    session.settings = replace(session.settings, instance_params=InstanceParams())
    session.start_postprocess()
    assert instances.data.max() >= 3
    # A model that learned its objects tile the image (cells between membranes) seeds them by their cores.
    assert not session.instance_params().tiled and not session.last_prediction.prediction.params.tiled
    session.segmenter.tiled = True
    count = heard.count("postprocess_finished")
    session.start_postprocess()
    assert session.last_prediction.prediction.params.tiled and heard.count("postprocess_finished") == count + 1
    session.segmenter.tiled = False

    # Correct: paint the truth where the prediction is wrong, retrain from the current weights.
    wrong = (semantic.data > 0) != (sample.semantic > 0)
    corrected = annotations.data.copy()
    corrected[wrong & (annotations.data == 0)] = np.where(sample.semantic[wrong & (annotations.data == 0)] > 0, 2, 1)
    annotations.data = corrected
    assert session.train()
    assert run_lengths(session.segmenter.history) == [STEPS, STEPS]
    assert heard.count("prediction_finished") == 2
    # The correction took: most pixels painted over are now right, and the rest did not suffer.
    still_wrong = ((semantic.data > 0) != (sample.semantic > 0))[wrong]
    assert still_wrong.mean() < 0.5, still_wrong.mean()
    assert foreground_iou(semantic.data, sample.semantic) > first_iou - 0.05

    written = session.export_labels(tmp_path / "nuclei_instances.tif")
    assert written[0].endswith("nuclei_instances.tif") and written[1].endswith("_objects.csv")
    np.testing.assert_array_equal(tifffile.imread(written[0]), instances.data)
    model = session.save_model(tmp_path / "model.pt")
    session.reset_model()
    assert not session.segmenter.is_trained and heard[-1] == "model_changed"
    assert session.load_model(model) and session.segmenter.is_trained
    assert run_lengths(session.segmenter.history) == [STEPS, STEPS]


def test_what_cannot_be_done_is_said_and_changes_nothing(loop, tmp_path) -> None:
    sample, viewer, session, heard, messages = loop
    session.predict()
    assert messages[-1] == ("error", "No model yet: train one (Train) or load a model file (Load model…) first.")
    assert not session.train()
    assert "no annotations layer" in messages[-1][1]
    annotations = session.new_annotations()
    session.settings = replace(session.settings, annotations=annotations.name)
    session.train()  # nothing painted: the training job says so, as one line
    assert "no annotations" in messages[-1][1] and session.training_failed and not session.is_busy
    assert session.segmenter.model is None or not session.segmenter.is_trained
    assert session.export_labels(tmp_path / "x.tif") == [] and "Nothing to export" in messages[-1][1]
    annotations.data = strokes_of(sample)
    session.settings = replace(session.settings, image="gone")
    assert not session.train() and "no image selected" in messages[-1][1]
    assert "prediction_finished" not in heard and len(viewer.layers) == 2


def test_objects_painted_whole_get_a_hint_once(loop) -> None:
    """Objects painted up to their outline: an info note names the option (left off), once per session."""
    sample, viewer, session, heard, messages = loop
    annotations = session.new_annotations()
    session.settings = replace(session.settings, annotations=annotations.name, steps=2, auto_predict=False)
    whole = np.where(sample.instances > 0, 2, 0).astype(np.uint8)
    whole[0][sample.instances[0] == 0] = 1
    annotations.data = whole
    assert session.train()
    assert session.train()
    hints = [m for m in messages if "look painted whole" in m[1]]
    assert len(hints) == 1 and hints[0][0] == "info" and '"Objects are painted whole"' in hints[0][1], messages
    assert not session.settings.whole_objects


def test_objects_painted_whole_raise_the_min_size(loop) -> None:
    """Trained on objects painted whole, the model says how small an object may be: an event for Min size and an info note."""
    sample, viewer, session, heard, messages = loop
    sizes = []
    session.events.min_size_suggested.connect(sizes.append)

    def set_min_size(size: int) -> None:  # what the widget's Min size does with the event
        session.settings = replace(session.settings, instance_params=replace(session.settings.instance_params, min_size=size))

    session.events.min_size_suggested.connect(set_min_size)
    annotations = session.new_annotations()
    session.settings = replace(session.settings, annotations=annotations.name, steps=2, auto_predict=False, whole_objects=True)
    whole = np.where(sample.instances > 0, 2, 0).astype(np.uint8)
    whole[0][sample.instances[0] == 0] = 1
    whole[:, whole.shape[1] // 2 :] = 0
    annotations.data = whole
    assert session.train()
    size = session.segmenter.min_object_size
    assert size is not None and size > 16 and sizes == [size] and session.settings.instance_params.min_size == size
    said = [m for m in messages if f"Min size is now {size} px" in m[1]]
    assert len(said) == 1 and said[0][0] == "info", messages
    session.settings = replace(session.settings, whole_objects=False)
    assert session.train()
    # The option off: no size rule, and Min size goes back to the default it was raised from.
    assert session.segmenter.min_object_size is None and sizes == [size, 16]
    assert any("Min size is back to 16 px" in m[1] for m in messages)
    # A Min size the user chose stays.
    session.settings = replace(session.settings, whole_objects=True)
    assert session.train() and sizes == [size, 16, size]
    set_min_size(50)
    session.reset_model()
    assert sizes == [size, 16, size] and session.settings.instance_params.min_size == 50


def test_a_dropped_whole_objects_option_is_said(loop, monkeypatch) -> None:
    """When the rings cut objects apart (core/implied.py), a warning says the option was ignored for this run."""
    import napari_unet.core.implied as implied

    sample, viewer, session, heard, messages = loop
    monkeypatch.setattr(implied, "CUT_SHARE", 100.0)  # every found object counts as cut
    annotations = session.new_annotations()
    session.settings = replace(session.settings, annotations=annotations.name, steps=2, auto_predict=False, whole_objects=True)
    whole = np.where(sample.instances > 0, 2, 0).astype(np.uint8)
    whole[0][sample.instances[0] == 0] = 1
    whole[:, whole.shape[1] // 2 :] = 0  # the right half unpainted: objects are found there
    annotations.data = whole
    assert session.train()
    said = [m for m in messages if "strokes as painted" in m[1]]
    assert len(said) == 1 and said[0][0] == "warning" and said[0][1].startswith('"Objects are painted whole" was ignored'), messages
    assert session.last_progress.rings_dropped
