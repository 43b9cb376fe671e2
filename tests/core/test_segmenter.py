import numpy as np
import pytest

from napari_unet.core import segmenter as segmenter_module
from napari_unet.core.model import UNetConfig
from napari_unet.core.segmenter import Segmenter, as_channels_first, model_ndim
from napari_unet.core.training import TrainConfig
from napari_unet.errors import UserInputError

SMALL = TrainConfig(steps=3, val_fraction=0, patch_size=32, batch_size=2, seed=0)


def test_as_channels_first_for_2d_and_3d():
    assert as_channels_first(np.zeros((5, 6))).shape == (1, 5, 6)
    assert as_channels_first(np.zeros((2, 5, 6))).shape == (2, 5, 6)
    assert as_channels_first(np.zeros((4, 5, 6)), ndim=3).shape == (1, 4, 5, 6)
    assert as_channels_first(np.zeros((2, 4, 5, 6)), ndim=3).shape == (2, 4, 5, 6)
    with pytest.raises(UserInputError, match=r"expected a 2D image \(Y, X\) or \(C, Y, X\), got shape \(1, 2, 5, 6\)"):
        as_channels_first(np.zeros((1, 2, 5, 6)))
    with pytest.raises(UserInputError, match=r"expected a 3D volume \(Z, Y, X\) or \(C, Z, Y, X\), got shape \(5, 6\)"):
        as_channels_first(np.zeros((5, 6)), ndim=3)


def test_model_ndim_defaults_to_2d_for_old_configs():
    assert model_ndim(None) == 2
    assert model_ndim(UNetConfig(1, 2)) == 2
    assert model_ndim(UNetConfig.from_dict({"in_channels": 1, "n_classes": 2, "depth": 2, "width": 8, "filter_scales": 0})) == 2


def test_channel_and_shape_mismatches_are_refused(blobs):
    image, _, ann = blobs
    seg = Segmenter(UNetConfig(1, 2, depth=2, width=8), device="cpu")
    with pytest.raises(UserInputError, match=r"annotations of shape \(96, 95\) do not match the image's shape \(96, 96\)"):
        next(seg.train(image, ann[:, :-1], SMALL))
    seg.fit(image, ann, SMALL)
    rgb = np.stack([image] * 3, -1)
    with pytest.raises(UserInputError, match=r"the model expects 1 channel\(s\) but the image has 3 \(axes 'YXC'\)"):
        next(seg.iter_predict(np.moveaxis(rgb, -1, 0), axes="YXC"))
    with pytest.raises(UserInputError, match=r"the model expects 1 channel\(s\) but the image has 2; check which axis"):
        next(seg.train([np.stack([image, image])], [ann], SMALL))
    with pytest.raises(UserInputError, match=r"the output of shape \(2, 96, 90\) does not fit 2 classes"):
        next(seg.iter_predict(image, out=np.zeros((2, 96, 90), np.float32)))
    with pytest.raises(UserInputError, match="same number of channels"):
        next(Segmenter(device="cpu").train([image, np.stack([image, image])], [ann, ann], SMALL))


def test_fresh_models_get_the_requested_spatial_dimensions(blobs, monkeypatch):
    image, _, ann = blobs
    calls = []
    real = segmenter_module.default_config

    def recording(device, channels, n_classes, **kwargs):
        calls.append((channels, n_classes, kwargs))
        return real(device, channels, n_classes, **kwargs)

    monkeypatch.setattr(segmenter_module, "default_config", recording)
    seg = Segmenter(device="cpu")
    first = next(seg.train(image, ann, SMALL))
    assert first.step == 1 and calls == [(1, 2, {})]  # 2D: called as before ndim existed
    # An existing model keeps its own dimensions whatever ndim says.
    next(seg.train(image, ann, SMALL, ndim=3))
    assert len(calls) == 1 and model_ndim(seg.config) == 2
    # A fresh 3D model is asked for with ndim=3; a volume (Z, Y, X) is one image.
    volume = np.stack([image[:32, :32]] * 4)
    strokes = np.stack([ann[:32, :32]] * 4)
    seg3 = Segmenter(device="cpu")
    assert next(seg3.train(volume, strokes, SMALL, ndim=3)).step == 1
    assert calls[-1] == (1, 2, {"ndim": 3}) and model_ndim(seg3.config) == 3
    assert seg3.predict_probabilities(volume).shape == (2, 4, 32, 32)
    with pytest.raises(UserInputError, match=r"expected a 3D volume \(Z, Y, X\) or \(C, Z, Y, X\), got shape \(32, 32\)"):
        next(seg3.iter_predict(image[:32, :32]))
    with pytest.raises(UserInputError, match="2 or 3 spatial dimensions"):
        next(Segmenter(device="cpu").train(image, ann, SMALL, ndim=4))
