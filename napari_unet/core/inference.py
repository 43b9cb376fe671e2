"""Tiled prediction with overlap and smooth blending, in bounded memory.

The U-Net paper's overlap-tile idea: predict overlapping tiles and keep the
centre of each, here blended with a smooth window so seams do not show.
Tiles are processed one row of tiles at a time; only a band of one tile's
height is accumulated, and finished rows are written to ``out`` (which may
be a numpy array, a memory map or a zarr array), so memory per call is
bounded by the tile size and the image width, not the image area.

Volumes ``(C, Z, Y, X)`` for a 3D U-Net are tiled over Z, Y and X the same
way: the band is one tile row in Y over the whole depth and width
(``Z x tile x X`` voxels), all Z and X tiles of that row are predicted, and
the finished rows go to ``out[:, :, y0:y1, :]``. The band buffers hold
``(n_classes + 1 + C) * Z * tile * X`` floats, not the volume (Z is the
smallest axis of typical stacks: 64 x 2048 x 2048 with 96-voxel tiles gives
about 200 MB for one channel and two classes), plus one tile's activations
in the network.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from napari_unet.core.half_contrast import place_edges
from napari_unet.core.normalize import apply_range


@dataclass(frozen=True)
class TileProgress:
    """Tiles done out of the total, reported after every batch of tiles."""

    done: int
    total: int


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of tiles of size ``tile`` covering ``length`` with at least ``overlap``."""
    if length <= tile:
        return [0]
    stride = tile - overlap
    starts = list(range(0, length - tile, stride))
    starts.append(length - tile)
    return starts


def fitted_tile(length: int, tile: int, overlap: int, multiple: int) -> int:
    """The smallest tile side, a multiple of ``multiple`` and at most ``tile``, that covers ``length`` with as few tiles as ``tile`` does.

    Tiles of the largest side leave the last one mostly overlapping its
    neighbour: on a 2048² image, 512² tiles overlapping by 64 read 1.56x
    the image's pixels through the network, tiles of 464² (the same 5 per
    axis, spread evenly) 1.28x. Never larger than asked, so memory per
    forward pass never grows.
    """
    if length <= tile:
        return length
    count = len(tile_starts(length, tile, overlap))
    even = -(-(length - overlap) // count) + overlap
    return min(tile, -(-even // multiple) * multiple)


def blend_window(tile: int, overlap: int) -> np.ndarray:
    """1D weights: a sine² ramp over the overlap at each end, 1 in between, never 0."""
    w = np.ones(tile, dtype=np.float32)
    ramp = min(overlap, tile // 2)
    if ramp > 0:
        r = np.sin(0.5 * np.pi * (np.arange(ramp, dtype=np.float32) + 0.5) / ramp) ** 2
        w[:ramp] = r
        w[tile - ramp :] = r[::-1]
    return w


def _edge_windows(length: int, tile: int, overlap: int, starts: list[int]) -> list[np.ndarray]:
    """One :func:`blend_window` per tile start, without the ramp on a side at the (padded) border.

    A tile's side on the border sees exactly what a whole-volume pass sees
    there, so it keeps full weight; only sides inside the volume, which lack
    context, fade out. 3D tiles are small next to the network's receptive
    field, which makes this matter more than in 2D.
    """
    if length <= tile:
        return [np.ones(tile, dtype=np.float32)]
    full = blend_window(tile, overlap)
    ramp = min(overlap, tile // 2)
    windows = []
    for s in starts:
        w = full.copy()
        if s == 0:
            w[:ramp] = 1.0
        if s + tile >= length:
            w[tile - ramp :] = 1.0
        windows.append(w)
    return windows


def default_tiling(ndim: int, gpu: bool) -> tuple[int, int]:
    """Default ``(tile, overlap)`` for 2D images or 3D volumes.

    A 3D tile is a cube of ``tile`` voxels per side (clipped to the volume),
    so its side is much smaller than a 2D tile's for a similar cost and
    memory per forward pass; the overlap shrinks with it (the 3D CPU net's
    receptive field is also smaller, see :func:`~napari_unet.core.model.default_config`).
    """
    if ndim == 3:
        return (160 if gpu else 96), 32
    return (1024 if gpu else 512), 64


def _read_padded(image, y: int, rows: int, hp: int, wp: int, low: float, high: float, zp: int | None = None) -> np.ndarray:
    """Rows ``y:y+rows`` of the normalised image, reflect-padded to ``hp`` x ``wp`` (and Z to ``zp``).

    ``image`` is ``(C, Y, X)``, or ``(C, Z, Y, X)`` when ``zp`` is given (a
    3D band spans the whole depth).
    """
    if zp is None:
        c, h, w = image.shape
        band = apply_range(np.asarray(image[:, y : min(y + rows, h), :]), low, high)
        pad_y, pad_x = y + rows - min(y + rows, h), wp - w
        if pad_y or pad_x:
            # The band is only part of the image: padding rows past the image's
            # end must mirror the image's last rows, which lie in this band
            # because the band always reaches the image's end when it pads.
            mode = "reflect" if pad_y < band.shape[1] and pad_x < w else "edge"
            band = np.pad(band, ((0, 0), (0, pad_y), (0, pad_x)), mode=mode)
        return band
    c, d, h, w = image.shape
    band = apply_range(np.asarray(image[:, :, y : min(y + rows, h), :]), low, high)
    pads = (zp - d, y + rows - min(y + rows, h), wp - w)
    if any(pads):
        # As in 2D, one rule for all axes (reflect unless an axis is too
        # short), the same rule the network applies to its own input.
        mode = "reflect" if all(p < n for p, n in zip(pads, band.shape[1:])) else "edge"
        band = np.pad(band, ((0, 0),) + tuple((0, p) for p in pads), mode=mode)
    return band


def iter_predict_tiled(
    model: torch.nn.Module,
    image,
    low: float,
    high: float,
    out,
    device: torch.device,
    tile: int = 512,
    overlap: int = 64,
    batch_size: int = 1,
    mixed_precision: bool = True,
    half_contrast: bool = False,
) -> Iterator[TileProgress]:
    """Predict class probabilities tile by tile into ``out``, yielding progress.

    Parameters
    ----------
    model : torch.nn.Module
        Network returning logits; put in eval mode here.
    image : array-like
        Raw image ``(C, Y, X)``, or volume ``(C, Z, Y, X)`` for a 3D model;
        anything sliceable (numpy, memmap, dask, zarr). Only one band of
        tile rows (in 3D: over the whole depth) is read at a time.
    low, high : float
        Intensities mapped to 0 and 1 (whole-image percentiles).
    out : array-like
        Writable ``(n_classes, *spatial)`` float array receiving
        probabilities, written band by band in increasing Y: ``out[:, y0:y1]``
        in 2D, ``out[:, :, y0:y1]`` in 3D, each row once.
    device : torch.device
        Where to run the network.
    tile, overlap : int
        Tile side and overlap in pixels (in 3D: a cube's side, clipped to the
        volume on each axis; see :func:`default_tiling`). An image no larger
        than one tile is predicted in one pass.
    batch_size : int
        Tiles per forward pass (more helps on GPUs).
    mixed_precision : bool
        Autocast on CUDA.
    half_contrast : bool
        Place object edges at half contrast in each tile
        (:func:`~napari_unet.core.half_contrast.place_edges`; 2D models of
        one channel and two classes only).

    Yields
    ------
    TileProgress
    """
    if image.ndim == 4:
        yield from _iter_predict_tiled_3d(model, image, low, high, out, device, tile, overlap, batch_size, mixed_precision)
        return
    c, h, w = image.shape
    # Work on the image reflect-padded to the network's size multiple, so no
    # tile is padded inside the network: a tile at the image edge then sees
    # exactly what a whole-image pass sees, and tiled equals untiled there.
    m = model.config.size_multiple
    hp, wp = -(-h // m) * m, -(-w // m) * m
    tile = max(m, tile // m * m)
    # Overlap beyond half a tile would give tiles no stride (and adds nothing).
    overlap = min(overlap, tile // 2)
    th, tw = fitted_tile(hp, tile, overlap, m), fitted_tile(wp, tile, overlap, m)
    ys, xs = tile_starts(hp, th, overlap), tile_starts(wp, tw, overlap)
    wy, wx = blend_window(th, overlap if hp > th else 0), blend_window(tw, overlap if wp > tw else 0)
    weight2d = wy[:, None] * wx[None, :]
    n_classes = out.shape[0]
    total, done = len(ys) * len(xs), 0
    use_amp = mixed_precision and device.type == "cuda"
    model.eval()
    acc = np.zeros((n_classes, th, wp), dtype=np.float32)
    wsum = np.zeros((th, wp), dtype=np.float32)
    # acc/wsum hold image rows [band_top, band_top + th). Each tile row
    # starts at band_top: rows above the next tile row's start are final
    # once this tile row is done, so they are written out and the rest of
    # the band shifts up.
    band_top = 0
    for row, y in enumerate(ys):
        band = _read_padded(image, y, th, hp, wp, low, high)
        for b in range(0, len(xs), batch_size):
            chunk = xs[b : b + batch_size]
            batch = torch.from_numpy(np.stack([band[:, :, x : x + tw] for x in chunk])).to(device)
            with torch.inference_mode(), torch.autocast("cuda", enabled=use_amp):
                probs = torch.softmax(model(batch).float(), dim=1).cpu().numpy()
            for x, p in zip(chunk, probs):
                if half_contrast:
                    p = place_edges(p, band[0, :, x : x + tw])
                acc[:, :, x : x + tw] += p * weight2d
                wsum[:, x : x + tw] += weight2d
            done += len(chunk)
            yield TileProgress(done, total)
        next_y = ys[row + 1] if row + 1 < len(ys) else hp
        final = next_y - band_top
        if band_top < h:
            rows = min(next_y, h) - band_top
            out[:, band_top : band_top + rows, :] = acc[:, :rows, :w] / wsum[None, :rows, :w]
        keep = th - final
        acc[:, :keep] = acc[:, final : final + keep]
        acc[:, keep:] = 0
        wsum[:keep] = wsum[final : final + keep]
        wsum[keep:] = 0
        band_top = next_y


def _iter_predict_tiled_3d(model, image, low, high, out, device, tile, overlap, batch_size, mixed_precision) -> Iterator[TileProgress]:
    """:func:`iter_predict_tiled` for volumes ``(C, Z, Y, X)``: the 2D scheme with Z tiles in each band."""
    c, d, h, w = image.shape
    # As in 2D: work on the volume padded to the network's size multiple, so
    # a tile at the border sees what a whole-volume pass sees.
    m = model.config.size_multiple
    zp, hp, wp = (-(-n // m) * m for n in (d, h, w))
    tile = max(m, tile // m * m)
    # Overlap beyond half a tile would give tiles no stride (and adds nothing).
    overlap = min(overlap, tile // 2)
    tz, th, tw = (fitted_tile(n, tile, overlap, m) for n in (zp, hp, wp))
    zs, ys, xs = tile_starts(zp, tz, overlap), tile_starts(hp, th, overlap), tile_starts(wp, tw, overlap)
    wz, wy, wx = (_edge_windows(n, t, overlap, st) for n, t, st in ((zp, tz, zs), (hp, th, ys), (wp, tw, xs)))
    n_classes = out.shape[0]
    positions = [(i, j) for i in range(len(zs)) for j in range(len(xs))]
    total, done = len(ys) * len(positions), 0
    use_amp = mixed_precision and device.type == "cuda"
    model.eval()
    acc = np.zeros((n_classes, zp, th, wp), dtype=np.float32)
    wsum = np.zeros((zp, th, wp), dtype=np.float32)
    band_top = 0
    for row, y in enumerate(ys):
        band = _read_padded(image, y, th, hp, wp, low, high, zp=zp)
        for b in range(0, len(positions), batch_size):
            chunk = positions[b : b + batch_size]
            batch = torch.from_numpy(np.stack([band[:, zs[i] : zs[i] + tz, :, xs[j] : xs[j] + tw] for i, j in chunk])).to(device)
            with torch.inference_mode(), torch.autocast("cuda", enabled=use_amp):
                probs = torch.softmax(model(batch).float(), dim=1).cpu().numpy()
            for (i, j), p in zip(chunk, probs):
                z, x = zs[i], xs[j]
                weight = wz[i][:, None, None] * wy[row][None, :, None] * wx[j][None, None, :]
                acc[:, z : z + tz, :, x : x + tw] += p * weight
                wsum[z : z + tz, :, x : x + tw] += weight
            done += len(chunk)
            yield TileProgress(done, total)
        del band
        next_y = ys[row + 1] if row + 1 < len(ys) else hp
        final = next_y - band_top
        if band_top < h:
            rows = min(next_y, h) - band_top
            out[:, :, band_top : band_top + rows, :] = acc[:, :d, :rows, :w] / wsum[None, :d, :rows, :w]
        keep = th - final
        acc[:, :, :keep] = acc[:, :, final : final + keep]
        acc[:, :, keep:] = 0
        wsum[:, :keep] = wsum[:, final : final + keep]
        wsum[:, keep:] = 0
        band_top = next_y
