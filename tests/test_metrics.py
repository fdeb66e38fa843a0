"""Metrics on tiny hand-built arrays with answers worked out by hand."""

import numpy as np
import pytest
from scipy import ndimage

from unetkit.metrics import confusion_matrix, scores


def test_confusion_matrix_counts_and_ignore():
    truth = np.array([[0, 0, 1], [1, 1, -1]])
    pred = np.array([[0, 1, 1], [1, 0, 0]])
    cm = confusion_matrix(pred, truth, 2, ignore_index=-1)
    assert cm.tolist() == [[1, 1], [1, 2]]


def test_scores_by_hand():
    # truth: 2 background, 3 foreground; pred: TP(fg)=2, FP(fg)=1, FN(fg)=1, TN=1
    cm = np.array([[1, 1], [1, 2]])
    s = scores(cm, ["background", "cell"])
    assert s["dice"]["cell"] == pytest.approx(2 * 2 / (2 * 2 + 1 + 1))  # 0.6667
    assert s["iou"]["cell"] == pytest.approx(2 / 4)
    assert s["precision"]["cell"] == pytest.approx(2 / 3)
    assert s["recall"]["cell"] == pytest.approx(2 / 3)
    assert s["dice"]["background"] == pytest.approx(2 * 1 / (2 + 1 + 1))
    assert s["dice"]["mean"] == pytest.approx((2 / 3 + 0.5) / 2)
    assert s["pixel_accuracy"]["overall"] == pytest.approx(3 / 5)
    assert s["pixel_accuracy"]["cell"] == pytest.approx(3 / 5)  # (TP + TN) / N one-vs-rest


def test_absent_class_is_undefined_not_zero():
    cm = np.array([[4, 0, 0], [0, 2, 0], [0, 0, 0]])
    s = scores(cm)
    assert s["dice"]["2"] is None
    assert s["dice"]["mean"] == 1.0


def test_perfect_and_empty():
    truth = np.array([[1, 0], [0, 1]])
    assert scores(confusion_matrix(truth, truth, 2))["iou"]["mean"] == 1.0
    with pytest.raises(ValueError, match="shape"):
        confusion_matrix(truth, truth[:1], 2)
    with pytest.raises(ValueError, match="outside 0..1"):
        confusion_matrix(truth * 2, truth, 2)


# --- boundary: 95th-percentile Hausdorff distance and boundary F1 ---------------------------------

from unetkit.metrics.boundary import boundary, boundary_counts, boundary_f1, hd95  # noqa: E402


def square(shape, rows, cols) -> np.ndarray:
    mask = np.zeros(shape, bool)
    mask[rows[0] : rows[1] + 1, cols[0] : cols[1] + 1] = True
    return mask


def test_boundary_is_the_inner_ring_and_not_the_image_edge():
    ring = boundary(square((5, 5), (1, 3), (1, 3)))
    assert ring.sum() == 8 and not ring[2, 2]
    assert not boundary(np.ones((4, 4), bool)).any()  # a mask filling the frame has no contour
    assert boundary(square((4, 4), (0, 3), (0, 1))).sum() == 4  # only the column facing the background


def test_hd95_and_boundary_f1_of_a_square_shifted_by_one_pixel():
    truth = square((5, 6), (1, 3), (1, 3))
    pred = square((5, 6), (1, 3), (2, 4))
    assert hd95(pred, truth) == 1.0  # every contour pixel is 0 or 1 pixel from the other contour
    assert hd95(truth, truth) == 0.0
    exact = boundary_counts(pred, truth, tolerance=0)
    assert exact.tolist() == [4, 8, 4, 8]  # half of each ring lies on the other ring
    assert boundary_f1(exact) == pytest.approx(0.5)
    assert boundary_f1(boundary_counts(pred, truth, tolerance=1)) == 1.0


def test_boundary_scores_of_a_missed_object_and_of_empty_masks():
    truth = square((5, 5), (1, 3), (1, 3))
    empty = np.zeros_like(truth)
    assert hd95(empty, truth) is None  # no finite distance to a missing contour
    assert boundary_f1(boundary_counts(empty, truth)) == 0.0
    assert hd95(empty, empty) is None and boundary_f1(boundary_counts(empty, empty)) is None
    full = np.ones((3, 3), bool)
    assert hd95(full, full) == 0.0


def test_boundary_ignores_invalid_pixels():
    truth = square((5, 6), (1, 3), (1, 3))
    pred = square((5, 6), (1, 3), (2, 4))
    valid = np.ones(truth.shape, bool)
    valid[:, 4:] = False  # hide the predicted column 4 and the truth's column 1 stays
    counts = boundary_counts(pred, truth, tolerance=0, valid=valid)
    assert counts.tolist() == [4, 5, 4, 8]


# --- ISBI 2012: pixel, Rand and warping errors on a split, a merge and a shifted boundary ----------

from unetkit.metrics.isbi import (  # noqa: E402
    THRESHOLDS, _SIMPLE, components, isbi_counts, isbi_errors, rand_counts, rand_error, warp, warping_mismatches,
)

# 5 x 7 images framed by background; rows 1-3 hold the objects.
ONE = square((5, 7), (1, 3), (1, 5))  # one object, 15 pixels
CUT = ONE.copy()
CUT[:, 3] = False  # two objects of 6 pixels, a 3-pixel boundary between


def isbi_of(truth: np.ndarray, pred: np.ndarray) -> dict:
    return isbi_errors(isbi_counts(truth, pred.astype(np.float32)))


def test_simple_point_table():
    def code(patch):
        return int(sum(int(v) << k for k, v in enumerate(np.asarray(patch).ravel())))

    assert not _SIMPLE[code([[0, 0, 0], [0, 1, 0], [0, 0, 0]])]  # isolated pixel: deleting it removes an object
    assert not _SIMPLE[code(np.ones((3, 3)))]  # interior pixel: deleting it makes a hole
    assert _SIMPLE[code([[1, 1, 1], [1, 1, 1], [0, 0, 0]])]  # edge of a half plane
    assert _SIMPLE[code([[0, 0, 0], [1, 1, 0], [0, 0, 0]])]  # end of a line
    assert not _SIMPLE[code([[0, 0, 0], [1, 1, 1], [0, 0, 0]])]  # middle of a line: deleting it splits
    assert not _SIMPLE[code([[0, 1, 0], [0, 0, 0], [0, 1, 0]])]  # adding it would merge two objects
    # objects are 4-connected: a pixel touching foreground only diagonally would become a new object
    assert not _SIMPLE[code([[1, 0, 0], [0, 0, 0], [0, 0, 0]])]
    assert _SIMPLE[code([[1, 1, 0], [0, 0, 0], [0, 0, 0]])]


def test_split_object():
    # truth: one object; prediction: cut in two by a 3-pixel boundary
    assert rand_counts(components(ONE), components(CUT)).tolist() == [75, 225, 75]  # 6^2+6^2+3 cut singletons
    r = isbi_of(ONE, CUT)
    assert r["pixel_error"] == pytest.approx(3 / 35)
    assert r["rand_error"] == pytest.approx(1 - 2 * 75 / (225 + 75))  # precision 1, recall 1/3: 0.5
    assert r["warping_error"] == pytest.approx(1 / 35)  # two cut pixels warp away; the last would split


def test_merged_objects():
    # truth: two objects; prediction: one object over both and the boundary between
    assert rand_counts(components(CUT), components(ONE)).tolist() == [72, 72, 144]
    r = isbi_of(CUT, ONE)
    assert r["pixel_error"] == pytest.approx(3 / 35)
    assert r["rand_error"] == pytest.approx(1 / 3)  # precision 1/2, recall 1
    assert r["warping_error"] == pytest.approx(3 / 35)  # every boundary pixel would merge the two


def test_shifted_boundary_is_a_pixel_error_but_no_topological_error():
    truth = square((5, 6), (1, 3), (1, 3))
    pred = square((5, 6), (1, 3), (2, 4))
    warped = warp(truth, pred)
    np.testing.assert_array_equal(warped, pred)
    r = isbi_of(truth, pred)
    assert r["pixel_error"] == pytest.approx(6 / 30)
    assert r["warping_error"] == 0.0
    # 3 true pixels fall on predicted background: singletons. precision 1, recall 39/81
    assert rand_counts(components(truth), components(pred)).tolist() == [39, 81, 39]
    assert r["rand_error"] == pytest.approx(1 - 78 / 120)


def test_perfect_prediction_and_rand_by_hand():
    r = isbi_of(ONE, ONE)
    assert r == {"pixel_error": 0.0, "rand_error": 0.0, "warping_error": 0.0, "thresholds": r["thresholds"]}
    assert rand_error(np.array([18, 36, 18])) == pytest.approx(1 / 3)
    assert rand_error(np.zeros(3)) is None


def test_warping_keeps_the_truth_topology():
    rng = np.random.default_rng(0)
    truth = np.zeros((30, 30), bool)
    truth[3:12, 3:12] = truth[15:27, 5:25] = True
    truth[18:22, 10:14] = False  # a hole
    pred = truth ^ (rng.random(truth.shape) < 0.15)
    warped = warp(truth, pred, rng.random(truth.shape))
    assert components(warped).max() == components(truth).max() == 2
    background = [ndimage.label(np.pad(~x, 1, constant_values=True), np.ones((3, 3)))[1] for x in (warped, truth)]
    assert background[0] == background[1] == 2  # the outside and the hole (the background is 8-connected)
    assert (warped != pred).sum() < (truth != pred).sum()
    assert warping_mismatches(truth, pred) == (warp(truth, pred) != pred).sum()


def plain_passes(truth, pred, priority):
    """The reference's warping loop, written plainly: every pass visits every mismatch in order."""
    state = np.pad(truth, 1).astype(np.uint8)
    target = np.pad(pred, 1)
    order = np.pad(priority, 1)
    while True:
        wrong = np.argwhere(state != target)
        wrong = wrong[np.argsort(-order[tuple(wrong.T)], kind="stable")]
        flipped = 0
        for r, c in wrong:
            if _SIMPLE[int((state[r - 1 : r + 2, c - 1 : c + 2].ravel() << np.arange(9)).sum())]:
                state[r, c] ^= 1
                flipped += 1
        if not flipped:
            return state[1:-1, 1:-1].astype(bool)


@pytest.mark.parametrize("seed", range(6))
def test_warp_equals_plain_passes(seed):
    rng = np.random.default_rng(seed)
    truth = ndimage.gaussian_filter(rng.random((24, 31)), 2) > 0.5
    pred = ndimage.gaussian_filter(rng.random((24, 31)), 1 + seed / 2) > 0.5
    priority = rng.random(truth.shape)
    np.testing.assert_array_equal(warp(truth, pred, priority), plain_passes(truth, pred, priority))


def test_isbi_sweep_picks_the_best_threshold_per_metric():
    probability = np.where(ONE, 0.7, 0.2).astype(np.float32)
    probability[2, 3] = 0.45  # a weak boundary pixel: foreground at thresholds below 0.45
    counts = isbi_counts(ONE, probability)
    assert counts.shape == (len(THRESHOLDS), 6)
    r = isbi_errors(counts)
    assert r["pixel_error"] == 0.0 and r["thresholds"]["pixel_error"] == 0.2  # the first threshold with no error
    assert isbi_errors(counts[[THRESHOLDS.index(0.5)]], (0.5,))["pixel_error"] == pytest.approx(1 / 35)
    with pytest.raises(ValueError, match="shape"):
        rand_counts(ONE, ONE[:2])


def test_isbi_ignores_invalid_pixels():
    valid = np.ones(ONE.shape, bool)
    valid[:, 3] = False  # the cut is not scored
    r = isbi_errors(isbi_counts(ONE, CUT.astype(np.float32), valid=valid))
    assert r["pixel_error"] == 0.0 and r["warping_error"] == 0.0


# --- objects: IoU matching, average precision (DSB 2018), aggregated Jaccard (Kumar 2017) ----------

from unetkit.metrics.instances import aggregated_jaccard, average_precision, iou_matrix, match_counts  # noqa: E402


def test_iou_matrix_and_matching():
    truth = np.array([[1, 1, 0, 2, 2]])
    pred = np.array([[7, 7, 7, 0, 3]])  # ids need not be consecutive
    iou = iou_matrix(truth, pred)
    np.testing.assert_allclose(iou, [[0.0, 2 / 3], [0.5, 0.0]])  # columns in id order: 3, 7
    assert match_counts(iou, 0.5) == (1, 1, 1)  # IoU must exceed the threshold
    with pytest.raises(ValueError, match="0.5"):
        match_counts(iou, 0.3)


def test_average_precision_by_hand():
    truth = np.array([[1, 1, 0, 2, 2, 0, 0]])
    pred = np.array([[1, 1, 0, 0, 0, 0, 5]])  # one exact match, one miss, one invention
    r = average_precision(truth, pred)
    assert r["ap"] == pytest.approx(1 / 3) and r["per_threshold"] == {f"{0.5 + 0.05 * i:.2f}": pytest.approx(1 / 3) for i in range(10)}
    partial = average_precision(np.array([[1, 1, 1, 1]]), np.array([[0, 4, 4, 4]]))  # IoU 0.75
    assert partial["per_threshold"]["0.70"] == 1.0 and partial["per_threshold"]["0.75"] == 0.0
    assert partial["ap"] == pytest.approx(5 / 10)
    assert average_precision(np.zeros((2, 2), int), np.zeros((2, 2), int))["ap"] is None


def test_aggregated_jaccard_by_hand():
    truth = np.array([[1, 1, 1, 1, 0, 0]])
    pred = np.array([[0, 1, 1, 1, 2, 2]])  # one object inside, one invented
    assert aggregated_jaccard(truth, pred) == pytest.approx(3 / (4 + 2))
    merged = aggregated_jaccard(np.array([[1, 1, 0, 2, 2]]), np.array([[3, 3, 3, 3, 3]]))
    assert merged == pytest.approx((2 + 2) / (5 + 5))  # both truths pick the merged object
    assert aggregated_jaccard(np.array([[1, 1, 0]]), np.zeros((1, 3), int)) == 0.0  # a miss
    assert aggregated_jaccard(np.zeros((1, 3), int), np.zeros((1, 3), int)) is None
