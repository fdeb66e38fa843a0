"""``python -m unetkit.engine.worker JOB``: one training process of ``unetkit train --nproc N``.

The launcher (:mod:`unetkit.engine.launcher`) writes JOB, a YAML file with the resolved configuration,
whether to resume, and the callbacks to train with, and starts N of these processes under torchrun. Each
trains as one rank (:func:`unetkit.engine.trainer.train`), and fails as the ``unetkit`` command does: one
line and an exit status (:func:`unetkit.engine.console.exit_code`), which the launcher reads back.
"""

from __future__ import annotations

import contextlib
import importlib
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

from unetkit.config import TrainConfig, make_config
from unetkit.engine.console import exit_code
from unetkit.engine.distributed import env_rank
from unetkit.engine.resume import restarted_from, resume_config
from unetkit.engine.run_folder import RunFolder
from unetkit.engine.trainer import TrainResult, train
from unetkit.files import atomic_write


@dataclass
class Job:
    """What every worker of a ``--nproc`` run does.

    Attributes:
        cfg: The resolved configuration.
        resume: Continue the run folder ``cfg.out`` from its last.pt.
        force: Resume even a run that stopped on a non-finite loss.
        callbacks: ``"module:name"`` of a context manager ``name(cfg)`` that yields the callbacks to train with
            (``unetkit.train`` passes the one that adds the trackers and the end-of-run report), or None.
    """

    cfg: TrainConfig
    resume: bool = False
    force: bool = False
    callbacks: str | None = None


def write_job(path: str | Path, job: Job) -> None:
    """The job as YAML: ``resume``, ``force``, ``callbacks`` and the options under ``config``."""
    values = {"resume": job.resume, "force": job.force, "callbacks": job.callbacks, "config": job.cfg.to_dict()}
    with atomic_write(path) as tmp:
        Path(tmp).write_text("# unetkit train --nproc: the job of each worker (python -m unetkit.engine.worker FILE)\n"
                             + yaml.safe_dump(values, sort_keys=False))  # fmt: skip


def read_job(path: str | Path) -> Job:
    values = yaml.safe_load(Path(path).read_text())
    return Job(make_config(**values["config"]), values["resume"], values["force"], values["callbacks"])


def run_job(job: Job) -> TrainResult:
    """Train as one rank of the run; a worker that torchrun restarted continues from the last.pt its job wrote."""
    cfg, state = job.cfg, None
    if job.resume or restarted_from(RunFolder(cfg.out)):
        cfg, state = resume_config(cfg.out, force=job.force, **cfg.to_dict())
    with _callbacks_factory(job.callbacks)(cfg) as callbacks:
        return train(cfg, state, callbacks)


def _callbacks_factory(name: str | None):
    """The context manager ``module:name`` names; None: one that yields no callbacks."""
    if name is None:
        return lambda cfg: contextlib.nullcontext([])
    module, _, attribute = name.partition(":")
    return getattr(importlib.import_module(module), attribute)


def main(argv: list[str] | None = None) -> int:
    """Run the job file ``argv[0]``; returns the exit status. Rank 0 prints the summary line."""
    argv = sys.argv[1:] if argv is None else argv
    try:
        result = run_job(read_job(argv[0]))
    except BaseException as error:  # noqa: BLE001 - one line and an exit status for every failure, as the CLI
        return exit_code(error, debug=False)
    if env_rank() == 0:
        print(result.summary())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
