"""What a planner needs to know about a training set, measured in one pass over (a sample of) its pairs.

nnU-Net plans from the median image shape and the voxel spacing; a 2D tool that must also size the network's
field of view for street scenes and aerial tiles needs more: how big the objects of each class are, and how
much of the image a class covers. :func:`fingerprint` measures that; the planner turns it into choices.

Example:
    >>> fp = fingerprint(load_spec("data/"))  # doctest: +SKIP
    >>> fp.median_shape, fp.classes[1].median_diameter  # doctest: +SKIP
    ((512, 512), 14.2)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage
from tqdm.auto import tqdm

from unetkit.data.dataset import IGNORE, DataSpec, read_instances, read_pair

MAX_PAIRS = 64  # pairs read: enough for shapes and sizes, bounded for big data sets
INSTANCE_PAIRS = 16  # pairs whose instance labels are read to see whether objects touch
PIXEL_SAMPLE = 4096  # pixels of each image kept for the intensity percentiles


@dataclass
class ClassStats:
    """One class over the pairs read.

    Attributes:
        name: The class name.
        fraction: Share of the labelled pixels.
        images: Pairs in which the class has at least one pixel.
        objects: Connected regions (8-connectivity) over those pairs.
        median_diameter: Median equivalent diameter of its regions in pixels (``2 sqrt(area / pi)``), 0 if none.
        small_diameter: 10th percentile of the same (the small objects a patch must still resolve).
        extent: 90th percentile of the larger side of the regions' bounding boxes: how far a region reaches,
            the context a decision about it may need.
        width: Typical width of the class's structures in pixels, measured along their centre lines
            (:func:`centre_widths`; a 3-pixel membrane is 3 wide however far it branches, a disk about its diameter)
            and weighted by width, so that it is the width around the median pixel of the class rather than of
            its many ragged edges.
        row: Mean vertical position of its pixels, 0 at the top of the image and 1 at the bottom: a large class far
            from 0.5 (sky, road) says the images have an up direction.
    """

    name: str
    fraction: float = 0.0
    images: int = 0
    objects: int = 0
    median_diameter: float = 0.0
    small_diameter: float = 0.0
    extent: float = 0.0
    width: float = 0.0
    row: float = 0.5


@dataclass
class Fingerprint:
    """A training set in numbers.

    Attributes:
        pairs: Pairs in the data set; ``read`` of them were measured (evenly spaced, in order).
        median_shape, min_shape: ``(rows, columns)`` of the images read.
        channels: Channels of the images.
        dtype: The images' dtype (the widest, if they differ).
        percentiles: Per channel, the 0.5th, 50th and 99.5th percentiles of a pixel sample.
        classes: One :class:`ClassStats` per class, in class order.
        ignored_fraction: Share of pixels decoded as ignored.
        touching: With instance masks, the share of objects that touch another object (None for other masks).
    """

    pairs: int
    read: int
    median_shape: tuple[int, int]
    min_shape: tuple[int, int]
    channels: int
    dtype: str
    percentiles: list[tuple[float, float, float]]
    classes: list[ClassStats] = field(default_factory=list)
    ignored_fraction: float = 0.0
    touching: float | None = None


def evenly(items: list, limit: int = MAX_PAIRS) -> list:
    """At most ``limit`` of ``items``, evenly spaced in their order (all of them when fewer)."""
    if len(items) <= limit:
        return list(items)
    return [items[i] for i in np.linspace(0, len(items) - 1, limit).round().astype(int)]


def sample_pairs(spec: DataSpec, limit: int = MAX_PAIRS) -> list:
    """At most ``limit`` labelled pairs, evenly spaced over the data set in its order."""
    return evenly([p for p in spec.pairs if p.mask is not None], limit)


def region_sizes(mask: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Areas and bounding-box larger sides of the 8-connected regions of class ``k`` in an (H, W) mask."""
    labels, count = ndimage.label(mask == k, structure=np.ones((3, 3), bool))
    if count == 0:
        return np.zeros(0), np.zeros(0)
    areas = np.bincount(labels.ravel(), minlength=count + 1)[1:]
    sides = np.array([max(s[0].stop - s[0].start, s[1].stop - s[1].start) for s in ndimage.find_objects(labels)])
    return areas, sides


def _shifted(padded: np.ndarray, dr: int, dc: int) -> np.ndarray:
    """The neighbour at offset ``(dr, dc)`` of every pixel of an array padded by one pixel on each side."""
    h, w = padded.shape[0] - 2, padded.shape[1] - 2
    return padded[1 + dr : 1 + dr + h, 1 + dc : 1 + dc + w]


def centre_widths(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Widths of the structures of every class of an (H, W) mask, measured along their centre lines in one pass.

    A pixel that touches (4-neighbours) a pixel of another class, or the image border, is on an edge; ``d`` is the
    distance to the nearest edge pixel, and a centre line is where ``d`` is a local maximum (3x3) within its class.
    There a structure is ``2 d + 1`` pixels wide: a stripe ``w`` pixels wide (``w`` odd) gives ``w``, a disk about
    its diameter. One distance transform serves all classes, instead of a skeleton per class.

    Returns:
        ``(classes, widths)``: the class of each centre-line pixel and the width there.
    """
    labels = np.pad(mask.astype(np.int64), 1, constant_values=np.iinfo(np.int64).min)  # the border ends a structure too
    inner = labels[1:-1, 1:-1]
    edge = np.zeros(mask.shape, bool)
    for dr, dc in ((-1, 0), (1, 0), (0, -1), (0, 1)):
        edge |= _shifted(labels, dr, dc) != inner
    distance = ndimage.distance_transform_edt(~edge)
    padded = np.pad(distance, 1)
    centre = np.ones(mask.shape, bool)
    for dr, dc in ((-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1)):  # neighbours of the same class only
        centre &= (_shifted(padded, dr, dc) <= distance) | (_shifted(labels, dr, dc) != inner)
    return mask[centre], 2 * distance[centre] + 1


def weighted_median(values: np.ndarray, weights: np.ndarray) -> float:
    """The value below which half the total weight lies (the lower one at a tie)."""
    order = np.argsort(values, kind="stable")
    cumulative = np.cumsum(weights[order])
    return float(values[order][np.searchsorted(cumulative, cumulative[-1] / 2)])


class ClassTally:
    """The class statistics of :class:`ClassStats`, gathered one decoded (H, W) mask at a time."""

    def __init__(self, classes: list[str]) -> None:
        k = len(classes)
        self.classes, self.masks = list(classes), 0
        self.pixels, self.images, self.rows = np.zeros(k, np.int64), np.zeros(k, np.int64), np.zeros(k)
        self.areas: list[list[np.ndarray]] = [[] for _ in range(k)]
        self.sides: list[list[np.ndarray]] = [[] for _ in range(k)]
        self.widths: list[list[np.ndarray]] = [[] for _ in range(k)]
        self.ignored = self.total = 0

    def add(self, mask: np.ndarray) -> None:
        """Count one mask of class indices (:data:`~unetkit.data.dataset.IGNORE` where unlabelled)."""
        labelled = mask != IGNORE
        counts = np.bincount(mask[labelled].ravel(), minlength=len(self.classes))[: len(self.classes)]
        heights = np.broadcast_to(np.linspace(0.0, 1.0, mask.shape[0])[:, None], mask.shape)  # 0 top .. 1 bottom
        self.rows += np.bincount(mask[labelled].ravel(), weights=heights[labelled], minlength=len(self.classes))[: len(self.classes)]
        self.pixels, self.images, self.masks = self.pixels + counts, self.images + (counts > 0), self.masks + 1
        self.ignored, self.total = self.ignored + int((mask == IGNORE).sum()), self.total + mask.size
        classes, widths = centre_widths(mask)
        for c in np.flatnonzero(counts):
            self.widths[c].append(widths[classes == c])
            areas, sides = region_sizes(mask, c)
            self.areas[c].append(areas)
            self.sides[c].append(sides)

    def stats(self) -> list[ClassStats]:
        """One :class:`ClassStats` per class, in class order."""
        return [self._stats(c, name) for c, name in enumerate(self.classes)]

    def _stats(self, c: int, name: str) -> ClassStats:
        areas, sides, widths = (np.concatenate(parts[c] or [np.zeros(0)]) for parts in (self.areas, self.sides, self.widths))
        diameters = 2 * np.sqrt(areas / math.pi)
        return ClassStats(
            name=name,
            fraction=int(self.pixels[c]) / max(int(self.pixels.sum()), 1),
            images=int(self.images[c]),
            objects=len(areas),
            median_diameter=float(np.median(diameters)) if len(diameters) else 0.0,
            small_diameter=float(np.percentile(diameters, 10)) if len(diameters) else 0.0,
            extent=float(np.percentile(sides, 90)) if len(sides) else 0.0,
            width=weighted_median(widths, widths) if len(widths) else 0.0,
            row=float(self.rows[c] / self.pixels[c]) if self.pixels[c] else 0.5,
        )


def touching_objects(labels: np.ndarray) -> tuple[int, int]:
    """``(objects that touch another object, objects)`` in an (H, W) instance label image (0 = background);
    objects touch when 4-neighbouring pixels hold two different ids."""
    ids = np.unique(labels[labels > 0])
    touched: set[int] = set()
    for a, b in ((labels[:, :-1], labels[:, 1:]), (labels[:-1, :], labels[1:, :])):
        meet = (a != b) & (a > 0) & (b > 0)
        touched.update(np.unique(a[meet]).tolist(), np.unique(b[meet]).tolist())
    return len(touched), len(ids)


def touching_share(spec: DataSpec, limit: int = INSTANCE_PAIRS) -> float | None:
    """The share of objects that touch another one over (a sample of) ``spec``'s instance masks; None for other masks."""
    if spec.mask_mode != "instances":
        return None
    counts = np.array([touching_objects(read_instances(pair, spec)) for pair in sample_pairs(spec, limit)]).reshape(-1, 2)
    return float(counts[:, 0].sum() / max(int(counts[:, 1].sum()), 1))


def fingerprint(spec: DataSpec, limit: int = MAX_PAIRS, progress: bool = False, seed: int = 0) -> Fingerprint:
    """Measure image shapes, intensities and the classes' shares and region sizes over (a sample of) ``spec``'s pairs.

    Args:
        spec: A labelled data set (:func:`unetkit.data.dataset.load_spec`).
        limit: At most this many pairs are read, evenly spaced.
        progress: Show a progress bar.
        seed: Seed of the pixel sample for the percentiles.
    """
    pairs, rng = sample_pairs(spec, limit), np.random.default_rng(seed)
    shapes, dtypes, samples, tally = [], set(), [], ClassTally(spec.classes)
    for pair in tqdm(pairs, desc="fingerprint", unit="pair", disable=not progress, leave=False):
        image, mask = read_pair(pair, spec)  # (H, W, C), (H, W)
        shapes.append(mask.shape)
        dtypes.add(image.dtype)
        flat = image.reshape(-1, image.shape[-1])
        samples.append(flat[rng.integers(0, len(flat), min(PIXEL_SAMPLE, len(flat)))].astype(np.float64))
        tally.add(mask)
    sample = np.concatenate(samples)  # (n, C)
    return Fingerprint(
        pairs=len(spec.pairs),
        read=len(pairs),
        median_shape=tuple(int(v) for v in np.median(np.array(shapes), axis=0)),
        min_shape=tuple(int(v) for v in np.min(np.array(shapes), axis=0)),
        channels=int(sample.shape[1]),
        dtype=str(max(dtypes, key=lambda d: np.dtype(d).itemsize)),
        percentiles=[tuple(float(v) for v in np.percentile(sample[:, c], [0.5, 50, 99.5])) for c in range(sample.shape[1])],
        classes=tally.stats(),
        ignored_fraction=tally.ignored / max(tally.total, 1),
        touching=touching_share(spec),
    )
