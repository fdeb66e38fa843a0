"""Where a command may write: the one rule every command checks before it writes anything.

No output replaces an input. No output replaces a file that is already there, and no output whose name the
command makes up lands in a folder that holds an input, unless the user passed ``--overwrite`` (an input
itself is never replaced, overwrite or not).
No two outputs share a name. A command plans all its outputs first, calls :func:`refuse_unsafe_outputs`
(for files whose names it knows) or :func:`refuse_unsafe_folder` (for a folder it fills), and only then
writes.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from unetkit.errors import UnetkitError

OVERWRITE_HINT = "pass --overwrite to replace it"
STORES = (".zarr",)  # outputs that are folders: an existing one is an earlier output, replaced like a file


def _resolved(paths: Iterable[str | os.PathLike]) -> dict[Path, Path]:
    return {Path(p).resolve(): Path(p) for p in paths}


def refuse_unsafe_outputs(planned: Iterable[tuple[Path, Path]], inputs: Iterable[str | os.PathLike], option: str,
                          overwrite: bool = False, models: Iterable[str | os.PathLike] = (), named: bool = False) -> None:
    """Check the files a command will write, before it writes any.

    Args:
        planned: ``(output file, what it comes from)`` for every file the command will write; the second
            element is named when two outputs clash (an input file, or a description such as "the preview").
        inputs: Every file the command reads (images, masks, models).
        option: The option that placed the outputs (``--out``), named in the error.
        overwrite: The user allows replacing existing files and writing beside inputs.
        models: Model files the command reads: never replaced, but outputs may sit beside them (a run folder
            is where an export or a report belongs; an image folder is not).
        named: The user named each output file exactly (``--out mask.tif``, ``--json-path``), so it may sit
            beside inputs; names the command makes up (``--out FOLDER``) may not, without ``overwrite``.

    Raises:
        UnetkitError: naming the output, the input or file it would replace or the other source that writes
            it, and the fix.
    """
    planned = [(Path(t), Path(s)) for t, s in planned]
    inputs = [Path(p) for p in inputs]
    given = _resolved([*inputs, *models])
    for target, _ in planned:  # replacing an input is refused first, whatever else is wrong
        if target.resolve() in given:
            raise UnetkitError(f"{option}: {target} would overwrite the input {given[target.resolve()]}; choose a {option} that holds no inputs")
    beside = {where.parent: path for where, path in _resolved(inputs).items()}
    claimed: dict[Path, Path] = {}
    for target, source in planned:
        where = target.resolve()
        if where in claimed:
            raise UnetkitError(f"{claimed[where]} and {source} would both write {target}; rename one of them or write them to "
                               f"separate {option} folders")
        claimed[where] = source
        if target.is_dir() and target.suffix.lower() not in STORES:
            raise UnetkitError(f"{option}: {target} is a folder where a file would be written; remove it or choose another {option}")
        blocking = next((p for p in target.parents if p.exists()), None)
        if blocking is not None and not blocking.is_dir():
            raise UnetkitError(f"{option}: {blocking} is a file, not a folder, so {target} cannot be written there; choose another {option}")
        if overwrite:
            continue
        if target.exists() or target.is_symlink():
            raise UnetkitError(f"{option}: {target} already exists; {OVERWRITE_HINT}, or choose another {option}")
        if where.parent in beside and not named:
            raise UnetkitError(f"{option}: {target} would be written beside the input {beside[where.parent]}; choose a {option} "
                               f"that holds no inputs, or pass --overwrite to write there")


def refuse_inside(folder: str | os.PathLike, input_folders: Iterable[str | os.PathLike], option: str) -> None:
    """Refuse an output ``folder`` that is, or lies inside, an input folder (a later search of it would find the outputs)."""
    root = Path(folder).resolve()
    for given in input_folders:
        if root.is_relative_to(Path(given).resolve()):
            raise UnetkitError(f"{option}: {folder} lies in the input folder {given}; outputs would mix with the inputs, choose a "
                               f"{option} outside it")


def refuse_holding(folder: str | os.PathLike, inputs: Iterable[str | os.PathLike], option: str) -> None:
    """Refuse an output ``folder`` that is, or holds, one of ``inputs`` (files or folders such as a data set)."""
    root = Path(folder).resolve()
    for where, path in _resolved(inputs).items():
        if where.is_relative_to(root):
            raise UnetkitError(f"{option}: {folder} holds the input {path}; choose a {option} that holds no inputs")


def refuse_unsafe_folder(folder: str | os.PathLike, inputs: Iterable[str | os.PathLike], option: str, overwrite: bool = False,
                         input_folders: Iterable[str | os.PathLike] = ()) -> None:
    """Check a folder a command will fill with files whose names it does not plan one by one (a report).

    The folder may not hold an input or lie in an input folder (overwrite or not) and, without ``overwrite``, must be
    empty or absent.

    Raises:
        UnetkitError: naming the folder, the input inside it or what it already holds, and the fix.
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise UnetkitError(f"{option}: {folder} is a file, not a folder; choose another {option}")
    refuse_inside(folder, input_folders, option)
    refuse_holding(folder, inputs, option)
    if not overwrite and folder.is_dir():
        held = sorted(p.name for p in folder.iterdir())
        if held:
            more = f" and {len(held) - 1} more" if len(held) > 1 else ""
            raise UnetkitError(f"{option}: {folder} already holds {held[0]}{more}; {OVERWRITE_HINT}, or choose an empty {option}")
