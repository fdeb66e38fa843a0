"""Hyperparameter search with Optuna (``unetkit tune``): trials that share one time budget, resumable.

Every trial is a normal training run in ``OUT/trial_NNN`` with ``time = TIME / TRIALS`` minutes (the same
for every trial, so they compare fairly); its validation mean Dice is reported to Optuna after each epoch,
and the pruner (median or successive halving) stops trials that fall behind. The study lives in
``OUT/study.db`` (SQLite): running the same command again resumes it, counting the trials already
finished toward ``--trials``. Trial 0 is the default configuration, so the search always shows what it
gained over the defaults under the same budget. At the end ``OUT`` holds ``best.yaml`` (a config for
``unetkit train --config``), ``best.pt``, ``trials.csv``, ``history.png`` and ``importances.png``.

The search space format (``--space space.yaml``) is described in docs/tuning.md.
"""

from __future__ import annotations

import csv
import io
import json
import math
import shutil
import time as clock
import warnings
from dataclasses import dataclass, fields
from pathlib import Path

import yaml

from unetkit.config import TrainConfig, check_keys, field_type, load_config_file, make_config
from unetkit.engine.callbacks import Callback, TrainView
from unetkit.errors import UnetkitError

DEFAULT_SPACE = {  # sized for a CPU: about a minute per epoch of ISBI 2012 at most
    "lr": {"type": "float", "low": 1e-4, "high": 2e-2, "log": True},
    "optimizer": {"type": "categorical", "choices": ["sgd", "adam", "adamw"]},
    "loss": {"type": "categorical", "choices": ["ce", "dice", "ce+dice", "weighted-ce"]},
    "augment": {"type": "categorical", "choices": ["none", "light", "paper", "strong"]},
    "base_channels": {"type": "int", "low": 16, "high": 48, "step": 8},
    "patch_size": {"type": "int", "low": 64, "high": 192, "step": 32},
}
SPEC_FIELDS = {"float": {"low", "high", "log", "step"}, "int": {"low", "high", "log", "step"}, "categorical": {"choices"}}
SET_BY_TUNE = ("data", "val", "out", "time")  # per search or per trial: never searched
TRIAL_DEFAULTS = {"progress": False, "report": False}  # one line per trial instead of bars; no HTML report per trial
RUNTIME = ("progress", "report", "log", "mlflow_uri", "threads", "workers", "device")  # may change when resuming
MIN_IMPORTANCE_TRIALS = 5  # fewer completed trials give importances that are noise
STUDY = "unetkit"


def optuna_module():
    """Import optuna (quiet: tune prints one line per trial), or fail with the install hint."""
    try:
        import optuna
    except ImportError:
        raise UnetkitError("unetkit tune needs Optuna: pip install 'unetkit[tune]'") from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


# --- the search space ---------------------------------------------------------------------------------


def load_space(path: str | Path) -> dict:
    """Read and check a search-space YAML file (format: docs/tuning.md)."""
    path = Path(path)
    try:
        space = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise UnetkitError(f"{path}: search space file not found") from None
    except yaml.YAMLError as e:
        raise UnetkitError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
    return check_space(space, str(path))


def _number(value, at: str, key: str) -> float | int:
    """A number from YAML, where PyYAML reads ``1e-4`` (no dot) as a string."""
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            pass
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise UnetkitError(f"{at}: {key} must be a number, got {value!r}")
    return value


def _fits(value, option: type) -> bool:
    """Whether ``value`` has the type of a config option (None: the option's default)."""
    if value is None:
        return True
    if option in (int, float) and isinstance(value, bool):
        return False
    return isinstance(value, (int, float)) if option is float else isinstance(value, option)


def check_space(space, where: str) -> dict:
    """Check a search space; returns it with numbers normalised. Errors name ``where``, the option and the fix.

    Example:
        >>> check_space({"lr": {"type": "float", "low": "1e-4", "high": 0.01, "log": True}}, "space.yaml")
        {'lr': {'type': 'float', 'low': 0.0001, 'high': 0.01, 'log': True}}
    """
    example = "e.g. lr: {type: float, low: 1e-4, high: 1e-2, log: true}"
    if not isinstance(space, dict) or not space:
        raise UnetkitError(f"{where}: expected a mapping of option: {{type: ...}}, {example}")
    check_keys(space, where)
    by_name = {f.name: f for f in fields(TrainConfig)}
    checked = {}
    for name, spec in space.items():
        at = f"{where}: {name}"
        if name in SET_BY_TUNE:
            raise UnetkitError(f"{at}: set by tune itself ({', '.join(SET_BY_TUNE)}), so it cannot be searched; remove it")
        if not isinstance(spec, dict) or "type" not in spec:
            raise UnetkitError(f"{at}: expected {{type: float|int|categorical, ...}}, got {spec!r}; {example}")
        kind = spec["type"]
        if kind not in SPEC_FIELDS:
            raise UnetkitError(f"{at}: type must be float, int or categorical, got {kind!r}")
        extra = sorted(set(spec) - SPEC_FIELDS[kind] - {"type"})
        if extra:
            raise UnetkitError(f"{at}: unknown field(s) {', '.join(extra)} for type {kind}; it takes {', '.join(sorted(SPEC_FIELDS[kind]))}")
        option = field_type(by_name[name])
        if option is list:
            raise UnetkitError(f"{at}: list options cannot be searched; fix it with --{name.replace('_', '-')} instead")
        spec = dict(spec)
        if kind == "categorical":
            choices = spec.get("choices")
            if not isinstance(choices, list) or not choices:
                raise UnetkitError(f"{at}: choices must be a non-empty list, e.g. choices: [sgd, adam]")
            if option in (int, float):
                choices = [c if c is None else _number(c, at, "each choice") for c in choices]
            spec["choices"] = choices
            values = choices
        else:
            if option not in (int, float):
                raise UnetkitError(f"{at}: takes {option.__name__} values, not a range; use type: categorical with choices")
            if kind == "float" and option is int:
                raise UnetkitError(f"{at}: takes whole numbers; use type: int")
            if "low" not in spec or "high" not in spec:
                raise UnetkitError(f"{at}: type {kind} needs low and high, {example}")
            for key in ("low", "high", "step"):
                if key in spec:
                    spec[key] = _number(spec[key], at, key)
            if kind == "int" and not all(isinstance(spec[k], int) for k in ("low", "high", "step") if k in spec):
                raise UnetkitError(f"{at}: type int needs whole numbers for low, high and step")
            if kind == "float":
                spec.update({k: float(spec[k]) for k in ("low", "high", "step") if k in spec})
            if spec["low"] >= spec["high"]:
                raise UnetkitError(f"{at}: low ({spec['low']}) must be less than high ({spec['high']})")
            if not isinstance(spec.get("log", False), bool):
                raise UnetkitError(f"{at}: log must be true or false, got {spec['log']!r}")
            if spec.get("log") and "step" in spec:
                raise UnetkitError(f"{at}: log and step cannot be combined; drop one")
            if spec.get("log") and spec["low"] <= 0:
                raise UnetkitError(f"{at}: a log range needs low > 0, got {spec['low']}")
            if "step" in spec and spec["step"] <= 0:
                raise UnetkitError(f"{at}: step must be > 0, got {spec['step']}")
            values = [spec["low"], spec["high"]]
        for value in values:  # each end of a range, each choice: a valid option value
            if not _fits(value, option):
                raise UnetkitError(f"{at}: {value!r} is not a valid {option.__name__} for this option")
            try:
                make_config(**{name: value})
            except UnetkitError as e:
                raise UnetkitError(f"{at}: {e}") from None
        checked[name] = spec
    return checked


def contains(spec: dict, value) -> bool:
    """Whether a search-space entry can take ``value`` (on its step grid, for ranges with a step)."""
    if spec["type"] == "categorical":
        return value in spec["choices"]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not spec["low"] <= value <= spec["high"]:
        return False
    step = spec.get("step")
    return step is None or math.isclose((value - spec["low"]) / step, round((value - spec["low"]) / step), abs_tol=1e-9)


def default_params(space: dict, base: TrainConfig) -> tuple[dict, list[str]]:
    """The searched options' values in the default configuration ``base`` (for trial 0), and notes on those outside the space."""
    params, notes = {}, []
    for name, spec in space.items():
        value = base.resolved_lr if name == "lr" else getattr(base, name)
        if contains(spec, value):
            params[name] = value
        else:
            notes.append(f"the default {name}={value!r} is outside the search space; trial 0 samples it")
    return params, notes


def suggest(trial, name: str, spec: dict):
    """Draw one option value for an Optuna trial."""
    if spec["type"] == "categorical":
        return trial.suggest_categorical(name, spec["choices"])
    if spec["type"] == "int":
        return trial.suggest_int(name, spec["low"], spec["high"], step=spec.get("step", 1), log=spec.get("log", False))
    return trial.suggest_float(name, spec["low"], spec["high"], step=spec.get("step"), log=spec.get("log", False))


# --- one trial ----------------------------------------------------------------------------------------


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


# --- the search ---------------------------------------------------------------------------------------


@dataclass
class TuneResult:
    """What a search found. ``default_dice`` is trial 0's (the default configuration), None if it did not complete."""

    out: Path
    best_trial: int
    best_dice: float
    best_params: dict
    default_dice: float | None
    complete: int
    pruned: int
    failed: int
    table: str  # Markdown, one row per trial
    notes: list[str]


def tune(
    data: str | Path | None = None,
    trials: int = 20,
    time: float = 60.0,
    space: str | Path | dict | None = None,
    out: str | Path = "runs/tune",
    pruner: str = "median",
    config: str | Path | None = None,
    verbose: bool = True,
    **options,
) -> TuneResult:
    """Search training hyperparameters with Optuna (TPE) within a total time budget; resumable.

    Args:
        data: Training data, as for ``train`` (its ``val`` split, ``--val`` or ``--val-fraction`` gives the score).
        trials: Trials in all; those already in ``OUT/study.db`` count (rerun with more to extend a search).
        time: Minutes for the trials this call runs; each gets ``time / trials still to run``.
        space: A search-space YAML file or dict (docs/tuning.md); default :data:`DEFAULT_SPACE`.
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
    optuna = optuna_module()
    say = print if verbose else (lambda *a, **k: None)
    started = clock.monotonic()
    if trials < 1:
        raise UnetkitError(f"trials must be >= 1, got {trials}")
    if time <= 0:
        raise UnetkitError(f"time must be a positive number of minutes for the whole search, got {time}")
    fixed = load_config_file(config) if config is not None else {}
    check_keys(options, "argument")
    fixed.update({k: v for k, v in options.items() if v is not None})
    data = str(data or fixed.get("data") or "")
    ignored = [k for k in ("out", "time") if k in fixed]
    notes = [f"{config}: {k} is set by tune per trial; ignored" for k in ignored]
    fixed = {k: v for k, v in fixed.items() if k not in ("data", "out", "time")}
    space = DEFAULT_SPACE if space is None else space if isinstance(space, dict) else load_space(space)
    space = check_space(space, "search space")
    searched = {k: v for k, v in space.items() if k not in fixed}  # a fixed option is not searched
    notes += [f"{k} is fixed to {fixed[k]!r}, so it is not searched" for k in space if k in fixed]
    if not searched:
        raise UnetkitError("every option of the search space is fixed by an option given; nothing to search")

    from unetkit.engine.trainer import load_split

    base = make_config(data=data, **fixed)  # refuses bad options and missing data before any trial
    load_split(base)
    defaults, outside = default_params(searched, base)
    notes += outside
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    kept = {k: v for k, v in fixed.items() if k not in RUNTIME}  # what a resumed search must share with this one
    setup = json.dumps({"data": str(Path(data).resolve()), "space": searched, "fixed": kept}, sort_keys=True)

    storage = f"sqlite:///{(out / 'study.db').resolve().as_posix()}"
    study = optuna.create_study(study_name=STUDY, storage=storage, direction="maximize", pruner=make_pruner(pruner), load_if_exists=True)
    # Seeded by the trials so far: a resumed search does not draw its first random trials again.
    study.sampler = optuna.samplers.TPESampler(seed=base.seed + len(study.trials), n_startup_trials=max(3, min(10, trials // 3)))
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

    done = sum(1 for t in study.trials if _finished(t))
    remaining = max(0, trials - done)
    reserve = min(30.0, 0.05 * time * 60)  # seconds kept for the results at the end
    per_trial = (time * 60 - reserve) / max(remaining, 1) / 60  # minutes
    trial_options = {**TRIAL_DEFAULTS, **fixed}
    if "mlflow" in base.log and base.mlflow_uri is None:  # one MLflow store for the whole search
        from unetkit.tracking import local_store

        trial_options["mlflow_uri"] = local_store(out)
    if done:
        say(f"resuming {out / 'study.db'}: {done} of {trials} trials done")
    if remaining:
        say(f"{remaining} trial(s) of {per_trial:.2f} min each; searching {', '.join(searched)}")
    for _ in range(remaining):
        left = (started + time * 60 - reserve - clock.monotonic()) / 60
        budget = min(per_trial, left)
        if budget < per_trial / 2:
            notes.append(f"the time budget ran out after {done} of {trials} trials")
            break
        done += 1
        frozen = _run_trial(study, searched, data, out, budget, trial_options)
        say(_trial_line(frozen, done, trials, study))
    result = write_results(study, out, data, fixed, notes)
    for note in notes:
        say(f"note: {note}")
    return result


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


def _finished(t) -> bool:
    from optuna.trial import TrialState

    """Counts toward --trials: complete, pruned, or failed on its own (diverged); not interrupted."""
    return t.state in (TrialState.COMPLETE, TrialState.PRUNED) or (t.state == TrialState.FAIL and "error" in t.user_attrs)


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


def _run_trial(study, space: dict, data: str, out: Path, minutes: float, options: dict):
    """Ask for a trial, train it in OUT/trial_NNN, and tell the study how it ended."""
    import optuna
    from optuna.trial import TrialState

    from unetkit.api import train
    from unetkit.engine.trainer import TrainingInterrupted, write_status

    trial = study.ask()
    params = {name: suggest(trial, name, spec) for name, spec in space.items()}
    run_dir = out / f"trial_{trial.number:03d}"
    trial.set_user_attr("run_dir", run_dir.as_posix())
    trial.set_user_attr("minutes", round(minutes, 4))
    pruning = PruneOnDice(trial)
    try:
        result = train(data=data, out=str(run_dir), time=minutes, callbacks=[pruning], **{**options, **params})
    except optuna.TrialPruned as e:
        trial.set_user_attr("note", f"pruned at epoch {pruning.epoch}")
        write_status(run_dir, status="pruned", epoch=pruning.epoch, reason=str(e))
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


# --- results ------------------------------------------------------------------------------------------


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def _state(t) -> str:
    from optuna.trial import TrialState

    if t.state == TrialState.FAIL:
        return "failed" if "error" in t.user_attrs else "interrupted"
    return t.state.name.lower()


def _score(t) -> float | None:
    """A trial's validation mean Dice: its value when complete, else the best it reported."""
    if t.value is not None:
        return t.value
    return max(t.intermediate_values.values()) if t.intermediate_values else None


def _trial_line(t, done: int, trials: int, study) -> str:
    score = _score(t)
    state = t.user_attrs.get("note") or _state(t)
    best = _best(study)
    best_text = f"  best {best.value:.4f} (trial {best.number})" if best is not None else ""
    minutes = t.duration.total_seconds() / 60 if t.duration else 0.0
    params = " ".join(f"{k}={_fmt(v)}" for k, v in t.params.items())
    dice = f"val Dice {score:.4f}" if score is not None else "val Dice -"
    return f"[{done}/{trials}] trial {t.number}: {state}, {dice}, {minutes:.1f} min{best_text}  {params}"


def _best(study):
    from optuna.trial import TrialState

    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    return max(complete, key=lambda t: (t.value, -t.number)) if complete else None


def trial_rows(study) -> list[dict]:
    """One row per trial: number, state, score, epochs, minutes, parameters, run folder and a note."""
    from optuna.trial import TrialState

    names = list(dict.fromkeys(k for t in study.trials for k in t.params))
    rows = []
    for t in study.trials:
        if t.state == TrialState.WAITING:
            continue
        note = t.user_attrs.get("error") or t.user_attrs.get("note") or ""
        if t.user_attrs.get("defaults"):
            note = "; ".join(filter(None, ["defaults", note]))
        if "retry_of" in t.user_attrs:
            note = "; ".join(filter(None, [note, f"repeats interrupted trial {t.user_attrs['retry_of']}"]))
        epochs = t.user_attrs.get("epochs", t.last_step)
        score = _score(t)
        rows.append({
            "trial": t.number, "state": _state(t), "val_dice": "" if score is None else round(score, 4),
            "epochs": "" if epochs is None else epochs, "minutes": round(t.duration.total_seconds() / 60, 2) if t.duration else "",
            **{k: t.params.get(k, "") for k in names}, "run": t.user_attrs.get("run_dir", ""), "note": note,
        })  # fmt: skip
    return rows


def markdown_table(rows: list[dict]) -> str:
    """The trials as a Markdown table (without the run folder)."""
    if not rows:
        return "(no trials)"
    keys = [k for k in rows[0] if k != "run"]
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(_fmt(r[k]) if k != "val_dice" or r[k] == "" else f"{r[k]:.4f}" for k in keys) + " |" for r in rows]
    return "\n".join(lines)


def plot_study(study, out: Path) -> list[str]:
    """``history.png`` (optimisation history) and ``importances.png`` (parameter importances); returns notes on what was skipped."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import optuna
    from optuna.trial import TrialState
    from optuna.visualization.matplotlib import plot_optimization_history, plot_param_importances

    from unetkit.data.io import atomic_write

    def save(ax, name: str) -> None:
        fig = ax.figure
        fig.set_size_inches(7, 4)
        fig.tight_layout()
        with atomic_write(out / name) as tmp:
            fig.savefig(tmp, dpi=100, format="png")
        plt.close(fig)

    notes = []
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    with warnings.catch_warnings(), matplotlib.rc_context():  # optuna's plots switch the global style to ggplot
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        save(plot_optimization_history(study, target_name="validation mean Dice"), "history.png")
        if len(complete) < MIN_IMPORTANCE_TRIALS:
            (out / "importances.png").unlink(missing_ok=True)
            notes.append(f"no importances.png: parameter importances need {MIN_IMPORTANCE_TRIALS} completed trials, this search has {len(complete)}")
        else:
            try:
                # fANOVA (a random forest): Optuna's default PED-ANOVA ranks noise first on a dozen trials.
                evaluator = optuna.importance.FanovaImportanceEvaluator(seed=0)
                save(plot_param_importances(study, evaluator=evaluator, target_name="validation mean Dice"), "importances.png")
            except ImportError:
                notes.append("no importances.png: parameter importances need scikit-learn: pip install 'unetkit[tune]'")
            except (ValueError, RuntimeError) as e:  # e.g. every completed trial has the same parameters
                notes.append(f"no importances.png: {e}")
    return notes


def write_results(study, out: Path, data: str, fixed: dict, notes: list[str]) -> TuneResult:
    """trials.csv, the plots, and for the best trial ``best.yaml`` and ``best.pt``."""
    from optuna.trial import TrialState

    from unetkit.data.io import atomic_write

    rows = trial_rows(study)
    buf = io.StringIO()
    if rows:
        writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    with atomic_write(out / "trials.csv") as tmp:
        Path(tmp).write_text(buf.getvalue())
    notes += plot_study(study, out)
    best = _best(study)
    if best is None:
        errors = [f"trial {t.number}: {t.user_attrs['error']}" for t in study.trials if "error" in t.user_attrs]
        raise UnetkitError(f"no trial of {out / 'study.db'} completed" + (f"; first error: {errors[0]}" if errors else "") +
                           "; see trials.csv, and give the trials more --time or fewer --trials")  # fmt: skip
    defaults = [t for t in study.trials if t.user_attrs.get("defaults") and t.state == TrialState.COMPLETE]
    default_dice = defaults[0].value if defaults else None
    counts = {s: sum(1 for t in study.trials if t.state == s) for s in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)}

    values = {"data": data, **fixed, **best.params, "time": best.user_attrs["minutes"]}
    make_config(**values)  # what we write, train --config accepts
    header = (
        f"# unetkit tune: the best of {len(rows)} trials in {out.as_posix()}: trial {best.number}, validation mean Dice {best.value:.4f}"
        + (f" (the defaults, trial {defaults[0].number}: {default_dice:.4f})" if defaults else "") + ".\n"
        "# time is the budget each trial had; raise it, or set epochs, to train longer:\n"
        f"#   unetkit train --config {(out / 'best.yaml').as_posix()} --out runs/best\n"
    )  # fmt: skip
    with atomic_write(out / "best.yaml") as tmp:
        Path(tmp).write_text(header + yaml.safe_dump(values, sort_keys=False))
    with atomic_write(out / "best.pt") as tmp:
        shutil.copyfile(Path(best.user_attrs["run_dir"]) / "best.pt", tmp)
    return TuneResult(
        out=out, best_trial=best.number, best_dice=best.value, best_params=dict(best.params), default_dice=default_dice,
        complete=counts[TrialState.COMPLETE], pruned=counts[TrialState.PRUNED], failed=counts[TrialState.FAIL],
        table=markdown_table(rows), notes=notes,
    )  # fmt: skip
