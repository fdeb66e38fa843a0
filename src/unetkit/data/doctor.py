"""The dataset doctor behind ``unetkit check``: find every problem of a data set before training.

Unlike :func:`unetkit.data.dataset.load_spec`, which stops at the first problem, the doctor scans the
whole set and collects all of them, one line each naming the file and the fix. It also reports what a
user needs to choose options: bit depth and channels of the images, the mask encoding with the values
found, class pixel frequencies with suggested class weights, and empty masks. It can draw a preview
grid of images with their masks overlaid, and write the paper's border weight maps.
"""

from __future__ import annotations

import difflib
import os
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import yaml
from tqdm.auto import tqdm

from unetkit.data.dataset import (
    _BINARY_COLORS,
    _PALETTE,
    IGNORE,
    MASK_MODES,
    YAML_KEYS,
    DataSpec,
    Pair,
    _color,
    _match_loosely,
    _natural_key,
    _parse_classes,
    _rel,
    _resolve_auto,
    decode_mask,
    read_instances,
    scan_files,
)
from unetkit.data.io import IMAGE_EXTENSIONS, read_image, read_mask_raw, read_palette, write_png, write_tiff
from unetkit.data.weights import SIGMA, W0, balanced_class_weights, border_weight_map
from unetkit.errors import UnetkitError

_BACKGROUND_NAMES = ("background", "bg", "unlabeled", "unlabelled", "void")
_MAX_VALUES = 64  # distinct raw values (or colours) listed in a report
_THUMB = 256  # preview tile size in pixels


@dataclass(frozen=True)
class Problem:
    """One finding: ``level`` is ``error`` (training would fail or be wrong) or ``warning``."""

    level: str
    file: str
    message: str

    def __str__(self) -> str:
        return f"{self.level}: {self.file}: {self.message}"


class _Findings:
    def __init__(self, root: Path) -> None:
        self.root, self.problems = root, []

    def add(self, level: str, file: Path | str, message: str) -> None:
        name = (_rel(file, self.root) if file != self.root else str(file)) if isinstance(file, Path) else file
        self.problems.append(Problem(level, name, message))

    def error(self, file: Path | str, message: str) -> None:
        self.add("error", file, message)

    def warning(self, file: Path | str, message: str) -> None:
        self.add("warning", file, message)

    def unreadable(self, file: Path, error: UnetkitError) -> None:
        """Record a read error, without the path the message already starts with."""
        text = str(error)
        for prefix in (f"{file}: ", f"{_rel(file, self.root)}: "):
            text = text.removeprefix(prefix)
        self.error(file, text)


def _read_config(path: Path, found: _Findings) -> tuple[Path, dict] | None:
    """(root, yaml config) of a data set folder or dataset.yaml; None when nothing more can be checked."""
    if path.is_dir():
        root, path = path, path / "dataset.yaml"
        if not path.is_file():
            return root, {}
    elif not path.is_file():
        found.error(str(path), "not found; pass a folder with images/ and masks/, or a dataset.yaml")
        return None
    found.root = path.parent
    try:
        config = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as error:
        found.error(path, f"cannot read ({' '.join(str(error).split())}); fix the YAML syntax")
        return None
    if not isinstance(config, dict):
        found.error(path, "expected a mapping of keys such as 'images:' and 'classes:'; rewrite the yaml")
        return None
    for key in list(config):
        if key not in YAML_KEYS:
            close = difflib.get_close_matches(str(key), YAML_KEYS, n=1)
            hint = f"did you mean '{close[0]}'?" if close else f"valid keys: {', '.join(YAML_KEYS)}"
            found.error(path, f"unknown key '{key}'; {hint}")
            del config[key]
    return path.parent, config


def _other_files(folder: Path) -> list[Path]:
    """Visible files under ``folder`` that unetkit cannot read as images."""
    return [p for p in sorted(folder.rglob("*")) if p.is_file() and p.suffix.lower() not in IMAGE_EXTENSIONS
            and not any(part.startswith(".") for part in p.relative_to(folder).parts)]  # fmt: skip


def _bits(dtype: np.dtype) -> str:
    return f"{dtype.itemsize * 8}-bit {'float' if dtype.kind == 'f' else 'integer'} ({dtype.name})"


def _raw_values(raw: np.ndarray, palette: np.ndarray | None, mode: str) -> set:
    """Distinct raw values of a mask: integers, or (r, g, b) tuples for colour masks."""
    if mode == "color" or raw.ndim == 3:
        if palette is not None and raw.ndim == 2:
            raw = palette[np.clip(raw, 0, len(palette) - 1)]
        elif raw.ndim == 2:
            return {(v, v, v) for v in np.unique(raw).tolist()}
        codes = np.unique((raw[..., 0].astype(np.int64) << 16) | (raw[..., 1].astype(np.int64) << 8) | raw[..., 2])
        return {(int(c) >> 16, int(c) >> 8 & 255, int(c) & 255) for c in codes}
    return set(np.unique(raw).tolist())


def diagnose(
    data: str | os.PathLike,
    mask_mode: str = "auto",
    preview: str | os.PathLike | None = None,
    preview_count: int = 12,
    weights: str | os.PathLike | None = None,
    weight_w0: float = W0,
    weight_sigma: float = SIGMA,
    progress: bool = True,
) -> dict:
    """Check a data set and report every problem; see :func:`unetkit.check` for the public entry point."""
    path = Path(data).expanduser().resolve()
    found = _Findings(path if path.is_dir() else path.parent)
    report: dict = {"data": str(data), "usable": False, "pairs": 0, "unpaired_images": [], "unpaired_masks": [],
                    "images": [], "mask_mode": None, "classes": [], "values": [], "instances": None,
                    "class_pixels": {}, "class_frequency": {}, "ignored_pixels": 0, "suggested_class_weights": [],
                    "empty_masks": [], "preview": None, "weights": None}  # fmt: skip
    config = _read_config(path, found)
    if config is not None:
        _check(config[0], config[1], mask_mode, report, found, preview, preview_count, weights, weight_w0, weight_sigma, progress)
    report["problems"] = [asdict(p) for p in found.problems]
    report["errors"] = sum(p.level == "error" for p in found.problems)
    report["warnings"] = sum(p.level == "warning" for p in found.problems)
    report["usable"] = report["errors"] == 0 and report["pairs"] > 0
    return report


def _check(root: Path, config: dict, mask_mode: str, report: dict, found: _Findings, preview, preview_count: int,
           weights_out, w0: float, sigma: float, progress: bool) -> None:  # fmt: skip
    found.root = root
    where = root / "dataset.yaml" if config else root
    # --- the yaml's values
    modes = [m for m in (mask_mode, config.get("mask_mode", "auto")) if m not in MASK_MODES]
    for bad in modes:
        found.error(where, f"mask_mode '{bad}' is not one of {', '.join(MASK_MODES)}; fix it")
    try:
        names, colors = _parse_classes(config.get("classes"), str(where))
        ignore_colors = [_color(c, "ignore_colors") for c in config.get("ignore_colors") or []]
    except UnetkitError as error:
        found.error(where, str(error).removeprefix(f"{where}: "))
        return
    ignore_value = config.get("ignore_value")
    if ignore_value is not None and not isinstance(ignore_value, int):
        found.error(where, f"ignore_value {ignore_value!r} must be an integer; fix it")
        ignore_value = None
    if modes:
        return
    mode = mask_mode if mask_mode != "auto" else config.get("mask_mode", "auto")

    # --- files and pairing
    images_dir, masks_dir = root / str(config.get("images", "images")), root / str(config.get("masks", "masks"))
    for folder, key in ((images_dir, "images"), (masks_dir, "masks")):
        if not folder.is_dir():
            found.error(folder, f"{key} folder not found; create it or set '{key}:' in dataset.yaml")
    if not (images_dir.is_dir() and masks_dir.is_dir()):
        return
    images, duplicates = scan_files(images_dir)
    masks, mask_duplicates = scan_files(masks_dir, set(images))
    for first, second in duplicates + mask_duplicates:
        found.error(second, f"has the same name as {_rel(first, root)}; keep one file per name (rename or remove one)")
    for other in _other_files(images_dir) + _other_files(masks_dir):
        found.warning(other, f"not an image type unetkit reads ({', '.join(sorted(IMAGE_EXTENSIONS))}); it is skipped: convert it or move it away")
    if not images:
        found.error(images_dir, f"no image files ({', '.join(sorted(IMAGE_EXTENSIONS))}); add images")
        return
    masks = _match_loosely(images, masks)
    for key in sorted(set(images) - set(masks), key=_natural_key):
        report["unpaired_images"].append(_rel(images[key], root))
        found.error(images[key], f"has no mask; add {_rel(masks_dir / key, root)}.png (any image extension) or remove the image")
    for key in sorted(set(masks) - set(images), key=_natural_key):
        report["unpaired_masks"].append(_rel(masks[key], root))
        found.error(masks[key], f"has no image; add {_rel(images_dir / key, root)}.png (any image extension) or remove the mask")

    # --- read every pair: images, raw masks, sizes
    pairs: list[Pair] = []
    for key in tqdm(sorted(set(images) & set(masks), key=_natural_key), desc="reading", unit="pair", disable=not progress, leave=False):
        pair = Pair(key, images[key], masks[key])
        try:
            image = read_image(pair.image)
        except UnetkitError as error:
            found.unreadable(pair.image, error)
            image = None
        if image is not None:
            report["images"].append({"key": key, "file": _rel(pair.image, root), "dtype": image.dtype.name,
                                     "bits": image.dtype.itemsize * 8, "channels": int(image.shape[2]),
                                     "height": int(image.shape[0]), "width": int(image.shape[1])})  # fmt: skip
        if _check_mask_files(pair, image, found, root) and image is not None:
            pairs.append(pair)
    _check_images(report["images"], found, root)
    report["pairs"] = len(pairs)
    if not pairs:
        found.error(root, "no readable image/mask pair; fix the problems above")
        return

    # --- the mask encoding
    if mode == "auto":
        try:
            mode = _resolve_auto(pairs, names, colors, root, ignore_value)
        except UnetkitError:  # colour masks without a colour table
            report["mask_mode"] = "color"
            report["values"] = _listed(_collect_values(pairs, "color"))
            first = next(p.mask for p in pairs if p.mask.is_file() and read_mask_raw(p.mask).ndim == 3)
            colours = ", ".join(str(list(v)) for v in report["values"])
            found.error(first, f"colour masks using the colours {colours}; name them in dataset.yaml as 'classes: "
                               "{name: [r, g, b], ...}' with 'mask_mode: color', and list colours that are no class in 'ignore_colors'")  # fmt: skip
            return
    spec = _make_spec(root, pairs, names, colors, mode, ignore_value, ignore_colors, where, found)
    report["mask_mode"] = mode
    if spec is None:
        report["values"] = _listed(_collect_values(pairs, mode))
        return
    if mode == "index" and names is None:
        found.warning(where, f"classes inferred as class_0..class_{spec.num_classes - 1} from the largest mask value; name them in "
                             "dataset.yaml ('classes: [...]') and set 'ignore_value' if a value means void or unlabelled")  # fmt: skip
    report["classes"], report["colors"] = spec.classes, [list(c) for c in spec.colors]

    # --- decode every mask: values, class frequencies, empty masks
    counts = np.zeros(spec.num_classes, np.int64)
    values: set = set()
    instances: list[int] = []
    decoded: list[tuple[Pair, np.ndarray]] = []
    background = 0 if mode in ("binary", "instances") or spec.classes[0].lower() in _BACKGROUND_NAMES else None
    for pair in tqdm(pairs, desc="decoding", unit="mask", disable=not progress, leave=False):
        try:
            if mode == "instances":  # the decoded mask is the union of the objects
                labels = read_instances(pair, spec)
                mask = (labels > 0).astype(np.int64)
                instances.append(int(labels.max()))
            else:
                mask = decode_mask(pair, spec)
                values |= _raw_values(read_mask_raw(pair.mask), read_palette(pair.mask), mode)
        except UnetkitError as error:
            found.error(pair.mask, str(error).removeprefix(_rel(pair.mask, root)).lstrip(": "))
            continue
        labelled = mask[mask != IGNORE]
        counts += np.bincount(labelled.ravel(), minlength=spec.num_classes)[: spec.num_classes]
        report["ignored_pixels"] += int(mask.size - labelled.size)
        if labelled.size == 0 or (background is not None and not (labelled != background).any()):
            report["empty_masks"].append(_rel(pair.mask, root))
            what = "every pixel is ignored" if labelled.size == 0 else f"only '{spec.classes[background]}'"
            found.warning(pair.mask, f"empty mask ({what}); fine for negative examples, else re-export the mask")
        decoded.append((pair, mask))
    if mode == "instances":
        report["instances"] = {"total": sum(instances), "min": min(instances, default=0), "max": max(instances, default=0)}
    else:
        report["values"] = _listed(values)
    total = int(counts.sum())
    report["class_pixels"] = {name: int(n) for name, n in zip(spec.classes, counts)}
    report["class_frequency"] = {name: (float(n) / total if total else 0.0) for name, n in zip(spec.classes, counts)}
    suggested = balanced_class_weights(counts)
    report["suggested_class_weights"] = [round(float(w), 4) for w in suggested]
    for name, n in zip(spec.classes, counts):
        if n == 0 and decoded:
            found.warning(where, f"class '{name}' has no pixels in any mask; remove it from 'classes' or label some")

    if preview is not None and decoded:
        report["preview"] = str(write_preview(preview, decoded[:preview_count], spec))
    if weights_out is not None and decoded:
        report["weights"] = str(write_weight_maps(weights_out, decoded, spec, suggested, w0, sigma, progress))


def _check_mask_files(pair: Pair, image: np.ndarray | None, found: _Findings, root: Path) -> bool:
    """Read the mask file(s) of ``pair``; record unreadable files and size mismatches. True when usable."""
    files = sorted((f for f in pair.mask.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS),
                   key=lambda f: _natural_key(f.name)) if pair.mask.is_dir() else [pair.mask]  # fmt: skip
    if not files:
        found.error(pair.mask, "instance-mask folder holds no mask file; add one binary PNG per object, or remove it and its image")
        return False
    ok = True
    for file in files:
        try:
            raw = read_mask_raw(file)
        except UnetkitError as error:
            found.unreadable(file, error)
            ok = False
            continue
        if image is not None and raw.shape[:2] != image.shape[:2]:
            found.error(file, f"is {raw.shape[0]}x{raw.shape[1]} but its image {_rel(pair.image, root)} is "
                              f"{image.shape[0]}x{image.shape[1]} (rows x columns); re-export the mask at the image size")  # fmt: skip
            ok = False
    return ok


def _minority(infos: list[dict], key: str):
    """(info, its value, the most common value, how many have it) for each info off the most common ``key``."""
    counts = Counter(info[key] for info in infos)
    common, count = counts.most_common(1)[0] if counts else (None, 0)
    return [(info, info[key], common, count) for info in infos if info[key] != common]


def _check_images(infos: list[dict], found: _Findings, root: Path) -> None:
    """All images need the same channels; mixed bit depths are legal but usually a mistake."""
    for info, value, common, count in _minority(infos, "channels"):
        found.error(info["file"], f"has {value} channel(s) but {count} other images have {common}; "
                                  "convert all images to the same channels")  # fmt: skip
    for info, value, common, count in _minority(infos, "dtype"):
        found.warning(info["file"], f"is {value} but {count} other images are {common}; "
                                    "normalisation uses one mean and std for all: convert to one bit depth")  # fmt: skip


def _make_spec(root, pairs, names, colors, mode, ignore_value, ignore_colors, where, found) -> DataSpec | None:
    """The DataSpec that load_spec would build for ``pairs``, or None (after recording why) if none can be."""
    if mode in ("binary", "instances"):
        if names is not None and len(names) != 2:
            found.error(where, f"mask_mode {mode} has 2 classes but 'classes' lists {len(names)}; give 2 names or set mask_mode: index")
            return None
        names, colors = names or ["background", "foreground"], colors or list(_BINARY_COLORS)
    elif mode == "color" and not colors:
        found.error(where, "mask_mode color needs a colour per class; write 'classes: {name: [r, g, b], ...}' in dataset.yaml")
        return None
    elif mode == "index":
        files = [p.mask for p in pairs if p.mask.is_file()]
        if names is None:
            largest = 0
            for file in files:
                raw = read_mask_raw(file)
                if raw.ndim == 2:
                    largest = max(largest, int(raw[raw != ignore_value].max(initial=0)))
            names = [f"class_{i}" for i in range(largest + 1)]
        palette = read_palette(files[0]) if files and not colors else None
        if not colors and palette is not None and len(palette) >= len(names):
            colors = [tuple(int(v) for v in c) for c in palette[: len(names)]]
        colors = colors or [_PALETTE[i % len(_PALETTE)] for i in range(len(names))]
    return DataSpec(root, pairs, list(names), colors, mode, ignore_value, ignore_colors)


def _collect_values(pairs: list[Pair], mode: str) -> set:
    values: set = set()
    for pair in pairs:
        if pair.mask.is_file():
            values |= _raw_values(read_mask_raw(pair.mask), read_palette(pair.mask), mode)
    return values


def _listed(values: set) -> list:
    return [list(v) if isinstance(v, tuple) else v for v in sorted(values)[:_MAX_VALUES]]


def write_preview(path: str | os.PathLike, decoded: list[tuple[Pair, np.ndarray]], spec: DataSpec, columns: int = 4) -> Path:
    """A PNG grid of images with their masks overlaid in class colours, with a legend below.

    Args:
        path: The PNG to write.
        decoded: (pair, decoded mask) of the pairs to draw, in order.
        spec: The data set (class names and colours).
        columns: Tiles per row.

    Returns:
        ``path``.
    """
    from PIL import Image, ImageDraw

    from unetkit.report import overlay

    columns = max(1, min(columns, len(decoded)))
    rows = -(-len(decoded) // columns)
    label = 14  # caption height
    legend_rows = -(-spec.num_classes // 4)
    canvas = Image.new("RGB", (columns * _THUMB, rows * (_THUMB + label) + 8 + legend_rows * 18 + 18), "white")
    draw = ImageDraw.Draw(canvas)
    for n, (pair, mask) in enumerate(decoded):
        tile = Image.fromarray(overlay(read_image(pair.image), mask, spec.colors, spec.classes))
        tile.thumbnail((_THUMB - 4, _THUMB - 4))
        x, y = (n % columns) * _THUMB, (n // columns) * (_THUMB + label)
        draw.text((x + 2, y + 1), pair.key[-40:], fill="black")
        canvas.paste(tile, (x + (_THUMB - tile.width) // 2, y + label + (_THUMB - tile.height) // 2))
    y0 = rows * (_THUMB + label) + 8
    for n, (name, color) in enumerate(zip(spec.classes, spec.colors)):
        x, y = (n % 4) * (_THUMB * columns // 4), y0 + (n // 4) * 18
        draw.rectangle((x + 4, y + 2, x + 16, y + 14), fill=tuple(color), outline="black")
        uncoloured = " (not tinted)" if name.lower() in ("background", "bg") else ""
        draw.text((x + 22, y + 2), f"{n} {name}{uncoloured}", fill="black")
    draw.text((4, y0 + legend_rows * 18 + 2), "ignored pixels are not tinted", fill="black")
    write_png(path, np.asarray(canvas))
    return Path(path)


def write_weight_maps(out: str | os.PathLike, decoded, spec: DataSpec, class_weights, w0: float, sigma: float, progress: bool) -> Path:
    """Write ``OUT/<key>.tif`` (float32 weight map) and ``OUT/<key>.png`` (its picture) for every pair."""
    from matplotlib import colormaps

    out = Path(out)
    cmap = colormaps["magma"]
    for pair, mask in tqdm(decoded, desc="weights", unit="map", disable=not progress, leave=False):
        weight = border_weight_map(read_instances(pair, spec), mask, class_weights, w0, sigma)
        write_tiff(out / f"{pair.key}.tif", weight)
        picture = (cmap(weight / max(float(weight.max()), 1e-6))[..., :3] * 255 + 0.5).astype(np.uint8)  # (H, W, 3)
        write_png(out / f"{pair.key}.png", picture)
    return out


def format_report(report: dict) -> str:
    """The report as text for people: a summary, then one line per problem."""
    lines = [f"data: {report['data']}"]
    lines.append(f"pairs: {report['pairs']} usable ({len(report['unpaired_images'])} images without mask, "
                 f"{len(report['unpaired_masks'])} masks without image)")  # fmt: skip
    kinds = Counter((i["dtype"], i["bits"], i["channels"]) for i in report["images"])
    for (dtype, bits, channels), n in sorted(kinds.items()):
        lines.append(f"images: {n} x {bits}-bit {dtype}, {channels} channel(s)")
    sizes = Counter((i["height"], i["width"]) for i in report["images"])
    if sizes:
        (h, w), _ = sizes.most_common(1)[0]
        lines.append(f"sizes: {len(sizes)} distinct, most often {h}x{w} (rows x columns)")
    if report["mask_mode"]:
        if report["instances"]:
            found = f"{report['instances']['total']} objects, {report['instances']['min']}..{report['instances']['max']} per image"
        else:
            found = "values " + ", ".join(str(tuple(v)) if isinstance(v, list) else str(v) for v in report["values"])
        lines.append(f"masks: {report['mask_mode']}; {found}")
    if report["classes"]:
        freq = ", ".join(f"{k} {v:.1%}" for k, v in report["class_frequency"].items())
        lines.append(f"classes: {freq}; ignored pixels: {report['ignored_pixels']}")
        lines.append(f"suggested class_weights: {report['suggested_class_weights']}")
    lines.append(f"empty masks: {len(report['empty_masks'])}")
    if report["preview"]:
        lines.append(f"preview: {report['preview']}")
    if report["weights"]:
        lines.append(f"weight maps: {report['weights']}")
    lines += [f"{p['level']}: {p['file']}: {p['message']}" for p in report["problems"]]
    verdict = "usable" if report["usable"] else "NOT usable"
    lines.append(f"{verdict}: {report['errors']} error(s), {report['warnings']} warning(s)")
    return "\n".join(lines)
