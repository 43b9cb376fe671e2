"""Opening inputs with their axes (napari_unet.io.inputs): the one way the CLI, batch and the reader do it."""

import numpy as np
import pytest
import tifffile

from napari_unet.errors import UserInputError
from napari_unet.io.inputs import declared_axes, image_planes, is_tiff, open_image, resolve_axes


def test_is_tiff_ignores_case():
    assert is_tiff("a.TIF") and is_tiff("dir/b.tiff") and not is_tiff("c.zarr") and not is_tiff("tif")


def test_declared_axes_only_when_they_fit(tmp_path):
    data = np.zeros((2, 3, 16, 20), np.uint16)
    tifffile.imwrite(tmp_path / "ij.tif", data, imagej=True, metadata={"axes": "ZCYX"})
    assert declared_axes(tmp_path / "ij.tif", data.shape) == "ZCYX"
    assert declared_axes(tmp_path / "ij.tif", data.shape[1:]) is None  # another shape: not these axes
    (tmp_path / "junk.tif").write_bytes(b"not a tiff")
    assert declared_axes(tmp_path / "junk.tif", (4, 4)) is None  # metadata is a hint; the reader reports it


def test_resolve_axes_says_when_it_guessed_or_overrode(tmp_path):
    tifffile.imwrite(tmp_path / "plain.tif", np.zeros((3, 16, 20), np.uint8), photometric="minisblack")
    tifffile.imwrite(tmp_path / "ij.tif", np.zeros((3, 16, 20), np.uint8), imagej=True, metadata={"axes": "TYX"})
    assert resolve_axes(tmp_path / "plain.tif", (3, 16, 20), None) == ("ZYX", "reading plain.tif as ZYX (guessed; use --axes to change)")
    assert resolve_axes(tmp_path / "ij.tif", (3, 16, 20), None) == ("TYX", None)
    assert resolve_axes(tmp_path / "ij.tif", (3, 16, 20), "zyx") == ("ZYX", "note: ij.tif's metadata says TYX; using --axes ZYX")
    with pytest.raises(UserInputError, match=r"^plain\.tif: "):
        resolve_axes(tmp_path / "plain.tif", (3, 16, 20), "YX")


def test_image_planes_open_lazily_and_refuse_a_3d_model_without_z(tmp_path):
    data = np.arange(3 * 16 * 20, dtype=np.uint16).reshape(3, 16, 20)
    tifffile.imwrite(tmp_path / "t.tif", data, imagej=True, metadata={"axes": "TYX"})
    assert isinstance(open_image(tmp_path / "t.tif"), np.memmap)
    planes, note = image_planes(tmp_path / "t.tif", None, 2)
    assert planes.axes == "TYX" and len(planes) == 3 and note is None
    with pytest.raises(UserInputError, match="t.tif: a 3D model needs volumes with a Z axis"):
        image_planes(tmp_path / "t.tif", None, 3)
