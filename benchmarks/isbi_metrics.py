"""ISBI 2012 challenge metrics of a trained model, next to the U-Net paper's, for docs/benchmarks.md.

Usage (from the repository root, with ../shared/data present and a model trained on slices 0-19,
e.g. by ``python benchmarks/spine.py``, which writes runs/bench-spine/isbi/best.pt):
    python benchmarks/isbi_metrics.py [--model runs/bench-spine/isbi/best.pt] [--report runs/bench-spine/isbi-report]

Evaluates the model on validation slices 20-24 with the challenge's pixel, Rand and warping errors
(``unetkit evaluate --metrics pixel,boundary,isbi``) and rewrites the "isbi-metrics" section of
docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

import unetkit
from spine import ISBI, publish  # benchmarks/spine.py, beside this file

#: Table 1 of Ronneberger et al. (2015): the U-Net on the ISBI 2012 challenge's hidden test set.
PAPER = {"warping_error": 0.000353, "rand_error": 0.0382, "pixel_error": 0.0611}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="runs/bench-spine/isbi/best.pt")
    ap.add_argument("--report", help="also write the HTML report into this folder")
    args = ap.parse_args()
    model = Path(args.model)
    if not model.is_file():
        print(f"{model}: no such checkpoint; train one first with python benchmarks/spine.py", file=sys.stderr)
        return 2
    meta = json.loads(torch.load(model, weights_only=True)["meta"])
    train = meta["train_config"]

    t0 = time.monotonic()
    r = unetkit.evaluate(model=model, data=ISBI, split="val", metrics="pixel,boundary,isbi", report_dir=args.report, progress=False)
    seconds = time.monotonic() - t0
    isbi = r["isbi"]
    t = isbi["thresholds"]

    command = f"python benchmarks/isbi_metrics.py --model {args.model}" + (f" --report {args.report}" if args.report else "")
    budget = f"--time {train['time']:g}" if train.get("time") else f"--epochs {train['epochs']}"
    lines = [
        "## ISBI 2012 challenge metrics",
        "",
        f"Command: `{command}` ({time.strftime('%Y-%m-%d')}; evaluation took {seconds:.0f} s), the same as",
        f"`unetkit evaluate --model {args.model} --data examples/isbi2012/dataset.yaml --split val --metrics pixel,boundary,isbi`.",
        "",
        f"The model: `base_channels {train['base_channels']}, depth {train['depth']}, padding {train['padding']}`, trained on slices 0-19 "
        f"on a CPU (`{budget}`; best checkpoint from epoch {meta.get('epoch', '?')}, step {meta.get('step', '?')}; see the spine section).",
        "",
        "| metric (lower is better) | this model, validation slices 20-24 | best threshold | U-Net paper, Table 1 |",
        "|---|---|---|---|",
        f"| warping error | {isbi['warping_error']:.6f} | {t.get('warping_error', '-')} | {PAPER['warping_error']:.6f} |",
        f"| Rand error | {isbi['rand_error']:.4f} | {t.get('rand_error', '-')} | {PAPER['rand_error']:.4f} |",
        f"| pixel error | {isbi['pixel_error']:.4f} | {t.get('pixel_error', '-')} | {PAPER['pixel_error']:.4f} |",
        "",
        "The figures are not directly comparable. The paper's were computed by the challenge organisers on the",
        "hidden test set (30 slices whose labels were never released), for a full-size U-Net trained on all 30",
        "training slices with elastic deformations on a GPU; ours are on 5 held-out training slices, for a",
        "smaller network trained for minutes on a CPU. The definitions follow the challenge's reference code",
        "(Fiji's `trainableSegmentation.metrics`): each error is the lowest over thresholds 0.1-0.9 on the",
        "cell probability; Rand error is 1 minus the foreground-restricted Rand F-score of 4-connected cells;",
        "warping error is the share of pixels still wrong after a topology-preserving warp of the truth",
        "(Jain et al. 2010). Details: `src/unetkit/metrics/isbi.py`.",
        "",
        f"Other scores of the same evaluation: cell Dice {r['dice']['cell']:.4f}, membrane Dice {r['dice']['membrane']:.4f}, "
        f"boundary F1 at {r['boundary']['tolerance']:g} px {r['boundary']['f1']['mean']:.4f} (mean over classes), "
        f"HD95 {r['boundary']['hd95']['mean']:.2f} px (mean over classes).",
    ]
    publish("isbi-metrics", lines)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
