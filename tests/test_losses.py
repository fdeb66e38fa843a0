"""Losses: exact values on tiny tensors, ignore handling, gradients."""

import math

import pytest
import torch
import torch.nn.functional as F

from unetkit.losses import IGNORE, segmentation_loss, soft_dice_loss


def test_cross_entropy_matches_hand_value_and_ignores():
    logits = torch.zeros(1, 2, 1, 2)  # uniform: CE = ln 2 per pixel
    target = torch.tensor([[[1, -1]]])
    assert segmentation_loss(logits, target, "ce").item() == pytest.approx(math.log(2))


def test_dice_perfect_prediction_is_zero_and_ignore_excluded():
    target = torch.tensor([[[0, 1], [1, -1]]])
    logits = torch.full((1, 2, 2, 2), -50.0)
    logits[0, 0][target[0] == 0] = 50
    logits[0, 1][target[0] == 1] = 50
    logits[0, :, 1, 1] = torch.tensor([-50.0, 50.0])  # wrong, but ignored
    assert soft_dice_loss(logits, target).item() == pytest.approx(0.0, abs=1e-6)


def test_combined_loss_is_sum_and_has_gradients():
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 4, 4, requires_grad=True)
    target = torch.randint(0, 3, (2, 4, 4))
    total = segmentation_loss(logits, target, "ce+dice")
    parts = segmentation_loss(logits, target, "ce") + segmentation_loss(logits, target, "dice")
    assert total.item() == pytest.approx(parts.item())
    total.backward()
    assert logits.grad.abs().sum() > 0


def test_class_weights_and_all_ignored():
    logits = torch.zeros(1, 2, 1, 2)
    target = torch.tensor([[[0, 1]]])
    w = torch.tensor([1.0, 3.0])
    assert segmentation_loss(logits, target, "ce", class_weights=w).item() == pytest.approx(math.log(2))
    assert segmentation_loss(logits, torch.full((1, 1, 2), -1), "ce").item() == 0.0
    with pytest.raises(ValueError, match="loss="):
        segmentation_loss(logits, target, "hinge")


def test_class_weighted_ce_is_torchs_weighted_mean_and_zero_for_a_batch_of_zero_weight_pixels():
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 5, 6, requires_grad=True)
    target = torch.randint(0, 3, (2, 5, 6))
    target[0, 0] = IGNORE
    weights = torch.tensor([0.5, 2.0, 1.0])
    assert torch.allclose(segmentation_loss(logits, target, "ce", weights), F.cross_entropy(logits, target, weight=weights, ignore_index=IGNORE))
    background = torch.zeros(2, 5, 6, dtype=torch.long)
    loss = segmentation_loss(logits, background, "ce", torch.tensor([0.0, 1.0, 1.0]))
    loss.backward()
    assert loss.item() == 0.0 and torch.isfinite(logits.grad).all()
