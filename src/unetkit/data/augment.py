"""Paired augmentation of an image crop and its mask crop.

Crops are concentric (in valid mode the image crop is the mask crop plus the network's context on
every side), so any transform symmetric about the centre keeps them aligned.
"""

from __future__ import annotations

import numpy as np

AUGMENTS = ("none", "light")


def flip_rotate(image: np.ndarray, mask: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Random horizontal/vertical flips and a random multiple of 90 degrees, the same for both.

    Args:
        image: (C, h, w) crop; square when rotated.
        mask: (h', w') crop centred on the image crop.
    """
    if rng.random() < 0.5:
        image, mask = image[:, :, ::-1], mask[:, ::-1]
    if rng.random() < 0.5:
        image, mask = image[:, ::-1, :], mask[::-1, :]
    k = int(rng.integers(4)) if image.shape[1] == image.shape[2] else 0
    if k:
        image, mask = np.rot90(image, k, axes=(1, 2)), np.rot90(mask, k)
    return np.ascontiguousarray(image), np.ascontiguousarray(mask)


def augment_pair(image: np.ndarray, mask: np.ndarray, preset: str, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Apply the augmentation ``preset`` to a (C, h, w) image crop and its mask crop."""
    if preset == "none":
        return image, mask
    if preset == "light":
        return flip_rotate(image, mask, rng)
    raise ValueError(f"augment={preset!r}; expected one of {AUGMENTS}")
