"""From a checkpoint to masks: normalisation, overlap-tile inference, and file outputs."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from unetkit.engine.checkpoint import load_checkpoint
from unetkit.inference.tiling import blend_window, mirror_pad, plan_axis
from unetkit.models.config import ModelConfig
from unetkit.models.unet import UNet
from unetkit.runtime import autocast, resolve_device, resolve_precision

DEFAULT_TILE = 512


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


def _prefetched(items, make, depth: int = 2):
    """Yield ``(item, make(item))`` with ``make`` running ahead in a thread (numpy slicing releases the GIL)."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1, thread_name_prefix="unetkit-prefetch") as pool:
        pending = [(it, pool.submit(make, it)) for it in items[:depth]]
        for i in range(len(items)):
            item, future = pending.pop(0)
            if i + depth < len(items):
                pending.append((items[i + depth], pool.submit(make, items[i + depth])))
            yield item, future.result()


def tiled_logits(
    model: "UNet | TorchForward",
    image: np.ndarray,
    tile: int = DEFAULT_TILE,
    batch_size: int = 4,
    device: torch.device | None = None,
    precision: str = "fp32",
    progress: bool = False,
    channels_last: bool = False,
    transform=None,
) -> np.ndarray:
    """Overlap-tile inference of a whole (C, H, W) float32 image; returns (K, H, W) float32 logits.

    ``transform``, if given, maps each stacked batch of tiles to the network's float32 input: then
    ``image`` may stay in its native dtype and is normalised a batch at a time, never as a whole.

    ``model`` is a :class:`UNet` (run as ``TorchForward(model, device, precision, channels_last)``) or any
    tile function with a ``config`` (ModelConfig), such as the ONNX Runtime backend.
    The next batch of tiles is cut in a background thread while the current one runs.

    In valid mode this equals ``model(mirror_pad(image, ...))`` over the whole padded image, cropped
    to (H, W): tiles start on multiples of the network's stride and their outputs abut. In same mode
    tiles overlap and are blended with a raised-cosine window.
    """
    forward = TorchForward(model, device, precision, channels_last) if isinstance(model, torch.nn.Module) else model
    cfg = forward.config
    _, h, w = image.shape
    rows = plan_axis(h, tile, cfg.depth, cfg.padding)
    cols = plan_axis(w, tile, cfg.depth, cfg.padding)
    padded = mirror_pad(image, (rows.pad_before, rows.pad_after), (cols.pad_before, cols.pad_after))
    out = np.zeros((cfg.num_classes, rows.stitched_length, cols.stitched_length), np.float32)
    blend = cfg.padding == "same" and (len(rows.starts) > 1 or len(cols.starts) > 1)
    if blend:
        window = np.outer(blend_window(rows.tile_out, rows.tile_in - rows.step), blend_window(cols.tile_out, cols.tile_in - cols.step))
        weight = np.zeros(out.shape[1:], np.float32)
    origins = [(r, c) for r in rows.starts for c in cols.starts]
    batches = [origins[i : i + batch_size] for i in range(0, len(origins), batch_size)]

    def cut(batch):  # (B, C, th, tw)
        x = np.stack([padded[:, r : r + rows.tile_in, c : c + cols.tile_in] for r, c in batch])
        return x if transform is None else transform(x)

    bar = tqdm(total=len(origins), desc="tiles", unit="tile", disable=not progress, leave=False)
    for batch, x in _prefetched(batches, cut):
        y = forward(x)  # (B, K, th_out, tw_out)
        for (r, c), logits in zip(batch, y):
            if blend:
                out[:, r : r + rows.tile_out, c : c + cols.tile_out] += logits * window
                weight[r : r + rows.tile_out, c : c + cols.tile_out] += window
            else:
                out[:, r : r + rows.tile_out, c : c + cols.tile_out] = logits
        bar.update(len(batch))
    bar.close()
    if blend:
        out /= weight
    return out[:, rows.out_offset : rows.out_offset + h, cols.out_offset : cols.out_offset + w]


def mask_dtype(num_classes: int) -> type:
    """The dtype of class-index masks: uint8 up to 256 classes, else uint16."""
    return np.uint8 if num_classes <= 256 else np.uint16


def softmax(logits: np.ndarray) -> np.ndarray:
    """Softmax over axis 0 of (K, H, W) logits."""
    e = np.exp(logits - logits.max(axis=0, keepdims=True))
    return e / e.sum(axis=0, keepdims=True)


@dataclass
class Segmenter:
    """A trained U-Net with what prediction needs: normalisation, class names and colours, geometry.

    ``forward`` is the backend: :class:`TorchForward` for checkpoints, or the ONNX Runtime one for
    exported models; everything else (tiling, outputs) is the same for all of them.

    Example:
        >>> seg = unetkit.load("runs/exp1/best.pt")
        >>> mask = seg.predict_mask(image)  # (H, W) class indices for an (H, W, C) image
    """

    forward: "TorchForward"
    meta: dict
    tile: int = DEFAULT_TILE
    batch_size: int = 4
    progress: bool = False
    classes: list[str] = field(init=False)

    def __post_init__(self) -> None:
        self.classes = list(self.meta["classes"])

    @property
    def config(self) -> ModelConfig:
        return self.forward.config

    @property
    def model(self) -> UNet | None:
        """The PyTorch module (None for other backends)."""
        return getattr(self.forward, "model", None)

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str = "auto", precision: str = "fp32", **kwargs) -> "Segmenter":
        ckpt = load_checkpoint(path)
        meta = ckpt["meta"]
        model = UNet(ModelConfig.from_dict(meta["model"]))
        model.load_state_dict(ckpt["model"])
        dev = resolve_device(device)
        # NHWC convolutions are 25-60% faster on CPU in fp32 (docs/benchmarks.md, cpu-inference).
        forward = TorchForward(model.to(dev), dev, resolve_precision(precision, dev), channels_last=dev.type == "cpu")
        return cls(forward, meta, **kwargs)

    @property
    def colors(self) -> list[tuple[int, int, int]]:
        return [tuple(c) for c in self.meta["colors"]]

    def check_image(self, image: np.ndarray, name: str = "image") -> None:
        from unetkit.errors import UnetkitError

        want = self.config.in_channels
        if image.ndim != 3 or image.shape[2] != want:
            raise UnetkitError(
                f"{name} has {image.shape[2] if image.ndim == 3 else 1} channel(s); this model was trained on {want}; "
                "convert the image to the training data's channels"
            )

    def logits(self, image: np.ndarray) -> np.ndarray:
        """(H, W, C) image in its native dtype -> (K, H, W) float32 logits."""
        self.check_image(image)
        norm = self.meta["normalization"]
        # Normalised a batch of tiles at a time, so no float copy of the whole image exists.
        return tiled_logits(self.forward, image.transpose(2, 0, 1), self.tile, self.batch_size, progress=self.progress,
                            transform=lambda x: standardize(x, norm["mean"], norm["std"], axis=1))

    def predict_proba(self, image: np.ndarray) -> np.ndarray:
        """(H, W, C) image -> (K, H, W) float32 class probabilities."""
        return softmax(self.logits(image))

    def predict_mask(self, image: np.ndarray) -> np.ndarray:
        """(H, W, C) image -> (H, W) class indices (uint8, or uint16 beyond 255 classes)."""
        return self.logits(image).argmax(axis=0).astype(mask_dtype(len(self.classes)))


def as_segmenter(model: "str | Path | Segmenter", device: str = "auto", backend: str = "torch", int8: bool = False,
                 calibration: "str | Path | None" = None, **kwargs) -> Segmenter:
    """``model`` itself if it is already a :class:`Segmenter`, else the file at that path loaded as one:
    an exported ``.onnx`` model with ONNX Runtime, anything else as a checkpoint. A checkpoint with
    ``backend="onnxruntime"`` or ``int8`` runs through ONNX Runtime (see :mod:`unetkit.inference.quantize`)."""
    if isinstance(model, Segmenter):
        return model
    if backend != "torch" or int8:
        from unetkit.inference.quantize import load_with_backend

        backend = "onnxruntime" if backend == "torch" else backend  # int8 runs on ONNX Runtime
        return load_with_backend(model, backend=backend, int8=int8, calibration=calibration, device=device, **kwargs)
    if Path(model).suffix.lower() == ".onnx":
        from unetkit.inference.onnx_backend import load_onnx

        return load_onnx(model, device=device, **kwargs)
    return Segmenter.from_checkpoint(model, device=device, **kwargs)
