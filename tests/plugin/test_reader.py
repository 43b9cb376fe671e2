"""The npe2 TIFF reader: which paths it claims, what it returns, how it fails."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

from napari_unet import DISTRIBUTION
from napari_unet.errors import UserInputError
from napari_unet.plugin.reader import napari_get_reader, read_tiffs


@pytest.mark.parametrize("name", ["a.tif", "a.tiff", "A.TIF", "dir/b.Tiff"])
def test_claims_tiff_paths(name: str) -> None:
    assert napari_get_reader(name) is read_tiffs


@pytest.mark.parametrize("path", ["a.png", "a.tif.zip", "folder", [], ["a.tif", "b.png"]])
def test_declines_other_paths(path) -> None:
    assert napari_get_reader(path) is None


def test_reads_one_or_several_files_as_named_images(tmp_path) -> None:
    a = np.arange(12, dtype=np.uint16).reshape(3, 4)
    b = np.full((5, 6), 0.5, dtype=np.float32)
    tifffile.imwrite(tmp_path / "cells.tif", a)
    tifffile.imwrite(tmp_path / "more cells.tiff", b)

    [(data, meta, kind)] = napari_get_reader(str(tmp_path / "cells.tif"))(str(tmp_path / "cells.tif"))
    assert kind == "image" and meta["name"] == "cells"
    assert data.dtype == np.uint16
    np.testing.assert_array_equal(data, a)

    paths = [str(tmp_path / "cells.tif"), str(tmp_path / "more cells.tiff")]
    layers = napari_get_reader(paths)(paths)
    assert [meta["name"] for _, meta, _ in layers] == ["cells", "more cells"]
    np.testing.assert_array_equal(layers[1][0], b)


@pytest.mark.parametrize(
    ("shape", "dtype", "options", "expected_shape", "axes", "rgb"),
    [
        ((5, 16, 12), np.uint16, {"imagej": True, "metadata": {"axes": "ZYX"}}, (5, 16, 12), "ZYX", False),
        ((2, 3, 2, 16, 12), np.uint16, {"imagej": True, "metadata": {"axes": "TZCYX"}}, (2, 2, 3, 16, 12), "CTZYX", False),
        ((16, 12, 3), np.uint8, {"photometric": "rgb"}, (16, 12, 3), "YXC", True),
        ((2, 16, 12), np.uint16, {"metadata": {"axes": "CYX"}}, (2, 16, 12), "CYX", False),
    ],
)
def test_nd_files_keep_their_axes_with_channels_in_one_layer(tmp_path, shape, dtype, options, expected_shape, axes, rgb) -> None:
    data = np.arange(np.prod(shape)).reshape(shape).astype(dtype)
    path = tmp_path / "stack.ome.tif"
    tifffile.imwrite(path, data, **options)
    [(read, meta, kind)] = read_tiffs(str(path))
    assert meta["name"] == "stack" and meta["metadata"] == {"axes": axes} and meta["rgb"] is rgb
    assert read.shape == expected_shape
    if axes == "CTZYX":  # channels moved first so label layers (TZYX) line up in napari
        np.testing.assert_array_equal(read[1], data[:, :, 1])
    else:
        np.testing.assert_array_equal(read, data)


def test_large_files_open_lazily(tmp_path, monkeypatch) -> None:
    import napari_unet.plugin.reader as reader

    data = np.arange(4 * 16 * 12, dtype=np.uint16).reshape(4, 16, 12)
    tifffile.imwrite(tmp_path / "big.tif", data, imagej=True, metadata={"axes": "ZYX"})
    monkeypatch.setattr(reader, "LAZY_BYTES", 100)
    monkeypatch.setattr(reader, "read_image", lambda path: pytest.fail("read whole"))
    [(read, meta, _)] = read_tiffs(str(tmp_path / "big.tif"))
    assert not isinstance(read, np.ndarray) and meta["metadata"] == {"axes": "ZYX"}
    np.testing.assert_array_equal(np.asarray(read[2]), data[2])


def test_unreadable_file_gives_a_readable_error(tmp_path) -> None:
    bad = tmp_path / "broken.tif"
    bad.write_bytes(b"this is not a TIFF")
    with pytest.raises(UserInputError, match="broken.tif"):
        read_tiffs(str(bad))


def test_nan_pixels_are_refused(tmp_path) -> None:
    path = tmp_path / "nan.tif"
    tifffile.imwrite(path, np.array([[0.0, np.nan]], dtype=np.float32))
    with pytest.raises(UserInputError, match="NaN"):
        read_tiffs(str(path))


@pytest.mark.gui
def test_viewer_opens_tiff_through_the_plugin(make_napari_viewer, tmp_path) -> None:
    image = (np.arange(64 * 48) % 4000).astype(np.uint16).reshape(64, 48)
    tifffile.imwrite(tmp_path / "nuclei.tif", image)
    viewer = make_napari_viewer()
    [layer] = viewer.open(str(tmp_path / "nuclei.tif"), plugin=DISTRIBUTION)
    from napari.layers import Image

    assert layer.name == "nuclei" and isinstance(layer, Image)
    assert layer.data.dtype == np.uint16
    np.testing.assert_array_equal(layer.data, image)
