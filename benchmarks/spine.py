"""Spine figures for docs/benchmarks.md: the demo's wall time and Dice, and ISBI 2012 after 15 CPU minutes.

Usage (from the repository root, with ../shared/data present):
    python benchmarks/spine.py [--minutes 15] [--out runs/bench-spine]

Rewrites the "spine" section of docs/benchmarks.md with the figures it measured.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import sys
import time
from pathlib import Path

import torch

import unetkit
from unetkit.demo import run_demo

ROOT = Path(__file__).resolve().parents[1]
ISBI = ROOT / "examples" / "isbi2012" / "dataset.yaml"
ISBI_OPTIONS = dict(base_channels=32, depth=4, patch_size=128, batch_size=4, lr=1e-3, optimizer="adam", schedule="cosine", tile=512)


def publish(name: str, lines: list[str], doc: Path | None = None) -> None:
    """Print ``lines`` and put them between the section's markers in ``doc`` (default docs/benchmarks.md; appended if missing)."""
    print("\n".join(lines))
    doc = doc or ROOT / "docs" / "benchmarks.md"
    text = doc.read_text() if doc.exists() else "# Benchmarks\n\nEvery figure here was produced by the command shown next to it.\n"
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    block = f"{begin}\n" + "\n".join(lines).strip() + f"\n{end}"
    if begin in text:
        text = re.sub(re.escape(begin) + ".*?" + re.escape(end), lambda _: block, text, flags=re.S)
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    doc.write_text(text)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=15.0)
    ap.add_argument("--out", default="runs/bench-spine")
    args = ap.parse_args()
    out = Path(args.out)
    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} threads"

    t0 = time.monotonic()
    demo = run_demo(out=str(out / "demo"), progress=False)
    demo_seconds = time.monotonic() - t0

    if not ISBI.parent.joinpath(*[".."] * 3, "shared", "data", "isbi2012").resolve().is_dir():
        print("../shared/data/isbi2012 not found: only the demo was measured", file=sys.stderr)
        isbi = None
    else:
        result = unetkit.train(data=str(ISBI), out=str(out / "isbi"), overwrite=True, time=args.minutes, progress=False, **ISBI_OPTIONS)
        scores = unetkit.evaluate(model=out / "isbi" / "best.pt", data=ISBI, split="val", json_path=out / "isbi_val.json", progress=False)
        isbi = (result, scores)

    options = " ".join(f"--{k.replace('_', '-')} {v}" for k, v in ISBI_OPTIONS.items())
    lines = [
        "## Spine: demo and ISBI 2012",
        "",
        f"Command: `python benchmarks/spine.py --minutes {args.minutes:g}` ({time.strftime('%Y-%m-%d')}; {machine}).",
        "",
        "| what | wall time | Dice |",
        "|---|---|---|",
        f"| `unetkit demo` (generated cells, 24 training pairs, 6 held-out images of unseen sizes) | {demo_seconds:.0f} s | "
        f"{demo['dice']:.4f} foreground, {demo['mean_dice']:.4f} mean over classes (held-out) |",
    ]
    if isbi:
        result, scores = isbi
        lines.append(
            f"| ISBI 2012, train slices 0-19, validate 20-24, `--time {args.minutes:g}` | {result.seconds / 60:.1f} min, "
            f"{result.epochs} epochs, {result.steps} steps | {scores['dice']['cell']:.4f} cell, {scores['dice']['membrane']:.4f} membrane, "
            f"{scores['dice']['mean']:.4f} mean (validation) |"
        )
        lines += [
            "",
            "The ISBI run is the CLI call",
            f"`unetkit train --data examples/isbi2012/dataset.yaml --out runs/isbi --time {args.minutes:g} {options}`",
            "followed by `unetkit evaluate --model runs/isbi/best.pt --data examples/isbi2012/dataset.yaml --split val`.",
            "Valid (unpadded) convolutions, light augmentation (flips, 90-degree rotations), CE + Dice loss, fp32.",
            f"Validation scores: `{json.dumps({k: round(v, 4) for k, v in scores['iou'].items()})}` (IoU).",
        ]
    publish("spine", lines)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
