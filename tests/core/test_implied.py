"""Background implied by objects painted whole (TrainConfig.whole_objects)."""

import numpy as np
from skimage.draw import disk, line

from napari_unet.core.implied import (
    HINT_OBJECTS,
    MIN_OBJECT_SHARE,
    found_to_painted_size,
    implied_background,
    painted_object_area,
    rings_cut_objects,
    whole_object_min_size,
    whole_objects_hint,
)
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


def _annotations_with_discs(n: int, shape=(40, 160)) -> np.ndarray:
    """User annotations (0 unlabeled, 1 background, 2 object): ``n`` discs painted whole, a background line."""
    ann = np.zeros(shape, np.uint8)
    for i in range(n):
        ann[disk((20, 15 + 30 * i), 6)] = 2
    ann[38, :] = 1
    return ann


def test_objects_that_look_painted_whole_suggest_the_option_which_stays_off():
    note = whole_objects_hint([_annotations_with_discs(HINT_OBJECTS)], "--whole-objects")
    assert note is not None and note.startswith(f"{HINT_OBJECTS} painted objects") and "--whole-objects" in note
    assert "leave it off" in note  # strokes inside objects look alike: the user decides
    # Planes of a volume are read one by one.
    volume = np.stack([_annotations_with_discs(2), np.zeros((40, 160), np.uint8), _annotations_with_discs(1)])
    assert whole_objects_hint([volume], "x") is not None


def test_strokes_inside_objects_few_objects_or_several_classes_suggest_nothing():
    assert whole_objects_hint([_annotations_with_discs(HINT_OBJECTS - 1)], "x") is None
    strokes = np.zeros((40, 160), np.uint8)
    for i in range(5):
        rr, cc = line(10, 10 + 30 * i, 30, 20 + 30 * i)
        strokes[rr, cc] = 2  # one-pixel strokes: not whole objects
    assert whole_objects_hint([strokes], "x") is None
    classes = _annotations_with_discs(4)
    classes[disk((20, 15), 6)] = 3
    assert whole_objects_hint([classes], "x") is None
    assert whole_objects_hint([], "x") is None


def test_cores_with_background_painted_closely_around_suggest_nothing():
    """Object cores inside a painted background ring: the user said where objects end, no hint."""
    ann = np.zeros((40, 160), np.uint8)
    for i in range(5):
        ann[disk((20, 15 + 30 * i), 12, shape=ann.shape)] = 1
        ann[disk((20, 15 + 30 * i), 9, shape=ann.shape)] = 0
        ann[disk((20, 15 + 30 * i), 5, shape=ann.shape)] = 2
    assert whole_objects_hint([ann], "x") is None


def _probabilities(foreground: np.ndarray) -> np.ndarray:
    """Two-class probabilities that say ``foreground`` and nothing else."""
    p = foreground.astype(np.float32)
    return np.stack([1 - p, p])


def test_found_objects_are_compared_with_the_objects_painted_whole():
    t = _targets((60, 120))
    t[disk((22, 22), 14)] = OBJ  # painted whole: about 600 pixels
    whole_size = np.zeros(t.shape, bool)
    whole_size[disk((30, 80), 14)] = True
    assert 0.8 < found_to_painted_size([t], [_probabilities(whole_size)]) < 1.2
    assert not rings_cut_objects([t], [_probabilities(whole_size)])
    # Objects cut into 16-pixel pieces: a fortieth of the painted size.
    pieces = np.zeros(t.shape, bool)
    for y in range(2, 58, 6):
        for x in range(60, 118, 6):
            pieces[y : y + 4, x : x + 4] = True  # 16-pixel pieces
    assert rings_cut_objects([t], [_probabilities(pieces)])


def test_without_objects_painted_whole_nothing_is_judged():
    t = _targets()
    rr, cc = line(5, 5, 30, 50)
    t[rr, cc] = OBJ
    found = np.zeros(t.shape, bool)
    found[disk((20, 40), 3)] = True
    assert found_to_painted_size([t], [_probabilities(found)]) is None
    assert not rings_cut_objects([t], [_probabilities(found)])


def test_a_run_whose_rings_cut_objects_trains_on_the_strokes_as_painted(monkeypatch):
    """With the rings judged harmful, the forest and the run are those of the same strokes without the option."""
    import napari_unet.core.implied as implied
    from napari_unet.core.segmenter import Segmenter

    rng = np.random.default_rng(0)
    image = rng.normal(0.2, 0.05, (48, 96)).astype(np.float32)
    truth = np.zeros(image.shape, bool)
    for i in range(3):
        truth[disk((24, 16 + 30 * i), 9)] = True
    image[truth] += 1.0
    ann = np.zeros(image.shape, np.uint8)
    ann[disk((24, 16), 9)] = 2  # one object painted whole
    ann[2, :] = ann[45, :] = 1

    def forest_of(whole: bool) -> tuple:
        seg = Segmenter(device="cpu")
        last = seg.fit(image, ann, TrainConfig(steps=1, seed=0, whole_objects=whole))
        return last, seg.model.forest.threshold.numpy().copy()

    plain_last, plain_forest = forest_of(False)
    ringed_last, ringed_forest = forest_of(True)
    assert not plain_last.rings_dropped and plain_last.rings_note() is None
    assert not ringed_last.rings_dropped  # whole discs found whole: the rings stay
    assert not np.array_equal(ringed_forest, plain_forest)  # arrays of different shapes are unequal too
    monkeypatch.setattr(implied, "CUT_SHARE", 100.0)  # every found object now counts as "cut"
    dropped_last, dropped_forest = forest_of(True)
    assert dropped_last.rings_dropped and "strokes as painted" in dropped_last.rings_note()
    np.testing.assert_array_equal(dropped_forest, plain_forest)


def test_objects_painted_whole_set_the_smallest_object_kept():
    """A share of the median area of the objects painted whole, never below the default; 2D only."""
    t = _targets((60, 160))
    areas = []
    for x, r in ((20, 8), (60, 10), (110, 12)):
        t[disk((30, x), r)] = OBJ
        areas.append(len(disk((30, x), r, shape=t.shape)[0]))  # pixels in the disc
    rr, cc = line(5, 140, 50, 150)
    t[rr, cc] = OBJ  # a stroke inside an object: not a whole object, not counted
    assert painted_object_area([t]) == float(np.median(areas))
    assert whole_object_min_size([t]) == round(MIN_OBJECT_SHARE * np.median(areas))
    small = _targets()
    small[disk((20, 20), 3)] = OBJ  # about 29 pixels: the default minimum size stays
    assert whole_object_min_size([small]) == 16
    lines = _targets()
    lines[line(5, 5, 30, 50)] = OBJ
    assert painted_object_area([lines]) is None and whole_object_min_size([lines]) is None
    assert whole_object_min_size([np.stack([t, t])]) is None  # volumes: the split's fragment rule applies
