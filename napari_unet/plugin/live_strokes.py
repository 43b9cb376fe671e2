"""Strokes painted while training runs, from napari's annotation layers to the running training.

A :class:`StrokeWatcher` listens to the annotation layers of a running
training (napari's ``paint`` event for brush, fill and polygon edits,
``set_data`` for undo and redo) and puts the changed boxes into the run's
:class:`~napari_unet.core.live.StrokeFeed`; the training takes them in
before its next step (:mod:`napari_unet.core.live`).

napari emits ``paint`` when an edit enters its undo history: after the
pixels are written for a brush drag, but *before* for a click or a
``data_setitem``. An edit whose pixels are written is sent at once; the
others wait until napari reports the written pixels (``labels_update``),
so each edit is read once, with the values the layer holds.

Cheap on the GUI thread, and bounded by the painted area, not the image:

- a brush stroke arrives as many small edits; their boxes are snapped to
  :data:`CELL`-pixel squares (per plane), so a long stroke becomes a few
  dozen boxes, each sent once per event, with the annotation values now
  in it (a copy of the box only);
- undo and redo carry no region; the boxes to read again are those of the
  item napari just moved between its undo and redo histories, and every
  box sent during the run.

A plane painted for the first time (not in the training set when Train was
pressed) joins the run with a lazy view of its image pixels, read in the
training thread.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
from napari.layers import Image, Labels

from napari_unet.core.jobs import TrainingSet
from napari_unet.core.live import StrokeFeed, StrokeUpdate
from napari_unet.io.axes import Planes

#: Side of the squares that edited boxes are snapped to (pixels).
CELL = 64
Box = tuple[slice, ...]


def atom_box(atom: Any) -> Box | None:
    """The box (in the layer's data coordinates) of one napari history atom.

    An atom is either a mask-based edit with a ``slice_key`` (brush, fill,
    polygon) or ``(indices, old values, new values)`` (``data_setitem``).
    """
    key = getattr(atom, "slice_key", None)
    if key is not None:
        return tuple(key)
    try:
        indices = atom[0]
        if len(indices) == 0 or np.size(indices[0]) == 0:
            return None
        return tuple(slice(int(np.min(i)), int(np.max(i)) + 1) for i in indices)
    except (TypeError, IndexError):
        return None


def snap_to_cells(box: Box, shape: tuple[int, ...], cell: int = CELL) -> list[Box]:
    """The ``cell``-sized squares (last two axes, clipped to ``shape``) that ``box`` overlaps; other axes as in ``box``."""
    head = tuple(box[:-2])
    ranges = []
    for s, n in zip(box[-2:], shape[-2:]):
        start, stop = max(s.start or 0, 0), min(n if s.stop is None else s.stop, n)
        ranges.append(range(start // cell, (max(stop, start + 1) - 1) // cell + 1))
    return [
        (*head, slice(cy * cell, min((cy + 1) * cell, shape[-2])), slice(cx * cell, min((cx + 1) * cell, shape[-1])))
        for cy, cx in itertools.product(*ranges)
    ]


def is_written(data: Any, atom: Any) -> bool:
    """Whether a napari history atom's new values are in ``data`` already (it reads the atom's pixels only)."""
    key = getattr(atom, "slice_key", None)
    if key is not None:  # a mask-based edit: one new label
        region = np.asarray(data[tuple(key)])
        mask = getattr(atom, "mask", None)
        return bool(np.all((region if mask is None else region[mask]) == atom.new_value))
    try:
        indices, _, new = atom
        return bool(np.all(np.asarray(data[indices]) == new))
    except (TypeError, ValueError, IndexError):
        return False


def history_boxes(item: Iterable[Any] | None) -> list[Box]:
    """The boxes of a napari undo/redo history item (a list of atoms)."""
    boxes = [atom_box(atom) for atom in item or ()]
    return [b for b in boxes if b is not None]


class StrokeWatcher:
    """Sends the edits of annotation layers to a running training.

    Parameters
    ----------
    feed : StrokeFeed
        The running training's feed.
    training_set : TrainingSet
        What the run started from (its ``origins`` map planes to training images).
    pairs : list of (Image, Labels, Planes)
        The image layers the run trains on, their annotation layers and
        their planes for the model.
    n_classes : int
        Classes of the run's model: larger annotation values are ignored (and said once).
    warn : callable
        Told, once, about strokes the run cannot take in.
    """

    def __init__(self, feed: StrokeFeed, training_set: TrainingSet, pairs: list[tuple[Image, Labels, Planes]], n_classes: int, warn: Callable[[str], None]) -> None:
        self.feed = feed
        self.n_classes = n_classes
        self._warn = warn
        self._warned = False
        self._pairs = {labels.name: (image, labels, planes) for image, labels, planes in pairs}
        self._items = {origin: number for number, origin in enumerate(training_set.origins)}
        self._sent: dict[str, set[tuple]] = {}  # annotations layer name -> boxes sent in this run
        self._pending: dict[str, list[Box]] = {}  # boxes of paint events whose pixels may not be written yet
        #: Stroke updates sent so far.
        self.sent = 0
        self._connected: list[Labels] = []

    def connect(self) -> None:
        """Start listening to the annotation layers."""
        for _, labels, _ in self._pairs.values():
            labels.events.paint.connect(self._on_paint)
            if hasattr(labels.events, "labels_update"):  # napari >= 0.5.0
                labels.events.labels_update.connect(self._on_written)
            labels.events.set_data.connect(self._on_set_data)
            self._connected.append(labels)

    def disconnect(self) -> None:
        """Stop listening (the run ended)."""
        for labels in self._connected:
            labels.events.paint.disconnect(self._on_paint)
            if hasattr(labels.events, "labels_update"):
                labels.events.labels_update.disconnect(self._on_written)
            labels.events.set_data.disconnect(self._on_set_data)
        self._connected = []

    # -- napari events ----------------------------------------------------------------------
    def _on_paint(self, event: Any) -> None:
        boxes = history_boxes(event.value)
        atoms = list(event.value or ())
        if atoms and is_written(event.source.data, atoms[-1]):
            self.send(event.source, boxes)
        else:
            self._pending.setdefault(event.source.name, []).extend(boxes)

    def _on_written(self, event: Any) -> None:
        boxes = self._pending.pop(event.source.name, None)
        if boxes:
            self.send(event.source, boxes)

    def _on_set_data(self, event: Any) -> None:
        # Undo/redo (and any other rewrite) say nothing about where: read
        # again what napari just moved between its histories, and every box
        # this run was sent (an undone stroke painted during the run).
        layer = event.source
        boxes = []
        for history in ("_redo_history", "_undo_history"):  # napari keeps the moved item on top of one of them
            items = getattr(layer, history, None)
            if items:
                boxes += history_boxes(items[-1])
        self.send(layer, boxes, again=self._sent.get(layer.name, ()))

    # -- updates -----------------------------------------------------------------------------
    def send(self, layer: Labels, boxes: list[Box], again: Iterable[tuple] = ()) -> int:
        """Put the current annotation values of ``boxes`` (label-array coordinates) into the feed; returns updates sent.

        ``again`` are ``(plane index, spatial box)`` pairs sent before, read once more.
        """
        pair = self._pairs.get(layer.name)
        if pair is None:
            return 0
        image, _, planes = pair
        wanted: set[tuple] = set(again)
        for box in boxes:
            wanted |= self._plane_boxes(planes, box)
        count = 0
        for index, spatial in sorted(wanted, key=repr):
            count += self._send_one(layer, image.name, planes, index, spatial)
        self._sent.setdefault(layer.name, set()).update(wanted)
        return count

    def _plane_boxes(self, planes: Planes, box: Box) -> set[tuple]:
        """``(loop index, spatial box)`` pairs covering a label-array box, snapped to cells."""
        label_axes = planes.label_axes
        by_axis = dict(zip(label_axes, box))
        loops = []
        for axis, n in zip(planes.loop_axes, planes.loop_shape):
            s = by_axis.get(axis, slice(None))
            loops.append(range(*s.indices(n)))
        spatial_box = tuple(by_axis.get(axis, slice(None)) for axis in planes.spatial_axes)
        cells = snap_to_cells(spatial_box, tuple(planes.spatial_shape))
        out = set()
        for index in itertools.product(*loops):
            for cell in cells:
                out.add((tuple(int(i) for i in index), tuple((s.start, s.stop) for s in cell)))
        return out

    def _send_one(self, layer: Labels, image_name: str, planes: Planes, index: tuple, spatial: tuple) -> int:
        key = tuple(slice(a, b) for a, b in spatial)
        labels = np.array(layer.data[planes.label_box(index, key)], copy=True)
        if labels.size and int(labels.max()) > self.n_classes and not self._warned:
            self._warned = True
            self._warn(f"Label {int(labels.max())} is not a class of the running training ({self.n_classes - 1} object class(es)): it counts from the next Train.")
        origin = (image_name, index)
        item = self._items.get(origin)
        start = tuple(int(s.start) for s in key)
        if item is None:
            if not labels.any():
                return 0  # an unpainted plane stays out
            item = self._items[origin] = len(self._items)
            # The whole plane joins (its other pixels unlabelled): its image is read in the training thread.
            update = StrokeUpdate(item, start, labels, image=planes.image(index))
        else:
            update = StrokeUpdate(item, start, labels)
        self.feed.put(update)
        self.sent += 1
        return 1
