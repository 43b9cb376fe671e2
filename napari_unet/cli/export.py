"""``napari-unet export``: a trained model as a bioimage.io model package."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from napari_unet.io.atomic import check_target


def cmd_export(args: argparse.Namespace) -> int:
    """``napari-unet export``: a bioimage.io model package.

    Returns
    -------
    int
        0 once the package is written (and checked, unless ``--no-test``).
    """
    from napari_unet.batch import load_segmenter, planes_for_model
    from napari_unet.bioimage_io import export_model, sample_from_planes
    from napari_unet.core.segmenter import model_ndim

    check_target(Path(args.output).expanduser())
    segmenter = load_segmenter(args.model, "cpu")
    sample = None
    if args.sample:
        planes, note = planes_for_model(args.sample, args.axes, model_ndim(segmenter.config), segmenter.config.in_channels)
        if note:
            print(note, file=sys.stderr)
        sample = sample_from_planes(planes)
    name = args.name or Path(args.model).stem
    written = export_model(segmenter, args.output, sample=sample, name=name, authors=args.author, test=args.test)
    checked = "checked with bioimageio.core" if args.test else "not checked (--no-test)"
    print(f"wrote the bioimage.io model package {written} ({checked})")
    return 0
