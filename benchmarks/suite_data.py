"""Data of the accuracy suite: many kinds of images, strokes painted as a person would.

Every generated case draws its statistics at random from its seed, so no
single image (and no single setting) can be tuned on: object radius,
brightness spread, clustering, blur, noise and background all vary from
case to case. Each case is one image (or volume) with its truth and two
annotations: ``full`` (a region fully painted) and ``sparse`` (a few strokes:
lines through background, partial strokes inside objects, a few whole
objects). Nuclei also have ``whole``: the sparse strokes, trained with
``TrainConfig.whole_objects`` (the user says objects are painted whole). Scores are taken where nothing was painted (:attr:`Case.score_mask`).

Kinds:

- ``nuclei``: fluorescence nuclei, radius 4-30 px (log-uniform per image,
  +-25 % per object), heavy-tailed brightness (a few objects about 10x the
  rest), clusters of touching objects, blur, Poisson + Gaussian noise,
  uneven background, empty regions.
- ``rgb``: multi-class RGB images: regions of 3-4 classes that differ by
  colour and/or texture, with scribbles.
- ``membranes``: cells outlined by a bright membrane stain (as EM, inverted
  contrast drawn at random), instances are the cell interiors.
- ``stack``: 3D nuclei stacks whose objects span planes, empty planes above
  and below, two planes painted.
- ``em`` and ``nuclei3d-real``: the real data in ``../shared/data`` when present.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi
from skimage.draw import line as draw_line
from skimage.measure import label
from skimage.morphology import disk
from skimage.segmentation import find_boundaries

from benchmarks.strokes import sparse_strokes


@dataclass
class Case:
    """One image of the suite with its truth and annotations.

    Attributes
    ----------
    kind : str
        Data kind (see the module docstring).
    image : numpy.ndarray
        ``(Y, X)``, ``(Y, X, 3)`` (RGB) or ``(Z, Y, X)``.
    truth : numpy.ndarray
        Instance labels (``task == "instances"``) or class labels 1..K with
        1 = background (``task == "classes"``).
    annotations : dict of str to numpy.ndarray
        ``"full"`` and/or ``"sparse"`` strokes (0 unlabeled, 1 background, 2.. classes).
    task : str
        ``"instances"`` (scored by instance F1 and foreground IoU) or
        ``"classes"`` (macro precision/recall and mean IoU over classes).
    axes : str
        ``"YX"``, ``"YXC"`` or ``"ZYX"``.
    """

    kind: str
    seed: int
    image: np.ndarray
    truth: np.ndarray
    annotations: dict[str, np.ndarray]
    task: str = "instances"
    axes: str = "YX"
    info: dict = field(default_factory=dict)

    def score_mask(self, mode: str) -> np.ndarray:
        """Pixels scored for an annotation mode: everything not painted, in whole rows/planes."""
        ann = self.annotations[mode]
        if self.axes == "ZYX":
            painted = np.array([np.any(p) for p in ann])
            return np.broadcast_to(~painted[:, None, None], ann.shape)
        # The region right of the painted area (columns with no stroke at all).
        cols = np.flatnonzero(np.any(ann > 0, axis=0))
        keep = np.zeros(ann.shape, bool)
        keep[:, cols.max() + 1 :] = True
        return keep


# -- shared pieces ------------------------------------------------------------
def _noisy(rng: np.random.Generator, clean: np.ndarray, photons: float, read_noise: float) -> np.ndarray:
    """Poisson + Gaussian noise on an image in [0, ~10], as uint16 camera counts."""
    counts = rng.poisson(np.clip(clean, 0, None) * photons).astype(np.float32)
    counts += rng.normal(0, read_noise, clean.shape).astype(np.float32) + 100.0
    return np.clip(counts, 0, 65535).astype(np.uint16)


def _smooth_field(rng: np.random.Generator, shape: tuple[int, ...], sigma: float) -> np.ndarray:
    f = ndi.gaussian_filter(rng.normal(size=shape).astype(np.float32), sigma)
    return (f - f.mean()) / (f.std() + 1e-6)


def _place_blobs(rng: np.random.Generator, shape: tuple[int, ...], radius: float, n: int, cluster: float, aniso: float = 1.0) -> np.ndarray:
    """Instance labels of ellipsoids; a share ``cluster`` of them sits against a previous one."""
    labels = np.zeros(shape, np.int32)
    ndim = len(shape)
    centres: list[np.ndarray] = []
    radii: list[float] = []
    empty = None
    if ndim == 2 and rng.random() < 0.7:
        # An empty region (a quarter to a third of the field, random corner) stays object-free.
        h, w = shape
        ey, ex = int(h * rng.uniform(0.25, 0.4)), int(w * rng.uniform(0.25, 0.4))
        y0 = 0 if rng.random() < 0.5 else h - ey
        x0 = int(w * rng.uniform(0.35, 1.0)) - ex  # keep clear of the painted left third
        empty = (slice(y0, y0 + ey), slice(max(x0, w // 3), max(x0, w // 3) + ex))
    grids = np.indices(shape, dtype=np.float32)
    tries = 0
    while len(centres) < n and tries < 40 * n:
        tries += 1
        r = radius * rng.uniform(0.75, 1.25)
        scale = np.ones(ndim)
        if ndim == 3:
            scale[0] = aniso  # distances in units of the (anisotropic) radius
        if centres and rng.random() < cluster:
            i = int(rng.integers(len(centres)))
            direction = rng.normal(size=ndim)
            if ndim == 3:
                direction[0] *= 0.3
            direction /= np.linalg.norm(direction) + 1e-9
            # Close enough that the two touch (or slightly overlap, then the older keeps the overlap).
            c = centres[i] + direction * scale * (radii[i] + r) * rng.uniform(0.8, 0.95)
        else:
            c = np.array([rng.uniform(r, s - r) if s > 2 * r else s / 2 for s in shape])
        if any(c[k] < 0 or c[k] >= shape[k] for k in range(ndim)):
            continue
        if empty is not None and empty[0].start <= c[0] < empty[0].stop and empty[1].start - r <= c[1] < empty[1].stop + r:
            continue
        if any(np.linalg.norm((c - o) / scale) < 0.75 * (r + ro) for o, ro in zip(centres, radii)):
            continue
        ecc = rng.uniform(0.75, 1.3)
        theta = rng.uniform(0, np.pi)
        lo = [max(0, int(c[i] - 1.6 * r * (aniso if (ndim == 3 and i == 0) else 1))) for i in range(ndim)]
        hi = [min(shape[i], int(c[i] + 1.6 * r * (aniso if (ndim == 3 and i == 0) else 1)) + 1) for i in range(ndim)]
        sl = tuple(slice(a, b) for a, b in zip(lo, hi))
        g = [grids[i][sl] - c[i] for i in range(ndim)]
        dy, dx = g[-2], g[-1]
        u = (dy * np.cos(theta) + dx * np.sin(theta)) / (r * ecc)
        v = (-dy * np.sin(theta) + dx * np.cos(theta)) / (r / ecc)
        d2 = u * u + v * v
        if ndim == 3:
            d2 = d2 + (g[0] / (r * aniso)) ** 2
        inside = (d2 <= 1.0) & (labels[sl] == 0)
        if inside.sum() < 10:
            continue
        labels[sl][inside] = len(centres) + 1
        centres.append(c)
        radii.append(r)
    return labels


def _fluorescence(rng: np.random.Generator, labels: np.ndarray) -> np.ndarray:
    """Render nuclei: heavy-tailed brightness, texture, blur, uneven background, noise."""
    n = int(labels.max())
    bright = rng.lognormal(0.0, 0.35, n + 1).astype(np.float32)
    bright[rng.random(n + 1) < 0.06] *= 10.0  # a few very bright objects
    dim = rng.random(n + 1) < 0.2
    bright[dim] *= rng.uniform(0.3, 0.5)  # and some dim ones
    bright[0] = 0
    level = rng.uniform(1.0, 3.0)
    clean = bright[labels] * level
    clean *= 1.0 + 0.15 * _smooth_field(rng, labels.shape, 2.0)  # chromatin texture
    clean = ndi.gaussian_filter(clean, rng.uniform(0.5, 2.0))
    background = rng.uniform(0.05, 0.4) * level * (1.0 + 0.5 * np.clip(_smooth_field(rng, labels.shape, max(labels.shape) / 4), -1.5, 1.5))
    photons = float(np.exp(rng.uniform(np.log(5), np.log(60))))
    return _noisy(rng, clean + background, photons, rng.uniform(1, 8))


def _left_third(truth: np.ndarray, foreground: np.ndarray) -> np.ndarray:
    """Full annotation of the left third: 2.. where foreground (class label) else 1."""
    ann = np.zeros(truth.shape, np.uint8)
    w = truth.shape[-1] // 3
    ann[..., :w] = np.where(foreground[..., :w] > 0, foreground[..., :w], 1)
    return ann


def _person_strokes(rng: np.random.Generator, instances: np.ndarray, region: tuple[slice, slice], n_whole: int = 12, n_partial: int = 8, n_background: int = 6) -> np.ndarray:
    """What a person paints in a minute: whole objects, partial strokes inside objects, background lines.

    Background lines keep 3 px or more away from objects (people avoid the
    edges); partial strokes stay inside the eroded object. Everything lies in
    ``region``.
    """
    ann = np.zeros(instances.shape, np.uint8)
    sub = instances[region]
    ids = np.unique(sub[sub > 0])
    # Objects fully inside the region only.
    border = np.unique(np.concatenate([sub[0], sub[-1], sub[:, 0], sub[:, -1]]))
    ids = np.setdiff1d(ids, border)
    order = rng.permutation(ids)
    view = ann[region]
    for obj in order[:n_whole]:
        view[sub == obj] = 2
    inner = ndi.binary_erosion(sub > 0, disk(2))
    for obj in order[n_whole : n_whole + n_partial]:
        ys, xs = np.nonzero((sub == obj) & inner)
        if len(ys) < 3:
            continue
        i, j = rng.integers(len(ys), size=2)
        rr, cc = draw_line(ys[i], xs[i], ys[j], xs[j])
        ok = ((sub == obj) & inner)[rr, cc]
        view[rr[ok], cc[ok]] = 2
    far = ~ndi.binary_dilation(sub > 0, disk(3))
    h, w = sub.shape
    drawn = 0
    for _ in range(200):
        if drawn >= n_background:
            break
        y0, x0 = rng.integers(h), rng.integers(w)
        theta = rng.uniform(0, np.pi)
        length = rng.uniform(0.15, 0.5) * min(h, w)
        y1 = int(np.clip(y0 + length * np.sin(theta), 0, h - 1))
        x1 = int(np.clip(x0 + length * np.cos(theta), 0, w - 1))
        rr, cc = draw_line(y0, x0, y1, x1)
        ok = far[rr, cc]
        if ok.mean() < 0.6:
            continue
        thick = np.zeros((h, w), bool)
        thick[rr[ok], cc[ok]] = True
        thick = ndi.binary_dilation(thick, disk(1)) & far
        view[thick & (view == 0)] = 1
        drawn += 1
    return ann


# -- kinds --------------------------------------------------------------------
def nuclei_case(seed: int, shape: tuple[int, int] = (384, 384)) -> Case:
    """Fluorescence nuclei with per-image random statistics."""
    rng = np.random.default_rng([11, seed])
    radius = float(np.exp(rng.uniform(np.log(4), np.log(30))))
    area = shape[0] * shape[1]
    n = int(np.clip(rng.uniform(0.15, 0.35) * area / (np.pi * radius**2), 6, 400))
    truth = _place_blobs(rng, shape, radius, n, cluster=rng.uniform(0.2, 0.6))
    image = _fluorescence(rng, truth)
    full = _left_third(truth, (truth > 0).astype(np.uint8) * 2)
    region = (slice(0, shape[0]), slice(0, shape[1] // 3))
    sparse = _person_strokes(rng, truth, region, n_whole=max(3, min(12, int(truth[region].max() > 0) * 12)))
    # "whole": the same strokes, declared as painted whole (TrainConfig.whole_objects).
    return Case("nuclei", seed, image, truth, {"full": full, "sparse": sparse, "whole": sparse}, info={"radius": round(radius, 1), "objects": int(truth.max())})


def _texture(rng: np.random.Generator, shape: tuple[int, int], kind: int) -> np.ndarray:
    """A zero-mean unit texture: 0 smooth, 1 fine grain, 2 stripes, 3 blotches."""
    if kind == 0:
        return _smooth_field(rng, shape, 6.0)
    if kind == 1:
        return _smooth_field(rng, shape, 0.8)
    if kind == 2:
        yy, xx = np.indices(shape, dtype=np.float32)
        theta, period = rng.uniform(0, np.pi), rng.uniform(5, 12)
        return np.sin(2 * np.pi * (yy * np.sin(theta) + xx * np.cos(theta)) / period).astype(np.float32)
    f = _smooth_field(rng, shape, 3.0)
    return np.where(f > 0.3, 1.0, -0.5).astype(np.float32)


def rgb_case(seed: int, shape: tuple[int, int] = (384, 512)) -> Case:
    """Regions of 3-4 classes told apart by colour and/or texture, with scribbles."""
    rng = np.random.default_rng([12, seed])
    k = int(rng.integers(3, 5))
    # Region map: smooth random fields, argmax (blob-like regions of every class).
    fields = np.stack([_smooth_field(rng, shape, rng.uniform(18, 40)) for _ in range(k)])
    classes = fields.argmax(0) + 1  # 1..k, 1 is "background"
    colours = rng.uniform(0.15, 0.85, size=(k, 3))
    textures = rng.permutation(4)[:k] if k <= 4 else rng.integers(4, size=k)
    # Two classes share almost the same colour: only texture tells them apart.
    a, b = rng.choice(k, 2, replace=False)
    colours[b] = np.clip(colours[a] + rng.normal(0, 0.04, 3), 0, 1)
    image = np.zeros(shape + (3,), np.float32)
    for c in range(k):
        tex = _texture(rng, shape, int(textures[c]))
        amp = rng.uniform(0.05, 0.15)
        m = classes == c + 1
        image[m] = colours[c] + amp * tex[m, None] * rng.uniform(0.5, 1.0, 3)
    image = ndi.gaussian_filter(image, (1.0, 1.0, 0))
    image += rng.normal(0, rng.uniform(0.01, 0.04), image.shape)
    image = (np.clip(image, 0, 1) * 255).astype(np.uint8)
    full = _left_third(classes, classes.astype(np.uint8))
    # Scribbles: per class, 2-3 strokes inside its regions (kept off region borders).
    sparse = np.zeros(shape, np.uint8)
    for c in range(1, k + 1):
        inner = ndi.binary_erosion(classes == c, disk(4))
        inner[:, shape[1] // 3 :] = False
        ys, xs = np.nonzero(inner)
        for _ in range(3 if len(ys) else 0):
            i, j = rng.integers(len(ys), size=2)
            rr, cc = draw_line(ys[i], xs[i], ys[j], xs[j])
            ok = inner[rr, cc]
            thick = np.zeros(shape, bool)
            thick[rr[ok], cc[ok]] = True
            sparse[ndi.binary_dilation(thick, disk(1)) & inner] = c
    if len(np.unique(sparse[sparse > 0])) < k:
        # A class that never reaches the left third gets one stroke where it is.
        for c in range(1, k + 1):
            if not np.any(sparse == c):
                ys, xs = np.nonzero(ndi.binary_erosion(classes == c, disk(4)))
                if len(ys):
                    i = rng.integers(len(ys))
                    sparse[max(0, ys[i] - 2) : ys[i] + 3, max(0, xs[i] - 8) : xs[i] + 9][(classes == c)[max(0, ys[i] - 2) : ys[i] + 3, max(0, xs[i] - 8) : xs[i] + 9]] = c
    return Case("rgb", seed, image, classes.astype(np.uint8), {"full": full, "sparse": sparse}, task="classes", axes="YXC", info={"classes": k})


def membranes_case(seed: int, shape: tuple[int, int] = (384, 384)) -> Case:
    """Cells packed edge to edge, outlined by a membrane stain; instances are the interiors."""
    rng = np.random.default_rng([13, seed])
    cell = float(rng.uniform(12, 35))  # typical cell radius
    n = max(8, int(shape[0] * shape[1] / (np.pi * cell**2) * 1.2))
    pts = rng.uniform(0, 1, size=(n, 2)) * shape
    # Voronoi by nearest seed, with a wobbly distance so outlines are not straight.
    yy, xx = np.indices(shape, dtype=np.float32)
    wob = 0.2 * cell * np.stack([_smooth_field(rng, shape, cell / 2) for _ in range(2)])
    d = (yy[None] + wob[0] - pts[:, 0, None, None]) ** 2 + (xx[None] + wob[1] - pts[:, 1, None, None]) ** 2
    cells = d.argmin(0) + 1
    thickness = rng.uniform(1.0, 3.0)
    edge = find_boundaries(cells, mode="thick")
    membrane = ndi.binary_dilation(edge, disk(max(1, int(round(thickness - 1))))) if thickness > 2 else edge
    interiors = np.where(membrane, 0, cells)
    clean = np.where(membrane, rng.uniform(2.0, 4.0), 0.3) + 0.3 * _smooth_field(rng, shape, 1.5) * (~membrane)
    clean = ndi.gaussian_filter(clean.astype(np.float32), rng.uniform(0.7, 1.5))
    if rng.random() < 0.5:  # EM-like: dark membranes on brighter cytoplasm
        clean = clean.max() - clean + 0.2
    image = _noisy(rng, clean, float(rng.uniform(8, 40)), rng.uniform(1, 5))
    full = _left_third(interiors, (interiors > 0).astype(np.uint8) * 2)
    region = (slice(0, shape[0]), slice(0, shape[1] // 3))
    sub = interiors[region] > 0
    sparse = np.zeros(shape, np.uint8)
    sparse[region] = sparse_strokes(sub, seed=seed, n_object=10, n_background=8, min_object_area=50)
    return Case("membranes", seed, image, interiors.astype(np.int32), {"full": full, "sparse": sparse}, info={"cell_radius": round(cell, 1)})


def stack_case(seed: int, shape: tuple[int, int, int] = (40, 160, 160)) -> Case:
    """3D nuclei spanning planes, empty planes above and below, two planes painted."""
    rng = np.random.default_rng([14, seed])
    radius = float(rng.uniform(8, 16))
    z, h, w = shape
    margin = int(rng.uniform(6, 10))
    inner = (z - 2 * margin, h, w)
    aniso = float(rng.uniform(0.5, 1.0))  # Z radius relative to YX (thicker planes)
    n = int(rng.uniform(0.1, 0.2) * h * w * inner[0] / (4 / 3 * np.pi * radius**3 * aniso))
    core = _place_blobs(rng, inner, radius, max(n, 6), cluster=rng.uniform(0.2, 0.5), aniso=aniso)
    truth = np.zeros(shape, np.int32)
    truth[margin : margin + inner[0]] = core
    image = _fluorescence(rng, truth)
    # Two planes with the most object pixels, apart from each other, fully painted.
    area = (truth > 0).reshape(z, -1).sum(1)
    first = int(np.argmax(area))
    far = np.abs(np.arange(z) - first) >= max(4, int(radius * aniso))
    second = int(np.argmax(np.where(far, area, -1)))
    full = np.zeros(shape, np.uint8)
    for p in (first, second):
        full[p] = np.where(truth[p] > 0, 2, 1)
    return Case("stack", seed, image, truth, {"full": full}, axes="ZYX", info={"radius": round(radius, 1), "objects": int(truth.max()), "planes": [first, second]})


# -- real data ----------------------------------------------------------------
def _shared_data() -> Path:
    return Path(__file__).resolve().parents[1].parent / "shared" / "data"


def em_case(seed: int) -> Case | None:
    """ISBI 2012 EM: train on one slice (painted as a whole slice or sparsely), scored on another."""
    from benchmarks._common import DataMissing, load_em

    try:
        images, labels = load_em()  # $NAPARI_UNET_EM_DATA or ../shared/data/isbi2012-em
    except DataMissing:
        return None
    train, test = [0, 10, 4][seed % 3], [20, 24, 28][seed % 3]
    crop = (slice(0, 256), slice(0, 512))
    # Two slices side by side: the left one painted, the right one scored.
    image = np.concatenate([images[train][crop], images[test][crop]], axis=1)
    interiors = np.concatenate([labels[train][crop] > 0, labels[test][crop] > 0], axis=1)
    truth = label(interiors, connectivity=1).astype(np.int32)
    full = np.zeros(image.shape, np.uint8)
    full[:, :512] = np.where(interiors[:, :512], 2, 1)
    sparse = np.zeros(image.shape, np.uint8)
    sparse[:, :512] = sparse_strokes(interiors[:, :512], seed=seed)
    return Case("em", seed, image, truth, {"full": full, "sparse": sparse}, info={"train_slice": train, "test_slice": test})


def real_nuclei3d_case(seed: int) -> Case | None:
    """The real 3D nuclei stack, planes 8, 15 and 22 fully painted (one case; seeds vary the training)."""
    import tifffile

    folder = _shared_data() / "stardist-nuclei-3d"
    if not (folder / "image.tif").is_file():
        return None
    image, truth = tifffile.imread(folder / "image.tif"), tifffile.imread(folder / "labels.tif").astype(np.int32)
    full = np.zeros(truth.shape, np.uint8)
    for p in (8, 15, 22):
        full[p] = np.where(truth[p] > 0, 2, 1)
    return Case("nuclei3d-real", seed, image, truth, {"full": full}, axes="ZYX", info={"planes": [8, 15, 22], "objects": int(len(np.unique(truth)) - 1)})


KINDS = {
    "nuclei": nuclei_case,
    "rgb": rgb_case,
    "membranes": membranes_case,
    "stack": stack_case,
    "em": em_case,
    "nuclei3d-real": real_nuclei3d_case,
}
