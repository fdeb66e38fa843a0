"""What an integer mask holds: a binary mask (maybe with anti-aliased edges) or an image of instance labels.

Pure functions on ``(H, W)`` integer arrays. :mod:`unetkit.data.encoding` uses them to resolve
``mask_mode: auto``, :mod:`unetkit.data.dataset` to decode (and refuse) each mask.

- A **binary** mask holds 0 and one full-scale value: 1, 255 (8-bit) or 65535 (16-bit). Resized, drawn or
  JPEG-saved masks also hold a few values in between at the edges of the objects (anti-aliasing):
  they count as binary while at most :data:`MAX_BETWEEN` of the pixels are in between and at least
  :data:`MIN_AT_EDGES` of those lie within :data:`EDGE_REACH` pixels of both a 0 and a full-scale pixel.
  They decode by thresholding at half the full scale (128 for 8-bit).
- An **instance label image** gives each object its own id (0 = background): most ids form one
  connected region. A mask whose ids cover many more regions than there are ids is not one.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

MAX_BETWEEN = 0.1  # share of pixels strictly between 0 and full scale that a binary mask may have
MIN_AT_EDGES = 0.9  # share of those that must lie on an edge between 0 and full scale
EDGE_REACH = 2  # pixels (chessboard distance) from a 0 and a full-scale pixel that make an edge
MIN_OBJECTS = 3  # ids a mask needs (in at least one sampled mask) to be read as instance labels
MIN_ONE_REGION = 0.9  # share of ids that form one connected region in an instance label image
_FULL_SCALES = (1, 255, 65535)
_EIGHT = np.ones((3, 3), bool)  # 8-connectivity: diagonal neighbours touch


@dataclass(frozen=True)
class Binary:
    """A mask read as binary.

    Attributes:
        high: The foreground value: 1, 255 or 65535.
        between: Pixels strictly between 0 and ``high`` (the anti-aliased edges).
        total: Pixels counted (ignored pixels excluded).
        values_between: Distinct values strictly between 0 and ``high``.
    """

    high: int
    between: int = 0
    total: int = 0
    values_between: frozenset[int] = frozenset()

    @property
    def threshold(self) -> int:
        """The smallest foreground value: half the full scale, 128 for 8-bit masks."""
        return (self.high + 1) // 2

    @property
    def share(self) -> float:
        """The fraction of counted pixels in between, 0 for an exact binary mask."""
        return self.between / self.total if self.total else 0.0


@dataclass(frozen=True)
class Labels:
    """A mask read as instance labels.

    Attributes:
        objects: Distinct ids other than 0.
        one_region: Ids whose pixels form one 8-connected region.
        regions: 8-connected regions of all ids, each id counted apart.
        background: Whether some pixel is 0.
        worst: ``(id, regions)`` of the id with the most regions, ``(0, 0)`` without ids.
    """

    objects: int
    one_region: int
    regions: int
    background: bool
    worst: tuple[int, int] = (0, 0)

    @property
    def label_like(self) -> bool:
        """Whether this reads as an instance label image: background 0 and most ids one region."""
        return self.background and self.objects > 0 and self.one_region >= MIN_ONE_REGION * self.objects

    @property
    def contradicts(self) -> bool:
        """Whether this cannot be a label image: its ids cover more than twice as many regions (binary or class masks)."""
        return self.regions > 2 * self.objects


def _near(mask: np.ndarray) -> np.ndarray:
    """Pixels within :data:`EDGE_REACH` (chessboard distance) of a True pixel."""
    return ndimage.maximum_filter(mask.view(np.uint8), size=2 * EDGE_REACH + 1).astype(bool)


def read_binary(labels: np.ndarray, counted: np.ndarray | None = None) -> Binary | None:
    """``labels`` as a binary mask, exact or with anti-aliased edges; None when it is not one.

    Args:
        labels: ``(H, W)`` integer mask.
        counted: ``(H, W)`` bool, False for ignored pixels; None = all pixels count.

    Returns:
        The :class:`Binary` reading, or None: values outside ``0..65535``, values in between on more than
        :data:`MAX_BETWEEN` of the pixels, or fewer than :data:`MIN_AT_EDGES` of them on an edge.

    Example:
        >>> mask = np.zeros((8, 8), np.uint8); mask[:, 4:] = 255; mask[0, 3] = 128
        >>> found = read_binary(mask); (found.high, found.between, found.threshold)
        (255, 1, 128)
    """
    counted = np.ones(labels.shape, bool) if counted is None else counted
    values = labels[counted]
    if values.size == 0:
        return Binary(1)
    if values.min() < 0 or values.max() > _FULL_SCALES[-1]:
        return None
    high = next(scale for scale in _FULL_SCALES if values.max() <= scale)
    between = counted & (labels > 0) & (labels < high)  # (H, W)
    count = int(between.sum())
    if count == 0:
        return Binary(high, 0, int(values.size))
    if count > MAX_BETWEEN * values.size:
        return None
    on_edges = between & _near(counted & (labels == 0)) & _near(counted & (labels == high))
    if on_edges.sum() < MIN_AT_EDGES * count:
        return None
    return Binary(high, count, int(values.size), frozenset(np.unique(labels[between]).tolist()))


def read_labels(labels: np.ndarray, counted: np.ndarray | None = None) -> Labels:
    """``labels`` as instance labels: how many ids, and how many connected regions they cover.

    Args:
        labels: ``(H, W)`` integer mask, 0 = background.
        counted: ``(H, W)`` bool, False for ignored pixels (treated as background); None = all count.

    Example:
        >>> read_labels(np.array([[0, 7, 0, 7], [3, 0, 0, 0]])).regions  # 7 is two regions, 3 one
        3
    """
    if counted is not None:
        labels = np.where(counted, labels, 0)
    ids, inverse = np.unique(labels, return_inverse=True)
    compact = inverse.reshape(labels.shape)  # (H, W) ids renumbered 0..n-1 in increasing order
    background = bool(ids.size and ids[0] == 0)
    if not background:
        compact = compact + 1  # no pixel is 0: every id is an object
    regions, single, worst = 0, 0, (0, 0)
    for number, box in enumerate(ndimage.find_objects(compact), start=1):
        if box is None:
            continue
        count = ndimage.label(compact[box] == number, structure=_EIGHT)[1]
        regions += count
        single += count == 1
        if count > worst[1]:
            worst = (int(ids[number if background else number - 1]), count)
    return Labels(int(ids.size - background), single, regions, background, worst)
