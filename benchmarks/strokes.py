"""Annotations made from ground truth the way a user would paint them.

Two modes, both in the project's convention (0 unlabeled, 1 background,
2 object):

- :func:`full_mask_annotations`: every pixel labelled (the upper bound on
  what painting can give).
- :func:`sparse_strokes`: a few short strokes per image, what a user paints
  in about a minute: straight lines across the middle of some objects, and
  lines traced along the background between them. The background may be
  thin (EM membranes), so background strokes follow its skeleton.

Everything is deterministic for a given seed.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi
from skimage.draw import line as draw_line
from skimage.measure import label
from skimage.morphology import disk, skeletonize

_NEIGHBOURS = [(-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1)]


def full_mask_annotations(foreground: np.ndarray) -> np.ndarray:
    """Label every pixel: 2 where ``foreground``, 1 elsewhere (uint8)."""
    return np.where(np.asarray(foreground, bool), 2, 1).astype(np.uint8)


def _object_stroke(mask: np.ndarray, rng: np.random.Generator, length: int) -> list[tuple[int, int]]:
    """Pixels of a straight line through the deepest point of ``mask``, kept inside it."""
    dist = ndi.distance_transform_edt(mask)
    cy, cx = np.unravel_index(int(np.argmax(dist)), mask.shape)
    theta = rng.uniform(0, np.pi)
    dy, dx = np.sin(theta), np.cos(theta)
    half = length / 2
    y0, x0 = int(round(cy - dy * half)), int(round(cx - dx * half))
    y1, x1 = int(round(cy + dy * half)), int(round(cx + dx * half))
    rr, cc = draw_line(y0, x0, y1, x1)
    # Walk out from the centre both ways and stop at the first pixel that
    # leaves the (eroded) object: a stroke never crosses into a neighbour.
    centre = len(rr) // 2
    keep = []
    for order in (range(centre, len(rr)), range(centre - 1, -1, -1)):
        for i in order:
            y, x = rr[i], cc[i]
            if not (0 <= y < mask.shape[0] and 0 <= x < mask.shape[1] and mask[y, x]):
                break
            keep.append((y, x))
    return keep


def _skeleton_walk(skeleton: np.ndarray, start: tuple[int, int], rng: np.random.Generator, length: int, used: np.ndarray) -> list[tuple[int, int]]:
    """Pixels of a walk of up to ``length`` steps along ``skeleton`` from ``start``, preferring straight on."""
    path = [start]
    seen = {start}
    direction = None
    y, x = start
    h, w = skeleton.shape
    for _ in range(length):
        options = [
            (dy, dx)
            for dy, dx in _NEIGHBOURS
            if 0 <= y + dy < h and 0 <= x + dx < w and skeleton[y + dy, x + dx] and not used[y + dy, x + dx] and (y + dy, x + dx) not in seen
        ]
        if not options:
            break
        if direction is not None:
            # Keep going the way we came when possible, so strokes look like
            # a hand tracing a membrane rather than a zig-zag.
            options.sort(key=lambda d: -(d[0] * direction[0] + d[1] * direction[1]))
            dy, dx = options[0]
        else:
            dy, dx = options[int(rng.integers(len(options)))]
        direction = (dy, dx)
        y, x = y + dy, x + dx
        seen.add((y, x))
        path.append((y, x))
    return path


def sparse_strokes(
    foreground: np.ndarray,
    seed: int = 0,
    n_object: int = 8,
    n_background: int = 6,
    length: int = 40,
    width: int = 3,
    min_object_area: int = 100,
) -> np.ndarray:
    """A few short painted strokes taken from a ground-truth foreground mask.

    Parameters
    ----------
    foreground : numpy.ndarray
        Boolean 2D mask of the objects (e.g. EM cell interiors).
    seed : int
        Random seed; equal seeds give equal strokes.
    n_object : int
        Object strokes (label 2), each through a different object, chosen
        among objects of at least ``min_object_area`` pixels.
    n_background : int
        Background strokes (label 1) traced along the background's skeleton.
    length : int
        Stroke length in pixels (object strokes end earlier at the object's
        edge).
    width : int
        Stroke width in pixels (odd).
    min_object_area : int
        Objects smaller than this get no stroke (users paint clear cases).

    Returns
    -------
    numpy.ndarray
        uint8 annotations: 0 unlabeled, 1 background, 2 object.
    """
    foreground = np.asarray(foreground, bool)
    rng = np.random.default_rng(seed)
    radius = width // 2
    ann = np.zeros(foreground.shape, np.uint8)

    # Objects: erode first so the widened stroke stays inside.
    inner = ndi.binary_erosion(foreground, disk(radius)) if radius else foreground
    objects = label(foreground, connectivity=1)
    ids = np.flatnonzero(np.bincount(objects.ravel()) >= min_object_area)
    ids = ids[ids > 0]
    centre = np.zeros(foreground.shape, bool)
    slices = ndi.find_objects(objects)
    for obj in rng.permutation(ids)[:n_object]:
        sl = slices[obj - 1]
        mask = (objects[sl] == obj) & inner[sl]
        if not mask.any():
            continue
        for y, x in _object_stroke(mask, rng, length):
            centre[sl[0].start + y, sl[1].start + x] = True
    if radius:
        centre = ndi.binary_dilation(centre, disk(radius)) & foreground
    ann[centre] = 2

    # Background: short walks along its skeleton, widened but kept on the
    # background (thin membranes stay correctly labelled).
    background = ~foreground
    skeleton = skeletonize(background)
    used = np.zeros(foreground.shape, bool)
    points = np.argwhere(skeleton)
    remaining = n_background
    for idx in rng.permutation(len(points))[: 20 * max(n_background, 0)]:
        if remaining <= 0:
            break
        y, x = map(int, points[idx])
        if used[y, x]:
            continue
        path = _skeleton_walk(skeleton, (y, x), rng, length, used)
        if len(path) < length // 2:
            continue  # a dead-end stub: try elsewhere
        for py, px in path:
            used[py, px] = True
        remaining -= 1
    if radius:
        used = ndi.binary_dilation(used, disk(radius)) & background
    ann[used & (ann == 0)] = 1
    return ann


def painted_fraction(annotations: np.ndarray) -> float:
    """Share of pixels that carry a label (not 0)."""
    annotations = np.asarray(annotations)
    return float(np.count_nonzero(annotations) / annotations.size) if annotations.size else 0.0
