"""The results of a search in OUT: trials.csv, history.png, importances.png, and for the best trial best.yaml and best.pt."""

from __future__ import annotations

import csv
import io
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path

import yaml

from unetkit.config import make_config
from unetkit.engine.run_folder import RunFolder
from unetkit.errors import UnetkitError
from unetkit.files import atomic_write

MIN_IMPORTANCE_TRIALS = 5  # fewer completed trials give importances that are noise


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


def trial_line(t, done: int, trials: int, study) -> str:
    """The line ``tune`` prints for a finished trial: state, score, minutes, the best so far, parameters."""
    score = _score(t)
    state = t.user_attrs.get("note") or _state(t)
    best = best_trial(study)
    best_text = f"  best {best.value:.4f} (trial {best.number})" if best is not None else ""
    minutes = t.duration.total_seconds() / 60 if t.duration else 0.0
    params = " ".join(f"{k}={_fmt(v)}" for k, v in t.params.items())
    dice = f"val Dice {score:.4f}" if score is not None else "val Dice -"
    return f"[{done}/{trials}] trial {t.number}: {state}, {dice}, {minutes:.1f} min{best_text}  {params}"


def best_trial(study):
    """The completed trial with the highest validation mean Dice (the first of equals), or None."""
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
    # matplotlib (about a second to import) and optuna (optional) load here, when a search has results to draw.
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import optuna
    from optuna.trial import TrialState
    from optuna.visualization.matplotlib import plot_optimization_history, plot_param_importances

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

    rows = trial_rows(study)
    buf = io.StringIO()
    if rows:
        writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    with atomic_write(out / "trials.csv") as tmp:
        Path(tmp).write_text(buf.getvalue())
    notes += plot_study(study, out)
    best = best_trial(study)
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
        shutil.copyfile(RunFolder(best.user_attrs["run_dir"]).best, tmp)
    return TuneResult(
        out=out, best_trial=best.number, best_dice=best.value, best_params=dict(best.params), default_dice=default_dice,
        complete=counts[TrialState.COMPLETE], pruned=counts[TrialState.PRUNED], failed=counts[TrialState.FAIL],
        table=markdown_table(rows), notes=notes,
    )  # fmt: skip
