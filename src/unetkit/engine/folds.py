"""Cross-validation: ``unetkit train --folds K`` trains one run per fold and writes the ensemble of their best
checkpoints, which ``unetkit predict --model RUN_DIR`` loads as one model.

The training pairs (a dataset.yaml's ``train`` split, or the whole set) are cut into K disjoint parts by
:func:`~unetkit.data.dataset.fold_pairs` (the keys and ``--seed`` decide); fold I validates on part I and
trains on the others. A yaml's ``val`` split stays out, for scoring the ensemble afterwards; ``--val`` is
refused. Each fold gets ``--time``/K minutes, or ``--epochs`` epochs. ``RUN_DIR`` holds::

    config.yaml        the resolved options of the whole run (folds: K); train --resume RUN_DIR reads it
    plan.yaml          with --model-size auto: the one plan of every fold (fold 0's training pairs, TIME/K)
    fold0 .. fold{K-1} one run folder per fold (its config.yaml has fold: I, time: TIME/K)
    ensemble.yaml      once every fold is done: the folds' best.pt, relative to RUN_DIR, and the classes

``train --resume RUN_DIR`` keeps the folds that are done, continues the one that was interrupted from its
last.pt, and trains the rest. The folds run one after another through the same entry point as any run
(``train_one``, :func:`unetkit.api.train`'s), so ``--nproc`` and callbacks work per fold.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from unetkit.commands import TrainRun
from unetkit.config import TrainConfig, dump_config, load_config_file, make_config
from unetkit.engine.checkpoint import load_checkpoint
from unetkit.engine.distributed import env_rank
from unetkit.engine.resume import MODEL_OPTIONS, planned_config, refuse_data_folder
from unetkit.engine.run_folder import RunFolder
from unetkit.engine.trainer import TrainResult
from unetkit.engine.training_data import load_split
from unetkit.errors import TrainingInterrupted, UnetkitError
from unetkit.inference.ensemble import MANIFEST, write_manifest

#: Options that a resumed --folds run keeps: changing them would make the folds no longer one cross-validation.
FOLD_FIXED = ("data", "val", "seed", "folds", "fold", "mask_mode", *MODEL_OPTIONS)
#: How one run is trained: ``(start, options, callbacks) -> TrainResult`` (the body of :func:`unetkit.api.train`).
TrainOne = Callable[[TrainRun, dict, object], TrainResult]


def fold_folder(root: str | Path, fold: int) -> Path:
    return Path(root) / f"fold{fold}"


@dataclass
class FoldsResult(TrainResult):
    """What a ``--folds`` run left: ``run_dir`` holds ``ensemble.yaml``; ``folds`` the result of each fold;
    ``best_dice`` is the mean of the folds' best validation mean Dice; epochs, steps and seconds are summed."""

    folds: list[TrainResult] = field(default_factory=list)

    @classmethod
    def of(cls, root: Path, results: list[TrainResult]) -> "FoldsResult":
        dices = [r.best_dice for r in results if r.best_dice is not None]
        return cls(Path(root), sum(dices) / len(dices) if dices else None, sum(r.epochs for r in results),
                   sum(r.steps for r in results), sum(r.seconds for r in results), [], results)  # fmt: skip

    def summary(self) -> str:
        """The line ``unetkit train --folds`` prints at the end."""
        per = ", ".join("-" if r.best_dice is None else f"{r.best_dice:.4f}" for r in self.folds)
        mean = "-" if self.best_dice is None else f"{self.best_dice:.4f}"
        return (f"trained {len(self.folds)} folds ({self.epochs} epochs in all) in {self.seconds / 60:.1f} min; best validation mean Dice "
                f"per fold {per} (mean {mean}); ensemble in {self.run_dir / MANIFEST}: predict with --model {self.run_dir}")  # fmt: skip


@dataclass(frozen=True)
class FoldsPlan:
    """A ``--folds`` run about to train: its folder, resolved options, how it was started, the options given now
    (on ``--resume``, those each unfinished fold continues with), and whether it resumes."""

    root: Path
    cfg: TrainConfig
    start: TrainRun
    given: dict
    resumed: bool


def _option(options: dict, config: str | None, name: str):
    """Option ``name`` as given, else as the ``--config`` file sets it, else None."""
    if options.get(name) is not None:
        return options[name]
    return load_config_file(config).get(name) if config is not None else None


def folds_plan(start: TrainRun, options: dict) -> FoldsPlan | None:
    """The plan of a ``--folds`` run (a new one, or ``--resume`` of one); None for a single run (``--fold I`` included)."""
    if start.resume is not None:
        before = RunFolder(start.resume).read_config()
        if before.get("folds") is None or before.get("fold") is not None or RunFolder(start.resume).last.is_file():
            return None
        return _resume_plan(Path(start.resume), before, start, options)
    if _option(options, start.config, "folds") is None or _option(options, start.config, "fold") is not None:
        return None
    cfg = make_config(start.config, **options)
    return FoldsPlan(Path(cfg.out), cfg, start, {k: v for k, v in options.items() if v is not None}, resumed=False)


def _resume_plan(root: Path, before: dict, start: TrainRun, options: dict) -> FoldsPlan:
    """``--resume`` of a --folds run: the options given now may change the budget and runtime, not the folds."""
    if start.config is not None or start.overwrite:
        flag = "--config" if start.config is not None else "--overwrite"
        raise UnetkitError(f"--resume {root} continues the --folds run with its own config.yaml; drop {flag}")
    given = {k: v for k, v in options.items() if v is not None}
    out = given.pop("out", None)
    if out is not None and Path(out).resolve() != root.resolve():
        raise UnetkitError(f"--resume {root} continues the --folds run in its own folder; drop --out {out}")
    changed = [k for k in FOLD_FIXED if k in given and given[k] != before.get(k)]
    if changed:
        k = changed[0]
        raise UnetkitError(f"--resume {root}: --{k.replace('_', '-')} {given[k]} would change the cross-validation ({k}: {before.get(k)}); "
                           "drop it, or start a new run with another --out")
    return FoldsPlan(root, make_config(**{**before, **given, "out": str(root)}), start, given, resumed=True)


def _start_root(plan: FoldsPlan) -> FoldsPlan:
    """Refuse a new --folds run where it would replace an earlier run (unless ``--overwrite``); then plan it (with
    ``--model-size auto``) and write its config.yaml. Returns the plan with the planned options."""
    root, folder = plan.root, RunFolder(plan.root)
    if root.exists() and not root.is_dir():
        raise UnetkitError(f"--out {root} is a file, not a folder; choose another --out")
    held = [p.name for p in (folder.config, root / MANIFEST, *sorted(root.glob("fold[0-9]*")), *folder.run_files()) if p.exists()]
    if held and not plan.start.overwrite:
        raise UnetkitError(f"--out {root} already holds a run ({', '.join(dict.fromkeys(held))}); continue it with --resume {root}, "
                           "start over there with --overwrite, or choose another --out")
    refuse_data_folder(root, plan.cfg.data, plan.cfg.val)
    load_split(dataclasses.replace(plan.cfg, fold=0))  # refuses --val, or fewer pairs than folds, before anything is written
    if env_rank() == 0:
        folder.prepare()
        folder.clear_run()  # with --overwrite: a single run's checkpoints, which would make this folder resume as one
        for stale in (root / MANIFEST, folder.status):
            stale.unlink(missing_ok=True)  # an earlier ensemble is not this run's
    plan = _planned(plan)
    if env_rank() == 0:
        dump_config(plan.cfg, folder.config)
    return plan


def _planned(plan: FoldsPlan) -> FoldsPlan:
    """With ``--model-size auto``: one plan for every fold, made for fold 0's training pairs and a K-th of the
    budget, and written to RUN_DIR/plan.yaml, so that the folds train the same network (each fold then keeps
    these options as given)."""
    cfg = plan.cfg
    if cfg.model_size != "auto":
        return plan
    fold0 = dataclasses.replace(cfg, fold=0, **_budget(cfg))
    return dataclasses.replace(plan, cfg=planned_config(fold0, plan.start, plan.given, RunFolder(plan.root)))


def _budget(cfg: TrainConfig) -> dict:
    """What each fold gets: a K-th of ``--time`` (``--epochs`` apply to each fold as they are)."""
    return {} if cfg.time is None else {"time": cfg.time / cfg.folds}


def _train_fold(plan: FoldsPlan, fold: int, callbacks, train_one: TrainOne) -> TrainResult:
    """Fold ``fold``: its result when done already, else trained, continued from its last.pt when resuming one."""
    folder = RunFolder(fold_folder(plan.root, fold))
    if folder.read_status().get("status") == "done" and folder.best.is_file() and folder.last.is_file():
        return TrainResult.from_progress(folder.path, folder.read_progress())
    if plan.cfg.progress and env_rank() == 0:
        print(f"unetkit: fold {fold + 1} of {plan.cfg.folds} into {folder.path}", file=sys.stderr)
    if plan.resumed and folder.last.is_file():
        start = dataclasses.replace(plan.start, resume=str(folder.path), config=None, overwrite=False)
        options = {**plan.given, **_budget(plan.cfg)}
    else:
        start = dataclasses.replace(plan.start, resume=None, config=None, overwrite=plan.start.overwrite or plan.resumed)
        options = {**plan.cfg.to_dict(), "out": str(folder.path), "fold": fold, **_budget(plan.cfg)}
    try:
        return train_one(start, options, callbacks)
    except TrainingInterrupted as stop:  # its hint resumes the fold alone; the whole run continues from the root
        raise TrainingInterrupted(f"fold {fold}: {str(stop).replace(f'--resume {folder.path}', f'--resume {plan.root}')}") from None


def train_folds(plan: FoldsPlan, callbacks, train_one: TrainOne) -> FoldsResult:
    """Train every fold of ``plan`` in turn with ``train_one``, then write ``ensemble.yaml`` (see the module docstring).

    Example:
        >>> unetkit.train(data="data/", out="runs/cv", folds=5, time=50)  # doctest: +SKIP
        >>> unetkit.predict("runs/cv", ["scans/"], out="preds/")  # doctest: +SKIP
    """
    if not plan.resumed:
        plan = _start_root(plan)
    results = [_train_fold(plan, fold, callbacks, train_one) for fold in range(plan.cfg.folds)]
    members = [fold_folder(plan.root, fold) / "best.pt" for fold in range(plan.cfg.folds)]
    for best in members:
        if not best.is_file():
            raise UnetkitError(f"{best}: missing after its fold finished; continue with unetkit train --resume {plan.root}")
    if env_rank() == 0:
        classes = load_checkpoint(members[0])["meta"]["classes"]
        write_manifest(plan.root / MANIFEST, [p.relative_to(plan.root).as_posix() for p in members], classes)
    return FoldsResult.of(plan.root, results)
