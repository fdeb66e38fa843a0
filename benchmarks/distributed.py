"""Training throughput in 1 and 2 processes on this machine (DistributedDataParallel over gloo).

Usage (from the repository root; about 5 minutes on 2 cores with the defaults):
    python benchmarks/distributed.py [--steps 30] [--batch-size 4] [--tmp DIR]

Trains the default CPU network (model_size cpu: base 32, depth 4, 128-pixel patches) on generated cells,
each run in its own process with every other option at its default:

    unetkit train --data D --val V --epochs 3 --steps-per-epoch STEPS --val-every 3 ...            (1 process)
    unetkit train --nproc 2 --data D --val V --epochs 3 --steps-per-epoch STEPS --val-every 3 ...  (2 processes)

and times the second epoch from metrics.csv (the first warms up, the third validates): optimizer steps per
second and patches per second (steps/s x the global batch, batch_size x processes). Each process gets
cores / processes torch threads (unetkit's default under several processes; one process takes them all).

Rewrites the "distributed" section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import csv
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from spine import publish

from unetkit.data.synthetic import make_dataset
from unetkit.engine.distributed import cpu_cores

OPTIONS = ["--model-size", "cpu", "--epochs", "3", "--val-every", "3", "--progress", "false", "--report", "false", "--save-every", "0"]


def train(nproc: int, data: Path, val: Path, out: Path, steps: int, batch_size: int) -> dict:
    """One run in its own process; steps/s and patches/s over its second epoch."""
    launch = ["--nproc", str(nproc)] if nproc > 1 else []
    cmd = [sys.executable, "-m", "unetkit", "train", *launch, "--data", str(data), "--val", str(val), "--out", str(out), "--overwrite",
           "--steps-per-epoch", str(steps), "--batch-size", str(batch_size), *OPTIONS]  # fmt: skip
    t0 = time.monotonic()
    done = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{done.stderr[-2000:]}")
    rows = list(csv.DictReader((out / "metrics.csv").open()))
    seconds = float(rows[1]["time_s"]) - float(rows[0]["time_s"])  # epoch 2: training steps only (and epoch 1's files)
    return {"steps/s": steps / seconds, "patches/s": steps * batch_size * nproc / seconds, "wall": time.monotonic() - t0}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=30, help="optimizer steps per epoch; the second of 3 epochs is timed (default: 30)")
    ap.add_argument("--batch-size", type=int, default=4, help="patches per process and step (default: 4)")
    ap.add_argument("--tmp", help="folder for the data and runs (default: a temporary folder, deleted)")
    args = ap.parse_args()
    cores = cpu_cores()
    machine = f"{platform.processor() or platform.machine()}, {cores} cores, torch {torch.__version__}"
    results = {}
    with tempfile.TemporaryDirectory(prefix="unetkit-distributed-", dir=args.tmp) as tmp:
        tmp = Path(tmp)
        data = make_dataset(tmp / "data", 8, [(256, 256), (192, 320)], seed=0)
        val = make_dataset(tmp / "val", 1, [(96, 96)], seed=1)  # tiny: the timed epoch does not validate anyway
        for nproc in (1, 2):
            results[nproc] = train(nproc, data, val, tmp / f"run{nproc}", args.steps, args.batch_size)
            print(f"{nproc} process(es): {results[nproc]['steps/s']:.3f} steps/s, {results[nproc]['patches/s']:.2f} patches/s "
                  f"({results[nproc]['wall']:.0f} s wall)", flush=True)
    one, two = results[1], results[2]
    command = f"python benchmarks/distributed.py --steps {args.steps} --batch-size {args.batch_size}"
    publish("distributed", [
        "## Several processes: DistributedDataParallel on one machine",
        "",
        f"Command: `{command}` ({time.strftime('%Y-%m-%d')}; {machine}; the whole run took "
        f"{(one['wall'] + two['wall']) / 60:.1f} min).",
        "",
        "The default CPU network (base 32, depth 4, 128-pixel patches, Adam, every option at its default) on generated",
        f"cells, `--batch-size {args.batch_size}` per process, timed over the second of 3 epochs of {args.steps} optimizer steps.",
        f"`--nproc 2` runs 2 processes under torchrun (gloo over loopback), {max(1, cores // 2)} torch thread(s) each; 1 process takes all {cores}.",
        "",
        "| processes | global batch | optimizer steps/s | patches/s | patches/s vs 1 process |",
        "|---|---|---|---|---|",
        f"| 1 (`unetkit train`) | {args.batch_size} | {one['steps/s']:.3f} | {one['patches/s']:.2f} | 1.00x |",
        f"| 2 (`unetkit train --nproc 2`) | {2 * args.batch_size} | {two['steps/s']:.3f} | {two['patches/s']:.2f} | "
        f"{two['patches/s'] / one['patches/s']:.2f}x |",
        "",
        f"What this means on {cores} cores: the processes do not add compute, they split the same cores (each gets its",
        "share of the threads, and its patch-sampling worker runs beside it), and every step adds an all-reduce of the",
        "gradients (about 8 MB for this network) over loopback. The ratio above therefore compares how well one",
        f"{max(1, cores // 2)}-thread process per half of the machine uses it against one {cores}-thread process; it is not a",
        "scaling figure. Several processes pay where each has hardware of its own: one process per GPU, or per",
        "machine (README: Several processes and machines). On the CPU they also double the patches per optimizer",
        "step, which changes the training itself (see `--lr-scaling`), not only its speed.",
    ])  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
