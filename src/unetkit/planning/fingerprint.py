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
from skimage.morphology import skeletonize
from tqdm.auto import tqdm

from unetkit.data.dataset import IGNORE, DataSpec, read_pair

MAX_PAIRS = 64  # pairs read: enough for shapes and sizes, bounded for big data sets
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
        width: Median width of the class's structures in pixels: twice the distance to the nearest other pixel
            along their centre lines (a 3-pixel membrane is 3 wide however far it branches; a disk, its diameter).
    """

    name: str
    fraction: float = 0.0
    images: int = 0
    objects: int = 0
    median_diameter: float = 0.0
    small_diameter: float = 0.0
    extent: float = 0.0
    width: float = 0.0


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


def centre_widths(mask: np.ndarray, k: int) -> np.ndarray:
    """Widths of class ``k``'s structures along their centre lines: ``2 d - 1`` where ``d`` is the distance from a
    skeleton pixel to the nearest pixel of another class (or the border), so a stripe ``w`` pixels wide gives ``w``."""
    inside = np.pad(mask == k, 1)  # the image border ends a structure too
    distance = ndimage.distance_transform_edt(inside)
    return 2 * distance[skeletonize(inside)] - 1


class ClassTally:
    """The class statistics of :class:`ClassStats`, gathered one decoded (H, W) mask at a time."""

    def __init__(self, classes: list[str]) -> None:
        k = len(classes)
        self.classes, self.masks = list(classes), 0
        self.pixels, self.images = np.zeros(k, np.int64), np.zeros(k, np.int64)
        self.areas: list[list[np.ndarray]] = [[] for _ in range(k)]
        self.sides: list[list[np.ndarray]] = [[] for _ in range(k)]
        self.widths: list[list[np.ndarray]] = [[] for _ in range(k)]
        self.ignored = self.total = 0

    def add(self, mask: np.ndarray) -> None:
        """Count one mask of class indices (:data:`~unetkit.data.dataset.IGNORE` where unlabelled)."""
        counts = np.bincount(mask[mask != IGNORE].ravel(), minlength=len(self.classes))[: len(self.classes)]
        self.pixels, self.images, self.masks = self.pixels + counts, self.images + (counts > 0), self.masks + 1
        self.ignored, self.total = self.ignored + int((mask == IGNORE).sum()), self.total + mask.size
        for c in np.flatnonzero(counts):
            areas, sides = region_sizes(mask, c)
            self.areas[c].append(areas)
            self.sides[c].append(sides)
            self.widths[c].append(centre_widths(mask, c))

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
            width=float(np.median(widths)) if len(widths) else 0.0,
        )


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
    )
