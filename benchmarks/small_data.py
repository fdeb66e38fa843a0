"""Small data, done the paper's way: elastic augmentation and the border weight map, on ISBI 2012 and DSB 2018.

Usage (from the repository root, with ../shared/data present):
    python benchmarks/small_data.py [--minutes 10] [--out runs/bench-small-data]

ISBI 2012 (examples/isbi2012/dataset.yaml: train slices 0-19, validate 20-24), the same CPU time budget
for each of: no augmentation; the paper preset; the paper preset + the border weight map
(weighted-ce+dice). Reported: validation mean Dice and membrane F1 (the F1 of class 0, which equals its Dice).

DSB 2018 nuclei (a random 20% of the pairs held out, seed 0), the paper preset without and with the
weight map. Reported: the share of touching nuclei that come out as separate objects. A truth nucleus is
touching when its mask dilated by one pixel (3x3) overlaps another nucleus; it is separated when one
connected component (4-connected) of the predicted foreground has IoU > 0.5 with it. A component can
match only one nucleus that way, so matched nuclei are each in their own component.

Rewrites the "small-data" section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage

sys.path.insert(0, str(Path(__file__).resolve().parent))
from spine import ROOT, publish  # noqa: E402

import unetkit  # noqa: E402
from unetkit.data.dataset import load_spec, read_instances, split_pairs  # noqa: E402
from unetkit.data.io import read_image  # noqa: E402

ISBI = ROOT / "examples" / "isbi2012" / "dataset.yaml"
DSB = ROOT.parent / "shared" / "data" / "dsb2018"
OPTIONS = dict(base_channels=32, depth=4, patch_size=128, batch_size=4, lr=1e-3, optimizer="adam", schedule="cosine", tile=512, seed=0)
ISBI_RUNS = [("none", "ce+dice"), ("paper", "ce+dice"), ("paper", "weighted-ce+dice")]
DSB_RUNS = [("paper", "ce+dice"), ("paper", "weighted-ce+dice")]
VAL_FRACTION = 0.2


def separated_touching(truth: np.ndarray, pred_fg: np.ndarray) -> tuple[int, int]:
    """(touching truth nuclei, those matched with IoU > 0.5 by a connected component of ``pred_fg``)."""
    components, _ = ndimage.label(pred_fg)
    touching = separated = 0
    for number, box in enumerate(ndimage.find_objects(truth), start=1):
        if box is None:
            continue
        grown = tuple(slice(max(s.start - 2, 0), s.stop + 2) for s in box)
        nucleus = truth[grown] == number  # (h, w) around the nucleus
        ring = ndimage.binary_dilation(nucleus, np.ones((3, 3), bool))
        if not ((truth[grown] != 0) & (truth[grown] != number) & ring).any():
            continue
        touching += 1
        ids, overlap = np.unique(components[grown][nucleus], return_counts=True)
        overlap, ids = overlap[ids > 0], ids[ids > 0]
        if len(ids):
            best = ids[np.argmax(overlap)]
            union = nucleus.sum() + (components == best).sum() - overlap.max()
            separated += overlap.max() / union > 0.5
    return touching, int(separated)


def train(name: str, data, minutes: float, out: Path, augment: str, loss: str, **extra):
    t0 = time.monotonic()
    result = unetkit.train(data=str(data), out=str(out / name), overwrite=True, time=minutes, augment=augment, loss=loss, report=False,
                           progress=False, **OPTIONS, **extra)  # fmt: skip
    print(f"{name}: {result.epochs} epochs, {result.steps} steps, {(time.monotonic() - t0) / 60:.1f} min, best val Dice {result.best_dice}", flush=True)
    return result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=10.0, help="training time budget of each run")
    ap.add_argument("--out", default="runs/bench-small-data")
    args = ap.parse_args()
    out = Path(args.out)
    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} threads"
    options = " ".join(f"--{k.replace('_', '-')} {v}" for k, v in OPTIONS.items())
    lines = [
        "## Small data: elastic augmentation and the border weight map",
        "",
        f"Command: `python benchmarks/small_data.py --minutes {args.minutes:g}` ({time.strftime('%Y-%m-%d')}; {machine}).",
        f"Every run is `unetkit train --time {args.minutes:g} {options}` with the `--augment` and `--loss` shown",
        "(foreground_fraction 0.33, workers 1, weight map w0 = 10, sigma = 5 px, balanced w_c).",
    ]
    if args.minutes < 5:
        lines.append("A budget this short only shows that the script runs: compare the settings at 10 minutes or more.")

    if not ISBI.parent.joinpath(*[".."] * 3, "shared", "data", "isbi2012").resolve().is_dir():
        print("../shared/data/isbi2012 not found: skipped", file=sys.stderr)
    else:
        lines += ["", f"ISBI 2012, train slices 0-19, validate on 20-24, {args.minutes:g} min each:", "",
                  "| augment | loss | steps | val mean Dice | membrane F1 | cell Dice |", "|---|---|---|---|---|---|"]
        for augment, loss in ISBI_RUNS:
            name = f"isbi-{augment}-{loss.replace('+', '-')}"
            result = train(name, ISBI, args.minutes, out, augment, loss)
            s = unetkit.evaluate(model=out / name / "best.pt", data=ISBI, split="val", metrics="pixel", json_path=out / f"{name}.json", progress=False)
            lines.append(f"| `{augment}` | `{loss}` | {result.steps} | {s['dice']['mean']:.4f} | {s['dice']['membrane']:.4f} | {s['dice']['cell']:.4f} |")

    if not DSB.is_dir():
        print(f"{DSB} not found: skipped", file=sys.stderr)
    else:
        spec = load_spec(DSB)
        _, val = split_pairs(spec.pairs, VAL_FRACTION, OPTIONS["seed"])
        lines += ["", f"DSB 2018 nuclei, {len(spec.pairs) - len(val)} training and {len(val)} validation images "
                      f"(`--val-fraction {VAL_FRACTION}`), {args.minutes:g} min each:", "",
                  "| augment | loss | steps | touching nuclei | separated | share separated | val foreground Dice |",
                  "|---|---|---|---|---|---|---|"]  # fmt: skip
        for augment, loss in DSB_RUNS:
            name = f"dsb-{augment}-{loss.replace('+', '-')}"
            result = train(name, DSB, args.minutes, out, augment, loss, val_fraction=VAL_FRACTION)
            seg = unetkit.load(out / name / "best.pt", device="cpu", tile=OPTIONS["tile"])
            touching = separated = 0
            inter = total = 0
            for pair in val:
                truth = read_instances(pair, spec)
                pred = seg.predict_mask(read_image(pair.image)) == 1
                t, s = separated_touching(truth, pred)
                touching, separated = touching + t, separated + s
                inter += int((pred & (truth > 0)).sum())
                total += int(pred.sum() + (truth > 0).sum())
            share = separated / touching if touching else float("nan")
            dice = 2 * inter / total if total else float("nan")
            (out / f"{name}.json").write_text(json.dumps({"touching": touching, "separated": separated, "share": share, "dice": dice}))
            lines.append(f"| `{augment}` | `{loss}` | {result.steps} | {touching} | {separated} | {share:.1%} | {dice:.4f} |")

    publish("small-data", lines)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
