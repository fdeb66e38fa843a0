"""Evaluation metrics as pure functions on arrays.

This module holds the pixel scores: a confusion matrix and the Dice, IoU, precision, recall and pixel
accuracy derived from it. The other families live beside it:

- :mod:`unetkit.metrics.boundary`: 95th-percentile Hausdorff distance and boundary F1;
- :mod:`unetkit.metrics.isbi`: the ISBI 2012 challenge's pixel, Rand and warping errors;
- :mod:`unetkit.metrics.instances`: IoU matching, average precision and aggregated Jaccard index.
"""

from __future__ import annotations

import numpy as np

SCORES = ("dice", "iou", "precision", "recall", "pixel_accuracy")


def confusion_matrix(pred: np.ndarray, truth: np.ndarray, num_classes: int, ignore_index: int = -1) -> np.ndarray:
    """(K, K) int64 counts: rows are true classes, columns predicted classes; ignored pixels skipped.

    Example:
        >>> confusion_matrix(np.array([0, 1, 1]), np.array([0, 1, 0]), 2)
        array([[1, 1],
               [0, 1]])
    """
    if pred.shape != truth.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from truth shape {truth.shape}")
    keep = truth != ignore_index
    t = truth[keep].astype(np.int64)
    p = pred[keep].astype(np.int64)
    if t.size and (t.min() < 0 or t.max() >= num_classes or p.min() < 0 or p.max() >= num_classes):
        raise ValueError(f"class indices outside 0..{num_classes - 1}")
    return np.bincount(t * num_classes + p, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def _ratio(num: np.ndarray, den: np.ndarray) -> list[float | None]:
    """num / den per class; None where the denominator is 0 (the score is undefined there)."""
    return [float(n / d) if d > 0 else None for n, d in zip(num, den)]


def _mean(values: list[float | None]) -> float | None:
    defined = [v for v in values if v is not None]
    return float(np.mean(defined)) if defined else None


def scores(cm: np.ndarray, class_names: list[str] | None = None) -> dict:
    """Per-class and mean Dice, IoU, precision, recall and pixel accuracy from a confusion matrix.

    A class absent from both truth and prediction has undefined scores (``None``), left out of the mean.
    ``pixel_accuracy`` per class is the one-vs-rest accuracy (TP + TN) / N; its ``overall`` entry is the
    share of all pixels classified correctly.

    Returns:
        ``{"dice": {name: v, ..., "mean": v}, "iou": {...}, ..., "pixel_accuracy": {..., "overall": v}}``
    """
    k = cm.shape[0]
    names = class_names or [str(i) for i in range(k)]
    tp = np.diag(cm).astype(np.float64)
    fp = cm.sum(0) - tp
    fn = cm.sum(1) - tp
    total = cm.sum()
    tn = total - tp - fp - fn
    per = {
        "dice": _ratio(2 * tp, 2 * tp + fp + fn),
        "iou": _ratio(tp, tp + fp + fn),
        "precision": _ratio(tp, tp + fp),
        "recall": _ratio(tp, tp + fn),
        "pixel_accuracy": _ratio(tp + tn, np.full(k, total)),
    }
    out = {}
    for key, values in per.items():
        out[key] = {name: v for name, v in zip(names, values)}
        out[key]["mean"] = _mean(values)
    out["pixel_accuracy"]["overall"] = float(tp.sum() / total) if total else None
    return out
