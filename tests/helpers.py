"""Helpers shared by tests: generated data and label comparisons."""

from __future__ import annotations

import numpy as np


def blobs_image(shape=(96, 96), seed=0):
    """Bright discs on a dark noisy background with their truth and dense-ish strokes.

    Returns image (float32), truth instances (int32) and annotations
    (uint8: 1 background ring, 2 object cores, 0 elsewhere).
    """
    from skimage.draw import disk
    from skimage.morphology import dilation, erosion
    from skimage.morphology import disk as fp

    rng = np.random.default_rng(seed)
    truth = np.zeros(shape, np.int32)
    n = 0
    for _ in range(40):
        r = int(rng.integers(6, 10))
        cy, cx = rng.integers(r + 2, shape[0] - r - 2), rng.integers(r + 2, shape[1] - r - 2)
        rr, cc = disk((cy, cx), r, shape=shape)
        if truth[max(cy - r - 3, 0) : cy + r + 4, max(cx - r - 3, 0) : cx + r + 4].any():
            continue
        n += 1
        truth[rr, cc] = n
    image = (truth > 0) * 1.0 + rng.normal(0, 0.25, shape)
    annotations = np.zeros(shape, np.uint8)
    annotations[erosion(truth > 0, fp(3))] = 2
    ring = dilation(truth > 0, fp(5)) & ~dilation(truth > 0, fp(2))
    annotations[ring] = 1
    return image.astype(np.float32), truth, annotations


def one_to_one(truth, labels):
    """Assert each true object maps to exactly one id and each id to one true object."""
    for t in range(1, truth.max() + 1):
        ids = np.unique(labels[truth == t])
        assert ids.size == 1 and ids[0] > 0, (t, ids)
    for i in np.unique(labels[labels > 0]):
        assert np.unique(truth[labels == i]).size == 1, i


def same_partition(a, b):
    """Equal up to a permutation of ids."""
    if not np.array_equal(a > 0, b > 0):
        return False
    pairs = np.unique(np.stack([a[a > 0], b[a > 0]]), axis=1)
    return np.unique(pairs[0]).size == pairs.shape[1] == np.unique(pairs[1]).size


class Recorder:
    """An array-like that records which regions are read from it."""

    def __init__(self, data):
        self.data = data
        self.shape = data.shape
        self.dtype = data.dtype
        self.ndim = data.ndim
        self.reads = []

    def __getitem__(self, key):
        block = self.data[key]
        if block.size:  # dask probes with empty slices for metadata
            self.reads.append(key)
        return block

    def read_pixels(self):
        return sum(int(np.prod(self.data[k].shape)) for k in self.reads)


def nuclei_session(shape=(128, 128), seed=1, **settings):
    """A viewer model with a generated nuclei image ("nuclei") and a seeded session on it, run inline.

    ``settings`` are :class:`~napari_unet.plugin.settings.Settings` fields
    (the image is chosen already). Returns ``(sample, viewer, session)``.
    """
    from napari.components import ViewerModel

    from napari_unet.eval.synthetic import make_nuclei
    from napari_unet.plugin.session import Session
    from napari_unet.plugin.settings import Settings

    sample = make_nuclei(shape, seed=seed)
    viewer = ViewerModel()
    viewer.add_image(sample.image, name="nuclei")
    session = Session(viewer)
    session.seed = 0
    session.settings = Settings(image="nuclei", **settings)
    return sample, viewer, session
