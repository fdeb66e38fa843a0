"""The public API. Each CLI command is a thin call of one function here, with the same option names."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from unetkit.config import make_config
from unetkit.data.io import IMAGE_EXTENSIONS, probe_image, read_image, write_png, write_tiff
from unetkit.engine.trainer import TrainResult
from unetkit.errors import UnetkitError
from unetkit.evaluation import evaluate  # noqa: F401 - public as unetkit.evaluate
from unetkit.exporting import export_model
from unetkit.inference.predictor import DEFAULT_TILE, Segmenter, as_segmenter, mask_dtype, softmax
from unetkit.inference.stream import is_zarr, predict_stream, stream_targets
from unetkit.instances import MIN_SIZE, SEED_THRESHOLD, model_target, write_instances
from unetkit.runlist import runs  # noqa: F401 - public as unetkit.runs
from unetkit.server import Limits
from unetkit.tuning import tune  # noqa: F401 - public as unetkit.tune


def train(config: str | Path | None = None, resume: str | Path | None = None, force: bool = False, callbacks=(),
          nproc: int | None = None, max_restarts: int = 0, **options) -> TrainResult:
    """Train a U-Net; options are those of ``unetkit.config.TrainConfig`` (``unetkit train --help``).

    Args:
        config: A YAML file of options; ``options`` override it.
        resume: A run folder to continue from its ``last.pt`` (full state: weights, optimizer, RNG,
            position in the epoch); ``options`` may change the budget or learning rate.
        force: Resume even a run that stopped on a non-finite loss with the same learning rate.
        callbacks: Objects with hooks of :class:`unetkit.engine.callbacks.Callback` (trackers, search pruning).
        nproc: Train in this many local processes under torchrun (DistributedDataParallel; global batch
            ``nproc x batch_size``); None = in this process, or as one rank when torchrun started it.
        max_restarts: With ``nproc``: times torchrun restarts all workers after a failure; they resume
            from the run's last.pt.

    Example:
        >>> unetkit.train(data="data/", out="runs/exp1", time=10, base_channels=32)
    """
    from unetkit.engine import distributed
    from unetkit.engine.trainer import resume_config
    from unetkit.engine.trainer import train as run
    from unetkit.tracking import trackers

    if nproc is not None or max_restarts:
        return distributed.launch(config, resume, force, callbacks, nproc, max_restarts, options)
    resume, config = distributed.resume_after_restart(resume, config, options)  # torchrun --max-restarts
    if resume is not None:
        if config is not None:
            raise UnetkitError("--resume takes the run's own config.yaml; drop --config (flags may still override options)")
        cfg, state = resume_config(resume, force=force, **options)
    else:
        cfg, state = make_config(config, **options), None
    with trackers(cfg) as loggers:  # --log tensorboard,mlflow; closed also when the run fails or is pruned
        return run(cfg, resume=state, callbacks=[*callbacks, *loggers])


def load(model: str | Path, device: str = "auto", tile: int = DEFAULT_TILE, batch_size: int = 4, precision: str = "auto",
         backend: str = "torch", int8: bool = False, calibration: str | Path | None = None) -> Segmenter:
    """Load a checkpoint (``best.pt``/``last.pt``) or an exported ``.onnx`` model as a :class:`Segmenter` ready to predict.

    ``backend="onnxruntime"`` runs a checkpoint through ONNX Runtime (exported once, cached); ``int8`` also
    quantises it, calibrated on ``calibration`` (default: its training data) and refused when that costs
    more than 0.005 mean Dice there. See :mod:`unetkit.inference.quantize`."""
    return as_segmenter(model, device, tile=tile, batch_size=batch_size, precision=precision, backend=backend, int8=int8, calibration=calibration)


def _inputs(inputs: list[str | Path]) -> list[tuple[str, Path]]:
    """(output key, file) for every image in ``inputs`` (files, or folders searched recursively)."""
    found: list[tuple[str, Path]] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir() and not is_zarr(path):
            files = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith("."))
            if not files:
                raise UnetkitError(f"{path}: no images found (looked for {', '.join(sorted(IMAGE_EXTENSIONS))})")
            found += [(p.relative_to(path).with_suffix("").as_posix(), p) for p in files]
        elif path.is_file() or is_zarr(path):
            if path.suffix.lower() not in IMAGE_EXTENSIONS and not is_zarr(path):
                raise UnetkitError(f"{path}: not an image file (expected {', '.join(sorted(IMAGE_EXTENSIONS))})")
            found.append((path.stem, path))
        else:
            raise UnetkitError(f"{path}: no such file or folder")
    keys = [k for k, _ in found]
    if len(set(keys)) != len(keys):
        dup = next(k for k in keys if keys.count(k) > 1)
        raise UnetkitError(f"two inputs would both write {dup}.png; pass them in separate runs or as one folder")
    return found


def predict(
    model: str | Path | Segmenter,
    inputs: list[str | Path] | str | Path,
    out: str | Path,
    tile: int = DEFAULT_TILE,
    batch_size: int = 4,
    probabilities: bool = False,
    overlay: bool = False,
    instances: bool = False,
    min_size: int = MIN_SIZE,
    seed_threshold: float = SEED_THRESHOLD,
    fill_holes: bool = True,
    device: str = "auto",
    precision: str = "auto",
    backend: str = "torch",
    int8: bool = False,
    calibration: str | Path | None = None,
    progress: bool = True,
    stream: str = "auto",
    pyramid: bool = False,
    nodata_class: int = 255,
    dask: str | None = None,
    dask_workers: int = 0,
) -> list[Path]:
    """Segment images of any size with overlap-tile inference and write the results.

    For each input ``name``: ``out/name.png`` (class indices, the input's size); with ``probabilities``
    ``out/name_prob.tif`` (float32, (C, H, W)); with ``overlay`` ``out/name_overlay.png``. Inputs are
    image files or folders (searched recursively; sub-folders are kept in ``out``).

    With ``instances``: ``out/name_instances.tif`` (uint16 object labels, 0 = background) and
    ``out/name_objects.csv`` (label, area, centroid, bounding box, mean foreground probability). A model
    trained with ``target="instances"`` is split by a seeded watershed: seeds are the components of
    interior probability > ``seed_threshold``, flooded over the foreground (P(background) < 0.5); a binary
    model gives the components of its foreground. Holes are filled (``fill_holes``) and objects under
    ``min_size`` pixels removed. See :mod:`unetkit.instances`.

    Images bigger than memory are streamed (``stream``: ``auto`` streams zarr stores, GeoTIFFs, images
    over 64 MP and any input when ``out`` names a ``.tif``/``.tiff``/``.zarr`` file; ``always``;
    ``never``): read window by window, written as ``out/name.tif`` (tiled BigTIFF, or a GeoTIFF with the
    input's CRS and transform) or into the file ``out`` names, with ``pyramid`` levels optional, nodata
    pixels set to ``nodata_class``, and the tiles optionally on the ``dask`` scheduler at that address or
    on a local cluster of ``dask_workers`` processes. See :func:`unetkit.inference.stream.predict_stream`.

    Returns:
        The files written.
    """
    from unetkit.report import overlay as draw_overlay

    inputs = [inputs] if isinstance(inputs, (str, Path)) else list(inputs)
    items = _inputs(inputs)
    out = Path(out)
    for item in map(Path, inputs):
        if item.is_dir() and (out.resolve() == item.resolve() or item.resolve() in out.resolve().parents):
            raise UnetkitError(f"--out {out} is inside the input folder {item}; predictions would mix with the images, choose another --out")
    for _, path in items:  # every input is checked before any output is written
        if not is_zarr(path):
            probe_image(path)
    streamed = stream_targets(items, out, stream)  # {key: output file} of the inputs to stream
    if streamed and (overlay or instances):
        raise UnetkitError(f"{next(iter(streamed.values()))} is streamed; --overlay and --instances need an image that fits in memory (pass --stream never)")
    seg = as_segmenter(model, device, tile=tile, batch_size=batch_size, precision=precision, backend=backend, int8=int8, calibration=calibration)
    kind = model_target(seg.meta, str(model) if isinstance(model, (str, Path)) else "the model") if instances else None  # refuses models that cannot give objects
    written: list[Path] = []
    for key, path in tqdm(items, desc="predict", unit="img", disable=not progress or len(items) < 2):
        if key in streamed:
            written += predict_stream(seg, path, streamed[key], probabilities, pyramid, nodata_class, dask, dask_workers, progress)
            continue
        image = read_image(path)
        seg.check_image(image, str(path))
        probs = softmax(seg.logits(image))  # (K, H, W)
        mask = probs.argmax(0).astype(mask_dtype(probs.shape[0]))
        target = out / f"{key}.png"
        write_png(target, mask)
        written.append(target)
        if probabilities:
            written.append(out / f"{key}_prob.tif")
            write_tiff(written[-1], probs.astype(np.float32))
        if overlay:
            written.append(out / f"{key}_overlay.png")
            write_png(written[-1], draw_overlay(image, mask, seg.colors, seg.classes))
        if instances:
            written += write_instances(out, key, probs, kind, seed_threshold, min_size, fill_holes)
    return written


def check(
    data: str | Path,
    mask_mode: str = "auto",
    preview: str | Path | None = None,
    preview_count: int = 12,
    weights: str | Path | None = None,
    weight_w0: float = 10.0,
    weight_sigma: float = 5.0,
    progress: bool = True,
) -> dict:
    """Check a data set before training and report every problem, not just the first.

    Reports pairs found, images without mask and masks without image, size mismatches, unreadable
    files, bit depth and channels per image, the mask encoding with the values found, class pixel
    frequencies with suggested class weights, and empty masks. Each problem is one entry
    ``{"level": "error" | "warning", "file", "message"}`` whose message names the fix.

    Args:
        data: A data set folder or ``dataset.yaml``, as for ``train``.
        mask_mode: ``auto`` (the yaml's, then the rules of ``load_spec``), or a mode to force.
        preview: Write a PNG grid of the first ``preview_count`` images with their masks overlaid.
        weights: Write the paper's border weight map of every pair into this folder
            (``<key>.tif`` float32 and ``<key>.png`` picture), with ``weight_w0`` and ``weight_sigma``
            and the suggested class weights as ``w_c``.

    Returns:
        The report; ``report["usable"]`` is True when there is no error.

    Example:
        >>> report = unetkit.check("data/", preview="preview.png")  # doctest: +SKIP
        >>> report["usable"], report["mask_mode"], report["suggested_class_weights"]  # doctest: +SKIP
        (True, 'binary', [2.27, 0.64])
    """
    from unetkit.data.doctor import diagnose

    return diagnose(data, mask_mode, preview, preview_count, weights, weight_w0, weight_sigma, progress)


def export(model: str | Path, out: str | Path, format: str = "onnx", tile: int = DEFAULT_TILE) -> Path:
    """Export a checkpoint as an ONNX graph (or TorchScript module) that carries its own preprocessing.

    The file holds the normalisation, classes and colours, padding mode and valid input sizes, the
    recommended ``tile`` and the unetkit version, so ``unetkit predict --model model.onnx`` gives the
    checkpoint's results with ONNX Runtime, and so does a program with only onnxruntime and numpy
    (docs/deploy.md). Batch, height and width are dynamic. The file is checked against PyTorch before
    it is written (atomically). See :func:`unetkit.exporting.export_model`.

    Args:
        model: A run's ``best.pt`` or ``last.pt``.
        out: The file to write, ``.onnx`` for ONNX (e.g. ``.torchscript`` for TorchScript).
        format: ``"onnx"`` or ``"torchscript"``.
        tile: Recommended input tile size stored in the file (default 512).

    Returns:
        ``out``.

    Example:
        >>> unetkit.export("runs/exp1/best.pt", "model.onnx")  # doctest: +SKIP
        >>> unetkit.predict("model.onnx", ["scans/"], out="preds/")  # doctest: +SKIP
    """
    return export_model(model, out, format=format, tile=tile)


def serve(
    model: str | Path | Segmenter,
    host: str = "127.0.0.1",
    port: int = 8000,
    max_upload_mb: float = Limits.max_upload_mb,
    max_pixels: int = Limits.max_pixels,
    workers: int = Limits.workers,
    max_queue: int = Limits.max_queue,
    tile: int = DEFAULT_TILE,
    batch_size: int = 4,
    device: str = "auto",
    precision: str = "auto",
    backend: str = "torch",
    int8: bool = False,
    calibration: str | Path | None = None,
) -> None:
    """Serve a model over HTTP until interrupted: ``POST /predict``, ``GET /health`` and a web page at ``/``.

    ``POST /predict`` takes an image (multipart field ``file``, or the raw body) and answers with the
    class-index mask as PNG (``?format=png``, the default), the overlay (``?format=overlay``) or JSON
    with the per-class areas and, for models that give objects, the instances (``?format=json``).
    Bad uploads get a 4xx with a one-line reason; at most ``workers`` images are segmented at once and
    ``max_queue`` more wait, beyond which requests get 503. See docs/deploy.md.

    Args:
        model: A checkpoint, an exported ``.onnx`` file, or a :class:`Segmenter`.
        host: Interface to listen on; the default, loopback, is reachable from this machine only.
        port: TCP port.
        max_upload_mb: Largest upload in MB (default 32).
        max_pixels: Largest image in pixels, height x width (default 4096 x 4096).
        workers: Images segmented at the same time (default 1).
        max_queue: Requests that may wait for a worker (default 32).
        tile, batch_size, device, precision: As for :func:`predict`.

    Example:
        >>> unetkit.serve("model.onnx", port=8000)  # doctest: +SKIP
    """
    from unetkit.server.app import run_server

    limits = Limits(max_upload_mb=max_upload_mb, max_pixels=max_pixels, workers=workers, max_queue=max_queue)
    seg = as_segmenter(model, device, tile=tile, batch_size=batch_size, precision=precision, backend=backend, int8=int8, calibration=calibration)
    run_server(seg, limits, host, port, name=Path(model).name if isinstance(model, (str, Path)) else "model")
