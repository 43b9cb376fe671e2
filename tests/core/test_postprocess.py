import numpy as np
import pytest
from skimage.measure import label

from napari_unet.core.postprocess import InstanceParams, label_maxima, local_maxima, postprocess, semantic_from_probabilities, split_instances, uncertainty_from_probabilities
from napari_unet.eval.synthetic import touching_discs


def test_two_touching_discs_become_two_instances():
    binary, truth = touching_discs()
    inst = split_instances(binary, split_strength=0.5)
    assert inst.max() == 2
    # each instance mostly covers one true disc
    for value in (1, 2):
        overlap = np.bincount(truth[inst == value])
        assert overlap[1:].max() / (inst == value).sum() > 0.9


def test_split_strength_zero_keeps_components_whole():
    binary, _ = touching_discs()
    assert split_instances(binary, split_strength=0.0).max() == 1


def test_min_size_drops_small_objects_and_renumbers():
    mask = np.zeros((40, 40), bool)
    mask[2:4, 2:4] = True  # 4 px
    mask[10:30, 10:30] = True
    inst = split_instances(mask, split_strength=0.5, min_size=10)
    assert inst.max() == 1 and inst[20, 20] == 1 and inst[3, 3] == 0


def test_postprocess_from_probabilities_threshold_and_classes():
    probs = np.zeros((3, 20, 20), np.float32)
    probs[0] = 1.0
    probs[:, 2:8, 2:8] = np.array([0.2, 0.7, 0.1])[:, None, None]  # class 1
    probs[:, 12:18, 12:18] = np.array([0.45, 0.15, 0.4])[:, None, None]  # class 2 at threshold 0.5
    sem, inst = postprocess(probs, InstanceParams(threshold=0.5, min_size=1, split_strength=0.5))
    assert sem[4, 4] == 1 and sem[15, 15] == 2 and sem[0, 0] == 0
    assert inst.max() == 2 and inst[4, 4] != inst[15, 15]
    strict = semantic_from_probabilities(probs, threshold=0.6)
    assert strict[15, 15] == 0 and strict[4, 4] == 1


def _cells_between_membranes():
    """Elongated cells packed edge to edge, outlined by 2-px membranes (as in EM)."""
    mask = np.ones((120, 160), bool)
    mask[::30, :] = False
    mask[1::30, :] = False
    mask[:, ::80] = False
    mask[:, 1::80] = False
    return mask


def test_cells_tiled_by_thin_membranes_are_not_cut_along_their_length():
    from napari_unet.core.postprocess import is_tiled

    mask = _cells_between_membranes()
    cells = label(mask, connectivity=1)
    inst = split_instances(mask, split_strength=0.5)
    # Each 28 x 78 cell has a long ridge of equal distance: radius-based seeds
    # alone cut it in pieces; the neck test keeps it one object.
    assert is_tiled(mask, 14.0)
    assert inst.max() == cells.max()


def test_touching_discs_in_open_background_are_still_split():
    from napari_unet.core.postprocess import is_tiled

    binary, _ = touching_discs()
    assert not is_tiled(binary, 10.0)
    assert split_instances(binary, split_strength=0.5).max() == 2


def test_tiled_cells_joined_through_a_membrane_gap_are_two_objects():
    """A gap in a predicted membrane joins two cells by a thin bridge; the cores keep them apart."""
    from napari_unet.core.postprocess import core_seeds, is_tiled

    mask = _cells_between_membranes()
    mask[40:44, 80:82] = True  # a 4-px gap in the vertical membrane between two cells
    assert label_count(mask) == label_count(_cells_between_membranes()) - 1
    assert is_tiled(mask, 14.0)
    assert core_seeds(mask).max() == label_count(_cells_between_membranes())
    inst = split_instances(mask, split_strength=0.5)
    assert inst.max() == label_count(_cells_between_membranes())
    assert inst[42, 70] != inst[42, 90]


def _perforated_cells() -> tuple[np.ndarray, np.ndarray]:
    """A 4 x 4 grid of 40-px cells between 2-px membranes, each with a row of small round holes across its middle.

    Returns the mask and the true cells (holes included in their cell).
    """
    from skimage.draw import disk

    size, wall = 40, 2
    cells = np.zeros((4 * (size + wall),) * 2, np.int32)
    for i in range(4):
        for j in range(4):
            y, x = i * (size + wall) + wall, j * (size + wall) + wall
            cells[y : y + size, x : x + size] = i * 4 + j + 1
    mask = cells > 0
    for i in range(4):
        for j in range(4):
            y, x = i * (size + wall) + wall, j * (size + wall) + wall
            for dx in range(4, size, 8):  # holes of radius 2, 3 px apart: an erosion of 2 parts the cell
                mask[disk((y + size // 2, x + dx), 2.5, shape=mask.shape)] = False
    return mask, cells


def test_round_holes_in_tiled_cells_do_not_cut_them_in_two():
    """Organelles read as background perforate a cell; the cores ignore them, the instances keep them background."""
    from napari_unet.core.postprocess import HOLE_ELONGATION, organelles_filled

    mask, cells = _perforated_cells()
    inst = split_instances(mask, split_strength=0.5, tiled=True)
    assert inst.max() == 16
    assert np.all(inst[~mask] == 0)  # the holes stay background
    for value in range(1, 17):
        assert np.unique(cells[inst == value]).size == 1
    # A membrane fragment (long and thin) enclosed by one cell is kept as background.
    thin = np.ones((60, 60), bool)
    thin[0:2] = thin[-2:] = False
    thin[30:32, 10:40] = False  # 2 x 30 px: elongation 15
    thin[10:14, 10:14] = False  # 4 x 4 px: round
    filled = organelles_filled(thin, radius=10.0)
    assert not filled[30, 20] and filled[12, 12] and not filled[0, 30]
    assert HOLE_ELONGATION >= 1
    # Larger than a disc of the cells' radius: kept.
    assert not organelles_filled(thin, radius=1.0)[12, 12]


def label_count(mask: np.ndarray) -> int:
    return int(label(mask, connectivity=1).max())


def test_3d_fragments_far_below_the_objects_size_are_dropped():
    """A few-voxel speck beside 3D nuclei is not an object; the nuclei all stay."""
    from skimage.draw import ellipsoid

    mask = np.zeros((30, 60, 90), bool)
    ball = ellipsoid(8, 8, 8)
    for x in (5, 40):
        mask[5 : 5 + ball.shape[0], 5 : 5 + ball.shape[1], x : x + ball.shape[2]] |= ball
    mask[26:29, 50:53, 75:78] = True  # 27 voxels: above min_size 16, far below a nucleus
    inst = split_instances(mask, split_strength=0.5, min_size=16)
    assert inst.max() == 2 and inst[27, 51, 76] == 0
    flat = split_instances(mask[15], split_strength=0.5, min_size=16)  # 2D keeps the plain floor
    assert flat.max() == 2


def _ragged_flat_nucleus(shape: tuple[int, int, int], centre: tuple[float, float, float], radii: tuple[float, float, float], seed: int) -> np.ndarray:
    """An ellipsoid whose outline wanders by a fifth of its radii, as a predicted nucleus's does."""
    from scipy import ndimage as ndi

    rng = np.random.default_rng(seed)
    grid = np.indices(shape).astype(float)
    distance = np.sqrt(sum(((g - c) / r) ** 2 for g, c, r in zip(grid, centre, radii)))
    noise = ndi.gaussian_filter(rng.normal(size=shape), 3)
    return distance <= 1 + 0.2 * noise / noise.std()


def test_a_ragged_flat_nucleus_in_a_stack_is_one_object_and_touching_ones_two():
    """Z stacks space seeds wider (SEED_SPACING_3D): a nucleus 4 planes high and 12 pixels wide is not cut in two."""
    import napari_unet.core.postprocess as pp

    nucleus = label(_ragged_flat_nucleus((16, 40, 40), (8, 20, 20), (4, 12, 12), seed=16), connectivity=1) == 1
    assert split_instances(nucleus, split_strength=0.5, min_size=16).max() == 1
    # The 2D spacing would have cut this one: the case the 3D spacing is for.
    assert pp.SEED_SPACING < pp.SEED_SPACING_3D
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(pp, "SEED_SPACING_3D", pp.SEED_SPACING)
        assert split_instances(nucleus, split_strength=0.5, min_size=16).max() == 2
    # Touching nuclei as flat still get a seed each: centres 21 pixels apart, radius 12.
    z, y, x = np.indices((16, 40, 64))
    pair = (((z - 8) / 4) ** 2 + ((y - 20) / 12) ** 2 + ((x - 18) / 12) ** 2 <= 1) | (((z - 8) / 4) ** 2 + ((y - 20) / 12) ** 2 + ((x - 39) / 12) ** 2 <= 1)
    inst = split_instances(pair, split_strength=0.5, min_size=16)
    assert inst.max() == 2 and inst[8, 20, 18] != inst[8, 20, 39]


def test_uncertainty_is_the_margin_spread_into_its_neighbourhood():
    """1 - margin per pixel, raised near unsure pixels, never lowered; in [0, 1]; plane by plane."""
    sure = np.zeros((2, 40, 40), np.float32)
    sure[0] = 1.0
    np.testing.assert_array_equal(uncertainty_from_probabilities(sure), 0.0)
    probs = sure.copy()
    probs[:, 20, :] = 0.5  # one tied row: a border the model is unsure of
    u = uncertainty_from_probabilities(probs)
    assert u.dtype == np.float32 and 0.0 <= u.min() and u.max() <= 1.0
    np.testing.assert_allclose(u[20], 1.0)  # ties keep their full uncertainty
    assert u[21, 5] > u[23, 5] > u[30, 5] >= 0.0  # sure pixels beside the border are less sure than far ones
    assert u[0, 5] == pytest.approx(0.0, abs=1e-6)
    # A stack: each plane on its own, as when planes are predicted one by one.
    stack = np.stack([probs, sure], axis=1)  # (classes, Z, Y, X)
    spread = uncertainty_from_probabilities(stack)
    np.testing.assert_allclose(spread[0], u, atol=1e-6)
    np.testing.assert_array_equal(spread[1], 0.0)


def test_label_maxima_and_local_maxima_agree_with_scipy_and_scikit_image():
    from scipy import ndimage as ndi
    from skimage.feature import peak_local_max

    rng = np.random.default_rng(0)
    mask = ndi.gaussian_filter(rng.random((200, 200)), 3) > 0.5
    labels = label(mask, connectivity=1)
    distance = ndi.gaussian_filter(ndi.distance_transform_edt(mask), 1.0)
    n = int(labels.max())
    expected = np.asarray(ndi.maximum(distance, labels, index=np.arange(n + 1)))
    np.testing.assert_array_equal(label_maxima(distance, labels, n), expected)
    # Every object's seeds by the per-object search are found by the one filter, wherever that object keeps any.
    peaks = np.zeros(mask.shape, bool)
    peaks[tuple(peak_local_max(distance, min_distance=3, labels=labels, exclude_border=False).T)] = True
    ours = local_maxima(distance, 3) & (labels > 0)
    kept = np.unique(labels[ours])
    assert np.array_equal(ours & np.isin(labels, kept), peaks & np.isin(labels, kept))


def _beaded_cells() -> np.ndarray:
    """Cells as rows of three overlapping beads (EM cells are not convex), parted by thick membranes."""
    from skimage.draw import disk

    mask = np.zeros((120, 200), bool)
    for cy in (20, 60, 100):
        for x0 in (10, 110):
            mask[cy - 8 : cy + 9, x0 : x0 + 80] = True
            for cx in (x0 + 12, x0 + 40, x0 + 68):
                mask[disk((cy, cx), 12, shape=mask.shape)] = True
    return mask


def test_objects_known_to_tile_are_seeded_by_cores_whatever_the_mask_reads():
    """A correction that thickens membranes makes a mask read as blobs; a model that knows its objects tile keeps the cells whole."""

    from napari_unet.core.postprocess import distance_and_radius, is_tiled

    mask = _beaded_cells()
    cells = label(mask, connectivity=1)
    _, radius = distance_and_radius(mask, cells, 16)
    assert not is_tiled(mask, radius)
    assert split_instances(mask, 0.5, 16).max() > cells.max()  # radius seeds cut each cell at its beads
    assert split_instances(mask, 0.5, 16, tiled=True).max() == cells.max()
    probs = np.stack([~mask, mask]).astype(np.float32)
    assert postprocess(probs, InstanceParams(tiled=True))[1].max() == cells.max()
    assert split_instances(mask, 0.0, 16, tiled=True).max() == cells.max()  # strength 0: components, as always


def test_objects_tile_votes_by_image_size():
    from napari_unet.core.postprocess import objects_tile

    def probs(mask):
        return np.stack([~mask, mask]).astype(np.float32)

    tiled, (discs, _) = _cells_between_membranes(), touching_discs()
    assert objects_tile([probs(tiled)]) and not objects_tile([probs(discs)])
    assert not objects_tile([probs(np.zeros((40, 40), bool))])
    # Most pixels belong to the tiled image: the objects tile.
    assert tiled.size > discs.size and objects_tile([probs(tiled), probs(discs)])
