"""Where CPU inference stands against the hardware: GEMM peak, then U-Net forward passes per layout and precision.

Usage: python benchmarks/cpu_inference.py
Rewrites the "cpu-inference" section of docs/benchmarks.md. The start of issue 6's benchmark; peers come later.
"""

from __future__ import annotations

import os
import platform
import sys
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent))
from spine import publish  # noqa: E402

from unetkit.models.config import output_size  # noqa: E402
from unetkit.models.unet import UNet

NETWORKS = [("paper: base 64, depth 5", dict(base_channels=64, depth=5), 572, 1), ("base 32, depth 4", dict(base_channels=32, depth=4), 508, 2)]
MODES = [("fp32, NCHW", False, False), ("fp32, channels_last", True, False), ("bf16 autocast, channels_last", True, True)]


def best_of(fn, repeats: int = 3) -> float:
    fn()  # warm-up: oneDNN picks and caches its kernels
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def gemm_peak(dtype: torch.dtype, n: int = 2048) -> float:
    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    return 2 * n**3 / best_of(lambda: a @ b, 5) / 1e9


def main() -> int:
    torch.manual_seed(0)
    peaks = {"fp32": gemm_peak(torch.float32), "bf16": gemm_peak(torch.bfloat16)}
    rows = []
    for name, kw, size, batch in NETWORKS:
        net = UNet(**kw).eval()
        x = torch.randn(batch, 1, size, size)
        with FlopCounterMode(display=False) as counter, torch.inference_mode():
            net(x)
        gflop = counter.get_total_flops() / 1e9
        out = output_size(size, kw["depth"])
        with torch.inference_mode():
            reference = net(x).argmax(1)
        for mode, channels_last, bf16 in MODES:
            model = net.to(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
            xx = x.contiguous(memory_format=torch.channels_last) if channels_last else x
            with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                seconds = best_of(lambda: model(xx))
                agree = (model(xx).float().argmax(1) == reference).float().mean().item()
            peak = peaks["bf16" if bf16 else "fp32"]
            rows.append(f"| {name}, {batch}x{size}->{out} | {mode} | {seconds:.2f} | {batch * out * out / seconds / 1e6:.3f} | "
                        f"{gflop / seconds:.0f} | {100 * gflop / seconds / peak:.0f}% | {100 * agree:.2f}% |")
    machine = f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} threads"
    lines = [
        "## CPU inference: layout and precision",
        "",
        f"Command: `python benchmarks/cpu_inference.py` ({time.strftime('%Y-%m-%d')}; {machine}).",
        "",
        f"GEMM peak measured first (2048x2048, best of 5): fp32 {peaks['fp32']:.0f} GFLOP/s, bf16 {peaks['bf16']:.0f} GFLOP/s.",
        "Forward passes of randomly initialised networks under `torch.inference_mode`, best of 3 after a warm-up;",
        "GFLOP counted by `torch.utils.flop_counter`; agreement = share of output pixels whose argmax equals fp32 NCHW.",
        "",
        "| network, batch x input -> output | mode | s / pass | megapixels/s | GFLOP/s | of that precision's GEMM peak | argmax agreement |",
        "|---|---|---|---|---|---|---|",
        *rows,
        "",
        "`unetkit predict` uses channels_last on the CPU, and `--precision auto` measures at start-up whether bf16 beats fp32;",
        "on this machine it does not, so fp32 is used.",
    ]
    publish("cpu-inference", lines)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
