"""Generated data: cell-like images and masks drawn here, for the demo, the tests and the benchmarks (nothing is downloaded)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy import ndimage

from unetkit.data.io import write_png


def synthetic_cells(shape: tuple[int, int], rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One (H, W) uint8 image of bright, textured, partly touching ellipses on an uneven, noisy background.

    Returns:
        ``(image, mask)``: the image and its (H, W) uint8 mask, 255 inside cells and 0 outside.
    """
    h, w = shape
    rows, cols = np.mgrid[0:h, 0:w].astype(np.float32)
    mask = np.zeros(shape, bool)
    n = max(3, int(h * w / 1800 * rng.uniform(0.7, 1.3)))
    for _ in range(n):
        r0, c0 = rng.uniform(0, h), rng.uniform(0, w)
        a, b = rng.uniform(5, 14), rng.uniform(5, 14)
        t = rng.uniform(0, np.pi)
        dr, dc = rows - r0, cols - c0
        u = (dr * np.cos(t) + dc * np.sin(t)) / a
        v = (-dr * np.sin(t) + dc * np.cos(t)) / b
        mask |= u * u + v * v <= 1.0
    background = ndimage.gaussian_filter(rng.normal(0, 1, shape), 25)
    background = 70 + 40 * background / (np.abs(background).max() + 1e-6) + 15 * (cols / w)
    texture = ndimage.gaussian_filter(rng.normal(0, 1, shape), 1.5) * 40
    cells = ndimage.gaussian_filter(mask.astype(np.float32), 1.0) * 70
    image = background + cells + texture * mask + rng.normal(0, 12, shape)
    return np.clip(image, 0, 255).astype(np.uint8), mask.astype(np.uint8) * 255


def make_dataset(folder: str | Path, count: int, shapes: list[tuple[int, int]], seed: int) -> Path:
    """Write ``count`` synthetic pairs to ``folder/images`` and ``folder/masks`` as PNG (binary 0/255 masks)."""
    folder = Path(folder)
    rng = np.random.default_rng(seed)
    for i in range(count):
        image, mask = synthetic_cells(shapes[i % len(shapes)], rng)
        write_png(folder / "images" / f"cells_{i:03d}.png", image)
        write_png(folder / "masks" / f"cells_{i:03d}.png", mask)
    return folder
