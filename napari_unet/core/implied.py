"""Background implied by whole painted objects.

People paint objects and background differently. An object is often
painted *whole*, up to its outline; background is painted as a few lines,
kept away from objects so as not to touch them. Taken literally, such
strokes never say where an object ends: every pixel between a painted
object and the nearest background line is unlabeled, and a classifier is
free to grow objects into a halo there (blurred edges are half-bright).
Halos merge neighbouring objects, and instance scores collapse.

A whole painted object does say where it ends, though: right outside its
painted outline. When the user says objects are painted whole
(``TrainConfig.whole_objects``: CLI ``--whole-objects``, the widget's
"Objects are painted whole"), the one-pixel ring around each whole painted
object is taken as background. On the accuracy suite's sparse nuclei
(strokes: 12 whole objects, a few strokes inside others, background lines
kept 3 px away), a random forest on the same strokes went from instance F1
0.48 to 0.71 on average over twelve images with it, better on ten and
worse on two (one from 1.00 to 0.44, where dim unpainted nuclei looked
like the bright painted ones' rims); see ``docs/benchmarks.md``. On the
suite's seed 3 (large, textured nuclei of radius 28) the forest trained
with the rings fell from F1 1.00 to 0.25: having learned that the edge
right outside an object is background, it cut the nuclei along their
inner texture, 58 pieces for the 13 scored objects. Moving the ring 2-3 px
out gave 0.61 there and no better on average over twelve images (measured,
not shipped); :func:`rings_cut_objects` catches that case instead, and
training then goes on without the rings (1.00 there again).

It is off by default because nothing in the strokes tells a whole object
from a thick stroke painted *inside* an object, and there the ring lies
inside the object: with cores painted 3 px inside each nucleus and
background painted around them, the same forest fell from F1 0.53-0.68 to
0.09-0.20 on four of eight images; with radius-3 dabs at the centres of
the wider nuclei (five of the eight images) to 0.00-0.02. Neither the forest's own probabilities nor image edges on
the ring told the two apart reliably (measured, not shipped).

What counts as a whole painted object (each condition keeps a case out):

- the problem has one object class: with several, the pixel next to an
  object may be another class, and guessing "background" would be wrong;
- the painted piece is at least :data:`MIN_RADIUS` pixels deep (its
  largest inscribed radius): thin lines are strokes *inside* objects;
- at least :data:`UNPAINTED_SHARE` of its ring is unpainted: a piece
  bordering painted background is part of a fully painted region (where
  the ring is painted already) or was cut by its edge (where the object
  goes on beyond it).

In 3D, objects are painted plane by plane, so rings are drawn within each
plane only: the planes above and below a painted nucleus hold more of it.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from napari_unet.core.postprocess import InstanceParams, label_maxima

#: Smallest inscribed radius (pixels) of a painted piece read as a whole
#: object: a 3-pixel-wide stroke has radius 2, a painted disc of radius 3
#: has 3.
MIN_RADIUS = 2.5
#: Share of a piece's ring that must be unpainted for it to count as whole.
UNPAINTED_SHARE = 0.9

_IGNORE = -1
_BACKGROUND = 0
_OBJECT = 1


def _whole_pieces(target: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Painted object pieces of one 2D plane's targets, which of them look whole, and the ring around them.

    Returns
    -------
    pieces : numpy.ndarray
        Connected painted object pieces, labelled 1..n.
    grown : numpy.ndarray
        Each pixel next to a piece (8-neighbourhood) holds that piece's id.
    whole : numpy.ndarray
        ``whole[i]`` is True when piece ``i`` counts as a whole painted
        object (see the module docstring); ``whole[0]`` is False.
    ring : numpy.ndarray
        Pixels next to a piece that are not painted object.
    """
    painted = target == _OBJECT
    pieces, n = ndi.label(painted)
    if n == 0:
        return pieces, pieces, np.zeros(1, bool), np.zeros(target.shape, bool)
    depth = ndi.distance_transform_edt(painted)
    radius = label_maxima(depth, pieces, n)[1:]
    grown = ndi.grey_dilation(pieces, size=(3, 3))
    ring = (grown > 0) & (pieces == 0) & ~painted
    ids = grown[ring]
    unpainted = target[ring] == _IGNORE
    total = np.bincount(ids, minlength=n + 1)
    free = np.bincount(ids, weights=unpainted, minlength=n + 1)
    whole = np.zeros(n + 1, bool)
    whole[1:] = (radius >= MIN_RADIUS) & (free[1:] >= UNPAINTED_SHARE * np.maximum(total[1:], 1))
    return pieces, grown, whole, ring


def _ring_of_whole_objects(target: np.ndarray) -> np.ndarray:
    """Unlabeled pixels of one 2D plane's targets that ring a whole painted object."""
    _, grown, whole, ring = _whole_pieces(target)
    return ring & whole[grown] & (target == _IGNORE)


#: Whole-looking painted objects from which the front-ends suggest the option.
HINT_OBJECTS = 3
#: A piece whose unpainted surroundings are at most this many times its own
#: area is enclosed by the user's own strokes (an object core with a
#: background ring painted around it): no hint counts it.
ENCLOSED_AREA = 10
#: Unpainted margin (pixels) kept around a plane's strokes when looking for
#: whole objects: the rest of a large plane cannot change the answer.
HINT_MARGIN = 64


def _open_whole_pieces(target: np.ndarray) -> int:
    """How many pieces of one 2D plane look whole and lie open: unpainted all around, not enclosed by strokes."""
    pieces, grown, whole, ring = _whole_pieces(target)
    if not whole.any():
        return 0
    unpainted, _ = ndi.label(target == _IGNORE)
    space = np.bincount(unpainted.ravel())
    space[0] = 0
    area = np.bincount(pieces.ravel(), minlength=len(whole))
    around = np.zeros(len(whole), np.int64)
    np.maximum.at(around, grown[ring], space[unpainted[ring]])
    return int(np.count_nonzero(whole & (around > ENCLOSED_AREA * area)))


def whole_objects_hint(annotations: list, option: str) -> str | None:
    """A note suggesting ``option`` when painted objects look painted whole, else None.

    Parameters
    ----------
    annotations : list of numpy.ndarray
        Annotations in the user's convention (0 unlabeled, 1 background,
        2.. classes), 2D planes or 3D volumes (read plane by plane).
    option : str
        How the user turns ``TrainConfig.whole_objects`` on in this front-end.

    Returns
    -------
    str or None
        The note when at least :data:`HINT_OBJECTS` painted pieces of the
        one object class meet the conditions of a whole painted object and
        lie in the open (a core with background painted closely around it,
        see :data:`ENCLOSED_AREA`, does not count: the user has said where
        that object ends). The option itself stays off (see the module
        docstring for why), so the note says when it is right and when
        it is not.
    """
    if not annotations or max(int(np.max(a)) for a in annotations) != 2:
        return None  # one object class only, as for the rings themselves
    count = 0
    for ann in annotations:
        ann = np.asarray(ann)
        for plane in ann[None] if ann.ndim == 2 else ann:
            if np.any(plane == 2):
                # Only the strokes' surroundings: a large plane with a few strokes stays cheap.
                box = ndi.find_objects((plane > 0).astype(np.uint8))[0]
                box = tuple(slice(max(0, b.start - HINT_MARGIN), b.stop + HINT_MARGIN) for b in box)
                count += _open_whole_pieces(plane[box].astype(np.int16) - 1)
    if count < HINT_OBJECTS:
        return None
    return (
        f"{count} painted objects look painted whole, outline included: if they are, turn on {option} "
        "so that training takes the pixels just outside them as background and learns where objects end "
        "(sharper outlines, fewer merged neighbours) and drops specks far smaller than the painted objects; "
        "leave it off if you painted inside the objects."
    )


#: Objects a forest trained with the rings finds in the unpainted parts are
#: "cut" when their median area is below this share of the median area of the
#: objects painted whole (:func:`found_to_painted_size`). On eighteen images
#: of the accuracy suite's sparse nuclei (its seeds 0-11 and six held-out-like
#: ones, radius 8-12), that share was 0.021 on the one image where the rings
#: made the forest cut large textured nuclei along their inner texture (F1
#: 1.00 without rings, 0.25 with them), 0.079 on one where rings helped (0.38
#: against 0.17: dim nuclei found only in part) and 0.19-1.58 on the other
#: sixteen. The threshold sits between the first two (their geometric mean):
#: it rests on one failing image, and a false alarm costs only the rings'
#: gain, as training then uses the strokes as painted.
CUT_SHARE = 0.04
#: Predicted pieces smaller than the split's minimum object size are specks, not objects.
_SPECK = InstanceParams.min_size
#: With objects painted whole, instances drop predicted objects under this
#: share of the painted objects' median area (:func:`whole_object_min_size`).
#: Measured on eight held-out-like images (512², 125 nuclei of radius
#: 8-12, twelve painted whole and background lines 3 px away; four with the
#: suite's noise and uneven background, four clean), 60 s of training,
#: ``python -m benchmarks.bench_whole_objects``: instance F1 0.764 / 0.512
#: / 0.316 / 0.859 (noisy) and 0.947 / 0.932 / 0.904 / 0.560 (clean) with
#: a fixed 16 px, 0.816 / 0.748 / 0.800 / 0.863 and 0.947 / 0.952 / 0.904
#: / 0.738 at 0.3 (mean 0.724 -> 0.846). The losses were specks and
#: fragments. 0.2 gave 0.813; 0.4 gave 0.855 but was below 0.3 on two of
#: the eight, and a larger share drops more real small objects on images
#: whose object sizes vary more than these: 0.3 is the cautious choice.
MIN_OBJECT_SHARE = 0.3


def found_to_painted_size(targets: list, probabilities: list) -> float | None:
    """Median area of the objects a forest finds where nothing was painted, over that of the objects painted whole.

    Parameters
    ----------
    targets : list of numpy.ndarray
        Training targets *without* the rings (-1 unlabeled, 0 background, 1 object),
        2D planes or 3D volumes (read plane by plane).
    probabilities : list of numpy.ndarray
        The forest's class probabilities ``(2, *spatial)`` for each target.

    Returns
    -------
    float or None
        The ratio; None without whole painted objects or found objects.
    """
    painted_area = painted_object_area(targets)
    found = []
    for target, probs in zip(targets, probabilities):
        planes = zip(target[None], probs[None]) if target.ndim == 2 else zip(target, np.moveaxis(probs, 1, 0))
        for plane, p in planes:
            objects, _ = ndi.label((p[1] > p[0]) & (plane == _IGNORE))
            sizes = np.bincount(objects.ravel())[1:]
            found.append(sizes[sizes >= _SPECK])
    found_area = np.concatenate(found) if found else np.zeros(0)
    if painted_area is None or not found_area.size:
        return None
    return float(np.median(found_area)) / painted_area


def painted_object_area(targets: list) -> float | None:
    """Median area (pixels, within a plane) of the objects painted whole; None when none is.

    Parameters
    ----------
    targets : list of numpy.ndarray
        Training targets *without* the rings (-1 unlabeled, 0 background, 1 object),
        2D planes or 3D volumes (read plane by plane).
    """
    areas = []
    for target in targets:
        for plane in target[None] if target.ndim == 2 else target:
            pieces, _, whole, _ = _whole_pieces(plane)
            if whole.any():
                areas.append(np.bincount(pieces.ravel())[1:][whole[1:]])
    return float(np.median(np.concatenate(areas))) if areas else None


def whole_object_min_size(targets: list) -> int | None:
    """The smallest object instances should keep, from the objects painted whole (2D targets only).

    Objects painted whole say how large objects are, so a predicted piece
    under :data:`MIN_OBJECT_SHARE` of their median area is a fragment or a
    speck, not an object. ``None`` (keep the default minimum size) without
    whole painted objects, or for 3D targets, whose objects are volumes:
    there the split's own fragment rule applies
    (:data:`~napari_unet.core.postprocess.FRAGMENT_SHARE`).
    """
    if any(t.ndim != 2 for t in targets):
        return None
    area = painted_object_area(targets)
    if area is None:
        return None
    return max(InstanceParams.min_size, int(round(MIN_OBJECT_SHARE * area)))


def rings_cut_objects(targets: list, probabilities: list) -> bool:
    """Whether a forest trained with the implied rings cuts objects into pieces.

    Objects painted whole are the user's own statement of how large objects
    are. When the objects the forest finds where nothing was painted are, by
    median area, far smaller (:func:`found_to_painted_size` below
    :data:`CUT_SHARE`), the rings taught it that an object's edge is
    background and it cuts objects along their inner texture; training then
    goes on without the rings. Same parameters as :func:`found_to_painted_size`.
    """
    ratio = found_to_painted_size(targets, probabilities)
    return ratio is not None and ratio < CUT_SHARE


def implied_background(target: np.ndarray, n_classes: int) -> np.ndarray:
    """Targets with the ring around each whole painted object labelled background.

    Parameters
    ----------
    target : numpy.ndarray
        Training targets ``(Y, X)`` or ``(Z, Y, X)``: -1 unlabeled, 0
        background, 1.. object classes.
    n_classes : int
        Classes of the model, background included; with more than one
        object class nothing is implied (see the module docstring).

    Returns
    -------
    numpy.ndarray
        A copy of ``target`` (the input itself when nothing changes).
    """
    if n_classes != 2 or not np.any(target == _OBJECT):
        return target
    planes = target[None] if target.ndim == 2 else target
    out = None
    for z, plane in enumerate(planes):
        ring = _ring_of_whole_objects(plane)
        if ring.any():
            if out is None:
                out = planes.copy()
            out[z][ring] = _BACKGROUND
    if out is None:
        return target
    return out[0] if target.ndim == 2 else out
