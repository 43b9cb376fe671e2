"""Instances of a semantic labelling too large for memory, block by block.

Each block's instances are computed on the block plus a halo (context from
its neighbours), and only the block's core is kept. An object crossing a
block seam then appears as one piece in each block; pieces are matched by
comparing, near the seam, the labels a block computed over its halo with the
labels its (already finished) neighbour wrote there, and matched pieces are
merged with a union-find. A last pass renumbers every block through one
lookup table, so ids are consecutive and none is reused.

Only one block (plus its halo and two thin strips of its neighbours) is in
memory at a time; ``semantic`` and ``out`` may be numpy arrays, memory maps
or zarr arrays.
"""

from __future__ import annotations

import math
from collections.abc import Generator
from dataclasses import replace

import numpy as np

from napari_unet.core.inference import TileProgress
from napari_unet.core.postprocess import InstanceParams, instances_from_semantic
from napari_unet.core.progress import drive
from napari_unet.errors import UserInputError

# A block's piece and its neighbour's piece are the same object when they
# share more than this fraction of the smaller one (counted near the seam).
MATCH_FRACTION = 0.5


class _UnionFind:
    """Disjoint sets over provisional ids 1..n; a set's root is its smallest id."""

    def __init__(self) -> None:
        self.parent: list[int] = [0]

    def add(self, n: int) -> None:
        start = len(self.parent)
        self.parent.extend(range(start, start + n))

    def find(self, a: int) -> int:
        parent = self.parent
        while parent[a] != a:
            parent[a] = parent[parent[a]]  # path halving
            a = parent[a]
        return a

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            # The smaller id stays root: ids are handed out in block order,
            # so a merged object keeps the place of its first piece.
            self.parent[max(ra, rb)] = min(ra, rb)

    def roots(self) -> np.ndarray:
        """Root of every id, vectorised (pointer jumping to a fixed point)."""
        parent = np.asarray(self.parent, dtype=np.int64)
        while True:
            nxt = parent[parent]
            if np.array_equal(nxt, parent):
                return parent
            parent = nxt


def _check_fits(max_id: int, dtype: np.dtype) -> None:
    dtype = np.dtype(dtype)
    if dtype.kind not in "ui":
        raise UserInputError(f"instance labels need an integer array, got {dtype}")
    if max_id > np.iinfo(dtype).max:
        raise UserInputError(f"{max_id} instance ids do not fit the output's {dtype}: use uint32")


def _match_pieces(mine: np.ndarray, theirs: np.ndarray, sets: _UnionFind) -> None:
    """Union pieces overlapping by more than MATCH_FRACTION of the smaller (both 0 = background)."""
    both = (mine > 0) & (theirs > 0)
    if not both.any():
        return
    ids_m, size_m = np.unique(mine[mine > 0], return_counts=True)
    ids_t, size_t = np.unique(theirs[theirs > 0], return_counts=True)
    # One int64 key per (mine, theirs) pair: faster than unique over rows.
    base = int(ids_t[-1]) + 1
    keys, overlap = np.unique(mine[both].astype(np.int64) * base + theirs[both], return_counts=True)
    a, b = keys // base, keys % base
    smaller = np.minimum(size_m[np.searchsorted(ids_m, a)], size_t[np.searchsorted(ids_t, b)])
    for i in np.flatnonzero(overlap > MATCH_FRACTION * smaller):
        sets.union(int(a[i]), int(b[i]))


def _block_starts(length: int, block: int) -> list[tuple[int, int]]:
    return [(s, min(s + block, length)) for s in range(0, length, block)]


# Most voxels labelled at once (halo not counted): two 2048² planes' worth.
# Labelling a block (distance map, seeds, watershed) takes about 50 bytes
# per voxel, halo included: a 64x2048² Z stack labelled as one 2048² block
# of all its planes peaked at 14.7 GB, in 512² blocks (four planes' worth)
# at 2.1 GB, in 320² blocks (this budget) at 1.4 GB, 9 % slower
# (python -m benchmarks.bench_memory, 2026-12-08).
MAX_BLOCK_VOXELS = 2 * 2048 * 2048
# Smallest block side a deep volume is cut into: well above the halo.
MIN_BLOCK_SIDE = 256


def block_side(block: int, depth: int) -> int:
    """The YX block side for a labelling ``depth`` planes deep: ``block`` at most, within :data:`MAX_BLOCK_VOXELS`."""
    fit = int(math.sqrt(MAX_BLOCK_VOXELS / max(depth, 1))) // 64 * 64
    return min(block, max(fit, MIN_BLOCK_SIDE))


def iter_label_blockwise(
    semantic, out, params: InstanceParams, block: int = 2048, halo: int = 64, id_offset: int = 0
) -> Generator[TileProgress, None, int]:
    """Like :func:`label_blockwise`, yielding progress (blocks done of all passes).

    Returns
    -------
    int
        The largest id written (``id_offset`` when there are no objects),
        as the generator's return value.
    """
    shape = tuple(semantic.shape)
    if tuple(out.shape) != shape:
        raise ValueError(f"output shape {tuple(out.shape)} differs from the semantic labels' {shape}")
    if len(shape) not in (2, 3):
        raise UserInputError(f"instances need a 2D (Y, X) or 3D (Z, Y, X) labelling, got shape {shape}")
    if block < 1 or halo < 1:
        raise ValueError(f"block ({block}) and halo ({halo}) must be positive")
    block = block_side(block, shape[0] if len(shape) == 3 else 1)
    h, w = shape[-2:]
    rows, cols = _block_starts(h, block), _block_starts(w, block)
    n_blocks = len(rows) * len(cols)

    if n_blocks == 1:
        # One block: exactly the in-memory post-processing.
        inst = instances_from_semantic(np.asarray(semantic[...]), params)
        n = int(inst.max())
        _check_fits(id_offset + n, out.dtype)
        out[...] = np.where(inst > 0, inst.astype(np.int64) + id_offset, 0).astype(out.dtype)
        yield TileProgress(1, 1)
        return id_offset + n

    total = 2 * n_blocks
    # Instances are computed without min_size: an object cut by a seam
    # would otherwise lose pieces smaller than min_size. Sizes are summed
    # over the merged object and min_size applied at the end.
    local_params = replace(params, min_size=0)
    # Only the inner part of the halo is compared: far out in the halo a
    # block lacks context (an object mostly outside its window may be split
    # or merged differently), while its neighbour's own labels there are
    # reliable because the neighbour saw a full halo beyond them.
    band = max(1, halo // 2)
    sets = _UnionFind()
    sizes: list[np.ndarray] = [np.zeros(1, np.int64)]
    n_ids = 0
    done = 0
    for y0, y1 in rows:
        for x0, x1 in cols:
            ey0, ey1, ex0, ex1 = max(0, y0 - halo), min(h, y1 + halo), max(0, x0 - halo), min(w, x1 + halo)
            local = instances_from_semantic(np.asarray(semantic[..., ey0:ey1, ex0:ex1]), local_params)
            core = local[..., y0 - ey0 : y1 - ey0, x0 - ex0 : x1 - ex0]
            counts = np.bincount(core.ravel(), minlength=int(local.max()) + 1)
            present = np.flatnonzero(counts[1:]) + 1
            lut = np.zeros(counts.size, np.int64)
            lut[present] = n_ids + 1 + np.arange(present.size)
            n_ids += present.size
            _check_fits(n_ids, out.dtype)
            sets.add(present.size)
            sizes.append(counts[present].astype(np.int64))
            out[..., y0:y1, x0:x1] = lut[core].astype(out.dtype)

            # Seams with finished neighbours: above (including both upper
            # corners) and to the left. Later neighbours do the other sides.
            mine, theirs = [], []
            if y0 > 0:
                sy0, sx0, sx1 = max(0, y0 - band), max(0, x0 - band), min(w, x1 + band)
                mine.append(lut[local[..., sy0 - ey0 : y0 - ey0, sx0 - ex0 : sx1 - ex0]].ravel())
                theirs.append(np.asarray(out[..., sy0:y0, sx0:sx1]).ravel())
            if x0 > 0:
                sx0 = max(0, x0 - band)
                mine.append(lut[local[..., y0 - ey0 : y1 - ey0, sx0 - ex0 : x0 - ex0]].ravel())
                theirs.append(np.asarray(out[..., y0:y1, sx0:x0]).ravel())
            if mine:
                _match_pieces(np.concatenate(mine), np.concatenate(theirs).astype(np.int64), sets)
            done += 1
            yield TileProgress(done, total)

    # Final ids: objects (sets of pieces) whose total size reaches min_size,
    # numbered in order of their first piece.
    roots = sets.roots()
    piece_sizes = np.concatenate(sizes)
    object_sizes = np.bincount(roots, weights=piece_sizes, minlength=roots.size)
    keep = object_sizes[roots] >= max(params.min_size, 1)
    keep[0] = False
    kept_roots = np.unique(roots[keep])
    n_final = int(kept_roots.size)
    _check_fits(id_offset + n_final, out.dtype)
    final = np.zeros(roots.size, dtype=out.dtype)
    final[keep] = id_offset + 1 + np.searchsorted(kept_roots, roots[keep])
    for y0, y1 in rows:
        for x0, x1 in cols:
            out[..., y0:y1, x0:x1] = final[np.asarray(out[..., y0:y1, x0:x1])]
            done += 1
            yield TileProgress(done, total)
    return id_offset + n_final


def label_blockwise(semantic, out, params: InstanceParams, block: int = 2048, halo: int = 64, id_offset: int = 0) -> int:
    """Instances of a (possibly larger-than-memory) semantic labelling, stitched across blocks.

    Parameters
    ----------
    semantic : array-like
        ``(Y, X)`` or ``(Z, Y, X)`` semantic labels (0 background, c = class
        c); numpy, memory map or zarr. Read one block (plus halo) at a time.
    out : array-like
        Writable integer array of the same shape receiving the instances
        (uint32 recommended: it also holds provisional ids while stitching).
    params : InstanceParams
        Post-processing parameters, as for :func:`~.postprocess.instances_from_semantic`.
        ``min_size`` applies to whole (stitched) objects.
    block : int
        Block side in Y and X; a 3D labelling is cut in Y and X only (full Z).
    halo : int
        Context on each side of a block, in pixels; objects up to about this
        size across a seam are split exactly as in one piece.
    id_offset : int
        Ids are ``id_offset + 1 .. id_offset + N``.

    Returns
    -------
    int
        The largest id (``id_offset + N``).

    Notes
    -----
    A labelling that fits in one block gives exactly
    :func:`~.postprocess.instances_from_semantic`. Across blocks, the
    watershed's object scale is estimated per block, so touching objects may
    be split slightly differently than in one pass; pieces matched across a
    seam are always merged, so no object is cut.
    """
    return drive(iter_label_blockwise(semantic, out, params, block, halo, id_offset))
