"""Per-object measurements (core/measure.py), plane by plane through the stack predictor."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from napari_unet.core.measure import StackMeasurements, concat_tables, measure_objects, n_rows, write_csv
from napari_unet.io.axes import Planes


def _two_objects():
    instances = np.zeros((20, 30), np.uint32)
    instances[2:5, 3:9] = 1  # 18 px
    instances[10:15, 10:12] = 7  # 10 px
    semantic = (instances > 0).astype(np.uint8)
    image = np.arange(600, dtype=np.uint16).reshape(20, 30)
    probabilities = np.stack([1 - 0.8 * semantic, 0.8 * semantic]).astype(np.float32)
    return instances, semantic, image, probabilities


def test_one_row_per_object_with_every_column():
    instances, semantic, image, probabilities = _two_objects()
    table = measure_objects(instances, semantic, image, ["background", "nucleus"], probabilities, spacing=(0.5, 0.25), plane={"t": 4})
    assert list(table) == [
        "label", "class", "t", "area_px", "area_scaled", "centroid_y", "centroid_x",
        "bbox_y0", "bbox_x0", "bbox_y1", "bbox_x1", "mean_intensity", "mean_probability",
    ]
    assert table["label"].tolist() == [1, 7]
    assert table["class"].tolist() == ["nucleus", "nucleus"]
    assert table["t"].tolist() == [4, 4]
    assert table["area_px"].tolist() == [18, 10]
    np.testing.assert_allclose(table["area_scaled"], [18 * 0.125, 10 * 0.125])
    np.testing.assert_allclose(table["centroid_y"], [3.0, 12.0])
    assert (table["bbox_y0"].tolist(), table["bbox_y1"].tolist()) == ([2, 10], [5, 15])
    np.testing.assert_allclose(table["mean_intensity"], [image[instances == 1].mean(), image[instances == 7].mean()])
    np.testing.assert_allclose(table["mean_probability"], [0.8, 0.8], rtol=1e-6)


def test_unit_scale_adds_no_physical_area_and_no_probabilities_give_nan():
    instances, semantic, image, _ = _two_objects()
    table = measure_objects(instances, semantic, image, ["background", "nucleus"], spacing=(1.0, 1.0))
    assert "area_scaled" not in table
    assert np.isnan(table["mean_probability"]).all()


def test_class_is_the_most_frequent_and_probability_is_of_that_class():
    instances = np.zeros((10, 10), np.uint32)
    instances[0:4, 0:4] = 1
    instances[6:10, 6:10] = 2
    semantic = np.zeros((10, 10), np.uint8)
    semantic[0:4, 0:4] = 1
    semantic[0, 0:3] = 2  # a minority of object 1 is class 2
    semantic[6:10, 6:10] = 2
    probabilities = np.zeros((3, 10, 10), np.float32)
    probabilities[1], probabilities[2] = 0.7, 0.2
    probabilities[2, 6:10, 6:10], probabilities[1, 6:10, 6:10] = 0.9, 0.05
    table = measure_objects(instances, semantic, np.ones((10, 10)), ["bg", "nucleus", "cell"], probabilities)
    assert table["class"].tolist() == ["nucleus", "cell"]
    np.testing.assert_allclose(table["mean_probability"], [0.7, 0.9], rtol=1e-6)


def test_volumes_and_channels():
    instances = np.zeros((4, 8, 8), np.uint32)
    instances[1:3, 2:5, 2:6] = 3
    image = np.stack([np.full((4, 8, 8), 10.0), np.full((4, 8, 8), 20.0)])
    table = measure_objects(instances, (instances > 0).astype(np.uint8), image, ["bg", "obj"], spacing=(2.0, 0.5, 0.5))
    assert table["volume_px"].tolist() == [24]
    assert table["volume_scaled"].tolist() == [12.0]
    assert (table["bbox_z0"].tolist(), table["bbox_z1"].tolist(), table["centroid_z"].tolist()) == ([1], [3], [1.5])
    assert table["mean_intensity_c0"].tolist() == [10.0] and table["mean_intensity_c1"].tolist() == [20.0]


def test_no_objects_gives_the_columns_and_no_rows():
    table = measure_objects(np.zeros((6, 6), np.uint32), np.zeros((6, 6), np.uint8), np.zeros((6, 6)), ["bg", "obj"])
    assert n_rows(table) == 0 and "mean_probability" in table and "class" in table


def test_csv_round_trip(tmp_path):
    instances, semantic, image, probabilities = _two_objects()
    table = concat_tables([measure_objects(instances, semantic, image, ["bg", "nucleus"], probabilities, plane={"t": t}) for t in (0, 1)])
    path = write_csv(tmp_path / "objects.csv", table)
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 4 and [r["t"] for r in rows] == ["0", "0", "1", "1"]
    assert rows[0]["class"] == "nucleus" and float(rows[0]["mean_probability"]) == pytest.approx(0.8)
    assert [p.name for p in tmp_path.iterdir()] == ["objects.csv"]  # no temporary left behind


def test_stack_measurements_per_plane_from_the_stack_predictor():
    """Each plane is measured as it is predicted, with that plane's probabilities."""
    from napari_unet.core.model import UNetConfig
    from napari_unet.core.postprocess import InstanceParams
    from napari_unet.core.segmenter import Segmenter
    from napari_unet.core.stack import iter_predict_stack
    from tests.helpers import blobs_image

    stack = np.stack([blobs_image((64, 64), seed=s)[0] for s in range(2)])
    planes = Planes(stack, "TYX")
    segmenter = Segmenter(UNetConfig(depth=2, width=4, filter_scales=1), device="cpu")
    semantic = np.zeros(planes.label_shape, np.uint8)
    instances = np.zeros(planes.label_shape, np.uint32)
    measure = StackMeasurements(planes, semantic, instances, segmenter.names(), scale=(1.0, 0.5, 0.5))
    # A threshold every pixel passes: one object per plane whatever the untrained net says.
    for _ in iter_predict_stack(segmenter, planes, semantic, instances, InstanceParams(threshold=0.0, split_strength=0.0), plane_done=measure):
        pass
    table = measure.table()
    assert table["t"].tolist() == [0, 1]
    assert table["label"].tolist() == sorted(set(np.unique(instances)) - {0})
    assert table["area_px"].tolist() == [64 * 64, 64 * 64]
    assert table["area_scaled"].tolist() == [64 * 64 * 0.25] * 2
    assert 0 < table["mean_probability"].min() <= table["mean_probability"].max() <= 1


def test_rows_of_a_3d_object_measured_plane_by_plane_merge_into_one():
    """A 2D model's Z stack holds 3D objects: one row each, with volume, 3D centroid and box."""
    from napari_unet.core.measure import merge_planes

    instances = np.zeros((3, 20, 20), np.uint32)
    instances[0, 2:6, 2:6] = 1  # 16 px
    instances[1, 2:10, 2:6] = 1  # 32 px
    instances[2, 10:12, 10:12] = 2  # another object, 4 px
    semantic = (instances > 0).astype(np.uint8)
    image = instances.astype(np.float32) * 10
    rows = concat_tables([measure_objects(instances[z], semantic[z], image[z], ["bg", "nucleus"], plane={"t": 5, "z": z}) for z in range(3)])
    merged = merge_planes(rows, z_spacing=2.0, keep=("t",))
    whole = measure_objects(instances, semantic, image, ["bg", "nucleus"])  # the volume measured at once
    assert merged["label"].tolist() == [1, 2] and merged["t"].tolist() == [5, 5]
    assert merged["volume_px"].tolist() == whole["volume_px"].tolist() == [48, 4]
    for key in ("centroid_z", "centroid_y", "centroid_x", "mean_intensity"):
        np.testing.assert_allclose(merged[key], whole[key])
    for key in ("bbox_z0", "bbox_y0", "bbox_x0", "bbox_z1", "bbox_y1", "bbox_x1"):
        assert merged[key].tolist() == whole[key].tolist(), key
    assert "z" not in merged and "area_px" not in merged
