"""Image and label I/O in one place: axes, TIFF, chunked on-disk stores, atomic writes and opening inputs with their axes.

Depends on nothing else in the package but :mod:`napari_unet.errors`; the
engine (:mod:`napari_unet.core`) builds on it.
"""
