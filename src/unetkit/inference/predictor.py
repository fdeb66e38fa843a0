"""From a checkpoint to masks: normalisation, overlap-tile inference, and file outputs."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from unetkit.engine.checkpoint import load_checkpoint
from unetkit.inference.tiling import blend_window, mirror_pad, plan_axis
from unetkit.models.unet import ModelConfig, UNet
from unetkit.runtime import autocast, resolve_device

DEFAULT_TILE = 512


def normalize(image: np.ndarray, mean: list[float], std: list[float]) -> np.ndarray:
    """(H, W, C) image of any dtype -> (C, H, W) float32, standardised per channel with the training stats."""
    if image.ndim != 3 or image.shape[2] != len(mean):
        raise ValueError(f"image has shape {image.shape}; the model expects (H, W, {len(mean)})")
    x = image.astype(np.float32).transpose(2, 0, 1)  # (C, H, W)
    m = np.asarray(mean, np.float32)[:, None, None]
    s = np.asarray(std, np.float32)[:, None, None]
    return (x - m) / s


@torch.inference_mode()
def tiled_logits(
    model: UNet,
    image: np.ndarray,
    tile: int = DEFAULT_TILE,
    batch_size: int = 4,
    device: torch.device | None = None,
    precision: str = "fp32",
    progress: bool = False,
    channels_last: bool = False,
) -> np.ndarray:
    """Overlap-tile inference of a whole (C, H, W) float32 image; returns (K, H, W) float32 logits.

    ``channels_last`` feeds tiles in NHWC layout, for a model converted with
    ``model.to(memory_format=torch.channels_last)`` (faster convolutions on CPUs).

    In valid mode this equals ``model(mirror_pad(image, ...))`` over the whole padded image, cropped
    to (H, W): tiles start on multiples of the network's stride and their outputs abut. In same mode
    tiles overlap and are blended with a raised-cosine window.
    """
    cfg = model.config
    device = device or next(model.parameters()).device
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
    bar = tqdm(total=len(origins), desc="tiles", unit="tile", disable=not progress, leave=False)
    for i in range(0, len(origins), batch_size):
        batch = origins[i : i + batch_size]
        x = np.stack([padded[:, r : r + rows.tile_in, c : c + cols.tile_in] for r, c in batch])  # (B, C, th, tw)
        with autocast(device, precision):
            x = torch.from_numpy(x).to(device)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            y = model(x)  # (B, K, th_out, tw_out)
        y = y.float().cpu().numpy()
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


def softmax(logits: np.ndarray) -> np.ndarray:
    """Softmax over axis 0 of (K, H, W) logits."""
    e = np.exp(logits - logits.max(axis=0, keepdims=True))
    return e / e.sum(axis=0, keepdims=True)


@dataclass
class Segmenter:
    """A trained U-Net with what prediction needs: normalisation, class names and colours, geometry.

    Example:
        >>> seg = unetkit.load("runs/exp1/best.pt")
        >>> mask = seg.predict_mask(image)  # (H, W) class indices for an (H, W, C) image
    """

    model: UNet
    meta: dict
    device: torch.device
    tile: int = DEFAULT_TILE
    batch_size: int = 4
    precision: str = "fp32"
    progress: bool = False
    classes: list[str] = field(init=False)

    def __post_init__(self) -> None:
        self.classes = list(self.meta["classes"])
        self.model.eval()
        # NHWC convolutions are 25-60% faster on CPU in fp32 (docs/benchmarks.md, cpu-inference).
        self.channels_last = self.device.type == "cpu"
        if self.channels_last:
            self.model.to(memory_format=torch.channels_last)

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str = "auto", **kwargs) -> "Segmenter":
        ckpt = load_checkpoint(path)
        meta = ckpt["meta"]
        model = UNet(ModelConfig.from_dict(meta["model"]))
        model.load_state_dict(ckpt["model"])
        dev = resolve_device(device)
        return cls(model.to(dev), meta, dev, **kwargs)

    @property
    def colors(self) -> list[tuple[int, int, int]]:
        return [tuple(c) for c in self.meta["colors"]]

    def check_image(self, image: np.ndarray, name: str = "image") -> None:
        from unetkit.errors import UnetkitError

        want = self.model.config.in_channels
        if image.ndim != 3 or image.shape[2] != want:
            raise UnetkitError(
                f"{name} has {image.shape[2] if image.ndim == 3 else 1} channel(s); this model was trained on {want}; "
                "convert the image to the training data's channels"
            )

    def logits(self, image: np.ndarray) -> np.ndarray:
        """(H, W, C) image in its native dtype -> (K, H, W) float32 logits."""
        self.check_image(image)
        norm = self.meta["normalization"]
        x = normalize(image, norm["mean"], norm["std"])
        return tiled_logits(self.model, x, self.tile, self.batch_size, self.device, self.precision, self.progress, self.channels_last)

    def predict_proba(self, image: np.ndarray) -> np.ndarray:
        """(H, W, C) image -> (K, H, W) float32 class probabilities."""
        return softmax(self.logits(image))

    def predict_mask(self, image: np.ndarray) -> np.ndarray:
        """(H, W, C) image -> (H, W) class indices (uint8, or uint16 beyond 255 classes)."""
        dtype = np.uint8 if len(self.classes) <= 256 else np.uint16
        return self.logits(image).argmax(axis=0).astype(dtype)


def as_segmenter(model: "str | Path | Segmenter", device: str = "auto", **kwargs) -> Segmenter:
    """``model`` itself if it is already a :class:`Segmenter`, else the checkpoint at that path loaded as one."""
    return model if isinstance(model, Segmenter) else Segmenter.from_checkpoint(model, device=device, **kwargs)
