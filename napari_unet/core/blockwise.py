"""Predict one plane or volume of any size in bounded memory.

The network's probabilities are never held whole: :meth:`Segmenter.iter_predict`
writes finished row bands into a sink that turns each band into semantic
labels at once (and stores the probabilities only when asked). Instances
are then computed block by block from the semantic labels and stitched
(:mod:`.stitch`). Outputs may be numpy arrays, memory maps or zarr arrays;
inputs anything sliceable (numpy, memmap, dask, zarr).
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
from collections.abc import Generator
from pathlib import Path

import numpy as np

from napari_unet.core.inference import TileProgress
from napari_unet.core.postprocess import InstanceParams, semantic_from_probabilities
from napari_unet.core.progress import relay
from napari_unet.core.stitch import iter_label_blockwise


class SemanticSink:
    """A write-only stand-in for the ``(n_classes, *spatial)`` probability array.

    :func:`~.inference.iter_predict_tiled` writes finished bands with
    ``out[:, y0:y1, ...] = probabilities``; each band is turned into
    semantic labels in ``semantic_out`` and, when given, copied into
    ``probabilities_out``.

    Parameters
    ----------
    semantic_out : array-like
        Writable ``(*spatial)`` integer array.
    n_classes : int
        Classes of the model (background included).
    threshold : float
        See :func:`~.postprocess.semantic_from_probabilities`.
    probabilities_out : array-like, optional
        Writable ``(n_classes, *spatial)`` float array.
    """

    dtype = np.dtype(np.float32)

    def __init__(self, semantic_out, n_classes: int, threshold: float, probabilities_out=None) -> None:
        self.semantic_out = semantic_out
        self.probabilities_out = probabilities_out
        self.threshold = threshold
        self.shape = (int(n_classes),) + tuple(semantic_out.shape)

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def __setitem__(self, key, value) -> None:
        key = key if isinstance(key, tuple) else (key,)
        if not key or key[0] != slice(None):
            # Semantic labels need every class of a pixel at once.
            raise TypeError(f"the semantic sink takes whole-class writes out[:, ...], got {key!r}")
        if self.probabilities_out is not None:
            self.probabilities_out[key] = value
        self.semantic_out[key[1:]] = semantic_from_probabilities(value, self.threshold)

    def __getitem__(self, key):
        raise TypeError("the semantic sink is write-only: probabilities are not kept")


def yx_block(spatial_shape: tuple[int, ...], block: int, halo: int) -> int:
    """Block side in Y/X: ``block`` for 2D; for 3D shrunk so a block holds about ``block**2`` voxels."""
    if len(spatial_shape) == 2:
        return block
    z = max(1, int(spatial_shape[0]))
    return max(2 * halo, int(block / math.sqrt(z)), 1)


def predict_plane(
    segmenter,
    image,
    semantic_out,
    instances_out,
    params: InstanceParams,
    probabilities_out=None,
    tile: int | None = None,
    block: int = 2048,
    halo: int = 64,
    id_offset: int = 0,
    scratch_dir: str | os.PathLike | None = None,
) -> Generator[TileProgress, None, int]:
    """Predict one plane ``(C, Y, X)`` or volume ``(C, Z, Y, X)`` in bounded memory.

    Parameters
    ----------
    segmenter : Segmenter
        A model (its ``iter_predict`` is used).
    image : array-like
        ``(C, *spatial)`` (or ``(Y, X)`` for one channel); numpy, memmap,
        dask or zarr. Read one band of tiles at a time.
    semantic_out : array-like or None
        Writable ``(*spatial)`` array receiving semantic labels (uint8). None:
        kept in a temporary memory map in ``scratch_dir`` and deleted.
    instances_out : array-like or None
        Writable ``(*spatial)`` integer array (uint32) receiving instances;
        None skips instances.
    params : InstanceParams
        Threshold, minimum size, split strength.
    probabilities_out : array-like, optional
        Writable ``(n_classes, *spatial)`` float array for the probabilities.
    tile : int, optional
        Network tile side (the segmenter's default when None).
    block, halo : int
        Instance blocks and their context (see :func:`~.stitch.label_blockwise`);
        for a volume the Y/X block is shrunk (:func:`yx_block`).
    id_offset : int
        Instance ids start after this (unique ids across planes).
    scratch_dir : path-like, optional
        Folder for temporary files (default: the system's).

    Yields
    ------
    TileProgress
        Network tiles, then instance blocks, done out of the total.

    Returns
    -------
    int
        As the generator's return value: the largest instance id written
        (``id_offset`` when there is none).

    Notes
    -----
    An image that fits in one block gives exactly
    :func:`~.postprocess.postprocess` of the whole-image probabilities.
    """
    if segmenter.model is None:
        from napari_unet.errors import UserInputError

        raise UserInputError("no model yet: train one or load a model file first")
    # A single-channel image may come without its C axis: the spatial shape
    # is the trailing model-ndim axes either way.
    ndim = int(segmenter.config.ndim)
    spatial = tuple(int(s) for s in image.shape[-ndim:])
    for name, arr in (("semantic", semantic_out), ("instances", instances_out)):
        if arr is not None and tuple(arr.shape) != spatial:
            raise ValueError(f"{name} output shape {tuple(arr.shape)} differs from the image's {spatial}")
    n_classes = segmenter.config.n_classes
    scratch = sink = None
    try:
        if semantic_out is None:
            scratch = Path(tempfile.mkdtemp(prefix="napari-unet-", dir=scratch_dir))
            semantic_out = np.memmap(scratch / "semantic.u8", dtype=np.uint8, mode="w+", shape=spatial)
        sink = SemanticSink(semantic_out, n_classes, params.threshold, probabilities_out)
        b = yx_block(spatial, block, halo)
        label_steps = 0
        if instances_out is not None:
            n = math.ceil(spatial[-2] / b) * math.ceil(spatial[-1] / b)
            label_steps = 1 if n == 1 else 2 * n
        tiles = 0
        for item in segmenter.iter_predict(image, out=sink, tile=tile):
            if isinstance(item, TileProgress):
                tiles = item.total
                yield TileProgress(item.done, item.total + label_steps)
        if instances_out is None:
            return id_offset
        labelling = iter_label_blockwise(semantic_out, instances_out, params, b, halo, id_offset)
        return (yield from relay(labelling, lambda step: TileProgress(tiles + step.done, tiles + step.total)))
    finally:
        if scratch is not None:
            semantic_out = sink = None  # release the map before deleting its file
            shutil.rmtree(scratch, ignore_errors=True)
