import subprocess
import sys

import numpy as np
import pytest
import tifffile

from napari_unet.cli import main


@pytest.fixture
def files(tmp_path, blobs):
    image, truth, ann = blobs
    paths = {"image": tmp_path / "image.tif", "ann": tmp_path / "ann.tif", "truth": truth}
    tifffile.imwrite(paths["image"], (image * 1000 + 2000).astype(np.uint16))
    tifffile.imwrite(paths["ann"], ann)
    return paths


def test_train_then_predict_end_to_end(files, tmp_path, capsys):
    model = tmp_path / "model.pt"
    assert main(["train", str(files["image"]), str(files["ann"]), "-o", str(model), "--steps", "30", "--seed", "0", "--device", "cpu"]) == 0
    assert model.is_file()
    assert "trained 30 steps" in capsys.readouterr().out
    labels, inst, probs = tmp_path / "labels.tif", tmp_path / "inst.tif", tmp_path / "probs.tif"
    assert main(["predict", str(files["image"]), "-m", str(model), "-o", str(labels), "--instances", str(inst), "--probabilities", str(probs)]) == 0
    semantic = tifffile.imread(labels)
    instances = tifffile.imread(inst)
    p = tifffile.imread(probs)
    assert semantic.shape == instances.shape == files["truth"].shape
    assert semantic.dtype == np.uint8 and set(np.unique(semantic)) <= {0, 1}
    assert instances.dtype == np.uint8 and instances.max() >= 1
    assert p.shape == (2,) + semantic.shape and p.dtype == np.float32
    # 30 steps on clean blobs already find most of the foreground
    inter = np.count_nonzero((semantic > 0) & (files["truth"] > 0))
    assert inter / np.count_nonzero((semantic > 0) | (files["truth"] > 0)) > 0.5


def test_resume_and_time_budget(files, tmp_path, capsys):
    model = tmp_path / "model.pt"
    assert main(["train", str(files["image"]), str(files["ann"]), "-o", str(model), "--steps", "2"]) == 0
    assert main(["train", str(files["image"]), str(files["ann"]), "-o", str(model), "--max-time", "1", "--resume", str(model)]) == 0
    from napari_unet.core.segmenter import Segmenter

    assert {h["run"] for h in Segmenter.load(model).history} == {0, 1}


def test_budget_options_are_exclusive(files, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["train", str(files["image"]), str(files["ann"]), "-o", str(tmp_path / "m.pt"), "--steps", "2", "--max-time", "1"])
    assert exc.value.code == 2


def _bad_inputs(tmp_path, files):
    image = str(files["image"])
    ann = tifffile.imread(files["ann"])
    cases = {}
    tifffile.imwrite(tmp_path / "small_ann.tif", ann[:-3])
    cases["shape"] = (["train", image, str(tmp_path / "small_ann.tif")], "do not match")
    tifffile.imwrite(tmp_path / "empty_ann.tif", np.zeros_like(ann))
    cases["no annotations"] = (["train", image, str(tmp_path / "empty_ann.tif")], "no annotations")
    tifffile.imwrite(tmp_path / "one_class.tif", np.where(ann == 2, 0, ann).astype(np.uint8))
    cases["one class"] = (["train", image, str(tmp_path / "one_class.tif")], "only background")
    nan = tifffile.imread(files["image"]).astype(np.float32)
    nan[5, 5] = np.nan
    tifffile.imwrite(tmp_path / "nan.tif", nan)
    cases["nan"] = (["train", str(tmp_path / "nan.tif"), str(files["ann"])], "NaN")
    (tmp_path / "corrupt.tif").write_bytes(b"II*\x00" + b"\x00" * 50)
    cases["corrupt"] = (["train", str(tmp_path / "corrupt.tif"), str(files["ann"])], "cannot read")
    (tmp_path / "notamodel.pt").write_text("hello")
    cases["not a model"] = (["predict", image, "-m", str(tmp_path / "notamodel.pt")], "not a napari-unet model")
    cases["missing folder"] = (["train", image, str(files["ann"])], "folder does not exist")
    return cases


@pytest.mark.parametrize("case", ["shape", "no annotations", "one class", "nan", "corrupt", "not a model", "missing folder"])
def test_bad_input_gives_one_readable_line_and_writes_nothing(case, files, tmp_path, capsys):
    argv, message = _bad_inputs(tmp_path, files)[case]
    out = tmp_path / ("no_such_dir/out.pt" if case == "missing folder" else "out.tif")
    before = set(tmp_path.rglob("*"))
    assert main(argv + ["-o", str(out)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("napari-unet: error:") and message in err[0]
    assert set(tmp_path.rglob("*")) == before  # nothing written, no temp files


def test_console_script_runs_in_a_subprocess_without_traceback(files, tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "napari_unet.cli", "predict", str(files["image"]), "-m", str(tmp_path / "missing.pt"), "-o", str(tmp_path / "o.tif")],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.strip() == f"napari-unet: error: model file not found: '{tmp_path / 'missing.pt'}'"


def test_demo_runs_the_whole_loop(tmp_path, capsys):
    assert main(["demo", "--steps", "4", "--output", str(tmp_path / "demo")]) == 0
    out = capsys.readouterr().out
    assert "held-out" in out and "U-Net" in out and "Otsu" in out and "random forest" in out
    for name in ("image.tif", "annotations.tif", "semantic.tif", "instances.tif", "model.pt"):
        assert (tmp_path / "demo" / name).is_file()


# -- N-D images, channels, several images (issue 5) ---------------------------
from tests.helpers import blobs_image  # noqa: E402


def _stack(n=3, shape=(64, 64)):
    """A ZYX stack of different blob planes, its truth and annotations on planes 0 and 2 only."""
    planes = [blobs_image(shape, seed=s) for s in range(n)]
    image = np.stack([(p[0] * 1000 + 2000).astype(np.uint16) for p in planes])
    truth = np.stack([p[1] for p in planes])
    ann = np.zeros(image.shape, np.uint8)
    ann[0], ann[2] = planes[0][2], planes[2][2]
    return image, truth, ann


def _one_error_line(capsys) -> str:
    err = [line for line in capsys.readouterr().err.strip().splitlines() if line.strip()]
    assert len(err) == 1 and err[0].startswith("napari-unet: error:"), err
    return err[0]


def test_stack_annotated_on_two_planes_trains_and_predicts_every_plane(tmp_path, capsys):
    image, truth, ann = _stack()
    # minisblack: tifffile would otherwise mark 3 planes as RGB (and the file's metadata wins).
    tifffile.imwrite(tmp_path / "stack.tif", image, photometric="minisblack")
    tifffile.imwrite(tmp_path / "stack_ann.tif", ann, photometric="minisblack")
    model = tmp_path / "model.pt"
    argv = ["train", str(tmp_path / "stack.tif"), str(tmp_path / "stack_ann.tif"), "-o", str(model), "--steps", "30", "--seed", "0", "--device", "cpu", "--2d"]
    assert main(argv) == 0
    captured = capsys.readouterr()
    # No axes in the file: the guess is said out loud.
    assert "reading stack.tif as ZYX (guessed; use --axes to change)" in captured.err
    assert "trained 30 steps on 2 planes" in captured.out
    out, inst = tmp_path / "sem.tif", tmp_path / "inst.tif"
    assert main(["predict", str(tmp_path / "stack.tif"), "-m", str(model), "-o", str(out), "--instances", str(inst), "--axes", "ZYX"]) == 0
    assert "ZYX" in capsys.readouterr().out
    semantic, instances = tifffile.imread(out), tifffile.imread(inst)
    assert semantic.shape == instances.shape == image.shape
    for z in range(3):  # plane 1 had no strokes and is segmented too
        inter = np.count_nonzero((semantic[z] > 0) & (truth[z] > 0))
        assert inter / np.count_nonzero((semantic[z] > 0) | (truth[z] > 0)) > 0.5, z
    # A Z stack: objects are 3D, so discs overlapping from one plane to the next share an id.
    ids = [set(np.unique(instances[z])) - {0} for z in range(3)]
    assert all(ids) and (ids[0] & ids[1] or ids[1] & ids[2])
    both = (instances[:-1] > 0) & (instances[1:] > 0)
    assert np.mean(instances[:-1][both] == instances[1:][both]) > 0.9


def test_axes_from_imagej_metadata_and_time_series(tmp_path, capsys):
    image, _, ann = _stack()
    tifffile.imwrite(tmp_path / "movie.tif", image, imagej=True, metadata={"axes": "TYX"})
    tifffile.imwrite(tmp_path / "movie_ann.tif", ann, photometric="minisblack")
    assert main(["train", str(tmp_path / "movie.tif"), str(tmp_path / "movie_ann.tif"), "-o", str(tmp_path / "m.pt"), "--steps", "2"]) == 0
    assert "guessed" not in capsys.readouterr().err  # the file said TYX
    assert main(["predict", str(tmp_path / "movie.tif"), "-m", str(tmp_path / "m.pt"), "-o", str(tmp_path / "o.tif"), "--instances"]) == 0
    assert "(TYX)" in capsys.readouterr().out
    assert tifffile.imread(tmp_path / "o.tif").shape == image.shape
    # --instances without a name writes <output>_instances beside the output; .zarr outputs stream.
    assert tifffile.imread(tmp_path / "o_instances.tif").shape == image.shape
    zarr = pytest.importorskip("zarr")
    assert main(["predict", str(tmp_path / "movie.tif"), "-m", str(tmp_path / "m.pt"), "-o", str(tmp_path / "o.zarr"), "--tile", "128"]) == 0
    np.testing.assert_array_equal(zarr.open_array(str(tmp_path / "o.zarr"), mode="r")[...], tifffile.imread(tmp_path / "o.tif"))


def test_rgb_with_axes_yxc_trains_predicts_and_refuses_greyscale(files, tmp_path, capsys):
    grey = tifffile.imread(files["image"])
    rgb = np.stack([grey, grey // 2, grey // 4], axis=-1)
    tifffile.imwrite(tmp_path / "rgb.tif", rgb)
    model = tmp_path / "rgb.pt"
    assert main(["train", str(tmp_path / "rgb.tif"), str(files["ann"]), "-o", str(model), "--axes", "YXC", "--steps", "3", "--seed", "0"]) == 0
    from napari_unet.core.segmenter import Segmenter

    assert Segmenter.load(model).config.in_channels == 3
    out = tmp_path / "rgb_sem.tif"
    assert main(["predict", str(tmp_path / "rgb.tif"), "-m", str(model), "-o", str(out), "--axes", "yxc"]) == 0
    assert tifffile.imread(out).shape == grey.shape  # labels have no channel axis
    capsys.readouterr()
    assert main(["predict", str(files["image"]), "-m", str(model), "-o", str(tmp_path / "g.tif")]) == 1
    line = _one_error_line(capsys)
    assert "image.tif: the model expects 3 channel(s)" in line and "has 1" in line
    assert not (tmp_path / "g.tif").exists()


def test_two_channel_czyx_annotations_without_channel_axis(tmp_path, capsys):
    image, _, ann = _stack()
    two = np.stack([image, image[:, ::-1]])  # CZYX
    tifffile.imwrite(tmp_path / "two.tif", two, photometric="minisblack")
    tifffile.imwrite(tmp_path / "ann.tif", ann, photometric="minisblack")
    model = tmp_path / "two.pt"
    assert main(["train", str(tmp_path / "two.tif"), str(tmp_path / "ann.tif"), "-o", str(model), "--axes", "CZYX", "--steps", "3"]) == 0
    assert main(["predict", str(tmp_path / "two.tif"), "-m", str(model), "-o", str(tmp_path / "o.tif"), "--axes", "CZYX"]) == 0
    assert tifffile.imread(tmp_path / "o.tif").shape == image.shape
    # Annotations with the channel axis are refused with the shape they need.
    tifffile.imwrite(tmp_path / "bad_ann.tif", np.stack([ann, ann]), photometric="minisblack")
    capsys.readouterr()
    assert main(["train", str(tmp_path / "two.tif"), str(tmp_path / "bad_ann.tif"), "-o", str(model), "--axes", "CZYX"]) == 1
    line = _one_error_line(capsys)
    assert "do not match" in line and str(image.shape) in line


def test_several_image_annotation_pairs_train_one_model(tmp_path, capsys):
    paths = []
    for seed in (1, 2):
        image, _, ann = blobs_image((64, 64), seed=seed)
        tifffile.imwrite(tmp_path / f"i{seed}.tif", (image * 1000 + 2000).astype(np.uint16))
        tifffile.imwrite(tmp_path / f"a{seed}.tif", np.where(np.arange(64)[:, None] < 32 * seed, ann, 0).astype(np.uint8))
        paths += [str(tmp_path / f"i{seed}.tif"), str(tmp_path / f"a{seed}.tif")]
    assert main(["train", *paths, "-o", str(tmp_path / "m.pt"), "--steps", "2"]) == 0
    assert "on 2 planes" in capsys.readouterr().out
    assert main(["train", *paths[:3], "-o", str(tmp_path / "m2.pt"), "--steps", "2"]) == 1
    line = _one_error_line(capsys)
    assert "pairs" in line and "i2.tif" in line
    assert not (tmp_path / "m2.pt").exists()


@pytest.mark.parametrize(
    "axes, message",
    [("ZYX", "do not fit an image of shape (96, 96)"), ("YQ", "unknown letter"), ("XY", "in that order"), ("ZZYX", "more than once")],
)
def test_axes_mismatch_is_one_clear_line(files, tmp_path, capsys, axes, message):
    model = tmp_path / "m.pt"
    assert main(["train", str(files["image"]), str(files["ann"]), "-o", str(model), "--axes", axes]) == 1
    line = _one_error_line(capsys)
    assert message in line and "image.tif" in line, line
    assert not model.exists()


def test_z_stacks_get_a_3d_model_unless_told_otherwise(tmp_path, capsys):
    """A fresh model for Z stacks is 3D (said on stderr); --2d keeps a 2D one; other images stay 2D."""
    from napari_unet.core.segmenter import Segmenter, model_ndim

    image, _, ann = _stack(n=8, shape=(32, 32))
    tifffile.imwrite(tmp_path / "vol.tif", image, imagej=True, metadata={"axes": "ZYX"})
    tifffile.imwrite(tmp_path / "vol_ann.tif", ann, photometric="minisblack")
    model = tmp_path / "m.pt"
    assert main(["train", str(tmp_path / "vol.tif"), str(tmp_path / "vol_ann.tif"), "-o", str(model), "--steps", "1"]) == 0
    assert "Z stack: training a 3D U-Net" in capsys.readouterr().err
    assert model_ndim(Segmenter.load(model).config) == 3
    assert main(["train", str(tmp_path / "vol.tif"), str(tmp_path / "vol_ann.tif"), "-o", str(model), "--steps", "1", "--2d"]) == 0
    assert model_ndim(Segmenter.load(model).config) == 2
    assert main(["train", str(tmp_path / "vol.tif"), str(tmp_path / "vol_ann.tif"), "-o", str(model), "--steps", "1", "--axes", "TYX"]) == 0
    assert "3D U-Net" not in capsys.readouterr().err
    assert model_ndim(Segmenter.load(model).config) == 2
    with pytest.raises(SystemExit):
        main(["train", str(tmp_path / "vol.tif"), str(tmp_path / "vol_ann.tif"), "-o", str(model), "--2d", "--3d"])


def test_a_2d_model_labels_a_z_stack_as_3d_objects_with_one_row_each(tmp_path, capsys):
    """Plane-by-plane prediction of a Z stack: an object spanning planes has one id and one CSV row."""
    import csv

    image, _, ann = _stack(n=3)
    image = np.stack([image[0]] * 3)  # the same discs in every plane: columns through Z
    ann = np.stack([ann[0], np.zeros_like(ann[0]), np.zeros_like(ann[0])])
    tifffile.imwrite(tmp_path / "s.tif", image, imagej=True, metadata={"axes": "ZYX"})
    tifffile.imwrite(tmp_path / "s_ann.tif", ann, photometric="minisblack")
    model = tmp_path / "m.pt"
    assert main(["train", str(tmp_path / "s.tif"), str(tmp_path / "s_ann.tif"), "-o", str(model), "--steps", "20", "--seed", "0", "--2d"]) == 0
    out, inst, table = tmp_path / "o.tif", tmp_path / "i.tif", tmp_path / "objects.csv"
    assert main(["predict", str(tmp_path / "s.tif"), "-m", str(model), "-o", str(out), "--instances", str(inst), "--measurements", str(table)]) == 0
    instances = tifffile.imread(inst)
    assert instances.max() > 0
    np.testing.assert_array_equal(instances[0], instances[2])  # one id through the planes
    with open(table, newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(np.unique(instances)) - 1
    assert {"volume_px", "centroid_z", "bbox_z0", "bbox_z1"} <= set(rows[0]) and "z" not in rows[0]
    assert all(int(r["bbox_z0"]) == 0 and int(r["bbox_z1"]) == 3 for r in rows if int(r["volume_px"]) > 100)


def test_3d_model_trains_on_volumes_and_refuses_2d_images(tmp_path, capsys):
    image, truth, ann = _stack(n=8, shape=(32, 32))
    tifffile.imwrite(tmp_path / "vol.tif", image, photometric="minisblack")
    tifffile.imwrite(tmp_path / "vol_ann.tif", ann, photometric="minisblack")
    model = tmp_path / "m3d.pt"
    assert main(["train", str(tmp_path / "vol.tif"), str(tmp_path / "vol_ann.tif"), "-o", str(model), "--3d", "--axes", "ZYX", "--steps", "2", "--seed", "0"]) == 0
    from napari_unet.core.segmenter import Segmenter, model_ndim

    assert model_ndim(Segmenter.load(model).config) == 3
    assert main(["predict", str(tmp_path / "vol.tif"), "-m", str(model), "-o", str(tmp_path / "o.tif"), "--instances", str(tmp_path / "i.tif")]) == 0
    assert tifffile.imread(tmp_path / "o.tif").shape == image.shape
    capsys.readouterr()
    tifffile.imwrite(tmp_path / "flat.tif", image[0])
    assert main(["predict", str(tmp_path / "flat.tif"), "-m", str(model), "-o", str(tmp_path / "f.tif")]) == 1
    assert "needs volumes with a Z axis" in _one_error_line(capsys)
    assert main(["train", str(tmp_path / "vol.tif"), str(tmp_path / "vol_ann.tif"), "-o", str(model), "--3d", "--axes", "TYX"]) == 1
    assert "Z axis" in _one_error_line(capsys)


def test_single_input_refuses_to_overwrite_itself(files, tmp_path, capsys):
    model = tmp_path / "m.pt"
    assert main(["train", str(files["image"]), str(files["ann"]), "-o", str(model), "--steps", "1"]) == 0
    capsys.readouterr()  # training's own notes are not the refusal
    before = files["image"].read_bytes()
    assert main(["predict", str(files["image"]), "-m", str(model), "-o", str(files["image"])]) == 1
    assert "overwrite the input" in _one_error_line(capsys)
    assert files["image"].read_bytes() == before


# -- nothing lost, ever (issue 14) ----------------------------------------------------
import errno  # noqa: E402
import os  # noqa: E402
from pathlib import Path  # noqa: E402

import napari_unet.cli.train as cli_train  # noqa: E402


@pytest.fixture
def no_training(monkeypatch):
    """Fail the test if training starts: the refusal must come before any work."""
    monkeypatch.setattr(cli_train, "run_training", lambda *a, **k: pytest.fail("training started"))


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    """A small trained model file (2 levels, width 8), quick to predict with."""
    from napari_unet.core.model import UNetConfig
    from napari_unet.core.segmenter import Segmenter
    from napari_unet.core.training import TrainConfig
    from tests.helpers import blobs_image

    image, _, ann = blobs_image((64, 64))
    seg = Segmenter(UNetConfig(1, 2, depth=2, width=8), device="cpu")
    seg.fit(image, ann, TrainConfig(steps=2, patch_size=32, batch_size=2, seed=0))
    return seg.save(tmp_path_factory.mktemp("model") / "tiny.pt")


def test_train_refuses_to_write_over_its_image_or_annotations(files, tmp_path, capsys, no_training):
    os.link(files["ann"], tmp_path / "same_ann.tif")  # another name for the same file
    for target, what in ((files["ann"], "annotations"), (files["image"], "image"), (tmp_path / "same_ann.tif", "annotations")):
        before = {p: p.read_bytes() for p in (files["image"], files["ann"])}
        assert main(["train", str(files["image"]), str(files["ann"]), "-o", str(target), "--steps", "3"]) == 1
        line = _one_error_line(capsys)
        assert "would overwrite the " + what in line and str(target) in line, line
        assert {p: p.read_bytes() for p in before} == before


@pytest.mark.parametrize("other", ["--instances", "--probabilities"])
def test_predict_outputs_may_not_be_the_same_file(files, tmp_path, capsys, tiny_model, other):
    out = tmp_path / "same.tif"
    assert main(["predict", str(files["image"]), "-m", str(tiny_model), "-o", str(out), other, str(out)]) == 1
    assert f"-o and {other} are the same file" in _one_error_line(capsys)
    assert not out.exists()
    # Nor the model file.
    model_as_tif = tmp_path / "model.tif"
    model_as_tif.write_bytes(tiny_model.read_bytes())
    assert main(["predict", str(files["image"]), "-m", str(model_as_tif), "-o", str(tmp_path / "o.tif"), "--instances", str(model_as_tif)]) == 1
    assert "would overwrite the model" in _one_error_line(capsys)


@pytest.mark.parametrize("where", ["folder", "missing parent", "proc"])
def test_unwritable_model_path_is_found_before_training(files, tmp_path, capsys, no_training, where):
    target = {"folder": tmp_path / "m", "missing parent": tmp_path / "nowhere" / "m.pt", "proc": "/proc/napari-unet-model.pt"}[where]
    if where == "folder":
        target.mkdir()
    assert main(["train", str(files["image"]), str(files["ann"]), "-o", str(target), "--steps", "3"]) == 1
    line = _one_error_line(capsys)
    assert f"cannot write {str(target)!r}" in line, line


def test_a_model_that_cannot_be_written_after_training_is_saved_elsewhere(files, tmp_path, capsys, monkeypatch):
    from napari_unet.core import checkpoint
    from napari_unet.core.segmenter import Segmenter

    real_save = checkpoint.torch.save
    target = tmp_path / "out" / "m.pt"
    target.parent.mkdir()

    def full_disk(obj, path, *args, **kwargs):
        if Path(path).parent == target.parent:  # the disk of -o fills up during training
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real_save(obj, path, *args, **kwargs)

    monkeypatch.setattr(checkpoint.torch, "save", full_disk)
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    assert main(["train", str(files["image"]), str(files["ann"]), "-o", str(target), "--steps", "1"]) == 1
    line = _one_error_line(capsys)
    assert f"cannot write {str(target)!r}: No space left on device" in line and "napari-unet~" not in line, line
    [rescued] = (tmp_path / "cwd").glob("napari-unet-rescued-*m.pt")
    assert str(rescued.name) in line
    assert Segmenter.load(rescued).is_trained
    assert list(target.parent.iterdir()) == []  # no temporary left behind


def test_rerunning_predict_onto_zarr_outputs_replaces_them(files, tmp_path, capsys, tiny_model):
    zarr = pytest.importorskip("zarr")
    out, inst = tmp_path / "z.zarr", tmp_path / "i.zarr"
    argv = ["predict", str(files["image"]), "-m", str(tiny_model), "-o", str(out), "--instances", str(inst)]
    assert main(argv) == 0
    first = sorted(p.relative_to(out) for p in out.rglob("*"))
    (out / "stale-marker").write_text("from the first run")
    assert main(argv) == 0, capsys.readouterr().err
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == first  # replaced whole, nothing written inside
    assert zarr.open_array(str(out), mode="r").shape == tifffile.imread(files["image"]).shape
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    # A folder that is not a zarr store is never replaced.
    (tmp_path / "mine.zarr").mkdir()
    (tmp_path / "mine.zarr" / "notes.txt").write_text("keep me")
    capsys.readouterr()
    assert main(["predict", str(files["image"]), "-m", str(tiny_model), "-o", str(out), "--instances", str(tmp_path / "mine.zarr")]) == 1
    assert "not a zarr store" in _one_error_line(capsys)
    assert (tmp_path / "mine.zarr" / "notes.txt").read_text() == "keep me"


def test_written_files_honour_the_umask_and_keep_the_mode_they_replace(files, tmp_path, tiny_model):
    import stat

    def mode(p):
        return stat.S_IMODE(p.stat().st_mode)

    old = os.umask(0o022)
    try:
        sem, zarr_out, model = tmp_path / "s.tif", tmp_path / "s.zarr", tmp_path / "m.pt"
        assert main(["predict", str(files["image"]), "-m", str(tiny_model), "-o", str(sem)]) == 0
        assert main(["predict", str(files["image"]), "-m", str(tiny_model), "-o", str(zarr_out)]) == 0
        from napari_unet.core.segmenter import Segmenter

        Segmenter.load(tiny_model).save(model)
        assert mode(sem) == mode(model) == 0o644 and mode(zarr_out) == 0o755
        os.chmod(sem, 0o640)  # the user's choice for an existing file is kept
        assert main(["predict", str(files["image"]), "-m", str(tiny_model), "-o", str(sem)]) == 0
        assert mode(sem) == 0o640
        os.umask(0o077)
        assert main(["predict", str(files["image"]), "-m", str(tiny_model), "-o", str(tmp_path / "private.tif")]) == 0
        assert mode(tmp_path / "private.tif") == 0o600
    finally:
        os.umask(old)


def test_a_truncated_or_corrupt_tiff_in_train_is_one_line_naming_it(files, tmp_path, capsys):
    image = tifffile.imread(files["image"])
    tifffile.imwrite(tmp_path / "z.tif", image, compression="zlib", rowsperstrip=8)
    data = bytearray((tmp_path / "z.tif").read_bytes())
    data[len(data) // 3 : len(data) // 3 + 200] = b"\x55" * 200  # a damaged strip: only found when decoded
    (tmp_path / "damaged.tif").write_bytes(bytes(data))
    (tmp_path / "truncated.tif").write_bytes((tmp_path / "z.tif").read_bytes()[: len(data) // 2])
    for name in ("damaged.tif", "truncated.tif"):
        assert main(["train", str(tmp_path / name), str(files["ann"]), "-o", str(tmp_path / "m.pt"), "--steps", "1"]) == 1
        line = _one_error_line(capsys)
        assert f"cannot read {str(tmp_path / name)!r}" in line, line
    assert not (tmp_path / "m.pt").exists()


@pytest.mark.parametrize("budget", [["--max-time", "nan"], ["--max-time", "inf"], ["--max-time", "-1"], ["--max-time", "0"], ["--steps", "0"], ["--steps", "-5"]])
def test_training_budgets_must_be_positive_and_finite(files, tmp_path, capsys, no_training, budget):
    assert main(["train", str(files["image"]), str(files["ann"]), "-o", str(tmp_path / "m.pt"), *budget]) == 1
    assert budget[0] in _one_error_line(capsys)


def test_demo_refuses_zero_steps(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(cli_train, "run_training", lambda *a, **k: pytest.fail("training started"))
    assert main(["demo", "--steps", "0", "--output", str(tmp_path / "demo")]) == 1
    assert "--steps must be at least 1" in _one_error_line(capsys)


def test_misleading_messages_now_say_what_happened(files, tmp_path, capsys, tiny_model, monkeypatch):
    import torch

    # A missing input is a missing input, whatever -o is.
    assert main(["predict", str(tmp_path / "nope.tif"), "-m", str(tiny_model), "-o", str(tmp_path / "o.tif")]) == 1
    assert "file not found" in _one_error_line(capsys)
    # An unsupported output type is refused instead of becoming a folder.
    assert main(["predict", str(files["image"]), "-m", str(tiny_model), "-o", str(tmp_path / "x.png")]) == 1
    assert ".png is not an output type" in _one_error_line(capsys)
    assert not (tmp_path / "x.png").exists()
    # --device cuda without CUDA says so, and does not blame the model file.
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert main(["predict", str(files["image"]), "-m", str(tiny_model), "-o", str(tmp_path / "o.tif"), "--device", "cuda"]) == 1
    line = _one_error_line(capsys)
    assert "no CUDA GPU" in line and "does not fit" not in line
    # NaN pixels: the file is named.
    nan = tifffile.imread(files["image"]).astype(np.float32)
    nan[5, 5] = np.nan
    tifffile.imwrite(tmp_path / "nan.tif", nan)
    assert main(["train", str(tmp_path / "nan.tif"), str(files["ann"]), "-o", str(tmp_path / "m.pt")]) == 1
    line = _one_error_line(capsys)
    assert "NaN" in line and "nan.tif" in line


def test_resume_with_more_classes_says_what_to_do_on_the_command_line(files, tmp_path, capsys, tiny_model):
    ann = tifffile.imread(files["ann"])
    ann[:4, :4] = 3
    tifffile.imwrite(tmp_path / "three.tif", ann)
    assert main(["train", str(files["image"]), str(tmp_path / "three.tif"), "-o", str(tmp_path / "m.pt"), "--resume", str(tiny_model), "--steps", "1"]) == 1
    line = _one_error_line(capsys)
    assert "leave out --resume" in line and "reset the model" not in line


def test_annotation_values_beyond_the_class_limit_name_the_file(files, tmp_path, capsys, no_training):
    ann = tifffile.imread(files["ann"]).astype(np.uint32)
    ann[0, 0] = 65537  # would wrap to 0 (background) in int16
    tifffile.imwrite(tmp_path / "huge.tif", ann)
    assert main(["train", str(files["image"]), str(tmp_path / "huge.tif"), "-o", str(tmp_path / "m.pt")]) == 1
    line = _one_error_line(capsys)
    assert "huge.tif" in line and "65537" in line and "image passed as annotations" in line
    # The image passed as its own annotations.
    assert main(["train", str(files["image"]), str(files["image"]), "-o", str(tmp_path / "m.pt")]) == 1
    assert "image passed as annotations" in _one_error_line(capsys)


def _interrupting_train(monkeypatch, signum=None, after=0):
    """Segmenter.train interrupted after ``after`` real steps: by Ctrl-C, or by the signal ``signum`` sent to this process."""
    from napari_unet.core.segmenter import Segmenter

    real_train = Segmenter.train

    def train(self, *args, **kwargs):
        for n, progress in enumerate(real_train(self, *args, **kwargs)):
            if n == after:
                if signum is None:
                    raise KeyboardInterrupt
                os.kill(os.getpid(), signum)  # the handler runs in this (the main) thread right away
            yield progress

    monkeypatch.setattr(Segmenter, "train", train)


def test_ctrl_c_before_the_first_step_exits_130(files, tmp_path, capsys, monkeypatch):
    _interrupting_train(monkeypatch, after=0)
    assert main(["train", str(files["image"]), str(files["ann"]), "-o", str(tmp_path / "m.pt")]) == 130
    assert "no model written" in capsys.readouterr().err
    assert not (tmp_path / "m.pt").exists()


def test_sigterm_during_training_writes_the_best_model_and_exits_143(files, tmp_path, capsys, monkeypatch):
    import signal

    from napari_unet.core.segmenter import Segmenter

    _interrupting_train(monkeypatch, signum=signal.SIGTERM, after=1)
    previous = signal.getsignal(signal.SIGTERM)
    assert main(["train", str(files["image"]), str(files["ann"]), "-o", str(tmp_path / "m.pt"), "--steps", "1000"]) == 143
    assert "interrupted: trained" in capsys.readouterr().out
    assert Segmenter.load(tmp_path / "m.pt").is_trained
    assert signal.getsignal(signal.SIGTERM) is previous  # restored after the command


def test_unexpected_errors_are_one_line_and_debug_shows_the_traceback(files, tmp_path, capsys, monkeypatch):
    def bug(args):
        raise ZeroDivisionError("division by zero")

    monkeypatch.setattr(cli_train, "cmd_train", bug)  # build_parser binds it when main runs
    argv = ["train", str(files["image"]), str(files["ann"]), "-o", str(tmp_path / "m.pt")]
    assert main(argv) == 1
    line = _one_error_line(capsys)
    assert "unexpected ZeroDivisionError" in line and "run with --debug for the traceback" in line
    for debug_argv in (argv + ["--debug"], ["--debug"] + argv):
        assert main(debug_argv) == 1
        err = capsys.readouterr().err
        assert "Traceback" in err and err.strip().splitlines()[-1].startswith("napari-unet: error: unexpected ZeroDivisionError")


def test_stale_temporaries_of_killed_runs_are_cleaned_and_backups_put_back(files, tmp_path, tiny_model):
    import socket

    from napari_unet.io import atomic
    atomic._cleaned.clear()
    host = socket.gethostname()
    dead = 2**22 + 12345  # above pid_max's default: no such process
    stale = tmp_path / f"{atomic.TEMP_PREFIX}tmp~{host}~{dead}~0000abcd~o.zarr"
    stale.mkdir()
    (stale / "chunk").write_bytes(b"x" * 100)
    live = tmp_path / f"{atomic.TEMP_PREFIX}tmp~{host}~{os.getpid()}~0000abce~busy.tif"
    live.write_bytes(b"still being written")
    backup = tmp_path / f"{atomic.TEMP_PREFIX}old~{host}~{dead}~0000abcf~previous.tif"
    backup.write_bytes(b"the previous output")
    assert main(["predict", str(files["image"]), "-m", str(tiny_model), "-o", str(tmp_path / "o.tif")]) == 0
    assert not stale.exists() and live.exists()
    assert (tmp_path / "previous.tif").read_bytes() == b"the previous output" and not backup.exists()


@pytest.mark.parametrize("suffix", [".tif", ".zarr"])
def test_predict_labels_instances_only_when_asked(files, tmp_path, capsys, tiny_model, monkeypatch, suffix):
    """Semantic labels alone never run the instance labelling (it is most of the post-processing time)."""
    import napari_unet.core.blockwise as blockwise
    import napari_unet.core.stitch as stitch

    def no_labelling(*args, **kwargs):
        raise AssertionError("instances were labelled although none were asked for")

    monkeypatch.setattr(blockwise, "iter_label_blockwise", no_labelling)
    monkeypatch.setattr(stitch, "iter_label_blockwise", no_labelling)
    monkeypatch.setattr("napari_unet.batch.IN_MEMORY_PIXELS", 0 if suffix == ".zarr" else 2**40)
    out = tmp_path / f"semantic{suffix}"
    assert main(["predict", str(files["image"]), "-m", str(tiny_model), "-o", str(out)]) == 0
    assert out.exists() and "semantic labels of 96x96" in capsys.readouterr().out
    monkeypatch.undo()
    assert main(["predict", str(files["image"]), "-m", str(tiny_model), "-o", str(out), "--instances", str(tmp_path / f"i{suffix}")]) == 0
    assert " objects in 96x96" in capsys.readouterr().out


@pytest.mark.parametrize("suffix", [".tif", ".zarr"])
def test_predict_writes_the_uncertainty_beside_the_labels(files, tmp_path, tiny_model, monkeypatch, suffix):
    """--uncertainty: 1 - (best - second best probability) spread into its neighbourhood, float32, label-shaped; in memory and streamed alike."""
    import zarr
    from scipy import ndimage as ndi

    from napari_unet.core.postprocess import UNCERTAINTY_SPREAD

    monkeypatch.setattr("napari_unet.batch.IN_MEMORY_PIXELS", 0 if suffix == ".zarr" else 2**40)
    out, unc, probs = tmp_path / f"s{suffix}", tmp_path / f"u{suffix}", tmp_path / "p.tif"
    assert main(["predict", str(files["image"]), "-m", str(tiny_model), "-o", str(out), "--uncertainty", str(unc), "--probabilities", str(probs)]) == 0
    u = np.asarray(zarr.open_array(str(unc), mode="r")) if suffix == ".zarr" else tifffile.imread(unc)
    p = tifffile.imread(probs)
    assert u.dtype == np.float32 and u.shape == p.shape[1:] and 0 <= u.min() <= u.max() <= 1
    own = 1 - np.abs(p[1] - p[0])
    expected = np.maximum(own, ndi.gaussian_filter(own, UNCERTAINTY_SPREAD))
    np.testing.assert_allclose(u, expected, atol=1e-6)
    assert main(["predict", str(files["image"]), "-m", str(tiny_model), "-o", str(tmp_path / "o2.tif"), "--uncertainty", str(tmp_path / "u2.tif")]) == 0
    np.testing.assert_allclose(tifffile.imread(tmp_path / "u2.tif"), expected, atol=1e-6)
    assert main(["predict", str(files["image"]), str(files["image"]), "-m", str(tiny_model), "-o", str(tmp_path / "folder"), "--uncertainty", "x.tif"]) == 1


def test_train_suggests_whole_objects_when_objects_look_painted_whole(files, tmp_path, capsys, monkeypatch):
    """A note on stderr (the option stays off); none once --whole-objects is given."""
    seen = []
    monkeypatch.setattr(cli_train, "run_training", lambda segmenter, images, annotations, config, **k: seen.append(config.whole_objects) or (None, False))
    truth = files["truth"]
    whole = np.where(truth > 0, 2, 0).astype(np.uint8)  # every object painted up to its outline
    whole[0][truth[0] == 0] = 1
    tifffile.imwrite(tmp_path / "whole.tif", whole)
    args = ["train", str(files["image"]), str(tmp_path / "whole.tif"), "-o", str(tmp_path / "m.pt"), "--steps", "3"]
    main(args)
    err = capsys.readouterr().err
    assert "look painted whole" in err and "--whole-objects" in err and seen == [False]
    main([*args, "--whole-objects"])
    assert "look painted whole" not in capsys.readouterr().err and seen == [False, True]


def test_train_says_when_whole_objects_was_dropped(files, tmp_path, capsys, monkeypatch):
    """When the rings cut objects apart (core/implied.py), train says the option was ignored, on stderr."""
    import napari_unet.core.implied as implied

    monkeypatch.setattr(implied, "CUT_SHARE", 100.0)  # every found object counts as cut
    truth = files["truth"]
    whole = np.where(truth > 0, 2, 0).astype(np.uint8)
    whole[0][truth[0] == 0] = 1
    whole[:, whole.shape[1] // 2 :] = 0  # the right half unpainted: objects are found there
    tifffile.imwrite(tmp_path / "whole.tif", whole)
    out = tmp_path / "m.pt"
    assert main(["train", str(files["image"]), str(tmp_path / "whole.tif"), "-o", str(out), "--steps", "2", "--whole-objects"]) == 0
    err = capsys.readouterr().err
    assert "note: --whole-objects was ignored" in err and "strokes as painted" in err and out.exists()


def test_train_with_whole_objects_keeps_their_size_rule_in_the_model(files, tmp_path, capsys):
    """Objects painted whole set the smallest object the instances keep: train says so, the model file keeps it, predict uses it."""
    from napari_unet.core.segmenter import Segmenter

    truth = files["truth"]
    whole = np.where(truth > 0, 2, 0).astype(np.uint8)
    whole[0][truth[0] == 0] = 1
    whole[:, whole.shape[1] // 2 :] = 0
    tifffile.imwrite(tmp_path / "whole.tif", whole)
    model = tmp_path / "m.pt"
    assert main(["train", str(files["image"]), str(tmp_path / "whole.tif"), "-o", str(model), "--steps", "2", "--whole-objects"]) == 0
    size = Segmenter.load(model, device="cpu").min_object_size
    assert size is not None and size > 16
    assert f"note: --whole-objects: instances drop objects under {size} px" in capsys.readouterr().err
    out = tmp_path / "instances.tif"
    assert main(["predict", str(files["image"]), "-m", str(model), "-o", str(tmp_path / "s.tif"), "--instances", str(out)]) == 0
    sizes = np.bincount(tifffile.imread(out).ravel())[1:]
    assert sizes[sizes > 0].min(initial=size) >= size
    # --min-size overrides the model's size, for one file and for a folder alike.
    kept = tmp_path / "kept.tif"
    assert main(["predict", str(files["image"]), "-m", str(model), "-o", str(tmp_path / "s2.tif"), "--instances", str(kept), "--min-size", "0"]) == 0
    assert tifffile.imread(kept).max() >= tifffile.imread(out).max()
    folder = tmp_path / "folder"
    assert main(["predict", str(files["image"]), "-m", str(model), "-o", str(folder), "--instances", "--min-size", "0"]) == 0
    np.testing.assert_array_equal(tifffile.imread(next(folder.glob("*_instances.tif"))), tifffile.imread(kept))
    assert main(["predict", str(files["image"]), "-m", str(model), "-o", str(tmp_path / "s3.tif"), "--min-size", "-1"]) == 1
    assert "--min-size must be 0 or more" in capsys.readouterr().err
