"""Pictures and pages for people: display conversion, colour overlays, and a small HTML report."""

from __future__ import annotations

import html
import json
from pathlib import Path

import numpy as np

from unetkit.data.io import atomic_write, write_png


def to_display(image: np.ndarray) -> np.ndarray:
    """(H, W, C) image of any dtype -> (H, W, 3) uint8 for viewing, each channel stretched 1..99 percentile."""
    x = image[..., :3] if image.shape[2] >= 3 else image[..., :1]
    x = x.astype(np.float32)
    lo = np.percentile(x, 1, axis=(0, 1))
    hi = np.percentile(x, 99, axis=(0, 1))
    x = np.clip((x - lo) / np.maximum(hi - lo, 1e-6), 0, 1)
    x = (x * 255 + 0.5).astype(np.uint8)
    return np.repeat(x, 3, axis=2) if x.shape[2] == 1 else x


def colorize(mask: np.ndarray, colors: list[tuple[int, int, int]]) -> np.ndarray:
    """(H, W) class indices -> (H, W, 3) uint8 colours; out-of-table values (e.g. ignore) are black."""
    table = np.zeros((max(len(colors), int(mask.max(initial=0)) + 1), 3), np.uint8)
    table[: len(colors)] = np.asarray(colors, np.uint8)
    return table[np.clip(mask, 0, None)] * (mask >= 0)[..., None].astype(np.uint8)


def overlay(image: np.ndarray, mask: np.ndarray, colors: list[tuple[int, int, int]], classes: list[str], alpha: float = 0.45) -> np.ndarray:
    """Blend class colours over the displayed image; a class named ``background`` stays uncoloured."""
    base = to_display(image).astype(np.float32)
    paint = colorize(mask, colors).astype(np.float32)
    skip = {i for i, name in enumerate(classes) if name.lower() in ("background", "bg")}
    tint = (mask >= 0) & ~np.isin(mask, list(skip))
    base[tint] = (1 - alpha) * base[tint] + alpha * paint[tint]
    return (base + 0.5).astype(np.uint8)


def error_map(pred: np.ndarray, truth: np.ndarray, ignore: int = -1) -> np.ndarray:
    """(H, W, 3) uint8: correct white, wrong class red (for binary: false positive red, false negative blue), ignored grey."""
    out = np.full(truth.shape + (3,), 255, np.uint8)
    wrong = (pred != truth) & (truth != ignore)
    out[wrong] = (220, 40, 40)
    if truth.max(initial=0) <= 1 and pred.max(initial=0) <= 1:
        out[wrong & (truth == 1)] = (40, 80, 220)  # missed foreground
    out[truth == ignore] = (160, 160, 160)
    return out


def _fmt(v) -> str:
    return "-" if v is None else f"{v:.4f}"


def write_report(folder: str | Path, result: dict, visuals: list[dict] | None = None, curves: Path | None = None) -> Path:
    """Write ``index.html`` (metrics table, per-image scores, pictures) and ``metrics.json`` into ``folder``.

    Args:
        result: Output of ``unetkit.evaluate`` (``dice``, ``iou``, ..., ``per_image``).
        visuals: Per image ``{"key", "image", "truth", "pred", "colors", "classes"}`` arrays to draw.
        curves: A training ``curves.png`` to include.
    """
    folder = Path(folder)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    with atomic_write(folder / "metrics.json") as tmp:
        Path(tmp).write_text(json.dumps(result, indent=2))
    classes = [k for k in result["dice"] if k not in ("mean",)]
    rows = "".join(
        f"<tr><th>{html.escape(c)}</th>" + "".join(f"<td>{_fmt(result[m][c])}</td>" for m in ("dice", "iou", "precision", "recall")) + "</tr>"
        for c in classes + ["mean"]
    )
    per_image = "".join(
        f"<tr><td>{html.escape(r['key'])}</td><td>{_fmt(r['dice'])}</td><td>{_fmt(r['iou'])}</td><td>{_fmt(r['pixel_accuracy'])}</td></tr>"
        for r in sorted(result.get("per_image", []), key=lambda r: (r["dice"] is None, r["dice"] or 0))
    )
    pictures = []
    for v in visuals or []:
        stem = v["key"].replace("/", "__")
        files = {
            "input": to_display(v["image"]),
            "truth": colorize(v["truth"], v["colors"]),
            "prediction": overlay(v["image"], v["pred"], v["colors"], v["classes"]),
            "errors": error_map(v["pred"], v["truth"]),
        }
        cells = []
        for label, arr in files.items():
            name = f"images/{stem}_{label}.png"
            write_png(folder / name, arr)
            cells.append(f'<figure><img src="{html.escape(name)}" width="220"><figcaption>{label}</figcaption></figure>')
        pictures.append(f"<h3>{html.escape(v['key'])}</h3><div class='row'>{''.join(cells)}</div>")
    curves_html = ""
    if curves is not None and Path(curves).is_file():
        target = folder / "images" / "curves.png"
        with atomic_write(target) as tmp:
            Path(tmp).write_bytes(Path(curves).read_bytes())
        curves_html = '<h2>Training curves</h2><img src="images/curves.png">'
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>unetkit report</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:3px 8px;text-align:right}}
.row{{display:flex;gap:8px}}figure{{margin:0}}figcaption{{text-align:center;font-size:small}}</style></head><body>
<h1>unetkit evaluation</h1>
<p>Pixel accuracy (overall): {_fmt(result['pixel_accuracy'].get('overall'))}. Errors: red = wrong class / false positive, blue = false negative, grey = ignored.</p>
<h2>Per class</h2><table><tr><th>class</th><th>Dice</th><th>IoU</th><th>precision</th><th>recall</th></tr>{rows}</table>
<h2>Per image (worst first)</h2><table><tr><th>image</th><th>mean Dice</th><th>mean IoU</th><th>pixel accuracy</th></tr>{per_image}</table>
{curves_html}
<h2>Images</h2>{''.join(pictures)}
</body></html>"""
    with atomic_write(folder / "index.html") as tmp:
        Path(tmp).write_text(page)
    return folder / "index.html"
