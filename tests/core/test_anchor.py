import numpy as np
import pytest

from napari_unet.core.anchor import DENSE_COVERAGE, DENSE_WEIGHT, SPARSE_COVERAGE, SPARSE_WEIGHT, consistency_weight, stroke_coverage
from napari_unet.core.segmenter import Segmenter
from napari_unet.core.training import TrainConfig
from napari_unet.errors import UserInputError


def test_coverage_counts_labelled_pixels_of_painted_planes_only():
    target = np.full((4, 10, 10), -1, np.int16)
    target[1] = 0  # one plane painted in full, three blank
    assert stroke_coverage([target]) == 1.0
    target[2, :5] = 1  # half of a second plane
    assert stroke_coverage([target]) == pytest.approx(150 / 200)
    flat = np.full((10, 20), -1, np.int16)
    flat[:, :5] = 0
    assert stroke_coverage([flat]) == pytest.approx(0.25)
    # Several images pool their pixels; an image without strokes adds nothing.
    assert stroke_coverage([flat, np.full((10, 20), -1, np.int16), flat]) == pytest.approx(0.25)
    assert stroke_coverage([np.full((5, 5), -1, np.int16)]) == 0.0


def test_weight_is_firm_for_sparse_strokes_light_for_full_regions_and_continuous_between():
    assert consistency_weight(0.0) == SPARSE_WEIGHT
    assert consistency_weight(SPARSE_COVERAGE) == pytest.approx(SPARSE_WEIGHT)
    assert consistency_weight(DENSE_COVERAGE) == pytest.approx(DENSE_WEIGHT)
    assert consistency_weight(1.0) == pytest.approx(DENSE_WEIGHT)
    between = [consistency_weight(c) for c in np.linspace(SPARSE_COVERAGE, DENSE_COVERAGE, 21)]
    assert all(a > b for a, b in zip(between, between[1:]))
    assert max(abs(a - b) for a, b in zip(between, between[1:])) < 0.15  # no jump for one more stroke


def _strokes(truth: np.ndarray, full: bool) -> np.ndarray:
    """The left third painted in full, or thin lines every 12 rows (about 8 % of the image)."""
    every = np.where(truth > 0, 2, 1).astype(np.uint8)
    out = np.zeros_like(every)
    if full:
        out[:, : every.shape[1] // 3] = every[:, : every.shape[1] // 3]
    else:
        out[::12] = every[::12]
    return out


@pytest.mark.parametrize("full, expected", [(True, DENSE_WEIGHT), (False, None)])
def test_training_sets_the_weight_from_the_strokes_unless_given(blobs, full, expected):
    image, truth, _ = blobs
    strokes = _strokes(truth, full)
    coverage = np.count_nonzero(strokes) / strokes.size
    seg = Segmenter(device="cpu")
    reports = list(seg.train(image, strokes, TrainConfig(steps=2, seed=0, patch_size=32, batch_size=2)))
    assert reports[-1].anchor == pytest.approx(expected if expected is not None else consistency_weight(coverage))
    if not full:
        assert DENSE_WEIGHT < reports[-1].anchor < SPARSE_WEIGHT
    given = list(Segmenter(device="cpu").train(image, strokes, TrainConfig(steps=2, seed=0, patch_size=32, batch_size=2, forest_consistency=1.25)))
    assert given[-1].anchor == 1.25


def test_a_negative_weight_is_refused():
    with pytest.raises(UserInputError, match="forest-consistency"):
        TrainConfig(forest_consistency=-1.0)
