"""Touching objects as separate instances: a learnable three-class target and the watershed that undoes it.

A semantic mask cannot say where one of two touching nuclei ends and the other begins. Trained with
``target="instances"``, the U-Net learns three classes derived from instance labels instead:

- 0 ``background``;
- 1 ``interior``: object pixels away from other objects;
- 2 ``boundary``: object pixels within ``width`` pixels (Euclidean) of a pixel of a *different*
  object. Where two objects touch this is a band ``2 * width`` pixels wide that cuts them apart; the
  outline of an isolated object stays interior.

Prediction turns the class probabilities back into labelled objects (:func:`segment_instances`): the
connected components of confident interior are seeds, and a seeded watershed on the interior
probability floods them over the predicted foreground (interior + boundary), so the boundary pixels
are given back to the objects on either side. A semantic binary model gives the connected components
of its foreground instead (it cannot split touching objects; see docs/benchmarks.md, dsb-instances).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from scipy import ndimage
from skimage.segmentation import watershed

from unetkit.data.dataset import DataSpec
from unetkit.data.io import atomic_write, write_tiff
from unetkit.data.weights import (
    balanced_class_weights,
    border_weight_map,
    class_pixel_counts,
)
from unetkit.errors import UnetkitError
from unetkit.inference.options import MIN_SIZE, SEED_THRESHOLD

#: The classes of ``target="instances"``, in channel order.
INSTANCE_CLASSES = ("background", "interior", "boundary")
INSTANCE_COLORS = ((0, 0, 0), (255, 255, 255), (230, 60, 60))
BOUNDARY_WIDTH = 2  # pixels of an object this close to another object are boundary
#: Columns of the per-object CSV; bounding boxes are half-open: rows min_row..max_row-1.
OBJECT_COLUMNS = ("label", "area", "centroid_row", "centroid_col", "min_row", "min_col", "max_row", "max_col", "mean_probability")


def three_class_target(labels: np.ndarray, width: int = BOUNDARY_WIDTH) -> np.ndarray:
    """The three-class training target of an instance label image.

    Args:
        labels: (H, W) integer labels, 0 = background, one positive id per object.
        width: A pixel of object ``a`` is boundary when a pixel of another object ``b != a`` lies
            within this Euclidean distance (a disk of radius ``width``; 1 = the 4 neighbours).

    Returns:
        (H, W) int64: 0 background, 1 interior, 2 boundary.

    Example:
        >>> three_class_target(np.array([[1, 1, 1, 2, 2, 0, 3]]), width=1)
        array([[1, 1, 2, 2, 1, 0, 1]])
    """
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f"labels must be (H, W), got shape {labels.shape}")
    if width < 1:
        raise ValueError(f"boundary width must be >= 1 pixel, got {width}")
    labels = labels.astype(np.int64)
    r = np.arange(-width, width + 1)
    disk = r[:, None] ** 2 + r[None, :] ** 2 <= width * width  # (2w+1, 2w+1)
    objects = labels > 0
    top = int(labels.max(initial=0)) + 1
    # Another object is near when the largest id nearby exceeds the pixel's own, or the smallest
    # (background counted as larger than every id) is below it.
    largest = ndimage.maximum_filter(labels, footprint=disk, mode="constant", cval=0)
    smallest = ndimage.minimum_filter(np.where(objects, labels, top), footprint=disk, mode="constant", cval=top)
    target = objects.astype(np.int64)
    target[objects & ((largest > labels) | (smallest < labels))] = 2
    return target


def require_instance_masks(spec: DataSpec) -> None:
    """Refuse ``--target instances`` on a data set whose masks cannot tell touching objects apart.

    Raises:
        UnetkitError: The masks are not instance masks (per-object mask folders or label images).
    """
    if spec.mask_mode != "instances":
        raise UnetkitError(
            f"{spec.root}: --target instances needs instance masks (a folder of per-object masks per image, or label "
            f"images with one id per object) but the masks are {spec.mask_mode}; pass --mask-mode instances if they are "
            "label images, or train with --target semantic"
        )


def instance_class_weights(counts: Sequence[int]) -> list[float]:
    """``w_c`` of the three-class target from its class pixel counts: background balanced against objects (interior and
    boundary together), as for a semantic target (see :func:`instance_weight_maps`)."""
    background, objects = balanced_class_weights([counts[0], counts[1] + counts[2]])
    return [background, objects, objects]


def instance_weight_map(labels: np.ndarray, target: np.ndarray, w0: float, sigma: float, class_weights: Sequence[float]) -> np.ndarray:
    """:func:`instance_weight_maps` of one image, with its ``class_weights`` given."""
    return border_weight_map(np.where(target == 2, 0, labels), target, class_weights, w0, sigma)


def instance_weight_maps(labels: Sequence[np.ndarray], targets: Sequence[np.ndarray], w0: float, sigma: float,
                         class_weights: Sequence[float] | None = None) -> list[np.ndarray]:  # fmt: skip
    """The paper's border weight map for the three-class target.

    The boundary band counts as part of the gap between objects: the border term
    ``w0 * exp(-(d1 + d2)^2 / 2 sigma^2)`` is added on background and boundary pixels, with ``d1, d2``
    the distances to the two nearest object interiors. ``w_c`` comes from ``class_weights`` (one per
    class of :data:`INSTANCE_CLASSES`); None balances background against objects (interior and boundary
    together) as for a semantic target: the boundary is stressed by the border term, not by its
    rarity (it is ~0.2% of the DSB 2018 pixels, a balanced weight of ~160).

    Returns:
        One (H, W) float32 weight map per image.
    """
    if class_weights is None:
        class_weights = instance_class_weights(class_pixel_counts(targets, len(INSTANCE_CLASSES)))
    return [instance_weight_map(lab, t, w0, sigma, class_weights) for lab, t in zip(labels, targets)]


def model_target(meta: dict, name: str = "the model") -> str:
    """``"instances"`` or ``"semantic"``: how a checkpoint's outputs become objects; refuses models that cannot.

    Raises:
        UnetkitError: A semantic model with more than two classes (which class would be the objects?).
    """
    target = meta.get("target", "semantic")
    classes = list(meta["classes"])
    if target != "instances" and len(classes) != 2:
        raise UnetkitError(
            f"{name} predicts {len(classes)} classes ({', '.join(classes)}); --instances needs a model trained with "
            "--target instances (or a binary model, whose foreground components become the objects)"
        )
    return target


def segment_instances(
    foreground: np.ndarray,
    interior: np.ndarray | None = None,
    seed_threshold: float = SEED_THRESHOLD,
    min_size: int = MIN_SIZE,
    fill_holes: bool = True,
) -> np.ndarray:
    """Labelled objects from predicted probabilities.

    Args:
        foreground: (H, W) probability that a pixel belongs to some object (interior + boundary);
            pixels above 0.5 are foreground.
        interior: (H, W) interior probability, or None for a semantic model: the objects are then the
            4-connected components of the foreground.
        seed_threshold: Seeds are the 4-connected components of foreground pixels whose interior
            probability exceeds this; a seeded watershed on ``-interior`` floods them over the
            foreground. Foreground components that no seed reaches become objects of their own.
        min_size: Objects with fewer pixels are removed (after hole filling); 0 keeps all.
        fill_holes: Fill background holes enclosed by a single object.

    Returns:
        (H, W) uint16 labels ``1..N`` numbered in raster order of their first pixel, 0 = background.

    Raises:
        UnetkitError: More than 65535 objects (the limit of a 16-bit label image).

    Example:
        >>> segment_instances(np.array([[0.9, 0.9, 0.1, 0.8]]), min_size=0)
        array([[1, 1, 0, 2]], dtype=uint16)
    """
    mask = np.asarray(foreground) > 0.5
    if interior is None:
        labels, count = ndimage.label(mask)
    else:
        interior = np.asarray(interior, np.float32)
        seeds, count = ndimage.label(mask & (interior > seed_threshold))
        labels = watershed(-interior, seeds, mask=mask)  # connectivity 1: floods 4-connected
        lone, _ = ndimage.label(mask & (labels == 0))  # foreground no seed reached
        labels = np.where(lone > 0, lone + count, labels)
    labels = labels.astype(np.int64)
    if fill_holes:
        for number, box in enumerate(ndimage.find_objects(labels), start=1):
            if box is None:
                continue
            window = labels[box]  # a view: writes go into labels
            window[ndimage.binary_fill_holes(window == number) & (window == 0)] = number
    areas = np.bincount(labels.ravel())
    keep = areas >= min_size
    keep[0] = False
    labels[~keep[labels]] = 0
    # Renumber 1..N in raster order of the objects' first pixels.
    ids, first = np.unique(labels.ravel(), return_index=True)
    ids, first = ids[ids > 0], first[ids > 0]
    if len(ids) > np.iinfo(np.uint16).max:
        raise UnetkitError(f"{len(ids)} objects exceed the 65535 of a 16-bit label image; raise --min-size or --seed-threshold")
    table = np.zeros(int(labels.max(initial=0)) + 1, np.uint16)
    table[ids[np.argsort(first)]] = np.arange(1, len(ids) + 1, dtype=np.uint16)
    return table[labels]


def probabilities_to_instances(probs: np.ndarray, target: str, seed_threshold: float = SEED_THRESHOLD,
                               min_size: int = MIN_SIZE, fill_holes: bool = True) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """Objects from a model's (K, H, W) class probabilities.

    Args:
        probs: (3, H, W) background/interior/boundary probabilities for ``target="instances"``, or
            (2, H, W) background/foreground ones for a semantic binary model.
        target: The model's ``meta["target"]`` (see :func:`model_target`).

    Returns:
        ``(labels, foreground)``: (H, W) uint16 objects (:func:`segment_instances`) and the (H, W)
        float32 foreground probability, ``1 - P(background)``.
    """
    if target not in ("instances", "semantic"):
        raise ValueError(f"target must be 'instances' or 'semantic', got {target!r}")
    foreground = (1.0 - probs[0]).astype(np.float32)
    interior = probs[1] if target == "instances" else None
    return segment_instances(foreground, interior, seed_threshold, min_size, fill_holes), foreground


def object_table(labels: np.ndarray, probability: np.ndarray) -> list[dict]:
    """One row per object of a label image numbered ``1..N``: the columns of :data:`OBJECT_COLUMNS`.

    Centroids are mean row and column of the object's pixels; the bounding box is half-open
    (``min_row <= row < max_row``); ``mean_probability`` is the mean of ``probability`` over the object.

    Example:
        >>> object_table(np.array([[1, 1, 0]]), np.array([[0.8, 0.6, 0.0]]))[0]["centroid_col"]
        0.5
    """
    flat = labels.ravel().astype(np.int64)
    n = int(flat.max(initial=0))
    area = np.bincount(flat, minlength=n + 1)
    rows, cols = np.indices(labels.shape)
    sums = [np.bincount(flat, weights=v.ravel().astype(np.float64), minlength=n + 1) for v in (rows, cols, probability)]
    table = []
    for number, box in enumerate(ndimage.find_objects(labels.astype(np.int64)), start=1):
        if box is None:
            continue
        a = int(area[number])
        table.append({
            "label": number, "area": a,
            "centroid_row": float(sums[0][number] / a), "centroid_col": float(sums[1][number] / a),
            "min_row": box[0].start, "min_col": box[1].start, "max_row": box[0].stop, "max_col": box[1].stop,
            "mean_probability": float(sums[2][number] / a),
        })  # fmt: skip
    return table


def write_objects_csv(path: str | Path, table: list[dict]) -> None:
    """Write :func:`object_table` rows as CSV (floats to 4 decimals), atomically."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=OBJECT_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in table:
        writer.writerow({k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()})
    with atomic_write(path) as tmp:
        Path(tmp).write_text(buf.getvalue())


def instance_files(out: Path, key: str) -> list[Path]:
    """The files :func:`write_instances` writes for ``key``: ``out/KEY_instances.tif`` and ``out/KEY_objects.csv``."""
    return [Path(out) / f"{key}_instances.tif", Path(out) / f"{key}_objects.csv"]


def write_instances(out: Path, key: str, probs: np.ndarray, target: str, seed_threshold: float = SEED_THRESHOLD,
                    min_size: int = MIN_SIZE, fill_holes: bool = True) -> list[Path]:  # fmt: skip
    """Write ``out/KEY_instances.tif`` (uint16 labels) and ``out/KEY_objects.csv`` for one image's probabilities.

    Returns:
        The two files written.
    """
    labels, foreground = probabilities_to_instances(probs, target, seed_threshold, min_size, fill_holes)
    tif, table = instance_files(out, key)
    write_tiff(tif, labels)
    write_objects_csv(table, object_table(labels, foreground))
    return [tif, table]
