"""Typed options: the one way an option is declared, with its default, help, choices and bounds.

Every public function's options are a dataclass of :func:`opt` fields (``TrainConfig``,
``InferenceOptions``, the commands in :mod:`unetkit.commands`). The same declaration gives the Python
API its defaults and validation and the CLI its flags and help text, so a default is stated once.
This module is at the bottom of the package: it imports nothing of unetkit but the error type.

Example:
    >>> @dataclass(kw_only=True)
    ... class Opts(Options):
    ...     tile: int = opt(512, "input tile size in pixels", low=1)
    >>> Opts.build("predict", tile=256).tile
    256
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import math
import types
import typing
from dataclasses import MISSING, dataclass, field, fields

from unetkit.errors import UnetkitError

PRECISIONS = ("fp32", "bf16", "fp16")  # arithmetic of training and inference; "auto" chooses among them


def opt(default=MISSING, help: str = "", choices: tuple | None = None, *, low: float | None = None,  # noqa: A002 - "help" reads best
        high: float | None = None, above: float | None = None, positional: bool = False, metavar: str | None = None, cli: bool = True,
        negatable: bool = False):
    """A typed option field.

    Args:
        default: The default; omit it for a required argument (a positional or ``--flag`` the CLI requires).
        help: One line for ``--help`` and the docs.
        choices: The allowed values (each item, for list options).
        low, high: Inclusive bounds of a number (None: unbounded). Numbers must be finite whatever the bounds.
        above: An exclusive lower bound (``above=0``: positive).
        positional: On the command line, a positional argument instead of a ``--flag``.
        metavar: The placeholder shown in ``--help``.
        cli: False for options of the Python API only (objects that a command line cannot carry).
        negatable: An output on by default that ``--no-NAME`` turns off (sets None).
    """
    meta = {"help": help, "choices": choices, "low": low, "high": high, "above": above, "positional": positional, "metavar": metavar, "cli": cli,
            "negatable": negatable}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=meta)
    return field(default=default, metadata=meta)


@functools.cache
def _hints(cls: type) -> dict:
    return typing.get_type_hints(cls)  # evaluates every annotation: once per class


def field_type(cls: type, f: dataclasses.Field) -> type:
    """The scalar type of an option (``int | None`` -> int; ``list[float]`` -> list)."""
    hint = _hints(cls)[f.name]
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        hint = [a for a in typing.get_args(hint) if a is not type(None)][0]
    return list if typing.get_origin(hint) is list else hint


def item_type(cls: type, f: dataclasses.Field) -> type:
    """The type of the items of a list option (``list[float] | None`` -> float)."""
    hint = _hints(cls)[f.name]
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        hint = [a for a in typing.get_args(hint) if a is not type(None)][0]
    return typing.get_args(hint)[0]


def check_keys(cls: type, keys, where: str) -> None:
    """Raise UnetkitError for keys that are not options of ``cls``, suggesting the closest one."""
    names = [f.name for f in fields(cls)]
    for key in keys:
        if key not in names:
            close = difflib.get_close_matches(key, names, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f"; options are: {', '.join(names)}"
            raise UnetkitError(f"{where}: unknown option {key!r}{hint}")


def optional(cls: type, f: dataclasses.Field) -> bool:
    """Whether the option may be None (its type is ``X | None``)."""
    hint = _hints(cls)[f.name]
    return (isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union) and type(None) in typing.get_args(hint)


def _check_value(f: dataclasses.Field, kind: type, value) -> None:
    """Raise UnetkitError if ``value`` breaks ``f``'s choices or bounds."""
    choices = f.metadata.get("choices")
    for v in value if isinstance(value, list) else [value]:
        if choices and v not in choices:
            raise UnetkitError(f"{f.name}={v!r} is not one of {', '.join(map(str, choices))}")
    if kind in (int, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind is int and not float(value).is_integer()):
            raise UnetkitError(f"{f.name}={value!r} is not {'an integer' if kind is int else 'a number'}")
        _check_bounds(f, value)


def _check_bounds(f: dataclasses.Field, value: float) -> None:
    low, high, above = f.metadata.get("low"), f.metadata.get("high"), f.metadata.get("above")
    if (not math.isfinite(value) or (low is not None and value < low) or (high is not None and value > high)
            or (above is not None and value <= above)):
        bounds = [f"> {above:g}" if above is not None else "", f">= {low:g}" if low is not None else "", f"<= {high:g}" if high is not None else ""]
        raise UnetkitError(f"{f.name} must be {' and '.join(b for b in bounds if b) or ('a number' if math.isnan(value) else 'a finite number')}, got {value}")


@dataclass(kw_only=True)
class Options:
    """Base of option dataclasses: checks choices and bounds on construction; :meth:`build` checks names."""

    def __post_init__(self) -> None:
        for f in fields(self):
            value, kind = getattr(self, f.name), field_type(type(self), f)
            if kind is list and item_type(type(self), f) is str and isinstance(value, str):  # names, as "tensorboard,mlflow"
                value = [name.strip() for name in value.split(",") if name.strip()]
                setattr(self, f.name, value)
            if value is not MISSING and not (value is None and optional(type(self), f)):  # None: an optional option unset
                _check_value(f, kind, value)

    @classmethod
    def build(cls, where: str, **values):
        """An instance from keyword ``values``: unknown names get a close-match suggestion, missing required
        ones and wrong types a one-line UnetkitError naming ``where`` (a command or file)."""
        check_keys(cls, values, where)
        missing = [f.name for f in fields(cls) if f.name not in values and f.default is MISSING and f.default_factory is MISSING]
        if missing:
            raise UnetkitError(f"{where}: missing {', '.join(missing)}")
        return cls(**values)

    @classmethod
    def pick(cls, source: "Options", **changes):
        """The options of ``cls`` taken from ``source`` (an instance of a dataclass that includes them)."""
        return cls(**{f.name: getattr(source, f.name) for f in fields(cls)}, **changes)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)
