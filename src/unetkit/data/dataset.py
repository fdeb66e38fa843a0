"""Find image/mask pairs in a data set folder, validate them, and decode masks to class indices.

A data set is a folder with ``images/`` and ``masks/``, optionally described by a ``dataset.yaml``::

    images: images            # folder, relative to the yaml or absolute (default images)
    masks: masks              # default masks
    mask_names: "labels{number}"  # how mask names follow image names (unetkit.data.pairing)
    classes: [background, cell]   # names; a mapping name -> [r, g, b] for colour masks; or
                                  # a mapping name -> value or [values] for index masks
    mask_mode: auto           # auto | index | binary | color | instances
    ignore_value: 11          # raw index value to ignore
    ignore_colors: [[0, 0, 0]]    # raw colours to ignore
    splits:                   # named subsets: lists of fnmatch patterns on pair keys (unetkit.data.splits)
      train: ["[0-9]", "1[0-9]"]
      val: ["2[0-4]"]

:func:`validate` is the one validator: it yields every problem it finds. :func:`load_spec` stops at the
first error; ``unetkit check`` (:mod:`unetkit.checking`) lists them all.

Decoded masks are ``(H, W)`` int64 class indices ``0..K-1`` with :data:`IGNORE` for ignored pixels.
"""

from __future__ import annotations

import os
from collections.abc import Generator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import ndimage

from unetkit.data.checks import (
    Options,
    Problem,
    find_files,
    read_config,
    read_options,
    read_pair_files,
    run_checks,
    same_name,
)
from unetkit.data.decoding import (
    decode_binary,
    decode_colors,
    decode_values,
    integer_labels,
    label_image,
    short_values,
)
from unetkit.data.encoding import class_table, mask_decision
from unetkit.data.folders import instance_files, natural_key, relative
from unetkit.data.io import read_image, read_mask_raw, read_palette
from unetkit.data.pairing import pair_files
from unetkit.data.splits import read_splits, resolve_splits, select_split
from unetkit.errors import UnetkitError

IGNORE = -1  # value of ignored pixels in decoded masks
PACKED_IGNORE = 255  # IGNORE in a mask packed to uint8


def pack_labels(mask: np.ndarray) -> np.ndarray:
    """A decoded mask in the fewest bytes: uint8 (255 for :data:`IGNORE`) for up to 255 classes, else int16."""
    if int(mask.max(initial=0)) < PACKED_IGNORE:
        return np.where(mask == IGNORE, PACKED_IGNORE, mask).astype(np.uint8)
    return mask.astype(np.int16)


def unpack_labels(mask: np.ndarray) -> np.ndarray:
    """int16 class indices with :data:`IGNORE` from a :func:`pack_labels` mask (or any integer mask)."""
    out = mask.astype(np.int16)
    if mask.dtype == np.uint8:
        out[mask == PACKED_IGNORE] = IGNORE
    return out


@dataclass(frozen=True)
class Pair:
    """One image and its mask.

    Attributes:
        key: Relative path without extension, posix style, e.g. ``"Tile 1/image_part_001"``.
        image: The image file.
        mask: The mask file, a folder of per-instance binary masks, or None when unlabelled.
    """

    key: str
    image: Path
    mask: Path | None


@dataclass
class DataSpec:
    """A resolved data set: its pairs and how to decode their masks.

    Attributes:
        root: Folder that relative paths in messages are shown against.
        pairs: The pairs, sorted naturally by key (``"2"`` before ``"10"``).
        classes: Class names; index ``i`` of a decoded mask is ``classes[i]``.
        colors: RGB colour per class (colour-coded masks and overlays), or None.
        mask_mode: ``"index"``, ``"binary"``, ``"color"`` or ``"instances"``.
        ignore_value: Raw index value decoded as :data:`IGNORE`, or None.
        ignore_colors: Raw colours decoded as :data:`IGNORE` (colour masks).
        splits: Names of the splits the yaml defines (``("train", "val")``), with ``"train"`` when it is
            implied (every pair not in ``val`` or ``test``); empty if none.
        values: Raw mask value -> class index for index masks whose values are not ``0..K-1``, or None.
    """

    root: Path
    pairs: list[Pair]
    classes: list[str]
    colors: list[tuple[int, int, int]] | None
    mask_mode: str
    ignore_value: int | None
    ignore_colors: list[tuple[int, int, int]]
    splits: tuple[str, ...] = ()
    values: dict[int, int] | None = None

    @property
    def num_classes(self) -> int:
        """Number of classes, ``len(classes)``."""
        return len(self.classes)


@dataclass
class Validation:
    """What :func:`validate` found, as far as it got.

    Attributes:
        root: Folder that relative paths in problems are shown against.
        where: The dataset.yaml, or the data set folder without one (problems with options name it).
        pairs: The pairs that went on to the mask checks: the labelled ones (every image when masks
            are not required), with ``read_files`` only those whose files all read.
        unpaired_images: Images without a mask.
        unpaired_masks: Masks without an image.
        images: With ``read_files``, per readable image ``{"key", "file", "dtype", "bits", "channels",
            "height", "width"}``.
        mask_mode: The resolved mask mode; None when the checks stopped before it.
        mask_reason: Why: how ``auto`` read the masks (``"0/255"``), or who set the mode.
        splits: Split name -> its pairs (``train`` included when implied).
        implied_train: Whether ``train`` is every pair not in ``val`` or ``test`` (the yaml has no ``train``).
        spec: The resolved data set; None when an error stopped the checks.
    """

    root: Path
    where: Path
    pairs: list[Pair] = field(default_factory=list)
    unpaired_images: list[Path] = field(default_factory=list)
    unpaired_masks: list[Path] = field(default_factory=list)
    images: list[dict] = field(default_factory=list)
    mask_mode: str | None = None
    mask_reason: str = ""
    splits: dict[str, list[Pair]] = field(default_factory=dict)
    implied_train: bool = False
    spec: DataSpec | None = None


def _resolve_spec(found: Validation, options: Options, splits: dict, split: str | None) -> Generator[Problem, None, DataSpec | None]:
    """The mask mode and class table of ``found.pairs``, and the pairs of ``split``."""
    masks = [pair.mask for pair in found.pairs if pair.mask is not None]
    if options.mask_mode == "auto":
        decision = mask_decision(masks, options)
        found.mask_mode, found.mask_reason = decision.mode, decision.reason
    else:
        found.mask_mode, found.mask_reason = options.mask_mode, f"set by {options.source}"
    table = yield from class_table(found.mask_mode, masks, options, found.where, found.root)
    found.splits, found.implied_train = yield from resolve_splits(found.pairs, splits, found.where, found.root)
    if table is None:
        return None
    pairs = found.pairs
    if split is not None:
        pairs = yield from select_split(found.splits, split, splits, found.pairs, found.where, found.root)
        if pairs is None:
            return None
    names, colors = table
    return DataSpec(found.root, pairs, list(names), colors, found.mask_mode, options.ignore_value, options.ignore_colors,
                    tuple(found.splits), options.values)  # fmt: skip


def validate(
    path: str | os.PathLike,
    *,
    split: str | None = None,
    mask_mode: str = "auto",
    classes: list[str] | None = None,
    ignore_value: int | None = None,
    require_masks: bool = True,
    read_files: bool = False,
    progress: bool = False,
) -> Generator[Problem, None, Validation]:
    """Check a data set, yielding every problem found, and return what was found.

    The checks run in order: the yaml, the options, the folders and the pairing of file names, (with
    ``read_files``) every image and mask file, then the mask mode and the class table, then ``split``.
    A problem that leaves nothing to check further ends them. Run it with
    :func:`unetkit.data.checks.run_checks`; the arguments are those of :func:`load_spec`.

    Args:
        read_files: Also read every image and mask file, as ``unetkit check`` does: unreadable files,
            size mismatches and mixed channels are problems, and only pairs that read go on to the
            mask checks. Without it only the masks the mask mode needs are read.
        progress: Show a progress bar while reading files.

    Returns:
        The :class:`Validation`; its ``spec`` is None when an error stopped the checks.
    """
    path = Path(path).expanduser().resolve()
    found = Validation(path if path.is_dir() else path.parent, path)
    located = yield from read_config(path)
    if located is None:
        return found
    found.root, config, found.where = located
    options = yield from read_options(config, found.where, found.root, mask_mode=mask_mode, classes=classes, ignore_value=ignore_value)
    if options is None:
        return found
    splits = yield from read_splits(config.get("splits"), found.where, found.root)
    files = yield from find_files(found.root, config, require_masks)
    if files is None:
        return found
    images = files[0]
    masks = yield from pair_files(files, config, found.where, found.root, require_masks)
    if masks is None:
        return found
    found.unpaired_images = [images[key] for key in sorted(set(images) - set(masks), key=natural_key)]
    found.unpaired_masks = [masks[key] for key in sorted(set(masks) - set(images), key=natural_key)]
    keys = [key for key in sorted(images, key=natural_key) if key in masks or not require_masks]
    if read_files:
        keys, found.images = yield from read_pair_files(images, masks, keys, found.root, progress)
        if not keys:
            return found
    found.pairs = [Pair(key, images[key], masks.get(key)) for key in keys]
    found.spec = yield from _resolve_spec(found, options, splits, split)
    return found


def load_spec(
    path: str | os.PathLike,
    *,
    split: str | None = None,
    mask_mode: str = "auto",
    classes: list[str] | None = None,
    ignore_value: int | None = None,
    require_masks: bool = True,
) -> DataSpec:
    """Find the image/mask pairs of a data set and resolve how to decode its masks.

    ``path`` is a folder with ``images/`` and ``masks/``, a folder holding a ``dataset.yaml``, or
    the ``dataset.yaml`` itself. Keyword arguments other than ``split`` override the yaml.
    Images and masks pair by relative path without extension; names left unpaired are then paired
    when equal up to the words image(s), img, mask(s), label(s), gt (``img2d.tif`` <-> ``mask2d.tif``),
    or by their number (``07.tif`` <-> ``labels00000007.png``), or by the yaml's ``image_names`` and
    ``mask_names`` (:mod:`unetkit.data.pairing`). Hidden and non-image files are skipped. A mask may be
    a folder of per-instance binary masks (``masks/<key>/*.png``). This is :func:`validate` stopped at
    its first error.

    ``mask_mode="auto"`` is resolved from the first 3 masks by the rules of
    :func:`unetkit.data.encoding.mask_decision`: per-instance folders and label images (one id per
    object) are ``instances``, RGB masks ``color``, 0/255, 0/1 or 0/65535 masks (anti-aliased edges
    too) ``binary``, a ``classes`` map of mask values and anything else ``index``.

    Defaults: ``binary`` and ``instances`` have classes ``["background", "foreground"]`` coloured
    black and white; ``index`` without ``classes`` infers ``max value + 1`` classes from all masks
    (``class_0``, ``class_1``, ...; an error when most would have no pixels) and takes colours from
    the mask palette or a fixed distinct list. With only ``val`` or ``test`` splits in the yaml, the
    ``train`` split is every other pair (:mod:`unetkit.data.splits`).

    Args:
        path: Data set folder or ``dataset.yaml``.
        split: Keep only pairs whose key matches a pattern of this yaml ``splits:`` entry; None = all.
        mask_mode: ``auto``, ``index``, ``binary``, ``color`` or ``instances``; ``auto`` defers to the
            yaml's ``mask_mode``, then to the rules above.
        classes: Class names; None = from the yaml or the defaults above.
        ignore_value: Raw index value to ignore; None = from the yaml (default: none).
        require_masks: If False, images without a mask get ``mask=None`` instead of an error.

    Returns:
        The resolved :class:`DataSpec`.

    Raises:
        UnetkitError: Missing folders or files, unpaired or ambiguously paired images or masks,
            duplicate names, a bad yaml key or value (malformed ``splits`` included), or an undefined
            or empty split.

    Example:
        >>> spec = load_spec("../shared/data/isbi2012")  # doctest: +SKIP
        >>> spec.mask_mode, spec.num_classes, len(spec.pairs)  # doctest: +SKIP
        ('binary', 2, 25)
    """
    checks = validate(path, split=split, mask_mode=mask_mode, classes=classes, ignore_value=ignore_value, require_masks=require_masks)
    return run_checks(checks).spec  # run_checks raised if the checks stopped before a spec


def decode_mask(pair: Pair, spec: DataSpec) -> np.ndarray:
    """Decode the mask of ``pair`` to class indices.

    Args:
        pair: A labelled pair of ``spec``.
        spec: The data set, whose ``mask_mode`` says how raw values map to classes.

    Returns:
        ``(H, W)`` int64 of class indices ``0..num_classes-1``, :data:`IGNORE` for ignored pixels.

    Raises:
        UnetkitError: The pair has no mask, or the mask holds values the mode does not allow.

    Example:
        >>> decode_mask(spec.pairs[0], spec)  # binary 0/255 mask  # doctest: +SKIP
        array([[0, 1], [1, 1]])
    """
    if pair.mask is None:
        raise UnetkitError(f"{relative(pair.image, spec.root)} has no mask; add one to the masks folder")
    name, mode = relative(pair.mask, spec.root), spec.mask_mode
    if pair.mask.is_dir():
        if mode != "instances":
            raise UnetkitError(f"{name} is a folder of instance masks; set mask_mode: instances")
        return (read_instances(pair, spec) > 0).astype(np.int64)
    raw = read_mask_raw(pair.mask)
    if mode == "color":
        return decode_colors(raw, read_palette(pair.mask), spec.colors, spec.ignore_colors, name, IGNORE)
    labels = integer_labels(raw, name)
    if mode == "instances":
        return (label_image(labels, name) > 0).astype(np.int64)
    ignored = labels == spec.ignore_value if spec.ignore_value is not None else np.zeros(labels.shape, bool)
    if mode == "binary":
        decoded = decode_binary(labels, ignored, name)
    elif spec.values is not None:
        decoded = decode_values(labels, ignored, spec.values, name)
    else:
        bad = {v for v in np.unique(labels[~ignored]).tolist() if v < 0 or v >= spec.num_classes}
        if bad:
            raise UnetkitError(
                f"{name} has values {short_values(bad)} outside class indices 0..{spec.num_classes - 1}; "
                "list more classes or set ignore_value in dataset.yaml"
            )
        decoded = labels
    decoded[ignored] = IGNORE
    return decoded


def read_instances(pair: Pair, spec: DataSpec) -> np.ndarray:
    """Instance labels of ``pair``, numbered ``1..N`` with 0 for background.

    A folder of per-instance masks gives instance ``i`` to its ``i``-th file in natural order (later
    files win where masks overlap); a label image is renumbered consecutively in order of its ids;
    other modes label the 4-connected components of the non-background, non-ignored pixels.

    Args:
        pair: A labelled pair of ``spec``.
        spec: The data set.

    Returns:
        ``(H, W)`` int32 instance labels.

    Example:
        >>> read_instances(spec.pairs[0], spec).max()  # number of nuclei  # doctest: +SKIP
        125
    """
    if pair.mask is not None and pair.mask.is_dir():
        files, duplicates = instance_files(pair.mask)
        if duplicates:
            raise UnetkitError(same_name(*duplicates[0], spec.root))
        labels = np.zeros(read_mask_raw(files[0]).shape[:2], np.int32)  # (H, W)
        for number, file in enumerate(files, start=1):
            raw = read_mask_raw(file)
            if raw.shape[:2] != labels.shape:
                raise UnetkitError(
                    f"{relative(file, spec.root)} is {raw.shape[0]}x{raw.shape[1]} but {relative(files[0], spec.root)} "
                    f"is {labels.shape[0]}x{labels.shape[1]}; instance masks of one image must have one size"
                )
            labels[raw.max(axis=2) > 0 if raw.ndim == 3 else raw > 0] = number
        return labels
    if spec.mask_mode == "instances":
        name = relative(pair.mask, spec.root)
        raw = label_image(integer_labels(read_mask_raw(pair.mask), name), name)
        foreground = raw > 0
        _, inverse = np.unique(raw[foreground], return_inverse=True)
        labels = np.zeros(raw.shape, np.int32)
        labels[foreground] = inverse.ravel() + 1  # ids in increasing order -> 1..N
        return labels
    foreground = decode_mask(pair, spec) > 0  # IGNORE (-1) and class 0 are background
    labels, _ = ndimage.label(foreground)
    return labels.astype(np.int32)


def read_pair(pair: Pair, spec: DataSpec) -> tuple[np.ndarray, np.ndarray]:
    """Read the image and decoded mask of ``pair``.

    Args:
        pair: A labelled pair of ``spec``.
        spec: The data set.

    Returns:
        ``(image, mask)``: ``(H, W, C)`` in the file's dtype and ``(H, W)`` int64 class indices.

    Raises:
        UnetkitError: The image and mask differ in rows or columns, or either cannot be read.
    """
    image = read_image(pair.image)
    mask = decode_mask(pair, spec)
    if image.shape[:2] != mask.shape:
        raise UnetkitError(
            f"{relative(pair.image, spec.root)} is {image.shape[0]}x{image.shape[1]} (rows x columns) "
            f"but its mask {relative(pair.mask, spec.root)} is {mask.shape[0]}x{mask.shape[1]}; "
            "re-export the mask at the image size"
        )
    return image, mask


def split_pairs(pairs: list[Pair], val_fraction: float, seed: int) -> tuple[list[Pair], list[Pair]]:
    """Split pairs at random into training and validation lists, reproducibly.

    The draw depends only on the keys, ``val_fraction`` and ``seed``, not on the order of ``pairs``;
    both lists keep the input order. Each gets at least one pair.

    Args:
        pairs: At least 2 pairs.
        val_fraction: Fraction for validation, in (0, 1); rounded, then clamped to ``1..len-1``.
        seed: Seed of the random draw.

    Returns:
        ``(train, val)``.

    Example:
        >>> train, val = split_pairs(spec.pairs, 0.2, seed=0)  # doctest: +SKIP
    """
    if len(pairs) < 2:
        raise UnetkitError(f"cannot split {len(pairs)} pair(s) into training and validation; add images")
    if not 0 < val_fraction < 1:
        raise UnetkitError(f"val_fraction {val_fraction} must be between 0 and 1 (exclusive), e.g. 0.2")
    n_val = min(max(round(len(pairs) * val_fraction), 1), len(pairs) - 1)
    by_key = sorted(pairs, key=lambda p: natural_key(p.key))
    chosen = np.random.default_rng(seed).permutation(len(by_key))[:n_val]
    val_keys = {by_key[i].key for i in chosen}
    return [p for p in pairs if p.key not in val_keys], [p for p in pairs if p.key in val_keys]


def fold_pairs(pairs: list[Pair], folds: int, fold: int, seed: int) -> tuple[list[Pair], list[Pair]]:
    """Fold ``fold`` of a ``folds``-fold cross-validation: ``(train, val)``, val being one of ``folds`` disjoint
    parts of ``pairs`` that together hold every pair once (their sizes differ by at most one).

    Like :func:`split_pairs`, the draw depends only on the keys, ``folds`` and ``seed``; both lists keep the
    input order.

    Example:
        >>> train, val = fold_pairs(spec.pairs, 5, 0, seed=0)  # doctest: +SKIP
    """
    if not 0 <= fold < folds:
        raise UnetkitError(f"fold {fold} is not one of the {folds} folds 0..{folds - 1}; pass --fold 0 to {folds - 1}")
    if len(pairs) < folds:
        raise UnetkitError(f"{len(pairs)} labelled pair(s) cannot make {folds} folds (each needs a pair to validate on); "
                           f"pass --folds {len(pairs)} or fewer, or add images")  # fmt: skip
    by_key = sorted(pairs, key=lambda p: natural_key(p.key))
    order = np.random.default_rng(seed).permutation(len(by_key))
    val_keys = {by_key[i].key for i in order[fold::folds]}
    return [p for p in pairs if p.key not in val_keys], [p for p in pairs if p.key in val_keys]
