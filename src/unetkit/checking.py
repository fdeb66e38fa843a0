"""``unetkit check``: find every problem of a data set before training, and show what is in it.

Unlike :func:`unetkit.data.dataset.load_spec`, which stops at the first problem, the check runs the same
validator (:func:`unetkit.data.dataset.validate`) to its end, reading every file, and collects all
problems, one line each naming the file and the fix. The report also gives what a user needs to choose
options: bit depth and channels of the images, the mask encoding with the values found, class pixel
frequencies with suggested class weights, and empty masks. The check can draw a preview grid of images
with their masks overlaid, and write the paper's border weight maps.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import numpy as np
from matplotlib import colormaps
from PIL import Image, ImageDraw
from tqdm.auto import tqdm

from unetkit.data.cache import DiskCache, dataset_folder
from unetkit.data.checks import Problem, run_checks
from unetkit.data.dataset import DataSpec, Pair, Validation, read_instances, validate
from unetkit.data.encoding import collect_values, listed
from unetkit.data.folders import relative
from unetkit.data.io import read_image, write_png, write_tiff
from unetkit.data.splits import implied_from
from unetkit.data.survey import Description, describe, mask_summary
from unetkit.data.weights import balanced_class_weights, border_weight_map
from unetkit.outputs import refuse_unsafe_outputs
from unetkit.planning.fingerprint import ClassTally, evenly
from unetkit.report import overlay, overlay_colors

_THUMB = 256  # preview tile size in pixels
PREVIEW_MARK = "unetkit check preview"  # PNG text of the previews check writes


def _empty_report(data: str | os.PathLike) -> dict:
    return {"data": str(data), "usable": False, "pairs": 0, "unpaired_images": [], "unpaired_masks": [],
            "images": [], "mask_mode": None, "mask_decision": None, "splits": {}, "splits_note": None,
            "classes": [], "values": [], "instances": None,
            "class_pixels": {}, "class_frequency": {}, "ignored_pixels": 0, "suggested_class_weights": [],
            "empty_masks": [], "structures": None, "preview": None, "weights": None, "decoded_bytes": 0, "cache": None}  # fmt: skip


def _add_description(report: dict, spec: DataSpec, found: Description, class_weights: np.ndarray, reason: str) -> None:
    """Fill in the classes, values, pixel counts and empty masks that decoding every mask found."""
    report["mask_decision"] = mask_summary(spec, found, reason)
    report["classes"], report["colors"] = spec.classes, [list(c) for c in spec.colors]
    if spec.mask_mode == "instances":
        instances = found.instances
        report["instances"] = {"total": sum(instances), "min": min(instances, default=0), "max": max(instances, default=0)}
    else:
        report["values"] = listed(found.values)
    total = int(found.class_pixels.sum())
    counts = dict(zip(spec.classes, (int(n) for n in found.class_pixels)))
    report["class_pixels"] = counts
    report["class_frequency"] = {name: (n / total if total else 0.0) for name, n in counts.items()}
    report["ignored_pixels"] = found.ignored_pixels
    report["suggested_class_weights"] = [round(float(w), 4) for w in class_weights]
    report["empty_masks"] = [relative(mask, spec.root) for mask in found.empty_masks]


def _add_validation(report: dict, found: Validation) -> None:
    """Fill in the pairing, the images read and the mask mode that validation found."""
    report["pairs"] = len(found.pairs)
    report["unpaired_images"] = [relative(image, found.root) for image in found.unpaired_images]
    report["unpaired_masks"] = [relative(mask, found.root) for mask in found.unpaired_masks]
    report["images"] = found.images
    report["mask_mode"] = found.mask_mode
    if found.mask_mode is not None:
        report["mask_decision"] = f"{found.mask_mode} ({found.mask_reason})"
    report["splits"] = {name: len(pairs) for name, pairs in found.splits.items()}
    if found.implied_train:
        report["splits_note"] = f"train is every pair not in {implied_from(found.splits)}"
    if found.mask_mode is not None and found.spec is None:  # the masks do not fit the classes: show what they hold
        report["values"] = listed(collect_values((pair.mask for pair in found.pairs), found.mask_mode))


def diagnose(
    data: str | os.PathLike,
    mask_mode: str,
    preview: str | os.PathLike | None,
    preview_count: int,
    weights: str | os.PathLike | None,
    weight_w0: float,
    weight_sigma: float,
    progress: bool,
    overwrite: bool = False,
    cache: str | None = None,
) -> dict:
    """Check a data set and report every problem; see :func:`unetkit.check` for the public entry point and the defaults."""
    problems: list[Problem] = []
    report = _empty_report(data)
    found = run_checks(validate(data, mask_mode=mask_mode, read_files=True, progress=progress), problems)
    _add_validation(report, found)
    if found.spec is not None:
        description = run_checks(describe(found.spec, found.where, progress), problems)
        class_weights = balanced_class_weights(description.class_pixels)
        _add_description(report, found.spec, description, class_weights, found.mask_reason)
        decoded = description.decoded
        _refuse_unsafe_outputs(decoded, preview, weights, overwrite)
        if not any(p.level == "error" for p in problems):
            report["structures"] = structures(found.spec, decoded)
        if preview is not None and decoded:
            report["preview"] = str(write_preview(preview, decoded[:preview_count], found.spec))
        if weights is not None and decoded:
            report["weights"] = str(write_weight_maps(weights, decoded, found.spec, class_weights, weight_w0, weight_sigma, progress))
    _add_sizes(report, found, cache)
    report["problems"] = [{"level": p.level, "file": p.file, "message": p.message} for p in problems]
    report["errors"] = sum(p.level == "error" for p in problems)
    report["warnings"] = sum(p.level == "warning" for p in problems)
    report["usable"] = report["errors"] == 0 and report["pairs"] > 0
    return report


def _add_sizes(report: dict, found: Validation, cache: str | None) -> None:
    """The bytes training decodes (images and packed masks) and where its cache (:mod:`unetkit.data.cache`) is, and its size."""
    mask_bytes = 1 if len(report["classes"]) < 255 else 2
    report["decoded_bytes"] = sum(i["height"] * i["width"] * (i["channels"] * i["bits"] // 8 + mask_bytes) for i in report["images"])
    folder = dataset_folder(found.root, cache)
    report["cache"] = {"folder": str(folder), "bytes": DiskCache.size_of(folder)}


def structures(spec: DataSpec, decoded: list[tuple[Pair, np.ndarray]]) -> dict:
    """How big each class's structures are, in pixels, over an even sample of the masks already decoded (the
    planner's :class:`~unetkit.planning.fingerprint.ClassTally`)."""
    sample, tally = evenly(decoded), ClassTally(spec.classes)
    for _, mask in sample:
        tally.add(mask)
    return {"pairs_measured": len(sample), "classes": {c.name: {"regions": c.objects, "width": round(c.width, 1), "median_diameter":
            round(c.median_diameter, 1), "reach": round(c.extent, 1)} for c in tally.stats()}}  # fmt: skip


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
    for n, (name, color) in enumerate(zip(spec.classes, overlay_colors(spec.colors))):
        x, y = (n % 4) * (_THUMB * columns // 4), y0 + (n // 4) * 18
        draw.rectangle((x + 4, y + 2, x + 16, y + 14), fill=tuple(color), outline="black")
        uncoloured = " (not tinted)" if name.lower() in ("background", "bg") else ""
        draw.text((x + 22, y + 2), f"{n} {name}{uncoloured}", fill="black")
    draw.text((4, y0 + legend_rows * 18 + 2), "ignored pixels are not tinted", fill="black")
    write_png(path, np.asarray(canvas), text={"Software": PREVIEW_MARK})
    return Path(path)


def is_preview(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a preview that check wrote (marked in its PNG text), which a later check may replace."""
    try:
        with Image.open(path) as image:
            return getattr(image, "text", {}).get("Software") == PREVIEW_MARK
    except (OSError, ValueError):
        return False


def _refuse_unsafe_outputs(decoded: list, preview: str | os.PathLike | None, weights: str | os.PathLike | None, overwrite: bool) -> None:
    """Before check writes anything: neither the preview nor a weight map may replace an image or a mask, nor (without
    ``overwrite``) an earlier file; weight maps may not land beside the data's files; an earlier check's preview is replaced."""
    inputs = [p for pair in decoded.pairs for p in (pair.image, pair.mask) if p is not None]
    if preview is not None:
        refuse_unsafe_outputs([(Path(preview), Path("the preview"))], inputs, "--preview", overwrite or is_preview(preview), named=True)
    if weights is not None:
        planned = [(Path(weights) / f"{pair.key}{suffix}", pair.image) for pair in decoded.pairs for suffix in (".tif", ".png")]
        refuse_unsafe_outputs(planned, inputs, "--weights", overwrite)


def write_weight_maps(out: str | os.PathLike, decoded, spec: DataSpec, class_weights, w0: float, sigma: float, progress: bool) -> Path:
    """Write ``OUT/<key>.tif`` (float32 weight map) and ``OUT/<key>.png`` (its picture) for every pair."""
    out = Path(out)
    cmap = colormaps["magma"]
    for pair, mask in tqdm(decoded, desc="weights", unit="map", disable=not progress, leave=False):
        weight = border_weight_map(read_instances(pair, spec), mask, class_weights, w0, sigma)
        write_tiff(out / f"{pair.key}.tif", weight)
        picture = (cmap(weight / max(float(weight.max()), 1e-6))[..., :3] * 255 + 0.5).astype(np.uint8)  # (H, W, 3)
        write_png(out / f"{pair.key}.png", picture)
    return out


def _size(n: int) -> str:
    for unit in ("bytes", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1000
    return ""


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
        lines.append(f"masks: {report['mask_decision']}; {found}")
    if report["splits"]:
        counts = ", ".join(f"{name} {count}" for name, count in report["splits"].items())
        lines.append(f"splits: {counts}" + (f" ({report['splits_note']})" if report["splits_note"] else ""))
    if report["classes"]:
        freq = ", ".join(f"{k} {v:.1%}" for k, v in report["class_frequency"].items())
        lines.append(f"classes: {freq}; ignored pixels: {report['ignored_pixels']}")
        lines.append(f"suggested class_weights: {report['suggested_class_weights']}")
    if report["structures"]:
        sizes = "; ".join(f"{name} {c['width']:g} px wide, reaching {c['reach']:g} px" for name, c in report["structures"]["classes"].items())
        lines.append(f"structures (median width along centre lines, 90th percentile reach; {report['structures']['pairs_measured']} pairs): {sizes}")
    lines.append(f"empty masks: {len(report['empty_masks'])}")
    if report.get("cache"):
        lines.append(f"decoded size: {_size(report['decoded_bytes'])} (images and masks, as training reads them); cache: "
                     f"{report['cache']['folder']} ({_size(report['cache']['bytes']) if report['cache']['bytes'] else 'not built yet'})")
    if report["preview"]:
        lines.append(f"preview: {report['preview']}")
    if report["weights"]:
        lines.append(f"weight maps: {report['weights']}")
    lines += [f"{p['level']}: {p['file']}: {p['message']}" for p in report["problems"]]
    verdict = "usable" if report["usable"] else "NOT usable"
    lines.append(f"{verdict}: {report['errors']} error(s), {report['warnings']} warning(s)")
    return "\n".join(lines)
