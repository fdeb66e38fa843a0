"""Checkpoints as plain data: tensors plus JSON metadata, written atomically, loaded without unpickling code.

A checkpoint is ``{"format": "unetkit-checkpoint", "version": 1, "meta": <JSON string>, "model": state_dict}``
plus, in ``last.pt``, the optimizer and scheduler state. ``torch.load(path, weights_only=True)`` reads it.
"""

from __future__ import annotations

import json
import pickle
import re
from pathlib import Path

import torch

from unetkit.data.io import atomic_write
from unetkit.errors import UnetkitError

FORMAT = "unetkit-checkpoint"
VERSION = 1


def save_checkpoint(path: str | Path, model_state: dict, meta: dict, **extra) -> None:
    """Write a checkpoint atomically: the old file stays intact until the new one is complete.

    Args:
        path: Destination ``.pt`` file.
        model_state: The model's ``state_dict()``.
        meta: JSON-able metadata (model config, normalisation, classes, training config, scores).
        extra: Further plain-data state (optimizer/scheduler state dicts, epoch counters).
    """
    payload = {"format": FORMAT, "version": VERSION, "meta": json.dumps(meta), "model": model_state, **extra}
    with atomic_write(path) as tmp:
        torch.save(payload, tmp)


def load_checkpoint(path: str | Path) -> dict:
    """Load a checkpoint with ``weights_only=True``; ``meta`` comes back decoded as a dict.

    Raises:
        UnetkitError: if the file is missing, corrupt, not a unetkit checkpoint, or would need to
            unpickle arbitrary objects.
    """
    path = Path(path)
    if not path.is_file():
        raise UnetkitError(f"{path}: checkpoint not found; pass a run's best.pt or last.pt")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        found = re.search(r"Unsupported global: GLOBAL [\w.]+", str(e))
        if found:  # weights_only met something other than tensors and plain data
            raise UnetkitError(f"{path}: refused to load, it holds more than tensors and plain data ({found.group(0)})") from None
        raise UnetkitError(f"{path}: not a readable checkpoint ({str(e).strip().splitlines()[0][:120]}); re-train or re-copy it") from None
    except Exception as e:  # truncated or not a torch file at all
        raise UnetkitError(f"{path}: not a readable checkpoint ({type(e).__name__}: {str(e)[:120]}); re-train or re-copy it") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise UnetkitError(f"{path}: not a unetkit checkpoint (no '{FORMAT}' marker)")
    if ckpt.get("version", 0) > VERSION:
        raise UnetkitError(f"{path}: checkpoint format {ckpt['version']} is newer than this unetkit reads ({VERSION}); upgrade unetkit")
    try:
        ckpt["meta"] = json.loads(ckpt["meta"])
    except (TypeError, ValueError, KeyError):
        raise UnetkitError(f"{path}: its metadata is not JSON; the file is damaged or was edited, re-train or re-copy it") from None
    if not isinstance(ckpt["meta"], dict) or "model" not in ckpt:
        raise UnetkitError(f"{path}: holds no weights or no metadata mapping; the file is damaged or was edited, re-train or re-copy it")
    return ckpt
