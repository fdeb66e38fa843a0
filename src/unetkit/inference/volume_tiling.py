"""Volumes larger than memory: streamed overlap-tile prediction of (Z, Y, X, C) volumes with a 3D U-Net.

The 3D counterpart of :mod:`unetkit.inference.stream`: the volume is never read whole. Each tile's input
window is read from the source (an ndarray, a memory-mapped ``.npy``, a zarr array), mirrored only where it
reaches beyond the volume, standardised, run through the network, and each finished region of the output
is handed to a writer (:class:`ArrayWriter`: in memory, ``.npy`` memory maps, zarr).

Valid mode (Ronneberger et al. 2015, Fig. 2; Cicek et al. 2016): output tiles abut exactly and start on
multiples of the network's total pooling, so the result equals one pass over the whole volume mirrored by
the context (as :func:`~unetkit.models.unet3d.tiled_forward_valid`, which mirrors the volume in memory).
Each tile's output is final at once. Same mode: tiles overlap (half a tile by default) and their
probabilities are blended with the separable raised-cosine window of
:func:`~unetkit.inference.tiling.blend_window`; tiles run z-slab by z-slab, and a z-range is written once
the last tile that covers it is done.

Peak memory, besides the network's activations, never depends on the number of slices Z:

* reads: each read is at most one tile's input window (per axis at most ``tile_in`` voxels), and at most
  three batches of ``batch`` standardised windows, float32 (B, C, tile_in), exist at once (one running,
  two read ahead in a thread);
* valid mode: one batch of tile outputs (B, K, tile_out); nothing is held between tiles;
* same mode: one z-slab of tiles, a float32 accumulator (K, tile_z, Y', X') where Y' and X' are the plane
  grown by the tile margins, plus the finished part of it (K, step_z, Y, X) while it is written.

Example:
    >>> cfg = Model3DConfig(base_channels=8, depth=3, padding="valid", norm="none")  # doctest: +SKIP
    >>> source = np.load("volume.npy", mmap_mode="r")  # (Z, Y, X, C)  # doctest: +SKIP
    >>> writer = ArrayWriter.create("labels.npy", source.shape[:3], cfg.num_classes)  # doctest: +SKIP
    >>> predict_volume(UNet3D(cfg), source, cfg, 64, {"mean": [0.0], "std": [1.0]}, writer)  # doctest: +SKIP
    >>> writer.flush()  # doctest: +SKIP
"""

from __future__ import annotations

import itertools
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from tqdm.auto import tqdm

from unetkit.data.sampler import reflect
from unetkit.errors import UnetkitError
from unetkit.inference.predictor import TorchForward, mask_dtype, standardize
from unetkit.inference.sources import zarr_module
from unetkit.inference.stitch import prefetched
from unetkit.inference.tiling import AxisPlan, blend_window
from unetkit.inference.tta import softmax
from unetkit.models.unet3d import Model3DConfig, input_shape_for_output, output_shape

Triple = tuple[int, int, int]
#: A region of the volume: slices along (z, y, x), in volume coordinates.
Box = tuple[slice, slice, slice]
#: A 3D tile function: (B, C, z, y, x) standardised float32 -> (B, K, z', y', x') logits (or probabilities).
VolumeTileFunction = Callable[[np.ndarray], "np.ndarray | torch.Tensor"]
_AXES = ("z", "y", "x")


class RegionWriter(Protocol):
    """Where finished regions go: ``write(box, probs)``, ``probs`` the (K, z, y, x) float32 values of ``box``, once per voxel."""

    def write(self, box: Box, probs: np.ndarray) -> None: ...


def pooling(config: Model3DConfig) -> Triple:
    """Total down-sampling of the network along (z, y, x): the product of its pooling factors.

    Example:
        >>> pooling(Model3DConfig(depth=3, pools=((1, 2, 2), (2, 2, 2)), kernels=((1, 3, 3),) + ((3, 3, 3),) * 2))
        (2, 4, 4)
    """
    return tuple(math.prod(p[a] for p in config.pools) for a in range(3))


def _triple(value: object, name: str) -> Triple:
    """``value`` as three ints >= 1 (an int stands for all three axes); UnetkitError otherwise."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = (value,) * 3
    ok = isinstance(value, Sequence) and len(value) == 3 and all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v >= 1 for v in value)
    if not ok:
        raise UnetkitError(f"{name}={value!r}; give three whole numbers >= 1 (z, y, x), or one for all three")
    return tuple(int(v) for v in value)


def _valid_axis(length: int, step: int, tile_in: int, tile_out: int, context: int) -> AxisPlan:
    """Valid mode along one axis: outputs of ``step`` voxels abut; inputs are mirrored by ``context // 2`` before."""
    starts = tuple(i * step for i in range(math.ceil(length / step)))
    before = context // 2
    return AxisPlan(length, tile_in, tile_out, step, starts, before, starts[-1] + tile_in - length - before, 0)


def _same_axis(length: int, tile: int, pool: int, overlap: float) -> AxisPlan:
    """Same mode along one axis, as :func:`~unetkit.inference.tiling.plan_axis`: tiles of a multiple of ``pool``
    overlapping by about ``overlap`` of a tile; the first starts ``margin`` voxels before the volume."""
    tile = min(max(pool, tile // pool * pool), max(pool, math.ceil(length / pool) * pool))
    margin = 0 if tile >= length else round(tile * overlap / 2 / pool) * pool
    margin = min(margin, (tile - pool) // 2 // pool * pool)
    step = tile - 2 * margin
    covered = length + 2 * margin
    count = 1 if covered <= tile else 1 + math.ceil((covered - tile) / step)
    starts = tuple(i * step for i in range(count))
    return AxisPlan(length, tile, tile, step, starts, margin, starts[-1] + tile - length - margin, margin)


@dataclass(frozen=True)
class VolumePlan:
    """The tiles of a (Z, Y, X) volume, z-slab by z-slab (z outermost, then y, then x).

    Along each axis, tile ``i`` reads input voxels ``[starts[i] - pad_before, ... + tile_in)`` of the volume
    (mirrored beyond it) and its output voxel ``j`` lies at stitched position ``starts[i] + j``; the volume
    starts at ``out_offset`` there (0 in valid mode, the margin in same mode).

    Attributes:
        shape: Volume size (z, y, x).
        axes: One :class:`~unetkit.inference.tiling.AxisPlan` per axis.
        padding: ``"valid"`` (abutting outputs, each final at once) or ``"same"`` (blended overlaps).
    """

    shape: Triple
    axes: tuple[AxisPlan, AxisPlan, AxisPlan]
    padding: str

    @property
    def tile_in(self) -> Triple:
        return tuple(a.tile_in for a in self.axes)

    @property
    def tile_out(self) -> Triple:
        return tuple(a.tile_out for a in self.axes)

    @property
    def counts(self) -> Triple:
        return tuple(len(a.starts) for a in self.axes)

    @property
    def tiles(self) -> list[Triple]:
        """Tile indices (iz, iy, ix) in the order they run."""
        return list(itertools.product(*(range(n) for n in self.counts)))

    def input_box(self, tile: Triple) -> tuple[tuple[int, int], ...]:
        """The (start, stop) per axis of the tile's input window in volume coordinates (beyond 0..n: mirrored)."""
        return tuple((a.starts[i] - a.pad_before, a.starts[i] - a.pad_before + a.tile_in) for a, i in zip(self.axes, tile))

    def output_box(self, tile: Triple) -> tuple[Box, Box]:
        """Valid mode: the volume region a tile's output fills, and the part of its (tile_out) output that fills it.

        The first ``step`` voxels of each tile are kept (cropped to the volume): the kept parts abut exactly.
        """
        kept = [min(a.step, a.length - a.starts[i]) for a, i in zip(self.axes, tile)]
        region = tuple(slice(a.starts[i], a.starts[i] + k) for a, i, k in zip(self.axes, tile, kept))
        return region, tuple(slice(0, k) for k in kept)


def plan_tiles3d(shape: Sequence[int], config: Model3DConfig, out_tile: int | Sequence[int], overlap: float = 0.5) -> VolumePlan:
    """The tile grid for a (Z, Y, X) volume and a 3D U-Net.

    Valid mode: ``out_tile`` output voxels per tile and axis, rounded down to a multiple of the total pooling
    (at least one pooling step, at most the volume rounded up), so that every tile starts on the pooling grid
    of the mirrored volume; the input window is the smallest valid input for that output
    (:func:`~unetkit.models.unet3d.input_shape_for_output`), the output grown by the context.
    Same mode: tiles of ``out_tile`` voxels rounded down to a multiple of the total pooling (shrunk for a
    small volume), neighbours sharing about ``overlap`` of a tile, blended.

    Args:
        shape: Volume size (z, y, x).
        config: The network's configuration.
        out_tile: Output voxels per tile: one int for all axes, or (z, y, x).
        overlap: Same mode only: fraction of a tile shared with each neighbour, in [0, 1) (default 0.5, half a tile).

    Raises:
        UnetkitError: for a shape, tile or overlap that is not one.

    Example:
        >>> plan = plan_tiles3d((30, 41, 37), Model3DConfig(depth=2), (6, 8, 10))
        >>> plan.counts, plan.tile_in
        ((5, 6, 4), (22, 24, 26))
    """
    shape, out_tile = _triple(tuple(shape), "shape"), _triple(out_tile, "out_tile")
    if isinstance(overlap, bool) or not isinstance(overlap, (int, float)) or not 0.0 <= overlap < 1.0:
        raise UnetkitError(f"overlap={overlap!r}; give the fraction of a tile shared with each neighbour, in [0, 1), e.g. 0.5")
    pool = pooling(config)
    if config.padding == "same":
        axes = tuple(_same_axis(n, t, p, overlap) for n, t, p in zip(shape, out_tile, pool))
        return VolumePlan(shape, axes, "same")
    steps = tuple(min(max(p, t // p * p), math.ceil(n / p) * p) for n, t, p in zip(shape, out_tile, pool))
    tile_in = input_shape_for_output(config, steps)
    tile_out = output_shape(config, tile_in)
    axes = tuple(_valid_axis(n, s, i, o, i - o) for n, s, i, o in zip(shape, steps, tile_in, tile_out))
    return VolumePlan(shape, axes, "valid")


def mirrored_window3d(source, box: Sequence[tuple[int, int]]) -> np.ndarray:
    """The (z, y, x[, C]) window ``box`` ((start, stop) per axis) of ``source``, mirrored beyond its borders.

    As :func:`~unetkit.data.sampler.mirrored_window` (same reflection, :func:`~unetkit.data.sampler.reflect`)
    for three leading axes: one slice of ``source`` is read, the bounding box of the voxels needed, which is
    never larger than the window; a memory-mapped or zarr array reads no more.
    """
    shape = source.shape[:3]
    if all(0 <= lo and hi <= n for (lo, hi), n in zip(box, shape)):
        return np.asarray(source[tuple(slice(lo, hi) for lo, hi in box)])
    index = [reflect(np.arange(lo, hi), n) for (lo, hi), n in zip(box, shape)]
    lows = [int(i.min()) for i in index]
    block = np.asarray(source[tuple(slice(lo, int(i.max()) + 1) for lo, i in zip(lows, index))])
    return block[np.ix_(*(i - lo for i, lo in zip(index, lows)))]


def read_tiles(source, plan: VolumePlan, tiles: Sequence[Triple], mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """The standardised input windows of ``tiles``: (B, C, *tile_in) float32 (a (Z, Y, X) source has C = 1)."""
    out = []
    for tile in tiles:
        window = mirrored_window3d(source, plan.input_box(tile))  # (z, y, x[, C])
        window = window[..., None] if window.ndim == 3 else window
        out.append(standardize(window.transpose(3, 0, 1, 2), mean, std, axis=0))  # (C, z, y, x)
    return np.stack(out)


class SlabBlender:
    """Same mode: blends tile probabilities, in plan order, into finished z-slabs; holds one slab of tiles.

    ``acc`` (K, tile_z, Y', X') float32 sums the window-weighted probabilities of the open z-slab (stitched
    coordinates, starting at the slab's first tile). The window is separable and the grid a product of the
    axes, so the summed weights are the outer product of per-axis sums (:func:`axis_weights`) and need no array
    of their own. At the end of each z-slab the voxels no later tile reaches are divided by their weight and
    handed out, and the accumulator moves on by one step.
    """

    def __init__(self, plan: VolumePlan, num_classes: int) -> None:
        self.plan = plan
        z, y, x = plan.axes
        self.acc = np.zeros((num_classes, z.tile_out, y.stitched_length, x.stitched_length), np.float32)
        windows = [blend_window(a.tile_out, a.tile_in - a.step) for a in plan.axes]
        self.window = windows[0][:, None, None] * windows[1][None, :, None] * windows[2][None, None, :]  # (tz, ty, tx)
        self.weights = [axis_weights(a) for a in plan.axes]

    def add(self, tile: Triple, probs: np.ndarray) -> list[tuple[Box, np.ndarray]]:
        """Add one tile's (K, tz, ty, tx) probabilities; after the last tile of a z-slab, return its finished region."""
        iz, iy, ix = tile
        _, y, x = self.plan.axes
        y0, x0 = y.starts[iy], x.starts[ix]
        self.acc[:, :, y0 : y0 + y.tile_out, x0 : x0 + x.tile_out] += probs * self.window
        if (iy, ix) != (len(y.starts) - 1, len(x.starts) - 1):
            return []
        return self._flush(iz)

    def _flush(self, iz: int) -> list[tuple[Box, np.ndarray]]:
        """Hand out stitched z in [starts[iz], starts[iz + 1]) cropped to the volume, then move the slab by that much."""
        z, y, x = self.plan.axes
        start = z.starts[iz]
        end = z.starts[iz + 1] if iz + 1 < len(z.starts) else z.stitched_length
        lo, hi = max(start, z.out_offset), min(end, z.out_offset + z.length)
        ys, xs = slice(y.out_offset, y.out_offset + y.length), slice(x.out_offset, x.out_offset + x.length)
        out = []
        if lo < hi:
            wz, wy, wx = self.weights[0][lo:hi], self.weights[1][ys], self.weights[2][xs]
            weight = wz[:, None, None] * wy[None, :, None] * wx[None, None, :]  # (h, Y, X)
            region = (slice(lo - z.out_offset, hi - z.out_offset), slice(0, y.length), slice(0, x.length))
            out.append((region, self.acc[:, lo - start : hi - start, ys, xs] / weight))  # (K, h, Y, X), a new array
        m = min(end - start, self.acc.shape[1])
        self.acc[:, : self.acc.shape[1] - m] = self.acc[:, m:]
        self.acc[:, self.acc.shape[1] - m :] = 0
        return out


def axis_weights(axis: AxisPlan) -> np.ndarray:
    """The summed blend windows of the tiles along one axis, per stitched voxel: (stitched_length,) float32."""
    window = blend_window(axis.tile_out, axis.tile_in - axis.step)
    total = np.zeros(axis.stitched_length, np.float32)
    for s in axis.starts:
        total[s : s + axis.tile_out] += window
    return total


class ArrayWriter:
    """Writes finished regions into arrays that take slice assignment: ndarrays, ``.npy`` memory maps, zarr arrays.

    Args:
        labels: (Z, Y, X) integer array for the most probable class of each voxel, or None.
        probabilities: (Z, Y, X, K) float array for the class probabilities (the blended outputs), or None.
    """

    def __init__(self, labels=None, probabilities=None) -> None:
        if labels is None and probabilities is None:
            raise UnetkitError("ArrayWriter needs somewhere to write: pass labels, probabilities or both")
        self.labels, self.probabilities = labels, probabilities

    @classmethod
    def in_memory(cls, shape: Sequence[int], num_classes: int, probabilities: bool = True) -> ArrayWriter:
        """Zero-filled ndarrays: labels (Z, Y, X) uint8 (uint16 beyond 256 classes), probabilities (Z, Y, X, K) float32."""
        shape = _triple(tuple(shape), "shape")
        probs = np.zeros((*shape, num_classes), np.float32) if probabilities else None
        return cls(np.zeros(shape, mask_dtype(num_classes)), probs)

    @classmethod
    def create(cls, labels_path: str | os.PathLike, shape: Sequence[int], num_classes: int,
               probabilities_path: str | os.PathLike | None = None) -> ArrayWriter:  # fmt: skip
        """New files: ``.npy`` (a memory map, :func:`numpy.lib.format.open_memmap`) or ``.zarr`` (64-voxel chunks).

        Labels are (Z, Y, X) uint8 (uint16 beyond 256 classes); with ``probabilities_path`` also (Z, Y, X, K) float32.
        """
        shape = _triple(tuple(shape), "shape")
        labels = _create_array(Path(labels_path), shape, mask_dtype(num_classes))
        probs = None if probabilities_path is None else _create_array(Path(probabilities_path), (*shape, num_classes), np.float32)
        return cls(labels, probs)

    def write(self, box: Box, probs: np.ndarray) -> None:
        """Write the (K, z, y, x) probabilities of region ``box``: their argmax to labels, themselves to probabilities."""
        if self.labels is not None:
            self.labels[box] = probs.argmax(axis=0).astype(mask_dtype(probs.shape[0]))
        if self.probabilities is not None:
            self.probabilities[box] = probs.transpose(1, 2, 3, 0)  # (z, y, x, K)

    def flush(self) -> None:
        """Push memory-mapped outputs to disk (zarr and ndarrays need nothing)."""
        for array in (self.labels, self.probabilities):
            if isinstance(array, np.memmap):
                array.flush()


def _create_array(path: Path, shape: tuple[int, ...], dtype):
    """A new ``.npy`` memory map or ``.zarr`` array of ``shape`` and ``dtype`` at ``path``."""
    if path.suffix.lower() == ".npy":
        return np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=shape)
    if path.suffix.lower() == ".zarr":
        chunks = tuple(min(64, s) for s in shape[:3]) + shape[3:]
        return zarr_module().create_array(store=str(path), shape=shape, chunks=chunks, dtype=dtype, fill_value=0)
    raise UnetkitError(f"{path}: volume outputs are .npy or .zarr; rename it to {path.stem}.npy or {path.stem}.zarr")


def _check_inputs(source, config: Model3DConfig, norm: dict) -> tuple[np.ndarray, np.ndarray]:
    """Refuse a source that is not (Z, Y, X[, C]) with the network's channels, or a ``norm`` without one mean and
    one positive std per channel; return them as float32."""
    shape = tuple(getattr(source, "shape", ()))
    channels = shape[3] if len(shape) == 4 else 1
    if len(shape) not in (3, 4) or channels != config.in_channels:
        raise UnetkitError(f"the source has shape {shape}; this 3D U-Net takes (Z, Y, X, {config.in_channels}) volumes "
                           f"(or (Z, Y, X) with one channel); convert the volume to its training channels")  # fmt: skip
    values = [np.asarray(norm.get(k, ()) if isinstance(norm, dict) else (), np.float32).reshape(-1) for k in ("mean", "std")]
    if any(v.shape != (channels,) or not np.isfinite(v).all() for v in values) or not (values[1] > 0).all():
        raise UnetkitError(f"norm={norm!r}; give {{'mean': [...], 'std': [...]}} with {channels} finite value(s) each, "
                           "std > 0: the training statistics per channel")  # fmt: skip
    return values[0], values[1]


def _run_batch(forward: VolumeTileFunction, x: np.ndarray, tiles: Sequence[Triple], plan: VolumePlan, config: Model3DConfig,
               logits: bool) -> np.ndarray:  # fmt: skip
    """``forward`` on a (B, C, *tile_in) batch -> (B, K, *tile_out) float32 probabilities, checked."""
    y = forward(x)
    y = y.detach().float().cpu().numpy() if isinstance(y, torch.Tensor) else np.asarray(y, np.float32)
    expected = (len(tiles), config.num_classes, *plan.tile_out)
    if y.shape != expected:
        raise UnetkitError(f"the tile function returned shape {y.shape} for input {x.shape}; expected {expected} for a "
                           f"padding={plan.padding!r} 3D U-Net with {config.num_classes} classes: check the network matches the config")  # fmt: skip
    if not np.isfinite(y).all():
        bad = tiles[int(np.argmin(np.isfinite(y).reshape(len(y), -1).all(axis=1)))]
        where = ", ".join(f"{n} {max(0, a.starts[i] - a.out_offset)}" for n, a, i in zip(_AXES, plan.axes, bad))
        raise UnetkitError(f"the model returned NaN or infinite values for the tile at {where} (its arithmetic overflowed); "
                           "predict in float32, or rescale the volume to the range it was trained on")  # fmt: skip
    return softmax(y, axis=1) if logits else y


def predict_volume(
    forward: torch.nn.Module | VolumeTileFunction,
    source,
    config: Model3DConfig,
    out_tile: int | Sequence[int],
    norm: dict,
    writer: RegionWriter,
    overlap: float = 0.5,
    batch: int = 1,
    logits: bool = True,
    progress: bool = False,
) -> VolumePlan:
    """Predict a volume of any size tile by tile, handing each finished region to ``writer``; never holds the volume.

    Valid mode: each tile's output is written at once; the result equals one pass of the network over the
    whole volume mirrored by the context. Same mode: overlapping tiles are blended z-slab by z-slab. Peak
    memory is one batch of tiles (valid) or one z-slab of tiles (same), never the volume: see the module text.

    Args:
        forward: A :class:`~unetkit.models.unet3d.UNet3D` (run in eval mode, without gradients, on its device),
            or a tile function: (B, C, z, y, x) standardised float32 ndarray -> (B, K, z', y', x') ndarray or tensor.
        source: (Z, Y, X, C) or (Z, Y, X) voxels in any dtype, supporting numpy slicing: an ndarray,
            ``np.load(path, mmap_mode="r")``, a zarr array. Only tile windows are read.
        config: The network's configuration (padding, pooling, channels, classes).
        out_tile: Output voxels per tile, one int or (z, y, x); see :func:`plan_tiles3d`.
        norm: ``{"mean": [...], "std": [...]}``, one value per channel: voxels become ``(v - mean) / std``.
        writer: A :class:`RegionWriter`; it receives ``write(box, probs)``: a (z, y, x) :data:`Box` of the volume and
            its (K, z, y, x) float32 probabilities, once per voxel; e.g. an :class:`ArrayWriter` (flush it afterwards).
        overlap: Same mode only: fraction of a tile shared with each neighbour (default 0.5).
        batch: Tiles per call of ``forward`` (default 1).
        logits: ``forward`` returns logits, turned into probabilities by a softmax over classes before blending
            (default); False: its outputs are blended and written as they are (already probabilities).
        progress: Show a tqdm bar of tiles.

    Returns:
        The :class:`VolumePlan` the volume was tiled by.

    Raises:
        UnetkitError: for a source or ``norm`` that does not fit the network, a bad tile size, or a tile
            function returning the wrong shape or non-finite values.

    Example:
        >>> writer = ArrayWriter.in_memory(volume.shape[:3], cfg.num_classes)  # doctest: +SKIP
        >>> predict_volume(net, volume, cfg, (32, 64, 64), {"mean": [0.0], "std": [1.0]}, writer)  # doctest: +SKIP
        >>> writer.labels.shape  # doctest: +SKIP
        (Z, Y, X)
    """
    mean, std = _check_inputs(source, config, norm)
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise UnetkitError(f"batch={batch!r}; give the number of tiles per forward pass, a whole number >= 1")
    forward = TorchForward(forward) if isinstance(forward, torch.nn.Module) else forward
    plan = plan_tiles3d(tuple(source.shape[:3]), config, out_tile, overlap)
    blender = SlabBlender(plan, config.num_classes) if plan.padding == "same" else None
    tiles = plan.tiles
    batches = [tiles[k : k + batch] for k in range(0, len(tiles), batch)]
    with tqdm(total=len(tiles), desc="tiles", unit="tile", disable=not progress, leave=False) as bar:
        for chunk, x in prefetched(batches, lambda b: read_tiles(source, plan, b, mean, std)):
            for tile, probs in zip(chunk, _run_batch(forward, x, chunk, plan, config, logits)):
                if blender is not None:
                    regions = blender.add(tile, probs)
                else:
                    region, part = plan.output_box(tile)
                    regions = [(region, probs[(slice(None), *part)])]
                for box, values in regions:
                    writer.write(box, values)
            bar.update(len(chunk))
    return plan
