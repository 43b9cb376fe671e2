"""Faults while writing: a full disk, a read-only place, a kill between two writes.

Each test runs a real ``napari-unet`` command over previous outputs and
checks that afterwards every output is either the complete new result or
untouched, that no temporary is left behind and that no input changed.
A full disk is a small tmpfs where this machine lets us mount one (root on
Linux), else a writer patched to raise ENOSPC part-way; a read-only place
likewise a read-only tmpfs, else a patched file creation.
"""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
import tifffile

from napari_unet.cli import main
from napari_unet.io import atomic

OLD = b"previous output: must survive a failed run"


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    """A small trained model file, quick to predict with."""
    from napari_unet.core.model import UNetConfig
    from napari_unet.core.segmenter import Segmenter
    from napari_unet.core.training import TrainConfig
    from tests.helpers import blobs_image

    image, _, ann = blobs_image((64, 64))
    seg = Segmenter(UNetConfig(1, 2, depth=2, width=8), device="cpu")
    seg.fit(image, ann, TrainConfig(steps=2, patch_size=32, batch_size=2, seed=0))
    return seg.save(tmp_path_factory.mktemp("model") / "m.pt")


@pytest.fixture
def inputs(tmp_path, blobs) -> dict[str, Path]:
    image, _, ann = blobs
    folder = tmp_path / "in"
    folder.mkdir()
    tifffile.imwrite(folder / "image.tif", (image * 1000 + 2000).astype(np.uint16))
    tifffile.imwrite(folder / "ann.tif", ann)
    return {"image": folder / "image.tif", "ann": folder / "ann.tif"}


def _snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (relative name -> content)."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _temporaries(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.name.startswith(atomic.TEMP_PREFIX)]


def _one_error_line(capsys) -> str:
    """The error line, after any progress bars (tqdm redraws them with carriage returns)."""
    pieces = [piece.strip() for line in capsys.readouterr().err.splitlines() for piece in line.split("\r")]
    ours = [piece for piece in pieces if piece.startswith("napari-unet:")]
    assert len(ours) == 1 and ours[0].startswith("napari-unet: error:"), pieces
    assert not any("Traceback" in piece for piece in pieces)
    return ours[0]


def _predict_argv(inputs, model, out: Path, ext: str = "tif") -> list[str]:
    return [
        "predict", str(inputs["image"]), "-m", str(model),
        "-o", str(out / f"sem.{ext}"), "--instances", str(out / f"inst.{ext}"), "--probabilities", str(out / f"prob.{ext}"),
    ]


def _previous_outputs(out: Path, ext: str) -> None:
    """Stand-ins for the outputs of an earlier run (a file, or a zarr folder)."""
    for name in ("sem", "inst", "prob"):
        path = out / f"{name}.{ext}"
        if ext == "zarr":
            import zarr

            zarr.open_array(str(path), mode="w", shape=(2, 2), dtype="u1", fill_value=7)
        else:
            path.write_bytes(OLD)


def _previous_intact(out: Path, ext: str, before: dict[str, bytes]) -> None:
    assert _snapshot(out) == before
    assert not _temporaries(out)


@contextlib.contextmanager
def _tmpfs(where: Path, options: str):
    """Mount a tmpfs at ``where`` (skips the caller's variant when mounting is not allowed)."""
    where.mkdir()
    try:
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)], capture_output=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        done = None
    if done is None or done.returncode != 0:
        pytest.skip("cannot mount a tmpfs here (not root, or no mount in this sandbox); the patched variant covers it")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], capture_output=True, timeout=10)


# -- a full disk --------------------------------------------------------------------------
@pytest.mark.parametrize("ext", ["tif", "zarr"])
def test_full_disk_by_patched_writer_leaves_previous_outputs_and_inputs(inputs, model, tmp_path, capsys, monkeypatch, ext):
    """The third output's writer fails part-way with ENOSPC: none of the three new outputs appears."""
    out = tmp_path / "out"
    out.mkdir()
    _previous_outputs(out, ext)
    before, inputs_before = _snapshot(out), _snapshot(inputs["image"].parent)
    calls = {"n": 0}
    if ext == "tif":
        import napari_unet.io.tiff as tiff_io

        real = tiff_io.tifffile.imwrite

        def writer(path, data, **kwargs):
            calls["n"] += 1
            if calls["n"] == 3:
                Path(path).write_bytes(b"half a file")  # written part-way, then the disk is full
                raise OSError(errno.ENOSPC, "No space left on device", str(path))
            return real(path, data, **kwargs)

        monkeypatch.setattr(tiff_io.tifffile, "imwrite", writer)
    else:
        import napari_unet.batch as batch

        real_drive = batch.drive

        def drive(stack, progress):
            real_drive(stack, progress)
            raise OSError(errno.ENOSPC, "No space left on device")  # a chunk write failed

        monkeypatch.setattr(batch, "drive", drive)
    assert main(_predict_argv(inputs, model, out, ext)) == 1
    line = _one_error_line(capsys)
    assert "No space left on device" in line and "prob." in line and atomic.TEMP_PREFIX not in line, line
    _previous_intact(out, ext, before)
    assert _snapshot(inputs["image"].parent) == inputs_before


@pytest.mark.parametrize("streaming", [False, True], ids=["in memory", "streaming"])
def test_full_disk_on_a_small_tmpfs(inputs, model, tmp_path, capsys, monkeypatch, streaming):
    """A real full disk: semantic and instances fit in 64 KiB, the probabilities do not."""
    image = np.tile(tifffile.imread(inputs["image"]), (3, 3))  # 288², float32 probabilities ~650 KB
    tifffile.imwrite(inputs["image"], image)
    if streaming:
        import napari_unet.batch as batch

        monkeypatch.setattr(batch, "IN_MEMORY_PIXELS", 0)  # memory-mapped TIFFs, preallocated
    inputs_before = _snapshot(inputs["image"].parent)
    with _tmpfs(tmp_path / "full", "size=64k") as out:
        assert main(_predict_argv(inputs, model, out)) == 1
        line = _one_error_line(capsys)
        assert "No space left on device" in line and atomic.TEMP_PREFIX not in line, line
        assert list(out.iterdir()) == []  # nothing half-written, no temporary
    assert _snapshot(inputs["image"].parent) == inputs_before


def test_full_disk_when_saving_a_model_keeps_the_previous_model(inputs, model, tmp_path, capsys, monkeypatch):
    from napari_unet.core import checkpoint
    from napari_unet.core.segmenter import Segmenter

    target = tmp_path / "trained.pt"
    target.write_bytes(model.read_bytes())
    real = checkpoint.torch.save

    def full(obj, path, *args, **kwargs):
        with open(path, "wb") as f:
            f.write(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(checkpoint.torch, "save", full)
    with pytest.raises(atomic.OutputError, match=f"cannot write {str(target)!r}: No space left on device"):
        Segmenter.load(model).save(target)
    monkeypatch.setattr(checkpoint.torch, "save", real)
    assert target.read_bytes() == model.read_bytes() and not _temporaries(tmp_path)


# -- a read-only place --------------------------------------------------------------------
def test_read_only_target_is_refused_before_training(inputs, tmp_path, capsys, monkeypatch):
    import napari_unet.cli.train as cli_train

    monkeypatch.setattr(cli_train, "run_training", lambda *a, **k: pytest.fail("training started"))
    inputs_before = _snapshot(inputs["image"].parent)
    with _read_only_folder(tmp_path, monkeypatch) as folder:
        assert main(["train", str(inputs["image"]), str(inputs["ann"]), "-o", str(folder / "m.pt"), "--steps", "2"]) == 1
        line = _one_error_line(capsys)
        assert f"cannot write {str(folder / 'm.pt')!r}: Read-only file system" in line, line
        assert list(folder.iterdir()) == []
    assert _snapshot(inputs["image"].parent) == inputs_before


def test_read_only_target_for_predict_is_refused_and_writes_nothing(inputs, model, tmp_path, capsys, monkeypatch):
    with _read_only_folder(tmp_path, monkeypatch) as folder:
        assert main(_predict_argv(inputs, model, folder)) == 1
        assert "Read-only file system" in _one_error_line(capsys)
        assert list(folder.iterdir()) == []


@contextlib.contextmanager
def _read_only_folder(tmp_path: Path, monkeypatch):
    """A read-only tmpfs when mounting works, else a folder where creating files fails with EROFS."""
    where = tmp_path / "ro"
    where.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(where)], capture_output=True, timeout=10) if os.geteuid() == 0 else None
    if done is not None and done.returncode == 0:
        try:
            yield where
        finally:
            subprocess.run(["umount", "-l", str(where)], capture_output=True, timeout=10)
        return
    real = atomic.tempfile.mkstemp

    def mkstemp(*args, dir=None, **kwargs):
        if dir is not None and Path(dir).resolve() == where.resolve():
            raise OSError(errno.EROFS, "Read-only file system", str(Path(dir) / "tmpXXXX"))
        return real(*args, dir=dir, **kwargs)

    monkeypatch.setattr(atomic.tempfile, "mkstemp", mkstemp)
    yield where


# -- killed between two writes ------------------------------------------------------------
@pytest.mark.parametrize("ext", ["tif", "zarr"])
@pytest.mark.parametrize("fault", [KeyboardInterrupt, OSError], ids=["killed", "rename fails"])
def test_failure_between_two_renames_rolls_back_the_first(inputs, model, tmp_path, capsys, monkeypatch, ext, fault):
    """The second output's move into place fails: the first, already moved, is put back as it was."""
    out = tmp_path / "out"
    out.mkdir()
    _previous_outputs(out, ext)
    before, inputs_before = _snapshot(out), _snapshot(inputs["image"].parent)
    real_replace = os.replace
    moves = {"n": 0}

    def replace(src, dst, *args, **kwargs):
        if Path(src).name.startswith(f"{atomic.TEMP_PREFIX}tmp~"):  # a new output moving into place
            moves["n"] += 1
            if moves["n"] == 2:
                raise KeyboardInterrupt() if fault is KeyboardInterrupt else OSError(errno.EIO, "Input/output error", str(src))
        return real_replace(src, dst, *args, **kwargs)

    monkeypatch.setattr(atomic.os, "replace", replace)
    status = main(_predict_argv(inputs, model, out, ext))
    monkeypatch.setattr(atomic.os, "replace", real_replace)
    assert moves["n"] == 2
    if fault is KeyboardInterrupt:
        assert status == 130
    else:
        assert status == 1
        line = _one_error_line(capsys)
        assert "cannot write" in line and "inst." in line and atomic.TEMP_PREFIX not in line, line
    _previous_intact(out, ext, before)
    assert _snapshot(inputs["image"].parent) == inputs_before


def test_failure_between_two_renames_with_no_previous_outputs_leaves_nothing(inputs, model, tmp_path, capsys, monkeypatch):
    out = tmp_path / "out"
    out.mkdir()
    real_replace = os.replace
    moves = {"n": 0}

    def replace(src, dst, *args, **kwargs):
        if Path(src).name.startswith(f"{atomic.TEMP_PREFIX}tmp~"):
            moves["n"] += 1
            if moves["n"] == 3:
                raise KeyboardInterrupt()
        return real_replace(src, dst, *args, **kwargs)

    monkeypatch.setattr(atomic.os, "replace", replace)
    assert main(_predict_argv(inputs, model, out)) == 130
    assert list(out.iterdir()) == []
