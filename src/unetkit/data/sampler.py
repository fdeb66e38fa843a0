"""Random training patches from in-memory images, with mirrored context for valid-mode networks."""

from __future__ import annotations

import numpy as np

from unetkit.data.augment import augment_pair
from unetkit.data.dataset import IGNORE
from unetkit.inference.tiling import mirror_pad


class PatchSampler:
    """Draws (image crop, mask crop) batches; image crops carry ``context`` extra pixels around the mask crop.

    Each image is mirrored once by ``context // 2`` (plus enough to reach one patch for small images),
    exactly as prediction mirrors the image border, so border pixels are trained with the context they
    will see at inference time. Masks of small images are padded with IGNORE.

    Args:
        images: Normalised (C, H, W) float32 images.
        masks: (H, W) int64 masks aligned with ``images``.
        patch: Output (mask) patch size.
        context: Input size - output size of the network (0 in same mode).
        augment: Augmentation preset name.
        seed: Seed of the sampler's own random generator.
    """

    def __init__(self, images: list[np.ndarray], masks: list[np.ndarray], patch: int, context: int, augment: str, seed: int) -> None:
        self.patch, self.context, self.augment = patch, context, augment
        self.rng = np.random.default_rng(seed)
        half = context // 2
        self.images, self.masks = [], []
        for img, msk in zip(images, masks):
            h, w = msk.shape
            extra_r, extra_c = max(0, patch - h), max(0, patch - w)
            self.images.append(mirror_pad(img, (half, context - half + extra_r), (half, context - half + extra_c)))
            self.masks.append(np.pad(msk, ((0, extra_r), (0, extra_c)), constant_values=IGNORE))
        # Sample images in proportion to their labelled area so every pixel is equally likely.
        areas = np.array([float((m != IGNORE).sum()) + 1.0 for m in self.masks])
        self.weights = areas / areas.sum()

    def sample(self) -> tuple[np.ndarray, np.ndarray]:
        """One (C, patch + context, patch + context) image crop and its (patch, patch) mask crop."""
        i = int(self.rng.choice(len(self.masks), p=self.weights))
        msk = self.masks[i]
        r = int(self.rng.integers(msk.shape[0] - self.patch + 1))
        c = int(self.rng.integers(msk.shape[1] - self.patch + 1))
        size = self.patch + self.context
        image = self.images[i][:, r : r + size, c : c + size]  # (C, size, size)
        mask = msk[r : r + self.patch, c : c + self.patch]  # (patch, patch)
        return augment_pair(image, mask, self.augment, self.rng)

    def batch(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """(n, C, size, size) float32 images and (n, patch, patch) int64 masks."""
        pairs = [self.sample() for _ in range(n)]
        return np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs]).astype(np.int64)
