"""Tests of unetkit.data.labels: binary masks with anti-aliased edges, and instance label images, on tiny arrays."""

import numpy as np
import pytest

from unetkit.data.labels import MAX_BETWEEN, read_binary, read_labels


def aa_square(size: int = 32, high: int = 255, dtype=np.uint8) -> np.ndarray:
    """A square of ``high`` with an anti-aliased top edge (half of high) and left edge (a quarter)."""
    mask = np.zeros((size, size), dtype)
    mask[8:24, 8:24] = high
    mask[7, 8:24] = (high + 1) // 2
    mask[8:24, 7] = (high + 1) // 4
    return mask


@pytest.mark.parametrize("high", [1, 255, 65535])
def test_exact_binary_masks_have_their_full_scale(high):
    mask = np.array([[0, high], [high, 0]], np.uint16 if high > 255 else np.uint8)
    found = read_binary(mask)
    assert (found.high, found.between, found.total, found.threshold, found.share) == (high, 0, 4, (high + 1) // 2, 0.0)


def test_an_empty_mask_is_binary():
    assert read_binary(np.zeros((3, 3), np.uint8)).between == 0
    assert read_binary(np.zeros((3, 3), np.uint8), np.zeros((3, 3), bool)).total == 0  # every pixel ignored


@pytest.mark.parametrize("high,threshold", [(255, 128), (65535, 32768)])
def test_anti_aliased_edges_are_binary_thresholded_at_half(high, threshold):
    mask = aa_square(high=high, dtype=np.uint16 if high > 255 else np.uint8)
    found = read_binary(mask)
    assert (found.high, found.between, found.total, found.threshold) == (high, 32, 1024, threshold)
    assert found.values_between == {(high + 1) // 2, (high + 1) // 4}
    assert found.share == pytest.approx(32 / 1024)


def test_values_in_between_off_the_edges_are_not_binary():
    mask = aa_square()
    mask[0:2, 0:8] = 128  # a patch of 128 far from any 255: a class, not anti-aliasing
    assert read_binary(mask) is None


def test_too_many_values_in_between_are_not_binary():
    mask = np.zeros((10, 10), np.uint8)
    mask[:, 5:] = 255
    mask[:, 4] = 100  # 10% of the pixels, all on the edge
    assert read_binary(mask) is not None and MAX_BETWEEN >= 0.1
    mask[:, 6] = 200  # 20%
    assert read_binary(mask) is None


def test_between_values_need_a_full_scale_neighbour():
    mask = np.zeros((8, 8), np.uint8)
    mask[3:5, 3:5] = 2  # an index mask {0, 2}: 2 is not near any 255
    assert read_binary(mask) is None


def test_out_of_range_values_are_not_binary():
    assert read_binary(np.array([[0, -1]])) is None
    assert read_binary(np.array([[0, 70000]])) is None


def test_ignored_pixels_do_not_count():
    mask = np.array([[0, 255, 7], [0, 255, 7]])
    found = read_binary(mask, mask != 7)
    assert (found.high, found.between, found.total) == (255, 0, 4)


def test_label_image_regions():
    labels = np.array([
        [0, 1, 1, 0, 2],
        [0, 0, 0, 0, 2],
        [3, 0, 4, 0, 0],
        [0, 4, 0, 0, 4],
    ])  # fmt: skip
    found = read_labels(labels)
    # 4 touches itself diagonally at (2, 2)-(3, 1) but not at (3, 4): two regions
    assert (found.objects, found.one_region, found.regions, found.background, found.worst) == (4, 3, 5, True, (4, 2))
    assert not found.label_like  # 3 of 4 ids in one region: below 90%
    assert not found.contradicts  # 5 regions for 4 ids


def test_label_image_with_arbitrary_ids_is_label_like():
    labels = np.zeros((9, 9), np.int64)
    for n, value in enumerate([1000, 5, 77, 40000]):
        labels[2 * n : 2 * n + 1, n : n + 3] = value
    found = read_labels(labels)
    assert (found.objects, found.one_region, found.regions) == (4, 4, 4)
    assert found.label_like and found.worst == (5, 1)  # the first id in increasing order among those with the most regions


def test_binary_mask_with_many_blobs_contradicts_a_label_image():
    mask = np.zeros((7, 7), np.uint8)
    mask[0, 0] = mask[0, 6] = mask[6, 0] = mask[6, 6] = 255
    found = read_labels(mask)
    assert (found.objects, found.regions, found.worst) == (1, 4, (255, 4))
    assert found.contradicts and not found.label_like


def test_ignored_pixels_are_background_and_no_background_is_no_label_image():
    labels = np.array([[9, 1], [2, 3]])
    assert not read_labels(labels).background
    assert not read_labels(labels).label_like
    assert read_labels(labels, labels != 9).background
