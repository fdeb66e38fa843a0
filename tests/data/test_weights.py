"""Tests of unetkit.data.weights (the paper's border weight map) and the weighted cross-entropy."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from unetkit.data.dataset import IGNORE
from unetkit.data.weights import (
    balanced_class_weights,
    border_weight_map,
    class_pixel_counts,
    nearest_two_distances,
)
from unetkit.losses import segmentation_loss, weighted_cross_entropy


def _two_objects() -> np.ndarray:
    """A 9x12 label image: an L-shaped object 1 and a square object 2, separated by a gap."""
    labels = np.zeros((9, 12), np.int32)
    labels[1:7, 1:3] = 1
    labels[6:8, 1:5] = 1
    labels[2:5, 7:10] = 2
    return labels


def _brute_force_distances(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """d1, d2 by definition: the Euclidean distance from each pixel to the closest pixel of each object."""
    rows, cols = np.indices(labels.shape)
    per_object = []
    for number in (1, 2):
        r, c = np.nonzero(labels == number)
        d = np.sqrt((rows[..., None] - r) ** 2 + (cols[..., None] - c) ** 2).min(axis=-1)  # (H, W)
        per_object.append(d)
    d = np.sort(np.stack(per_object), axis=0)
    return d[0], d[1]


def test_two_objects_match_the_formula_pixel_by_pixel():
    labels = _two_objects()
    mask = (labels > 0).astype(np.int64)
    mask[8, 11] = IGNORE
    class_weights = [0.5, 2.0]
    w = border_weight_map(labels, mask, class_weights, w0=10.0, sigma=5.0)
    d1, d2 = _brute_force_distances(labels)
    expected = np.where(labels > 0, 2.0, 0.5 + 10.0 * np.exp(-((d1 + d2) ** 2) / (2 * 5.0**2)))
    expected[8, 11] = 0.0  # ignored
    assert w.dtype == np.float32 and w.shape == labels.shape
    np.testing.assert_allclose(w, expected, rtol=1e-6, atol=1e-6)
    # A hand-checked pixel: (3, 5) is 3 columns right of object 1 and 2 columns left of object 2.
    assert w[3, 5] == pytest.approx(0.5 + 10 * math.exp(-((3 + 2) ** 2) / 50), rel=1e-6)


def test_gap_pixels_between_parallel_objects_share_one_weight():
    labels = np.zeros((4, 10), np.int32)
    labels[:, 0:2], labels[:, 7:10] = 1, 2  # a gap of 5 columns: d1 + d2 = 6 everywhere in it
    w = border_weight_map(labels, w0=10.0, sigma=5.0)
    np.testing.assert_allclose(w[:, 2:7], 1 + 10 * math.exp(-36 / 50), rtol=1e-6)
    np.testing.assert_array_equal(w[:, :2], 1.0)


def test_one_object_gets_no_border_term():
    labels = np.zeros((6, 6), np.int32)
    labels[2:4, 2:4] = 5  # ids need not be contiguous
    np.testing.assert_array_equal(border_weight_map(labels, w0=10, sigma=5), np.ones((6, 6), np.float32))


def test_w0_zero_leaves_the_class_weights():
    labels = _two_objects()
    mask = (labels > 0).astype(np.int64)
    np.testing.assert_array_equal(border_weight_map(labels, mask, [1.0, 3.0], w0=0.0), np.where(labels > 0, 3.0, 1.0))


def test_limited_distances_are_exact_within_the_limit():
    rng = np.random.default_rng(0)
    labels = np.zeros((60, 60), np.int32)
    for number in range(1, 9):
        r, c = rng.integers(0, 55, size=2)
        labels[r : r + 4, c : c + 5] = number
    exact = nearest_two_distances(labels)
    limited = nearest_two_distances(labels, limit=7.0)
    for e, lim in zip(exact, limited):
        near = e <= 7.0
        np.testing.assert_allclose(lim[near], e[near])
        assert np.all(lim[~near] >= 7.0)


def test_balanced_class_weights_and_counts():
    masks = [np.array([[0, 0, 1], [0, IGNORE, 0]]), np.array([[0, 1, 1]])]
    counts = class_pixel_counts(masks, 3)
    assert counts.tolist() == [5, 3, 0]
    weights = balanced_class_weights(counts)
    np.testing.assert_allclose(weights, [8 / (2 * 5), 8 / (2 * 3), 1.0])
    assert (weights[:2] * counts[:2]).sum() == pytest.approx(counts.sum())  # pixel-weighted mean 1


def test_weighted_cross_entropy_with_equal_weights_is_plain_cross_entropy():
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 4, 5)
    target = torch.randint(0, 3, (2, 4, 5))
    target[0, 0, 0] = IGNORE
    ones = torch.full((2, 4, 5), 2.5)
    plain = F.cross_entropy(logits, target, ignore_index=IGNORE)
    assert weighted_cross_entropy(logits, target, ones).item() == pytest.approx(plain.item(), rel=1e-6)


def test_weighted_cross_entropy_is_the_weighted_mean():
    logits = torch.tensor([[[[2.0, 0.0]], [[0.0, 0.0]]]])  # (1, 2, 1, 2)
    target = torch.tensor([[[0, 1]]])
    weights = torch.tensor([[[1.0, 3.0]]])
    ce = [math.log(1 + math.exp(-2)), math.log(2)]
    expected = (1 * ce[0] + 3 * ce[1]) / 4
    assert weighted_cross_entropy(logits, target, weights).item() == pytest.approx(expected, rel=1e-6)
    both = segmentation_loss(logits, target, "weighted-ce+dice", weight_map=weights)
    dice = segmentation_loss(logits, target, "dice")
    assert both.item() == pytest.approx(expected + dice.item(), rel=1e-6)


def test_weighted_losses_need_a_weight_map():
    with pytest.raises(ValueError, match="needs a weight_map"):
        segmentation_loss(torch.zeros(1, 2, 2, 2), torch.zeros(1, 2, 2, dtype=torch.long), "weighted-ce")
