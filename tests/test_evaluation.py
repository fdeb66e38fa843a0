"""unetkit.evaluate end to end: metric selection, saved predictions and probabilities, the training report, the CLI."""

import json

import numpy as np
import pytest
import tifffile
import yaml

import unetkit
from unetkit.cli import main
from unetkit.data.io import write_png
from unetkit.errors import UnetkitError
from unetkit.evaluation import resolve_metrics

from tests.conftest import TINY_MODEL


def square(shape, rows, cols) -> np.ndarray:
    mask = np.zeros(shape, np.uint8)
    mask[rows[0] : rows[1] + 1, cols[0] : cols[1] + 1] = 1
    return mask


@pytest.fixture()
def hand_made(tmp_path):
    """Two 8x10 binary pairs and predictions: 'exact' is right, 'shifted' has its square one column right."""
    data, preds = tmp_path / "data", tmp_path / "preds"
    truth = square((8, 10), (2, 5), (2, 5))
    for name, pred in (("exact", truth), ("shifted", square((8, 10), (2, 5), (3, 6)))):
        write_png(data / "images" / f"{name}.png", (truth * 200 + 20).astype(np.uint8))
        write_png(data / "masks" / f"{name}.png", truth * 255)
        write_png(preds / f"{name}.png", pred)
    return data, preds


def test_resolve_metrics():
    assert resolve_metrics(None, ["background", "cell"]) == ("pixel", "boundary", "isbi")
    assert resolve_metrics(None, ["a", "b", "c"]) == ("pixel", "boundary")
    assert resolve_metrics("instances, boundary", ["a", "b", "c"]) == ("pixel", "boundary", "instances")
    with pytest.raises(UnetkitError, match="unknown metric family 'hausdorff'; choose from pixel, boundary, isbi, instances"):
        resolve_metrics("pixel,hausdorff", ["a", "b"])
    with pytest.raises(UnetkitError, match="isbi metrics need binary data .* 3 classes .* drop isbi"):
        resolve_metrics(["isbi"], ["a", "b", "c"])


def test_saved_predictions_scored_by_hand(hand_made, tmp_path):
    data, preds = hand_made
    r = unetkit.evaluate(pred=preds, truth=data, metrics="pixel,boundary,isbi,instances", json_path=tmp_path / "m.json", progress=False)
    assert r["metrics"] == ["pixel", "boundary", "isbi", "instances"]
    assert json.loads((tmp_path / "m.json").read_text())["isbi"] == r["isbi"]
    rows = {row["key"]: row for row in r["per_image"]}
    assert rows["exact"]["dice"] == 1.0 and rows["exact"]["hd95"] == 0.0 and rows["exact"]["warping_error"] == 0.0
    # the shifted square: 8 of 80 pixels wrong, no topological error, contours at most 1 pixel apart
    assert rows["shifted"]["pixel_error"] == pytest.approx(8 / 80)
    assert rows["shifted"]["warping_error"] == 0.0 and rows["shifted"]["hd95"] == 1.0
    assert rows["shifted"]["rand_error"] == pytest.approx(1 - 2 * (12**2 + 4) / (16**2 + 12**2 + 4))
    assert r["isbi"]["pixel_error"] == pytest.approx(8 / 160) and r["isbi"]["warping_error"] == 0.0
    assert r["boundary"]["tolerance"] == 2.0 and r["boundary"]["f1"]["foreground"] == 1.0  # within 2 px
    assert r["boundary"]["hd95"]["foreground"] == pytest.approx(0.5)  # mean of 0 and 1 over the images
    # objects: IoU of the shifted square is 12/20 = 0.6 -> matched at 0.50 and 0.55 only
    assert rows["exact"]["ap"] == 1.0 and rows["shifted"]["ap"] == pytest.approx(2 / 10)
    assert r["instances"]["ap"] == pytest.approx(0.6) and r["instances"]["ap_per_threshold"]["0.60"] == 0.5
    assert r["instances"]["aji"] == pytest.approx((1 + 0.6) / 2)


def test_probability_maps_next_to_predictions_drive_the_isbi_sweep(hand_made):
    data, preds = hand_made
    truth = square((8, 10), (2, 5), (2, 5))
    for name in ("exact", "shifted"):
        probability = np.where(truth > 0, 0.65, 0.1).astype(np.float32)
        probability[2, 2] = 0.35  # a corner pixel only a low threshold keeps
        tifffile.imwrite(preds / f"{name}_prob.tif", np.stack([1 - probability, probability]), photometric="minisblack")
    r = unetkit.evaluate(pred=preds, truth=data, metrics="isbi", progress=False)
    assert r["isbi"]["pixel_error"] == 0.0 and r["isbi"]["thresholds"]["pixel_error"] == 0.1
    tifffile.imwrite(preds / "exact_prob.tif", np.zeros((3, 8, 10), np.float32), photometric="minisblack")
    with pytest.raises(UnetkitError, match=r"exact_prob.tif: shape \(3, 8, 10\), expected \(2, 8, 10\)"):
        unetkit.evaluate(pred=preds, truth=data, metrics="isbi", progress=False)


def test_default_metrics_and_instances_only_when_asked(hand_made):
    data, preds = hand_made
    r = unetkit.evaluate(pred=preds, truth=data, progress=False)
    assert r["metrics"] == ["pixel", "boundary", "isbi"] and "instances" not in r
    assert set(r) >= {"dice", "iou", "precision", "recall", "pixel_accuracy", "per_image", "confusion_matrix", "classes"}


@pytest.mark.slow
def test_training_writes_the_validation_report_and_evaluate_reads_the_run(tiny_data, tmp_path):
    out = tmp_path / "run"
    unetkit.train(data=str(tiny_data), out=str(out), epochs=1, steps_per_epoch=2, **{**TINY_MODEL, "report": True})
    page = (out / "report" / "index.html").read_text()
    assert "images/curves.png" in page and (out / "report" / "images" / "curves.png").is_file()
    result = json.loads((out / "report" / "metrics.json").read_text())
    assert result["metrics"] == ["pixel", "boundary", "isbi"]
    assert page.count("<section class='sample'") == len(result["per_image"]) >= 1
    # the same model through the CLI, with a chosen metric set
    rep = tmp_path / "rep"
    code = main(["evaluate", "--model", str(out / "best.pt"), "--data", str(tiny_data), "--metrics", "pixel,instances",
                 "--json-path", str(tmp_path / "e.json"), "--report-dir", str(rep), "--no-progress"])
    assert code == 0
    e = json.loads((tmp_path / "e.json").read_text())
    assert e["metrics"] == ["pixel", "instances"] and len(e["per_image"]) == 6 and "ap" in e["per_image"][0]
    assert "images/curves.png" in (rep / "index.html").read_text()  # the model's run folder is known


def test_cli_table_errors_and_demo_report_line(hand_made, tmp_path, capsys, monkeypatch):
    data, preds = hand_made
    assert main(["evaluate", "--pred", str(preds), "--truth", str(data), "--metrics", "pixel,isbi", "--tolerance", "1"]) == 0
    table = capsys.readouterr().out
    assert "Rand error" in table and "warping error" in table and "2 image(s)" in table
    assert main(["evaluate", "--pred", str(preds), "--truth", str(data), "--metrics", "dice"]) == 2
    assert "unknown metric family 'dice'" in capsys.readouterr().err
    (data / "dataset.yaml").write_text(yaml.safe_dump({"mask_mode": "index", "classes": ["a", "b", "c"]}))
    assert main(["evaluate", "--pred", str(preds), "--truth", str(data), "--metrics", "isbi"]) == 2
    assert "drop isbi from --metrics" in capsys.readouterr().err

    import unetkit.demo

    monkeypatch.setattr(unetkit.demo, "run_demo", lambda **kw: {"dice": 0.9, "report": tmp_path / "report" / "index.html"})
    assert main(["demo", "--out", str(tmp_path)]) == 0
    assert f"report: {tmp_path / 'report' / 'index.html'}" in capsys.readouterr().out.splitlines()
