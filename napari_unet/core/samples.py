"""From painted annotations to training batches.

Annotations follow the convention 0 = unlabeled (ignored), 1 = background,
2..K = object classes; training targets are ``annotation - 1`` with -1
ignored by the loss. Patches are drawn around labelled pixels with every
class equally likely (sparse strokes of a rare class still get seen), then
augmented. A share of the labelled area, in whole blocks so neighbouring
pixels of one stroke do not leak across, is held out for validation.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .errors import UserInputError

IGNORE = -1


@dataclass
class LabelledImage:
    """One normalised image (C, Y, X float32) with training and validation targets.

    Targets are (Y, X) int16 class indices with -1 ignored; ``val_target`` is
    None when no pixels could be held out.
    """

    image: np.ndarray
    train_target: np.ndarray
    val_target: np.ndarray | None = None
    train_coords: dict[int, np.ndarray] = field(default_factory=dict)  # class -> (N, 2) yx


def annotations_to_targets(annotations: np.ndarray) -> np.ndarray:
    """Convert annotations (0 ignore, 1 background, 2.. classes) to targets (-1, 0, 1..)."""
    return annotations.astype(np.int16) - 1


def check_annotations(annotations: list[np.ndarray], image_shapes: list[tuple[int, ...]], n_classes: int | None = None) -> int:
    """Validate annotations against images and return the number of classes.

    Parameters
    ----------
    annotations : list of numpy.ndarray
        Integer annotations, one per image.
    image_shapes : list of tuple
        Spatial (Y, X) shape of each image.
    n_classes : int, optional
        Classes of an existing model; annotations may not use more.

    Returns
    -------
    int
        Number of classes (background included), at least 2.

    Raises
    ------
    UserInputError
        On a shape mismatch, no annotations, or only one class painted.
    """
    present: set[int] = set()
    for ann, shape in zip(annotations, image_shapes):
        if tuple(ann.shape) != tuple(shape):
            raise UserInputError(f"annotations of shape {tuple(ann.shape)} do not match the image's shape {tuple(shape)}")
        if ann.dtype.kind not in "uib" or (ann.size and ann.min() < 0):
            raise UserInputError("annotations must be non-negative integers (0 unlabeled, 1 background, 2.. classes)")
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
            f"annotations use label {max(present)} but the model has {n_classes - 1} object class(es); "
            "reset the model to train with more classes"
        )
    return max(classes, 2)


def split_validation(target: np.ndarray, block: int, fraction: float, rng: np.random.Generator) -> np.ndarray | None:
    """Choose whole ``block``-sized squares of labelled pixels to hold out.

    Returns a boolean mask of held-out pixels, or None when the labelled area
    is too small to spare any (fewer than 4 labelled blocks, or every try
    would remove a class from training).
    """
    if fraction <= 0:
        return None
    labelled = target >= 0
    by, bx = np.nonzero(labelled)
    block_ids = (by // block) * ((target.shape[1] + block - 1) // block) + bx // block
    blocks = np.unique(block_ids)
    if blocks.size < 4:
        return None
    n_val = max(1, int(round(fraction * blocks.size)))
    classes = np.unique(target[labelled])
    for _ in range(20):
        chosen = rng.choice(blocks, size=n_val, replace=False)
        held = np.isin(block_ids, chosen)
        if np.array_equal(np.unique(target[by[~held], bx[~held]]), classes):
            mask = np.zeros(target.shape, dtype=bool)
            mask[by[held], bx[held]] = True
            return mask
    return None


def prepare(images: list[np.ndarray], targets: list[np.ndarray], patch_size: int, val_fraction: float, rng: np.random.Generator) -> list[LabelledImage]:
    """Bundle normalised images with targets, a validation split and per-class coordinates."""
    data = []
    for image, target in zip(images, targets):
        # Quarter-patch blocks: large enough that a held-out block is not
        # just the neighbour of a training pixel, small enough that on a
        # small image a freshly painted correction is rarely held out whole.
        val = split_validation(target, max(16, patch_size // 4), val_fraction, rng)
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


def _crop(array: np.ndarray, y0: int, x0: int, size: int, fill) -> np.ndarray:
    """Crop ``size``² at (y0, x0) from the last two axes, padding outside the array."""
    h, w = array.shape[-2:]
    out = np.full(array.shape[:-2] + (size, size), fill, dtype=array.dtype)
    ys, xs = max(y0, 0), max(x0, 0)
    ye, xe = min(y0 + size, h), min(x0 + size, w)
    out[..., ys - y0 : ye - y0, xs - x0 : xe - x0] = array[..., ys:ye, xs:xe]
    return out


def augment(x: np.ndarray, y: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Random flips, 90° rotations, intensity scale/shift, gamma and noise on one (C,P,P)/(P,P) pair."""
    k = int(rng.integers(4))
    x, y = np.rot90(x, k, axes=(-2, -1)), np.rot90(y, k, axes=(-2, -1))
    if rng.random() < 0.5:
        x, y = x[..., ::-1], y[..., ::-1]
    gamma = float(np.exp(rng.uniform(np.log(0.7), np.log(1.4))))
    # Sign-preserving gamma: values below the low percentile stay ordered.
    x = np.sign(x) * np.abs(x) ** gamma
    # Gain, offset and a linear illumination ramp: microscopy brightness
    # drifts across a field and between images, and sparse strokes rarely
    # sample all of it, so the net must not key on absolute intensity.
    p = x.shape[-1]
    ramp = np.linspace(-0.5, 0.5, p, dtype=np.float32)
    gy, gx = rng.uniform(-0.4, 0.4, size=2)
    field = 1.0 + gy * ramp[:, None] + gx * ramp[None, :]
    x = x * field * np.exp(rng.uniform(np.log(0.7), np.log(1.4))) + rng.uniform(-0.2, 0.2)
    x = x + rng.normal(0.0, rng.uniform(0.0, 0.03), size=x.shape).astype(np.float32)
    return np.ascontiguousarray(x, dtype=np.float32), np.ascontiguousarray(y)


class PatchSampler:
    """Draws class-balanced, augmented training batches from labelled images."""

    def __init__(self, data: list[LabelledImage], patch_size: int, batch_size: int, augment: bool, rng: np.random.Generator) -> None:
        self.data = data
        self.patch_size = patch_size
        self.batch_size = batch_size
        self.augment = augment
        self.rng = rng
        # (image index, class) pairs to pick from uniformly: class balance
        # first, then images with that class equally.
        self.classes = sorted({c for item in data for c in item.train_coords if len(item.train_coords[c])})
        if not self.classes:
            raise UserInputError("no labelled pixels are left for training")

    def _one(self) -> tuple[np.ndarray, np.ndarray]:
        c = self.classes[int(self.rng.integers(len(self.classes)))]
        holders = [i for i, item in enumerate(self.data) if len(item.train_coords.get(c, ()))]
        item = self.data[holders[int(self.rng.integers(len(holders)))]]
        coords = item.train_coords[c]
        cy, cx = coords[int(self.rng.integers(len(coords)))]
        p = self.patch_size
        h, w = item.train_target.shape
        jy, jx = self.rng.integers(-p // 4, p // 4 + 1, size=2)
        y0 = int(np.clip(cy - p // 2 + jy, 0, max(h - p, 0))) if h >= p else (h - p) // 2
        x0 = int(np.clip(cx - p // 2 + jx, 0, max(w - p, 0))) if w >= p else (w - p) // 2
        x = _crop(item.image, y0, x0, p, 0.0)
        y = _crop(item.train_target, y0, x0, p, IGNORE)
        if self.augment:
            x, y = augment(x, y, self.rng)
        return x, y

    def batch(self) -> tuple[np.ndarray, np.ndarray]:
        """Return ``(x, y)``: float32 ``(B, C, P, P)`` and int64 ``(B, P, P)``."""
        pairs = [self._one() for _ in range(self.batch_size)]
        return np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs]).astype(np.int64)


def validation_patches(data: list[LabelledImage], patch_size: int, max_patches: int = 16) -> tuple[np.ndarray, np.ndarray] | None:
    """Fixed validation batch: patches over held-out blocks, targets only on held-out pixels."""
    xs, ys = [], []
    for item in data:
        if item.val_target is None:
            continue
        h, w = item.val_target.shape
        p = patch_size
        blocks = {(int(y) // p, int(x) // p) for y, x in np.argwhere(item.val_target >= 0)}
        for by, bx in sorted(blocks):
            y0 = min(by * p, max(h - p, 0)) if h >= p else (h - p) // 2
            x0 = min(bx * p, max(w - p, 0)) if w >= p else (w - p) // 2
            xs.append(_crop(item.image, y0, x0, p, 0.0))
            ys.append(_crop(item.val_target, y0, x0, p, IGNORE))
    if not xs:
        return None
    order = np.argsort([-np.count_nonzero(y >= 0) for y in ys])[:max_patches]
    return np.stack([xs[i] for i in order]), np.stack([ys[i] for i in order]).astype(np.int64)
