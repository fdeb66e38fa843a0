"""The fingerprint on tiny hand-made data sets: exact shapes, shares and region sizes."""

import math

import numpy as np
import pytest
from PIL import Image

from unetkit.data.dataset import load_spec
from unetkit.planning.fingerprint import centre_widths, fingerprint, region_sizes, sample_pairs, touching_objects, weighted_median

from tests.conftest import shared_data


def _pair(root, name, image, mask):
    for sub in ("images", "masks"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(root / "images" / f"{name}.png")
    Image.fromarray(mask).save(root / "masks" / f"{name}.png")


def test_region_sizes_are_the_8_connected_regions():
    mask = np.zeros((6, 8), np.int64)
    mask[0:2, 0:2] = 1  # 4 pixels
    mask[2, 2] = 1  # touches the first square at a corner: the same region
    mask[4:6, 4:8] = 1  # 8 pixels, 4 wide
    areas, sides = region_sizes(mask, 1)
    assert sorted(areas.tolist()) == [5, 8] and sorted(sides.tolist()) == [3, 4]
    assert [len(x) for x in region_sizes(mask, 2)] == [0, 0]


def test_fingerprint_of_a_hand_made_set(tmp_path):
    square = np.zeros((20, 30), np.uint8)
    square[2:6, 2:6] = 255  # one 4x4 object
    _pair(tmp_path, "a", np.full((20, 30), 10, np.uint8), square)
    two = np.zeros((40, 10), np.uint8)
    two[0:2, 0:2] = 255
    two[30:32, 0:2] = 255  # two 2x2 objects
    _pair(tmp_path, "b", np.full((40, 10), 30, np.uint8), two)
    fp = fingerprint(load_spec(tmp_path))
    assert (fp.pairs, fp.read, fp.channels, fp.dtype) == (2, 2, 1, "uint8")
    assert fp.median_shape == (30, 20) and fp.min_shape == (20, 10)
    background, cell = fp.classes
    assert cell.fraction == pytest.approx(24 / 1000) and background.fraction == pytest.approx(976 / 1000)
    assert (cell.images, cell.objects, background.images, background.objects) == (2, 3, 2, 2)
    assert cell.median_diameter == pytest.approx(2 * math.sqrt(4 / math.pi)) and cell.extent == pytest.approx(3.6)
    assert fp.percentiles[0][0] >= 10 and fp.percentiles[0][2] <= 30 and min(fp.classes, key=lambda c: c.fraction) is cell


def test_a_big_set_is_sampled_evenly(tmp_path):
    for i in range(7):
        _pair(tmp_path, f"{i}", np.zeros((8, 8), np.uint8), np.zeros((8, 8), np.uint8))
    spec = load_spec(tmp_path, mask_mode="binary")
    assert [p.key for p in sample_pairs(spec, 3)] == ["0", "3", "6"]
    assert fingerprint(spec, limit=3).read == 3


def test_centre_widths_measure_stripes_and_disks():
    stripe = np.zeros((20, 30), np.int64)
    stripe[5:8, :] = 1  # 3 pixels wide, however long
    classes, widths = centre_widths(stripe)
    assert np.median(widths[classes == 1]) == 3
    rows, cols = np.mgrid[:41, :41]
    disk = (((rows - 20) ** 2 + (cols - 20) ** 2) <= 100).astype(np.int64)  # diameter 21
    classes, widths = centre_widths(disk)
    assert 18 <= np.median(widths[classes == 1]) <= 21
    line = np.eye(20, dtype=np.int64)  # a diagonal line one pixel wide: its diagonal neighbours do not hide it
    classes, widths = centre_widths(line)
    assert (classes == 1).sum() == 20 and set(widths[classes == 1]) == {1.0}


def test_real_isbi_membranes_are_thin_and_cells_wide():
    fp = fingerprint(load_spec(shared_data("isbi2012")), limit=4)
    assert fp.median_shape == (512, 512) and fp.channels == 1
    membranes, cells = fp.classes  # the membranes are the dark class 0, and they connect across the whole slice
    assert membranes.fraction < 0.3 and membranes.width <= 7 and cells.width >= 2 * membranes.width and membranes.extent == 512


def test_weighted_median_weighs_values():
    assert weighted_median(np.array([1.0, 1.0, 1.0, 9.0]), np.array([1.0, 1.0, 1.0, 9.0])) == 9.0  # 9 holds 9 of 12
    assert weighted_median(np.array([3.0, 1.0, 2.0]), np.ones(3)) == 2.0


def test_touching_objects_counts_objects_that_meet_another():
    labels = np.array([[1, 1, 2, 0, 3], [1, 1, 2, 0, 3], [0, 0, 0, 0, 0], [4, 0, 5, 5, 0]])
    assert touching_objects(labels) == (2, 5)  # 1 and 2 meet; 3, 4 and 5 stand alone
