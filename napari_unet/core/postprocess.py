"""From class probabilities to semantic labels and instances.

Runs on stored probabilities alone, so changing a parameter re-runs only
this step, never the network.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
from scipy import ndimage as ndi
from skimage.measure import label
from skimage.morphology import skeletonize
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
        radius apart (0.5: 0.6 radii; in a Z stack ``SEED_SPACING_3D``,
        0.75 radii). Scaling the seed spacing with the
        objects' own size is what lets one default serve nuclei of 4 and
        of 30 pixels. Objects packed edge to edge and outlined by thin
        background (cells between membranes, EM; see :func:`is_tiled`)
        are seeded by the mask's cores instead (:func:`core_seeds`), at
        any strength above 0.
    tiled : bool
        True when the objects are known to tile the image (a model whose
        forest's answer on its training images was tiled, see
        :func:`objects_tile`): every mask is then seeded by its cores. False
        (default): each mask is judged by :func:`is_tiled`.
    """

    threshold: float = 0.5
    min_size: int = 16
    split_strength: float = 0.5
    tiled: bool = False

    def to_dict(self) -> dict:
        """Plain-type dict."""
        return asdict(self)


# Uncertainty spreads this far (Gaussian sigma, pixels, within each plane)
# into its neighbourhood: see uncertainty_from_probabilities.
UNCERTAINTY_SPREAD = 2.0


def uncertainty_from_probabilities(probs: np.ndarray) -> np.ndarray:
    """Per-pixel uncertainty in [0, 1] from ``(n_classes, ...)`` probabilities.

    A pixel's own uncertainty is ``1 - (best - second best)``: 0 where one
    class has all the probability, 1 where the two most probable classes
    are tied. The map returned is the larger of that and its Gaussian
    average over the plane (sigma :data:`UNCERTAINTY_SPREAD`; planes are
    the last two axes), because mistakes come in bands and patches: the
    wrongly labelled pixels beside an unsure border, or inside an object
    whose rim is unsure, are often quite sure of themselves. Used as a
    detector of wrongly labelled pixels on nine sparse-stroke cases of the
    accuracy suite (80 training steps, ``python -m
    benchmarks.bench_uncertainty``), this raised the mean ROC AUC from 0.83
    (the per-pixel value alone, as predictive entropy and 1 - max
    probability) to 0.88 and was higher on each case; mistakes the model
    is sure of far from any unsure pixel (dim nuclei it calls background)
    stay hidden (AUC 0.69 on that case). Re-run with the engine of
    16c0c4d: 0.85 against 0.73 per pixel, higher on 8 of the 9 cases
    (membranes seed 1: 0.932 against 0.938). Plane by plane, so a stack's
    planes and a lazily predicted plane give the same values.
    """
    top = np.sort(np.asarray(probs, dtype=np.float32), axis=0)
    own = 1.0 - (top[-1] - top[-2])
    sigma = [0.0] * (own.ndim - 2) + [UNCERTAINTY_SPREAD] * min(own.ndim, 2)
    return np.maximum(own, ndi.gaussian_filter(own, sigma)).astype(np.float32)


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
# The same for Z stacks. Nuclei in a stack are flatter in voxels than they
# are wide (the suite's generated stacks: median extent 11-19 planes against
# 19-36 pixels in Y and X; the real 3D nuclei 7 against 14-15), so the
# typical radius, an inscribed one, is about the half-height: seeds spaced
# by it sit closer in Y and X than the nuclei are wide, and a ragged
# predicted nucleus gets two. 1.5 (0.75 radii at the default strength),
# instance F1 on the engine's own answers for the real 3D nuclei (seeds 1,
# 3, 5) and generated stacks (seeds 1, 4) after 0, 40, 80, 120 and 160
# training steps (25 masks): mean 0.882 -> 0.903, 14 higher, none lower;
# on scikit-image's forest's foreground (stacks 0-5, real nuclei) 0.924 ->
# 0.947, none lower; on the true masks unchanged (stacks 1.000 on five
# seeds, 0.989 -> 0.988 on one; real nuclei 0.949). 2D nuclei keep 1.2:
# there the larger spacing joined touching true nuclei (F1 0.947 -> 0.922
# and 0.950 -> 0.914 on two of six seeds).
SEED_SPACING_3D = 1.5


def label_maxima(values: np.ndarray, labels: np.ndarray, n: int) -> np.ndarray:
    """Largest of non-negative ``values`` under each label ``0..n`` (0 for a label with no pixels).

    The same as ``scipy.ndimage.maximum(values, labels, range(n + 1))``
    for values >= 0, but one unbuffered pass: that function took 1.0 s on
    a 2048² mask of 2,700 objects, this 0.02 s.
    """
    top = np.zeros(n + 1, dtype=np.float64)
    np.maximum.at(top, labels.ravel(), values.ravel())
    return top


def local_maxima(values: np.ndarray, spacing: int) -> np.ndarray:
    """Pixels that are the largest value within ``spacing`` pixels (a cube of side ``2 * spacing + 1``).

    What ``skimage.feature.peak_local_max(values, spacing, labels=...)``
    finds on a smoothed distance map, as one separable maximum filter
    (0.08 s on a 2048² mask of 2,700 objects, against 0.4-1.1 s for that
    function's per-object loop). Peaks of two objects are at least their
    radii apart, beyond ``spacing``; the differences are tiny objects whose
    peak a neighbour's smoothed rim outranks (they get a seed of their own
    anyway, see :func:`split_instances`) and equal maxima, which that
    function thins to one within ``spacing`` and this keeps (on the suite's
    true masks, ``python -m benchmarks.bench_split``, the split's F1 was
    unchanged on 14 of 15 cases and rose on one, membranes seed 2, from
    0.988 to 1.000).
    """
    return values == ndi.maximum_filter(values, size=2 * spacing + 1, mode="nearest")


def typical_radius(distance: np.ndarray, components: np.ndarray, min_size: int = 0) -> float:
    """Median over objects of their largest inscribed radius (objects of at least ``min_size`` pixels)."""
    n = int(components.max())
    radii = label_maxima(distance, components, n)[1:]
    if min_size > 1:
        sizes = np.bincount(components.ravel(), minlength=n + 1)[1:]
        if np.any(sizes >= min_size):
            radii = np.asarray(radii)[sizes >= min_size]
    return float(np.median(radii))


# A mask counts as "tiled" (objects packed edge to edge, outlined by thin
# background) when objects cover more than TILED_FOREGROUND of it and the
# background's half-width is below TILED_BACKGROUND times the objects'
# typical radius. Measured on the accuracy suite's truth masks: membranes
# and EM 0.04-0.35 (foreground 0.77-0.94), 2D nuclei 0.82-2.4 and 3D nuclei
# 0.57-1.06 (foreground 0.07-0.38). Predicted EM masks read higher (0.47 on
# a U-Net's answer from sparse strokes, where the fragments of a patchy
# membrane lower the typical radius), hence 0.6 rather than a bound just
# above the truth masks'; the foreground share keeps nuclei out either way.
TILED_FOREGROUND = 0.6
TILED_BACKGROUND = 0.6
# Tiled masks: cores are the mask eroded by 0..CORE_MAX_EROSION pixels, and
# only cores of CORE_MIN_SIZE pixels or more count (smaller ones are slivers
# of a patchy membrane). See :func:`core_seeds`.
CORE_MAX_EROSION = 6
CORE_MIN_SIZE = 16


# In 3D, objects smaller than this share of a ball of the typical inscribed
# radius are fragments, not objects: a 16-voxel floor means nothing next to
# nuclei of 10^3-10^4 voxels, and noise specks in empty planes (16-66 voxels
# on a suite stack whose nuclei have 5,000-15,000) cost instance precision.
# On the suite's true 3D masks no object is that small (smallest 132 voxels
# against a 34-voxel floor on the real nuclei, 985 against 66 on the
# smallest generated stack). Applied where a mask is labelled in one piece;
# stitched blockwise labelling of very large volumes keeps ``min_size``.
FRAGMENT_SHARE = 0.1


def is_tiled(mask: np.ndarray, radius: float) -> bool:
    """Whether objects cover the mask edge to edge, outlined by thin background.

    Parameters
    ----------
    mask : numpy.ndarray
        Boolean foreground, 2D or 3D (3D is judged plane by plane).
    radius : float
        The objects' typical inscribed radius (:func:`typical_radius`).
    """
    if mask.mean() <= TILED_FOREGROUND or radius <= 0:
        return False
    background = ~mask
    planes = background[None] if mask.ndim == 2 else background
    widths = []
    for plane in planes:
        ridge = skeletonize(plane)
        if ridge.any():
            widths.append(ndi.distance_transform_edt(plane)[ridge])
    if not widths:
        return False
    return float(np.median(np.concatenate(widths))) < TILED_BACKGROUND * radius


def distance_and_radius(mask: np.ndarray, components: np.ndarray, min_size: int = 0) -> tuple[np.ndarray, float]:
    """The mask's smoothed distance map and its objects' typical radius (:func:`typical_radius`).

    Smoothing (sigma 1) merges spurious maxima along ragged outlines.
    """
    distance = smoothed_distance(mask)
    return distance, typical_radius(distance, components, min_size)


def smoothed_distance(mask: np.ndarray) -> np.ndarray:
    """Distance to the background, smoothed with sigma 1 (merges spurious maxima along ragged outlines)."""
    return ndi.gaussian_filter(ndi.distance_transform_edt(mask), 1.0)


def objects_tile(probabilities: Sequence[np.ndarray], threshold: float = 0.5) -> bool:
    """Whether the objects of these answers tile their images (most of their pixels' images, :func:`is_tiled`).

    A model decides this once, on its forest's answer for its training
    images, and keeps it (:attr:`InstanceParams.tiled`): judged on every
    prediction instead, the answer of a correction that thickens or breaks
    up membranes flips from one side of the bounds to the other during
    training, and radius-spaced seeds then cut every cell in pieces
    (along 200-step runs of the accuracy suite's sparse EM cases, F1 fell
    from 0.57 to 0.13, 88 -> 308 objects for 74, where the foreground
    share dropped from 0.65 to 0.56). The bounds themselves cannot move:
    the densest planes of the real 3D nuclei read foreground 0.50-0.58 and
    half-widths 0.32-0.67 radii, inside the range of predicted EM masks.

    Parameters
    ----------
    probabilities : sequence of numpy.ndarray
        ``(n_classes, *spatial)`` class probabilities (class 0 background).
    threshold : float
        Object probability that makes a pixel foreground.
    """
    votes = 0
    for probs in probabilities:
        mask = 1.0 - np.asarray(probs[0]) >= threshold
        components = label(mask, connectivity=1)
        if components.max() == 0:
            votes -= mask.size
            continue
        _, radius = distance_and_radius(mask, components, CORE_MIN_SIZE)
        votes += mask.size if is_tiled(mask, radius) else -mask.size
    return votes > 0


def core_seeds(mask: np.ndarray) -> np.ndarray:
    """Seeds of a tiled mask: its cores after the erosion that separates the most of them.

    In a tiled mask (cells outlined by membranes, :func:`is_tiled`) the
    background already outlines the objects, except where a predicted
    membrane has a gap, which joins two cells by a thin bridge. Eroding
    the mask cuts bridges thinner than twice the erosion; eroding further
    makes small cells vanish. So the mask is eroded by 0, 1, ...,
    :data:`CORE_MAX_EROSION` pixels, and the erosion that leaves the most
    cores of :data:`CORE_MIN_SIZE` pixels or more gives the seeds (the
    least erosion on ties). The radius-based seeds of untiled masks cut
    irregular cells along their length instead, even with the former merge
    of regions not parted by a neck of the distance map.

    Chosen on the answers of the engine's own forest for the accuracy
    suite's EM and membrane cases (full and sparse strokes, seeds 0-5),
    instance F1 at IoU 0.5, means before -> after: EM full 0.61 -> 0.72,
    EM sparse 0.33 -> 0.45, membranes 0.98 -> 0.99 (full) and 0.97 ->
    0.98 (sparse); lower on one EM slice (0.62 -> 0.51 twice, where the
    forest leaves membranes with gaps wider than the erosions that keep
    small cells). True EM masks: 0.88-0.91 -> 0.98-1.00.
    :func:`split_instances` fills a 2D mask's organelle holes first
    (:func:`organelles_filled`): rings around them part under erosion and
    made one cell count as several cores.
    ``python -m benchmarks.bench_split`` scores it on true masks and on
    scikit-image's forest masks.

    Parameters
    ----------
    mask : numpy.ndarray
        Boolean foreground (2D or 3D).

    Returns
    -------
    numpy.ndarray
        Seed labels 1..N (0 elsewhere).
    """
    structure = ndi.generate_binary_structure(mask.ndim, 1)
    best, best_count = np.zeros(mask.shape, np.int32), -1
    core = mask
    for erosion in range(CORE_MAX_EROSION + 1):
        if erosion:
            core = ndi.binary_erosion(core, structure)
        cores = label(core, connectivity=1)
        sizes = np.bincount(cores.ravel())
        sizes[0] = 0
        count = int(np.count_nonzero(sizes >= CORE_MIN_SIZE))
        if count > best_count:
            keep = sizes >= CORE_MIN_SIZE
            best, best_count = np.where(keep[cores], cores, 0), count
        if count == 0:
            break
    return best


# In a tiled mask the background is the membrane network. An enclosed
# background region that is round, at most HOLE_ELONGATION times as long
# as wide, and smaller than a disc of the cells' typical radius is an
# organelle or vesicle read as background, not membrane: a fragment of
# membrane is long and thin, or, at a junction of three or four
# membranes, a star whose arms are thin. Such holes are filled before the
# cores are found (:func:`organelles_filled`).
HOLE_ELONGATION = 2.0


def organelles_filled(mask: np.ndarray, radius: float) -> np.ndarray:
    """A 2D tiled mask with its round background holes smaller than a typical cell filled.

    Eroding a cell perforated by such holes leaves thin rings around them
    that part, so :func:`core_seeds` counted one cell as several cores and
    preferred the erosion that cut cells apart. A hole is round when both
    measures of its elongation are at most :data:`HOLE_ELONGATION`: its
    inertia ellipse's axes (a star-shaped junction of membranes has round
    inertia) and its area against a disc of its inscribed radius (an
    ellipse of axes ``a > b`` has ``a / b`` times the area of its inscribed
    disc; thin arms have a large area for their width).

    Chosen on the engine's answers for the accuracy suite's EM cases
    (sparse strokes, seeds 0-5, after 0, 80 and 160 training steps; full
    strokes after 0 and 160) and membranes, instance F1 at IoU 0.5 of the
    split alone on saved masks (a throwaway script), mean before -> after:
    EM sparse 0.486 -> 0.553, EM full 0.727 -> 0.721. The inertia test
    alone filled membrane junctions and joined cells (membranes full seed
    2: 0.963 -> 0.464; with both tests 0.963); the thickness test alone
    lost on EM full (0.677).

    Parameters
    ----------
    mask : numpy.ndarray
        Boolean 2D foreground.
    radius : float
        The cells' typical inscribed radius (:func:`typical_radius`).
    """
    holes = label(~mask, connectivity=1)
    n = int(holes.max())
    count = np.bincount(holes.ravel(), minlength=n + 1).astype(np.float64)
    small = count <= np.pi * radius * radius
    small[0] = False  # the cells
    if not small.any():
        return mask
    # Shape measures of the small holes only: the membrane network is most of the background.
    ys, xs = np.nonzero(small[holes])
    ids = holes[ys, xs]
    ys, xs = ys.astype(np.float64), xs.astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        my, mx = np.bincount(ids, ys, n + 1) / count, np.bincount(ids, xs, n + 1) / count
        syy = np.bincount(ids, ys * ys, n + 1) / count - my * my
        sxx = np.bincount(ids, xs * xs, n + 1) / count - mx * mx
        sxy = np.bincount(ids, ys * xs, n + 1) / count - my * mx
        half = (syy + sxx) / 2
        spread = np.sqrt(np.maximum(half * half - (syy * sxx - sxy * sxy), 0))
        # Eigenvalues of the coordinates' covariance: the inertia ellipse's squared half-axes.
        major, minor = half + spread, half - spread
        round_inertia = (minor > 1e-9) & (major <= HOLE_ELONGATION**2 * minor)
    inscribed = label_maxima(ndi.distance_transform_edt(~mask), holes, n)
    thick = count <= HOLE_ELONGATION * np.pi * inscribed * inscribed
    fill = small & round_inertia & thick
    return mask | fill[holes] if fill.any() else mask


def split_instances(mask: np.ndarray, split_strength: float = 0.5, min_size: int = 0, tiled: bool = False) -> np.ndarray:
    """Instances of a binary mask, touching objects split by watershed.

    Parameters
    ----------
    mask : numpy.ndarray
        Boolean foreground (2D or 3D).
    split_strength : float
        See :class:`InstanceParams`.
    min_size : int
        Minimum object size in pixels. In 3D (with ``min_size`` above 1)
        objects are also dropped below :data:`FRAGMENT_SHARE` of the volume
        of a ball of the objects' typical radius (see the note there).
    tiled : bool
        The objects are known to tile the image: seeds from the mask's
        cores whatever :func:`is_tiled` says of this mask (see
        :attr:`InstanceParams.tiled`).

    Returns
    -------
    numpy.ndarray
        int32 instance labels numbered 1..N.
    """
    components = label(mask, connectivity=1)
    if components.max() == 0:
        return components.astype(np.int32)
    distance = radius = None
    if split_strength > 0 or (mask.ndim == 3 and min_size > 1):
        distance, radius = distance_and_radius(mask, components, min_size)
    if mask.ndim == 3 and min_size > 1:
        min_size = max(min_size, int(FRAGMENT_SHARE * 4.0 / 3.0 * np.pi * radius**3))
    if split_strength > 0 and (tiled or is_tiled(mask, radius)):
        # Objects outlined by background: seeds from the mask's cores, not its radius.
        whole = organelles_filled(mask, radius) if mask.ndim == 2 else mask
        seeds = core_seeds(whole)
        if seeds.any():  # else every piece is below CORE_MIN_SIZE: the components stand
            if whole is not mask:
                distance = smoothed_distance(whole)
            # Filled holes stay background: the instances agree with the semantic labels.
            components = np.where(mask, watershed(-distance, seeds, mask=whole), 0)
    elif split_strength > 0:
        spacing = (SEED_SPACING_3D if mask.ndim == 3 else SEED_SPACING) * (1.0 - min(split_strength, 1.0)) * radius
        seeds = local_maxima(distance, max(1, int(round(spacing)))) & (components > 0)
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
        objs = split_instances(semantic == cls, params.split_strength, params.min_size, params.tiled)
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
