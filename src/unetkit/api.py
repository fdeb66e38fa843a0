"""The public API: train, load, predict, check, export, serve (``evaluate`` is :func:`unetkit.evaluation.evaluate`).

Each function takes the typed options of :mod:`unetkit.commands` as keyword arguments (checked, with the
defaults stated there once) and is the command of the same name (``unetkit COMMAND``). Workflows that
compose these functions sit above this module: :mod:`unetkit.tuning`, :mod:`unetkit.recipes`,
:mod:`unetkit.demo`.
"""

from __future__ import annotations

import sys
from dataclasses import fields
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from unetkit.checking import diagnose
from unetkit.commands import CheckOptions, ExportOptions, Limits, PredictOptions, ServeOptions, TrainRun
from unetkit.data.io import FORMAT_NAMES, IMAGE_EXTENSIONS, probe_image, read_image, sniff, write_png, write_tiff
from unetkit.engine.folds import folds_plan, train_folds
from unetkit.config import given_options, make_config
from unetkit.engine.launcher import launch
from unetkit.engine.planned import plan_run
from unetkit.engine.resume import resolve_run
from unetkit.engine.trainer import TrainResult, train as run
from unetkit.errors import UnetkitError
from unetkit.exporting import export_model
from unetkit.inference.options import InferenceOptions
from unetkit.inference.predictor import Segmenter, probabilities_to_mask
from unetkit.inference.sources import is_zarr, open_source
from unetkit.inference.stream import predict_stream, probabilities_path, stream_targets, uncertainty_path
from unetkit.inference.tta import uncertainty_map
from unetkit.instances import instance_files, model_target, write_instances
from unetkit.loading import Models, load_segmenter, model_sources
from unetkit.outputs import refuse_inside, refuse_unsafe_outputs
from unetkit.report import overlay as draw_overlay
from unetkit.tracking import run_callbacks

TRAIN_RUN = tuple(f.name for f in fields(TrainRun))


def train(callbacks=(), **options) -> TrainResult:
    """Train a U-Net; options are those of :class:`~unetkit.config.TrainConfig` and :class:`~unetkit.commands.TrainRun`
    (``unetkit train --help``).

    Args:
        callbacks: Objects with hooks of :class:`unetkit.engine.callbacks.Callback` (trackers, search pruning).
        config: A YAML file of options; ``options`` override it.
        resume: A run folder to continue from its ``last.pt`` (full state: weights, optimizer, RNG,
            position in the epoch); ``options`` may change the budget or learning rate.
        force: Resume even a run that stopped on a non-finite loss with the same learning rate.
        nproc: Train in this many local processes under torchrun (DistributedDataParallel; global batch
            ``nproc x batch_size``); None = in this process, or as one rank when torchrun started it.
        max_restarts: With ``nproc``: times torchrun restarts all workers after a failure; they resume
            from the run's last.pt.
        overwrite: Start a new run in an ``out`` folder that already holds one (refused otherwise).

    With ``folds=K`` (and no ``fold``) it trains K cross-validation runs into ``out/fold0..`` and writes
    ``out/ensemble.yaml``, which ``predict``/``evaluate``/``load`` take as one model; ``resume`` continues such
    a run at its unfinished fold, and the result is a :class:`~unetkit.engine.folds.FoldsResult`.

    Example:
        >>> unetkit.train(data="data/", out="runs/exp1", time=10, base_channels=32)
    """
    start = TrainRun.build("train", **{k: options.pop(k) for k in TRAIN_RUN if k in options})
    plan = folds_plan(start, options)
    if plan is not None:  # one run per fold, each through _train_one, then their ensemble
        return train_folds(plan, callbacks, _train_one)
    return _train_one(start, options, callbacks)


def _train_one(start: TrainRun, options: dict, callbacks=()) -> TrainResult:
    """One run as ``start`` and ``options`` say: here, or in ``start.nproc`` processes under torchrun."""
    if start.nproc is not None or start.max_restarts:  # each worker takes its callbacks from run_callbacks, named for the job file
        factory = f"{run_callbacks.__module__}:{run_callbacks.__qualname__}"
        return launch(start, callbacks, options, callbacks_factory=factory)
    cfg, state = resolve_run(start, options)
    with run_callbacks(cfg, callbacks) as hooks:  # the end-of-run report, yours, then --log's trackers (closed also on failure)
        return run(cfg, resume=state, callbacks=hooks)


def load(model: Models, **options) -> Segmenter:
    """Load a checkpoint (``best.pt``/``last.pt``) or an exported ``.onnx`` model as a :class:`Segmenter` ready to predict;
    several of them (a list, or comma-separated), or an ensemble folder, as one that averages their class probabilities.

    ``options`` are those of :class:`~unetkit.inference.options.InferenceOptions` (tile, batch_size, device,
    precision, backend, int8, calibration, tta). ``backend="onnxruntime"`` runs a checkpoint through ONNX Runtime
    (exported once, cached); ``int8`` also quantises it, calibrated on ``calibration`` (default: its training
    data) and refused when that costs more than 0.005 mean Dice there. See :mod:`unetkit.quantize`.

    Example:
        >>> seg = unetkit.load("runs/exp1/best.pt", tile=256)  # doctest: +SKIP
        >>> mask = seg.predict_mask(image)  # doctest: +SKIP
    """
    return load_segmenter(model, InferenceOptions.build("load", **options))


def _inputs(inputs: list[str | Path]) -> list[tuple[str, Path]]:
    """(output key, file) for every image in ``inputs`` (files, or folders searched recursively)."""
    found: list[tuple[str, Path]] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir() and not is_zarr(path):
            files = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file() and not p.name.startswith("."))
            if not files:
                what = "a folder, not an image file, and no images were found in it" if path.suffix.lower() in IMAGE_EXTENSIONS else "no images found"
                raise UnetkitError(f"{path}: {what} (looked for {', '.join(sorted(IMAGE_EXTENSIONS))})")
            found += [(p.relative_to(path).with_suffix("").as_posix(), p) for p in files]
        elif path.is_file() or is_zarr(path):
            if path.suffix.lower() not in IMAGE_EXTENSIONS and not is_zarr(path):
                held = sniff(path)
                hint = f"; it holds a {FORMAT_NAMES[held]} image: rename it to {path.stem}{held}" if held else ""
                raise UnetkitError(f"{path}: not an image file (expected {', '.join(sorted(IMAGE_EXTENSIONS))}){hint}")
            found.append((path.stem, path))
        else:
            raise UnetkitError(f"{path}: no such file or folder")
    return found  # inputs whose keys collide are refused with the other output clashes, by predict


def predict(model: Models, inputs: list[str | Path] | str | Path, out: str | Path, **options) -> list[Path]:
    """Segment images of any size with overlap-tile inference and write the results.

    ``options`` are those of :class:`~unetkit.commands.PredictOptions` (``unetkit predict --help``).
    For each input ``name``: ``out/name.png`` (class indices, the input's size); with ``probabilities``
    ``out/name_prob.tif`` (float32, (C, H, W)); with ``overlay`` ``out/name_overlay.png``; with
    ``uncertainty`` ``out/name_uncertainty.tif`` (float32, (H, W), the entropy of the class probabilities
    divided by log(C): 0 = certain, 1 = every class equally likely). Inputs are image files or folders
    (searched recursively; sub-folders are kept in ``out``).

    With ``tta`` (test-time augmentation) the probabilities are the mean of those of the 8 flips and
    90-degree rotations of each tile, or of the tile and its left-right flip for a model trained with
    ``hflip`` only (see :mod:`unetkit.inference.tta`): 8 (or 2) times the compute.

    Several models (a list, ``"a.pt,b.pt"``, or a ``train --folds`` folder) give the mean of their probabilities
    (:mod:`unetkit.inference.ensemble`).

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
    inputs = [inputs] if isinstance(inputs, (str, Path)) else list(inputs)
    o = PredictOptions.build("predict", model=model, inputs=inputs, out=out, **options)
    items, out = _inputs(inputs), Path(out)
    refuse_inside(out, [item for item in map(Path, inputs) if item.is_dir()], "--out")
    for _, path in items:  # every input is checked before any output is written (headers, zarr metadata)
        if is_zarr(path):
            open_source(path).close()
        else:
            probe_image(path)
    streamed = stream_targets(items, out, o.stream)  # {key: output file} of the inputs to stream
    _warn_unused_dask(o, [path for key, path in items if key not in streamed])
    if streamed and (o.overlay or o.instances):
        raise UnetkitError(f"{next(iter(streamed.values()))} is streamed; --overlay and --instances need an image that fits in memory (pass --stream never)")
    planned = [(target, path) for key, path in items for target in _output_files(key, out, o, streamed.get(key)).values()]
    models = model_sources(model)  # every model file an ensemble reads, too
    named = any(target == out for target, _ in planned)  # --out FILE: the user chose the name
    refuse_unsafe_outputs(planned, [path for _, path in items], "--out", o.overwrite, models, named)
    seg = load_segmenter(model, InferenceOptions.pick(o))
    kind = model_target(seg.meta, str(model) if isinstance(model, (str, Path)) else "the model") if o.instances else None  # refuses models that cannot give objects
    written: list[Path] = []
    for key, path in tqdm(items, desc="predict", unit="img", disable=not o.progress or len(items) < 2):
        if key in streamed:
            written += predict_stream(seg, path, streamed[key], o.probabilities, o.pyramid, o.nodata_class, o.dask, o.dask_workers, o.progress,
                                      uncertainty=o.uncertainty)
        else:
            written += _predict_image(seg, path, out, key, o, kind)
    return written


def _output_files(key: str, out: Path, o: PredictOptions, streamed: Path | None) -> dict[str, Path]:
    """The files predict writes for input ``key``, by kind; ``streamed`` is the target of a streamed input."""
    if streamed is not None:
        files = {"mask": streamed}
        if o.probabilities:
            files["probabilities"] = probabilities_path(streamed)
        if o.uncertainty:
            files["uncertainty"] = uncertainty_path(streamed)
        return files
    files = {"mask": out / f"{key}.png"}
    if o.probabilities:
        files["probabilities"] = out / f"{key}_prob.tif"
    if o.uncertainty:
        files["uncertainty"] = out / f"{key}_uncertainty.tif"
    if o.overlay:
        files["overlay"] = out / f"{key}_overlay.png"
    if o.instances:
        files["instances"], files["objects"] = instance_files(out, key)
    return files


def _warn_unused_dask(o: PredictOptions, in_memory: list[Path]) -> None:
    """One line on stderr when --dask or --dask-workers is given for images that are not streamed: only
    streamed images run on Dask, the others are predicted in this process."""
    if not (o.dask or o.dask_workers) or not in_memory:
        return
    flag = f"--dask {o.dask}" if o.dask else f"--dask-workers {o.dask_workers}"
    names = ", ".join(p.name for p in in_memory[:3]) + (f" and {len(in_memory) - 3} more" if len(in_memory) > 3 else "")
    print(f"unetkit: warning: {flag} applies to streamed images only; {names} will be predicted here in memory "
          "(pass --stream always to run them on Dask)", file=sys.stderr)


def _predict_image(seg: Segmenter, path: Path, out: Path, key: str, o: PredictOptions, kind: str | None) -> list[Path]:
    """Predict one image that fits in memory and write its mask and the extra outputs ``o`` asks for."""
    image = read_image(path)
    probs = seg.predict_proba(image, str(path))  # (K, H, W)
    mask = probabilities_to_mask(probs)
    files = _output_files(key, out, o, None)
    write_png(files["mask"], mask)
    if o.probabilities:
        write_tiff(files["probabilities"], probs.astype(np.float32))
    if o.uncertainty:
        write_tiff(files["uncertainty"], uncertainty_map(probs))
    if o.overlay:
        write_png(files["overlay"], draw_overlay(image, mask, seg.colors, seg.classes))
    if o.instances:
        write_instances(out, key, probs, kind, o.seed_threshold, o.min_size, o.fill_holes)
    return list(files.values())


def plan(data: str | Path, config: str | Path | None = None, **options) -> dict:
    """How ``train`` would plan a run on ``data`` (``model_size`` auto): each option with its reason, the data's
    fingerprint and, with ``time``, the measured step time; nothing is trained or written.

    Options given here (or in ``config``) are kept as given, and the rest is planned around them, as ``train`` does.

    Example:
        >>> unetkit.plan("data/", time=20)["options"]["patch_size"]  # doctest: +SKIP
        256
    """
    given = given_options(config, data=str(data), **options)
    cfg = make_config(config, data=str(data), **options)
    if cfg.model_size != "auto":
        raise UnetkitError(f"--model-size {cfg.model_size} is a fixed preset, so there is nothing to plan; drop it (auto is the default)")
    return plan_run(cfg, given, progress=cfg.progress).document()


def check(data: str | Path, **options) -> dict:
    """Check a data set before training and report every problem, not just the first.

    ``options`` are those of :class:`~unetkit.commands.CheckOptions` (``unetkit check --help``).
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
    o = CheckOptions.build("check", data=data, **options)
    return diagnose(o.data, o.mask_mode, o.preview, o.preview_count, o.weights, o.weight_w0, o.weight_sigma, o.progress, o.overwrite, o.cache)


def export(model: str | Path, out: str | Path, **options) -> Path:
    """Export a checkpoint as an ONNX graph (or TorchScript module) that carries its own preprocessing.

    ``options`` are those of :class:`~unetkit.commands.ExportOptions` (``format``, ``tile``). The file holds
    the normalisation, classes and colours, padding mode and valid input sizes, the recommended ``tile``
    and the unetkit version, so ``unetkit predict --model model.onnx`` gives the checkpoint's results with
    ONNX Runtime, and so does a program with only onnxruntime and numpy (docs/deploy.md). Batch, height and
    width are dynamic. The file is checked against PyTorch before it is written (atomically).

    Returns:
        ``out``.

    Example:
        >>> unetkit.export("runs/exp1/best.pt", "model.onnx")  # doctest: +SKIP
        >>> unetkit.predict("model.onnx", ["scans/"], out="preds/")  # doctest: +SKIP
    """
    o = ExportOptions.build("export", model=model, out=out, **options)
    models = [Path(model)] if isinstance(model, (str, Path)) else []
    refuse_unsafe_outputs([(Path(o.out), Path("the export"))], [], "--out", o.overwrite, models, named=True)
    return export_model(model, o.out, format=o.format, tile=o.tile)


def serve(model: str | Path | Segmenter, **options) -> None:
    """Serve a model over HTTP until interrupted: ``POST /predict``, ``GET /health`` and a web page at ``/``.

    ``options`` are those of :class:`~unetkit.commands.ServeOptions` (``unetkit serve --help``).
    ``POST /predict`` takes an image (multipart field ``file``, or the raw body) and answers with the
    class-index mask as PNG (``?format=png``, the default), the overlay (``?format=overlay``) or JSON
    with the per-class areas and, for models that give objects, the instances (``?format=json``).
    Bad uploads get a 4xx with a one-line reason; at most ``jobs`` images are segmented at once and
    ``max_queue`` more wait, beyond which requests get 503. See docs/deploy.md.

    Example:
        >>> unetkit.serve("model.onnx", port=8000)  # doctest: +SKIP
    """
    from unetkit.server.app import run_server  # FastAPI and uvicorn: the [serve] extra

    o = ServeOptions.build("serve", model=model, **options)
    limits = Limits.pick(o)
    seg = load_segmenter(model, InferenceOptions.pick(o))
    run_server(seg, limits, o.host, o.port, name=Path(model).name if isinstance(model, (str, Path)) else "model")
