"""Find the image files under a folder by key, and pair image and mask keys.

A key is a file's path relative to its folder without extension, posix style (``"Tile 1/part_001"``).
Hidden files and folders, and files that are not images, are skipped.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from unetkit.data.io import IMAGE_EXTENSIONS

_ROLE_WORD = re.compile(r"(?<![a-z])(images?|img|masks?|labels?|gt)(?![a-z])")


@dataclass
class Scan:
    """The image files under a folder.

    Attributes:
        files: Key -> file, or -> folder for a key of ``instance_keys`` (a folder of per-instance masks).
        duplicates: ``(kept file, other file with the same key)`` for each key found twice.
        skipped: Visible files that are not images (they are ignored).
    """

    files: dict[str, Path] = field(default_factory=dict)
    duplicates: list[tuple[Path, Path]] = field(default_factory=list)
    skipped: list[Path] = field(default_factory=list)


def natural_key(key: str) -> list:
    """Sort key that orders digit runs by value: ``"2"`` before ``"10"``."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", key)]


def relative(path: Path, root: Path) -> str:
    """``path`` relative to ``root`` when inside it, for short messages; else the whole path."""
    return path.relative_to(root).as_posix() if path.is_relative_to(root) else str(path)


def scan_folder(folder: Path, instance_keys: set[str] = frozenset()) -> Scan:
    """Map the keys of the image files under ``folder`` to their files, in sorted path order.

    Args:
        folder: The folder, searched recursively.
        instance_keys: Keys whose folder stands for one mask (per-instance masks): the folder is the
            file of its key, and the files inside it are not keys of their own.

    Returns:
        The :class:`Scan`; the first file in sorted path order keeps a key found twice.
    """
    scan = Scan()
    for path in sorted(folder.rglob("*")):
        relative_path = path.relative_to(folder)
        if any(part.startswith(".") for part in relative_path.parts):
            continue  # hidden files and folders
        if path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS:
            if any(parent.as_posix() in instance_keys for parent in relative_path.parents):
                continue  # one instance of an instance folder
            key = relative_path.with_suffix("").as_posix()
        elif path.is_dir() and relative_path.as_posix() in instance_keys:
            key = relative_path.as_posix()
        else:
            if path.is_file():
                scan.skipped.append(path)
            continue
        if key in scan.files:
            scan.duplicates.append((scan.files[key], path))
            continue
        scan.files[key] = path
    return scan


def _loose_key(key: str) -> str:
    """``key`` without role words in its file name: ``"a/img2d"`` and ``"a/mask2d"`` -> ``"a/2d"``."""
    folder, _, name = key.rpartition("/")
    return f"{folder}/{_ROLE_WORD.sub('', name.lower()).strip('_-. ')}"


def match_loosely(images: dict[str, Path], masks: dict[str, Path]) -> dict[str, Path]:
    """Re-key masks left unpaired to the unpaired image whose key is equal up to role words.

    Role words are image(s), img, mask(s), label(s) and gt: ``img2d`` pairs with ``mask2d``. Nothing is
    re-keyed when two unpaired names reduce to the same loose key.

    Returns:
        ``masks`` with the matched masks under their image's key (a new dict when any moved).
    """
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


def instance_files(folder: Path) -> tuple[list[Path], list[tuple[Path, Path]]]:
    """The files of a folder of per-instance masks in natural order of their names, and its duplicate names."""
    scan = scan_folder(folder)
    return sorted(scan.files.values(), key=lambda file: natural_key(file.name)), scan.duplicates
