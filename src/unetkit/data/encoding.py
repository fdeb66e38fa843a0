"""How a data set's mask files encode classes: the ``mask_mode: auto`` rules and the class table.

Works on mask file paths, before a :class:`unetkit.data.dataset.DataSpec` exists; the class table
check yields :class:`unetkit.data.checks.Problem` records like the other checks.
"""

from __future__ import annotations

from collections.abc import Generator, Iterable
from pathlib import Path

import numpy as np

from unetkit.data.checks import Options, Problem, error, warning
from unetkit.data.folders import relative
from unetkit.data.io import read_mask_raw, read_palette

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


def auto_mask_mode(masks: list[Path], classes: list[str] | None, colors: list | None, ignore_value: int | None) -> str:
    """Resolve ``mask_mode: auto`` from the first :data:`AUTO_SAMPLE` masks, first rule that applies.

    1. a folder of per-instance masks -> ``instances``;
    2. an RGB mask -> ``color`` (an error later when ``colors`` is None);
    3. a palette PNG -> ``color`` if some used palette colour is one of ``colors``, else ``index``;
    4. a 16/32-bit integer mask with more than 255 distinct values, more distinct values than
       ``classes``, or (no classes given) more than 32 distinct values -> ``instances`` (label image);
    5. values (``ignore_value`` excluded) within {0, 255} or {0, 1}, and not more than 2 classes given
       -> ``binary``;
    6. otherwise ``index``.

    Without masks: ``index`` for more than 2 classes, else ``binary``.

    Args:
        masks: Mask files (or per-instance folders) of the labelled pairs, in order.
        classes: Class names given, or None.
        colors: Class colours given, or None.
        ignore_value: Raw index value to ignore, or None.
    """
    if not masks:
        return "index" if classes and len(classes) > 2 else "binary"
    values: set[int] = set()
    for mask in masks[:AUTO_SAMPLE]:
        if mask.is_dir():
            return "instances"
        raw = read_mask_raw(mask)
        if raw.ndim == 3:
            return "color"
        palette = read_palette(mask)
        if palette is not None:
            indices = np.unique(raw)
            used = {tuple(c) for c in palette[indices[indices < len(palette)]].tolist()}
            return "color" if colors and used & set(colors) else "index"
        unique = np.unique(raw)
        distinct = len(unique)
        if raw.dtype.itemsize > 1 and np.issubdtype(raw.dtype, np.integer) and (
            distinct > 255 or (classes and distinct > len(classes)) or (not classes and distinct > _MANY_IDS)
        ):  # fmt: skip
            return "instances"
        values.update(unique.tolist())
    values.discard(ignore_value)
    binary = values <= {0, 255} or values <= {0, 1}
    return "binary" if binary and not (classes and len(classes) > 2) else "index"


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


def _largest_value(files: list[Path], ignore_value: int | None) -> int:
    """The largest raw value over the index masks among ``files`` (``ignore_value`` excluded)."""
    raws = (read_mask_raw(file) for file in files)
    return max((int(r[r != ignore_value].max(initial=0)) for r in raws if r.ndim == 2), default=0)


def class_table(
    mode: str, masks: list[Path], options: Options, where: Path, root: Path
) -> Generator[Problem, None, tuple[list[str], list[tuple[int, int, int]]] | None]:
    """The class names and colours for masks decoded in ``mode``.

    ``binary`` and ``instances`` have classes ``["background", "foreground"]`` coloured black and
    white; ``color`` needs the colours of ``options``; ``index`` without classes infers ``max value + 1``
    classes from all masks (``class_0``, ``class_1``, ... with a warning) and takes colours from the
    first mask's palette or a fixed distinct list.

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
        names = [f"class_{i}" for i in range(_largest_value(files, options.ignore_value) + 1)]
        yield warning(where, root, f"classes inferred as class_0..class_{len(names) - 1} from the largest mask value; name them in "
                                   "dataset.yaml ('classes: [...]') and set 'ignore_value' if a value means void or unlabelled")  # fmt: skip
    palette = read_palette(files[0]) if files and not colors else None
    if not colors and palette is not None and len(palette) >= len(names):
        colors = [tuple(int(v) for v in c) for c in palette[: len(names)]]
    return names, colors or [_PALETTE[i % len(_PALETTE)] for i in range(len(names))]
