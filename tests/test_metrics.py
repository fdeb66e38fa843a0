"""Metrics on tiny hand-built arrays with answers worked out by hand."""

import numpy as np
import pytest

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
