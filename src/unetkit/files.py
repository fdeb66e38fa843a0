"""Writing files safely: an output appears complete or not at all. Where outputs may go is :mod:`unetkit.outputs`.
The bottom of the package, used by every layer."""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
from collections.abc import Iterator
from pathlib import Path

from unetkit.errors import UnetkitError


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; move it onto ``path`` only if the block succeeds.

    The temporary file keeps the suffix of ``path`` (``.name.tmp-<random>.png``) so writers pick the
    right format. On success it is flushed to disk and atomically replaces ``path``; on an exception it
    is deleted and the old ``path``, if any, is left untouched. Parent folders are created.

    Args:
        path: The final file.

    Yields:
        The temporary path to write to.

    Raises:
        UnetkitError: when the system refuses the write (a full disk, no permission, a read-only file
            system): one line naming ``path``, the cause, the fix, and whether an earlier ``path`` is kept.

    Example:
        >>> with atomic_write("out/mask.png") as tmp:  # doctest: +SKIP
        ...     Image.fromarray(mask).save(tmp)
    """
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.tmp-{secrets.token_hex(4)}{path.suffix}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        yield tmp
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)  # a full disk may only show here, when the data is really written
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException as error:
        # Some writers report a full disk in their own words (torch.save to a path: "RuntimeError: [enforce fail at
        # inline_container.cc] ... unexpected pos"): the free space, taken before the partial file goes, tells.
        if isinstance(error, RuntimeError) and _disk_full(path.parent):
            error = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        with contextlib.suppress(OSError):
            tmp.unlink()
        if isinstance(error, OSError) and not isinstance(error, UnetkitError):
            raise UnetkitError(write_error(path, error)) from None
        raise


#: What to do about the errors a write may meet, by errno; others: choose a writable output folder.
_WRITE_FIXES = {
    errno.ENOSPC: "free space on that disk or choose an output folder on another one",
    errno.EDQUOT: "free space within your disk quota or choose an output folder elsewhere",
    errno.EROFS: "the file system is read-only; choose an output folder on a writable one",
    errno.EFBIG: "the file is larger than that file system allows; choose an output folder on another one",
}


def _disk_full(folder: Path) -> bool:
    """Whether the disk that holds ``folder`` has less than 1 MiB left for this user."""
    try:
        disk = os.statvfs(folder)
    except (OSError, AttributeError):  # no such folder; statvfs is POSIX only
        return False
    return disk.f_bavail * disk.f_frsize < 1 << 20


def write_error(path: Path, error: OSError) -> str:
    """The one line for ``error`` met while writing ``path``: the file, the cause, the fix, and what is kept."""
    reason = (error.strerror or type(error).__name__).rstrip(".")
    fix = _WRITE_FIXES.get(error.errno, "choose a writable output folder")
    kept = f"; the previous {path.name} is kept" if path.is_file() else ""
    return f"{path}: cannot write ({reason[:1].lower() + reason[1:]}); {fix}{kept}"
