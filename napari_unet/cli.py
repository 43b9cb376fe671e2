"""The ``napari-unet`` command line: train, predict and a self-contained demo.

Contract (scripts outside the project call it)::

    napari-unet train IMAGE.tif ANNOTATIONS.tif -o MODEL [--max-time SECONDS | --steps N]
                      [--resume MODEL] [--device auto|cpu|cuda|mps] [--seed N]
    napari-unet predict IMAGE.tif -m MODEL -o LABELS.tif [--instances INSTANCES.tif]
                        [--probabilities PROBS.tif]
    napari-unet demo

User errors print one line (``napari-unet: error: ...``) and exit with
status 1, without a traceback and without writing anything half-done.
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
EXIT_INTERRUPTED = 130


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


def run_training(segmenter, images, annotations, config, stream=sys.stderr):
    """Train with a terminal progress bar; Ctrl-C stops and keeps the best weights.

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
    training = segmenter.train(images, annotations, config)
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


def cmd_train(args: argparse.Namespace) -> int:
    """``napari-unet train``."""
    from .core.segmenter import Segmenter
    from .core.tiff_io import read_image, read_labels

    _check_writable(args.output)
    config = _train_config(args)
    image = read_image(args.image)
    annotations = read_labels(args.annotations)
    segmenter = Segmenter.load(args.resume, args.device) if args.resume else Segmenter(device=args.device)
    last, interrupted = run_training(segmenter, image, annotations, config)
    if segmenter.model is None or last is None:
        raise UserInputError("training was stopped before the first step; no model written")
    segmenter.save(args.output)
    best = f", best at step {last.best_step}" if last.best_step else ""
    val = f", validation IoU {last.val_iou:.3f}" if last.val_iou is not None else ""
    print(f"{'interrupted: ' if interrupted else ''}trained {last.step} steps in {last.elapsed:.1f} s on {segmenter.device_label}{best}{val}; model written to {args.output}")
    return EXIT_INTERRUPTED if interrupted else 0


def cmd_predict(args: argparse.Namespace) -> int:
    """``napari-unet predict``."""
    from tqdm import tqdm

    from .core.inference import TileProgress
    from .core.postprocess import postprocess
    from .core.segmenter import Segmenter
    from .core.tiff_io import read_image, write_labels, write_tiff

    _check_writable(args.output, args.instances, args.probabilities)
    segmenter = Segmenter.load(args.model, args.device)
    image = read_image(args.image)
    probs = None
    with tqdm(unit="tile", file=sys.stderr, dynamic_ncols=True, desc=f"predicting on {segmenter.device_label}") as bar:
        for item in segmenter.iter_predict(image):
            if isinstance(item, TileProgress):
                bar.total = item.total
                bar.n = item.done
                bar.refresh()
            else:
                probs = item
    semantic, instances = postprocess(probs)
    # Everything is computed before the first file is written.
    write_labels(args.output, semantic)
    written = [args.output]
    if args.instances:
        write_labels(args.instances, instances)
        written.append(args.instances)
    if args.probabilities:
        write_tiff(args.probabilities, probs)
        written.append(args.probabilities)
    print(f"{int(instances.max())} objects; wrote {', '.join(written)}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """``napari-unet demo``: the whole loop on the bundled sample, scored against its ground truth."""
    from .demo import run_demo

    return run_demo(args.output, steps=args.steps, max_time=args.max_time, device=args.device, seed=args.seed)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for documentation and tests)."""
    parser = argparse.ArgumentParser(prog="napari-unet", description="Train a U-Net from painted strokes and segment images.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser("train", help="train (or fine-tune) a model from an image and its painted annotations")
    train.add_argument("image", help="2D image TIFF")
    train.add_argument("annotations", help="annotations TIFF of the same shape: 0 unlabeled, 1 background, 2.. classes")
    train.add_argument("-o", "--output", required=True, metavar="MODEL", help="model file to write")
    budget = train.add_mutually_exclusive_group()
    budget.add_argument("--max-time", type=float, metavar="SECONDS", help="training time budget")
    budget.add_argument("--steps", type=int, metavar="N", help="training steps (default 200)")
    train.add_argument("--resume", metavar="MODEL", help="fine-tune this model instead of starting fresh")
    train.add_argument("--device", choices=DEVICE_CHOICES, default="auto", help="auto: CUDA, then Apple MPS, then CPU")
    train.add_argument("--seed", type=int, help="make the run repeatable (on the CPU)")
    train.set_defaults(func=cmd_train)

    predict = sub.add_parser("predict", help="segment an image with a trained model")
    predict.add_argument("image", help="2D image TIFF")
    predict.add_argument("-m", "--model", required=True, help="model file from 'napari-unet train'")
    predict.add_argument("-o", "--output", required=True, metavar="LABELS", help="semantic labels TIFF to write (0 background, c = class c)")
    predict.add_argument("--instances", metavar="INSTANCES", help="also write instance labels (touching objects split)")
    predict.add_argument("--probabilities", metavar="PROBS", help="also write class probabilities (float32, classes first)")
    predict.add_argument("--device", choices=DEVICE_CHOICES, default="auto", help=argparse.SUPPRESS)
    predict.set_defaults(func=cmd_predict)

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
