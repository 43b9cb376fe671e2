"""The ``napari-unet`` command line: train, predict and a self-contained demo.

Contract (scripts outside the project call it)::

    napari-unet train IMAGE.tif ANNOTATIONS.tif [IMAGE ANNOTATIONS ...] -o MODEL
                      [--axes AXES] [--3d] [--max-time SECONDS | --steps N]
                      [--resume MODEL] [--device auto|cpu|cuda|mps] [--seed N]
    napari-unet predict IMAGE.tif -m MODEL -o LABELS.tif|.zarr [--instances INSTANCES.tif]
                        [--probabilities PROBS.tif] [--axes AXES] [--tile N]
    napari-unet predict INPUT [INPUT ...] -m MODEL -o FOLDER [--instances]
                        [--format tif|zarr] [--axes AXES] [--tile N]
                        [--workers N | --scheduler ADDRESS] [--measurements [OBJECTS.csv]]
    napari-unet export MODEL -o PACKAGE.zip [--sample IMAGE.tif] [--axes AXES] [--name NAME]
                       [--author NAME ...] [--no-test]
    napari-unet demo

``predict --measurements [OBJECTS.csv]`` also writes one row per object.
INPUT is a file, a folder (its TIFFs) or a quoted glob pattern. Several
inputs are predicted in parallel through dask: threads of the local
scheduler, or an existing dask.distributed cluster with ``--scheduler``.

User errors print one line (``napari-unet: error: ...``) and exit with
status 1, without a traceback and without writing anything half-done. In a
batch, each failing file gets its own such line, the other files are still
written, and the exit status is 1.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

from . import __version__
from .core.device import DEVICE_CHOICES
from .core.errors import UserInputError

EXIT_USER_ERROR = 1
AXES_HELP = (
    "axes of the image(s), letters of TZCYX, e.g. YX, ZYX, TYX, YXC, CZYX "
    "(default: the TIFF's metadata, else a guess that is printed)"
)
EXIT_INTERRUPTED = 130
MIN_TILE = 128


def _check_writable(*paths: str | None) -> None:
    """Fail before any work if an output folder does not exist."""
    for p in paths:
        if p is not None and not Path(p).expanduser().resolve().parent.is_dir():
            raise UserInputError(f"cannot write {p!r}: its folder does not exist")


def _train_config(args: argparse.Namespace):
    from .core.training import TrainConfig

    steps = args.steps
    if steps is None and args.max_time is None:
        steps = TrainConfig.steps
    return TrainConfig(steps=steps, max_time=args.max_time, seed=args.seed)


def run_training(segmenter, images, annotations, config, stream=sys.stderr, ndim: int = 2):
    """Train with a terminal progress bar; Ctrl-C stops and keeps the best weights.

    ``ndim`` (2 or 3) is the spatial dimension of a fresh model.

    Returns
    -------
    (TrainProgress or None, bool)
        The last progress report and whether the user interrupted.
    """
    from tqdm import tqdm

    from .core.throttle import throttled

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


def _train_items(args: argparse.Namespace, ndim: int):
    """(Planes, annotations) for each IMAGE ANNOTATIONS pair, images opened lazily."""
    from .batch import image_planes
    from .core.tiff_io import read_labels

    files = args.files
    if len(files) % 2:
        raise UserInputError(
            f"expected IMAGE ANNOTATIONS pairs but got {len(files)} file(s): {files[-1]!r} has no annotations file"
        )
    items = []
    for image_path, ann_path in zip(files[0::2], files[1::2]):
        planes, note = image_planes(image_path, args.axes, ndim)
        if note:
            print(note, file=sys.stderr)
        annotations = read_labels(ann_path)
        if tuple(annotations.shape) != tuple(planes.label_shape):
            raise UserInputError(
                f"annotations {ann_path!r} of shape {tuple(annotations.shape)} do not match the image {image_path!r} "
                f"(axes {planes.axes}, so annotations of shape {tuple(planes.label_shape)})"
            )
        items.append((planes, annotations))
    return items


def cmd_train(args: argparse.Namespace) -> int:
    """``napari-unet train``."""
    from .core.segmenter import Segmenter, model_ndim
    from .core.stack import training_data

    _check_writable(args.output)
    config = _train_config(args)
    segmenter = Segmenter.load(args.resume, args.device) if args.resume else Segmenter(device=args.device)
    ndim = 3 if args.three_d else 2
    if args.resume:
        ndim_of_model = model_ndim(segmenter.config)
        if args.three_d and ndim_of_model != 3:
            raise UserInputError(f"--3d: the model {args.resume!r} is a 2D model; train a new 3D model instead")
        ndim = ndim_of_model
    images, annotations = training_data(_train_items(args, ndim))
    last, interrupted = run_training(segmenter, images, annotations, config, ndim=ndim)
    if segmenter.model is None or last is None:
        raise UserInputError("training was stopped before the first step; no model written")
    segmenter.save(args.output)
    best = f", best at step {last.best_step}" if last.best_step else ""
    val = f", validation IoU {last.val_iou:.3f}" if last.val_iou is not None else ""
    what = f" on {len(images)} {'volume' if ndim == 3 else 'plane'}{'s' if len(images) != 1 else ''}" if len(images) > 1 or len(args.files) > 2 else ""
    print(f"{'interrupted: ' if interrupted else ''}trained {last.step} steps{what} in {last.elapsed:.1f} s on {segmenter.device_label}{best}{val}; model written to {args.output}")
    return EXIT_INTERRUPTED if interrupted else 0


OUTPUT_SUFFIXES = (".tif", ".tiff", ".zarr")


def _single_output(args: argparse.Namespace) -> bool:
    """True for today's form: one input file and ``-o`` naming a file, not a folder."""
    if len(args.inputs) != 1 or not Path(args.inputs[0]).expanduser().is_file():
        return False
    out = Path(args.output).expanduser()
    return not out.is_dir() and out.suffix.lower() in OUTPUT_SUFFIXES


def _predict_one(args: argparse.Namespace) -> int:
    """One file into the named outputs (the form of napari-unet 0.1)."""
    from tqdm import tqdm

    from .batch import image_planes, load_segmenter, predict_planes
    from .core.segmenter import model_ndim

    if args.scheduler or args.workers is not None:
        raise UserInputError("--scheduler and --workers spread several files; for one file give an output folder (-o FOLDER)")
    instances = args.instances if isinstance(args.instances, str) else None
    if args.instances is True:
        out = Path(args.output)
        instances = str(out.with_name(f"{out.stem}_instances{out.suffix}"))
    measurements = _measurements_file(args)
    _check_writable(args.output, instances, args.probabilities, measurements)
    fmt = Path(args.output).suffix.lower().lstrip(".").replace("tiff", "tif")
    if args.format and args.format != fmt:
        raise UserInputError(f"--format {args.format} does not match the output {args.output!r}")
    image = str(Path(args.inputs[0]).expanduser())
    segmenter = load_segmenter(args.model, args.device)
    planes, note = image_planes(image, args.axes, model_ndim(segmenter.config), channels=segmenter.config.in_channels)
    if note:
        print(note, file=sys.stderr)
    for out in (args.output, instances, args.probabilities, measurements):
        if out is not None and Path(out).expanduser().resolve() == Path(image).resolve():
            raise UserInputError(f"the output {out!r} would overwrite the input image")
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
    from .batch import expand_inputs, predict_batch

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
    if Path(args.output).suffix.lower() in OUTPUT_SUFFIXES and not Path(args.output).is_dir():
        raise UserInputError(f"with several inputs -o must be a folder, not {args.output!r}")
    if args.workers is not None and args.scheduler:
        raise UserInputError("--workers sets the local scheduler's threads; size the dask cluster instead when using --scheduler")
    files = expand_inputs(args.inputs)
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
    if _single_output(args):
        return _predict_one(args)
    return _predict_many(args)


def cmd_demo(args: argparse.Namespace) -> int:
    """``napari-unet demo``: the whole loop on the bundled sample, scored against its ground truth."""
    from .demo import run_demo

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
    from .batch import image_planes, load_segmenter
    from .core.bioimage_io import export_model, sample_from_planes
    from .core.segmenter import model_ndim

    _check_writable(args.output)
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
    parser = argparse.ArgumentParser(prog="napari-unet", description="Train a U-Net from painted strokes and segment images.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser(
        "train",
        help="train (or fine-tune) a model from images and their painted annotations",
        description="Train one model from one or more IMAGE ANNOTATIONS pairs. Images may be N-D TIFFs "
        "((T)(Z)(C)YX); annotations have the image's shape without its channel axis, "
        "0 unlabeled, 1 background, 2.. classes, painted on any planes.",
    )
    train.add_argument("files", nargs="+", metavar="IMAGE ANNOTATIONS", help="image TIFF then its annotations TIFF; repeat for more images")
    train.add_argument("-o", "--output", required=True, metavar="MODEL", help="model file to write")
    train.add_argument("--axes", metavar="AXES", help=AXES_HELP)
    train.add_argument("--3d", dest="three_d", action="store_true", help="train a 3D U-Net on ZYX volumes (default: a 2D model applied plane by plane)")
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
        "lazily and predicted plane by plane, so memory stays bounded.",
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

    demo = sub.add_parser("demo", help="run the whole loop on the bundled sample and report its accuracy")
    demo.add_argument("--output", default="napari-unet-demo", help="folder for the demo's TIFFs and model (default: ./napari-unet-demo)")
    demo_budget = demo.add_mutually_exclusive_group()
    demo_budget.add_argument("--steps", type=int, help="training steps")
    demo_budget.add_argument("--max-time", type=float, help="training time budget in seconds")
    demo.add_argument("--device", choices=DEVICE_CHOICES, default="auto")
    demo.add_argument("--seed", type=int, default=0)
    demo.set_defaults(func=cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``napari-unet`` console script; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except UserInputError as exc:
        print(f"napari-unet: error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("napari-unet: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
