"""The training loop: patches in, checkpoints, metrics.csv and curves out, within an epoch or time budget."""

from __future__ import annotations

import csv
import io
import json
import math
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

import unetkit
from unetkit.config import TrainConfig, dump_config, make_config
from unetkit.data.dataset import IGNORE, DataSpec, load_spec, read_pair, split_pairs
from unetkit.data.io import atomic_write
from unetkit.data.augment import AUGMENT_OPTIONS, resolve_augment
from unetkit.data.sampler import PatchSampler
from unetkit.data.weights import dataset_weight_maps
from unetkit.engine import distributed
from unetkit.engine.callbacks import TrainView, call
from unetkit.engine.checkpoint import load_checkpoint, save_checkpoint
from unetkit.errors import UnetkitError
from unetkit.inference.predictor import normalize, tiled_logits
from unetkit.losses import segmentation_loss
from unetkit.metrics import confusion_matrix, scores
from unetkit.models.config import ModelConfig, context, input_size_for_output
from unetkit.models.unet import UNet
from unetkit.runtime import autocast, set_threads, resolve_precision

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


def make_optimizer(cfg: TrainConfig, params, lr: float | None = None) -> torch.optim.Optimizer:
    """The configured optimizer at ``lr`` (default: the configured learning rate)."""
    lr = cfg.resolved_lr if lr is None else lr
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


def validate(model: UNet, images, masks, norm: dict, cfg: TrainConfig, device, classes: list[str], reduce=None) -> dict:
    """Tiled whole-image prediction on the validation set, scored from the summed confusion matrix.

    ``reduce`` sums the confusion matrix over processes that each validated a share of the images.
    """
    model.eval()
    cm = np.zeros((len(classes), len(classes)), np.int64)
    for image, mask in zip(images, masks):
        x = normalize(image, norm["mean"], norm["std"])
        pred = tiled_logits(model, x, cfg.tile, cfg.batch_size, device, cfg.precision).argmax(0)  # autocast resolves auto
        cm += confusion_matrix(pred, mask, len(classes), IGNORE)
    model.train()
    return scores(cm if reduce is None else reduce(cm), classes)


def write_csv(path: Path, rows: list[dict]) -> None:
    buf = io.StringIO()
    extra = [k for k in dict.fromkeys(k for row in rows for k in row) if k not in CSV_FIELDS]  # per-class Dice
    writer = csv.DictWriter(buf, fieldnames=[*CSV_FIELDS, *extra], restval="")
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


class StopRequest:
    """Turns the first Ctrl-C (or SIGTERM) into a request to stop at the next step boundary.

    Stopping mid-step could leave the weights half-updated; the loop checks ``requested`` between steps,
    saves a checkpoint and exits. A second Ctrl-C interrupts at once.
    """

    def __init__(self) -> None:
        self.requested = False
        self._previous: dict = {}

    def _handle(self, signum, frame) -> None:
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True

    def __enter__(self) -> "StopRequest":
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def read_status(run_dir: Path) -> dict:
    path = run_dir / "status.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def write_status(run_dir: Path, **status) -> None:
    with atomic_write(run_dir / "status.json") as tmp:
        Path(tmp).write_text(json.dumps(status, indent=2))


def resume_config(run_dir: str | Path, force: bool = False, **overrides) -> tuple[TrainConfig, dict]:
    """The configuration and full training state of an interrupted run, for ``train --resume``.

    ``overrides`` may change the budget (``epochs``, ``time``), the learning rate and runtime options.
    A run that stopped on a non-finite loss is refused unless the learning rate changes or ``force``.
    """
    run_dir = Path(run_dir)
    last = run_dir / "last.pt"
    if not last.is_file():
        raise UnetkitError(f"{run_dir}: no last.pt to resume from; start a new run with unetkit train --data ...")
    ckpt = load_checkpoint(last)
    if "progress" not in ckpt:
        raise UnetkitError(f"{last}: holds no training state (was it written by unetkit train?); start a new run")
    values = dict(ckpt["meta"]["train_config"])
    values.update({k: v for k, v in overrides.items() if v is not None})
    values["out"] = str(run_dir)
    cfg = make_config(**values)
    status = read_status(run_dir)
    if status.get("status") == "nan" and not force and cfg.resolved_lr == status.get("lr_setting"):
        raise UnetkitError(
            f"{run_dir} stopped on a non-finite loss at epoch {status.get('epoch')}, step {status.get('step')}; "
            "resume with a lower --lr, or pass --force to retry as it was"
        )
    return cfg, ckpt


def train(cfg: TrainConfig, resume: dict | None = None, callbacks=()) -> TrainResult:
    """Train a U-Net as configured; see ``unetkit.train`` for the public entry point.

    Args:
        cfg: The resolved configuration.
        resume: A checkpoint from :func:`resume_config` to continue from, or None for a new run.
        callbacks: Objects with hooks of :class:`unetkit.engine.callbacks.Callback`.
    """
    started = time.monotonic()
    set_threads(cfg.threads)
    if cfg.deterministic:
        torch.use_deterministic_algorithms(True)
    torch.manual_seed(cfg.seed)
    world, device = distributed.setup(cfg.device, cfg.threads)  # one process unless torchrun set WORLD_SIZE > 1
    main = world.is_main  # the process that writes the run folder and calls the callbacks
    callbacks = callbacks if main else ()
    precision = world.broadcast(resolve_precision(cfg.precision, device))  # "auto" is measured: rank 0's choice for all
    run_dir = Path(cfg.out)

    spec, train_pairs, val_pairs = load_split(cfg)
    train_images, train_masks = load_arrays(train_pairs, spec, cfg.progress and main)
    val_images, val_masks = load_arrays(val_pairs, spec, cfg.progress and main)
    if val_images and val_images[0].shape[2] != train_images[0].shape[2]:
        raise UnetkitError(
            f"{val_pairs[0].image}: {val_images[0].shape[2]} channel(s) but training image {train_pairs[0].image.name} has "
            f"{train_images[0].shape[2]}; convert all images to the same channels"
        )
    classes, colors = list(spec.classes), [list(c) for c in spec.colors]
    if cfg.target == "instances":  # background / interior / boundary between touching objects, from the instance labels
        from unetkit.instances import INSTANCE_CLASSES, INSTANCE_COLORS, instance_targets, instance_weight_maps

        train_instances, train_masks = instance_targets(train_pairs, spec, cfg.boundary_width, cfg.progress)
        val_masks = instance_targets(val_pairs, spec, cfg.boundary_width)[1]
        classes, colors = list(INSTANCE_CLASSES), [list(c) for c in INSTANCE_COLORS]
    norm = channel_stats(train_images) if resume is None else resume["meta"]["normalization"]

    model_cfg = ModelConfig(
        in_channels=train_images[0].shape[2], num_classes=len(classes), base_channels=cfg.base_channels,
        depth=cfg.depth, padding=cfg.padding, norm=cfg.norm, dropout=cfg.dropout, up_mode=cfg.up_mode,
    )
    model = UNet(model_cfg).to(device)
    if cfg.sync_bn:
        model = distributed.sync_batchnorm(model, world, device)
    # oneDNN's NHWC weight-gradient reductions were seen to vary in the last bit between runs; NCHW is exact.
    channels_last = cfg.channels_last and device.type == "cpu" and not cfg.deterministic
    if channels_last:
        model.to(memory_format=torch.channels_last)
    net = distributed.wrap(model, world, device)  # DDP under several processes: gradients averaged over ranks
    forward = torch.compile(net) if cfg.compile else net  # parameters stay shared with `model`
    ctx = context(cfg.depth, cfg.padding)
    patch = input_size_for_output(cfg.patch_size, cfg.depth, cfg.padding) - ctx  # a valid output size >= patch_size
    if cfg.class_weights is not None and len(cfg.class_weights) != len(classes):
        raise UnetkitError(f"class_weights has {len(cfg.class_weights)} values but the data has {len(classes)} classes ({', '.join(classes)})")
    weights = torch.tensor(cfg.class_weights, dtype=torch.float32, device=device) if cfg.class_weights else None
    weight_maps = None
    if cfg.loss.startswith("weighted-ce") and cfg.target == "instances":  # the border term also covers the boundary band
        weight_maps = instance_weight_maps(train_instances, train_masks, cfg.weight_w0, cfg.weight_sigma, cfg.class_weights)
    elif cfg.loss.startswith("weighted-ce"):  # the paper's border weight map, w_c from class_weights or balanced
        weight_maps = dataset_weight_maps(train_pairs, spec, train_masks, cfg.weight_w0, cfg.weight_sigma, cfg.class_weights)
    augmentation = resolve_augment(cfg.augment, **{k: getattr(cfg, k) for k in AUGMENT_OPTIONS})
    sampler = PatchSampler(
        [normalize(im, norm["mean"], norm["std"]) for im in train_images], train_masks, patch, ctx, augmentation, cfg.seed,
        weights=weight_maps, foreground_fraction=cfg.foreground_fraction,
    )
    base_lr = cfg.resolved_lr * distributed.lr_scale(cfg.lr_scaling, world.size)
    optimizer = make_optimizer(cfg, model.parameters(), base_lr)
    plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="max", patience=5, factor=0.5) if cfg.schedule == "plateau" else None
    scaler = torch.amp.GradScaler(device.type) if precision == "fp16" else None

    pixels = sum(m.size for m in train_masks)
    global_batch = cfg.batch_size * world.size
    # Global steps: an epoch covers the training pixels once whatever the number of processes.
    steps_per_epoch = cfg.steps_per_epoch or max(10, math.ceil(pixels / (patch * patch * global_batch)))
    max_epochs = cfg.resolved_epochs
    if main:
        run_dir.mkdir(parents=True, exist_ok=True)
        for stale in run_dir.glob(".*.tmp-*"):  # left by a process killed mid-write; the real files are intact
            stale.unlink()
        notes = {"processes": world.size, "global_batch": global_batch, "lr": base_lr, "steps_per_epoch": steps_per_epoch}
        dump_config(cfg, run_dir / "config.yaml", notes if world.size > 1 else None)
    meta = {
        "unetkit_version": unetkit.__version__,
        "model": model_cfg.to_dict(),
        "normalization": norm,
        "classes": classes,
        "colors": colors,
        "mask_mode": spec.mask_mode,
        "target": cfg.target,  # "instances": channels background, interior, boundary (unetkit.instances)
        "boundary_width": cfg.boundary_width,
        "train_config": cfg.to_dict(),
        "patch": patch,
        **distributed.run_meta(),  # under torchrun: the job that wrote it, so its restarts resume from it
    }

    # Progress: everything needed to continue exactly where a checkpoint was taken.
    progress = {"epoch": 0, "step": 0, "epoch_step": 0, "epoch_losses": [], "best": -1.0, "history": [], "elapsed": 0.0, "val_seconds": 0.0}
    if resume is not None:
        model.load_state_dict(resume["model"])
        optimizer.load_state_dict(resume["optimizer"])
        if plateau is not None and resume.get("plateau"):
            plateau.load_state_dict(resume["plateau"])
        if scaler is not None and resume.get("scaler"):
            scaler.load_state_dict(resume["scaler"])
        torch.set_rng_state(resume["rng"]["torch"])
        if device.type == "cuda" and resume["rng"].get("cuda"):
            torch.cuda.set_rng_state_all(resume["rng"]["cuda"])
        progress = json.loads(resume["progress"])
        if plateau is not None and progress.get("lr_scale", 1.0) != base_lr / cfg.resolved_lr:  # a different process count
            for group in optimizer.param_groups:
                group["lr"] *= base_lr / cfg.resolved_lr / progress.get("lr_scale", 1.0)
    distributed.continue_progress(progress, steps_per_epoch, world)
    progress["lr_scale"] = base_lr / cfg.resolved_lr
    elapsed_before = progress["elapsed"]
    first_step = progress["step"]
    # Rank r's batch at global step s is the sampler's batch number progress["batches"] + (s - first_step) * W + r.
    batches = distributed.batches(sampler, cfg.batch_size, progress["batches"], cfg.workers, world)
    deadline = started + cfg.time * 60 - elapsed_before if cfg.time else None

    def save_last() -> None:
        """The full training state; written last, so it is the commit point of an epoch."""
        if not main:
            return
        progress["elapsed"] = elapsed_before + time.monotonic() - started
        rng = {"torch": torch.get_rng_state()}
        if device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state_all()
        save_checkpoint(
            run_dir / "last.pt", model.state_dict(), {**meta, "epoch": progress["epoch"], "step": progress["step"]},
            optimizer=optimizer.state_dict(), plateau=plateau.state_dict() if plateau else None,
            scaler=scaler.state_dict() if scaler else None, rng=rng, progress=json.dumps(progress),
        )

    history = progress["history"]
    total_steps = max_epochs * steps_per_epoch if max_epochs else None
    bar = tqdm(total=total_steps, initial=progress["step"], desc="train", unit="step", disable=not cfg.progress or not main, dynamic_ncols=True)
    if main:
        write_status(run_dir, status="running")
    view = TrainView(cfg, run_dir, model, meta, val_images, val_masks, device, precision)
    call(callbacks, "on_train_begin", view)
    last_save = time.monotonic()
    step_seconds = 0.0
    stopped_by = None
    model.train()
    with StopRequest() as stop_request:  # under several processes every rank stops where any rank asked to
        while stopped_by is None and (max_epochs is None or progress["epoch"] < max_epochs):
            epoch = progress["epoch"] + 1
            losses = progress["epoch_losses"]
            while progress["epoch_step"] < steps_per_epoch:
                step = progress["step"]
                step_began = time.monotonic()
                time_up = False
                if deadline is not None:
                    # Mean duration of this process's steps so far (set-up, validation and saving excluded).
                    step_time = step_seconds / max(step - first_step, 1)
                    time_up = step_began + step_time + progress["val_seconds"] * 1.2 > deadline
                time_up, interrupted = world.agree(time_up, stop_request.requested)
                if time_up:
                    stopped_by = "time"
                    break
                if interrupted:
                    stopped_by = "interrupt"
                    break
                if max_epochs is not None:
                    fraction = step / (max_epochs * steps_per_epoch)
                else:
                    fraction = (elapsed_before + time.monotonic() - started) / (cfg.time * 60)
                if plateau is None:
                    for group in optimizer.param_groups:
                        group["lr"] = base_lr * lr_factor(cfg, fraction)
                x, y, weight_map = next(batches)  # (B, C, in, in), (B, patch, patch), weights or None
                world.seed_step(cfg.seed, progress["batches"])  # dropout of this rank's batch
                x, y = x.to(device), y.to(device)
                if channels_last:
                    x = x.contiguous(memory_format=torch.channels_last)
                weight_map = weight_map.to(device) if weight_map is not None else None
                with autocast(device, precision):
                    logits = forward(x)  # (B, K, patch, patch)
                loss = segmentation_loss(logits, y, cfg.loss, weights, IGNORE, weight_map)
                loss_value = world.mean(loss)  # over the ranks: non-finite on all of them if on any
                if not math.isfinite(loss_value):
                    bar.close()
                    if main:
                        write_status(run_dir, status="nan", epoch=epoch, step=step + 1, lr_setting=cfg.resolved_lr)
                    raise UnetkitError(
                        f"loss became {loss_value} at epoch {epoch}, step {step + 1}: the learning rate "
                        f"(--lr {cfg.resolved_lr:g}) is likely too high, or the data holds NaN/inf values; "
                        f"the last good checkpoint is {run_dir / 'last.pt'}"
                    )
                optimizer.zero_grad(set_to_none=True)
                if scaler is not None:
                    scaler.scale(loss).backward()
                    scaler.step(optimizer)
                    scaler.update()
                else:
                    loss.backward()
                    optimizer.step()
                progress["step"] += 1
                progress["epoch_step"] += 1
                progress["batches"] += world.size
                step_seconds += time.monotonic() - step_began
                losses.append(loss_value)
                bar.update(1)
                best = progress["best"]
                bar.set_postfix(epoch=epoch, loss=f"{np.mean(losses[-20:]):.4f}", val_dice=f"{best:.4f}" if best >= 0 else "-", refresh=False)
                if deadline is not None:
                    bar.set_description(f"train ({max(0.0, deadline - time.monotonic()) / 60:.1f} min left)")
                if cfg.save_every and time.monotonic() - last_save > cfg.save_every * 60 and progress["epoch_step"] < steps_per_epoch:
                    save_last()
                    last_save = time.monotonic()
            if stopped_by == "interrupt" or not losses:
                break
            row = {"epoch": epoch, "step": progress["step"], "lr": optimizer.param_groups[0]["lr"], "train_loss": float(np.mean(losses)),
                   "val_dice": "", "val_iou": "", "val_pixel_accuracy": ""}
            last_epoch = stopped_by is not None or (max_epochs is not None and epoch == max_epochs)
            if world.size > 1 or any("global_batch" in r for r in history):  # the process count may change on resume
                row["global_batch"] = global_batch
            if val_images and (epoch % cfg.val_every == 0 or last_epoch):
                t0 = time.monotonic()
                # each rank validates every W-th image; the summed confusion matrix gives all ranks the same scores
                s = validate(model, val_images[world.rank :: world.size], val_masks[world.rank :: world.size], norm, cfg, device,
                             classes, world.sum)
                progress["val_seconds"] = time.monotonic() - t0
                row.update(val_dice=s["dice"]["mean"], val_iou=s["iou"]["mean"], val_pixel_accuracy=s["pixel_accuracy"]["overall"])
                row.update({f"val_dice_{name}": value for name, value in s["dice"].items() if name != "mean"})
                if plateau is not None:
                    plateau.step(s["dice"]["mean"] or 0.0)
            row["time_s"] = round(elapsed_before + time.monotonic() - started, 2)
            history.append(row)
            progress.update(epoch=epoch, epoch_step=0, epoch_losses=[])
            dice = row["val_dice"]
            if not val_images or (dice not in ("", None) and dice > progress["best"]):
                progress["best"] = dice if val_images else progress["best"]
                if main:
                    save_checkpoint(run_dir / "best.pt", model.state_dict(), {**meta, "epoch": epoch, "step": progress["step"], "scores": row})
            if main:
                write_csv(run_dir / "metrics.csv", history)
                plot_curves(run_dir / "curves.png", history)
            save_last()
            last_save = time.monotonic()
            bar.set_postfix(epoch=epoch, loss=f"{row['train_loss']:.4f}", val_dice=f"{progress['best']:.4f}" if progress["best"] >= 0 else "-")
            call(callbacks, "on_epoch_end", row, view)
        if stopped_by == "interrupt":
            save_last()
            if main:  # still within StopRequest: torchrun's SIGTERM, once another rank exits, cannot cut it short
                write_status(run_dir, status="interrupted", epoch=progress["epoch"], step=progress["step"])
    bar.close()
    seconds = elapsed_before + time.monotonic() - started
    if stopped_by == "interrupt":
        raise TrainingInterrupted(f"stopped at epoch {progress['epoch'] + 1}, step {progress['step']}; state saved in {run_dir / 'last.pt'}; "
                                  f"continue with: unetkit train --resume {run_dir}{world.resume_hint()}")
    if not history:
        raise UnetkitError(f"the time budget ({cfg.time} min) ended before one training step; give more --time")
    if main:
        write_status(run_dir, status="done", epoch=progress["epoch"], step=progress["step"])
    if cfg.report and val_pairs and main:
        from unetkit.evaluation import validation_report

        validation_report(run_dir, spec, val_pairs, cfg.device, cfg.tile, cfg.batch_size, precision, cfg.progress)
    best = progress["best"]
    result = TrainResult(run_dir, best if best >= 0 else None, progress["epoch"], progress["step"], seconds, history)
    call(callbacks, "on_train_end", result, view)
    return result


class TrainingInterrupted(UnetkitError):
    """Training stopped on Ctrl-C or SIGTERM after saving its state."""
