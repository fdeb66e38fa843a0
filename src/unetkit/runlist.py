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
    best validation mean Dice with the IoU of that epoch (the epoch of best.pt). A damaged run still gets its
    row, with what could be read and ``problem`` saying what is wrong (None for a sound run)."""
    cfg = folder.read_config()
    metrics = folder.read_metrics()
    status = folder.read_status().get("status")
    row = {"run": name, "status": status if isinstance(status, str) and status else "unknown", "data": cfg.get("data", "")}
    row.update({k: cfg.get(k) for k in RUN_SETTINGS})
    if row["lr"] is None and cfg:  # the optimizer's default (TrainConfig.resolved_lr)
        row["lr"] = 1e-2 if cfg.get("optimizer") == "sgd" else 1e-3
    last = metrics[-1] if metrics else {}
    row["epochs"] = last.get("epoch", 0)
    row["minutes"] = round(last["time_s"] / 60, 2) if _number(last.get("time_s")) else None
    row["dice"], row["iou"] = folder.best_scores()
    for key in NUMERIC:  # a hand-edited or damaged file must not put text where numbers are sorted and formatted
        if not _number(row[key]):
            row[key] = None
    for key in RUN_COLUMNS:
        if row[key] is not None and not isinstance(row[key], (str, int, float)):
            row[key] = str(row[key])
    problems = folder.problems()
    row["problem"] = "; ".join(problems) if problems else None
    return row


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value == value


def runs(dir: str | Path | None = None, **options) -> list[dict]:  # noqa: A002 - the CLI's DIR
    """List the runs under ``dir`` (searched recursively), one dict per run with the keys of :data:`RUN_COLUMNS` and
    ``problem``: what is damaged or missing in that run folder (a corrupt status.json, a cut best.pt, ...), or None.

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
        what = "a file, not a folder" if root.exists() else "no such folder"
        raise UnetkitError(f"{root}: {what}; pass the folder that holds your runs (default: runs)")
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
    columns = [*RUN_COLUMNS, *(["problem"] if any(r.get("problem") for r in rows) else [])]  # only when a run is damaged
    table = [[heads.get(k, k) for k in columns]] + [[cell(k, r.get(k)) for k in columns] for r in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(columns))]
    right = {i for i, k in enumerate(columns) if k in NUMERIC}
    return "\n".join(
        "  ".join(v.rjust(w) if i in right else v.ljust(w) for i, (v, w) in enumerate(zip(line, widths))).rstrip() for line in table
    )
