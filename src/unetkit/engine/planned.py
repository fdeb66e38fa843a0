"""A training run planned from its data and budget (``--model-size auto``, the default): the fingerprint of the
training split, the step times of candidate networks on this machine, and the rules of
:mod:`unetkit.planning.rules`, with the options the user gave kept as given.

``unetkit plan DATA`` prints the result; ``unetkit train`` applies it and writes it as ``plan.yaml`` in the
run folder, next to ``config.yaml`` (which holds the options the run used, planned or given).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import yaml

from unetkit.config import TrainConfig
from unetkit.engine.training_data import load_split
from unetkit.files import atomic_write
from unetkit.machine import cpu_name
from unetkit.models.pretrained import cached_weights
from unetkit.planning.fingerprint import Fingerprint, fingerprint
from unetkit.planning.rules import Budget, Plan, plan_options
from unetkit.planning.speed import StepTimer


PLAN_PAIRS = 24  # pairs a plan reads, evenly spaced: enough for the sizes it needs, seconds even for big images


@dataclass
class RunPlan:
    """A plan for one run: the options, the data's fingerprint, and what the plan was made for."""

    plan: Plan
    fingerprint: Fingerprint
    data: str
    budget: Budget
    threads: int | None

    def document(self) -> dict:
        """The plan as plain data: what plan.yaml and ``unetkit plan --json`` hold."""
        fp = self.fingerprint
        return {
            "data": self.data,
            "budget": {"minutes": self.budget.minutes, "epochs": self.budget.epochs},
            "machine": {"cpu": cpu_name(), "threads": self.threads},
            "options": self.plan.options,
            "reasons": self.plan.reasons,
            "given": sorted(self.plan.fixed),
            "estimates": self.plan.estimates,
            "fingerprint": {
                "pairs": fp.pairs, "pairs_measured": fp.read, "median_shape": list(fp.median_shape), "channels": fp.channels,
                "dtype": fp.dtype,
                "classes": {c.name: {"share": round(c.fraction, 4), "width": round(c.width, 1), "reach": round(c.extent, 1),
                                     "height": round(c.row, 2)} for c in fp.classes},
            },
        }  # fmt: skip

    def lines(self) -> list[str]:
        """The plan for people: one line per option with its reason (:func:`format_plan`)."""
        return format_plan(self.document()).splitlines()


def format_plan(document: dict) -> str:
    """A plan's :meth:`RunPlan.document` for people: what it is for, one line per option with its reason, the expected pace."""
    fp, est, budget = document["fingerprint"], document["estimates"], document["budget"]
    within = f"{budget['minutes']:g} minutes" if budget["minutes"] is not None else f"{budget['epochs'] or 'the default'} epochs"
    shape = "x".join(map(str, fp["median_shape"]))
    lines = [f"plan for {document['data']} ({fp['pairs']} training pairs, {shape}, {fp['channels']} channel(s)) within {within}, "
             f"on {document['machine']['cpu']}:"]
    width = max(len(name) for name in document["options"])
    lines += [f"  {name:<{width}}  {_shown(value):<12}  {document['reasons'][name]}" for name, value in document["options"].items()]
    if "steps" in est:
        lines.append(f"expected: {est['step_seconds']:.2f} s per step, about {est['steps']} steps, {est['steps_per_epoch']} per epoch")
    return "\n".join(lines)


def _shown(value) -> str:
    return ",".join(f"{v:g}" for v in value) if isinstance(value, list) else str(value).lower() if isinstance(value, bool) else str(value)


def plan_run(cfg: TrainConfig, given: dict, progress: bool = False) -> RunPlan:
    """The plan for training ``cfg``'s data within its budget; options in ``given`` are kept as they are.

    The fingerprint is taken on the training pairs only (validation pairs never shape the plan); the step
    times are measured only when there is a time budget to divide.
    """
    spec, train, val = load_split(cfg)
    fp = fingerprint(dataclasses.replace(spec, pairs=train), limit=PLAN_PAIRS, progress=progress, seed=cfg.seed)
    budget = Budget(cfg.time, cfg.epochs)
    timer = StepTimer(fp.channels, len(fp.classes), cfg.threads, cfg.precision) if cfg.time is not None else None
    val_pixels = len(val) * fp.median_shape[0] * fp.median_shape[1]
    plan = plan_options(fp, budget, timer, val_pixels, fixed=given, available=cached_weights())
    return RunPlan(plan, fp, cfg.data, budget, cfg.threads)


def write_plan(run_plan: RunPlan, path: str | Path) -> None:
    """Write ``run_plan`` as YAML, atomically."""
    text = "# unetkit's plan for this run (model_size: auto); config.yaml holds the options the run used\n"
    text += yaml.safe_dump(run_plan.document(), sort_keys=False, width=160)
    with atomic_write(path) as tmp:
        Path(tmp).write_text(text)
