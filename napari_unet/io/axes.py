"""Axes of N-D images and lazy per-plane views of them.

An image's axes are named by a string of letters from ``"TZCYX"`` (each at
most once, Y and X always), in the image's own order: ``"YX"``, ``"ZYX"``,
``"TYX"``, ``"YXC"`` (RGB), ``"TZCYX"`` ... A model works on images
``(C, *spatial)`` where the spatial axes are ``"YX"`` (a 2D model, applied
plane by plane) or ``"ZYX"`` (a 3D model, applied volume by volume); the
remaining axes (T, and Z for a 2D model) are looped over.

:class:`Planes` gives each plane (or volume) as a lazy ``(C, *spatial)``
view: indexing the view reads only that region from the underlying array,
so numpy arrays, memory maps, dask and zarr arrays larger than memory are
never read whole.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator

import numpy as np

from napari_unet.errors import UserInputError

AXES = "TZCYX"


def _describe(shape) -> str:
    n = len(shape)
    return f"{tuple(int(s) for s in shape)} ({n} dimension{'s' if n != 1 else ''})"


def normalize_axes(axes: str | None, shape: tuple[int, ...], rgb: bool = False) -> str:
    """Validate axes against a shape, or guess them.

    Parameters
    ----------
    axes : str or None
        Letters from ``"TZCYX"`` (``"S"``, tifffile's samples, is read as
        ``"C"``), one per dimension of ``shape``; case-insensitive. None
        guesses from the shape.
    shape : tuple of int
        The image's shape.
    rgb : bool
        The last dimension is colour (napari's ``rgb`` layers).

    Returns
    -------
    str
        Upper-case axes, one letter per dimension.

    Raises
    ------
    UserInputError
        For unknown or repeated letters, missing Y or X, spatial axes out of
        Z, Y, X order, or a number of letters other than the image's
        dimensions; and when no guess fits (fewer than 2 or more than 5
        dimensions).

    Notes
    -----
    The guess: 2D is ``"YX"``; RGB, or 3+ dimensions whose last has size 3
    or 4, is ``"...YXC"``; 3D is ``"ZYX"``; 4D is ``"CZYX"`` when the first
    dimension has at most 4 elements, else ``"TZYX"``; 5D is ``"TZCYX"``
    (ImageJ's order).
    """
    shape = tuple(int(s) for s in shape)
    ndim = len(shape)
    if axes is None:
        return _guess_axes(shape, rgb)
    letters = str(axes).strip().upper().replace("S", "C")
    unknown = sorted(set(letters) - set(AXES))
    if unknown:
        raise UserInputError(f"axes {axes!r}: unknown letter(s) {''.join(unknown)!r}; use letters from {AXES!r}, e.g. 'ZYX' or 'YXC'")
    repeated = sorted({a for a in letters if letters.count(a) > 1})
    if repeated:
        raise UserInputError(f"axes {axes!r}: {''.join(repeated)!r} appears more than once")
    if "Y" not in letters or "X" not in letters:
        raise UserInputError(f"axes {axes!r} must contain Y and X")
    spatial = "".join(a for a in letters if a in "ZYX")
    if spatial not in ("YX", "ZYX"):
        # Label layers keep the image's axis order; with Z, Y, X in order a
        # plane of them is (Z,) Y, X without any transposition.
        raise UserInputError(f"axes {axes!r}: Z, Y and X must come in that order (e.g. 'ZYX', 'ZCYX', 'YXC')")
    if len(letters) != ndim:
        raise UserInputError(f"axes {letters!r} do not fit an image of shape {_describe(shape)}: give one letter per dimension")
    if rgb and letters[-1] != "C":
        raise UserInputError(f"axes {letters!r}: an RGB image's last axis is its colour channel (C)")
    return letters


def _guess_axes(shape: tuple[int, ...], rgb: bool) -> str:
    ndim = len(shape)
    if ndim < 2 or ndim > 5 or (rgb and ndim < 3):
        raise UserInputError(f"cannot tell the axes of an image of shape {_describe(shape)}: give them (e.g. 'ZYX', 'YXC')")
    if ndim == 2:
        return "YX"
    if rgb or shape[-1] in (3, 4):
        return "TZ"[5 - ndim :] + "YXC"
    if ndim == 3:
        return "ZYX"
    if ndim == 4:
        return "CZYX" if shape[0] <= 4 else "TZYX"
    return "TZCYX"


def axes_from_tiff(path: str | os.PathLike) -> str | None:
    """The axes a TIFF file declares (ImageJ, OME or tifffile metadata), or None.

    tifffile names the axes of the first series; its ``S`` (samples) is
    read as C. Returns None when the file is unreadable, declares no axes
    (tifffile's generic ``Q``/``I`` letters) or uses letters this package
    does not handle.
    """
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            axes, shape = series.axes, series.shape
    except Exception:  # unreadable files are reported by the reader itself
        return None
    letters = axes.upper().replace("S", "C")
    if len(letters) != len(shape) or set(letters) - set(AXES) or len(set(letters)) != len(letters):
        return None
    try:
        return normalize_axes(letters, shape)
    except UserInputError:
        return None


# -- lazy views ---------------------------------------------------------------


def _is_index(k) -> bool:
    return isinstance(k, (int, np.integer)) and not isinstance(k, (bool, np.bool_))


class ArrayView:
    """A lazy view of some axes of an array, in another order, reading only what is indexed.

    ``data[fixed]`` with the remaining axes reordered as ``view_axes``,
    plus (when ``view_axes`` holds -1) a new axis of length 1. Indexing the
    view with integers and slices (steps included) reads just that region
    of the underlying array (numpy, memmap, dask, zarr, anything sliceable)
    and returns numpy; assigning to it writes just that region.

    Parameters
    ----------
    data : array-like
        The underlying array.
    fixed : tuple
        One entry per axis of ``data``: an int selects that position, None
        keeps the axis.
    view_axes : tuple of int
        The view's axes as axis numbers of ``data`` (each kept axis once),
        or -1 for an added axis of length 1.
    """

    def __init__(self, data, fixed: tuple, view_axes: tuple[int, ...]) -> None:
        self.data = data
        self.fixed = tuple(fixed)
        self.view_axes = tuple(view_axes)
        kept = [i for i, f in enumerate(self.fixed) if f is None]
        if sorted(a for a in self.view_axes if a >= 0) != kept:
            raise ValueError("view_axes must list each kept axis of data exactly once")
        self._kept = kept
        self.shape = tuple(1 if a < 0 else int(data.shape[a]) for a in self.view_axes)
        self.dtype = np.dtype(data.dtype)

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    def __len__(self) -> int:
        return self.shape[0]

    def __repr__(self) -> str:
        return f"ArrayView(shape={self.shape}, dtype={self.dtype}, of {type(self.data).__name__})"

    def _normalize(self, key) -> tuple[list, list[int]] | None:
        """Per view axis an int (non-negative) or slice, and positions of None; None if unsupported."""
        if not isinstance(key, tuple):
            key = (key,)
        if any(not (_is_index(k) or isinstance(k, slice) or k is None or k is Ellipsis) for k in key):
            return None
        if sum(k is Ellipsis for k in key) > 1:
            raise IndexError("an index can only have a single ellipsis ('...')")
        n_real = sum(1 for k in key if k is not None and k is not Ellipsis)
        if n_real > self.ndim:
            raise IndexError(f"too many indices for a view of {self.ndim} dimensions")
        expanded = []
        for k in key:
            if k is Ellipsis:
                expanded.extend([slice(None)] * (self.ndim - n_real))
            else:
                expanded.append(k)
        if Ellipsis not in key:
            expanded.extend([slice(None)] * (self.ndim - n_real))
        per_axis, new_axes, axis = [], [], 0
        out_pos = 0
        for k in expanded:
            if k is None:
                new_axes.append(out_pos)
                out_pos += 1
                continue
            n = self.shape[axis]
            if _is_index(k):
                k = int(k)
                if not -n <= k < n:
                    raise IndexError(f"index {k} is out of bounds for axis {axis} with size {n}")
                per_axis.append(k % n)
            else:
                per_axis.append(k)
                out_pos += 1
            axis += 1
        return per_axis, new_axes

    def _data_key(self, per_axis: list) -> tuple:
        """The key into ``data``; view ints become length-1 slices (squeezed after reading)."""
        key = list(self.fixed)
        for k, a in zip(per_axis, self.view_axes):
            if a >= 0:
                key[a] = slice(k, k + 1) if isinstance(k, int) else k
        return tuple(key)

    def _perm(self) -> list[int]:
        """Axes of the block read from ``data`` (kept axes, data order) in view order."""
        return [self._kept.index(a) for a in self.view_axes if a >= 0]

    def __getitem__(self, key) -> np.ndarray:
        parsed = self._normalize(key)
        if parsed is None:
            # Fancy indexing: rare here (napari/samples use basic slices).
            return np.asarray(self)[key]
        per_axis, new_axes = parsed
        block = np.asarray(self.data[self._data_key(per_axis)])
        block = block.transpose(self._perm())
        if -1 in self.view_axes:
            block = np.expand_dims(block, self.view_axes.index(-1))
        post = tuple(0 if isinstance(k, int) else (k if a < 0 else slice(None)) for k, a in zip(per_axis, self.view_axes))
        block = block[post]
        for pos in new_axes:
            block = np.expand_dims(block, pos)
        return block

    def __setitem__(self, key, value) -> None:
        parsed = self._normalize(key)
        if parsed is None or parsed[1]:
            raise IndexError("only integers and slices can be assigned to")
        per_axis, _ = parsed
        # The region's shape with length-1 axes where the key had ints.
        region = tuple(
            1 if isinstance(k, int) else len(range(*k.indices(n))) for k, n in zip(per_axis, self.shape)
        )
        squeezed = tuple(s for s, k in zip(region, per_axis) if not isinstance(k, int))
        value = np.broadcast_to(np.asarray(value, dtype=self.dtype), squeezed).reshape(region)
        if -1 in self.view_axes:
            value = value[tuple(0 if a < 0 else slice(None) for a in self.view_axes)]
        value = value.transpose(np.argsort(self._perm()))
        self.data[self._data_key(per_axis)] = value

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        block = self[...]
        return block if dtype is None else block.astype(dtype, copy=False)


def view(data, fixed: tuple, view_axes: tuple[int, ...]):
    """A view of ``data`` as :class:`ArrayView` describes; a plain numpy view for numpy input.

    Numpy arrays and memory maps take numpy's own zero-copy views (reads
    and writes go through them); anything else gets an :class:`ArrayView`.
    """
    if isinstance(data, np.ndarray):
        key = tuple(slice(None) if f is None else f for f in fixed)
        kept = [i for i, f in enumerate(fixed) if f is None]
        block = data[key].transpose([kept.index(a) for a in view_axes if a >= 0])
        if -1 in view_axes:
            block = np.expand_dims(block, view_axes.index(-1))
        return block
    return ArrayView(data, fixed, view_axes)


class Planes:
    """Lazy per-plane (2D model) or per-volume (3D model) view of an N-D image.

    Parameters
    ----------
    data : array-like
        The image: numpy, memmap, dask, zarr, ...; never read whole here.
    axes : str
        Its axes (see :func:`normalize_axes`); validated against its shape.
    spatial_ndim : int
        2 for a 2D model (planes ``(C, Y, X)``), 3 for a 3D model (volumes
        ``(C, Z, Y, X)``; the image needs a Z axis).

    Attributes
    ----------
    channels : int
        Length of the C axis, 1 without one.
    spatial_axes : str
        ``"YX"`` or ``"ZYX"``.
    loop_axes : str
        Axes looped over (neither C nor spatial), in the image's order.
    label_axes : str
        The image's axes without C: the axes of its annotation and result
        labels.
    """

    def __init__(self, data, axes: str, spatial_ndim: int = 2) -> None:
        if spatial_ndim not in (2, 3):
            raise UserInputError(f"spatial dimensions must be 2 or 3, not {spatial_ndim}")
        self.data = data
        self.axes = normalize_axes(axes, tuple(data.shape))
        self.spatial_ndim = spatial_ndim
        self.spatial_axes = "ZYX" if spatial_ndim == 3 else "YX"
        if spatial_ndim == 3 and "Z" not in self.axes:
            raise UserInputError(f"a 3D model needs a Z axis, but the image's axes are {self.axes!r}")
        shape = dict(zip(self.axes, (int(s) for s in data.shape)))
        self.channels = shape.get("C", 1)
        self.spatial_shape = tuple(shape[a] for a in self.spatial_axes)
        self.loop_axes = "".join(a for a in self.axes if a != "C" and a not in self.spatial_axes)
        self.loop_shape = tuple(shape[a] for a in self.loop_axes)
        self.label_axes = self.axes.replace("C", "")
        self.label_shape = tuple(shape[a] for a in self.label_axes)
        # The view's axes (C, *spatial) as axis numbers of data; -1 adds C.
        self._view_axes = (self.axes.index("C") if "C" in self.axes else -1,) + tuple(self.axes.index(a) for a in self.spatial_axes)

    @property
    def shape(self) -> tuple[int, ...]:
        """The image's shape."""
        return tuple(int(s) for s in self.data.shape)

    def __len__(self) -> int:
        """Number of planes (or volumes)."""
        return math.prod(self.loop_shape)

    def __repr__(self) -> str:
        return f"Planes(axes={self.axes!r}, shape={self.shape}, spatial={self.spatial_axes!r}, planes={len(self)})"

    def indices(self) -> Iterator[tuple[int, ...]]:
        """Every plane's index over the loop axes (one empty tuple when there is one plane)."""
        return iter(np.ndindex(*self.loop_shape)) if self.loop_shape else iter([()])

    def _check(self, index) -> tuple[int, ...]:
        index = tuple(int(i) for i in index)
        if len(index) != len(self.loop_axes) or any(not 0 <= i < n for i, n in zip(index, self.loop_shape)):
            raise IndexError(f"plane index {index} does not fit loop axes {self.loop_axes!r} of shape {self.loop_shape}")
        return index

    def image(self, index=()):
        """The plane (or volume) at ``index`` as a lazy ``(C, *spatial)`` array.

        Numpy input gives a numpy view; other arrays an :class:`ArrayView`
        that reads only the regions it is indexed with.
        """
        at = dict(zip(self.loop_axes, self._check(index)))
        fixed = tuple(at.get(a) for a in self.axes)
        return view(self.data, fixed, self._view_axes)

    def label_index(self, index=()) -> tuple:
        """Index into a label-shaped array (``label_shape``) selecting the plane's ``(*spatial)``."""
        at = dict(zip(self.loop_axes, self._check(index)))
        return tuple(at.get(a, slice(None)) for a in self.label_axes)

    def label_box(self, index=(), box: tuple = ()) -> tuple:
        """Like :meth:`label_index`, with ``box`` (slices of the spatial axes, in their order) in place of the whole plane."""
        spatial = iter(box)
        return tuple(next(spatial, slice(None)) if isinstance(k, slice) else k for k in self.label_index(index))

    def label_view(self, labels, index=()):
        """A writable ``(*spatial)`` view of a label-shaped array (numpy, memmap, zarr) at ``index``."""
        if tuple(labels.shape) != self.label_shape:
            raise UserInputError(f"labels of shape {tuple(labels.shape)} do not match the image's shape without channels {self.label_shape} (axes {self.label_axes!r})")
        key = self.label_index(index)
        fixed = tuple(None if isinstance(k, slice) else k for k in key)
        return view(labels, fixed, tuple(i for i, f in enumerate(fixed) if f is None))
