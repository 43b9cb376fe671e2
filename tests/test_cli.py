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
from conftest import blobs_image  # noqa: E402


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
    argv = ["train", str(tmp_path / "stack.tif"), str(tmp_path / "stack_ann.tif"), "-o", str(model), "--steps", "30", "--seed", "0", "--device", "cpu"]
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
    ids = [set(np.unique(instances[z])) - {0} for z in range(3)]
    assert all(ids) and not (ids[0] & ids[1]) and not (ids[1] & ids[2]) and not (ids[0] & ids[2])


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
    before = files["image"].read_bytes()
    assert main(["predict", str(files["image"]), "-m", str(model), "-o", str(files["image"])]) == 1
    assert "overwrite the input" in _one_error_line(capsys)
    assert files["image"].read_bytes() == before
