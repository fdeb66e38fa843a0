"""The ``splits:`` of a dataset.yaml: named subsets of the pairs, as glob patterns on pair keys.

::

    splits:                 # a mapping: split name -> a pattern or a list of patterns
      train: ["[0-9]", "1[0-9]"]
      val: ["2[0-4]"]
      test: ["2[5-9]"]

Training reads ``train`` and ``val``; ``evaluate --split NAME`` any split. The rules, each checked by
:func:`read_splits` (the shape) and :func:`resolve_splits` (against the pairs):

- ``splits`` must be a mapping; a split's patterns a non-empty list of strings (numbers are read as text);
- a name that looks like train, val or test but is not (``validation``, ``training``, ...) is an error:
  training would not find it;
- a split that matches no pair is an error; a pattern that matches none a warning;
- with ``val`` or ``test`` but no ``train``, the ``train`` split is implied: every pair in neither;
- ``train`` identical to ``val`` or ``test`` is an error; splits of these three that share some pairs
  get a warning with the count.
"""

from __future__ import annotations

import difflib
import fnmatch
from collections.abc import Generator
from pathlib import Path
from typing import Protocol

from unetkit.data.checks import Problem, error, warning

STANDARD = ("train", "val", "test")
_SYNONYMS = {"training": "train", "trn": "train", "valid": "val", "validation": "val", "validate": "val",
             "dev": "val", "testing": "test", "tst": "test"}  # fmt: skip
_FORM = "a mapping of split names to lists of key patterns, e.g. 'splits: {train: [\"0*\"], val: [\"1*\"]}'"


class Keyed(Protocol):
    key: str


def _standard_name(name: str) -> str | None:
    """The standard split ``name`` was probably meant to be, or None when it is one or is unlike them."""
    if name in STANDARD:
        return None
    lowered = name.lower().replace("-", "").replace("_", "")
    if lowered in STANDARD:
        return lowered
    close = difflib.get_close_matches(lowered, STANDARD, n=1, cutoff=0.75)
    return _SYNONYMS.get(lowered) or (close[0] if close else None)


def read_splits(value: object, where: Path, root: Path) -> Generator[Problem, None, dict[str, list[str]]]:
    """The splits of the yaml as name -> patterns; malformed entries are errors and are left out.

    Args:
        value: The yaml's ``splits`` value (None when absent).
        where: The dataset.yaml, named in problems.
        root: The data set root.
    """
    if value is None:
        return {}
    if not isinstance(value, dict):
        shown = "a list" if isinstance(value, list) else f"{type(value).__name__} {value!r}"
        yield error(where, root, f"'splits' is {shown}; expected {_FORM}")
        return {}
    splits: dict[str, list[str]] = {}
    for name, patterns in value.items():
        name = str(name)
        meant = _standard_name(name)
        if meant is not None:
            yield error(where, root, f"split '{name}' is not a split name training reads; did you mean '{meant}'? (train, val and test are)")
            continue
        patterns = [patterns] if isinstance(patterns, (str, int)) and not isinstance(patterns, bool) else patterns
        if not patterns:
            yield error(where, root, f"split '{name}' is empty; give it key patterns (e.g. {name}: [\"1*\"]) or remove it")
            continue
        if not isinstance(patterns, list) or not all(isinstance(p, (str, int)) and not isinstance(p, bool) for p in patterns):
            yield error(where, root, f"split '{name}' is {patterns!r}; expected a list of key patterns (text), e.g. {name}: [\"1*\", \"2?\"]")
            continue
        splits[name] = [str(p) for p in patterns]
    return splits


def _overlaps(chosen: dict[str, list[Keyed]], where: Path, root: Path) -> Generator[Problem, None, None]:
    """Errors for train identical to val or test, warnings for shared pairs among train, val and test."""
    present = [name for name in STANDARD if name in chosen]
    for n, first in enumerate(present):
        for second in present[n + 1 :]:
            keys = {p.key for p in chosen[first]}
            other = {p.key for p in chosen[second]}
            shared = sorted(keys & other)
            if not shared:
                continue
            if keys == other and first == "train":
                yield error(where, root, f"splits '{first}' and '{second}' are identical ({len(keys)} pairs): {second} scores would "
                                         f"be on training pairs; give '{second}' other pairs, or drop 'train' to train on the rest")  # fmt: skip
            else:
                yield warning(where, root, f"splits '{first}' and '{second}' share {len(shared)} pair(s) (e.g. '{shared[0]}'); "
                                           f"scores on '{second}' include pairs of '{first}': make the patterns disjoint")  # fmt: skip


def resolve_splits(pairs: list[Keyed], splits: dict[str, list[str]], where: Path, root: Path) -> Generator[Problem, None, tuple[dict, bool]]:
    """The pairs of each split, with the ``train`` split implied when only ``val`` or ``test`` is given.

    Args:
        pairs: All pairs of the data set.
        splits: From :func:`read_splits`.
        where: The dataset.yaml, named in problems.
        root: The data set root.

    Returns:
        ``(chosen, implied)``: split name -> its pairs in the order of ``pairs`` (empty for a split that
        matches no pair), and whether ``train`` was implied.
    """
    chosen: dict[str, list[Keyed]] = {}
    for name, patterns in splits.items():
        matched = [p for p in pairs if any(fnmatch.fnmatchcase(p.key, pattern) for pattern in patterns)]
        chosen[name] = matched
        if not matched:  # training reads train and val: an error; other splits only when asked for
            yield (error if name in ("train", "val") else warning)(where, root, _matches_none(name, patterns, pairs))
            continue
        for pattern in patterns:
            if not any(fnmatch.fnmatchcase(p.key, pattern) for p in pairs):
                yield warning(where, root, f"split '{name}' pattern '{pattern}' matches no pair key; fix or remove it")
    implied = "train" not in splits and ("val" in splits or "test" in splits)
    if implied:
        held_out = {p.key for name in ("val", "test") for p in chosen.get(name, [])}
        chosen["train"] = [p for p in pairs if p.key not in held_out]
        if not chosen["train"]:
            yield error(where, root, f"the implied split 'train' (every pair not in {implied_from(splits)}) is empty; leave some pairs for training")
            del chosen["train"]
    yield from _overlaps(chosen, where, root)
    if "train" in splits:
        used = {p.key for members in chosen.values() for p in members}
        unused = [p.key for p in pairs if p.key not in used]
        if unused:
            yield warning(where, root, f"{len(unused)} pair(s) are in no split (e.g. '{unused[0]}'); training does not use them")
    return chosen, implied


def implied_from(splits: dict) -> str:
    """The held-out splits an implied ``train`` excludes, in words: ``"val"``, ``"val or test"``."""
    return " or ".join(name for name in ("val", "test") if name in splits)


def _matches_none(name: str, patterns: list[str], pairs: list[Keyed]) -> str:
    example = f" (e.g. '{pairs[0].key}')" if pairs else ""
    return f"split '{name}' patterns {patterns} match no pair key{example}; fix them"


def select_split(chosen: dict[str, list[Keyed]], split: str, splits: dict, pairs: list[Keyed], where: Path, root: Path) -> Generator[Problem, None, list | None]:
    """The pairs of ``split`` (``chosen`` and ``splits`` from :func:`resolve_splits` and :func:`read_splits`);
    None, with an error, when it is not defined or matches no pair."""
    if split not in chosen:
        defined = ", ".join(name if name in splits else f"{name} (implied)" for name in chosen) or "none"
        yield error(where, root, f"split '{split}' is not defined (defined: {defined}); add it to 'splits:'")
        return None
    if not chosen[split]:
        yield error(where, root, _matches_none(split, splits[split], pairs))
        return None
    return chosen[split]
