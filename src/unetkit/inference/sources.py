"""Window readers of images bigger than memory, and the input tiles cut from them.

TIFF/BigTIFF/OME-TIFF (tiled, striped or contiguous) through tifffile, zarr arrays and GeoTIFFs (through
rasterio, :mod:`unetkit.data.geo`) are read window by window. Image borders are reflected by index
arithmetic (:func:`reflect`), exactly as :func:`~unetkit.inference.tiling.mirror_pad` pads a whole image,
so :func:`load_batch` cuts the same input tiles as in-memory prediction does.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import tifffile

from unetkit.data.geo import GeoReader, is_georeferenced
from unetkit.data.io import read_image
from unetkit.errors import UnetkitError
from unetkit.extras import optional
from unetkit.inference.predictor import standardize
from unetkit.inference.stitch import TileGrid

MAX_BANDS = 16  # a window of more channels than this is a stack of pages, not an image with bands


def zarr_module():
    """Import zarr, or fail with the install hint."""
    return optional("zarr", "streaming large images needs zarr", "large")


def is_zarr(path: str | os.PathLike) -> bool:
    """True for a zarr store: a folder named ``*.zarr`` or holding zarr metadata."""
    path = Path(path)
    return path.is_dir() and (path.suffix.lower() == ".zarr" or any((path / m).is_file() for m in ("zarr.json", ".zarray", ".zgroup")))


def _band_axes(axes: str, shape: tuple[int, ...], name: Path) -> tuple[tuple, list[int]]:
    """Index template and transpose order that turn a window of an ``axes`` array into ``(h, w, C)``."""
    bands = [i for i, a in enumerate(axes) if a not in "YX" and shape[i] > 1]
    if "Y" not in axes or "X" not in axes or len(bands) > 1 or (bands and shape[bands[0]] > MAX_BANDS):
        raise UnetkitError(f"{name}: cannot stream an array of shape {shape} with axes {axes}; expected (H, W), (H, W, C) or (C, H, W) with C <= {MAX_BANDS}")
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
        if len(shape) == 3 and shape[-1] <= MAX_BANDS and shape[0] > MAX_BANDS:
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
