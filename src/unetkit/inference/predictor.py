"""From a trained U-Net to masks: normalisation, the PyTorch tile function, overlap-tile inference of a
whole image, and the :class:`Segmenter` that holds a model with its options.

This module knows PyTorch checkpoints only; :func:`unetkit.loading.load_segmenter` also loads exported
``.onnx`` models and checkpoints run through ONNX Runtime, all as the same :class:`Segmenter`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from unetkit.data.pixels import check_pixels
from unetkit.engine.checkpoint import load_checkpoint
from unetkit.errors import UnetkitError
from unetkit.inference.options import DEFAULT_BATCH, DEFAULT_TILE, InferenceOptions
from unetkit.inference.stitch import Stitcher, TileFunction, TileGrid, forward_batch, prefetched
from unetkit.inference.tiling import mirror_pad
from unetkit.inference.tta import TTAForward, softmax, tta_transforms
from unetkit.models.config import ModelConfig
from unetkit.models.unet import UNet, unet_from_weights
from unetkit.runtime import autocast, resolve_device, resolve_precision

PREDICTION_META = ("model", "normalization", "classes", "colors")  # what a checkpoint must describe to be run
DAMAGED = "the file is damaged or was edited; re-train or re-copy it"


def _numbers(values: object, count: int) -> bool:
    return isinstance(values, list) and len(values) == count and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)


def check_normalization(norm: object, channels: int, where: str) -> None:
    """Refuse stored normalisation that would turn pixels into garbage: not one finite ``mean`` and one finite,
    positive ``std`` per input channel, as float32 (the arithmetic of :func:`standardize`)."""
    for key in ("mean", "std"):
        values = norm.get(key) if isinstance(norm, dict) else None
        if not _numbers(values, channels):
            raise UnetkitError(f"{where}: its normalization {key} is {values!r}; expected {channels} number(s), one per input channel; {DAMAGED}")
        with np.errstate(over="ignore"):
            as_float32 = np.asarray(values, np.float64).astype(np.float32)
        if not np.isfinite(as_float32).all():
            raise UnetkitError(f"{where}: its normalization {key} {values} is not finite in float32; {DAMAGED}")
        if key == "std" and not (as_float32 > 0).all():
            raise UnetkitError(f"{where}: its normalization std {values} is not positive (pixels divided by it become NaN or infinite); {DAMAGED}")


def check_meta(meta: dict, config: ModelConfig, where: str) -> None:
    """Refuse metadata that prediction cannot run with: missing keys, bad normalisation, or classes and
    colours that do not match the network's ``num_classes`` outputs.

    Raises:
        UnetkitError: naming ``where`` (the model file) and what is wrong.
    """
    missing = [key for key in PREDICTION_META if key not in meta]
    if missing:
        raise UnetkitError(f"{where}: its metadata lacks {', '.join(missing)}, which prediction needs; {DAMAGED}")
    check_normalization(meta["normalization"], config.in_channels, where)
    k, classes, colors = config.num_classes, meta["classes"], meta["colors"]
    if not (isinstance(classes, list) and len(classes) == k and all(isinstance(c, str) for c in classes)):
        raise UnetkitError(f"{where}: its metadata names the classes {classes!r} but the network has {k} outputs; {DAMAGED}")
    rgb = [isinstance(c, list) and len(c) == 3 and all(isinstance(v, int) and 0 <= v <= 255 for v in c) for c in colors] if isinstance(colors, list) else []
    if len(rgb) != k or not all(rgb):
        raise UnetkitError(f"{where}: its metadata colours {colors!r} are not {k} RGB triples of 0..255; {DAMAGED}")


def standardize(x: np.ndarray, mean, std, axis: int) -> np.ndarray:
    """``(x - mean) / std`` in float32 along the channel ``axis``: the one normalisation of every
    prediction path (whole image, tile batches, streamed windows), so that they agree bit for bit."""
    shape = [1] * x.ndim
    shape[axis] = -1
    return (x.astype(np.float32) - np.asarray(mean, np.float32).reshape(shape)) / np.asarray(std, np.float32).reshape(shape)


def normalize(image: np.ndarray, mean: list[float], std: list[float]) -> np.ndarray:
    """(H, W, C) image of any dtype -> (C, H, W) float32, standardised per channel with the training stats."""
    if image.ndim != 3 or image.shape[2] != len(mean):
        raise ValueError(f"image has shape {image.shape}; the model expects (H, W, {len(mean)})")
    return standardize(image.transpose(2, 0, 1), mean, std, axis=0)


class TorchForward:
    """A PyTorch U-Net as a tile function: (B, C, h, w) normalised float32 -> (B, K, h', w') float32 logits.

    Every backend (this one, ONNX Runtime) has this shape, so tiling, streaming and outputs are shared.
    ``channels_last`` converts the model and feeds NHWC tiles (faster convolutions on CPUs).
    """

    def __init__(self, model: UNet, device: torch.device | None = None, precision: str = "fp32", channels_last: bool = False) -> None:
        self.model = model.eval()
        self.config: ModelConfig = model.config
        self.device = device or next(model.parameters()).device
        self.precision = precision
        self.channels_last = channels_last
        if channels_last:
            self.model.to(memory_format=torch.channels_last)

    @torch.inference_mode()
    def __call__(self, x: np.ndarray) -> np.ndarray:
        with autocast(self.device, self.precision):
            t = torch.from_numpy(np.ascontiguousarray(x)).to(self.device)
            if self.channels_last:
                t = t.contiguous(memory_format=torch.channels_last)
            y = self.model(t)
        return y.float().cpu().numpy()


def tiled_logits(
    model: "UNet | TileFunction",
    image: np.ndarray,
    tile: int = DEFAULT_TILE,
    batch_size: int = DEFAULT_BATCH,
    device: torch.device | None = None,
    precision: str = "fp32",
    progress: bool = False,
    channels_last: bool = False,
    transform=None,
    name: str | None = None,
) -> np.ndarray:
    """Overlap-tile inference of a whole (C, H, W) float32 image; returns (K, H, W) float32 logits.

    ``transform``, if given, maps each stacked batch of tiles to the network's float32 input: then
    ``image`` may stay in its native dtype and is normalised a batch at a time, never as a whole.

    ``name``, if given, is the image named when the logits come out NaN or infinite (refused then).

    ``model`` is a :class:`UNet` (run as ``TorchForward(model, device, precision, channels_last)``) or any
    tile function with a ``config`` (ModelConfig), such as the ONNX Runtime backend.
    The next batch of tiles is cut in a background thread while the current one runs, and the tiles are
    put together by the :class:`~unetkit.inference.stitch.Stitcher` that streamed prediction uses too.

    In valid mode this equals ``model(mirror_pad(image, ...))`` over the whole padded image, cropped
    to (H, W): tiles start on multiples of the network's stride and their outputs abut. In same mode
    tiles overlap and are blended with a raised-cosine window.
    """
    forward = TorchForward(model, device, precision, channels_last) if isinstance(model, torch.nn.Module) else model
    cfg = forward.config
    _, h, w = image.shape
    grid = TileGrid.plan(h, w, tile, batch_size, cfg)
    rows, cols = grid.rows, grid.cols
    padded = mirror_pad(image, (rows.pad_before, rows.pad_after), (cols.pad_before, cols.pad_after))

    def cut(batch):  # (B, C, th, tw)
        x = np.stack([padded[:, rows.starts[i] : rows.starts[i] + rows.tile_in, cols.starts[j] : cols.starts[j] + cols.tile_in] for i, j in batch])
        return x if transform is None else transform(x)

    out = np.empty((cfg.num_classes, h, w), np.float32)
    stitcher = Stitcher(grid)
    with tqdm(total=len(grid.tiles), desc="tiles", unit="tile", disable=not progress, leave=False) as bar:
        for batch, x in prefetched(grid.batches, cut):
            for result in forward_batch(forward, grid, batch, x, name=name):
                for block in stitcher.add(result):
                    logits = block.outputs[0]  # (K, h, W)
                    out[:, block.row0 : block.row0 + logits.shape[1]] = logits
            bar.update(len(batch))
    return out


def mask_dtype(num_classes: int) -> type:
    """The dtype of class-index masks: uint8 up to 256 classes, else uint16."""
    return np.uint8 if num_classes <= 256 else np.uint16


def probabilities_to_mask(probs: np.ndarray) -> np.ndarray:
    """(K, H, W) class probabilities -> (H, W) mask of the most probable class (uint8, or uint16 beyond 256 classes).

    Example:
        >>> probabilities_to_mask(np.array([[[0.9, 0.2]], [[0.1, 0.8]]]))
        array([[0, 1]], dtype=uint8)
    """
    return probs.argmax(axis=0).astype(mask_dtype(probs.shape[0]))


@dataclass
class Segmenter:
    """A trained U-Net with what prediction needs: normalisation, class names and colours, geometry, and
    the :class:`~unetkit.inference.options.InferenceOptions` it runs with (``tile`` and ``batch_size`` set
    the tiles; the others say how it was loaded).

    ``forward`` is the backend: :class:`TorchForward` for checkpoints, or the ONNX Runtime one for
    exported models; everything else (tiling, outputs) is the same for all of them. With ``options.tta``
    it is wrapped here, for every backend and path, in a :class:`~unetkit.inference.tta.TTAForward` over
    the transforms the model's training allows (:func:`~unetkit.inference.tta.tta_transforms`).

    Example:
        >>> seg = unetkit.load("runs/exp1/best.pt")
        >>> mask = seg.predict_mask(image)  # (H, W) class indices for an (H, W, C) image
    """

    forward: TileFunction
    meta: dict
    options: InferenceOptions = field(default_factory=InferenceOptions)
    progress: bool = False
    classes: list[str] = field(init=False)

    def __post_init__(self) -> None:
        self.classes = list(self.meta["classes"])
        if self.options.tta and not isinstance(self.forward, TTAForward):
            self.forward = TTAForward(self.forward, tta_transforms(self.meta))

    @property
    def config(self) -> ModelConfig:
        return self.forward.config

    @property
    def model(self) -> UNet | None:
        """The PyTorch module (None for other backends)."""
        return getattr(self.forward, "model", None)

    @classmethod
    def from_checkpoint(cls, path: str | Path, options: InferenceOptions | None = None, progress: bool = False) -> "Segmenter":
        """A PyTorch checkpoint run by PyTorch. The Segmenter holds ``options`` resolved: ``device`` and
        ``precision`` "auto" become what this machine runs, ``tile`` None the default. Use
        :func:`unetkit.loading.load_segmenter` for every backend."""
        options = options or InferenceOptions()
        ckpt = load_checkpoint(path)
        meta = ckpt["meta"]
        if "model" not in meta:
            raise UnetkitError(f"{path}: its metadata lacks model, which prediction needs; {DAMAGED}")
        model = unet_from_weights(meta["model"], ckpt["model"], str(path))
        check_meta(meta, model.config, str(path))
        dev = resolve_device(options.device)
        precision = resolve_precision(options.precision, dev)
        # NHWC convolutions are 25-60% faster on CPU in fp32 (docs/benchmarks.md, cpu-inference).
        forward = TorchForward(model.to(dev), dev, precision, channels_last=dev.type == "cpu")
        return cls(forward, meta, dataclasses.replace(options, tile=options.tile or DEFAULT_TILE, device=str(dev), precision=precision), progress)

    @property
    def colors(self) -> list[tuple[int, int, int]]:
        return [tuple(c) for c in self.meta["colors"]]

    def check_image(self, image: np.ndarray, name: str = "image") -> None:
        """Refuse anything but an (H, W, C) image of real, finite pixels with the model's channels."""
        self.check_channels(image.shape[2] if image.ndim == 3 else 1, name, image.ndim == 3)
        check_pixels(image, name)

    def check_channels(self, channels: int, name: str = "image", shaped: bool = True) -> None:
        """Refuse an image ``name`` of ``channels`` channels (or not ``shaped`` (H, W, C)) unless the model was trained on as many."""
        if not shaped or channels != self.config.in_channels:
            raise UnetkitError(f"{name} has {channels} channel(s); this model was trained on {self.config.in_channels}; "
                               "convert the image to the training data's channels")  # fmt: skip

    def logits(self, image: np.ndarray, name: str = "image") -> np.ndarray:
        """(H, W, C) image in its native dtype -> (K, H, W) float32 logits.

        Raises:
            UnetkitError: the image ``name`` is refused (:meth:`check_image`), or
                :class:`~unetkit.inference.stitch.NonFiniteLogits` when the model's output overflows on it.
        """
        self.check_image(image, name)
        norm = self.meta["normalization"]
        # Normalised a batch of tiles at a time, so no float copy of the whole image exists.
        return tiled_logits(self.forward, image.transpose(2, 0, 1), self.options.tile, self.options.batch_size, progress=self.progress,
                            transform=lambda x: standardize(x, norm["mean"], norm["std"], axis=1), name=name)

    def predict_proba(self, image: np.ndarray, name: str = "image") -> np.ndarray:
        """(H, W, C) image -> (K, H, W) float32 class probabilities; ``name`` is the file errors name."""
        return softmax(self.logits(image, name))

    def predict_mask(self, image: np.ndarray, name: str = "image") -> np.ndarray:
        """(H, W, C) image -> (H, W) class indices (uint8, or uint16 beyond 256 classes)."""
        return self.logits(image, name).argmax(axis=0).astype(mask_dtype(len(self.classes)))
