"""On-disk arrays for images and results larger than memory.

- :func:`open_output`: a writable zarr or TIFF array, created under a
  temporary name and moved into place only when writing succeeded, so a
  failed or interrupted prediction never leaves a partial result at the
  final path.
- :func:`open_lazy`: read a zarr store or a TIFF without loading it.
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from napari_unet.errors import UserInputError
from napari_unet.io.atomic import AtomicGroup, atomic_group
from napari_unet.io.tiff import TIFF_SUFFIXES

ZARR_SUFFIXES = (".zarr",)
# Classic TIFF addresses 4 GB with 32-bit offsets; stay well below.
_BIGTIFF_BYTES = 2**31


def _kind(path: Path) -> str:
    name = path.name.lower()
    if name.endswith(ZARR_SUFFIXES):
        return "zarr"
    if name.endswith(TIFF_SUFFIXES):
        return "tiff"
    raise UserInputError(f"cannot write {str(path)!r}: the output must end with .zarr, .tif or .tiff")


def default_chunks(shape: tuple[int, ...], spatial_ndim: int = 2, block: int = 1024) -> tuple[int, ...]:
    """The one chunking rule for label-shaped stores: a plane (or volume) is written at a time.

    Parameters
    ----------
    shape : tuple of int
        The store's shape, spatial axes last.
    spatial_ndim : int
        2, or 3 when the last three axes are one volume (a 3D model's Z Y X).
    block : int
        Chunk side in Y and X.

    Returns
    -------
    tuple of int
        One deep along the loop axes, at most ``block`` in Y and X and at
        most 64 along a spatial Z (a volume is read and written whole, so
        its chunks stay a few MB).
    """
    lead = (1,) * (len(shape) - spatial_ndim)
    z = (max(1, min(int(shape[-3]), 64)),) if spatial_ndim == 3 else ()
    return lead + z + tuple(max(1, min(int(s), block)) for s in shape[-2:])


def scratch_zarr(path: str | os.PathLike, shape, dtype):
    """A zarr array of zeros for intermediate data, written in place (no temporary name, no fsync)."""
    shape = tuple(int(s) for s in shape)
    return _create_zarr(Path(path), shape, dtype, default_chunks(shape))


def _create_zarr(path: Path, shape, dtype, chunks):
    import zarr

    # open_array(mode="w") creates the array on zarr 2.16+ and zarr 3 alike.
    return zarr.open_array(str(path), mode="w", shape=shape, dtype=dtype, chunks=chunks, fill_value=0)


def _create_tiff(path: Path, shape, dtype, axes: str | None):
    import tifffile

    big = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize > _BIGTIFF_BYTES
    metadata = {"axes": axes} if axes else {}
    # Uncompressed and contiguous: the only layout tifffile can memory-map.
    array = tifffile.memmap(str(path), shape=shape, dtype=dtype, bigtiff=big, photometric="minisblack", metadata=metadata)
    _reserve(path)
    return array


def _reserve(path: Path) -> None:
    """Allocate a memory-mapped file's blocks now: a full disk is then an OSError here,
    not a SIGBUS that kills the process when a page is first written."""
    if not hasattr(os, "posix_fallocate"):
        return
    fd = os.open(path, os.O_RDWR)
    try:
        os.posix_fallocate(fd, 0, os.fstat(fd).st_size)
    except OSError as exc:
        if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
            raise
    finally:
        os.close(fd)


@contextlib.contextmanager
def open_output(
    path: str | os.PathLike, shape, dtype, chunks=None, axes: str | None = None, group: AtomicGroup | None = None, durable: bool = True
) -> Iterator[object]:
    """A writable on-disk array, moved to ``path`` only when the block succeeds.

    Parameters
    ----------
    path : str or path-like
        ``*.zarr`` (a zarr array folder, compressed, chunked) or ``*.tif`` /
        ``*.tiff`` (uncompressed, memory-mapped; BigTIFF above 2 GB).
    shape : tuple of int
        Array shape.
    dtype : numpy dtype
        Pixel type.
    chunks : tuple of int, optional
        zarr chunks (default :func:`default_chunks`); ignored for TIFF.
    axes : str, optional
        Axis letters (e.g. ``"ZYX"``) recorded in the TIFF's metadata.
    group : AtomicGroup, optional
        Several outputs of one operation: this one is moved into place with
        the others when the group commits
        (:func:`~napari_unet.io.atomic.atomic_group`), not when this block
        ends. By default it is a group of its own.

    Yields
    ------
    array-like
        zarr array or numpy memmap of zeros, written with ``arr[...] = ...``.

    Raises
    ------
    UserInputError
        For an unknown extension, a missing folder, or an output that
        cannot be written there (:class:`~napari_unet.io.atomic.OutputError`).

    Notes
    -----
    The data lives under a hidden temporary name in the destination folder
    while it is written; on success it is renamed onto ``path`` (replacing
    any previous result, a zarr store too, never writing inside it), on any
    exception it is deleted and the previous result is kept.
    """
    path = Path(path)
    kind = _kind(path)
    shape = tuple(int(s) for s in shape)
    with contextlib.ExitStack() as stack:
        if group is None:
            group = stack.enter_context(atomic_group(durable))
        if kind == "zarr":
            tmp = group.new_dir(path)
            array = _create_zarr(tmp, shape, dtype, tuple(chunks) if chunks else default_chunks(shape))
        else:
            tmp = group.new_file(path)
            array = _create_tiff(tmp, shape, dtype, axes)
        yield array
        if kind == "tiff":
            array.flush()
        del array


def open_lazy(path: str | os.PathLike):
    """Open a zarr store or a TIFF for reading without loading its pixels.

    Parameters
    ----------
    path : str or path-like
        A ``.zarr`` array or group (a group's full-resolution level: the
        first OME-Zarr multiscale dataset, else its first array), or a TIFF
        (memory-mapped when uncompressed, else read chunk by chunk through
        tifffile's zarr store; level 0 of a pyramid).

    Returns
    -------
    array-like
        With ``shape``, ``dtype``, ``ndim`` and slicing that reads only the
        requested region. A TIFF read through tifffile's zarr store keeps
        its file open until ``array.store.close()``.

    Raises
    ------
    UserInputError
        If the path is missing or not a readable array.
    """
    import zarr

    path = Path(path)
    if not path.exists():
        raise UserInputError(f"file not found: {str(path)!r}")
    name = path.name.lower()
    try:
        if name.endswith(TIFF_SUFFIXES):
            import tifffile

            try:
                return tifffile.memmap(str(path), mode="r")
            except ValueError:  # compressed or tiled: not memory-mappable
                return _full_resolution(zarr.open(tifffile.imread(str(path), aszarr=True), mode="r"))
        return _full_resolution(zarr.open(str(path), mode="r"))
    except UserInputError:
        raise
    except Exception as exc:  # zarr/tifffile raise many types for unreadable data
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UserInputError(f"cannot read {str(path)!r} as an image ({reason})") from exc


def _full_resolution(node):
    """The array itself, or a group's full-resolution array."""
    if hasattr(node, "shape") and hasattr(node, "dtype"):
        return node
    attrs = dict(node.attrs)
    multiscales = attrs.get("multiscales") or attrs.get("ome", {}).get("multiscales")
    if multiscales:
        return node[multiscales[0]["datasets"][0]["path"]]
    keys = sorted(k for k, _ in node.arrays())
    if not keys:
        raise UserInputError("the zarr group holds no array")
    return node[keys[0]]



#: Bytes copied at a time by :func:`copy_to_output`.
COPY_SLAB_BYTES = 64 * 2**20


def copy_to_output(source, path: str | os.PathLike, axes: str | None = None) -> Path:
    """Copy an array (numpy, memmap, zarr, dask) into a new on-disk output, slab by slab.

    Used to export result layers that live on disk (larger than memory):
    only about :data:`COPY_SLAB_BYTES` of ``source`` is read at a time, along
    its first axis, so the export never holds the whole array.

    Parameters
    ----------
    source : array-like
        What to copy; read with basic slicing only.
    path : str or path-like
        ``*.tif`` / ``*.tiff`` or ``*.zarr``, written atomically (:func:`open_output`).
    axes : str, optional
        Axis letters recorded in a TIFF's metadata.

    Returns
    -------
    pathlib.Path
        The written path.
    """
    shape = tuple(int(s) for s in source.shape)
    dtype = np.dtype(source.dtype)
    row_bytes = int(np.prod(shape[1:], dtype=np.int64)) * dtype.itemsize if len(shape) > 1 else dtype.itemsize
    step = max(1, COPY_SLAB_BYTES // max(row_bytes, 1))
    with open_output(path, shape, dtype, axes=axes) as out:
        for start in range(0, shape[0] if shape else 1, step):
            out[start : start + step] = np.asarray(source[start : start + step])
    return Path(path)
