"""unetkit.evaluate end to end: metric selection, saved predictions and probabilities, the training report, the CLI."""

import json
import shutil

import numpy as np
import pytest
import tifffile
import yaml
from PIL import Image

import unetkit
from unetkit.cli import main
from unetkit.data.io import write_png
from unetkit.errors import UnetkitError
from unetkit.evaluation import decode_prediction, resolve_metrics

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
    with pytest.raises(UnetkitError, match=r"exact_prob.tif: 3 band\(s\) of 8x10 pixels, expected 2 of 8x10"):
        unetkit.evaluate(pred=preds, truth=data, metrics="isbi", progress=False)
    tifffile.imwrite(preds / "exact_prob.tif", np.full((2, 8, 10), 1.5, np.float32), photometric="minisblack")
    with pytest.raises(UnetkitError, match=r"exact_prob.tif: not probabilities .* values 1.5..1.5"):
        unetkit.evaluate(pred=preds, truth=data, metrics="isbi", progress=False)
    # predict --stream --probabilities writes (H, W, K): read the same
    probability = np.where(truth > 0, 0.65, 0.1).astype(np.float32)
    probability[2, 2] = 0.35
    tifffile.imwrite(preds / "exact_prob.tif", np.stack([1 - probability, probability], -1), photometric="minisblack", planarconfig="contig")
    assert unetkit.evaluate(pred=preds, truth=data, metrics="isbi", progress=False)["isbi"] == r["isbi"]


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


# --- saved predictions: where they are, how they are encoded, what the truth is ----------------------


@pytest.mark.parametrize("name, raw, want", [
    ("indices", np.array([[0, 1, 1]], np.uint8), [[0, 1, 1]]),
    ("0/255", np.array([[0, 255, 255]], np.uint8), [[0, 1, 1]]),
    ("boolean", np.array([[False, True, True]]), [[0, 1, 1]]),
    ("0/65535", np.array([[0, 65535, 65535]], np.uint16), [[0, 1, 1]]),
    ("0/255 in 16 bits", np.array([[0, 255, 255]], np.uint16), [[0, 1, 1]]),
    ("float indices", np.array([[0.0, 1.0, 1.0]], np.float32), [[0, 1, 1]]),
    ("all foreground", np.full((1, 3), 255, np.uint8), [[1, 1, 1]]),
])  # fmt: skip
def test_decode_prediction_takes_every_binary_encoding(name, raw, want):
    np.testing.assert_array_equal(decode_prediction(raw, "p.png", 2), want)


def test_decode_prediction_keeps_class_indices_and_the_instance_classes_only_with_their_objects():
    np.testing.assert_array_equal(decode_prediction(np.array([[0, 2, 1]], np.uint8), "p.png", 3), [[0, 2, 1]])
    np.testing.assert_array_equal(decode_prediction(np.array([[0, 2, 1]], np.uint8), "p.png", 2, instance_model=True), [[0, 1, 1]])


@pytest.mark.parametrize("raw, classes, message", [
    (np.array([[0, 1, 2]], np.uint8), 2, r"p.png: class index 2 but the truth has 2 classes; .*NAME_instances.tif"),
    (np.array([[0, 7, 7]], np.uint8), 2, "p.png: class index 7 but the truth has 2 classes"),
    (np.array([[0, 255, 1]], np.uint8), 2, "p.png: class index 255 but the truth has 2 classes"),  # not two-valued
    (np.array([[0, 255, 255]], np.uint8), 3, "p.png: class index 255 but the truth has 3 classes; compare predictions of a model trained"),
    (np.array([[0, 3, 3]], np.uint8), 2, "class index 3"),  # 3 is no binary encoding, even when two-valued
    (np.array([[0, -1, 1]], np.int16), 2, "p.png has the negative value -1"),
    (np.array([[0.2, 0.9, 0.5]], np.float32), 2, "p.png has non-integer values; a prediction holds class indices"),
    (np.array([[0, np.nan, 1]], np.float32), 2, "p.png has non-integer values"),
    (np.zeros((1, 3, 3), np.uint8), 2, "p.png is a colour image"),
])  # fmt: skip
def test_decode_prediction_refuses_what_is_no_prediction_of_these_classes(raw, classes, message):
    with pytest.raises(UnetkitError, match=message):
        decode_prediction(raw, "p.png", classes)


def test_a_plain_folder_of_masks_is_the_truth(hand_made, tmp_path):
    data, preds = hand_made
    want = unetkit.evaluate(pred=preds, truth=data, metrics="pixel,boundary,isbi", progress=False)
    plain, bare = tmp_path / "plain", tmp_path / "bare"
    shutil.copytree(data / "masks", plain)
    shutil.copytree(data / "masks", bare / "masks")
    for truth in (plain, bare, bare / "masks"):  # a folder of masks; a data set folder without images/, and its masks/
        got = unetkit.evaluate(pred=preds, truth=truth, metrics="pixel,boundary,isbi", progress=False)
        assert {k: got[k] for k in ("dice", "iou", "boundary", "isbi", "per_image")} == {k: want[k] for k in ("dice", "iou", "boundary", "isbi", "per_image")}
    report = tmp_path / "report"
    unetkit.evaluate(pred=preds, truth=plain, report_dir=report, progress=False)  # no images to draw: the tables only
    assert (report / "index.html").is_file() and not list((report / "images").glob("*_input.png"))


def test_a_mask_folder_uses_the_yaml_beside_it(tmp_path):
    masks, preds = tmp_path / "data" / "masks", tmp_path / "preds"
    write_png(masks / "a.png", np.array([[0, 1], [2, 2]], np.uint8))
    write_png(preds / "a.png", np.array([[0, 1], [2, 1]], np.uint8))
    (tmp_path / "data" / "dataset.yaml").write_text("mask_mode: index\nclasses: [bg, x, y]\n")
    r = unetkit.evaluate(pred=preds, truth=masks, progress=False)
    assert r["classes"] == ["bg", "x", "y"] and r["pixel_accuracy"]["overall"] == 0.75


def test_missing_truth_and_empty_mask_folders_are_named(tmp_path):
    (tmp_path / "preds").mkdir()
    (tmp_path / "empty").mkdir()
    with pytest.raises(UnetkitError, match="--truth .*nowhere: not found; pass a folder of ground-truth masks"):
        unetkit.evaluate(pred=tmp_path / "preds", truth=tmp_path / "nowhere", progress=False)
    with pytest.raises(UnetkitError, match="--truth .*empty: no mask files"):
        unetkit.evaluate(pred=tmp_path / "preds", truth=tmp_path / "empty", progress=False)


@pytest.mark.parametrize("encoding", ["0/1", "0/255", "1-bit", "tif 0/65535", "tif bool"])
def test_predictions_in_any_binary_encoding_and_format_score_the_same(hand_made, encoding):
    data, preds = hand_made
    want = unetkit.evaluate(pred=preds, truth=data, metrics="pixel,boundary,instances", progress=False)
    for file in list(preds.glob("*.png")):
        pred = np.asarray(Image.open(file)) > 0
        if encoding.startswith("tif"):
            file.unlink()
            tifffile.imwrite(file.with_suffix(".tif"), pred if encoding == "tif bool" else pred.astype(np.uint16) * 65535)
        elif encoding == "1-bit":
            Image.fromarray(pred).convert("1").save(file)
        else:
            write_png(file, pred.astype(np.uint8) * (255 if encoding == "0/255" else 1))
    got = unetkit.evaluate(pred=preds, truth=data, metrics="pixel,boundary,instances", progress=False)
    assert got == want


def test_predictions_are_found_by_name_under_any_image_extension(hand_made):
    data, preds = hand_made
    tifffile.imwrite(preds / "exact.tiff", np.asarray(Image.open(preds / "exact.png")))
    (preds / "exact.png").unlink()
    (preds / "notes.txt").write_text("not a prediction")
    (preds / "other.png").write_bytes(b"a file of no truth mask is not looked at")
    r = unetkit.evaluate(pred=preds, truth=data, metrics="pixel", progress=False)
    assert [row["key"] for row in r["per_image"]] == ["exact", "shifted"] and r["per_image"][0]["dice"] == 1.0
    write_png(preds / "exact.png", np.zeros((8, 10), np.uint8))
    with pytest.raises(UnetkitError, match=r"preds/exact.png and .*preds/exact.tiff are both predictions for the truth mask exact; keep one"):
        unetkit.evaluate(pred=preds, truth=data, progress=False)


def test_pixel_scores_do_not_depend_on_the_metric_families(hand_made):
    """The objects of NAME_instances.tif are not the pixel prediction: predict --instances drops small objects and fills
    holes there, so taking their foreground for the pixel scores changed Dice whenever instances were asked for."""
    data, preds = hand_made
    objects = np.zeros((8, 10), np.uint16)  # predict --instances dropped the shifted square as too small
    tifffile.imwrite(preds / "shifted_instances.tif", objects)
    tifffile.imwrite(preds / "exact_instances.tif", square((8, 10), (2, 5), (2, 5)).astype(np.uint16))
    pixel = ("dice", "iou", "precision", "recall", "pixel_accuracy", "confusion_matrix")
    results = [unetkit.evaluate(pred=preds, truth=data, metrics=m, progress=False) for m in ("pixel", "pixel,instances", "pixel,boundary,isbi,instances")]
    for r in results:
        assert {k: r[k] for k in pixel} == {k: results[0][k] for k in pixel}
        assert r["dice"]["foreground"] == 2 * 28 / (2 * 28 + 4 + 4)  # 16 + 12 of 16 + 16 true pixels found, 4 false
        assert [row["dice"] for row in r["per_image"]] == [1.0, (0.75 + 120 / 128) / 2]
    assert results[1]["instances"]["pred_objects"] == 1  # the objects still come from the files


def test_instance_model_predictions_need_their_objects_beside_them(hand_made):
    data, preds = hand_made
    for name in ("exact", "shifted"):  # background / interior / boundary, as a --target instances model writes them
        classes = np.asarray(Image.open(preds / f"{name}.png")).copy()
        classes[classes > 0] = 1
        classes[2, :][classes[2, :] > 0] = 2
        write_png(preds / f"{name}.png", classes)
    with pytest.raises(UnetkitError, match="exact.png: class index 2 but the truth has 2 classes"):
        unetkit.evaluate(pred=preds, truth=data, metrics="pixel", progress=False)
    for name in ("exact", "shifted"):
        tifffile.imwrite(preds / f"{name}_instances.tif", (np.asarray(Image.open(preds / f"{name}.png")) > 0).astype(np.uint16))
    r = unetkit.evaluate(pred=preds, truth=data, metrics="pixel", progress=False)
    assert r["dice"]["foreground"] == 2 * 28 / (2 * 28 + 4 + 4)  # interior and boundary are the foreground


def test_a_failure_halfway_leaves_no_report_and_no_json(hand_made, tmp_path):
    data, preds = hand_made
    write_png(preds / "shifted.png", np.full((8, 10), 9, np.uint8))  # the second image fails, after the first was drawn
    report, json_path = tmp_path / "report", tmp_path / "m.json"
    with pytest.raises(UnetkitError, match="shifted.png: class index 9"):
        unetkit.evaluate(pred=preds, truth=data, report_dir=report, json_path=json_path, progress=False)
    assert not report.exists() and not json_path.exists() and not list(tmp_path.glob(".report*"))
    report.mkdir()
    (report / "notes.txt").write_text("mine")
    with pytest.raises(UnetkitError):
        unetkit.evaluate(pred=preds, truth=data, report_dir=report, progress=False)
    assert [p.name for p in report.iterdir()] == ["notes.txt"]
    write_png(preds / "shifted.png", square((8, 10), (2, 5), (3, 6)))
    with pytest.raises(UnetkitError, match="already holds notes.txt; pass --overwrite"):
        unetkit.evaluate(pred=preds, truth=data, report_dir=report, progress=False)
    unetkit.evaluate(pred=preds, truth=data, report_dir=report, overwrite=True, progress=False)  # into the existing folder, beside its files
    assert (report / "notes.txt").read_text() == "mine" and (report / "index.html").is_file() and (report / "images" / "exact_truth.png").is_file()


def test_outputs_never_replace_inputs(hand_made, tmp_path):
    data, preds = hand_made
    before = {p: p.read_bytes() for p in [*preds.iterdir(), *(data / "masks").iterdir()]}
    with pytest.raises(UnetkitError, match="--json-path: .*exact.png would overwrite the input"):
        unetkit.evaluate(pred=preds, truth=data, json_path=preds / "exact.png", progress=False)
    for folder in (preds, data, data / "images" / "report"):
        with pytest.raises(UnetkitError, match="--report-dir: .* lies in the input folder"):
            unetkit.evaluate(pred=preds, truth=data, report_dir=folder, progress=False)
    assert {p: p.read_bytes() for p in before} == before and not (data / "images" / "report").exists()
    assert unetkit.evaluate(pred=preds, truth=data, json_path=preds / "metrics.json", progress=False)["dice"]  # a file named exactly may sit there
