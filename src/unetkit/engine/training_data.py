"""The data of a training run in memory: the train/validation split, the arrays, targets and loss weight maps."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from tqdm.auto import tqdm

from unetkit.config import TrainConfig
from unetkit.data.dataset import DataSpec, Pair, fold_pairs, load_spec, read_pair, split_pairs
from unetkit.data.weights import dataset_weight_maps
from unetkit.errors import UnetkitError
from unetkit.instances import INSTANCE_CLASSES, INSTANCE_COLORS, instance_targets, instance_weight_maps
from unetkit.models.pretrained import imagenet_stats


@dataclass
class TrainingData:
    """The training and validation sets as arrays, with the classes the network learns.

    Attributes:
        spec: The training data set.
        train_pairs, val_pairs: The files of each set.
        train_images, val_images: (H, W, C) images in their native units.
        train_masks, val_masks: (H, W) int64 targets: class indices, or with ``target="instances"`` the
            classes background, interior and boundary; IGNORE where unlabelled.
        classes, colors: The names and RGB colours of the target classes.
        train_instances: (H, W) object labels of the training images with ``target="instances"``, else None.
    """

    spec: DataSpec
    train_pairs: list[Pair]
    val_pairs: list[Pair]
    train_images: list[np.ndarray]
    train_masks: list[np.ndarray]
    val_images: list[np.ndarray]
    val_masks: list[np.ndarray]
    classes: list[str]
    colors: list[list[int]]
    train_instances: list[np.ndarray] | None = None

    @property
    def channels(self) -> int:
        return self.train_images[0].shape[2]


def load_split(cfg: TrainConfig) -> tuple[DataSpec, list[Pair], list[Pair]]:
    """The training spec and the (train, val) pairs, from the fold of --folds, --val, the yaml's splits, or --val-fraction."""
    if not cfg.data:
        raise UnetkitError("no training data: pass --data DATA (a folder with images/ and masks/, or a dataset.yaml)")
    spec = _spec(cfg.data, "train", cfg.mask_mode)
    if cfg.folds is not None or cfg.fold is not None:
        return spec, *_fold(spec, cfg)
    if cfg.val:
        val_spec = _spec(cfg.val, "val", cfg.mask_mode)
        return spec, spec.pairs, val_spec.pairs
    if "val" in spec.splits:
        return spec, spec.pairs, _spec(cfg.data, "val", cfg.mask_mode).pairs
    if len(spec.pairs) < 2:
        raise UnetkitError(f"{cfg.data}: {len(spec.pairs)} labelled pair(s); validation needs at least 2 (or pass --val DATA)")
    train, val = split_pairs(spec.pairs, cfg.val_fraction, cfg.seed)
    return spec, train, val


def _fold(spec: DataSpec, cfg: TrainConfig) -> tuple[list[Pair], list[Pair]]:
    """The (train, val) pairs of fold ``cfg.fold`` of ``cfg.folds``, cut from the training pairs (the yaml's train
    split; its val split stays out of cross-validation, for scoring the ensemble)."""
    if cfg.folds is None:
        raise UnetkitError(f"--fold {cfg.fold} needs --folds K (the number of folds it is one of)")
    if cfg.fold is None:
        raise UnetkitError(f"--folds {cfg.folds} trains one run per fold through unetkit train (or unetkit.train); "
                           "to train a single fold here, pass --fold I as well")
    if cfg.val:
        raise UnetkitError(f"--folds {cfg.folds} validates each fold on its own share of the training pairs; drop --val {cfg.val} "
                           "(score the ensemble on it afterwards with unetkit evaluate), or drop --folds")
    return fold_pairs(spec.pairs, cfg.folds, cfg.fold, cfg.seed)


def _spec(path: str, split: str, mask_mode: str) -> DataSpec:
    """load_spec with the named split when the data set defines splits, else the whole set."""
    spec = load_spec(path, mask_mode=mask_mode)
    if split in spec.splits:
        spec = load_spec(path, split=split, mask_mode=mask_mode)
    return spec


def load_arrays(pairs: list[Pair], spec: DataSpec, progress: bool) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Read every pair into memory: (H, W, C) native images and (H, W) int64 masks."""
    images, masks = [], []
    channels = None
    for pair in tqdm(pairs, desc="reading", unit="img", disable=not progress or len(pairs) < 20, leave=False):
        image, mask = read_pair(pair, spec)
        if channels is None:
            channels = image.shape[2]
        elif image.shape[2] != channels:
            raise UnetkitError(
                f"{pair.image}: {image.shape[2]} channel(s) but {pairs[0].image.name} has {channels}; "
                "convert all images to the same channels"
            )
        images.append(image)
        masks.append(mask)
    return images, masks


def load_training_data(cfg: TrainConfig, progress: bool) -> TrainingData:
    """Read the configured training and validation sets; ``progress`` shows bars for long ones."""
    spec, train_pairs, val_pairs = load_split(cfg)
    train_images, train_masks = load_arrays(train_pairs, spec, progress)
    val_images, val_masks = load_arrays(val_pairs, spec, progress)
    if val_images and val_images[0].shape[2] != train_images[0].shape[2]:
        raise UnetkitError(
            f"{val_pairs[0].image}: {val_images[0].shape[2]} channel(s) but training image {train_pairs[0].image.name} has "
            f"{train_images[0].shape[2]}; convert all images to the same channels"
        )
    data = TrainingData(spec, train_pairs, val_pairs, train_images, train_masks, val_images, val_masks,
                        list(spec.classes), [list(c) for c in spec.colors])  # fmt: skip
    if cfg.target == "instances":  # background / interior / boundary between touching objects, from the instance labels
        data.train_instances, data.train_masks = instance_targets(train_pairs, spec, cfg.boundary_width, progress)
        data.val_masks = instance_targets(val_pairs, spec, cfg.boundary_width)[1]
        data.classes, data.colors = list(INSTANCE_CLASSES), [list(c) for c in INSTANCE_COLORS]
    return data


def channel_stats(images: list[np.ndarray]) -> dict:
    """Per-channel mean and std over all pixels of the training images, in their native units."""
    c = images[0].shape[2]
    total = np.zeros(c)
    sq = np.zeros(c)
    n = 0
    for img in images:
        x = img.reshape(-1, c).astype(np.float64)
        total += x.sum(0)
        sq += (x * x).sum(0)
        n += x.shape[0]
    mean = total / n
    std = np.sqrt(np.maximum(sq / n - mean * mean, 0.0))
    std = np.where(std > 0, std, 1.0)  # a constant channel: keep it finite
    return {"mean": mean.tolist(), "std": std.tolist()}


def input_stats(images: list[np.ndarray], pretrained: bool) -> dict:
    """The normalisation of the network's inputs, in the images' native units: their own per-channel mean and std
    (:func:`channel_stats`); with pretrained encoder weights ImageNet's, scaled to the images' full scale (255 for
    8-bit), which those weights expect, where that scale is known (:func:`full_scale`)."""
    peak = full_scale(images) if pretrained else None
    return channel_stats(images) if peak is None else imagenet_stats(images[0].shape[2], peak)


def full_scale(images: list[np.ndarray]) -> float | None:
    """The value of full white: 2^k - 1 for integer images whose largest value needs k >= 8 bits (255 for 8-bit, 4095
    for 12-bit data in 16-bit files, 65535), 1 for floats within [0, 1]; None for other floats, whose scale is unknown."""
    top = max(float(im.max(initial=0)) for im in images)
    if np.issubdtype(images[0].dtype, np.integer):
        return float(2 ** max(8, math.ceil(math.log2(top + 1))) - 1)
    return 1.0 if top <= 1.0 else None


def loss_weight_maps(data: TrainingData, cfg: TrainConfig) -> list[np.ndarray] | None:
    """The per-pixel loss weights of ``weighted-ce`` losses, one (H, W) float32 map per training image; else None."""
    if not cfg.loss.startswith("weighted-ce"):
        return None
    if cfg.target == "instances":  # the border term also covers the boundary band
        return instance_weight_maps(data.train_instances, data.train_masks, cfg.weight_w0, cfg.weight_sigma, cfg.class_weights)
    # the paper's border weight map, w_c from class_weights or balanced
    return dataset_weight_maps(data.train_pairs, data.spec, data.train_masks, cfg.weight_w0, cfg.weight_sigma, cfg.class_weights)
