"""Run a checkpoint through ONNX Runtime (``--backend onnxruntime``), optionally int8-quantised (``--int8``).

On CPUs without fast bf16, ONNX Runtime's fp32 kernels beat PyTorch's, and static int8 quantisation
(QDQ, per-channel weights, activations calibrated on training images) roughly halves the time again
(docs/benchmarks.md, cpu-speed). A quantised model is only used when it keeps its accuracy: on the
calibration images, its mean Dice against the masks must stay within ``max_dice_drop`` (0.005) of fp32.

Exported and quantised files are cached under ``$UNETKIT_CACHE`` (default ``~/.cache/unetkit``), keyed
by the checkpoint's content, so the export and calibration happen once per checkpoint.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path

import numpy as np

from unetkit.data.dataset import IGNORE, load_spec, read_pair
from unetkit.data.io import atomic_write
from unetkit.engine.checkpoint import load_checkpoint
from unetkit.errors import UnetkitError
from unetkit.exporting import export_model
from unetkit.inference.onnx_backend import load_onnx
from unetkit.inference.options import DEFAULT_TILE, InferenceOptions
from unetkit.inference.predictor import Segmenter, normalize
from unetkit.inference.tiling import mirror_pad, plan_axis
from unetkit.metrics import confusion_matrix, scores

MAX_DICE_DROP = 0.005


def cache_dir() -> Path:
    return Path(os.environ.get("UNETKIT_CACHE") or Path.home() / ".cache" / "unetkit")


def _digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


def onnx_for(checkpoint: str | Path, tile: int) -> Path:
    """The checkpoint exported to ONNX (fp32), from the cache or exported now."""
    checkpoint = Path(checkpoint)
    if not checkpoint.is_file():
        raise UnetkitError(f"{checkpoint}: checkpoint not found; pass a run's best.pt or last.pt")
    out = cache_dir() / f"{checkpoint.stem}-{_digest(checkpoint)}-t{tile}.onnx"
    if not out.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
        export_model(checkpoint, out, "onnx", tile=tile)
    return out


def _calibration_pairs(data: str | Path | None, meta: dict, checkpoint: Path, max_images: int):
    """(image, class mask) pairs for calibration: ``data``, else the training data recorded in the checkpoint."""
    source = data or meta.get("train_config", {}).get("data")
    if not source:
        raise UnetkitError(f"{checkpoint}: --int8 needs calibration images with masks; pass --calibration DATA")
    try:
        spec = load_spec(source)
        if "train" in spec.splits:
            spec = load_spec(source, split="train")
    except UnetkitError as e:
        raise UnetkitError(f"--int8 calibration data: {e}; pass --calibration DATA (a folder or dataset.yaml with masks)") from None
    pairs = [p for p in spec.pairs if p.mask is not None][:max_images]
    if not pairs:
        raise UnetkitError(f"{source}: no images with masks to calibrate --int8 on; pass --calibration DATA")
    return [read_pair(p, spec) for p in pairs], str(source)


def _tiles(seg: Segmenter, images: list[np.ndarray], count: int, seed: int = 0) -> list[np.ndarray]:
    """Normalised input tiles of the size prediction uses, cut at random places of the calibration images."""
    rng = np.random.default_rng(seed)
    norm, cfg = seg.meta["normalization"], seg.config
    tiles = []
    for i, image in enumerate(images):
        x = normalize(image, norm["mean"], norm["std"])
        rows, cols = plan_axis(x.shape[1], seg.options.tile, cfg.depth, cfg.padding), plan_axis(x.shape[2], seg.options.tile, cfg.depth, cfg.padding)
        padded = mirror_pad(x, (rows.pad_before, rows.pad_after), (cols.pad_before, cols.pad_after))
        for _ in range(count // len(images) + (i < count % len(images))):  # images take turns, as evenly as possible
            r, c = rng.choice(rows.starts), rng.choice(cols.starts)
            tiles.append(np.ascontiguousarray(padded[None, :, r : r + rows.tile_in, c : c + cols.tile_in]))
    return tiles


def _mean_dice(seg: Segmenter, pairs) -> float:
    k = len(seg.classes)
    cm = np.zeros((k, k), np.int64)
    for image, mask in pairs:
        cm += confusion_matrix(seg.predict_mask(image), mask, k, IGNORE)
    return float(scores(cm, seg.classes)["dice"]["mean"])


def int8_for(checkpoint: str | Path, tile: int, calibration: str | Path | None = None, max_images: int = 8,
             max_dice_drop: float = MAX_DICE_DROP, progress: bool = False) -> tuple[Path, dict]:
    """The checkpoint statically quantised to int8 with ONNX Runtime, checked on the calibration images.

    Returns:
        The ``.onnx`` file and its check: ``{"dice_fp32", "dice_int8", "images", "data"}``.

    Raises:
        UnetkitError: When int8 loses more than ``max_dice_drop`` mean Dice against fp32 (the file is not kept).
    """
    try:
        from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
        from onnxruntime.quantization.shape_inference import quant_pre_process
    except ImportError:
        raise UnetkitError("--int8 needs onnxruntime and onnx: pip install 'unetkit[onnx]'") from None
    checkpoint = Path(checkpoint)
    fp32 = onnx_for(checkpoint, tile)
    key = hashlib.sha256(f"{fp32.name}|{calibration}|{max_images}".encode()).hexdigest()[:12]
    out, report = fp32.with_name(f"{fp32.stem}-int8-{key}.onnx"), fp32.with_name(f"{fp32.stem}-int8-{key}.json")
    if out.exists() and report.exists():
        return out, json.loads(report.read_text())

    meta = load_checkpoint(checkpoint)["meta"]
    pairs, source = _calibration_pairs(calibration, meta, checkpoint, max_images)
    reference = load_onnx(fp32, InferenceOptions(tile=tile), progress)
    feeds = [{reference.forward.input_name: t} for t in _tiles(reference, [p[0] for p in pairs], 2 * len(pairs))]

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.feeds = iter(feeds)

        def get_next(self):
            return next(self.feeds, None)

    prepared = out.with_name(out.stem + ".pre.onnx")
    try:
        quant_pre_process(str(fp32), str(prepared), skip_symbolic_shape=True)
        with atomic_write(out) as tmp:
            quantize_static(str(prepared), str(tmp), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    finally:
        prepared.unlink(missing_ok=True)
    quantised = load_onnx(out, InferenceOptions(tile=tile), progress)
    if meta.get("target", "semantic") != "semantic":
        # Targets derived from the masks (instances): score int8 against fp32's own prediction instead.
        pairs = [(image, reference.predict_mask(image)) for image, _ in pairs]
    check = {"dice_fp32": _mean_dice(reference, pairs), "images": len(pairs), "data": source}
    check["dice_int8"] = _mean_dice(quantised, pairs)
    if check["dice_int8"] < check["dice_fp32"] - max_dice_drop:
        out.unlink(missing_ok=True)
        raise UnetkitError(
            f"{checkpoint}: int8 quantisation loses accuracy on {len(pairs)} calibration image(s) of {source} "
            f"(mean Dice {check['dice_int8']:.4f} vs fp32 {check['dice_fp32']:.4f}, more than {max_dice_drop} lower); "
            "predict without --int8 (--backend onnxruntime keeps fp32)"
        )
    with atomic_write(report) as tmp:
        Path(tmp).write_text(json.dumps(check, indent=2))
    return out, check


def load_with_backend(checkpoint: str | Path, options: InferenceOptions, progress: bool = False) -> Segmenter:
    """A :class:`Segmenter` for ``checkpoint`` run by ONNX Runtime, in fp32 or (``options.int8``) checked int8."""
    if Path(checkpoint).suffix.lower() == ".onnx":
        raise UnetkitError(f"{checkpoint}: already an ONNX model; --backend and --int8 apply to checkpoints (.pt)")
    if options.precision not in ("auto", "fp32"):
        raise UnetkitError(f"precision={options.precision!r}: the onnxruntime backend computes in fp32 (or int8 with --int8)")
    tile = options.tile or DEFAULT_TILE
    path = int8_for(checkpoint, tile, options.calibration, progress=progress)[0] if options.int8 else onnx_for(checkpoint, tile)
    return load_onnx(path, dataclasses.replace(options, tile=tile), progress)
