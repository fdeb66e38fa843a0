"""Hooks into the training loop: the run folder, the progress bar, experiment trackers, search pruning, reports.

A callback is any object with some of the methods of :class:`Callback`; the loop calls those it has, in
the order the callbacks were given, on the process that writes the run (rank 0 under torchrun; the other
ranks get no callbacks). Everything that is not training hangs on these hooks: the
:class:`~unetkit.engine.writers.RunWriter` writes the run folder, the
:class:`~unetkit.engine.writers.ProgressBar` draws the bar, and ``unetkit.train`` adds the trackers and
the end-of-run report.

An exception raised by a hook ends the run. ``on_epoch_end`` comes after the epoch was committed
(``metrics.csv``, ``best.pt`` and ``last.pt`` written in ``on_checkpoint``), so a pruned or failed trial
can still be resumed or inspected.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class TrainView:
    """What a callback may read of a running training.

    Attributes:
        cfg: The resolved :class:`~unetkit.config.TrainConfig`.
        run_dir: The run folder.
        model: The (unwrapped) :class:`~unetkit.models.unet.UNet`, in train mode between hooks.
        meta: The checkpoint metadata (classes, colors, normalization, model config).
        val_images: Validation images, (H, W, C) native units, as read; a lazy sequence (each read when indexed).
        val_masks: Validation masks, (H, W) int16 class indices (IGNORE where unlabelled); a lazy sequence.
        device: The torch device.
        precision: The resolved arithmetic ("fp32", "bf16" or "fp16").
        spec: The training :class:`~unetkit.data.dataset.DataSpec`.
        val_pairs: The validation pairs the images and masks were read from.
        world_size: Processes of the run.
        global_batch: Patches per optimizer step over all processes.
        base_lr: The learning rate before the schedule, scaled for the processes (``lr_scaling``).
        steps_per_epoch: Optimizer steps (global) per epoch.
        deadline: ``time.monotonic()`` at which the time budget ends, or None without one.
        progress: The live training position: ``epoch`` (finished epochs), ``step``, ``epoch_step``,
            ``epoch_losses`` (this epoch's step losses), ``best`` (-1 before a score), ``history``
            (the metrics rows so far), ``elapsed`` (seconds, as of the last save), ...
        training_state: Returns the full training state as ``last.pt`` stores it, taken now: the keyword
            arguments of :meth:`~unetkit.engine.run_folder.RunFolder.save_last`.
        resumed: The run continues a checkpoint (``--resume``, or a torchrun restart); False for a new run.
    """

    cfg: Any
    run_dir: Path
    model: Any
    meta: dict
    val_images: list = field(default_factory=list)
    val_masks: list = field(default_factory=list)
    device: Any = None
    precision: str = "fp32"
    spec: Any = None
    val_pairs: list = field(default_factory=list)
    world_size: int = 1
    global_batch: int = 0
    base_lr: float = 0.0
    steps_per_epoch: int = 0
    deadline: float | None = None
    progress: dict = field(default_factory=dict)
    training_state: Callable[[], dict] | None = None
    resumed: bool = False


class Callback:
    """Base class with every hook as a no-op; subclass and override what you need."""

    def on_train_begin(self, view: TrainView) -> None:
        """Before the first step (also when resuming)."""

    def on_step_end(self, view: TrainView) -> None:
        """After each optimizer step; ``view.progress`` holds the step counters and this epoch's losses."""

    def on_checkpoint(self, row: dict | None, best: bool, view: TrainView) -> None:
        """The training state is at a step boundary to commit: at the end of an epoch (``row``: its metrics
        row; ``best``: it set a new best validation score, or there is no validation data) and, with ``row``
        None, when the run is interrupted. Writers record it here."""

    def on_epoch_end(self, row: dict, view: TrainView) -> None:
        """After an epoch's metrics row (the keys of metrics.csv) was committed (``on_checkpoint``)."""

    def on_stop(self, status: dict | None, view: TrainView) -> None:
        """The loop ended: ``status`` is what status.json records ({"status": "done" | "interrupted" | "nan",
        "epoch", "step", ...}), or None when the run ends without a state to record (the time budget ran out
        before the first step). Not called when a hook raised."""

    def on_train_end(self, result: Any, view: TrainView) -> None:
        """After a run finished normally (not on interruption or error), with its TrainResult."""


def call(callbacks, hook: str, *args) -> None:
    """Call ``hook`` on every callback that has it."""
    for cb in callbacks:
        method = getattr(cb, hook, None)
        if method is not None:
            method(*args)
