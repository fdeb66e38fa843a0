"""Raw mask arrays to class indices, one function per encoding; each refuses values its encoding does not allow.

The ``(H, W)`` results are int64 class indices; :func:`unetkit.data.dataset.decode_mask` picks the function
by the data set's mask mode and marks ignored pixels.
"""

from __future__ import annotations

import numpy as np

from unetkit.data.labels import read_binary, read_labels
from unetkit.errors import UnetkitError


def short_values(values: set[int], limit: int = 8) -> str:
    """``{0, 3, 7, ...}``: the first ``limit`` values in order, for messages."""
    ordered = sorted(values)
    return "{" + ", ".join(map(str, ordered[:limit])) + (", ..." if len(ordered) > limit else "") + "}"


def integer_labels(raw: np.ndarray, name: str) -> np.ndarray:
    """``raw`` as int64, refusing colour masks and non-integer floats."""
    if raw.ndim != 2:
        raise UnetkitError(f"{name} is a colour mask; set mask_mode: color and classes: {{name: [r, g, b]}}")
    if np.issubdtype(raw.dtype, np.floating) and not np.array_equal(raw, np.round(raw)):
        raise UnetkitError(f"{name} has non-integer values; save masks as integer PNG or TIFF")
    return raw.astype(np.int64)


def decode_colors(raw: np.ndarray, palette: np.ndarray | None, colors: list, ignore_colors: list, name: str, ignore: int) -> np.ndarray:
    """Class indices of a colour mask (RGB, palette or gray) through the class ``colors``; ``ignore_colors`` become ``ignore``."""
    if palette is not None and raw.ndim == 2:
        if raw.size and raw.max() >= len(palette):
            raise UnetkitError(f"{name} uses palette index {raw.max()} beyond its palette; re-export it")
        raw = palette[raw]  # (H, W) indices -> (H, W, 3) colours
    elif raw.ndim == 2:
        raw = np.repeat(raw[:, :, None], 3, axis=2)  # gray colours were collapsed to (H, W)
    rgb = raw.astype(np.int64)
    codes = (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]  # (H, W) 24-bit colour codes
    table = {(r << 16) | (g << 8) | b: i for i, (r, g, b) in enumerate(colors)}
    table.update({(r << 16) | (g << 8) | b: ignore for r, g, b in ignore_colors})
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


def decode_binary(labels: np.ndarray, ignored: np.ndarray, name: str) -> np.ndarray:
    """0/1 of a binary mask: exact, or thresholded at half the full scale when its edges are anti-aliased."""
    binary = read_binary(labels, ~ignored)
    if binary is None:
        jpeg = "; JPEG compression gives masks values they never had: save masks as PNG" if name.lower().endswith((".jpg", ".jpeg")) else ""
        raise UnetkitError(
            f"{name} has values {short_values(set(np.unique(labels[~ignored]).tolist()))}; expected a binary 0/255 or 0/1 mask "
            f"(anti-aliased edges allowed); set mask_mode: index (and classes) or instances in dataset.yaml{jpeg}"
        )
    return (labels >= binary.threshold).astype(np.int64)


def decode_values(labels: np.ndarray, ignored: np.ndarray, values: dict[int, int], name: str) -> np.ndarray:
    """Class indices of a mask through the map raw value -> class index; unmapped values are refused."""
    keys = np.array(sorted(values), dtype=np.int64)
    position = np.clip(np.searchsorted(keys, labels), 0, len(keys) - 1)  # (H, W)
    unknown = (keys[position] != labels) & ~ignored
    if unknown.any():
        raise UnetkitError(
            f"{name} has values {short_values(set(np.unique(labels[unknown]).tolist()))} that no class lists; "
            "add them to a class in dataset.yaml 'classes' or set ignore_value"
        )
    return np.array([values[k] for k in keys.tolist()], dtype=np.int64)[position]


def label_image(labels: np.ndarray, name: str) -> np.ndarray:
    """``labels`` when it can be an instance label image; binary or class masks (ids over many regions) are refused."""
    found = read_labels(labels)
    if found.contradicts:
        value, regions = found.worst
        raise UnetkitError(
            f"{name} is not an instance label image: value {value} covers {regions} separate regions "
            f"({found.objects} id(s), {found.regions} regions in all); mask_mode instances needs one id per object: "
            "set mask_mode binary or index, or label each object with its own id"
        )
    return labels
