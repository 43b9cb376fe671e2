"""Background implied by objects painted whole (TrainConfig.whole_objects)."""

import numpy as np
from skimage.draw import disk, line

from napari_unet.core.implied import implied_background
from napari_unet.core.training import TrainConfig

U, BG, OBJ = -1, 0, 1


def _targets(shape=(40, 60)):
    return np.full(shape, U, np.int16)


def test_the_ring_around_a_whole_painted_object_becomes_background():
    t = _targets()
    t[disk((20, 20), 6)] = OBJ
    out = implied_background(t, n_classes=2)
    painted = t == OBJ
    ring = (out == BG) & (t == U)
    # Every new background pixel touches the object, and the whole outline is ringed.
    from scipy import ndimage as ndi

    grown = ndi.binary_dilation(painted, np.ones((3, 3), bool))
    np.testing.assert_array_equal(ring, grown & ~painted)
    assert np.array_equal(out[painted], t[painted])  # the object itself is untouched
    assert t[ring].tolist() == [U] * int(ring.sum())  # the input is not modified


def test_thin_strokes_and_pieces_touching_painted_background_imply_nothing():
    t = _targets()
    rr, cc = line(5, 5, 30, 50)
    t[rr, cc] = OBJ  # a one-pixel stroke inside an object: not a whole object
    t[:, 52:] = BG
    t[disk((20, 48), 5)] = OBJ  # borders painted background: the edge of a painted region
    assert np.array_equal(implied_background(t, n_classes=2), t)


def test_several_object_classes_imply_nothing():
    t = _targets()
    t[disk((20, 20), 6)] = OBJ
    t[disk((20, 45), 6)] = 2
    assert np.array_equal(implied_background(t, n_classes=3), t)


def test_volumes_are_ringed_within_each_painted_plane_only():
    t = np.full((5, 40, 40), U, np.int16)
    t[2][disk((20, 20), 6)] = OBJ
    out = implied_background(t, n_classes=2)
    assert np.array_equal(out[[0, 1, 3, 4]], t[[0, 1, 3, 4]])  # the nucleus goes on above and below
    assert np.count_nonzero(out[2] == BG) > 0


def test_off_by_default():
    assert TrainConfig().whole_objects is False
