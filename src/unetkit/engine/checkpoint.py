"""Checkpoints as plain data: tensors plus JSON metadata, written atomically, loaded without unpickling code.

A checkpoint is ``{"format": "unetkit-checkpoint", "version": 1, "meta": <JSON string>, "model": state_dict}``
plus, in ``last.pt``, the optimizer and scheduler state. ``torch.load(path, weights_only=True)`` reads it.
"""

from __future__ import annotations

import io
import json
import pickle
import pickletools
import re
import textwrap
import warnings
import zipfile
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
    with atomic_write(path) as tmp, open(tmp, "wb") as f:
        torch.save(payload, f)  # through a Python file, so a full disk is an OSError (ENOSPC), not a RuntimeError


def _first_line(error: BaseException, limit: int = 160) -> str:
    """The first line of an error's text, shortened at a word boundary: never cut mid-word."""
    lines = str(error).strip().splitlines()
    return textwrap.shorten(lines[0], limit, placeholder=" ...") if lines else type(error).__name__


def _torchscript(path: Path) -> str | None:
    """For a TorchScript archive, the one-line refusal naming what to pass instead; None for other files."""
    if not zipfile.is_zipfile(path):
        return None
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (OSError, zipfile.BadZipFile):
        return None
    parts = [name.split("/") for name in names]
    if not any(len(p) > 2 and p[1] == "code" and p[2] == "__torch__" for p in parts):
        return None
    ours = any(len(p) > 2 and p[1:] == ["extra", "unetkit.json"] for p in parts)
    origin = "a TorchScript module written by unetkit export --format torchscript" if ours else "a TorchScript module, not a unetkit checkpoint"
    return (f"{path}: {origin}; unetkit runs checkpoints and ONNX files: pass the run folder's best.pt (or last.pt), or export "
            "one to ONNX with unetkit export --model best.pt --out model.onnx")


def _pickled_callable(path: Path) -> str | None:
    """The first callable, other than PyTorch's own and OrderedDict, that unpickling the file would import
    (read with :mod:`pickletools`, which runs nothing); None when there is none or the file is no pickle."""
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                stream = io.BytesIO(archive.read(next(n for n in archive.namelist() if n.endswith("data.pkl"))))
        else:
            stream = io.BytesIO(path.read_bytes())
        size, strings = len(stream.getbuffer()), []
        while stream.tell() < size:  # PyTorch's legacy format is several pickles in a row
            for op, arg, _ in pickletools.genops(stream):
                if isinstance(arg, str):
                    strings.append(arg)
                name = arg.replace(" ", ".") if op.name in ("GLOBAL", "INST") else ".".join(strings[-2:]) if op.name == "STACK_GLOBAL" else None
                if name and not name.startswith(("torch.", "collections.OrderedDict")):
                    return name
    except Exception:  # noqa: BLE001 - not a pickle (garbage, truncated): the caller reports it unreadable
        return None
    return None


def _unpickling_refusal(path: Path, error: pickle.UnpicklingError) -> UnetkitError:
    """What ``torch.load(weights_only=True)`` refusing a file means, in one line: code refused for safety, or an unreadable file."""
    text = str(error)
    found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", text)
    callable_name = found.group(1) if found else _pickled_callable(path) if "Weights only load failed" in text else None
    if callable_name:
        return UnetkitError(f"{path}: refused to load for safety: it holds pickled Python objects besides tensors and plain data "
                            f"(it would call {callable_name}), and unpickling them could run code; use a checkpoint written by unetkit "
                            "(a run's best.pt or last.pt)")  # fmt: skip
    detail = re.search(r"WeightsUnpickler error:\s*([^\n]+)", text)
    reason = detail.group(1).strip() if detail else _first_line(error)
    return UnetkitError(f"{path}: not a readable checkpoint ({textwrap.shorten(reason, 120, placeholder=' ...')}); re-train or re-copy it")


def load_checkpoint(path: str | Path) -> dict:
    """Load a checkpoint with ``weights_only=True``; ``meta`` comes back decoded as a dict.

    Raises:
        UnetkitError: if the file is missing, a folder, a TorchScript module, corrupt, not a unetkit checkpoint,
            or would need to unpickle arbitrary objects (refused for safety: nothing in it runs).
    """
    path = Path(path)
    if path.is_dir():
        raise UnetkitError(f"{path}: a folder, not a checkpoint; pass the best.pt (or last.pt) file in a run folder")
    if not path.is_file():
        raise UnetkitError(f"{path}: checkpoint not found; pass a run's best.pt or last.pt")
    refusal = _torchscript(path)
    if refusal:
        raise UnetkitError(refusal)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch's notes on pickle protocols and TorchScript: the error below says it in one line
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise _unpickling_refusal(path, e) from None
    except Exception as e:  # noqa: BLE001 - truncated or not a torch file at all
        raise UnetkitError(f"{path}: not a readable checkpoint ({type(e).__name__}: {_first_line(e, 120)}); re-train or re-copy it") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise UnetkitError(f"{path}: not a unetkit checkpoint (no '{FORMAT}' marker)")
    if not isinstance(ckpt.get("version", 0), int) or ckpt.get("version", 0) > VERSION:
        raise UnetkitError(f"{path}: checkpoint format {ckpt['version']} is newer than this unetkit reads ({VERSION}); upgrade unetkit")
    try:
        ckpt["meta"] = json.loads(ckpt["meta"])
    except (TypeError, ValueError, KeyError):
        raise UnetkitError(f"{path}: its metadata is not JSON; the file is damaged or was edited, re-train or re-copy it") from None
    if not isinstance(ckpt["meta"], dict) or not isinstance(ckpt.get("model"), dict):
        raise UnetkitError(f"{path}: holds no weights or no metadata mapping; the file is damaged or was edited, re-train or re-copy it")
    return ckpt
