"""Bounded-memory prediction of one plane: streamed semantic labels, stitched instances, lazy in, on-disk out."""

import numpy as np
import pytest
import torch
from skimage.draw import disk

from napari_unet.core import normalize
from napari_unet.core.blockwise import SemanticSink, predict_plane
from napari_unet.core.inference import TileProgress
from napari_unet.core.model import UNetConfig
from napari_unet.core.postprocess import InstanceParams, postprocess
from napari_unet.core.segmenter import Segmenter
from napari_unet.io.stores import open_lazy, open_output
from tests.helpers import one_to_one, same_partition

CONFIG = UNetConfig(in_channels=1, n_classes=2, depth=2, width=4, filter_scales=2)


class ThresholdNet(torch.nn.Module):
    """A stand-in network whose foreground is 'brighter than half': predictions with real objects, instantly."""

    def __init__(self, config):
        super().__init__()
        self.config = config

    def forward(self, x):
        fg = 12.0 * (x.mean(1, keepdim=True) - 0.5)
        return torch.cat([-fg, fg], dim=1)


def threshold_segmenter():
    seg = Segmenter(CONFIG, device="cpu")
    seg.model = ThresholdNet(CONFIG)
    return seg


def disc_image(shape, discs, seed=0):
    """uint16 bright discs (1000) on a dark (100) noisy background, and their truth."""
    truth = np.zeros(shape, np.int32)
    for n, (cy, cx, r) in enumerate(discs, start=1):
        rr, cc = disk((cy, cx), r, shape=shape)
        free = truth[rr, cc] == 0
        truth[rr[free], cc[free]] = n
    rng = np.random.default_rng(seed)
    image = np.where(truth > 0, 1000, 100) + rng.normal(0, 20, shape)
    return np.clip(image, 0, None).astype(np.uint16), truth


SEAM_DISCS = [(64, 64, 12), (128, 100, 10), (40, 128, 11), (150, 192, 14), (200, 64, 9), (230, 117, 12), (230, 139, 12)]


def run(gen):
    """Drain a predict_plane generator: (progress list, return value)."""
    progress = []
    while True:
        try:
            progress.append(next(gen))
        except StopIteration as stop:
            return progress, stop.value




@pytest.mark.parametrize("make", [threshold_segmenter, lambda: Segmenter(CONFIG, device="cpu")])
def test_an_image_within_one_block_gives_exactly_the_in_memory_result(make):
    torch.manual_seed(0)
    seg = make()
    image, _ = disc_image((100, 130), SEAM_DISCS[:3])
    params = InstanceParams(threshold=0.5, min_size=16, split_strength=0.5)
    semantic, instances = np.zeros(image.shape, np.uint8), np.zeros(image.shape, np.uint32)
    probabilities = np.zeros((2,) + image.shape, np.float32)
    progress, top = run(predict_plane(seg, image, semantic, instances, params, probabilities_out=probabilities, tile=128, id_offset=4))
    ref_probs = seg.predict_probabilities(image, tile=128)
    ref_sem, ref_inst = postprocess(ref_probs, params)
    assert np.array_equal(probabilities, ref_probs)
    assert np.array_equal(semantic, ref_sem)
    assert np.array_equal(instances, np.where(ref_inst > 0, ref_inst + 4, 0)) and top == ref_inst.max() + 4
    assert all(isinstance(p, TileProgress) for p in progress) and progress[-1].done == progress[-1].total


def test_blocks_stitch_objects_on_seams_and_match_the_whole_image():
    seg = threshold_segmenter()
    image, truth = disc_image((256, 256), SEAM_DISCS)
    params = InstanceParams(min_size=10, split_strength=0.5)
    semantic, instances = np.zeros(image.shape, np.uint8), np.zeros(image.shape, np.uint32)
    progress, top = run(predict_plane(seg, image, semantic, instances, params, tile=128, block=64, halo=16))
    one_to_one(truth, instances)
    assert top == truth.max() and set(np.unique(instances)) == set(range(top + 1))
    ref_sem, ref_inst = postprocess(seg.predict_probabilities(image, tile=128), params)
    assert np.array_equal(semantic, ref_sem) and same_partition(ref_inst, instances)
    # Progress covers the network's tiles, then both passes over the 16 blocks.
    assert [p.total for p in progress] == [progress[0].total] * len(progress)
    assert progress[-1].done == progress[-1].total and len(progress) > 32


class ReadRecorder:
    """A lazy array that records the largest contiguous region read from it."""

    def __init__(self, data):
        self.data, self.shape, self.dtype, self.ndim = data, data.shape, data.dtype, data.ndim
        self.largest = 0

    def __getitem__(self, key):
        region = np.asarray(self.data[key])
        strided = any(isinstance(k, slice) and (k.step or 1) > 1 for k in (key if isinstance(key, tuple) else (key,)))
        if not strided:
            self.largest = max(self.largest, region.size)
        return region


@pytest.mark.parametrize("suffix", [".zarr", ".tif"])
def test_dask_image_is_read_by_bands_and_written_to_disk(tmp_path, monkeypatch, suffix):
    da = pytest.importorskip("dask.array")
    # Percentiles from a strided subsample, as for a really large image.
    monkeypatch.setattr(normalize, "_MAX_SAMPLE_PIXELS", 2000)
    seg = threshold_segmenter()
    image, truth = disc_image((256, 320), SEAM_DISCS)
    lazy = ReadRecorder(da.from_array(image[None], chunks=(1, 64, 64)))
    params = InstanceParams(min_size=10)
    with open_output(tmp_path / f"sem{suffix}", image.shape, np.uint8) as sem, open_output(tmp_path / f"inst{suffix}", image.shape, np.uint32) as inst:
        _, top = run(predict_plane(seg, lazy, sem, inst, params, tile=128, block=64, halo=16, id_offset=10))
    assert 0 < lazy.largest <= 128 * 320  # one band of tiles, never the image
    semantic, instances = np.asarray(open_lazy(tmp_path / f"sem{suffix}")[...]), np.asarray(open_lazy(tmp_path / f"inst{suffix}")[...])
    one_to_one(truth, instances)
    assert top == 10 + truth.max() and set(np.unique(instances)) == {0} | set(range(11, top + 1))
    assert np.array_equal(semantic, postprocess(seg.predict_probabilities(image, tile=128), params)[0])


def test_semantic_kept_in_scratch_when_not_wanted(tmp_path):
    seg = threshold_segmenter()
    image, truth = disc_image((160, 160), SEAM_DISCS[:3])
    instances = np.zeros(image.shape, np.uint32)
    _, top = run(predict_plane(seg, image, None, instances, InstanceParams(min_size=10), tile=128, block=64, halo=16, scratch_dir=tmp_path))
    one_to_one(truth, instances)
    assert top == 3 and list(tmp_path.iterdir()) == []  # scratch removed


def test_sink_takes_whole_class_bands_only():
    semantic = np.zeros((4, 5), np.uint8)
    sink = SemanticSink(semantic, 2, 0.5)
    assert sink.shape == (2, 4, 5)
    band = np.zeros((2, 2, 5), np.float32)
    band[1, 1, 2] = 0.9
    band[0] = 1 - band[1]
    sink[:, 1:3, :] = band
    assert semantic[2, 2] == 1 and semantic.sum() == 1
    with pytest.raises(TypeError):
        sink[0, 1:3, :] = band[0]
    with pytest.raises(TypeError):
        sink[:, 0:1]


def test_mismatched_outputs_are_refused():
    seg = threshold_segmenter()
    with pytest.raises(ValueError, match="shape"):
        run(predict_plane(seg, np.zeros((30, 30), np.uint16), np.zeros((30, 31), np.uint8), None, InstanceParams()))
