"""The data of a training run: the train/validation split, and the arrays, targets and loss weight maps in the decoded cache."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from tqdm.auto import tqdm

from unetkit.config import TrainConfig
from unetkit.data.cache import (
    CachedArrays,
    DiskCache,
    Entry,
    MemoryCache,
    check_unchanged,
    dataset_folder,
)
from unetkit.data.dataset import (
    IGNORE,
    DataSpec,
    Pair,
    fold_pairs,
    load_spec,
    pack_labels,
    read_instances,
    read_pair,
    split_pairs,
    unpack_labels,
)
from unetkit.data.sampler import class_centres
from unetkit.data.weights import balanced_class_weights, border_weight_map
from unetkit.errors import UnetkitError
from unetkit.instances import (
    INSTANCE_CLASSES,
    INSTANCE_COLORS,
    instance_class_weights,
    instance_weight_map,
    require_instance_masks,
    three_class_target,
)
from unetkit.models.pretrained import imagenet_stats


@dataclass
class TrainingData:
    """The training and validation sets, decoded into the cache (:mod:`unetkit.data.cache`), with the classes the network learns.

    The arrays are lazy sequences: item ``i`` is read (memory-mapped) when asked for, so holding them holds no pixels;
    with ``--cache memory`` they are lists in memory.

    Attributes:
        spec: The training data set.
        train_pairs, val_pairs: The files of each set.
        train_images, val_images: (H, W, C) images in their native units.
        train_masks, val_masks: (H, W) targets: class indices, or with ``target="instances"`` the classes background,
            interior and boundary; IGNORE where unlabelled. The training masks are packed (:func:`~unetkit.data.dataset.pack_labels`,
            which the patch sampler reads), the validation masks int16.
        classes, colors: The names and RGB colours of the target classes.
        train_entries, val_entries: The cache entries, with their statistics and sources.
        cache: The cache they live in.
    """

    spec: DataSpec
    train_pairs: list[Pair]
    val_pairs: list[Pair]
    train_images: Sequence[np.ndarray]
    train_masks: Sequence[np.ndarray]
    val_images: Sequence[np.ndarray]
    val_masks: Sequence[np.ndarray]
    classes: list[str]
    colors: list[list[int]]
    train_entries: list[Entry]
    val_entries: list[Entry]
    cache: DiskCache | MemoryCache

    @property
    def channels(self) -> int:
        return self.train_entries[0].shape("image")[2]

    def centres(self) -> CachedArrays:
        """The cached :func:`~unetkit.data.sampler.class_centres` of each training image."""
        return CachedArrays(self.train_entries, "centres")

    def class_counts(self) -> list[int]:
        """Pixels of each class over the training masks."""
        counts = np.zeros(len(self.classes), np.int64)
        for entry in self.train_entries:
            found = entry.stats["classes"][: len(counts)]
            counts[: len(found)] += found
        return counts.tolist()

    def image_stats(self) -> dict:
        """The training images' pooled :func:`image_stats`."""
        return pool_stats([e.stats for e in self.train_entries])

    def check_unchanged(self) -> None:
        """Raise UnetkitError when a file of the data set changed since it was cached (:func:`~unetkit.data.cache.check_unchanged`)."""
        check_unchanged(self.train_entries + self.val_entries)


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


def open_cache(cfg: TrainConfig, spec: DataSpec) -> DiskCache | MemoryCache:
    """The cache of ``spec``'s decoded arrays: ``--cache memory``, or a folder per data set under ``--cache DIR`` (default
    ``$UNETKIT_CACHE/data``, i.e. ``~/.cache/unetkit/data``)."""
    return MemoryCache() if cfg.cache == "memory" else DiskCache(dataset_folder(spec.root, cfg.cache))


def decoding(spec: DataSpec, cfg: TrainConfig) -> dict:
    """Everything besides the files that decides a cached pair's arrays."""
    return {"mask_mode": spec.mask_mode, "classes": spec.classes, "values": spec.values, "ignore_value": spec.ignore_value,
            "ignore_colors": spec.ignore_colors, "target": cfg.target, "boundary_width": cfg.boundary_width}  # fmt: skip


def cache_pairs(pairs: list[Pair], spec: DataSpec, cfg: TrainConfig, cache, progress: bool, what: str) -> list[Entry]:
    """The cache entry of every pair (image, packed mask and, with ``target="instances"``, the object labels), decoded
    now where it is missing or stale."""
    if cfg.target == "instances" and spec.mask_mode != "instances":
        require_instance_masks(spec)
    how = decoding(spec, cfg)
    entries = []
    for pair in tqdm(pairs, desc=f"caching {what}", unit="img", disable=not progress or len(pairs) < 20, leave=False):
        entries.append(cache.get(json.dumps([str(pair.image), str(pair.mask), how]), [pair.image, pair.mask],
                                 lambda pair=pair: _decode(pair, spec, cfg)))  # fmt: skip
    for pair, entry in zip(pairs, entries):
        if entry.shape("image")[2] != entries[0].shape("image")[2]:
            raise UnetkitError(f"{pair.image}: {entry.shape('image')[2]} channel(s) but {pairs[0].image.name} has "
                               f"{entries[0].shape('image')[2]}; convert all images to the same channels")
    return entries


def _decode(pair: Pair, spec: DataSpec, cfg: TrainConfig) -> tuple[dict, dict]:
    """The arrays of one pair and their statistics."""
    image, mask = read_pair(pair, spec)
    arrays = {"image": image}
    if cfg.target == "instances":  # background / interior / boundary between touching objects, from the instance labels
        objects = read_instances(pair, spec)
        mask = three_class_target(objects, cfg.boundary_width)
        arrays["instances"] = objects.astype(np.int32)
    arrays["mask"] = pack_labels(mask)
    arrays["centres"] = class_centres(arrays["mask"])
    labelled = mask[mask != IGNORE]
    return arrays, {**image_stats(image), "labelled": int(labelled.size), "classes": np.bincount(labelled.ravel()).tolist()}


def image_stats(image: np.ndarray) -> dict:
    """Per-channel sums, sums of squares, minimum and maximum of an (H, W, C) image, and its pixel count and dtype."""
    x = image.reshape(-1, image.shape[2]).astype(np.float64)
    return {"sum": x.sum(0).tolist(), "sumsq": (x * x).sum(0).tolist(), "min": x.min(0, initial=np.inf).tolist(),
            "max": x.max(0, initial=-np.inf).tolist(), "pixels": int(x.shape[0]), "dtype": image.dtype.str}  # fmt: skip


def pool_stats(stats: list[dict]) -> dict:
    """:func:`image_stats` of many images as one."""
    pooled = {"sum": np.sum([s["sum"] for s in stats], 0), "sumsq": np.sum([s["sumsq"] for s in stats], 0),
              "min": np.min([s["min"] for s in stats], 0), "max": np.max([s["max"] for s in stats], 0),
              "pixels": sum(s["pixels"] for s in stats), "dtype": stats[0]["dtype"]}  # fmt: skip
    return {k: v.tolist() if isinstance(v, np.ndarray) else v for k, v in pooled.items()}


def load_training_data(cfg: TrainConfig, progress: bool) -> TrainingData:
    """The configured training and validation sets, from the cache (filled first where needed); ``progress`` shows bars
    for long ones."""
    spec, train_pairs, val_pairs = load_split(cfg)
    cache = open_cache(cfg, spec)
    train = cache_pairs(train_pairs, spec, cfg, cache, progress, "training set")
    val = cache_pairs(val_pairs, spec, cfg, cache, progress, "validation set")
    if val and val[0].shape("image")[2] != train[0].shape("image")[2]:
        raise UnetkitError(
            f"{val_pairs[0].image}: {val[0].shape('image')[2]} channel(s) but training image {train_pairs[0].image.name} has "
            f"{train[0].shape('image')[2]}; convert all images to the same channels"
        )
    classes, colors = list(spec.classes), [list(c) for c in spec.colors]
    if cfg.target == "instances":
        classes, colors = list(INSTANCE_CLASSES), [list(c) for c in INSTANCE_COLORS]
    return TrainingData(spec, train_pairs, val_pairs, CachedArrays(train, "image"), CachedArrays(train, "mask"),
                        CachedArrays(val, "image"), CachedArrays(val, "mask", unpack_labels), classes, colors, train, val, cache)  # fmt: skip


def channel_stats(images: Sequence[np.ndarray]) -> dict:
    """Per-channel mean and std over all pixels of the training images, in their native units."""
    return stats_norm(pool_stats([image_stats(im) for im in images]))


def stats_norm(pooled: dict) -> dict:
    """Per-channel mean and std from pooled :func:`image_stats`."""
    n = pooled["pixels"]
    mean = np.asarray(pooled["sum"]) / n
    std = np.sqrt(np.maximum(np.asarray(pooled["sumsq"]) / n - mean * mean, 0.0))
    std = np.where(std > 0, std, 1.0)  # a constant channel: keep it finite
    return {"mean": mean.tolist(), "std": std.tolist()}


def input_stats(images: Sequence[np.ndarray], pretrained: bool) -> dict:
    """:func:`input_norm` of the images."""
    return input_norm(pool_stats([image_stats(im) for im in images]), pretrained)


def input_norm(pooled: dict, pretrained: bool) -> dict:
    """The normalisation of the network's inputs, in the images' native units: their own per-channel mean and std
    (:func:`stats_norm`); with pretrained encoder weights ImageNet's, scaled to the images' full scale (255 for
    8-bit), which those weights expect, where that scale is known (:func:`full_scale`)."""
    peak = scale_of(pooled) if pretrained else None
    return stats_norm(pooled) if peak is None else imagenet_stats(len(pooled["sum"]), peak)


def full_scale(images: Sequence[np.ndarray]) -> float | None:
    """:func:`scale_of` the images."""
    return scale_of(pool_stats([image_stats(im) for im in images]))


def scale_of(pooled: dict) -> float | None:
    """The value of full white: 2^k - 1 for integer images whose largest value needs k >= 8 bits (255 for 8-bit, 4095
    for 12-bit data in 16-bit files, 65535), 1 for floats within [0, 1]; None for other floats, whose scale is unknown."""
    top = max(0.0, max(pooled["max"]))
    if np.issubdtype(np.dtype(pooled["dtype"]), np.integer):
        return float(2 ** max(8, math.ceil(math.log2(top + 1))) - 1)
    return 1.0 if top <= 1.0 else None


def input_peak(pooled: dict, norm: dict) -> float:
    """The largest absolute standardised input value (for the diagnosis of a non-finite loss)."""
    mean, std = np.asarray(norm["mean"]), np.asarray(norm["std"])
    return float(np.max(np.maximum(np.abs(np.asarray(pooled["min"]) - mean), np.abs(np.asarray(pooled["max"]) - mean)) / std))


def loss_weight_maps(data: TrainingData, cfg: TrainConfig) -> CachedArrays | None:
    """The per-pixel loss weights of ``weighted-ce`` losses, one (H, W) float32 map per training image, cached; else None.

    The paper's border weight map, ``w_c`` from ``class_weights`` or balanced over the training set (for
    ``target="instances"`` background against objects, interior and boundary together; the border term covers the
    boundary band, see :func:`~unetkit.instances.instance_weight_maps`)."""
    if not cfg.loss.startswith("weighted-ce"):
        return None
    class_weights = cfg.class_weights or _balanced(data, cfg.target == "instances")
    how = {"w0": cfg.weight_w0, "sigma": cfg.weight_sigma, "class_weights": [float(w) for w in class_weights]}
    entries = [data.cache.get(f"{entry.key} weights {json.dumps(how)}", [pair.image, pair.mask],
                              lambda pair=pair, entry=entry: _weights(pair, entry, data.spec, cfg, class_weights))
               for pair, entry in zip(data.train_pairs, data.train_entries)]  # fmt: skip
    return CachedArrays(entries, "weights")


def _balanced(data: TrainingData, instances: bool) -> list[float]:
    counts = data.class_counts()
    return instance_class_weights(counts) if instances else balanced_class_weights(counts).tolist()


def _weights(pair: Pair, entry: Entry, spec: DataSpec, cfg: TrainConfig, class_weights) -> tuple[dict, dict]:
    mask = unpack_labels(entry.load("mask"))
    if cfg.target == "instances":
        return {"weights": instance_weight_map(entry.load("instances"), mask, cfg.weight_w0, cfg.weight_sigma, class_weights)}, {}
    return {"weights": border_weight_map(read_instances(pair, spec), mask, class_weights, cfg.weight_w0, cfg.weight_sigma)}, {}
