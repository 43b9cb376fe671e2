"""Object edges at half contrast, where the strokes never say where objects end.

People paint sparse strokes the way the accuracy suite's "sparse" strokes
are made: lines inside objects, a few objects, and background lines kept a
few pixels away from objects so as not to touch them. Such strokes never
show an edge: every pixel between a painted object and the nearest painted
background is unlabeled, so a classifier (the forest, and the U-Net after
it) is free to put the edge anywhere in the blur around an object. On
fluorescence it puts it far out: the blur of a bright nucleus is brighter
than a dim nucleus, so the halo is called object, neighbours merge through
it and clusters become one blob (on the suite's sparse nuclei, 115-134
objects found for 221-266; see ``docs/benchmarks.md``).

Optics place the edge for us. An object blurred by the microscope's point
spread function reaches half of its contrast over the background right at
its outline (the full width at half maximum), whatever its brightness. So
where the model says "object", a pixel stays object only when its
contrast over the local background is at least :data:`HALF` of the
contrast of the brightest object pixel within :data:`PEAK_RADIUS` pixels
(a local peak, so a dim nucleus beside a bright one keeps its own scale);
otherwise it is background. The background level is the mean of the
model's background pixels around it (:data:`BACKGROUND_SIGMA`), which
follows uneven illumination.

It applies only where that reasoning holds, decided once per training run
(:func:`applies`): a 2D model of one image channel and one object class,
objects brighter than the painted background, objects on a background
(at most :data:`MAX_OBJECT_SHARE` of the image in the forest's answer)
that do not tile it (cells between membranes have no such edge), and strokes that do
not teach edges themselves (:func:`edges_taught`: fully painted regions,
and objects declared painted whole, whose outline the implied rings teach).
3D models are left as they are: not measured.

Measured with the same trained models (100 training steps on the suite's
sparse nuclei, seeds 0-5), edges as the model put them against at half
contrast: instance F1 0.357 / 0.327 / 0.435 / 0.828 / 0.155 / 0.151 ->
0.592 / 0.653 / 0.963 / 0.828 / 0.741 / 0.729 (mean 0.375 -> 0.751),
184-198 objects found instead of 115-134. Where strokes teach edges the
model's own are better (fully painted nuclei, seed 0: 0.620 -> 0.534 with
the rule), hence :func:`edges_taught`.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage as ndi
from skimage.morphology import disk

#: Share of the local peak's contrast at an object's edge: half, as for a
#: blurred outline (the full width at half maximum). Not a tuned figure;
#: 0.4 and 0.3 gained less on the forest's answers for the suite's sparse
#: nuclei (mean F1 0.760 and 0.718 against 0.780; README, How it works).
HALF = 0.5
#: Pixels around a pixel where its object's peak is looked for: about the
#: blur's reach, not the objects' size (scaled with the objects' radius the
#: local peak of large textured nuclei came from their texture and cut
#: them; measured on the suite's sparse nuclei, radius 5-28 px).
PEAK_RADIUS = 4
#: Smoothing (pixels) of the image before contrasts are compared: noise.
SMOOTH_SIGMA = 1.0
#: Reach (Gaussian sigma, pixels) of the local background level.
BACKGROUND_SIGMA = 16.0
#: A painted object's outline pixel is taught when painted background lies
#: within this many pixels of it.
EDGE_REACH = 2
#: Strokes teach edges when at least this share of the painted objects'
#: outline is taught (fully painted regions: 0.98; the suite's sparse
#: strokes: 0.00, their background lines keep 3 px away).
TAUGHT_SHARE = 0.5
#: Objects on a background: the forest's answer calls at most this share of
#: the training images objects. Where objects cover most of the image (EM
#: cells between thin membranes: 0.68-0.75 in the suite's sparse EM, truth
#: 0.77-0.80), there is no surrounding background to measure contrast
#: from, and half contrast cut cells at their darker organelles (sparse EM
#: seed 5, which the "tiled" test misses on its forest's answer: F1 0.304
#: -> 0.172 after 100 steps). The suite's sparse nuclei: 0.25-0.38.
MAX_OBJECT_SHARE = 0.5


def edges_taught(targets: list[np.ndarray]) -> float:
    """Share of painted object outline pixels with painted background within :data:`EDGE_REACH` pixels.

    Parameters
    ----------
    targets : list of numpy.ndarray
        Training targets (-1 unlabeled, 0 background, 1.. classes).

    Returns
    -------
    float
        0 when nothing is painted as an object.
    """
    outline = taught = 0
    for target in targets:
        objects = target >= 1
        edge = objects & ~ndi.binary_erosion(objects)
        near_background = ndi.binary_dilation(target == 0, iterations=EDGE_REACH)
        outline += int(edge.sum())
        taught += int((edge & near_background).sum())
    return taught / outline if outline else 0.0


def objects_brighter(images: list[np.ndarray], targets: list[np.ndarray]) -> bool:
    """Whether painted object pixels are brighter than painted background (medians of channel 0)."""
    inside = [np.asarray(image[0])[target >= 1] for image, target in zip(images, targets)]
    outside = [np.asarray(image[0])[target == 0] for image, target in zip(images, targets)]
    inside, outside = np.concatenate(inside), np.concatenate(outside)
    if inside.size == 0 or outside.size == 0:
        return False
    return bool(np.median(inside) > np.median(outside))


def object_share(probabilities: list[np.ndarray], threshold: float = 0.5) -> float:
    """Share of pixels that these ``(n_classes, *spatial)`` answers call an object."""
    objects = sum(int((1.0 - np.asarray(p[0]) >= threshold).sum()) for p in probabilities)
    return objects / max(1, sum(int(np.asarray(p[0]).size) for p in probabilities))


def applies(images: list[np.ndarray], probabilities: list[np.ndarray] | None, targets: list[np.ndarray], n_classes: int, ndim: int, tiled: bool) -> bool:
    """Whether a model trained on these strokes places object edges at half contrast.

    Parameters
    ----------
    images : list of numpy.ndarray
        Normalised training images ``(C, *spatial)`` (channels only, no forest inputs).
    probabilities : list of numpy.ndarray or None
        The forest's answer on them, ``(n_classes, *spatial)`` (None: no forest, never applies).
    targets : list of numpy.ndarray
        Training targets as trained on (implied rings included).
    n_classes : int
        Classes of the model, background included.
    ndim : int
        Spatial dimensions of the model.
    tiled : bool
        The objects tile the image (:func:`~napari_unet.core.postprocess.objects_tile`).
    """
    if probabilities is None or ndim != 2 or n_classes != 2 or tiled or any(image.shape[0] != 1 for image in images):
        return False
    if object_share(probabilities) > MAX_OBJECT_SHARE:
        return False
    return edges_taught(targets) < TAUGHT_SHARE and objects_brighter(images, targets)


#: Where a tile's background weight is below this, no level is measured (nothing trimmed).
_MIN_BACKGROUND_WEIGHT = 1e-3
#: The background level is a smooth field: measured on blocks of this many
#: pixels per side and interpolated back. At full resolution its two wide
#: Gaussians were 58 of the 83 ms the rule took per 512² tile.
_LEVEL_BLOCK = 4


def _background_level(smooth: np.ndarray, background: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Weight of background around each pixel and the mean of ``smooth`` over it (a normalised convolution).

    Computed on ``_LEVEL_BLOCK``-pixel block means with a Gaussian of
    ``BACKGROUND_SIGMA / _LEVEL_BLOCK`` blocks, zeros outside the tile, then
    interpolated linearly back to the tile's pixels.
    """
    b = _LEVEL_BLOCK
    h, w = smooth.shape
    hp, wp = -(-h // b) * b, -(-w // b) * b
    pad = ((0, hp - h), (0, wp - w))
    covered = np.pad(np.ones((h, w), np.float32), pad)
    blocks = [np.pad(a, pad).reshape(hp // b, b, wp // b, b).mean(axis=(1, 3)) for a in (background, smooth * background, covered)]
    weight, total, inside = (ndi.gaussian_filter(a, BACKGROUND_SIGMA / b, mode="constant") for a in blocks)
    level = total / np.maximum(weight, _MIN_BACKGROUND_WEIGHT)
    # The share of background among the tile's own pixels near each block.
    weight = weight / np.maximum(inside, _MIN_BACKGROUND_WEIGHT)
    # Linear interpolation between block centres (torch's is ten times scipy.ndimage.zoom's speed here).
    up = F.interpolate(torch.from_numpy(np.stack([weight, level]).astype(np.float32))[None], size=(hp, wp), mode="bilinear", align_corners=False)
    up = up[0, :, :h, :w].numpy()
    return up[0], up[1]


def place_edges(probabilities: np.ndarray, image: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """Probabilities with object pixels below half their local contrast moved to background.

    Parameters
    ----------
    probabilities : numpy.ndarray
        ``(2, H, W)`` class probabilities (background first).
    image : numpy.ndarray
        ``(H, W)`` the normalised image they were predicted from.
    threshold : float
        Object probability that makes a pixel an object.

    Returns
    -------
    numpy.ndarray
        A new array; pixels not trimmed keep their probabilities. Holes
        left inside an object (texture darker than half its peak) are
        filled, and where no background is near, nothing is trimmed (no
        level to measure contrast from).
    """
    smooth = ndi.gaussian_filter(np.asarray(image, dtype=np.float32), SMOOTH_SIGMA)
    objects = probabilities[1] >= threshold
    background = (~objects).astype(np.float32)
    weight, level = _background_level(smooth, background)
    peak = ndi.grey_dilation(np.where(objects, smooth, -np.inf), footprint=disk(PEAK_RADIUS))
    kept = objects & ((smooth - level >= HALF * (peak - level)) | (weight < _MIN_BACKGROUND_WEIGHT))
    drop = objects & ~ndi.binary_fill_holes(kept)
    out = probabilities.copy()
    out[0][drop] = 1.0
    out[1][drop] = 0.0
    return out
