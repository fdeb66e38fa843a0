"""Paired augmentation of an image crop, its mask crop and its weight-map crop.

Crops are concentric: in valid mode the image crop is the mask crop plus the network's context on every
side. Geometric transforms are therefore computed once, as a map from every pixel of the *image* window
to a source position in the (mirror-padded) full image; the mask and weight windows use the central part
of the same map, so all three stay aligned whatever the deformation. One map holds flips, 90-degree
rotations, arbitrary rotation, scaling and the paper's elastic deformation, so each pixel is
interpolated once: images and weight maps linearly, masks by nearest neighbour (no new class values).

Intensity transforms work on the normalised float32 image, channel by channel, for any number of
channels (multi-band images included).

Albumentations was considered and not used: its intensity transforms clip float images to [0, 1] and
its gamma gives NaN on negative values, which breaks standardised multi-band data, and no transform of
it implements the paper's coarse-grid bicubic elastic field on concentric crops of different sizes.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from unetkit.data.augmentation import Augmentation

# OpenCV's thread pool does not survive fork: a data-loader worker forked after the pool started hangs
# in its first remap. Parallelism comes from worker processes instead (``workers``), so run it serially.
cv2.setNumThreads(0)

_BLUR_PROBABILITY = 0.5  # share of patches blurred when blur_sigma > 0


def flip_rotate(
    image: np.ndarray, mask: np.ndarray, weight: np.ndarray | None, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Random horizontal/vertical flips and a random multiple of 90 degrees, the same for all three.

    Exact (no interpolation). Rotations are drawn only for square crops.

    Args:
        image: (C, h, w) crop.
        mask: (h', w') crop centred on the image crop.
        weight: (h', w') weight-map crop like ``mask``, or None.
    """
    arrays = [image, mask] + ([weight] if weight is not None else [])
    if rng.random() < 0.5:
        arrays = [a[..., :, ::-1] for a in arrays]
    if rng.random() < 0.5:
        arrays = [a[..., ::-1, :] for a in arrays]
    k = int(rng.integers(4)) if image.shape[1] == image.shape[2] else 0
    if k:
        arrays = [np.rot90(a, k, axes=(-2, -1)) for a in arrays]
    arrays = [np.ascontiguousarray(a) for a in arrays]
    return arrays[0], arrays[1], arrays[2] if weight is not None else None


def elastic_field(size: int, sigma: float, grid: int, rng: np.random.Generator) -> np.ndarray:
    """The paper's smooth random displacement field for a ``size`` x ``size`` window.

    Displacement vectors are drawn from N(0, sigma^2) on a coarse ``grid`` x ``grid`` grid spanning
    the window and interpolated bicubically to every pixel.

    Returns:
        (2, size, size) float32 row and column displacements in pixels.
    """
    coarse = rng.normal(0.0, sigma, size=(2, grid, grid)).astype(np.float32)  # (2, grid, grid)
    return np.stack([cv2.resize(c, (size, size), interpolation=cv2.INTER_CUBIC) for c in coarse])


def spatial_map(size: int, aug: Augmentation, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Source position of every pixel of a ``size`` x ``size`` output window, for one random draw.

    The window's centre maps to the source window's centre; each output offset ``q`` from the centre,
    first displaced by the elastic field, is rotated, scaled and flipped into a source offset. Without
    any transform the result is the identity ``rows[i, j] == i``, ``cols[i, j] == j``.

    Returns:
        ``(rows, cols)``: two (size, size) float32 arrays of source coordinates, relative to the top-left
        corner of the source window.
    """
    a = np.eye(2)
    if aug.flip_rotate:
        if rng.random() < 0.5:
            a = a @ np.diag([1.0, -1.0])
        if rng.random() < 0.5:
            a = a @ np.diag([-1.0, 1.0])
        k = int(rng.integers(4))
        a = a @ np.linalg.matrix_power(np.array([[0.0, 1.0], [-1.0, 0.0]]), k)
    elif aug.hflip and rng.random() < 0.5:
        a = a @ np.diag([1.0, -1.0])  # columns mirrored: a left-right flip
    if aug.rotate_degrees > 0:
        theta = math.radians(rng.uniform(-aug.rotate_degrees, aug.rotate_degrees))
        a = a @ np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])
    low, high = aug.scale_range
    if (low, high) != (1.0, 1.0):
        a = a / math.exp(rng.uniform(math.log(low), math.log(high)))  # zoom in: smaller source offsets
    centre = (size - 1) / 2.0
    q = np.arange(size, dtype=np.float32) - centre
    qr, qc = np.meshgrid(q, q, indexing="ij")  # (size, size) offsets from the centre
    if aug.elastic_sigma > 0:
        d = elastic_field(size, aug.elastic_sigma, aug.elastic_grid, rng)
        qr, qc = qr + d[0], qc + d[1]
    rows = centre + a[0, 0] * qr + a[0, 1] * qc
    cols = centre + a[1, 0] * qr + a[1, 1] * qc
    return rows.astype(np.float32), cols.astype(np.float32)


def source_box(rows: np.ndarray, cols: np.ndarray, height: int, width: int) -> tuple[int, int, int, int]:
    """(r0, r1, c0, c1): the part of a (height, width) source that bilinear sampling at ``(rows, cols)`` reads, clipped to
    it. :func:`remap` reads only this box; a reader of a large image on disk reads the same box and remaps it alone."""
    r0 = int(np.clip(math.floor(float(rows.min())) - 1, 0, height - 1))
    r1 = int(np.clip(math.ceil(float(rows.max())) + 2, r0 + 1, height))
    c0 = int(np.clip(math.floor(float(cols.min())) - 1, 0, width - 1))
    c1 = int(np.clip(math.ceil(float(cols.max())) + 2, c0 + 1, width))
    return r0, r1, c0, c1


def remap(array: np.ndarray, rows: np.ndarray, cols: np.ndarray, nearest: bool = False, fill: float | None = None) -> np.ndarray:
    """Sample ``array`` at the float positions ``(rows, cols)``.

    Only the bounding box of the positions is read, so ``array`` may be a whole large image.

    Args:
        array: (H, W) or (C, H, W) source.
        rows, cols: (h, w) source coordinates.
        nearest: Nearest-neighbour sampling (masks) instead of bilinear.
        fill: Value outside ``array``; None mirrors the border (like ``numpy.pad(mode="reflect")``).

    Returns:
        (h, w) or (C, h, w) in the dtype of ``array``.
    """
    r0, r1, c0, c1 = source_box(rows, cols, *array.shape[-2:])
    map_rows, map_cols = rows - np.float32(r0), cols - np.float32(c0)
    options = dict(
        interpolation=cv2.INTER_NEAREST if nearest else cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_REFLECT_101 if fill is None else cv2.BORDER_CONSTANT,
        borderValue=0 if fill is None else fill,
    )
    planes = array[None] if array.ndim == 2 else array
    out = np.stack([cv2.remap(p[r0:r1, c0:c1], map_cols, map_rows, **options) for p in planes])  # (C, h, w)
    return out[0] if array.ndim == 2 else out


def adjust_intensity(image: np.ndarray, aug: Augmentation, rng: np.random.Generator) -> np.ndarray:
    """Random brightness, contrast, gamma, blur and noise on a normalised (C, h, w) float32 image.

    Brightness and contrast draw one value for all channels and apply it to each channel about that
    channel's mean; gamma acts on each channel rescaled to [0, 1] by its own range, then scaled back.
    """
    x = image.astype(np.float32, copy=True)
    if aug.contrast > 0:
        mean = x.mean(axis=(1, 2), keepdims=True)  # (C, 1, 1)
        x = mean + (x - mean) * np.float32(rng.uniform(1 - aug.contrast, 1 + aug.contrast))
    if aug.brightness > 0:
        x += np.float32(rng.uniform(-aug.brightness, aug.brightness))
    if aug.gamma > 1:
        g = np.float32(math.exp(rng.uniform(-math.log(aug.gamma), math.log(aug.gamma))))
        low = x.min(axis=(1, 2), keepdims=True)  # (C, 1, 1)
        span = np.maximum(x.max(axis=(1, 2), keepdims=True) - low, np.float32(1e-6))
        x = low + span * ((x - low) / span) ** g
    if aug.blur_sigma > 0 and rng.random() < _BLUR_PROBABILITY:
        sigma = float(rng.uniform(0, aug.blur_sigma))
        if sigma > 0.05:
            x = np.stack([cv2.GaussianBlur(c, (0, 0), sigma, borderType=cv2.BORDER_REFLECT_101) for c in x])
    if aug.noise_std > 0:
        x += rng.normal(0.0, rng.uniform(0, aug.noise_std), size=x.shape).astype(np.float32)
    return x
