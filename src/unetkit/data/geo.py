"""GeoTIFF: georeferenced rasters (satellite scenes) read and written with rasterio, an optional extra.

``pip install 'unetkit[geo]'`` installs rasterio. Only this module imports it, and only when a file is
georeferenced, so the rest of unetkit works without it. Plain TIFFs never go through rasterio.

Rows and columns, not x and y: windows are given as row and column slices, arrays are ``(H, W, C)``.
"""

from __future__ import annotations

import os
from pathlib import Path
from types import ModuleType

import numpy as np
import tifffile

from unetkit.errors import UnetkitError
from unetkit.extras import optional

# ModelPixelScale, ModelTiepoint, ModelTransformation, GeoKeyDirectory, GDAL_NODATA
GEO_TAGS = frozenset({33550, 33922, 34264, 34735, 42113})
GDAL_CACHE_MB = 64  # GDAL's block cache defaults to 5% of the RAM: cap it so that memory stays bounded


def rasterio_module() -> ModuleType:
    """Import rasterio, or fail with the install hint."""
    os.environ.setdefault("GDAL_CACHEMAX", str(GDAL_CACHE_MB))
    return optional("rasterio", "GeoTIFF needs rasterio", "geo")


def is_georeferenced(path: str | os.PathLike) -> bool:
    """True for a TIFF with GeoTIFF tags (CRS, transform or GDAL nodata); read from the header only."""
    path = Path(path)
    if path.suffix.lower() not in (".tif", ".tiff") or not path.is_file():
        return False
    try:
        with tifffile.TiffFile(path) as tiff:
            return bool(GEO_TAGS & set(tiff.pages[0].tags.keys()))
    except (OSError, ValueError, KeyError, IndexError, tifffile.TiffFileError):
        return False


class GeoReader:
    """Windows of a georeferenced raster as ``(h, w, C)`` arrays, with its nodata mask.

    Attributes:
        height, width, channels: The raster's size and band count.
        dtype: The bands' dtype (one for all bands).
        has_nodata: True when the file has a nodata value, a mask band or an alpha band.
        crs, transform: The georeferencing, carried into the output by :class:`GeoWriter`.

    Example:
        >>> src = GeoReader("scene.tif")  # doctest: +SKIP
        >>> src.read(slice(0, 256), slice(0, 256)).shape  # doctest: +SKIP
        (256, 256, 13)
    """

    def __init__(self, path: str | os.PathLike) -> None:
        rasterio = rasterio_module()
        self.path = Path(path)
        try:
            self._ds = rasterio.open(self.path)
        except rasterio.errors.RasterioIOError as error:
            raise UnetkitError(f"{self.path}: cannot read GeoTIFF ({str(error).splitlines()[0]}); re-export it") from None
        ds = self._ds
        if len(set(ds.dtypes)) != 1:
            raise UnetkitError(f"{self.path}: bands have different types {sorted(set(ds.dtypes))}; convert them to one type")
        self.height, self.width, self.channels = ds.height, ds.width, ds.count
        self.dtype = np.dtype(ds.dtypes[0])
        self.crs, self.transform, self.nodata = ds.crs, ds.transform, ds.nodata
        flags = {flag.name for band in ds.mask_flag_enums for flag in band}
        self.has_nodata = flags != {"all_valid"}

    def _window(self, rows: slice, cols: slice):
        from rasterio.windows import Window

        return Window(cols.start, rows.start, cols.stop - cols.start, rows.stop - rows.start)

    def read(self, rows: slice, cols: slice) -> np.ndarray:
        """The pixels of ``[rows, cols]`` as ``(h, w, C)`` in the file's dtype."""
        return self._ds.read(window=self._window(rows, cols)).transpose(1, 2, 0)  # (C, h, w) -> (h, w, C)

    def valid(self, rows: slice, cols: slice) -> np.ndarray | None:
        """``(h, w)`` bool, False where every band is nodata (GDAL's dataset mask); None without nodata."""
        if not self.has_nodata:
            return None
        return self._ds.dataset_mask(window=self._window(rows, cols)) > 0

    def close(self) -> None:
        self._ds.close()


class GeoWriter:
    """A tiled, deflate-compressed GeoTIFF with the georeferencing of a :class:`GeoReader`, written by row blocks.

    Args:
        path: The file to create (a temporary name; the caller renames it).
        like: The input whose CRS and transform the output carries.
        bands: Bands per pixel (1 for a mask, K for probabilities).
        dtype: Pixel type.
        nodata: The nodata value recorded in the file (the mask's nodata class), or None.
        tile: Block size in pixels.
    """

    def __init__(self, path: Path, like: GeoReader, bands: int, dtype: np.dtype, nodata: float | None, tile: int = 256) -> None:
        rasterio = rasterio_module()
        self.path = path
        self._ds = rasterio.open(
            path, "w", driver="GTiff", height=like.height, width=like.width, count=bands, dtype=np.dtype(dtype).name,
            crs=like.crs, transform=like.transform, nodata=nodata, tiled=True, blockxsize=tile, blockysize=tile,
            compress="deflate", BIGTIFF="IF_SAFER",
        )  # fmt: skip

    def write(self, row0: int, block: np.ndarray) -> None:
        """Write ``(h, W)`` or ``(h, W, bands)`` rows starting at image row ``row0``."""
        from rasterio.windows import Window

        data = block[None] if block.ndim == 2 else block.transpose(2, 0, 1)  # (bands, h, W)
        self._ds.write(data, window=Window(0, row0, data.shape[2], data.shape[1]))

    def close(self, overviews: list[int] | None = None) -> None:
        """Build ``overviews`` (reduction factors, nearest neighbour: class indices stay classes) and close."""
        if overviews:
            from rasterio.enums import Resampling

            self._ds.build_overviews(overviews, Resampling.nearest)
            self._ds.update_tags(ns="rio_overview", resampling="nearest")
        self._ds.close()
