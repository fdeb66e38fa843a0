"""Window readers of images bigger than memory, and the input tiles cut from them.

TIFF/BigTIFF/OME-TIFF (tiled, striped or contiguous) through tifffile, zarr arrays and GeoTIFFs (through
rasterio, :mod:`unetkit.data.geo`) are read window by window. Image borders are reflected by index
arithmetic (:func:`reflect`), exactly as :func:`~unetkit.inference.tiling.mirror_pad` pads a whole image,
so :func:`load_batch` cuts the same input tiles as in-memory prediction does.

Sources are checked as they open (real numbers, at least one pixel; for TIFFs, a header that holds the
data it claims) and each window as it is read (no NaN, infinite or beyond-float32 values where the
image has data), so a bad pixel stops a streamed run at the window that holds it, with no copy of the image.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import tifffile

from unetkit.data.geo import GeoReader, is_georeferenced
from unetkit.data.io import check_tiff, is_tiff, read_image
from unetkit.data.pixels import check_dtype, check_shape, check_values
from unetkit.errors import UnetkitError
from unetkit.extras import optional
from unetkit.inference.predictor import standardize
from unetkit.inference.stitch import TileGrid

MAX_BANDS = 16  # a window of more channels than this is a stack of pages, not an image with bands
MAX_CHUNK_BYTES = 1 << 30  # a compressed strip or tile is decoded whole: larger ones are refused, memory stays bounded


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
        check_dtype(dtype, str(path))
        check_shape(shape, str(path))
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
            reason = "out of memory decoding them" if isinstance(error, MemoryError) else f"{type(error).__name__}: {error}"
            raise UnetkitError(f"{self.path}: cannot read rows {rows.start}-{rows.stop} ({reason}); re-export it as a tiled TIFF") from None
        window = window.transpose(self._order) if window.ndim == len(self._order) else window
        return window[:, :, None] if window.ndim == 2 else window  # (h, w, C)

    def valid(self, rows: slice, cols: slice) -> None:
        return None

    def close(self) -> None:
        if self._closer is not None:
            self._closer()


def _refuse_big_chunks(path: Path, chunks: tuple[int, ...], dtype, kind: str, fix: str) -> None:
    """Refuse a file whose unit of reading (strip, tile, chunk) is decoded whole into more than :data:`MAX_CHUNK_BYTES`."""
    size = int(np.prod(chunks, dtype=np.int64)) * np.dtype(dtype).itemsize
    if size > MAX_CHUNK_BYTES:
        raise UnetkitError(f"{path}: its {kind} are {' x '.join(map(str, chunks))} pixels ({size / 2**30:.3g} GiB each decoded), too large "
                           f"to read in windows; re-export it as {fix}")  # fmt: skip


def _open_zarr(path: Path) -> ArraySource:
    """An :class:`ArraySource` over a zarr array, or over level "0" (else the first array) of a zarr group."""
    zarr = zarr_module()
    if not any(path.iterdir()):
        raise UnetkitError(f"{path}: an empty folder, not a zarr store; pass a zarr array's folder (written by zarr)")
    try:
        node = zarr.open(str(path), mode="r")
    except Exception as error:  # noqa: BLE001 - zarr has its own errors for missing or broken metadata
        reason = str(error).strip().splitlines()[0][:160] if str(error).strip() else type(error).__name__
        raise UnetkitError(f"{path}: not a readable zarr store ({reason}); pass a zarr array's folder (written by zarr)") from None
    if not hasattr(node, "shape"):  # a group: level "0" of a multiscale pyramid, else its first array
        arrays = dict(node.arrays())
        if not arrays:
            raise UnetkitError(f"{path}: zarr group without arrays; pass the array's folder")
        node = arrays.get("0", arrays[min(arrays)])
    shape = tuple(node.shape)
    check_dtype(node.dtype, str(path))
    _refuse_big_chunks(path, tuple(node.chunks), node.dtype, "chunks", "zarr with smaller chunks (e.g. 1024 x 1024)")
    if len(shape) < 2:
        raise UnetkitError(f"{path}: a zarr array of shape {shape} is not an image; expected (H, W), (H, W, C) or (C, H, W)")
    if len(shape) == 3 and shape[-1] <= MAX_BANDS and shape[0] > MAX_BANDS:
        axes = "YXS"
    else:
        axes = "Q" * (len(shape) - 2) + "YX"
    return ArraySource(path, lambda: node, axes, shape, node.dtype)


def _open_tiff(path: Path) -> ArraySource:
    """An :class:`ArraySource` over level 0 of a TIFF's first series: memory-mapped per window when it is one
    uncompressed block, else read tile by tile (or strip by strip) through tifffile's zarr view."""
    errors = (OSError, ValueError, KeyError, IndexError, tifffile.TiffFileError)
    try:
        tiff = tifffile.TiffFile(path)
    except errors as error:
        raise UnetkitError(f"{path}: cannot read image ({error}); re-export it as a tiled TIFF") from None
    try:
        check_tiff(tiff, path)
        series = tiff.series[0]
        axes, shape, dtype, offset = series.axes, tuple(series.shape), series.dtype, series.dataoffset
    except (*errors, UnetkitError) as error:
        tiff.close()
        if isinstance(error, UnetkitError):
            raise
        raise UnetkitError(f"{path}: cannot read image ({error}); re-export it as a tiled TIFF") from None
    if offset is not None and not series.keyframe.is_tiled:  # one uncompressed block: map it per window
        stored = np.dtype(dtype).newbyteorder(tiff.byteorder)
        tiff.close()
        return ArraySource(path, lambda: np.memmap(path, stored, "r", offset, shape), axes, shape, dtype)
    try:
        _refuse_big_chunks(path, series.keyframe.chunks, dtype, "tiles" if series.keyframe.is_tiled else "strips", "a tiled TIFF")
    except UnetkitError:
        tiff.close()
        raise
    array = zarr_module().open(series.aszarr(level=0), mode="r")
    return ArraySource(path, lambda: array, axes, shape, dtype, closer=tiff.close)


def open_source(path: str | os.PathLike):
    """Open an image for window reads: a GeoReader, or an :class:`ArraySource` over a TIFF, zarr or small image.

    TIFFs (by content, whatever their name) are read window by window; a GeoTIFF through rasterio. Other
    formats (PNG, JPEG) cannot be read in windows and are decoded whole.

    Raises:
        UnetkitError: naming the file: unreadable, not real numbers, no pixels, or an unsupported layout.
    """
    zarr_module()
    path = Path(path)
    if is_zarr(path):
        return _open_zarr(path)
    if is_tiff(path):
        return GeoReader(path) if is_georeferenced(path) else _open_tiff(path)
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
    if image.dtype.kind == "f":  # NaN where the image has no data (GeoTIFF nodata) is no error: those pixels become 0
        check_values(image if valid is None else np.where(valid[:, :, None], image, 0), str(source.path), (r0, c0), count=False)
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
