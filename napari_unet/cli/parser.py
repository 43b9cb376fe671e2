"""The argument parser of ``napari-unet``: every command, option and help text in one place.

Each subcommand's ``func`` is looked up in its module (``train.cmd_train``,
...) when the parser is built, so a command can be replaced in tests.
"""

from __future__ import annotations

import argparse

from napari_unet import __version__
from napari_unet.cli import demo, evaluate, export, predict, train
from napari_unet.core.device import DEVICE_CHOICES

AXES_HELP = (
    "axes of the image(s), letters of TZCYX, e.g. YX, ZYX, TYX, YXC, CZYX "
    "(default: the TIFF's metadata, else a guess that is printed)"
)


def _add_measurements_option(predict_parser: argparse.ArgumentParser) -> None:
    """``predict --measurements [OBJECTS.csv]``: per-object measurements."""
    predict_parser.add_argument(
        "--measurements", nargs="?", const=True, metavar="OBJECTS.csv",
        help="also write one row per object (label, class, area, centroid, bounding box, mean intensity, mean "
        "probability) as CSV: a file name for one input (default <output>_objects.csv), no value for a folder",
    )


def _add_export_parser(sub) -> None:
    """``export``: to bioimage.io."""
    export_parser = sub.add_parser(
        "export",
        help="write a model as a bioimage.io model package (for Fiji/deepImageJ, ilastik, QuPath, bioimageio.core)",
        description="Write MODEL as a bioimage.io model package (.zip): TorchScript weights and the PyTorch state "
        "dict, percentile normalisation as pre-processing, softmax probabilities out, a test image and its "
        "expected output, a cover image, the classes and the training history. Needs "
        "pip install 'napari-stroke-unet[bioimageio]'.",
    )
    export_parser.add_argument("model", metavar="MODEL", help="model file from 'napari-unet train' or the widget")
    export_parser.add_argument("-o", "--output", required=True, metavar="PACKAGE.zip", help="package to write")
    export_parser.add_argument(
        "--sample", metavar="IMAGE",
        help="TIFF whose first plane (or volume) gives the test input and the cover (default: a synthetic image)",
    )
    export_parser.add_argument("--axes", metavar="AXES", help=f"axes of --sample; {AXES_HELP}")
    export_parser.add_argument("--name", help="model name in the package (default: the model file's name)")
    export_parser.add_argument("--author", action="append", metavar="NAME", help="an author (repeat for several; default: the user name)")
    export_parser.add_argument("--no-test", dest="test", action="store_false", help="skip checking the package with bioimageio.core")
    export_parser.set_defaults(func=export.cmd_export)


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

    train_parser = sub.add_parser(
        "train",
        help="train (or fine-tune) a model from images and their painted annotations",
        description="Train one model from one or more IMAGE ANNOTATIONS pairs. Images may be N-D TIFFs "
        "((T)(Z)(C)YX); annotations have the image's shape without its channel axis, "
        "0 unlabeled, 1 background, 2.. classes (up to 256), painted on any planes. Ctrl-C or SIGTERM stops "
        "training and still writes the best model so far.",
        parents=[common],
    )
    train_parser.add_argument("files", nargs="+", metavar="IMAGE ANNOTATIONS", help="image TIFF then its annotations TIFF; repeat for more images")
    train_parser.add_argument("-o", "--output", required=True, metavar="MODEL", help="model file to write")
    train_parser.add_argument("--axes", metavar="AXES", help=AXES_HELP)
    dims = train_parser.add_mutually_exclusive_group()
    dims.add_argument("--3d", dest="three_d", action="store_true", help="train a 3D U-Net on ZYX volumes (the default for Z stacks)")
    dims.add_argument("--2d", dest="two_d", action="store_true", help="train a 2D U-Net, applied plane by plane to stacks (the default for other images)")
    train_parser.add_argument(
        "--whole-objects",
        action="store_true",
        help="objects were painted whole, up to their outline: take the pixels right around them as background (see README)",
    )
    budget = train_parser.add_mutually_exclusive_group()
    budget.add_argument("--max-time", type=float, metavar="SECONDS", help="training time budget")
    budget.add_argument("--steps", type=int, metavar="N", help="training steps (default 200)")
    train_parser.add_argument("--resume", metavar="MODEL", help="fine-tune this model instead of starting fresh")
    train_parser.add_argument("--device", choices=DEVICE_CHOICES, default="auto", help="auto: CUDA, then Apple MPS, then CPU")
    train_parser.add_argument("--seed", type=int, help="make the run repeatable (on the CPU)")
    train_parser.set_defaults(func=train.cmd_train)

    predict_parser = sub.add_parser(
        "predict",
        help="segment images with a trained model",
        description="Segment one image into named outputs, or many (files, folders, glob patterns) into an output "
        "folder as <name>_semantic.tif (and <name>_instances.tif), in parallel through dask. Images are read "
        "lazily and predicted plane by plane, so memory stays bounded. The outputs of one image are written "
        "all together or not at all.",
        parents=[common],
    )
    predict_parser.add_argument("inputs", nargs="+", metavar="INPUT", help="image TIFF, folder of TIFFs or quoted glob pattern ('data/*.tif')")
    predict_parser.add_argument("-m", "--model", required=True, help="model file from 'napari-unet train'")
    predict_parser.add_argument(
        "-o", "--output", required=True, metavar="OUT",
        help="one input: semantic labels file (.tif or .zarr; 0 background, c = class c); several inputs or a folder: output folder",
    )
    predict_parser.add_argument(
        "--instances", nargs="?", const=True, metavar="INSTANCES",
        help="also write instance labels (touching objects split): a file name for one input, no value for a folder",
    )
    predict_parser.add_argument("--probabilities", metavar="PROBS", help="also write class probabilities (float32, classes first; one input only)")
    predict_parser.add_argument(
        "--uncertainty", metavar="UNCERTAINTY", help="also write the per-pixel uncertainty, 1 - (best - second best class probability), raised near unsure pixels (float32 in [0, 1]; one input only)"
    )
    predict_parser.add_argument(
        "--min-size", type=int, metavar="PIXELS",
        help="drop objects smaller than this from the instances (default: 16, or the size a model trained with --whole-objects learned)",
    )
    predict_parser.add_argument("--axes", metavar="AXES", help=AXES_HELP)
    predict_parser.add_argument("--format", choices=("tif", "zarr"), help="output format for a folder (default tif)")
    predict_parser.add_argument("--tile", type=int, metavar="N", help=f"tile side in pixels, at least {predict.MIN_TILE} (default 512, 1024 on GPUs)")
    predict_parser.add_argument("--workers", type=int, metavar="N", help="files predicted at once on this machine (default: 1 per 4 cores)")
    predict_parser.add_argument("--scheduler", metavar="ADDRESS", help="run on an existing dask.distributed cluster (e.g. tcp://host:8786); needs a shared file system")
    predict_parser.add_argument("--device", choices=DEVICE_CHOICES, default="auto", help=argparse.SUPPRESS)
    _add_measurements_option(predict_parser)
    predict_parser.set_defaults(func=predict.cmd_predict)
    _add_export_parser(sub)
    evaluate.add_parser(sub, common)

    demo_parser = sub.add_parser("demo", help="run the whole loop on the bundled sample and report its accuracy", parents=[common])
    demo_parser.add_argument("--output", default="napari-unet-demo", help="folder for the demo's TIFFs and model (default: ./napari-unet-demo)")
    demo_budget = demo_parser.add_mutually_exclusive_group()
    demo_budget.add_argument("--steps", type=int, help="training steps")
    demo_budget.add_argument("--max-time", type=float, help="training time budget in seconds")
    demo_parser.add_argument("--device", choices=DEVICE_CHOICES, default="auto")
    demo_parser.add_argument("--seed", type=int, default=0)
    demo_parser.set_defaults(func=demo.cmd_demo)
    return parser
