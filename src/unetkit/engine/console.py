"""What a failed command prints and the status it exits with, also as one of several torchrun workers.

Every rank of a run reaches the same errors (a bad option, an interruption), so those print once, on rank
0; the other ranks write them into torchrun's error file, which torchrun's failure report (and the
``--nproc`` launcher) reads. A worker that stopped only because another one failed says so in that file
and exits with :data:`PEER_LOST`, so the launcher can name the root cause.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import torch.distributed as dist

from unetkit.engine.distributed import env_rank, env_world_size
from unetkit.errors import TrainingInterrupted, UnetkitError, WorkersFailed

PEER_LOST = 3
"""Exit status of a worker that stopped because another worker of its run failed (not the root cause)."""


def exit_code(error: BaseException, debug: bool) -> int:
    """Print the one line for ``error`` and return the command's exit status; re-raise what has no line.

    ``WorkersFailed``: its line (unless rank 0 printed it), its status. ``TrainingInterrupted``: "unetkit:
    interrupted: ...", 130. ``UnetkitError``: "unetkit: error: ...", 2 (re-raised with ``debug``).
    ``KeyboardInterrupt``: "unetkit: interrupted", 130. Any other exception is re-raised, unless it follows
    from another process of the run failing: then :func:`report_lost_peer`.

    Example:
        >>> try:  # doctest: +SKIP
        ...     unetkit.train(data="data/")
        ... except BaseException as error:
        ...     raise SystemExit(exit_code(error, debug=False))
    """
    if isinstance(error, WorkersFailed):  # unetkit train --nproc: one line for the run, unless rank 0 printed it
        if error.line:
            print(error.line, file=sys.stderr)
        return error.exit_code
    if isinstance(error, TrainingInterrupted):
        print_once(f"unetkit: interrupted: {error}")  # under torchrun: on rank 0 only
        return 130
    if isinstance(error, UnetkitError):
        if debug:
            raise error
        print_once(f"unetkit: error: {error}")
        return 2
    if isinstance(error, KeyboardInterrupt):
        print("unetkit: interrupted", file=sys.stderr)
        return 130
    if isinstance(error, Exception) and not debug and lost_peer(error):
        return report_lost_peer(error)  # another worker failed: torchrun (or --nproc) reports that one
    raise error


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


def _error_file(line: str, printed: bool) -> bool:
    """Write ``line`` into torchrun's error file for this worker (torchrun's failure report shows it); ``printed``
    tells the ``--nproc`` launcher that it is on the console already."""
    path = os.environ.get("TORCHELASTIC_ERROR_FILE")
    if not path:
        return False
    Path(path).write_text(json.dumps({"message": line, "timestamp": int(time.time()), "printed": printed}))
    return True
