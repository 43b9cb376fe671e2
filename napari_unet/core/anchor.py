"""How hard training holds the U-Net to the forest where the strokes say nothing.

A model with a forest learns a correction of the forest's answer
(:mod:`napari_unet.core.autocontext`). Besides the loss on painted pixels,
training adds a loss on *unpainted* pixels where the forest is confident,
with the forest's answer as the target (``TrainConfig.forest_consistency``).
How much that anchor should weigh depends on how much the strokes say:

- Sparse strokes (lines through objects and background, a few whole
  objects: about 1 % of the image) say nothing about the pixels between
  them. Without a firm anchor the correction drifts there while held-out
  strokes keep improving; a weight of 2 held it (accuracy suite, sparse
  EM 0.540 -> 0.604 at 60 s against a weight of 0.5).
- A region painted in full (a third of a slice, or whole planes of a
  stack) shows borders and dim objects itself. There the forest is often
  confident *and* wrong, and a firm anchor pulls the correction back to
  those mistakes: in 120-step runs a weight of 2 lost 0.03-0.08 against
  0.5 on 3 of 4 full-stroke cases (full EM 0.731 -> 0.692 at 60 s).

So the weight follows the painted share of the planes that carry strokes
(:func:`stroke_coverage`): 2 up to :data:`SPARSE_COVERAGE`, 0.5 from
:data:`DENSE_COVERAGE`, and in between log-linear, so that a weight never
jumps with one more stroke. The accuracy suite's full rows, re-run with
this rule (20749b0, 60 s, weight 2 -> 0.5, forest in brackets): nuclei
0.741 -> 0.758 (0.759), RGB 0.980 -> 0.987 (0.976), EM 0.692 -> 0.723
(0.729), real 3D nuclei 0.872 -> 0.882 (0.882), stacks 0.986 -> 0.984,
membranes 0.991 either way; its sparse rows keep 2. With 200-step
budgets, side by side (repeatable): full nuclei 0.779 against 0.751 at 2,
full EM 0.712 against 0.681 (better on 5 of 12 cases, worse on 2). Both
thresholds lie in the gap between the suite's sparse strokes (0.4-1.4 %)
and its full regions (33 % and more): nothing measured says where in that
gap the weight should turn, so it turns gradually across it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

SPARSE_WEIGHT = 2.0
"""Anchor weight for sparse strokes (see the module docstring)."""
DENSE_WEIGHT = 0.5
"""Anchor weight for regions painted in full."""
SPARSE_COVERAGE = 0.05
"""Painted share up to which strokes count as sparse (the suite's sparse strokes paint 0.4-1.4 %)."""
DENSE_COVERAGE = 0.25
"""Painted share from which strokes count as a full region (the suite's full modes paint 33-100 %)."""


def stroke_coverage(targets: Sequence[np.ndarray]) -> float:
    """Share of pixels that carry a label, over the planes that carry any.

    Parameters
    ----------
    targets : sequence of numpy.ndarray
        Class targets ``(Y, X)`` or ``(Z, Y, X)``, negative where
        unlabeled.

    Returns
    -------
    float
        Labelled pixels over the pixels of the painted images (2D) or
        painted planes (3D, planes along the first axis); 0 without any
        label. Planes, not volumes: a user who paints three planes of a
        stack in full has painted densely, though 90 % of the volume is
        blank.
    """
    painted = total = 0
    for target in targets:
        target = np.asarray(target)
        # One row per plane: a 2D image is a single plane.
        planes = (target >= 0).reshape(-1, target.shape[-2] * target.shape[-1])
        per_plane = planes.sum(axis=1)
        painted += int(per_plane.sum())
        total += int(np.count_nonzero(per_plane)) * planes.shape[1]
    return painted / total if total else 0.0


def consistency_weight(coverage: float) -> float:
    """The anchor's weight for a painted share ``coverage`` (see the module docstring).

    Parameters
    ----------
    coverage : float
        From :func:`stroke_coverage`, in [0, 1].

    Returns
    -------
    float
        :data:`SPARSE_WEIGHT` up to :data:`SPARSE_COVERAGE`,
        :data:`DENSE_WEIGHT` from :data:`DENSE_COVERAGE`, log-linear in
        between.
    """
    t = min(max((coverage - SPARSE_COVERAGE) / (DENSE_COVERAGE - SPARSE_COVERAGE), 0.0), 1.0)
    return math.exp((1 - t) * math.log(SPARSE_WEIGHT) + t * math.log(DENSE_WEIGHT))
