"""Several processes and machines under torchrun: the process group, collectives, and each rank's batches.

``torchrun --nproc-per-node N -m unetkit train ...`` starts N copies of ``unetkit train`` (``unetkit train
--nproc N`` does it for you: :mod:`unetkit.engine.launcher`); :func:`setup` sees ``WORLD_SIZE > 1`` and
joins them into one process group (gloo on the CPU, nccl on CUDA). At global step ``s`` rank ``r`` trains
on the sampler's batch number ``b + s * W + r`` (``b`` is where the run resumed), so the ranks never share
a patch and the union of all batches of a run is batches ``0, 1, 2, ...`` of one process, whatever the
process counts along the way. Gradients are averaged by DDP; the loss, the validation confusion matrix and
every stop condition (time budget, Ctrl-C/SIGTERM, non-finite loss) are reduced over the ranks, so they all
take the same decisions and none waits alone in a collective. Only rank 0 writes files and calls the
callbacks. See docs/distributed.md.
"""

from __future__ import annotations

import atexit
import math
import os
from collections.abc import Generator
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from unetkit.data.sampler import PatchSampler, batch_iterator
from unetkit.errors import UnetkitError
from unetkit.runtime import resolve_device, set_threads


def env_rank() -> int:
    """This process's global rank under torchrun (0 outside it)."""
    return int(os.environ.get("RANK", "0"))


def env_world_size() -> int:
    """Processes of the run under torchrun (1 outside it)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def cpu_cores() -> int:
    """CPU cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def under_torchrun() -> bool:
    """Whether this process was started by torchrun (or another launcher that sets WORLD_SIZE)."""
    return "WORLD_SIZE" in os.environ or "TORCHELASTIC_RUN_ID" in os.environ


@dataclass
class World:
    """The processes of a run, as one process sees them; ``size == 1`` makes every method a no-op.

    Attributes:
        rank: Global rank of this process, 0..size-1.
        size: Number of processes (the world size W).
        local_size: Processes on this machine.
        device: The device collectives run on (CUDA for nccl).
    """

    rank: int = 0
    size: int = 1
    local_size: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that writes the run folder and calls the callbacks."""
        return self.rank == 0

    def agree(self, *flags: bool) -> list[bool]:
        """Each flag, true on every rank if it is true on any (one all_reduce of MAX)."""
        if self.size == 1:
            return list(flags)
        t = torch.tensor([float(f) for f in flags], device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return [bool(v) for v in t.tolist()]

    def mean(self, value: torch.Tensor) -> float:
        """The mean over ranks of a scalar tensor; non-finite on every rank if it is on any."""
        if self.size == 1:
            return value.item()
        t = value.detach().float().reshape(1).to(self.device)
        dist.all_reduce(t)
        return t.item() / self.size

    def sum(self, array: np.ndarray) -> np.ndarray:
        """The element-wise sum over ranks of an integer array (confusion matrices)."""
        if self.size == 1:
            return array
        t = torch.from_numpy(np.ascontiguousarray(array, dtype=np.int64)).to(self.device)
        dist.all_reduce(t)
        return t.cpu().numpy()

    def broadcast(self, value):
        """Rank 0's ``value`` (any picklable object), on every rank."""
        if self.size == 1:
            return value
        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def seed_step(self, seed: int, batch: int) -> None:
        """Several processes: seed torch's RNG (dropout) from this rank's batch number, so that a resumed run,
        with any number of processes, draws what an uninterrupted one would. One process keeps its saved RNG."""
        if self.size > 1:
            torch.manual_seed(int(np.random.SeedSequence([seed, batch + self.rank]).generate_state(1, np.uint64)[0] >> 1))

    def resume_hint(self) -> str:
        """The flag to add to ``unetkit train --resume RUN`` for the same processes on this one machine."""
        return f" --nproc {self.size}" if self.size > 1 and self.local_size == self.size else ""


def setup(device: str, threads: int | None) -> tuple[World, torch.device]:
    """Join the run's processes when ``WORLD_SIZE > 1`` (torchrun sets it); else a one-process World.

    Under several processes, CUDA means ``cuda:LOCAL_RANK`` and nccl, the CPU gloo. On the CPU, each
    process takes ``cores // processes on this machine`` threads unless ``threads`` is given (torchrun's
    own default is 1 thread).
    """
    size = env_world_size()
    dev = resolve_device(device)
    if size == 1:
        return World(device=dev), dev
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    local_size = int(os.environ.get("LOCAL_WORLD_SIZE", str(size)))
    if dev.type == "cuda":
        if device not in ("auto", "cuda"):
            raise UnetkitError(f"--device {device}: under torchrun each process takes cuda:LOCAL_RANK; pass --device cuda (or auto)")
        dev = torch.device("cuda", local_rank)
        torch.cuda.set_device(dev)
    elif threads is None:
        set_threads(max(1, cpu_cores() // local_size))
    if not dist.is_initialized():  # else a script under torchrun made it, or an earlier train() in this process
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo", device_id=dev if dev.type == "cuda" else None)
        # At exit, not when train() ends: destroyed under a live DistributedDataParallel, gloo was seen to hang.
        atexit.register(_destroy_group)
    return World(rank=dist.get_rank(), size=dist.get_world_size(), local_size=local_size, device=dev), dev


def _destroy_group() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def lr_scale(rule: str, world_size: int) -> float:
    """Learning-rate multiplier of ``lr_scaling`` for ``world_size`` processes: none 1, linear W, sqrt sqrt(W)."""
    return {"none": 1.0, "linear": float(world_size), "sqrt": math.sqrt(world_size)}[rule]


class RankBatches:
    """One rank's view of a :class:`PatchSampler`: its batch ``i`` is the sampler's batch ``offset + i * size + rank``.

    Picklable, so ``batch_iterator``'s worker processes can draw from it.
    """

    def __init__(self, sampler: PatchSampler, offset: int, rank: int, size: int) -> None:
        self.sampler, self.offset, self.rank, self.size = sampler, offset, rank, size

    def batch(self, n: int, index: int):
        return self.sampler.batch(n, self.offset + index * self.size + self.rank)


def batches(sampler: PatchSampler, batch_size: int, first: int, workers: int, world: World) -> Generator:
    """This rank's endless batches, global step by step, starting at the sampler's batch number ``first``; ``close()``
    ends the sampling processes."""
    if world.size == 1:
        return batch_iterator(sampler, batch_size, first, workers)
    return batch_iterator(RankBatches(sampler, first, world.rank, world.size), batch_size, 0, workers)


def continue_progress(progress: dict, steps_per_epoch: int, world: World) -> None:
    """Fit a saved training position to this run's process count (in place).

    ``progress["batches"]`` (the sampler's next batch number) carries over exactly. Step counters are in
    global steps; when the steps per epoch changed (the default steps per epoch depends on the global
    batch, so on the process count), they are rescaled so that the run keeps its place within the epoch
    and the learning-rate schedule.
    """
    progress.setdefault("batches", progress["step"])
    before = progress.get("steps_per_epoch", steps_per_epoch)
    if before != steps_per_epoch:
        ratio = steps_per_epoch / before
        progress["step"] = round(progress["step"] * ratio)
        progress["epoch_step"] = min(round(progress["epoch_step"] * ratio), steps_per_epoch)
    progress.update(steps_per_epoch=steps_per_epoch, world_size=world.size)


def wrap(model: nn.Module, world: World, device: torch.device) -> nn.Module:
    """``model`` in DistributedDataParallel under several processes (gradients averaged in backward), else itself."""
    if world.size == 1:
        return model
    return nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


def run_meta() -> dict:
    """Checkpoint metadata that ties a last.pt to the torchrun job that wrote it (empty outside torchrun)."""
    run_id = os.environ.get("TORCHELASTIC_RUN_ID")
    return {"torchrun_id": run_id} if run_id else {}
