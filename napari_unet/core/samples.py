"""From painted annotations to training batches.

Annotations follow the convention 0 = unlabeled (ignored), 1 = background,
2..K = object classes; training targets are ``annotation - 1`` with -1
ignored by the loss. Patches are drawn around labelled pixels with every
class equally likely (sparse strokes of a rare class still get seen), then
augmented. A share of the labelled area, in whole blocks so neighbouring
pixels of one stroke do not leak across, is held out for validation.

Everything works on images ``(C, *spatial)`` and targets ``(*spatial)`` with
two (YX) or three (ZYX) spatial axes. 3D training patches are
``patch_size // 16`` planes deep (at least 4, at most the volume's depth)
and ``patch_size // 2`` wide (see :func:`patch_shape`): 8x64x64 for the
default 128, i.e. twice the voxels of a 2D 128² patch, which keeps a CPU
training step at 1.5-2 times a 2D step while giving the net 64-pixel YX
context and a few planes above and below the painted ones. Sparse 3D
strokes are usually painted plane by plane, so YX context matters most.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from napari_unet.errors import UserInputError

IGNORE = -1


@dataclass
class LabelledImage:
    """One normalised image (C, *spatial float32) with training and validation targets.

    Targets are (*spatial) int16 class indices with -1 ignored; ``val_target``
    is None when no pixels could be held out.
    """

    image: np.ndarray
    train_target: np.ndarray
    val_target: np.ndarray | None = None
    train_coords: dict[int, np.ndarray] = field(default_factory=dict)  # class -> (N, ndim) (z)yx

    @property
    def ndim(self) -> int:
        """Spatial dimensions (2 or 3)."""
        return self.train_target.ndim


def patch_shape(patch_size: int, ndim: int, depth: int | None = None) -> tuple[int, ...]:
    """Training patch shape for ``patch_size`` (the 2D side) in 2 or 3 dimensions.

    Parameters
    ----------
    patch_size : int
        Side of a 2D patch (``TrainConfig.patch_size``).
    ndim : int
        Spatial dimensions.
    depth : int, optional
        Largest Z of the training volumes: a patch is never deeper (deeper
        patches would only add ignored padding).

    Returns
    -------
    tuple of int
        ``(P, P)`` in 2D; ``(min(max(P // 16, 4), depth), P // 2, P // 2)`` in
        3D (see the module docstring for why).
    """
    if ndim == 2:
        return (patch_size, patch_size)
    pz = max(patch_size // 16, 4)
    if depth is not None:
        pz = max(1, min(pz, depth))
    side = max(patch_size // 2, 8)
    return (pz, side, side)


def _data_patch_shape(data: list[LabelledImage], patch_size: int) -> tuple[int, ...]:
    ndims = {item.ndim for item in data}
    if len(ndims) != 1 or ndims - {2, 3}:
        raise UserInputError("training images must all be 2D (Y, X) or all 3D (Z, Y, X)")
    ndim = ndims.pop()
    depth = max(item.train_target.shape[0] for item in data) if ndim == 3 else None
    return patch_shape(patch_size, ndim, depth)


def annotations_to_targets(annotations: np.ndarray) -> np.ndarray:
    """Convert annotations (0 ignore, 1 background, 2.. classes) to targets (-1, 0, 1..).

    Values above :data:`~napari_unet.core.limits.MAX_ANNOTATION_VALUE` are
    refused rather than wrapped around by the int16 cast (65537 would
    otherwise become 0, read as background).
    """
    from napari_unet.core.limits import check_annotation_values

    check_annotation_values(annotations)
    return annotations.astype(np.int16) - 1


def check_annotations(annotations: list[np.ndarray], image_shapes: list[tuple[int, ...]], n_classes: int | None = None) -> int:
    """Validate annotations against images and return the number of classes.

    Parameters
    ----------
    annotations : list of numpy.ndarray
        Integer annotations, one per image.
    image_shapes : list of tuple
        Spatial (Y, X) or (Z, Y, X) shape of each image.
    n_classes : int, optional
        Classes of an existing model; annotations may not use more.

    Returns
    -------
    int
        Number of classes (background included), at least 2.

    Raises
    ------
    UserInputError
        On a shape mismatch, no annotations, only one class painted, or a
        value above :data:`~napari_unet.core.limits.MAX_ANNOTATION_VALUE`.
    """
    from napari_unet.core.limits import check_annotation_values

    present: set[int] = set()
    for ann, shape in zip(annotations, image_shapes):
        if tuple(ann.shape) != tuple(shape):
            raise UserInputError(f"annotations of shape {tuple(ann.shape)} do not match the image's shape {tuple(shape)}")
        if ann.dtype.kind not in "uib" or (ann.size and ann.min() < 0):
            raise UserInputError("annotations must be non-negative integers (0 unlabeled, 1 background, 2.. classes)")
        check_annotation_values(ann)  # before np.unique: a stray 60000 would ask for a 60000-class model
        present.update(int(v) for v in np.unique(ann) if v > 0)
    if not present:
        raise UserInputError("no annotations: paint background (label 1) and at least one object class (label 2) first")
    if len(present) < 2:
        only = next(iter(present))
        what = "background (1)" if only == 1 else f"class {only}"
        raise UserInputError(f"only {what} is painted: paint background (label 1) and at least one object class (label 2)")
    # Annotation value k is class k-1, so the largest value is the class count.
    classes = max(present)
    if n_classes is not None and classes > n_classes:
        raise UserInputError(
            f"annotations use label {max(present)} but the model has {n_classes - 1} object class(es) "
            f"(labels up to {n_classes}); train a new model to use more classes "
            "(command line: leave out --resume; widget: Reset model)"
        )
    return max(classes, 2)


def split_validation(target: np.ndarray, block: int | tuple[int, ...], fraction: float, rng: np.random.Generator) -> np.ndarray | None:
    """Choose whole blocks (squares or boxes) of labelled pixels to hold out.

    Holding out whole strokes instead (connected painted pieces, where there
    were six or more and none held half the painted area) was measured and
    not adopted: on the selection benchmark's 200-step sparse runs
    (``python -m benchmarks.bench_selection --budgets 200``, 7 cases) the
    picked weights ended -0.022 in sum against their forests, where blocks
    gave +0.108. It helped on one EM case (-0.120 -> +0.026) and cost most
    where strokes are few (10 pieces on large nuclei: +0.030 -> -0.198):
    one held-out object is then a large share of what there is to learn.

    Parameters
    ----------
    target : numpy.ndarray
        Targets ``(*spatial)``, -1 unlabeled.
    block : int or tuple of int
        Block side, or one side per spatial axis.
    fraction : float
        Share of the labelled blocks to hold out.
    rng : numpy.random.Generator

    Returns
    -------
    numpy.ndarray or None
        Boolean mask of held-out pixels, or None when the labelled area is
        too small to spare any (fewer than 4 labelled blocks, or every try
        would remove a class from training).
    """
    if fraction <= 0:
        return None
    blocks_per_axis = (block,) * target.ndim if np.isscalar(block) else tuple(block)
    labelled = target >= 0
    coords = np.nonzero(labelled)
    grid = tuple((n + b - 1) // b for n, b in zip(target.shape, blocks_per_axis))
    # Row-major block index (in 2D: by * blocks_per_row + bx).
    block_ids = np.ravel_multi_index(tuple(c // b for c, b in zip(coords, blocks_per_axis)), grid)
    blocks = np.unique(block_ids)
    if blocks.size < 4:
        return None
    n_val = max(1, int(round(fraction * blocks.size)))
    classes = np.unique(target[labelled])
    for _ in range(20):
        chosen = rng.choice(blocks, size=n_val, replace=False)
        held = np.isin(block_ids, chosen)
        if np.array_equal(np.unique(target[tuple(c[~held] for c in coords)]), classes):
            mask = np.zeros(target.shape, dtype=bool)
            mask[tuple(c[held] for c in coords)] = True
            return mask
    return None


def prepare(images: list[np.ndarray], targets: list[np.ndarray], patch_size: int, val_fraction: float, rng: np.random.Generator) -> list[LabelledImage]:
    """Bundle normalised images with targets, a validation split and per-class coordinates.

    Images are ``(C, *spatial)``, targets ``(*spatial)``, 2 or 3 spatial axes.
    """
    data = []
    for image, target in zip(images, targets):
        if image.ndim != target.ndim + 1 or image.shape[1:] != target.shape or target.ndim not in (2, 3):
            raise UserInputError(f"image of shape {tuple(image.shape)} does not fit targets of shape {tuple(target.shape)}")
        # Quarter-patch blocks: large enough that a held-out block is not
        # just the neighbour of a training pixel, small enough that on a
        # small image a freshly painted correction is rarely held out whole.
        # In 3D the blocks span the 3D patch's quarter in YX and its whole
        # depth in Z: strokes are painted plane by plane, and a held-out
        # block one plane thick would sit right next to trained strokes.
        block: int | tuple[int, ...] = max(16, patch_size // 4)
        if target.ndim == 3:
            pz, py, _ = patch_shape(patch_size, 3, target.shape[0])
            block = (pz, max(16, py // 4), max(16, py // 4))
        val = split_validation(target, block, val_fraction, rng)
        train_target = target if val is None else np.where(val, IGNORE, target).astype(np.int16)
        val_target = None if val is None else np.where(val, target, IGNORE).astype(np.int16)
        coords = {int(c): np.argwhere(train_target == c) for c in np.unique(train_target) if c >= 0}
        data.append(LabelledImage(image, train_target, val_target, coords))
    return data


def class_weights(data: list[LabelledImage], n_classes: int) -> np.ndarray:
    """Loss weights from labelled-pixel frequencies: inverse, normalised, clipped to 10x.

    Painting background is quick (long strokes) and objects slow; unweighted,
    the loss would teach "everything is background".
    """
    counts = np.zeros(n_classes, dtype=np.float64)
    for item in data:
        for c, xy in item.train_coords.items():
            counts[c] += len(xy)
    weights = np.where(counts > 0, counts.sum() / np.maximum(counts, 1), 0.0)
    present = weights > 0
    weights[present] = np.clip(weights[present] / weights[present].min(), 1.0, 10.0)
    return (weights / weights[present].mean()).astype(np.float32)


def _crop(array: np.ndarray, start: tuple[int, ...], size: tuple[int, ...], fill) -> np.ndarray:
    """Crop ``size`` at ``start`` from the last ``len(size)`` axes, padding outside the array."""
    n = len(size)
    out = np.full(array.shape[:-n] + tuple(size), fill, dtype=array.dtype)
    src, dst = [], []
    for s0, p, length in zip(start, size, array.shape[-n:]):
        a, b = max(s0, 0), min(s0 + p, length)
        src.append(slice(a, b))
        dst.append(slice(a - s0, b - s0))
    out[(Ellipsis, *dst)] = array[(Ellipsis, *src)]
    return out


def augment(x: np.ndarray, y: np.ndarray, rng: np.random.Generator, image_channels: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Random flips, 90° rotations, intensity scale/shift, gamma and noise on one pair.

    ``x`` is ``(C, *patch)`` and ``y`` ``(*patch)``, 2D or 3D. Rotations are
    in YX only (the patch is square there; Z is often sampled differently),
    flips in X (with rotations: every YX flip) and, in 3D, in Z. Intensity
    changes touch only the first ``image_channels`` channels (default all):
    the others are forest probabilities, moved only with the geometry.
    """
    k = int(rng.integers(4))
    x, y = np.rot90(x, k, axes=(-2, -1)), np.rot90(y, k, axes=(-2, -1))
    if rng.random() < 0.5:
        x, y = x[..., ::-1], y[..., ::-1]
    three_d = y.ndim == 3
    if three_d and rng.random() < 0.5:
        x, y = x[..., ::-1, :, :], y[::-1]
    if image_channels is not None and image_channels < x.shape[0]:
        rest = np.ascontiguousarray(x[image_channels:], dtype=np.float32)
        x, y = augment_intensity(x[:image_channels], y, rng)
        return np.concatenate([x, rest]), y
    return augment_intensity(x, y, rng)


def augment_intensity(x: np.ndarray, y: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Gamma, gain, offset, illumination ramp and noise on image channels ``x``."""
    three_d = y.ndim == 3
    gamma = float(np.exp(rng.uniform(np.log(0.7), np.log(1.4))))
    # Sign-preserving gamma: values below the low percentile stay ordered.
    x = np.sign(x) * np.abs(x) ** gamma
    # Gain, offset and a linear illumination ramp: microscopy brightness
    # drifts across a field and between images (and, in 3D, with depth), and
    # sparse strokes rarely sample all of it, so the net must not key on
    # absolute intensity.
    if three_d:
        gz, gy, gx = rng.uniform(-0.4, 0.4, size=3)
        rz, ry, rx = (np.linspace(-0.5, 0.5, n, dtype=np.float32) for n in y.shape)
        field = 1.0 + gz * rz[:, None, None] + gy * ry[None, :, None] + gx * rx[None, None, :]
    else:
        p = x.shape[-1]
        ramp = np.linspace(-0.5, 0.5, p, dtype=np.float32)
        gy, gx = rng.uniform(-0.4, 0.4, size=2)
        field = 1.0 + gy * ramp[:, None] + gx * ramp[None, :]
    x = x * field * np.exp(rng.uniform(np.log(0.7), np.log(1.4))) + rng.uniform(-0.2, 0.2)
    x = x + rng.normal(0.0, rng.uniform(0.0, 0.03), size=x.shape).astype(np.float32)
    return np.ascontiguousarray(x, dtype=np.float32), np.ascontiguousarray(y)


class PatchSampler:
    """Draws class-balanced, augmented training batches from labelled images.

    Patches are :func:`patch_shape` ``(patch_size, ...)``: ``P x P`` for 2D
    images, ``pz x P/2 x P/2`` for 3D volumes.
    """

    def __init__(self, data: list[LabelledImage], patch_size: int, batch_size: int, augment: bool, rng: np.random.Generator, image_channels: int | None = None) -> None:
        self.data = data
        self.image_channels = image_channels
        self.patch_size = patch_size
        self.patch_shape = _data_patch_shape(data, patch_size) if data else (patch_size, patch_size)
        self.batch_size = batch_size
        self.augment = augment
        self.rng = rng
        # Strokes painted while training runs (see napari_unet.core.live):
        # (image index, coordinates) drawn from with probability
        # recent_share for recent_left more batches.
        self.recent: list[tuple[int, np.ndarray]] = []
        self.recent_share = 0.0
        self.recent_left = 0
        self.refresh_classes()

    def refresh_classes(self) -> None:
        """Take the classes present now (after the targets changed under the sampler)."""
        # (image index, class) pairs to pick from uniformly: class balance
        # first, then images with that class equally.
        self.classes = sorted({c for item in self.data for c in item.train_coords if len(item.train_coords[c])})
        if not self.classes:
            raise UserInputError("no labelled pixels are left for training")

    def add_recent(self, index: int, coords: np.ndarray, batches: int, share: float) -> None:
        """Favour ``coords`` of image ``index`` (new strokes) in the next ``batches`` batches.

        Recent strokes of earlier updates stay favoured for as long.
        """
        if len(coords):
            self.recent.append((index, coords))
            self.recent_left, self.recent_share = batches, share

    def _centre(self) -> tuple[LabelledImage, np.ndarray]:
        # The random draw happens only while there are recent strokes, so a
        # run without live strokes draws exactly the same numbers as before.
        if self.recent and self.rng.random() < self.recent_share:
            index, coords = self.recent[int(self.rng.integers(len(self.recent)))]
            return self.data[index], coords[int(self.rng.integers(len(coords)))]
        c = self.classes[int(self.rng.integers(len(self.classes)))]
        holders = [i for i, item in enumerate(self.data) if len(item.train_coords.get(c, ()))]
        item = self.data[holders[int(self.rng.integers(len(holders)))]]
        coords = item.train_coords[c]
        return item, coords[int(self.rng.integers(len(coords)))]

    def _one(self) -> tuple[np.ndarray, np.ndarray]:
        item, centre = self._centre()
        shape = self.patch_shape
        # Jitter the centre by up to a quarter patch (YX drawn as in 2D,
        # then Z, so 2D runs draw exactly the same random numbers).
        p = shape[-1]
        jitter = list(self.rng.integers(-p // 4, p // 4 + 1, size=2))
        if len(shape) == 3:
            jitter.insert(0, int(self.rng.integers(-shape[0] // 4, shape[0] // 4 + 1)))
        start = tuple(
            int(np.clip(ci - pi // 2 + ji, 0, max(n - pi, 0))) if n >= pi else (n - pi) // 2
            for ci, pi, ji, n in zip(centre, shape, jitter, item.train_target.shape)
        )
        x = _crop(item.image, start, shape, 0.0)
        y = _crop(item.train_target, start, shape, IGNORE)
        if self.augment:
            x, y = augment(x, y, self.rng, self.image_channels)
        return x, y

    def batch(self) -> tuple[np.ndarray, np.ndarray]:
        """Return ``(x, y)``: float32 ``(B, C, *patch)`` and int64 ``(B, *patch)``."""
        pairs = [self._one() for _ in range(self.batch_size)]
        if self.recent_left > 0:
            self.recent_left -= 1
            if self.recent_left == 0:
                self.recent = []
        return np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs]).astype(np.int64)


def validation_patches(data: list[LabelledImage], patch_size: int, max_patches: int = 16) -> tuple[np.ndarray, np.ndarray] | None:
    """Fixed validation batch: patches over held-out blocks, targets only on held-out pixels.

    Patches have the training patch shape (:func:`patch_shape`).
    """
    xs, ys = [], []
    shape = _data_patch_shape(data, patch_size) if data else (patch_size, patch_size)
    for item in data:
        if item.val_target is None:
            continue
        blocks = {tuple(int(v) // p for v, p in zip(idx, shape)) for idx in np.argwhere(item.val_target >= 0)}
        for block in sorted(blocks):
            start = tuple(min(b * p, max(n - p, 0)) if n >= p else (n - p) // 2 for b, p, n in zip(block, shape, item.val_target.shape))
            xs.append(_crop(item.image, start, shape, 0.0))
            ys.append(_crop(item.val_target, start, shape, IGNORE))
    if not xs:
        return None
    order = np.argsort([-np.count_nonzero(y >= 0) for y in ys])[:max_patches]
    return np.stack([xs[i] for i in order]), np.stack([ys[i] for i in order]).astype(np.int64)
