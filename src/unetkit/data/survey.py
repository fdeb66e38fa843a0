"""Decode every mask of a validated data set and describe what is in it, for ``unetkit check``.

:func:`describe` yields the problems only a full pass finds (masks that do not decode, empty masks,
classes without pixels) and returns the raw values, class pixel counts and object counts.
"""

from __future__ import annotations

from collections.abc import Generator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from unetkit.data.checks import Problem, error, warning
from unetkit.data.dataset import IGNORE, DataSpec, Pair, decode_mask, read_instances
from unetkit.data.encoding import mask_values
from unetkit.data.folders import relative
from unetkit.data.io import read_mask_raw, read_palette
from unetkit.data.labels import read_binary
from unetkit.errors import UnetkitError

_BACKGROUND_NAMES = ("background", "bg", "unlabeled", "unlabelled", "void")
_PLAIN = {"binary": "0 and one foreground value", "index": "class indices", "color": "colours mapped to classes",
          "instances": "one id per object"}  # fmt: skip


class DecodedMasks(Sequence):
    """``(pair, decoded mask)`` of the pairs whose masks decode, each mask decoded again when asked for: a data set of
    thousands of large masks is never held in memory at once. ``pairs`` lists the pairs alone."""

    def __init__(self, spec: DataSpec) -> None:
        self.spec, self.pairs = spec, []

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [(pair, decode_mask(pair, self.spec)) for pair in self.pairs[i]]
        return self.pairs[i], decode_mask(self.pairs[i], self.spec)


@dataclass
class Description:
    """What decoding every mask of a data set found.

    Attributes:
        class_pixels: ``(num_classes,)`` int64 pixels of each class over all masks (ignored pixels excluded).
        ignored_pixels: Pixels decoded as :data:`unetkit.data.dataset.IGNORE`.
        values: Distinct raw mask values: integers, or ``(r, g, b)`` for colour masks (not for instances).
        instances: Objects per mask (``instances`` mode only).
        empty_masks: Masks with no pixel off the background (or every pixel ignored).
        decoded: ``(pair, decoded mask)`` of every mask that decodes, in order, decoded again when read (:class:`DecodedMasks`).
        between_pixels: Binary masks: pixels strictly between 0 and the full scale (anti-aliased edges).
        binary_pixels: Binary masks: pixels counted (ignored pixels excluded).
        full_scales: Binary masks: their foreground values (1, 255, 65535).
        label_bits: Instance label images: their bit depths.
    """

    class_pixels: np.ndarray
    ignored_pixels: int = 0
    values: set = field(default_factory=set)
    instances: list[int] = field(default_factory=list)
    empty_masks: list[Path] = field(default_factory=list)
    decoded: DecodedMasks | None = None
    between_pixels: int = 0
    binary_pixels: int = 0
    full_scales: set[int] = field(default_factory=set)
    label_bits: set[int] = field(default_factory=set)


def _decode(pair: Pair, spec: DataSpec, found: Description) -> np.ndarray:
    """The decoded mask of ``pair``, recording its raw values or its number of objects in ``found``."""
    if spec.mask_mode == "instances":  # the decoded mask is the union of the objects
        labels = read_instances(pair, spec)
        found.instances.append(int(labels.max()))
        if pair.mask.is_file():
            found.label_bits.add(read_mask_raw(pair.mask).dtype.itemsize * 8)
        return (labels > 0).astype(np.int64)
    mask = decode_mask(pair, spec)
    raw = read_mask_raw(pair.mask)
    found.values |= mask_values(raw, read_palette(pair.mask), spec.mask_mode)
    if spec.mask_mode == "binary":  # decode_mask refused masks that are not binary
        binary = read_binary(raw.astype(np.int64), mask != IGNORE)
        found.between_pixels, found.binary_pixels = found.between_pixels + binary.between, found.binary_pixels + binary.total
        found.full_scales.add(binary.high)
    return mask


def mask_summary(spec: DataSpec, found: Description, reason: str) -> str:
    """What the masks were read as, and why, in one phrase for ``unetkit check``.

    Example: ``"binary (0/255, anti-aliased edges: 0.8% of pixels in between, thresholded at 128)"``.
    """
    mode = spec.mask_mode
    if mode == "binary" and found.binary_pixels:
        high = max(found.full_scales)
        what = f"0/{high}"
        if found.between_pixels:
            share = found.between_pixels / found.binary_pixels
            what += f", anti-aliased edges: {share:.1%} of pixels in between, thresholded at {(high + 1) // 2}"
    elif mode == "instances" and found.label_bits:
        what = f"up to {max(found.instances, default=0)} objects per mask, {max(found.label_bits)}-bit"
        mode = "instance labels"
    elif mode == "index" and spec.values is not None:
        what = f"{len(spec.values)} mask values mapped to {spec.num_classes} classes"
    else:
        what = _PLAIN[mode] if reason.startswith("set by") else reason
    if reason.startswith("set by"):
        what += f"; {reason}"
    return f"{mode} ({what})"


def describe(spec: DataSpec, where: Path, progress: bool = False) -> Generator[Problem, None, Description]:
    """Decode every mask of ``spec``: problems for masks that do not decode, empty masks and classes without pixels.

    Args:
        spec: The data set, from :func:`unetkit.data.dataset.validate`.
        where: The dataset.yaml, or the data set folder without one (a class without pixels names it).
        progress: Show a progress bar.

    Returns:
        The :class:`Description`.
    """
    found = Description(np.zeros(spec.num_classes, np.int64), decoded=DecodedMasks(spec))
    background_names = spec.mask_mode in ("binary", "instances") or spec.classes[0].lower() in _BACKGROUND_NAMES
    background = 0 if background_names else None
    for pair in tqdm(spec.pairs, desc="decoding", unit="mask", disable=not progress, leave=False):
        try:
            mask = _decode(pair, spec, found)
        except UnetkitError as failure:
            yield error(pair.mask, spec.root, str(failure).removeprefix(relative(pair.mask, spec.root)).lstrip(": "), str(failure))
            continue
        labelled = mask[mask != IGNORE]
        found.class_pixels += np.bincount(labelled.ravel(), minlength=spec.num_classes)[: spec.num_classes]
        found.ignored_pixels += int(mask.size - labelled.size)
        if labelled.size == 0 or (background is not None and not (labelled != background).any()):
            found.empty_masks.append(pair.mask)
            what = "every pixel is ignored" if labelled.size == 0 else f"only '{spec.classes[background]}'"
            yield warning(pair.mask, spec.root, f"empty mask ({what}); fine for negative examples, else re-export the mask")
        found.decoded.pairs.append(pair)
    for name, count in zip(spec.classes, found.class_pixels):
        if count == 0 and found.decoded:
            yield warning(where, spec.root, f"class '{name}' has no pixels in any mask; remove it from 'classes' or label some")
    return found
