"""The data corpus: masks, pairings and splits that used to be read wrong are refused with one line naming
the file (or the yaml) and the fix, or simply work, with ``unetkit check`` saying what it decided and why.

Refusals: ``train`` exits 2 with one line and writes nothing; ``check`` exits 1 and names the files on
``error:`` lines. Neither touches the data. Successes: ``train`` runs one step and ``check`` prints its
reading (anti-aliased binary masks, instance label images, numbered names, value maps, implied splits).
"""

import io
import json
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
import yaml
from PIL import Image

from tests.conftest import TINY_MODEL
from tests.corpus.kit import Untouched, assert_no_output, expect_error, flags, log_case
from unetkit.cli import main
from unetkit.data.dataset import load_spec
from unetkit.data.synthetic import synthetic_cells

SIZE = 32
TRAIN = ["--epochs", "1", "--steps-per-epoch", "1", *flags(TINY_MODEL)]
FOUR = [f"{i}.png" for i in range(4)]


# --- masks of each kind, 32x32 --------------------------------------------------------------------


def anti_aliased(seed: int, high: int = 255) -> np.ndarray:
    """A 0/high cell mask drawn at twice the size and averaged down: about 4% of its pixels in between."""
    _, mask = synthetic_cells((2 * SIZE, 2 * SIZE), np.random.default_rng(seed))
    small = mask.reshape(SIZE, 2, SIZE, 2).astype(float).mean((1, 3)) / 255 * high  # (32, 32)
    return np.round(small).astype(np.uint16 if high > 255 else np.uint8)


def label_image(seed: int, ids=(1, 2, 3, 4), dtype=np.uint16) -> np.ndarray:
    """4x4 objects with ``ids`` on background 0, and one more (id ``max(ids) + 1``) touching the first."""
    labels = np.zeros((SIZE, SIZE), dtype)
    first = 3 + seed * 5 % 20
    for n, value in enumerate(ids):
        row, col = 3 + 7 * n, (first + 9 * n) % 24
        labels[row : row + 4, col : col + 4] = value
    labels[3:7, first + 4 : first + 8] = max(ids) + 1
    return labels


def blobs(seed: int) -> np.ndarray:
    """A binary 0/255 mask of three separate squares."""
    mask = np.zeros((SIZE, SIZE), np.uint8)
    for n in range(3):
        mask[4 + 9 * n : 10 + 9 * n, 4 + seed : 10 + seed] = 255
    return mask


def jpeg_blobs(seed: int) -> np.ndarray:
    """:func:`blobs` after a trip through JPEG: a fifth of its pixels off 0 and 255, block noise off the edges."""
    buffer = io.BytesIO()
    Image.fromarray(blobs(seed)).save(buffer, format="JPEG", quality=60)
    return np.asarray(Image.open(buffer))


def void_stripes(seed: int) -> np.ndarray:
    """Index stripes of classes 0, 1 and 2, each several regions, with 255 (void) lines between."""
    mask = (np.arange(SIZE)[None, :].repeat(SIZE, 0) // 4 + seed) % 3  # (32, 32) stripes 4 wide
    mask[:, 3::4] = 255
    return mask.astype(np.uint8)


def road_values(seed: int) -> np.ndarray:
    """An index mask in raw values 0 (background), 32 and 64 (road), 255 (building)."""
    mask = np.zeros((SIZE, SIZE), np.uint8)
    mask[:, 10 + seed : 14 + seed] = 32
    mask[:, 14 + seed : 16 + seed] = 64
    mask[20:, 20:] = 255
    return mask


def _save(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(path, array) if path.suffix == ".tif" else Image.fromarray(array).save(path)


def dataset(root: Path, make, images=FOUR, masks=None, config: dict | None = None, value=lambda i: 40 + 30 * i) -> Path:
    """``root/data``: 32x32 images named ``images`` (constant ``value(i)``), masks ``make(i)`` named ``masks``
    (default: as the images), and a dataset.yaml of ``config``."""
    data = root / "data"
    for i, name in enumerate(images):
        _save(data / "images" / name, np.full((SIZE, SIZE), value(i), np.uint8))
    for i, name in enumerate(masks or images):
        _save(data / "masks" / name, make(i))
    if config is not None:
        (data / "dataset.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return data


def tif(names: list[str]) -> list[str]:
    return [name.replace(".png", ".tif") for name in names]


# --- refusals: (data, fragment, names in the message, extra flags) --------------------------------

VALUES = {"background": 0, "road": [32, 64], "building": 255}
REFUSALS = {
    # splits
    "splits written as a list": (lambda t: dataset(t, blobs, config={"splits": ["train", "val"]}),
                                 "'splits' is a list; expected a mapping of split names to lists of key patterns", ["dataset.yaml"], []),
    "empty val split": (lambda t: dataset(t, blobs, config={"splits": {"train": ["[0-2]"], "val": []}}),
                        "split 'val' is empty; give it key patterns", ["dataset.yaml"], []),
    "identical train and val": (lambda t: dataset(t, blobs, config={"splits": {"train": ["*"], "val": ["[0-3]"]}}),
                                "splits 'train' and 'val' are identical (4 pairs)", ["dataset.yaml"], []),
    "split named validation": (lambda t: dataset(t, blobs, config={"splits": {"train": ["[0-2]"], "validation": ["3"]}}),
                               "split 'validation' is not a split name training reads; did you mean 'val'?", ["dataset.yaml"], []),
    "val names no file of the folder": (lambda t: dataset(t, blobs, config={"splits": {"val": ["img_3"]}}),
                                        "split 'val' patterns ['img_3'] match no pair key (e.g. '0')", ["dataset.yaml"], []),
    "split given a mapping": (lambda t: dataset(t, blobs, config={"splits": {"val": {"files": 3}}}),
                              "split 'val' is {'files': 3}; expected a list of key patterns", ["dataset.yaml"], []),
    "val holds every pair": (lambda t: dataset(t, blobs, config={"splits": {"val": ["*"]}}),
                             "the implied split 'train' (every pair not in val) is empty", ["dataset.yaml"], []),
    # pairing
    "two masks numbered like one image": (lambda t: dataset(t, blobs, ["07.png", "08.png", "09.png"], ["labels7.png", "labels8.png", "labels9.png", "labels007.png"]),
                                          "both match images/07.png by their number 7", ["masks/labels007.png", "masks/labels7.png"], []),
    "two images numbered like one mask": (lambda t: dataset(t, blobs, ["7.png", "07.png", "8.png"], ["lab7.png", "lab8.png"]),
                                          "both match masks/lab7.png by their number 7", ["images/07.png", "images/7.png"], []),
    "mask_names without placeholder": (lambda t: dataset(t, blobs, masks=["gt0.png", "gt1.png", "gt2.png", "gt3.png"], config={"mask_names": "gt"}),
                                       "mask_names 'gt' must hold one placeholder, {number} or {stem}", ["dataset.yaml"], []),
    "mask name off the template": (lambda t: dataset(t, blobs, masks=["gt0.png", "gt1.png", "gt2.png", "3.png"], config={"mask_names": "gt{number}"}),
                                   "does not fit mask_names 'gt{number}'", ["masks/3.png"], []),
    "two masks fit one template value": (lambda t: dataset(t, blobs, masks=["gt0.png", "gt1.png", "gt2.png", "gt3.png", "gt003.png"], config={"mask_names": "gt{number}"}),
                                         "both match the same image (number 3)", ["masks/gt003.png", "masks/gt3.png"], []),
    "templates with different placeholders": (lambda t: dataset(t, blobs, config={"image_names": "{number}", "mask_names": "{stem}"}),
                                              "image_names and mask_names use different placeholders", ["dataset.yaml"], []),
    # classes mapped from mask values
    "mask values no class lists": (lambda t: dataset(t, road_values, config={"classes": {"background": 0, "road": [32, 64]}}),
                                   "has values {255} that no class lists; add them to a class", ["masks/0.png"], []),
    "value listed for two classes": (lambda t: dataset(t, road_values, config={"classes": {**VALUES, "building": [255, 64]}}),
                                     "classes: value 64 is listed for both 'road' and 'building'", ["dataset.yaml"], []),
    "value map with mask_mode binary": (lambda t: dataset(t, road_values, config={"classes": {"background": 0, "road": [32, 64, 255]}, "mask_mode": "binary"}),
                                        "classes maps mask values to classes, which needs mask_mode index, not binary", ["dataset.yaml"], []),
    "class value that is no number": (lambda t: dataset(t, road_values, config={"classes": {"background": 0, "road": "asphalt"}}),
                                      "classes.road: 'asphalt' is not a mask value or a list of them", ["dataset.yaml"], []),
    "ignore_value that is a class value": (lambda t: dataset(t, road_values, config={"classes": VALUES, "ignore_value": 255}),
                                           "ignore_value 255 is also a value of class 'building'", ["dataset.yaml"], []),
    # decoding
    "0/255 masks saved as JPEG": (lambda t: dataset(t, jpeg_blobs, masks=[f"{i}.jpg" for i in range(4)]),
                                  "as class indices the masks would make 256 classes", [".jpg", "save masks as PNG"], []),
    "index masks with void 255": (lambda t: dataset(t, void_stripes), "has value 255, so as class indices the masks would make 256 classes",
                                  ["masks/0.png", "set ignore_value: 255 if it means void"], []),
    "--mask-mode instances on binary blobs": (lambda t: dataset(t, blobs), "is not an instance label image: value 255 covers 3 separate regions",
                                              ["masks/0.png"], ["--mask-mode", "instances"]),
    "--mask-mode binary on label images": (lambda t: dataset(t, lambda i: label_image(i, dtype=np.uint8)),
                                           "has values {0, 1, 2, 3, 4, 5}; expected a binary 0/255 or 0/1 mask", ["masks/0.png"], ["--mask-mode", "binary"]),
}  # fmt: skip


@pytest.mark.parametrize("case", REFUSALS)
def test_train_refuses(tmp_path, capsys, case):
    make, fragment, names, argv = REFUSALS[case]
    data = make(tmp_path)
    untouched = Untouched(data)
    out = tmp_path / "run"
    expect_error(capsys, ["train", "--data", data, "--out", out, *TRAIN, *argv], fragment, names)
    assert_no_output(out)
    untouched.check()


@pytest.mark.parametrize("case", REFUSALS)
def test_check_reports(tmp_path, capsys, case):
    make, _, names, argv = REFUSALS[case]
    data = make(tmp_path)
    untouched = Untouched(data)
    assert main(["check", str(data), "--no-progress", "--no-preview", *argv]) == 1
    out = capsys.readouterr()
    errors = [line for line in out.out.splitlines() if line.startswith("error:")]
    log_case(errors[0] if errors else "")
    assert "Traceback" not in out.out + out.err
    for name in names:
        assert any(name in line for line in errors), (name, errors)
    assert out.out.rstrip().splitlines()[-1].startswith("NOT usable")
    untouched.check()


# --- valid data that used to be misread: (data, lines check prints, train flags, check flags) -------

WORKS = {
    "anti-aliased 0/255 masks": (lambda t: dataset(t, anti_aliased),
                                 ["masks: binary (0/255, anti-aliased edges: ", "% of pixels in between, thresholded at 128); values 0, 64, 128, 191, 255"], [], []),
    "anti-aliased 16-bit masks": (lambda t: dataset(t, lambda i: anti_aliased(i, 65535), masks=tif(FOUR)),
                                  ["masks: binary (0/65535, anti-aliased edges: ", "thresholded at 32768)"], [], []),
    "16-bit labels of a few objects": (lambda t: dataset(t, label_image, masks=tif(FOUR)),
                                       ["masks: instance labels (up to 5 objects per mask, 16-bit); 20 objects, 5..5 per image"], ["--target", "instances"], []),
    "8-bit labels": (lambda t: dataset(t, lambda i: label_image(i, dtype=np.uint8)),
                     ["masks: instance labels (up to 5 objects per mask, 8-bit)"], [], []),
    "labels with arbitrary ids": (lambda t: dataset(t, lambda i: label_image(i, (40000, 7, 1000, 12)), masks=tif(FOUR)),
                                  ["masks: instance labels (up to 5 objects per mask, 16-bit)"], ["--target", "instances"], []),
    "numbered names with other padding": (lambda t: dataset(t, blobs, ["07.tif", "08.tif", "9.tif", "10.tif"], [f"labels{n:08d}.png" for n in (7, 8, 9, 10)]),
                                          ["pairs: 4 usable (0 images without mask, 0 masks without image)"], [], []),
    "mask_names template": (lambda t: dataset(t, blobs, ["a.png", "b.png", "c.png", "d.png"], ["a_gt.png", "b_gt.png", "c_gt.png", "d_gt.png"],
                                              config={"mask_names": "{stem}_gt"}),
                            ["pairs: 4 usable (0 images without mask, 0 masks without image)"], [], []),
    "classes mapped from mask values": (lambda t: dataset(t, road_values, config={"classes": VALUES}),
                                        ["masks: index (4 mask values mapped to 3 classes); values 0, 32, 64, 255", "classes: background "], [], []),
    "overlapping splits warn": (lambda t: dataset(t, blobs, config={"splits": {"train": ["[0-2]"], "val": ["[23]"]}}),
                                ["splits: train 3, val 2", "warning: dataset.yaml: splits 'train' and 'val' share 1 pair(s) (e.g. '2')"], [], []),
    "--mask-mode index overrides the label guess": (lambda t: dataset(t, lambda i: label_image(i, dtype=np.uint8)),
                                                    ["masks: index (class indices; set by --mask-mode); values 0, 1, 2, 3, 4, 5"],
                                                    ["--mask-mode", "index"], ["--mask-mode", "index"]),
}  # fmt: skip


@pytest.mark.parametrize("case", WORKS)
def test_train_works(tmp_path, case):
    make, _, train_argv, _ = WORKS[case]
    data = make(tmp_path)
    untouched = Untouched(data)
    assert main(["train", "--data", str(data), "--out", str(tmp_path / "run"), *TRAIN, *train_argv]) == 0
    assert (tmp_path / "run" / "best.pt").is_file()
    untouched.check()


@pytest.mark.parametrize("case", WORKS)
def test_check_explains(tmp_path, capsys, case):
    make, lines, _, check_argv = WORKS[case]
    data = make(tmp_path)
    assert main(["check", str(data), "--no-progress", "--no-preview", *check_argv]) == 0
    out = capsys.readouterr().out
    log_case(next((line for line in out.splitlines() if line.startswith(lines[0].split(":")[0] + ":")), ""))
    for line in lines:
        assert line in out, out


def test_only_a_val_split_trains_on_every_other_pair(tmp_path, capsys):
    data = dataset(tmp_path, blobs, config={"splits": {"val": ["3"]}}, value=lambda i: 200 if i == 3 else 20)
    assert main(["check", str(data), "--no-progress", "--no-preview"]) == 0
    assert "splits: val 1, train 3 (train is every pair not in val)" in capsys.readouterr().out
    out = tmp_path / "run"
    assert main(["train", "--data", str(data), "--out", str(out), *TRAIN]) == 0
    meta = json.loads(torch.load(out / "best.pt", weights_only=True)["meta"])
    assert meta["normalization"]["mean"] == [20.0]  # the val image (200) is not in the training statistics


def test_numbered_names_pair_the_right_files(tmp_path):
    data = dataset(tmp_path, blobs, ["07.tif", "08.tif", "9.tif", "10.tif"], [f"labels{n:08d}.png" for n in (7, 8, 9, 10)])
    assert [(p.image.name, p.mask.name) for p in load_spec(data).pairs] == [
        ("07.tif", "labels00000007.png"), ("08.tif", "labels00000008.png"), ("9.tif", "labels00000009.png"), ("10.tif", "labels00000010.png")]  # fmt: skip
