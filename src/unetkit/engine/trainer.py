"""The training loop: patches in, checkpoints, metrics.csv and curves out, within an epoch or time budget."""

from __future__ import annotations

import csv
import io
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

import unetkit
from unetkit.config import TrainConfig, dump_config
from unetkit.data.dataset import IGNORE, DataSpec, load_spec, read_pair, split_pairs
from unetkit.data.io import atomic_write
from unetkit.data.sampler import PatchSampler
from unetkit.engine.checkpoint import save_checkpoint
from unetkit.errors import UnetkitError
from unetkit.inference.predictor import normalize, tiled_logits
from unetkit.losses import segmentation_loss
from unetkit.metrics import confusion_matrix, scores
from unetkit.models.unet import ModelConfig, UNet, context, input_size_for_output
from unetkit.runtime import autocast, resolve_device, set_threads

CSV_FIELDS = ("epoch", "step", "time_s", "lr", "train_loss", "val_dice", "val_iou", "val_pixel_accuracy")


@dataclass
class TrainResult:
    """What a finished run left behind."""

    run_dir: Path
    best_dice: float | None
    epochs: int
    steps: int
    seconds: float
    history: list[dict]


def load_split(cfg: TrainConfig) -> tuple[DataSpec, list, list]:
    """The training spec and the (train, val) pairs, from --val, the yaml's splits, or --val-fraction."""
    if not cfg.data:
        raise UnetkitError("no training data: pass --data DATA (a folder with images/ and masks/, or a dataset.yaml)")
    spec = _spec(cfg.data, "train", cfg.mask_mode)
    if cfg.val:
        val_spec = _spec(cfg.val, "val", cfg.mask_mode)
        return spec, spec.pairs, val_spec.pairs
    if "val" in spec.splits:
        return spec, spec.pairs, _spec(cfg.data, "val", cfg.mask_mode).pairs
    if len(spec.pairs) < 2:
        raise UnetkitError(f"{cfg.data}: {len(spec.pairs)} labelled pair(s); validation needs at least 2 (or pass --val DATA)")
    train, val = split_pairs(spec.pairs, cfg.val_fraction, cfg.seed)
    return spec, train, val


def _spec(path: str, split: str, mask_mode: str) -> DataSpec:
    """load_spec with the named split when the data set defines splits, else the whole set."""
    spec = load_spec(path, mask_mode=mask_mode)
    if split in spec.splits:
        spec = load_spec(path, split=split, mask_mode=mask_mode)
    return spec


def load_arrays(pairs: list, spec: DataSpec, progress: bool) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Read every pair into memory: (H, W, C) native images and (H, W) int64 masks."""
    images, masks = [], []
    channels = None
    for pair in tqdm(pairs, desc="reading", unit="img", disable=not progress or len(pairs) < 20, leave=False):
        image, mask = read_pair(pair, spec)
        if channels is None:
            channels = image.shape[2]
        elif image.shape[2] != channels:
            raise UnetkitError(
                f"{pair.image}: {image.shape[2]} channel(s) but {pairs[0].image.name} has {channels}; "
                "convert all images to the same channels"
            )
        images.append(image)
        masks.append(mask)
    return images, masks


def channel_stats(images: list[np.ndarray]) -> dict:
    """Per-channel mean and std over all pixels of the training images, in their native units."""
    c = images[0].shape[2]
    total = np.zeros(c)
    sq = np.zeros(c)
    n = 0
    for img in images:
        x = img.reshape(-1, c).astype(np.float64)
        total += x.sum(0)
        sq += (x * x).sum(0)
        n += x.shape[0]
    mean = total / n
    std = np.sqrt(np.maximum(sq / n - mean * mean, 0.0))
    std = np.where(std > 0, std, 1.0)  # a constant channel: keep it finite
    return {"mean": mean.tolist(), "std": std.tolist()}


def make_optimizer(cfg: TrainConfig, params) -> torch.optim.Optimizer:
    lr = cfg.resolved_lr
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(params, lr=lr, weight_decay=cfg.weight_decay)


def lr_factor(cfg: TrainConfig, progress: float) -> float:
    """Learning-rate multiplier at ``progress`` in [0, 1] of the run (epochs or time)."""
    progress = min(max(progress, 0.0), 1.0)
    if cfg.schedule == "poly":
        return (1.0 - progress) ** 0.9
    if cfg.schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    return 1.0


def validate(model: UNet, images, masks, norm: dict, cfg: TrainConfig, device, classes: list[str]) -> dict:
    """Tiled whole-image prediction on the validation set, scored from the summed confusion matrix."""
    model.eval()
    cm = np.zeros((len(classes), len(classes)), np.int64)
    for image, mask in zip(images, masks):
        x = normalize(image, norm["mean"], norm["std"])
        pred = tiled_logits(model, x, cfg.tile, cfg.batch_size, device, cfg.precision).argmax(0)
        cm += confusion_matrix(pred, mask, len(classes), IGNORE)
    model.train()
    return scores(cm, classes)


def write_csv(path: Path, rows: list[dict]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_FIELDS)
    writer.writeheader()
    writer.writerows(rows)
    with atomic_write(path) as tmp:
        Path(tmp).write_text(buf.getvalue())


def plot_curves(path: Path, rows: list[dict]) -> None:
    """Training loss and validation Dice per epoch, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [r["epoch"] for r in rows]
    fig, ax1 = plt.subplots(figsize=(6, 3.5), dpi=100)
    ax1.plot(epochs, [r["train_loss"] for r in rows], color="tab:blue", label="train loss")
    ax1.set_xlabel("epoch")
    ax1.set_ylabel("train loss", color="tab:blue")
    ax2 = ax1.twinx()
    val = [(r["epoch"], r["val_dice"]) for r in rows if r["val_dice"] not in ("", None)]
    if val:
        ax2.plot(*zip(*val), color="tab:orange", marker="o", markersize=3, label="val Dice")
    ax2.set_ylabel("validation mean Dice", color="tab:orange")
    ax2.set_ylim(0, 1)
    fig.tight_layout()
    with atomic_write(path) as tmp:
        fig.savefig(tmp)
    plt.close(fig)


def train(cfg: TrainConfig) -> TrainResult:
    """Train a U-Net as configured; see ``unetkit.train`` for the public entry point."""
    started = time.monotonic()
    deadline = started + cfg.time * 60 if cfg.time else None
    set_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    device = resolve_device(cfg.device)
    run_dir = Path(cfg.out)

    spec, train_pairs, val_pairs = load_split(cfg)
    train_images, train_masks = load_arrays(train_pairs, spec, cfg.progress)
    val_images, val_masks = load_arrays(val_pairs, spec, cfg.progress)
    if val_images and val_images[0].shape[2] != train_images[0].shape[2]:
        raise UnetkitError(f"{val_pairs[0].image}: validation images have a different number of channels than the training images")
    classes = list(spec.classes)
    norm = channel_stats(train_images)

    model_cfg = ModelConfig(
        in_channels=train_images[0].shape[2], num_classes=len(classes), base_channels=cfg.base_channels,
        depth=cfg.depth, padding=cfg.padding, norm=cfg.norm, dropout=cfg.dropout, up_mode=cfg.up_mode,
    )
    model = UNet(model_cfg).to(device)
    ctx = context(cfg.depth, cfg.padding)
    patch = input_size_for_output(cfg.patch_size, cfg.depth, cfg.padding) - ctx  # a valid output size >= patch_size
    sampler = PatchSampler(
        [normalize(im, norm["mean"], norm["std"]) for im in train_images], train_masks, patch, ctx, cfg.augment, cfg.seed
    )
    if cfg.class_weights is not None and len(cfg.class_weights) != len(classes):
        raise UnetkitError(f"class_weights has {len(cfg.class_weights)} values but the data has {len(classes)} classes ({', '.join(classes)})")
    weights = torch.tensor(cfg.class_weights, dtype=torch.float32, device=device) if cfg.class_weights else None
    optimizer = make_optimizer(cfg, model.parameters())
    base_lr = cfg.resolved_lr
    plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="max", patience=5, factor=0.5) if cfg.schedule == "plateau" else None

    pixels = sum(m.size for m in train_masks)
    steps_per_epoch = cfg.steps_per_epoch or max(10, math.ceil(pixels / (patch * patch * cfg.batch_size)))
    max_epochs = cfg.resolved_epochs
    run_dir.mkdir(parents=True, exist_ok=True)
    dump_config(cfg, run_dir / "config.yaml")
    meta = {
        "unetkit_version": unetkit.__version__,
        "model": model_cfg.to_dict(),
        "normalization": norm,
        "classes": classes,
        "colors": [list(c) for c in spec.colors],
        "mask_mode": spec.mask_mode,
        "train_config": cfg.to_dict(),
        "patch": patch,
    }

    history: list[dict] = []
    best = -1.0
    step = 0
    epoch = 0
    val_seconds = 0.0
    total_steps = max_epochs * steps_per_epoch if max_epochs else None
    bar = tqdm(total=total_steps, desc="train", unit="step", disable=not cfg.progress, dynamic_ncols=True)
    model.train()
    stop = False
    while not stop and (max_epochs is None or epoch < max_epochs):
        epoch += 1
        losses = []
        for _ in range(steps_per_epoch):
            if deadline is not None:
                step_time = (time.monotonic() - started - val_seconds * (epoch - 1)) / max(step, 1) if step else 0.0
                if time.monotonic() + step_time + val_seconds * 1.2 > deadline:
                    stop = True
                    break
            if max_epochs is not None:
                progress = step / (max_epochs * steps_per_epoch)
            else:
                progress = (time.monotonic() - started) / (cfg.time * 60)
            if plateau is None:
                for group in optimizer.param_groups:
                    group["lr"] = base_lr * lr_factor(cfg, progress)
            x, y = sampler.batch(cfg.batch_size)
            x, y = torch.from_numpy(x).to(device), torch.from_numpy(y).to(device)
            with autocast(device, cfg.precision):
                logits = model(x)  # (B, K, patch, patch)
            loss = segmentation_loss(logits, y, cfg.loss, weights, IGNORE)
            if not torch.isfinite(loss):
                raise UnetkitError(
                    f"loss became {loss.item()} at epoch {epoch}, step {step + 1}; lower --lr (now {optimizer.param_groups[0]['lr']:g}) "
                    f"or check the data; the last good checkpoint is {run_dir / 'last.pt'}"
                )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
            losses.append(loss.item())
            bar.update(1)
            bar.set_postfix(epoch=epoch, loss=f"{np.mean(losses[-20:]):.4f}", val_dice=f"{best:.4f}" if best >= 0 else "-", refresh=False)
            if deadline is not None:
                bar.set_description(f"train ({max(0.0, deadline - time.monotonic()) / 60:.1f} min left)")
        if not losses:
            epoch -= 1
            break
        row = {"epoch": epoch, "step": step, "lr": optimizer.param_groups[0]["lr"], "train_loss": float(np.mean(losses)),
               "val_dice": "", "val_iou": "", "val_pixel_accuracy": ""}
        last_epoch = stop or (max_epochs is not None and epoch == max_epochs)
        if val_images and (epoch % cfg.val_every == 0 or last_epoch):
            t0 = time.monotonic()
            s = validate(model, val_images, val_masks, norm, cfg, device, classes)
            val_seconds = time.monotonic() - t0
            row.update(val_dice=s["dice"]["mean"], val_iou=s["iou"]["mean"], val_pixel_accuracy=s["pixel_accuracy"]["overall"])
            if plateau is not None:
                plateau.step(s["dice"]["mean"] or 0.0)
        row["time_s"] = round(time.monotonic() - started, 2)
        history.append(row)
        meta_now = {**meta, "epoch": epoch, "step": step, "scores": row}
        state = model.state_dict()
        save_checkpoint(run_dir / "last.pt", state, meta_now, optimizer=optimizer.state_dict())
        dice = row["val_dice"]
        if not val_images or (dice not in ("", None) and dice > best):
            best = dice if val_images else best
            save_checkpoint(run_dir / "best.pt", state, meta_now)
        write_csv(run_dir / "metrics.csv", history)
        plot_curves(run_dir / "curves.png", history)
        bar.set_postfix(epoch=epoch, loss=f"{row['train_loss']:.4f}", val_dice=f"{best:.4f}" if best >= 0 else "-")
    bar.close()
    if not history:
        raise UnetkitError(f"the time budget ({cfg.time} min) ended before one training step; give more --time")
    return TrainResult(run_dir, best if best >= 0 else None, epoch, step, time.monotonic() - started, history)
