"""Boundary quality of one class mask: 95th-percentile Hausdorff distance and boundary F1.

The boundary of a mask is its inner contour: the mask's pixels with a 4-neighbour outside the mask.
The image edge is not a boundary (an object cut by the frame has no contour there). Distances are
Euclidean, in pixels, between pixel centres.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

_FOUR = ndimage.generate_binary_structure(2, 1)


def boundary(mask: np.ndarray) -> np.ndarray:
    """(H, W) bool inner contour of a (H, W) bool mask; the image edge does not count as a contour.

    Example:
        >>> boundary(np.pad(np.ones((3, 3), bool), 1)).astype(int)[1:4, 1:4]
        array([[1, 1, 1],
               [1, 0, 1],
               [1, 1, 1]])
    """
    mask = np.asarray(mask, bool)
    return mask & ~ndimage.binary_erosion(mask, _FOUR, border_value=1)


def _distance_to(edge: np.ndarray) -> np.ndarray:
    """Distance of every pixel to the nearest ``True`` pixel of ``edge`` (which must not be empty)."""
    return ndimage.distance_transform_edt(~edge)


def _edges(pred: np.ndarray, truth: np.ndarray, valid: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    if pred.shape != truth.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from truth shape {truth.shape}")
    bp, bt = boundary(pred), boundary(truth)
    if valid is not None:
        bp, bt = bp & valid, bt & valid
    return bp, bt


def hd95(pred: np.ndarray, truth: np.ndarray, valid: np.ndarray | None = None) -> float | None:
    """95th-percentile Hausdorff distance between the contours of two (H, W) bool masks, in pixels.

    The larger of the two directed 95th percentiles: of the distances from each predicted contour
    pixel to the nearest true contour pixel, and the other way round (as MONAI's
    ``compute_hausdorff_distance(percentile=95)``). Contour pixels outside ``valid`` (ignored pixels)
    are left out.

    Returns:
        The distance; 0.0 when both masks are equal and have no contour (e.g. both fill the image);
        ``None`` when it is undefined: one contour is empty and the other is not (a missed or
        invented object has no finite distance), or both masks are empty.
    """
    bp, bt = _edges(np.asarray(pred, bool), np.asarray(truth, bool), valid)
    if not bp.any() or not bt.any():
        if not bp.any() and not bt.any() and np.any(truth) and np.array_equal(np.asarray(pred, bool), np.asarray(truth, bool)):
            return 0.0
        return None
    d_pt = _distance_to(bt)[bp]  # predicted contour -> true contour
    d_tp = _distance_to(bp)[bt]
    return float(max(np.percentile(d_pt, 95), np.percentile(d_tp, 95)))


def boundary_counts(pred: np.ndarray, truth: np.ndarray, tolerance: float = 2.0, valid: np.ndarray | None = None) -> np.ndarray:
    """Counts for boundary F1 at ``tolerance`` pixels, to be summed over images.

    Returns:
        int64 ``[matched_pred, pred, matched_truth, truth]``: predicted contour pixels within
        ``tolerance`` of a true contour pixel, all predicted contour pixels, and the same for the truth.
    """
    bp, bt = _edges(np.asarray(pred, bool), np.asarray(truth, bool), valid)
    matched_p = int((_distance_to(bt)[bp] <= tolerance).sum()) if bt.any() else 0
    matched_t = int((_distance_to(bp)[bt] <= tolerance).sum()) if bp.any() else 0
    return np.array([matched_p, bp.sum(), matched_t, bt.sum()], np.int64)


def boundary_f1(counts: np.ndarray) -> float | None:
    """Boundary F1 from (summed) :func:`boundary_counts`: 2PR / (P + R) of contour precision and recall.

    ``None`` when neither mask has a contour; 0.0 when only one has.

    Example:
        >>> boundary_f1(np.array([3, 4, 3, 6]))  # P = 3/4, R = 1/2
        0.6
    """
    matched_p, n_p, matched_t, n_t = (int(v) for v in counts)
    if n_p == 0 and n_t == 0:
        return None
    if n_p == 0 or n_t == 0:
        return 0.0
    precision, recall = matched_p / n_p, matched_t / n_t
    return 0.0 if precision + recall == 0 else float(2 * precision * recall / (precision + recall))
