"""The one overlap-tile stitcher of every prediction path: whole images in memory, streamed images, Dask.

A :class:`TileGrid` lays the tiles of :func:`~unetkit.inference.tiling.plan_axis` over an image and cuts
them into batches; :func:`forward_batch` runs a batch through a tile function; a :class:`Stitcher` puts
the tiles' logits (or per-pixel outputs of them, such as classes), in grid order, together into finished
row blocks of the image and holds only the rows that later tiles can still change. In-memory prediction
keeps every block, streaming writes each one away: both run the same operations in the same order, so
they agree bit for bit.

Valid mode: tiles start on multiples of the network's stride and a later tile overwrites what it shares
with an earlier one, so the result equals a whole-image pass. Same mode: overlapping tiles are weighted
with a raised-cosine window, summed and divided by the summed weights.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from unetkit.errors import UnetkitError
from unetkit.inference.tiling import AxisPlan, blend_window, plan_axis
from unetkit.models.config import ModelConfig

#: A backend as a tile function: (B, C, h, w) normalised float32 -> (B, K, h', w') float32 logits.
TileFunction = Callable[[np.ndarray], np.ndarray]
#: Per-pixel outputs of (K, h, w) logits with their (h, w) validity (None: all valid): arrays (..., h, w).
Reduce = Callable[[np.ndarray, "np.ndarray | None"], list[np.ndarray]]


def prefetched(items: list, make: Callable, depth: int = 2) -> Iterator[tuple]:
    """Yield ``(item, make(item))`` with ``make`` running ahead in a thread (numpy slicing releases the GIL)."""
    with ThreadPoolExecutor(1, thread_name_prefix="unetkit-prefetch") as pool:
        pending = [(it, pool.submit(make, it)) for it in items[:depth]]
        for i in range(len(items)):
            item, future = pending.pop(0)
            if i + depth < len(items):
                pending.append((items[i + depth], pool.submit(make, items[i + depth])))
            yield item, future.result()


@dataclass(frozen=True)
class TileGrid:
    """The tiles of one ``height`` x ``width`` image and their batches, in row-major order.

    Tile ``(i, j)`` starts at ``(rows.starts[i], cols.starts[j])`` in padded input coordinates, and its
    output at the same place in stitched coordinates (the image begins at ``out_offset`` there).
    """

    height: int
    width: int
    rows: AxisPlan
    cols: AxisPlan
    config: ModelConfig
    batch_size: int

    @classmethod
    def plan(cls, height: int, width: int, tile: int, batch_size: int, config: ModelConfig) -> TileGrid:
        return cls(height, width, plan_axis(height, tile, config.depth, config.padding),
                   plan_axis(width, tile, config.depth, config.padding), config, batch_size)  # fmt: skip

    @property
    def tiles(self) -> list[tuple[int, int]]:
        return [(i, j) for i in range(len(self.rows.starts)) for j in range(len(self.cols.starts))]

    @property
    def batches(self) -> list[list[tuple[int, int]]]:
        tiles = self.tiles
        return [tiles[k : k + self.batch_size] for k in range(0, len(tiles), self.batch_size)]

    @property
    def blend(self) -> bool:
        """Same mode with more than one tile: overlaps are blended."""
        return self.config.padding == "same" and (len(self.rows.starts) > 1 or len(self.cols.starts) > 1)

    def final_rows(self, i: int) -> int:
        """Stitched rows below this are final once tile row ``i`` is done (the next one starts there)."""
        return self.rows.starts[i + 1] if i + 1 < len(self.rows.starts) else self.rows.stitched_length


@dataclass
class TileResult:
    """What tile ``(i, j)`` contributes: its ``(K, t, u)`` logits (None when skipped as nodata), and the
    ``(t, u)`` validity of its output pixels (None for images without nodata)."""

    i: int
    j: int
    logits: np.ndarray | None
    valid: np.ndarray | None = None


def forward_batch(forward: TileFunction, grid: TileGrid, batch: list[tuple[int, int]], x: np.ndarray,
                  valid: np.ndarray | None = None, name: str | None = None) -> list[TileResult]:  # fmt: skip
    """Run ``forward`` on the ``(B, C, th, tw)`` input tiles of ``batch``, skipping tiles whose ``(B, th, tw)``
    input ``valid`` is all False, and return each tile's result.

    With ``name`` (the image), logits that are NaN or infinite are refused with the tile's place: the input
    was checked to be finite, so the model's arithmetic overflowed and its mask would be garbage.
    """
    keep = [k for k in range(len(batch)) if valid is None or valid[k].any()]
    logits = forward(x if len(keep) == len(batch) else x[keep]) if keep else None  # (B', K, t, u)
    if name is not None and logits is not None:
        _refuse_non_finite(logits, [batch[k] for k in keep], grid, name)
    # Output pixel (u, v) of a tile sees its input pixel (u + r0, v + c0): the context margin in valid mode.
    r0, c0 = grid.rows.pad_before - grid.rows.out_offset, grid.cols.pad_before - grid.cols.out_offset
    t, u = grid.rows.tile_out, grid.cols.tile_out
    out, index = [], {k: n for n, k in enumerate(keep)}
    for k, (i, j) in enumerate(batch):
        y = logits[index[k]] if k in index else None
        out.append(TileResult(i, j, y, None if valid is None else valid[k, r0 : r0 + t, c0 : c0 + u]))
    return out


class NonFiniteLogits(UnetkitError):
    """The model returned NaN or infinite logits for finite input (the message names the image and the tile)."""

    def __init__(self, name: str, detail: str) -> None:
        super().__init__(f"{name}: {detail}")


def _refuse_non_finite(logits: np.ndarray, tiles: list[tuple[int, int]], grid: TileGrid, name: str) -> None:
    """Raise naming the first of ``tiles`` whose ``(K, t, u)`` logits hold NaN or infinity."""
    finite = np.isfinite(logits).reshape(len(logits), -1).all(axis=1)  # (B',)
    if finite.all():
        return
    i, j = tiles[int(np.argmin(finite))]
    row, col = max(0, grid.rows.starts[i] - grid.rows.out_offset), max(0, grid.cols.starts[j] - grid.cols.out_offset)
    raise NonFiniteLogits(name, f"the model returned NaN or infinite logits for the tile at row {row}, column {col} of finite pixels "
                                "(its arithmetic overflowed); predict with --precision fp32, or rescale the image to the range it was trained on")


def keep_logits(logits: np.ndarray, valid: np.ndarray | None) -> list[np.ndarray]:
    """The :data:`Reduce` of in-memory prediction: the logits themselves."""
    return [logits]


@dataclass
class Block:
    """Finished rows of the image from image row ``row0``: the stitcher's ``reduce`` outputs, each ``(..., h, W)``."""

    row0: int
    outputs: list[np.ndarray]


class Stitcher:
    """Puts tile results, in grid order, together into finished row blocks; holds only the open rows.

    ``reduce`` maps ``(K, h, w)`` logits and their ``(h, w)`` validity (None: all valid) to per-pixel
    outputs (the logits themselves, or classes and probabilities). Valid mode applies it to each tile and
    places its outputs, a later tile overwriting what it shares with an earlier one; same mode blends the
    logits of overlapping tiles and applies it to the finished rows. Per-pixel functions give the same
    bits either way. The open rows are one tile high and as wide as the image, so memory grows with the
    image width, never with its height. Blocks are the caller's: the stitcher never writes to them again.

    Example:
        >>> stitcher = Stitcher(grid)  # doctest: +SKIP
        >>> for result in results:  # doctest: +SKIP
        ...     for block in stitcher.add(result):
        ...         out[:, block.row0 : block.row0 + block.outputs[0].shape[1]] = block.outputs[0]
    """

    def __init__(self, grid: TileGrid, reduce: Reduce = keep_logits) -> None:
        self.grid, self.reduce = grid, reduce
        rows, cols = grid.rows, grid.cols
        self._shape = (rows.tile_out, cols.stitched_length)  # the open rows: stitched rows base .. base + tile_out
        self._base = 0
        self._done = 0  # rows handed out in blocks, dropped at the next add
        self._held: list[np.ndarray] = []  # valid mode: the reduced outputs of the open tile row, (..., t, W')
        self._late = grid.config.padding == "same"  # reduce after stitching: blending needs the logits
        if self._late:
            self._acc = np.zeros((grid.config.num_classes, *self._shape), np.float32)  # (K, t, W')
            self._weight = np.zeros(self._shape, np.float32)  # (t, W')
            self._valid = np.ones(self._shape, bool)  # (t, W')
        if grid.blend:
            self._window = np.outer(blend_window(rows.tile_out, rows.tile_in - rows.step), blend_window(cols.tile_out, cols.tile_in - cols.step))

    def add(self, result: TileResult) -> list[Block]:
        """Place one tile's result; at the end of a tile row, return the rows that became final."""
        self._drop()
        if self._late:
            self._accumulate(result)
        else:
            self._place(result)
        return self._flush(self.grid.final_rows(result.i)) if result.j == len(self.grid.cols.starts) - 1 else []

    def _drop(self) -> None:
        """Forget the rows handed out: same mode moves the rows after them to the top and clears the rest;
        valid mode starts new arrays at each tile row."""
        m, self._base, self._done = self._done, self._base + self._done, 0
        if m == 0 or not self._late:
            return
        for array, fill in ((self._acc, 0), (self._weight, 0), (self._valid, True)):
            array[..., : array.shape[-2] - m, :] = array[..., m:, :]
            array[..., array.shape[-2] - m :, :] = fill

    def _place(self, result: TileResult) -> None:
        """Valid mode: reduce one tile and write its outputs over the open rows (a tile row covers all of them,
        so each tile row starts new arrays: the blocks handed out keep the last ones)."""
        c, u, k = self.grid.cols.starts[result.j], self.grid.cols.tile_out, self.grid.config.num_classes
        if result.logits is None:  # skipped as nodata: every pixel is invalid
            outputs = self.reduce(np.zeros((k, *result.valid.shape), np.float32), result.valid)
        else:
            outputs = self.reduce(result.logits, result.valid)
        if result.j == 0:
            self._held = [np.empty((*o.shape[:-2], *self._shape), o.dtype) for o in outputs]
        for held, o in zip(self._held, outputs):
            held[..., c : c + u] = o

    def _accumulate(self, result: TileResult) -> None:
        """Same mode: add one tile's logits (weighted when blending) and its validity to the open rows."""
        c, u = self.grid.cols.starts[result.j], self.grid.cols.tile_out
        if result.valid is not None:
            self._valid[:, c : c + u] = result.valid
        if result.logits is None:
            return
        if self.grid.blend:
            self._acc[:, :, c : c + u] += result.logits * self._window
            self._weight[:, c : c + u] += self._window
        else:  # a single tile
            self._acc[:, :, c : c + u] = result.logits

    def _flush(self, end: int) -> list[Block]:
        """Hand out the stitched rows ``[base, end)``, cropped to the image; they are dropped at the next add."""
        g, off = self.grid, self.grid.rows.out_offset
        lo, hi = max(self._base, off), min(end, off + g.height)
        self._done = end - self._base
        if hi <= lo:
            return []
        rows, cols = slice(lo - self._base, hi - self._base), slice(g.cols.out_offset, g.cols.out_offset + g.width)
        if not self._late:
            return [Block(lo - off, [held[..., rows, cols] for held in self._held])]
        logits = self._acc[:, rows, cols]  # (K, h, W)
        if g.blend:
            weight = self._weight[rows, cols]
            logits = logits / np.where(weight > 0, weight, np.float32(1))  # weight 0 only under skipped nodata tiles
        else:  # a single tile: not a view of the accumulator, which the next add rewrites
            logits = logits.copy()
        return [Block(lo - off, self.reduce(logits, self._valid[rows, cols].copy()))]
