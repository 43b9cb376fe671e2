import numpy as np
import pytest

from napari_unet.core.suggest import rank_regions, window_side


def test_the_most_uncertain_unpainted_window_comes_first() -> None:
    uncertainty = np.full((100, 100), 0.1, np.float32)
    uncertainty[50:, 50:] = 0.9  # one window of 50 x 50 very unsure
    uncertainty[:50, 50:] = 0.6
    regions = rank_regions(uncertainty, side=50)
    assert [(r.y0, r.x0) for r in regions[:2]] == [(50, 50), (0, 50)]
    assert regions[0].score == pytest.approx(0.9) and regions[0].center == (74.5, 74.5)
    # Painted regions rank lower; a fully painted one is never suggested.
    strokes = np.zeros((100, 100), np.uint8)
    strokes[50:, 50:75] = 2  # half of the best window painted
    strokes[:50, 50:] = 1  # the second one painted whole
    ranked = rank_regions(uncertainty, strokes, side=50)
    assert [(r.y0, r.x0) for r in ranked] == [(50, 50), (0, 0), (50, 0)]
    assert ranked[0].score == pytest.approx(0.45)


def test_windows_follow_the_plane_size_and_one_plane_is_required() -> None:
    assert window_side((256, 256)) == 48 and window_side((2048, 1024)) == 256
    assert len(rank_regions(np.random.default_rng(0).random((256, 256)), top=5)) == 5
    with pytest.raises(ValueError, match="one plane"):
        rank_regions(np.zeros((2, 8, 8)))
