import numpy as np
import pytest

from napari_unet.core.inference import blend_window, fitted_tile, tile_starts
from napari_unet.core.model import UNetConfig
from napari_unet.core.segmenter import Segmenter
from napari_unet.core.training import TrainConfig


@pytest.mark.parametrize("length, tile, overlap", [(100, 32, 8), (32, 32, 8), (20, 32, 8), (1000, 512, 48), (513, 512, 48)])
def test_tiles_cover_everything_with_overlap(length, tile, overlap):
    starts = tile_starts(length, tile, overlap)
    covered = np.zeros(length, bool)
    for s in starts:
        covered[s : s + tile] = True
        assert 0 <= s and s + min(tile, length) <= length
    assert covered.all()
    assert all(b - a <= tile - overlap for a, b in zip(starts, starts[1:]))


def test_blend_window_is_smooth_and_positive():
    w = blend_window(64, 16)
    assert w.min() > 0 and w.max() == 1
    assert np.all(np.diff(w[:16]) > 0)
    assert np.allclose(w, w[::-1])


@pytest.fixture(scope="module")
def trained():
    from tests.helpers import blobs_image

    image, truth, ann = blobs_image((96, 96))
    seg = Segmenter(UNetConfig(1, 2, depth=3, width=8), device="cpu")
    seg.fit(image, ann, TrainConfig(steps=40, patch_size=48, batch_size=4, seed=0, learning_rate=1e-2))
    big = np.tile(image, (3, 2))[:250, :170]
    return seg, big


def test_tiled_matches_untiled(trained):
    seg, image = trained
    whole = seg.predict_probabilities(image, tile=1024)
    tiled = seg.predict_probabilities(image, tile=128, overlap=64)
    assert tiled.shape == whole.shape == (2, 250, 170)
    assert np.allclose(tiled.sum(0), 1, atol=1e-5)
    # Tile borders lack the far context the filter bank and the U-Net see in a
    # whole-image pass; the overlap's blending keeps the difference small.
    assert np.abs(tiled - whole).max() < 0.08
    assert np.mean(tiled.argmax(0) == whole.argmax(0)) > 0.999


def test_prediction_writes_into_a_given_array(trained, tmp_path):
    seg, image = trained
    out = np.lib.format.open_memmap(tmp_path / "p.npy", mode="w+", dtype=np.float32, shape=(2,) + image.shape)
    items = list(seg.iter_predict(image, out=out, tile=64, overlap=16))
    progress, result = items[:-1], items[-1]
    assert result is out
    assert progress[-1].done == progress[-1].total == len(progress)
    assert np.allclose(np.asarray(out).sum(0), 1, atol=1e-5)


def test_predict_refuses_wrong_channels_and_no_model(trained):
    from napari_unet.errors import UserInputError

    seg, image = trained
    with pytest.raises(UserInputError, match="channel"):
        seg.predict_probabilities(np.stack([image, image]))
    with pytest.raises(UserInputError, match="no model"):
        Segmenter(device="cpu").predict_probabilities(image)


@pytest.mark.parametrize("tile", [32, 48, 64])
def test_tiles_no_larger_than_the_overlap_still_predict(trained, tile):
    # The default overlap is 64: a smaller tile must not give tiles no stride.
    seg, image = trained
    small = image[:100, :90]
    probs = seg.predict_probabilities(small, tile=tile)
    whole = seg.predict_probabilities(small, tile=1024)
    assert probs.shape == whole.shape
    assert (probs.argmax(0) == whole.argmax(0)).mean() > 0.95


@pytest.mark.parametrize("length", [64, 512, 520, 1000, 2048, 3000, 8192])
def test_fitted_tiles_cover_with_as_few_tiles_and_no_larger(length):
    tile, overlap, multiple = 512, 64, 16
    fitted = fitted_tile(length, tile, overlap, multiple)
    assert fitted <= max(tile, length) and (fitted == length or fitted % multiple == 0)
    starts = tile_starts(length, fitted, overlap)
    assert len(starts) == len(tile_starts(length, tile, overlap))
    assert starts[-1] + fitted >= length and all(b - a <= fitted - overlap for a, b in zip(starts, starts[1:]))
    if length == 2048:
        assert fitted == 464  # 25 tiles of 464² instead of 512²: 18 % fewer pixels through the network
