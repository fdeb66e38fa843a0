"""The training loop: patches in, weights and metrics out, within an epoch or time budget.

:class:`Trainer` reads as the steps of a run. The constructor sets it up (runtime, data, model, patch
sampler, optimizer, and the state of a resumed run); :meth:`Trainer.step` is one optimizer step,
:meth:`Trainer.validate` scores the validation images, and :meth:`Trainer.fit` is the loop with its stop
conditions: the epoch limit or time budget, Ctrl-C/SIGTERM, a non-finite loss. Everything that is not
training hangs on callbacks (:mod:`unetkit.engine.callbacks`): :func:`train` gives rank 0 the run-folder
writer and the progress bar (:mod:`unetkit.engine.writers`) before the caller's callbacks, and the other
ranks none.
"""

from __future__ import annotations

import json
import math
import signal
import threading
import time
from collections.abc import Generator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from unetkit.config import TrainConfig
from unetkit.data.dataset import IGNORE
from unetkit.data.sampler import PatchSampler
from unetkit.engine import distributed
from unetkit.engine.callbacks import TrainView, call
from unetkit.engine.resume import check_resumable
from unetkit.engine.run_folder import RunFolder
from unetkit.engine.training_data import (
    input_norm,
    input_peak,
    load_training_data,
    loss_weight_maps,
)
from unetkit.engine.writers import ProgressBar, RunWriter
from unetkit.errors import TrainingInterrupted, UnetkitError
from unetkit.inference.predictor import normalize, tiled_logits
from unetkit.losses import segmentation_loss
from unetkit.metrics import confusion_matrix, scores
from unetkit.models.config import context, input_size_for_output
from unetkit.models.pretrained import load_encoder_weights
from unetkit.models.sync_bn import sync_batchnorm
from unetkit.models.unet import UNet, build_model
from unetkit.runtime import autocast, resolve_precision, set_threads
from unetkit.version import __version__


@dataclass
class TrainResult:
    """What a finished run left behind."""

    run_dir: Path
    best_dice: float | None
    epochs: int
    steps: int
    seconds: float
    history: list[dict]

    @classmethod
    def from_progress(cls, run_dir: str | Path, progress: dict, seconds: float | None = None) -> TrainResult:
        """The result of a run from its training position (as last.pt saves it); ``seconds`` defaults to its elapsed time."""
        best = progress["best"]
        seconds = progress["elapsed"] if seconds is None else seconds
        return cls(Path(run_dir), best if best >= 0 else None, progress["epoch"], progress["step"], seconds, progress["history"])

    def summary(self) -> str:
        """The line ``unetkit train`` prints at the end."""
        best = "-" if self.best_dice is None else f"{self.best_dice:.4f}"
        return (f"trained {self.epochs} epochs ({self.steps} steps) in {self.seconds / 60:.1f} min; "
                f"best validation mean Dice {best}; checkpoints in {self.run_dir}")  # fmt: skip


def train(cfg: TrainConfig, resume: dict | None = None, callbacks=()) -> TrainResult:
    """Train a U-Net as configured into its run folder; see ``unetkit.train`` for the public entry point.

    Args:
        cfg: The resolved configuration.
        resume: A checkpoint from :func:`~unetkit.engine.resume.resume_config` to continue from, or None for a new run.
        callbacks: Objects with hooks of :class:`unetkit.engine.callbacks.Callback`, called after the run
            folder was written at each hook.
    """
    writer = RunWriter(RunFolder(cfg.out))
    try:
        return Trainer(cfg, resume, [*([ProgressBar()] if cfg.progress else []), writer, *callbacks]).fit()
    except BaseException as error:
        writer.fail(error)  # status.json says "failed" (or "interrupted"), not "running", once the run folder was begun
        raise


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


def validation_scores(model: UNet, images, masks, norm: dict, cfg: TrainConfig, device, classes: list[str], reduce=None) -> dict:
    """Tiled whole-image prediction on validation images, scored from the summed confusion matrix.

    ``reduce`` sums the confusion matrix over processes that each validated a share of the images.
    """
    model.eval()
    cm = np.zeros((len(classes), len(classes)), np.int64)
    for image, mask in zip(images, masks):
        x = normalize(image, norm["mean"], norm["std"])  # (C, H, W)
        pred = tiled_logits(model, x, cfg.tile, cfg.batch_size, device, cfg.precision).argmax(0)  # (H, W); autocast resolves auto
        cm += confusion_matrix(pred, mask, len(classes), IGNORE)
    model.train()
    return scores(cm if reduce is None else reduce(cm), classes)


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

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


class Trainer:
    """One training run: set up by the constructor, run by :meth:`fit`.

    Args:
        cfg: The resolved configuration.
        resume: A checkpoint from :func:`~unetkit.engine.resume.resume_config` to continue from, or None.
        callbacks: Objects with hooks of :class:`~unetkit.engine.callbacks.Callback`, called in order on
            rank 0 only: the other ranks train and take part in the collectives, and write nothing.
    """

    def __init__(self, cfg: TrainConfig, resume: dict | None = None, callbacks=()) -> None:
        self.cfg = cfg
        self.started = time.monotonic()
        self._setup_runtime()
        self.callbacks = list(callbacks) if self.world.is_main else []
        self.data = load_training_data(cfg, cfg.progress and self.world.is_main)
        if resume is not None:  # before the network is built on this data
            check_resumable(resume["meta"], self.data.channels, self.data.classes, cfg)
        self.norm = input_norm(self.data.image_stats(), cfg.encoder_weights is not None) if resume is None else resume["meta"]["normalization"]
        self._setup_model(pretrained=resume is None)
        self._setup_sampler()
        self._setup_optimizer()
        self.meta = {
            "unetkit_version": __version__,
            "model": self.model.config.to_dict(),
            "normalization": self.norm,
            "classes": self.data.classes,
            "colors": self.data.colors,
            "mask_mode": self.data.spec.mask_mode,
            "target": cfg.target,  # "instances": channels background, interior, boundary (unetkit.instances)
            "boundary_width": cfg.boundary_width,
            "train_config": cfg.to_dict(),
            "patch": self.patch,
            **distributed.run_meta(),  # under torchrun: the job that wrote it, so its restarts resume from it
        }
        self._restore(resume)
        self.view = TrainView(
            cfg, Path(cfg.out), self.model, self.meta, self.data.val_images, self.data.val_masks, self.device, self.precision,
            spec=self.data.spec, val_pairs=self.data.val_pairs, world_size=self.world.size, global_batch=self.global_batch,
            base_lr=self.base_lr, steps_per_epoch=self.steps_per_epoch, deadline=self.deadline, progress=self.progress,
            training_state=self.training_state, resumed=resume is not None,
        )  # fmt: skip

    # --- set-up

    def _setup_runtime(self) -> None:
        """Threads, determinism and seed; the processes of the run and the device; the arithmetic."""
        cfg = self.cfg
        set_threads(cfg.threads)
        if cfg.deterministic:
            torch.use_deterministic_algorithms(True)
        torch.manual_seed(cfg.seed)
        self.world, self.device = distributed.setup(cfg.device, cfg.threads)  # one process unless torchrun set WORLD_SIZE > 1
        self.precision = self.world.broadcast(resolve_precision(cfg.precision, self.device))  # "auto" is measured: rank 0's choice for all

    def _setup_model(self, pretrained: bool) -> None:
        """The U-Net on the device, with ``pretrained`` its --encoder-weights (a resumed run has its own in its checkpoint);
        under several processes in DistributedDataParallel (``forward``)."""
        cfg, device = self.cfg, self.device
        model = build_model(cfg.model_config(self.data.channels, len(self.data.classes)))
        if pretrained and cfg.encoder_weights is not None:
            load_encoder_weights(model, cfg.encoder_weights, progress=cfg.progress and self.world.is_main)
        model = model.to(device)
        if cfg.sync_bn:
            model = sync_batchnorm(model, self.world.size, device)
        # oneDNN's NHWC weight-gradient reductions were seen to vary in the last bit between runs; NCHW is exact.
        self.channels_last = cfg.channels_last and device.type == "cpu" and not cfg.deterministic
        if self.channels_last:
            model.to(memory_format=torch.channels_last)
        self.model = model
        net = distributed.wrap(model, self.world, device)  # DDP under several processes: gradients averaged over ranks
        self.forward = torch.compile(net) if cfg.compile else net  # parameters stay shared with self.model

    def _setup_sampler(self) -> None:
        """Patch geometry, class weights, and the sampler of augmented training patches."""
        cfg, data = self.cfg, self.data
        ctx = context(cfg.depth, cfg.padding)
        self.patch = input_size_for_output(cfg.patch_size, cfg.depth, cfg.padding) - ctx  # a valid output size >= patch_size
        if cfg.class_weights is not None and len(cfg.class_weights) != len(data.classes):
            raise UnetkitError(f"class_weights has {len(cfg.class_weights)} values but the data has {len(data.classes)} classes "
                               f"({', '.join(data.classes)}); give one weight per class, in that order")
        self.class_weights = torch.tensor(cfg.class_weights, dtype=torch.float32, device=self.device) if cfg.class_weights else None
        self.input_peak = input_peak(data.image_stats(), self.norm)  # for the diagnosis of a non-finite loss
        self.sampler = PatchSampler(data.train_images, data.train_masks, self.patch, ctx, cfg.augmentation(), cfg.seed,
                                    norm=self.norm, weights=loss_weight_maps(data, cfg), foreground_fraction=cfg.foreground_fraction,
                                    labelled=[e.stats["labelled"] for e in data.train_entries], class_counts=data.class_counts(),
                                    centres=data.centres())  # fmt: skip

    def _setup_optimizer(self) -> None:
        """Optimizer, plateau scheduler, fp16 gradient scaler; the global batch and the steps of an epoch."""
        cfg = self.cfg
        self.base_lr = cfg.resolved_lr * distributed.lr_scale(cfg.lr_scaling, self.world.size)
        self.optimizer = make_optimizer(cfg, self.model.parameters(), self.base_lr)
        self.plateau = None
        if cfg.schedule == "plateau":
            self.plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(self.optimizer, mode="max", patience=5, factor=0.5)
        self.scaler = torch.amp.GradScaler(self.device.type) if self.precision == "fp16" else None
        pixels = sum(math.prod(e.shape("mask")) for e in self.data.train_entries)
        self.global_batch = cfg.batch_size * self.world.size
        # Global steps: an epoch covers the training pixels once whatever the number of processes.
        self.steps_per_epoch = cfg.steps_per_epoch or max(10, math.ceil(pixels / (self.patch * self.patch * self.global_batch)))
        self.max_epochs = cfg.resolved_epochs

    def _restore(self, resume: dict | None) -> None:
        """The training position (``progress``): a new one, or a resumed run's weights, optimizer, RNG and position."""
        cfg = self.cfg
        # Progress: everything needed to continue exactly where a checkpoint was taken.
        progress = {"epoch": 0, "step": 0, "epoch_step": 0, "epoch_losses": [], "best": -1.0, "history": [], "elapsed": 0.0, "val_seconds": 0.0}
        lr_scale = self.base_lr / cfg.resolved_lr
        if resume is not None:
            self.model.load_state_dict(resume["model"])
            self.optimizer.load_state_dict(resume["optimizer"])
            if self.plateau is not None and resume.get("plateau"):
                self.plateau.load_state_dict(resume["plateau"])
            if self.scaler is not None and resume.get("scaler"):
                self.scaler.load_state_dict(resume["scaler"])
            torch.set_rng_state(resume["rng"]["torch"])
            if self.device.type == "cuda" and resume["rng"].get("cuda"):
                torch.cuda.set_rng_state_all(resume["rng"]["cuda"])
            progress = json.loads(resume["progress"])
            if self.plateau is not None and progress.get("lr_scale", 1.0) != lr_scale:  # a different process count
                for group in self.optimizer.param_groups:
                    group["lr"] *= lr_scale / progress.get("lr_scale", 1.0)
        distributed.continue_progress(progress, self.steps_per_epoch, self.world)
        progress["lr_scale"] = lr_scale
        self.progress = progress
        self.elapsed_before = progress["elapsed"]
        self.first_step = progress["step"]
        self.step_seconds = 0.0  # this process's time in steps, for the time budget
        # Rank r's batch at global step s is the sampler's batch number progress["batches"] + (s - first_step) * W + r.
        self.batches: Generator = distributed.batches(self.sampler, cfg.batch_size, progress["batches"], cfg.workers, self.world)
        self.deadline = self.started + cfg.time * 60 - self.elapsed_before if cfg.time else None

    # --- the run

    def fit(self) -> TrainResult:
        """Train until the epoch limit or time budget, a stop request (Ctrl-C, SIGTERM) or a non-finite loss.

        Raises:
            TrainingInterrupted: on a stop request, after the state was committed.
            UnetkitError: on a non-finite loss, or when the time budget ends before the first step.
        """
        call(self.callbacks, "on_train_begin", self.view)
        self.model.train()
        stopped_by = None
        try:
            with StopRequest() as stop_request:  # under several processes every rank stops where any rank asked to
                while stopped_by is None and (self.max_epochs is None or self.progress["epoch"] < self.max_epochs):
                    stopped_by = self._train_epoch(stop_request)
                    if stopped_by == "interrupt" or not self.progress["epoch_losses"]:
                        break
                    self._end_epoch(time_up=stopped_by == "time")
                if stopped_by == "interrupt":  # still within StopRequest: torchrun's SIGTERM, once another rank exits, cannot cut it short
                    call(self.callbacks, "on_checkpoint", None, False, self.view)
                    self._stop("interrupted")
        finally:
            self.batches.close()  # the patch-sampling processes end with the loop, also on an error
        return self._finish(stopped_by)

    def _train_epoch(self, stop_request: StopRequest) -> str | None:
        """The steps left in this epoch; returns "time" or "interrupt" when the run stops within it, else None."""
        while self.progress["epoch_step"] < self.steps_per_epoch:
            began = time.monotonic()
            time_up, interrupted = self.world.agree(self._time_up(began), stop_request.requested)
            if time_up:
                return "time"
            if interrupted:
                return "interrupt"
            self.step()
            self.step_seconds += time.monotonic() - began
            call(self.callbacks, "on_step_end", self.view)
        return None

    def step(self) -> float:
        """One optimizer step on this rank's next batch at the scheduled learning rate; returns the loss, the mean over ranks.

        Raises:
            UnetkitError: when the loss is not finite (on every rank alike), after status "nan" was recorded.
        """
        cfg, progress = self.cfg, self.progress
        if self.plateau is None:
            for group in self.optimizer.param_groups:
                group["lr"] = self.base_lr * lr_factor(cfg, self._fraction())
        x, y, weight_map = next(self.batches)  # (B, C, in, in), (B, patch, patch), (B, patch, patch) weights or None
        self.world.seed_step(cfg.seed, progress["batches"])  # dropout of this rank's batch
        x, y = x.to(self.device), y.to(self.device)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        weight_map = weight_map.to(self.device) if weight_map is not None else None
        with autocast(self.device, self.precision):
            logits = self.forward(x)  # (B, K, patch, patch)
        loss = segmentation_loss(logits, y, cfg.loss, self.class_weights, IGNORE, weight_map, focal_gamma=cfg.focal_gamma,
                                 tversky_alpha=cfg.tversky_alpha, tversky_beta=cfg.tversky_beta)  # fmt: skip
        value = self.world.mean(loss)  # over the ranks: non-finite on all of them if on any
        if not math.isfinite(value):
            self._diverged(value)
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            loss.backward()
            self.optimizer.step()
        progress["step"] += 1
        progress["epoch_step"] += 1
        progress["batches"] += self.world.size
        progress["epoch_losses"].append(value)
        return value

    def validate(self) -> dict:
        """The validation columns of the metrics row: val_dice, val_iou, val_pixel_accuracy and val_dice_CLASS.

        Each rank predicts every W-th validation image; the summed confusion matrix gives all ranks the same scores.
        """
        w, data = self.world, self.data
        began = time.monotonic()
        s = validation_scores(self.model, data.val_images[w.rank :: w.size], data.val_masks[w.rank :: w.size], self.norm, self.cfg,
                              self.device, data.classes, w.sum)  # fmt: skip
        self.progress["val_seconds"] = time.monotonic() - began
        columns = {"val_dice": s["dice"]["mean"], "val_iou": s["iou"]["mean"], "val_pixel_accuracy": s["pixel_accuracy"]["overall"]}
        columns.update({f"val_dice_{name}": value for name, value in s["dice"].items() if name != "mean"})
        if self.plateau is not None:
            self.plateau.step(s["dice"]["mean"] or 0.0)
        return columns

    def _end_epoch(self, time_up: bool) -> None:
        """The epoch's metrics row (validated every ``val_every`` epochs and at the last), committed, then reported."""
        cfg, progress, data = self.cfg, self.progress, self.data
        epoch = progress["epoch"] + 1
        row = {"epoch": epoch, "step": progress["step"], "lr": self.optimizer.param_groups[0]["lr"],
               "train_loss": float(np.mean(progress["epoch_losses"])), "val_dice": "", "val_iou": "", "val_pixel_accuracy": ""}  # fmt: skip
        if self.world.size > 1 or any("global_batch" in r for r in progress["history"]):  # the process count may change on resume
            row["global_batch"] = self.global_batch
        last_epoch = time_up or epoch == self.max_epochs
        data.check_unchanged()  # a data set edited under the run: stop rather than train on stale cached copies
        if data.val_images and (epoch % cfg.val_every == 0 or last_epoch):
            row.update(self.validate())
        row["time_s"] = round(self.elapsed(), 2)
        progress["history"].append(row)
        progress.update(epoch=epoch, epoch_step=0, epoch_losses=[])
        dice = row["val_dice"]
        best = not data.val_images or (dice not in ("", None) and dice > progress["best"])
        if data.val_images and best:
            progress["best"] = dice
        call(self.callbacks, "on_checkpoint", row, best, self.view)
        call(self.callbacks, "on_epoch_end", row, self.view)

    def _finish(self, stopped_by: str | None) -> TrainResult:
        progress, run = self.progress, RunFolder(self.cfg.out)
        if stopped_by == "interrupt":
            raise TrainingInterrupted(f"stopped at epoch {progress['epoch'] + 1}, step {progress['step']}; state saved in {run.last}; "
                                      f"continue with: unetkit train --resume {run.path}{self.world.resume_hint()}")
        if not progress["history"]:
            call(self.callbacks, "on_stop", None, self.view)
            if self.cfg.time is not None:
                raise UnetkitError(f"the time budget (--time {self.cfg.time:g} min) ended before one training step; give more --time")
            raise UnetkitError(f"the epoch limit (--epochs {self.max_epochs}) ended before one training step; give more --epochs")
        seconds = self.elapsed()
        self._stop("done")
        result = TrainResult.from_progress(run.path, progress, seconds)
        call(self.callbacks, "on_train_end", result, self.view)
        return result

    def _stop(self, status: str) -> None:
        call(self.callbacks, "on_stop", {"status": status, "epoch": self.progress["epoch"], "step": self.progress["step"]}, self.view)

    def _diverged(self, loss: float) -> None:
        cfg, epoch, step = self.cfg, self.progress["epoch"] + 1, self.progress["step"] + 1
        causes = self._divergence_causes()
        call(self.callbacks, "on_stop", {"status": "nan", "epoch": epoch, "step": step, "lr_setting": cfg.resolved_lr, "causes": causes}, self.view)
        last = RunFolder(cfg.out).last
        kept = (f"the last good state is {last}; continue with --resume {last.parent} once changed" if last.is_file()
                else "no epoch was saved, so start again once changed")
        raise UnetkitError(f"loss became {loss} at epoch {epoch}, step {step}; likely causes: {'; '.join(causes)}; {kept}")

    def _divergence_causes(self) -> list[str]:
        """What in this run can have made the loss non-finite, most specific first."""
        cfg, causes = self.cfg, []  # (zero class weights cannot cause it: a batch of zero-weight pixels has loss 0, see losses.py)
        if self.input_peak > 1e3:
            causes.append(f"the training images hold outliers {self.input_peak:.3g} standard deviations from their mean: check them "
                          "for hot pixels or fill values such as -9999, and clip or mask them")
        if self.precision != "fp32":
            causes.append(f"{self.precision} arithmetic overflows where fp32 does not (try --precision fp32)")
        if self.progress["step"] > self.first_step:  # this process took steps with a finite loss, at this learning rate
            causes.append(f"the learning rate (--lr {cfg.resolved_lr:g}) is too high for --optimizer {cfg.optimizer} (try a lower --lr)")
        if not causes:
            causes.append("the network's output is not finite on its first batch here (check the data with unetkit check, or try --norm batch)")
        return causes

    # --- time and state

    def elapsed(self) -> float:
        """Seconds of training in this run, those before a resume included."""
        return self.elapsed_before + time.monotonic() - self.started

    def _fraction(self) -> float:
        """How far the run is, in [0, 1]: steps of the epoch limit, or time of the budget."""
        if self.max_epochs is not None:
            return self.progress["step"] / (self.max_epochs * self.steps_per_epoch)
        return self.elapsed() / (self.cfg.time * 60)

    def _time_up(self, now: float) -> bool:
        """Whether another step and a validation would overrun the time budget."""
        if self.deadline is None:
            return False
        # Mean duration of this process's steps so far (set-up, validation and saving excluded).
        step_time = self.step_seconds / max(self.progress["step"] - self.first_step, 1)
        return now + step_time + self.progress["val_seconds"] * 1.2 > self.deadline

    def training_state(self) -> dict:
        """The full training state, taken now, as the keyword arguments of :meth:`RunFolder.save_last`."""
        progress = self.progress
        progress["elapsed"] = self.elapsed()
        rng = {"torch": torch.get_rng_state()}
        if self.device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state_all()
        return {
            "model_state": self.model.state_dict(), "meta": {**self.meta, "epoch": progress["epoch"], "step": progress["step"]},
            "optimizer": self.optimizer.state_dict(), "plateau": self.plateau.state_dict() if self.plateau else None,
            "scaler": self.scaler.state_dict() if self.scaler else None, "rng": rng, "progress": json.dumps(progress),
        }  # fmt: skip
