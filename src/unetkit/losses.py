"""Segmentation losses as pure tensor functions: cross-entropy, soft Dice, and their sum."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from unetkit.data.dataset import IGNORE

LOSSES = ("ce", "dice", "ce+dice", "weighted-ce", "weighted-ce+dice")


def soft_dice_loss(logits: torch.Tensor, target: torch.Tensor, ignore_index: int = IGNORE, smooth: float = 1.0) -> torch.Tensor:
    """1 - mean over classes of the soft Dice between softmax(logits) and the one-hot target.

    Args:
        logits: (N, K, H, W) raw scores.
        target: (N, H, W) class indices; ``ignore_index`` pixels do not count.
        smooth: Added to numerator and denominator so empty classes score 1, not 0/0.
    """
    n, k = logits.shape[:2]
    valid = target != ignore_index  # (N, H, W)
    probs = logits.float().softmax(dim=1) * valid.unsqueeze(1)  # (N, K, H, W)
    onehot = F.one_hot(target.clamp(min=0) * valid, k).permute(0, 3, 1, 2).float()  # (N, K, H, W)
    onehot = onehot * valid.unsqueeze(1)
    dims = (0, 2, 3)
    inter = (probs * onehot).sum(dims)  # (K,)
    denom = probs.sum(dims) + onehot.sum(dims)  # (K,)
    return 1.0 - ((2 * inter + smooth) / (denom + smooth)).mean()


def weighted_cross_entropy(logits: torch.Tensor, target: torch.Tensor, weight_map: torch.Tensor, ignore_index: int = IGNORE) -> torch.Tensor:
    """Cross-entropy with a weight per pixel (the paper's eq. 1), averaged with those weights.

    Args:
        logits: (N, K, H, W) raw scores.
        target: (N, H, W) class indices; ``ignore_index`` pixels do not count.
        weight_map: (N, H, W) non-negative weights, e.g. from :func:`unetkit.data.weights.border_weight_map`.

    Returns:
        ``sum(w * ce) / sum(w)`` over the pixels that are not ignored (0 when no weight is left).
    """
    ce = F.cross_entropy(logits.float(), target, ignore_index=ignore_index, reduction="none")  # (N, H, W)
    w = weight_map.float() * (target != ignore_index)
    return (w * ce).sum() / w.sum().clamp_min(1e-12)


def segmentation_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    kind: str = "ce+dice",
    class_weights: torch.Tensor | None = None,
    ignore_index: int = IGNORE,
    weight_map: torch.Tensor | None = None,
) -> torch.Tensor:
    """The training loss named by ``kind``: ``ce``, ``dice``, ``ce+dice``, ``weighted-ce`` or ``weighted-ce+dice``.

    Args:
        logits: (N, K, H, W) raw scores.
        target: (N, H, W) int64 class indices, ``ignore_index`` where unlabelled.
        class_weights: (K,) cross-entropy weights, or None for equal weights (not used by weighted-ce,
            whose weight map already holds the class weights).
        weight_map: (N, H, W) pixel weights, required by ``weighted-ce``.
    """
    if kind not in LOSSES:
        raise ValueError(f"loss={kind!r}; expected one of {LOSSES}")
    loss = logits.new_zeros((), dtype=torch.float32)
    if "weighted-ce" in kind.split("+"):
        if weight_map is None:
            raise ValueError(f"loss={kind!r} needs a weight_map (N, H, W)")
        loss = loss + weighted_cross_entropy(logits, target, weight_map, ignore_index)
    if "ce" in kind.split("+"):
        if class_weights is not None:  # per-pixel class weights: a batch of zero-weight pixels adds 0, not 0/0
            pixel_weights = class_weights.to(logits.device)[target.clamp(0, logits.shape[1] - 1)]  # (N, H, W)
            loss = loss + weighted_cross_entropy(logits, target, pixel_weights, ignore_index)
        elif bool((target != ignore_index).any()):
            loss = loss + F.cross_entropy(logits.float(), target, ignore_index=ignore_index)
    if "dice" in kind.split("+"):
        loss = loss + soft_dice_loss(logits, target, ignore_index)
    return loss
