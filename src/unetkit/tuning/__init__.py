"""Hyperparameter search with Optuna (``unetkit tune``): trials that share one time budget, resumable.

Every trial is a normal training run in ``OUT/trial_NNN`` with ``time = TIME / TRIALS`` minutes (the same
for every trial, so they compare fairly); its validation mean Dice is reported to Optuna after each epoch,
and the pruner (median or successive halving) stops trials that fall behind. The study lives in
``OUT/study.db`` (SQLite): running the same command again resumes it, counting the trials already
finished toward ``--trials``. Trial 0 is the default configuration, so the search always shows what it
gained over the defaults under the same budget. At the end ``OUT`` holds ``best.yaml`` (a config for
``unetkit train --config``), ``best.pt``, ``trials.csv``, ``history.png`` and ``importances.png``.

The parts: :mod:`~unetkit.tuning.space` (the search space, format in docs/tuning.md),
:mod:`~unetkit.tuning.study` (the stored study), :mod:`~unetkit.tuning.trial` (one trial),
:mod:`~unetkit.tuning.results` (the files written at the end).
"""

from __future__ import annotations

import json
import time as clock
from dataclasses import fields
from pathlib import Path

from unetkit.commands import TuneOptions
from unetkit.config import TrainConfig, load_config_file, make_config
from unetkit.engine.resume import refuse_data_folder
from unetkit.engine.training_data import load_split
from unetkit.errors import UnetkitError
from unetkit.options import check_keys
from unetkit.tracking import local_store
from unetkit.tuning.results import TuneResult, trial_line, write_results
from unetkit.tuning.space import DEFAULT_SPACE, check_space, default_params, load_space
from unetkit.tuning.study import finished, open_study, optuna_module
from unetkit.tuning.trial import TRIAL_DEFAULTS, run_trial

TUNE_OPTIONS = tuple(f.name for f in fields(TuneOptions))

RUNTIME = ("progress", "report", "log", "mlflow_uri", "threads", "workers", "device")  # may change when resuming


def tune(**options) -> TuneResult:
    """Search training hyperparameters with Optuna (TPE) within a total time budget; resumable.

    ``options`` are those of :class:`~unetkit.commands.TuneOptions`; the others are training options
    (:class:`~unetkit.config.TrainConfig`) fixed for every trial.

    Args:
        data: Training data, as for ``train`` (its ``val`` split, ``--val`` or ``--val-fraction`` gives the score).
        trials: Trials in all; those already in ``OUT/study.db`` count (rerun with more to extend a search).
        time: Minutes for the trials this call runs; each gets ``time / trials still to run``.
        space: A search-space YAML file or dict (docs/tuning.md); default :data:`~unetkit.tuning.space.DEFAULT_SPACE`.
        out: Folder of the study: ``study.db``, ``trial_NNN/`` run folders and the results.
        pruner: ``median``, ``halving`` (successive halving) or ``none``.
        config: A YAML file of training options fixed for every trial; ``options`` override it.
        verbose: Print one line per trial.
        **options: Training options fixed for every trial (and removed from the space), e.g. ``epochs=5``.

    Returns:
        The best trial and its parameters, trial 0's score, counts and the table of trials.

    Example:
        >>> result = unetkit.tune(data="data/", trials=12, time=60, out="runs/tune")  # doctest: +SKIP
        >>> result.best_params, result.best_dice, result.default_dice  # doctest: +SKIP
    """
    search = TuneOptions.build("tune", **{k: options.pop(k) for k in TUNE_OPTIONS if k in options})
    data, trials, time, space, out, pruner, config = (search.data, search.trials, search.time, search.space, search.out, search.pruner,
                                                      search.config)  # fmt: skip
    optuna_module()  # fails with the install hint before anything else
    say = print if search.verbose else (lambda *a, **k: None)
    started = clock.monotonic()
    if time <= 0:
        raise UnetkitError(f"time must be a positive number of minutes for the whole search, got {time}")
    data, fixed, notes = _fixed_options(data, config, options)
    space = check_space(DEFAULT_SPACE if space is None else space if isinstance(space, dict) else load_space(space), "search space")
    searched = {k: v for k, v in space.items() if k not in fixed}  # a fixed option is not searched
    notes += [f"{k} is fixed to {fixed[k]!r}, so it is not searched" for k in space if k in fixed]
    if not searched:
        raise UnetkitError("every option of the search space is fixed by an option given; nothing to search")

    base = make_config(data=data, **fixed)  # refuses bad options and missing data before any trial
    load_split(base)
    defaults, outside = default_params(searched, base)
    notes += outside
    out = Path(out)
    refuse_data_folder(out, data, base.val)
    out.mkdir(parents=True, exist_ok=True)
    kept = {k: v for k, v in fixed.items() if k not in RUNTIME}  # what a resumed search must share with this one
    setup = json.dumps({"data": str(Path(data).resolve()), "space": searched, "fixed": kept}, sort_keys=True)
    study = open_study(out, pruner, base.seed, trials, setup, defaults)

    trial_options = {**TRIAL_DEFAULTS, **fixed}
    if "mlflow" in base.log and base.mlflow_uri is None:  # one MLflow store for the whole search
        trial_options["mlflow_uri"] = local_store(out)
    notes += _run_trials(study, searched, data, out, trials, (started, time * 60), trial_options, say)
    result = write_results(study, out, data, fixed, notes)
    for note in notes:
        say(f"note: {note}")
    return result


def _fixed_options(data, config: str | Path | None, options: dict) -> tuple[str, dict, list[str]]:
    """The data and the training options fixed for every trial (``config`` file, then ``options``), with notes."""
    fixed = load_config_file(config) if config is not None else {}
    check_keys(TrainConfig, options, "argument")
    fixed.update({k: v for k, v in options.items() if v is not None})
    data = str(data or fixed.get("data") or "")
    notes = [f"{config}: {k} is set by tune per trial; ignored" for k in ("out", "time") if k in fixed]
    return data, {k: v for k, v in fixed.items() if k not in ("data", "out", "time")}, notes


def _run_trials(study, space: dict, data: str, out: Path, trials: int, budget: tuple[float, float], options: dict, say) -> list[str]:
    """Run the trials still missing toward ``trials`` within ``budget`` (the search's start on the monotonic clock,
    its seconds), each with an equal share; returns notes."""
    started, seconds = budget
    done = sum(1 for t in study.trials if finished(t))
    remaining = max(0, trials - done)
    reserve = min(30.0, 0.05 * seconds)  # seconds kept for the results at the end
    per_trial = (seconds - reserve) / max(remaining, 1) / 60  # minutes
    if done:
        say(f"resuming {out / 'study.db'}: {done} of {trials} trials done")
    if remaining:
        say(f"{remaining} trial(s) of {per_trial:.2f} min each; searching {', '.join(space)}")
    for _ in range(remaining):
        minutes = min(per_trial, (started + seconds - reserve - clock.monotonic()) / 60)
        if minutes < per_trial / 2:
            return [f"the time budget ran out after {done} of {trials} trials"]
        done += 1
        finished_trial = run_trial(study, space, data, out, minutes, options)
        say(trial_line(finished_trial, done, trials, study))
    return []
