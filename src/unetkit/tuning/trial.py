"""One trial of a search: a normal training run in ``OUT/trial_NNN`` that reports its validation Dice to Optuna."""

from __future__ import annotations

from pathlib import Path

from unetkit.config import make_config
from unetkit.engine.callbacks import Callback, TrainView
from unetkit.engine.run_folder import RunFolder
from unetkit.engine.trainer import TrainResult, train
from unetkit.errors import TrainingInterrupted, UnetkitError
from unetkit.tracking import run_callbacks
from unetkit.tuning.space import suggest

TRIAL_DEFAULTS = {"progress": False, "report": False}  # one line per trial instead of bars; no HTML report per trial


class PruneOnDice(Callback):
    """Reports each epoch's validation mean Dice to an Optuna trial; raises ``optuna.TrialPruned`` when it should stop."""

    def __init__(self, trial) -> None:
        self.trial = trial
        self.epoch = 0  # the last epoch reported

    def on_epoch_end(self, row: dict, view: TrainView) -> None:
        if row["val_dice"] in ("", None):  # an epoch without validation (--val-every)
            return
        self.epoch = int(row["epoch"])
        self.trial.report(float(row["val_dice"]), self.epoch)
        if self.trial.should_prune():
            import optuna

            raise optuna.TrialPruned(f"validation mean Dice {row['val_dice']:.4f} at epoch {self.epoch} is behind the other trials")


def train_trial(run_dir: Path, minutes: float, pruning: PruneOnDice, options: dict) -> TrainResult:
    """Train one trial's configuration for ``minutes`` with the run's usual callbacks (trackers) and ``pruning``."""
    cfg = make_config(out=str(run_dir), time=minutes, **options)
    with run_callbacks(cfg, [pruning]) as callbacks:
        return train(cfg, callbacks=callbacks)


def run_trial(study, space: dict, data: str, out: Path, minutes: float, options: dict):
    """Ask for a trial, train it in OUT/trial_NNN, and tell the study how it ended; returns the finished trial."""
    import optuna
    from optuna.trial import TrialState

    trial = study.ask()
    params = {name: suggest(trial, name, spec) for name, spec in space.items()}
    run_dir = out / f"trial_{trial.number:03d}"
    trial.set_user_attr("run_dir", run_dir.as_posix())
    trial.set_user_attr("minutes", round(minutes, 4))
    pruning = PruneOnDice(trial)
    try:
        result = train_trial(run_dir, minutes, pruning, {"data": data, **options, **params})
    except optuna.TrialPruned as e:
        trial.set_user_attr("note", f"pruned at epoch {pruning.epoch}")
        RunFolder(run_dir).write_status(status="pruned", epoch=pruning.epoch, reason=str(e))
        return study.tell(trial, state=TrialState.PRUNED)
    except (TrainingInterrupted, KeyboardInterrupt):
        study.tell(trial, state=TrialState.FAIL)  # no "error": the next run of the search repeats it
        raise
    except UnetkitError as e:  # e.g. a learning rate so high that the loss diverged: a result, not a crash
        trial.set_user_attr("error", str(e))
        return study.tell(trial, state=TrialState.FAIL)
    except Exception as e:
        trial.set_user_attr("error", f"{type(e).__name__}: {e}")
        study.tell(trial, state=TrialState.FAIL)
        raise
    trial.set_user_attr("epochs", result.epochs)
    if result.best_dice is None:
        trial.set_user_attr("error", "no validation score")
        return study.tell(trial, state=TrialState.FAIL)
    return study.tell(trial, result.best_dice)
