"""The optional 3D U-Net: model, filter bank, sparse-stroke training, tiled prediction, model files.

Everything is tiny (volumes of a few tens of voxels a side, a few dozen
steps) so the file runs in seconds on one CPU thread.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage as ndi

from napari_unet.core.checkpoint import load_checkpoint, save_checkpoint
from napari_unet.core.filters import FilterBank, symmetric_eigvals3
from napari_unet.core.inference import iter_predict_tiled
from napari_unet.core.model import UNet, UNetConfig, default_config
from napari_unet.core.samples import PatchSampler, augment, patch_shape, prepare, validation_patches
from napari_unet.core.training import TrainConfig, train_model
from napari_unet.errors import UserInputError

CPU = torch.device("cpu")
STROKE_PLANES = (5, 14)


def spheres(shape=(20, 56, 56), seed=0):
    """Bright balls in noise, their truth, and strokes painted on two Z planes only.

    Returns image (float32, about 0..1), truth (bool) and annotations (uint8:
    1 background ring, 2 object core, 0 elsewhere and on all other planes).
    """
    rng = np.random.default_rng(seed)
    zz, yy, xx = np.indices(shape)
    truth = np.zeros(shape, bool)
    for _ in range(60):
        r = rng.uniform(3.5, 6.0)
        c = [rng.uniform(0, n) for n in shape]
        ball = (zz - c[0]) ** 2 + (yy - c[1]) ** 2 + (xx - c[2]) ** 2 <= r * r
        if (ndi.binary_dilation(ball, iterations=2) & truth).any():
            continue
        truth |= ball
    image = ndi.gaussian_filter(truth.astype(np.float32), 1.0) + rng.normal(0, 0.2, shape).astype(np.float32)
    core = ndi.binary_erosion(truth, iterations=1)
    ring = ndi.binary_dilation(truth, iterations=4) & ~ndi.binary_dilation(truth, iterations=1)
    ann = np.zeros(shape, np.uint8)
    for z in STROKE_PLANES:
        ann[z][ring[z]] = 1
        ann[z][core[z]] = 2
    return image.astype(np.float32), truth, ann


@pytest.fixture(scope="module")
def trained3d():
    torch.set_num_threads(1)
    image, truth, ann = spheres()
    torch.manual_seed(0)
    model = UNet(default_config(CPU, ndim=3))
    cfg = TrainConfig(steps=40, patch_size=64, batch_size=4, learning_rate=1e-2, val_fraction=0.0, seed=0)
    reports = list(train_model(model, [image[None]], [ann.astype(np.int16) - 1], cfg, CPU))
    return model, image, truth, ann, reports


# -- model -------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(1, 1, 1), (3, 17, 10), (8, 8, 8), (5, 31, 2)])
@pytest.mark.parametrize("depth", [1, 3])
def test_3d_output_has_input_shape_for_any_size(shape, depth):
    model = UNet(UNetConfig(in_channels=2, n_classes=3, depth=depth, width=4, filter_scales=2, ndim=3)).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 2, *shape))
    assert out.shape == (2, 3, *shape)
    assert torch.isfinite(out).all()


def test_3d_model_refuses_2d_input_and_configs_differ_by_ndim():
    model = UNet(UNetConfig(ndim=3, width=4))
    with pytest.raises(ValueError, match="3D U-Net"):
        model(torch.zeros(1, 1, 16, 16))
    cpu3 = default_config(CPU, ndim=3)
    assert cpu3.ndim == 3 and cpu3.width <= 16 and cpu3.depth == 3
    assert default_config(CPU) == UNetConfig(1, 2, 3, 16, 5, forest=1, channel_norm=0, feature_norm=1)  # 2D: sigma 1-16, forest
    assert default_config(torch.device("cuda"), 2, 3, ndim=3).ndim == 3
    with pytest.raises(ValueError):
        default_config(CPU, ndim=4)


# -- filter bank -------------------------------------------------------------
def test_closed_form_eigenvalues_match_eigvalsh():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(500, 3, 3, generator=g, dtype=torch.float64)
    a = a + a.transpose(1, 2)
    a[:10] = torch.eye(3, dtype=torch.float64) * 2.0  # repeated eigenvalues
    a[10:20] = 0.0  # flat image regions
    e = symmetric_eigvals3(a[:, 0, 0], a[:, 1, 1], a[:, 2, 2], a[:, 0, 1], a[:, 0, 2], a[:, 1, 2])
    ours = torch.stack(e[::-1], dim=1)  # ascending, like eigvalsh
    assert torch.allclose(ours, torch.linalg.eigvalsh(a), atol=1e-6)


def test_3d_filter_bank_shape_finite_and_rotation_invariant():
    bank = FilterBank(in_channels=2, scales=3, ndim=3)
    assert bank.out_channels == 2 * (1 + 5 * 3)
    assert sum(p.numel() for p in bank.parameters()) == 0
    x = torch.randn(1, 2, 12, 12, 12, generator=torch.Generator().manual_seed(0))
    out = bank(x)
    assert out.shape == (1, 32, 12, 12, 12) and torch.isfinite(out).all()
    assert torch.isfinite(bank(torch.ones(1, 2, 3, 5, 7))).all()  # flat and thinner than the kernels
    # Smoothing, gradient magnitude and Hessian eigenvalues do not depend on
    # orientation: rotating the cube in YX or swapping Z and Y rotates the
    # features with it (the cube's reflect borders rotate too, so exactly).
    for turn in (lambda t: torch.rot90(t, 1, dims=(-2, -1)), lambda t: t.transpose(-3, -2)):
        assert torch.allclose(bank(turn(x)), turn(out), atol=1e-4)


def test_hessian_eigenvalues_tell_blobs_from_tubes():
    zz, yy, xx = np.indices((21, 21, 21)) - 10
    ball = torch.tensor(np.exp(-(zz**2 + yy**2 + xx**2) / 8.0), dtype=torch.float32)[None, None]
    tube = torch.tensor(np.exp(-(yy**2 + xx**2) / 8.0), dtype=torch.float32)[None, None]
    bank = FilterBank(1, 2, ndim=3)
    centre = (0, slice(None), 10, 10, 10)
    # channels: raw, then per scale [smoothed, gradient, e1 >= e2 >= e3]; scale sigma=2
    e_ball = bank(ball)[centre][8:11]
    e_tube = bank(tube)[centre][8:11]
    assert (e_ball < -0.05).all()  # bright blob: curved down in all three directions
    assert abs(e_tube[0]) < 0.01 and (e_tube[1:] < -0.05).all()  # tube: flat along its axis


# -- samples -----------------------------------------------------------------
def test_3d_patch_shape_follows_patch_size_and_depth():
    assert patch_shape(128, 2) == (128, 128)
    assert patch_shape(128, 3) == (8, 64, 64)
    assert patch_shape(128, 3, depth=5) == (5, 64, 64)
    assert patch_shape(512, 3, depth=100) == (32, 256, 256)


def test_3d_sampler_balances_classes_and_keeps_image_and_target_aligned():
    image, truth, ann = spheres()
    rng = np.random.default_rng(0)
    # image channel = target, so geometric augmentation must move both alike
    target = ann.astype(np.int16) - 1
    data = prepare([np.stack([image, (target == 1).astype(np.float32) * 10])], [target], 64, 0.0, rng)
    sampler = PatchSampler(data, 64, 32, augment=True, rng=rng)
    x, y = sampler.batch()
    assert x.shape == (32, 2, 4, 32, 32) and x.dtype == np.float32
    assert y.shape == (32, 4, 32, 32) and y.dtype == np.int64
    assert np.mean([(yi == 1).any() for yi in y]) > 0.35
    labelled = y >= 0
    assert np.array_equal(x[:, 1][labelled] > 0.7, y[labelled] == 1)


def test_3d_augment_flips_z_and_rotates_yx_only():
    y = np.arange(4 * 6 * 6).reshape(4, 6, 6) % 7
    seen_z_flip = False
    for seed in range(12):
        xa, ya = augment((y * 10.0)[None].astype(np.float32), y, np.random.default_rng(seed))
        assert ya.shape == y.shape and xa.shape == (1, 4, 6, 6)
        assert np.array_equal(xa[0] > 0.7 * 10 - 5, ya > 0)  # still aligned
        # every plane of ya is a YX rotation/flip of one plane of y
        flipped = all(any(np.array_equal(np.rot90(p, k), ya[3 - z]) or np.array_equal(np.rot90(p, k)[:, ::-1], ya[3 - z]) for k in range(4)) for z, p in enumerate(y))
        kept = all(any(np.array_equal(np.rot90(p, k), ya[z]) or np.array_equal(np.rot90(p, k)[:, ::-1], ya[z]) for k in range(4)) for z, p in enumerate(y))
        assert flipped or kept
        seen_z_flip |= flipped and not kept
    assert seen_z_flip


def test_3d_validation_holds_out_whole_boxes_and_keeps_classes():
    image, _, ann = spheres()
    target = ann.astype(np.int16) - 1
    (item,) = prepare([image[None]], [target], 64, 0.3, np.random.default_rng(1))
    assert item.val_target is not None
    held = item.val_target >= 0
    assert held.any() and not np.any((item.train_target >= 0) & held)
    assert set(np.unique(item.train_target[item.train_target >= 0])) == {0, 1}
    assert set(item.train_coords) == {0, 1} and item.train_coords[0].shape[1] == 3
    x, y = validation_patches([item], 64)
    assert x.shape[1:] == (1, 4, 32, 32) and y.shape[1:] == (4, 32, 32) and (y >= 0).any()


# -- training ----------------------------------------------------------------
def test_3d_training_from_two_painted_planes_segments_unseen_planes(trained3d):
    model, image, truth, ann, reports = trained3d
    assert reports[-1].done and reports[-1].step == 40
    out = np.empty((2,) + image.shape, np.float32)
    for _ in iter_predict_tiled(model, image[None], 0.0, 1.0, out, CPU, tile=256):
        pass
    pred = out.argmax(0) == 1
    unseen = np.ones(image.shape, bool)
    unseen[list(STROKE_PLANES)] = False
    iou = (pred & truth & unseen).sum() / ((pred | truth) & unseen).sum()
    chance = truth.mean()  # IoU of guessing every voxel foreground
    print(f"3D IoU on unseen planes {iou:.3f}, chance {chance:.3f}")
    assert chance < 0.3 and iou > 0.7, (iou, chance)


def test_3d_training_validates_on_held_out_boxes():
    image, _, ann = spheres()
    model = UNet(UNetConfig(1, 2, depth=2, width=4, filter_scales=1, ndim=3))
    cfg = TrainConfig(steps=3, patch_size=64, batch_size=2, val_fraction=0.3, val_every=1, seed=0)
    reports = list(train_model(model, [image[None]], [ann.astype(np.int16) - 1], cfg, CPU))
    assert reports[-1].done and reports[-1].val_loss is not None and 0 <= reports[-1].val_iou <= 1


def test_3d_model_refuses_2d_annotations():
    model = UNet(UNetConfig(ndim=3, width=4))
    gen = train_model(model, [np.zeros((1, 8, 8), np.float32)], [np.zeros((8, 8), np.int16)], TrainConfig(steps=1), CPU)
    with pytest.raises(UserInputError, match="3D model"):
        next(gen)


# -- prediction --------------------------------------------------------------
class _Recording:
    """Array wrapper recording which regions are read or written."""

    def __init__(self, array):
        self.array, self.keys = array, []
        self.shape, self.dtype, self.ndim = array.shape, array.dtype, array.ndim

    def __getitem__(self, key):
        self.keys.append(key)
        return self.array[key]

    def __setitem__(self, key, value):
        self.keys.append(key)
        self.array[key] = value


def test_3d_tiled_matches_untiled_and_works_band_by_band(trained3d):
    model, image, *_ = trained3d
    volume = np.concatenate([image, image[::-1], image], axis=0)[:, :, :50]  # (60, 56, 50)
    whole = np.empty((2,) + volume.shape, np.float32)
    for _ in iter_predict_tiled(model, volume[None], 0.0, 1.0, whole, CPU, tile=512):
        pass
    src = _Recording(volume[None])
    out = _Recording(np.empty((2,) + volume.shape, np.float32))
    progress = list(iter_predict_tiled(model, src, 0.0, 1.0, out, CPU, tile=48, overlap=24, batch_size=3))
    tiled = out.array
    assert progress[-1].done == progress[-1].total == 2 * 2 * 2  # two tiles on each axis
    assert np.allclose(tiled.sum(0), 1, atol=1e-5)
    # As in 2D: tile borders lack far context (a 48-voxel tile is smaller
    # than the 3D net's receptive field); the overlap's blending keeps the
    # difference small.
    diff = np.abs(tiled - whole)
    assert diff.max() < 0.15 and diff.mean() < 0.005
    assert np.mean(tiled.argmax(0) == whole.argmax(0)) > 0.999
    # bounded memory: reads and writes are bands of at most one tile of rows,
    # over the whole depth, each output row written once
    rows = []
    for key in src.keys:
        assert key[1] == slice(None) and key[2].stop - key[2].start <= 48
    for key in out.keys:
        assert key[1] == slice(None) and key[3] == slice(None)
        rows += range(key[2].start, key[2].stop)
    assert rows == list(range(volume.shape[1]))


@pytest.mark.parametrize("shape", [(70, 90), (9, 30, 21)])
def test_one_tile_prediction_equals_a_direct_pass(shape):
    """2D and 3D: an image within one tile is padded once and predicted exactly as the network sees it."""
    torch.manual_seed(0)
    model = UNet(UNetConfig(1, 2, depth=3, width=4, filter_scales=2, ndim=len(shape))).eval()
    image = np.random.default_rng(0).normal(size=(1, *shape)).astype(np.float32)
    out = np.empty((2, *shape), np.float32)
    list(iter_predict_tiled(model, image, -1.0, 1.0, out, CPU, tile=512))
    padded = np.pad(image, [(0, 0)] + [(0, (-n) % 4) for n in shape], mode="reflect")
    with torch.no_grad():
        direct = torch.softmax(model(torch.from_numpy((padded + 1.0) / 2.0)[None]), 1)[0].numpy()
    assert np.array_equal(out, direct[(slice(None), *(slice(0, n) for n in shape))])


# -- model files -------------------------------------------------------------
def test_3d_checkpoint_round_trip(tmp_path, trained3d):
    model, image, *_ = trained3d
    path = save_checkpoint(
        tmp_path / "m3d.pt",
        {"state_dict": model.state_dict(), "config": model.config.to_dict(), "normalization": {}, "class_names": ["background", "ball"], "history": []},
    )
    data = load_checkpoint(path)
    config = UNetConfig.from_dict(data["config"])
    assert config == model.config and config.ndim == 3
    loaded = UNet(config).eval()
    loaded.load_state_dict(data["state_dict"])
    x = torch.from_numpy(image[None, None, :8, :16, :16])
    with torch.no_grad():
        assert torch.equal(loaded(x), model.eval()(x))
    # a model file written before 3D support has no ndim: it is a 2D model
    old = {k: v for k, v in config.to_dict().items() if k != "ndim"}
    assert UNetConfig.from_dict(old).ndim == 2
