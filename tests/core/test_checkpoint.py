import numpy as np
import pytest
import torch

from napari_unet.core.checkpoint import FORMAT, load_checkpoint
from napari_unet.core.model import UNetConfig
from napari_unet.core.segmenter import Segmenter
from napari_unet.core.training import TrainConfig
from napari_unet.errors import ModelFileError


@pytest.fixture(scope="module")
def trained_segmenter():
    from tests.helpers import blobs_image

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


def test_the_minimum_object_size_learned_from_objects_painted_whole_is_kept(trained_segmenter, tmp_path):
    """A model trained on objects painted whole keeps their size rule; predictions use it unless told otherwise."""
    seg, image, _ = trained_segmenter
    assert seg.min_object_size is None and seg.instance_params().min_size == 16 and seg.min_object_note() is None
    seg.min_object_size = 40
    try:
        loaded = Segmenter.load(seg.save(tmp_path / "m.pt"), device="cpu")
    finally:
        seg.min_object_size = None
    assert loaded.min_object_size == 40 and loaded.instance_params().min_size == 40
    assert "objects under 40 px" in loaded.min_object_note()
    _, instances = loaded.segment(image)
    sizes = np.bincount(instances.ravel())[1:]
    assert sizes.size == 0 or sizes.min() >= 40


def test_a_model_whose_objects_tile_keeps_that_in_its_file(tmp_path):
    """Cells between membranes: the forest's answer on the training image says the objects tile; the file keeps it."""
    from tests.helpers import blobs_image

    rng = np.random.default_rng(0)
    cells = np.ones((96, 128), bool)
    cells[::24] = cells[1::24] = cells[2::24] = False
    cells[:, ::32] = cells[:, 1::32] = cells[:, 2::32] = False
    image = (np.where(cells, 0.8, 0.1) + rng.normal(0, 0.05, cells.shape)).astype(np.float32)
    ann = np.zeros(cells.shape, np.uint8)
    ann[:, :64] = np.where(cells[:, :64], 2, 1)
    seg = Segmenter(device="cpu")  # the default model: a forest's first answer, then the U-Net
    last = seg.fit(image, ann, TrainConfig(steps=2, patch_size=32, batch_size=2, seed=0))
    assert last.tiled and seg.tiled and seg.instance_params().tiled and "tile the image" in seg.tiled_note()
    loaded = Segmenter.load(seg.save(tmp_path / "cells.pt"), device="cpu")
    assert loaded.tiled and loaded.instance_params(min_size=30).tiled
    blobs, _, blob_ann = blobs_image()
    nuclei = Segmenter(device="cpu")
    nuclei.fit(blobs, blob_ann, TrainConfig(steps=2, patch_size=32, batch_size=2, seed=0))
    assert not nuclei.tiled and nuclei.tiled_note() is None and not Segmenter.load(nuclei.save(tmp_path / "nuclei.pt"), device="cpu").tiled


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


def _tampered(tmp_path, trained_segmenter, change):
    seg, _, _ = trained_segmenter
    data = load_checkpoint(seg.save(tmp_path / "ok.pt"))
    change(data)
    path = tmp_path / "tampered.pt"
    torch.save(data, path)
    return path


def _set(key, value):
    return lambda d: d.__setitem__(key, value)


def _set_in(key, field, value):
    return lambda d: d[key].__setitem__(field, value)


@pytest.mark.parametrize(
    "change, message",
    [
        (_set("config", "UNetConfig(in_channels=1)"), "config is a str"),
        (_set("config", {}), "lacks in_channels"),
        (_set_in("config", "depth", "2"), "'depth' is '2', not an integer"),
        (_set_in("config", "n_classes", 2.0), "not an integer"),
        (_set_in("config", "n_classes", 70000), "outside"),
        (_set_in("config", "ndim", 4), "outside 2..3"),
        (_set_in("config", "width", True), "not an integer"),
        (_set("normalization", "percentile"), "normalisation is a str"),
        (_set("normalization", {"low_percentile": "x", "high_percentile": [1]}), "'low_percentile'"),
        (_set_in("normalization", "per_image", "yes"), "per_image"),
        (_set_in("normalization", "low", float("nan")), "'low'"),
        (_set_in("normalization", "high_percentile", 500.0), "'high_percentile'"),
        (_set("state_dict", [1, 2, 3]), "weights"),
        (lambda d: d["state_dict"].__setitem__(next(iter(d["state_dict"])), torch.tensor([float("nan")])), "NaN"),
        (_set("class_names", "background"), "class names"),
        (_set("class_names", ["background"]), "names 1 classes"),
        (_set("history", {"run": 0}), "history is not a list"),
        (_set("history", [{"run": "zero", "step": 1}]), "history"),
        (_set("min_object_size", "30"), "minimum object size '30'"),
        (_set("min_object_size", -1), "minimum object size -1"),
        (_set("tiled", 1), "flag is not true or false"),
        (_set("half_contrast", "yes"), "'edges at half contrast' flag"),
    ],
)
def test_malformed_model_files_are_refused_naming_the_file(tmp_path, trained_segmenter, change, message):
    path = _tampered(tmp_path, trained_segmenter, change)
    with pytest.raises(ModelFileError, match="tampered.pt") as exc:
        Segmenter.load(path, device="cpu")
    assert message in str(exc.value)


def test_an_unavailable_device_is_not_blamed_on_the_file(tmp_path, trained_segmenter, monkeypatch):
    from napari_unet.errors import UserInputError

    seg, _, _ = trained_segmenter
    path = seg.save(tmp_path / "m.pt")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(UserInputError) as exc:
        Segmenter.load(path, device="cuda")
    assert not isinstance(exc.value, ModelFileError) and "no CUDA GPU" in str(exc.value)
