"""Random training patches of volumes for the 3D U-Net: :class:`~unetkit.data.sampler.PatchSampler` along three axes.

Volumes are ``(Z, Y, X, C)`` arrays in their native units, in memory or memory-mapped (:mod:`unetkit.data.cache`);
masks are ``(Z, Y, X)``. Each patch reads only its window of the arrays, mirrored beyond the volume's borders as
prediction mirrors them, so valid-mode context matches inference. Batch ``k`` depends only on ``(seed, k)``, so
:func:`~unetkit.data.sampler.batch_iterator` runs a :class:`VolumePatchSampler` unchanged, with or without workers.

Augmentation (:class:`Augmentation3D`) is exact for flips and 90-degree rotations (a signed permutation of the
axes: the window is read in the source orientation, then transposed and flipped). Any other geometry (small
rotations, scaling, the elastic field on a coarse grid) is one map from every voxel of the image window to a
source position, sampled with :func:`scipy.ndimage.map_coordinates` over the bounding box the map reaches:
images and weights linearly, masks by nearest neighbour. The mask window is the centre of the image window,
in the map as in the crops, so image and mask stay aligned in valid mode whatever the deformation.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from unetkit.data.augment import adjust_intensity
from unetkit.data.augmentation import Augmentation
from unetkit.data.dataset import IGNORE, PACKED_IGNORE, unpack_labels
from unetkit.data.sampler import _shape, rare_class_centres, reflect
from unetkit.errors import UnetkitError
from unetkit.inference.predictor import standardize

AUGMENTS3D = ("none", "light", "strong")


@dataclass(frozen=True)
class Augmentation3D:
    """The random transforms applied to each training volume patch; zero or one means off. Lengths are in voxels.

    Attributes:
        flip_rotate: Random flips along every axis, and random 90-degree rotations in the planes of
            ``isotropic_axes`` (every signed permutation of those axes, equally likely).
        isotropic_axes: The axes (0 = z, 1 = y, 2 = x) whose voxel spacing is equal, where rotations are
            meaningful: ``(1, 2)`` (default) for the in-plane axes of thick-slice MRI or CT, ``(0, 1, 2)`` for
            isotropic data (rotations in all three planes), ``()`` for none.
        rotate_degrees: Rotation in each plane of ``isotropic_axes`` by an angle drawn in ``[-rotate_degrees, rotate_degrees]``.
        scale_range: Zoom factor, the same on every axis, drawn log-uniformly in ``[low, high]`` (> 1 enlarges).
        elastic_sigma: Standard deviation of the random displacements (along every axis) on the coarse grid.
        elastic_grid: Points per axis of that grid; displacements between them are cubic splines.
        brightness, contrast, gamma, noise_std: As :class:`~unetkit.data.augmentation.Augmentation`, on the
            standardised crop, with statistics over the whole crop of each channel.
    """

    flip_rotate: bool = False
    isotropic_axes: tuple[int, ...] = (1, 2)
    rotate_degrees: float = 0.0
    scale_range: tuple[float, float] = (1.0, 1.0)
    elastic_sigma: float = 0.0
    elastic_grid: int = 3
    brightness: float = 0.0
    contrast: float = 0.0
    gamma: float = 1.0
    noise_std: float = 0.0

    def __post_init__(self) -> None:
        axes = tuple(int(a) for a in self.isotropic_axes)
        if len(set(axes)) != len(axes) or not set(axes) <= {0, 1, 2} or len(axes) == 1:
            raise UnetkitError(f"isotropic_axes={self.isotropic_axes!r} must be two or three distinct axes of 0 (z), 1 (y), "
                               "2 (x) whose voxel spacing is equal, e.g. (1, 2) for thick slices, (0, 1, 2) for isotropic data, or ()")
        low, high = (float(v) for v in self.scale_range)
        if not 0 < low <= high:
            raise UnetkitError(f"scale_range={list(self.scale_range)} must be [low, high] with 0 < low <= high, e.g. [0.9, 1.1]")
        if min(self.rotate_degrees, self.elastic_sigma, self.brightness, self.noise_std) < 0 or self.gamma < 1:
            raise UnetkitError("rotate_degrees, elastic_sigma, brightness and noise_std must be >= 0 and gamma >= 1 (0 and 1 turn them off)")
        if not 0 <= self.contrast < 1 or self.elastic_grid < 2:
            raise UnetkitError(f"contrast must be in [0, 1) and elastic_grid >= 2, got {self.contrast} and {self.elastic_grid}")
        object.__setattr__(self, "isotropic_axes", tuple(sorted(axes)))
        object.__setattr__(self, "scale_range", (low, high))

    @property
    def warps(self) -> bool:
        """True when some transform needs interpolation (rotation by any angle, scaling, elastic)."""
        return self.rotate_degrees > 0 or self.scale_range != (1.0, 1.0) or self.elastic_sigma > 0

    @property
    def intensity(self) -> bool:
        """True when some transform changes the image values."""
        return self.brightness > 0 or self.contrast > 0 or self.gamma > 1 or self.noise_std > 0


PRESETS3D: dict[str, Augmentation3D] = {
    "none": Augmentation3D(),
    "light": Augmentation3D(flip_rotate=True),
    "strong": Augmentation3D(
        flip_rotate=True, rotate_degrees=15.0, scale_range=(0.9, 1.1), elastic_sigma=3.0, elastic_grid=3,
        brightness=0.1, contrast=0.2, gamma=1.4, noise_std=0.1,
    ),
}


def resolve_augment3d(preset: str, **overrides) -> Augmentation3D:
    """The preset ``preset`` with the options in ``overrides`` that are not None replacing its values.

    Args:
        preset: ``none``, ``light`` (flips and 90-degree rotations) or ``strong`` (light, small rotations and
            scaling, elastic deformation, intensity changes).
        **overrides: Fields of :class:`Augmentation3D`, e.g. ``isotropic_axes=(0, 1, 2)``; None keeps the preset's.

    Raises:
        UnetkitError: An unknown preset or option, or a value out of range.

    Example:
        >>> resolve_augment3d("light", isotropic_axes=(0, 1, 2)).isotropic_axes
        (0, 1, 2)
    """
    if preset not in PRESETS3D:
        raise UnetkitError(f"augment={preset!r} is not one of {', '.join(AUGMENTS3D)} for volumes")
    names = tuple(f.name for f in dataclasses.fields(Augmentation3D))
    unknown = set(overrides) - set(names)
    if unknown:
        raise UnetkitError(f"unknown 3D augmentation option(s) {sorted(unknown)}; options are {', '.join(names)}")
    return dataclasses.replace(PRESETS3D[preset], **{k: v for k, v in overrides.items() if v is not None})


def mirrored_window3d(array: np.ndarray, start: Sequence[int], stop: Sequence[int]) -> np.ndarray:
    """``array[start:stop]`` along the first three axes of ``array`` (Z, Y, X, ...), mirrored beyond its borders
    (as :func:`~unetkit.data.sampler.reflect`); only the block the window needs is read."""
    shape = array.shape[:3]
    if all(0 <= a and b <= n for a, b, n in zip(start, stop, shape)):
        return np.asarray(array[tuple(slice(a, b) for a, b in zip(start, stop))])
    index = [reflect(np.arange(a, b), n) for a, b, n in zip(start, stop, shape)]
    low = [int(i.min()) for i in index]
    block = np.asarray(array[tuple(slice(lo, int(i.max()) + 1) for lo, i in zip(low, index))])
    return block[np.ix_(*(i - lo for i, lo in zip(index, low)))]


def padded_window3d(array: np.ndarray, start: Sequence[int], stop: Sequence[int], fill) -> np.ndarray:
    """``array[start:stop]`` of the (Z, Y, X) ``array``, ``fill`` beyond its borders."""
    out = np.full([b - a for a, b in zip(start, stop)], fill, dtype=array.dtype)
    inside = [(max(a, 0), min(b, n)) for a, b, n in zip(start, stop, array.shape)]
    if all(lo < hi for lo, hi in inside):
        out[tuple(slice(lo - a, hi - a) for (lo, hi), a in zip(inside, start))] = array[tuple(slice(lo, hi) for lo, hi in inside)]
    return out


def _signed_permutation(aug: Augmentation3D, rng: np.random.Generator) -> tuple[list[int], list[bool]]:
    """A random flip and 90-degree rotation as ``(order, flips)``: output axis ``a`` is source axis ``order[a]``,
    reversed when ``flips[a]``. Only the isotropic axes are permuted."""
    order = [0, 1, 2]
    if not aug.flip_rotate:
        return order, [False] * 3
    axes = list(aug.isotropic_axes)
    for a, b in zip(axes, rng.permutation(axes)):
        order[a] = int(b)
    return order, [bool(f) for f in rng.random(3) < 0.5]


def _linear_map(aug: Augmentation3D, rng: np.random.Generator) -> np.ndarray:
    """The (3, 3) matrix from an output offset to a source offset: flips, rotations, scaling."""
    order, flips = _signed_permutation(aug, rng)
    a = np.zeros((3, 3))
    for out_axis, src_axis in enumerate(order):
        a[src_axis, out_axis] = -1.0 if flips[out_axis] else 1.0
    if aug.rotate_degrees > 0:
        for p, q in itertools.combinations(aug.isotropic_axes, 2):
            theta = math.radians(rng.uniform(-aug.rotate_degrees, aug.rotate_degrees))
            r = np.eye(3)
            r[[p, p, q, q], [p, q, p, q]] = math.cos(theta), -math.sin(theta), math.sin(theta), math.cos(theta)
            a = a @ r
    low, high = aug.scale_range
    if (low, high) != (1.0, 1.0):
        a = a / math.exp(rng.uniform(math.log(low), math.log(high)))  # zoom in: smaller source offsets
    return a


def _upsampling(size: int, grid: int) -> np.ndarray:
    """(size, grid) weights of the cubic-spline interpolation of ``grid`` points spread over ``size`` voxels (as
    an image resize: point ``j`` sits at voxel ``(j + 0.5) * size / grid - 0.5``)."""
    at = (np.arange(size) + 0.5) * grid / size - 0.5
    return np.stack([ndimage.map_coordinates(np.eye(grid)[j], [at], order=3, mode="nearest") for j in range(grid)], axis=1)


def elastic_field3d(size: Sequence[int], sigma: float, grid: int, rng: np.random.Generator) -> np.ndarray:
    """A smooth random displacement field for a window of ``size`` (z, y, x) voxels: vectors drawn from
    N(0, sigma^2) on a ``grid`` x ``grid`` x ``grid`` grid spanning the window, interpolated by cubic splines.

    Returns:
        (3, Z, Y, X) float32 displacements in voxels along z, y, x.
    """
    coarse = rng.normal(0.0, sigma, size=(3, grid, grid, grid))  # (3, g, g, g)
    wz, wy, wx = (_upsampling(s, grid) for s in size)
    # The tensor-product spline is separable: one small matrix per axis.
    return np.einsum("zi,yj,xk,cijk->czyx", wz, wy, wx, coarse, optimize=True).astype(np.float32)


def spatial_map3d(size: Sequence[int], aug: Augmentation3D, rng: np.random.Generator) -> np.ndarray:
    """Source position of every voxel of an output window of ``size`` (z, y, x), for one random draw.

    The window's centre maps to the source window's centre; each output offset from the centre, displaced by
    the elastic field, is flipped, rotated and scaled into a source offset. Without any transform the result
    is the identity: ``positions[:, z, y, x] == (z, y, x)``.

    Returns:
        (3, Z, Y, X) float32 source coordinates, relative to the first corner of the source window.
    """
    a = _linear_map(aug, rng)
    centre = (np.asarray(size, np.float64) - 1) / 2.0
    q = np.stack(np.meshgrid(*(np.arange(s) - c for s, c in zip(size, centre)), indexing="ij")).astype(np.float32)  # (3, Z, Y, X)
    if aug.elastic_sigma > 0:
        q += elastic_field3d(size, aug.elastic_sigma, aug.elastic_grid, rng)
    return (np.einsum("ij,j...->i...", a.astype(np.float32), q) + centre.astype(np.float32)[:, None, None, None]).astype(np.float32)


def _orient(array: np.ndarray, order: Sequence[int], flips: Sequence[bool]) -> np.ndarray:
    """``array`` (..., Z, Y, X) with its last three axes permuted by ``order`` and reversed where ``flips``."""
    lead = array.ndim - 3  # the channel axis of images
    moved = array.transpose(tuple(range(lead)) + tuple(lead + o for o in order))
    return np.ascontiguousarray(moved[(Ellipsis,) + tuple(slice(None, None, -1) if f else slice(None) for f in flips)])


def _source_box(positions: np.ndarray, low: Sequence[int], high: Sequence[int]) -> tuple[list[int], list[int]]:
    """(start, stop) per axis of the block that linear sampling at ``positions`` (3, ...) reads, clipped to [low, high)."""
    start, stop = [], []
    for p, lo, hi in zip(positions, low, high):
        a = int(np.clip(math.floor(float(p.min())) - 1, lo, hi - 1))
        start.append(a)
        stop.append(int(np.clip(math.ceil(float(p.max())) + 2, a + 1, hi)))
    return start, stop


def _resample(array: np.ndarray, positions: np.ndarray, order: int, mode: str, cval: float = 0.0) -> np.ndarray:
    """``array`` (Z, Y, X) sampled at ``positions`` (3, z, y, x), in the dtype of ``array``."""
    return ndimage.map_coordinates(array, positions, output=array.dtype, order=order, mode=mode, cval=cval)


class VolumePatchSampler:
    """Draws (image crop, mask crop, weight-map crop) batches of volumes; image crops carry ``context`` extra voxels.

    The 3D :class:`~unetkit.data.sampler.PatchSampler`: each volume is seen mirrored by ``context // 2`` per axis
    (plus enough to reach one patch for small volumes), masks padded with IGNORE and weights with 0 over the
    same margins. Each patch reads its window only and standardises it, so memory does not grow with the data.

    Args:
        images: (Z, Y, X, C) volumes in their native units (any dtype, memory-mapped or not), or a lazy
            sequence of them (:class:`~unetkit.data.cache.CachedArrays`).
        masks: (Z, Y, X) integer masks (IGNORE for unlabelled voxels; uint8 masks are packed, 255 for IGNORE).
        patch: Output (mask) patch size (z, y, x).
        context: Input size - output size of the network per axis (:func:`~unetkit.models.unet3d.context3d`;
            (0, 0, 0) in same mode).
        augment: An :class:`Augmentation3D`, or a preset name (then rotations are in the (y, x) plane only).
        seed: Base seed; batch ``k`` is drawn from a generator seeded with ``(seed, k)``.
        norm: ``{"mean", "std"}`` per channel, applied to each crop; None = crops as float32, unchanged.
        weights: (Z, Y, X) float32 weight maps aligned with ``masks``; None = no weights.
        foreground_fraction: Share of patches centred on a voxel of a rare class (every class but the most
            frequent one, chosen uniformly among them); the rest are placed uniformly.
        labelled: Labelled voxels per volume, when known; else counted here.
        centres, class_counts: :func:`~unetkit.data.sampler.class_centres` per volume and the voxels of each class, when cached;
            else computed from the masks.

    Example:
        >>> sampler = VolumePatchSampler([np.zeros((12, 20, 24, 1))], [np.zeros((12, 20, 24), np.uint8)],
        ...                              (8, 16, 16), (4, 4, 4), "light", seed=0)
        >>> [a.shape for a in sampler.batch(2, 0)[:2]]
        [(2, 1, 12, 20, 20), (2, 8, 16, 16)]
    """

    def __init__(
        self,
        images: Sequence[np.ndarray],
        masks: Sequence[np.ndarray],
        patch: Sequence[int],
        context: Sequence[int],
        augment: Augmentation3D | str,
        seed: int,
        norm: dict | None = None,
        weights: Sequence[np.ndarray] | None = None,
        foreground_fraction: float = 0.0,
        labelled: Sequence[int] | None = None,
        centres: Sequence[np.ndarray] | None = None,
        class_counts: Sequence[int] | None = None,
    ) -> None:
        self.patch, self.context = _triple(patch, "patch", 1), _triple(context, "context", 0)
        self.augment = resolve_augment3d(augment) if isinstance(augment, str) else augment
        a = self.augment  # its intensity part, as the 2D settings that adjust_intensity applies
        self._intensity = Augmentation(brightness=a.brightness, contrast=a.contrast, gamma=a.gamma, noise_std=a.noise_std)
        self.seed, self.foreground_fraction = seed, foreground_fraction
        self.images, self.masks, self.weights = images, masks, weights
        self.shapes = _check_volumes(images, masks, weights)  # (Z, Y, X) of each volume
        channels = _shape(images, 0)[3]
        self.norm = norm or {"mean": [0.0] * channels, "std": [1.0] * channels}
        if len(self.norm["mean"]) != channels:
            raise UnetkitError(f"the volumes have {channels} channel(s) but norm has {len(self.norm['mean'])} means; "
                               "pass one mean and std per channel")
        if labelled is None:
            labelled = [int(np.count_nonzero(unpack_labels(np.asarray(masks[i])) != IGNORE)) for i in range(len(masks))]
        # Sample volumes in proportion to their labelled voxels so every voxel is equally likely.
        counts = np.asarray(labelled, np.float64) + 1.0
        self.volume_weights = counts / counts.sum()
        self.centres: list[np.ndarray] = []
        if foreground_fraction > 0:
            self.centres = rare_class_centres(masks, centres, class_counts)  # (N, 4) volume, z, y, x per rare class

    def _extent(self, i: int, patch: Sequence[int]) -> list[int]:
        """The range of mask-crop positions of volume ``i`` plus one patch: its size, at least one patch."""
        return [max(n, p) for n, p in zip(self.shapes[i], patch)]

    def _position(self, rng: np.random.Generator, patch: Sequence[int]) -> tuple[int, list[int]]:
        """(volume index, first corner (z, y, x) of a ``patch``-sized mask crop in the volume's coordinates)."""
        if self.centres and rng.random() < self.foreground_fraction:
            chosen = self.centres[int(rng.integers(len(self.centres)))]  # (N, 4) volume, z, y, x
            i, *voxel = (int(v) for v in chosen[int(rng.integers(len(chosen)))])
            extent = self._extent(i, patch)
            return i, [min(max(v - p // 2, 0), e - p) for v, p, e in zip(voxel, patch, extent)]
        i = int(rng.choice(len(self.masks), p=self.volume_weights))
        extent = self._extent(i, patch)
        return i, [int(rng.integers(e - p + 1)) for e, p in zip(extent, patch)]

    def _image(self, i: int, start: Sequence[int], stop: Sequence[int]) -> np.ndarray:
        """``start:stop`` of mirrored volume ``i`` (volume coordinates), standardised: (C, z, y, x) float32."""
        window = mirrored_window3d(self.images[i], start, stop)  # (z, y, x, C)
        return standardize(window.transpose(3, 0, 1, 2), self.norm["mean"], self.norm["std"], axis=0)

    def _labels(self, i: int, start: Sequence[int], stop: Sequence[int]) -> tuple[np.ndarray, np.ndarray | None]:
        """The mask (int16, IGNORE outside the volume) and weight-map (0 outside) windows ``start:stop`` of volume ``i``."""
        masks = self.masks[i]
        mask = unpack_labels(padded_window3d(masks, start, stop, fill=PACKED_IGNORE if masks.dtype == np.uint8 else IGNORE))
        weight = None
        if self.weights is not None:
            weight = padded_window3d(self.weights[i], start, stop, fill=0.0).astype(np.float32, copy=False)
        return mask, weight

    def sample(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """One (C, pz + cz, py + cy, px + cx) image crop, its (pz, py, px) mask and weight crops."""
        image, mask, weight = self._warped(rng) if self.augment.warps else self._exact(rng)
        if self.augment.intensity:
            # As (C, z, y * x), adjust_intensity's statistics over its last two axes cover each channel's whole crop.
            image = adjust_intensity(image.reshape(image.shape[0], image.shape[1], -1), self._intensity, rng).reshape(image.shape)
        return image, mask, weight

    def _exact(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """Crops under a random flip and 90-degree rotation, without interpolation: the window is read in the source
        orientation (its extents permuted), then transposed and flipped."""
        order, flips = _signed_permutation(self.augment, rng)
        source = np.argsort(order)  # output axis of each source axis
        patch = [self.patch[a] for a in source]
        context = [self.context[a] for a in source]
        i, start = self._position(rng, patch)
        # The mask window sits context // 2 after the image window's start; on a flipped axis, as many before its end.
        before = [c - c // 2 if flips[a] else c // 2 for c, a in zip(context, source)]
        first = [s - b for s, b in zip(start, before)]
        image = self._image(i, first, [f + p + c for f, p, c in zip(first, patch, context)])  # source orientation
        mask, weight = self._labels(i, start, [s + p for s, p in zip(start, patch)])
        return _orient(image, order, flips), _orient(mask, order, flips), _orient(weight, order, flips) if weight is not None else None

    def _warped(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """Crops under a random spatial map: each array is read over the box the map reaches, then resampled."""
        p, c = self.patch, self.context
        i, start = self._position(rng, p)
        positions = spatial_map3d([a + b for a, b in zip(p, c)], self.augment, rng)  # (3, Z, Y, X) in the image window
        positions += np.asarray([s - b // 2 for s, b in zip(start, c)], np.float32)[:, None, None, None]  # volume coordinates
        low = [-(b // 2) for b in c]  # the mirrored volume: the mask-crop range plus the context
        high = [e + b - b // 2 for e, b in zip(self._extent(i, p), c)]
        first, stop = _source_box(positions, low, high)
        at = positions - np.asarray(first, np.float32)[:, None, None, None]
        image = np.stack([_resample(ch, at, 1, "mirror") for ch in self._image(i, first, stop)])  # (C, Z, Y, X)
        inner = positions[(slice(None),) + tuple(slice(b // 2, b // 2 + a) for a, b in zip(p, c))]  # the mask window, concentric
        first, stop = _source_box(inner, low, high)
        mask, weight = self._labels(i, first, stop)
        at = inner - np.asarray(first, np.float32)[:, None, None, None]
        mask = _resample(mask, at, 0, "constant", IGNORE)
        weight = _resample(weight, at, 1, "constant", 0.0) if weight is not None else None
        return image, mask, weight

    def batch(self, n: int, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """Batch number ``index``: (n, C, pz + cz, py + cy, px + cx) float32 images, (n, pz, py, px) int64 masks and
        float32 weight maps (None without weight maps)."""
        rng = np.random.default_rng((self.seed, index))
        samples = [self.sample(rng) for _ in range(n)]
        images = np.stack([s[0] for s in samples]).astype(np.float32, copy=False)
        masks = np.stack([s[1] for s in samples]).astype(np.int64)
        weights = np.stack([s[2] for s in samples]).astype(np.float32, copy=False) if self.weights is not None else None
        return images, masks, weights


def _triple(value: Sequence[int], name: str, least: int) -> tuple[int, int, int]:
    """``value`` as three ints (z, y, x), each at least ``least``."""
    if isinstance(value, (int, np.integer)) or len(value) != 3 or any(int(v) < least for v in value):
        raise UnetkitError(f"{name}={value!r} must be three sizes (z, y, x), each >= {least}, e.g. (16, 64, 64)")
    return tuple(int(v) for v in value)


def _check_volumes(images: Sequence[np.ndarray], masks: Sequence[np.ndarray],
                   weights: Sequence[np.ndarray] | None) -> list[tuple[int, int, int]]:  # fmt: skip
    """The (Z, Y, X) of each volume, after checking that images, masks and weights agree."""
    if len(images) != len(masks) or len(masks) == 0 or (weights is not None and len(weights) != len(masks)):
        raise UnetkitError(f"got {len(images)} volumes, {len(masks)} masks" + (f", {len(weights)} weight maps" if weights is not None else "")
                           + "; pass one mask (and weight map) per volume, at least one")
    shapes = []
    for i in range(len(masks)):
        image, mask = _shape(images, i), _shape(masks, i)
        if len(image) != 4 or tuple(mask) != tuple(image[:3]):
            raise UnetkitError(f"volume {i} has shape {tuple(image)} and its mask {tuple(mask)}; expected (Z, Y, X, C) and (Z, Y, X)")
        if weights is not None and tuple(_shape(weights, i)) != tuple(mask):
            raise UnetkitError(f"weight map {i} has shape {tuple(_shape(weights, i))}; expected its mask's {tuple(mask)}")
        shapes.append(tuple(int(n) for n in mask))
    return shapes
