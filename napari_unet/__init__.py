"""napari-unet: a U-Net trained interactively from painted strokes in napari.

Importing this package is deliberately cheap (no torch, napari or Qt): the
CLI, the napari manifest and the tests all import it first.

The distribution (``pip install napari-stroke-unet``) and the napari plugin
are called :data:`DISTRIBUTION`; the import package and the command stay
``napari_unet`` / ``napari-unet``. An unrelated project already holds the
name ``napari-unet`` on PyPI (with its own ``napari_unet`` package).
"""

from importlib.metadata import PackageNotFoundError, version

#: Name of the distribution on PyPI, of the npe2 manifest and of the napari plugin.
DISTRIBUTION = "napari-stroke-unet"

try:
    __version__ = version(DISTRIBUTION)
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.1.0"

__all__ = ["DISTRIBUTION", "__version__"]
