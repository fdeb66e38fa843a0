"""How fast this machine trains a candidate network: the planner's only measurement of the hardware.

A few optimizer steps on random tensors of the candidate's patch and batch, in the layout and arithmetic that
training will use (channels-last on the CPU; ``precision`` as resolved for this machine). Measured, never
assumed: the same network's step can differ 2x between two CPUs of this project's machines.
"""

from __future__ import annotations

import time

import torch

from unetkit.losses import segmentation_loss
from unetkit.models.config import ModelConfig, context, input_size_for_output
from unetkit.models.unet import build_model
from unetkit.runtime import autocast, resolve_precision, set_threads

STEPS = 2  # timed steps, after one warm-up step that picks and caches the kernels
TIMED_BATCH = 2  # patches timed per step; a CPU's step time grows in proportion to the batch beyond this
TIMED_SIDE = 256  # largest patch side timed; a larger patch's step is scaled by its pixels (convolutions cost per pixel)


class StepTimer:
    """Seconds per training step of candidate networks for data of ``in_channels`` and ``num_classes``;
    each candidate is measured once (:meth:`__call__` takes the planner's option dict), on at most
    :data:`TIMED_BATCH` patches of at most :data:`TIMED_SIDE` pixels, and scaled to its batch and patch, so that
    planning costs seconds, not minutes."""

    def __init__(self, in_channels: int, num_classes: int, threads: int | None = None, precision: str = "auto") -> None:
        self.in_channels, self.num_classes = in_channels, num_classes
        self.threads, self.precision = threads, precision
        self.seen: dict[tuple, float] = {}

    def __call__(self, options: dict) -> float:
        key = tuple(sorted(options.items()))
        if key not in self.seen:
            self.seen[key] = self.measure(options)
        return self.seen[key]

    def measure(self, options: dict) -> float:
        set_threads(self.threads)
        shape = {k: options[k] for k in ("base_channels", "depth", "padding", "norm", "up_mode", "encoder") if k in options}
        config = ModelConfig(in_channels=self.in_channels, num_classes=self.num_classes, **shape)
        torch.manual_seed(0)
        net = build_model(config).to(memory_format=torch.channels_last)
        side = min(options["patch_size"], TIMED_SIDE)
        size = input_size_for_output(side, config.depth, config.padding)
        out = size - context(config.depth, config.padding)
        batch = min(options["batch_size"], TIMED_BATCH)
        x = torch.randn(batch, config.in_channels, size, size).contiguous(memory_format=torch.channels_last)
        target = torch.randint(0, config.num_classes, (batch, out, out))
        optimizer = torch.optim.Adam(net.parameters(), lr=1e-4)
        device = torch.device("cpu")
        precision = resolve_precision(self.precision, device)

        def step() -> None:
            optimizer.zero_grad(set_to_none=True)
            with autocast(device, precision):
                logits = net(x)
            segmentation_loss(logits.float(), target, "ce+dice").backward()
            optimizer.step()

        step()
        start = time.perf_counter()
        for _ in range(STEPS):
            step()
        scale = options["batch_size"] / batch * (input_size_for_output(options["patch_size"], config.depth, config.padding) / size) ** 2
        return (time.perf_counter() - start) / STEPS * scale
