"""``napari-unet export``: bioimage.io model packages, checked by bioimageio.core."""

from __future__ import annotations

import zipfile

import numpy as np
import pytest
import tifffile
import torch
import yaml

from napari_unet.bioimage_io import trace
from napari_unet.cli import main
from tests.helpers import blobs_image

bioimageio_core = pytest.importorskip("bioimageio.core")


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    """A small 2D model trained for 3 steps, saved as a model file."""
    from napari_unet.core.model import UNetConfig
    from napari_unet.core.segmenter import Segmenter
    from napari_unet.core.training import TrainConfig

    image, _, ann = blobs_image()
    segmenter = Segmenter(UNetConfig(depth=2, width=8, filter_scales=2), device="cpu", class_names=["background", "nucleus"])
    segmenter.fit(image, ann, TrainConfig(steps=3, seed=0))
    path = tmp_path_factory.mktemp("export") / "nuclei model.pt"
    segmenter.save(path)
    return path


def _rdf(package) -> dict:
    with zipfile.ZipFile(package) as z:
        return yaml.safe_load(z.read("rdf.yaml"))


@pytest.mark.slow
def test_export_writes_a_package_that_bioimageio_core_passes(model_file, tmp_path, capsys):
    package = tmp_path / "nuclei.zip"
    assert main(["export", str(model_file), "-o", str(package), "--author", "A. Biologist", "--no-test"]) == 0
    assert "not checked" in capsys.readouterr().out
    # `bioimageio test nuclei.zip`: the model runs on its test input and reproduces the test output.
    summary = bioimageio_core.test_model(str(package))
    assert summary.status == "passed", summary.format()

    rdf = _rdf(package)
    assert set(rdf["weights"]) == {"torchscript", "pytorch_state_dict"}
    assert rdf["weights"]["pytorch_state_dict"]["architecture"]["kwargs"]["config"]["width"] == 8
    [inp], [out] = rdf["inputs"], rdf["outputs"]
    assert [a.get("id", a["type"]) for a in inp["axes"]] == ["batch", "channel", "y", "x"]
    scale = [p for p in inp["preprocessing"] if p["id"] == "scale_range"][0]["kwargs"]
    assert (scale["min_percentile"], scale["max_percentile"]) == (1.0, 99.8)
    assert out["axes"][1]["channel_names"] == ["background", "nucleus"]
    assert "3 steps" in rdf["description"] and rdf["authors"] == [{"name": "A. Biologist"}]
    assert rdf["name"] == "nuclei model"
    assert rdf["config"]["napari_unet"]["history"][-1]["step"] == 3
    with zipfile.ZipFile(package) as z:
        names = set(z.namelist())
        readme = z.read(rdf["documentation"]["source"] if isinstance(rdf["documentation"], dict) else rdf["documentation"]).decode()
    assert {"cover.png", "test_input.npy", "test_output.npy"} <= names
    assert "## Validation" in readme and "| 1 | 3 |" in readme


@pytest.mark.slow
def test_export_with_a_sample_image_of_another_size(model_file, tmp_path, capsys):
    image, _, _ = blobs_image((100, 90))
    sample = tmp_path / "sample.tif"
    tifffile.imwrite(sample, (image * 1000 + 2000).astype(np.uint16))
    package = tmp_path / "m.zip"
    assert main(["export", str(model_file), "-o", str(package), "--sample", str(sample)]) == 0
    assert "checked with bioimageio.core" in capsys.readouterr().out  # the export ran the same test
    with zipfile.ZipFile(package) as z:
        z.extract("test_input.npy", tmp_path)
    test_input = np.load(tmp_path / "test_input.npy")
    assert test_input.shape == (1, 1, 128, 128)  # padded up to the smallest size consumers may pass
    assert test_input.max() > 2000  # raw intensities: the package normalises them


def test_export_refuses_a_sample_with_other_channels(model_file, tmp_path, capsys):
    sample = tmp_path / "rgb.tif"
    tifffile.imwrite(sample, np.zeros((64, 64, 3), np.uint8))
    assert main(["export", str(model_file), "-o", str(tmp_path / "m.zip"), "--sample", str(sample)]) == 1
    assert "channel" in capsys.readouterr().err
    assert not (tmp_path / "m.zip").exists()


class _SizeBranching(torch.nn.Module):
    """Right only at the size it is traced at: a Python branch on the input's size."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * 2 if x.shape[-1] == 64 else x


def test_trace_reports_a_network_that_is_right_only_at_the_traced_size():
    traced, general = trace(_SizeBranching(), torch.rand(1, 1, 64, 64), (32, 32))
    assert general is False
    traced, general = trace(torch.nn.Identity(), torch.rand(1, 1, 64, 64), (32, 32))
    assert general is True


def test_the_package_readme_says_when_napari_unet_places_edges_after_the_network():
    """Edges at half contrast are a step after the network: a package's users must know they do not get it."""
    from napari_unet.bioimage_io import _half_contrast_text
    from napari_unet.core.segmenter import Segmenter

    segmenter = Segmenter(device="cpu")
    assert _half_contrast_text(segmenter) == ""
    segmenter.half_contrast = True
    assert "not part of these weights" in _half_contrast_text(segmenter)
