"""On-disk outputs (zarr, TIFF) written atomically, and lazy inputs."""

import numpy as np
import pytest
import tifffile
import zarr

from napari_unet.errors import UserInputError
from napari_unet.io import stores
from napari_unet.io.stores import open_lazy, open_output


def _entries(folder):
    return sorted(p.name for p in folder.iterdir())


@pytest.mark.parametrize("name", ["out.zarr", "out.tif", "out.tiff"])
def test_written_by_slices_then_read_back_lazily(tmp_path, name):
    with open_output(tmp_path / name, (3, 50, 70), np.uint32, axes="ZYX") as arr:
        assert arr.shape == (3, 50, 70) and arr.dtype == np.uint32
        assert not (tmp_path / name).exists()  # nothing at the final path while writing
        arr[1, 10:20, :] = 7
        arr[2, :, 5:9] = 70000
    assert _entries(tmp_path) == [name]  # no temporary left
    back = open_lazy(tmp_path / name)
    assert back.shape == (3, 50, 70) and back.dtype == np.uint32
    expected = np.zeros((3, 50, 70), np.uint32)
    expected[1, 10:20, :] = 7
    expected[2, :, 5:9] = 70000
    assert np.array_equal(np.asarray(back[...]), expected)
    if name.endswith(".zarr"):
        assert isinstance(back, zarr.Array) and back.chunks == (1, 50, 70)
    else:
        with tifffile.TiffFile(tmp_path / name) as tif:
            assert tif.series[0].axes == "ZYX" and not tif.is_bigtiff


@pytest.mark.parametrize("name", ["out.zarr", "out.tif"])
def test_an_exception_leaves_no_file_and_keeps_the_previous_result(tmp_path, name):
    with pytest.raises(RuntimeError):
        with open_output(tmp_path / name, (20, 20), np.uint8) as arr:
            arr[:5] = 1
            raise RuntimeError("interrupted")
    assert _entries(tmp_path) == []
    with open_output(tmp_path / name, (20, 20), np.uint8) as arr:
        arr[...] = 3
    with pytest.raises(KeyboardInterrupt):
        with open_output(tmp_path / name, (20, 20), np.uint8) as arr:
            arr[...] = 4
            raise KeyboardInterrupt
    assert _entries(tmp_path) == [name]
    assert np.all(np.asarray(open_lazy(tmp_path / name)[...]) == 3)
    # A successful write replaces the previous result (a zarr folder too).
    with open_output(tmp_path / name, (10, 30), np.uint16) as arr:
        arr[...] = 5
    assert _entries(tmp_path) == [name]
    back = open_lazy(tmp_path / name)
    assert back.shape == (10, 30) and np.all(np.asarray(back[...]) == 5)


def test_large_tiffs_are_bigtiff(tmp_path, monkeypatch):
    monkeypatch.setattr(stores, "_BIGTIFF_BYTES", 100)
    with open_output(tmp_path / "big.tif", (20, 20), np.uint8) as arr:
        arr[...] = 1
    with tifffile.TiffFile(tmp_path / "big.tif") as tif:
        assert tif.is_bigtiff


def test_bad_paths_are_clear_errors(tmp_path):
    with pytest.raises(UserInputError, match=r"\.zarr, \.tif or \.tiff"):
        with open_output(tmp_path / "out.png", (4, 4), np.uint8):
            pass
    with pytest.raises(UserInputError, match="does not exist"):
        with open_output(tmp_path / "nowhere" / "out.tif", (4, 4), np.uint8):
            pass
    with pytest.raises(UserInputError, match="not found"):
        open_lazy(tmp_path / "missing.zarr")
    (tmp_path / "junk.tif").write_bytes(b"not a tiff at all")
    with pytest.raises(UserInputError, match="cannot read"):
        open_lazy(tmp_path / "junk.tif")


def test_compressed_tiff_and_ome_zarr_group_open_lazily(tmp_path):
    data = np.arange(2 * 64 * 96, dtype=np.uint16).reshape(2, 64, 96)
    tifffile.imwrite(tmp_path / "c.tif", data, compression="zlib", tile=(32, 32))
    lazy = open_lazy(tmp_path / "c.tif")
    assert not isinstance(lazy, np.ndarray) and lazy.shape == data.shape
    assert np.array_equal(lazy[1, 10:20, 30:40], data[1, 10:20, 30:40])
    lazy.store.close()  # tifffile's store keeps the file open while the array is used

    group = zarr.open_group(str(tmp_path / "ome.zarr"), mode="w")
    group.attrs["multiscales"] = [{"datasets": [{"path": "s0"}, {"path": "s1"}]}]
    group.create_array("s1", shape=(32, 48), dtype=np.uint16)
    full = group.create_array("s0", shape=(64, 96), dtype=np.uint16)
    full[...] = data[0]
    level = open_lazy(tmp_path / "ome.zarr")
    assert level.shape == (64, 96) and np.array_equal(level[...], data[0])

