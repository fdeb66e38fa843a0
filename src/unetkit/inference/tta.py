"""Class probabilities: their softmax, test-time augmentation and the uncertainty map, as pure functions on
tile batches and probabilities.

:class:`TTAForward` wraps a tile function: each batch of tiles is also run flipped and rotated, every
result is mapped back, and the softmax probabilities are averaged. It returns the log of the average, so
the softmax that every prediction path applies gives the averaged probabilities back.

Per tile is enough for every path. In valid mode an input tile is its output tile plus equal margins on
each side, and tiles start on multiples of the network's stride: a flip or a quarter turn maps the output
tile onto itself and keeps the network's pooling grid aligned, so tiled (and streamed) TTA equals the TTA
of one pass over the whole mirrored image. Non-square tiles (the last tiles of a narrow image) are simply
run turned, as (w, h) tiles: both sizes are valid inputs.
"""

from __future__ import annotations

import numpy as np

from unetkit.data.augmentation import resolve_augment
from unetkit.errors import UnetkitError
from unetkit.inference.stitch import TileFunction

#: A transform of a tile: ``(quarter turns counter-clockwise, left-right flip first)``.
Transform = tuple[int, bool]
#: The 8 flips and 90-degree rotations (the dihedral group of the square), identity first.
DIHEDRAL: tuple[Transform, ...] = tuple((k, flip) for flip in (False, True) for k in range(4))
#: The image and its left-right flip, for models trained with ``hflip`` only (images with an up direction).
HFLIP: tuple[Transform, ...] = ((0, False), (0, True))
_TINY = np.finfo(np.float32).tiny  # log(0) would be -inf, which prediction refuses as overflowed logits


def apply_transform(x: np.ndarray, transform: Transform) -> np.ndarray:
    """``x`` (..., h, w) flipped left-right (if asked), then turned ``k`` quarter turns: (..., h, w) or (..., w, h)."""
    k, flip = transform
    return np.rot90(x[..., ::-1] if flip else x, k, axes=(-2, -1))


def invert_transform(y: np.ndarray, transform: Transform) -> np.ndarray:
    """The inverse of :func:`apply_transform`: ``invert_transform(apply_transform(x, t), t)`` is ``x``."""
    k, flip = transform
    y = np.rot90(y, -k, axes=(-2, -1))
    return y[..., ::-1] if flip else y


def tta_transforms(meta: dict) -> tuple[Transform, ...]:
    """The transforms for a model with metadata ``meta``: :data:`HFLIP` when its training config
    (``meta["train_config"]``) flipped left-right only, else :data:`DIHEDRAL`.

    Models trained with flips and rotations (the default ``light`` preset and above) get all 8; so do
    exported files and checkpoints whose metadata lacks the training config, and models trained without
    flips (they learnt no up direction either way that TTA could rely on).

    Example:
        >>> len(tta_transforms({"train_config": {"augment": "none", "hflip": True}}))
        2
    """
    config = meta.get("train_config")
    if not isinstance(config, dict):
        return DIHEDRAL
    try:
        aug = resolve_augment(config.get("augment", "light"), flip_rotate=config.get("flip_rotate"), hflip=config.get("hflip"))
    except (UnetkitError, TypeError):  # a config this unetkit cannot resolve: the default set
        return DIHEDRAL
    return HFLIP if aug.hflip and not aug.flip_rotate else DIHEDRAL


def softmax(logits: np.ndarray, axis: int = 0) -> np.ndarray:
    """Softmax of logits over ``axis`` (the class axis: 0 of (K, H, W), 1 of a (B, K, h, w) batch).

    Infinite logits give NaN, which prediction then refuses with the image's name.
    """
    with np.errstate(invalid="ignore"):
        e = np.exp(logits - logits.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


class TTAForward:
    """A tile function averaging the class probabilities of ``forward`` over ``transforms``.

    (B, C, h, w) normalised tiles -> (B, K, h', w') float32 log of the mean of
    ``invert(softmax(forward(apply(x, t))))`` over the transforms ``t``; softmax of it is that mean.
    NaN or infinite logits of ``forward`` stay NaN, so prediction still refuses them.

    Attributes of ``forward`` (``config``, ``model``, ``device``, ``precision``) are read through.
    """

    def __init__(self, forward: TileFunction, transforms: tuple[Transform, ...] = DIHEDRAL) -> None:
        if not transforms:
            raise ValueError("TTAForward needs at least one transform")
        self.forward = forward
        self.transforms = tuple(transforms)

    def __getattr__(self, name: str):
        if name in ("forward", "transforms"):  # not set yet: no recursion through __getattr__
            raise AttributeError(name)
        return getattr(self.forward, name)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        total = None
        for t in self.transforms:
            logits = self.forward(np.ascontiguousarray(apply_transform(x, t)))  # (B, K, h', w'), or (B, K, w', h') turned
            probs = invert_transform(softmax(logits.astype(np.float32), axis=1), t)
            total = probs if total is None else total + probs
        return log_probabilities(total / np.float32(len(self.transforms)))  # (B, K, h', w')


def log_probabilities(probs: np.ndarray) -> np.ndarray:
    """Averaged class probabilities as the float32 logits every prediction path takes: their log, so that a
    softmax gives them back (0 becomes log of the tiniest float32, not -inf; NaN stays NaN)."""
    return np.log(np.maximum(probs, _TINY)).astype(np.float32)


def uncertainty_map(probs: np.ndarray) -> np.ndarray:
    """(K, H, W) class probabilities -> (H, W) float32 entropy divided by log(K): 0 = certain, 1 = uniform.

    Example:
        >>> uncertainty_map(np.array([[[1.0, 0.5]], [[0.0, 0.5]]]))
        array([[0., 1.]], dtype=float32)
    """
    k = probs.shape[0]
    if k < 2:
        return np.zeros(probs.shape[1:], np.float32)
    p = probs.astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0)
    entropy = np.clip(-terms.sum(axis=0) / np.log(k), 0.0, 1.0) + 0.0  # + 0.0: -0.0 becomes 0.0
    return entropy.astype(np.float32)
