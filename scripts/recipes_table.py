"""Write the README's results table and gallery from the results.json of recipe runs.

    python scripts/recipes_table.py runs        # runs/<recipe>/results.json, as `unetkit recipe` writes them

The numbers are copied from results.json as the recipes printed them; nothing is recomputed.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RECIPES = {  # recipe -> (data set, domain)
    "isbi2012": ("ISBI 2012 EM membranes", "microscopy"),
    "dsb2018": ("DSB 2018 nuclei (instances)", "microscopy"),
    "dubai_aerial": ("Dubai aerial", "satellite"),
    "camvid": ("CamVid", "street scenes"),
}


def table(runs: Path) -> list[str]:
    lines = [
        "| data set | domain | classes | train / val images | training on 2 CPU cores | val mean IoU | val mean Dice | command |",
        "|---|---|---:|---:|---:|---:|---:|---|",
    ]
    for name, (title, domain) in RECIPES.items():
        path = runs / name / "results.json"
        if not path.is_file():
            raise SystemExit(f"{path}: missing; run: unetkit recipe examples/{name} --out {runs / name} --figure docs/gallery/{name}.png")
        r = json.loads(path.read_text())
        val = r["validation"]
        extra = f" (objects: AP@0.5 {r['instances']['ap_per_threshold']['0.50']:.3f})" if r.get("instances") else ""
        lines.append(
            f"| {title} | {domain} | {len(r['classes'])} | {r['train_pairs']} / {r['val_pairs']} | {r['train_minutes']:.1f} min | "
            f"{val['iou']['mean']:.3f} | {val['dice']['mean']:.3f}{extra} | `unetkit recipe examples/{name}` |"
        )
    return lines


def gallery() -> list[str]:
    cells = [f'<img src="docs/gallery/{name}.png" width="400" alt="{title}: input, truth, prediction">' for name, (title, _) in RECIPES.items()]
    return ["<p>", *cells, "</p>"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", type=Path, help="folder holding <recipe>/results.json")
    args = parser.parse_args()
    block = ["<!-- recipes:begin -->", *table(args.runs), "", *gallery(), "<!-- recipes:end -->"]
    readme = ROOT / "README.md"
    text = readme.read_text()
    pattern = re.compile(r"<!-- recipes:begin -->.*<!-- recipes:end -->", re.S)
    if not pattern.search(text):
        raise SystemExit(f"{readme}: no <!-- recipes:begin --> ... <!-- recipes:end --> markers")
    readme.write_text(pattern.sub(lambda _: "\n".join(block), text))
    print("\n".join(block))


if __name__ == "__main__":
    main()
