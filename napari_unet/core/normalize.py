"""Percentile intensity normalisation, stored with the model.

Microscopy images come as uint8, uint16 or float with arbitrary offsets and
gains; mapping the low/high percentiles to 0/1 makes one model work across
exposures. Percentiles are computed over the whole image (on a strided
subsample for large ones), never per tile, so tiled and untiled prediction
see identical inputs.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

# Percentiles on at most this many pixels: enough for stable 1/99.8 %
# estimates, cheap on gigapixel or lazy (dask/zarr) images.
_MAX_SAMPLE_PIXELS = 4_000_000


@dataclass(frozen=True)
class Normalization:
    """Percentile normalisation settings.

    Attributes
    ----------
    low_percentile, high_percentile : float
        Percentiles mapped to 0 and 1.
    per_image : bool
        If True (default) each image is normalised by its own percentiles;
        if False the values measured on the training data (``low``, ``high``)
        are used for every image.
    low, high : float or None
        Per-channel-agnostic values measured on the training images.
    """

    low_percentile: float = 1.0
    high_percentile: float = 99.8
    per_image: bool = True
    low: float | None = None
    high: float | None = None

    def to_dict(self) -> dict:
        """Plain-type dict for checkpoints."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> Normalization:
        """Inverse of :meth:`to_dict`, ignoring unknown keys."""
        fields = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        return cls(**fields)


def _subsample(image) -> np.ndarray:
    """Read a strided subsample of a (possibly lazy) array as numpy."""
    step = 1
    size = int(np.prod(image.shape))
    while size / (step ** image.ndim) > _MAX_SAMPLE_PIXELS:
        step += 1
    sample = image[tuple(slice(None, None, step) for _ in range(image.ndim))]
    return np.asarray(sample, dtype=np.float32)


def measure_percentiles(image, low_percentile: float, high_percentile: float) -> tuple[float, float]:
    """Return the (low, high) percentile values of an image (subsampled if large).

    Raises
    ------
    ValueError
        If the image contains NaN or infinite values.
    """
    sample = _subsample(image)
    if not np.all(np.isfinite(sample)):
        raise ValueError("image contains NaN or infinite pixel values")
    low, high = np.percentile(sample, [low_percentile, high_percentile])
    return float(low), float(high)


def fit_normalization(images, norm: Normalization | None = None) -> Normalization:
    """Measure training-set percentiles and return a filled :class:`Normalization`."""
    norm = norm or Normalization()
    lows, highs = zip(*(measure_percentiles(im, norm.low_percentile, norm.high_percentile) for im in images))
    return Normalization(norm.low_percentile, norm.high_percentile, norm.per_image, float(np.min(lows)), float(np.max(highs)))


def image_range(image, norm: Normalization) -> tuple[float, float]:
    """The (low, high) values that map to (0, 1) for this image."""
    if norm.per_image or norm.low is None or norm.high is None:
        return measure_percentiles(image, norm.low_percentile, norm.high_percentile)
    return norm.low, norm.high


def apply_range(tile: np.ndarray, low: float, high: float) -> np.ndarray:
    """Map ``low``/``high`` to 0/1 as float32 (no clipping: bright outliers keep their contrast)."""
    scale = 1.0 / max(high - low, 1e-6)
    return (np.asarray(tile, dtype=np.float32) - np.float32(low)) * np.float32(scale)
