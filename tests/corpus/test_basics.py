"""The bad-input corpus: every malformed input gets a one-line error naming the file and the fix,
exit status 2, no traceback, and no partial output. Valid but unusual inputs simply work.

docs/reliability.md lists these cases with what the tool says for each.
"""

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from PIL import Image

from unetkit.cli import main
from unetkit.data.synthetic import make_dataset, synthetic_cells

from tests.conftest import TINY_MODEL
from tests.corpus.kit import assert_no_output, bomb_png, expect_error, flags, log_case, pair, png_bytes


# --- predict --------------------------------------------------------------------------------------

GOOD = np.full((20, 24), 100, np.uint8)

PREDICT_CASES = {
    "zero-byte file": ("empty.png", lambda p: p.write_bytes(b""), "empty file"),
    "truncated PNG": ("cut.png", lambda p: p.write_bytes(png_bytes(synthetic_cells((64, 64), np.random.default_rng(0))[0])[:300]), "cannot read image"),
    "text file named .png": ("notes.png", lambda p: p.write_text("hello, I am not an image\n"), "cannot read image"),
    "decompression bomb": ("bomb.png", lambda p: p.write_bytes(bomb_png()), "claims more pixels"),
    "NaN in float TIFF": ("nan.tif", lambda p: tifffile.imwrite(p, np.array([[0, np.nan], [np.inf, 1]], np.float32)), "NaN or infinite"),
    "RGB image for a gray model": ("rgb.png", lambda p: Image.fromarray(np.zeros((9, 9, 3), np.uint8)).save(p), "3 channel(s); this model was trained on 1"),
    "unsupported extension": ("table.csv", lambda p: p.write_text("1,2\n"), "not an image file"),
}


@pytest.mark.parametrize("case", PREDICT_CASES)
def test_predict_bad_image(models, tmp_path, capsys, case):
    name, make, fragment = PREDICT_CASES[case]
    make(tmp_path / name)
    out = tmp_path / "out"
    expect_error(capsys, ["predict", "--model", str(models["gray"]), str(tmp_path / name), "--out", str(out)], fragment, [name])
    assert_no_output(out)


def test_predict_bad_file_in_a_folder_stops_before_any_output(models, tmp_path, capsys):
    inputs = tmp_path / "in"
    inputs.mkdir()
    Image.fromarray(GOOD).save(inputs / "a.png")
    (inputs / "b.png").write_bytes(b"")
    out = tmp_path / "out"
    expect_error(capsys, ["predict", "--model", str(models["gray"]), str(inputs), "--out", str(out)], "empty file", ["b.png"])
    assert_no_output(out)


def test_gray_image_for_rgb_model(models, tmp_path, capsys):
    Image.fromarray(GOOD).save(tmp_path / "g.png")
    expect_error(capsys, ["predict", "--model", str(models["rgb"]), str(tmp_path / "g.png"), "--out", str(tmp_path / "o")], "1 channel(s); this model was trained on 3", ["g.png"])
    assert_no_output(tmp_path / "o")


def test_checkpoint_problems(models, tmp_path, capsys):
    Image.fromarray(GOOD).save(tmp_path / "g.png")
    args = [str(tmp_path / "g.png"), "--out", str(tmp_path / "o")]
    expect_error(capsys, ["predict", "--model", str(tmp_path / "missing.pt"), *args], "checkpoint not found", ["missing.pt"])
    data = models["gray"].read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 3])
    expect_error(capsys, ["predict", "--model", str(tmp_path / "cut.pt"), *args], "not a readable checkpoint", ["cut.pt"])
    ckpt = torch.load(models["gray"], weights_only=True)
    ckpt["version"] = 99
    torch.save(ckpt, tmp_path / "future.pt")
    expect_error(capsys, ["predict", "--model", str(tmp_path / "future.pt"), *args], "newer than this unetkit reads", ["future.pt"])
    ckpt["version"], ckpt["extra"] = 1, Exploit()
    torch.save(ckpt, tmp_path / "evil.pt")
    expect_error(capsys, ["predict", "--model", str(tmp_path / "evil.pt"), *args], "refused to load", ["evil.pt"])
    assert not (tmp_path / "pwned").exists(), "the pickled payload must never run"
    assert_no_output(tmp_path / "o")


class Exploit:
    def __reduce__(self):
        return (Path.touch, (Path(__file__).parent / "pwned",))


def test_output_folder_problems(models, tmp_path, capsys):
    inputs = tmp_path / "in"
    inputs.mkdir()
    Image.fromarray(GOOD).save(inputs / "a.png")
    model = str(models["gray"])
    expect_error(capsys, ["predict", "--model", model, str(inputs), "--out", str(inputs)], "lies in the input folder")
    expect_error(capsys, ["predict", "--model", model, str(inputs), "--out", str(inputs / "preds")], "lies in the input folder")
    (tmp_path / "file").write_text("x")
    expect_error(capsys, ["predict", "--model", model, str(inputs), "--out", str(tmp_path / "file")], "is a file, not a folder")
    expect_error(capsys, ["predict", "--model", model, str(tmp_path / "nope.png"), "--out", str(tmp_path / "o")], "no such file or folder", ["nope.png"])
    assert sorted(p.name for p in inputs.iterdir()) == ["a.png"]


def test_read_only_output_folder(models, tmp_path, capsys):
    Image.fromarray(GOOD).save(tmp_path / "a.png")
    ro = tmp_path / "readonly"
    ro.mkdir()
    root = hasattr(__import__("os"), "geteuid") and __import__("os").geteuid() == 0
    if root:  # root ignores permission bits: make the folder immutable instead
        if shutil.which("chattr") is None or subprocess.run(["chattr", "+i", str(ro)]).returncode != 0:
            pytest.skip("running as root without chattr: cannot make a read-only folder")
    else:
        ro.chmod(0o555)
    try:
        expect_error(capsys, ["predict", "--model", str(models["gray"]), str(tmp_path / "a.png"), "--out", str(ro)], "cannot write", ["readonly"])
        assert list(ro.iterdir()) == []
    finally:
        if root:
            subprocess.run(["chattr", "-i", str(ro)])
        ro.chmod(0o755)


# --- train ----------------------------------------------------------------------------------------


def broken_dataset(tmp_path: Path, kind: str) -> tuple[Path, str, list[str]]:
    """A small data set with one kind of fault: (folder, expected fragment, names the message must give)."""
    data = tmp_path / "data"
    rng = np.random.default_rng(0)
    for i in range(3):
        image, mask = synthetic_cells((32, 32), rng)
        pair(data, f"{i}.png", image, mask)
    if kind == "empty folder":
        shutil.rmtree(data)
        (data / "images").mkdir(parents=True)
        (data / "masks").mkdir()
        return data, "no image files", ["images"]
    if kind == "unpaired image":
        pair(data, "lonely.png", GOOD, None)
        return data, "no mask", ["lonely"]
    if kind == "size mismatch":
        Image.fromarray(np.zeros((10, 10), np.uint8)).save(data / "masks" / "1.png")
        return data, "", ["1.png"]
    if kind == "values outside the classes":
        (data / "dataset.yaml").write_text("mask_mode: index\nclasses: [bg, cell]\n")
        for i in range(3):
            Image.fromarray(np.array([[0, 1], [5, 1]], np.uint8).repeat(16, 0).repeat(16, 1)).save(data / "masks" / f"{i}.png")
        return data, "outside class indices 0..1", ["0.png"]
    if kind == "RGB mask without colour table":
        for i in range(3):
            Image.fromarray(np.dstack([np.full((32, 32), v, np.uint8) for v in (200, 10, 10)])).save(data / "masks" / f"{i}.png")
        return data, "colour", []
    if kind == "malformed dataset.yaml":
        (data / "dataset.yaml").write_text("classes: [a, b\n  mask_mode: : :\n")
        return data, "dataset.yaml", []
    if kind == "mixed channels":
        Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(data / "images" / "2.png")
        return data, "channel(s)", ["2.png"]
    if kind == "corrupt training image":
        (data / "images" / "1.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
        return data, "cannot read image", ["1.png"]
    if kind == "NaN in a training image":
        (data / "images" / "0.png").unlink()
        tifffile.imwrite(data / "images" / "0.tif", np.full((32, 32), np.nan, np.float32))
        return data, "NaN or infinite", ["0.tif"]
    if kind == "one pair only":
        for i in (1, 2):
            (data / "images" / f"{i}.png").unlink()
            (data / "masks" / f"{i}.png").unlink()
        return data, "validation needs at least 2", []
    raise AssertionError(kind)


TRAIN_CASES = ["empty folder", "unpaired image", "size mismatch", "values outside the classes", "RGB mask without colour table",
               "malformed dataset.yaml", "mixed channels", "corrupt training image", "NaN in a training image", "one pair only"]


@pytest.mark.parametrize("kind", TRAIN_CASES)
def test_train_bad_data(tmp_path, capsys, kind):
    data, fragment, names = broken_dataset(tmp_path, kind)
    out = tmp_path / "run"
    expect_error(capsys, ["train", "--data", str(data), "--out", str(out), "--epochs", "1", "--steps-per-epoch", "1", *flags(TINY_MODEL)], fragment, names)
    assert_no_output(out)


@pytest.mark.parametrize("argv,fragment", [
    (["--epochs", "0"], "epochs must be >= 1"),
    (["--patch-size", "0"], "patch_size must be >= 1"),
    (["--class-weights", "1,2,3"], "class_weights has 3 values but the data has 2 classes"),
    (["--device", "cuda:7"], "CUDA is not available"),
])
def test_train_bad_options(tiny_data, tmp_path, capsys, argv, fragment):
    if fragment.startswith("CUDA") and torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    out = tmp_path / "run"
    expect_error(capsys, ["train", "--data", str(tiny_data), "--out", str(out), "--epochs", "1", "--steps-per-epoch", "1", *flags(TINY_MODEL), *argv], fragment)
    assert_no_output(out)


# --- evaluate -------------------------------------------------------------------------------------


def test_evaluate_bad_predictions(tiny_data, tmp_path, capsys):
    preds = tmp_path / "preds"
    preds.mkdir()
    expect_error(capsys, ["evaluate", "--pred", str(preds), "--truth", str(tiny_data)], "no prediction for 6 truth mask(s)")
    for i in range(6):
        Image.fromarray(np.zeros((5, 5), np.uint8)).save(preds / f"cells_{i:03d}.png")
    expect_error(capsys, ["evaluate", "--pred", str(preds), "--truth", str(tiny_data)], "differs from its truth", ["cells_000.png"])
    for i, shape in enumerate([(64, 48), (40, 72)] * 3):
        Image.fromarray(np.full(shape, 7, np.uint8)).save(preds / f"cells_{i:03d}.png")
    expect_error(capsys, ["evaluate", "--pred", str(preds), "--truth", str(tiny_data), "--json-path", str(tmp_path / "m.json")], "class index 7", ["cells_000.png"])
    assert not (tmp_path / "m.json").exists()
    expect_error(capsys, ["evaluate", "--pred", str(tmp_path / "nothing"), "--truth", str(tiny_data)], "predictions folder not found")
    expect_error(capsys, ["evaluate", "--pred", str(preds), "--truth", str(tmp_path / "nothing")], "nothing")


# --- valid but unusual: must simply work ----------------------------------------------------------


def test_unusual_but_valid_inputs_work(models, tmp_path):
    inputs = tmp_path / "in"
    inputs.mkdir()
    Image.fromarray((GOOD.astype(np.uint16) * 257)).save(inputs / "sixteen bit.png")
    tifffile.imwrite(inputs / "float.tif", GOOD.astype(np.float32) / 255)
    Image.fromarray(np.array([[128]], np.uint8)).save(inputs / "one.png")
    Image.fromarray(np.full((10, 10), 90, np.uint8)).save(inputs / "smaller than a tile.png")
    Image.fromarray(GOOD).save(inputs / "Zellkern ä ü 細胞 1.png")
    out = tmp_path / "out dir ü"
    assert main(["predict", "--model", str(models["gray"]), str(inputs), "--out", str(out), "--no-progress"]) == 0
    shapes = {p.name: np.asarray(Image.open(p)).shape for p in out.iterdir()}
    assert shapes == {"sixteen bit.png": (20, 24), "float.png": (20, 24), "one.png": (1, 1), "smaller than a tile.png": (10, 10), "Zellkern ä ü 細胞 1.png": (20, 24)}


def test_sixteen_bit_training_is_not_divided_by_255(tmp_path):
    data = tmp_path / "d16"
    make_dataset(data, 3, [(40, 40)], seed=1)
    for p in (data / "images").iterdir():
        Image.fromarray(np.asarray(Image.open(p)).astype(np.uint16) * 200).save(p)
    out = tmp_path / "run"
    assert main(["train", "--data", str(data), "--out", str(out), "--epochs", "1", "--steps-per-epoch", "1", *flags(TINY_MODEL)]) == 0
    meta = json.loads(torch.load(out / "best.pt", weights_only=True)["meta"])
    assert meta["normalization"]["mean"][0] > 255  # statistics in the 16-bit units, not rescaled


# --- check: the same broken data sets are findings (exit 1), one line per problem -------------------

CHECK_CASES = [k for k in TRAIN_CASES if k != "one pair only"]  # one pair is a valid data set, just too small to split


@pytest.mark.parametrize("kind", CHECK_CASES)
def test_check_reports_broken_data(tmp_path, capsys, kind):
    data, fragment, names = broken_dataset(tmp_path, kind)
    preview = tmp_path / "preview.png"
    assert main(["check", str(data), "--preview", str(preview)]) == 1
    out = capsys.readouterr()
    problems = [line for line in (out.out + out.err).splitlines() if line.startswith("error:")]
    log_case(problems[0] if problems else "")
    assert problems, out.out
    assert "Traceback" not in out.out + out.err
    for name in names:
        assert any(name in line for line in problems), problems
