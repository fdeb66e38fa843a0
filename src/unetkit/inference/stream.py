"""Images bigger than memory: streamed overlap-tile prediction from tiled files to tiled files.

The input is read window by window (tiled, striped or contiguous TIFF/BigTIFF/OME-TIFF through tifffile,
zarr arrays, GeoTIFFs through rasterio) and the mask is written row block by row block (tiled, compressed
BigTIFF, zarr, or GeoTIFF), so peak memory depends on the tile, the batch and the image *width*, never
on the image size. Reading the next batch runs in a thread beside the forward pass.

The tile grid is the one :func:`~unetkit.inference.predictor.tiled_logits` uses for the whole image,
mirroring included (image borders are reflected by index arithmetic instead of padding the image), and
batches hold the same tiles in the same order. So in valid mode every tile computes the same bits, and
the streamed mask equals the in-memory one exactly; in same mode overlaps are blended with the same
window in the same order, which is exact too.

Outputs are written under ``.NAME.partial`` beside the target and renamed at the end: an interrupted run
never leaves a file at the target name, and the next run removes the leftovers.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tifffile
from tqdm.auto import tqdm

from unetkit.data.geo import GeoReader, is_georeferenced
from unetkit.data.io import probe_image, read_image
from unetkit.errors import UnetkitError
from unetkit.inference.predictor import Segmenter, _prefetched, mask_dtype, softmax, standardize
from unetkit.inference.tiling import AxisPlan, blend_window, plan_axis
from unetkit.inference.writers import FILE_TILE, Output, partial_path, pyramid_factors, zarr_module  # noqa: F401 - re-exported
from unetkit.models.config import ModelConfig

STREAM_PIXELS = 64_000_000  # --stream auto: stream images with more pixels than this
OUTPUT_SUFFIXES = (".tif", ".tiff", ".zarr")
_MAX_BANDS = 16


# ----------------------------------------------------------------------------------------- sources
def is_zarr(path: str | os.PathLike) -> bool:
    """True for a zarr store: a folder named ``*.zarr`` or holding zarr metadata."""
    path = Path(path)
    return path.is_dir() and (path.suffix.lower() == ".zarr" or any((path / m).is_file() for m in ("zarr.json", ".zarray", ".zgroup")))


def _band_axes(axes: str, shape: tuple[int, ...], name: Path) -> tuple[tuple, list[int]]:
    """Index template and transpose order that turn a window of an ``axes`` array into ``(h, w, C)``."""
    bands = [i for i, a in enumerate(axes) if a not in "YX" and shape[i] > 1]
    if "Y" not in axes or "X" not in axes or len(bands) > 1 or (bands and shape[bands[0]] > _MAX_BANDS):
        raise UnetkitError(f"{name}: cannot stream an array of shape {shape} with axes {axes}; expected (H, W), (H, W, C) or (C, H, W) with C <= {_MAX_BANDS}")
    template = tuple("Y" if a == "Y" else "X" if a == "X" else slice(None) if i in bands else 0 for i, a in enumerate(axes))
    kept = [a for i, a in enumerate(axes) if a in "YX" or i in bands]  # axes of a window, in array order
    order = [kept.index("Y"), kept.index("X")] + ([kept.index(axes[bands[0]])] if bands else [])
    return template, order


class ArraySource:
    """Windows of a lazily indexable array (zarr, memory map, numpy) with named axes."""

    has_nodata = False

    def __init__(self, path: Path, open_array, axes: str, shape: tuple[int, ...], dtype, closer=None) -> None:
        self.path, self._open, self._closer = path, open_array, closer
        self._template, self._order = _band_axes(axes, shape, path)
        self.height, self.width = shape[axes.index("Y")], shape[axes.index("X")]
        self.channels = int(np.prod([shape[i] for i, t in enumerate(self._template) if isinstance(t, slice)], dtype=int))
        self.dtype = np.dtype(dtype)

    def read(self, rows: slice, cols: slice) -> np.ndarray:
        """The pixels of ``[rows, cols]`` as ``(h, w, C)`` in the source's dtype."""
        key = tuple(rows if t == "Y" else cols if t == "X" else t for t in self._template)
        try:
            window = np.asarray(self._open()[key])
        except UnetkitError:
            raise
        except Exception as error:  # noqa: BLE001 - codec missing, truncated file: name the file
            if "imagecodecs" in str(error):
                raise UnetkitError(f"{self.path}: its compression needs imagecodecs to decode: pip install imagecodecs") from None
            raise UnetkitError(f"{self.path}: cannot read rows {rows.start}-{rows.stop} ({type(error).__name__}: {error}); re-export it as a tiled TIFF") from None
        window = window.transpose(self._order) if window.ndim == len(self._order) else window
        return window[:, :, None] if window.ndim == 2 else window  # (h, w, C)

    def valid(self, rows: slice, cols: slice) -> None:
        return None

    def close(self) -> None:
        if self._closer is not None:
            self._closer()


def open_source(path: str | os.PathLike):
    """Open an image for window reads: a GeoReader, or an :class:`ArraySource` over a TIFF, zarr or small image.

    TIFFs (level 0 of the first series) are read through tifffile's zarr view, tile by tile or strip by
    strip; uncompressed contiguous TIFFs are memory-mapped per window. Other formats (PNG, JPEG) cannot be
    read in windows and are decoded whole.
    """
    zarr = zarr_module()
    path = Path(path)
    if is_zarr(path):
        node = zarr.open(str(path), mode="r")
        if not hasattr(node, "shape"):  # a group: level "0" of a multiscale pyramid, else its first array
            arrays = dict(node.arrays())
            if not arrays:
                raise UnetkitError(f"{path}: zarr group without arrays; pass the array's folder")
            node = arrays.get("0", arrays[min(arrays)])
        shape = tuple(node.shape)
        if len(shape) == 3 and shape[-1] <= _MAX_BANDS and shape[0] > _MAX_BANDS:
            axes = "YXS"
        else:
            axes = "Q" * (len(shape) - 2) + "YX"
        return ArraySource(path, lambda: node, axes, shape, node.dtype)
    if path.suffix.lower() in (".tif", ".tiff"):
        if is_georeferenced(path):
            return GeoReader(path)
        try:
            tiff = tifffile.TiffFile(path)
            series = tiff.series[0]
            axes, shape, dtype, offset = series.axes, tuple(series.shape), series.dtype, series.dataoffset
        except (OSError, ValueError, KeyError, IndexError, tifffile.TiffFileError) as error:
            raise UnetkitError(f"{path}: cannot read image ({error}); re-export it as a tiled TIFF") from None
        if offset is not None and not series.keyframe.is_tiled:  # one uncompressed block: map it per window
            stored = np.dtype(dtype).newbyteorder(tiff.byteorder)
            tiff.close()
            return ArraySource(path, lambda: np.memmap(path, stored, "r", offset, shape), axes, shape, dtype)
        array = zarr.open(series.aszarr(level=0), mode="r")
        return ArraySource(path, lambda: array, axes, shape, dtype, closer=tiff.close)
    image = read_image(path)
    return ArraySource(path, lambda: image, "YXS", image.shape, image.dtype)


def reflect(index: np.ndarray, length: int) -> np.ndarray:
    """Image indices of padded positions ``index - pad``, reflected at the borders like ``mirror_pad``.

    Reflection without repeating the edge pixel (NumPy's ``reflect``), periodic for pads beyond the
    image; a one-pixel axis repeats its pixel.
    """
    if length == 1:
        return np.zeros_like(index)
    period = 2 * (length - 1)
    index = np.mod(index, period)
    return np.where(index >= length, period - index, index)


def _read_reflected(source, rows: np.ndarray, cols: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """Pixels (and validity) at image indices ``rows`` x ``cols``, reading only their bounding window."""
    r0, r1, c0, c1 = int(rows.min()), int(rows.max()) + 1, int(cols.min()), int(cols.max()) + 1
    box = (slice(r0, r1), slice(c0, c1))
    image, valid = source.read(*box), source.valid(*box)
    take = []
    for idx, lo, n in ((rows, r0, r1 - r0), (cols, c0, c1 - c0)):
        take.append(None if len(idx) == n and idx[0] == lo and np.all(np.diff(idx) == 1) else idx - lo)
    for axis, idx in enumerate(take):
        if idx is not None:
            image = np.take(image, idx, axis=axis)
            valid = None if valid is None else np.take(valid, idx, axis=axis)
    return image, valid


# ------------------------------------------------------------------------------------------- tiles
@dataclass(frozen=True)
class TileGrid:
    """The tiles of one image: the grid of :func:`tiled_logits`, and its batches in the same order.

    Tile ``(i, j)`` starts at ``(rows.starts[i], cols.starts[j])`` in padded coordinates. In valid mode it
    *owns* the output rows ``[starts[i], starts[i + 1])`` (the last tile to the end of the image): the rows
    that ``tiled_logits`` takes from it, since later tiles overwrite earlier ones.
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
        return self.config.padding == "same" and (len(self.rows.starts) > 1 or len(self.cols.starts) > 1)

    def owned(self, plan: AxisPlan, i: int) -> int:
        """Valid mode: how many image pixels along ``plan``'s axis tile ``i`` owns."""
        end = plan.starts[i + 1] if i + 1 < len(plan.starts) else plan.stitched_length
        return min(end, plan.length) - plan.starts[i]

    def final_rows(self, i: int) -> int:
        """Stitched rows below this are final once tile row ``i`` is done."""
        return self.rows.starts[i + 1] if i + 1 < len(self.rows.starts) else self.rows.stitched_length


@dataclass
class TileResult:
    """What one tile contributes.

    Valid mode: the classes (and probabilities) of the pixels it owns. Same mode: its logits (None when
    skipped as nodata) and the validity of its pixels, for blending.
    """

    i: int
    j: int
    classes: np.ndarray | None = None  # (h, w) owned, valid mode
    probs: np.ndarray | None = None  # (K, h, w) owned, valid mode with probabilities
    logits: np.ndarray | None = None  # (K, t, t) same mode
    valid: np.ndarray | None = None  # (t, t) same mode, None without nodata


def load_batch(source, grid: TileGrid, batch: list[tuple[int, int]], mean: np.ndarray, std: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """Read and normalise the input tiles of ``batch``: ``(B, C, th, tw)`` float32 and ``(B, th, tw)`` validity.

    Tiles of one tile row are cut from one window read. Nodata pixels become 0 (the training mean).
    """
    rows, cols = grid.rows, grid.cols
    tiles, valids = [], []
    for i in sorted({i for i, _ in batch}):
        js = [j for ii, j in batch if ii == i]
        c0 = cols.starts[js[0]]
        row_idx = reflect(np.arange(rows.starts[i], rows.starts[i] + rows.tile_in) - rows.pad_before, grid.height)
        col_idx = reflect(np.arange(c0, cols.starts[js[-1]] + cols.tile_in) - cols.pad_before, grid.width)
        pixels, valid = _read_reflected(source, row_idx, col_idx)  # (th, span, C), (th, span)
        x = standardize(pixels, mean, std, axis=-1).transpose(2, 0, 1)  # (C, th, span)
        if valid is not None:
            x = np.where(valid[None], x, np.float32(0))
        for j in js:
            s = cols.starts[j] - c0
            tiles.append(x[:, :, s : s + cols.tile_in])  # (C, th, tw)
            valids.append(None if valid is None else valid[:, s : s + cols.tile_in])
    return np.stack(tiles), (None if valids[0] is None else np.stack(valids))


def finish_batch(forward, grid: TileGrid, batch: list[tuple[int, int]], x: np.ndarray, valid: np.ndarray | None,
                 nodata_class: int, probabilities: bool) -> list[TileResult]:  # fmt: skip
    """Run the forward pass on a loaded batch (skipping tiles that are all nodata) and cut each tile's share."""
    keep = [k for k in range(len(batch)) if valid is None or valid[k].any()]
    logits = forward(x if len(keep) == len(batch) else x[keep]) if keep else None  # (B', K, t', t')
    out, dtype, k_of = [], mask_dtype(grid.config.num_classes), {k: n for n, k in enumerate(keep)}
    for k, (i, j) in enumerate(batch):
        y = None if k not in k_of else logits[k_of[k]]
        if grid.config.padding == "same":
            out.append(TileResult(i, j, logits=y, valid=None if valid is None else valid[k]))
            continue
        h, w = grid.owned(grid.rows, i), grid.owned(grid.cols, j)
        if y is None:
            probs = np.zeros((grid.config.num_classes, h, w), np.float32)
            classes = np.full((h, w), nodata_class, dtype)
        else:
            probs = softmax(y[:, :h, :w])
            classes = probs.argmax(0).astype(dtype)
            if valid is not None:
                pr, pc = grid.rows.pad_before, grid.cols.pad_before  # output pixel (u, v) sees input (u + pr, v + pc)
                nodata = ~valid[k][pr : pr + h, pc : pc + w]
                classes[nodata], probs[:, nodata] = nodata_class, 0
        out.append(TileResult(i, j, classes=classes, probs=probs if probabilities else None))
    return out


def local_results(source, seg: Segmenter, grid: TileGrid, nodata_class: int, probabilities: bool) -> Iterator[TileResult]:
    """Tile results in grid order, computed here; the next batch is read while this one runs."""
    mean = np.asarray(seg.meta["normalization"]["mean"], np.float32)
    std = np.asarray(seg.meta["normalization"]["std"], np.float32)
    for batch, (x, valid) in _prefetched(grid.batches, lambda b: load_batch(source, grid, b, mean, std)):
        yield from finish_batch(seg.forward, grid, batch, x, valid, nodata_class, probabilities)


@dataclass
class Block:
    """Finished output rows: ``classes`` (h, W) from image row ``row0``, and ``probs`` (h, W, K) or None."""

    row0: int
    classes: np.ndarray
    probs: np.ndarray | None


class Assembler:
    """Puts tile results (in grid order) together into finished row blocks, holding only the open rows."""

    def __init__(self, grid: TileGrid, nodata_class: int, probabilities: bool) -> None:
        self.grid, self.nodata_class, self.probabilities = grid, nodata_class, probabilities
        self.dtype = mask_dtype(grid.config.num_classes)
        self._open: dict = {}  # valid mode: the open tile row's classes and probabilities
        self._base = 0  # same mode: first stitched row held in the accumulators
        self._acc = self._weight = self._valid = None
        rows, cols = grid.rows, grid.cols
        if grid.blend:
            self._window = np.outer(blend_window(rows.tile_out, rows.tile_in - rows.step), blend_window(cols.tile_out, cols.tile_in - cols.step))

    def add(self, result: TileResult) -> list[Block]:
        g = self.grid
        last = result.j == len(g.cols.starts) - 1
        if g.config.padding == "valid":
            r, c = g.rows.starts[result.i], g.cols.starts[result.j]
            if result.j == 0:
                h = g.owned(g.rows, result.i)
                self._open = {"classes": np.empty((h, g.width), self.dtype),
                              "probs": np.empty((h, g.width, g.config.num_classes), np.float32) if self.probabilities else None}  # fmt: skip
            h, w = result.classes.shape
            self._open["classes"][:, c : c + w] = result.classes
            if self.probabilities:
                self._open["probs"][:, c : c + w] = result.probs.transpose(1, 2, 0)
            return [Block(r, self._open["classes"], self._open["probs"])] if last else []
        self._accumulate(result)
        return self._flush(g.final_rows(result.i)) if last else []

    def _accumulate(self, result: TileResult) -> None:
        g, t, u = self.grid, self.grid.rows.tile_out, self.grid.cols.tile_out
        r, c = g.rows.starts[result.i] - self._base, g.cols.starts[result.j]
        k, width = g.config.num_classes, g.cols.stitched_length
        if self._acc is None or self._acc.shape[1] < r + t:  # open rows up to this tile row's end
            grow = r + t - (0 if self._acc is None else self._acc.shape[1])
            parts = [np.zeros((k, grow, width), np.float32), np.zeros((grow, width), np.float32), np.ones((grow, width), bool)]
            if self._acc is not None:
                parts = [np.concatenate([old, new], axis=-2) for old, new in zip((self._acc, self._weight, self._valid), parts)]
            self._acc, self._weight, self._valid = parts
        if result.valid is not None:
            self._valid[r : r + t, c : c + u] = result.valid
        if result.logits is None:
            return
        if g.blend:  # exactly the operations of tiled_logits, in the same order
            self._acc[:, r : r + t, c : c + u] += result.logits * self._window
            self._weight[r : r + t, c : c + u] += self._window
        else:
            self._acc[:, r : r + t, c : c + u] = result.logits

    def _flush(self, end: int) -> list[Block]:
        """Emit the stitched rows ``[base, end)`` (cropped to the image) and drop them."""
        g, off = self.grid, self.grid.rows.out_offset
        m = end - self._base
        logits = self._acc[:, :m]
        if g.blend:
            weight = self._weight[:m]
            logits = logits / np.where(weight > 0, weight, np.float32(1))  # weight 0 only under skipped nodata tiles
        lo, hi = max(self._base, off), min(end, off + g.height)
        blocks = []
        if hi > lo:
            cols = slice(g.cols.out_offset, g.cols.out_offset + g.width)
            probs = softmax(logits[:, lo - self._base : hi - self._base, cols])  # (K, h, W)
            classes = probs.argmax(0).astype(self.dtype)
            nodata = ~self._valid[lo - self._base : hi - self._base, cols]
            classes[nodata], probs[:, nodata] = self.nodata_class, 0
            blocks.append(Block(lo - off, classes, probs.transpose(1, 2, 0) if self.probabilities else None))
        self._acc, self._weight, self._valid = self._acc[:, m:], self._weight[m:], self._valid[m:]
        self._base = end
        return blocks


# ------------------------------------------------------------------------------------------ driver
def probabilities_path(target: Path) -> Path:
    """``x.tif`` -> ``x_prob.tif``, ``x.zarr`` -> ``x_prob.zarr``."""
    return target.with_name(f"{target.stem}_prob{target.suffix}")


def stream_targets(items: list[tuple[str, Path]], out: Path, stream: str = "auto") -> dict[str, Path]:
    """Which inputs ``predict`` streams, and the file each one's mask goes to.

    ``stream="auto"`` streams zarr stores, georeferenced TIFFs (so the mask keeps the CRS), images over
    :data:`STREAM_PIXELS` pixels, and any input when ``out`` names a ``.tif``/``.tiff``/``.zarr`` file;
    ``"always"`` streams every input; ``"never"`` none (zarr inputs and file outputs then fail).
    Streamed masks go to ``out/KEY.tif`` (``slide.ome.tif`` gives ``slide.tif``), or to ``out`` itself
    when it names a file.
    """
    if stream not in ("auto", "always", "never"):
        raise UnetkitError(f"--stream {stream!r}: expected auto, always or never")
    if out.suffix.lower() in OUTPUT_SUFFIXES:
        if len(items) != 1:
            raise UnetkitError(f"--out {out} names one output file but there are {len(items)} inputs; pass a folder as --out")
        if stream == "never":
            raise UnetkitError(f"--out {out} is written by streaming; drop --stream never, or pass a folder as --out")
        return {items[0][0]: out}
    targets = {}
    for key, path in items:
        if stream == "never":
            if is_zarr(path):
                raise UnetkitError(f"{path}: zarr inputs are always streamed; drop --stream never")
            continue
        if stream == "always" or is_zarr(path) or is_georeferenced(path) or np.prod(probe_image(path), dtype=np.int64) > STREAM_PIXELS:
            targets[key] = out / f"{key[:-4] if key.lower().endswith('.ome') else key}.tif"  # the mask is no OME-TIFF
    return targets


def predict_stream(
    seg: Segmenter,
    source: str | os.PathLike,
    target: str | os.PathLike,
    probabilities: bool = False,
    pyramid: bool = False,
    nodata_class: int = 255,
    dask: str | None = None,
    dask_workers: int = 0,
    progress: bool = True,
) -> list[Path]:
    """Segment one image of any size into ``target`` without holding the image or the mask in memory.

    Args:
        seg: The model (its ``tile`` and ``batch_size`` set the tiles).
        source: A TIFF/BigTIFF/OME-TIFF (tiled, striped or contiguous), GeoTIFF, zarr store or small image.
        target: ``.tif``/``.tiff`` (tiled BigTIFF of class indices, a GeoTIFF for georeferenced input) or ``.zarr``.
        probabilities: Also write ``TARGET_prob.tif`` (or ``.zarr``): float32 ``(H, W, K)`` softmax.
        pyramid: Add half-resolution levels (TIFF SubIFDs, GeoTIFF overviews, zarr levels "1", "2", ...).
        nodata_class: Class written where every band is nodata (GeoTIFF nodata or mask); tiles fully in
            nodata are not predicted.
        dask: A Dask scheduler address: tiles run on its workers (see :mod:`unetkit.inference.dask_predict`).
        dask_workers: Start a local Dask cluster of this many worker processes instead.
        progress: Show tiles done, MP/s and the time left.

    Returns:
        The files written.

    Example:
        >>> predict_stream(unetkit.load("best.pt"), "slide.ome.tif", "masks/slide.tif")  # doctest: +SKIP
    """
    source_path, target = Path(source), Path(target)
    if source_path.resolve() in (target.resolve(), probabilities_path(target).resolve()):
        raise UnetkitError(f"--out {target} would overwrite the input {source_path}; choose another output name")
    src = open_source(source_path)
    try:
        src.read(slice(0, 1), slice(0, 1))  # decodes one tile: a missing codec fails here, before any output exists
        if src.channels != seg.config.in_channels:
            raise UnetkitError(f"{source_path} has {src.channels} channel(s); this model was trained on {seg.config.in_channels}; "
                               "convert the image to the training data's channels")  # fmt: skip
        k = seg.config.num_classes
        if src.has_nodata and not (k <= nodata_class <= (255 if k <= 256 else 65535)):
            raise UnetkitError(f"--nodata-class {nodata_class}: must not be one of the model's {k} classes; pass a value from {k} to 255")
        grid = TileGrid.plan(src.height, src.width, seg.tile, seg.batch_size, seg.config)
        geo = src if isinstance(src, GeoReader) else None
        dtype = mask_dtype(k)
        if dask or dask_workers:
            from unetkit.inference.dask_predict import dask_results

            results = dask_results(source_path, seg, grid, nodata_class, probabilities, dask, dask_workers)
        else:
            results = local_results(src, seg, grid, nodata_class, probabilities)
        outputs: list[Output] = []
        bar = tqdm(total=len(grid.tiles), desc=source_path.name, unit="tile", disable=not progress, dynamic_ncols=True)
        try:
            outputs.append(Output(target, (src.height, src.width), dtype, geo, nodata_class if src.has_nodata else None, pyramid))
            if probabilities:
                outputs.append(Output(probabilities_path(target), (src.height, src.width, k), np.float32, geo))
            assembler, start = Assembler(grid, nodata_class, probabilities), time.monotonic()
            for result in results:
                for block in assembler.add(result):
                    outputs[0].write(block.classes)
                    if probabilities:
                        outputs[1].write(block.probs)
                bar.update(1)
                megapixels = bar.n / bar.total * src.height * src.width / 1e6
                bar.set_postfix_str(f"{megapixels / max(time.monotonic() - start, 1e-9):.3g} MP/s", refresh=False)
            for output in outputs:
                output.commit()
        except BaseException:
            for output in outputs:
                output.abort()
            raise
        finally:
            bar.close()
            results.close()
    finally:
        src.close()
    return [output.target for output in outputs]
