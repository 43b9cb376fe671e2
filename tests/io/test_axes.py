import dask.array as da
import numpy as np
import pytest
import tifffile
import zarr

from napari_unet.core.inference import _read_padded
from napari_unet.core.normalize import _subsample
from napari_unet.errors import UserInputError
from napari_unet.io.axes import ArrayView, Planes, axes_from_tiff, normalize_axes
from tests.helpers import Recorder


@pytest.mark.parametrize(
    "shape, rgb, axes",
    [
        ((64, 80), False, "YX"),
        ((7, 64, 80), False, "ZYX"),
        ((64, 80, 3), False, "YXC"),
        ((64, 80, 4), False, "YXC"),
        ((64, 80, 5), True, "YXC"),
        ((6, 64, 80, 3), False, "ZYXC"),
        ((2, 6, 64, 80, 3), False, "TZYXC"),
        ((2, 6, 64, 80), False, "CZYX"),
        ((9, 6, 64, 80), False, "TZYX"),
        ((2, 6, 3, 64, 80), False, "TZCYX"),
    ],
)
def test_axes_are_guessed_from_the_shape(shape, rgb, axes):
    assert normalize_axes(None, shape, rgb=rgb) == axes


def test_given_axes_are_validated_with_clear_messages():
    assert normalize_axes("zyx", (3, 4, 5)) == "ZYX"
    assert normalize_axes("YXS", (4, 5, 3)) == "YXC"
    assert normalize_axes("TCYX", (2, 3, 4, 5)) == "TCYX"
    with pytest.raises(UserInputError, match=r"axes 'ZYX' do not fit an image of shape \(4, 5\) \(2 dimensions\)"):
        normalize_axes("ZYX", (4, 5))
    with pytest.raises(UserInputError, match="unknown letter"):
        normalize_axes("QYX", (3, 4, 5))
    with pytest.raises(UserInputError, match="more than once"):
        normalize_axes("YYX", (3, 4, 5))
    with pytest.raises(UserInputError, match="must contain Y and X"):
        normalize_axes("ZCY", (3, 4, 5))
    with pytest.raises(UserInputError, match="in that order"):
        normalize_axes("XY", (4, 5))
    with pytest.raises(UserInputError, match="cannot tell the axes"):
        normalize_axes(None, (4, 5, 6, 7, 8, 9))
    with pytest.raises(UserInputError, match="cannot tell the axes"):
        normalize_axes(None, (40,))


def test_axes_declared_by_tiff_files(tmp_path):
    data = np.zeros((2, 3, 16, 20), np.uint16)
    tifffile.imwrite(tmp_path / "ij.tif", data, imagej=True, metadata={"axes": "ZCYX"})
    tifffile.imwrite(tmp_path / "meta.tif", data, photometric="minisblack", metadata={"axes": "TZYX"})
    tifffile.imwrite(tmp_path / "rgb.tif", np.zeros((16, 20, 3), np.uint8), photometric="rgb")
    tifffile.imwrite(tmp_path / "stack.tif", np.zeros((5, 16, 20), np.uint8), photometric="minisblack")
    assert axes_from_tiff(tmp_path / "ij.tif") == "ZCYX"
    assert axes_from_tiff(tmp_path / "meta.tif") == "TZYX"
    assert axes_from_tiff(tmp_path / "rgb.tif") == "YXC"
    # A plain multi-page file (tifffile's generic 'Q' axis) declares nothing.
    assert axes_from_tiff(tmp_path / "stack.tif") is None
    (tmp_path / "bad.tif").write_bytes(b"II*\x00garbage")
    assert axes_from_tiff(tmp_path / "bad.tif") is None


def test_planes_of_a_numpy_hyperstack_are_numpy_views():
    data = np.random.default_rng(0).random((2, 3, 4, 10, 12)).astype(np.float32)  # TZCYX
    planes = Planes(data, "TZCYX")
    assert (planes.channels, planes.loop_axes, planes.loop_shape) == (4, "TZ", (2, 3))
    assert (planes.label_axes, planes.label_shape, planes.spatial_shape) == ("TZYX", (2, 3, 10, 12), (10, 12))
    assert len(planes) == 6 and list(planes.indices())[:2] == [(0, 0), (0, 1)]
    plane = planes.image((1, 2))
    assert isinstance(plane, np.ndarray) and np.shares_memory(plane, data)
    np.testing.assert_array_equal(plane, data[1, 2])
    labels = np.zeros(planes.label_shape, np.uint8)
    planes.label_view(labels, (1, 2))[3:5, 4] = 7
    assert labels[1, 2, 3:5, 4].tolist() == [7, 7] and labels.sum() == 14
    assert planes.label_index((1, 2)) == (1, 2, slice(None), slice(None))


def test_rgb_and_single_plane_images():
    rgb = np.arange(10 * 12 * 3, dtype=np.uint8).reshape(10, 12, 3)
    planes = Planes(rgb, "YXC")
    assert (len(planes), list(planes.indices()), planes.label_shape, planes.channels) == (1, [()], (10, 12), 3)
    np.testing.assert_array_equal(planes.image(()), np.moveaxis(rgb, -1, 0))
    grey = Planes(rgb[..., 0], "YX")
    assert grey.image().shape == (1, 10, 12) and grey.label_index() == (slice(None), slice(None))


def test_volumes_for_a_3d_model():
    data = np.zeros((5, 2, 8, 9), np.uint8)  # ZCYX
    planes = Planes(data, "ZCYX", spatial_ndim=3)
    assert (planes.spatial_axes, planes.loop_axes, len(planes)) == ("ZYX", "", 1)
    assert planes.image().shape == (2, 5, 8, 9)
    with pytest.raises(UserInputError, match="needs a Z axis"):
        Planes(np.zeros((3, 8, 9)), "TYX", spatial_ndim=3)
    with pytest.raises(UserInputError, match="do not fit"):
        Planes(np.zeros((3, 8, 9)), "YX")


def test_lazy_plane_view_reads_only_what_is_indexed():
    data = np.random.default_rng(1).random((4, 3, 32, 40)).astype(np.float32)  # ZCYX
    rec = Recorder(data)
    plane = Planes(rec, "ZCYX").image((2,))
    assert isinstance(plane, ArrayView)
    assert (plane.shape, plane.ndim, plane.dtype) == ((3, 32, 40), 3, np.float32)
    assert rec.reads == []
    np.testing.assert_array_equal(plane[:, 5:9, :], data[2, :, 5:9, :])
    assert rec.read_pixels() == 3 * 4 * 40
    # The row bands tiled inference reads, and normalisation's strided sample.
    band = _read_padded(plane, 28, 8, 32, 48, 0.0, 1.0)
    np.testing.assert_array_equal(band, _read_padded(data[2], 28, 8, 32, 48, 0.0, 1.0))
    np.testing.assert_array_equal(_subsample(plane), data[2])
    np.testing.assert_array_equal(plane[1, ::3, -5:], data[2, 1, ::3, -5:])
    np.testing.assert_array_equal(plane[..., 0], data[2, :, :, 0])
    np.testing.assert_array_equal(np.asarray(plane, dtype=np.float64), data[2])
    assert all(k[0] == 2 for k in rec.reads)  # never another plane
    # A view with no C axis adds one of length 1.
    grey = Planes(Recorder(data[:, 0]), "ZYX").image((1,))
    assert grey.shape == (1, 32, 40)
    np.testing.assert_array_equal(grey[0, 3:6, 2], data[1, 0, 3:6, 2])
    np.testing.assert_array_equal(grey[None, :, 2:4].shape, (1, 1, 2, 40))


def test_dask_planes_are_not_materialised():
    data = np.random.default_rng(2).integers(0, 255, (6, 64, 64, 3), dtype=np.uint8)  # ZYXC
    rec = Recorder(data)
    lazy = da.from_array(rec, chunks=(1, 16, 64, 3))
    planes = Planes(lazy, "ZYXC")
    plane = planes.image((4,))
    assert plane.shape == (3, 64, 64) and rec.reads == []
    np.testing.assert_array_equal(plane[:, 16:32, :], np.moveaxis(data[4, 16:32], -1, 0))
    # Only the one chunk holding those rows was read.
    assert rec.read_pixels() == 16 * 64 * 3
    assert all(k[0] in (4, slice(4, 5)) for k in rec.reads)


def test_views_write_through_to_zarr():
    store = zarr.zeros((3, 10, 12), dtype=np.uint32, chunks=(1, 5, 6))
    planes = Planes(np.zeros((3, 10, 12)), "ZYX")
    out = planes.label_view(store, (1,))
    assert isinstance(out, ArrayView) and out.shape == (10, 12)
    out[2:4, :] = 5
    out[9, 11] = 9
    assert store[1, 2:4].tolist() == [[5] * 12] * 2 and store[1, 9, 11] == 9
    assert int(np.asarray(store).sum()) == 5 * 24 + 9
    np.testing.assert_array_equal(out[2:4, :3], 5)
    # A transposed view (image YXC -> CYX) writes back in the data's order.
    rgb = zarr.zeros((4, 5, 3), dtype=np.uint8)
    view = Planes(rgb, "YXC").image()
    view[1, :, 2] = 7
    assert rgb[:, 2, 1].tolist() == [7, 7, 7, 7] and int(np.asarray(rgb).sum()) == 28
