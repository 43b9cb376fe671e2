"""Bundled sample TIFFs and the napari sample-data contribution agree."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile

from napari_unet.eval.synthetic import SAMPLE_PARAMS, make_nuclei
from napari_unet.plugin.sample_data import make_sample_nuclei

SAMPLE_DIR = Path(__file__).resolve().parents[2] / "sample_data"


@pytest.fixture(scope="module")
def generated():
    return make_nuclei(**SAMPLE_PARAMS)


@pytest.mark.parametrize(
    "name, attr",
    [
        ("nuclei_image.tif", "image"),
        ("nuclei_annotations.tif", "annotations"),
        ("nuclei_truth.tif", "instances"),
    ],
)
def test_bundled_tiffs_match_generator(generated, name: str, attr: str) -> None:
    path = SAMPLE_DIR / name
    assert path.stat().st_size < 300 * 1024
    on_disk = tifffile.imread(path)
    expected = getattr(generated, attr)
    assert on_disk.dtype == expected.dtype
    assert on_disk.shape == expected.shape
    np.testing.assert_array_equal(on_disk, expected)


def test_make_sample_nuclei_layer_tuples(generated) -> None:
    layers = make_sample_nuclei()
    assert [(meta["name"], kind) for _, meta, kind in layers] == [
        ("nuclei", "image"),
        ("nuclei annotations", "labels"),
        ("nuclei ground truth", "labels"),
    ]
    (image, _, _), (ann, _, _), (truth, truth_meta, _) = layers
    np.testing.assert_array_equal(image, generated.image)
    np.testing.assert_array_equal(ann, generated.annotations)
    np.testing.assert_array_equal(truth, generated.instances)
    assert truth_meta["visible"] is False
    # The annotation layer must be paintable in napari.
    assert ann.flags.writeable
