"""The widget's worker generators, run without Qt: throttling, snapshots, cancelling, stacks."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from napari_unet.core.inference import TileProgress
from napari_unet.core.jobs import (
    Prediction,
    StackPrediction,
    TrainingSet,
    painted_planes,
    predict_stack_steps,
    predict_steps,
    repostprocess,
    snapshot,
    train_steps,
)
from napari_unet.core.postprocess import InstanceParams
from napari_unet.core.segmenter import Segmenter
from napari_unet.core.stack import StackProgress
from napari_unet.core.training import TrainConfig, TrainProgress
from napari_unet.io.axes import Planes

CONFIG = TrainConfig(steps=6, patch_size=32, batch_size=2, seed=0, val_every=3)


def _run(generator):
    items = []
    try:
        while True:
            items.append(next(generator))
    except StopIteration as stop:
        return items, stop.value


def test_train_steps_throttles_but_keeps_the_last_report(blobs) -> None:
    image, _, annotations = blobs
    segmenter = Segmenter(device="cpu")
    reports = list(train_steps(segmenter, image, annotations, CONFIG, threading.Event(), interval=3600))
    assert [r.step for r in reports] == [1, 6] and reports[-1].done
    assert len(segmenter.history) == 7  # every step is in the history, whatever reaches the GUI


def test_stop_event_ends_training_and_keeps_a_model(blobs) -> None:
    image, _, annotations = blobs
    segmenter, stop = Segmenter(device="cpu"), threading.Event()
    steps = train_steps(segmenter, image, annotations, TrainConfig(steps=1000, patch_size=32, batch_size=2, seed=0), stop, interval=0)
    first = next(steps)
    stop.set()
    rest = list(steps)
    assert first.step == 1 and rest[-1].stopped and rest[-1].step < 5
    assert segmenter.is_trained and not segmenter.model.training


def test_snapshot_on_request_is_a_separate_frozen_copy(blobs) -> None:
    image, _, annotations = blobs
    segmenter, request = Segmenter(device="cpu"), threading.Event()
    request.set()
    items = list(train_steps(segmenter, image, annotations, CONFIG, threading.Event(), request, interval=0))
    copies = [item for item in items if isinstance(item, Segmenter)]
    assert len(copies) == 1 and not request.is_set()
    copy = copies[0]
    assert copy.model is not segmenter.model and not copy.model.training
    assert isinstance(items[0], TrainProgress) and items[1] is copy  # taken right after the first step
    moved = any(not torch.equal(a, b) for a, b in zip(copy.model.state_dict().values(), segmenter.model.state_dict().values()))
    assert moved  # later steps changed the original, not the copy


def _trained(blobs) -> Segmenter:
    image, _, annotations = blobs
    segmenter = Segmenter(device="cpu")
    list(train_steps(segmenter, image, annotations, CONFIG, threading.Event()))
    return segmenter


def test_predict_steps_reports_tiles_and_returns_labels(blobs) -> None:
    image = blobs[0]
    segmenter = _trained(blobs)
    params = InstanceParams(min_size=5)
    big = np.tile(image, (3, 3))  # 288² with 128² tiles: several tiles
    items, result = _run(predict_steps(snapshot(segmenter), big, params, tile=128, interval=0))
    assert all(isinstance(i, TileProgress) for i in items) and items[-1].done == items[-1].total > 1
    assert isinstance(result, Prediction) and result.params == params and result.index == ()
    assert result.probabilities.shape == (2,) + big.shape and result.semantic.shape == big.shape
    assert result.instances.dtype == np.uint32 and result.instances.max() > 0
    again = repostprocess(result, params)
    np.testing.assert_array_equal(again.instances, result.instances)


def test_predict_steps_can_be_cancelled_between_tiles(blobs) -> None:
    image = blobs[0]
    segmenter = _trained(blobs)
    cancel = threading.Event()
    cancel.set()
    items, result = _run(predict_steps(segmenter, np.tile(image, (3, 3)), InstanceParams(), cancel, tile=128))
    assert items == [] and result is None


def test_one_plane_of_a_stack_gets_ids_past_the_other_planes(blobs) -> None:
    image = blobs[0]
    segmenter = _trained(blobs)
    stack = np.stack([image, image[::-1], image[:, ::-1]])  # ZYX
    planes = Planes(stack, "ZYX")
    existing = np.zeros(stack.shape, np.uint32)
    existing[0, :5, :5] = 7
    existing[1, :5, :5] = 40  # the plane being predicted: its old ids do not count
    _, result = _run(predict_steps(segmenter, planes, InstanceParams(min_size=5), index=(1,), instances=existing))
    assert result.index == (1,) and result.id_offset == 7 and result.semantic.shape == image.shape
    ids = np.unique(result.instances[result.instances > 0])
    assert ids.min() == 8 and len(ids) > 3
    # Re-post-processing keeps the offset, and only the plane's probabilities are held.
    again = repostprocess(result, InstanceParams(min_size=6))
    assert again.index == (1,) and again.instances[again.instances > 0].min() == 8
    assert result.probabilities.shape == (2,) + image.shape


def test_whole_stack_in_memory_and_in_a_store(blobs, tmp_path) -> None:
    image = blobs[0]
    segmenter = _trained(blobs)
    stack = np.stack([image, image[::-1]])
    planes = Planes(stack, "TYX")
    items, result = _run(predict_stack_steps(segmenter, planes, InstanceParams(min_size=5), interval=0))
    assert all(isinstance(i, StackProgress) for i in items) and items[-1].fraction == 1.0
    assert isinstance(result, StackPrediction) and result.paths is None
    assert result.semantic.shape == stack.shape and all(result.semantic[t].any() for t in range(2))
    first, second = (set(np.unique(result.instances[t])) - {0} for t in range(2))
    assert first and second and not first & second  # ids unique across planes

    _, stored = _run(predict_stack_steps(segmenter, planes, InstanceParams(min_size=5), store_dir=tmp_path / "out"))
    assert stored.paths is not None and all(path.exists() for path in stored.paths)
    import zarr

    np.testing.assert_array_equal(zarr.open_array(str(stored.paths[1]), mode="r")[:], result.instances)

    cancel = threading.Event()
    cancel.set()
    _, none = _run(predict_stack_steps(segmenter, planes, InstanceParams(), cancel, store_dir=tmp_path / "cancelled"))
    assert none is None and not any((tmp_path / "cancelled").glob("*.zarr"))


def test_painted_planes_copies_only_painted_planes(blobs) -> None:
    image, _, annotations = blobs
    stack = np.stack([image] * 4)
    labels = np.zeros(stack.shape, np.uint8)
    labels[1], labels[3] = annotations, annotations
    images, painted = painted_planes(Planes(stack, "ZYX"), labels, copy_images=True)
    assert len(images) == len(painted) == 2 and images[0].shape == (1,) + image.shape
    labels[1] = 0  # painting after the copy does not change what trains
    assert painted[0].any() and not np.shares_memory(images[0], stack)
    assert TrainingSet(images, painted, [("a", 2), ("b", 3)]).describe() == "2 images, 5 painted planes"
    assert TrainingSet([], [], [("a", 1)]).describe("volume") == "1 image, 1 painted volume"


def test_snapshot_of_an_untrained_segmenter() -> None:
    copy = snapshot(Segmenter(device="cpu"))
    assert copy.model is None and copy.history == []


@pytest.mark.parametrize("interval", [0, 0.25])
def test_bad_annotations_raise_on_first_advance(blobs, interval) -> None:
    from napari_unet.errors import UserInputError

    image, _, _ = blobs
    steps = train_steps(Segmenter(device="cpu"), image, np.zeros(image.shape, np.uint8), CONFIG, threading.Event(), interval=interval)
    with pytest.raises(UserInputError, match="no annotations"):
        next(steps)
