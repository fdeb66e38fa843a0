"""Pictures and pages for people: display conversion, colour overlays, the text table and the HTML report.

The report is a folder that opens offline: ``index.html`` (inline CSS and a few lines of inline
JavaScript to sort the per-image table, nothing fetched), ``metrics.json``, and PNGs in ``images/``.
"""

from __future__ import annotations

import html
import json
from pathlib import Path

import numpy as np

from unetkit.data.io import atomic_write, write_png

#: Error map colours (RGB).
CORRECT, FALSE_POSITIVE, FALSE_NEGATIVE, WRONG_CLASS, IGNORED = (255, 255, 255), (220, 40, 40), (40, 80, 220), (240, 160, 0), (160, 160, 160)
#: What overlays paint a white (or nearly white) class in, such as the foreground of binary 0/255 masks and the
#: interior of instance targets: white vanishes on bright fluorescence and grey EM images, magenta reads on both.
FOREGROUND = (255, 0, 255)


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


def overlay_colors(colors: list) -> list[tuple[int, int, int]]:
    """The class colours as overlays show them: white or nearly white (every channel >= 200, within 30 of each
    other) becomes :data:`FOREGROUND`, which stays visible over the image."""
    return [FOREGROUND if min(c) >= 200 and max(c) - min(c) <= 30 else tuple(int(v) for v in c) for c in colors]


def overlay(image: np.ndarray, mask: np.ndarray, colors: list[tuple[int, int, int]], classes: list[str], alpha: float = 0.45) -> np.ndarray:
    """Blend class colours (:func:`overlay_colors`) over the displayed image; a class named ``background`` stays uncoloured."""
    base = to_display(image).astype(np.float32)
    paint = colorize(mask, overlay_colors(colors)).astype(np.float32)
    skip = {i for i, name in enumerate(classes) if name.lower() in ("background", "bg")}
    tint = (mask >= 0) & ~np.isin(mask, list(skip))
    base[tint] = (1 - alpha) * base[tint] + alpha * paint[tint]
    return (base + 0.5).astype(np.uint8)


def error_map(pred: np.ndarray, truth: np.ndarray, ignore: int = -1) -> np.ndarray:
    """(H, W, 3) uint8 map of errors, with class 0 as background.

    White: correct. Red: false positive (background predicted as a class). Blue: false negative (a
    class predicted as background). Orange: one non-background class taken for another. Grey: ignored.
    """
    out = np.empty(truth.shape + (3,), np.uint8)
    out[:] = CORRECT
    wrong = (pred != truth) & (truth != ignore)
    out[wrong] = WRONG_CLASS
    out[wrong & (truth == 0)] = FALSE_POSITIVE
    out[wrong & (pred == 0)] = FALSE_NEGATIVE
    out[truth == ignore] = IGNORED
    return out


def confusion_png(path: str | Path, cm: np.ndarray, classes: list[str]) -> None:
    """Draw the confusion matrix (rows truth, columns prediction) as a PNG: colour = share of the row."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cm = np.asarray(cm, np.int64)
    k = len(classes)
    share = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    size = min(2.5 + 0.6 * k, 14)
    fig, ax = plt.subplots(figsize=(size + 1, size), dpi=100)
    im = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(k), classes, rotation=45, ha="right")
    ax.set_yticks(range(k), classes)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    if k <= 20:
        for r in range(k):
            for c in range(k):
                ax.text(c, r, f"{share[r, c]:.1%}\n{cm[r, c]:,}", ha="center", va="center", fontsize=8,
                        color="white" if share[r, c] > 0.5 else "black")
    fig.colorbar(im, ax=ax, label="share of the true class's pixels")
    fig.tight_layout()
    with atomic_write(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


def _fmt(v, digits: int = 4) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def _class_columns(result: dict) -> list[tuple[str, dict]]:
    """(header, per-class dict) of every per-class score in ``result``."""
    columns = [(name, result[key]) for name, key in (("Dice", "dice"), ("IoU", "iou"), ("precision", "precision"), ("recall", "recall"))]
    if "boundary" in result:
        columns += [(f"boundary F1 ({result['boundary']['tolerance']:g} px)", result["boundary"]["f1"]), ("HD95 (px)", result["boundary"]["hd95"])]
    return columns


def format_table(result: dict) -> str:
    """The evaluation result as the plain-text table ``unetkit evaluate`` prints."""
    names = result["classes"] + ["mean"]
    width = max(len(n) for n in names + ["class"]) + 2
    columns = _class_columns(result)
    heads = [h.split(" (")[0] for h, _ in columns]
    lines = [f"{'class':<{width}}" + "".join(f"{h:>13}" for h in heads)]
    for n in names:
        lines.append(f"{n:<{width}}" + "".join(f"{_fmt(values[n]):>13}" for _, values in columns))
    lines.append(f"pixel accuracy (overall): {_fmt(result['pixel_accuracy']['overall'])}")
    if "boundary" in result:
        lines.append(f"boundary F1 at {result['boundary']['tolerance']:g} px; HD95 = 95th-percentile Hausdorff distance in pixels")
    if "isbi" in result:
        r = result["isbi"]
        t = r["thresholds"]
        lines.append(
            f"ISBI 2012 (foreground: {r['foreground']}; best threshold of each): pixel error {_fmt(r['pixel_error'])} (t={t.get('pixel_error', '-')}), "
            f"Rand error {_fmt(r['rand_error'])} (t={t.get('rand_error', '-')}), warping error {_fmt(r['warping_error'], 6)} (t={t.get('warping_error', '-')})"
        )
    if "instances" in result:
        r = result["instances"]
        lines.append(
            f"instances: AP {_fmt(r['ap'])} (IoU 0.50: {_fmt(r['ap_per_threshold']['0.50'])}, 0.75: {_fmt(r['ap_per_threshold']['0.75'])}), "
            f"AJI {_fmt(r['aji'])}; {r['pred_objects']} predicted / {r['true_objects']} true objects, {r['splits']} split, {r['merges']} merges"
        )
    lines.append(f"{len(result['per_image'])} image(s)")
    return "\n".join(lines)


#: Per-image columns of the report: result key, header, whether lower is better.
_IMAGE_COLUMNS = (
    ("dice", "mean Dice", False), ("iou", "mean IoU", False), ("pixel_accuracy", "pixel accuracy", False),
    ("boundary_f1", "boundary F1", False), ("hd95", "HD95 (px)", True),
    ("pixel_error", "pixel error", True), ("rand_error", "Rand error", True), ("warping_error", "warping error", True),
    ("ap", "AP", False), ("aji", "AJI", False),
)

_SORT_JS = """
for (const table of document.querySelectorAll('table.sortable')) {
  const heads = table.tHead.rows[0].cells;
  for (let col = 0; col < heads.length; col++) {
    heads[col].addEventListener('click', () => {
      const asc = heads[col].getAttribute('aria-sort') !== 'ascending';
      for (const h of heads) h.removeAttribute('aria-sort');
      heads[col].setAttribute('aria-sort', asc ? 'ascending' : 'descending');
      const value = row => {
        const cell = row.cells[col];
        return cell.dataset.value === undefined ? cell.textContent : (cell.dataset.value === '' ? NaN : Number(cell.dataset.value));
      };
      const rows = Array.from(table.tBodies[0].rows);
      rows.sort((a, b) => {
        const x = value(a), y = value(b);
        if (typeof x === 'string') return asc ? x.localeCompare(y, undefined, {numeric: true}) : y.localeCompare(x, undefined, {numeric: true});
        if (Number.isNaN(x)) return Number.isNaN(y) ? 0 : 1;
        if (Number.isNaN(y)) return -1;
        return asc ? x - y : y - x;
      });
      for (const row of rows) table.tBodies[0].appendChild(row);
    });
  }
}
"""

_CSS = """body{font-family:system-ui,sans-serif;margin:2em;max-width:1400px;color:#222}
table{border-collapse:collapse;margin:0.5em 0 1.5em}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}
th:first-child,td:first-child{text-align:left}table.sortable th{cursor:pointer;background:#f3f3f3}
th[aria-sort=ascending]::after{content:" \\25B2"}th[aria-sort=descending]::after{content:" \\25BC"}
.row{display:flex;flex-wrap:wrap;gap:8px}figure{margin:0}figure img{width:240px;image-rendering:pixelated;border:1px solid #ddd}
figcaption{text-align:center;font-size:small}.key{display:inline-block;width:1em;height:1em;vertical-align:middle;border:1px solid #999}
.note{color:#555;font-size:small;max-width:60em}"""


class ReportWriter:
    """Builds a report folder: :meth:`add_image` as images stream past, then :meth:`finish` with the result."""

    def __init__(self, folder: str | Path, classes: list[str], colors: list[tuple[int, int, int]]) -> None:
        self.folder = Path(folder)
        self.classes = classes
        self.colors = colors
        self.images: dict[str, dict[str, str]] = {}  # key -> {panel: relative PNG path}
        (self.folder / "images").mkdir(parents=True, exist_ok=True)

    def add_image(self, key: str, image: np.ndarray, truth: np.ndarray, pred: np.ndarray) -> None:
        """Write the input, truth, prediction and error map PNGs of one image."""
        stem = key.replace("/", "__")
        panels = {
            "input": to_display(image),
            "truth": colorize(truth, self.colors),
            "prediction": colorize(pred, self.colors),
            "errors": error_map(pred, truth),
        }
        self.images[key] = {}
        for label, array in panels.items():
            name = f"images/{stem}_{label}.png"
            write_png(self.folder / name, array)
            self.images[key][label] = name

    def finish(self, result: dict, curves: Path | None = None) -> Path:
        """Write ``metrics.json``, the confusion matrix PNG, the curves and ``index.html``; returns the page."""
        with atomic_write(self.folder / "metrics.json") as tmp:
            Path(tmp).write_text(json.dumps(result, indent=2))
        confusion_png(self.folder / "images" / "confusion.png", np.asarray(result["confusion_matrix"]), self.classes)
        curves_html = ""
        if curves is not None and Path(curves).is_file():
            with atomic_write(self.folder / "images" / "curves.png") as tmp:
                Path(tmp).write_bytes(Path(curves).read_bytes())
            curves_html = '<h2>Training curves</h2><img src="images/curves.png" alt="training loss and validation Dice per epoch">'
        page = _page(result, self.images, self.classes, self.colors, curves_html)
        with atomic_write(self.folder / "index.html") as tmp:
            Path(tmp).write_text(page, encoding="utf-8")
        return self.folder / "index.html"


def _scores_html(result: dict) -> str:
    columns = _class_columns(result)
    head = "".join(f"<th>{html.escape(h)}</th>" for h, _ in columns)
    rows = "".join(
        f"<tr><td>{html.escape(c)}</td>" + "".join(f"<td>{_fmt(values[c])}</td>" for _, values in columns) + "</tr>"
        for c in result["classes"] + ["mean"]
    )
    out = f"<h2>Scores per class</h2><table><thead><tr><th>class</th>{head}</tr></thead><tbody>{rows}</tbody></table>"
    out += f"<p>Pixel accuracy (share of pixels classified correctly): {_fmt(result['pixel_accuracy']['overall'])}.</p>"
    if "isbi" in result:
        r = result["isbi"]
        t = r["thresholds"]
        out += (
            f"<h2>ISBI 2012 challenge metrics</h2><table><thead><tr><th>metric</th><th>value</th><th>best threshold</th></tr></thead><tbody>"
            f"<tr><td>pixel error</td><td>{_fmt(r['pixel_error'])}</td><td>{t.get('pixel_error', '-')}</td></tr>"
            f"<tr><td>Rand error</td><td>{_fmt(r['rand_error'])}</td><td>{t.get('rand_error', '-')}</td></tr>"
            f"<tr><td>warping error</td><td>{_fmt(r['warping_error'], 6)}</td><td>{t.get('warping_error', '-')}</td></tr></tbody></table>"
            f"<p class='note'>Foreground: {html.escape(r['foreground'])}. Each error is the lowest over thresholds "
            f"{', '.join(map(str, r['threshold_sweep']))} on the foreground probability. Rand error: 1 minus the "
            "foreground-restricted Rand F-score of 4-connected objects; warping error: share of pixels still wrong after "
            "warping the truth towards the prediction by topology-preserving (simple point) flips (Jain et al. 2010).</p>"
        )
    if "instances" in result:
        r = result["instances"]
        cells = "".join(f"<th>AP@{t}</th>" for t in r["ap_per_threshold"])
        values = "".join(f"<td>{_fmt(v)}</td>" for v in r["ap_per_threshold"].values())
        out += (
            f"<h2>Objects</h2><table><thead><tr><th>AP (0.50-0.95)</th>{cells}<th>AJI</th></tr></thead>"
            f"<tbody><tr><td>{_fmt(r['ap'])}</td>{values}<td>{_fmt(r['aji'])}</td></tr></tbody></table>"
            f"<p class='note'>{r['pred_objects']} predicted and {r['true_objects']} true objects; {r['splits']} true objects split "
            f"into 2+ predicted ones, {r['merges']} predicted objects merging 2+ true ones (by majority overlap). Predicted objects are "
            "those of unetkit predict --instances: the seeded watershed of a --target instances model, else the 4-connected components "
            "of the predicted foreground, with holes filled and small objects removed. AP at IoU t: "
            "TP / (TP + FP + FN), averaged over t (Data Science Bowl 2018); AJI: aggregated Jaccard index (Kumar et al. 2017). "
            "Both are means over images.</p>"
        )
    return out


def _per_image_html(result: dict, images: dict[str, dict[str, str]]) -> str:
    rows = result.get("per_image", [])
    columns = [(key, head, lower) for key, head, lower in _IMAGE_COLUMNS if any(key in r for r in rows)]
    head = "".join(f"<th title='{'lower' if lower else 'higher'} is better'>{html.escape(h)}</th>" for _, h, lower in columns)
    anchors = {key: number for number, key in enumerate(images)}  # the images' section ids
    body = []
    for r in sorted(rows, key=lambda r: (r["dice"] is None, r["dice"] or 0.0)):
        name = html.escape(r["key"])
        link = f"<a href='#img-{anchors[r['key']]}'>{name}</a>" if r["key"] in anchors else name
        cells = "".join(f"<td data-value='{'' if r.get(k) is None else repr(float(r[k]))}'>{_fmt(r.get(k))}</td>" for k, _, _ in columns)
        body.append(f"<tr><td>{link}</td>{cells}</tr>")
    return (
        f"<h2>Per image</h2><p class='note'>Worst mean Dice first; click a column to sort by it.</p>"
        f"<table id='per-image' class='sortable'><thead><tr><th>image</th>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"
    )


def _page(result: dict, images: dict[str, dict[str, str]], classes: list[str], colors: list, curves_html: str) -> str:
    legend = " ".join(
        f"<span class='key' style='background:rgb{tuple(c)}'></span> {label}"
        for c, label in ((FALSE_POSITIVE, "false positive"), (FALSE_NEGATIVE, "false negative"), (WRONG_CLASS, "wrong class"), (IGNORED, "ignored"))
    )
    palette = " ".join(f"<span class='key' style='background:rgb{tuple(int(v) for v in c)}'></span> {html.escape(n)}" for n, c in zip(classes, colors))
    pictures = []
    for number, (key, panels) in enumerate(images.items()):
        figures = "".join(
            f"<figure><img src='{html.escape(path)}' alt='{label} of {html.escape(key)}'><figcaption>{label}</figcaption></figure>"
            for label, path in panels.items()
        )
        pictures.append(f"<section class='sample' id='img-{number}'><h3>{html.escape(key)}</h3><div class='row'>{figures}</div></section>")
    total = len(result.get("per_image", []))
    shown = f"all {total}" if len(images) == total else f"{len(images)} of {total}"
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>unetkit evaluation</title><style>{_CSS}</style></head><body>
<h1>unetkit evaluation</h1>
<p>{total} image(s); metrics: {html.escape(', '.join(result.get('metrics', ['pixel'])))}. Scores per class come from all pixels of all images together.</p>
{_scores_html(result)}
<h2>Confusion matrix</h2><img src="images/confusion.png" alt="confusion matrix: rows true class, columns predicted class">
{curves_html}
{_per_image_html(result, images)}
<h2>Images ({shown})</h2>
<p>Classes: {palette}. Error map: {legend}; white is correct.</p>
{''.join(pictures)}
<script>{_SORT_JS}</script>
</body></html>"""
