"""Block-by-block instances: objects on block seams come out whole, ids unique and consecutive."""

import numpy as np
import pytest
from skimage.draw import disk

from napari_unet.core.postprocess import InstanceParams, instances_from_semantic
from napari_unet.core.stitch import label_blockwise
from napari_unet.errors import UserInputError
from napari_unet.eval.synthetic import make_nuclei
from tests.helpers import one_to_one, same_partition

BLOCK, HALO = 64, 16


def draw(shape, discs):
    """Semantic mask and truth from ``(cy, cx, r)`` discs (later discs never overwrite earlier ones)."""
    truth = np.zeros(shape, np.int32)
    for n, (cy, cx, r) in enumerate(discs, start=1):
        rr, cc = disk((cy, cx), r, shape=shape)
        free = truth[rr, cc] == 0
        truth[rr[free], cc[free]] = n
    return (truth > 0).astype(np.uint8), truth


def seam_discs():
    """Discs centred on seams (64, 128, 192), on 4-block corners, and touching pairs split by a seam."""
    single = [(64, 64, 12), (128, 100, 10), (40, 128, 11), (192, 192, 14), (160, 64, 9), (100, 192, 8)]
    # Touching pairs (centres 2 px closer than touching): the neck lies on a seam.
    pairs = [(230, 128 - 11, 12), (230, 128 + 11, 12), (64 - 9, 230, 10), (64 + 9, 230, 10)]
    return single + pairs




def test_objects_on_seams_and_corners_come_out_whole_with_consecutive_ids():
    semantic, truth = draw((256, 256), seam_discs())
    out = np.zeros(semantic.shape, np.uint32)
    top = label_blockwise(semantic, out, InstanceParams(min_size=1, split_strength=0.5), block=BLOCK, halo=HALO, id_offset=7)
    one_to_one(truth, out)
    assert top == 7 + truth.max()
    assert set(np.unique(out)) == {0} | set(range(8, top + 1))


def test_equals_the_in_memory_result_when_no_object_is_near_a_seam():
    rng = np.random.default_rng(1)
    discs = []
    for by in range(4):
        for bx in range(4):
            if (by, bx) == (1, 1):
                continue  # the touching pair goes there
            r = int(rng.integers(5, 9))
            cy, cx = by * BLOCK + int(rng.integers(HALO + r, BLOCK - HALO - r)), bx * BLOCK + int(rng.integers(HALO + r, BLOCK - HALO - r))
            discs.append((cy, cx, r))
    discs += [(96, 96 - 8, 9), (96, 96 + 8, 9)]  # a touching pair to split, inside one block's core
    semantic, truth = draw((256, 256), discs)
    params = InstanceParams(min_size=20, split_strength=0.5)
    out = np.zeros(semantic.shape, np.uint32)
    top = label_blockwise(semantic, out, params, block=BLOCK, halo=HALO)
    ref = instances_from_semantic(semantic, params)
    assert same_partition(ref, out) and top == ref.max()
    one_to_one(truth, out)


@pytest.mark.parametrize("block,halo", [(64, 16), (50, 4), (37, 1)])
def test_connected_components_stitch_exactly_whatever_the_blocks(block, halo):
    # Without watershed splitting, instances are connected components: the
    # stitched result must equal the whole-image one exactly, including
    # long objects crossing many blocks.
    semantic = make_nuclei((300, 420), seed=3).semantic
    semantic[150:153, 10:400] = 1
    semantic[20:280, 200:203] = 1
    params = InstanceParams(min_size=30, split_strength=0.0)
    out = np.zeros(semantic.shape, np.uint32)
    top = label_blockwise(semantic, out, params, block=block, halo=halo, id_offset=100)
    ref = instances_from_semantic(semantic, params)
    assert same_partition(ref, out)
    assert top == 100 + ref.max() and set(np.unique(out)) == {0} | set(range(101, top + 1))


def test_min_size_applies_to_stitched_objects():
    semantic = np.zeros((128, 128), np.uint8)
    semantic[54:74, 54:74] = 1  # 400 px on the corner of four blocks: four 100 px pieces
    semantic[10:20, 10:20] = 1  # 100 px inside one block
    semantic[100:110, 59:69] = 1  # 100 px cut in two by the seam at x=64
    out = np.zeros(semantic.shape, np.uint32)
    top = label_blockwise(semantic, out, InstanceParams(min_size=150, split_strength=0.5), block=64, halo=16)
    assert top == 1
    assert np.all(out[54:74, 54:74] == 1)
    assert not out[10:20, 10:20].any() and not out[100:110, 59:69].any()
    # The small objects are kept with a smaller minimum, whole.
    top = label_blockwise(semantic, out, InstanceParams(min_size=50, split_strength=0.5), block=64, halo=16)
    assert top == 3 and np.unique(out[100:110, 59:69]).size == 1 and out[105, 60] > 0


def test_a_single_block_is_exactly_the_in_memory_post_processing():
    semantic = make_nuclei((120, 150), seed=2).semantic
    params = InstanceParams(min_size=16, split_strength=0.7)
    out = np.zeros(semantic.shape, np.uint32)
    top = label_blockwise(semantic, out, params, block=256, halo=16, id_offset=3)
    ref = instances_from_semantic(semantic, params)
    assert np.array_equal(out, np.where(ref > 0, ref + 3, 0)) and top == ref.max() + 3


def test_volumes_are_cut_in_y_and_x_only():
    volume = np.stack([make_nuclei((160, 160), seed=i).semantic for i in range(4)])
    params = InstanceParams(min_size=50, split_strength=0.0)
    out = np.zeros(volume.shape, np.uint32)
    top = label_blockwise(volume, out, params, block=48, halo=8)
    ref = instances_from_semantic(volume, params)
    assert same_partition(ref, out) and top == ref.max()


def test_zarr_and_memmap_arrays_in_and_out(tmp_path):
    zarr = pytest.importorskip("zarr")
    semantic_np, truth = draw((256, 256), seam_discs())
    semantic = zarr.open_array(str(tmp_path / "sem.zarr"), mode="w", shape=semantic_np.shape, dtype=np.uint8, chunks=(50, 50))
    semantic[...] = semantic_np
    out = np.memmap(tmp_path / "inst.raw", dtype=np.uint32, mode="w+", shape=semantic_np.shape)
    top = label_blockwise(semantic, out, InstanceParams(min_size=1), block=BLOCK, halo=HALO)
    one_to_one(truth, np.asarray(out))
    zout = zarr.open_array(str(tmp_path / "inst.zarr"), mode="w", shape=semantic_np.shape, dtype=np.uint32, chunks=(40, 70))
    assert label_blockwise(semantic, zout, InstanceParams(min_size=1), block=BLOCK, halo=HALO) == top
    assert np.array_equal(zout[...], out)


def test_clear_errors():
    semantic = np.zeros((40, 40), np.uint8)
    with pytest.raises(ValueError, match="shape"):
        label_blockwise(semantic, np.zeros((40, 41), np.uint32), InstanceParams())
    semantic[::2, ::2] = 1  # 400 one-pixel objects do not fit uint8 ids
    with pytest.raises(UserInputError, match="uint32"):
        label_blockwise(semantic, np.zeros((40, 40), np.uint8), InstanceParams(min_size=1), block=16, halo=4)


def test_deep_volumes_are_cut_into_smaller_blocks_within_the_voxel_budget():
    from napari_unet.core.stitch import MAX_BLOCK_VOXELS, MIN_BLOCK_SIDE, block_side

    assert block_side(2048, 1) == 2048  # planes keep the block asked for
    assert block_side(2048, 64) == 320 and 64 * 320**2 <= MAX_BLOCK_VOXELS  # a 64-plane stack: 320² blocks
    assert block_side(300, 64) == 300  # a smaller block asked for stays
    assert block_side(2048, 100_000) == MIN_BLOCK_SIDE


def test_a_deep_volume_cut_into_blocks_keeps_objects_whole(monkeypatch):
    """The labelling of a volume too deep for one block: objects across block seams keep one id."""
    import napari_unet.core.stitch as stitch

    monkeypatch.setattr(stitch, "MAX_BLOCK_VOXELS", 8 * 128 * 128)  # 8 planes deep: 128² blocks
    monkeypatch.setattr(stitch, "MIN_BLOCK_SIDE", 64)
    assert stitch.block_side(2048, 8) == 128
    semantic = np.zeros((8, 300, 300), np.uint8)
    semantic[2:6, 100:160, 100:160] = 1  # a box across the seam at 128
    semantic[2:6, 200:230, 20:50] = 1
    out = np.zeros(semantic.shape, np.int32)
    n = stitch.label_blockwise(semantic, out, InstanceParams(split_strength=0.0), block=2048, halo=32)
    assert n == 2 and len(np.unique(out[semantic > 0])) == 2 and np.all(out[semantic == 0] == 0)
