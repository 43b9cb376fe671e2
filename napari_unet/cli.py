"""The ``napari-unet`` command line: train, predict and a self-contained demo.

Contract (scripts outside the project call it)::

    napari-unet train IMAGE.tif ANNOTATIONS.tif [IMAGE ANNOTATIONS ...] -o MODEL
                      [--axes AXES] [--3d | --2d] [--whole-objects]
                      [--max-time SECONDS | --steps N]
                      [--resume MODEL] [--device auto|cpu|cuda|mps] [--seed N]
    napari-unet predict IMAGE.tif -m MODEL -o LABELS.tif|.zarr [--instances INSTANCES.tif]
                        [--probabilities PROBS.tif] [--axes AXES] [--tile N]
    napari-unet predict INPUT [INPUT ...] -m MODEL -o FOLDER [--instances]
                        [--format tif|zarr] [--axes AXES] [--tile N]
                        [--workers N | --scheduler ADDRESS] [--measurements [OBJECTS.csv]]
    napari-unet export MODEL -o PACKAGE.zip [--sample IMAGE.tif] [--axes AXES] [--name NAME]
                       [--author NAME ...] [--no-test]
    napari-unet demo [--steps N | --max-time SECONDS] [--output FOLDER]

Every command also takes ``--debug`` (the traceback of an error).

``predict --measurements [OBJECTS.csv]`` also writes one row per object.
INPUT is a file, a folder (its TIFFs) or a quoted glob pattern. Several
inputs are predicted in parallel through dask: threads of the local
scheduler, or an existing dask.distributed cluster with ``--scheduler``.

Exit status: 0 done; 1 an error, printed as one line
(``napari-unet: error: ...``) naming the file concerned, without a traceback
(``--debug`` adds it; an unexpected internal error says so); 2 a command
line argparse cannot parse; 130 interrupted by Ctrl-C; 143 stopped by
SIGTERM (a batch scheduler ending the job). ``train`` treats Ctrl-C and
SIGTERM alike: it stops, keeps the best weights so far and still writes the
model. In a batch, each failing file gets its own error line, the other
files are still written, and the exit status is 1.

Nothing is lost: an output that would replace an input of the same command
(or another output) is refused before any work; outputs that cannot be
written (missing or read-only folder, a folder in the way) are found before
training or prediction starts; the outputs of one command are written under
temporary names and moved into place together, or not at all, keeping any
previous outputs (:func:`napari_unet.io.atomic.atomic_group`); a model
that cannot be written after training is saved elsewhere and that place
printed.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import math
import os
import signal
import sys
import tempfile
import threading
import traceback
from pathlib import Path
from typing import Iterator, Sequence

from napari_unet import __version__
from napari_unet.io.atomic import check_target, is_zarr_store
from napari_unet.core.device import DEVICE_CHOICES
from napari_unet.errors import UserInputError

EXIT_USER_ERROR = 1
AXES_HELP = (
    "axes of the image(s), letters of TZCYX, e.g. YX, ZYX, TYX, YXC, CZYX "
    "(default: the TIFF's metadata, else a guess that is printed)"
)
EXIT_INTERRUPTED = 130
#: 128 + SIGTERM, what a shell reports for a job ended by SIGTERM.
EXIT_TERMINATED = 128 + signal.SIGTERM
MIN_TILE = 128


# -- signals -------------------------------------------------------------------------
class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread where Ctrl-C would raise KeyboardInterrupt.

    A KeyboardInterrupt so that everything that stops cleanly on Ctrl-C
    (training keeping its best weights, temporaries being removed) does so
    on SIGTERM too.
    """


class _Signals:
    terminated = False  # set once SIGTERM arrived during the current command


_SIGNALS = _Signals()


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """Turn SIGTERM into :class:`Terminated` for the duration of a command (main thread only)."""
    _SIGNALS.terminated = False

    def handler(signum, frame) -> None:
        if _SIGNALS.terminated:
            return  # a second SIGTERM while the model is being written: let it finish
        _SIGNALS.terminated = True
        raise Terminated()

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _interrupt_status() -> int:
    return EXIT_TERMINATED if _SIGNALS.terminated else EXIT_INTERRUPTED


# -- paths -------------------------------------------------------------------------
def _same_file(a: Path, b: Path) -> bool:
    """The same file, by path or (hard links, bind mounts) by inode."""
    if a.resolve() == b.resolve():
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def refuse_overwrites(outputs: dict[str, str | None], inputs: dict[str, str | None]) -> None:
    """Refuse, before any work, an output that is one of the inputs or another output.

    Parameters
    ----------
    outputs, inputs : dict
        What each path is called in the message (e.g. ``"-o"``,
        ``"the annotations"``) -> the path (None: not given).

    Raises
    ------
    UserInputError
        Naming both paths.
    """
    outs = [(name, Path(p).expanduser()) for name, p in outputs.items() if p]
    ins = [(name, Path(p).expanduser()) for name, p in inputs.items() if p]
    for name, out in outs:
        for in_name, path in ins:
            if _same_file(out, path):
                raise UserInputError(f"{name} {str(out)!r} would overwrite {in_name} {str(path)!r}: choose another output path")
    for (name_a, a), (name_b, b) in itertools.combinations(outs, 2):
        if _same_file(a, b):
            raise UserInputError(f"{name_a} and {name_b} are the same file {str(a)!r}: give each output its own path")


def _check_budget(steps: int | None, max_time: float | None) -> None:
    if steps is not None and steps < 1:
        raise UserInputError(f"--steps must be at least 1, not {steps}")
    if max_time is not None and not (math.isfinite(max_time) and max_time > 0):
        raise UserInputError(f"--max-time must be a positive, finite number of seconds, not {max_time}")


def _train_config(args: argparse.Namespace):
    from napari_unet.core.training import TrainConfig

    _check_budget(args.steps, args.max_time)
    steps = args.steps
    if steps is None and args.max_time is None:
        steps = TrainConfig.steps
    return TrainConfig(steps=steps, max_time=args.max_time, seed=args.seed, whole_objects=args.whole_objects)


def run_training(segmenter, images, annotations, config, stream=sys.stderr, ndim: int = 2):
    """Train with a terminal progress bar; Ctrl-C stops and keeps the best weights.

    ``ndim`` (2 or 3) is the spatial dimension of a fresh model.

    Returns
    -------
    (TrainProgress or None, bool)
        The last progress report and whether the user interrupted.
    """
    from tqdm import tqdm

    from napari_unet.core.progress import throttled

    total = config.steps if config.steps is not None else int(round(config.max_time))
    unit = "step" if config.steps is not None else "s"
    last = None
    interrupted = False
    training = segmenter.train(images, annotations, config, ndim=ndim)
    with tqdm(total=total, unit=unit, file=stream, dynamic_ncols=True, desc=f"training on {segmenter.device_label}") as bar:
        try:
            for last in throttled(training, 0.2, is_final=lambda p: p.done):
                bar.n = last.step if config.steps is not None else min(total, round(last.elapsed))
                post = {"loss": f"{last.loss:.4f}"}
                if last.val_loss is not None:
                    post.update(val_loss=f"{last.val_loss:.4f}", val_iou=f"{last.val_iou:.3f}")
                bar.set_postfix(post, refresh=False)
                bar.refresh()
        except KeyboardInterrupt:
            interrupted = True
        finally:
            training.close()  # restores the best weights if training was cut short
    return last, interrupted


def _train_pairs(args: argparse.Namespace) -> list[tuple[str, str]]:
    """The IMAGE ANNOTATIONS pairs, checked against ``-o`` before anything is read."""
    files = args.files
    if len(files) % 2:
        raise UserInputError(
            f"expected IMAGE ANNOTATIONS pairs but got {len(files)} file(s): {files[-1]!r} has no annotations file"
        )
    pairs = list(zip(files[0::2], files[1::2]))
    inputs: dict[str, str | None] = {}
    for n, (image, ann) in enumerate(pairs, start=1):
        inputs[f"the image{f' {n}' if len(pairs) > 1 else ''}"] = image
        inputs[f"the annotations{f' {n}' if len(pairs) > 1 else ''}"] = ann
    # -o may be the --resume model: it has been read whole before the new one replaces it.
    refuse_overwrites({"-o": args.output}, inputs)
    check_target(Path(args.output).expanduser())
    return pairs


def _model_ndim_for(args: argparse.Namespace, pairs: list[tuple[str, str]]) -> tuple[int, str | None]:
    """2 or 3 for a fresh model: ``--3d``/``--2d``, else 3 when every image is a Z stack.

    A 3D U-Net (with 3D filter features for its forest) sees an object
    across planes; on the accuracy suite's stacks it beat a 2D model
    applied plane by plane (README, "3D U-Net"), so Z stacks get one
    unless ``--2d`` says otherwise. Returns a note saying so when the axes
    chose it, printed once the inputs have been checked.
    """
    from napari_unet.batch import open_image, resolve_axes

    if args.three_d:
        return 3, None
    if args.two_d:
        return 2, None
    stacks = [("Z" in resolve_axes(image, tuple(open_image(image).shape), args.axes)[0]) for image, _ in pairs]
    if stacks and all(stacks):
        return 3, "Z stack: training a 3D U-Net (--2d for a 2D one applied plane by plane)"
    return 2, None


def _train_items(args: argparse.Namespace, ndim: int, pairs: list[tuple[str, str]]):
    """(Planes, annotations) for each IMAGE ANNOTATIONS pair, images opened lazily."""
    from napari_unet.batch import image_planes
    from napari_unet.core.limits import check_annotation_values
    from napari_unet.io.tiff import read_labels

    items = []
    for image_path, ann_path in pairs:
        planes, note = image_planes(image_path, args.axes, ndim)
        if note:
            print(note, file=sys.stderr)
        annotations = read_labels(ann_path)
        check_annotation_values(annotations, f"the annotations {ann_path!r}")
        if tuple(annotations.shape) != tuple(planes.label_shape):
            raise UserInputError(
                f"annotations {ann_path!r} of shape {tuple(annotations.shape)} do not match the image {image_path!r} "
                f"(axes {planes.axes}, so annotations of shape {tuple(planes.label_shape)})"
            )
        items.append((planes, annotations))
    return items


def cmd_train(args: argparse.Namespace) -> int:
    """``napari-unet train``."""
    from napari_unet.core.segmenter import Segmenter, model_ndim
    from napari_unet.core.stack import training_data

    config = _train_config(args)
    pairs = _train_pairs(args)
    segmenter = Segmenter.load(args.resume, args.device) if args.resume else Segmenter(device=args.device)
    dims_note = None
    if args.resume:
        ndim = model_ndim(segmenter.config)
        if args.three_d and ndim != 3:
            raise UserInputError(f"--3d: the model {args.resume!r} is a 2D model; train a new 3D model instead")
        if args.two_d and ndim != 2:
            raise UserInputError(f"--2d: the model {args.resume!r} is a 3D model; train a new 2D model instead")
    else:
        ndim, dims_note = _model_ndim_for(args, pairs)
    images, annotations = training_data(_train_items(args, ndim, pairs), names=[image for image, _ in pairs])
    if dims_note:
        print(dims_note, file=sys.stderr)
    last, interrupted = run_training(segmenter, images, annotations, config, ndim=ndim)
    if segmenter.model is None or last is None:
        print("napari-unet: interrupted before the first training step; no model written", file=sys.stderr)
        return _interrupt_status()
    save_or_rescue(segmenter, args.output)
    best = f", best at step {last.best_step}" if last.best_step else ""
    val = f", validation IoU {last.val_iou:.3f}" if last.val_iou is not None else ""
    what = f" on {len(images)} {'volume' if ndim == 3 else 'plane'}{'s' if len(images) != 1 else ''}" if len(images) > 1 or len(args.files) > 2 else ""
    print(f"{'interrupted: ' if interrupted else ''}trained {last.step} steps{what} in {last.elapsed:.1f} s on {segmenter.device_label}{best}{val}; model written to {args.output}")
    return _interrupt_status() if interrupted else 0


def _rescue_folders(output: Path) -> list[Path]:
    folders = [Path.cwd(), Path(tempfile.gettempdir()), Path.home()]
    unique = dict.fromkeys(f.resolve() for f in folders if f.resolve() != output.parent.resolve())
    return list(unique)


def save_or_rescue(segmenter, output: str) -> None:
    """Write the trained model to ``output``; if that fails, save it elsewhere rather than lose it.

    Raises
    ------
    UserInputError
        When ``output`` could not be written: one line saying why and where
        the model was saved instead (the current folder, else the temporary
        folder, else the home folder), or that it could be saved nowhere.
    """
    try:
        segmenter.save(Path(output).expanduser())
        return
    except (UserInputError, OSError) as exc:
        error = exc
    reason = str(error) if isinstance(error, UserInputError) else f"cannot write {output!r}: {error.strerror or error}"
    name = f"napari-unet-rescued-{os.getpid()}-{Path(output).name or 'model.pt'}"
    for folder in _rescue_folders(Path(output).expanduser()):
        try:
            segmenter.save(folder / name)
        except (UserInputError, OSError):
            continue
        raise UserInputError(f"{reason}; the trained model was saved to {str(folder / name)!r} instead") from error
    raise UserInputError(f"{reason}; the trained model could not be saved anywhere else either") from error


OUTPUT_SUFFIXES = (".tif", ".tiff", ".zarr")


def _output_is_folder(args: argparse.Namespace) -> bool:
    """Whether ``-o`` is an output folder (else one named output file or zarr store).

    An existing folder that is not a zarr store is a folder; a name ending
    in .tif, .tiff or .zarr is a named output (an existing zarr store is
    replaced, never written into); another suffix is refused rather than
    silently made a folder.
    """
    out = Path(args.output).expanduser()
    if out.is_dir() and not is_zarr_store(out):
        return True
    suffix = out.suffix.lower()
    if suffix in OUTPUT_SUFFIXES:
        return False
    if suffix:
        raise UserInputError(
            f"cannot write {args.output!r}: {suffix} is not an output type (use .tif, .tiff or .zarr; "
            "for an output folder of that name create it first)"
        )
    return True


def _named_outputs(args: argparse.Namespace, image: str) -> tuple[str | None, str | None]:
    """``--instances`` and ``--measurements`` of a one-file prediction, checked with ``-o`` and ``--probabilities`` before any work."""
    instances = args.instances if isinstance(args.instances, str) else None
    if args.instances is True:
        out = Path(args.output)
        instances = str(out.with_name(f"{out.stem}_instances{out.suffix}"))
    for option, path in (("--instances", instances), ("--probabilities", args.probabilities)):
        if path is not None and Path(path).suffix.lower() not in OUTPUT_SUFFIXES:
            raise UserInputError(f"cannot write {option} {path!r}: use a name ending in .tif, .tiff or .zarr")
    measurements = _measurements_file(args)
    refuse_overwrites(
        {"-o": args.output, "--instances": instances, "--probabilities": args.probabilities, "--measurements": measurements},
        {"the input image": image, "the model": args.model},
    )
    for path in (args.output, instances, args.probabilities, measurements):
        if path is not None:
            target = Path(path).expanduser()
            check_target(target, folder_output=target.suffix.lower() == ".zarr")
    return instances, measurements


def _predict_one(args: argparse.Namespace) -> int:
    """One file into the named outputs (the form of napari-unet 0.1)."""
    from tqdm import tqdm

    from napari_unet.batch import image_planes, load_segmenter, predict_planes
    from napari_unet.core.segmenter import model_ndim

    if args.scheduler or args.workers is not None:
        raise UserInputError("--scheduler and --workers spread several files; for one file give an output folder (-o FOLDER)")
    fmt = Path(args.output).suffix.lower().lstrip(".").replace("tiff", "tif")
    if args.format and args.format != fmt:
        raise UserInputError(f"--format {args.format} does not match the output {args.output!r}")
    image = str(Path(args.inputs[0]).expanduser())
    instances, measurements = _named_outputs(args, image)
    segmenter = load_segmenter(args.model, args.device)
    planes, note = image_planes(image, args.axes, model_ndim(segmenter.config), channels=segmenter.config.in_channels)
    if note:
        print(note, file=sys.stderr)
    n = len(planes)
    unit = "volume" if model_ndim(segmenter.config) == 3 else "plane"
    with tqdm(total=n, unit=unit, file=sys.stderr, dynamic_ncols=True, desc=f"predicting on {segmenter.device_label}") as bar:

        def progress(p) -> None:
            if n == 1 and p.tile is not None:
                # A single plane: count its tiles, as napari-unet 0.1 did.
                bar.unit, bar.total, bar.n = "tile", p.tile.total, p.tile.done
            else:
                bar.n = round(p.fraction * n, 2)
            bar.refresh()

        written, objects = predict_planes(
            segmenter,
            planes,
            Path(args.output).expanduser(),
            Path(instances).expanduser() if instances else None,
            Path(args.probabilities).expanduser() if args.probabilities else None,
            tile=args.tile,
            progress=progress,
            measurements_path=Path(measurements).expanduser() if measurements else None,
        )
    shape = "x".join(str(s) for s in planes.label_shape)
    print(f"{objects} objects in {shape} ({planes.axes}); wrote {', '.join(str(w) for w in written)}")
    return 0


def _predict_many(args: argparse.Namespace) -> int:
    """Several files, folders or globs into an output folder, in parallel through dask."""
    from napari_unet.batch import expand_inputs, predict_batch

    if isinstance(args.instances, str):
        raise UserInputError(
            f"--instances takes no file name when predicting into a folder (each input gets <name>_instances); "
            f"put it after the inputs so {args.instances!r} is read as an input"
        )
    if args.probabilities:
        raise UserInputError("--probabilities is only available when predicting one file into a named output")
    if isinstance(args.measurements, str):
        raise UserInputError(
            f"--measurements takes no file name when predicting into a folder (each input gets <name>_objects.csv); "
            f"put it after the inputs so {args.measurements!r} is read as an input"
        )
    if args.workers is not None and args.scheduler:
        raise UserInputError("--workers sets the local scheduler's threads; size the dask cluster instead when using --scheduler")
    files = expand_inputs(args.inputs)
    folder = Path(args.output).expanduser()
    if any(_same_file(folder, p) for p in [*files, Path(args.model).expanduser()]):
        raise UserInputError(f"-o {args.output!r} is one of the inputs; give an output folder")
    check_target(folder / ".napari-unet-probe" if folder.is_dir() else folder, folder_output=True)
    results = predict_batch(
        files,
        args.model,
        Path(args.output).expanduser(),
        fmt=args.format or "tif",
        instances=bool(args.instances),
        axes=args.axes,
        device=args.device,
        tile=args.tile,
        scheduler=args.scheduler,
        workers=args.workers,
        measurements=bool(args.measurements),
    )
    failed = [r for r in results if not r.ok]
    for r in failed:
        # Messages about a file may already start with its name.
        message = r.error[len(r.path.name) + 2 :] if r.error.startswith(f"{r.path.name}: ") else r.error
        print(f"napari-unet: error: {r.path.name}: {message}", file=sys.stderr)
    objects = sum(r.objects or 0 for r in results if r.ok)
    print(f"predicted {len(results) - len(failed)} of {len(results)} file(s) into {args.output} ({objects} objects)")
    return EXIT_USER_ERROR if failed else 0


def cmd_predict(args: argparse.Namespace) -> int:
    """``napari-unet predict``."""
    if args.workers is not None and args.workers < 1:
        raise UserInputError("--workers must be at least 1")
    if args.tile is not None and args.tile < MIN_TILE:
        # Tiles overlap by 64 pixels; smaller tiles would be all overlap.
        raise UserInputError(f"--tile must be at least {MIN_TILE} pixels")
    from napari_unet.batch import expand_inputs

    expand_inputs(args.inputs)  # a missing input is said first, whatever -o is
    if _output_is_folder(args):
        return _predict_many(args)
    if len(args.inputs) != 1 or not Path(args.inputs[0]).expanduser().is_file():
        raise UserInputError(f"with several inputs (or a folder or pattern as input) -o must be a folder, not {args.output!r}")
    return _predict_one(args)


def cmd_demo(args: argparse.Namespace) -> int:
    """``napari-unet demo``: the whole loop on the bundled sample, scored against its ground truth."""
    from napari_unet.demo import run_demo

    _check_budget(args.steps, args.max_time)
    return run_demo(args.output, steps=args.steps, max_time=args.max_time, device=args.device, seed=args.seed)


# -- per-object measurements (predict --measurements) ---------------------------
def _add_measurements_option(predict: argparse.ArgumentParser) -> None:
    predict.add_argument(
        "--measurements", nargs="?", const=True, metavar="OBJECTS.csv",
        help="also write one row per object (label, class, area, centroid, bounding box, mean intensity, mean "
        "probability) as CSV: a file name for one input (default <output>_objects.csv), no value for a folder",
    )


def _measurements_file(args: argparse.Namespace) -> str | None:
    """The CSV that ``--measurements`` names for one input (``<output stem>_objects.csv`` without a name)."""
    if args.measurements is True:
        out = Path(args.output)
        return str(out.with_name(f"{out.stem}_objects.csv"))
    return args.measurements or None


# -- export to bioimage.io --------------------------------------------------------
def _add_export_parser(sub) -> None:
    export = sub.add_parser(
        "export",
        help="write a model as a bioimage.io model package (for Fiji/deepImageJ, ilastik, QuPath, bioimageio.core)",
        description="Write MODEL as a bioimage.io model package (.zip): TorchScript weights and the PyTorch state "
        "dict, percentile normalisation as pre-processing, softmax probabilities out, a test image and its "
        "expected output, a cover image, the classes and the training history. Needs "
        "pip install 'napari-stroke-unet[bioimageio]'.",
    )
    export.add_argument("model", metavar="MODEL", help="model file from 'napari-unet train' or the widget")
    export.add_argument("-o", "--output", required=True, metavar="PACKAGE.zip", help="package to write")
    export.add_argument(
        "--sample", metavar="IMAGE",
        help="TIFF whose first plane (or volume) gives the test input and the cover (default: a synthetic image)",
    )
    export.add_argument("--axes", metavar="AXES", help=f"axes of --sample; {AXES_HELP}")
    export.add_argument("--name", help="model name in the package (default: the model file's name)")
    export.add_argument("--author", action="append", metavar="NAME", help="an author (repeat for several; default: the user name)")
    export.add_argument("--no-test", dest="test", action="store_false", help="skip checking the package with bioimageio.core")
    export.set_defaults(func=cmd_export)


def cmd_export(args: argparse.Namespace) -> int:
    """``napari-unet export``: a bioimage.io model package."""
    from napari_unet.batch import image_planes, load_segmenter
    from napari_unet.bioimage_io import export_model, sample_from_planes
    from napari_unet.core.segmenter import model_ndim

    check_target(Path(args.output).expanduser())
    segmenter = load_segmenter(args.model, "cpu")
    sample = None
    if args.sample:
        planes, note = image_planes(args.sample, args.axes, model_ndim(segmenter.config), channels=segmenter.config.in_channels)
        if note:
            print(note, file=sys.stderr)
        sample = sample_from_planes(planes)
    name = args.name or Path(args.model).stem
    written = export_model(segmenter, args.output, sample=sample, name=name, authors=args.author, test=args.test)
    checked = "checked with bioimageio.core" if args.test else "not checked (--no-test)"
    print(f"wrote the bioimage.io model package {written} ({checked})")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for documentation and tests)."""
    # --debug is accepted before or after the command (default SUPPRESS: a
    # subcommand's unset flag must not hide one given before it).
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show the traceback of an error")
    parser = argparse.ArgumentParser(
        prog="napari-unet",
        description="Train a U-Net from painted strokes and segment images.",
        epilog="Exit status: 0 done, 1 error (one line; --debug for the traceback), 2 bad command line, "
        "130 Ctrl-C, 143 SIGTERM (train writes the best model so far on both).",
        parents=[common],
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser(
        "train",
        help="train (or fine-tune) a model from images and their painted annotations",
        description="Train one model from one or more IMAGE ANNOTATIONS pairs. Images may be N-D TIFFs "
        "((T)(Z)(C)YX); annotations have the image's shape without its channel axis, "
        "0 unlabeled, 1 background, 2.. classes (up to 256), painted on any planes. Ctrl-C or SIGTERM stops "
        "training and still writes the best model so far.",
        parents=[common],
    )
    train.add_argument("files", nargs="+", metavar="IMAGE ANNOTATIONS", help="image TIFF then its annotations TIFF; repeat for more images")
    train.add_argument("-o", "--output", required=True, metavar="MODEL", help="model file to write")
    train.add_argument("--axes", metavar="AXES", help=AXES_HELP)
    dims = train.add_mutually_exclusive_group()
    dims.add_argument("--3d", dest="three_d", action="store_true", help="train a 3D U-Net on ZYX volumes (the default for Z stacks)")
    dims.add_argument("--2d", dest="two_d", action="store_true", help="train a 2D U-Net, applied plane by plane to stacks (the default for other images)")
    train.add_argument(
        "--whole-objects",
        action="store_true",
        help="objects were painted whole, up to their outline: take the pixels right around them as background (see README)",
    )
    budget = train.add_mutually_exclusive_group()
    budget.add_argument("--max-time", type=float, metavar="SECONDS", help="training time budget")
    budget.add_argument("--steps", type=int, metavar="N", help="training steps (default 200)")
    train.add_argument("--resume", metavar="MODEL", help="fine-tune this model instead of starting fresh")
    train.add_argument("--device", choices=DEVICE_CHOICES, default="auto", help="auto: CUDA, then Apple MPS, then CPU")
    train.add_argument("--seed", type=int, help="make the run repeatable (on the CPU)")
    train.set_defaults(func=cmd_train)

    predict = sub.add_parser(
        "predict",
        help="segment images with a trained model",
        description="Segment one image into named outputs, or many (files, folders, glob patterns) into an output "
        "folder as <name>_semantic.tif (and <name>_instances.tif), in parallel through dask. Images are read "
        "lazily and predicted plane by plane, so memory stays bounded. The outputs of one image are written "
        "all together or not at all.",
        parents=[common],
    )
    predict.add_argument("inputs", nargs="+", metavar="INPUT", help="image TIFF, folder of TIFFs or quoted glob pattern ('data/*.tif')")
    predict.add_argument("-m", "--model", required=True, help="model file from 'napari-unet train'")
    predict.add_argument(
        "-o", "--output", required=True, metavar="OUT",
        help="one input: semantic labels file (.tif or .zarr; 0 background, c = class c); several inputs or a folder: output folder",
    )
    predict.add_argument(
        "--instances", nargs="?", const=True, metavar="INSTANCES",
        help="also write instance labels (touching objects split): a file name for one input, no value for a folder",
    )
    predict.add_argument("--probabilities", metavar="PROBS", help="also write class probabilities (float32, classes first; one input only)")
    predict.add_argument("--axes", metavar="AXES", help=AXES_HELP)
    predict.add_argument("--format", choices=("tif", "zarr"), help="output format for a folder (default tif)")
    predict.add_argument("--tile", type=int, metavar="N", help=f"tile side in pixels, at least {MIN_TILE} (default 512, 1024 on GPUs)")
    predict.add_argument("--workers", type=int, metavar="N", help="files predicted at once on this machine (default: 1 per 4 cores)")
    predict.add_argument("--scheduler", metavar="ADDRESS", help="run on an existing dask.distributed cluster (e.g. tcp://host:8786); needs a shared file system")
    predict.add_argument("--device", choices=DEVICE_CHOICES, default="auto", help=argparse.SUPPRESS)
    _add_measurements_option(predict)
    predict.set_defaults(func=cmd_predict)
    _add_export_parser(sub)

    demo = sub.add_parser("demo", help="run the whole loop on the bundled sample and report its accuracy", parents=[common])
    demo.add_argument("--output", default="napari-unet-demo", help="folder for the demo's TIFFs and model (default: ./napari-unet-demo)")
    demo_budget = demo.add_mutually_exclusive_group()
    demo_budget.add_argument("--steps", type=int, help="training steps")
    demo_budget.add_argument("--max-time", type=float, help="training time budget in seconds")
    demo.add_argument("--device", choices=DEVICE_CHOICES, default="auto")
    demo.add_argument("--seed", type=int, default=0)
    demo.set_defaults(func=cmd_demo)
    return parser


def _os_error_line(exc: OSError) -> str:
    """An OSError as the user should read it: the file, then what went wrong."""
    reason = exc.strerror or str(exc) or type(exc).__name__
    return f"{exc.filename!r}: {reason}" if exc.filename else reason


def _fail(line: str, debug: bool) -> int:
    if debug:
        traceback.print_exc()
    print(f"napari-unet: error: {line}", file=sys.stderr)
    return EXIT_USER_ERROR


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``napari-unet`` console script; returns the exit status.

    Every failure ends here as one line on stderr (``--debug`` adds the
    traceback) and exit status 1; Ctrl-C gives 130 and SIGTERM 143.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    debug = getattr(args, "debug", False)
    try:
        with _sigterm_as_interrupt():
            return args.func(args)
    except KeyboardInterrupt:
        status = _interrupt_status()
        print(f"napari-unet: {'terminated (SIGTERM)' if status == EXIT_TERMINATED else 'interrupted'}", file=sys.stderr)
        return status
    except UserInputError as exc:
        return _fail(str(exc), debug)
    except MemoryError:
        return _fail("out of memory (try a smaller --tile, or fewer --workers)", debug)
    except OSError as exc:
        return _fail(_os_error_line(exc), debug)
    except Exception as exc:  # a bug: still one line, the traceback on request
        first = str(exc).splitlines()[0] if str(exc) else ""
        hint = "" if debug else " (run with --debug for the traceback)"
        return _fail(f"unexpected {type(exc).__name__}{': ' + first if first else ''}{hint}", debug)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
