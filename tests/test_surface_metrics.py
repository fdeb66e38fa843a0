"""Surface distances in physical units on tiny hand-built 2D and 3D masks, and against brute force."""

import json
import math

import numpy as np
import pytest
from scipy import ndimage

from unetkit.metrics.surface import (
    average_surface_distance,
    hausdorff95,
    normalized_surface_dice,
    surface_distances,
    surface_scores,
)

R2, R10, R11 = math.sqrt(2), math.sqrt(10), math.sqrt(11)


def _square(shape=(6, 6), rows=(1, 4), cols=(1, 4)):
    mask = np.zeros(shape, bool)
    mask[rows[0] : rows[1], cols[0] : cols[1]] = True
    return mask


def _scores(pred, truth, spacing, tolerance):
    return (
        hausdorff95(pred, truth, spacing),
        average_surface_distance(pred, truth, spacing),
        normalized_surface_dice(pred, truth, spacing, tolerance),
    )


# --- brute force reference: surfaces by numpy slicing, distances by all pairs of surface voxels ---


def _surface_ref(mask):
    """Foreground voxels with a face neighbour outside the mask; outside the array is background."""
    padded = np.pad(mask, 1)  # the False margin makes np.roll's wrap-around bring in background
    inner = padded.copy()
    for axis in range(mask.ndim):
        for step in (1, -1):
            inner &= np.roll(padded, step, axis=axis)
    return (padded & ~inner)[(slice(1, -1),) * mask.ndim]


def _distances_ref(pred, truth, spacing):
    pts_p = np.argwhere(_surface_ref(pred)) * np.asarray(spacing, float)  # (N, ndim), C order
    pts_t = np.argwhere(_surface_ref(truth)) * np.asarray(spacing, float)
    pair = np.sqrt((((pts_p[:, None, :] - pts_t[None, :, :]) ** 2).sum(-1)))  # (Np, Nt)
    return pair.min(1), pair.min(0)


def _blob(rng, shape, threshold=0.55):
    field = ndimage.gaussian_filter(rng.random(shape), 1.2)
    return field > np.quantile(field, threshold)


# --- hand-computed cases ---


@pytest.mark.parametrize(
    "axis, spacing, hd95, asd",
    [
        # 3x3 squares, the prediction one pixel further along `axis`. Each surface is the 8-pixel ring.
        # Per direction: 4 ring pixels lie on the other ring (0), 3 stick out by one step along the
        # shift (one step), and 1 is the other square's centre, one pixel from the ring in every
        # direction (one step along the cheaper axis). With steps of 1: four 0, four 1 each way,
        # HD95 = 1, ASD = 8 / 16 = 0.5.
        (0, (1.0, 1.0), 1.0, 0.5),
        # Rows 2 mm apart, shift along rows: the 3 sticking out are at 2, the centre at 1 (its column
        # neighbour). Per direction [0, 0, 0, 0, 1, 2, 2, 2]: HD95 at rank 0.95 * 7 = 6.65 -> 2;
        # ASD = 2 * (1 + 3 * 2) / 16 = 14 / 16 = 0.875.
        (0, (2.0, 1.0), 2.0, 0.875),
        # Same spacing, shift along columns (1 mm): the row spacing is never the shortest step.
        (1, (2.0, 1.0), 1.0, 0.5),
        # Columns 3 mm apart, shift along columns: 3 at 3, centre at 1 (row neighbour);
        # ASD = 2 * (1 + 3 * 3) / 16 = 1.25.
        (1, (1.0, 3.0), 3.0, 1.25),
    ],
)
def test_square_shifted_by_one_pixel(axis, spacing, hd95, asd):
    truth = _square()
    pred = np.roll(truth, 1, axis=axis)
    assert hausdorff95(pred, truth, spacing) == pytest.approx(hd95)
    assert average_surface_distance(pred, truth, spacing) == pytest.approx(asd)


def test_square_shifted_distances_in_c_order_and_nsd_at_half():
    truth = _square()  # rows 1..3, columns 1..3
    pred = np.roll(truth, 1, axis=0)  # rows 2..4
    d_pt, d_tp = surface_distances(pred, truth, (2.0, 1.0))
    # pred ring in C order: (2,1) (2,2) (2,3) (3,1) (3,3) (4,1) (4,2) (4,3); (2,2) is truth's centre,
    # 1 mm from truth's (2,1); row 4 is one 2 mm row below truth's bottom row.
    assert d_pt.tolist() == [0.0, 1.0, 0.0, 0.0, 0.0, 2.0, 2.0, 2.0]
    # truth ring: row 1 is 2 mm above pred's top row; (3,2) is pred's centre, 1 mm from pred's (3,1).
    assert d_tp.tolist() == [2.0, 2.0, 2.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    # 8 of the 16 surface pixels are at 0: a tolerance of 0.5 takes exactly half.
    assert normalized_surface_dice(pred, truth, (2.0, 1.0), tolerance=0.5) == 0.5
    # <= 1 mm: the eight 0 and the two 1 -> 10 / 16.
    assert normalized_surface_dice(pred, truth, (2.0, 1.0), tolerance=1.0) == 0.625
    assert normalized_surface_dice(pred, truth, (2.0, 1.0), tolerance=2.0) == 1.0


def test_cube_in_a_cube_one_voxel_larger_anisotropic():
    spacing = (3.0, 1.0, 1.0)  # (z, y, x)
    truth = np.zeros((7, 7, 7), bool)
    truth[2:5, 2:5, 2:5] = True  # 3^3: 26 surface voxels (all but the centre)
    pred = np.zeros((7, 7, 7), bool)
    pred[1:6, 1:6, 1:6] = True  # 5^3: 125 - 27 = 98 surface voxels
    d_pt, d_tp = surface_distances(pred, truth, spacing)
    # truth -> pred: step out along one axis to coordinate 1 or 5. y or x in {2, 4}: 1 mm (24 voxels);
    # y = x = 3 (z in {2, 4}): min(3 mm along z, 2 mm along y or x) = 2 (2 voxels).
    assert sorted(d_tp.tolist()) == [1.0] * 24 + [2.0] * 2
    # pred -> truth: the nearest truth voxel is pred's voxel clamped to [2, 4]^3, one voxel along each
    # axis where pred's coordinate is 1 or 5. Only z: 2 * 3 * 3 = 18 at 3; only y or only x: 36 at 1;
    # z and y or z and x: 24 at sqrt(9 + 1); y and x: 12 at sqrt(2); all three: 8 at sqrt(11).
    expected = [1.0] * 36 + [R2] * 12 + [3.0] * 18 + [R10] * 24 + [R11] * 8
    np.testing.assert_allclose(np.sort(d_pt), expected, rtol=0, atol=1e-12)
    # HD95: pred -> truth at rank 0.95 * 97 = 92.15, inside the sqrt(11) run (ranks 90..97);
    # truth -> pred at rank 0.95 * 25 = 23.75: 1 + 0.75 * (2 - 1) = 1.75. The larger: sqrt(11).
    assert hausdorff95(pred, truth, spacing) == pytest.approx(R11)
    total = 36 + 12 * R2 + 18 * 3 + 24 * R10 + 8 * R11 + 24 + 2 * 2
    assert average_surface_distance(pred, truth, spacing) == pytest.approx(total / 124)
    # Tolerance 1 includes distance 1: 36 + 24 of 124; 1.5 adds the 12 at sqrt(2), not the 2 at 2.
    assert normalized_surface_dice(pred, truth, spacing, tolerance=1.0) == pytest.approx(60 / 124)
    assert normalized_surface_dice(pred, truth, spacing, tolerance=1.5) == pytest.approx(72 / 124)


@pytest.mark.parametrize("shape", [(5, 6), (4, 5, 6)])
def test_identical_masks_score_zero_zero_one(shape):
    mask = _blob(np.random.default_rng(3), shape)
    d_pt, d_tp = surface_distances(mask, mask, (2.5,) * len(shape))
    assert d_pt.size > 0 and not d_pt.any() and not d_tp.any()
    assert _scores(mask, mask, (2.5,) * len(shape), 0.0) == (0.0, 0.0, 1.0)


def test_single_voxel_object():
    truth = _square((5, 5))  # 3x3 at rows, columns 1..3
    pred = np.zeros((5, 5), bool)
    pred[2, 2] = True  # truth's centre: a one-voxel surface
    d_pt, d_tp = surface_distances(pred, truth, (1.0, 1.0))
    assert d_pt.tolist() == [1.0]
    # truth ring in C order: corners sqrt(2), edge middles 1.
    np.testing.assert_allclose(d_tp, [R2, 1, R2, 1, 1, R2, 1, R2])
    # HD95 = max(1, rank 6.65 of [1, 1, 1, 1, r2, r2, r2, r2] = sqrt(2)); ASD = (1 + 4 + 4 sqrt(2)) / 9.
    hd, asd, nsd = _scores(pred, truth, (1.0, 1.0), 1.0)
    assert hd == pytest.approx(R2)
    assert asd == pytest.approx((5 + 4 * R2) / 9)
    assert nsd == pytest.approx(5 / 9)


def test_single_voxels_in_3d_anisotropic():
    pred = np.zeros((3, 3, 3), bool)
    truth = np.zeros((3, 3, 3), bool)
    pred[0, 0, 0] = True
    truth[1, 1, 0] = True  # one step in z (3 mm) and one in y (1 mm): sqrt(10)
    assert _scores(pred, truth, (3.0, 1.0, 1.0), 3.0) == pytest.approx((R10, R10, 0.0))


def test_array_border_counts_as_surface():
    full = np.ones((4, 4), bool)  # its ring of 12 is surface: outside the array is background
    centre = _square((4, 4), (1, 3), (1, 3))  # 2x2: all 4 are surface
    d_pt, d_tp = surface_distances(full, centre, (1.0, 1.0))
    assert d_pt.tolist() == pytest.approx([R2, 1, 1, R2, 1, 1, 1, 1, R2, 1, 1, R2])
    assert d_tp.tolist() == [1.0, 1.0, 1.0, 1.0]


def test_both_empty():
    empty = np.zeros((4, 5, 6), bool)
    d_pt, d_tp = surface_distances(empty, empty, (1.0, 1.0, 1.0))
    assert d_pt.shape == (0,) and d_tp.shape == (0,)
    assert _scores(empty, empty, (1.0, 1.0, 1.0), 1.0) == (0.0, 0.0, 1.0)


@pytest.mark.parametrize("missing", ["pred", "truth"])
def test_one_empty_is_infinitely_far(missing):
    mask, empty = _square(), np.zeros((6, 6), bool)
    pred, truth = (empty, mask) if missing == "pred" else (mask, empty)
    d_pt, d_tp = surface_distances(pred, truth, (1.0, 1.0))
    present, absent = (d_tp, d_pt) if missing == "pred" else (d_pt, d_tp)
    assert absent.shape == (0,)
    assert present.shape == (8,) and np.all(np.isinf(present))
    assert _scores(pred, truth, (1.0, 1.0), 100.0) == (math.inf, math.inf, 0.0)


# --- agreement with brute force ---


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_matches_brute_force_on_random_3d_blobs(seed):
    rng = np.random.default_rng(seed)
    spacing = (2.5, 0.7, 1.1)
    pred, truth = _blob(rng, (9, 12, 11)), _blob(rng, (9, 12, 11), 0.6)
    d_pt, d_tp = surface_distances(pred, truth, spacing)
    r_pt, r_tp = _distances_ref(pred, truth, spacing)
    np.testing.assert_allclose(d_pt, r_pt, rtol=0, atol=1e-6)
    np.testing.assert_allclose(d_tp, r_tp, rtol=0, atol=1e-6)
    hd = max(np.percentile(r_pt, 95), np.percentile(r_tp, 95))  # MONAI: the larger directed HD95
    pooled = np.concatenate([r_pt, r_tp])
    tolerance = float(np.median(pooled))
    assert hausdorff95(pred, truth, spacing) == pytest.approx(hd, abs=1e-6)
    assert average_surface_distance(pred, truth, spacing) == pytest.approx(pooled.mean(), abs=1e-6)
    nsd = np.mean(pooled <= tolerance + 1e-9)
    assert normalized_surface_dice(pred, truth, spacing, tolerance + 1e-9) == pytest.approx(nsd)


def test_small_object_in_a_large_volume_matches_brute_force_on_its_box():
    rng = np.random.default_rng(7)
    spacing = (3.0, 0.8, 0.8)
    pred, truth = np.zeros((96, 96, 96), bool), np.zeros((96, 96, 96), bool)
    box = (slice(40, 50), slice(30, 44), slice(60, 72))
    pred[box], truth[box] = _blob(rng, (10, 14, 12)), _blob(rng, (10, 14, 12))
    truth[45, 31:33, 70] = True  # a second, tiny truth component inside the box
    d_pt, d_tp = surface_distances(pred.astype(np.uint8), truth, spacing)  # non-bool input is fine
    r_pt, r_tp = _distances_ref(pred[box], truth[box], spacing)  # C order of the box = of the volume
    np.testing.assert_allclose(d_pt, r_pt, rtol=0, atol=1e-6)
    np.testing.assert_allclose(d_tp, r_tp, rtol=0, atol=1e-6)


# --- per-class scores ---


def test_surface_scores_per_class_and_mean():
    truth, pred = np.zeros((8, 12), np.int64), np.zeros((8, 12), np.int64)
    truth[1:4, 1:4] = pred[1:4, 1:4] = 1  # class 1: identical -> 0, 0, 1
    truth[1:4, 6:9] = 2
    pred[2:5, 6:9] = 2  # class 2: the shifted square, rows 2 mm apart -> 2, 0.875, 0.625
    truth[6, 10] = 3  # class 3: missed -> None, None, 0; class 4: in neither -> 0, 0, 1
    out = surface_scores(pred, truth, range(5), spacing=(2.0, 1.0), tolerance=1.0)
    assert list(out) == ["1", "2", "3", "4", "mean"]  # background skipped
    assert out["1"] == {"hd95": 0.0, "asd": 0.0, "nsd": 1.0}
    assert out["2"] == pytest.approx({"hd95": 2.0, "asd": 0.875, "nsd": 0.625})
    assert out["3"] == {"hd95": None, "asd": None, "nsd": 0.0}
    assert out["4"] == {"hd95": 0.0, "asd": 0.0, "nsd": 1.0}
    # Undefined distances are left out of the mean; the miss still counts in NSD.
    assert out["mean"] == pytest.approx({"hd95": 2 / 3, "asd": 0.875 / 3, "nsd": (1 + 0.625 + 0 + 1) / 4})
    assert json.loads(json.dumps(out, allow_nan=False)) == out
    assert all(type(v) is float for scores in out.values() for v in scores.values() if v is not None)


def test_surface_scores_all_undefined_mean_is_none():
    truth = np.zeros((5, 5), int)
    truth[2, 2] = 1
    out = surface_scores(np.zeros((5, 5), int), truth, [1], spacing=(1.0, 1.0))
    assert out["mean"] == {"hd95": None, "asd": None, "nsd": 0.0}


# --- bad input ---


@pytest.mark.parametrize(
    "pred_shape, spacing, match",
    [
        ((4, 5), (1.0, 1.0), "differs from truth shape"),
        ((4, 4), (1.0,), "positive voxel sizes, one per axis"),
        ((4, 4), (1.0, 0.0), "positive voxel sizes"),
        ((4, 4), (1.0, float("nan")), "positive voxel sizes"),
    ],
)
def test_bad_shapes_and_spacing(pred_shape, spacing, match):
    with pytest.raises(ValueError, match=match):
        surface_distances(np.ones(pred_shape, bool), np.ones((4, 4), bool), spacing)


def test_bad_dimensions_and_tolerance():
    with pytest.raises(ValueError, match=r"expected \(H, W\) or \(D, H, W\)"):
        surface_distances(np.ones(4, bool), np.ones(4, bool), (1.0,))
    with pytest.raises(ValueError, match="tolerance -1.0 must be >= 0"):
        normalized_surface_dice(_square(), _square(), (1.0, 1.0), tolerance=-1.0)
    with pytest.raises(ValueError, match="tolerance nan"):
        surface_scores(np.zeros((3, 3), int), np.zeros((3, 3), int), [1], (1.0, 1.0), tolerance=float("nan"))
