"""Device, precision and thread selection shared by training and prediction."""

from __future__ import annotations

import contextlib
import time

import torch

from unetkit.errors import UnetkitError
from unetkit.options import PRECISIONS

_FASTEST: dict[str, str] = {}


def resolve_device(device: str = "auto") -> torch.device:
    """``"auto"`` -> the first CUDA device if there is one, else the CPU; otherwise checked as given."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise UnetkitError(f"device={device!r} is not a device; use auto, cpu, cuda or cuda:N") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UnetkitError(f"device={device!r} but CUDA is not available here; use --device cpu")
    return dev


def _cpu_bf16_pays() -> bool:
    """Whether bf16 autocast runs a 64-channel 3x3 convolution (the U-Net's bulk) >= 20% faster than fp32 here.

    CPUs that advertise bf16 differ: with AMX it is several times faster, with AVX512-BF16 alone it can be
    slower than fp32 (docs/benchmarks.md). So it is measured, once per process (~0.2 s), not assumed.
    """
    if not torch.backends.mkldnn.is_available() or not torch.ops.mkldnn._is_mkldnn_bf16_supported():
        return False
    conv = torch.nn.Conv2d(64, 64, 3, padding=1).to(memory_format=torch.channels_last)
    x = torch.randn(2, 64, 96, 96).contiguous(memory_format=torch.channels_last)

    times: dict[bool, list[float]] = {False: [], True: []}
    with torch.inference_mode():
        for i in range(10):  # interleaved, so that load from other processes hits both alike
            bf16 = bool(i % 2)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                t0 = time.perf_counter()
                conv(x)
                times[bf16].append(time.perf_counter() - t0)
    return min(times[True][1:]) < 0.8 * min(times[False][1:])  # first of each: warm-up


def resolve_precision(precision: str, device: torch.device) -> str:
    """``"auto"`` -> the fastest precision that keeps the result: bf16 on CUDA devices that have it, else
    fp16; on the CPU bf16 where it measurably beats fp32, else fp32. Other values are checked and returned."""
    if precision != "auto":
        if precision not in PRECISIONS:
            raise UnetkitError(f"precision={precision!r} is not one of auto, {', '.join(PRECISIONS)}")
        if precision == "fp16" and device.type == "cpu":
            raise UnetkitError("precision=fp16 is for CUDA; on the CPU use bf16 or fp32")
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if device.type != "cpu":
        return "fp32"
    if "cpu" not in _FASTEST:
        _FASTEST["cpu"] = "bf16" if _cpu_bf16_pays() else "fp32"
    return _FASTEST["cpu"]


def autocast(device: torch.device, precision: str):
    """Autocast context for ``precision`` (checked and resolved by :func:`resolve_precision`) on ``device``; a no-op for fp32."""
    precision = resolve_precision(precision, device)
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def set_threads(threads: int | None) -> None:
    if threads is not None:
        if threads < 1:
            raise UnetkitError(f"threads must be >= 1, got {threads}")
        torch.set_num_threads(threads)
