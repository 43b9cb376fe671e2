"""Tiled prediction with overlap and smooth blending, in bounded memory.

The U-Net paper's overlap-tile idea: predict overlapping tiles and keep the
centre of each, here blended with a smooth window so seams do not show.
Tiles are processed one row of tiles at a time; only a band of one tile's
height is accumulated, and finished rows are written to ``out`` (which may
be a numpy array, a memory map or a zarr array), so memory per call is
bounded by the tile size and the image width, not the image area.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch

from .normalize import apply_range


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


def blend_window(tile: int, overlap: int) -> np.ndarray:
    """1D weights: a sine² ramp over the overlap at each end, 1 in between, never 0."""
    w = np.ones(tile, dtype=np.float32)
    ramp = min(overlap, tile // 2)
    if ramp > 0:
        r = np.sin(0.5 * np.pi * (np.arange(ramp, dtype=np.float32) + 0.5) / ramp) ** 2
        w[:ramp] = r
        w[tile - ramp :] = r[::-1]
    return w


def _read_padded(image, y: int, rows: int, hp: int, wp: int, low: float, high: float) -> np.ndarray:
    """Rows ``y:y+rows`` of the normalised image, reflect-padded to ``hp`` x ``wp``."""
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
) -> Iterator[TileProgress]:
    """Predict class probabilities tile by tile into ``out``, yielding progress.

    Parameters
    ----------
    model : torch.nn.Module
        Network returning logits; put in eval mode here.
    image : array-like
        Raw image ``(C, Y, X)``; anything sliceable (numpy, memmap, dask, zarr).
        Only one band of tile rows is read at a time.
    low, high : float
        Intensities mapped to 0 and 1 (whole-image percentiles).
    out : array-like
        Writable ``(n_classes, Y, X)`` float array receiving probabilities.
    device : torch.device
        Where to run the network.
    tile, overlap : int
        Tile side and overlap in pixels. An image no larger than one tile is
        predicted in one pass.
    batch_size : int
        Tiles per forward pass (more helps on GPUs).
    mixed_precision : bool
        Autocast on CUDA.

    Yields
    ------
    TileProgress
    """
    c, h, w = image.shape
    # Work on the image reflect-padded to the network's size multiple, so no
    # tile is padded inside the network: a tile at the image edge then sees
    # exactly what a whole-image pass sees, and tiled equals untiled there.
    m = model.config.size_multiple
    hp, wp = -(-h // m) * m, -(-w // m) * m
    tile = max(m, tile // m * m)
    th, tw = min(tile, hp), min(tile, wp)
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
