"""Several processes and machines: DistributedDataParallel under torchrun, and the ``--nproc`` launcher.

Worker side. ``torchrun --nproc-per-node N -m unetkit train ...`` starts N copies of ``unetkit train``;
:func:`setup` sees ``WORLD_SIZE > 1`` and joins them into one process group (gloo on the CPU, nccl on
CUDA). At global step ``s`` rank ``r`` trains on the sampler's batch number ``b + s * W + r`` (``b``
is where the run resumed), so the ranks never share a patch and the union of all batches of a run is
batches ``0, 1, 2, ...`` of one process, whatever the process counts along the way. Gradients are
averaged by DDP; the loss, the validation confusion matrix and every stop condition (time budget,
Ctrl-C/SIGTERM, non-finite loss) are reduced over the ranks, so they all take the same decisions and
none waits alone in a collective. Only rank 0 writes files and calls the callbacks.

Launcher side. ``unetkit train --nproc N`` runs torchrun's own launcher (``torch.distributed.run``,
``--standalone``) in a child process (:func:`launcher_main`), which reports how the
workers ended as JSON; :func:`launch` turns a failure into one line that names the rank, its exit
status and the checkpoint to resume from. See docs/distributed.md.
"""

from __future__ import annotations

import atexit
import json
import logging
import math
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from unetkit.data.sampler import PatchSampler, batch_iterator
from unetkit.errors import UnetkitError
from unetkit.runtime import resolve_device, set_threads

PEER_LOST = 3
"""Exit status of a worker that stopped because another worker of its run failed (not the root cause)."""


# ----------------------------------------------------------------------------------------------------
# The worker side


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


def batches(sampler: PatchSampler, batch_size: int, first: int, workers: int, world: World) -> Iterator:
    """This rank's endless batches, global step by step, starting at the sampler's batch number ``first``."""
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


class _SumOverRanks(torch.autograd.Function):
    """The element-wise sum over ranks; in backward, likewise the sum of the gradients (each rank's loss
    depends on every rank's input through it)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        x = x.clone()
        dist.all_reduce(x)
        return x

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.clone()
        dist.all_reduce(grad)
        return grad


class CpuSyncBatchNorm(nn.BatchNorm2d):
    """BatchNorm2d whose training statistics are those of the global batch, for gloo on the CPU.

    ``torch.nn.SyncBatchNorm`` runs on GPUs only. This computes the same thing in two passes (the global
    mean, then the global mean squared deviation), each a sum over ranks that also sums the gradients in
    backward. Evaluation uses the running statistics, like BatchNorm2d; the state dict is BatchNorm2d's.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or not dist.is_initialized():
            return super().forward(x)
        all_reduce = _SumOverRanks.apply
        xf = x.float()  # (N, C, H, W); statistics in fp32 also under bf16 autocast
        local = torch.cat([xf.sum((0, 2, 3)), xf.new_tensor([xf.numel() // xf.shape[1]])])  # (C + 1,) sums, count
        total = all_reduce(local)
        count = total[-1].detach()
        mean = total[:-1] / count  # (C,)
        centred = xf - mean[None, :, None, None]
        var = all_reduce((centred * centred).sum((0, 2, 3))) / count  # (C,) biased, as BatchNorm2d normalises
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked += 1
                factor = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                self.running_mean.mul_(1 - factor).add_(mean.detach(), alpha=factor)
                self.running_var.mul_(1 - factor).add_(var.detach() * count / (count - 1), alpha=factor)
        y = centred * torch.rsqrt(var + self.eps)[None, :, None, None]
        if self.affine:
            y = y * self.weight[None, :, None, None] + self.bias[None, :, None, None]
        return y.to(x.dtype)


def _to_cpu_sync(module: nn.Module) -> nn.Module:
    if isinstance(module, nn.BatchNorm2d):
        synced = CpuSyncBatchNorm(module.num_features, module.eps, module.momentum, module.affine, module.track_running_stats)
        synced.load_state_dict(module.state_dict())
        return synced
    for name, child in module.named_children():
        setattr(module, name, _to_cpu_sync(child))
    return module


def sync_batchnorm(model: nn.Module, world: World, device: torch.device) -> nn.Module:
    """``--sync-bn``: batch norm over the global batch (torch's SyncBatchNorm on CUDA, :class:`CpuSyncBatchNorm` on the CPU)."""
    if world.size == 1:
        warnings.warn("sync_bn has no effect in a single process; it shares batch statistics between torchrun processes", stacklevel=2)
        return model
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return _to_cpu_sync(model)


def wrap(model: nn.Module, world: World, device: torch.device) -> nn.Module:
    """``model`` in DistributedDataParallel under several processes (gradients averaged in backward), else itself."""
    if world.size == 1:
        return model
    return nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


def lost_peer(error: BaseException | None) -> bool:
    """Whether ``error`` (or one it arose from) follows from another process of the run failing: a collective
    whose peer is gone, or a patch-sampling worker terminated by torchrun (it ends the survivors' process
    groups with SIGTERM)."""
    if env_world_size() == 1:
        return False
    while error is not None:
        text = str(error)
        if isinstance(error, dist.DistError) or "gloo/transport" in text or ("DataLoader worker" in text and "Terminated" in text):
            return True
        error = error.__cause__ or error.__context__
    return False


def _error_file(line: str, printed: bool) -> bool:
    """Write ``line`` into torchrun's error file for this worker (torchrun's failure report shows it); ``printed``
    tells the ``--nproc`` launcher that it is on the console already."""
    path = os.environ.get("TORCHELASTIC_ERROR_FILE")
    if not path:
        return False
    Path(path).write_text(json.dumps({"message": line, "timestamp": int(time.time()), "printed": printed}))
    return True


def print_once(line: str) -> None:
    """Print a message that every rank reaches (a bad option, an interruption) once: on rank 0.

    The other ranks put it in torchrun's error file, so it still shows should it be theirs alone; rank 0
    records it there too, since torchrun may end rank 0 as soon as another rank exits.
    """
    if env_rank() == 0:
        print(line, file=sys.stderr, flush=True)
        _error_file(line, printed=True)
    elif not _error_file(line, printed=False):
        print(line, file=sys.stderr)


def report_lost_peer(error: BaseException) -> int:
    """A worker whose peer died: its own note goes to torchrun's report, not the console; returns its exit status."""
    line = f"unetkit: error: rank {env_rank()} stopped: another process of the run failed ({str(error).strip().splitlines()[0][:200]})"
    if not _error_file(line, printed=False):
        print(line, file=sys.stderr)
    return PEER_LOST


def resume_after_restart(resume: str | Path | None, config: str | Path | None, options: dict) -> tuple:
    """``(resume, config)`` for this worker: after torchrun restarted the workers (``--max-restarts``),
    continue from the last.pt this same torchrun job wrote, if any, instead of starting over."""
    from unetkit.config import make_config
    from unetkit.engine.checkpoint import load_checkpoint

    if resume is not None or int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")) == 0:
        return resume, config
    run_dir = Path(make_config(config, **options).out)
    last = run_dir / "last.pt"
    if last.is_file() and load_checkpoint(last)["meta"].get("torchrun_id") == os.environ.get("TORCHELASTIC_RUN_ID"):
        if env_rank() == 0:
            print(f"unetkit: restart {os.environ['TORCHELASTIC_RESTART_COUNT']} of {os.environ.get('TORCHELASTIC_MAX_RESTARTS', '?')} "
                  f"after a worker failure: resuming from {last}", file=sys.stderr)
        return run_dir, None
    return resume, config


def run_meta() -> dict:
    """Checkpoint metadata that ties a last.pt to the torchrun job that wrote it (empty outside torchrun)."""
    run_id = os.environ.get("TORCHELASTIC_RUN_ID")
    return {"torchrun_id": run_id} if run_id else {}


# ----------------------------------------------------------------------------------------------------
# The launcher side: unetkit train --nproc N


class WorkersFailed(UnetkitError):
    """The workers of ``--nproc`` ended with an error.

    Attributes:
        exit_code: Status for the command: 2 for a bad input, 130 for an interruption, 1 for a crash.
        line: What the command prints, or None when rank 0 printed it already.
    """

    def __init__(self, message: str, exit_code: int, line: str | None) -> None:
        super().__init__(message)
        self.exit_code, self.line = exit_code, line


def train_argv(config: str | Path | None, resume: str | Path | None, force: bool, options: dict) -> list[str]:
    """The ``unetkit train`` arguments that give a worker these API arguments (``--nproc`` is never among them)."""
    args = ["train"]
    if config is not None:
        args += ["--config", str(config)]
    if resume is not None:
        args += ["--resume", str(resume)]
    if force:
        args.append("--force")
    for key, value in options.items():
        if value is None:
            continue
        if isinstance(value, bool):
            value = str(value).lower()
        elif isinstance(value, (list, tuple)):
            value = ",".join(str(v) for v in value)
        args += [f"--{key.replace('_', '-')}", str(value)]
    return args


def launch_command(nproc: int, max_restarts: int, report: Path, worker_args: list[str]) -> list[str]:
    """The child process that runs torchrun's launcher (as ``torchrun --standalone``) and writes ``report``."""
    launcher = "import sys; from unetkit.engine.distributed import launcher_main; raise SystemExit(launcher_main(sys.argv[1:]))"
    return [sys.executable, "-c", launcher, str(report), "--standalone", "--nproc-per-node", str(nproc),
            "--max-restarts", str(max_restarts), "-m", "unetkit", *worker_args]


def _wait(proc: subprocess.Popen) -> bool:
    """Wait for the launcher; returns whether a second Ctrl-C (or SIGTERM) made it terminate the workers.

    The first one is passed on as SIGINT, which torchrun forwards to the workers' process groups: the
    workers stop at a step boundary, rank 0 saves, and the patch-sampling processes ignore it. A second
    one is passed on as SIGTERM, which ends everything at once (torchrun kills what is left after 30 s).
    """
    if threading.current_thread() is not threading.main_thread():
        proc.wait()
        return False
    signals = {"n": 0}

    def forward(signum, frame) -> None:
        signals["n"] += 1
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT if signals["n"] == 1 else signal.SIGTERM)

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        proc.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return signals["n"] > 1


def failure_message(outcome: dict, run_dir: Path, nproc: int, terminated: bool = False) -> WorkersFailed:
    """The error for workers that did not all finish, from the launcher's report, with the one line to print.

    Args:
        outcome: ``{"failures": [{"rank", "exitcode", "message", "printed"}, ...]}`` (first observed first)
            or ``{"signal": NAME}`` (Ctrl-C reached torchrun, which stopped every worker; rank 0 said so).
        terminated: A second Ctrl-C ended the workers before they could say anything.
    """
    failures = outcome.get("failures", [])
    codes = {f["exitcode"] for f in failures}
    agreed = 130 if outcome.get("signal") or 130 in codes else 2 if 2 in codes else None  # every rank stopped alike
    if terminated:
        message = f"interrupted twice: the training processes were ended; {_resume_note(run_dir, nproc)}"
        return WorkersFailed(message, 130, f"unetkit: interrupted: {message}")
    if outcome.get("signal") or any(f.get("printed") for f in failures):  # rank 0 printed the line
        return WorkersFailed(f"the training processes stopped (exit {agreed or 1}); rank 0 said why", agreed or 1, None)
    # The root cause: the first failure observed that is not a consequence of another (a lost peer, torchrun's SIGTERM).
    causes = [f for f in failures if f["exitcode"] not in (PEER_LOST, -signal.SIGTERM)] or failures
    if not causes:
        message = f"the training launcher failed (see above); {_resume_note(run_dir, nproc)}"
        return WorkersFailed(message, 1, f"unetkit: error: {message}")
    root = causes[0]
    if root["exitcode"] == agreed and root.get("message"):  # rank 0 was ended before it printed the same line
        return WorkersFailed(root["message"], agreed, root["message"])
    code = root["exitcode"]
    status = f"exit {code}/{signal.Signals(-code).name}" if code < 0 and -code in signal.valid_signals() else f"exit {code}"
    detail = f": {root['message'].removeprefix('unetkit: error: ')}" if root.get("message") else ""
    message = f"training worker failed (rank {root['rank']}, {status}){detail}; {_resume_note(run_dir, nproc)}"
    return WorkersFailed(message, 1, f"unetkit: error: {message}")


def _resume_note(run_dir: Path, nproc: int) -> str:
    last = run_dir / "last.pt"
    if last.is_file():
        return f"the last checkpoint {last} is intact; continue with: unetkit train --resume {run_dir} --nproc {nproc}"
    return "it failed before the first checkpoint; start the run again"


def launch(config: str | Path | None, resume: str | Path | None, force: bool, callbacks, nproc: int | None, max_restarts: int,
           options: dict):
    """``unetkit train --nproc N``: train in N local processes under torchrun; see :func:`unetkit.train`.

    The configuration is checked here first, so a bad option fails once and before any worker starts.
    Each process gets ``cores // N`` threads unless ``OMP_NUM_THREADS`` or ``--threads`` says otherwise.

    Returns:
        The :class:`~unetkit.engine.trainer.TrainResult`, read back from the run's last.pt.

    Raises:
        WorkersFailed: when a worker failed; the message names its rank and exit status and how to resume.
    """
    from unetkit.config import make_config
    from unetkit.engine.checkpoint import load_checkpoint
    from unetkit.engine.trainer import TrainResult, resume_config

    if nproc is None:
        raise UnetkitError("--max-restarts needs --nproc N (under torchrun, give --max-restarts to torchrun)")
    if under_torchrun():
        raise UnetkitError(f"--nproc starts torchrun, but this process already runs under it (WORLD_SIZE={env_world_size()}); drop --nproc")
    if nproc < 1 or max_restarts < 0:
        raise UnetkitError(f"--nproc must be >= 1 and --max-restarts >= 0, got {nproc} and {max_restarts}")
    if callbacks:
        raise UnetkitError("callbacks cannot reach the --nproc worker processes; run your script under torchrun instead (docs/distributed.md)")
    if resume is not None:
        if config is not None:
            raise UnetkitError("--resume takes the run's own config.yaml; drop --config (flags may still override options)")
        cfg, _ = resume_config(resume, force=force, **options)
    else:
        cfg = make_config(config, **options)
    run_dir = Path(cfg.out)
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", str(max(1, cpu_cores() // nproc)))  # else torchrun sets 1, with a banner
    fd, report = tempfile.mkstemp(prefix="unetkit-launch-", suffix=".json")
    os.close(fd)
    report = Path(report)
    try:
        command = launch_command(nproc, max_restarts, report, train_argv(config, resume, force, options))
        launcher = subprocess.Popen(command, env=env, start_new_session=True)  # Ctrl-C reaches it through _wait only
        terminated = _wait(launcher)
        outcome = json.loads(report.read_text() or "{}")
    finally:
        report.unlink(missing_ok=True)
    if launcher.returncode != 0 or outcome != {"failures": []}:
        raise failure_message(outcome, run_dir, nproc, terminated)
    progress = json.loads(load_checkpoint(run_dir / "last.pt")["progress"])
    best = progress["best"]
    return TrainResult(run_dir, best if best >= 0 else None, progress["epoch"], progress["step"], progress["elapsed"], progress["history"])


def launcher_main(argv: list[str]) -> int:
    """``REPORT TORCHRUN_ARGS...``: torchrun (``torch.distributed.run``), reporting how the workers ended.

    Writes ``{"failures": [{"rank", "exitcode", "message", "printed"}, ...]}`` (first observed first;
    ``message`` and ``printed`` from a worker's error file) or ``{"signal": NAME}`` to REPORT. The agent's
    own log lines are silenced: the parent prints one line instead.
    """
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    report = Path(argv[0])
    agent_log = logging.getLogger("torch.distributed.elastic")
    agent_log.propagate = False
    agent_log.addHandler(logging.NullHandler())
    try:
        run(parse_args(argv[1:]))
        outcome: dict = {"failures": []}
    except ChildFailedError as e:
        outcome = {"failures": [
            {"rank": rank, "exitcode": f.exitcode, "message": f.message if f.error_file != "<N/A>" else "",
             "printed": bool(f.error_file_data.get("printed"))}
            for rank, f in e.failures.items()
        ]}
    except SignalException as e:
        outcome = {"signal": signal.Signals(e.sigval).name}
    report.write_text(json.dumps(outcome))
    return 0 if outcome == {"failures": []} else 1
