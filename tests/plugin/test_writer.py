"""The npe2 labels writer: smallest dtype, extension, errors, and napari's own save/open."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

from napari_unet import DISTRIBUTION
from napari_unet.errors import UserInputError
from napari_unet.plugin.writer import write_labels_layer


@pytest.mark.parametrize(
    "max_label, dtype",
    [(0, np.uint8), (255, np.uint8), (256, np.uint16), (65535, np.uint16), (65536, np.uint32)],
)
def test_smallest_unsigned_dtype(tmp_path, max_label: int, dtype) -> None:
    labels = np.zeros((8, 9), dtype=np.int64)
    labels[2:4, 3:5] = max_label
    labels[0, 0] = 1 if max_label else 0
    [written] = write_labels_layer(str(tmp_path / "labels.tif"), labels, {})
    back = tifffile.imread(written)
    assert back.dtype == dtype
    np.testing.assert_array_equal(back, labels)


def test_adds_tif_extension_and_compresses(tmp_path) -> None:
    labels = np.zeros((128, 128), dtype=np.int32)
    labels[10:50, 10:50] = 3
    [written] = write_labels_layer(str(tmp_path / "out"), labels, {"name": "x"})
    assert written.endswith("out.tif")
    with tifffile.TiffFile(written) as tif:
        assert tif.pages[0].compression.name in ("ADOBE_DEFLATE", "DEFLATE")
    np.testing.assert_array_equal(tifffile.imread(written), labels)


def test_negative_or_float_labels_are_refused(tmp_path) -> None:
    with pytest.raises(UserInputError, match="non-negative"):
        write_labels_layer(str(tmp_path / "neg.tif"), np.array([[-1, 2]]), {})
    with pytest.raises(UserInputError, match="integers"):
        write_labels_layer(str(tmp_path / "float.tif"), np.array([[0.5, 2.0]]), {})
    assert not list(tmp_path.iterdir())  # nothing half-written


@pytest.mark.gui
@pytest.mark.parametrize("max_label, dtype", [(200, np.uint8), (1000, np.uint16)])
def test_round_trip_through_napari_save_and_open(make_napari_viewer, tmp_path, max_label: int, dtype) -> None:
    labels = np.zeros((40, 30), dtype=np.int32)  # napari-style int32 labels
    labels[5:15, 5:12] = 1
    labels[20:30, 10:25] = max_label
    viewer = make_napari_viewer()
    viewer.add_labels(labels, name="cells")
    path = tmp_path / "cells.tif"
    saved = viewer.layers.save(str(path), selected=True, plugin=DISTRIBUTION)
    assert [str(p) for p in saved] == [str(path)]
    assert tifffile.imread(path).dtype == dtype

    [opened] = viewer.open(str(path), plugin=DISTRIBUTION)
    assert opened.data.dtype == dtype
    np.testing.assert_array_equal(opened.data, labels)


def test_store_backed_labels_are_streamed_not_read_whole(tmp_path, monkeypatch) -> None:
    # Result layers larger than memory live in zarr stores: the export copies
    # them slab by slab into an uncompressed TIFF.
    import zarr

    from napari_unet.io import stores
    labels = zarr.open_array(str(tmp_path / "big.zarr"), mode="w", shape=(6, 40, 50), chunks=(1, 40, 50), dtype="uint32")
    truth = np.arange(6 * 40 * 50, dtype=np.uint32).reshape(6, 40, 50) % 7
    labels[:] = truth
    monkeypatch.setattr(stores, "COPY_SLAB_BYTES", 40 * 50 * 4 * 2)  # two planes at a time
    reads = []
    original = type(labels).__getitem__
    monkeypatch.setattr(type(labels), "__getitem__", lambda self, key: reads.append(key) or original(self, key))
    [written] = write_labels_layer(str(tmp_path / "out.tif"), labels, {})
    np.testing.assert_array_equal(tifffile.imread(written), truth)
    assert len(reads) == 3
