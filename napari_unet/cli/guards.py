"""Checks made before any work starts, so a refused command costs nothing and loses nothing.

An output that would replace an input (or another output), an output
path of the wrong kind and an impossible training budget are all refused
here, before a model is loaded or an image read.
"""

from __future__ import annotations

import itertools
import math
import os
from pathlib import Path

from napari_unet.errors import UserInputError
from napari_unet.io.atomic import is_zarr_store

#: Endings of a named (one-file) prediction output.
OUTPUT_SUFFIXES = (".tif", ".tiff", ".zarr")


def same_file(a: Path, b: Path) -> bool:
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
            if same_file(out, path):
                raise UserInputError(f"{name} {str(out)!r} would overwrite {in_name} {str(path)!r}: choose another output path")
    for (name_a, a), (name_b, b) in itertools.combinations(outs, 2):
        if same_file(a, b):
            raise UserInputError(f"{name_a} and {name_b} are the same file {str(a)!r}: give each output its own path")


def check_budget(steps: int | None, max_time: float | None) -> None:
    """Refuse ``--steps`` below 1 and a ``--max-time`` that is not a positive, finite number of seconds.

    Raises
    ------
    UserInputError
        Naming the option.
    """
    if steps is not None and steps < 1:
        raise UserInputError(f"--steps must be at least 1, not {steps}")
    if max_time is not None and not (math.isfinite(max_time) and max_time > 0):
        raise UserInputError(f"--max-time must be a positive, finite number of seconds, not {max_time}")


def output_is_folder(output: str) -> bool:
    """Whether ``-o`` is an output folder (else one named output file or zarr store).

    An existing folder that is not a zarr store is a folder; a name ending
    in .tif, .tiff or .zarr is a named output (an existing zarr store is
    replaced, never written into); another suffix is refused rather than
    silently made a folder.

    Raises
    ------
    UserInputError
        For a name with another suffix that is not an existing folder.
    """
    out = Path(output).expanduser()
    if out.is_dir() and not is_zarr_store(out):
        return True
    suffix = out.suffix.lower()
    if suffix in OUTPUT_SUFFIXES:
        return False
    if suffix:
        raise UserInputError(
            f"cannot write {output!r}: {suffix} is not an output type (use .tif, .tiff or .zarr; "
            "for an output folder of that name create it first)"
        )
    return True
