"""Deterministic synthetic fluorescence-nuclei images with ground truth.

The generator is meant for tests, the bundled sample data and benchmarks: it
produces images that are *hard enough* to be interesting (touching pairs that
need a watershed split, uneven illumination that defeats a single global
threshold, dim nuclei, blur and shot noise) while staying small and fully
reproducible from a seed.

Only numpy, scipy and scikit-image are used, so this module is Qt-free.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import numpy as np
from scipy import ndimage as ndi
from skimage.draw import line as draw_line
from skimage.morphology import disk

__all__ = [
    "SAMPLE_PARAMS",
    "SyntheticSample",
    "make_nuclei",
    "make_nuclei_set",
    "touching_discs",
]

#: The one place that fixes the bundled sample: ``sample_data/make_sample.py``
#: writes the TIFFs from these and ``napari_unet.plugin.sample_data`` regenerates the
#: same arrays in memory, so the two always agree.
SAMPLE_PARAMS: Mapping[str, Any] = MappingProxyType(
    {"shape": (256, 256), "n_objects": None, "seed": 0}
)

# Physical-ish constants, in pixels / camera counts.  Nuclei keep the same
# pixel size whatever the image shape: a bigger image just holds more of them.
_RADIUS_RANGE = (7.0, 14.0)
_OBJECTS_PER_PIXEL = 28 / (256 * 256)
_CAMERA_OFFSET = 100.0  # dark level, not affected by illumination
_BACKGROUND_FLUO = 100.0  # autofluorescence, scaled by illumination
_READ_NOISE = 5.0
_BLUR_SIGMA = 1.5
_GAP = 3  # minimum empty pixels between unrelated objects


@dataclass(frozen=True, eq=False)
class SyntheticSample:
    """One synthetic image with its ground truth and a sparse annotation.

    Attributes
    ----------
    image : numpy.ndarray
        ``uint16`` YX fluorescence-like image.
    instances : numpy.ndarray
        ``uint16`` instance ground truth: 0 background, 1..N nuclei.
    annotations : numpy.ndarray
        ``uint8`` partial annotation in the project convention: 0 unlabeled,
        1 background strokes, 2 strokes inside nuclei.
    touching_pairs : tuple of tuple of int
        Instance-label pairs ``(a, b)`` whose union is one connected blob.
    """

    image: np.ndarray
    instances: np.ndarray
    annotations: np.ndarray
    touching_pairs: tuple[tuple[int, int], ...] = ()

    @property
    def semantic(self) -> np.ndarray:
        """Foreground mask, ``instances > 0`` as ``uint8`` (0/1)."""
        return (self.instances > 0).astype(np.uint8)


@dataclass
class _Ellipse:
    cy: float
    cx: float
    a: float  # semi-axis along ``phi``
    b: float  # perpendicular semi-axis
    phi: float

    def extent(self, theta: float) -> float:
        """Distance from centre to boundary in direction ``theta``."""
        alpha = theta - self.phi
        return self.a * self.b / np.hypot(self.b * np.cos(alpha), self.a * np.sin(alpha))

    def distance(self, yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
        """Normalised ellipse distance: < 1 inside, 1 on the boundary."""
        dy, dx = yy - self.cy, xx - self.cx
        u = dx * np.cos(self.phi) + dy * np.sin(self.phi)
        v = -dx * np.sin(self.phi) + dy * np.cos(self.phi)
        return np.sqrt((u / self.a) ** 2 + (v / self.b) ** 2)


def _random_ellipse(rng: np.random.Generator, cy: float, cx: float) -> _Ellipse:
    r = rng.uniform(*_RADIUS_RANGE)
    ecc = rng.uniform(1.0, 1.35)  # axis ratio; nuclei are mildly elongated
    return _Ellipse(cy, cx, r * np.sqrt(ecc), r / np.sqrt(ecc), rng.uniform(0, np.pi))


def _render(
    group: list[_Ellipse], window: tuple[slice, slice]
) -> tuple[np.ndarray, np.ndarray]:
    """Return (index map, normalised distance) of a group inside ``window``.

    The index map is -1 outside and ``k`` where ellipse ``k`` of the group is
    "deepest" (smallest normalised distance), which splits an overlap along a
    smooth curve as real touching nuclei look.
    """
    yy, xx = np.mgrid[window].astype(np.float64)
    dist = np.stack([e.distance(yy, xx) for e in group])
    owner = np.argmin(dist, axis=0)
    best = np.take_along_axis(dist, owner[None], axis=0)[0]
    owner = np.where(best < 1.0, owner, -1)
    return owner, best


def _window(group: list[_Ellipse], shape: tuple[int, int], pad: int) -> tuple[slice, slice] | None:
    """Bounding box of a group grown by ``pad``; None if it leaves the image.

    Objects must stay at least one pixel off the border (keeps strokes and
    metrics simple), hence the strict bounds.
    """
    y0 = min(e.cy - e.a for e in group) - pad
    y1 = max(e.cy + e.a for e in group) + pad + 1
    x0 = min(e.cx - e.a for e in group) - pad
    x1 = max(e.cx + e.a for e in group) + pad + 1
    if y0 < 1 or x0 < 1 or y1 > shape[0] - 1 or x1 > shape[1] - 1:
        return None
    return slice(int(y0), int(np.ceil(y1))), slice(int(x0), int(np.ceil(x1)))


def _place_objects(
    rng: np.random.Generator, shape: tuple[int, int], n_objects: int
) -> tuple[np.ndarray, np.ndarray, list[tuple[int, int]]]:
    """Place single nuclei and touching pairs without unwanted contacts.

    Returns the instance image, a per-pixel normalised distance (for radial
    intensity profiles) and the list of touching label pairs.
    """
    h, w = shape
    n_pairs = min(n_objects // 2, max(1, round(n_objects / 7))) if n_objects >= 2 else 0
    # Pairs first: they need the most room.
    groups_wanted = [2] * n_pairs + [1] * (n_objects - 2 * n_pairs)

    instances = np.zeros(shape, np.uint16)
    depth = np.full(shape, np.inf)
    occupied = np.zeros(shape, bool)  # objects grown by _GAP: no-go zone
    pairs: list[tuple[int, int]] = []
    grow = disk(_GAP).astype(bool)
    next_label = 1
    for size in groups_wanted:
        for _attempt in range(200):
            cy, cx = rng.uniform(0, h), rng.uniform(0, w)
            group = [_random_ellipse(rng, cy, cx)]
            if size == 2:
                theta = rng.uniform(0, 2 * np.pi)
                first = group[0]
                second = _random_ellipse(rng, 0.0, 0.0)
                # Overlap by 8-20 % of the summed extents: one connected blob
                # with a visible neck, not one nucleus swallowing the other.
                d = (first.extent(theta) + second.extent(theta)) * rng.uniform(0.8, 0.92)
                second.cy = cy + d * np.sin(theta)
                second.cx = cx + d * np.cos(theta)
                group.append(second)
            win = _window(group, shape, pad=_GAP + 1)
            if win is None:
                continue
            owner, dist = _render(group, win)
            mask = owner >= 0
            if not mask.any() or (mask & occupied[win]).any():
                continue
            labels = []
            for k in range(len(group)):
                part = owner == k
                # Keep one connected piece per nucleus (an odd overlap could
                # otherwise leave a sliver of one ellipse on the far side).
                lab, n = ndi.label(part)
                if n > 1:
                    sizes = ndi.sum(part, lab, range(1, n + 1))
                    part = lab == (1 + int(np.argmax(sizes)))
                instances[win][part] = next_label
                depth[win][part] = dist[part]
                labels.append(next_label)
                next_label += 1
            if size == 2:
                pairs.append((labels[0], labels[1]))
            # The window is padded by more than _GAP, so growing inside it
            # loses nothing.
            occupied[win] |= ndi.binary_dilation(instances[win] > 0, grow)
            break
    return instances, depth, pairs


def _smooth_field(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    """Zero-mean, unit-std smooth random field."""
    f = ndi.gaussian_filter(rng.standard_normal(shape), sigma)
    return (f - f.mean()) / (f.std() + 1e-12)


def _illumination(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    """Smooth uneven illumination: a linear gradient times an off-centre vignette.

    Ranges roughly 0.6-1.4, enough that a dim nucleus in a dark corner is
    darker than the background in a bright one.
    """
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    yy, xx = yy / max(h - 1, 1) - 0.5, xx / max(w - 1, 1) - 0.5
    theta = rng.uniform(0, 2 * np.pi)
    grad = 1.0 + 0.6 * (np.cos(theta) * xx + np.sin(theta) * yy)
    oy, ox = rng.uniform(-0.2, 0.2, size=2)
    vignette = 1.0 - 0.45 * ((yy - oy) ** 2 + (xx - ox) ** 2)
    return grad * vignette * rng.uniform(1.05, 1.15)


def _render_image(
    rng: np.random.Generator, instances: np.ndarray, depth: np.ndarray
) -> np.ndarray:
    shape = instances.shape
    n = int(instances.max())
    # Per-nucleus brightness above background, in units of the background
    # fluorescence; about one in five nuclei is dim (barely above background).
    gain = rng.uniform(1.2, 3.5, size=n + 1)
    dim = rng.random(n + 1) < 0.2
    if n > 0 and not dim[1:].any():
        dim[rng.integers(1, n + 1)] = True  # always at least one dim nucleus
    gain[dim] = rng.uniform(0.35, 0.7, size=int(dim.sum()))
    gain[0] = 0.0

    texture = 1.0 + 0.2 * _smooth_field(rng, shape, 1.5) + 0.1 * _smooth_field(rng, shape, 4.0)
    # Soft dome: brighter centre, dimmer rim, like a real nucleus of finite
    # thickness.
    profile = np.where(instances > 0, 1.0 - 0.35 * np.clip(depth, 0, 1) ** 2, 0.0)
    signal = _BACKGROUND_FLUO * gain[instances] * profile * np.clip(texture, 0.3, None)
    fluo = ndi.gaussian_filter(_BACKGROUND_FLUO + signal, _BLUR_SIGMA)
    clean = _CAMERA_OFFSET + _illumination(rng, shape) * fluo
    # Shot noise as its Gaussian limit (all counts here are >> 20): the random
    # stream then does not depend on the pixel values, so tiny floating-point
    # differences between platforms cannot desynchronise it.
    noisy = clean + np.sqrt(clean) * rng.standard_normal(shape)
    noisy += _READ_NOISE * rng.standard_normal(shape)
    return np.clip(np.rint(noisy), 0, np.iinfo(np.uint16).max).astype(np.uint16)


def _stroke(
    p0: tuple[float, float], p1: tuple[float, float], width: int, shape: tuple[int, int]
) -> tuple[tuple[slice, slice], np.ndarray]:
    """A straight stroke ``width`` (2 or 3) pixels wide, clipped to the image.

    Returns the stroke's window in the image and its mask there (working in a
    window keeps this cheap on large images).
    """
    ys = [int(round(p0[0])), int(round(p1[0]))]
    xs = [int(round(p0[1])), int(round(p1[1]))]
    oy, ox = min(ys) - 2, min(xs) - 2
    local = np.zeros((max(ys) - oy + 3, max(xs) - ox + 3), bool)
    rr, cc = draw_line(ys[0] - oy, xs[0] - ox, ys[1] - oy, xs[1] - ox)
    local[rr, cc] = True
    footprint = np.ones((2, 2), bool) if width == 2 else disk(1).astype(bool)
    local = ndi.binary_dilation(local, footprint)
    y0, x0 = max(oy, 0), max(ox, 0)
    y1 = min(oy + local.shape[0], shape[0])
    x1 = min(ox + local.shape[1], shape[1])
    window = (slice(y0, max(y0, y1)), slice(x0, max(x0, x1)))
    return window, local[y0 - oy : max(y0, y1) - oy, x0 - ox : max(x0, x1) - ox]


def _annotate(
    rng: np.random.Generator, instances: np.ndarray, fraction: float = 0.6
) -> np.ndarray:
    """Sparse scribbles: label 2 inside ~``fraction`` of nuclei, label 1 on background.

    Each stroke stays at least 2 px inside its own region (3 px on the
    background), so no stroke ever crosses an object boundary.
    """
    shape = instances.shape
    ann = np.zeros(shape, np.uint8)
    boxes = ndi.find_objects(instances)
    labels = np.array([i + 1 for i, box in enumerate(boxes) if box is not None])
    n_fg = max(1, int(round(fraction * len(labels)))) if len(labels) else 0
    for lab in rng.permutation(labels)[:n_fg]:
        box = boxes[lab - 1]
        inner = ndi.binary_erosion(instances[box] == lab, disk(2))
        if not inner.any():
            continue
        ys, xs = np.nonzero(inner)
        cy, cx = ys.mean(), xs.mean()
        # Short line through the centroid, about as long as the nucleus.
        theta = rng.uniform(0, np.pi)
        half = 0.5 * np.sqrt(inner.sum() / np.pi) * rng.uniform(0.8, 1.4)
        dy, dx = half * np.sin(theta), half * np.cos(theta)
        win, s = _stroke((cy - dy, cx - dx), (cy + dy, cx + dx), int(rng.integers(2, 4)), inner.shape)
        stroke = np.zeros(inner.shape, bool)
        stroke[win] = s
        stroke &= inner
        if not stroke.any():  # centroid outside a thin/odd shape: tiny blob instead
            stroke[ys[len(ys) // 2], xs[len(xs) // 2]] = True
            stroke = ndi.binary_dilation(stroke) & inner
        ann[box][stroke] = 2

    # Background strokes as a user paints them: a dozen lines, some passing
    # close (2 px) to nuclei, so the net learns where objects end.
    allowed = ndi.binary_erosion(instances == 0, disk(2), border_value=0)
    n_bg = int(rng.integers(10, 14))
    drawn = 0
    for _attempt in range(400):
        if drawn == n_bg:
            break
        y0, x0 = rng.uniform(0, shape[0]), rng.uniform(0, shape[1])
        theta = rng.uniform(0, 2 * np.pi)
        length = rng.uniform(20, 60)
        p1 = (y0 + length * np.sin(theta), x0 + length * np.cos(theta))
        win, s = _stroke((y0, x0), p1, int(rng.integers(2, 4)), shape)
        if s.sum() < 20 or (s & ~allowed[win]).any() or (ann[win][s] != 0).any():
            continue
        ann[win][s] = 1
        drawn += 1
    return ann


def make_nuclei(
    shape: tuple[int, int] = (256, 256), n_objects: int | None = None, seed: int = 0
) -> SyntheticSample:
    """Make one synthetic fluorescence-nuclei image with ground truth.

    Parameters
    ----------
    shape : tuple of int
        Image shape ``(Y, X)``.  Nuclei keep a fixed pixel size (radius about
        7-14 px), so larger images hold more of them.
    n_objects : int, optional
        Number of nuclei to try to place.  Default: about 28 per 256x256.
        Fewer may be placed if the field is too crowded.
    seed : int
        Seed of the :class:`numpy.random.Generator`; equal seeds give equal
        samples.

    Returns
    -------
    SyntheticSample
        The image (``uint16``), instance ground truth (``uint16``), a partial
        annotation (``uint8``; 0 unlabeled, 1 background, 2 nucleus) and the
        touching pairs.

    Notes
    -----
    About one in seven nuclei belongs to a touching pair (two overlapping
    ellipses labelled separately), about one in five is dim, and the
    illumination varies smoothly by roughly +-40 % across the field.
    """
    shape = (int(shape[0]), int(shape[1]))
    if min(shape) < 32:
        raise ValueError(f"shape must be at least 32x32, got {shape}")
    rng = np.random.default_rng(seed)
    if n_objects is None:
        n_objects = max(1, int(round(_OBJECTS_PER_PIXEL * shape[0] * shape[1])))
    if n_objects < 0:
        raise ValueError(f"n_objects must be >= 0, got {n_objects}")
    instances, depth, pairs = _place_objects(rng, shape, n_objects)
    image = _render_image(rng, instances, depth)
    annotations = _annotate(rng, instances)
    return SyntheticSample(image, instances, annotations, tuple(pairs))


def make_nuclei_set(
    n: int, shape: tuple[int, int] = (256, 256), seed: int = 0
) -> list[SyntheticSample]:
    """Make ``n`` independent samples (e.g. held-out test images).

    Parameters
    ----------
    n : int
        Number of images.
    shape : tuple of int
        Shape of each image.
    seed : int
        Base seed; image ``i`` uses seed ``seed + 1000 * (i + 1)`` so that the
        set never contains the sample made with ``seed`` itself (the usual
        training image).

    Returns
    -------
    list of SyntheticSample
    """
    return [make_nuclei(shape, seed=seed + 1000 * (i + 1)) for i in range(n)]


def touching_discs(
    shape: tuple[int, int] = (64, 96), radius: int = 15
) -> tuple[np.ndarray, np.ndarray]:
    """Two equal discs that overlap slightly, side by side, for post-processing tests.

    Parameters
    ----------
    shape : tuple of int
        Image shape ``(Y, X)``; must fit both discs.
    radius : int
        Disc radius in pixels.

    Returns
    -------
    binary : numpy.ndarray
        ``bool`` foreground: one connected blob with a neck in the middle.
    truth : numpy.ndarray
        ``uint16`` labels: 1 for the left disc, 2 for the right, split on
        the vertical line through the neck.
    """
    h, w = shape
    cy, cx = (h - 1) / 2, (w - 1) / 2
    # Centres 2 px closer than 2 * radius: a neck several pixels wide, so the
    # union is surely one 4-connected component.
    half = radius - 1
    if 2 * radius + 2 > h or 2 * (half + radius) + 2 > w:
        raise ValueError(f"shape {shape} too small for two discs of radius {radius}")
    yy, xx = np.mgrid[0:h, 0:w]
    left = (yy - cy) ** 2 + (xx - (cx - half)) ** 2 <= radius**2
    right = (yy - cy) ** 2 + (xx - (cx + half)) ** 2 <= radius**2
    binary = left | right
    truth = np.zeros(shape, np.uint16)
    truth[binary & (xx <= cx)] = 1
    truth[binary & (xx > cx)] = 2
    return binary, truth
