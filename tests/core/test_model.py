import numpy as np
import pytest
import torch

from napari_unet.core.model import UNet, UNetConfig, default_config


@pytest.mark.parametrize("shape", [(37, 51), (64, 64), (5, 130), (1, 1)])
@pytest.mark.parametrize("depth", [1, 3, 4])
def test_output_has_input_shape_for_any_size(shape, depth):
    model = UNet(UNetConfig(in_channels=2, n_classes=3, depth=depth, width=8)).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 2, *shape))
    assert out.shape == (2, 3, *shape)


def test_eval_mode_matches_train_mode_after_small_batch_training():
    """No running statistics, so eval-mode output equals train-mode output.

    With BatchNorm, a few dozen steps on tiny batches leave running
    statistics that make eval-mode predictions differ wildly.
    """
    torch.manual_seed(0)
    model = UNet(UNetConfig(1, 2, depth=3, width=8, filter_scales=0))
    opt = torch.optim.Adam(model.parameters(), 1e-2)
    x = torch.randn(2, 1, 32, 32) * 3 + 5
    y = (x[:, 0] > 5).long()
    for _ in range(30):
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        train_out = model.train()(x)
        eval_out = model.eval()(x)
    assert torch.allclose(train_out, eval_out, atol=1e-5)
    # and the fine-tuned model predicts sensibly in eval mode
    acc = (eval_out.argmax(1) == y).float().mean().item()
    assert acc > 0.9


def test_default_config_is_small_on_cpu():
    cpu = default_config(torch.device("cpu"))
    gpu = default_config(torch.device("cuda"))
    assert (cpu.depth, cpu.width, cpu.filter_scales, cpu.forest, cpu.channel_norm) == (3, 16, 5, 1, 0)
    assert (gpu.depth, gpu.width, gpu.filter_scales, gpu.forest) == (4, 32, 5, 1)


def test_config_of_old_model_files_keeps_the_old_architecture():
    """Files written before the forest have neither key: plain U-Net with channel norm."""
    old = UNetConfig.from_dict({"in_channels": 1, "n_classes": 2, "depth": 3, "width": 16, "filter_scales": 4})
    assert (old.forest, old.channel_norm) == (0, 1)
    assert UNet(old).forest is None


def test_filter_bank_adds_fixed_channels_and_no_parameters():
    from napari_unet.core.filters import FilterBank

    bank = FilterBank(in_channels=2, scales=3)
    assert bank.out_channels == 2 * (1 + 4 * 3)
    assert sum(p.numel() for p in bank.parameters()) == 0
    x = torch.zeros(1, 2, 40, 30)
    x[..., 20, 15] = 1.0
    out = bank(x)
    assert out.shape == (1, 26, 40, 30) and torch.isfinite(out).all()
    # a constant image has no edges or curvature at any scale
    flat = bank(torch.ones(1, 2, 40, 30))
    assert torch.allclose(flat[:, 2:], flat[:, 2:] * 0 + flat[:, 2:].mean(dim=(2, 3), keepdim=True), atol=1e-4)


def test_config_round_trip():
    cfg = UNetConfig(3, 4, 2, 8)
    assert UNetConfig.from_dict(cfg.to_dict()) == cfg


def test_prediction_of_a_region_does_not_depend_on_far_away_pixels():
    """Normalisation is per pixel: content outside the receptive field changes nothing (tiling needs this)."""
    torch.manual_seed(0)
    model = UNet(UNetConfig(1, 2, depth=2, width=8, filter_scales=0)).eval()
    x = torch.randn(1, 1, 64, 64)
    y = x.clone()
    y[..., 48:, :] = 50.0
    with torch.no_grad():
        a, b = model(x), model(y)
    assert torch.allclose(a[..., :16, :], b[..., :16, :], atol=1e-5)


def test_feature_statistics_are_measured_once_and_kept():
    """A fresh model standardises its filter features by its first images' statistics, then keeps them."""
    import torch

    from napari_unet.core.model import UNet, default_config
    from napari_unet.core.training import TrainConfig, train_model
    from tests.helpers import blobs_image

    image, _, ann = blobs_image((64, 64))
    model = UNet(default_config(torch.device("cpu")))
    assert model.config.feature_norm == 1 and model.needs_feature_stats
    target = ann.astype(np.int16) - 1
    list(train_model(model, [image[None]], [target], TrainConfig(steps=1, seed=0), torch.device("cpu")))
    feats = model.features(torch.as_tensor(image[None, None]))[0]
    np.testing.assert_allclose(model.feature_mean.numpy(), feats.mean(dim=(1, 2)).numpy(), rtol=1e-4, atol=1e-5)
    assert not model.needs_feature_stats
    kept = model.feature_mean.clone()
    list(train_model(model, [image[None] * 2], [target], TrainConfig(steps=1, seed=0), torch.device("cpu")))
    assert torch.equal(model.feature_mean, kept)  # resuming does not change what the weights were trained on


def test_model_files_without_feature_norm_load_as_before():
    from napari_unet.core.model import UNet, UNetConfig

    old = UNetConfig.from_dict({"in_channels": 1, "n_classes": 2, "depth": 2, "width": 4, "filter_scales": 1, "forest": 1, "channel_norm": 0})
    assert old.feature_norm == 0
    assert "feature_mean" not in UNet(old).state_dict()
