"""Tests of the data set validator: one generator of problems, stopped at the first error or run to its end."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from unetkit.data.checks import Problem, error, run_checks, warning
from unetkit.data.dataset import load_spec, validate
from unetkit.data.folders import scan_folder
from unetkit.errors import UnetkitError


def _png(path: Path, array) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(array, dtype=np.uint8)).save(path)
    return path


def _checks(problems: list[Problem], result: str):
    yield from problems
    return result


def test_run_checks_stops_at_the_first_error_or_collects_all(tmp_path):
    found = [warning(tmp_path / "a.png", tmp_path, "odd"), error(tmp_path / "b.png", tmp_path, "bad", "b.png is bad"),
             error(tmp_path / "c.png", tmp_path, "worse")]  # fmt: skip
    with pytest.raises(UnetkitError, match=r"^b\.png is bad$"):
        run_checks(_checks(found, "done"))
    collected: list[Problem] = []
    assert run_checks(_checks(found, "done"), collected) == "done"
    assert [str(p) for p in collected] == ["warning: a.png: odd", "error: b.png: bad", "error: c.png: worse"]
    assert collected[2].text == f"{tmp_path / 'c.png'}: worse"  # the default one-line message names the whole path


def test_validate_lists_every_unpaired_file_and_load_spec_raises_the_first(tmp_path):
    for key in ("a", "b", "c"):
        _png(tmp_path / "images" / f"{key}.png", np.zeros((3, 3)))
    _png(tmp_path / "masks" / "a.png", np.zeros((3, 3)))
    problems: list[Problem] = []
    found = run_checks(validate(tmp_path), problems)
    assert [(p.file, p.message) for p in problems] == [
        ("images/b.png", "has no mask; add masks/b.png (any image extension) or remove the image"),
        ("images/c.png", "has no mask; add masks/c.png (any image extension) or remove the image"),
    ]
    assert found.unpaired_images == [tmp_path / "images" / "b.png", tmp_path / "images" / "c.png"]
    assert found.spec is not None and [p.key for p in found.spec.pairs] == ["a"]  # the labelled pairs go on
    with pytest.raises(UnetkitError) as raised:
        load_spec(tmp_path)
    assert str(raised.value) == problems[0].text == "2 images have no mask, e.g. images/b.png; expected masks/b.png (any image extension)"


def test_scan_folder_reports_duplicates_and_skipped_files(tmp_path):
    _png(tmp_path / "1.png", np.zeros((2, 2)))
    _png(tmp_path / "1.tif", np.zeros((2, 2)))
    _png(tmp_path / ".hidden" / "2.png", np.zeros((2, 2)))
    (tmp_path / "notes.txt").write_text("x")
    scan = scan_folder(tmp_path)
    assert scan.files == {"1": tmp_path / "1.png"}
    assert scan.duplicates == [(tmp_path / "1.png", tmp_path / "1.tif")]
    assert scan.skipped == [tmp_path / "notes.txt"]


def test_yaml_problems_of_splits_names_and_classes_are_all_listed_and_load_spec_raises_the_first(tmp_path):
    for key in ("1", "2"):
        _png(tmp_path / "images" / f"{key}.png", np.zeros((3, 3)))
        _png(tmp_path / "masks" / f"gt{key}.png", np.zeros((3, 3)))
    (tmp_path / "dataset.yaml").write_text("splits: [train, val]\nmask_names: gt\nclasses: {a: 0, b: [0]}\n")
    problems: list[Problem] = []
    found = run_checks(validate(tmp_path), problems)
    assert [p.message.split(";")[0] for p in problems] == [
        "classes: value 0 is listed for both 'a' and 'b'",  # the options come first and stop the checks
    ]
    assert found.spec is None
    (tmp_path / "dataset.yaml").write_text("splits: [train, val]\nmask_names: gt\nclasses: {a: 0, b: 1}\n")
    problems = []
    run_checks(validate(tmp_path), problems)
    assert [p.message.split(";")[0] for p in problems] == [
        "'splits' is a list",
        "mask_names 'gt' must hold one placeholder, {number} or {stem}, and no other braces",
    ]
    with pytest.raises(UnetkitError, match=r"dataset\.yaml: 'splits' is a list; expected a mapping"):
        load_spec(tmp_path)
