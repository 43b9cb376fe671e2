"""napari-unet: a U-Net trained interactively from painted strokes in napari.

The engine works without napari::

    from napari_unet import Segmenter, TrainConfig

    segmenter = Segmenter(device="auto")
    for progress in segmenter.train([image], [annotations], TrainConfig(steps=200)):
        pass  # one report per step
    semantic, instances = segmenter.segment(other_image)

Importing this package is deliberately cheap (no torch, napari or Qt): the
names in :data:`__all__` are imported on first use. The CLI, the napari
manifest and the tests all import it first.

The distribution (``pip install napari-stroke-unet``) and the napari plugin
are called :data:`DISTRIBUTION`; the import package and the command stay
``napari_unet`` / ``napari-unet``. An unrelated project already holds the
name ``napari-unet`` on PyPI (with its own ``napari_unet`` package).
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any

#: The version, written only here (pyproject.toml reads it).
__version__ = "0.1.0"
#: Name of the distribution on PyPI, of the npe2 manifest and of the napari plugin.
DISTRIBUTION = "napari-stroke-unet"

#: OpenMP waiting that keeps a fair share of a busy CPU (see :func:`_short_spin_waits`).
SPIN_DEFAULTS = {"GOMP_SPINCOUNT": "1000", "KMP_BLOCKTIME": "1"}


def _short_spin_waits() -> None:
    """Make torch's OpenMP threads stop spinning soon when they wait, unless the user chose otherwise.

    PyTorch's CPU builds use GNU OpenMP, whose threads busy-wait at every
    barrier for 300,000 spins before sleeping. Alone on the machine that
    is fastest; beside any other work (napari's GUI thread, a browser, a
    second job) a waiting thread burns the core the others need. On 2 cores
    (``python -m benchmarks.bench_contention``) training beside one and two
    busy processes ran at 0.34x and 0.15x of its quiet speed with torch's
    default, and at 0.54x and 0.44x of that speed with 1,000 spins (0.62x
    and 0.51x of their own quiet speed), which costs 14 % when nothing else
    runs (``GOMP_SPINCOUNT``; ``KMP_BLOCKTIME`` is the same
    for Intel and LLVM OpenMP, not measured here). OpenMP reads
    these when torch is first imported, so this only acts when that has
    not happened yet, and never overrides a value the user set.
    """
    if "torch" in sys.modules or "OMP_WAIT_POLICY" in os.environ:
        return
    for name, value in SPIN_DEFAULTS.items():
        os.environ.setdefault(name, value)


_short_spin_waits()

#: The public engine objects and the module each lives in (imported lazily).
_API = {
    "Segmenter": "napari_unet.core.segmenter",
    "TrainConfig": "napari_unet.core.training",
    "TrainProgress": "napari_unet.core.training",
    "UNetConfig": "napari_unet.core.model",
    "InstanceParams": "napari_unet.core.postprocess",
    "Planes": "napari_unet.io.axes",
    "UserInputError": "napari_unet.errors",
    "ModelFileError": "napari_unet.errors",
}

__all__ = ["DISTRIBUTION", "__version__", *_API]


def __getattr__(name: str) -> Any:
    if name in _API:
        value = getattr(importlib.import_module(_API[name]), name)
        globals()[name] = value  # next time without this hook
        return value
    raise AttributeError(f"module 'napari_unet' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
