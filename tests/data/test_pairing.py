"""Tests of unetkit.data.pairing: names paired by number and by the yaml's name templates."""

from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from unetkit.data.checks import Problem, run_checks
from unetkit.data.dataset import load_spec, validate
from unetkit.data.pairing import template
from unetkit.errors import UnetkitError


def _files(root: Path, images: list[str], masks: list[str], **config) -> Path:
    for folder, names in (("images", images), ("masks", masks)):
        for name in names:
            path = root / folder / name
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.zeros((3, 3), np.uint8)).save(path)
    if config:
        (root / "dataset.yaml").write_text(yaml.safe_dump(config))
    return root


def _pairs(root: Path) -> list[tuple[str, str]]:
    return [(p.key, p.mask.relative_to(root / "masks").as_posix()) for p in load_spec(root).pairs]


def _problems(root: Path) -> list[str]:
    problems: list[Problem] = []
    run_checks(validate(root), problems)
    return [f"{p.level}: {p.file}: {p.message}" for p in problems]


@pytest.mark.parametrize("text,name,value", [
    ("labels{number}", "labels00000007", 7),
    ("{number}", "07", 7),
    ("{stem}_gt", "a b_gt", "a b"),
    ("img.{stem}", "img.x", "x"),  # the dot is literal
])  # fmt: skip
def test_template_values(text, name, value):
    rule = template(text, "mask_names")
    assert rule.value(f"sub/{name}") == ("sub", value)


@pytest.mark.parametrize("text,name", [("labels{number}", "labels7x"), ("{number}", "a7"), ("{stem}_gt", "a_gtx"), ("img.{stem}", "imgXx")])
def test_names_off_the_template(text, name):
    assert template(text, "mask_names").value(name) is None  # the whole name must fit; the text is literal


@pytest.mark.parametrize("text", ["labels", "{stem}{number}", "{id}_mask", "{number}_{number}", "x}{stem}"])
def test_malformed_templates(text):
    assert template(text, "mask_names") is None


def test_numbers_pair_names_with_other_prefix_and_padding(tmp_path):
    root = _files(tmp_path, ["07.tif", "8.png", "10.png"], ["labels00000007.png", "labels00000008.png", "labels00000010.png"])
    assert _pairs(root) == [("07", "labels00000007.png"), ("8", "labels00000008.png"), ("10", "labels00000010.png")]


def test_numbers_pair_within_subfolders_only(tmp_path):
    root = _files(tmp_path, ["a/1.png", "b/1.png"], ["a/mask_001.png", "b/mask_001.png"])
    assert _pairs(root) == [("a/1", "a/mask_001.png"), ("b/1", "b/mask_001.png")]


def test_two_masks_with_one_number_are_an_error_naming_both(tmp_path):
    root = _files(tmp_path, ["07.png", "08.png"], ["labels7.png", "labels007.png", "labels8.png"])
    with pytest.raises(UnetkitError, match=r"^masks/labels007\.png and masks/labels7\.png both match images/07\.png by their number 7; keep one"):
        load_spec(root)


def test_two_images_with_one_number_are_an_error_naming_both(tmp_path):
    root = _files(tmp_path, ["7.png", "07.png"], ["lab7.png"])
    with pytest.raises(UnetkitError, match=r"^images/07\.png and images/7\.png both match masks/lab7\.png by their number 7"):
        load_spec(root)


@pytest.mark.parametrize("images,masks", [
    (["a1.png", "b2.png"], ["c1.png", "c2.png"]),  # the images differ by more than their number
    (["1.png", "2.png"], ["m1.png", "n2.png"]),  # so do the masks
    (["2d_1.png"], ["mask_2d_001.png"]),  # two numbers in a name
])  # fmt: skip
def test_numbers_do_not_pair_names_that_differ_otherwise(tmp_path, images, masks):
    root = _files(tmp_path, images, masks)
    with pytest.raises(UnetkitError, match=r"have no image"):
        load_spec(root)


def test_mask_names_template_with_number(tmp_path):
    root = _files(tmp_path, ["img_3.png", "img_12.png"], ["lab_0003.png", "lab_0012.png"], image_names="img_{number}", mask_names="lab_{number}")
    assert _pairs(root) == [("img_3", "lab_0003.png"), ("img_12", "lab_0012.png")]


def test_mask_names_template_with_stem_and_default_image_names(tmp_path):
    root = _files(tmp_path, ["a.png", "sub/b.png"], ["a_gt.png", "sub/b_gt.png"], mask_names="{stem}_gt")
    assert _pairs(root) == [("a", "a_gt.png"), ("sub/b", "sub/b_gt.png")]


def test_templates_report_names_off_the_template_and_doubles(tmp_path):
    root = _files(tmp_path, ["1.png", "2.png", "3.png"], ["labels1.png", "labels01.png", "labels2.png", "notes.png"], mask_names="labels{number}")
    assert _problems(root) == [
        "error: masks/labels1.png: matches the same image as masks/labels01.png (number 1); keep one of them",
        "error: masks/notes.png: name does not fit mask_names 'labels{number}'; rename it, move it away, or fix mask_names in dataset.yaml",
        "error: images/3.png: has no mask; add masks/labels3.png (any image extension) or remove the image",
    ]
    with pytest.raises(UnetkitError, match=r"^masks/labels01\.png and masks/labels1\.png both match the same image \(number 1\)"):
        load_spec(root)


@pytest.mark.parametrize("config,fragment", [
    ({"mask_names": "labels"}, r"mask_names 'labels' must hold one placeholder, \{number\} or \{stem\}"),
    ({"mask_names": 7}, r"mask_names 7 must hold one placeholder"),
    ({"mask_names": "{stem}_m", "image_names": "{number}"}, r"image_names and mask_names use different placeholders"),
])  # fmt: skip
def test_bad_templates_name_the_yaml_key(tmp_path, config, fragment):
    root = _files(tmp_path, ["1.png"], ["1.png"], **config)
    with pytest.raises(UnetkitError, match=r"dataset\.yaml: " + fragment):
        load_spec(root)


def test_a_mask_without_image_under_templates_names_the_image_it_expects(tmp_path):
    root = _files(tmp_path, ["1.png"], ["labels1.png", "labels9.png"], mask_names="labels{number}")
    with pytest.raises(UnetkitError, match=r"^1 masks have no image, e\.g\. masks/labels9\.png; expected images/9\.png"):
        load_spec(root)
