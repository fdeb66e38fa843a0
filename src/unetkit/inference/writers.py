"""Outputs of streamed prediction: tiled compressed BigTIFF, zarr or GeoTIFF, written row block by row block.

Each is written under ``.NAME.partial`` beside the target and renamed when complete, so an interrupted
run never leaves a file at the target name; the next run removes the leftovers. Optional pyramid levels
are nearest-neighbour reductions (class indices stay class indices).
"""

from __future__ import annotations

import os
import queue
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import tifffile

from unetkit.data.geo import GeoReader, GeoWriter
from unetkit.errors import UnetkitError
from unetkit.inference.sources import zarr_module

FILE_TILE = 256  # tile (and row block) size of the written files


def partial_path(target: Path) -> Path:
    """Where ``target`` is written until it is complete: ``.NAME.partial`` beside it."""
    return target.with_name(f".{target.name}.partial")


def remove_partials(target: Path) -> None:
    """Delete what a killed run left for ``target`` (``.NAME.partial``, ``.NAME.partial-levels``, ...)."""
    for leftover in target.parent.glob(f".{target.name}.partial*"):
        shutil.rmtree(leftover) if leftover.is_dir() and not leftover.is_symlink() else leftover.unlink()


def pyramid_factors(height: int, width: int) -> list[int]:
    """Reduction factors 2, 4, ... until a level fits in one file tile (at most 256, the row block)."""
    factors, f = [], 2
    while max(height, width) / (f // 2) > FILE_TILE and f <= FILE_TILE:
        factors.append(f)
        f *= 2
    return factors


def _down(block: np.ndarray, f: int) -> np.ndarray:
    """Nearest-neighbour reduction of rows and columns by ``f``: class indices stay class indices."""
    return np.ascontiguousarray(block[::f, ::f])


class _TiffBackend:
    """A tiled, zlib-compressed BigTIFF written progressively: tifffile pulls tiles (row-major) in a thread
    from a short queue of row blocks. Pyramid levels are spilled to raw files, then written as SubIFDs."""

    _END, _ABORT = object(), object()

    def __init__(self, path: Path, shape: tuple[int, ...], dtype: np.dtype, factors: list[int]) -> None:
        self.path, self.shape, self.dtype, self.factors = path, shape, np.dtype(dtype), factors
        self._levels = path.with_name(path.name + "-levels")
        if factors:
            self._levels.mkdir()
        self._spills = {f: open(self._levels / f"{f}.raw", "wb") for f in factors}  # noqa: SIM115 - closed by close()/abort()
        self._queue: queue.Queue = queue.Queue(maxsize=2)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="unetkit-tiff-writer", daemon=True)
        self._thread.start()

    def _options(self, shape: tuple[int, ...]) -> dict:
        options = dict(shape=shape, dtype=self.dtype, tile=(FILE_TILE, FILE_TILE), compression="zlib",
                       photometric="minisblack", metadata=None, maxworkers=1)  # fmt: skip
        if len(shape) == 3:
            options["planarconfig"] = "contig"  # (H, W, K): K samples per pixel
        return options

    @staticmethod
    def _tiles(blocks: Iterator[np.ndarray]) -> Iterator[np.ndarray]:
        for block in blocks:  # (<= 256, W[, K]) rows -> their tiles, left to right
            for c in range(0, block.shape[1], FILE_TILE):
                yield block[:, c : c + FILE_TILE]

    def _queued(self) -> Iterator[np.ndarray]:
        while (item := self._queue.get()) is not self._END:
            if item is self._ABORT:
                raise RuntimeError("aborted")
            yield item

    def _spilled(self, f: int) -> Iterator[np.ndarray]:
        rows, width = -(-self.shape[0] // f), -(-self.shape[1] // f)
        with open(self._levels / f"{f}.raw", "rb") as fh:
            for r in range(0, rows, FILE_TILE):
                n = min(FILE_TILE, rows - r)
                yield np.fromfile(fh, self.dtype, n * width).reshape(n, width)

    def _run(self) -> None:
        try:
            with tifffile.TiffWriter(self.path, bigtiff=True) as tif:
                tif.write(self._tiles(self._queued()), subifds=len(self.factors) or None, **self._options(self.shape))
                for f in self.factors:
                    level = (-(-self.shape[0] // f), -(-self.shape[1] // f))
                    tif.write(self._tiles(self._spilled(f)), subfiletype=1, **self._options(level))
        except BaseException as error:  # noqa: BLE001 - handed to the main thread
            self._error = error

    def _put(self, item) -> None:
        while True:
            try:
                return self._queue.put(item, timeout=0.2)
            except queue.Full:
                if not self._thread.is_alive():
                    raise UnetkitError(f"{self.path}: cannot write ({self._error}); check the free disk space") from None

    def write(self, row0: int, block: np.ndarray) -> None:
        for f, fh in self._spills.items():
            fh.write(_down(block, f).tobytes())
        self._put(block)

    def close(self) -> None:
        for fh in self._spills.values():
            fh.close()
        self._put(self._END)
        self._thread.join()
        shutil.rmtree(self._levels, ignore_errors=True)
        if self._error is not None:
            raise UnetkitError(f"{self.path}: cannot write ({self._error}); check the free disk space")

    def abort(self) -> None:
        for fh in self._spills.values():
            fh.close()
        if self._thread.is_alive():
            self._put(self._ABORT)
            self._thread.join()
        shutil.rmtree(self._levels, ignore_errors=True)


class _ZarrBackend:
    """A zarr array (chunks of 256 x 256 pixels), or with a pyramid a group of levels "0", "1", ..."""

    def __init__(self, path: Path, shape: tuple[int, ...], dtype: np.dtype, factors: list[int], attrs: dict) -> None:
        zarr = zarr_module()

        def chunks(s: tuple[int, ...]) -> tuple[int, ...]:
            return (FILE_TILE, FILE_TILE, *s[2:])

        if not factors:
            array = zarr.create_array(store=str(path), shape=shape, chunks=chunks(shape), dtype=dtype, fill_value=0)
            array.attrs.update(attrs)
            self.arrays = [(1, array)]
            return
        group = zarr.open_group(str(path), mode="w")
        self.arrays = [(1, group.create_array("0", shape=shape, chunks=chunks(shape), dtype=dtype, fill_value=0))]
        for k, f in enumerate(factors, start=1):
            level = (-(-shape[0] // f), -(-shape[1] // f))
            self.arrays.append((f, group.create_array(str(k), shape=level, chunks=chunks(level), dtype=dtype, fill_value=0)))
        axes = [{"name": "y", "type": "space"}, {"name": "x", "type": "space"}]
        datasets = [{"path": str(k), "coordinateTransformations": [{"type": "scale", "scale": [f, f]}]} for k, (f, _) in enumerate(self.arrays)]
        group.attrs.update({**attrs, "multiscales": [{"version": "0.4", "axes": axes, "datasets": datasets}]})

    def write(self, row0: int, block: np.ndarray) -> None:
        for f, array in self.arrays:
            down = _down(block, f) if f > 1 else block
            array[row0 // f : row0 // f + len(down)] = down

    def close(self) -> None:
        pass

    def abort(self) -> None:
        pass


class _GeoBackend:
    def __init__(self, path: Path, like: GeoReader, shape: tuple[int, ...], dtype: np.dtype, nodata: int | None, factors: list[int]) -> None:
        self.factors = factors
        self._writer = GeoWriter(path, like, shape[2] if len(shape) == 3 else 1, dtype, nodata, FILE_TILE)

    def write(self, row0: int, block: np.ndarray) -> None:
        self._writer.write(row0, block)

    def close(self) -> None:
        self._writer.close(self.factors)

    def abort(self) -> None:
        self._writer.close()


class Output:
    """One output file written by row blocks under :func:`partial_path`, moved onto ``target`` by :meth:`commit`.

    The format follows ``target``: ``.zarr`` is a zarr store, ``.tif``/``.tiff`` a tiled, compressed BigTIFF,
    or a GeoTIFF with the georeferencing of ``geo`` when the input is one. Rows arrive in any block sizes
    and are passed on in blocks of 256 rows, the files' tile height.
    """

    def __init__(self, target: Path, shape: tuple[int, ...], dtype, geo: GeoReader | None = None, nodata: int | None = None, pyramid: bool = False) -> None:
        self.target = target
        self.path = partial_path(target)
        factors = pyramid_factors(*shape[:2]) if pyramid else []
        target.parent.mkdir(parents=True, exist_ok=True)
        remove_partials(target)
        if target.suffix.lower() == ".zarr":
            attrs = {} if geo is None else {"crs": geo.crs.to_wkt() if geo.crs else None, "transform": list(geo.transform)[:6]}
            self._backend = _ZarrBackend(self.path, shape, dtype, factors, attrs)
        elif geo is not None:
            self._backend = _GeoBackend(self.path, geo, shape, dtype, nodata, factors)
        else:
            self._backend = _TiffBackend(self.path, shape, dtype, factors)
        self._pending: list[np.ndarray] = []
        self._row = 0

    def write(self, rows: np.ndarray) -> None:
        """Append the next ``(h, W)`` or ``(h, W, K)`` rows."""
        self._pending.append(rows)
        while sum(map(len, self._pending)) >= FILE_TILE:
            joined = np.concatenate(self._pending) if len(self._pending) > 1 else self._pending[0]
            self._backend.write(self._row, joined[:FILE_TILE])
            self._row += FILE_TILE
            self._pending = [joined[FILE_TILE:]] if len(joined) > FILE_TILE else []

    def commit(self) -> None:
        """Write the last rows, finish the file and rename it onto the target."""
        if self._pending:
            self._backend.write(self._row, np.concatenate(self._pending))
        self._backend.close()
        if self.path.is_dir():  # zarr: a folder cannot replace a folder atomically; the old one goes aside first
            old = self.target.with_name(f".{self.target.name}.partial-old")
            if self.target.exists():
                os.replace(self.target, old)
            os.replace(self.path, self.target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            fd = os.open(self.path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(self.path, self.target)

    def abort(self) -> None:
        """Drop the partial output; the target, if any, stays as it was."""
        try:
            self._backend.abort()
        finally:
            remove_partials(self.target)
