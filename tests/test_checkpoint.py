import numpy as np
import pytest
import torch

from napari_unet.core.checkpoint import FORMAT, load_checkpoint
from napari_unet.core.errors import ModelFileError
from napari_unet.core.model import UNetConfig
from napari_unet.core.segmenter import Segmenter
from napari_unet.core.training import TrainConfig


@pytest.fixture(scope="module")
def trained_segmenter():
    from tests.conftest import blobs_image

    image, _, ann = blobs_image()
    seg = Segmenter(UNetConfig(1, 2, depth=2, width=8), device="cpu", class_names=["background", "nucleus"])
    seg.fit(image, ann, TrainConfig(steps=8, patch_size=32, batch_size=2, seed=0))
    return seg, image, ann


def test_round_trip_keeps_everything(trained_segmenter, tmp_path):
    seg, image, _ = trained_segmenter
    path = seg.save(tmp_path / "model.pt")
    loaded = Segmenter.load(path, device="cpu")
    assert loaded.config == seg.config
    assert loaded.normalization == seg.normalization
    assert loaded.names() == ["background", "nucleus"]
    assert loaded.history == seg.history and loaded.is_trained
    np.testing.assert_array_equal(loaded.predict_probabilities(image), seg.predict_probabilities(image))


def test_training_resumes_from_a_file(trained_segmenter, tmp_path):
    seg, image, ann = trained_segmenter
    loaded = Segmenter.load(seg.save(tmp_path / "m.pt"), device="cpu")
    loaded.fit(image, ann, TrainConfig(steps=3, patch_size=32, batch_size=2))
    assert {h["run"] for h in loaded.history} == {0, 1}


@pytest.mark.parametrize(
    "content, message",
    [
        (b"this is not a model", "not a napari-unet model"),
        (b"", "not a napari-unet model"),
    ],
)
def test_garbage_files_are_refused(tmp_path, content, message):
    path = tmp_path / "bad.pt"
    path.write_bytes(content)
    with pytest.raises(ModelFileError, match=message):
        Segmenter.load(path)


def test_other_torch_files_and_newer_formats_are_refused(tmp_path, trained_segmenter):
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(3)}, other)
    with pytest.raises(ModelFileError, match="not a napari-unet model"):
        load_checkpoint(other)
    newer = tmp_path / "newer.pt"
    torch.save({"format": FORMAT, "format_version": 99, "state_dict": {}, "config": {}, "normalization": {}}, newer)
    with pytest.raises(ModelFileError, match="newer napari-unet"):
        load_checkpoint(newer)
    mismatched = tmp_path / "mismatch.pt"
    seg, _, _ = trained_segmenter
    data = load_checkpoint(seg.save(tmp_path / "ok.pt"))
    data["config"]["width"] = 16
    torch.save(data, mismatched)
    with pytest.raises(ModelFileError, match="does not fit"):
        Segmenter.load(mismatched)
    with pytest.raises(ModelFileError, match="not found"):
        Segmenter.load(tmp_path / "missing.pt")


def test_loading_executes_no_code(tmp_path):
    """weights_only=True: a pickle that would run code is refused, and the code does not run."""
    import pickle

    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    path = tmp_path / "evil.pt"
    with open(path, "wb") as f:
        pickle.dump({"format": FORMAT, "x": Evil()}, f)
    with pytest.raises(ModelFileError):
        load_checkpoint(path)
    assert not marker.exists()
