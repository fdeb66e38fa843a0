"""The Optuna study of a search: stored in ``OUT/study.db`` (SQLite), resumed by rerunning the same command."""

from __future__ import annotations

import json
from pathlib import Path

from unetkit.errors import UnetkitError
from unetkit.extras import optional

STUDY = "unetkit"  # the study's name in study.db


def optuna_module():
    """Import optuna (quiet: tune prints one line per trial), or fail with the install hint."""
    optuna = optional("optuna", "unetkit tune needs Optuna", "tune")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


def make_pruner(name: str):
    """``median``: stop below the median of earlier trials at the same epoch (from epoch 2, after 3 finished trials);
    ``halving``: successive halving (rungs at epochs 1, 3, 9, ...); ``none``."""
    optuna = optuna_module()
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=1)
    if name == "halving":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=3)
    if name == "none":
        return optuna.pruners.NopPruner()
    raise UnetkitError(f"pruner={name!r} is not one of median, halving, none")


def open_study(out: Path, pruner: str, seed: int, trials: int, setup: str, defaults: dict):
    """The study in ``out/study.db``, created or resumed; refused when it holds a search of another ``setup``.

    A new study starts with trial 0 on the ``defaults``; trials that a killed or interrupted search left
    unfinished are queued again.
    """
    optuna = optuna_module()
    storage = f"sqlite:///{(out / 'study.db').resolve().as_posix()}"
    study = optuna.create_study(study_name=STUDY, storage=storage, direction="maximize", pruner=make_pruner(pruner), load_if_exists=True)
    # Seeded by the trials so far: a resumed search does not draw its first random trials again.
    study.sampler = optuna.samplers.TPESampler(seed=seed + len(study.trials), n_startup_trials=max(3, min(10, trials // 3)))
    if "setup" not in study.user_attrs:
        study.set_user_attr("setup", setup)
    elif study.user_attrs["setup"] != setup:
        raise UnetkitError(
            f"{out / 'study.db'} holds a search of other data, space or fixed options ({_difference(study.user_attrs['setup'], setup)}); "
            "rerun with the same ones to resume it, or choose another --out"
        )
    if not study.trials:
        study.enqueue_trial(defaults, user_attrs={"defaults": True})
    _requeue_interrupted(study)
    return study


def _difference(old: str, new: str) -> str:
    """The first part of two search setups (JSON) that differs, for the error message."""
    a, b = json.loads(old), json.loads(new)
    for part in ("data", "space", "fixed"):
        if a[part] != b[part]:
            if isinstance(a[part], dict):
                keys = sorted(k for k in {*a[part], *b[part]} if a[part].get(k) != b[part].get(k))
                return f"{part}: {', '.join(keys)}"
            return f"{part}: {a[part]!r} != {b[part]!r}"
    return "?"


def finished(trial) -> bool:
    """Counts toward --trials: complete, pruned, or failed on its own (diverged); not interrupted."""
    from optuna.trial import TrialState

    return trial.state in (TrialState.COMPLETE, TrialState.PRUNED) or (trial.state == TrialState.FAIL and "error" in trial.user_attrs)


def _requeue_interrupted(study) -> None:
    """Trials a killed or interrupted search left unfinished run again (with the same parameters), once."""
    from optuna.trial import TrialState

    for t in study.trials:
        if t.state == TrialState.RUNNING:  # the process running it is gone (one process per study)
            study.tell(t.number, state=TrialState.FAIL)
    retried = {t.user_attrs.get("retry_of") for t in study.trials}
    for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,)):
        if "error" not in t.user_attrs and t.number not in retried:
            study.enqueue_trial(t.params, user_attrs={"retry_of": t.number, **({"defaults": True} if t.user_attrs.get("defaults") else {})})
