"""Strokes painted while training runs: handed to the training thread and taken in between two steps.

The loop the user wants is paint → train → see → correct. A correction
painted while training runs should count at once, not after Stop and Train
(which restarts warm-up, the sampler and the plot). The GUI side (the
session) puts :class:`StrokeUpdate` boxes into a :class:`StrokeFeed`; the
training loop drains the feed before every step and :func:`apply_update`
writes each box into the run's targets:

- only the changed box is touched: the targets, the sampler's per-class
  coordinates (those inside the box are replaced, the rest kept) and, when a
  held-out pixel was repainted or erased, the validation targets. Time and
  memory per update grow with the painted area, not the image size;
- pixels that were held out for validation stay held out (relabelled or
  erased there); newly painted pixels train. A correction must take effect,
  and a new stroke held out whole would teach nothing;
- the new pixels become the sampler's *recent* strokes: for
  :data:`RECENT_STEPS` steps a share :data:`RECENT_SHARE` of each batch is
  centred on them, so a correction takes hold within a few dozen steps
  instead of being one stroke among many;
- a plane (or volume) painted for the first time joins the run as a new
  training image: the trainer normalises it and adds its forest inputs.
  The forest itself is not refitted during a run (its probabilities on the
  new pixels are honest: it never saw them); the next Train refits it.

Everything here is plain numpy and threading: the session (napari side)
and the training loop (engine) both use it, neither imports the other.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from napari_unet.core.samples import IGNORE, LabelledImage

#: Steps during which new strokes are favoured by the sampler.
RECENT_STEPS = 40
#: Share of each batch centred on recent strokes while they are recent.
RECENT_SHARE = 0.25


@dataclass(frozen=True)
class StrokeUpdate:
    """A box of the annotations as it is now, for one training image of a running training.

    Attributes
    ----------
    item : int
        Index of the training image (painted plane or volume) in the run's
        training set. An index past the end adds a new training image
        (``image`` is then required).
    start : tuple of int
        Spatial offset of ``labels`` inside the training image.
    labels : numpy.ndarray
        The annotation values in the box (0 unlabeled, 1 background, 2..
        classes), a copy.
    image : array-like, optional
        For a new training image: its ``(C, *spatial)`` raw pixels (read in
        the training thread).
    painted_at : float
        ``time.perf_counter()`` when the change was seen (stroke-to-step latency).
    """

    item: int
    start: tuple[int, ...]
    labels: np.ndarray
    image: Any = None
    painted_at: float = field(default_factory=time.perf_counter)

    @property
    def box(self) -> tuple[slice, ...]:
        """The box as slices of the training image's spatial axes."""
        return tuple(slice(s, s + n) for s, n in zip(self.start, self.labels.shape))


class StrokeFeed:
    """Thread-safe hand-over of :class:`StrokeUpdate` from the GUI thread to the training thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._updates: list[StrokeUpdate] = []

    def put(self, update: StrokeUpdate) -> None:
        """Queue an update (any thread)."""
        with self._lock:
            self._updates.append(update)

    def drain(self) -> list[StrokeUpdate]:
        """Take every queued update, oldest first (the training thread, between two steps)."""
        with self._lock:
            updates, self._updates = self._updates, []
        return updates


@dataclass(frozen=True)
class Applied:
    """What one :func:`apply_update` changed.

    Attributes
    ----------
    recent : numpy.ndarray
        ``(N, ndim)`` coordinates of newly labelled (or relabelled) training pixels.
    validation_changed : bool
        A held-out pixel changed: the validation batch must be rebuilt.
    """

    recent: np.ndarray
    validation_changed: bool


def apply_update(item: LabelledImage, update: StrokeUpdate, n_classes: int) -> Applied:
    """Write a box of new annotations into one training image's targets and coordinates (in place).

    Parameters
    ----------
    item : LabelledImage
        The training image (its ``train_target``, ``val_target`` and
        ``train_coords`` are updated).
    update : StrokeUpdate
        The box, with annotation values; values above ``n_classes`` (a
        class the model does not have) are ignored.
    n_classes : int
        Classes of the model.

    Returns
    -------
    Applied
    """
    box = update.box
    labels = np.asarray(update.labels)
    if labels.shape != item.train_target[box].shape:
        raise ValueError(f"stroke box of shape {labels.shape} at {update.start} does not fit a training image of shape {item.train_target.shape}")
    # Annotation value k is class k - 1; 0 (unlabeled) and unknown classes are ignored.
    new = np.where((labels > 0) & (labels <= n_classes), labels.astype(np.int16) - 1, IGNORE).astype(np.int16)
    old_train = item.train_target[box].copy()
    validation_changed = False
    if item.val_target is not None:
        held = item.val_target[box] >= 0
        new_val = np.where(held, new, IGNORE)
        validation_changed = not np.array_equal(new_val, item.val_target[box])
        item.val_target[box] = new_val
        new = np.where(held, IGNORE, new).astype(np.int16)
    item.train_target[box] = new
    changed = old_train != new
    start = np.asarray(update.start)
    stop = start + np.asarray(labels.shape)
    for c in set(item.train_coords) | {int(c) for c in np.unique(new) if c >= 0}:
        coords = item.train_coords.get(c, np.zeros((0, len(start)), dtype=np.int64))
        outside = np.any((coords < start) | (coords >= stop), axis=1)
        inside = np.argwhere(new == c) + start
        item.train_coords[c] = np.concatenate([coords[outside], inside]) if len(inside) else coords[outside]
    recent = np.argwhere(changed & (new >= 0)) + start
    return Applied(recent, validation_changed)
