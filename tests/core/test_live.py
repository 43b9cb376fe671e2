"""Strokes painted while training runs (napari_unet.core.live) reach the running training."""

import threading

import numpy as np
import pytest

from napari_unet.core.live import StrokeFeed, StrokeUpdate, apply_update
from napari_unet.core.model import UNetConfig
from napari_unet.core.samples import IGNORE, LabelledImage, PatchSampler, prepare
from napari_unet.core.segmenter import Segmenter
from napari_unet.core.training import TrainConfig


def _item(shape=(32, 32), val=False):
    target = np.full(shape, IGNORE, np.int16)
    target[2:6, 2:30] = 0
    target[20:24, 20:24] = 1
    val_target = None
    if val:
        val_target = np.full(shape, IGNORE, np.int16)
        val_target[10:12, 10:12] = 0
    coords = {c: np.argwhere(target == c) for c in (0, 1)}
    return LabelledImage(np.zeros((1, *shape), np.float32), target, val_target, coords)


def test_update_replaces_the_box_and_keeps_the_rest():
    item = _item()
    labels = np.zeros((8, 8), np.uint8)
    labels[:4, :4] = 3  # class 2 painted where nothing was
    labels[4:, 4:] = 0  # erases part of the class-1 square (20:24, 20:24 lies in 16:24)
    labels[6:, 6:] = 9  # a class the model does not have: ignored
    applied = apply_update(item, StrokeUpdate(0, (16, 16), labels), n_classes=3)
    assert (item.train_target[16:20, 16:20] == 2).all()
    assert (item.train_target[20:24, 20:24] == IGNORE).all()
    assert set(map(tuple, item.train_coords[2])) == {(y, x) for y in range(16, 20) for x in range(16, 20)}
    assert len(item.train_coords[1]) == 0
    assert len(item.train_coords[0]) == 4 * 28  # outside the box: untouched
    assert len(applied.recent) == 16 and not applied.validation_changed
    for c, coords in item.train_coords.items():  # coordinates and targets agree
        assert sorted(map(tuple, coords)) == sorted(map(tuple, np.argwhere(item.train_target == c)))


def test_held_out_pixels_stay_held_out():
    item = _item(val=True)
    labels = np.full((4, 4), 2, np.uint8)  # repaint the held-out square as class 1, and around it
    applied = apply_update(item, StrokeUpdate(0, (9, 9), labels), n_classes=2)
    assert applied.validation_changed
    assert (item.val_target[10:12, 10:12] == 1).all()
    assert (item.train_target[10:12, 10:12] == IGNORE).all()
    assert (item.train_target[9, 9:13] == 1).all()
    assert len(applied.recent) == 16 - 4


def test_a_box_that_does_not_fit_is_refused():
    with pytest.raises(ValueError, match="does not fit"):
        apply_update(_item(), StrokeUpdate(0, (30, 30), np.ones((4, 4), np.uint8)), n_classes=2)


def test_feed_hands_over_in_order_across_threads():
    feed = StrokeFeed()
    threads = [threading.Thread(target=feed.put, args=(StrokeUpdate(0, (i,), np.ones(1, np.uint8)),)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(u.start[0] for u in feed.drain()) == list(range(20))
    assert feed.drain() == []


def test_recent_strokes_are_favoured_then_expire():
    rng = np.random.default_rng(0)
    data = prepare([np.zeros((1, 64, 64), np.float32)], [_item((64, 64)).train_target], 16, 0.0, rng)
    sampler = PatchSampler(data, 16, 8, False, rng)
    sampler.add_recent(0, np.array([[60, 60]]), batches=2, share=1.0)
    for _ in range(2):
        _, y = sampler.batch()
        assert (y == IGNORE).all()  # every patch centred on the (unlabelled) recent corner
    assert sampler.recent == []
    _, y = sampler.batch()
    assert (y != IGNORE).any()


def test_a_correction_painted_during_training_takes_effect(blobs):
    """Paint one object as background mid-run: the run takes it in and the prediction follows."""
    image, truth, ann = blobs
    # The object whose label the user corrects, and strokes that leave it unpainted at the start.
    target_id = int(np.bincount(truth[truth > 0]).argmax())
    obj = truth == target_id
    ann = ann.copy()
    ann[obj] = 0
    # The default model (forest + correction), as the widget trains it: a
    # small plain U-Net takes this contradiction (a disc like the others
    # called background) in too slowly for its answer to be tested at 80
    # steps (its mean probability ended at 0.51-0.54, depending on the
    # thread count and memory layout).
    seg = Segmenter(device="cpu")
    seg.fit(image, ann, TrainConfig(steps=20, patch_size=32, batch_size=4, seed=0, val_fraction=0))
    before = seg.predict_probabilities(image)[1][obj].mean()
    assert before > 0.5  # the object is seen as one

    feed = StrokeFeed()
    ys, xs = np.nonzero(obj)
    box = (slice(ys.min(), ys.max() + 1), slice(xs.min(), xs.max() + 1))
    labels = ann[box].copy()
    labels[obj[box]] = 1  # "this is background"
    reports = []
    for progress in seg.train(image, ann, TrainConfig(steps=80, patch_size=32, batch_size=4, seed=0), strokes=feed):
        reports.append(progress)
        if progress.step == 5:
            feed.put(StrokeUpdate(0, (ys.min(), xs.min()), labels))
    by_step = {r.step: r for r in reports if not r.done}
    assert by_step[5].strokes == 0 and by_step[6].strokes == 1  # taken in before the next step
    assert reports[-1].stroke_latency is not None and reports[-1].stroke_latency < 5
    after = seg.predict_probabilities(image)[1][obj].mean()
    assert after < 0.5 < before


def test_a_plane_painted_for_the_first_time_joins_the_run(blobs):
    image, _, ann = blobs
    seg = Segmenter(UNetConfig(1, 2, depth=2, width=8), device="cpu")
    feed = StrokeFeed()
    feed.put(StrokeUpdate(1, (0, 0), ann, image=image[None] * 2.0))  # a second, brighter plane
    reports = list(seg.train(image, ann, TrainConfig(steps=3, patch_size=32, batch_size=4, seed=0), strokes=feed))
    assert reports[-1].strokes == 1 and reports[-1].done


def test_without_strokes_a_run_is_as_before(blobs):
    """An empty feed changes nothing: same seed and steps, same weights."""
    image, _, ann = blobs
    weights = []
    for feed in (None, StrokeFeed()):
        seg = Segmenter(UNetConfig(1, 2, depth=2, width=8), device="cpu")
        seg.fit(image, ann, TrainConfig(steps=5, patch_size=32, batch_size=4, seed=0)) if feed is None else list(
            seg.train(image, ann, TrainConfig(steps=5, patch_size=32, batch_size=4, seed=0), strokes=feed)
        )
        weights.append(seg.predict_probabilities(image))
    np.testing.assert_array_equal(weights[0], weights[1])


def test_a_3d_model_takes_in_strokes_on_another_plane():
    """3D: a volume's box (one plane deep) joins the run; a volume painted for the first time too."""
    rng = np.random.default_rng(0)
    volume = rng.normal(0, 0.2, (8, 32, 32)).astype(np.float32)
    volume[:, 8:20, 8:20] += 1.0
    ann = np.zeros(volume.shape, np.uint8)
    ann[2, 10:18, 10:18] = 2
    ann[2, 24:30, 2:30] = 1
    seg = Segmenter(UNetConfig(1, 2, depth=2, width=4, filter_scales=1, ndim=3), device="cpu")
    feed = StrokeFeed()
    plane = np.zeros((1, 32, 32), np.uint8)
    plane[0, 10:18, 10:18] = 2
    plane[0, 0:4, :] = 1
    feed.put(StrokeUpdate(0, (6, 0, 0), plane))  # plane 6 of the painted volume
    feed.put(StrokeUpdate(1, (6, 0, 0), plane, image=volume[None] * 1.5))  # a second volume
    reports = list(seg.train(volume, ann, TrainConfig(steps=3, patch_size=64, batch_size=2, seed=0), strokes=feed, ndim=3))
    assert reports[-1].strokes == 2 and reports[-1].done


def test_validation_inputs_are_made_once_per_batch_and_again_after_a_refit(blobs, monkeypatch):
    """The validation batch's fixed inputs (filter bank, forest) are cached, and made again when strokes change the batch."""
    from napari_unet.core.model import UNet

    image, truth, ann = blobs
    made = []
    fixed = UNet.fixed_inputs

    def spy_fixed(self, x, forest_probs=None):
        if not self.training:  # validation runs in eval mode, training steps do not
            made.append(len(x))
        return fixed(self, x, forest_probs)

    monkeypatch.setattr(UNet, "fixed_inputs", spy_fixed)
    obj = truth == int(np.bincount(truth[truth > 0]).argmax())
    ys, xs = np.nonzero(obj)
    box = (slice(ys.min(), ys.max() + 1), slice(xs.min(), xs.max() + 1))
    labels = ann[box].copy()
    labels[obj[box]] = 1  # an object called background: the forest is refitted
    feed = StrokeFeed()
    seg = Segmenter(device="cpu")
    config = TrainConfig(steps=16, patch_size=32, batch_size=4, seed=0, val_every=2)
    counts = []
    for progress in seg.train(image, ann, config, strokes=feed):
        counts.append((progress.step, len(made)))
        if progress.step == 3:
            feed.put(StrokeUpdate(0, (ys.min(), xs.min()), labels))
    by_step = dict(counts)
    assert by_step[2] == by_step[3] > 0  # the step-2 validation reused the step-0 inputs
    assert by_step[16] > by_step[3]  # made again after the strokes changed and the forest was refitted
    assert by_step[16] == by_step[12]  # and reused again once nothing changes
