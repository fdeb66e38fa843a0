"""Hyperparameter search on ISBI 2012: what `unetkit tune` finds in an hour of CPU, against the defaults.

Usage (from the repository root, with ../shared/data present):
    python benchmarks/tune_isbi.py [--minutes 60] [--trials 12] [--out runs/bench-tune]

This is the CLI call

    unetkit tune --data examples/isbi2012/dataset.yaml --trials 12 --time 60 --out runs/bench-tune

(training on slices 0-19, scored on the validation slices 20-24). Trial 0 is the default configuration
with the same per-trial budget as every other trial, so the table compares like with like. Afterwards the
best.pt of trial 0 and of the best trial are scored on the validation slices with unetkit evaluate (per
class). Rewrites the "tune_isbi" section of docs/benchmarks.md. Rerunning with the same --out resumes
the search instead of starting again.

Smoke check of the script (a few minutes, nothing published):
    python benchmarks/tune_isbi.py --minutes 2 --trials 3 --subset --out /tmp/tune-smoke --no-publish
where --subset trains on slices 0-1 and validates on slice 20.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from spine import ISBI, publish

import unetkit

SHARED = (ISBI.parent / ".." / ".." / ".." / "shared" / "data" / "isbi2012").resolve()


def subset_yaml(out: Path) -> Path:
    """A dataset.yaml of ISBI slices 0-1 (train) and 20 (val), for a quick check of this script."""
    spec = yaml.safe_load(ISBI.read_text())
    spec.update(images=str(SHARED / "images"), masks=str(SHARED / "masks"), splits={"train": ["0", "1"], "val": ["20"]})
    out.mkdir(parents=True, exist_ok=True)
    path = out / "subset.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=60.0, help="total search time (default: 60)")
    ap.add_argument("--trials", type=int, default=12, help="trials, each minutes/trials long (default: 12)")
    ap.add_argument("--out", default="runs/bench-tune")
    ap.add_argument("--subset", action="store_true", help="train on slices 0-1, validate on 20: checks the script, measures nothing")
    ap.add_argument("--no-publish", dest="publish", action="store_false", help="print the section, leave docs/benchmarks.md alone")
    args = ap.parse_args()
    if not SHARED.is_dir():
        print(f"{SHARED} not found: nothing to measure", file=sys.stderr)
        return 1
    out = Path(args.out)
    data = subset_yaml(out) if args.subset else ISBI
    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} threads"

    t0 = time.monotonic()
    result = unetkit.tune(data=data, trials=args.trials, time=args.minutes, out=out)
    wall = (time.monotonic() - t0) / 60
    print(result.table)

    rel = os.path.relpath(data, Path.cwd()) if not args.subset else data
    command = f"unetkit tune --data {rel} --trials {args.trials} --time {args.minutes:g} --out {args.out}"
    best_yaml = yaml.safe_load((out / "best.yaml").read_text())
    scored = []
    for label, trial in (("defaults (trial 0)", 0), ("best found", result.best_trial)):
        s = unetkit.evaluate(model=out / f"trial_{trial:03d}" / "best.pt", data=data, split="val", progress=False)
        scored.append((label, trial, s["dice"]))
    classes = [k for k in scored[0][2] if k != "mean"]
    params = ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in result.best_params.items())
    lines = [
        f"## Hyperparameter search: ISBI 2012 in {args.minutes:g} CPU minutes" + (" (SUBSET SMOKE CHECK, not a measurement)" if args.subset else ""),
        "",
        f"Command: `python benchmarks/tune_isbi.py --minutes {args.minutes:g} --trials {args.trials}` ({time.strftime('%Y-%m-%d')}; {machine}),",
        f"which runs `{command}`: Optuna TPE over learning rate, optimiser, loss, augmentation, base channels and patch size,",
        f"median pruning on the validation mean Dice of each epoch, {best_yaml['time']:.2f} min per trial; trial 0 is the default configuration.",
        "",
        "| configuration | trial | validation mean Dice | " + " | ".join(f"{c} Dice" for c in classes) + " |",
        "|---|---|---|" + "---|" * len(classes),
    ]
    for label, trial, dice in scored:
        lines.append(f"| {label} | {trial} | {dice['mean']:.4f} | " + " | ".join(f"{dice[c]:.4f}" for c in classes) + " |")
    gain = "" if result.default_dice is None else f" ({result.best_dice - result.default_dice:+.4f} over the defaults)"
    lines += [
        "",
        (f"Best parameters: `{params}`{gain}. Trials: {result.complete} complete, {result.pruned} pruned, {result.failed} failed, "
         f"in {wall:.1f} min of wall time. `{args.out}/best.yaml` trains the best configuration again "
         f"(`unetkit train --config {args.out}/best.yaml`). The scores in the table are `unetkit evaluate --split val` of each trial's best.pt."),
        "",
        "All trials (validation mean Dice as measured during training):",
        "",
        result.table,
    ]
    if args.publish:
        publish("tune_isbi", lines)
    else:
        print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
