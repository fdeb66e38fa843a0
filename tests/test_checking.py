"""Tests of ``unetkit check`` (unetkit.checking): every kind of problem on broken copies, and the real sets."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import tifffile
import yaml
from PIL import Image

import unetkit
from tests.conftest import shared_data
from unetkit.cli import main
from unetkit.data.io import read_image

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
RED, GREEN = (255, 0, 0), (0, 255, 0)


@pytest.fixture(autouse=True)
def in_a_scratch_folder(tmp_path, monkeypatch):
    """check writes its default preview (unetkit-check.png) into the working folder: make that a fresh one per test."""
    monkeypatch.chdir(tmp_path)


def _png(path: Path, array, mode: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(array, dtype=np.uint8), mode=mode).save(path)
    return path


def _mk(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _good(root: Path, n: int = 4) -> Path:
    """n gray 20x30 images with binary 0/255 masks holding two separate squares."""
    for i in range(n):
        _png(root / "images" / f"{i}.png", np.full((20, 30), 10 * i + 5))
        mask = np.zeros((20, 30))
        mask[2:8, 2:8] = mask[2:8, 12:18] = 255
        _png(root / "masks" / f"{i}.png", mask)
    return root


def _problems(report: dict, level: str = "error") -> list[str]:
    return [f"{p['file']}: {p['message']}" for p in report["problems"] if p["level"] == level]


def _one(report: dict, needle: str, level: str = "error") -> str:
    found = [line for line in _problems(report, level) if needle in line]
    assert len(found) == 1, f"expected one {level} with {needle!r}, got {report['problems']}"
    return found[0]


def test_a_good_set_is_usable_with_its_statistics(tmp_path):
    report = unetkit.check(_good(tmp_path), progress=False)
    assert report["usable"] and report["errors"] == 0 and report["warnings"] == 0
    assert report["pairs"] == 4 and report["mask_mode"] == "binary" and report["values"] == [0, 255]
    assert report["mask_decision"] == "binary (0/255)" and report["splits"] == {}
    assert report["images"][0] == {"key": "0", "file": "images/0.png", "dtype": "uint8", "bits": 8, "channels": 1, "height": 20, "width": 30}
    fg = 2 * 36 / 600
    assert report["class_frequency"]["foreground"] == pytest.approx(fg)
    assert report["suggested_class_weights"] == pytest.approx([round(1 / (2 * (1 - fg)), 4), round(1 / (2 * fg), 4)])


def test_every_problem_is_collected_not_just_the_first(tmp_path):
    root = _good(tmp_path, n=8)
    (root / "masks" / "0.png").unlink()  # image without mask
    _png(root / "masks" / "extra.png", np.zeros((20, 30)))  # mask without image
    _png(root / "masks" / "1.png", np.zeros((10, 30)))  # size mismatch (and empty)
    (root / "images" / "2.png").write_bytes(b"not a png at all")  # unreadable image
    (root / "masks" / "3.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")  # unreadable mask
    _png(root / "images" / "4.tif", np.zeros((20, 30)))  # same name as 4.png
    _png(root / "masks" / "5.png", np.zeros((20, 30)))  # empty mask
    _png(root / "images" / "6.png", np.zeros((20, 30, 3)))  # 3 channels among gray images
    (root / "images" / "notes.txt").write_text("hello")  # not an image
    report = unetkit.check(root, progress=False)

    assert not report["usable"]
    assert "has no mask; add masks/0.png" in _one(report, "images/0.png")
    assert "has no image; add images/extra.png" in _one(report, "masks/extra.png")
    assert "is 10x30 but its image images/1.png is 20x30" in _one(report, "masks/1.png")
    assert "cannot read image" in _one(report, "images/2.png")
    assert "cannot read image" in _one(report, "masks/3.png")
    assert "same name as images/4.png" in _one(report, "images/4.tif")
    assert "has 3 channel(s) but" in _one(report, "images/6.png")
    assert "empty mask" in _one(report, "masks/5.png", "warning")
    assert "not an image type" in _one(report, "images/notes.txt", "warning")
    assert report["unpaired_images"] == ["images/0.png"] and report["unpaired_masks"] == ["masks/extra.png"]
    assert report["empty_masks"] == ["masks/5.png"]
    assert report["pairs"] == 4  # 4, 5, 6 and 7 are readable pairs
    assert report["errors"] == 7


def test_mask_values_that_do_not_fit_the_encoding(tmp_path):
    root = _good(tmp_path)
    _png(root / "masks" / "2.png", [[0, 128, 255] * 10] * 20)
    (root / "dataset.yaml").write_text("mask_mode: binary\n")
    report = unetkit.check(root, progress=False)
    assert "values {0, 128, 255}; expected a binary 0/255 or 0/1 mask" in _one(report, "masks/2.png")
    assert report["errors"] == 1


def test_index_classes_out_of_range_and_inferred_classes(tmp_path):
    root = _good(tmp_path)
    for i in range(4):
        _png(root / "masks" / f"{i}.png", np.full((20, 30), i))
    report = unetkit.check(root, progress=False)
    assert report["mask_mode"] == "index" and report["classes"] == ["class_0", "class_1", "class_2", "class_3"]
    assert "classes inferred as class_0..class_3" in _one(report, "classes inferred", "warning")
    (root / "dataset.yaml").write_text("classes: [a, b, c]\nmask_mode: index\n")
    report = unetkit.check(root, progress=False)
    assert "values {3} outside class indices 0..2" in _one(report, "masks/3.png")


def test_colour_masks(tmp_path):
    root = tmp_path
    for i in range(2):
        _png(root / "images" / f"{i}.png", np.zeros((4, 5, 3)))
        mask = np.zeros((4, 5, 3))
        mask[:2], mask[2:] = RED, GREEN
        mask[0, 0] = (0, 0, 0)
        _png(root / "masks" / f"{i}.png", mask)
    report = unetkit.check(root, progress=False)
    assert "colours [0, 0, 0], [0, 255, 0], [255, 0, 0]; name them in dataset.yaml" in _one(report, "masks/0.png")
    assert report["mask_mode"] == "color" and report["values"] == [[0, 0, 0], [0, 255, 0], [255, 0, 0]]

    (root / "dataset.yaml").write_text(yaml.safe_dump({"classes": {"red": list(RED)}, "mask_mode": "color"}))
    report = unetkit.check(root, progress=False)
    assert "(0, 255, 0): 10 px" in _one(report, "masks/0.png") and "(0, 255, 0): 10 px" in _one(report, "masks/1.png")

    (root / "dataset.yaml").write_text(yaml.safe_dump({"classes": {"red": list(RED), "green": list(GREEN)},
                                                       "ignore_colors": [[0, 0, 0]]}))  # fmt: skip
    report = unetkit.check(root, progress=False)
    assert report["usable"] and report["ignored_pixels"] == 2 and report["class_pixels"] == {"red": 18, "green": 20}


def test_yaml_problems_are_all_reported(tmp_path):
    root = _good(tmp_path)
    (root / "dataset.yaml").write_text("mask_mod: binary\nclases: [a, b]\n")
    report = unetkit.check(root, progress=False)
    assert "unknown key 'mask_mod'; did you mean 'mask_mode'?" in _one(report, "mask_mod'")
    assert "unknown key 'clases'; did you mean 'classes'?" in _one(report, "clases")
    assert report["pairs"] == 4  # the rest of the set is still checked
    (root / "dataset.yaml").write_text("images: [unclosed\n")
    assert "fix the YAML syntax" in _one(unetkit.check(root, progress=False), "dataset.yaml")
    assert "not found" in _one(unetkit.check(tmp_path / "nowhere", progress=False), "nowhere")


def test_instance_folders(tmp_path):
    root = tmp_path
    for key in ("a", "b", "c"):
        _png(root / "images" / f"{key}.png", np.zeros((10, 12)))
        (root / "masks" / key).mkdir(parents=True)
    for n, (r, c) in enumerate([(1, 1), (1, 6), (6, 1)]):
        nucleus = np.zeros((10, 12))
        nucleus[r : r + 3, c : c + 3] = 255
        _png(root / "masks" / "a" / f"{n}.png", nucleus)
    _png(root / "masks" / "b" / "0.png", np.zeros((8, 12)))  # wrong size
    report = unetkit.check(root, progress=False)
    assert report["mask_mode"] == "instances"
    assert "masks/b/0.png: is 8x12 but its image images/b.png is 10x12" in _one(report, "masks/b/0.png")
    assert "holds no mask file" in _one(report, "masks/c")
    assert report["instances"] == {"total": 3, "min": 3, "max": 3}


def test_sixteen_bit_label_tiff_and_mixed_bit_depths(tmp_path):
    root = tmp_path
    labels = np.zeros((40, 40), np.uint16)
    for n in range(40):
        labels[n, :] = n * 7 + 1  # 40 ids: more than 32, so a label image
    for key, dtype in (("a", np.uint16), ("b", np.uint16), ("c", np.uint8)):
        tifffile.imwrite(_mk(root / "images") / f"{key}.tif", np.full((40, 40), 3, dtype))
        tifffile.imwrite(_mk(root / "masks") / f"{key}.tif", labels)
    report = unetkit.check(root, progress=False)
    assert report["mask_mode"] == "instances" and report["instances"]["max"] == 40
    assert report["images"][0]["bits"] == 16
    assert "is uint8 but 2 other images are uint16" in _one(report, "images/c.tif", "warning")
    assert report["usable"]


def _aa_good(root: Path, n: int = 3) -> Path:
    """_good, with anti-aliased top edges: 6 of 600 pixels at 64 and 6 at 191 per mask."""
    _good(root, n)
    for i in range(n):
        mask = np.asarray(Image.open(root / "masks" / f"{i}.png")).copy()
        mask[1, 2:8], mask[1, 12:18] = 64, 191
        _png(root / "masks" / f"{i}.png", mask)
    return root


def test_anti_aliased_binary_masks_are_explained(tmp_path, capsys):
    root = _aa_good(tmp_path)
    report = unetkit.check(root, progress=False, preview=None)
    assert report["usable"] and report["mask_mode"] == "binary" and report["values"] == [0, 64, 191, 255]
    assert report["mask_decision"] == "binary (0/255, anti-aliased edges: 2.0% of pixels in between, thresholded at 128)"
    assert report["class_pixels"]["foreground"] == 3 * (72 + 6)  # the 191s count as foreground, the 64s not
    assert main(["check", str(root), "--no-progress", "--no-preview"]) == 0
    assert "masks: binary (0/255, anti-aliased edges: 2.0% of pixels in between, thresholded at 128); values 0, 64, 191, 255" in capsys.readouterr().out


def test_few_object_label_images_are_explained(tmp_path, capsys):
    labels = np.zeros((20, 30), np.uint16)
    for n in range(5):
        labels[2 : 5, 5 * n + 1 : 5 * n + 4] = n + 1  # 5 separate objects
    for key in ("a", "b"):
        _png(tmp_path / "images" / f"{key}.png", np.full((20, 30), 9))
        tifffile.imwrite(_mk(tmp_path / "masks") / f"{key}.tif", labels)
    report = unetkit.check(tmp_path, progress=False, preview=None)
    assert report["usable"] and report["mask_decision"] == "instance labels (up to 5 objects per mask, 16-bit)"
    assert report["instances"] == {"total": 10, "min": 5, "max": 5}
    assert main(["check", str(tmp_path), "--no-progress", "--no-preview", "--mask-mode", "index"]) == 0
    out = capsys.readouterr().out
    assert "masks: index (class indices; set by --mask-mode); values 0, 1, 2, 3, 4, 5" in out


def test_instances_forced_on_binary_masks_is_an_error_per_mask(tmp_path):
    root = _good(tmp_path, n=2)
    assert unetkit.check(root, mask_mode="instances", progress=False, preview=None)["usable"]  # 2 regions: maybe one object cut in two
    for i in range(2):
        mask = np.asarray(Image.open(root / "masks" / f"{i}.png")).copy()
        mask[12:16, 2:8] = 255  # a third square
        _png(root / "masks" / f"{i}.png", mask)
    report = unetkit.check(root, mask_mode="instances", progress=False, preview=None)
    assert not report["usable"] and report["errors"] == 2
    assert "is not an instance label image: value 255 covers 3 separate regions" in _one(report, "masks/1.png")


def test_splits_and_value_maps_are_reported(tmp_path, capsys):
    root = _good(tmp_path, n=4)
    (root / "dataset.yaml").write_text(yaml.safe_dump({"classes": {"background": 0, "cell": [128, 255]}, "splits": {"val": ["3"]}}))
    report = unetkit.check(root, progress=False, preview=None)
    assert report["usable"] and report["mask_decision"] == "index (3 mask values mapped to 2 classes)"
    assert report["splits"] == {"val": 1, "train": 3} and report["splits_note"] == "train is every pair not in val"
    assert main(["check", str(root), "--no-progress", "--no-preview"]) == 0
    assert "splits: val 1, train 3 (train is every pair not in val)" in capsys.readouterr().out
    (root / "dataset.yaml").write_text(yaml.safe_dump({"classes": {"background": 0, "cell": 128}, "splits": ["train", "val"]}))
    report = unetkit.check(root, progress=False, preview=None)
    assert _one(report, "'splits' is a list; expected a mapping").startswith("dataset.yaml: ")
    assert "has values {255} that no class lists" in _one(report, "masks/0.png")
    assert report["errors"] == 5  # the splits and each of the 4 masks


def test_preview_and_weight_maps(tmp_path):
    root = _good(tmp_path / "data")
    report = unetkit.check(root, preview=tmp_path / "preview.png", preview_count=3, weights=tmp_path / "w", progress=False)
    grid = read_image(tmp_path / "preview.png")
    assert grid.shape[1] == 3 * 256 and grid.shape[2] == 3 and report["preview"] == str(tmp_path / "preview.png")
    weight = tifffile.imread(tmp_path / "w" / "0.tif")
    assert weight.shape == (20, 30) and weight.dtype == np.float32
    gap = weight[4, 10]  # between the two squares: d1 = 3 (to column 7) and d2 = 2 (to column 12)
    cw = report["suggested_class_weights"][0]
    assert gap == pytest.approx(cw + 10 * np.exp(-25 / 50), rel=1e-3)
    assert read_image(tmp_path / "w" / "0.png").shape == (20, 30, 3)


def test_cli_exit_codes_text_and_json(tmp_path, capsys):
    root = _good(tmp_path / "data")
    assert main(["check", str(root), "--no-progress", "--preview", str(tmp_path / "p.png")]) == 0
    out = capsys.readouterr().out
    assert "pairs: 4 usable" in out and "masks: binary (0/255); values 0, 255" in out and out.rstrip().endswith("0 warning(s)")
    assert (tmp_path / "p.png").is_file()
    (root / "masks" / "1.png").unlink()
    assert main(["check", str(root), "--no-progress", "--no-preview", "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["usable"] is False and report["problems"][0]["file"] == "images/1.png"


def test_a_broken_copy_of_real_isbi_data(tmp_path):
    source = shared_data("isbi2012")
    for key in ("0", "1", "2", "3"):
        for kind in ("images", "masks"):
            _mk(tmp_path / kind)
            shutil.copy(source / kind / f"{key}.png", tmp_path / kind / f"{key}.png")
    Image.open(tmp_path / "masks" / "1.png").resize((256, 256)).save(tmp_path / "masks" / "1.png")
    (tmp_path / "masks" / "2.png").write_bytes((tmp_path / "masks" / "2.png").read_bytes()[:200])  # truncated
    (tmp_path / "images" / "3.png").unlink()
    report = unetkit.check(tmp_path, progress=False)
    assert "is 256x256 but its image images/1.png is 512x512" in _one(report, "masks/1.png")
    assert "cannot read image" in _one(report, "masks/2.png")
    assert "has no image" in _one(report, "masks/3.png")
    assert report["pairs"] == 1 and report["errors"] == 3


# --- the real data sets: each must be diagnosed for what it is


def test_real_isbi():
    shared_data("isbi2012")
    report = unetkit.check(EXAMPLES / "isbi2012" / "dataset.yaml", progress=False)
    assert report["usable"] and report["pairs"] == 25 and report["mask_mode"] == "binary"
    assert report["classes"] == ["membrane", "cell"] and report["values"] == [0, 255]
    assert 0.2 < report["class_frequency"]["membrane"] < 0.25


@pytest.mark.slow
def test_real_dsb_instance_folders():
    report = unetkit.check(shared_data("dsb2018"), progress=False)
    assert report["usable"] and report["pairs"] == 95 and report["mask_mode"] == "instances"
    assert {i["channels"] for i in report["images"]} == {3}  # RGBA with opaque alpha -> RGB
    assert report["instances"]["total"] > 1000 and report["errors"] == 0


def test_real_dubai_colours_palettes_and_black_pixels():
    shared_data("dubai_aerial")
    report = unetkit.check(EXAMPLES / "dubai_aerial" / "dataset.yaml", progress=False)
    assert report["usable"] and report["pairs"] == 54 and report["mask_mode"] == "color"
    assert report["classes"] == ["building", "land", "road", "vegetation", "water", "unlabeled"]
    assert report["ignored_pixels"] > 0 and [0, 0, 0] in report["values"]
    without_yaml = unetkit.check(shared_data("dubai_aerial"), progress=False)
    assert not without_yaml["usable"] and "name them in dataset.yaml" in without_yaml["problems"][0]["message"]


def test_real_camvid_void():
    shared_data("camvid")
    report = unetkit.check(EXAMPLES / "camvid" / "dataset.yaml", progress=False)
    assert report["usable"] and report["pairs"] == 118 and report["mask_mode"] == "index"
    assert len(report["classes"]) == 11 and report["values"][-1] == 11 and report["ignored_pixels"] > 0
    assert min(report["class_frequency"].values()) < 0.01  # the rare classes show


def test_real_stardist_16_bit_instance_labels():
    report = unetkit.check(shared_data("stardist_example"), progress=False)
    assert report["usable"] and report["mask_mode"] == "instances"
    assert report["images"][0]["bits"] == 16 and report["instances"]["total"] == 125


def test_structures_say_how_wide_each_class_is_and_how_far_it_reaches(tmp_path, capsys):
    mask = np.zeros((20, 30), np.uint8)
    mask[5:8, :] = 255  # a stripe 3 pixels wide across the whole image
    for name in ("a", "b"):
        _png(tmp_path / "images" / f"{name}.png", np.full((20, 30), 90))
        _png(tmp_path / "masks" / f"{name}.png", mask)
    report = unetkit.check(tmp_path, preview=None, progress=False)
    assert report["structures"]["pairs_measured"] == 2
    assert report["structures"]["classes"]["foreground"] == {"regions": 2, "width": 3.0, "median_diameter": 10.7, "reach": 30.0}  # 2 sqrt(90 / pi)
    assert main(["check", str(tmp_path), "--no-preview", "--no-progress"]) == 0
    assert "foreground 3 px wide, reaching 30 px" in capsys.readouterr().out


def test_the_decoded_size_and_the_cache_are_reported(tmp_path, capsys):
    data = _good(tmp_path / "data")
    report = unetkit.check(data, progress=False, cache=str(tmp_path / "cache"))
    assert report["decoded_bytes"] == 4 * 20 * 30 * (1 + 1)  # an 8-bit gray pixel and its packed mask, per image
    folder = Path(report["cache"]["folder"])
    assert folder.parent == tmp_path / "cache" and folder.name.startswith("data-") and report["cache"]["bytes"] == 0
    unetkit.train(data=str(data), out=str(tmp_path / "run"), cache=str(tmp_path / "cache"), model_size="cpu", base_channels=4,
                  depth=2, patch_size=16, epochs=1, steps_per_epoch=1, progress=False, report=False, val_fraction=0.5)  # fmt: skip
    built = unetkit.check(data, progress=False, cache=str(tmp_path / "cache"))["cache"]
    assert built["folder"] == str(folder) and built["bytes"] == sum(p.stat().st_size for p in folder.iterdir())
    assert main(["check", str(data), "--no-preview", "--cache", str(tmp_path / "cache")]) == 0
    assert f"decoded size: 4.8 KB (images and masks, as training reads them); cache: {folder} (" in capsys.readouterr().out
