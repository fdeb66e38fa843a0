"""``unetkit runs``: the run folders under a folder, with their key settings and best validation scores.

A run is a folder holding ``config.yaml`` and ``metrics.csv`` or ``status.json``, as ``unetkit train``
writes them; folders inside a run (its report, TensorBoard or MLflow files) are not searched.
"""

from __future__ import annotations

import difflib
import os
from pathlib import Path

from unetkit.commands import RUN_COLUMNS, RUN_SETTINGS, RunsOptions
from unetkit.engine.run_folder import RunFolder
from unetkit.errors import UnetkitError

NUMERIC = ("base_channels", "depth", "patch_size", "lr", "epochs", "minutes", "dice", "iou")


def read_run(folder: RunFolder, name: str) -> dict:
    """One row: the run's settings from config.yaml, its status, and from metrics.csv its epochs, minutes and
    best validation mean Dice with the IoU of that epoch (the epoch of best.pt)."""
    cfg = folder.read_config()
    metrics = folder.read_metrics()
    row = {"run": name, "status": folder.read_status().get("status") or "unknown", "data": cfg.get("data", "")}
    row.update({k: cfg.get(k) for k in RUN_SETTINGS})
    if row["lr"] is None and cfg:  # the optimizer's default (TrainConfig.resolved_lr)
        row["lr"] = 1e-2 if cfg.get("optimizer") == "sgd" else 1e-3
    last = metrics[-1] if metrics else {}
    row["epochs"] = last.get("epoch", 0)
    row["minutes"] = round(last["time_s"] / 60, 2) if isinstance(last.get("time_s"), (int, float)) else None
    row["dice"], row["iou"] = folder.best_scores()
    return row


def runs(dir: str | Path | None = None, **options) -> list[dict]:  # noqa: A002 - the CLI's DIR
    """List the runs under ``dir`` (searched recursively), one dict per run with the keys of :data:`RUN_COLUMNS`.

    Args:
        dir: Folder to search (default ``runs``).
        sort: Column to sort by: numbers highest first, text A to Z, missing values last (default: best
            validation mean Dice).
        reverse: The opposite order (missing values still last).

    Example:
        >>> for row in unetkit.runs("runs", sort="dice")[:3]:  # doctest: +SKIP
        ...     print(row["run"], row["dice"], row["lr"])
    """
    o = RunsOptions.build("runs", **({} if dir is None else {"dir": str(dir)}), **options)
    root, sort, reverse = Path(o.dir), o.sort, o.reverse
    if not root.is_dir():
        raise UnetkitError(f"{root}: no such folder; pass the folder that holds your runs (default: runs)")
    if sort not in RUN_COLUMNS:
        close = difflib.get_close_matches(sort, RUN_COLUMNS, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise UnetkitError(f"cannot sort by {sort!r}{hint} (columns: {', '.join(RUN_COLUMNS)})")
    found = []
    for path, subfolders, _ in os.walk(root):
        subfolders.sort()
        folder = RunFolder(path)
        if folder.is_run():
            subfolders.clear()  # a run's own folders (report/, tensorboard/, mlflow/) hold no runs
            found.append(read_run(folder, folder.path.relative_to(root).as_posix() if folder.path != root else folder.path.name))
    present = [r for r in found if r[sort] is not None and r[sort] != ""]
    missing = [r for r in found if r not in present]
    descending = sort in NUMERIC
    present.sort(key=lambda r: r[sort] if descending else str(r[sort]).lower(), reverse=descending != reverse)
    return present + missing


def format_runs(rows: list[dict], dir: str | Path) -> str:  # noqa: A002
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
    table = [[heads.get(k, k) for k in RUN_COLUMNS]] + [[cell(k, r[k]) for k in RUN_COLUMNS] for r in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(RUN_COLUMNS))]
    right = {i for i, k in enumerate(RUN_COLUMNS) if k in NUMERIC}
    return "\n".join(
        "  ".join(v.rjust(w) if i in right else v.ljust(w) for i, (v, w) in enumerate(zip(line, widths))).rstrip() for line in table
    )
