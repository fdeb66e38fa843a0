"""Hooks into the training loop, for experiment trackers and hyperparameter search.

A callback is any object with some of the methods below; the loop calls those it has, on the process that
writes the run (rank 0 under torchrun). An exception raised by a hook ends the run after its state was saved
(``last.pt`` and ``metrics.csv`` are written before ``on_epoch_end``), so a pruned or failed trial can still
be resumed or inspected.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class TrainView:
    """What a callback may read of a running training: the live model and the validation data.

    Attributes:
        cfg: The resolved :class:`~unetkit.config.TrainConfig`.
        run_dir: The run folder.
        model: The (unwrapped) :class:`~unetkit.models.unet.UNet`, in train mode between hooks.
        meta: The checkpoint metadata (classes, colors, normalization, model config).
        val_images: Validation images, (H, W, C) native units, as read.
        val_masks: Validation masks, (H, W) int64 class indices (IGNORE where unlabelled).
        device: The torch device.
        precision: The resolved arithmetic ("fp32", "bf16" or "fp16").
    """

    cfg: Any
    run_dir: Path
    model: Any
    meta: dict
    val_images: list = field(default_factory=list)
    val_masks: list = field(default_factory=list)
    device: Any = None
    precision: str = "fp32"


class Callback:
    """Base class with every hook as a no-op; subclass and override what you need."""

    def on_train_begin(self, view: TrainView) -> None:
        """Before the first step (also when resuming)."""

    def on_epoch_end(self, row: dict, view: TrainView) -> None:
        """After an epoch's metrics row (the keys of metrics.csv) was written and last.pt saved."""

    def on_train_end(self, result: Any, view: TrainView) -> None:
        """After a run finished normally (not on interruption or error), with its TrainResult."""


def call(callbacks, hook: str, *args) -> None:
    """Call ``hook`` on every callback that has it."""
    for cb in callbacks:
        method = getattr(cb, hook, None)
        if method is not None:
            method(*args)
