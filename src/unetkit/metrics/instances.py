"""Object-level scores of instance label images: IoU matching, average precision, aggregated Jaccard.

Label images are (H, W) integers, 0 for background and one positive id per object (ids need not be
consecutive).
"""

from __future__ import annotations

import numpy as np

#: IoU thresholds of the Data Science Bowl 2018 score: 0.50, 0.55, ..., 0.95.
AP_THRESHOLDS = tuple(round(0.5 + 0.05 * i, 2) for i in range(10))


def _consecutive(labels: np.ndarray) -> tuple[np.ndarray, int]:
    """Renumber the positive ids of ``labels`` as 1..N; returns (labels, N)."""
    ids, inverse = np.unique(labels, return_inverse=True)
    inverse = inverse.reshape(labels.shape)
    if ids[0] != 0:  # no background pixel: every id shifts up by one
        return inverse + 1, len(ids)
    return inverse, len(ids) - 1


def overlaps(truth: np.ndarray, pred: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pixel overlaps of every true with every predicted object.

    Returns:
        ``(intersection, truth_area, pred_area)``: (N, M) int64 counts, (N,) and (M,) object areas,
        with objects in increasing order of their ids.
    """
    if truth.shape != pred.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from truth shape {truth.shape}")
    t, n = _consecutive(np.asarray(truth))
    p, m = _consecutive(np.asarray(pred))
    table = np.bincount((t * (m + 1) + p).ravel(), minlength=(n + 1) * (m + 1)).reshape(n + 1, m + 1)
    return table[1:, 1:], table[1:].sum(1), table[:, 1:].sum(0)


def iou_matrix(truth: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """(N, M) IoU of every true object (rows) with every predicted object (columns)."""
    inter, area_t, area_p = overlaps(truth, pred)
    union = area_t[:, None] + area_p[None, :] - inter
    return inter / np.maximum(union, 1)


def match_counts(iou: np.ndarray, threshold: float) -> tuple[int, int, int]:
    """(TP, FP, FN) when objects whose IoU exceeds ``threshold`` (>= 0.5) are matched.

    Above 0.5 a true object can overlap at most one predicted object that much, so the matching is
    unique and needs no assignment step.
    """
    if threshold < 0.5:
        raise ValueError(f"IoU threshold {threshold} < 0.5: the matching is only unique from 0.5 up")
    n, m = iou.shape
    tp = int((iou > threshold).sum())
    return tp, m - tp, n - tp


def average_precision(truth: np.ndarray, pred: np.ndarray, thresholds: tuple[float, ...] = AP_THRESHOLDS) -> dict:
    """Average precision of one image as the Data Science Bowl 2018 defined it.

    At each IoU threshold t the score is TP / (TP + FP + FN), where a predicted object matches a true
    one when their IoU exceeds t; the average precision is the mean over the thresholds
    (0.50, 0.55, ..., 0.95 by default).

    Returns:
        ``{"ap": mean, "per_threshold": {"0.50": v, ...}}``; every value is ``None`` when the image has
        neither true nor predicted objects.

    Example:
        >>> truth = np.array([[1, 1, 0, 2]]); pred = np.array([[1, 1, 0, 0]])
        >>> average_precision(truth, pred)["ap"]  # one of two objects found exactly: 1 / (1 + 0 + 1)
        0.5
    """
    iou = iou_matrix(truth, pred)
    per = {}
    for t in thresholds:
        tp, fp, fn = match_counts(iou, t)
        per[f"{t:.2f}"] = tp / (tp + fp + fn) if tp + fp + fn else None
    values = [v for v in per.values() if v is not None]
    return {"ap": float(np.mean(values)) if values else None, "per_threshold": per}


def aggregated_jaccard(truth: np.ndarray, pred: np.ndarray) -> float | None:
    """Aggregated Jaccard index (Kumar et al. 2017, IEEE TMI 36(7), "A dataset and a technique for
    generalized nuclear segmentation for computational pathology").

    Each true object G is paired with the predicted object S of highest IoU; |G & S| is added to the
    numerator and |G | S| to the denominator. Every predicted object never chosen then adds its area
    to the denominator. A true object that overlaps no predicted object adds its own area to the
    denominator only (so an unrelated prediction is not marked as used).

    Returns:
        The index in [0, 1]; ``None`` when the image has neither true nor predicted objects.

    Example:
        >>> aggregated_jaccard(np.array([[1, 1, 0, 0]]), np.array([[1, 0, 0, 2]]))  # (1) / (2 + 1)
        0.3333333333333333
    """
    inter, area_t, area_p = overlaps(truth, pred)
    if not len(area_t) and not len(area_p):
        return None
    union = area_t[:, None] + area_p[None, :] - inter
    iou = inter / np.maximum(union, 1)
    numerator = denominator = 0
    used = np.zeros(len(area_p), bool)
    for i in range(len(area_t)):
        j = int(iou[i].argmax()) if len(area_p) else -1
        if j < 0 or inter[i, j] == 0:
            denominator += int(area_t[i])
            continue
        numerator += int(inter[i, j])
        denominator += int(union[i, j])
        used[j] = True
    denominator += int(area_p[~used].sum())
    return numerator / denominator if denominator else None


def split_merge_counts(truth: np.ndarray, pred: np.ndarray) -> dict:
    """Objects, splits and merges of one image, by majority overlap.

    An object *belongs* to an object of the other image when more than half of its pixels lie in it
    (so it belongs to at most one). A true object is **split** when two or more predicted objects belong
    to it; a predicted object is a **merge** when two or more true objects belong to it.

    Returns:
        ``{"true_objects", "pred_objects", "splits", "merges"}`` counts.

    Example:
        >>> split_merge_counts(np.array([[1, 1, 1, 1, 0, 2, 3]]), np.array([[1, 1, 2, 2, 0, 3, 3]]))
        {'true_objects': 3, 'pred_objects': 3, 'splits': 1, 'merges': 1}
    """
    inter, area_t, area_p = overlaps(truth, pred)
    pred_in_true = 2 * inter > area_p[None, :]  # (N, M): predicted object j belongs to true object i
    true_in_pred = 2 * inter > area_t[:, None]  # (N, M): true object i belongs to predicted object j
    return {
        "true_objects": len(area_t),
        "pred_objects": len(area_p),
        "splits": int((pred_in_true.sum(1) >= 2).sum()),
        "merges": int((true_in_pred.sum(0) >= 2).sum()),
    }
