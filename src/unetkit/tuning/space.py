"""The search space of ``unetkit tune``: the default one, a YAML file's, checked against the training options.

The format (``--space space.yaml``, docs/tuning.md): one entry per option, ``{type: float|int, low, high,
log?, step?}`` or ``{type: categorical, choices: [...]}``.
"""

from __future__ import annotations

import math
from dataclasses import fields
from pathlib import Path

import yaml

from unetkit.config import TrainConfig, make_config
from unetkit.errors import UnetkitError
from unetkit.options import check_keys, field_type
from unetkit.yaml_files import read_yaml

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
EXAMPLE = "e.g. lr: {type: float, low: 1e-4, high: 1e-2, log: true}"


def load_space(path: str | Path) -> dict:
    """Read and check a search-space YAML file (format: docs/tuning.md)."""
    path = Path(path)
    try:
        space = read_yaml(path)
    except FileNotFoundError:
        raise UnetkitError(f"{path}: search space file not found") from None
    except yaml.YAMLError as e:
        raise UnetkitError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
    return check_space(space, str(path))


def check_space(space, where: str) -> dict:
    """Check a search space; returns it with numbers normalised. Errors name ``where``, the option and the fix.

    Example:
        >>> check_space({"lr": {"type": "float", "low": "1e-4", "high": 0.01, "log": True}}, "space.yaml")
        {'lr': {'type': 'float', 'low': 0.0001, 'high': 0.01, 'log': True}}
    """
    if not isinstance(space, dict) or not space:
        raise UnetkitError(f"{where}: expected a mapping of option: {{type: ...}}, {EXAMPLE}")
    check_keys(TrainConfig, space, where)
    by_name = {f.name: f for f in fields(TrainConfig)}
    return {name: _check_entry(name, spec, field_type(TrainConfig, by_name[name]), f"{where}: {name}") for name, spec in space.items()}


def _check_entry(name: str, spec, option: type, at: str) -> dict:
    """One option's entry, checked: its fields, and each end of a range or each choice as a value of the option."""
    if name in SET_BY_TUNE:
        raise UnetkitError(f"{at}: set by tune itself ({', '.join(SET_BY_TUNE)}), so it cannot be searched; remove it")
    if not isinstance(spec, dict) or "type" not in spec:
        raise UnetkitError(f"{at}: expected {{type: float|int|categorical, ...}}, got {spec!r}; {EXAMPLE}")
    kind = spec["type"]
    if kind not in SPEC_FIELDS:
        raise UnetkitError(f"{at}: type must be float, int or categorical, got {kind!r}")
    extra = sorted(set(spec) - SPEC_FIELDS[kind] - {"type"})
    if extra:
        raise UnetkitError(f"{at}: unknown field(s) {', '.join(extra)} for type {kind}; it takes {', '.join(sorted(SPEC_FIELDS[kind]))}")
    if option is list:
        raise UnetkitError(f"{at}: list options cannot be searched; fix it with --{name.replace('_', '-')} instead")
    spec = _check_choices(dict(spec), option, at) if kind == "categorical" else _check_range(dict(spec), kind, option, at)
    for value in spec["choices"] if kind == "categorical" else (spec["low"], spec["high"]):
        if not _fits(value, option):
            raise UnetkitError(f"{at}: {value!r} is not a valid {option.__name__} for this option")
        try:
            make_config(**{name: value})
        except UnetkitError as e:
            raise UnetkitError(f"{at}: {e}") from None
    return spec


def _check_choices(spec: dict, option: type, at: str) -> dict:
    choices = spec.get("choices")
    if not isinstance(choices, list) or not choices:
        raise UnetkitError(f"{at}: choices must be a non-empty list, e.g. choices: [sgd, adam]")
    if option in (int, float):
        choices = [c if c is None else _number(c, at, "each choice") for c in choices]
    spec["choices"] = choices
    return spec


def _check_range(spec: dict, kind: str, option: type, at: str) -> dict:
    if option not in (int, float):
        raise UnetkitError(f"{at}: takes {option.__name__} values, not a range; use type: categorical with choices")
    if kind == "float" and option is int:
        raise UnetkitError(f"{at}: takes whole numbers; use type: int")
    if "low" not in spec or "high" not in spec:
        raise UnetkitError(f"{at}: type {kind} needs low and high, {EXAMPLE}")
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
    return spec


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
