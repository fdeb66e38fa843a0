"""Pair images and masks whose names differ by more than the extension: by number, or by name templates.

Without templates, names that equal up to role words are paired first (:func:`unetkit.data.folders.match_loosely`);
then names left unpaired pair by their number (:func:`match_numbers`) when every image name is one text
around one number, and so is every mask name: ``images/07.tif`` with ``masks/labels00000007.png``.

A dataset.yaml may instead say how names are built, with one placeholder per template::

    image_names: "{number}"          # default: the placeholder alone
    mask_names: "labels{number}"     # masks/labels00000007.png for images/07.tif

``{number}`` is a number, equal in both names whatever its zero padding; ``{stem}`` any text, equal in both
names (``mask_names: "{stem}_mask"``). Templates match the file name without extension; subfolders must
be the same. Two files of one side that claim the same image (or mask) are an error naming both.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Generator
from dataclasses import dataclass
from pathlib import Path

from unetkit.data.checks import Problem, error
from unetkit.data.folders import match_loosely, natural_key, relative

PLACEHOLDERS = ("{stem}", "{number}")
TEMPLATE_KEYS = ("image_names", "mask_names")
_PLACEHOLDER = re.compile(r"(\{stem\}|\{number\})")
_DIGITS = re.compile(r"\d+")


@dataclass(frozen=True)
class Template:
    """A name template of dataset.yaml: ``text`` as written, ``key`` the yaml key, ``pattern`` its regex."""

    key: str
    text: str
    pattern: re.Pattern

    @property
    def placeholder(self) -> str:
        return "{number}" if "{number}" in self.text else "{stem}"

    def value(self, key: str) -> tuple[str, object] | None:
        """``(subfolder, placeholder value)`` of a file key, numbers as int; None when its name does not fit."""
        folder, _, name = key.rpartition("/")
        match = self.pattern.fullmatch(name)
        if match is None:
            return None
        return folder, int(match.group(1)) if self.placeholder == "{number}" else match.group(1)

    def name(self, value: object) -> str:
        """The file name (without extension) this template gives for a placeholder value."""
        return self.text.replace(self.placeholder, str(value))


def template(text: str, key: str) -> Template | None:
    """The :class:`Template` of ``text``; None unless it holds exactly one placeholder and no other braces."""
    parts = _PLACEHOLDER.split(text)
    if len(parts) != 3 or any("{" in part or "}" in part for part in parts[::2]):
        return None
    group = r"(\d+)" if parts[1] == "{number}" else r"(.+)"
    return Template(key, text, re.compile(re.escape(parts[0]) + group + re.escape(parts[2])))


def read_templates(config: dict, where: Path, root: Path) -> Generator[Problem, None, tuple[Template, Template] | None]:
    """The ``image_names`` and ``mask_names`` templates of the yaml; None when it gives none (or a bad one).

    One given, the other defaults to its placeholder alone (``"{number}"``: the whole name is the number).
    """
    given = {key: config[key] for key in TEMPLATE_KEYS if config.get(key) is not None}
    if not given:
        return None
    found: dict[str, Template] = {}
    for key, text in given.items():
        parsed = template(text, key) if isinstance(text, str) else None
        if parsed is None:
            yield error(where, root, f"{key} {text!r} must hold one placeholder, {{number}} or {{stem}}, and no other braces; "
                                     f"e.g. {key}: \"labels{{number}}\"")  # fmt: skip
            return None
        found[key] = parsed
    kinds = {t.placeholder for t in found.values()}
    if len(kinds) > 1:
        yield error(where, root, "image_names and mask_names use different placeholders; use {number} in both or {stem} in both")
        return None
    bare = kinds.pop()
    image, mask = (found.get(key) or template(bare, key) for key in TEMPLATE_KEYS)
    return image, mask


def _claims(files: dict[str, Path], rule: Template, root: Path, other: str) -> Generator[Problem, None, dict]:
    """(subfolder, value) -> key for the files of one side; names off the template and doubles are errors."""
    claims: dict[tuple, str] = {}
    for key in sorted(files, key=natural_key):
        value = rule.value(key)
        if value is None:
            fix = f"rename it, move it away, or fix {rule.key} in dataset.yaml"
            yield error(files[key], root, f"name does not fit {rule.key} '{rule.text}'; {fix}",
                        f"{relative(files[key], root)} does not fit {rule.key} '{rule.text}'; {fix}")  # fmt: skip
            continue
        if value in claims:
            first, second = relative(files[claims[value]], root), relative(files[key], root)
            what = f"{rule.placeholder[1:-1]} {value[1]}"
            yield error(files[key], root, f"matches the same {other} as {first} ({what}); keep one of them",
                        f"{first} and {second} both match the same {other} ({what}); keep one of them")  # fmt: skip
            continue
        claims[value] = key
    return claims


def pair_by_templates(images: dict[str, Path], masks: dict[str, Path], rules: tuple[Template, Template], root: Path) -> Generator[Problem, None, dict[str, Path]]:
    """Masks re-keyed to the key of the image whose template value they share.

    Returns:
        The masks under their image's key; masks that match no image keep their own key (under
        a ``"?"`` prefix when that is an image's key), so that they are reported as masks without image.
    """
    image_rule, mask_rule = rules
    by_image = yield from _claims(images, image_rule, root, "mask")
    by_mask = yield from _claims(masks, mask_rule, root, "image")
    paired: dict[str, Path] = {}
    for value, mask_key in by_mask.items():
        key = by_image.get(value)
        if key is None:
            key = mask_key if mask_key not in images else f"?{mask_key}"
        paired[key] = masks[mask_key]
    return paired


def expected_name(key: str, rules: tuple[Template, Template] | None, mask: bool = True) -> str:
    """The name (key-like, without extension) of the mask that image ``key`` expects, or with ``mask=False``
    of the image that mask ``key`` expects."""
    if rules is None:
        return key
    own, other = rules if mask else rules[::-1]
    value = own.value(key)
    if value is None:
        return key
    folder, found = value
    return f"{folder}/{other.name(found)}" if folder else other.name(found)


def _number_form(name: str) -> tuple[str, int] | None:
    """``(text around the number, the number)`` of a name with exactly one number in it, else None."""
    numbers = _DIGITS.findall(name)
    if len(numbers) != 1:
        return None
    return _DIGITS.sub("#", name), int(numbers[0])


def _numbered(files: dict[str, Path]) -> dict[str, tuple[str, int]] | None:
    """key -> (subfolder, number) when every file name (without extension) is one text around one number,
    the same text for all, else None."""
    forms: dict[str, tuple[str, int]] = {}
    texts = set()
    for key, file in files.items():
        form = _number_form(file.stem if file.is_file() else file.name)
        if form is None:
            return None
        texts.add(form[0])
        forms[key] = (key.rpartition("/")[0], form[1])
    return forms if len(texts) == 1 else None


def match_numbers(images: dict[str, Path], masks: dict[str, Path], root: Path) -> Generator[Problem, None, dict[str, Path]]:
    """Re-key unpaired masks to the unpaired image with the same number in the same subfolder.

    Applies only when every image name is one text around one number, and every mask name too
    (``07`` and ``labels00000007``): then the numbers, not the padding, pair them. Two unpaired files of
    one side with the same number as a file of the other are an error naming both.

    Returns:
        ``masks`` with the matched masks under their image's key.
    """
    lone_images = [key for key in images if key not in masks]
    lone_masks = [key for key in masks if key not in images]
    image_numbers, mask_numbers = _numbered(images), _numbered(masks)
    if not lone_images or not lone_masks or image_numbers is None or mask_numbers is None:
        return masks
    by_number: dict[tuple, tuple[list[str], list[str]]] = defaultdict(lambda: ([], []))
    for key in lone_images:
        by_number[image_numbers[key]][0].append(key)
    for key in lone_masks:
        by_number[mask_numbers[key]][1].append(key)
    renamed = dict(masks)
    for (_, number), (image_keys, mask_keys) in sorted(by_number.items(), key=lambda item: natural_key(str(item[0]))):
        if not image_keys or not mask_keys:
            continue
        if len(image_keys) == 1 and len(mask_keys) == 1:
            renamed[image_keys[0]] = renamed.pop(mask_keys[0])
            continue
        doubles, files, other = (mask_keys, masks, images[image_keys[0]]) if len(mask_keys) > 1 else (image_keys, images, masks[mask_keys[0]])
        first, second = (relative(files[key], root) for key in doubles[:2])
        fix = "keep one of them, or name the pairs in dataset.yaml (image_names, mask_names)"
        yield error(files[doubles[1]], root, f"matches {relative(other, root)} by its number {number}, as does {first}; {fix}",
                    f"{first} and {second} both match {relative(other, root)} by their number {number}; {fix}")  # fmt: skip
    return renamed


def _unpaired(lone: list[str], found: dict[str, Path], expected: dict[str, str], root: Path, roles: tuple[str, str]) -> Generator[Problem, None, None]:
    """One error per file in ``found`` under a ``lone`` key; ``expected`` names the missing file of each key
    (relative, without extension); ``roles`` = (its kind, the missing kind)."""
    if not lone:
        return
    kind, missing = roles
    summary = f"{len(lone)} {kind}s have no {missing}, e.g. {relative(found[lone[0]], root)}; expected {expected[lone[0]]}.png (any image extension)"
    for key in lone:
        yield error(found[key], root, f"has no {missing}; add {expected[key]}.png (any image extension) or remove the {kind}", summary)


def pair_files(files: tuple[dict, dict, Path, Path], config: dict, where: Path, root: Path, require_masks: bool = True) -> Generator[Problem, None, dict[str, Path] | None]:
    """Pair the images and masks that :func:`unetkit.data.checks.find_files` found, and report the rest.

    Pairs by key; then, with ``image_names``/``mask_names`` in the yaml, by those templates, else by key up
    to role words and by number (see the module docs). Images without a mask (when ``require_masks``)
    and masks without an image are errors.

    Returns:
        The masks, each under the key of its image (masks without one under their own key); None when a
        name template is malformed.
    """
    images, masks, images_dir, masks_dir = files
    rules = yield from read_templates(config, where, root)
    if rules is None and any(config.get(key) is not None for key in TEMPLATE_KEYS):
        return None
    if rules is not None:
        masks = yield from pair_by_templates(images, masks, rules, root)
    else:
        masks = match_loosely(images, masks)
        masks = yield from match_numbers(images, masks, root)
    lone_masks = sorted(set(masks) - set(images), key=natural_key)
    in_images = {key: relative(images_dir / expected_name(key.removeprefix("?"), rules, mask=False), root) for key in lone_masks}
    yield from _unpaired(lone_masks, masks, in_images, root, ("mask", "image"))
    if require_masks:
        lone_images = sorted(set(images) - set(masks), key=natural_key)
        in_masks = {key: relative(masks_dir / expected_name(key, rules), root) for key in lone_images}
        yield from _unpaired(lone_images, images, in_masks, root, ("image", "mask"))
    return masks
