"""The run folder: what ``unetkit train`` leaves behind, its file formats, written atomically and read back.

A run folder holds::

    config.yaml    the resolved TrainConfig (loads again with --config); run-time notes as comments
    plan.yaml      with model_size auto: the plan, each option's reason, and the data's fingerprint
    metrics.csv    one row per epoch: epoch, step, time_s, lr, train_loss, val_dice, val_iou,
                   val_pixel_accuracy, then global_batch (several processes) and val_dice_CLASS
    curves.png     training loss and validation Dice per epoch
    status.json    {"status": "running" | "done" | "interrupted" | "nan" | "failed" | "pruned", "epoch", "step", ...}
    best.pt        the checkpoint of the best validation mean Dice (every epoch without validation data)
    last.pt        the full training state, the commit point of an epoch (unetkit train --resume)
    report/        the HTML validation report of best.pt (index.html)

Every file is replaced atomically, so a process killed at any moment leaves the previous version
intact; its temporary files (``.NAME.tmp-*``) are removed by :meth:`RunFolder.prepare`.
"""

from __future__ import annotations

import csv
import io
import json
import zipfile
from pathlib import Path

import yaml

from unetkit.config import TrainConfig, dump_config
from unetkit.engine.checkpoint import load_checkpoint, save_checkpoint
from unetkit.files import atomic_write
from unetkit.yaml_files import read_yaml

CSV_FIELDS = ("epoch", "step", "time_s", "lr", "train_loss", "val_dice", "val_iou", "val_pixel_accuracy")


class RunFolder:
    """The files of one run folder; every write is atomic, every read tolerates a run still in progress.

    Attributes:
        path: The folder.
        config, plan, metrics, curves, status, best, last: Its files (see the module docstring).
        report: The folder of the HTML validation report.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.config = self.path / "config.yaml"
        self.plan = self.path / "plan.yaml"
        self.metrics = self.path / "metrics.csv"
        self.curves = self.path / "curves.png"
        self.status = self.path / "status.json"
        self.best = self.path / "best.pt"
        self.last = self.path / "last.pt"
        self.report = self.path / "report"

    def run_files(self) -> list[Path]:
        """The files of a run that this folder holds: config.yaml, metrics.csv, best.pt, last.pt, status.json."""
        return [p for p in (self.config, self.metrics, self.best, self.last, self.status) if p.is_file()]

    def holds_run(self) -> bool:
        """Whether a new run here would replace what an earlier one left (its checkpoints or metrics)."""
        return any(p in self.run_files() for p in (self.metrics, self.best, self.last))

    def is_run(self) -> bool:
        """Whether the folder holds a run: two of config.yaml, metrics.csv, status.json and last.pt (a run with one
        of them lost is still a run, to be reported as damaged)."""
        return sum(p.is_file() for p in (self.config, self.metrics, self.status, self.last)) >= 2

    def prepare(self) -> None:
        """Create the folder and remove temporary files left by a process killed mid-write (the real files are intact)."""
        self.path.mkdir(parents=True, exist_ok=True)
        for stale in self.path.glob(".*.tmp-*"):
            stale.unlink()

    def clear_run(self) -> None:
        """Remove what an earlier run left that a new one writes only later: best.pt, last.pt, metrics.csv, curves.png."""
        for path in (self.best, self.last, self.metrics, self.curves):
            path.unlink(missing_ok=True)

    def problems(self) -> list[str]:
        """What is damaged or missing in a run folder, each in a few words; empty for a sound one."""
        found = [f"{p.name} missing" for p in (self.config, self.status) if not p.is_file()]
        for path, read in ((self.config, read_yaml), (self.status, lambda p: json.loads(p.read_text()))):
            if path.is_file():
                try:
                    value = read(path)
                except (OSError, ValueError, yaml.YAMLError) as e:
                    found.append(f"{path.name} unreadable ({_short(e)})")
                    continue
                if not isinstance(value, dict):
                    found.append(f"{path.name} is not a mapping")
        if self.metrics.is_file():
            try:
                with open(self.metrics, newline="") as f:
                    header = next(csv.reader(f), [])
            except (OSError, UnicodeDecodeError, csv.Error) as e:
                found.append(f"metrics.csv unreadable ({_short(e)})")
            else:
                if header[:2] != list(CSV_FIELDS[:2]):
                    found.append("metrics.csv has no epoch,step header")
        for path in (self.best, self.last):  # a torch checkpoint is a zip archive: a cut or foreign file is not
            if path.is_file() and not zipfile.is_zipfile(path):
                found.append(f"{path.name} is not a checkpoint (cut short or replaced)")
        if self.read_status().get("status") == "done" and not self.best.is_file():
            found.append("best.pt missing")
        return found

    # --- config.yaml

    def write_config(self, cfg: TrainConfig, notes: dict | None = None) -> None:
        """The resolved configuration; ``notes`` (values resolved at run time, such as the global batch) as comments."""
        dump_config(cfg, self.config, notes)

    def read_config(self) -> dict:
        """The options of config.yaml as a dict; empty when it is missing or unreadable."""
        try:
            values = read_yaml(self.config)
        except (OSError, yaml.YAMLError):
            return {}
        return values if isinstance(values, dict) else {}

    # --- metrics.csv and curves.png

    def write_metrics(self, rows: list[dict]) -> None:
        """metrics.csv from the metrics rows of every epoch so far (keys beyond :data:`CSV_FIELDS` follow them)."""
        buf = io.StringIO()
        extra = [k for k in dict.fromkeys(k for row in rows for k in row) if k not in CSV_FIELDS]  # per-class Dice
        writer = csv.DictWriter(buf, fieldnames=[*CSV_FIELDS, *extra], restval="")
        writer.writeheader()
        writer.writerows(rows)
        with atomic_write(self.metrics) as tmp:
            Path(tmp).write_text(buf.getvalue())

    def read_metrics(self) -> list[dict]:
        """The rows of metrics.csv, numbers as int or float and empty cells (epochs without validation) as None."""
        try:
            with open(self.metrics, newline="") as f:
                return [{k: _cell(v) for k, v in row.items() if isinstance(k, str)} for row in csv.DictReader(f)]
        except (OSError, UnicodeDecodeError, csv.Error):  # missing, or damaged: problems() names it
            return []

    def best_scores(self) -> tuple[float | None, float | None]:
        """(val_dice, val_iou) of the first epoch with the best validation mean Dice, the epoch of best.pt; (None, None) without one."""
        scored = [(r.get("val_dice"), r.get("val_iou")) for r in self.read_metrics()]
        scored = [s for s in scored if isinstance(s[0], (int, float))]
        return max(scored, key=lambda s: s[0]) if scored else (None, None)

    def plot_curves(self, rows: list[dict]) -> None:
        """curves.png: training loss and validation mean Dice per epoch."""
        # matplotlib takes about a second to import: only the process that draws pays for it.
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        epochs = [r["epoch"] for r in rows]
        fig, ax1 = plt.subplots(figsize=(6, 3.5), dpi=100)
        ax1.plot(epochs, [r["train_loss"] for r in rows], color="tab:blue", label="train loss")
        ax1.set_xlabel("epoch")
        ax1.set_ylabel("train loss", color="tab:blue")
        ax2 = ax1.twinx()
        val = [(r["epoch"], r["val_dice"]) for r in rows if r["val_dice"] not in ("", None)]
        if val:
            ax2.plot(*zip(*val), color="tab:orange", marker="o", markersize=3, label="val Dice")
        ax2.set_ylabel("validation mean Dice", color="tab:orange")
        ax2.set_ylim(0, 1)
        fig.tight_layout()
        with atomic_write(self.curves) as tmp:
            fig.savefig(tmp)
        plt.close(fig)

    # --- status.json

    def write_status(self, **status) -> None:
        """status.json: ``status`` ("running", "done", "interrupted", "nan", "pruned") and what explains it."""
        with atomic_write(self.status) as tmp:
            Path(tmp).write_text(json.dumps(status, indent=2))

    def read_status(self) -> dict:
        """The content of status.json; empty when it is missing or unreadable."""
        try:
            status = json.loads(self.status.read_text())
        except (OSError, ValueError):
            return {}
        return status if isinstance(status, dict) else {}

    # --- best.pt and last.pt

    def save_best(self, model_state: dict, meta: dict) -> None:
        """best.pt: the weights with their metadata (classes, normalisation, model config, scores)."""
        save_checkpoint(self.best, model_state, meta)

    def save_last(self, model_state: dict, meta: dict, **training_state) -> None:
        """last.pt: the weights and the full training state (optimizer, scheduler, RNG, ``progress`` as JSON)."""
        save_checkpoint(self.last, model_state, meta, **training_state)

    def load_last(self) -> dict:
        """The checkpoint last.pt (see :func:`~unetkit.engine.checkpoint.load_checkpoint`)."""
        return load_checkpoint(self.last)

    def read_progress(self) -> dict:
        """The training position saved in last.pt: epoch, step, best, history (the metrics rows), elapsed seconds, ..."""
        return json.loads(self.load_last()["progress"])


def _short(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return (lines[0][:80] if lines else type(error).__name__).rstrip(".")


def _cell(text: str | None):
    """A metrics.csv cell: int, float, None when empty, else the text."""
    if text in ("", None):
        return None
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text
