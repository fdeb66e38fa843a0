"""Random training patches, read a window at a time from images in memory or on disk (:mod:`unetkit.data.cache`),
with mirrored context for valid-mode networks."""

from __future__ import annotations

import signal
from collections.abc import Iterator, Sequence

import numpy as np
import torch

from unetkit.data.augment import (
    adjust_intensity,
    flip_rotate,
    remap,
    source_box,
    spatial_map,
)
from unetkit.data.augmentation import Augmentation, resolve_augment
from unetkit.data.dataset import IGNORE, PACKED_IGNORE, unpack_labels
from unetkit.inference.predictor import normalize

_MAX_CENTRES = 4096  # rare-class pixels kept per class and image as candidate patch centres
_MAX_CLASS_CENTRES = 1 << 18  # ... and per class over all images, so that memory stays bounded on large data sets


class PatchSampler:
    """Draws (image crop, mask crop, weight-map crop) batches; image crops carry ``context`` extra pixels.

    Each image is seen as if mirrored by ``context // 2`` (plus enough to reach one patch for small images),
    exactly as prediction mirrors the image border, so border pixels are trained with the context they
    will see at inference time. Masks are seen padded with IGNORE and weight maps with 0 over the same
    margins, so all arrays share one coordinate system. Mask crops come from labelled pixels only: a
    deformed patch that reaches beyond the image ignores those pixels. Nothing is padded or converted
    up front: each patch reads its window of the arrays (memory-mapped files read only those rows) and
    standardises it, so memory does not grow with the data set.

    Args:
        images: (H, W, C) images in their native units (any dtype), or a lazy sequence of them
            (:class:`~unetkit.data.cache.CachedArrays`).
        masks: (H, W) integer masks aligned with ``images`` (IGNORE for unlabelled pixels; uint8 masks are
            :func:`~unetkit.data.dataset.pack_labels` ones, 255 for IGNORE).
        patch: Output (mask) patch size.
        context: Input size - output size of the network (0 in same mode).
        augment: An :class:`~unetkit.data.augment.Augmentation`, or a preset name.
        seed: Base seed. Batch ``k`` is drawn from a generator seeded with ``(seed, k)``, so any batch
            can be reproduced on its own: by a worker process, or after resuming at step ``k``.
        norm: ``{"mean", "std"}`` per channel, applied to each crop; None = crops as float32, unchanged.
        weights: (H, W) float32 weight maps aligned with ``masks``, cropped like them; None = no weights.
        foreground_fraction: Share of patches centred on a pixel of a rare class (every class but the
            most frequent one, chosen uniformly among them); the rest are placed uniformly.
        labelled: Labelled pixels per image, when known (the cache's statistics); else counted here.
        centres, class_counts: :func:`class_centres` per image and the pixels of each class, when cached; else
            :func:`rare_class_centres` reads the masks once or twice.
    """

    def __init__(
        self,
        images: Sequence[np.ndarray],
        masks: Sequence[np.ndarray],
        patch: int,
        context: int,
        augment: Augmentation | str,
        seed: int,
        norm: dict | None = None,
        weights: Sequence[np.ndarray] | None = None,
        foreground_fraction: float = 0.0,
        labelled: Sequence[int] | None = None,
        centres: Sequence[np.ndarray] | None = None,
        class_counts: Sequence[int] | None = None,
    ) -> None:
        self.patch, self.context, self.seed = patch, context, seed
        self.augment = resolve_augment(augment) if isinstance(augment, str) else augment
        self.foreground_fraction = foreground_fraction
        self.images, self.masks, self.weights = images, masks, weights
        channels = _shape(images, 0)[2]
        self.norm = norm or {"mean": [0.0] * channels, "std": [1.0] * channels}
        self.shapes = [_shape(masks, i) for i in range(len(masks))]  # (h, w) of each image
        self.sizes = [(max(h, patch), max(w, patch)) for h, w in self.shapes]  # range of mask-crop positions + patch
        if labelled is None:
            labelled = [int(np.count_nonzero(unpack_labels(masks[i]) != IGNORE)) for i in range(len(masks))]
        # Sample images in proportion to their labelled area so every pixel is equally likely.
        areas = np.asarray(labelled, np.float64) + 1.0
        self.image_weights = areas / areas.sum()
        self.centres = rare_class_centres(masks, centres, class_counts) if foreground_fraction > 0 else []

    def _position(self, rng: np.random.Generator) -> tuple[int, int, int]:
        """(image index, top row, left column) of a mask crop, in the image's coordinates."""
        if self.centres and rng.random() < self.foreground_fraction:
            chosen = self.centres[int(rng.integers(len(self.centres)))]  # (N, 3) image, row, col
            i, row, col = (int(v) for v in chosen[int(rng.integers(len(chosen)))])
            rows, cols = self.sizes[i]
            half = self.patch // 2
            return i, min(max(row - half, 0), rows - self.patch), min(max(col - half, 0), cols - self.patch)
        i = int(rng.choice(len(self.masks), p=self.image_weights))
        rows, cols = self.sizes[i]
        return i, int(rng.integers(rows - self.patch + 1)), int(rng.integers(cols - self.patch + 1))

    def _padded_shape(self, i: int) -> tuple[int, int]:
        """(rows, columns) of image ``i`` as mirrored: the mask-crop range plus the context."""
        rows, cols = self.sizes[i]
        return rows + self.context, cols + self.context

    def _image(self, i: int, r0: int, r1: int, c0: int, c1: int) -> np.ndarray:
        """Rows r0:r1 and columns c0:c1 of mirrored image ``i`` (padded coordinates), standardised: (C, h, w) float32."""
        half = self.context // 2
        window = mirrored_window(self.images[i], r0 - half, r1 - half, c0 - half, c1 - half)
        return normalize(window, self.norm["mean"], self.norm["std"])

    def _labels(self, i: int, r0: int, r1: int, c0: int, c1: int) -> tuple[np.ndarray, np.ndarray | None]:
        """The mask (int16, IGNORE outside the image) and weight-map (0 outside) windows of image ``i``, padded coordinates."""
        half = self.context // 2
        box = (r0 - half, r1 - half, c0 - half, c1 - half)
        masks = self.masks[i]
        mask = unpack_labels(padded_window(masks, *box, fill=PACKED_IGNORE if masks.dtype == np.uint8 else IGNORE))
        weight = padded_window(self.weights[i], *box, fill=0.0).astype(np.float32, copy=False) if self.weights is not None else None
        return mask, weight

    def sample(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """One (C, patch + context, patch + context) image crop, its (patch, patch) mask and weight crops."""
        i, r, c = self._position(rng)
        p, size, half, aug = self.patch, self.patch + self.context, self.context // 2, self.augment
        if aug.warps:
            image, mask, weight = self._warped(i, r, c, rng)
        else:
            image = self._image(i, r, r + size, c, c + size)  # (C, size, size)
            mask, weight = self._labels(i, r + half, r + half + p, c + half, c + half + p)  # (p, p)
            if aug.flip_rotate:
                image, mask, weight = flip_rotate(image, mask, weight, rng)
            elif aug.hflip and rng.random() < 0.5:
                image, mask = np.ascontiguousarray(image[..., ::-1]), np.ascontiguousarray(mask[..., ::-1])
                weight = np.ascontiguousarray(weight[..., ::-1]) if weight is not None else None
        if aug.intensity:
            image = adjust_intensity(image, aug, rng)
        return image, mask, weight

    def _warped(self, i: int, r: int, c: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """The crops at (r, c) under a random spatial map: each array is read over the box the map reaches, then remapped."""
        p, size, half = self.patch, self.patch + self.context, self.context // 2
        rows, cols = spatial_map(size, self.augment, rng)  # (size, size) source positions in the image window
        rows, cols = rows + np.float32(r), cols + np.float32(c)  # in padded-image coordinates
        height, width = self._padded_shape(i)
        r0, r1, c0, c1 = source_box(rows, cols, height, width)
        image = remap(self._image(i, r0, r1, c0, c1), rows - np.float32(r0), cols - np.float32(c0))
        rows, cols = rows[half : half + p, half : half + p], cols[half : half + p, half : half + p]  # the mask window, concentric
        r0, r1, c0, c1 = source_box(rows, cols, height, width)
        mask, weight = self._labels(i, r0, r1, c0, c1)
        rows, cols = rows - np.float32(r0), cols - np.float32(c0)
        mask = remap(mask, rows, cols, nearest=True, fill=IGNORE)
        weight = remap(weight, rows, cols, fill=0.0) if weight is not None else None
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


def _shape(arrays: Sequence[np.ndarray], i: int) -> tuple[int, ...]:
    """The shape of item ``i`` without loading it where the sequence knows it."""
    return tuple(arrays.shape(i)) if hasattr(arrays, "shape") else arrays[i].shape


def reflect(index: np.ndarray, n: int) -> np.ndarray:
    """The source index along an axis of ``n`` of each ``index`` of its mirrored extension: ``numpy.pad``'s
    ``reflect`` repeated as often as needed (``edge`` for ``n == 1``), as :func:`~unetkit.inference.tiling.mirror_pad`."""
    if n == 1:
        return np.zeros_like(index)
    period = 2 * (n - 1)
    index = np.mod(index, period)
    return np.where(index < n, index, period - index)


def mirrored_window(array: np.ndarray, r0: int, r1: int, c0: int, c1: int) -> np.ndarray:
    """Rows r0:r1, columns c0:c1 of ``array`` (H, W, ...) mirrored beyond its borders; only the rows and columns
    needed are read (a memory-mapped array reads no more)."""
    height, width = array.shape[:2]
    if r0 >= 0 and c0 >= 0 and r1 <= height and c1 <= width:
        return np.asarray(array[r0:r1, c0:c1])
    rows, cols = reflect(np.arange(r0, r1), height), reflect(np.arange(c0, c1), width)
    lo_r, lo_c = int(rows.min()), int(cols.min())
    block = np.asarray(array[lo_r : int(rows.max()) + 1, lo_c : int(cols.max()) + 1])
    return block[np.ix_(rows - lo_r, cols - lo_c)]


def padded_window(array: np.ndarray, r0: int, r1: int, c0: int, c1: int, fill) -> np.ndarray:
    """Rows r0:r1, columns c0:c1 of the (H, W) ``array``, ``fill`` beyond its borders."""
    height, width = array.shape[:2]
    out = np.full((r1 - r0, c1 - c0), fill, dtype=array.dtype)
    top, left, bottom, right = max(r0, 0), max(c0, 0), min(r1, height), min(c1, width)
    if top < bottom and left < right:
        out[top - r0 : bottom - r0, left - c0 : right - c0] = array[top:bottom, left:right]
    return out


def class_centres(mask: np.ndarray) -> np.ndarray:
    """(N, 1 + ndim) int32 (class, row, column) of a 2D mask, (class, z, y, x) of a 3D one: at most 4096 evenly spread
    pixels of each class present in ``mask``, the candidate patch centres of one image, small enough to cache beside it."""
    m = unpack_labels(np.asarray(mask))
    found = []
    for k in np.unique(m[m >= 0]):
        flat = np.flatnonzero(m == k)
        if len(flat) > _MAX_CENTRES:
            flat = flat[np.linspace(0, len(flat) - 1, _MAX_CENTRES).astype(np.int64)]
        found.append(np.column_stack([np.full(len(flat), k), *np.unravel_index(flat, m.shape)]))
    return np.concatenate(found).astype(np.int32) if found else np.zeros((0, 1 + m.ndim), np.int32)


def rare_class_centres(masks: Sequence[np.ndarray], centres: Sequence[np.ndarray] | None = None,
                       counts: Sequence[int] | None = None) -> list[np.ndarray]:  # fmt: skip
    """Candidate patch centres on the rare classes: every class present but the most frequent one.

    Args:
        masks: The masks (read one at a time, so a lazy sequence stays lazy; not read when both of the next are given).
        centres: :func:`class_centres` of each mask, when cached; else computed here.
        counts: Pixels of each class over all masks, when known; else counted here.

    Returns:
        One (N, 3) int32 array of (image index, row, column) per rare class present, at most
        4096 evenly spread pixels of that class per image (fewer on data sets of more than 64 images,
        so that each class keeps at most 262,144).
    """
    if counts is None:
        counts = np.zeros(0, np.int64)
        for i in range(len(masks)):
            m = unpack_labels(masks[i])
            found = np.bincount(m[m >= 0].ravel())
            counts = np.pad(counts, (0, max(0, len(found) - len(counts)))) + np.pad(found, (0, max(0, len(counts) - len(found))))
    counts = np.asarray(counts)
    if (counts > 0).sum() < 2:
        return []
    rare = [k for k in np.flatnonzero(counts) if k != int(counts.argmax())]
    cap = max(1, min(_MAX_CENTRES, _MAX_CLASS_CENTRES // len(masks)))
    per_class: dict[int, list] = {k: [] for k in rare}
    for i in range(len(masks)):
        found = centres[i] if centres is not None else class_centres(masks[i])
        for k in rare:
            chosen = found[found[:, 0] == k, 1:]
            if len(chosen) > cap:
                chosen = chosen[np.linspace(0, len(chosen) - 1, cap).astype(np.int64)]
            per_class[k].append(np.column_stack([np.full(len(chosen), i), chosen]).astype(np.int32))
    return [np.concatenate(per_class[k]) for k in rare]


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
