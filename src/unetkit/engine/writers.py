"""The callbacks of the process that writes a run: the run folder and the progress bar.

:func:`unetkit.engine.trainer.train` gives them to rank 0 only; the other ranks train without writers.
"""

from __future__ import annotations

import time

import numpy as np
from tqdm.auto import tqdm

from unetkit.engine.callbacks import Callback, TrainView
from unetkit.engine.run_folder import RunFolder
from unetkit.errors import UnetkitError


class RunWriter(Callback):
    """Writes the run folder as training goes.

    At the start config.yaml (with the run-time notes of several processes) and status "running", after
    removing the checkpoints, metrics and curves of an earlier run when this one is new (``--overwrite``);
    at each epoch end best.pt when the epoch set a new best, metrics.csv and curves.png, then last.pt, which
    is written last and so is the commit point of an epoch; last.pt also every ``save_every`` minutes within
    an epoch and on interruption; status.json when the loop ends, and through :meth:`fail` when it ends on
    an error.
    """

    def __init__(self, folder: RunFolder) -> None:
        self.folder = folder
        self.last_save = time.monotonic()
        self.status: dict | None = None  # what status.json says, once this writer wrote it
        self.view: TrainView | None = None

    def on_train_begin(self, view: TrainView) -> None:
        self.view = view
        self.folder.prepare()
        if not view.resumed:
            self.folder.clear_run()  # nothing of an earlier run may pass for this one's (a best.pt, a last.pt to resume)
        notes = {"processes": view.world_size, "global_batch": view.global_batch, "lr": view.base_lr, "steps_per_epoch": view.steps_per_epoch}
        self.folder.write_config(view.cfg, notes if view.world_size > 1 else None)
        self._write_status(status="running")
        self.last_save = time.monotonic()

    def on_step_end(self, view: TrainView) -> None:
        minutes = view.cfg.save_every
        if minutes and time.monotonic() - self.last_save > minutes * 60 and view.progress["epoch_step"] < view.steps_per_epoch:
            self._save_last(view)

    def on_checkpoint(self, row: dict | None, best: bool, view: TrainView) -> None:
        if row is not None:
            if best:
                self.folder.save_best(view.model.state_dict(), {**view.meta, "epoch": row["epoch"], "step": row["step"], "scores": row})
            history = view.progress["history"]
            self.folder.write_metrics(history)
            self.folder.plot_curves(history)
        self._save_last(view)

    def on_stop(self, status: dict | None, view: TrainView) -> None:
        if status is not None:
            self._write_status(**status)

    def fail(self, error: BaseException) -> None:
        """The run ended on ``error``: status.json says "failed" with its message ("interrupted" on a second Ctrl-C),
        unless it already says how the run ended. Best effort: a full disk may refuse this write too, and then
        ``error``, not this, is what the user sees."""
        if self.status is None or self.status["status"] != "running":
            return
        if isinstance(error, KeyboardInterrupt):
            kept = "last.pt holds the last saved state" if self.folder.last.is_file() else "no state was saved"
            status, message = "interrupted", f"stopped at once by a second Ctrl-C; {kept}"
        else:
            lines = str(error).strip().splitlines()
            first = lines[0][:300] if lines else ""
            status, message = "failed", first if isinstance(error, UnetkitError) and first else f"{type(error).__name__}: {first}".rstrip(": ")
        try:
            self._write_status(status=status, epoch=self.view.progress["epoch"], step=self.view.progress["step"], error=message)
        except (OSError, UnetkitError):
            pass

    def _write_status(self, **status) -> None:
        self.folder.write_status(**status)
        self.status = status

    def _save_last(self, view: TrainView) -> None:
        self.folder.save_last(**view.training_state())
        self.last_save = time.monotonic()


class ProgressBar(Callback):
    """One tqdm bar of optimizer steps: the epoch, the mean loss of the last 20 steps, the best validation
    Dice, and with a time budget the minutes left."""

    def __init__(self) -> None:
        self.bar = None

    def on_train_begin(self, view: TrainView) -> None:
        epochs = view.cfg.resolved_epochs
        total = epochs * view.steps_per_epoch if epochs else None
        self.bar = tqdm(total=total, initial=view.progress["step"], desc="train", unit="step", dynamic_ncols=True)

    def on_step_end(self, view: TrainView) -> None:
        progress = view.progress
        self.bar.update(1)
        self.bar.set_postfix(epoch=progress["epoch"] + 1, loss=f"{np.mean(progress['epoch_losses'][-20:]):.4f}",
                             val_dice=_dice(progress["best"]), refresh=False)  # fmt: skip
        if view.deadline is not None:
            self.bar.set_description(f"train ({max(0.0, view.deadline - time.monotonic()) / 60:.1f} min left)")

    def on_epoch_end(self, row: dict, view: TrainView) -> None:
        self.bar.set_postfix(epoch=row["epoch"], loss=f"{row['train_loss']:.4f}", val_dice=_dice(view.progress["best"]))

    def on_stop(self, status: dict | None, view: TrainView) -> None:
        self.bar.close()


def _dice(best: float) -> str:
    return f"{best:.4f}" if best >= 0 else "-"
