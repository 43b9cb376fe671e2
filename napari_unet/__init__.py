"""napari-unet: a U-Net trained interactively from painted strokes in napari.

Importing this package is deliberately cheap (no torch, napari or Qt): the
CLI, the napari manifest and the tests all import it first.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("napari-unet")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.1.0"

__all__ = ["__version__"]
