"""Random training patches from in-memory images, with mirrored context for valid-mode networks."""

from __future__ import annotations

import signal
from collections.abc import Iterator, Sequence

import numpy as np
import torch

from unetkit.data.augment import adjust_intensity, flip_rotate, remap, spatial_map
from unetkit.data.augmentation import Augmentation, resolve_augment
from unetkit.data.dataset import IGNORE
from unetkit.inference.tiling import mirror_pad

_MAX_CENTRES = 4096  # rare-class pixels kept per class and image as candidate patch centres


class PatchSampler:
    """Draws (image crop, mask crop, weight-map crop) batches; image crops carry ``context`` extra pixels.

    Each image is mirrored once by ``context // 2`` (plus enough to reach one patch for small images),
    exactly as prediction mirrors the image border, so border pixels are trained with the context they
    will see at inference time. Masks are padded with IGNORE and weight maps with 0 over the same
    margins, so all arrays share one coordinate system. Mask crops come from labelled pixels only: a
    deformed patch that reaches beyond the image ignores those pixels.

    Args:
        images: Normalised (C, H, W) float32 images.
        masks: (H, W) int64 masks aligned with ``images``.
        patch: Output (mask) patch size.
        context: Input size - output size of the network (0 in same mode).
        augment: An :class:`~unetkit.data.augment.Augmentation`, or a preset name.
        seed: Base seed. Batch ``k`` is drawn from a generator seeded with ``(seed, k)``, so any batch
            can be reproduced on its own: by a worker process, or after resuming at step ``k``.
        weights: (H, W) float32 weight maps aligned with ``masks``, cropped like them; None = no weights.
        foreground_fraction: Share of patches centred on a pixel of a rare class (every class but the
            most frequent one, chosen uniformly among them); the rest are placed uniformly.
    """

    def __init__(
        self,
        images: list[np.ndarray],
        masks: list[np.ndarray],
        patch: int,
        context: int,
        augment: Augmentation | str,
        seed: int,
        weights: list[np.ndarray] | None = None,
        foreground_fraction: float = 0.0,
    ) -> None:
        self.patch, self.context, self.seed = patch, context, seed
        self.augment = resolve_augment(augment) if isinstance(augment, str) else augment
        self.foreground_fraction = foreground_fraction
        half = context // 2
        self.images, self.masks, self.weights, self.sizes = [], [], [] if weights is not None else None, []
        for n, (img, msk) in enumerate(zip(images, masks)):
            h, w = msk.shape
            extra_r, extra_c = max(0, patch - h), max(0, patch - w)
            pad_r, pad_c = (half, context - half + extra_r), (half, context - half + extra_c)
            self.images.append(mirror_pad(img, pad_r, pad_c))  # (C, h + context + extra_r, ...)
            self.masks.append(np.pad(msk.astype(np.int16), (pad_r, pad_c), constant_values=IGNORE))
            if weights is not None:
                self.weights.append(np.pad(weights[n].astype(np.float32), (pad_r, pad_c)))
            self.sizes.append((h + extra_r, w + extra_c))  # range of mask-crop positions + patch
        # Sample images in proportion to their labelled area so every pixel is equally likely.
        areas = np.array([float((m != IGNORE).sum()) + 1.0 for m in self.masks])
        self.image_weights = areas / areas.sum()
        self.centres = rare_class_centres(masks) if foreground_fraction > 0 else []

    def _position(self, rng: np.random.Generator) -> tuple[int, int, int]:
        """(image index, top row, left column) of a mask crop, in the unpadded image's coordinates."""
        if self.centres and rng.random() < self.foreground_fraction:
            chosen = self.centres[int(rng.integers(len(self.centres)))]  # (N, 3) image, row, col
            i, row, col = (int(v) for v in chosen[int(rng.integers(len(chosen)))])
            rows, cols = self.sizes[i]
            half = self.patch // 2
            return i, min(max(row - half, 0), rows - self.patch), min(max(col - half, 0), cols - self.patch)
        i = int(rng.choice(len(self.masks), p=self.image_weights))
        rows, cols = self.sizes[i]
        return i, int(rng.integers(rows - self.patch + 1)), int(rng.integers(cols - self.patch + 1))

    def sample(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """One (C, patch + context, patch + context) image crop, its (patch, patch) mask and weight crops."""
        i, r, c = self._position(rng)
        p, size, half, aug = self.patch, self.patch + self.context, self.context // 2, self.augment
        if aug.warps:
            rows, cols = spatial_map(size, aug, rng)  # (size, size) source positions in the image window
            rows, cols = rows + np.float32(r), cols + np.float32(c)  # in padded-image coordinates
            inner = (slice(half, half + p), slice(half, half + p))  # the mask window, concentric
            image = remap(self.images[i], rows, cols)
            mask = remap(self.masks[i], rows[inner], cols[inner], nearest=True, fill=IGNORE)
            weight = remap(self.weights[i], rows[inner], cols[inner], fill=0.0) if self.weights else None
        else:
            image = self.images[i][:, r : r + size, c : c + size]  # (C, size, size)
            mask = self.masks[i][r + half : r + half + p, c + half : c + half + p]  # (p, p)
            weight = self.weights[i][r + half : r + half + p, c + half : c + half + p] if self.weights else None
            if aug.flip_rotate:
                image, mask, weight = flip_rotate(image, mask, weight, rng)
            elif aug.hflip and rng.random() < 0.5:
                image, mask = np.ascontiguousarray(image[..., ::-1]), np.ascontiguousarray(mask[..., ::-1])
                weight = np.ascontiguousarray(weight[..., ::-1]) if weight is not None else None
        if aug.intensity:
            image = adjust_intensity(image, aug, rng)
        return image, mask, weight

    def batch(self, n: int, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """Batch number ``index``: (n, C, size, size) float32 images, (n, patch, patch) int64 masks and
        float32 weight maps (None without weight maps)."""
        rng = np.random.default_rng((self.seed, index))
        samples = [self.sample(rng) for _ in range(n)]
        images = np.stack([s[0] for s in samples]).astype(np.float32, copy=False)
        masks = np.stack([s[1] for s in samples]).astype(np.int64)
        weights = np.stack([s[2] for s in samples]) if self.weights is not None else None
        return images, masks, weights


def rare_class_centres(masks: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Candidate patch centres on the rare classes: every class present but the most frequent one.

    Returns:
        One (N, 3) int32 array of (image index, row, column) per rare class present, at most
        4096 evenly spread pixels of that class per image.
    """
    classes = max(int(m.max(initial=-1)) for m in masks) + 1
    counts = sum(np.bincount(m[m >= 0].ravel(), minlength=classes) for m in masks)
    if (counts > 0).sum() < 2:
        return []
    rare = [k for k in np.flatnonzero(counts) if k != int(counts.argmax())]
    centres = []
    for k in rare:
        per_image = []
        for i, m in enumerate(masks):
            flat = np.flatnonzero(m == k)
            if len(flat) > _MAX_CENTRES:
                flat = flat[np.linspace(0, len(flat) - 1, _MAX_CENTRES).astype(np.int64)]
            rows, cols = np.unravel_index(flat, m.shape)
            per_image.append(np.stack([np.full(len(flat), i), rows, cols], axis=1).astype(np.int32))
        centres.append(np.concatenate(per_image))
    return centres


class _Batches(torch.utils.data.IterableDataset):
    """Batches ``start``, ``start + 1``, ...; worker ``w`` of ``W`` makes those with ``index % W == w``."""

    def __init__(self, sampler: PatchSampler, batch_size: int, start: int) -> None:
        self.sampler, self.batch_size, self.start = sampler, batch_size, start

    def __iter__(self) -> Iterator:
        info = torch.utils.data.get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        index = self.start + worker
        while True:
            yield self.sampler.batch(self.batch_size, index)
            index += workers


def _ignore_interrupts(worker: int) -> None:
    """Ctrl-C and SIGTERM are for the training process, which stops at a step boundary, saves, then ends the
    workers. torchrun (and a batch scheduler's preemption) sends SIGTERM to the whole process group; a
    worker dying of it first would end the trainer before it saves. Workers exit by themselves once the
    trainer is gone (the DataLoader's watchdog)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def batch_iterator(sampler: PatchSampler, batch_size: int, start: int = 0, workers: int = 0) -> Iterator:
    """Endless (images, masks, weights) tensor batches number ``start``, ``start + 1``, ... of ``sampler``.

    Batch ``k`` is the same whatever ``workers`` is, so runs and resumed runs are reproducible.

    Args:
        sampler: The patch sampler.
        batch_size: Patches per batch.
        start: Number of the first batch (the optimizer step to resume at).
        workers: Processes that sample and augment beside the training step (each prefetches two
            batches); 0 = in the calling process.
    """
    if workers == 0:
        return (tuple(None if a is None else torch.from_numpy(a) for a in b) for b in _Batches(sampler, batch_size, start))
    # A generator of its own: the loader draws a seed from it, which must not move torch's global RNG.
    loader = torch.utils.data.DataLoader(
        _Batches(sampler, batch_size, start), batch_size=None, num_workers=workers, prefetch_factor=2,
        generator=torch.Generator(), worker_init_fn=_ignore_interrupts,
    )
    return (tuple(b) for b in loader)
