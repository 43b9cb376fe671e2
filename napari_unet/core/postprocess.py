"""From class probabilities to semantic labels and instances.

Runs on stored probabilities alone, so changing a parameter re-runs only
this step, never the network.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy import ndimage as ndi
from skimage.measure import label
from skimage.feature import peak_local_max
from skimage.segmentation import relabel_sequential, watershed


@dataclass(frozen=True)
class InstanceParams:
    """Post-processing parameters.

    Attributes
    ----------
    threshold : float
        A pixel is an object when its summed object-class probability
        reaches this (0.5 equals argmax for two classes).
    min_size : int
        Objects smaller than this many pixels are dropped.
    split_strength : float
        0 keeps connected components whole; towards 1 touching objects are
        split more readily: a seeded watershed on the distance transform
        whose seeds are its local maxima at least
        ``SEED_SPACING * (1 - split_strength)`` times the typical object
        radius apart (0.5: 0.6 radii). Scaling the seed spacing with the
        objects' own size is what lets one default serve nuclei of 4 and
        of 30 pixels.
    """

    threshold: float = 0.5
    min_size: int = 16
    split_strength: float = 0.5

    def to_dict(self) -> dict:
        """Plain-type dict."""
        return asdict(self)


def semantic_from_probabilities(probs: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """Semantic labels (0 background, c = class c) from ``(n_classes, ...)`` probabilities.

    A pixel is foreground when the object classes together reach
    ``threshold``; it then takes its most probable object class.
    """
    probs = np.asarray(probs)
    foreground = 1.0 - probs[0] >= threshold
    if probs.shape[0] == 2:
        return foreground.astype(np.uint8)
    best_object = probs[1:].argmax(0) + 1
    dtype = np.uint8 if probs.shape[0] <= 256 else np.uint16
    return np.where(foreground, best_object, 0).astype(dtype)


# Seed spacing in typical radii at split_strength 0 (see InstanceParams).
SEED_SPACING = 1.2


def typical_radius(distance: np.ndarray, components: np.ndarray, min_size: int = 0) -> float:
    """Median over objects of their largest inscribed radius (objects of at least ``min_size`` pixels)."""
    n = int(components.max())
    radii = ndi.maximum(distance, components, index=np.arange(1, n + 1))
    if min_size > 1:
        sizes = np.bincount(components.ravel(), minlength=n + 1)[1:]
        if np.any(sizes >= min_size):
            radii = np.asarray(radii)[sizes >= min_size]
    return float(np.median(radii))


def split_instances(mask: np.ndarray, split_strength: float = 0.5, min_size: int = 0) -> np.ndarray:
    """Instances of a binary mask, touching objects split by watershed.

    Parameters
    ----------
    mask : numpy.ndarray
        Boolean foreground (2D or 3D).
    split_strength : float
        See :class:`InstanceParams`.
    min_size : int
        Minimum object size in pixels.

    Returns
    -------
    numpy.ndarray
        int32 instance labels numbered 1..N.
    """
    components = label(mask, connectivity=1)
    if components.max() == 0:
        return components.astype(np.int32)
    if split_strength > 0:
        distance = ndi.distance_transform_edt(mask)
        # Smoothing merges spurious maxima along ragged outlines.
        distance = ndi.gaussian_filter(distance, 1.0)
        spacing = SEED_SPACING * (1.0 - min(split_strength, 1.0)) * typical_radius(distance, components, min_size)
        peaks = peak_local_max(distance, min_distance=max(1, int(round(spacing))), labels=components, exclude_border=False)
        seeds = np.zeros(mask.shape, dtype=bool)
        seeds[tuple(peaks.T)] = True
        # Maxima on a plateau (even-sized objects) come as adjacent pixels: one seed.
        markers = label(seeds, connectivity=mask.ndim)
        # Components without a seed (plateaus) keep one seed of their own.
        unseeded = np.setdiff1d(np.unique(components), np.unique(components[markers > 0]))
        unseeded = unseeded[unseeded > 0]
        if unseeded.size:
            extra = np.isin(components, unseeded)
            markers = np.where(extra, components + markers.max(), markers)
        components = watershed(-distance, markers, mask=mask)
    if min_size > 1:
        sizes = np.bincount(components.ravel())
        small = sizes < min_size
        small[0] = False
        components[small[components]] = 0
    return relabel_sequential(components)[0].astype(np.int32)


def instances_from_semantic(semantic: np.ndarray, params: InstanceParams) -> np.ndarray:
    """Instances of every object class of a semantic labelling, numbered without reuse."""
    instances = np.zeros(semantic.shape, dtype=np.int32)
    for cls in np.unique(semantic):
        if cls == 0:
            continue
        objs = split_instances(semantic == cls, params.split_strength, params.min_size)
        offset = instances.max()
        instances = np.where(objs > 0, objs + offset, instances)
    return instances


def postprocess(probs: np.ndarray, params: InstanceParams | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Semantic labels and instances from probabilities ``(n_classes, ...)``.

    Returns
    -------
    semantic : numpy.ndarray
        0 background, c = class c (objects below ``min_size`` stay labelled).
    instances : numpy.ndarray
        int32, 0 background, 1..N objects.
    """
    params = params or InstanceParams()
    semantic = semantic_from_probabilities(probs, params.threshold)
    return semantic, instances_from_semantic(semantic, params)
