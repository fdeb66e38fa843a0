"""Device, precision and thread selection shared by training and prediction."""

from __future__ import annotations

import contextlib

import torch

from unetkit.errors import UnetkitError

PRECISIONS = ("fp32", "bf16", "fp16")


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


def autocast(device: torch.device, precision: str):
    """Autocast context for ``precision`` on ``device`` (a no-op for fp32)."""
    if precision not in PRECISIONS:
        raise UnetkitError(f"precision={precision!r} is not one of {', '.join(PRECISIONS)}")
    if precision == "fp32":
        return contextlib.nullcontext()
    if precision == "fp16" and device.type == "cpu":
        raise UnetkitError("precision=fp16 is for CUDA; on the CPU use bf16 or fp32")
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def set_threads(threads: int | None) -> None:
    if threads is not None:
        if threads < 1:
            raise UnetkitError(f"threads must be >= 1, got {threads}")
        torch.set_num_threads(threads)
