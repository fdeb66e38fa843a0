"""Where a training run starts: a new configuration, or the state of an interrupted run (``--resume``, or a
torchrun restart after a worker failure)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from unetkit.commands import TrainRun
from unetkit.config import TrainConfig, given_options, make_config
from unetkit.engine.distributed import env_rank
from unetkit.engine.planned import plan_run, write_plan
from unetkit.engine.run_folder import RunFolder
from unetkit.errors import UnetkitError
from unetkit.outputs import refuse_holding, refuse_inside


#: Options that fix the network's shape: a resumed run keeps its own.
MODEL_OPTIONS = ("model_size", "base_channels", "depth", "padding", "norm", "up_mode", "encoder", "target")
#: Options whose change can cure a non-finite loss (see Trainer._divergence_causes); one must change to resume it.
REMEDIES = ("lr", "optimizer", "class_weights", "precision", "loss", "norm", "momentum", "weight_decay", "schedule")


def resume_config(run_dir: str | Path, force: bool = False, **overrides) -> tuple[TrainConfig, dict]:
    """The configuration and full training state of an interrupted run, for ``train --resume``.

    ``overrides`` may change the budget (``epochs``, ``time``), the learning rate and runtime options, not
    the network (:data:`MODEL_OPTIONS`) nor the folder (``out``). A run that stopped on a non-finite loss is
    refused unless an option of :data:`REMEDIES` changes, or ``force``.
    """
    folder = RunFolder(run_dir)
    if not folder.path.is_dir():
        raise UnetkitError(f"--resume {folder.path}: no such folder; pass a run folder (unetkit runs lists them)")
    if not folder.last.is_file():
        status = folder.read_status().get("status")
        why = f" (status: {status})" if status else ""
        again = "--overwrite" if folder.holds_run() else "the same --out"
        raise UnetkitError(f"--resume {folder.path}: no last.pt to resume from{why}; start a new run with {again} (no epoch "
                           "was saved there), or choose another --out")
    ckpt = folder.load_last()
    if "progress" not in ckpt or not isinstance(ckpt["meta"].get("train_config"), dict):
        raise UnetkitError(f"{folder.last}: holds no training state (was it written by unetkit train?); start a new run")
    before = dict(ckpt["meta"]["train_config"])
    given = {k: v for k, v in overrides.items() if v is not None}
    out = given.pop("out", None)
    if out is not None and Path(out).resolve() != folder.path.resolve():
        raise UnetkitError(f"--resume {folder.path} continues the run in its own folder; drop --out {out} (copy the folder first to "
                           "continue a copy)")
    changed = [k for k in MODEL_OPTIONS if k in given and given[k] != before.get(k)]
    if changed:
        k = changed[0]
        raise UnetkitError(f"--resume {folder.path}: --{k.replace('_', '-')} {given[k]} would change the network of the run "
                           f"({k}: {before.get(k)}); drop it, or start a new run with another --out")
    cfg = make_config(**{**before, **given, "out": str(folder.path)})
    status = folder.read_status()
    if status.get("status") == "nan" and not force and _same(make_config(**{**before, "out": str(folder.path)}), cfg):
        causes = status.get("causes") or ["the learning rate"]
        raise UnetkitError(
            f"--resume {folder.path}: the run stopped on a non-finite loss at epoch {status.get('epoch', '?')}, step "
            f"{status.get('step', '?')} (likely: {causes[0]}); change what caused it (--lr, --class-weights, --precision), "
            "or pass --force to retry as it was"
        )
    return cfg, ckpt


def _same(before: TrainConfig, after: TrainConfig) -> bool:
    """Whether no option of :data:`REMEDIES` changed (the learning rate compared as resolved)."""
    return before.resolved_lr == after.resolved_lr and all(getattr(before, k) == getattr(after, k) for k in REMEDIES if k != "lr")


def check_resumable(meta: dict, channels: int, classes: list[str], cfg: TrainConfig) -> None:
    """Refuse to continue a run whose checkpoint (``meta``) was trained on other channels or classes than this data.

    Raises:
        UnetkitError: naming the run folder, the data, and both sides.
    """
    was = (meta.get("model", {}).get("in_channels"), list(meta.get("classes", [])))
    if was != (channels, list(classes)):
        own = meta.get("train_config", {}).get("data") == cfg.data
        fix = "restore the data set it was trained on" if own else "resume on the run's own data (drop --data)"
        raise UnetkitError(f"--resume {cfg.out}: the run was trained on {was[0]} channel(s) and classes {', '.join(map(str, was[1]))}, "
                           f"but the data {cfg.data} has {channels} channel(s) and classes {', '.join(classes)}; {fix}, or start "
                           "a new run with another --out")


def resolve_run(start: TrainRun, options: dict) -> tuple[TrainConfig, dict | None]:
    """The configuration a ``train`` call runs and the state it continues from (None for a new run).

    A new run takes the defaults, then the ``start.config`` file, then ``options``; ``start.resume`` continues
    a run folder with ``options`` on top (see :func:`resume_config`). Under torchrun with ``--max-restarts``, a
    worker that torchrun restarted continues from the last.pt its own job wrote instead of starting over. A
    new run is refused in a folder that holds one, or files that are not a run's, unless ``start.overwrite``
    (see :func:`refuse_taken_folder`).
    """
    if start.resume is not None:
        if start.config is not None:
            raise UnetkitError("--resume takes the run's own config.yaml; drop --config (flags may still override options)")
        if start.overwrite:
            raise UnetkitError(f"--resume {start.resume} continues a run and --overwrite starts a new one there; drop one of them")
        return resume_config(start.resume, force=start.force, **options)
    cfg = make_config(start.config, **options)
    folder = RunFolder(cfg.out)
    if restarted_from(folder):
        return resume_config(cfg.out, force=start.force, **options)
    refuse_data_folder(cfg.out, cfg.data, cfg.val)
    refuse_taken_folder(folder, start)
    return planned_config(cfg, start, options, folder), None


def planned_config(cfg: TrainConfig, start: TrainRun, options: dict, folder: RunFolder) -> TrainConfig:
    """``cfg`` with the plan's options under the given ones when ``model_size`` is auto (the plan then goes to the
    run folder's plan.yaml); as it is for a preset (an earlier plan.yaml is removed, so none misleads)."""
    if cfg.model_size != "auto":
        folder.plan.unlink(missing_ok=True)
        return cfg
    run_plan = plan_run(cfg, given_options(start.config, **options), progress=cfg.progress)
    planned = make_config(start.config, planned=run_plan.plan.options, **options)
    if env_rank() == 0:
        print("unetkit: " + "\n  ".join(run_plan.lines()), file=sys.stderr)
        folder.prepare()
        write_plan(run_plan, folder.plan)
    return planned


def refuse_data_folder(out: str | Path, *data: str | Path | None) -> None:
    """Refuse an output folder that is, or holds, a data set (folder or dataset.yaml), or lies in its images or masks
    (overwrite or not)."""
    for given in filter(None, data):
        path = Path(given)
        root = path.parent if path.is_file() else path
        refuse_holding(out, [path], "--out")
        refuse_inside(out, [root / "images", root / "masks"], "--out")


def refuse_taken_folder(folder: RunFolder, start: TrainRun) -> None:
    """Refuse a new run in ``--out`` where it would replace an earlier run, or files that are not a run's, unless ``--overwrite``.

    A folder whose run never finished an epoch (config.yaml and status.json only) is taken over: nothing in it
    would be lost. A config.yaml without a status.json is someone's own file (perhaps the ``--config`` file).
    """
    if folder.path.exists() and not folder.path.is_dir():
        raise UnetkitError(f"--out {folder.path} is a file, not a folder; choose another --out")
    if start.overwrite:
        return
    if folder.holds_run():
        held = ", ".join(p.name for p in folder.run_files())
        resume = f"continue it with --resume {folder.path}, " if folder.last.is_file() else ""
        raise UnetkitError(f"--out {folder.path} already holds a run ({held}); {resume}start over there with --overwrite, or choose another --out")
    if folder.config.is_file() and not folder.status.is_file():
        mine = start.config is not None and Path(start.config).resolve() == folder.config.resolve()
        what = "is your --config file" if mine else "is not a run's (no status.json beside it)"
        raise UnetkitError(f"--out {folder.path}: its config.yaml {what}, and a run there would replace it with the resolved options; "
                           f"choose another --out, or pass --overwrite to replace it")


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
