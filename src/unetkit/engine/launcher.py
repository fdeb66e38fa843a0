"""``unetkit train --nproc N``: N training processes on this machine under torchrun, and one line if they fail.

:func:`launch` resolves and checks the configuration once, writes it with the resume flags into a job
file (:mod:`unetkit.engine.worker`), and runs torchrun's own launcher (``torch.distributed.run``,
``--standalone``) in a child process (:func:`launcher_main`) that starts ``python -m unetkit.engine.worker
JOB`` N times and reports how the workers ended as JSON. A failure becomes one line that names the rank,
its exit status and the checkpoint to resume from. See docs/distributed.md.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

from torch.distributed.elastic.multiprocessing.api import SignalException
from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
from torch.distributed import run as torchrun

from unetkit.commands import TrainRun
from unetkit.engine.console import PEER_LOST
from unetkit.engine.distributed import cpu_cores, env_world_size, under_torchrun
from unetkit.engine.resume import resolve_run
from unetkit.engine.run_folder import RunFolder
from unetkit.engine.trainer import TrainResult
from unetkit.engine.worker import Job, write_job
from unetkit.errors import UnetkitError, WorkersFailed

WORKER = "unetkit.engine.worker"


def launch(start: TrainRun, callbacks, options: dict, callbacks_factory: str | None = None) -> TrainResult:
    """Train in ``nproc`` local processes under torchrun; see :func:`unetkit.train`.

    The configuration is checked here first, so a bad option fails once and before any worker starts.
    Each process gets ``cores // nproc`` threads unless ``OMP_NUM_THREADS`` or ``threads`` says otherwise.

    Args:
        start: How the run starts (``nproc``, ``max_restarts``, ``config``, ``resume``, ...).
        callbacks: Must be empty: callback objects cannot reach the worker processes.
        options: The training options.
        callbacks_factory: ``"module:name"`` of the context manager each worker takes its callbacks from
            (see :class:`~unetkit.engine.worker.Job`).

    Returns:
        The :class:`~unetkit.engine.trainer.TrainResult`, read back from the run's last.pt.

    Raises:
        WorkersFailed: when a worker failed; the message names its rank and exit status and how to resume.
    """
    nproc, max_restarts = start.nproc, start.max_restarts
    if nproc is None:
        raise UnetkitError("--max-restarts needs --nproc N (under torchrun, give --max-restarts to torchrun)")
    if under_torchrun():
        raise UnetkitError(f"--nproc starts torchrun, but this process already runs under it (WORLD_SIZE={env_world_size()}); drop --nproc")
    if nproc < 1 or max_restarts < 0:
        raise UnetkitError(f"--nproc must be >= 1 and --max-restarts >= 0, got {nproc} and {max_restarts}")
    if callbacks:
        raise UnetkitError("callbacks cannot reach the --nproc worker processes; run your script under torchrun instead (docs/distributed.md)")
    cfg, _ = resolve_run(start, options)
    folder = RunFolder(cfg.out)
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", str(max(1, cpu_cores() // nproc)))  # else torchrun sets 1, with a banner
    with tempfile.TemporaryDirectory(prefix="unetkit-launch-") as tmp:
        job, report = Path(tmp) / "job.yaml", Path(tmp) / "report.json"
        write_job(job, Job(cfg, start.resume is not None, start.force, callbacks_factory))
        launcher = subprocess.Popen(launch_command(nproc, max_restarts, report, job), env=env, start_new_session=True)  # Ctrl-C reaches it through _wait only
        terminated = _wait(launcher)
        outcome = json.loads(report.read_text() or "{}") if report.is_file() else {}
    if launcher.returncode != 0 or outcome != {"failures": []}:
        raise failure_message(outcome, folder.path, nproc, terminated)
    return TrainResult.from_progress(folder.path, folder.read_progress())


def launch_command(nproc: int, max_restarts: int, report: Path, job: Path) -> list[str]:
    """The child process that runs torchrun's launcher (as ``torchrun --standalone``) on the worker ``job`` and writes ``report``."""
    launcher = "import sys; from unetkit.engine.launcher import launcher_main; raise SystemExit(launcher_main(sys.argv[1:]))"
    return [sys.executable, "-c", launcher, str(report), "--standalone", "--nproc-per-node", str(nproc),
            "--max-restarts", str(max_restarts), "-m", WORKER, str(job)]  # fmt: skip


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
    last = RunFolder(run_dir).last
    if last.is_file():
        return f"the last checkpoint {last} is intact; continue with: unetkit train --resume {run_dir} --nproc {nproc}"
    return "it failed before the first checkpoint; start the run again"


def launcher_main(argv: list[str]) -> int:
    """``REPORT TORCHRUN_ARGS...``: torchrun (``torch.distributed.run``), reporting how the workers ended.

    Writes ``{"failures": [{"rank", "exitcode", "message", "printed"}, ...]}`` (first observed first;
    ``message`` and ``printed`` from a worker's error file) or ``{"signal": NAME}`` to REPORT. The agent's
    own log lines are silenced: the parent prints one line instead.
    """
    report = Path(argv[0])
    agent_log = logging.getLogger("torch.distributed.elastic")
    agent_log.propagate = False
    agent_log.addHandler(logging.NullHandler())
    try:
        torchrun.run(torchrun.parse_args(argv[1:]))
        outcome: dict = {"failures": []}
    except ChildFailedError as e:
        outcome = {"failures": [
            {"rank": rank, "exitcode": f.exitcode, "message": f.message if f.error_file != "<N/A>" else "",
             "printed": bool(f.error_file_data.get("printed"))}
            for rank, f in e.failures.items()
        ]}  # fmt: skip
    except SignalException as e:
        outcome = {"signal": signal.Signals(e.sigval).name}
    report.write_text(json.dumps(outcome))
    return 0 if outcome == {"failures": []} else 1
