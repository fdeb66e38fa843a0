"""Images bigger than memory: streamed overlap-tile prediction from tiled files to tiled files.

The input is read window by window (:mod:`unetkit.inference.sources`) and the mask is written row block
by row block (:mod:`unetkit.inference.writers`: tiled, compressed BigTIFF, zarr, or GeoTIFF), so peak
memory depends on the tile, the batch and the image *width*, never on the image size. Reading the next
batch runs in a thread beside the forward pass.

The tiles, their batches and the stitching are those of in-memory prediction
(:func:`~unetkit.inference.predictor.tiled_logits`, through :mod:`unetkit.inference.stitch`), mirroring
included, so the streamed mask equals the in-memory one bit for bit, in valid and in same mode.

Outputs are written under ``.NAME.partial`` beside the target and renamed at the end: an interrupted run
never leaves a file at the target name, and the next run removes the leftovers. A run stopped by an error
(a NaN pixel found in a window, a model whose logits overflow) deletes its partial files before it reports.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from unetkit.data.geo import GeoReader, is_georeferenced
from unetkit.data.io import probe_image
from unetkit.errors import UnetkitError
from unetkit.inference.dask_predict import dask_results
from unetkit.inference.options import NODATA_CLASS
from unetkit.inference.predictor import Segmenter, mask_dtype, probabilities_to_mask
from unetkit.inference.sources import is_zarr, load_batch, open_source
from unetkit.inference.stitch import Reduce, Stitcher, TileGrid, TileResult, forward_batch, prefetched
from unetkit.inference.tta import softmax, uncertainty_map
from unetkit.inference.writers import Output
from unetkit.outputs import refuse_unsafe_outputs

STREAM_PIXELS = 64_000_000  # --stream auto: stream images with more pixels than this
OUTPUT_SUFFIXES = (".tif", ".tiff", ".zarr")


def local_results(source, seg: Segmenter, grid: TileGrid) -> Iterator[TileResult]:
    """Tile results in grid order, computed here; the next batch is read while this one runs."""
    mean = np.asarray(seg.meta["normalization"]["mean"], np.float32)
    std = np.asarray(seg.meta["normalization"]["std"], np.float32)
    for batch, (x, valid) in prefetched(grid.batches, lambda b: load_batch(source, grid, b, mean, std)):
        yield from forward_batch(seg.forward, grid, batch, x, valid, name=str(source.path))


def mask_outputs(nodata_class: int, probabilities: bool, uncertainty: bool = False) -> Reduce:
    """The stitcher's per-pixel outputs for streaming: ``(h, w)`` classes, then with ``probabilities``
    ``(K, h, w)`` probabilities, then with ``uncertainty`` the ``(h, w)`` normalised entropy
    (:func:`~unetkit.inference.tta.uncertainty_map`); ``nodata_class``, 0 and 0 where the input is nodata."""

    def reduce(logits: np.ndarray, valid: np.ndarray | None) -> list[np.ndarray]:
        probs = softmax(logits)  # (K, h, w)
        classes = probabilities_to_mask(probs)
        entropy = uncertainty_map(probs) if uncertainty else None  # (h, w)
        if valid is not None and not valid.all():
            classes[~valid], probs[:, ~valid] = nodata_class, 0
            if entropy is not None:
                entropy[~valid] = 0
        return [classes] + ([probs] if probabilities else []) + ([entropy] if uncertainty else [])

    return reduce


def probabilities_path(target: Path) -> Path:
    """``x.tif`` -> ``x_prob.tif``, ``x.zarr`` -> ``x_prob.zarr``."""
    return target.with_name(f"{target.stem}_prob{target.suffix}")


def uncertainty_path(target: Path) -> Path:
    """``x.tif`` -> ``x_uncertainty.tif``, ``x.zarr`` -> ``x_uncertainty.zarr``."""
    return target.with_name(f"{target.stem}_uncertainty{target.suffix}")


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


def write_stream(results: Iterator[TileResult], grid: TileGrid, outputs: dict[str, Output], nodata_class: int, bar: tqdm) -> None:
    """Stitch ``results`` and write the finished rows into ``outputs``: ``"mask"`` (classes), and
    ``"probabilities"`` and ``"uncertainty"`` when present."""
    reduce = mask_outputs(nodata_class, "probabilities" in outputs, "uncertainty" in outputs)
    stitcher, start = Stitcher(grid, reduce), time.monotonic()
    for result in results:
        for block in stitcher.add(result):
            for (kind, output), rows in zip(outputs.items(), block.outputs):  # the order of mask_outputs
                output.write(rows.transpose(1, 2, 0) if kind == "probabilities" else rows)  # (h, W, K) or (h, W)
        bar.update(1)
        megapixels = bar.n / bar.total * grid.height * grid.width / 1e6
        bar.set_postfix_str(f"{megapixels / max(time.monotonic() - start, 1e-9):.3g} MP/s", refresh=False)


def check_source(src, path: Path, seg: Segmenter, nodata_class: int) -> None:
    """Refuse, before any output exists, an image that cannot be decoded, has the wrong channels, or whose
    nodata class would be one of the model's classes."""
    src.read(slice(0, 1), slice(0, 1))  # decodes one tile: a missing codec fails here
    seg.check_channels(src.channels, str(path))
    k = seg.config.num_classes
    if src.has_nodata and not (k <= nodata_class <= (255 if k <= 256 else 65535)):
        raise UnetkitError(f"--nodata-class {nodata_class}: must not be one of the model's {k} classes; pass a value from {k} to 255")


def predict_stream(
    seg: Segmenter,
    source: str | os.PathLike,
    target: str | os.PathLike,
    probabilities: bool = False,
    pyramid: bool = False,
    nodata_class: int = NODATA_CLASS,
    dask: str | None = None,
    dask_workers: int = 0,
    progress: bool = True,
    uncertainty: bool = False,
) -> list[Path]:
    """Segment one image of any size into ``target`` without holding the image or the mask in memory.

    Args:
        seg: The model (its ``options.tile`` and ``options.batch_size`` set the tiles).
        source: A TIFF/BigTIFF/OME-TIFF (tiled, striped or contiguous), GeoTIFF, zarr store or small image.
        target: ``.tif``/``.tiff`` (tiled BigTIFF of class indices, a GeoTIFF for georeferenced input) or ``.zarr``.
        probabilities: Also write ``TARGET_prob.tif`` (or ``.zarr``): float32 ``(H, W, K)`` softmax.
        pyramid: Add half-resolution levels (TIFF SubIFDs, GeoTIFF overviews, zarr levels "1", "2", ...).
        nodata_class: Class written where every band is nodata (GeoTIFF nodata or mask); tiles fully in
            nodata are not predicted.
        dask: A Dask scheduler address: tiles run on its workers (see :mod:`unetkit.inference.dask_predict`).
        dask_workers: Start a local Dask cluster of this many worker processes instead.
        progress: Show tiles done, MP/s and the time left.
        uncertainty: Also write ``TARGET_uncertainty.tif`` (or ``.zarr``): float32 ``(H, W)`` entropy of the
            class probabilities divided by log(K), in [0, 1].

    Returns:
        The files written.

    Example:
        >>> predict_stream(unetkit.load("best.pt"), "slide.ome.tif", "masks/slide.tif")  # doctest: +SKIP
    """
    source_path, target = Path(source), Path(target)
    siblings = (target, probabilities_path(target), uncertainty_path(target))  # each refused as an input, written or not
    refuse_unsafe_outputs([(path, source_path) for path in siblings], [source_path], "--out", overwrite=True, named=True)
    src = open_source(source_path)
    try:
        check_source(src, source_path, seg, nodata_class)
        grid = TileGrid.plan(src.height, src.width, seg.options.tile, seg.options.batch_size, seg.config)
        geo, k = (src if isinstance(src, GeoReader) else None), seg.config.num_classes
        if dask or dask_workers:
            results = dask_results(source_path, seg, grid, dask, dask_workers)
        else:
            results = local_results(src, seg, grid)
        outputs: dict[str, Output] = {}
        bar = tqdm(total=len(grid.tiles), desc=source_path.name, unit="tile", disable=not progress, dynamic_ncols=True)
        try:
            outputs["mask"] = Output(target, (src.height, src.width), mask_dtype(k), geo, nodata_class if src.has_nodata else None, pyramid)
            if probabilities:
                outputs["probabilities"] = Output(probabilities_path(target), (src.height, src.width, k), np.float32, geo)
            if uncertainty:
                outputs["uncertainty"] = Output(uncertainty_path(target), (src.height, src.width), np.float32, geo)
            write_stream(results, grid, outputs, nodata_class, bar)
            for output in outputs.values():
                output.commit()
        except BaseException:
            for output in outputs.values():
                output.abort()
            raise
        finally:
            bar.close()
            results.close()
    finally:
        src.close()
    return [output.target for output in outputs.values()]
