"""The border weight map of Ronneberger et al. (2015), eq. 2, and class-balancing weights.

    w(x) = w_c(x) + w0 * exp(-(d1(x) + d2(x))^2 / (2 sigma^2))

``d1`` and ``d2`` are the distances from pixel ``x`` to the nearest and the second-nearest object, and
``w_c`` balances the class frequencies. The border term is added on background pixels (pixels of no
object), so the thin gaps between touching objects get weights up to ``w_c + w0``: the network pays
for merging two objects there. Ignored pixels get weight 0.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import ndimage

from unetkit.data.modes import SIGMA, W0
from unetkit.data.dataset import IGNORE, DataSpec, Pair, read_instances

_TOLERANCE = 1e-4  # the border term is computed exactly wherever it exceeds this


def class_pixel_counts(masks: Sequence[np.ndarray], num_classes: int) -> np.ndarray:
    """(num_classes,) int64 pixel count of every class over ``masks``; ignored pixels do not count."""
    counts = np.zeros(num_classes, np.int64)
    for mask in masks:
        values = mask[(mask >= 0) & (mask < num_classes)]
        counts += np.bincount(values.ravel(), minlength=num_classes)[:num_classes]
    return counts


def balanced_class_weights(counts: Sequence[int]) -> np.ndarray:
    """Class weights ``total / (K * count_k)`` over the K classes present; absent classes get 1.

    The pixel-weighted mean weight is then 1, and every present class carries the same total weight.

    Example:
        >>> balanced_class_weights([300, 100]).tolist()
        [0.6666666666666666, 2.0]
    """
    counts = np.asarray(counts, dtype=np.float64)
    present = counts > 0
    weights = np.ones(len(counts))
    weights[present] = counts[present].sum() / (present.sum() * counts[present])
    return weights


def nearest_two_distances(instances: np.ndarray, limit: float = math.inf) -> tuple[np.ndarray, np.ndarray]:
    """Distances from every pixel to the nearest and the second-nearest object.

    The distance to an object is the Euclidean distance to its closest pixel (0 on the object).

    Args:
        instances: (H, W) integer labels, 0 = background, 1..N objects (ids need not be contiguous).
        limit: Distances above ``limit`` may be returned as ``inf``: each object's distance transform is
            computed only within its bounding box grown by ``limit``, which keeps images with hundreds of
            objects fast. ``inf`` (default) computes everything exactly.

    Returns:
        ``(d1, d2)``: two (H, W) float64 arrays; ``inf`` where there is no (second) object.
    """
    d1 = np.full(instances.shape, np.inf)
    d2 = np.full(instances.shape, np.inf)
    grow = instances.shape[0] + instances.shape[1] if math.isinf(limit) else int(math.ceil(limit)) + 1
    for number, box in enumerate(ndimage.find_objects(instances), start=1):
        if box is None:
            continue
        rows = slice(max(box[0].start - grow, 0), min(box[0].stop + grow, instances.shape[0]))
        cols = slice(max(box[1].start - grow, 0), min(box[1].stop + grow, instances.shape[1]))
        distance = ndimage.distance_transform_edt(instances[rows, cols] != number)  # (h, w) to this object
        near, second = d1[rows, cols], d2[rows, cols]
        d2[rows, cols] = np.minimum(second, np.maximum(near, distance))
        d1[rows, cols] = np.minimum(near, distance)
    return d1, d2


def border_weight_map(
    instances: np.ndarray,
    mask: np.ndarray | None = None,
    class_weights: Sequence[float] | None = None,
    w0: float = W0,
    sigma: float = SIGMA,
) -> np.ndarray:
    """The paper's weight map ``w = w_c + w0 * exp(-(d1 + d2)^2 / (2 sigma^2))``.

    Args:
        instances: (H, W) object labels, 0 = background (see :func:`unetkit.data.dataset.read_instances`).
        mask: (H, W) class indices with :data:`IGNORE` for ignored pixels, or None (all weights ``w_c`` = 1).
        class_weights: ``w_c`` per class, e.g. from :func:`balanced_class_weights`; None = 1 for all.
        w0: Height of the border term (paper: 10).
        sigma: Width of the border term in pixels (paper: 5).

    Returns:
        (H, W) float32: ``w_c`` of the pixel's class, plus the border term on pixels of no object (only
        where two objects exist; it is exact wherever it exceeds 1e-4); 0 on ignored pixels.

    Example:
        >>> labels = np.zeros((1, 5), int); labels[0, 0], labels[0, 4] = 1, 2
        >>> border_weight_map(labels, w0=10, sigma=5)[0, 2]  # d1 = d2 = 2
        np.float32(8.261491)
    """
    shape = instances.shape
    if mask is not None and mask.shape != shape:
        raise ValueError(f"mask shape {mask.shape} differs from instances shape {shape}")
    weights = np.ones(shape, np.float64)
    if mask is not None and class_weights is not None:
        table = np.asarray(class_weights, dtype=np.float64)
        weights = table[np.clip(mask, 0, len(table) - 1)]
    if w0 > 0 and sigma > 0:
        limit = sigma * math.sqrt(2 * math.log(max(w0 / _TOLERANCE, 1.0)))
        d1, d2 = nearest_two_distances(instances, limit)
        background = (instances == 0) & np.isfinite(d2)
        total = d1[background] + d2[background]
        weights[background] += w0 * np.exp(-(total * total) / (2 * sigma * sigma))
    if mask is not None:
        weights[mask == IGNORE] = 0.0
    return weights.astype(np.float32)


def dataset_weight_maps(
    pairs: Sequence[Pair],
    spec: DataSpec,
    masks: Sequence[np.ndarray],
    w0: float = W0,
    sigma: float = SIGMA,
    class_weights: Sequence[float] | None = None,
) -> list[np.ndarray]:
    """The weight map of every pair, computed once from its instances and decoded mask.

    Args:
        pairs: Labelled pairs of ``spec``.
        spec: The data set (objects come from :func:`unetkit.data.dataset.read_instances`).
        masks: The decoded (H, W) masks of ``pairs``, in order.
        w0, sigma: The border term (paper: 10 and 5 pixels).
        class_weights: ``w_c`` per class; None = :func:`balanced_class_weights` of ``masks``.

    Returns:
        One (H, W) float32 weight map per pair.
    """
    if class_weights is None:
        class_weights = balanced_class_weights(class_pixel_counts(masks, spec.num_classes))
    return [border_weight_map(read_instances(p, spec), m, class_weights, w0, sigma) for p, m in zip(pairs, masks)]
