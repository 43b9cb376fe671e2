"""A prediction scored against a ground truth: what ``napari-unet evaluate`` prints.

The instance F1 at IoU 0.5 is :func:`~napari_unet.eval.metrics.score_at` of
:func:`~napari_unet.eval.metrics.overlaps`, the very code the benchmarks
score with (:func:`~napari_unet.eval.metrics.instance_f1`), so the command and the
benchmark report agree exactly.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from napari_unet.errors import UserInputError
from napari_unet.eval.metrics import foreground_iou, overlaps, score_at

#: IoU thresholds of the averaged F1 (0.5, 0.55, ..., 0.95), as in COCO and the DSB 2018.
THRESHOLDS = tuple(round(0.5 + 0.05 * i, 2) for i in range(10))
#: Share of an object's area inside another that makes it a piece of it (split / merged).
PIECE_SHARE = 0.5


@dataclass(frozen=True)
class Evaluation:
    """A prediction's scores against a truth.

    Attributes
    ----------
    f1, precision, recall : float
        Instances matched at IoU > 0.5 (one-to-one at this threshold).
    f1_mean : float
        F1 averaged over IoU thresholds 0.5, 0.55, ..., 0.95.
    n_true, n_pred, matched : int
        Objects in the truth, in the prediction, and matched at IoU > 0.5.
    missed : int
        True objects without a match (``n_true - matched``), for whatever reason.
    false : int
        Predicted objects without a match (``n_pred - matched``).
    split : int
        True objects of which two or more predicted objects each have at
        least half their area inside (one object cut into pieces).
    merged : int
        Predicted objects holding at least half the area of each of two or
        more true objects (touching objects joined).
    foreground_iou : float
        IoU of the foregrounds (non-zero pixels).
    class_iou : dict
        IoU of each class present in either image (for instance labels:
        "0" background and "1" objects).
    mean_iou : float
        Mean of ``class_iou``.
    """

    f1: float
    precision: float
    recall: float
    f1_mean: float
    n_true: int
    n_pred: int
    matched: int
    missed: int
    false: int
    split: int
    merged: int
    foreground_iou: float
    class_iou: dict
    mean_iou: float

    def as_dict(self) -> dict:
        """Plain values for JSON (the keys are the attribute names)."""
        return asdict(self)


def _pieces(holder_ids: np.ndarray, share: np.ndarray) -> int:
    """Objects (``holder_ids`` of overlapping pairs) holding at least PIECE_SHARE of the area of each of two or more others."""
    _, count = np.unique(holder_ids[share >= PIECE_SHARE], return_counts=True)
    return int(np.count_nonzero(count >= 2))


def evaluate(predicted: np.ndarray, truth: np.ndarray, semantic: bool = False) -> Evaluation:
    """Score ``predicted`` labels against ``truth`` of the same shape.

    Parameters
    ----------
    predicted, truth : numpy.ndarray
        Label images: instance ids (0 background), or with ``semantic``
        class maps, whose connected objects are then not told apart (the
        instance scores treat each class value as one object).
    semantic : bool
        The images hold classes: per-class IoU over their values.

    Raises
    ------
    UserInputError
        When the shapes differ or the values are not labels.
    """
    predicted, truth = np.asarray(predicted), np.asarray(truth)
    if predicted.shape != truth.shape:
        raise UserInputError(f"the prediction has shape {predicted.shape} but the truth {truth.shape}: they must match")
    for name, labels in (("prediction", predicted), ("truth", truth)):
        if labels.dtype.kind not in "uib":
            raise UserInputError(f"the {name} holds {labels.dtype} values, not labels (integers)")
        if labels.size and labels.min() < 0:
            raise UserInputError(f"the {name} holds negative values, not labels")
    # The overlaps are counted once for every threshold (the benchmarks' instance_f1 does the same per call).
    found = overlaps(predicted, truth)
    at_half = score_at(found, 0.5)
    f1_mean = float(np.mean([score_at(found, t).f1 for t in THRESHOLDS]))
    classes_p, classes_t = (predicted, truth) if semantic else ((predicted > 0).astype(np.uint8), (truth > 0).astype(np.uint8))
    class_iou = {}
    for c in np.union1d(np.unique(classes_p), np.unique(classes_t)):
        p, t = classes_p == c, classes_t == c
        class_iou[str(int(c))] = float(np.count_nonzero(p & t) / max(np.count_nonzero(p | t), 1))
    return Evaluation(
        f1=at_half.f1,
        precision=at_half.precision,
        recall=at_half.recall,
        f1_mean=f1_mean,
        n_true=at_half.n_true,
        n_pred=at_half.n_pred,
        matched=at_half.matched,
        missed=at_half.n_true - at_half.matched,
        false=at_half.n_pred - at_half.matched,
        split=_pieces(found.true_ids, found.inter / np.maximum(found.size_pred, 1)),
        merged=_pieces(found.pred_ids, found.inter / np.maximum(found.size_true, 1)),
        foreground_iou=foreground_iou(predicted, truth),
        class_iou=class_iou,
        mean_iou=float(np.mean(list(class_iou.values()))) if class_iou else 1.0,
    )
