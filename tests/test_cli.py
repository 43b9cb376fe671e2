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
