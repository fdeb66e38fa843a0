"""Where a training run starts: a new configuration, or the state of an interrupted run (``--resume``, or a
torchrun restart after a worker failure)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from unetkit.commands import TrainRun
from unetkit.config import TrainConfig, make_config
from unetkit.engine.distributed import env_rank
from unetkit.engine.run_folder import RunFolder
from unetkit.errors import UnetkitError


def resume_config(run_dir: str | Path, force: bool = False, **overrides) -> tuple[TrainConfig, dict]:
    """The configuration and full training state of an interrupted run, for ``train --resume``.

    ``overrides`` may change the budget (``epochs``, ``time``), the learning rate and runtime options.
    A run that stopped on a non-finite loss is refused unless the learning rate changes or ``force``.
    """
    folder = RunFolder(run_dir)
    if not folder.last.is_file():
        raise UnetkitError(f"{folder.path}: no last.pt to resume from; start a new run with unetkit train --data ...")
    ckpt = folder.load_last()
    if "progress" not in ckpt:
        raise UnetkitError(f"{folder.last}: holds no training state (was it written by unetkit train?); start a new run")
    values = dict(ckpt["meta"]["train_config"])
    values.update({k: v for k, v in overrides.items() if v is not None})
    values["out"] = str(folder.path)
    cfg = make_config(**values)
    status = folder.read_status()
    if status.get("status") == "nan" and not force and cfg.resolved_lr == status.get("lr_setting"):
        raise UnetkitError(
            f"{folder.path} stopped on a non-finite loss at epoch {status.get('epoch')}, step {status.get('step')}; "
            "resume with a lower --lr, or pass --force to retry as it was"
        )
    return cfg, ckpt


def resolve_run(start: TrainRun, options: dict) -> tuple[TrainConfig, dict | None]:
    """The configuration a ``train`` call runs and the state it continues from (None for a new run).

    A new run takes the defaults, then the ``start.config`` file, then ``options``; ``start.resume`` continues
    a run folder with ``options`` on top (see :func:`resume_config`). Under torchrun with ``--max-restarts``, a
    worker that torchrun restarted continues from the last.pt its own job wrote instead of starting over. A
    new run is refused in a folder that holds one, unless ``start.overwrite``.
    """
    if start.resume is not None:
        if start.config is not None:
            raise UnetkitError("--resume takes the run's own config.yaml; drop --config (flags may still override options)")
        return resume_config(start.resume, force=start.force, **options)
    cfg = make_config(start.config, **options)
    folder = RunFolder(cfg.out)
    if restarted_from(folder):
        return resume_config(cfg.out, force=start.force, **options)
    if folder.holds_run() and not start.overwrite:
        raise UnetkitError(f"{folder.path} already holds a run ({', '.join(p.name for p in folder.run_files())}); continue it with "
                           f"--resume {folder.path}, start over there with --overwrite, or choose another --out")
    return cfg, None


def restarted_from(folder: RunFolder) -> bool:
    """Whether torchrun restarted this worker after a failure (``--max-restarts``) and ``folder``'s last.pt
    was written by this same torchrun job (:func:`~unetkit.engine.distributed.run_meta`), so the run continues
    from it instead of starting over. Rank 0 says so."""
    restarts = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0"))
    if restarts == 0 or not folder.last.is_file() or folder.load_last()["meta"].get("torchrun_id") != os.environ.get("TORCHELASTIC_RUN_ID"):
        return False
    if env_rank() == 0:
        print(f"unetkit: restart {restarts} of {os.environ.get('TORCHELASTIC_MAX_RESTARTS', '?')} after a worker failure: "
              f"resuming from {folder.last}", file=sys.stderr)
    return True
