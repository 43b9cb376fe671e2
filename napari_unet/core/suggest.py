"""Where to paint next: the regions of a plane where the model is least sure, ranked.

A stroke teaches the most where the prediction is uncertain and nothing is
painted yet. The plane is cut into square windows; each scores the mean
uncertainty (:func:`~napari_unet.core.postprocess.uncertainty_from_probabilities`)
of its unpainted pixels, times the share of it left unpainted, so regions
already painted rank lower and fully painted ones not at all.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Windows per side of a plane at most (a suggestion should be worth a look, not a pixel hunt).
MAX_PER_SIDE = 8
#: Smallest window side in pixels.
MIN_SIDE = 48


@dataclass(frozen=True)
class Region:
    """A window of a plane, in pixel coordinates of the plane (``y1``, ``x1`` exclusive), and its score."""

    y0: int
    y1: int
    x0: int
    x1: int
    score: float

    @property
    def center(self) -> tuple[float, float]:
        """(y, x) of the window's centre."""
        return (self.y0 + self.y1 - 1) / 2, (self.x0 + self.x1 - 1) / 2


def window_side(shape: tuple[int, int]) -> int:
    """The side of the square windows for a plane of ``shape``: about an eighth of its larger side, at least MIN_SIDE."""
    return max(MIN_SIDE, int(np.ceil(max(shape) / MAX_PER_SIDE)))


def rank_regions(uncertainty: np.ndarray, annotations: np.ndarray | None = None, side: int | None = None, top: int = 10) -> list[Region]:
    """The ``top`` windows of a 2D plane where a stroke would help most, best first.

    Parameters
    ----------
    uncertainty : numpy.ndarray
        ``(Y, X)`` values in [0, 1].
    annotations : numpy.ndarray, optional
        The plane's strokes (0 = unpainted); painted pixels do not count and
        lower their window's score.
    side : int, optional
        Window side (default :func:`window_side`).
    top : int
        How many regions to return.

    Returns
    -------
    list of Region
        Windows with a score above 0, highest first.
    """
    uncertainty = np.asarray(uncertainty, dtype=np.float32)
    if uncertainty.ndim != 2:
        raise ValueError(f"rank_regions takes one plane (Y, X), not shape {uncertainty.shape}")
    side = side or window_side(uncertainty.shape)
    free = np.ones(uncertainty.shape, bool) if annotations is None else np.asarray(annotations) == 0
    regions = []
    for y0 in range(0, uncertainty.shape[0], side):
        for x0 in range(0, uncertainty.shape[1], side):
            window = (slice(y0, y0 + side), slice(x0, x0 + side))
            unpainted = free[window]
            n_free = int(np.count_nonzero(unpainted))
            if not n_free:
                continue
            score = float(uncertainty[window][unpainted].mean()) * n_free / unpainted.size
            if score > 0:
                regions.append(Region(y0, min(y0 + side, uncertainty.shape[0]), x0, min(x0 + side, uncertainty.shape[1]), score))
    regions.sort(key=lambda r: r.score, reverse=True)
    return regions[:top]


def suggest_regions(uncertainty: np.ndarray, strokes: np.ndarray | None = None) -> list[Region]:
    """:func:`rank_regions` of a plane, or of a volume seen from above (unsure where any plane is, painted where any plane is)."""
    uncertainty = np.asarray(uncertainty)
    if uncertainty.ndim == 3:
        uncertainty, strokes = uncertainty.max(0), None if strokes is None else np.asarray(strokes).max(0)
    return rank_regions(uncertainty, strokes)
