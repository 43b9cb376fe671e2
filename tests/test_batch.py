"""Folder / glob prediction through dask (napari_unet.batch, napari_unet.io.inputs and ``napari-unet predict`` with many inputs)."""

import numpy as np
import pytest
import tifffile

from napari_unet import batch
from napari_unet.cli import main
from napari_unet.errors import UserInputError
from napari_unet.io import inputs
from tests.helpers import blobs_image


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    """A tiny 2D model trained for a few steps on one blob image."""
    import torch

    from napari_unet.core.segmenter import Segmenter
    from napari_unet.core.training import TrainConfig

    threads = torch.get_num_threads()
    image, _, ann = blobs_image((64, 64), seed=0)
    seg = Segmenter(device="cpu")
    seg.fit((image * 1000 + 2000).astype(np.uint16), ann, TrainConfig(steps=15, seed=0))
    torch.set_num_threads(threads)
    return seg.save(tmp_path_factory.mktemp("model") / "model.pt")


@pytest.fixture
def folder(tmp_path):
    """Three inputs: two 2D images and a 2-plane ZYX stack."""
    src = tmp_path / "in"
    src.mkdir()
    images = {}
    for i, name in enumerate(["a", "b"]):
        images[name] = (blobs_image((48, 64), seed=i + 3)[0] * 1000 + 2000).astype(np.uint16)
    images["c"] = np.stack([images["a"], images["b"]])
    for name, im in images.items():
        tifffile.imwrite(src / f"{name}.tif", im)
    (src / "notes.txt").write_text("not an image")
    return src, images


def _err_lines(capsys):
    return [line for line in capsys.readouterr().err.splitlines() if line.startswith("napari-unet:")]


# -- inputs and outputs -------------------------------------------------------------
def test_expand_inputs_files_folders_globs(folder, tmp_path):
    src, _ = folder
    names = lambda paths: [p.name for p in paths]  # noqa: E731
    assert names(inputs.expand_inputs([str(src)])) == ["a.tif", "b.tif", "c.tif"]
    assert names(inputs.expand_inputs([str(src / "[bc].tif")])) == ["b.tif", "c.tif"]
    assert names(inputs.expand_inputs([str(tmp_path / "**" / "a.tif")])) == ["a.tif"]
    # Duplicates are predicted once, in the order first given.
    assert names(inputs.expand_inputs([str(src / "c.tif"), str(src)])) == ["c.tif", "a.tif", "b.tif"]
    with pytest.raises(UserInputError, match="no files match"):
        inputs.expand_inputs([str(src / "*.png")])
    with pytest.raises(UserInputError, match="file not found"):
        inputs.expand_inputs([str(src / "missing.tif")])
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserInputError, match="no .tif/.tiff files"):
        inputs.expand_inputs([str(tmp_path / "empty")])


def test_output_paths_never_overwrite_an_input_or_each_other(tmp_path):
    a, b = tmp_path / "x" / "a.tif", tmp_path / "y" / "a.tiff"
    outs = batch.output_paths([a], tmp_path / "out", "zarr", instances=True)
    assert [(s.name, i.name) for s, i in outs] == [("a_semantic.zarr", "a_instances.zarr")]
    with pytest.raises(UserInputError, match="would both write 'a_semantic.tif'"):
        batch.output_paths([a, b], tmp_path / "out", "tif", instances=False)
    victim = tmp_path / "x" / "a_semantic.tif"
    with pytest.raises(UserInputError, match="would overwrite the input"):
        batch.output_paths([a, victim], tmp_path / "x", "tif", instances=False)


def test_default_workers_split_the_cores():
    assert batch.default_workers(10, "cpu", cores=2) == (1, 2)
    assert batch.default_workers(10, "cpu", cores=16) == (4, 4)
    assert batch.default_workers(2, "cpu", cores=16) == (2, 8)
    assert batch.default_workers(1, "cpu", cores=64) == (1, 64)


# -- folder prediction from the CLI ---------------------------------------------------
@pytest.mark.parametrize("fmt", ["tif", "zarr"])
def test_folder_prediction_writes_one_output_per_input(folder, model_path, tmp_path, capsys, fmt):
    src, images = folder
    out = tmp_path / "out"  # created by predict
    argv = ["predict", str(src), "-m", str(model_path), "-o", str(out), "--instances", "--format", fmt, "--workers", "2"]
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert "predicted 3 of 3 file(s)" in captured.out
    assert "reading c.tif as ZYX (guessed; use --axes to change)" in captured.err
    assert "3/3" in captured.err  # the files-done progress bar
    expected = {f"{n}_{kind}.{fmt}" for n in "abc" for kind in ("semantic", "instances")}
    assert {p.name for p in out.iterdir()} == expected  # nothing else: no temporaries
    for name, image in images.items():
        path = out / f"{name}_semantic.{fmt}"
        semantic = tifffile.imread(path) if fmt == "tif" else np.asarray(__import__("zarr").open_array(str(path), mode="r"))
        assert semantic.shape == image.shape and semantic.dtype == np.uint8
        assert semantic.any()
    # The stack's planes equal the 2D images' predictions (same model, same pixels).
    read = (lambda p: tifffile.imread(p)) if fmt == "tif" else (lambda p: np.asarray(__import__("zarr").open_array(str(p), mode="r")))
    c = read(out / f"c_semantic.{fmt}")
    np.testing.assert_array_equal(c[0], read(out / f"a_semantic.{fmt}"))
    np.testing.assert_array_equal(c[1], read(out / f"b_semantic.{fmt}"))
    # A guessed ZYX stack: its objects are 3D (one id where a disc continues into the next plane).
    ci = read(out / f"c_instances.{fmt}")
    both = (ci[0] > 0) & (ci[1] > 0)
    assert both.any() and np.mean(ci[0][both] == ci[1][both]) > 0.9


def test_glob_and_files_into_a_folder_without_instances(folder, model_path, tmp_path, capsys):
    src, _ = folder
    out = tmp_path / "out"
    assert main(["predict", str(src / "[ab].tif"), str(src / "c.tif"), "-m", str(model_path), "-o", str(out), "--axes", "ZYX"]) == 1
    # --axes applies to every file: the 2D ones are named in the errors, c.tif is written.
    errors = _err_lines(capsys)
    assert len(errors) == 2 and "a.tif" in errors[0] and "b.tif" in errors[1] and "do not fit" in errors[0]
    assert {p.name for p in out.iterdir()} == {"c_semantic.tif"}
    out2 = tmp_path / "out2"
    assert main(["predict", str(src / "[ab].tif"), "-m", str(model_path), "-o", str(out2)]) == 0
    assert {p.name for p in out2.iterdir()} == {"a_semantic.tif", "b_semantic.tif"}


def test_streamed_outputs_match_in_memory_ones(folder, model_path, tmp_path, monkeypatch, capsys):
    """Outputs too large for memory stream into memory-mapped TIFFs with the same labels."""
    src, _ = folder
    assert main(["predict", str(src / "c.tif"), "-m", str(model_path), "-o", str(tmp_path / "mem"), "--instances"]) == 0
    monkeypatch.setattr(batch, "IN_MEMORY_PIXELS", 0)
    assert main(["predict", str(src / "c.tif"), "-m", str(model_path), "-o", str(tmp_path / "disk")]) == 0
    assert main(["predict", str(src / "c.tif"), "-m", str(model_path), "-o", str(tmp_path / "one.tif"), "--instances", str(tmp_path / "one_inst.tif")]) == 0
    mem = tifffile.imread(tmp_path / "mem" / "c_semantic.tif")
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "disk" / "c_semantic.tif"), mem)
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "one.tif"), mem)
    streamed = tifffile.imread(tmp_path / "one_inst.tif")
    assert streamed.dtype == np.uint32
    np.testing.assert_array_equal(streamed, tifffile.imread(tmp_path / "mem" / "c_instances.tif"))
    assert {p.name for p in (tmp_path / "disk").iterdir()} == {"c_semantic.tif"}  # scratch instances removed


def test_unreadable_file_is_named_and_the_others_are_written(folder, model_path, tmp_path, capsys):
    src, _ = folder
    (src / "broken.tif").write_bytes(b"II*\x00" + b"\x00" * 50)
    out = tmp_path / "out"
    assert main(["predict", str(src), "-m", str(model_path), "-o", str(out)]) == 1
    captured = capsys.readouterr()
    errors = [line for line in captured.err.splitlines() if line.startswith("napari-unet:")]
    assert len(errors) == 1 and errors[0].startswith("napari-unet: error: broken.tif: cannot read")
    assert "predicted 3 of 4 file(s)" in captured.out
    assert {p.name for p in out.iterdir()} == {"a_semantic.tif", "b_semantic.tif", "c_semantic.tif"}


def test_channel_mismatch_is_found_before_predicting(folder, model_path, tmp_path, capsys):
    src, images = folder
    tifffile.imwrite(src / "rgb.tif", np.stack([images["a"]] * 3, axis=-1))
    out = tmp_path / "out"
    assert main(["predict", str(src), "-m", str(model_path), "-o", str(out)]) == 1
    errors = _err_lines(capsys)
    assert len(errors) == 1 and errors[0].startswith("napari-unet: error: rgb.tif: the model expects 1 channel(s) but the image has 3 (axes 'YXC')")
    assert sorted(p.name for p in out.iterdir()) == ["a_semantic.tif", "b_semantic.tif", "c_semantic.tif"]


def test_failure_while_predicting_is_reported_by_name(folder, model_path, tmp_path, capsys, monkeypatch):
    """An unexpected failure inside one file's task (disk full, a bug) does not stop the others."""
    src, _ = folder
    real = batch.predict_planes

    def failing(segmenter, planes, semantic_path, *args, **kwargs):
        if semantic_path.name.startswith("b_"):
            raise OSError(28, "No space left on device")
        return real(segmenter, planes, semantic_path, *args, **kwargs)

    monkeypatch.setattr(batch, "predict_planes", failing)
    out = tmp_path / "out"
    assert main(["predict", str(src), "-m", str(model_path), "-o", str(out), "--instances"]) == 1
    errors = _err_lines(capsys)
    assert len(errors) == 1 and errors[0].startswith("napari-unet: error: b.tif: unexpected OSError") and "No space left" in errors[0]
    assert sorted(p.name for p in out.iterdir()) == ["a_instances.tif", "a_semantic.tif", "c_instances.tif", "c_semantic.tif"]


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--instances", "x.tif"], "--instances takes no file name"),
        (["--probabilities", "p.tif"], "only available when predicting one file"),
        (["--workers", "0"], "at least 1"),
        (["--tile", "32"], "at least 128"),
        (["--workers", "2", "--scheduler", "tcp://127.0.0.1:1"], "size the dask cluster"),
    ],
)
def test_bad_batch_options_are_one_line(folder, model_path, tmp_path, capsys, extra, message):
    src, _ = folder
    assert main(["predict", str(src), "-m", str(model_path), "-o", str(tmp_path / "out"), *extra]) == 1
    errors = _err_lines(capsys)
    assert len(errors) == 1 and message in errors[0], errors
    assert not (tmp_path / "out").exists()


def test_several_inputs_need_a_folder_output(folder, model_path, tmp_path, capsys):
    src, _ = folder
    assert main(["predict", str(src / "a.tif"), str(src / "b.tif"), "-m", str(model_path), "-o", str(tmp_path / "x.tif")]) == 1
    assert "must be a folder" in _err_lines(capsys)[0]


# -- dask.distributed ---------------------------------------------------------------------
def test_batch_on_a_distributed_cluster(folder, model_path, tmp_path, capsys):
    distributed = pytest.importorskip("distributed")
    src, _ = folder
    out = tmp_path / "out"
    with distributed.LocalCluster(processes=False, n_workers=1, threads_per_worker=1, dashboard_address=None) as cluster:
        assert main(["predict", str(src), "-m", str(model_path), "-o", str(out), "--format", "zarr", "--scheduler", cluster.scheduler_address]) == 0
    captured = capsys.readouterr()
    assert "predicted 3 of 3 file(s)" in captured.out and cluster.scheduler_address in captured.err
    assert {p.name for p in out.iterdir()} == {"a_semantic.zarr", "b_semantic.zarr", "c_semantic.zarr"}


def test_unreachable_scheduler_is_a_clear_error(folder, model_path, tmp_path, capsys, monkeypatch):
    pytest.importorskip("distributed")
    monkeypatch.setattr(batch, "CONNECT_TIMEOUT", 1.0)
    src, _ = folder
    assert main(["predict", str(src), "-m", str(model_path), "-o", str(tmp_path / "out"), "--scheduler", "tcp://127.0.0.1:9"]) == 1
    errors = _err_lines(capsys)
    assert len(errors) == 1 and "cannot connect to the dask scheduler at 'tcp://127.0.0.1:9'" in errors[0]


def test_missing_distributed_is_a_clear_error(folder, model_path, tmp_path, capsys, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "distributed", None)  # import fails
    src, _ = folder
    assert main(["predict", str(src), "-m", str(model_path), "-o", str(tmp_path / "out"), "--scheduler", "tcp://127.0.0.1:9"]) == 1
    assert "pip install 'napari-stroke-unet[distributed]'" in _err_lines(capsys)[0]
