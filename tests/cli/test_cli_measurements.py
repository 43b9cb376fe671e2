"""``napari-unet predict --measurements``: the per-object table as CSV."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import tifffile

from napari_unet.cli import main
from tests.helpers import blobs_image


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A model trained for a few steps on blobs, and the image (uint16)."""
    folder = tmp_path_factory.mktemp("measure")
    image, _, ann = blobs_image()
    paths = {"image": folder / "image.tif", "ann": folder / "ann.tif", "model": folder / "model.pt"}
    tifffile.imwrite(paths["image"], (image * 1000 + 2000).astype(np.uint16))
    tifffile.imwrite(paths["ann"], ann)
    assert main(["train", str(paths["image"]), str(paths["ann"]), "-o", str(paths["model"]), "--steps", "3", "--seed", "0", "--device", "cpu"]) == 0
    return paths


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_measurements_csv_has_one_row_per_instance(trained, tmp_path, capsys):
    inst, objects = tmp_path / "inst.tif", tmp_path / "objects.csv"
    code = main(["predict", str(trained["image"]), "-m", str(trained["model"]), "-o", str(tmp_path / "sem.tif"),
                 "--instances", str(inst), "--measurements", str(objects)])
    assert code == 0
    assert "objects.csv" in capsys.readouterr().out
    instances = tifffile.imread(inst)
    image = tifffile.imread(trained["image"])
    rows = _rows(objects)
    assert [int(r["label"]) for r in rows] == sorted(set(np.unique(instances).tolist()) - {0})
    for r in rows:
        mask = instances == int(r["label"])
        assert int(r["area_px"]) == mask.sum()
        assert float(r["mean_intensity"]) == pytest.approx(image[mask].mean(), rel=1e-5)
        assert 0.0 <= float(r["mean_probability"]) <= 1.0
        assert r["class"] == "class 1"
    with open(objects) as f:
        assert f.readline().strip().split(",")[:3] == ["label", "class", "area_px"]


def test_measurements_of_a_time_series_per_plane_and_default_name(trained, tmp_path):
    image = tifffile.imread(trained["image"])
    series = tmp_path / "series.tif"
    tifffile.imwrite(series, np.stack([image, image[::-1]]), imagej=True, metadata={"axes": "TYX"})
    out = tmp_path / "sem.tif"
    assert main(["predict", str(series), "-m", str(trained["model"]), "-o", str(out), "--instances", str(tmp_path / "i.tif"), "--measurements"]) == 0
    rows = _rows(tmp_path / "sem_objects.csv")
    instances = tifffile.imread(tmp_path / "i.tif")
    for r in rows:
        t = int(r["t"])
        assert (instances[t] == int(r["label"])).sum() == int(r["area_px"])  # ids are unique over the stack
    assert {int(r["t"]) for r in rows} <= {0, 1}


def test_folder_prediction_writes_one_csv_per_input(trained, tmp_path):
    image = tifffile.imread(trained["image"])
    inputs = tmp_path / "in"
    inputs.mkdir()
    for name in ("a", "b"):
        tifffile.imwrite(inputs / f"{name}.tif", image)
    out = tmp_path / "out"
    assert main(["predict", str(inputs), "-m", str(trained["model"]), "-o", str(out), "--instances", "--measurements"]) == 0
    assert sorted(p.name for p in out.iterdir()) == sorted(
        f"{n}_{what}" for n in "ab" for what in ("semantic.tif", "instances.tif", "objects.csv")
    )
    assert _rows(out / "a_objects.csv") == _rows(out / "b_objects.csv")


def test_measurements_file_name_in_folder_mode_is_refused(trained, tmp_path, capsys):
    code = main(["predict", str(trained["image"]), str(trained["image"]), "-m", str(trained["model"]), "-o", str(tmp_path), "--measurements", "x.csv"])
    assert code == 1
    assert "--measurements takes no file name" in capsys.readouterr().err
