"""Outputs never harm what the user has: for every command, an output that would replace an input, land beside or
among the inputs, replace an earlier file, or clash with another output is refused before anything is written.

Each case checks exit status 2, one line naming the path and the fix, every file of the user's untouched and
nothing new written anywhere.
"""

import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from unetkit.cli import main
from unetkit.data.synthetic import make_dataset

from tests.conftest import TINY_MODEL
from tests.corpus.kit import Untouched, expect_error, flags

TRAIN = ["--epochs", "1", "--steps-per-epoch", "1", *flags(TINY_MODEL)]


@dataclass
class World:
    """The user's files: a data set ``data`` (images/, masks/), a model ``model`` and a folder ``preds`` of earlier masks."""

    root: Path
    data: Path
    model: Path
    preds: Path

    def image(self, i: int = 0) -> Path:
        return self.data / "images" / f"cells_{i:03d}.png"

    def mask(self, i: int = 0) -> Path:
        return self.data / "masks" / f"cells_{i:03d}.png"


@pytest.fixture
def world(models, tmp_path) -> World:
    data = make_dataset(tmp_path / "data", 3, [(40, 48)], seed=4)
    (tmp_path / "model").mkdir()
    model = tmp_path / "model" / "m.pt"
    shutil.copyfile(models["gray"], model)
    preds = tmp_path / "preds"
    shutil.copytree(data / "masks", preds)
    return World(tmp_path, data, model, preds)


def _predict(w, *inputs, out, extra=()):
    return ["predict", "--model", w.model, *inputs, "--out", out, "--no-progress", *extra]


def _evaluate_preds(w, extra):
    return ["evaluate", "--pred", w.preds, "--truth", w.data, "--no-progress", *extra]


def _jpeg_beside(w):
    Image.open(w.image(0)).save(w.root / "a.jpg")
    return _predict(w, w.root / "a.jpg", out=w.root)


def _same_name_twice(w):
    for folder in ("x", "y"):
        (w.root / folder).mkdir()
        shutil.copyfile(w.image(0), w.root / folder / "a.png")
    return _predict(w, w.root / "x" / "a.png", w.root / "y" / "a.png", out=w.root / "out")


def _overlay_clash(w):
    (w.root / "in").mkdir()
    for name in ("a.png", "a_overlay.png"):
        shutil.copyfile(w.image(0), w.root / "in" / name)
    return _predict(w, w.root / "in", out=w.root / "out", extra=["--overlay"])


def _streamed_onto_itself(w):
    tifffile.imwrite(w.root / "big.tif", np.full((64, 64), 100, np.uint8))
    return _predict(w, w.root / "big.tif", out=w.root / "big.tif")


def _streamed_onto_a_file(w):
    (w.root / "elsewhere").mkdir()
    tifffile.imwrite(w.root / "elsewhere" / "old.tif", np.zeros((4, 4), np.uint8))
    return _predict(w, w.image(0), out=w.root / "elsewhere" / "old.tif")


def _check(w, *extra):
    return ["check", w.data, "--no-progress", *extra]


def _earlier_weights(w):
    (w.root / "weights").mkdir()
    (w.root / "weights" / "cells_000.tif").write_bytes(b"an earlier weight map")
    return ["check", w.data, "--weights", w.root / "weights", "--no-preview", "--no-progress"]


def _existing_json(w):
    (w.root / "metrics.json").write_text('{"mine": 1}')
    return _evaluate_preds(w, ["--json-path", w.root / "metrics.json"])


def _busy_report_dir(w):
    (w.root / "report").mkdir()
    (w.root / "report" / "notes.txt").write_text("mine")
    return _evaluate_preds(w, ["--report-dir", w.root / "report"])


def _existing_onnx(w):
    (w.root / "m.onnx").write_bytes(b"an earlier export")
    return ["export", "--model", w.model, "--out", w.root / "m.onnx"]


def _demo_in_user_folder(w):
    return ["demo", "--out", w.data, "--epochs", "1", "--no-progress"]


CASES = {
    # predict
    "predict: --out is the folder of the input image": (lambda w: _predict(w, w.image(0), out=w.data / "images"), "would overwrite the input", ["cells_000.png"]),
    "predict: --out beside an input of another format": (_jpeg_beside, "would be written beside the input", ["a.jpg"]),
    "predict: --out inside the input folder": (lambda w: _predict(w, w.data / "images", out=w.data / "images" / "preds"), "lies in the input folder", ["images"]),
    "predict: --out is the input folder": (lambda w: _predict(w, w.data / "images", out=w.data / "images"), "lies in the input folder", ["images"]),
    "predict: --out holds the user's masks": (lambda w: _predict(w, w.data / "images", out=w.data / "masks"), "already exists; pass --overwrite", ["cells_000.png"]),
    "predict: --out holds earlier predictions": (lambda w: _predict(w, w.image(0), out=w.preds), "already exists; pass --overwrite", ["cells_000.png"]),
    "predict: two inputs with one name": (_same_name_twice, "would both write", ["a.png"]),
    "predict: an overlay named like another input": (_overlay_clash, "would both write", ["a_overlay.png"]),
    "predict: streamed --out is the input": (_streamed_onto_itself, "would overwrite the input", ["big.tif"]),
    "predict: streamed --out replaces a file": (_streamed_onto_a_file, "already exists; pass --overwrite", ["old.tif"]),
    "predict: --out is the model file": (lambda w: _predict(w, w.image(0), out=w.model), "is a file, not a folder", ["m.pt"]),
    # check
    "check: --weights into the masks": (lambda w: _check(w, "--weights", w.data / "masks", "--no-preview"), "would overwrite the input", ["masks"]),
    "check: --weights into the images": (lambda w: _check(w, "--weights", w.data / "images", "--no-preview"), "would overwrite the input", ["images"]),
    "check: --weights over earlier weight maps": (_earlier_weights, "already exists; pass --overwrite", ["cells_000.tif"]),
    "check: --preview over a mask": (lambda w: _check(w, "--preview", w.mask(1)), "would overwrite the input", ["cells_001.png"]),
    "check: --preview over another file": (lambda w: _check(w, "--preview", w.model), "already exists; pass --overwrite", ["m.pt"]),
    # evaluate
    "evaluate: --json-path over a truth mask": (lambda w: _evaluate_preds(w, ["--json-path", w.mask(0)]), "would overwrite the input", ["cells_000.png"]),
    "evaluate: --json-path over a prediction": (lambda w: _evaluate_preds(w, ["--json-path", w.preds / "cells_002.png"]), "would overwrite the input", ["cells_002.png"]),
    "evaluate: --json-path over the model": (lambda w: ["evaluate", "--model", w.model, "--data", w.data, "--json-path", w.model, "--no-progress"], "would overwrite the input", ["m.pt"]),
    "evaluate: --json-path replaces a file": (_existing_json, "already exists; pass --overwrite", ["metrics.json"]),
    "evaluate: --report-dir is the predictions folder": (lambda w: _evaluate_preds(w, ["--report-dir", w.preds]), "lies in the input folder", ["preds"]),
    "evaluate: --report-dir is the data set": (lambda w: _evaluate_preds(w, ["--report-dir", w.data]), "lies in the input folder", ["data"]),
    "evaluate: --report-dir holds other files": (_busy_report_dir, "already holds notes.txt", ["report"]),
    # export, demo, train, tune, recipe
    "export: --out replaces a file": (_existing_onnx, "already exists; pass --overwrite", ["m.onnx"]),
    "demo: --out holds the user's data": (_demo_in_user_folder, "which no demo made", ["images"]),
    "train: --out is the data set": (lambda w: ["train", "--data", w.data, "--out", w.data, *TRAIN], "holds the input", ["data"]),
    "train: --out is the masks folder": (lambda w: ["train", "--data", w.data, "--out", w.data / "masks", *TRAIN], "lies in the input folder", ["masks"]),
    "train: --out is the images folder, even with --overwrite": (lambda w: ["train", "--data", w.data, "--out", w.data / "images", "--overwrite", *TRAIN], "lies in the input folder", ["images"]),
    "tune: --out is the data set": (lambda w: ["tune", "--data", w.data, "--out", w.data, "--trials", "1", *TRAIN], "holds the input", ["data"]),
}


@pytest.mark.parametrize("case", CASES)
def test_outputs_never_harm_the_users_files(world, capsys, case):
    make, fragment, names = CASES[case]
    argv = make(world)
    untouched = Untouched(world.root)
    expect_error(capsys, argv, fragment, names)
    untouched.check()


def test_overwrite_replaces_earlier_outputs_but_never_an_input(world, capsys):
    out = world.root / "out"
    args = _predict(world, world.image(0), out=out)
    assert main([str(a) for a in args]) == 0
    first = (out / "cells_000.png").read_bytes()
    assert main([str(a) for a in args]) == 2
    assert "already exists; pass --overwrite" in capsys.readouterr().err
    assert main([str(a) for a in [*args, "--overwrite"]]) == 0
    assert (out / "cells_000.png").read_bytes() == first
    untouched = Untouched(world.data)
    expect_error(capsys, _predict(world, world.image(0), out=world.data / "images", extra=["--overwrite"]), "would overwrite the input")
    untouched.check()


def test_outputs_may_sit_beside_the_model_and_an_earlier_check_preview_is_replaced(world, capsys):
    untouched = Untouched(world.data, world.model, world.preds)
    assert main([str(a) for a in _predict(world, world.image(0), out=world.model.parent)]) == 0
    # a file the user names exactly may sit beside inputs: a streamed mask, the scores
    assert main([str(a) for a in _predict(world, world.image(1), out=world.data / "images" / "mask.tif")]) == 0
    (world.data / "images" / "mask.tif").unlink()
    assert main([str(a) for a in _evaluate_preds(world, ["--json-path", world.preds / "scores.json"])]) == 0
    (world.preds / "scores.json").unlink()
    assert main(["export", "--model", str(world.model), "--out", str(world.model.parent / "m.onnx")]) == 0
    preview = world.root / "preview.png"
    for _ in range(2):  # the second check replaces the first one's preview
        assert main(["check", str(world.data), "--preview", str(preview), "--no-progress"]) == 0
    untouched.check()
    assert sorted(p.name for p in world.model.parent.iterdir()) == ["cells_000.png", "m.onnx", "m.pt"]
