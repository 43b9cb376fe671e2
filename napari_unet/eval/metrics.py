"""Accuracy measures used by tests, the demo and the benchmarks."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def foreground_iou(pred: np.ndarray, truth: np.ndarray) -> float:
    """Intersection over union of the foregrounds (non-zero pixels)."""
    p, t = np.asarray(pred) > 0, np.asarray(truth) > 0
    union = np.count_nonzero(p | t)
    return float(np.count_nonzero(p & t) / union) if union else 1.0


@dataclass(frozen=True)
class InstanceScore:
    """Instance matching result at one IoU threshold."""

    precision: float
    recall: float
    f1: float
    matched: int
    n_pred: int
    n_true: int


@dataclass(frozen=True)
class Overlaps:
    """Every pair of overlapping predicted and true objects, counted once for all thresholds.

    Attributes
    ----------
    pred_ids, true_ids : numpy.ndarray
        The ids of each overlapping pair.
    inter, size_pred, size_true : numpy.ndarray
        Pixels the pair shares, and each object's area.
    n_pred, n_true : int
        Objects in the prediction and in the truth.
    """

    pred_ids: np.ndarray
    true_ids: np.ndarray
    inter: np.ndarray
    size_pred: np.ndarray
    size_true: np.ndarray
    n_pred: int
    n_true: int

    @property
    def iou(self) -> np.ndarray:
        """IoU of each pair."""
        return self.inter / (self.size_pred + self.size_true - self.inter) if self.inter.size else np.array([])


def _sizes(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(ids, areas) of the values of ``labels`` (0 included), sorted by id."""
    small = labels.dtype.kind in "ub" or (labels.dtype.kind == "i" and (not labels.size or labels.min() >= 0))
    if small and labels.size and int(labels.max()) <= 4 * labels.size + 1_000_000:  # a count per id is far cheaper than sorting the pixels
        counts = np.bincount(labels.astype(np.int64, copy=False), minlength=1)
        ids = np.flatnonzero(counts)
        return ids, counts[ids]
    return np.unique(labels, return_counts=True)


def overlaps(pred: np.ndarray, truth: np.ndarray) -> Overlaps:
    """The :class:`Overlaps` of two label images of the same shape (non-negative integer ids)."""
    pred, truth = np.asarray(pred).ravel(), np.asarray(truth).ravel()
    pred_ids, pred_sizes = _sizes(pred)
    true_ids, true_sizes = _sizes(truth)
    both = (pred > 0) & (truth > 0)
    p, t = pred[both], truth[both]
    integers = pred.dtype.kind in "uib" and truth.dtype.kind in "uib"
    if integers and p.size and max(int(p.max()), int(t.max())) < 2**32:
        # One sort of 64-bit keys instead of a sort of (pred, truth) rows: the same pairs, ~10x faster.
        keys, inter = np.unique((p.astype(np.uint64) << np.uint64(32)) | t.astype(np.uint64), return_counts=True)
        pairs = np.stack([keys >> np.uint64(32), keys & np.uint64(2**32 - 1)]).astype(np.int64)
    else:
        pairs, inter = np.unique(np.stack([p, t]), axis=1, return_counts=True)
    size_p = pred_sizes[np.searchsorted(pred_ids, pairs[0])] if pairs.size else np.array([], np.int64)
    size_t = true_sizes[np.searchsorted(true_ids, pairs[1])] if pairs.size else np.array([], np.int64)
    n_pred = int(np.count_nonzero(pred_ids > 0))
    n_true = int(np.count_nonzero(true_ids > 0))
    return Overlaps(pairs[0], pairs[1], inter, size_p, size_t, n_pred, n_true)


def score_at(found: Overlaps, iou_threshold: float = 0.5) -> InstanceScore:
    """Match the objects of ``found`` at ``IoU > iou_threshold`` and score them (see :func:`instance_f1`)."""
    n_pred, n_true = found.n_pred, found.n_true
    matched = int(np.count_nonzero(found.iou > iou_threshold))
    precision = matched / n_pred if n_pred else float(n_true == 0)
    recall = matched / n_true if n_true else float(n_pred == 0)
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return InstanceScore(precision, recall, f1, matched, n_pred, n_true)


def instance_f1(pred: np.ndarray, truth: np.ndarray, iou_threshold: float = 0.5) -> InstanceScore:
    """Match predicted to true instances at ``IoU > iou_threshold`` and score them.

    For thresholds of 0.5 and above each object can match at most one other,
    so counting pairs above the threshold is an exact matching.
    """
    return score_at(overlaps(pred, truth), iou_threshold)


def class_scores(pred: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """Macro precision, recall and mean IoU over the classes present in ``truth``.

    Parameters
    ----------
    pred, truth : numpy.ndarray
        Class labels of the same pixels (any integers; 0 is a class like any other).

    Returns
    -------
    dict
        ``precision``, ``recall`` and ``iou``: means over the truth's classes.
    """
    pred, truth = np.asarray(pred).ravel(), np.asarray(truth).ravel()
    ps, rs, ious = [], [], []
    for c in np.unique(truth):
        p, t = pred == c, truth == c
        inter = np.count_nonzero(p & t)
        ps.append(inter / max(np.count_nonzero(p), 1))
        rs.append(inter / max(np.count_nonzero(t), 1))
        ious.append(inter / max(np.count_nonzero(p | t), 1))
    return {"precision": float(np.mean(ps)), "recall": float(np.mean(rs)), "iou": float(np.mean(ious))}
