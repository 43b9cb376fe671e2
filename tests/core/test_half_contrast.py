"""Object edges at half contrast where strokes never show an edge (core/half_contrast.py)."""

import numpy as np
import pytest
from scipy import ndimage as ndi
from skimage.draw import disk

from napari_unet.core.half_contrast import MAX_OBJECT_SHARE, applies, edges_taught, object_share, place_edges


def _iou(a, b):
    return (a & b).sum() / (a | b).sum()


def _bright_and_dim(shape=(96, 128), background=0.2, seed=0):
    """A bright nucleus (10x) and a dim one, blurred, on an uneven background, with their true masks."""
    rng = np.random.default_rng(seed)
    bright, dim = np.zeros(shape, bool), np.zeros(shape, bool)
    bright[disk((48, 40), 10, shape=shape)] = True
    dim[disk((48, 64), 8, shape=shape)] = True  # 6 px from the bright one's edge
    clean = ndi.gaussian_filter(10.0 * bright + 1.0 * dim, 2.0)
    ramp = np.linspace(0.5, 1.5, shape[1])[None, :]
    image = clean + background * ramp + rng.normal(0, 0.05, shape)
    return image.astype(np.float32), bright, dim


def test_a_bright_nucleus_loses_its_halo_and_the_dim_one_beside_it_keeps_its_own_edge():
    image, bright, dim = _bright_and_dim()
    # What a classifier taught no edge may say: objects grown 4 px into
    # their blur, so the bright nucleus joins its dim neighbour.
    halo = ndi.binary_dilation(bright | dim, iterations=4)
    assert ndi.label(halo)[1] == 1 and _iou(halo, bright | dim) < 0.6
    probs = np.stack([~halo, halo]).astype(np.float32)
    out = place_edges(probs, image)
    kept = out[1] >= 0.5
    assert _iou(kept & ~dim, bright) > 0.9
    assert _iou(kept & ~bright, dim) > 0.9
    assert ndi.label(kept)[1] == 2  # the two are apart again
    # Only object pixels move, and they move to background.
    np.testing.assert_allclose(out.sum(0), 1.0)
    assert not (kept & ~halo).any()


def test_pixels_with_no_background_around_keep_their_answer():
    image, _, _ = _bright_and_dim()
    probs = np.stack([np.zeros(image.shape), np.ones(image.shape)]).astype(np.float32)
    np.testing.assert_array_equal(place_edges(probs, image), probs)


def test_a_textured_large_nucleus_is_not_cut_at_its_texture():
    """The peak is a local one (a few pixels): the darker parts inside a large nucleus stay in it."""
    rng = np.random.default_rng(1)
    shape = (128, 128)
    nucleus = np.zeros(shape, bool)
    nucleus[disk((64, 64), 40, shape=shape)] = True
    grain = ndi.gaussian_filter(rng.normal(size=shape), 3)
    texture = 1.0 + 0.3 * grain / grain.std()  # chromatin: 30 % of the mean, blobs of a few pixels
    image = ndi.gaussian_filter(np.where(nucleus, np.clip(texture, 0.3, None), 0.0), 1.5) + rng.normal(0, 0.03, shape)
    probs = np.stack([~nucleus, nucleus]).astype(np.float32)
    kept = place_edges(probs, image.astype(np.float32))[1] >= 0.5
    assert _iou(kept, nucleus) > 0.95


def _targets(shape=(64, 64)):
    """Fully painted (every object edge next to painted background) and sparse strokes (background 3 px away)."""
    objects = np.zeros(shape, bool)
    objects[disk((20, 20), 8, shape=shape)] = True
    objects[disk((44, 40), 9, shape=shape)] = True
    full = np.where(objects, 1, 0).astype(np.int16)
    sparse = np.full(shape, -1, np.int16)
    sparse[ndi.binary_erosion(objects, iterations=3)] = 1
    far = ~ndi.binary_dilation(objects, iterations=3)
    sparse[60:63, :][far[60:63, :]] = 0
    sparse[:, 2:4][far[:, 2:4]] = 0
    return full, sparse, objects


def test_fully_painted_regions_teach_edges_and_strokes_kept_away_from_objects_do_not():
    full, sparse, _ = _targets()
    assert edges_taught([full]) > 0.95
    assert edges_taught([sparse]) == 0.0
    assert edges_taught([np.full((8, 8), -1, np.int16)]) == 0.0  # no object painted


def _case(n_classes=2, ndim=2, tiled=False, channels=1, share=0.3, dark=False, taught=False):
    full, sparse, objects = _targets()
    image = np.where(objects, 0.2 if dark else 0.9, 0.5 if dark else 0.1).astype(np.float32)[None].repeat(channels, 0)
    probs = np.zeros((2,) + objects.shape, np.float32)
    covered = np.zeros(objects.size, bool)
    covered[: int(share * objects.size)] = True
    probs[1] = covered.reshape(objects.shape)
    probs[0] = 1 - probs[1]
    return dict(images=[image], probabilities=[probs], targets=[full if taught else sparse], n_classes=n_classes, ndim=ndim, tiled=tiled)


@pytest.mark.parametrize(
    "change",
    [{"ndim": 3}, {"n_classes": 3}, {"channels": 3}, {"tiled": True}, {"share": MAX_OBJECT_SHARE + 0.1}, {"dark": True}, {"taught": True}],
    ids=["3D model", "two object classes", "RGB", "cells tile the image", "objects cover most of it", "dark objects", "strokes teach edges"],
)
def test_half_contrast_applies_only_to_bright_objects_on_a_background_whose_edges_no_stroke_shows(change):
    assert applies(**_case())
    assert not applies(**_case(**change))
    assert not applies(**dict(_case(), probabilities=None))  # no forest: no answer to judge the background by


def test_object_share_counts_pixels_called_objects():
    probs = np.zeros((2, 4, 5), np.float32)
    probs[0] = 1.0
    probs[:, :2] = [[[0.2]], [[0.8]]]
    assert object_share([probs]) == pytest.approx(0.5)


def _sparse_nuclei(shape=(96, 160), seed=2):
    """Blurred nuclei, a few 10x brighter, with strokes inside some and background lines kept 3 px away."""
    rng = np.random.default_rng(seed)
    truth = np.zeros(shape, np.int32)
    n = 0
    for cy in range(14, shape[0] - 10, 24):
        for cx in range(14, shape[1] - 10, 24):
            n += 1
            truth[disk((cy + rng.integers(-2, 3), cx + rng.integers(-2, 3)), rng.integers(6, 9), shape=shape)] = n
    brightness = np.where(rng.random(n + 1) < 0.3, 10.0, 1.0)
    brightness[0] = 0
    image = ndi.gaussian_filter(brightness[truth], 2.0) + 0.2 + rng.normal(0, 0.05, shape)
    strokes = np.zeros(shape, np.uint8)
    cores = ndi.binary_erosion(truth > 0, iterations=3)
    strokes[:, : shape[1] // 2][cores[:, : shape[1] // 2]] = 2
    far = ~ndi.binary_dilation(truth > 0, iterations=3)
    lines = np.zeros(shape, bool)
    lines[::12, : shape[1] // 2] = True
    strokes[lines & far] = 1
    return image.astype(np.float32), truth, strokes


def test_a_model_trained_on_strokes_that_show_no_edge_places_edges_at_half_contrast_and_keeps_that_in_its_file(tmp_path):
    from napari_unet.core.segmenter import Segmenter
    from napari_unet.core.training import TrainConfig

    image, truth, strokes = _sparse_nuclei()
    seg = Segmenter(device="cpu")  # the default model: a forest's first answer, then the U-Net
    last = seg.fit(image, strokes, TrainConfig(steps=2, patch_size=32, batch_size=2, seed=0))
    assert last.half_contrast and seg.half_contrast and "half of the object's own peak" in seg.half_contrast_note()
    trimmed, _ = seg.segment(image)
    seg.half_contrast = False
    untrimmed, _ = seg.segment(image)
    seg.half_contrast = True
    assert _iou(trimmed > 0, truth > 0) > _iou(untrimmed > 0, truth > 0)
    assert not (trimmed & ~untrimmed).any()  # only object pixels become background
    loaded = Segmenter.load(seg.save(tmp_path / "m.pt"), device="cpu")
    assert loaded.half_contrast
    np.testing.assert_array_equal(loaded.segment(image)[0], trimmed)
    # Fully painted strokes show every edge: the model's own edges stand.
    full = np.where(truth > 0, 2, 1).astype(np.uint8)
    full[:, image.shape[1] // 2 :] = 0
    taught = Segmenter(device="cpu")
    assert not taught.fit(image, full, TrainConfig(steps=2, patch_size=32, batch_size=2, seed=0)).half_contrast
    assert taught.half_contrast_note() is None and not Segmenter.load(taught.save(tmp_path / "t.pt"), device="cpu").half_contrast
