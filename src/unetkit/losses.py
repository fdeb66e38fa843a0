"""Segmentation losses as pure tensor functions: cross-entropy, soft Dice, focal, Tversky, and their sums."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from unetkit.data.dataset import IGNORE
from unetkit.loss_names import FOCAL_GAMMA, LOSSES, TVERSKY_ALPHA, TVERSKY_BETA


def _soft_onehot(logits: torch.Tensor, target: torch.Tensor, ignore_index: int) -> tuple[torch.Tensor, torch.Tensor]:
    """softmax(logits) and the one-hot target, both (N, K, H, W) float32 and 0 on ``ignore_index`` pixels."""
    k = logits.shape[1]
    valid = target != ignore_index  # (N, H, W)
    probs = logits.float().softmax(dim=1) * valid.unsqueeze(1)  # (N, K, H, W)
    onehot = F.one_hot(target.clamp(min=0) * valid, k).permute(0, 3, 1, 2).float()  # (N, K, H, W)
    return probs, onehot * valid.unsqueeze(1)


def soft_dice_loss(logits: torch.Tensor, target: torch.Tensor, ignore_index: int = IGNORE, smooth: float = 1.0) -> torch.Tensor:
    """1 - mean over classes of the soft Dice between softmax(logits) and the one-hot target.

    Args:
        logits: (N, K, H, W) raw scores.
        target: (N, H, W) class indices; ``ignore_index`` pixels do not count.
        smooth: Added to numerator and denominator so empty classes score 1, not 0/0.
    """
    probs, onehot = _soft_onehot(logits, target, ignore_index)  # (N, K, H, W) each
    dims = (0, 2, 3)
    inter = (probs * onehot).sum(dims)  # (K,)
    denom = probs.sum(dims) + onehot.sum(dims)  # (K,)
    return 1.0 - ((2 * inter + smooth) / (denom + smooth)).mean()


def tversky_loss(logits: torch.Tensor, target: torch.Tensor, alpha: float = TVERSKY_ALPHA, beta: float = TVERSKY_BETA,
                 ignore_index: int = IGNORE, smooth: float = 0.5) -> torch.Tensor:  # fmt: skip
    """1 - mean over classes of the soft Tversky index ``(TP + s) / (TP + alpha FP + beta FN + s)`` (Salehi et al. 2017).

    TP, FP and FN are sums over the batch of ``p g``, ``p (1 - g)`` and ``(1 - p) g``, with ``p`` the softmax
    and ``g`` the one-hot target. ``beta > alpha`` punishes missed pixels more than false alarms, which
    favours the recall of rare and thin structures; ``alpha = beta = 0.5`` is :func:`soft_dice_loss`.

    Args:
        logits: (N, K, H, W) raw scores.
        target: (N, H, W) class indices; ``ignore_index`` pixels do not count.
        alpha: Weight of false positives, in [0, 1] (default 0.3, Salehi et al.'s best).
        beta: Weight of false negatives, in [0, 1] (default 0.7).
        smooth: Added to numerator and denominator so empty classes score 1, not 0/0. The default 0.5
            matches soft Dice's 1.0, which sits beside ``2 TP``: with alpha = beta = 0.5 the two are equal.

    Example:
        >>> tversky_loss(torch.zeros(1, 2, 1, 2), torch.tensor([[[0, 1]]]), smooth=0.0).item()  # p = 0.5: TP = FP = FN = 0.5
        0.5
    """
    probs, onehot = _soft_onehot(logits, target, ignore_index)  # (N, K, H, W) each
    dims = (0, 2, 3)
    tp = (probs * onehot).sum(dims)  # (K,)
    fp = (probs * (1 - onehot)).sum(dims)  # (K,); ignored pixels have p = 0
    fn = ((1 - probs) * onehot).sum(dims)  # (K,); ignored pixels have g = 0
    return 1.0 - ((tp + smooth) / (tp + alpha * fp + beta * fn + smooth)).mean()


def focal_loss(logits: torch.Tensor, target: torch.Tensor, gamma: float = FOCAL_GAMMA, ignore_index: int = IGNORE,
               class_weights: torch.Tensor | None = None) -> torch.Tensor:  # fmt: skip
    """Softmax focal loss (Lin et al. 2017): the mean over pixels of ``-(1 - p_t)^gamma log p_t``.

    ``p_t`` is the softmax probability of the true class; the factor ``(1 - p_t)^gamma`` fades out pixels
    that are already right, so the many easy background pixels stop outweighing the few hard ones.

    Args:
        logits: (N, K, H, W) raw scores.
        target: (N, H, W) class indices; ``ignore_index`` pixels do not count.
        gamma: Focusing exponent >= 0 (default 2, the paper's best); 0 gives cross-entropy.
        class_weights: (K,) weight of each class (the paper's alpha), or None for equal weights.

    Returns:
        ``sum(w * fl) / sum(w)`` over the pixels that are not ignored, ``w`` the weight of each pixel's
        class (1 without ``class_weights``); 0 when no weight is left.

    Example:
        >>> round(focal_loss(torch.zeros(1, 2, 1, 2), torch.tensor([[[0, 1]]])).item(), 4)  # (1 - 0.5)^2 ln 2
        0.1733
    """
    valid = target != ignore_index  # (N, H, W)
    safe = torch.where(valid, target, 0).clamp(0, logits.shape[1] - 1)  # (N, H, W) indices that gather can take
    log_pt = F.log_softmax(logits.float(), dim=1).gather(1, safe.unsqueeze(1)).squeeze(1)  # (N, H, W)
    # 1 - p_t as -expm1 keeps its precision near p_t = 1; the clamp keeps gamma < 1 from an infinite gradient at 0
    focus = (-torch.expm1(log_pt)).clamp_min(1e-12).pow(gamma)  # (N, H, W)
    w = valid.float() if class_weights is None else class_weights.to(logits.device, torch.float32)[safe] * valid
    return (w * focus * -log_pt).sum() / w.sum().clamp_min(1e-12)


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
    *,
    focal_gamma: float = FOCAL_GAMMA,
    tversky_alpha: float = TVERSKY_ALPHA,
    tversky_beta: float = TVERSKY_BETA,
) -> torch.Tensor:
    """The training loss named by ``kind``, one of :data:`unetkit.loss_names.LOSSES`: the sum of its ``+`` terms.

    Args:
        logits: (N, K, H, W) raw scores.
        target: (N, H, W) int64 class indices, ``ignore_index`` where unlabelled.
        class_weights: (K,) weights of the ``ce`` and ``focal`` terms, or None for equal weights (not used by
            weighted-ce, whose weight map already holds the class weights, nor by dice and tversky).
        weight_map: (N, H, W) pixel weights, required by ``weighted-ce``.
        focal_gamma: The ``focal`` term's exponent (:func:`focal_loss`).
        tversky_alpha, tversky_beta: The ``tversky`` term's weights of false positives and negatives (:func:`tversky_loss`).
    """
    if kind not in LOSSES:
        raise ValueError(f"loss={kind!r}; expected one of {LOSSES}")
    terms = kind.split("+")
    loss = logits.new_zeros((), dtype=torch.float32)
    if "weighted-ce" in terms:
        if weight_map is None:
            raise ValueError(f"loss={kind!r} needs a weight_map (N, H, W)")
        loss = loss + weighted_cross_entropy(logits, target, weight_map, ignore_index)
    if "ce" in terms:
        if class_weights is not None:  # per-pixel class weights: a batch of zero-weight pixels adds 0, not 0/0
            pixel_weights = class_weights.to(logits.device)[target.clamp(0, logits.shape[1] - 1)]  # (N, H, W)
            loss = loss + weighted_cross_entropy(logits, target, pixel_weights, ignore_index)
        elif bool((target != ignore_index).any()):
            loss = loss + F.cross_entropy(logits.float(), target, ignore_index=ignore_index)
    if "focal" in terms:
        loss = loss + focal_loss(logits, target, focal_gamma, ignore_index, class_weights)
    if "dice" in terms:
        loss = loss + soft_dice_loss(logits, target, ignore_index)
    if "tversky" in terms:
        loss = loss + tversky_loss(logits, target, tversky_alpha, tversky_beta, ignore_index)
    return loss
