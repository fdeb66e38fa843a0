"""``unetkit evaluate --pred --truth`` on bad and unusual input: every refusal is one line naming the file or
option, exit status 2, the inputs untouched and no --json-path or --report-dir left behind; predictions in any
binary encoding, as .tif, or against a plain folder of masks simply score.

The scores are hand-checked: two 8x10 images whose true 4x4 squares are predicted exactly and one column to the
right, so 28 of 32 true pixels are found with 4 false ones (Dice 56 / 64).
"""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from unetkit.cli import main

from tests.corpus.kit import Untouched, expect_error, log_case

DICE = 2 * 28 / (2 * 28 + 4 + 4)


def square(cols: tuple[int, int]) -> np.ndarray:
    mask = np.zeros((8, 10), np.uint8)
    mask[2:6, cols[0] : cols[1]] = 1
    return mask


TRUTH = square((2, 6))
PREDS = {"a": square((2, 6)), "b": square((3, 7))}


def save(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".tif":
        tifffile.imwrite(path, array)
    else:
        Image.fromarray(array).save(path)


@pytest.fixture()
def setup(tmp_path) -> tuple[Path, Path]:
    """A binary data set (0/255 masks) and its predictions as unetkit predict writes them (0/1 PNGs)."""
    data, preds = tmp_path / "data", tmp_path / "preds"
    for key, pred in PREDS.items():
        save(data / "images" / f"{key}.png", (TRUTH * 150 + 40).astype(np.uint8))
        save(data / "masks" / f"{key}.png", TRUTH * 255)
        save(preds / f"{key}.png", pred)
    return data, preds


def outputs(tmp_path: Path) -> list[str]:
    return ["--json-path", str(tmp_path / "out" / "m.json"), "--report-dir", str(tmp_path / "out" / "report")]


# --- refused: one line, exit 2, inputs untouched, no JSON and no report ------------------------------


def _three_classes(data: Path, preds: Path) -> None:
    (data / "dataset.yaml").write_text("mask_mode: index\nclasses: [bg, a, b]\n")
    for key in PREDS:
        save(data / "masks" / f"{key}.png", TRUTH * 2)
        save(preds / f"{key}.png", PREDS[key] * 255)


def _empty(folder: Path) -> None:
    for file in folder.iterdir():
        file.unlink()


def _replace(preds: Path, key: str, name: str, array: np.ndarray) -> None:
    (preds / f"{key}.png").unlink()
    save(preds / name, array)


def _grey_truth(data: Path, preds: Path) -> None:
    (data / "dataset.yaml").write_text("mask_mode: binary\n")
    save(data / "masks" / "b.png", np.where(TRUTH > 0, 255, 128).astype(np.uint8))


REFUSED = {  # case: (change the good setup, fragment, names the message must hold)
    "no predictions folder": (lambda d, p: shutil.rmtree(p), "predictions folder not found", ["preds"]),
    "empty predictions folder": (lambda d, p: _empty(p), "no prediction for 2 truth mask(s)", ["preds", "a"]),
    "one prediction missing": (lambda d, p: (p / "b.png").unlink(), "no prediction for 1 truth mask(s), e.g. b", []),
    "two predictions for one mask": (lambda d, p: save(p / "b.tif", PREDS["b"]), "are both predictions for the truth mask b", ["b.png", "b.tif"]),
    "prediction of another size": (lambda d, p: save(p / "b.png", np.zeros((5, 5), np.uint8)), "differs from its truth", ["b.png"]),
    "class index 7 for binary truth": (lambda d, p: save(p / "b.png", PREDS["b"] * 7), "class index 7 but the truth has 2 classes", ["b.png"]),
    "0/255 with a stray 1": (lambda d, p: save(p / "b.png", np.where(PREDS["b"] > 0, 255, 1).astype(np.uint8)), "class index 255", ["b.png"]),
    "instance classes without objects": (lambda d, p: save(p / "b.png", PREDS["b"] * 2), "NAME_instances.tif", ["b.png"]),
    "0/255 against three classes": (_three_classes, "class index 255 but the truth has 3 classes", ["a.png"]),
    "colour prediction": (lambda d, p: save(p / "b.png", np.dstack([PREDS["b"] * 255, PREDS["b"], PREDS["b"]])), "is a colour image", ["b.png"]),
    "probabilities as prediction": (lambda d, p: _replace(p, "b", "b.tif", PREDS["b"] * 0.7), "non-integer values", ["b.tif"]),
    "NaN in a float prediction": (lambda d, p: _replace(p, "b", "b.tif", np.full((8, 10), np.nan, np.float32)), "", ["b.tif"]),
    "negative prediction": (lambda d, p: _replace(p, "b", "b.tif", -PREDS["b"].astype(np.int16)), "negative value -1", ["b.tif"]),
    "truncated prediction": (lambda d, p: (p / "b.png").write_bytes((p / "b.png").read_bytes()[:40]), "cannot read image", ["b.png"]),
    "zero-byte prediction": (lambda d, p: (p / "b.png").write_bytes(b""), "", ["b.png"]),
    "probabilities with 3 bands": (lambda d, p: tifffile.imwrite(p / "a_prob.tif", np.zeros((3, 8, 10), np.float32), photometric="minisblack"), "3 band(s) of 8x10 pixels, expected 2", ["a_prob.tif"]),
    "probabilities above 1": (lambda d, p: tifffile.imwrite(p / "a_prob.tif", np.full((2, 8, 10), 2.0, np.float32), photometric="minisblack"), "not probabilities", ["a_prob.tif"]),
    "objects of another size": (lambda d, p: tifffile.imwrite(p / "a_instances.tif", np.zeros((4, 4), np.uint16)), "differs from its truth", ["a_instances.tif"]),
    "objects with float labels": (lambda d, p: tifffile.imwrite(p / "a_instances.tif", PREDS["a"] * 0.5), "object labels of type float64", ["a_instances.tif"]),
    "grey in a binary truth mask": (_grey_truth, "", ["b.png"]),
    "truncated truth mask": (lambda d, p: (d / "masks" / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n"), "cannot read image", ["b.png"]),
}  # fmt: skip
METRICS = {"0/255 against three classes": "pixel,instances"}  # isbi needs binary data


@pytest.mark.parametrize("case", REFUSED)
def test_evaluate_refuses(setup, tmp_path, capsys, case):
    data, preds = setup
    change, fragment, names = REFUSED[case]
    change(data, preds)
    inputs = Untouched(data, preds)
    metrics = METRICS.get(case, "pixel,isbi,instances")
    expect_error(capsys, ["evaluate", "--pred", preds, "--truth", data, "--metrics", metrics, *outputs(tmp_path)], fragment, names)
    inputs.check()
    assert not (tmp_path / "out").exists()  # no JSON, no report, not even their folder


@pytest.mark.parametrize("argv, fragment", [
    (["--truth", "{tmp}/nowhere"], "--truth {tmp}/nowhere: not found; pass a folder of ground-truth masks"),
    (["--truth", "{tmp}/empty"], "no mask files"),
    (["--truth", "{data}", "--metrics", "dice"], "unknown metric family 'dice'"),
    (["--truth", "{data}", "--model", "{data}/m.pt"], "evaluate needs either --model with --data, or --pred with --truth"),
    (["--truth", "{data}", "--json-path", "{preds}/a.png"], "would overwrite the input"),
    (["--truth", "{data}", "--report-dir", "{preds}/report"], "lies in the input folder"),
    (["--truth", "{data}", "--report-dir", "{data}"], "lies in the input folder"),
    (["--truth", "{data}/masks", "--report-dir", "{data}/images/report"], "lies in the input folder"),
])  # fmt: skip
def test_evaluate_refuses_options(setup, tmp_path, capsys, argv, fragment):
    data, preds = setup
    (tmp_path / "empty").mkdir()
    inputs = Untouched(data, preds)
    fill = {"tmp": str(tmp_path), "data": str(data), "preds": str(preds)}
    expect_error(capsys, ["evaluate", "--pred", preds, *(a.format(**fill) for a in argv)], fragment.format(**fill))
    inputs.check()
    assert not (preds / "report").exists() and not (data / "images" / "report").exists()


def test_a_failure_on_the_last_image_leaves_no_report(setup, tmp_path, capsys):
    data, preds = setup
    save(preds / "b.png", PREDS["b"] * 9)  # a.png is scored and drawn first
    report = tmp_path / "report"
    expect_error(capsys, ["evaluate", "--pred", preds, "--truth", data, "--report-dir", report, "--json-path", tmp_path / "m.json"], "class index 9", ["b.png"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "preds"]  # no report, no hidden .report.partial, no JSON


# --- valid but unusual: scored -------------------------------------------------------------------


def _encode(preds: Path, suffix: str, encode) -> None:
    for key, pred in PREDS.items():
        (preds / f"{key}.png").unlink()
        save(preds / f"{key}{suffix}", encode(pred))


def _plain(data: Path, preds: Path) -> None:
    for mask in (data / "masks").iterdir():
        mask.rename(data / mask.name)
    shutil.rmtree(data / "masks")
    shutil.rmtree(data / "images")


WORKS = {  # case: (change the good setup, --truth relative to the data set)
    "0/1 predictions": (lambda d, p: None, "."),
    "0/255 predictions": (lambda d, p: _encode(p, ".png", lambda m: m * 255), "."),
    "1-bit predictions": (lambda d, p: _encode(p, ".png", lambda m: m > 0), "."),
    ".tif predictions": (lambda d, p: _encode(p, ".tif", lambda m: m), "."),
    "0/65535 .tiff predictions": (lambda d, p: _encode(p, ".tiff", lambda m: m.astype(np.uint16) * 65535), "."),
    "boolean .tif predictions": (lambda d, p: _encode(p, ".tif", lambda m: m > 0), "."),
    "the masks folder as truth": (lambda d, p: None, "masks"),
    "a plain folder of masks": (_plain, "."),
    "a data set without images": (lambda d, p: shutil.rmtree(d / "images"), "."),
    "other files beside the predictions": (lambda d, p: [(p / "notes.txt").write_text("x"), save(p / "a_overlay.png", PREDS["a"])], "."),
}  # fmt: skip


@pytest.mark.parametrize("case", WORKS)
def test_evaluate_scores(setup, tmp_path, case):
    data, preds = setup
    change, truth = WORKS[case]
    change(data, preds)
    inputs = Untouched(data, preds)
    assert main(["evaluate", "--pred", str(preds), "--truth", str(data / truth), "--metrics", "pixel,boundary,isbi,instances", *outputs(tmp_path)]) == 0
    result = json.loads((tmp_path / "out" / "m.json").read_text())
    log_case(f"scored: dice {result['dice']['foreground']:.4f}")
    assert result["dice"]["foreground"] == pytest.approx(DICE) and [row["key"] for row in result["per_image"]] == ["a", "b"]
    assert result["instances"]["true_objects"] == 2 and result["instances"]["pred_objects"] == 2
    assert (tmp_path / "out" / "report" / "index.html").is_file()
    inputs.check()


def test_pixel_scores_are_the_same_whatever_the_metrics(setup, tmp_path):
    """Objects that predict --instances thinned (here: b's square dropped) must not change the pixel scores."""
    data, preds = setup
    tifffile.imwrite(preds / "a_instances.tif", PREDS["a"].astype(np.uint16))
    tifffile.imwrite(preds / "b_instances.tif", np.zeros((8, 10), np.uint16))
    pixel = ("dice", "iou", "precision", "recall", "pixel_accuracy", "confusion_matrix")
    results = []
    for metrics in ("pixel", "pixel,boundary", "pixel,isbi", "pixel,instances", "pixel,boundary,isbi,instances"):
        assert main(["evaluate", "--pred", str(preds), "--truth", str(data), "--metrics", metrics, "--json-path", str(tmp_path / "m.json"), "--overwrite"]) == 0
        results.append(json.loads((tmp_path / "m.json").read_text()))
    for r in results:
        assert {k: r[k] for k in pixel} == {k: results[0][k] for k in pixel}
        assert [(row["dice"], row["iou"]) for row in r["per_image"]] == [(row["dice"], row["iou"]) for row in results[0]["per_image"]]
    assert results[0]["dice"]["foreground"] == pytest.approx(DICE) and results[3]["instances"]["pred_objects"] == 1


def test_a_model_scores_the_same_pixels_whatever_the_metrics_and_as_its_streamed_predictions(models, tiny_data, tmp_path):
    model = str(models["gray"])
    results = {}
    for metrics in ("pixel", "pixel,boundary,isbi,instances"):
        assert main(["evaluate", "--model", model, "--data", str(tiny_data), "--metrics", metrics, "--json-path", str(tmp_path / f"{metrics}.json"), "--no-progress"]) == 0
        results[metrics] = json.loads((tmp_path / f"{metrics}.json").read_text())
    # predict --stream writes NAME.tif; evaluate finds them and scores the same pixels as the model did
    assert main(["predict", "--model", model, str(tiny_data / "images"), "--out", str(tmp_path / "preds"), "--stream", "always", "--no-progress"]) == 0
    assert sorted(p.suffix for p in (tmp_path / "preds").iterdir()) == [".tif"] * 6
    assert main(["evaluate", "--pred", str(tmp_path / "preds"), "--truth", str(tiny_data / "masks"), "--metrics", "pixel", "--json-path", str(tmp_path / "s.json")]) == 0
    results["streamed"] = json.loads((tmp_path / "s.json").read_text())
    for r in results.values():
        assert r["confusion_matrix"] == results["pixel"]["confusion_matrix"] and r["dice"] == results["pixel"]["dice"]
