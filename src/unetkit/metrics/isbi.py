"""The ISBI 2012 EM segmentation challenge's metrics: pixel error, Rand error and warping error.

These are the three columns of Table 1 of the U-Net paper (Ronneberger et al. 2015). The challenge
scored a probability map of the cell interiors (foreground; membranes are background) against binary
truth, after thresholding the map at a sweep of values, and kept the best value of each metric over
the sweep. The definitions follow the challenge's reference implementation (Fiji's
``trainableSegmentation.metrics``, by I. Arganda-Carreras) and its publication: Arganda-Carreras et al.
2015, "Crowdsourcing the creation of image segmentation algorithms for connectomics", Front.
Neuroanat. 9:142.

Exact choices made here, each as in the reference implementation unless said otherwise:

- **Binarisation**: foreground where the probability is strictly above the threshold; the sweep is
  0.1, 0.2, ..., 0.9 (:data:`THRESHOLDS`; the reference swept 0.0 to 1.0, whose ends give constant
  images that are never the best). One threshold is chosen per metric for the whole set of images.
- **Objects**: 4-connected components of the foreground, in truth and prediction alike; the
  background is therefore 8-connected.
- **Pixel error**: the share of pixels whose thresholded label differs from the truth (the squared
  Euclidean distance between the binary label images, divided by the pixel count).
- **Rand error**: 1 minus the foreground-restricted Rand F-score; see :func:`rand_counts`.
- **Warping error**: the share of pixels that still differ after the truth is warped towards the
  prediction by flipping simple points only; see :func:`warp`.
- **Several images**: counts are summed over images before dividing (for equal-sized images the
  pixel and warping errors are then the mean over images, as in the reference).
- **Ignored pixels** (``valid`` false) take part in no count, and warping never flips them.
"""

from __future__ import annotations

import heapq

import numpy as np
from scipy import ndimage

#: Thresholds on the foreground probability swept by :func:`isbi_counts`.
THRESHOLDS = tuple(round(0.1 * i, 1) for i in range(1, 10))

_FOUR = ndimage.generate_binary_structure(2, 1)
_EIGHT = np.ones((3, 3), bool)


def components(foreground: np.ndarray) -> np.ndarray:
    """(H, W) int32 labels of the 4-connected components of a bool mask (0 = background)."""
    labels, _ = ndimage.label(foreground, _FOUR)
    return labels.astype(np.int32)


def rand_counts(truth: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """Pair counts of the foreground-restricted Rand F-score of two (H, W) label images.

    ``truth`` and ``pred`` number objects from 1, with 0 for boundary/background. Only pixels where
    the truth is foreground count. With n_ij the number of such pixels in true object i and predicted
    object j (j = 0: predicted background), a_i = sum_j n_ij and b_j = sum_i n_ij:

    - ``sum_a`` = sum_i a_i^2 (pairs of pixels in one true object),
    - ``sum_b`` = sum_{j>0} b_j^2 + n_.0,
    - ``sum_ab`` = sum_{i, j>0} n_ij^2 + n_.0,

    that is, a predicted-background pixel inside a true object counts as an object of its own (as the
    reference's ``foregroundRestrictedStatsN2`` and the SNEMI3D script do). Rand precision is
    ``sum_ab / sum_b``, recall ``sum_ab / sum_a``, and their F-score ``2 sum_ab / (sum_a + sum_b)``
    (:func:`rand_error`).

    Returns:
        int64 ``[sum_ab, sum_a, sum_b]``, to be summed over images.
    """
    if truth.shape != pred.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from truth shape {truth.shape}")
    inside = truth > 0
    t = truth[inside].astype(np.int64)
    p = pred[inside].astype(np.int64)
    if not t.size:
        return np.zeros(3, np.int64)
    singletons = int((p == 0).sum())
    a = np.bincount(t)
    b = np.bincount(p[p > 0])
    _, n_ij = np.unique(t[p > 0] * (int(p.max()) + 1) + p[p > 0], return_counts=True)
    sum_ab = int((n_ij.astype(np.int64) ** 2).sum()) + singletons
    sum_a = int((a.astype(np.int64) ** 2).sum())
    sum_b = int((b.astype(np.int64) ** 2).sum()) + singletons
    return np.array([sum_ab, sum_a, sum_b], np.int64)


def rand_error(counts: np.ndarray) -> float | None:
    """1 - the Rand F-score of (summed) :func:`rand_counts`; ``None`` without true foreground.

    Example (a true object of 6 pixels split into 3 + 3, with no boundary pixel between):
        >>> rand_error(np.array([18, 36, 18]))  # precision 1, recall 1/2, F = 2/3
        0.33333333333333337
    """
    sum_ab, sum_a, sum_b = (int(v) for v in counts)
    if sum_a + sum_b == 0:
        return None
    return 1.0 - 2.0 * sum_ab / (sum_a + sum_b)


def _simple_point_table() -> list[bool]:
    """For each of the 512 3x3 binary patches (bit k = patch.flat[k]): is the centre a simple point?

    A pixel is simple for a 4-connected foreground and an 8-connected background when flipping it
    changes no topology. Bertrand and Malandain (1994, Pattern Recogn. Lett. 15:169-175) show this
    holds exactly when, in its 8-neighbourhood without the centre, the foreground has one
    4-connected component 4-adjacent to the centre (T4 = 1) and the background one 8-connected
    component (T8 = 1).
    """
    table = []
    cross = [(0, 1), (1, 0), (1, 2), (2, 1)]
    for code in range(512):
        patch = ((code >> np.arange(9)) & 1).astype(bool).reshape(3, 3)
        patch[1, 1] = False
        fg, _ = ndimage.label(patch, _FOUR)
        t4 = len({int(fg[r, c]) for r, c in cross} - {0})
        rest = ~patch
        rest[1, 1] = False
        _, t8 = ndimage.label(rest, _EIGHT)
        table.append(t4 == 1 and t8 == 1)
    return table


_SIMPLE = _simple_point_table()


def warp(truth: np.ndarray, pred: np.ndarray, priority: np.ndarray | None = None, valid: np.ndarray | None = None) -> np.ndarray:
    """Warp a binary truth towards a binary prediction by flipping simple points (Jain et al. 2010).

    Jain et al., "Boundary learning by optimization with topological constraints", CVPR 2010: the
    warping of the truth L* towards the prediction L is the image L' closest to L in Hamming
    distance that can be reached from L* by flipping simple points one at a time, so that L' has
    exactly the topology of L* (no object split, merged, added or deleted, no hole added or filled).
    As in the reference, it is found greedily: pass over the pixels where L' and L differ, most
    confident first (largest ``priority``, ties in raster order), flipping each that is simple at that
    moment, and repeat until a pass flips nothing. The image is framed by background.

    Args:
        truth: (H, W) bool true foreground.
        pred: (H, W) bool predicted foreground.
        priority: (H, W) order of the flips, e.g. ``abs(probability - threshold)``; default: raster order.
        valid: (H, W) bool pixels that may be flipped; default: all.

    Returns:
        (H, W) bool warped truth.
    """
    if truth.shape != pred.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from truth shape {truth.shape}")
    h, w = truth.shape
    width = w + 2
    padded = np.zeros((h + 2, w + 2), np.uint8)
    padded[1:-1, 1:-1] = truth
    target = np.zeros_like(padded)
    target[1:-1, 1:-1] = pred
    allowed = np.zeros(padded.shape, bool)
    allowed[1:-1, 1:-1] = True if valid is None else valid
    order = np.zeros(padded.shape, np.float64)
    if priority is not None:
        order[1:-1, 1:-1] = priority
    # Passes as in the reference, but a pixel is looked at again only when a neighbour has flipped
    # since it was last found not simple (otherwise it still is not): pass k+1 visits, in the same
    # order, the pixels dirtied after their visit in pass k, plus those dirtied during pass k+1
    # before their turn. The result is that of plain passes, at a fraction of the cost.
    wrong_at = np.flatnonzero((padded != target) & allowed)  # flips only ever remove mismatches
    visit = wrong_at[np.argsort(-order.ravel()[wrong_at], kind="stable")].tolist()  # rank -> pixel
    rank = dict(zip(visit, range(len(visit))))
    wrong = set(visit)
    state = padded.ravel().tolist()  # a list: per-pixel reads in the loop below are fastest on it
    simple = _SIMPLE
    up, down = -width, width
    neighbours = (up - 1, up, up + 1, -1, 1, down - 1, down, down + 1)
    seen = {}  # pixel -> the pass that last visited it
    heap = list(range(len(visit)))  # pass 1 visits every mismatch; a sorted list is a heap
    number = 1
    while heap:
        later: set[int] = set()
        while heap:
            r = heapq.heappop(heap)
            i = visit[r]
            if seen.get(i) == number or i not in wrong:
                continue
            seen[i] = number
            code = (state[i + up - 1] | state[i + up] << 1 | state[i + up + 1] << 2
                    | state[i - 1] << 3 | state[i] << 4 | state[i + 1] << 5
                    | state[i + down - 1] << 6 | state[i + down] << 7 | state[i + down + 1] << 8)
            if not simple[code]:
                continue
            state[i] ^= 1
            wrong.discard(i)
            for j in (i + d for d in neighbours):
                if j in wrong:
                    if rank[j] > r:
                        heapq.heappush(heap, rank[j])  # its turn in this pass is still to come
                    else:
                        later.add(rank[j])
        heap = sorted(later)
        number += 1
    return np.array(state, bool).reshape(padded.shape)[1:-1, 1:-1]


def warping_mismatches(truth: np.ndarray, pred: np.ndarray, priority: np.ndarray | None = None, valid: np.ndarray | None = None) -> int:
    """Pixels (within ``valid``) where the :func:`warp` of ``truth`` still differs from ``pred``.

    Divided by the number of pixels this is the warping error. Each remaining pixel marks a
    topological disagreement: a split, a merger, an added or deleted object or hole.
    """
    warped = warp(truth, pred, priority, valid)
    differ = warped != pred
    return int((differ & valid).sum() if valid is not None else differ.sum())


#: Columns of the per-threshold counts returned by :func:`isbi_counts`.
COUNT_COLUMNS = ("pixel_wrong", "pixels", "sum_ab", "sum_a", "sum_b", "warp_wrong")


def isbi_counts(truth: np.ndarray, probability: np.ndarray, thresholds: tuple[float, ...] = THRESHOLDS,
                valid: np.ndarray | None = None, warping: bool = True) -> np.ndarray:
    """Counts behind the three ISBI errors of one image, at each threshold of the sweep.

    Args:
        truth: (H, W) bool true foreground (cell interiors).
        probability: (H, W) float foreground probability in [0, 1] (a binary mask works too).
        thresholds: The sweep.
        valid: (H, W) bool pixels that count (default: all).
        warping: Compute the warping mismatches (the slow part); 0 otherwise.

    Thresholds that binarise the map alike (all of them, for a hard mask) share the counts of the
    first of them, warping order included.

    Returns:
        (T, 6) int64, columns :data:`COUNT_COLUMNS`, to be summed over images and passed to
        :func:`isbi_errors`.
    """
    truth = np.asarray(truth, bool)
    if valid is None:
        valid = np.ones(truth.shape, bool)
    true_labels = components(truth & valid)
    out = np.zeros((len(thresholds), len(COUNT_COLUMNS)), np.int64)
    previous = None
    for row, t in enumerate(thresholds):
        pred = probability > t
        if previous is not None and np.array_equal(pred, previous):  # e.g. a hard mask: same counts
            out[row] = out[row - 1]
            continue
        previous = pred
        out[row, 0] = ((pred != truth) & valid).sum()
        out[row, 1] = valid.sum()
        out[row, 2:5] = rand_counts(true_labels, components(pred))
        if warping:
            out[row, 5] = warping_mismatches(truth, pred, np.abs(probability - t), valid)
    return out


def isbi_errors(counts: np.ndarray, thresholds: tuple[float, ...] = THRESHOLDS) -> dict:
    """The best pixel, Rand and warping error over the sweep, from (summed) :func:`isbi_counts`.

    Returns:
        ``{"pixel_error", "rand_error", "warping_error"}`` (each ``None`` when undefined) and
        ``"thresholds"``: the threshold at which each was reached.
    """
    pixels = counts[:, 1].astype(np.float64)
    if not pixels.any():
        return {"pixel_error": None, "rand_error": None, "warping_error": None, "thresholds": {}}
    per_threshold = {
        "pixel_error": counts[:, 0] / pixels,
        "rand_error": np.array([np.nan if v is None else v for v in (rand_error(c) for c in counts[:, 2:5])]),
        "warping_error": counts[:, 5] / pixels,
    }
    out: dict = {"thresholds": {}}
    for name, values in per_threshold.items():
        if np.all(np.isnan(values)):
            out[name] = None
            continue
        best = int(np.nanargmin(values))
        out[name] = float(values[best])
        out["thresholds"][name] = thresholds[best]
    return out
