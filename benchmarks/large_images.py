"""Images bigger than memory: streamed prediction speed and peak memory, locally and on 2 Dask workers.

Usage (from the repository root):
    python benchmarks/large_images.py [--sizes 4000,10000,20000] [--workers 2] [--tmp DIR]

For each size N it writes an N x N tiled, zlib-compressed BigTIFF of generated cell images (tile by tile,
into a temporary folder that is deleted afterwards) and a randomly initialised U-Net checkpoint (the
speed of a U-Net does not depend on its weights), then runs, each in its own process,

    unetkit predict --model m.pt imgN.tif --out maskN.tif --tile 512 --batch-size 4 --device cpu --precision fp32
    ... the same with --dask-workers 2

It reports megapixels per second (N * N / wall time of the command, start-up included) and the peak
resident memory (VmHWM) of the predicting process, and with Dask of each worker process, polled from
/proc while they run. The Dask output is checked to be byte for byte the local one.

Rewrites the "large-images" section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import psutil
import tifffile
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from spine import publish

from unetkit.data.synthetic import synthetic_cells
from unetkit.engine.checkpoint import save_checkpoint
from unetkit.models.unet import UNet

MODEL = dict(in_channels=1, num_classes=2, base_channels=8, depth=4, padding="valid")
PREDICT = ["--tile", "512", "--batch-size", "4", "--device", "cpu", "--precision", "fp32", "--no-progress"]
TILE = 256


def write_image(path: Path, size: int, seed: int = 0) -> None:
    """An N x N tiled BigTIFF, written tile by tile from a pool of generated cell tiles (never whole in memory)."""
    rng = np.random.default_rng(seed)
    pool = [synthetic_cells((TILE, TILE), rng)[0] for _ in range(32)]
    picks = rng.integers(0, len(pool), size=(-(-size // TILE)) ** 2)
    tifffile.imwrite(path, (pool[k] for k in picks), shape=(size, size), dtype=np.uint8, tile=(TILE, TILE),
                     compression="zlib", bigtiff=True)  # fmt: skip


def write_model(path: Path) -> None:
    torch.manual_seed(0)
    net = UNet(**MODEL)
    meta = {"model": net.config.to_dict(), "normalization": {"mean": [100.0], "std": [40.0]},
            "classes": ["background", "cell"], "colors": [[0, 0, 0], [255, 255, 255]]}  # fmt: skip
    save_checkpoint(path, net.state_dict(), meta)


def peak_memory(pid: int) -> int | None:
    """Peak resident memory (VmHWM, bytes) of a live process, or None when it is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:"))
    except (OSError, StopIteration):
        return None


def run(cmd: list[str]) -> dict:
    """Run ``cmd``; return its wall time and the peak memory of it and of each of its child processes."""
    start = time.monotonic()
    child = psutil.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    peaks: dict[int, int] = {}
    while child.poll() is None:
        try:
            pids = [child.pid] + [p.pid for p in child.children(recursive=True)]
        except psutil.NoSuchProcess:
            pids = []
        for pid in pids:
            hwm = peak_memory(pid)
            if hwm is not None:
                peaks[pid] = max(peaks.get(pid, 0), hwm)
        time.sleep(0.05)
    seconds = time.monotonic() - start
    if child.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{child.stderr.read().decode()[-2000:]}")
    main = peaks.pop(child.pid, 0)
    return {"seconds": seconds, "main": main, "children": sorted(peaks.values(), reverse=True)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="4000,10000,20000", help="square image sizes in pixels, comma-separated")
    ap.add_argument("--workers", type=int, default=2, help="Dask worker processes (default: 2)")
    ap.add_argument("--tmp", help="folder for the generated images and masks (default: a temporary folder, deleted)")
    args = ap.parse_args()
    if not Path("/proc/self/status").exists():
        raise SystemExit("peak memory is read from /proc: run this on Linux")
    sizes = [int(s) for s in args.sizes.split(",")]
    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}"
    rows = []
    with tempfile.TemporaryDirectory(prefix="unetkit-large-", dir=args.tmp) as tmp:
        tmp = Path(tmp)
        write_model(tmp / "m.pt")
        for size in sizes:
            image = tmp / f"img{size}.tif"
            t0 = time.monotonic()
            write_image(image, size)
            print(f"{size} x {size}: image written in {time.monotonic() - t0:.0f} s ({image.stat().st_size / 2**20:.0f} MB)", flush=True)
            base = [sys.executable, "-m", "unetkit", "predict", "--model", str(tmp / "m.pt"), str(image), *PREDICT]
            local = run([*base, "--out", str(tmp / f"local{size}.tif")])
            dask = run([*base, "--out", str(tmp / f"dask{size}.tif"), "--dask-workers", str(args.workers)])
            same = (tmp / f"local{size}.tif").read_bytes() == (tmp / f"dask{size}.tif").read_bytes()
            mp = size * size / 1e6
            workers = dask["children"][: args.workers]  # the largest children are the workers (nannies are small)
            rows.append(f"| {size} x {size} ({mp:.0f} MP) | {mp / local['seconds']:.2f} | {local['main'] / 2**20:.0f} MB "
                        f"| {mp / dask['seconds']:.2f} | {dask['main'] / 2**20:.0f} MB + {' + '.join(f'{w / 2**20:.0f}' for w in workers)} MB "
                        f"| {'yes' if same else 'NO'} |")  # fmt: skip
            print(rows[-1], flush=True)
            for name in (image, tmp / f"local{size}.tif", tmp / f"dask{size}.tif"):
                name.unlink()
    arch = ", ".join(f"{k} {v}" for k, v in MODEL.items())
    publish("large-images", [
        "## Large images: streamed prediction",
        "",
        f"Command: `python benchmarks/large_images.py --sizes {args.sizes} --workers {args.workers}` ({time.strftime('%Y-%m-%d')}; {machine}).",
        "",
        f"Each image is a square tiled (256 x 256), zlib-compressed BigTIFF of generated cells; the model a U-Net with {arch}",
        f"(random weights: speed does not depend on them). Every run is `unetkit predict --model m.pt IMAGE --out MASK.tif {' '.join(PREDICT)}`,",
        f"locally (torch on all cores) and with `--dask-workers {args.workers}` (a local cluster: {args.workers} worker processes, 1 thread each).",
        "MP/s is image megapixels over the wall time of the whole command, start-up included. Peak memory is the",
        "peak resident set (VmHWM) of the predicting process, and with Dask of the client + each worker.",
        "",
        "| image | local MP/s | local peak memory | Dask MP/s | Dask peak memory (client + workers) | Dask file = local file |",
        "|---|---|---|---|---|---|",
        *rows,
    ])  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
