"""How a data set's mask files encode classes: the ``mask_mode: auto`` rules and the class table.

Works on mask file paths, before a :class:`unetkit.data.dataset.DataSpec` exists; the class table
check yields :class:`unetkit.data.checks.Problem` records like the other checks.
"""

from __future__ import annotations

from collections.abc import Generator, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from unetkit.data.checks import Options, Problem, error, warning
from unetkit.data.folders import relative
from unetkit.data.io import read_mask_raw, read_palette
from unetkit.data.labels import MIN_OBJECTS, Binary, read_binary, read_labels

AUTO_SAMPLE = 3  # masks inspected to resolve mask_mode "auto"
_MANY_IDS = 32  # distinct values above which a 16/32-bit label image counts as instances
_MAX_VALUES = 64  # distinct raw values (or colours) listed in a report
_BINARY_COLORS = [(0, 0, 0), (255, 255, 255)]
_PALETTE = [  # tab20-like distinct colours for overlays of index masks without a colour table
    (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
    (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207),
    (174, 199, 232), (255, 187, 120), (152, 223, 138), (255, 152, 150), (197, 176, 213),
    (196, 156, 148), (247, 182, 210), (199, 199, 199), (219, 219, 141), (158, 218, 229),
]  # fmt: skip


@dataclass(frozen=True)
class MaskDecision:
    """How ``mask_mode: auto`` reads the masks, and why (a phrase for ``unetkit check``)."""

    mode: str
    reason: str


def _integer(raw: np.ndarray) -> np.ndarray | None:
    """A 2-D mask as int64, or None when it holds colours or non-integer values."""
    if raw.ndim != 2 or (np.issubdtype(raw.dtype, np.floating) and not np.array_equal(raw, np.round(raw))):
        return None
    return raw.astype(np.int64)


def _binary_reason(found: list[Binary]) -> str:
    """The reason of a binary decision: ``"0/255"``, or with the share of anti-aliased edge pixels."""
    high = max(b.high for b in found)
    between, total = sum(b.between for b in found), sum(b.total for b in found)
    if not between:
        return f"0/{high}"
    return f"0/{high}, anti-aliased edges: {between / max(total, 1):.1%} of pixels in between, thresholded at {(high + 1) // 2}"


def _palette_decision(raw: np.ndarray, palette: np.ndarray, colors: list | None) -> MaskDecision:
    indices = np.unique(raw)
    used = {tuple(c) for c in palette[indices[indices < len(palette)]].tolist()}
    if colors and used & set(colors):
        return MaskDecision("color", "palette PNGs whose colours the classes name")
    return MaskDecision("index", "palette PNGs, by palette index")


def mask_decision(masks: list[Path], options: Options) -> MaskDecision:
    """Resolve ``mask_mode: auto`` from the first :data:`AUTO_SAMPLE` masks, first rule that applies.

    1. a folder of per-instance masks -> ``instances``;
    2. an RGB mask -> ``color`` (an error later when the classes give no colours);
    3. a palette PNG -> ``color`` if some used palette colour is a class colour, else ``index``;
    4. ``classes`` maps mask values to classes -> ``index``;
    5. every mask binary: 0 and one of 1, 255, 65535, maybe with anti-aliased edges (at least two distinct
       values in between, see :mod:`unetkit.data.labels`), and not more than 2 classes given -> ``binary``;
    6. instance label images, unless more than 2 classes are given -> ``instances``: a 16/32-bit mask with
       more than 255 distinct values, more than the classes given, or (no classes given) more than 32; or
       every mask with background 0 and most of its ids one connected region, at least 3 ids in some mask;
    7. otherwise ``index``.

    Without masks: ``index`` for more than 2 classes, else ``binary``.

    Args:
        masks: Mask files (or per-instance folders) of the labelled pairs, in order.
        options: The data set's options (classes, colours, value map, ignore value).
    """
    classes, many_classes = options.classes, bool(options.classes and len(options.classes) > 2)
    if options.values is not None:
        return MaskDecision("index", "classes map mask values")
    if not masks:
        return MaskDecision("index" if many_classes else "binary", "no masks to look at")
    binaries: list[Binary] = []
    objects, bits, label_like = 0, 8, True
    for mask in masks[:AUTO_SAMPLE]:
        if mask.is_dir():
            return MaskDecision("instances", "a folder of per-object masks per image")
        raw = read_mask_raw(mask)
        if raw.ndim == 3:
            return MaskDecision("color", "RGB masks")
        palette = read_palette(mask)
        if palette is not None:
            return _palette_decision(raw, palette, options.colors)
        labels = _integer(raw)
        if labels is None:
            return MaskDecision("index", "non-integer masks")
        counted = labels != options.ignore_value if options.ignore_value is not None else None
        values = np.unique(labels if counted is None else labels[counted])
        bits = max(bits, raw.dtype.itemsize * 8)
        binary = read_binary(labels, counted)
        binaries += [binary] if binary is not None else []
        limit = len(classes) if classes else _MANY_IDS
        if many_classes:
            continue  # named classes: neither binary nor instances, no need to look for objects
        if binary is None and raw.dtype.itemsize > 1 and (len(values) > 255 or len(values) > limit):
            objects = max(objects, len(values) - 1)  # many ids in a 16/32-bit mask: a label image
            continue
        found = read_labels(labels, counted)
        objects = max(objects, found.objects)
        label_like &= found.label_like or not values.any()  # an empty mask is no evidence either way
    between = set().union(*(b.values_between for b in binaries))
    # one value in between is more likely a class (e.g. a boundary at 128) than anti-aliasing, which spreads over several
    if len(binaries) == min(len(masks), AUTO_SAMPLE) and not many_classes and len(between) != 1:
        return MaskDecision("binary", _binary_reason(binaries))
    if label_like and objects >= MIN_OBJECTS and not many_classes:
        return MaskDecision("instances", f"instance labels: up to {objects} objects per mask, {bits}-bit")
    return MaskDecision("index", "class indices")


def mask_values(raw: np.ndarray, palette: np.ndarray | None, mode: str) -> set:
    """Distinct raw values of a mask: integers, or ``(r, g, b)`` tuples for colour masks."""
    if mode == "color" or raw.ndim == 3:
        if palette is not None and raw.ndim == 2:
            raw = palette[np.clip(raw, 0, len(palette) - 1)]  # (H, W) indices -> (H, W, 3) colours
        elif raw.ndim == 2:
            return {(v, v, v) for v in np.unique(raw).tolist()}
        codes = np.unique((raw[..., 0].astype(np.int64) << 16) | (raw[..., 1].astype(np.int64) << 8) | raw[..., 2])
        return {(int(c) >> 16, int(c) >> 8 & 255, int(c) & 255) for c in codes}
    return set(np.unique(raw).tolist())


def collect_values(masks: Iterable[Path], mode: str) -> set:
    """Distinct raw values (see :func:`mask_values`) over the mask files among ``masks``."""
    values: set = set()
    for mask in masks:
        if mask.is_file():
            values |= mask_values(read_mask_raw(mask), read_palette(mask), mode)
    return values


def listed(values: set) -> list:
    """The first 64 of ``values`` in order, colours as ``[r, g, b]`` lists (for reports)."""
    return [list(v) if isinstance(v, tuple) else v for v in sorted(values)[:_MAX_VALUES]]


def _unnamed_colours(masks: list[Path], root: Path) -> Problem:
    """The error for RGB masks without a colour table, listing their colours."""
    files = [mask for mask in masks if mask.is_file()]
    first = next(file for file in files if read_mask_raw(file).ndim == 3)
    found = np.unique(read_mask_raw(first).reshape(-1, 3), axis=0)[:8].tolist()
    colours = ", ".join(str(v) for v in listed(collect_values(files, "color")))
    table = "'classes: {name: [r, g, b], ...}'"
    return error(
        first, root,
        f"colour masks using the colours {colours}; name them in dataset.yaml as {table} with 'mask_mode: color', "
        "and list colours that are no class in 'ignore_colors'",
        f"{relative(first, root)} is a colour mask with colours {found}; list them in dataset.yaml as {table} "
        "(e.g. background: [0, 0, 0])",
    )  # fmt: skip


def _index_values(files: list[Path], ignore_value: int | None) -> tuple[set[int], Path | None]:
    """The distinct raw values over the index masks among ``files`` (``ignore_value`` excluded), and a file
    holding the largest."""
    values: set[int] = set()
    largest, where = -1, None
    for file in files:
        raw = read_mask_raw(file)
        if raw.ndim != 2:
            continue  # colour masks are refused by decode_mask
        found = np.unique(raw[raw != ignore_value] if ignore_value is not None else raw).tolist()
        values.update(found)
        if found and found[-1] > largest:
            largest, where = found[-1], file
    return values, where


def _inferred_names(files: list[Path], ignore_value: int | None, where: Path, root: Path) -> Generator[Problem, None, list[str] | None]:
    """``class_0..class_N`` for the largest value N, unless most of those classes would have no pixels."""
    values, largest_file = _index_values(files, ignore_value)
    count = int(max(values, default=0)) + 1
    if count > _MANY_IDS and 2 * len(values) < count:
        shown = ", ".join(map(str, sorted(values)[:8])) + (", ..." if len(values) > 8 else "")
        name = relative(largest_file, root)
        below = max(values - {count - 1}, default=0)
        void = f"set ignore_value: {count - 1} if it means void, " if below < _MANY_IDS else "set ignore_value for a void value, "
        message = (f"has value {count - 1}, so as class indices the masks would make {count} classes, but they hold only "
                   f"{len(values)} distinct values ({shown}); {void}map values to classes in dataset.yaml "
                   "(e.g. 'classes: {background: 0, foreground: 255}'), or set mask_mode binary or instances")  # fmt: skip
        if largest_file.suffix.lower() in (".jpg", ".jpeg"):
            message += "; JPEG compression gives masks values they never had: save masks as PNG"
        yield error(largest_file, root, message, f"{name} {message}")
        return None
    yield warning(where, root, f"classes inferred as class_0..class_{count - 1} from the largest mask value; name them in "
                               "dataset.yaml ('classes: [...]') and set 'ignore_value' if a value means void or unlabelled")  # fmt: skip
    return [f"class_{i}" for i in range(count)]


def class_table(
    mode: str, masks: list[Path], options: Options, where: Path, root: Path
) -> Generator[Problem, None, tuple[list[str], list[tuple[int, int, int]]] | None]:
    """The class names and colours for masks decoded in ``mode``.

    ``binary`` and ``instances`` have classes ``["background", "foreground"]`` coloured black and
    white; ``color`` needs the colours of ``options``; ``index`` takes the names of ``options`` (a list, or
    a map of mask values), else infers ``max value + 1`` classes from all masks (``class_0``, ``class_1``,
    ... with a warning; an error when most of them would have no pixels, as for 0/255 masks), and takes
    colours from the first mask's palette or a fixed distinct list.

    Args:
        mode: The resolved mask mode (not ``auto``).
        masks: Mask files (or per-instance folders) of the labelled pairs.
        options: The data set's options; ``options.mask_mode == "auto"`` means ``mode`` came from the masks.
        where: The dataset.yaml, or the data set folder without one.
        root: The data set root, for file names.

    Returns:
        ``(names, colours)``, or None when the classes do not fit the mode.
    """
    names, colors = options.classes, options.colors
    if mode in ("binary", "instances"):
        if names is not None and len(names) != 2:
            fix = "give 2 names or set mask_mode: index"
            yield error(where, root, f"mask_mode {mode} has 2 classes but 'classes' lists {len(names)}; {fix}",
                        f"{where}: mask_mode {mode} has 2 classes but classes lists {len(names)}; {fix}")  # fmt: skip
            return None
        return names or ["background", "foreground"], colors or list(_BINARY_COLORS)
    if mode == "color":
        if colors:
            return names, colors
        if options.mask_mode == "auto":  # the auto rules found RGB masks
            yield _unnamed_colours(masks, root)
        else:
            yield error(where, root, "mask_mode color needs a colour per class; write 'classes: {name: [r, g, b], ...}' in dataset.yaml")
        return None
    files = [mask for mask in masks if mask.is_file()]
    if names is None:  # one pass over all masks; colour masks are refused later by decode_mask
        names = yield from _inferred_names(files, options.ignore_value, where, root)
        if names is None:
            return None
    palette = read_palette(files[0]) if files and not colors else None
    if not colors and palette is not None and len(palette) >= len(names):
        colors = [tuple(int(v) for v in c) for c in palette[: len(names)]]
    return names, colors or [_PALETTE[i % len(_PALETTE)] for i in range(len(names))]
