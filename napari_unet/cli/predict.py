"""``napari-unet predict``: one image into named outputs, or many into a folder through dask.

Every output (labels, instances, probabilities, ``--measurements`` CSV) is
checked against the inputs and against the others before the model is
loaded; the work itself is :mod:`napari_unet.batch`'s.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from napari_unet.cli.guards import OUTPUT_SUFFIXES, output_is_folder, refuse_overwrites, same_file
from napari_unet.cli.status import EXIT_USER_ERROR
from napari_unet.errors import UserInputError
from napari_unet.io.atomic import check_target
from napari_unet.io.inputs import expand_inputs

#: Smallest ``--tile``: tiles overlap by 64 pixels, smaller ones would be all overlap.
MIN_TILE = 128


def _measurements_file(args: argparse.Namespace) -> str | None:
    """The CSV that ``--measurements`` names for one input (``<output stem>_objects.csv`` without a name)."""
    if args.measurements is True:
        out = Path(args.output)
        return str(out.with_name(f"{out.stem}_objects.csv"))
    return args.measurements or None


def _named_outputs(args: argparse.Namespace, image: str) -> tuple[str | None, str | None]:
    """``--instances`` and ``--measurements`` of a one-file prediction, checked with ``-o`` and ``--probabilities`` before any work."""
    instances = args.instances if isinstance(args.instances, str) else None
    if args.instances is True:
        out = Path(args.output)
        instances = str(out.with_name(f"{out.stem}_instances{out.suffix}"))
    for option, path in (("--instances", instances), ("--probabilities", args.probabilities), ("--uncertainty", args.uncertainty)):
        if path is not None and Path(path).suffix.lower() not in OUTPUT_SUFFIXES:
            raise UserInputError(f"cannot write {option} {path!r}: use a name ending in .tif, .tiff or .zarr")
    measurements = _measurements_file(args)
    refuse_overwrites(
        {"-o": args.output, "--instances": instances, "--probabilities": args.probabilities, "--uncertainty": args.uncertainty, "--measurements": measurements},
        {"the input image": image, "the model": args.model},
    )
    for path in (args.output, instances, args.probabilities, args.uncertainty, measurements):
        if path is not None:
            target = Path(path).expanduser()
            check_target(target, folder_output=target.suffix.lower() == ".zarr")
    return instances, measurements


def _predict_one(args: argparse.Namespace) -> int:
    """One file into the named outputs (the form of napari-unet 0.1)."""
    from tqdm import tqdm

    from napari_unet.batch import load_segmenter, planes_for_model, predict_planes
    from napari_unet.core.segmenter import model_ndim

    if args.scheduler or args.workers is not None:
        raise UserInputError("--scheduler and --workers spread several files; for one file give an output folder (-o FOLDER)")
    fmt = Path(args.output).suffix.lower().lstrip(".").replace("tiff", "tif")
    if args.format and args.format != fmt:
        raise UserInputError(f"--format {args.format} does not match the output {args.output!r}")
    image = str(Path(args.inputs[0]).expanduser())
    instances, measurements = _named_outputs(args, image)
    segmenter = load_segmenter(args.model, args.device)
    planes, note = planes_for_model(image, args.axes, model_ndim(segmenter.config), segmenter.config.in_channels)
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
            uncertainty_path=Path(args.uncertainty).expanduser() if args.uncertainty else None,
            params=segmenter.instance_params(args.min_size),
        )
    shape = "x".join(str(s) for s in planes.label_shape)
    found = f"{objects} objects in {shape}" if objects is not None else f"semantic labels of {shape}"
    print(f"{found} ({planes.axes}); wrote {', '.join(str(w) for w in written)}")
    return 0


def _predict_many(args: argparse.Namespace) -> int:
    """Several files, folders or globs into an output folder, in parallel through dask."""
    from napari_unet.batch import predict_batch

    if isinstance(args.instances, str):
        raise UserInputError(
            f"--instances takes no file name when predicting into a folder (each input gets <name>_instances); "
            f"put it after the inputs so {args.instances!r} is read as an input"
        )
    for option in ("probabilities", "uncertainty"):
        if getattr(args, option):
            raise UserInputError(f"--{option} is only available when predicting one file into a named output")
    if isinstance(args.measurements, str):
        raise UserInputError(
            f"--measurements takes no file name when predicting into a folder (each input gets <name>_objects.csv); "
            f"put it after the inputs so {args.measurements!r} is read as an input"
        )
    if args.workers is not None and args.scheduler:
        raise UserInputError("--workers sets the local scheduler's threads; size the dask cluster instead when using --scheduler")
    files = expand_inputs(args.inputs)
    folder = Path(args.output).expanduser()
    if any(same_file(folder, p) for p in [*files, Path(args.model).expanduser()]):
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
        min_size=args.min_size,
    )
    failed = [r for r in results if not r.ok]
    for r in failed:
        # Messages about a file may already start with its name.
        message = r.error[len(r.path.name) + 2 :] if r.error.startswith(f"{r.path.name}: ") else r.error
        print(f"napari-unet: error: {r.path.name}: {message}", file=sys.stderr)
    counted = [r.objects for r in results if r.ok and r.objects is not None]
    objects = f" ({sum(counted)} objects)" if counted else ""
    print(f"predicted {len(results) - len(failed)} of {len(results)} file(s) into {args.output}{objects}")
    return EXIT_USER_ERROR if failed else 0


def cmd_predict(args: argparse.Namespace) -> int:
    """``napari-unet predict``: a folder ``-o`` (or several inputs) predicts many files, else one.

    Returns
    -------
    int
        0, or 1 when a file of a batch failed (each has printed its line).
    """
    if args.workers is not None and args.workers < 1:
        raise UserInputError("--workers must be at least 1")
    if args.min_size is not None and args.min_size < 0:
        raise UserInputError("--min-size must be 0 or more pixels")
    if args.tile is not None and args.tile < MIN_TILE:
        # Tiles overlap by 64 pixels; smaller tiles would be all overlap.
        raise UserInputError(f"--tile must be at least {MIN_TILE} pixels")
    expand_inputs(args.inputs)  # a missing input is said first, whatever -o is
    if output_is_folder(args.output):
        return _predict_many(args)
    if len(args.inputs) != 1 or not Path(args.inputs[0]).expanduser().is_file():
        raise UserInputError(f"with several inputs (or a folder or pattern as input) -o must be a folder, not {args.output!r}")
    return _predict_one(args)
