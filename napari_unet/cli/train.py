"""``napari-unet train``: one model from IMAGE ANNOTATIONS pairs, written even when stopped.

Ctrl-C and SIGTERM stop training and keep the best weights so far
(:func:`run_training`); a model that cannot be written where asked is saved
elsewhere rather than lost (:func:`save_or_rescue`). Images are read
through :mod:`napari_unet.io.inputs`, as ``predict`` reads them.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

from napari_unet.cli.guards import check_budget, refuse_overwrites
from napari_unet.cli.status import interrupt_status
from napari_unet.errors import UserInputError
from napari_unet.io.atomic import check_target


def _train_config(args: argparse.Namespace):
    from napari_unet.core.training import TrainConfig

    check_budget(args.steps, args.max_time)
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
    from napari_unet.io.inputs import open_image, resolve_axes

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
    from napari_unet.core.limits import check_annotation_values
    from napari_unet.io.inputs import image_planes
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
    """``napari-unet train``: train (or fine-tune with ``--resume``) and write the model.

    Returns
    -------
    int
        0, or 130/143 when Ctrl-C/SIGTERM stopped training (the best model
        so far is still written).
    """
    from napari_unet.core.implied import whole_objects_hint
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
    hint = None if config.whole_objects else whole_objects_hint(annotations, "--whole-objects")
    if hint:
        print(f"note: {hint}", file=sys.stderr)
    last, interrupted = run_training(segmenter, images, annotations, config, ndim=ndim)
    if segmenter.model is None or last is None:
        print("napari-unet: interrupted before the first training step; no model written", file=sys.stderr)
        return interrupt_status()
    save_or_rescue(segmenter, args.output)
    if last.rings_note():
        print(f"note: --whole-objects {last.rings_note()}", file=sys.stderr)
    if segmenter.min_object_size is not None:
        print(f"note: --whole-objects: {segmenter.min_object_note()}", file=sys.stderr)
    for note in (segmenter.tiled_note(), segmenter.half_contrast_note()):
        if note:
            print(f"note: {note}", file=sys.stderr)
    best = f"; {last.kept()}"
    val = f", validation IoU {last.val_iou:.3f}" if last.val_iou is not None else ""
    what = f" on {len(images)} {'volume' if ndim == 3 else 'plane'}{'s' if len(images) != 1 else ''}" if len(images) > 1 or len(args.files) > 2 else ""
    print(f"{'interrupted: ' if interrupted else ''}trained {last.step} steps{what} in {last.elapsed:.1f} s on {segmenter.device_label}{val}{best}; model written to {args.output}")
    return interrupt_status() if interrupted else 0


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
