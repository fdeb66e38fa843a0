"""Overlap-tile geometry (Ronneberger et al. 2015, Fig. 2) as pure functions.

Valid mode: the image is extended by mirroring and cut into input tiles whose *outputs* abut. Tiles start
on multiples of the network's stride, so each tile computes exactly what a forward pass over the whole
mirrored image computes at those pixels: the tiled result equals the whole-image result, and seams are
impossible by construction.

Same mode: padded convs see less context near tile edges, so tiles overlap and are blended with a
window that fades towards tile edges.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from unetkit.models.config import context, input_size_for_output, is_valid_input_size, stride


@dataclass(frozen=True)
class AxisPlan:
    """How one image axis is tiled.

    Attributes:
        length: Image size along the axis.
        tile_in: Input tile size fed to the network.
        tile_out: Output size of one tile (== tile_in in same mode).
        step: Distance between consecutive tile origins (a multiple of the stride).
        starts: Origins of the tiles in padded-image coordinates (input and output share them).
        pad_before: Mirrored pixels added before the image.
        pad_after: Mirrored pixels added after the image.
        out_offset: Where the image starts in the stitched output (0 in valid mode).
    """

    length: int
    tile_in: int
    tile_out: int
    step: int
    starts: tuple[int, ...]
    pad_before: int
    pad_after: int
    out_offset: int

    @property
    def padded_length(self) -> int:
        return self.length + self.pad_before + self.pad_after

    @property
    def stitched_length(self) -> int:
        """Length of the stitched output covering all tiles."""
        return self.starts[-1] + self.tile_out


def largest_valid_at_most(size: int, depth: int, padding: str) -> int:
    """Largest valid input size <= ``size`` (the smallest valid one if none is)."""
    s = size
    while s > 0 and not is_valid_input_size(s, depth, padding):
        s -= 1
    return s if s > 0 else input_size_for_output(1, depth, padding)


def plan_axis(length: int, tile: int, depth: int, padding: str, overlap: float = 0.25) -> AxisPlan:
    """Plan the tiles along one axis of ``length`` pixels for input tiles of at most ``tile`` pixels.

    Args:
        length: Image size along the axis (>= 1).
        tile: Requested input tile size; rounded down to a valid size, and shrunk for small images.
        depth: Network depth (levels).
        padding: ``"valid"`` or ``"same"``.
        overlap: Same mode only: fraction of the tile shared with each neighbour.
    """
    if length < 1:
        raise ValueError(f"image axis length must be >= 1, got {length}")
    s = stride(depth)
    if padding == "valid":
        ctx = context(depth, padding)
        # The output step must be a multiple of the stride: at least one stride of output per tile.
        tile_in = max(largest_valid_at_most(tile, depth, padding), input_size_for_output(s, depth, padding))
        tile_in = min(tile_in, max(input_size_for_output(length, depth, padding), input_size_for_output(s, depth, padding)))
        tile_out = tile_in - ctx
        step = (tile_out // s) * s
        n = 1 if length <= tile_out else 1 + math.ceil((length - tile_out) / step)
        # Shrink the tile to the smallest one that still covers the axis with the same tile count.
        candidate = input_size_for_output(s, depth, padding)
        while candidate < tile_in:
            out = candidate - ctx
            if (n - 1) * (out // s) * s + out >= length:
                tile_in, tile_out, step = candidate, out, (out // s) * s
                break
            candidate = input_size_for_output(out + 1, depth, padding)
        starts = tuple(i * step for i in range(n))
        padded_in = starts[-1] + tile_in
        pad_before = ctx // 2
        return AxisPlan(length, tile_in, tile_out, step, starts, pad_before, padded_in - length - pad_before, 0)

    # same mode: tile sizes are multiples of the stride; neighbours overlap by ``margin`` on each side.
    tile_in = max(s, (tile // s) * s)
    tile_in = min(tile_in, max(s, math.ceil(length / s) * s))
    margin = 0 if tile_in >= length else int(round(tile_in * overlap / 2 / s)) * s
    margin = min(margin, (tile_in - s) // 2 // s * s)
    step = tile_in - 2 * margin
    covered = length + 2 * margin
    n = 1 if covered <= tile_in else 1 + math.ceil((covered - tile_in) / step)
    starts = tuple(i * step for i in range(n))
    padded = starts[-1] + tile_in
    return AxisPlan(length, tile_in, tile_in, step, starts, margin, padded - length - margin, margin)


def mirror_pad(image: np.ndarray, pad_rows: tuple[int, int], pad_cols: tuple[int, int]) -> np.ndarray:
    """Extend the last two axes of (..., H, W) by mirroring (repeatedly, if the pad exceeds the size)."""
    for axis, pad in ((-2, pad_rows), (-1, pad_cols)):
        if pad == (0, 0):
            continue
        widths = [(0, 0)] * image.ndim
        widths[axis] = pad
        # reflect needs two pixels; a one-pixel axis can only be repeated
        image = np.pad(image, widths, mode="reflect" if image.shape[axis] > 1 else "edge")
    return image


def blend_window(size: int, overlap: int) -> np.ndarray:
    """1D same-mode blending weights: a raised-cosine ramp over the ``overlap`` pixels at each end.

    Neighbouring tiles share ``overlap`` pixels, where their ramps sum to one: the poorly-informed
    pixels next to a tile's zero-padded edge get almost no weight while the neighbour's interior does.
    """
    w = np.ones(size, dtype=np.float32)
    if overlap > 0:
        ramp = 0.5 - 0.5 * np.cos(np.pi * (np.arange(overlap, dtype=np.float32) + 0.5) / overlap)
        w[:overlap] = np.minimum(w[:overlap], ramp)
        w[size - overlap :] = np.minimum(w[size - overlap :], ramp[::-1])
    return np.maximum(w, 1e-3)  # never zero: pixels covered by one tile's edge only still get a value
