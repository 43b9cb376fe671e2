"""Model files: weights, architecture, normalisation, class names, history.

One ``torch.save`` file of plain containers, tensors and numbers, loaded
with ``weights_only=True`` so opening a model file never executes code.
"""

from __future__ import annotations

import math
import os
from dataclasses import MISSING, fields
from pathlib import Path

import torch

from napari_unet.errors import ModelFileError
from napari_unet.io.atomic import atomic_path

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
    problem = payload_problem(data)
    if problem:
        raise ModelFileError(f"{str(path)!r} is a damaged model file: {problem}")
    return data


# -- validation of what a file holds --------------------------------------------------
# Sensible bounds for architecture fields; a file outside them was not written by us.
_CONFIG_RANGES = {
    "in_channels": (1, 1024),
    "n_classes": (2, 256),
    "depth": (1, 10),
    "width": (1, 4096),
    "filter_scales": (0, 16),
    "ndim": (2, 3),
    "forest": (0, 1),
    "channel_norm": (0, 1),
    "feature_norm": (0, 1),
}
# Older files may lack fields added later (``ndim``, ``filter_scales``); these must be there.
_CONFIG_REQUIRED = ("in_channels", "n_classes", "depth", "width")


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _config_problem(config) -> str | None:
    from napari_unet.core.limits import MAX_OBJECT_CLASSES
    from napari_unet.core.model import UNetConfig

    if not isinstance(config, dict):
        return f"its config is a {type(config).__name__}, not a dict"
    absent = [k for k in _CONFIG_REQUIRED if k not in config]
    if absent:
        return f"its config lacks {', '.join(absent)}"
    for f in fields(UNetConfig):
        if f.name not in config:
            continue
        value = config[f.name]
        if not _is_int(value):
            return f"config field {f.name!r} is {value!r}, not an integer"
        low, high = _CONFIG_RANGES.get(f.name, (0, 2**31))
        if f.name == "n_classes":
            high = MAX_OBJECT_CLASSES + 1
        if not low <= value <= high:
            return f"config field {f.name!r} is {value}, outside {low}..{high}"
    return None


def _normalization_problem(norm) -> str | None:
    from napari_unet.core.normalize import Normalization

    if not isinstance(norm, dict):
        return f"its normalisation is a {type(norm).__name__}, not a dict"
    defaults = {f.name: f.default for f in fields(Normalization) if f.default is not MISSING}
    values = {**defaults, **{k: norm[k] for k in defaults if k in norm}}
    if not isinstance(values["per_image"], bool):
        return f"normalisation field 'per_image' is {values['per_image']!r}, not true/false"
    for name in ("low_percentile", "high_percentile"):
        if not _is_number(values[name]) or not 0 <= values[name] <= 100:
            return f"normalisation field {name!r} is {values[name]!r}, not a percentile (0..100)"
    if values["low_percentile"] >= values["high_percentile"]:
        return "its normalisation's low percentile is not below its high percentile"
    for name in ("low", "high"):
        if values[name] is not None and not _is_number(values[name]):
            return f"normalisation field {name!r} is {values[name]!r}, not a finite number"
    if values["low"] is not None and values["high"] is not None and values["low"] > values["high"]:
        return "its normalisation's low value is above its high value"
    return None


def _weights_problem(state_dict) -> str | None:
    if not isinstance(state_dict, dict) or not state_dict:
        return "its weights are missing or not a dict of tensors"
    for key, tensor in state_dict.items():
        if not isinstance(key, str) or not isinstance(tensor, torch.Tensor):
            return f"weight {key!r} is not a named tensor"
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            return f"weight {key!r} holds NaN or infinite values"
    return None


#: Largest minimum object size a model file may carry (pixels): a 4096² object.
MAX_MIN_OBJECT_SIZE = 4096 * 4096


def _extras_problem(data: dict) -> str | None:
    names = data.get("class_names")
    if names is not None:
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            return "its class names are not a list of text"
        if len(names) != data["config"]["n_classes"]:
            return f"it names {len(names)} classes but its model has {data['config']['n_classes']}"
    min_size = data.get("min_object_size")
    if min_size is not None and not (_is_int(min_size) and 0 <= min_size <= MAX_MIN_OBJECT_SIZE):
        return f"its minimum object size {min_size!r} is not a whole number of pixels from 0 to {MAX_MIN_OBJECT_SIZE}"
    if not isinstance(data.get("tiled", False), bool):
        return "its 'objects tile the image' flag is not true or false"
    if not isinstance(data.get("half_contrast", False), bool):
        return "its 'edges at half contrast' flag is not true or false"
    history = data.get("history", [])
    if not isinstance(history, list):
        return "its training history is not a list"
    for entry in history:
        if not isinstance(entry, dict) or not all(isinstance(k, str) for k in entry):
            return "its training history holds an entry that is not a record"
        if not all(v is None or _is_int(v) or isinstance(v, float) for v in entry.values()):
            return "its training history holds a value that is not a number"
        if not all(_is_int(entry.get(k, 0)) for k in ("run", "step")):
            return "its training history holds a run or step that is not an integer"
    return None


def payload_problem(data: dict) -> str | None:
    """What is wrong with a loaded model file's content, or None when every field is usable.

    Every field and its type is checked: the architecture (integers within
    bounds), the normalisation (percentiles, finite numbers), the weights
    (named, finite tensors), the class names (one per class) and the
    history (records of numbers). ``torch.load(weights_only=True)`` only
    guarantees plain containers; without this a config stored as a string
    or a garbage normalisation would load silently with defaults.
    """
    return _config_problem(data["config"]) or _normalization_problem(data["normalization"]) or _weights_problem(data["state_dict"]) or _extras_problem(data)
