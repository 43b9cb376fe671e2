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


def instance_f1(pred: np.ndarray, truth: np.ndarray, iou_threshold: float = 0.5) -> InstanceScore:
    """Match predicted to true instances at ``IoU > iou_threshold`` and score them.

    For thresholds of 0.5 and above each object can match at most one other,
    so counting pairs above the threshold is an exact matching.
    """
    pred, truth = np.asarray(pred).ravel(), np.asarray(truth).ravel()
    n_pred = len(np.unique(pred[pred > 0]))
    n_true = len(np.unique(truth[truth > 0]))
    both = (pred > 0) & (truth > 0)
    pairs, inter = np.unique(np.stack([pred[both], truth[both]]), axis=1, return_counts=True)
    pred_ids, pred_sizes = np.unique(pred, return_counts=True)
    true_ids, true_sizes = np.unique(truth, return_counts=True)
    size_p = pred_sizes[np.searchsorted(pred_ids, pairs[0])] if pairs.size else np.array([])
    size_t = true_sizes[np.searchsorted(true_ids, pairs[1])] if pairs.size else np.array([])
    iou = inter / (size_p + size_t - inter) if pairs.size else np.array([])
    matched = int(np.count_nonzero(iou > iou_threshold))
    precision = matched / n_pred if n_pred else float(n_true == 0)
    recall = matched / n_true if n_true else float(n_pred == 0)
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return InstanceScore(precision, recall, f1, matched, n_pred, n_true)


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
