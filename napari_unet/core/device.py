"""Choosing the torch device at run time (CUDA, then Apple MPS, then CPU)."""

from __future__ import annotations

import torch

from napari_unet.errors import UserInputError

DEVICE_CHOICES = ("auto", "cpu", "cuda", "mps")


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def resolve_device(name: str | torch.device = "auto") -> torch.device:
    """Return the torch device to use.

    Parameters
    ----------
    name : str or torch.device
        ``"auto"`` picks CUDA when available, then Apple MPS, then the CPU.
        ``"cpu"``, ``"cuda"`` (or ``"cuda:N"``) and ``"mps"`` force a device.

    Returns
    -------
    torch.device

    Raises
    ------
    UserInputError
        If a forced device is not available on this machine.
    """
    if isinstance(name, torch.device):
        return name
    name = str(name).lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise UserInputError("device 'cuda' was asked for, but no CUDA GPU is available here")
        return torch.device(name)
    if name == "mps":
        if not _mps_available():
            raise UserInputError("device 'mps' was asked for, but Apple MPS is not available here")
        return torch.device("mps")
    if name == "cpu":
        return torch.device("cpu")
    raise UserInputError(f"unknown device {name!r}; choose one of {', '.join(DEVICE_CHOICES)}")


def describe_device(device: torch.device) -> str:
    """A short human label for a device, e.g. ``"CUDA (NVIDIA H100)"`` or ``"CPU (2 threads)"``."""
    if device.type == "cuda":
        return f"CUDA ({torch.cuda.get_device_name(device)})"
    if device.type == "mps":
        return "Apple MPS"
    return f"CPU ({torch.get_num_threads()} threads)"
