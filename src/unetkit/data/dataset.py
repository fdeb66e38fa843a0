"""Find image/mask pairs in a data set folder and decode masks to class indices.

A data set is a folder with ``images/`` and ``masks/``, optionally described by a ``dataset.yaml``::

    images: images            # folder, relative to the yaml or absolute (default images)
    masks: masks              # default masks
    classes: [background, cell]   # names, or a mapping name -> [r, g, b] for colour masks
    mask_mode: auto           # auto | index | binary | color | instances
    ignore_value: 11          # raw index value to ignore
    ignore_colors: [[0, 0, 0]]    # raw colours to ignore
    splits:                   # named subsets: lists of fnmatch patterns on pair keys
      train: ["[0-9]", "1[0-9]"]
      val: ["2[0-4]"]

Decoded masks are ``(H, W)`` int64 class indices ``0..K-1`` with :data:`IGNORE` for ignored pixels.
"""

from __future__ import annotations

import difflib
import fnmatch
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml
from scipy import ndimage

from unetkit.data.io import IMAGE_EXTENSIONS, read_image, read_mask_raw, read_palette
from unetkit.data.modes import MASK_MODES
from unetkit.errors import UnetkitError

IGNORE = -1  # value of ignored pixels in decoded masks

YAML_KEYS = ("images", "masks", "classes", "mask_mode", "ignore_value", "ignore_colors", "splits")
_AUTO_SAMPLE = 3  # masks inspected to resolve mask_mode "auto"
_MANY_IDS = 32  # distinct values above which a 16/32-bit label image counts as instances
_BINARY_COLORS = [(0, 0, 0), (255, 255, 255)]
_PALETTE = [  # tab20-like distinct colours for overlays of index masks without a colour table
    (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
    (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207),
    (174, 199, 232), (255, 187, 120), (152, 223, 138), (255, 152, 150), (197, 176, 213),
    (196, 156, 148), (247, 182, 210), (199, 199, 199), (219, 219, 141), (158, 218, 229),
]  # fmt: skip


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
        splits: Names of the splits the yaml defines (``("train", "val")``), empty if none.
    """

    root: Path
    pairs: list[Pair]
    classes: list[str]
    colors: list[tuple[int, int, int]] | None
    mask_mode: str
    ignore_value: int | None
    ignore_colors: list[tuple[int, int, int]]
    splits: tuple[str, ...] = ()

    @property
    def num_classes(self) -> int:
        """Number of classes, ``len(classes)``."""
        return len(self.classes)


def _natural_key(key: str) -> list:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", key)]


def _rel(path: Path, root: Path) -> str:
    """``path`` relative to ``root`` when inside it, for short messages."""
    return path.relative_to(root).as_posix() if path.is_relative_to(root) else str(path)


def _scan(folder: Path, root: Path, instance_keys: set[str] = frozenset()) -> dict[str, Path]:
    """Map key -> image file under ``folder``; a folder whose key is in ``instance_keys`` maps to itself."""
    found, duplicates = scan_files(folder, instance_keys)
    if duplicates:
        first, second = duplicates[0]
        raise UnetkitError(
            f"{_rel(first, root)} and {_rel(second, root)} have the same name; "
            "keep one file per name (rename or remove the other)"
        )
    return found


def scan_files(folder: Path, instance_keys: set[str] = frozenset()) -> tuple[dict[str, Path], list[tuple[Path, Path]]]:
    """Like ``_scan`` but never raises: (key -> file, [(kept file, other file with the same key), ...])."""
    found: dict[str, Path] = {}
    duplicates: list[tuple[Path, Path]] = []
    for path in sorted(folder.rglob("*")):
        relative = path.relative_to(folder)
        if any(part.startswith(".") for part in relative.parts):
            continue  # hidden files and folders
        if path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS:
            if any(parent.as_posix() in instance_keys for parent in relative.parents):
                continue  # one instance of an instance folder
            key = relative.with_suffix("").as_posix()
        elif path.is_dir() and relative.as_posix() in instance_keys:
            key = relative.as_posix()
        else:
            continue
        if key in found:
            duplicates.append((found[key], path))
            continue
        found[key] = path
    return found, duplicates


def _find_config(path: Path) -> tuple[Path, dict, str]:
    """Return (root folder, yaml config, where) for a data set folder or a dataset.yaml."""
    if path.is_dir():
        root, path = path, path / "dataset.yaml"
        if not path.is_file():
            return root, {}, str(root)
    elif not path.is_file():
        raise UnetkitError(f"{path}: not found; pass a folder with images/ and masks/ or a dataset.yaml")
    try:
        config = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as error:
        reason = " ".join(str(error).split())
        raise UnetkitError(f"{path}: cannot read ({reason}); fix the YAML syntax") from error
    if not isinstance(config, dict):
        raise UnetkitError(f"{path}: expected a mapping of keys such as 'images:' and 'classes:'")
    for key in config:
        if key not in YAML_KEYS:
            close = difflib.get_close_matches(str(key), YAML_KEYS, n=1)
            hint = f"did you mean '{close[0]}'?" if close else f"valid keys: {', '.join(YAML_KEYS)}"
            raise UnetkitError(f"{path}: unknown key '{key}'; {hint}")
    return path.parent, config, str(path)


def _color(value: object, where: str) -> tuple[int, int, int]:
    if not (isinstance(value, (list, tuple)) and len(value) == 3
            and all(isinstance(v, int) and 0 <= v <= 255 for v in value)):  # fmt: skip
        raise UnetkitError(f"{where}: colour {value!r} is not [r, g, b] with integers 0..255; fix it")
    return (int(value[0]), int(value[1]), int(value[2]))


def _parse_classes(value: object, where: str) -> tuple[list[str] | None, list | None]:
    """``classes:`` as a list of names or a mapping name -> colour; returns (names, colours)."""
    if value is None:
        return None, None
    if isinstance(value, dict):
        return [str(k) for k in value], [_color(c, f"{where} classes.{k}") for k, c in value.items()]
    if isinstance(value, (list, tuple)) and value:
        return [str(name) for name in value], None
    raise UnetkitError(f"{where}: 'classes' must be a list of names or a mapping name -> [r, g, b]")


_ROLE_WORD = re.compile(r"(?<![a-z])(images?|img|masks?|labels?|gt)(?![a-z])")


def _loose_key(key: str) -> str:
    """``key`` without role words in its file name: ``"a/img2d"`` and ``"a/mask2d"`` -> ``"a/2d"``."""
    folder, _, name = key.rpartition("/")
    return f"{folder}/{_ROLE_WORD.sub('', name.lower()).strip('_-. ')}"


def _match_loosely(images: dict[str, Path], masks: dict[str, Path]) -> dict[str, Path]:
    """Re-key masks left unpaired to the unpaired image whose key is equal up to role words."""
    lone_images = [k for k in images if k not in masks]
    lone_masks = [k for k in masks if k not in images]
    by_loose = {_loose_key(k): k for k in lone_images}
    if len(by_loose) < len(lone_images) or len({_loose_key(k) for k in lone_masks}) < len(lone_masks):
        return masks  # ambiguous: two names reduce to the same loose key
    renamed = dict(masks)
    for key in lone_masks:
        if _loose_key(key) in by_loose:
            renamed[by_loose[_loose_key(key)]] = renamed.pop(key)
    return renamed


def _find_pairs(root: Path, config: dict, require_masks: bool) -> list[Pair]:
    images_dir = root / str(config.get("images", "images"))  # absolute paths replace root
    masks_dir = root / str(config.get("masks", "masks"))
    if not images_dir.is_dir():
        raise UnetkitError(f"{images_dir}: images folder not found; create it or set 'images:' in the yaml")
    images = _scan(images_dir, root)
    if not images:
        raise UnetkitError(f"{images_dir}: no image files ({', '.join(sorted(IMAGE_EXTENSIONS))})")
    if not masks_dir.is_dir() and require_masks:
        raise UnetkitError(f"{masks_dir}: masks folder not found; create it or set 'masks:' in dataset.yaml")
    masks = _scan(masks_dir, root, set(images)) if masks_dir.is_dir() else {}
    masks = _match_loosely(images, masks)
    for found, other, other_dir, what in ((masks, images, images_dir, "masks have no image"),
                                          (images, masks, masks_dir, "images have no mask")):  # fmt: skip
        unpaired = sorted(set(found) - set(other), key=_natural_key)
        if unpaired and (what.startswith("masks") or require_masks):
            raise UnetkitError(
                f"{len(unpaired)} {what}, e.g. {_rel(found[unpaired[0]], root)}; "
                f"expected {_rel(other_dir / unpaired[0], root)}.png (any image extension)"
            )
    return [Pair(key, images[key], masks.get(key)) for key in sorted(images, key=_natural_key)]


def _select_split(pairs: list[Pair], splits: object, split: str, where: str) -> list[Pair]:
    if not isinstance(splits, dict) or split not in splits:
        defined = ", ".join(map(str, splits)) if isinstance(splits, dict) and splits else "none"
        raise UnetkitError(f"{where}: split '{split}' is not defined (defined: {defined}); add it to 'splits:'")
    patterns = splits[split]
    patterns = [patterns] if isinstance(patterns, str) else [str(p) for p in patterns or []]
    chosen = [p for p in pairs if any(fnmatch.fnmatchcase(p.key, pat) for pat in patterns)]
    if not chosen:
        raise UnetkitError(
            f"{where}: split '{split}' patterns {patterns} match no pair key (e.g. '{pairs[0].key}'); fix them"
        )
    return chosen


def _resolve_auto(pairs: list[Pair], classes: list[str] | None, colors: list | None, root: Path,
                  ignore_value: int | None) -> str:  # fmt: skip
    """Apply the ``mask_mode: auto`` rules of :func:`load_spec` to the first few masks."""
    labelled = [p for p in pairs if p.mask is not None][:_AUTO_SAMPLE]
    if not labelled:
        return "index" if classes and len(classes) > 2 else "binary"
    values: set[int] = set()
    for pair in labelled:
        if pair.mask.is_dir():
            return "instances"
        raw = read_mask_raw(pair.mask)
        if raw.ndim == 3:
            if colors:
                return "color"
            found = np.unique(raw.reshape(-1, 3), axis=0)[:8].tolist()
            raise UnetkitError(
                f"{_rel(pair.mask, root)} is a colour mask with colours {found}; list them in "
                "dataset.yaml as 'classes: {name: [r, g, b], ...}' (e.g. background: [0, 0, 0])"
            )
        palette = read_palette(pair.mask)
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
    when equal up to the words image(s), img, mask(s), label(s), gt (``img2d.tif`` <-> ``mask2d.tif``).
    Hidden and non-image files are skipped. A mask may be a folder of per-instance binary masks
    (``masks/<key>/*.png``).

    ``mask_mode="auto"`` is resolved from the first 3 masks, first rule that applies:

    1. a folder of per-instance masks -> ``instances``;
    2. an RGB mask -> ``color`` if the yaml gives colours, else an error listing the colours found;
    3. a palette PNG -> ``color`` if the yaml gives colours and some used palette colour is one of
       them, else ``index`` of the palette indices;
    4. a 16/32-bit integer mask with more than 255 distinct values, more distinct values than
       ``classes``, or (no classes given) more than 32 distinct values -> ``instances`` (label image);
    5. values (ignore_value excluded) within {0, 255} or {0, 1}, and not more than 2 classes given
       -> ``binary``;
    6. otherwise ``index``.

    Defaults: ``binary`` and ``instances`` have classes ``["background", "foreground"]`` coloured
    black and white; ``index`` without ``classes`` infers ``max value + 1`` classes from all masks
    (``class_0``, ``class_1``, ...) and takes colours from the mask palette or a fixed distinct list.

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
        UnetkitError: Missing folders or files, unpaired images or masks, duplicate names, a bad
            yaml key or value, or an undefined or empty split.

    Example:
        >>> spec = load_spec("../shared/data/isbi2012")  # doctest: +SKIP
        >>> spec.mask_mode, spec.num_classes, len(spec.pairs)  # doctest: +SKIP
        ('binary', 2, 25)
    """
    root, config, where = _find_config(Path(path).expanduser().resolve())
    for bad in (mask_mode, config.get("mask_mode", "auto")):
        if bad not in MASK_MODES:
            raise UnetkitError(f"{where}: mask_mode '{bad}' is not one of {', '.join(MASK_MODES)}")
    mode = mask_mode if mask_mode != "auto" else config.get("mask_mode", "auto")
    names, colors = _parse_classes(config.get("classes"), where)
    if classes is not None:
        colors = colors if colors and len(colors) == len(classes) else None
        names = list(classes)
    ignore_value = config.get("ignore_value") if ignore_value is None else ignore_value
    if ignore_value is not None and not isinstance(ignore_value, int):
        raise UnetkitError(f"{where}: ignore_value {ignore_value!r} must be an integer; fix it")
    ignore_colors = [_color(c, f"{where} ignore_colors") for c in config.get("ignore_colors") or []]
    pairs = _find_pairs(root, config, require_masks)

    if mode == "auto":
        mode = _resolve_auto(pairs, names, colors, root, ignore_value)
    if mode in ("binary", "instances"):
        if names is not None and len(names) != 2:
            raise UnetkitError(
                f"{where}: mask_mode {mode} has 2 classes but classes lists {len(names)}; "
                "give 2 names or set mask_mode: index"
            )
        names = names or ["background", "foreground"]
        colors = colors or list(_BINARY_COLORS)
    elif mode == "color" and not colors:
        raise UnetkitError(
            f"{where}: mask_mode color needs a colour per class; write "
            "'classes: {name: [r, g, b], ...}' in dataset.yaml"
        )
    elif mode == "index":
        files = [p.mask for p in pairs if p.mask is not None and p.mask.is_file()]
        if names is None:  # one pass over all masks; colour masks are refused later by decode_mask
            raws = (read_mask_raw(file) for file in files)
            largest = max((int(r[r != ignore_value].max(initial=0)) for r in raws if r.ndim == 2), default=0)
            names = [f"class_{i}" for i in range(largest + 1)]
        palette = read_palette(files[0]) if files and not colors else None
        if not colors and palette is not None and len(palette) >= len(names):
            colors = [tuple(int(v) for v in c) for c in palette[: len(names)]]
        colors = colors or [_PALETTE[i % len(_PALETTE)] for i in range(len(names))]

    if split is not None:
        pairs = _select_split(pairs, config.get("splits"), split, where)
    defined = tuple(map(str, config["splits"])) if isinstance(config.get("splits"), dict) else ()
    return DataSpec(root, pairs, list(names), colors, mode, ignore_value, ignore_colors, defined)


def _short(values: set[int], limit: int = 8) -> str:
    ordered = sorted(values)
    return "{" + ", ".join(map(str, ordered[:limit])) + (", ..." if len(ordered) > limit else "") + "}"


def _integer_labels(raw: np.ndarray, name: str) -> np.ndarray:
    """``raw`` as int64, refusing colour masks and non-integer floats."""
    if raw.ndim != 2:
        raise UnetkitError(f"{name} is a colour mask; set mask_mode: color and classes: {{name: [r, g, b]}}")
    if np.issubdtype(raw.dtype, np.floating) and not np.array_equal(raw, np.round(raw)):
        raise UnetkitError(f"{name} has non-integer values; save masks as integer PNG or TIFF")
    return raw.astype(np.int64)


def _decode_color(raw: np.ndarray, palette: np.ndarray | None, spec: DataSpec, name: str) -> np.ndarray:
    if palette is not None and raw.ndim == 2:
        if raw.size and raw.max() >= len(palette):
            raise UnetkitError(f"{name} uses palette index {raw.max()} beyond its palette; re-export it")
        raw = palette[raw]  # (H, W) indices -> (H, W, 3) colours
    elif raw.ndim == 2:
        raw = np.repeat(raw[:, :, None], 3, axis=2)  # gray colours were collapsed to (H, W)
    rgb = raw.astype(np.int64)
    codes = (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]  # (H, W) 24-bit colour codes
    table = {(r << 16) | (g << 8) | b: i for i, (r, g, b) in enumerate(spec.colors)}
    table.update({(r << 16) | (g << 8) | b: IGNORE for r, g, b in spec.ignore_colors})
    keys = np.array(sorted(table), dtype=np.int64)
    values = np.array([table[k] for k in keys], dtype=np.int64)
    position = np.clip(np.searchsorted(keys, codes), 0, len(keys) - 1)
    known = keys[position] == codes
    if not known.all():
        unknown, counts = np.unique(codes[~known], return_counts=True)
        top = np.argsort(-counts, kind="stable")[:5]
        found = zip(unknown[top].tolist(), counts[top].tolist())
        listed = ", ".join(f"({u >> 16}, {u >> 8 & 255}, {u & 255}): {n} px" for u, n in found)
        raise UnetkitError(
            f"{name} has {len(unknown)} colour(s) not in the class table, e.g. {listed}; "
            "add them to 'classes' or 'ignore_colors' in dataset.yaml"
        )
    return values[position]


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
        raise UnetkitError(f"{_rel(pair.image, spec.root)} has no mask; add one to the masks folder")
    name, mode = _rel(pair.mask, spec.root), spec.mask_mode
    if pair.mask.is_dir():
        if mode != "instances":
            raise UnetkitError(f"{name} is a folder of instance masks; set mask_mode: instances")
        return (read_instances(pair, spec) > 0).astype(np.int64)
    raw = read_mask_raw(pair.mask)
    if mode == "color":
        return _decode_color(raw, read_palette(pair.mask), spec, name)
    labels = _integer_labels(raw, name)
    if mode == "instances":
        return (labels > 0).astype(np.int64)
    ignored = labels == spec.ignore_value if spec.ignore_value is not None else np.zeros(labels.shape, bool)
    values = set(np.unique(labels[~ignored]).tolist())
    if mode == "binary":
        if not (values <= {0, 1} or values <= {0, 255}):
            raise UnetkitError(
                f"{name} has values {_short(values)}; expected a binary 0/255 or 0/1 mask; "
                "set mask_mode: index (and classes) in dataset.yaml"
            )
        decoded = (labels > 0).astype(np.int64)
    else:
        bad = {v for v in values if v < 0 or v >= spec.num_classes}
        if bad:
            raise UnetkitError(
                f"{name} has values {_short(bad)} outside class indices 0..{spec.num_classes - 1}; "
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
        files = sorted(_scan(pair.mask, spec.root).values(), key=lambda f: _natural_key(f.name))
        labels = np.zeros(read_mask_raw(files[0]).shape[:2], np.int32)  # (H, W)
        for number, file in enumerate(files, start=1):
            raw = read_mask_raw(file)
            if raw.shape[:2] != labels.shape:
                raise UnetkitError(
                    f"{_rel(file, spec.root)} is {raw.shape[0]}x{raw.shape[1]} but {_rel(files[0], spec.root)} "
                    f"is {labels.shape[0]}x{labels.shape[1]}; instance masks of one image must have one size"
                )
            labels[raw.max(axis=2) > 0 if raw.ndim == 3 else raw > 0] = number
        return labels
    if spec.mask_mode == "instances":
        raw = _integer_labels(read_mask_raw(pair.mask), _rel(pair.mask, spec.root))
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
            f"{_rel(pair.image, spec.root)} is {image.shape[0]}x{image.shape[1]} (rows x columns) "
            f"but its mask {_rel(pair.mask, spec.root)} is {mask.shape[0]}x{mask.shape[1]}; "
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
    by_key = sorted(pairs, key=lambda p: _natural_key(p.key))
    chosen = np.random.default_rng(seed).permutation(len(by_key))[:n_val]
    val_keys = {by_key[i].key for i in chosen}
    return [p for p in pairs if p.key not in val_keys], [p for p in pairs if p.key in val_keys]
