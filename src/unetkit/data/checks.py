"""The checks of a data set that come before its masks are interpreted, each a generator of problems.

A check yields :class:`Problem` records and returns what it found (None when it cannot go on).
:func:`unetkit.data.dataset.validate` chains them; :func:`run_checks` either stops at the first error,
as :func:`unetkit.data.dataset.load_spec` does, or collects every problem, as ``unetkit check`` does.
"""

from __future__ import annotations

import difflib
from collections import Counter
from collections.abc import Generator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np
import yaml
from tqdm.auto import tqdm

from unetkit.data.folders import instance_files, relative, scan_folder
from unetkit.data.io import IMAGE_EXTENSIONS, read_image, read_mask_raw
from unetkit.data.modes import MASK_MODES
from unetkit.errors import UnetkitError
from unetkit.yaml_files import read_yaml

YAML_KEYS = ("images", "masks", "image_names", "mask_names", "classes", "mask_mode", "ignore_value", "ignore_colors", "splits")
_EXTENSIONS = ", ".join(sorted(IMAGE_EXTENSIONS))

T = TypeVar("T")


@dataclass(frozen=True)
class Problem:
    """One finding about a data set.

    Attributes:
        level: ``"error"`` (training would fail or be wrong) or ``"warning"``.
        file: The file or folder concerned, relative to the data set root when inside it.
        message: What is wrong and the fix, to show after ``file``.
        summary: The whole one-line message of the error that :func:`run_checks` raises when it stops
            here; empty = ``"file: message"``.
    """

    level: str
    file: str
    message: str
    summary: str = ""

    @property
    def text(self) -> str:
        """The one-line error message: ``summary``, or ``"file: message"``."""
        return self.summary or f"{self.file}: {self.message}"

    def __str__(self) -> str:
        return f"{self.level}: {self.file}: {self.message}"


def _shown(path: Path | str, root: Path) -> str:
    """How ``path`` is named in a problem: relative to ``root`` when inside it; ``root`` itself in full."""
    return str(path) if isinstance(path, str) or path == root else relative(path, root)


def error(path: Path | str, root: Path, message: str, summary: str = "") -> Problem:
    """An error about ``path``; its one-line message is ``summary``, by default ``"<path>: <message>"``."""
    return Problem("error", _shown(path, root), message, summary or f"{path}: {message}")


def warning(path: Path | str, root: Path, message: str) -> Problem:
    """A warning about ``path``."""
    return Problem("warning", _shown(path, root), message)


def run_checks(checks: Generator[Problem, None, T], problems: list[Problem] | None = None) -> T:
    """Run ``checks`` to its end and return what it returns.

    Args:
        checks: A generator of problems, e.g. :func:`unetkit.data.dataset.validate`.
        problems: Collects every problem, in order; None = stop at the first error instead.

    Returns:
        The value the generator returns.

    Raises:
        UnetkitError: With ``problems`` None, the first error, worded as :attr:`Problem.text`.
    """
    while True:
        try:
            problem = next(checks)
        except StopIteration as done:
            return done.value
        if problems is not None:
            problems.append(problem)
        elif problem.level == "error":
            checks.close()
            raise UnetkitError(problem.text)


@dataclass(frozen=True)
class Options:
    """How a data set's masks are to be decoded, from its yaml and the arguments that override it.

    Attributes:
        mask_mode: A mode of :data:`unetkit.data.modes.MASK_MODES`; ``"auto"`` is resolved from the masks.
        classes: Class names, or None to take the defaults of the mask mode.
        colors: RGB colour per class, or None.
        ignore_value: Raw index value to ignore, or None.
        ignore_colors: Raw colours to ignore.
        values: Raw mask value -> class index, from a ``classes: {name: value or [values]}`` map; None without one.
        source: Who set ``mask_mode``: ``"--mask-mode"``, ``"dataset.yaml"``, or ``""`` for auto.
    """

    mask_mode: str
    classes: list[str] | None
    colors: list[tuple[int, int, int]] | None
    ignore_value: int | None
    ignore_colors: list[tuple[int, int, int]]
    values: dict[int, int] | None = None
    source: str = ""


def read_config(path: Path) -> Generator[Problem, None, tuple[Path, dict, Path] | None]:
    """Read the yaml of a data set folder or ``dataset.yaml``; unknown keys are reported and dropped.

    Returns:
        ``(root, config, where)``: the folder paths are relative to, the yaml's mapping (empty without a
        yaml), and the yaml or, without one, the folder; None when nothing more can be checked.
    """
    if path.is_dir():
        root, path = path, path / "dataset.yaml"
        if not path.is_file():
            return root, {}, root
    elif not path.is_file():
        yield error(str(path), path.parent, "not found; pass a folder with images/ and masks/, or a dataset.yaml",
                    f"{path}: not found; pass a folder with images/ and masks/ or a dataset.yaml")  # fmt: skip
        return None
    root = path.parent
    try:
        config = read_yaml(path) or {}
    except (OSError, yaml.YAMLError) as failure:
        yield error(path, root, f"cannot read ({' '.join(str(failure).split())}); fix the YAML syntax")
        return None
    if not isinstance(config, dict):
        mapping = "expected a mapping of keys such as 'images:' and 'classes:'"
        yield error(path, root, f"{mapping}; rewrite the yaml", f"{path}: {mapping}")
        return None
    for key in list(config):
        if key not in YAML_KEYS:
            close = difflib.get_close_matches(str(key), YAML_KEYS, n=1)
            hint = f"did you mean '{close[0]}'?" if close else f"valid keys: {', '.join(YAML_KEYS)}"
            yield error(path, root, f"unknown key '{key}'; {hint}")
            del config[key]
    return root, config, path


def _colour_problem(value: object, label: str, where: Path, root: Path, hint: str = "") -> Problem | None:
    """An error when ``value`` is not ``[r, g, b]`` with integers 0..255, else None."""
    if isinstance(value, (list, tuple)) and len(value) == 3 and all(isinstance(v, int) and 0 <= v <= 255 for v in value):
        return None
    message = f"{label}: colour {value!r} is not [r, g, b] with integers 0..255; fix it{hint}"
    return error(where, root, message, f"{where} {message}")


def _is_value(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _class_values(table: dict, where: Path, root: Path) -> Generator[Problem, None, dict[int, int] | None]:
    """A ``classes: {name: value or [values]}`` map as raw value -> class index; None if malformed."""
    values: dict[int, int] = {}
    names = [str(name) for name in table]
    for index, (name, listed) in enumerate(table.items()):
        items = listed if isinstance(listed, list) else [listed]
        if not items or not all(_is_value(v) for v in items):
            yield error(where, root, f"classes.{name}: {listed!r} is not a mask value or a list of them (integers >= 0); "
                                     "write e.g. 'road: [32, 64]'")  # fmt: skip
            return None
        for value in items:
            if value in values:
                yield error(where, root, f"classes: value {value} is listed for both '{names[values[value]]}' and '{name}'; "
                                         "give each value one class")  # fmt: skip
                return None
            values[value] = index
    return values


def _read_classes(value: object, mode: str, where: Path, root: Path) -> Generator[Problem, None, tuple | None]:
    """``classes:`` as ``(names, colours, values)``; None if malformed.

    A list gives names; a mapping gives colours (``name: [r, g, b]``) or raw mask values
    (``name: value`` or ``name: [values]``). A mapping is read as values under ``mask_mode: index`` or
    when some entry is a single value (not a list), else as colours.
    """
    if value is None:
        return None, None, None
    if isinstance(value, dict) and value:
        if mode == "color" or (mode != "index" and all(isinstance(v, list) for v in value.values())):
            hint = " (or, to map mask values to classes, set mask_mode: index)" if mode != "color" else ""
            for name, color in value.items():
                problem = _colour_problem(color, f"classes.{name}", where, root, hint)
                if problem is not None:
                    yield problem
                    return None
            return [str(name) for name in value], [tuple(int(v) for v in color) for color in value.values()], None
        values = yield from _class_values(value, where, root)
        if values is None:
            return None
        if mode in ("binary", "instances"):
            yield error(where, root, f"classes maps mask values to classes, which needs mask_mode index, not {mode}; "
                                     "set mask_mode: index or list the class names")  # fmt: skip
            return None
        return [str(name) for name in value], None, values
    if isinstance(value, (list, tuple)) and value:
        return [str(name) for name in value], None, None
    yield error(where, root, "'classes' must be a list of names, a mapping name -> [r, g, b], or a mapping name -> mask value(s)")
    return None


def read_options(
    config: dict, where: Path, root: Path, *, mask_mode: str = "auto", classes: list[str] | None = None,
    ignore_value: int | None = None,
) -> Generator[Problem, None, Options | None]:  # fmt: skip
    """The mask options of ``config``; ``mask_mode`` (unless ``"auto"``), ``classes`` and ``ignore_value``
    (unless None) override the yaml's. A new class list keeps the yaml's colours (or value map) only when as long.

    Returns:
        The :class:`Options`, or None when a mask mode, class table or ignored colour is malformed.
    """
    bad_modes = [mode for mode in (mask_mode, config.get("mask_mode", "auto")) if mode not in MASK_MODES]
    for bad in bad_modes:
        unknown = f"mask_mode '{bad}' is not one of {', '.join(MASK_MODES)}"
        yield error(where, root, f"{unknown}; fix it", f"{where}: {unknown}")
    source = "--mask-mode" if mask_mode != "auto" else "dataset.yaml" if config.get("mask_mode", "auto") != "auto" else ""
    mode = mask_mode if mask_mode != "auto" else config.get("mask_mode", "auto")
    table = yield from _read_classes(config.get("classes"), mode, where, root)
    if table is None:
        return None
    names, colors, values = table
    if classes is not None:
        colors = colors if colors and len(colors) == len(classes) else None
        values = values if values and len(names) == len(classes) else None
        names = list(classes)
    ignore_value = config.get("ignore_value") if ignore_value is None else ignore_value
    if ignore_value is not None and not isinstance(ignore_value, int):
        yield error(where, root, f"ignore_value {ignore_value!r} must be an integer; fix it")
        ignore_value = None
    if values is not None and ignore_value in values:
        yield error(where, root, f"ignore_value {ignore_value} is also a value of class '{names[values[ignore_value]]}'; remove it from one")
        return None
    ignore_colors = []
    for value in config.get("ignore_colors") or []:
        problem = _colour_problem(value, "ignore_colors", where, root)
        if problem is not None:
            yield problem
            return None
        ignore_colors.append(tuple(int(v) for v in value))
    if bad_modes:
        return None
    return Options(mode, names, colors, ignore_value, ignore_colors, values, source)


def _scan(folder: Path, root: Path, instance_keys: set[str] = frozenset()) -> Generator[Problem, None, dict[str, Path]]:
    """Key -> file under ``folder``: two files with one name are errors, files of other types warnings."""
    scan = scan_folder(folder, instance_keys)
    for first, second in scan.duplicates:
        yield error(second, root, f"has the same name as {relative(first, root)}; keep one file per name (rename or remove one)",
                    same_name(first, second, root))  # fmt: skip
    for other in scan.skipped:
        yield warning(other, root, f"not an image type unetkit reads ({_EXTENSIONS}); it is skipped: convert it or move it away")
    return scan.files


def find_files(root: Path, config: dict, require_masks: bool = True) -> Generator[Problem, None, tuple[dict, dict, Path, Path] | None]:
    """Find the image and mask files of a data set (:func:`unetkit.data.pairing.pair_files` pairs them).

    Args:
        root: The folder the yaml's ``images:`` and ``masks:`` are relative to.
        config: The yaml's mapping.
        require_masks: If False, a missing masks folder is no problem.

    Returns:
        ``(images, masks, images folder, masks folder)``: key -> file for each folder; None when a folder
        is missing or holds no image.
    """
    images_dir = root / str(config.get("images", "images"))  # absolute paths replace root
    masks_dir = root / str(config.get("masks", "masks"))
    images: dict[str, Path] = {}
    if not images_dir.is_dir():
        yield error(images_dir, root, "images folder not found; create it or set 'images:' in dataset.yaml",
                    f"{images_dir}: images folder not found; create it or set 'images:' in the yaml")  # fmt: skip
    else:
        images = yield from _scan(images_dir, root)
        if not images:
            yield error(images_dir, root, f"no image files ({_EXTENSIONS}); add images", f"{images_dir}: no image files ({_EXTENSIONS})")
    if not masks_dir.is_dir() and require_masks:
        yield error(masks_dir, root, "masks folder not found; create it or set 'masks:' in dataset.yaml")
    masks = (yield from _scan(masks_dir, root, set(images))) if masks_dir.is_dir() else {}
    if not images or (require_masks and not masks_dir.is_dir()):
        return None
    return images, masks, images_dir, masks_dir


def same_name(first: Path, second: Path, root: Path) -> str:
    """The one-line error for two image files with the same key."""
    return f"{relative(first, root)} and {relative(second, root)} have the same name; keep one file per name (rename or remove the other)"


def _unreadable(file: Path, root: Path, failure: UnetkitError) -> Problem:
    """A read error, without the file name its message starts with."""
    text = str(failure)
    for prefix in (f"{file}: ", f"{relative(file, root)}: "):
        text = text.removeprefix(prefix)
    return error(file, root, text, str(failure))


def _read_mask_files(mask: Path, image_file: Path, image: np.ndarray | None, root: Path) -> Generator[Problem, None, bool]:
    """Read the mask file (or per-instance files) of an image; True when all are readable and of its size."""
    files = instance_files(mask)[0] if mask.is_dir() else [mask]
    if not files:
        yield error(mask, root, "instance-mask folder holds no mask file; add one binary PNG per object, or remove it and its image")
        return False
    usable = True
    for file in files:
        try:
            raw = read_mask_raw(file)
        except UnetkitError as failure:
            yield _unreadable(file, root, failure)
            usable = False
            continue
        if image is not None and raw.shape[:2] != image.shape[:2]:
            yield error(file, root, f"is {raw.shape[0]}x{raw.shape[1]} but its image {relative(image_file, root)} is "
                                    f"{image.shape[0]}x{image.shape[1]} (rows x columns); re-export the mask at the image size")  # fmt: skip
            usable = False
    return usable


def _minority(infos: list[dict], key: str) -> list[tuple[dict, object, object, int]]:
    """(info, its value, the most common value, how many have it) for each info off the most common ``key``."""
    counts = Counter(info[key] for info in infos)
    common, count = counts.most_common(1)[0] if counts else (None, 0)
    return [(info, info[key], common, count) for info in infos if info[key] != common]


def _mixed_images(infos: list[dict], root: Path) -> Generator[Problem, None, None]:
    """All images need the same channels; mixed bit depths are legal but usually a mistake."""
    for info, value, common, count in _minority(infos, "channels"):
        yield error(info["file"], root, f"has {value} channel(s) but {count} other images have {common}; "
                                        "convert all images to the same channels")  # fmt: skip
    for info, value, common, count in _minority(infos, "dtype"):
        yield warning(info["file"], root, f"is {value} but {count} other images are {common}; "
                                          "normalisation uses one mean and std for all: convert to one bit depth")  # fmt: skip


def read_pair_files(
    images: dict[str, Path], masks: dict[str, Path], keys: list[str], root: Path, progress: bool = False
) -> Generator[Problem, None, tuple[list[str], list[dict]]]:
    """Read every image and mask file of ``keys``: unreadable files, size mismatches and mixed channels.

    Returns:
        ``(readable keys, images)``: the keys whose files all read at matching sizes, in order, and per
        readable image ``{"key", "file", "dtype", "bits", "channels", "height", "width"}``.
    """
    readable: list[str] = []
    infos: list[dict] = []
    for key in tqdm(keys, desc="reading", unit="pair", disable=not progress, leave=False):
        try:
            image = read_image(images[key])
        except UnetkitError as failure:
            yield _unreadable(images[key], root, failure)
            image = None
        if image is not None:
            infos.append({"key": key, "file": relative(images[key], root), "dtype": image.dtype.name,
                          "bits": image.dtype.itemsize * 8, "channels": int(image.shape[2]),
                          "height": int(image.shape[0]), "width": int(image.shape[1])})  # fmt: skip
        usable = yield from _read_mask_files(masks[key], images[key], image, root)
        if usable and image is not None:
            readable.append(key)
    yield from _mixed_images(infos, root)
    if not readable:
        yield error(root, root, "no readable image/mask pair; fix the problems above")
    return readable, infos
