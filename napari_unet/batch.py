"""Prediction of many N-D image files, in parallel through dask.

Used by ``napari-unet predict``. Each input (found and opened by
:mod:`napari_unet.io.inputs`) is opened lazily, predicted plane by plane (or volume by volume for a 3D model) with
:meth:`napari_unet.core.segmenter.Segmenter.predict_stack` straight into on-disk
outputs, so memory stays bounded however large the files are. Files are
spread over dask workers: threads of the local scheduler by default, or an
existing ``dask.distributed`` cluster given by its address. There is no
process pool of our own.

A file that fails is reported by name; the others are still written.

Process-wide state: :func:`load_segmenter` keeps every model it loaded in a
module-level cache guarded by a lock (one copy per process, shared by the
threads of a dask worker), and :func:`predict_batch` sets torch's thread
count for the duration of a local run (restored afterwards).
"""

from __future__ import annotations

import os
import threading
import traceback
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from napari_unet.core.progress import drive
from napari_unet.errors import UserInputError
from napari_unet.io.inputs import image_planes

FORMATS = ("tif", "zarr")
# Label-shaped outputs up to this many pixels are computed in memory and
# written as compressed TIFFs of the smallest integer type (the format of
# napari-unet 0.1); larger ones stream into uncompressed memory-mapped TIFFs
# or zarr so the result is never held whole.
IN_MEMORY_PIXELS = 4096 * 4096
# Seconds to wait for a dask scheduler before giving up.
CONNECT_TIMEOUT = 10.0


# -- outputs ------------------------------------------------------------------
def output_paths(files: Sequence[Path], folder: Path, fmt: str, instances: bool) -> list[tuple[Path, Path | None]]:
    """``(semantic, instances)`` output paths, ``<stem>_semantic.<fmt>`` in ``folder``.

    Raises
    ------
    UserInputError
        If two inputs would write the same output (same stem), or an output
        would replace one of the inputs.
    """
    if fmt not in FORMATS:
        raise UserInputError(f"unknown output format {fmt!r} (choose {' or '.join(FORMATS)})")
    folder = folder.resolve()
    outputs: list[tuple[Path, Path | None]] = []
    owner: dict[Path, Path] = {}
    inputs = {p.resolve() for p in files}
    for p in files:
        sem = folder / f"{p.stem}_semantic.{fmt}"
        inst = folder / f"{p.stem}_instances.{fmt}" if instances else None
        for out in (sem, inst):
            if out is None:
                continue
            if out in inputs:
                raise UserInputError(f"predicting {str(p)!r} would overwrite the input {str(out)!r}: choose another output folder")
            if out in owner:
                raise UserInputError(f"{str(owner[out])!r} and {str(p)!r} would both write {out.name!r}: rename one or predict them into different folders")
            owner[out] = p
        outputs.append((sem, inst))
    return outputs


def measurements_path(semantic: Path) -> Path:
    """``<stem>_objects.csv`` beside ``<stem>_semantic.<fmt>``: a folder prediction's measurements."""
    stem = semantic.name.rsplit("_semantic.", 1)[0]
    return semantic.with_name(f"{stem}_objects.csv")


def planes_for_model(path: str | os.PathLike, axes: str | None, spatial_ndim: int, channels: int | None = None):
    """:func:`~napari_unet.io.inputs.image_planes`, with a model's input channels checked.

    ``channels`` (the model's ``in_channels``), when given, is checked here
    so a mismatch fails, naming the file, before any work starts.

    Returns
    -------
    (Planes, str or None)
        The planes and a note about the axes (see
        :func:`~napari_unet.io.inputs.resolve_axes`).
    """
    planes, note = image_planes(path, axes, spatial_ndim)
    if channels is not None and planes.channels != channels:
        from napari_unet.core.segmenter import channel_mismatch

        raise UserInputError(f"{Path(path).name}: {channel_mismatch(channels, planes.channels, planes.axes)}")
    return planes, note


# -- one file ------------------------------------------------------------------
@dataclass
class FileResult:
    """What happened to one input file."""

    path: Path
    written: list[Path] = field(default_factory=list)
    objects: int | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def _is_zarr(path: Path) -> bool:
    return path.suffix.lower() == ".zarr"


def _objects(result, instances_out, planes) -> int | None:
    """Largest instance id: the stack generator's return value, else read back plane by plane (None: no instances made)."""
    if instances_out is None:
        return None
    if isinstance(result, (int, np.integer)):
        return int(result)
    from napari_unet.core.stack import largest_id

    return largest_id(instances_out, planes)


def predict_planes(
    segmenter,
    planes,
    semantic_path: Path,
    instances_path: Path | None = None,
    probabilities_path: Path | None = None,
    params=None,
    tile: int | None = None,
    progress: Callable | None = None,
    measurements_path: Path | None = None,
    uncertainty_path: Path | None = None,
) -> tuple[list[Path], int | None]:
    """Predict every plane of ``planes`` into output files, all or nothing.

    Small TIFF outputs are computed in memory and written compressed as the
    smallest integer type (:func:`~napari_unet.io.tiff.write_labels`);
    large or zarr outputs stream into
    :func:`~napari_unet.io.stores.open_output` (uint8 semantic, uint32
    instances). Either way every output is written under a temporary name
    and all are moved into place together once all are complete
    (:func:`~napari_unet.io.atomic.atomic_group`): on any failure none is,
    and previous outputs at those paths are kept. ``measurements_path``
    receives a CSV of per-object measurements
    (:mod:`napari_unet.core.measure`), measured plane by plane as planes
    are predicted; it is written (atomically) once the labels are in place.
    ``uncertainty_path`` receives the per-pixel uncertainty (float32,
    label-shaped, :func:`~napari_unet.core.postprocess.uncertainty_from_probabilities`).

    Returns
    -------
    (list of Path, int or None)
        The files written and the number of objects (largest instance id);
        None when neither instances nor measurements were asked for (they
        are then never computed).
    """
    from napari_unet.core.postprocess import uncertainty_from_probabilities
    from napari_unet.io.atomic import atomic_group, scratch_dir
    from napari_unet.io.tiff import write_labels, write_tiff

    params = params or segmenter.instance_params()
    shape = tuple(planes.label_shape)
    n_classes = segmenter.config.n_classes
    outputs = [p for p in (semantic_path, instances_path, probabilities_path, uncertainty_path) if p is not None]
    pixels = int(np.prod(shape, dtype=np.int64))
    if pixels <= IN_MEMORY_PIXELS and not any(_is_zarr(p) for p in outputs):
        semantic = np.zeros(shape, np.uint8)
        # Instances only when asked for (a file, or the measurements of objects).
        instances = np.zeros(shape, np.uint32) if instances_path is not None or measurements_path is not None else None
        probabilities = np.zeros((n_classes,) + shape, np.float32) if probabilities_path or uncertainty_path else None
        measure = _measurements(segmenter, planes, semantic, instances, measurements_path)
        stack = segmenter.predict_stack(planes, semantic, instances, params, probabilities_out=probabilities, tile=tile, plane_done=measure)
        result = drive(stack, progress)
        # Everything is computed before the first file is written; all are moved into place together.
        with atomic_group() as group:
            write_labels(semantic_path, semantic, group)
            if instances_path is not None:
                write_labels(instances_path, instances, group)
            if probabilities_path is not None:
                write_tiff(probabilities_path, probabilities, group)
            if uncertainty_path is not None:
                write_tiff(uncertainty_path, uncertainty_from_probabilities(probabilities), group)
        return outputs + _write_measurements(measure, measurements_path), _objects(result, instances, planes)
    from napari_unet.io import stores
    # The group is entered first so it commits last, after every store is flushed and closed.
    with atomic_group() as group, ExitStack() as stack:
        semantic = stack.enter_context(stores.open_output(semantic_path, shape, np.uint8, axes=planes.label_axes, group=group))
        if instances_path is not None:
            instances = stack.enter_context(stores.open_output(instances_path, shape, np.uint32, axes=planes.label_axes, group=group))
        elif measurements_path is not None:
            # Measured objects need instances but no file: a scratch store
            # beside the output that is never moved into place.
            scratch = stack.enter_context(scratch_dir(semantic_path.parent))
            instances = stores.scratch_zarr(scratch / "instances.zarr", shape, np.uint32)
        else:
            instances = None  # only semantic labels were asked for: no instance labelling at all
        probabilities = None
        if probabilities_path is not None:
            probabilities = stack.enter_context(
                stores.open_output(probabilities_path, (n_classes,) + shape, np.float32, axes="C" + planes.label_axes, group=group)
            )
        elif uncertainty_path is not None:  # needed for the uncertainty, never moved into place
            scratch = stack.enter_context(scratch_dir(semantic_path.parent))
            probabilities = stores.scratch_zarr(scratch / "probabilities.zarr", (n_classes,) + shape, np.float32)
        uncertainty = None
        if uncertainty_path is not None:
            uncertainty = stack.enter_context(stores.open_output(uncertainty_path, shape, np.float32, axes=planes.label_axes, group=group))
        measure = _measurements(segmenter, planes, semantic, instances, measurements_path)
        stack_steps = segmenter.predict_stack(planes, semantic, instances, params, probabilities_out=probabilities, tile=tile, plane_done=measure)
        result = drive(stack_steps, progress)
        objects = _objects(result, instances, planes)
        if uncertainty is not None:
            for index in planes.indices():  # plane by plane: bounded memory
                key = planes.label_index(index)
                uncertainty[key] = uncertainty_from_probabilities(np.asarray(probabilities[(slice(None),) + tuple(key)]))
    # After the stores are in place: the CSV describes files that exist.
    return outputs + _write_measurements(measure, measurements_path), objects


def _measurements(segmenter, planes, semantic, instances, path: Path | None):
    """A per-plane measurement collector for ``Segmenter.predict_stack`` (None without a CSV to write)."""
    if path is None:
        return None
    from napari_unet.core.measure import StackMeasurements

    return StackMeasurements(planes, semantic, instances, segmenter.names())


def _write_measurements(measure, path: Path | None) -> list[Path]:
    """Write the collected measurements as CSV; the paths written."""
    if measure is None or path is None:
        return []
    from napari_unet.core.measure import write_csv

    return [write_csv(path, measure.table())]


# Segmenters loaded on this process (a dask worker), shared by its threads:
# inference only reads the weights, so one copy serves them all. Never
# emptied: a process loads a few models at most.
_SEGMENTERS: dict[tuple, object] = {}
_SEGMENTERS_LOCK = threading.Lock()


def load_segmenter(model: str | os.PathLike, device: str = "auto"):
    """Load a model file once per process (cached by path, modification time and device).

    The cache is a module global (``_SEGMENTERS``) guarded by a lock, so the
    threads of one dask worker share one copy of the weights: inference
    only reads them. A model file replaced on disk (new modification time)
    is loaded again; old entries stay until the process ends.

    Returns
    -------
    Segmenter
        The same object for every call with the same key.
    """
    from napari_unet.core.segmenter import Segmenter

    path = Path(model).resolve()
    try:
        key = (str(path), path.stat().st_mtime_ns, device)
    except OSError:
        key = (str(path), None, device)
    with _SEGMENTERS_LOCK:
        if key not in _SEGMENTERS:
            _SEGMENTERS[key] = Segmenter.load(path, device)
        return _SEGMENTERS[key]


def predict_file(
    path: str,
    axes: str,
    model: str,
    semantic_path: str,
    instances_path: str | None,
    device: str = "auto",
    tile: int | None = None,
    measurements_path: str | None = None,
    min_size: int | None = None,
) -> FileResult:
    """Predict one file (a dask task): never raises, reports failures in the result.

    All arguments are plain strings so the task pickles cheaply to remote
    dask workers; those need the same paths (a shared file system).
    """
    from napari_unet.core.segmenter import model_ndim

    result = FileResult(Path(path))
    try:
        segmenter = load_segmenter(model, device)
        planes, _ = planes_for_model(path, axes, model_ndim(segmenter.config), segmenter.config.in_channels)
        written, objects = predict_planes(
            segmenter,
            planes,
            Path(semantic_path),
            Path(instances_path) if instances_path else None,
            tile=tile,
            measurements_path=Path(measurements_path) if measurements_path else None,
            params=segmenter.instance_params(min_size),
        )
        result.written, result.objects = written, objects
    except UserInputError as exc:
        result.error = str(exc)
    except MemoryError:
        result.error = "out of memory"
    except Exception as exc:  # a bug or an I/O failure: keep the batch going, say what it was
        last = traceback.extract_tb(exc.__traceback__)[-1:] if exc.__traceback__ else []
        where = f" at {Path(last[0].filename).name}:{last[0].lineno}" if last else ""
        result.error = f"unexpected {type(exc).__name__}{where}: {str(exc).splitlines()[0] if str(exc) else ''}".rstrip(": ")
    return result


# -- many files -------------------------------------------------------------------
def default_workers(n_files: int, device: str = "auto", cores: int | None = None) -> tuple[int, int]:
    """Files predicted at once and torch threads each, for the local scheduler.

    Torch already spreads one prediction over the cores, so on the CPU
    several files at once only pay off on larger machines: one file per 4
    cores, the cores split between them (2 cores: 1 file x 2 threads;
    16 cores: 4 files x 4 threads). A GPU is fed by two files at once, one
    reading while the other computes.

    Returns
    -------
    (int, int)
        Workers and torch threads per worker.
    """
    from napari_unet.core.device import resolve_device

    cores = cores or os.cpu_count() or 1
    if resolve_device(device).type != "cpu":
        return max(1, min(n_files, 2)), max(1, cores // 2)
    workers = max(1, min(n_files, cores // 4))
    return workers, max(1, cores // workers)


@contextmanager
def _torch_threads(n: int | None) -> Iterator[None]:
    import torch

    before = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _connect(address: str):
    try:
        from distributed import Client
    except ImportError as exc:
        raise UserInputError("--scheduler needs dask.distributed: pip install 'napari-stroke-unet[distributed]'") from exc
    try:
        return Client(address, timeout=CONNECT_TIMEOUT, set_as_default=False)
    except (OSError, TimeoutError, ValueError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UserInputError(f"cannot connect to the dask scheduler at {address!r} ({reason})") from exc


def run_tasks(tasks: list, client=None, workers: int | None = None, on_done: Callable[[], None] | None = None) -> list:
    """Compute dask.delayed tasks; call ``on_done`` as each finishes.

    Parameters
    ----------
    tasks : list of dask.delayed
        One per file.
    client : distributed.Client, optional
        A connected ``dask.distributed`` client; the local threaded
        scheduler when None.
    workers : int, optional
        Threads of the local scheduler.

    Returns
    -------
    list
        The tasks' results, in order.
    """
    if client is not None:
        from distributed import as_completed

        futures = client.compute(tasks)
        with client.as_current():  # as_completed looks up the current client
            for _ in as_completed(futures):
                if on_done:
                    on_done()
        return client.gather(futures)

    import dask
    from dask.callbacks import Callback

    keys = {t.key for t in tasks}

    class _Progress(Callback):
        def _posttask(self, key, result, dsk, state, worker_id):
            if on_done and key in keys:
                on_done()

    with _Progress():
        return list(dask.compute(*tasks, scheduler="threads", num_workers=workers or 1))


@dataclass
class BatchPlan:
    """Inputs, their outputs and axes, checked before any prediction starts."""

    files: list[Path]
    outputs: list[tuple[Path, Path | None]]
    axes: list[str | None]
    notes: list[str]
    failed: list[FileResult]


def plan_batch(
    files: Sequence[Path], folder: Path, fmt: str, instances: bool, axes: str | None, spatial_ndim: int, channels: int | None = None
) -> BatchPlan:
    """Check every input's header and axes; files that cannot be read become failures.

    Axes are resolved here, in the client, so guesses are announced once
    before the work starts; each distinct guess is printed for the first
    file it applies to.
    """
    outputs = output_paths(files, folder, fmt, instances)
    plan = BatchPlan([], [], [], [], [])
    guessed: dict[str, list[str]] = {}
    for path, out in zip(files, outputs):
        try:
            planes, note = planes_for_model(path, axes, spatial_ndim, channels)
        except UserInputError as exc:
            plan.failed.append(FileResult(path, error=str(exc)))
            continue
        if note and note.startswith("reading "):
            guessed.setdefault(planes.axes, []).append(path.name)
        elif note:
            plan.notes.append(note)
        plan.files.append(path)
        plan.outputs.append(out)
        plan.axes.append(planes.axes)
    for chosen, names in guessed.items():
        more = f" and {len(names) - 1} more" if len(names) > 1 else ""
        plan.notes.append(f"reading {names[0]}{more} as {chosen} (guessed; use --axes to change)")
    return plan


def predict_batch(
    files: Sequence[Path],
    model: str | os.PathLike,
    folder: Path,
    fmt: str = "tif",
    instances: bool = False,
    axes: str | None = None,
    device: str = "auto",
    tile: int | None = None,
    scheduler: str | None = None,
    workers: int | None = None,
    stream=None,
    measurements: bool = False,
    min_size: int | None = None,
) -> list[FileResult]:
    """Predict many files into ``folder``, one dask task per file.

    Parameters
    ----------
    files : sequence of Path
        Inputs (see :func:`~napari_unet.io.inputs.expand_inputs`).
    model : path
        Model file; loaded once here to check it, then once per worker process.
    folder : Path
        Output folder (created if missing).
    fmt : {"tif", "zarr"}
        Output format.
    instances : bool
        Also write ``<stem>_instances.<fmt>``.
    axes : str, optional
        Axes of every input (default: metadata, else a guess).
    device, tile
        Passed to the model.
    scheduler : str, optional
        ``dask.distributed`` scheduler address; local threads when None.
    workers : int, optional
        Files at once on the local scheduler (default :func:`default_workers`).
    stream : file, optional
        Where progress and notes go (default stderr).
    measurements : bool
        Also write ``<stem>_objects.csv``: one row per object
        (:mod:`napari_unet.core.measure`).
    min_size : int, optional
        Smallest object kept in the instances (default: the model's own,
        see :meth:`~napari_unet.core.segmenter.Segmenter.instance_params`).

    Returns
    -------
    list of FileResult
        One per input, in input order.
    """
    import sys

    import dask
    from tqdm import tqdm

    from napari_unet.core.segmenter import model_ndim

    stream = stream or sys.stderr
    segmenter = load_segmenter(model, device)  # fails early on a bad model file
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise UserInputError(f"output {str(folder)!r} is a file; with several inputs -o must be a folder")
    if not folder.parent.resolve().is_dir():
        raise UserInputError(f"cannot write into {str(folder)!r}: its parent folder does not exist")
    with ExitStack() as cleanup:
        # Connect before anything is written: an unreachable cluster leaves no trace.
        client = _connect(scheduler) if scheduler else None
        if client is not None:
            cleanup.callback(client.close)
        plan = plan_batch(list(files), folder, fmt, instances, axes, model_ndim(segmenter.config), segmenter.config.in_channels)
        for note in plan.notes:
            print(note, file=stream)
        results: dict[Path, FileResult] = {r.path: r for r in plan.failed}
        if plan.files:
            try:
                folder.mkdir(exist_ok=True)
            except OSError as exc:
                raise UserInputError(f"cannot create the output folder {str(folder)!r}: {exc.strerror}") from exc
            model_path = str(Path(model).resolve())
            task = dask.delayed(predict_file, pure=False)
            tasks = [
                task(
                    str(p), a, model_path, str(sem), str(inst) if inst else None, device, tile,
                    str(measurements_path(sem)) if measurements else None,
                    min_size,
                    dask_key_name=f"napari-unet-predict-{i}",
                )
                for i, (p, a, (sem, inst)) in enumerate(zip(plan.files, plan.axes, plan.outputs))
            ]
            threads = None
            if client is None:
                auto_workers, threads = default_workers(len(tasks), device)
                if workers is not None:
                    threads = max(1, (os.cpu_count() or 1) // workers)
                workers = workers or auto_workers
                where = f"{workers} worker{'s' if workers > 1 else ''} x {threads} thread{'s' if threads > 1 else ''}"
            else:
                where = scheduler
            lock = threading.Lock()
            with tqdm(total=len(files), initial=len(plan.failed), unit="file", file=stream, dynamic_ncols=True, desc=f"predicting on {where}") as bar:

                def done() -> None:
                    with lock:
                        bar.update(1)

                with _torch_threads(threads):
                    for r in run_tasks(tasks, client, workers, done):
                        results[r.path] = r
    return [results[p] for p in files if p in results]
