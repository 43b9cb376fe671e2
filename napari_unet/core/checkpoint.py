"""Model files: weights, architecture, normalisation, class names, history.

One ``torch.save`` file of plain containers, tensors and numbers, loaded
with ``weights_only=True`` so opening a model file never executes code.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from .atomic import atomic_path
from .errors import ModelFileError

FORMAT = "napari-unet-model"
FORMAT_VERSION = 1


def save_checkpoint(path: str | os.PathLike, payload: dict) -> Path:
    """Write a model file atomically.

    Parameters
    ----------
    path : str or PathLike
        Destination; replaced only once fully written.
    payload : dict
        ``state_dict``, ``config``, ``normalization``, ``class_names`` and
        ``history``: tensors and plain Python types only.
    """
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save({"format": FORMAT, "format_version": FORMAT_VERSION, **payload}, tmp)
    return path


def load_checkpoint(path: str | os.PathLike) -> dict:
    """Read and check a model file, on the CPU, without executing code.

    Raises
    ------
    ModelFileError
        If the file is missing, not a napari-unet model, or of a newer format.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"model file not found: {str(path)!r}")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch.load raises many types for foreign or damaged files
        raise ModelFileError(f"{str(path)!r} is not a napari-unet model file") from exc
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ModelFileError(f"{str(path)!r} is not a napari-unet model file")
    version = data.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise ModelFileError(f"{str(path)!r} was written by a newer napari-unet (format {version}); please upgrade")
    missing = [k for k in ("state_dict", "config", "normalization") if k not in data]
    if missing:
        raise ModelFileError(f"{str(path)!r} is an incomplete model file (missing {', '.join(missing)})")
    return data
