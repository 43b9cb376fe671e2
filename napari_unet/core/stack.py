"""Stacks, time series and several images: training data and prediction plane by plane.

A 2D model trains on the planes where strokes were painted, from any number
of images each with its own annotations, and predicts every plane (or the
ones asked for) of an N-D image into label-shaped outputs. A 3D model does
the same with whole volumes. Each plane goes through
:func:`napari_unet.core.blockwise.predict_plane`, so memory stays bounded by
a plane's blocks, never the stack.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass

import numpy as np

from napari_unet.core.inference import TileProgress
from napari_unet.core.model import channel_mismatch, model_ndim
from napari_unet.core.postprocess import InstanceParams
from napari_unet.core.progress import relay
from napari_unet.errors import UserInputError
from napari_unet.io.axes import Planes, view


def _read_plane(planes: Planes, index, which: str) -> np.ndarray:
    """One painted plane as float32, refusing what training cannot use, named after its image.

    Lazily opened files are decoded here for the first time, so a damaged
    strip or tile surfaces here, before training starts, as a one-line error.
    """
    try:
        image = np.asarray(planes.image(index), dtype=np.float32)
    except (UserInputError, MemoryError):
        raise
    except Exception as exc:  # tifffile, imagecodecs and zarr raise many types for damaged data
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UserInputError(f"cannot read {which} (damaged or truncated file? {reason})") from exc
    if not np.all(np.isfinite(image)):
        where = f" (plane {', '.join(str(i) for i in index)})" if index else ""
        raise UserInputError(f"{which} contains NaN or infinite pixel values{where}")
    return image


def painted_indices(planes: Planes, annotations) -> list[tuple]:
    """Loop indices of the planes (or volumes) whose label-shaped ``annotations`` have any painted pixel (read one plane at a time)."""
    return [index for index in planes.indices() if np.asarray(annotations[planes.label_index(index)]).any()]


def largest_id(instances, planes: Planes, skip: Sequence[tuple] = ()) -> int:
    """The largest id in label-shaped ``instances``, read one plane at a time, leaving out the planes in ``skip``.

    New ids of a plane (or of planes) predicted again start after it, so ids
    stay unique across the stack without holding it in memory.
    """
    left_out = {tuple(index) for index in skip}
    top = 0
    for index in planes.indices():
        if index not in left_out:
            top = max(top, int(np.max(np.asarray(instances[planes.label_index(index)]), initial=0)))
    return top


def training_data(items: Sequence[tuple[Planes, object]], names: Sequence[str] | None = None) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The painted planes (or volumes) of several images, ready for :meth:`Segmenter.train`.

    Parameters
    ----------
    items : sequence of (Planes, array-like)
        Each image's planes and its annotations, of the image's label shape
        (its shape without the C axis): 0 unlabeled, 1 background, 2.. classes.
    names : sequence of str, optional
        What to call each image in messages (e.g. its file); by default
        "the image" or "image N".

    Returns
    -------
    images : list of numpy.ndarray
        float32 ``(C, *spatial)``, one per plane with any painted pixel.
    annotations : list of numpy.ndarray
        The matching annotations ``(*spatial)``.

    Raises
    ------
    UserInputError
        When annotations do not have their image's label shape, images
        differ in channels or spatial dimensions, a painted plane cannot be
        read or holds NaN pixels, or nothing is painted.
    """
    images: list[np.ndarray] = []
    annotations: list[np.ndarray] = []
    first: Planes | None = None
    for n, (planes, ann) in enumerate(items, start=1):
        which = repr(str(names[n - 1])) if names else f"image {n}" if len(items) > 1 else "the image"
        if tuple(ann.shape) != planes.label_shape:
            raise UserInputError(
                f"annotations of shape {tuple(ann.shape)} do not match {which}'s shape without channels "
                f"{planes.label_shape} (axes {planes.label_axes!r})"
            )
        if first is None:
            first = planes
        elif planes.channels != first.channels:
            raise UserInputError(
                f"all training images must have the same number of channels: image 1 has {first.channels} "
                f"(axes {first.axes!r}), image {n} has {planes.channels} (axes {planes.axes!r})"
            )
        elif planes.spatial_ndim != first.spatial_ndim:
            raise UserInputError("all training images must be used in the same number of spatial dimensions (2D or 3D)")
        for index in painted_indices(planes, ann):
            images.append(_read_plane(planes, index, which))
            annotations.append(np.array(ann[planes.label_index(index)], copy=True))
    if not images:
        raise UserInputError("no annotations: paint background (label 1) and at least one object class (label 2) first")
    return images, annotations


@dataclass(frozen=True)
class StackProgress:
    """Progress of a stack prediction.

    Attributes
    ----------
    plane : int
        Planes finished so far.
    planes : int
        Planes to do.
    tile : TileProgress or None
        Progress inside the current plane.
    """

    plane: int
    planes: int
    tile: TileProgress | None = None

    @property
    def fraction(self) -> float:
        """Share of the work done, 0..1."""
        if self.planes <= 0:
            return 1.0
        inside = self.tile.done / self.tile.total if self.tile is not None and self.tile.total else 0.0
        return min(1.0, (self.plane + inside) / self.planes)


def _check_output(out, shape: tuple[int, ...], name: str, axes: str) -> None:
    if tuple(out.shape) != tuple(shape):
        raise UserInputError(f"the {name} output of shape {tuple(out.shape)} does not match the image's {shape} (axes {axes!r})")


def iter_predict_stack(
    segmenter,
    planes: Planes,
    semantic_out,
    instances_out,
    params: InstanceParams,
    indices: Sequence[tuple] | None = None,
    probabilities_out=None,
    tile: int | None = None,
    plane_done: Callable[[tuple, np.ndarray | None], None] | None = None,
    objects_3d: bool | None = None,
) -> Generator[StackProgress, None, int]:
    """Predict planes (all by default) of an N-D image into label-shaped outputs.

    Parameters
    ----------
    segmenter : Segmenter
        A trained model whose spatial dimensions are ``planes.spatial_ndim``.
    planes : Planes
        The image.
    semantic_out, instances_out : array-like
        Writable arrays of ``planes.label_shape`` (numpy, memmap, zarr):
        semantic classes and instance ids. ``instances_out=None`` computes
        the semantic labels only (no instance labelling at all).
    params : InstanceParams
        Post-processing parameters.
    indices : sequence of tuple, optional
        Plane indices (over ``planes.loop_axes``) to predict; others are
        left as they are.
    probabilities_out : array-like, optional
        Writable ``(n_classes, *label_shape)`` float array for probabilities.
    tile : int, optional
        Tile side for the network.
    plane_done : callable, optional
        Called as ``plane_done(index, probabilities)`` once a plane's labels
        are written, e.g. a :class:`~napari_unet.core.measure.StackMeasurements`.
        ``probabilities`` are that plane's ``(n_classes, *spatial)``: a view
        of ``probabilities_out``, or else a buffer of one plane kept only
        until the next plane (never the whole stack's). For a whole Z stack
        predicted by a 2D model, the calls come after the 3D relabelling
        (so the ids are the 3D objects'), with the plane of
        ``probabilities_out`` when given, else ``probabilities=None``.
    objects_3d : bool, optional
        For a whole Z stack and a 2D model: label the predicted planes again
        as 3D objects (one id per object across planes, see
        :func:`makes_3d_objects`). By default (None) the axes decide: yes
        for a Z stack, no for a time series (ids per frame). False keeps
        per-plane ids.

    Yields
    ------
    StackProgress
        After each tile batch, and once more at the end.

    Returns
    -------
    int
        The largest instance id written (the generator's return value).

    Notes
    -----
    Instance ids are unique across planes: each plane's ids continue past
    the largest id so far. When all planes are predicted that is tracked as
    they are written; when only some are, the largest id of the other planes
    is read first, one plane at a time.
    """
    from napari_unet.core import blockwise  # at call time: tests may stand in for it

    if segmenter.model is None:
        raise UserInputError("no model yet: train one or load a model file first")
    ndim = model_ndim(segmenter.config)
    if ndim != planes.spatial_ndim:
        raise UserInputError(f"the model is {ndim}D but the image is being predicted in {planes.spatial_ndim}D")
    if planes.channels != segmenter.config.in_channels:
        raise channel_mismatch(segmenter.config.in_channels, planes.channels, planes.axes)
    _check_output(semantic_out, planes.label_shape, "semantic", planes.label_axes)
    if instances_out is not None:
        _check_output(instances_out, planes.label_shape, "instances", planes.label_axes)
    if probabilities_out is not None:
        _check_output(probabilities_out, (segmenter.config.n_classes,) + planes.label_shape, "probabilities", "C" + planes.label_axes)

    if indices is None:
        todo = list(planes.indices())
        offset = 0
    else:
        todo = list(dict.fromkeys(tuple(int(i) for i in index) for index in indices))
        offset = largest_id(instances_out, planes, skip=todo) if instances_out is not None else 0

    total = len(todo)
    relabel_3d = instances_out is not None and makes_3d_objects(segmenter, planes, indices) and objects_3d is not False
    for done, index in enumerate(todo):
        label_key = planes.label_index(index)
        fixed = tuple(None if isinstance(k, slice) else k for k in label_key)
        kept = tuple(i for i, f in enumerate(fixed) if f is None)
        probs = _probability_view(probabilities_out, planes, index)
        if probs is None and plane_done is not None and not relabel_3d:
            probs = np.zeros((segmenter.config.n_classes,) + tuple(planes.spatial_shape), np.float32)
        gen = blockwise.predict_plane(
            segmenter,
            planes.image(index),
            view(semantic_out, fixed, kept),
            # Planes labelled again as 3D objects below need no instances of their own.
            view(instances_out, fixed, kept) if instances_out is not None and not relabel_3d else None,
            params,
            probabilities_out=probs,
            tile=tile,
            id_offset=offset,
        )
        top = yield from relay(gen, lambda tile, done=done: StackProgress(done, total, tile))
        offset = max(offset, int(top) if top is not None else offset)
        if plane_done is not None and not relabel_3d:
            plane_done(index, probs)
    if relabel_3d:
        offset = yield from _relabel_in_3d(planes, semantic_out, instances_out, params, total)
        # Measured once the ids are final (3D objects), with the planes'
        # probabilities where they were kept (else their mean is NaN).
        for index in todo if plane_done is not None else ():
            plane_done(index, _probability_view(probabilities_out, planes, index))
    yield StackProgress(total, total, None)
    return offset


def makes_3d_objects(segmenter, planes: Planes, indices: Sequence[tuple] | None = None) -> bool:
    """Whether predicting ``planes`` labels 3D objects: a 2D model on a whole Z stack.

    A 3D model labels volumes as a whole anyway; a 2D model sees one plane at
    a time, and its planes are labelled again as ``(Z, Y, X)`` volumes when
    the image has a Z axis and every plane is predicted (one plane alone
    cannot be). Time series keep ids per frame.
    """
    return model_ndim(segmenter.config) == 2 and "Z" in planes.loop_axes and indices is None


def _probability_view(probabilities_out, planes: Planes, index: tuple):
    """The plane ``index`` of a ``(n_classes, *label_shape)`` output, or None without one."""
    if probabilities_out is None:
        return None
    fixed = tuple(None if isinstance(k, slice) else k for k in planes.label_index(index))
    kept = tuple(i for i, f in enumerate(fixed) if f is None)
    return view(probabilities_out, (None,) + fixed, (0,) + tuple(i + 1 for i in kept))


def _relabel_in_3d(planes: Planes, semantic_out, instances_out, params: InstanceParams, total: int) -> Generator[StackProgress, None, int]:
    """Instances of a Z stack predicted plane by plane, as 3D objects (one id per object across planes).

    A 2D model sees one plane at a time, but a nucleus spans several: its
    per-plane pieces are one object. The semantic planes are labelled again
    as ``(Z, Y, X)`` volumes, block by block in YX, one per index of the
    other loop axes (e.g. per time point of a TZYX series); ids stay unique
    over the whole output.
    """
    from napari_unet.core.stitch import iter_label_blockwise

    label_axes = planes.label_axes
    others = [a for a in planes.loop_axes if a != "Z"]
    shape = dict(zip(label_axes, planes.label_shape))
    kept = tuple(i for i, a in enumerate(label_axes) if a not in others)
    offset = 0
    for index in np.ndindex(*(shape[a] for a in others)):
        at = dict(zip(others, index))
        fixed = tuple(at.get(a) for a in label_axes)
        gen = iter_label_blockwise(view(semantic_out, fixed, kept), view(instances_out, fixed, kept), params, id_offset=offset)
        offset = int((yield from relay(gen, lambda tile: StackProgress(total, total, tile))))
    return offset
