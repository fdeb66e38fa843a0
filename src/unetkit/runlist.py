"""``unetkit runs``: the run folders under a folder, with their key settings and best validation scores.

A run is a folder holding ``config.yaml`` and ``metrics.csv`` or ``status.json``, as ``unetkit train``
writes them; folders inside a run (its report, TensorBoard or MLflow files) are not searched.
"""

from __future__ import annotations

import csv
import difflib
import json
import os
from pathlib import Path

import yaml

from unetkit.errors import UnetkitError

SETTINGS = ("model_size", "base_channels", "depth", "patch_size", "loss", "optimizer", "lr", "augment")
COLUMNS = ("run", "status", "data", *SETTINGS, "epochs", "minutes", "dice", "iou")
NUMERIC = ("base_channels", "depth", "patch_size", "lr", "epochs", "minutes", "dice", "iou")


def _float(text) -> float | None:
    try:
        return float(text)
    except (TypeError, ValueError):
        return None


def read_run(folder: Path, name: str) -> dict:
    """One row: the run's settings from config.yaml, its status, and from metrics.csv its epochs, minutes and
    best validation mean Dice with the IoU of that epoch (the epoch of best.pt)."""
    try:
        cfg = yaml.safe_load((folder / "config.yaml").read_text()) or {}
    except (OSError, yaml.YAMLError):
        cfg = {}
    try:
        status = json.loads((folder / "status.json").read_text()).get("status", "")
    except (OSError, ValueError):
        status = ""
    try:
        with open(folder / "metrics.csv", newline="") as f:
            rows = list(csv.DictReader(f))
    except OSError:
        rows = []
    row = {"run": name, "status": status or "unknown", "data": cfg.get("data", "")}
    row.update({k: cfg.get(k) for k in SETTINGS})
    if row["lr"] is None and cfg:  # the optimizer's default (TrainConfig.resolved_lr)
        row["lr"] = 1e-2 if cfg.get("optimizer") == "sgd" else 1e-3
    row["epochs"] = int(rows[-1]["epoch"]) if rows else 0
    row["minutes"] = round(_float(rows[-1].get("time_s")) / 60, 2) if rows and _float(rows[-1].get("time_s")) is not None else None
    scored = [(_float(r.get("val_dice")), _float(r.get("val_iou"))) for r in rows]
    scored = [s for s in scored if s[0] is not None]
    best = max(scored, key=lambda s: s[0]) if scored else (None, None)  # the first epoch of the best Dice, as best.pt
    row["dice"], row["iou"] = best
    return row


def runs(dir: str | Path = "runs", sort: str = "dice", reverse: bool = False) -> list[dict]:  # noqa: A002 - the CLI's DIR
    """List the runs under ``dir`` (searched recursively), one dict per run with the keys of :data:`COLUMNS`.

    Args:
        dir: Folder to search (default ``runs``).
        sort: Column to sort by: numbers highest first, text A to Z, missing values last (default: best
            validation mean Dice).
        reverse: The opposite order (missing values still last).

    Example:
        >>> for row in unetkit.runs("runs", sort="dice")[:3]:  # doctest: +SKIP
        ...     print(row["run"], row["dice"], row["lr"])
    """
    root = Path(dir)
    if not root.is_dir():
        raise UnetkitError(f"{root}: no such folder; pass the folder that holds your runs (default: runs)")
    if sort not in COLUMNS:
        close = difflib.get_close_matches(sort, COLUMNS, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise UnetkitError(f"cannot sort by {sort!r}{hint} (columns: {', '.join(COLUMNS)})")
    found = []
    for folder, subfolders, files in os.walk(root):
        subfolders.sort()
        if "config.yaml" in files and ("metrics.csv" in files or "status.json" in files):
            subfolders.clear()  # a run's own folders (report/, tensorboard/, mlflow/) hold no runs
            path = Path(folder)
            found.append(read_run(path, path.relative_to(root).as_posix() if path != root else path.name))
    present = [r for r in found if r[sort] is not None and r[sort] != ""]
    missing = [r for r in found if r not in present]
    descending = sort in NUMERIC
    present.sort(key=lambda r: r[sort] if descending else str(r[sort]).lower(), reverse=descending != reverse)
    return present + missing


def format_runs(rows: list[dict], dir: str | Path = "runs") -> str:  # noqa: A002
    """The rows as an aligned text table, or a message when there are none."""
    if not rows:
        return (f"no runs under {dir} (a run is a folder with config.yaml and metrics.csv or status.json, "
                "as unetkit train writes; pass the folder that holds them: unetkit runs DIR)")  # fmt: skip

    def cell(key: str, value) -> str:
        if value is None or value == "":
            return "-"
        if key in ("dice", "iou"):
            return f"{value:.4f}"
        if key == "lr":
            return f"{value:.3g}"
        if key == "minutes":
            return f"{value:.1f}"
        return str(value)

    heads = {"model_size": "size", "base_channels": "base", "patch_size": "patch", "optimizer": "optim", "minutes": "min"}
    table = [[heads.get(k, k) for k in COLUMNS]] + [[cell(k, r[k]) for k in COLUMNS] for r in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(COLUMNS))]
    right = {i for i, k in enumerate(COLUMNS) if k in NUMERIC}
    return "\n".join(
        "  ".join(v.rjust(w) if i in right else v.ljust(w) for i, (v, w) in enumerate(zip(line, widths))).rstrip() for line in table
    )
