"""Test-time augmentation on ISBI 2012: mean Dice and IoU of the held-out slices with and without --tta.

Usage (from the repository root, with ../shared/data/isbi2012 present):
    python benchmarks/tta.py --train-minutes 3            # trains a small model on slices 0-19 first
    python benchmarks/tta.py --model runs/exp1/best.pt    # or evaluates a given checkpoint

Evaluates validation slices 20-24 twice, as ``unetkit evaluate --split val --metrics pixel`` does, once
plainly and once with ``--tta``, and prints the scores, the seconds each took and the CPU. Prints the
figures only; put them into docs/benchmarks.md by hand with the command that produced them.
"""

from __future__ import annotations

import argparse
import platform
import subprocess
import sys
import time
from pathlib import Path

import unetkit

ROOT = Path(__file__).resolve().parents[1]
ISBI = ROOT / "examples" / "isbi2012" / "dataset.yaml"
DATA = ROOT.parent / "shared" / "data" / "isbi2012"
#: A small network that learns membranes within minutes on a CPU.
TRAIN_OPTIONS = dict(base_channels=16, depth=4, patch_size=128, batch_size=4, lr=1e-3, optimizer="adam", schedule="cosine", tile=512)


def cpu_model() -> str:
    """lscpu's "Model name", or what the platform module knows."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return platform.processor() or "unknown CPU"
    return next((line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name")), "unknown CPU")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", help="a checkpoint trained on slices 0-19 (default: train one)")
    ap.add_argument("--train-minutes", type=float, default=3.0, help="training budget when no --model is given")
    ap.add_argument("--out", default="runs/bench-tta", help="run folder of the trained model")
    ap.add_argument("--tile", type=int, default=512, help="input tile size for evaluation")
    args = ap.parse_args()
    if not (DATA / "images").is_dir():
        print(f"{DATA}: ISBI 2012 data not found (see ../shared/data/README.md); skipping the TTA benchmark", file=sys.stderr)
        return 0
    model = Path(args.model) if args.model else Path(args.out) / "best.pt"
    if args.model and not model.is_file():
        print(f"{model}: no such checkpoint", file=sys.stderr)
        return 2
    if not args.model:
        print(f"training {TRAIN_OPTIONS} for {args.train_minutes:g} min on slices 0-19 ...", flush=True)
        unetkit.train(data=str(ISBI), out=args.out, overwrite=True, time=args.train_minutes, progress=False, report=False, **TRAIN_OPTIONS)

    rows = []
    for tta in (False, True):
        start = time.monotonic()
        r = unetkit.evaluate(model=model, data=ISBI, split="val", metrics="pixel", tile=args.tile, tta=tta, progress=False)
        rows.append((tta, r["dice"]["mean"], r["iou"]["mean"], time.monotonic() - start))
    print(f"\nmodel {model}; validation slices 20-24 (512x512); tile {args.tile}; CPU: {cpu_model()}")
    print("| | mean Dice | mean IoU | seconds |\n|---|---|---|---|")
    for tta, dice, iou, seconds in rows:
        print(f"| {'--tta (8 flips/rotations)' if tta else 'plain'} | {dice:.4f} | {iou:.4f} | {seconds:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
