"""The widget's worker generators, run without Qt: throttling, snapshots, cancelling."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from napari_unet._workers import Prediction, predict_steps, repostprocess, snapshot, train_steps
from napari_unet.core.inference import TileProgress
from napari_unet.core.postprocess import InstanceParams
from napari_unet.core.segmenter import Segmenter
from napari_unet.core.training import TrainConfig, TrainProgress

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


def test_predict_steps_reports_tiles_and_returns_labels(blobs) -> None:
    image, _, annotations = blobs
    segmenter = Segmenter(device="cpu")
    list(train_steps(segmenter, image, annotations, CONFIG, threading.Event()))
    params = InstanceParams(min_size=5)
    big = np.tile(image, (3, 3))  # 288² with 128² tiles: several tiles
    original_iter = segmenter.iter_predict
    segmenter.iter_predict = lambda im: original_iter(im, tile=128, overlap=16)
    items, result = _run(predict_steps(snapshot(segmenter), big, params))
    assert all(isinstance(i, TileProgress) for i in items) and items[-1].done == items[-1].total > 1
    assert isinstance(result, Prediction) and result.params == params
    assert result.probabilities.shape == (2,) + big.shape and result.semantic.shape == big.shape
    again = repostprocess(result.probabilities, params)
    np.testing.assert_array_equal(again.instances, result.instances)


def test_predict_steps_can_be_cancelled_between_tiles(blobs) -> None:
    image, _, annotations = blobs
    segmenter = Segmenter(device="cpu")
    list(train_steps(segmenter, image, annotations, CONFIG, threading.Event()))
    cancel = threading.Event()
    cancel.set()
    segmenter.iter_predict = (lambda original: lambda im: original(im, tile=64, overlap=16))(segmenter.iter_predict)
    items, result = _run(predict_steps(segmenter, np.tile(image, (2, 2)), InstanceParams(), cancel))
    assert len(items) == 1 and result is None


def test_snapshot_of_an_untrained_segmenter() -> None:
    copy = snapshot(Segmenter(device="cpu"))
    assert copy.model is None and copy.history == []


@pytest.mark.parametrize("interval", [0, 0.25])
def test_bad_annotations_raise_on_first_advance(blobs, interval) -> None:
    from napari_unet.core.errors import UserInputError

    image, _, _ = blobs
    steps = train_steps(Segmenter(device="cpu"), image, np.zeros(image.shape, np.uint8), CONFIG, threading.Event(), interval=interval)
    with pytest.raises(UserInputError, match="no annotations"):
        next(steps)
