import numpy as np
import pytest
import tifffile

from napari_unet.errors import UserInputError
from napari_unet.io import tiff as tiff_io
from napari_unet.io.inputs import read_image_axes
from napari_unet.io.tiff import read_image, read_labels, smallest_uint_dtype, write_labels


@pytest.mark.parametrize("max_value, dtype", [(0, np.uint8), (255, np.uint8), (256, np.uint16), (65535, np.uint16), (65536, np.uint32)])
def test_labels_round_trip_with_smallest_dtype(tmp_path, max_value, dtype):
    labels = np.zeros((20, 30), np.int64)
    labels[3:9, 4:12] = max_value
    labels[10, 10] = 1
    path = write_labels(tmp_path / "l.tif", labels)
    back = tifffile.imread(path)
    assert back.dtype == dtype
    np.testing.assert_array_equal(back, labels)
    with tifffile.TiffFile(path) as tif:
        assert tif.pages[0].compression == tifffile.COMPRESSION.ADOBE_DEFLATE
    assert smallest_uint_dtype(max_value) == dtype


def test_multipage_images_are_read_whole(tmp_path):
    stack = np.arange(3 * 4 * 5, dtype=np.uint16).reshape(3, 4, 5)
    tifffile.imwrite(tmp_path / "s.tif", stack, photometric="minisblack")
    np.testing.assert_array_equal(read_image(tmp_path / "s.tif"), stack)


def test_failed_write_leaves_no_file_and_keeps_the_old_one(tmp_path, monkeypatch):
    path = tmp_path / "labels.tif"
    write_labels(path, np.ones((4, 4), np.uint8))
    before = path.read_bytes()

    def broken(tmp, *args, **kwargs):
        with open(tmp, "wb") as f:
            f.write(b"half")
        raise OSError("disk full")

    monkeypatch.setattr(tiff_io.tifffile, "imwrite", broken)
    with pytest.raises(OSError):
        write_labels(path, np.zeros((4, 4), np.uint8))
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["labels.tif"]


def test_bad_files_give_readable_errors(tmp_path):
    corrupt = tmp_path / "corrupt.tif"
    corrupt.write_bytes(b"II*\x00garbage")
    with pytest.raises(UserInputError, match="cannot read"):
        read_image(corrupt)
    good = tmp_path / "good.tif"
    tifffile.imwrite(good, np.random.default_rng(0).integers(0, 255, (64, 64), dtype=np.uint8), compression="zlib")
    truncated = tmp_path / "truncated.tif"
    truncated.write_bytes(good.read_bytes()[:300])
    with pytest.raises(UserInputError, match="cannot read"):
        read_image(truncated)
    with pytest.raises(UserInputError, match="not found"):
        read_image(tmp_path / "missing.tif")
    nan = np.ones((4, 4), np.float32)
    nan[1, 1] = np.nan
    tifffile.imwrite(tmp_path / "nan.tif", nan)
    with pytest.raises(UserInputError, match="NaN"):
        read_image(tmp_path / "nan.tif")
    tifffile.imwrite(tmp_path / "frac.tif", np.full((2, 2), 0.5, np.float32))
    with pytest.raises(UserInputError, match="non-integer"):
        read_labels(tmp_path / "frac.tif")
    with pytest.raises(UserInputError, match="negative"):
        write_labels(tmp_path / "neg.tif", np.full((2, 2), -1))


def test_read_image_axes_uses_declared_axes_or_a_guess(tmp_path):
    data = np.arange(2 * 3 * 16 * 20, dtype=np.uint16).reshape(2, 3, 16, 20)
    tifffile.imwrite(tmp_path / "ij.tif", data, imagej=True, metadata={"axes": "ZCYX"})
    image, axes = read_image_axes(tmp_path / "ij.tif")
    assert axes == "ZCYX" and isinstance(image, np.ndarray)
    np.testing.assert_array_equal(image, data)
    # No declared axes: guessed from the shape; given axes win when they fit.
    tifffile.imwrite(tmp_path / "plain.tif", data[0], photometric="minisblack")
    assert read_image_axes(tmp_path / "plain.tif")[1] == "ZYX"
    assert read_image_axes(tmp_path / "plain.tif", axes="tyx")[1] == "TYX"
    assert read_image_axes(tmp_path / "ij.tif", axes="TCYX")[1] == "TCYX"
    with pytest.raises(UserInputError, match=r"plain.tif'.*axes 'YX' do not fit an image of shape \(3, 16, 20\)"):
        read_image_axes(tmp_path / "plain.tif", axes="YX")
    tifffile.imwrite(tmp_path / "rgb.tif", np.zeros((16, 20, 3), np.uint8), photometric="rgb")
    assert read_image_axes(tmp_path / "rgb.tif")[1] == "YXC"


def test_lazy_reading_maps_or_opens_through_zarr(tmp_path):
    import zarr

    data = np.arange(4 * 32 * 40, dtype=np.uint16).reshape(4, 32, 40)
    tifffile.imwrite(tmp_path / "raw.tif", data, photometric="minisblack", metadata={"axes": "TYX"})
    tifffile.imwrite(tmp_path / "zip.tif", data, photometric="minisblack", compression="zlib", tile=(16, 16), metadata={"axes": "ZYX"})
    raw, axes = read_image_axes(tmp_path / "raw.tif", lazy=True)
    assert isinstance(raw, np.memmap) and axes == "TYX"
    np.testing.assert_array_equal(raw[2], data[2])
    packed, axes = read_image_axes(tmp_path / "zip.tif", lazy=True)
    assert isinstance(packed, zarr.Array) and axes == "ZYX" and packed.shape == data.shape
    np.testing.assert_array_equal(packed[1, 16:, ::3], data[1, 16:, ::3])
    packed.store.close()  # the store keeps the file open while the array is in use
    with pytest.raises(UserInputError, match="not found"):
        read_image_axes(tmp_path / "missing.tif", lazy=True)
    (tmp_path / "bad.tif").write_bytes(b"II*\x00garbage")
    with pytest.raises(UserInputError, match="cannot read"):
        read_image_axes(tmp_path / "bad.tif", lazy=True)
