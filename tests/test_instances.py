"""unetkit.instances: the three-class target, the watershed post-processing, object tables, and the
``--target instances`` / ``predict --instances`` / ``evaluate --instances`` path end to end."""

import csv
from types import SimpleNamespace

import numpy as np
import pytest
import tifffile
import torch
import yaml
from scipy import ndimage

import unetkit
from unetkit.cli import main
from unetkit.data.io import write_png, write_tiff
from unetkit.engine.checkpoint import load_checkpoint
from unetkit.errors import UnetkitError
from unetkit.inference.predictor import Segmenter
from unetkit.instances import (
    INSTANCE_CLASSES,
    OBJECT_COLUMNS,
    instance_weight_maps,
    model_target,
    object_table,
    probabilities_to_instances,
    segment_instances,
    three_class_target,
    write_instances,
)
from unetkit.metrics.instances import iou_matrix, split_merge_counts

from tests.conftest import TINY_MODEL


def discs(shape, centres, radius) -> np.ndarray:
    """(H, W) int32 labels: disc i + 1 at centres[i]; later discs win where they overlap."""
    rows, cols = np.indices(shape)
    labels = np.zeros(shape, np.int32)
    for number, (r, c) in enumerate(centres, start=1):
        labels[(rows - r) ** 2 + (cols - c) ** 2 <= radius * radius] = number
    return labels


TWO_TOUCHING = discs((32, 44), [(16, 13), (16, 28)], 8)  # centres 15 px apart: the discs share a seam
ONE = discs((32, 44), [(16, 20)], 9)


def perfect_probabilities(labels: np.ndarray, blur: float = 0.0) -> np.ndarray:
    """(3, H, W) probabilities equal to the one-hot three-class target (optionally blurred, as a network would)."""
    onehot = np.stack([three_class_target(labels) == k for k in range(3)]).astype(np.float32)
    if blur:
        onehot = np.stack([ndimage.gaussian_filter(p, blur) for p in onehot])
        onehot /= onehot.sum(0, keepdims=True)
    return onehot


# the target


def test_target_marks_both_sides_of_a_seam_and_nothing_else():
    labels = np.zeros((4, 9), np.int32)
    labels[:, 1:4], labels[:, 4:8] = 1, 2  # two rectangles touching along a column edge
    np.testing.assert_array_equal(three_class_target(labels, width=1)[0], [0, 1, 1, 2, 2, 1, 1, 1, 0])
    np.testing.assert_array_equal(three_class_target(labels, width=2)[0], [0, 1, 2, 2, 2, 2, 1, 1, 0])
    # a 1-pixel background gap: still within reach, both sides are boundary; the outline of an object is not
    gap = np.array([[1, 1, 1, 0, 2, 2, 2]])
    np.testing.assert_array_equal(three_class_target(gap, width=2), [[1, 1, 2, 0, 2, 1, 1]])
    with pytest.raises(ValueError, match="boundary width must be >= 1"):
        three_class_target(labels, width=0)


def test_two_touching_discs_get_a_boundary_line_and_one_disc_none():
    target = three_class_target(TWO_TOUCHING)
    np.testing.assert_array_equal(target > 0, TWO_TOUCHING > 0)
    boundary = target == 2
    assert boundary.any() and set(np.unique(TWO_TOUCHING[boundary])) == {1, 2}  # on both discs
    # the line cuts the interiors apart: two interior components
    assert ndimage.label(target == 1)[1] == 2
    # every boundary pixel is within 2 px of the other disc
    for number, other in ((1, 2), (2, 1)):
        distance = ndimage.distance_transform_edt(TWO_TOUCHING != other)
        assert distance[boundary & (TWO_TOUCHING == number)].max() <= 2
    assert not (three_class_target(ONE) == 2).any()


def test_weight_map_stresses_the_boundary_band():
    target = three_class_target(TWO_TOUCHING)
    (weights,) = instance_weight_maps([TWO_TOUCHING], [target], w0=10, sigma=5)
    assert weights.dtype == np.float32 and weights.shape == TWO_TOUCHING.shape
    assert weights[target == 2].min() > weights[target == 1].max()  # w_c of the rare class plus the border term
    # without the border term the map is w_c, balancing background against objects (interior + boundary)
    (plain,) = instance_weight_maps([TWO_TOUCHING], [target], w0=0, sigma=5)
    total, objects = TWO_TOUCHING.size, (TWO_TOUCHING > 0).sum()
    w_background, w_object = total / (2 * (total - objects)), total / (2 * objects)
    np.testing.assert_allclose(plain, np.where(TWO_TOUCHING > 0, w_object, w_background), rtol=1e-6)
    (given,) = instance_weight_maps([TWO_TOUCHING], [target], w0=0, sigma=5, class_weights=[1, 2, 3])
    np.testing.assert_array_equal(given, target + 1)


# post-processing


def test_two_touching_discs_come_out_as_two_objects():
    truth = TWO_TOUCHING
    for blur in (0.0, 1.5):
        probs = perfect_probabilities(truth, blur)
        labels, foreground = probabilities_to_instances(probs, "instances", min_size=0)
        assert labels.dtype == np.uint16 and labels.max() == 2
        iou = iou_matrix(truth, labels)
        assert iou.max(axis=1).min() > 0.9, iou
        np.testing.assert_allclose(foreground, 1 - probs[0])
    # a binary model cannot separate them: one component
    semantic = np.stack([truth == 0, truth > 0]).astype(np.float32)
    assert probabilities_to_instances(semantic, "semantic", min_size=0)[0].max() == 1


def test_one_disc_is_not_split():
    for blur in (0.0, 1.5):
        labels = probabilities_to_instances(perfect_probabilities(ONE, blur), "instances")[0]
        assert labels.max() == 1 and iou_matrix(ONE, labels)[0, 0] > 0.95


def test_seedless_foreground_is_kept_and_small_objects_removed():
    foreground = np.zeros((6, 12), np.float32)
    interior = np.zeros((6, 12), np.float32)
    foreground[1:5, 1:5] = interior[2:4, 2:4] = 0.9  # 16 px object with a seed
    foreground[1:4, 7:10] = 0.9  # 9 px, interior never confident: no seed
    foreground[5, 11] = 0.9  # 1 px speck
    labels = segment_instances(foreground, interior, min_size=0)
    assert labels.max() == 3 and (labels == 1).sum() == 16 and (labels == 2).sum() == 9
    expected = foreground > 0.5
    expected[5, 11] = False  # the speck goes, the 9 px object stays
    np.testing.assert_array_equal(segment_instances(foreground, interior, min_size=9) > 0, expected)
    only_big = segment_instances(foreground, interior, min_size=10)
    assert only_big.max() == 1 and (only_big == 1).sum() == 16


def test_holes_are_filled_but_objects_inside_kept():
    ring = np.zeros((9, 9), np.float32)
    ring[1:8, 1:8] = 1.0
    ring[3:6, 3:6] = 0.0  # a 3x3 hole
    labels = segment_instances(ring, min_size=0)
    assert labels.max() == 1 and (labels == 1).sum() == 49
    assert (segment_instances(ring, min_size=0, fill_holes=False) == 1).sum() == 40
    ring[4, 4] = 1.0  # an object inside the hole stays itself
    labels = segment_instances(ring, min_size=0)
    assert labels.max() == 2 and labels[4, 4] == 2 and (labels == 1).sum() == 48


def test_labels_are_renumbered_in_raster_order():
    foreground = np.array([[0, 0, 0, 1], [1, 0, 0, 0], [1, 0, 1, 0]], np.float32)
    np.testing.assert_array_equal(segment_instances(foreground, min_size=0), [[0, 0, 0, 1], [2, 0, 0, 0], [2, 0, 3, 0]])


def test_object_table_and_csv_are_exact(tmp_path):
    labels = np.zeros((5, 6), np.uint16)
    labels[1:3, 1:4] = 1  # 2x3 block: centroid (1.5, 2), box rows 1..2, cols 1..3
    labels[4, 5] = 2
    probability = np.zeros((5, 6), np.float32)
    probability[1:3, 1:4] = 0.5
    probability[1, 1] = 0.8
    probability[4, 5] = 0.25
    table = object_table(labels, probability)
    assert table[0] == {"label": 1, "area": 6, "centroid_row": 1.5, "centroid_col": 2.0, "min_row": 1, "min_col": 1,
                        "max_row": 3, "max_col": 4, "mean_probability": pytest.approx(0.55)}  # fmt: skip
    assert table[1]["area"] == 1 and (table[1]["centroid_row"], table[1]["centroid_col"]) == (4.0, 5.0)
    assert (table[1]["max_row"], table[1]["max_col"], table[1]["mean_probability"]) == (5, 6, 0.25)

    probs = np.stack([1 - probability, probability, np.zeros_like(probability)])  # a binary model's output
    probs[:, labels > 0] = [[0.2], [0.8], [0.0]]
    files = write_instances(tmp_path / "out", "img", probs[:2], "semantic", min_size=0)
    assert [f.name for f in files] == ["img_instances.tif", "img_objects.csv"]
    written = tifffile.imread(files[0])
    assert written.dtype == np.uint16 and written.shape == (5, 6)
    np.testing.assert_array_equal(written, labels)
    with open(files[1], newline="") as f:
        rows = list(csv.DictReader(f))
    assert tuple(rows[0]) == OBJECT_COLUMNS
    assert rows[0] == {"label": "1", "area": "6", "centroid_row": "1.5", "centroid_col": "2.0", "min_row": "1", "min_col": "1",
                       "max_row": "3", "max_col": "4", "mean_probability": "0.8"}  # fmt: skip


def test_model_target_refuses_multiclass_semantic_models():
    assert model_target({"classes": list(INSTANCE_CLASSES), "target": "instances"}) == "instances"
    assert model_target({"classes": ["background", "cell"]}) == "semantic"
    with pytest.raises(UnetkitError, match=r"m.pt predicts 3 classes \(sky, road, car\); --instances needs a model trained with --target instances"):
        model_target({"classes": ["sky", "road", "car"], "target": "semantic"}, "m.pt")


class PerfectSegmenter(Segmenter):
    """A test double: a Segmenter whose logits are the perfect three-class probabilities of ``labels``."""

    def __init__(self, labels: np.ndarray) -> None:
        meta = {"classes": list(INSTANCE_CLASSES), "colors": [[0, 0, 0], [255, 255, 255], [255, 0, 0]], "target": "instances"}
        super().__init__(SimpleNamespace(config=SimpleNamespace(in_channels=1)), meta)
        self.labels = labels

    def logits(self, image: np.ndarray, name: str = "image") -> np.ndarray:
        return np.log(perfect_probabilities(self.labels, blur=1.0) + 1e-6)


def test_predict_instances_splits_touching_discs(tmp_path):
    write_png(tmp_path / "two.png", (TWO_TOUCHING > 0).astype(np.uint8) * 200)
    written = unetkit.predict(PerfectSegmenter(TWO_TOUCHING), tmp_path / "two.png", tmp_path / "out", instances=True, progress=False)
    assert [p.name for p in written] == ["two.png", "two_instances.tif", "two_objects.csv"]
    labels = tifffile.imread(written[1])
    assert labels.dtype == np.uint16 and labels.max() == 2 and iou_matrix(TWO_TOUCHING, labels).max(axis=1).min() > 0.9
    with open(written[2], newline="") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["area"]) for r in rows] == np.bincount(labels.ravel())[1:].tolist()


# object metrics


def test_split_merge_counts():
    truth = np.array([[1, 1, 1, 1, 0, 2, 3, 0, 4, 4]])
    pred = np.array([[1, 1, 2, 2, 0, 3, 3, 0, 0, 4]])  # 1 split in two, 2+3 merged, 4 half found
    assert split_merge_counts(truth, pred) == {"true_objects": 4, "pred_objects": 4, "splits": 1, "merges": 1}
    # a sliver over a boundary belongs to neither side by majority
    assert split_merge_counts(np.array([[1, 1, 2, 2]]), np.array([[0, 1, 1, 0]]))["merges"] == 0


@pytest.fixture()
def instance_predictions(tmp_path):
    """One 12x16 image with 4 nuclei as DSB-style per-object masks, and a prediction that merges A+B,
    splits C in halves and finds D exactly."""
    data, preds = tmp_path / "data", tmp_path / "preds"
    truth = np.zeros((12, 16), np.uint16)
    truth[1:5, 1:5], truth[1:5, 5:9], truth[7:11, 1:5], truth[7:11, 10:14] = 1, 2, 3, 4
    write_png(data / "images" / "img.png", (truth > 0).astype(np.uint8) * 200)
    for number in range(1, 5):
        write_png(data / "masks" / "img" / f"{number}.png", (truth == number).astype(np.uint8) * 255)
    pred = np.zeros_like(truth)
    pred[1:5, 1:9], pred[7:9, 1:5], pred[9:11, 1:5], pred[7:11, 10:14] = 1, 2, 3, 4
    write_png(preds / "img.png", np.where(pred > 0, 1, 0).astype(np.uint8) * 2)  # a 3-class map: the tif takes over
    write_tiff(preds / "img_instances.tif", pred)
    return data, preds


def test_evaluate_instances_on_hand_made_labels(instance_predictions, tmp_path, capsys):
    data, preds = instance_predictions
    r = unetkit.evaluate(pred=preds, truth=data, instances=True, progress=False)
    assert r["metrics"] == ["pixel", "boundary", "isbi", "instances"]
    inst = r["instances"]
    # IoU: A and B 16/32, C's halves 8/16 (not > 0.5), D 1: TP 1, FP 3, FN 3 at every threshold
    assert inst["ap"] == pytest.approx(1 / 7) and inst["ap_per_threshold"]["0.50"] == pytest.approx(1 / 7)
    assert inst["aji"] == pytest.approx((16 + 16 + 8 + 16) / (32 + 32 + 16 + 16 + 8))
    assert (inst["true_objects"], inst["pred_objects"], inst["splits"], inst["merges"]) == (4, 4, 1, 1)
    assert r["dice"]["foreground"] == 1.0  # the tif's foreground is the prediction
    assert main(["evaluate", "--pred", str(preds), "--truth", str(data), "--instances", "--metrics", "pixel"]) == 0
    assert "4 predicted / 4 true objects, 1 split, 1 merges" in capsys.readouterr().out
    # without the tif, a 3-class map cannot be scored against binary truth: say how to fix it
    (preds / "img_instances.tif").unlink()
    with pytest.raises(UnetkitError, match="class index 2 but the truth has 2 classes.*predict --instances"):
        unetkit.evaluate(pred=preds, truth=data, instances=True, progress=False)


# end to end


def touching_discs_data(folder, count=4, size=48, seed=0):
    """Images of bright discs, many touching, with 16-bit instance label images and a dataset.yaml."""
    rng = np.random.default_rng(seed)
    for i in range(count):
        centres = []
        for _ in range(3):
            r, c = rng.integers(10, size - 10, 2)
            centres += [(r, c), (r, c + 11)]  # a touching pair
        labels = discs((size, size), centres, 6)
        image = np.where(labels > 0, 170, 40) + rng.normal(0, 10, labels.shape)
        write_png(folder / "images" / f"d{i}.png", np.clip(image, 0, 255).astype(np.uint8))
        write_tiff(folder / "masks" / f"d{i}.tif", labels.astype(np.uint16))
    (folder / "dataset.yaml").write_text(yaml.safe_dump({"mask_mode": "instances"}))
    return folder


@pytest.mark.slow
def test_train_instances_predict_and_evaluate(tmp_path, capsys):
    torch.set_num_threads(1)
    data = touching_discs_data(tmp_path / "data")
    run = tmp_path / "run"
    unetkit.train(data=str(data), out=str(run), epochs=1, steps_per_epoch=2, target="instances", loss="weighted-ce+dice",
                  **{**TINY_MODEL, "report": True})  # fmt: skip
    meta = load_checkpoint(run / "best.pt")["meta"]
    assert meta["target"] == "instances" and meta["classes"] == list(INSTANCE_CLASSES) and meta["boundary_width"] == 2
    assert meta["model"]["num_classes"] == 3
    assert "Objects" in (run / "report" / "index.html").read_text()  # the instance metrics by default

    out = tmp_path / "pred"
    assert main(["predict", "--model", str(run / "best.pt"), str(data / "images"), "--out", str(out), "--instances",
                 "--min-size", "0", "--no-progress"]) == 0  # fmt: skip
    for i in range(4):
        labels = tifffile.imread(out / f"d{i}_instances.tif")
        assert labels.dtype == np.uint16 and labels.shape == (48, 48)
        with open(out / f"d{i}_objects.csv", newline="") as f:
            rows = list(csv.DictReader(f))
        assert len(rows) == labels.max() and [int(r["label"]) for r in rows] == list(range(1, labels.max() + 1))
        assert set(np.unique(unetkit.data.io.read_mask_raw(out / f"d{i}.png"))) <= {0, 1, 2}
    # the watershed of the model's own probabilities, not the components of its foreground
    seg = unetkit.load(run / "best.pt", device="cpu", tile=64)
    expected = probabilities_to_instances(seg.predict_proba(unetkit.data.io.read_image(data / "images" / "d0.png")), "instances", min_size=0)[0]
    np.testing.assert_array_equal(tifffile.imread(out / "d0_instances.tif"), expected)
    capsys.readouterr()
    r = unetkit.evaluate(model=run / "best.pt", data=data, instances=True, progress=False)
    assert r["classes"] == ["background", "foreground"] and r["metrics"][-1] == "instances"
    assert r["instances"]["true_objects"] > 0 and set(r["instances"]) >= {"ap", "aji", "splits", "merges"}
    # the saved predictions score the same objects
    r2 = unetkit.evaluate(pred=out, truth=data, instances=True, min_size=0, progress=False)
    assert r2["instances"]["pred_objects"] == sum(int(tifffile.imread(out / f"d{i}_instances.tif").max()) for i in range(4))


@pytest.mark.slow
def test_binary_model_gives_components_and_target_instances_needs_instance_masks(tiny_data, tmp_path):
    torch.set_num_threads(1)
    with pytest.raises(UnetkitError, match="--target instances needs instance masks .* the masks are binary"):
        unetkit.train(data=str(tiny_data), out=str(tmp_path / "bad"), epochs=1, target="instances", **TINY_MODEL)
    run = tmp_path / "run"
    unetkit.train(data=str(tiny_data), out=str(run), epochs=1, steps_per_epoch=2, **TINY_MODEL)
    written = unetkit.predict(run / "best.pt", tiny_data / "images" / "cells_000.png", tmp_path / "pred", instances=True, progress=False)
    assert [p.name for p in written] == ["cells_000.png", "cells_000_instances.tif", "cells_000_objects.csv"]
    labels = tifffile.imread(written[1])
    assert labels.dtype == np.uint16 and labels.shape == (64, 48)
    sizes = np.bincount(labels.ravel())[1:]
    assert (sizes >= 16).all()  # the default --min-size
