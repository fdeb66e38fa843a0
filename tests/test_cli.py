"""End to end through the real CLI: train -> predict -> evaluate on a tiny generated data set."""

import csv
import json
import subprocess
import sys

import numpy as np
import pytest
import tifffile
import torch
import yaml
from PIL import Image

from unetkit.cli import main
from unetkit.data.io import read_mask_raw
from unetkit.data.synthetic import synthetic_cells
from unetkit.metrics import confusion_matrix, scores

from tests.conftest import TINY_MODEL


def flags(options: dict) -> list[str]:
    return [x for k, v in options.items() for x in (f"--{k.replace('_', '-')}", str(v).lower() if isinstance(v, bool) else str(v))]


@pytest.fixture(scope="module")
def run(tiny_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "exp"
    code = main(["train", "--data", str(tiny_data), "--out", str(out), "--epochs", "2", "--steps-per-epoch", "3", "--seed", "1", *flags(TINY_MODEL)])
    assert code == 0
    return out


def test_run_folder_contents(run):
    assert {p.name for p in run.iterdir()} == {"best.pt", "last.pt", "config.yaml", "metrics.csv", "curves.png", "status.json"}
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    assert cfg["epochs"] == 2 and cfg["base_channels"] == 4 and cfg["padding"] == "valid"
    rows = list(csv.DictReader((run / "metrics.csv").open()))
    assert [int(r["epoch"]) for r in rows] == [1, 2] and [int(r["step"]) for r in rows] == [3, 6]
    assert all(0.0 <= float(r["val_dice"]) <= 1.0 for r in rows)
    assert Image.open(run / "curves.png").format == "PNG"
    ckpt = torch.load(run / "best.pt", weights_only=True)
    meta = json.loads(ckpt["meta"])
    assert meta["classes"] == ["background", "foreground"] and meta["model"]["in_channels"] == 1
    assert len(meta["normalization"]["mean"]) == 1 and meta["normalization"]["std"][0] > 1  # raw 8-bit units


def test_predict_any_size_with_all_outputs(run, tmp_path):
    rng = np.random.default_rng(0)
    (tmp_path / "in").mkdir()
    for name, shape in (("odd", (37, 91)), ("tiny", (5, 3)), ("big", (150, 130))):
        Image.fromarray(synthetic_cells(shape, rng)[0]).save(tmp_path / "in" / f"{name}.png")
    out = tmp_path / "preds"
    assert main(["predict", "--model", str(run / "best.pt"), str(tmp_path / "in"), "--out", str(out), "--tile", "60", "--probabilities", "--overlay", "--no-progress"]) == 0
    for name, shape in (("odd", (37, 91)), ("tiny", (5, 3)), ("big", (150, 130))):
        mask = read_mask_raw(out / f"{name}.png")
        assert mask.shape == shape and mask.dtype == np.uint8 and set(np.unique(mask)) <= {0, 1}
        prob = tifffile.imread(out / f"{name}_prob.tif")
        assert prob.shape == (2, *shape) and prob.dtype == np.float32
        np.testing.assert_allclose(prob.sum(0), 1.0, atol=1e-5)
        np.testing.assert_array_equal(prob.argmax(0), mask)
        assert np.asarray(Image.open(out / f"{name}_overlay.png")).shape == (*shape, 3)


def test_evaluate_model_and_saved_predictions_agree(run, tiny_data, tmp_path):
    a = tmp_path / "a.json"
    assert main(["evaluate", "--model", str(run / "best.pt"), "--data", str(tiny_data), "--json-path", str(a), "--no-progress"]) == 0
    preds = tmp_path / "preds"
    assert main(["predict", "--model", str(run / "best.pt"), str(tiny_data / "images"), "--out", str(preds), "--no-progress"]) == 0
    b = tmp_path / "b.json"
    assert main(["evaluate", "--pred", str(preds), "--truth", str(tiny_data / "masks"), "--json-path", str(b), "--report-dir", str(tmp_path / "rep")]) == 0
    ra, rb = json.loads(a.read_text()), json.loads(b.read_text())
    for key in ("dice", "iou", "precision", "recall", "pixel_accuracy"):
        assert set(ra[key]) >= {"background", "foreground", "mean"}
        assert ra[key] == rb[key]
    # recompute from the files by hand
    cm = sum(
        confusion_matrix(read_mask_raw(preds / f"cells_{i:03d}.png"), (read_mask_raw(tiny_data / "masks" / f"cells_{i:03d}.png") > 0).astype(int), 2)
        for i in range(6)
    )
    assert rb["dice"]["foreground"] == pytest.approx(scores(cm)["dice"]["1"])
    html = (tmp_path / "rep" / "index.html").read_text()
    assert "cells_000" in html and (tmp_path / "rep" / "images" / "cells_000_errors.png").is_file()


def test_errors_are_one_line_with_exit_2(tmp_path, capsys):
    assert main(["train", "--data", str(tmp_path / "missing"), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("unetkit: error: ") and "missing" in err and "\n" not in err
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "x.png")
    assert main(["predict", "--model", str(tmp_path / "none.pt"), str(tmp_path / "x.png"), "--out", str(tmp_path / "p")]) == 2
    assert "checkpoint not found" in capsys.readouterr().err
    assert main(["evaluate", "--pred", str(tmp_path)]) == 2
    assert "--model with --data, or --pred with --truth" in capsys.readouterr().err
    cfg = tmp_path / "c.yaml"
    cfg.write_text("epochz: 3\n")
    assert main(["train", "--config", str(cfg), "--data", "x"]) == 2
    assert "did you mean 'epochs'" in capsys.readouterr().err


def test_wrong_channels_refused(run, tmp_path, capsys):
    Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(tmp_path / "rgb.png")
    assert main(["predict", "--model", str(run / "best.pt"), str(tmp_path / "rgb.png"), "--out", str(tmp_path / "o")]) == 2
    assert "rgb.png has 3 channel(s); this model was trained on 1" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_time_budget_stops_cleanly(tiny_data, tmp_path):
    import unetkit

    result = unetkit.train(data=str(tiny_data), out=str(tmp_path / "t"), time=0.05, steps_per_epoch=2, **TINY_MODEL)
    assert result.epochs >= 1 and (tmp_path / "t" / "best.pt").is_file()
    assert result.seconds < 3 + 30  # the 3-second budget, with slack for a loaded machine


def test_console_script_help():
    out = subprocess.run([sys.executable, "-m", "unetkit", "train", "--help"], capture_output=True, text=True, check=True).stdout
    assert "--patch-size" in out and "--val-fraction" in out and "(default: 4)" in out
