"""Tests of unetkit.data.splits: the shape of ``splits:``, the implied train split, overlaps."""

import re
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from unetkit.data.checks import Problem, run_checks
from unetkit.data.dataset import load_spec, validate
from unetkit.data.splits import read_splits
from unetkit.errors import UnetkitError


def _data(root: Path, n: int = 6, **config) -> Path:
    for i in range(n):
        for folder in ("images", "masks"):
            (root / folder).mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.zeros((3, 3), np.uint8)).save(root / folder / f"{i}.png")
    (root / "dataset.yaml").write_text(yaml.safe_dump(config))
    return root


def _problems(root: Path) -> list[str]:
    problems: list[Problem] = []
    run_checks(validate(root), problems)
    return [f"{p.level}: {p.message}" for p in problems]


def _keys(root: Path, split: str) -> list[str]:
    return [p.key for p in load_spec(root, split=split).pairs]


@pytest.mark.parametrize("value,expected", [
    (None, {}),
    ({"train": "1*", "val": ["2", 3]}, {"train": ["1*"], "val": ["2", "3"]}),  # one pattern, numbers as text
    ({"hard": ["4"]}, {"hard": ["4"]}),  # other names are allowed, for evaluate --split
])  # fmt: skip
def test_read_splits(tmp_path, value, expected):
    assert run_checks(read_splits(value, tmp_path / "dataset.yaml", tmp_path)) == expected


@pytest.mark.parametrize("value,fragment", [
    (["train", "val"], "'splits' is a list; expected a mapping of split names to lists of key patterns"),
    ("train", "'splits' is str 'train'; expected a mapping"),
    ({"val": []}, "split 'val' is empty; give it key patterns"),
    ({"val": None}, "split 'val' is empty"),
    ({"val": {"a": 1}}, "split 'val' is {'a': 1}; expected a list of key patterns"),
    ({"val": [["1"]]}, "expected a list of key patterns"),
    ({"validation": ["1"]}, "split 'validation' is not a split name training reads; did you mean 'val'?"),
    ({"Train": ["1"]}, "did you mean 'train'?"),
    ({"tests": ["1"]}, "did you mean 'test'?"),
])  # fmt: skip
def test_malformed_splits_are_errors(tmp_path, value, fragment):
    with pytest.raises(UnetkitError, match="^" + re.escape(f"{tmp_path / 'dataset.yaml'}: ") + ".*" + re.escape(fragment)):
        run_checks(read_splits(value, tmp_path / "dataset.yaml", tmp_path))


def test_a_list_of_splits_stops_training_data(tmp_path):
    root = _data(tmp_path, splits=["train", "val"])
    with pytest.raises(UnetkitError, match=r"'splits' is a list"):
        load_spec(root)


@pytest.mark.parametrize("splits,train,note", [
    ({"val": ["[45]"]}, ["0", "1", "2", "3"], "val"),
    ({"val": ["5"], "test": ["0", "1"]}, ["2", "3", "4"], "val or test"),
    ({"test": ["0"]}, ["1", "2", "3", "4", "5"], "test"),
])  # fmt: skip
def test_train_is_implied_as_every_pair_not_held_out(tmp_path, splits, train, note):
    root = _data(tmp_path, splits=splits)
    spec = load_spec(root)
    assert "train" in spec.splits and len(spec.pairs) == 6
    assert _keys(root, "train") == train
    found = run_checks(validate(root))
    assert found.implied_train and [p.key for p in found.splits["train"]] == train


def test_explicit_train_is_not_extended(tmp_path):
    root = _data(tmp_path, splits={"train": ["[0-2]"], "val": ["3"]})
    assert _keys(root, "train") == ["0", "1", "2"] and _keys(root, "val") == ["3"]
    assert _problems(root) == ["warning: 2 pair(s) are in no split (e.g. '4'); training does not use them"]


def test_identical_train_and_val_are_an_error(tmp_path):
    root = _data(tmp_path, splits={"train": ["*"], "val": ["[0-5]"]})
    with pytest.raises(UnetkitError, match=r"dataset\.yaml: splits 'train' and 'val' are identical \(6 pairs\)"):
        load_spec(root)


def test_overlapping_splits_warn_with_the_count(tmp_path):
    root = _data(tmp_path, splits={"train": ["[0-3]"], "val": ["[3-5]"], "test": ["5"]})
    assert _problems(root) == [
        "warning: splits 'train' and 'val' share 1 pair(s) (e.g. '3'); scores on 'val' include pairs of 'train': make the patterns disjoint",
        "warning: splits 'val' and 'test' share 1 pair(s) (e.g. '5'); scores on 'test' include pairs of 'val': make the patterns disjoint",
    ]
    assert _keys(root, "val") == ["3", "4", "5"]  # a warning: still usable


def test_splits_that_match_nothing(tmp_path):
    root = _data(tmp_path, splits={"train": ["[0-4]", "x*"], "val": ["5"], "hard": ["img_*"]})
    assert _problems(root) == [  # in the yaml's order (safe_dump sorts the keys)
        "warning: split 'hard' patterns ['img_*'] match no pair key (e.g. '0'); fix them",
        "warning: split 'train' pattern 'x*' matches no pair key; fix or remove it",
    ]
    with pytest.raises(UnetkitError, match=r"split 'hard' patterns \['img_\*'\] match no pair key"):
        load_spec(root, split="hard")
    root = _data(tmp_path / "b", splits={"train": ["[0-4]"], "val": ["img_5"]})
    with pytest.raises(UnetkitError, match=r"split 'val' patterns \['img_5'\] match no pair key \(e\.g\. '0'\); fix them"):
        load_spec(root)  # training reads val: an error even when no split is asked for


def test_an_undefined_split_lists_the_implied_train(tmp_path):
    root = _data(tmp_path, splits={"val": ["5"]})
    with pytest.raises(UnetkitError, match=r"split 'test' is not defined \(defined: val, train \(implied\)\)"):
        load_spec(root, split="test")
