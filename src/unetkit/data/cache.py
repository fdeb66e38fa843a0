"""The decoded cache: training arrays decoded once, stored as ``.npy`` files and read back a window at a time.

Training samples small patches from every image, many times. Decoding a PNG or TIFF for each patch is slow and
holding every decoded image in memory does not scale (19 GB for Cityscapes), so each array a run needs (the image,
its decoded mask, derived targets and weight maps) is written once as an uncompressed ``.npy`` file. Readers open it
memory-mapped for each access: a patch touches only its own rows, the pages come from the operating system's file
cache (shared by every process on the machine, and dropped under memory pressure), and the process keeps no mapping,
so its resident memory does not grow with the data set. Why ``.npy`` and not zarr: ``benchmarks/data_scale.py``
measures both.

A cache folder holds one *entry* per key: ``<digest>.json`` (the record: the source files' sizes and modification
times, each array's file size, shape and dtype, and statistics of the arrays) and ``<digest>.<name>.npy``. An entry
is rebuilt when a source file changed or an array file is missing or has the wrong size (a run killed while writing
it); the record is written last, atomically, so a half-written entry is never taken as complete. Several processes
may fill one cache at once: an entry is built under a lock on the cache folder, by whichever process asks first.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import secrets
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from unetkit.errors import UnetkitError
from unetkit.files import write_error

#: Builds an entry: ({name: array}, {statistic: JSON value}).
Builder = Callable[[], tuple[dict, dict]]
_FORMAT = 2  # bumped when the layout of an entry changes, so old entries are rebuilt


def cache_root() -> Path:
    """Where unetkit keeps what it can rebuild: ``$UNETKIT_CACHE``, else ``~/.cache/unetkit``."""
    return Path(os.environ.get("UNETKIT_CACHE") or Path.home() / ".cache" / "unetkit")


def dataset_folder(data_root: Path, cache: str | None = None) -> Path:
    """The cache folder of the data set at ``data_root``: one per data set under ``cache`` (``--cache DIR``), by
    default under :func:`cache_root` ``/data``."""
    root = Path(cache).expanduser() if cache else cache_root() / "data"
    return root / f"{data_root.resolve().name}-{digest(str(data_root.resolve()))}"


def digest(*parts) -> str:
    """A short stable hash of JSON-serialisable ``parts``."""
    return hashlib.sha1(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:20]


def signature(path: Path) -> list:
    """What tells a changed source: [size, modification time in ns] of a file; of a folder (per-object masks),
    the same over its files, hashed."""
    st = path.stat()
    if not path.is_dir():
        return [st.st_size, st.st_mtime_ns]
    files = sorted(p for p in path.rglob("*") if p.is_file())
    return [len(files), digest([[str(p.relative_to(path)), p.stat().st_size, p.stat().st_mtime_ns] for p in files])]


@dataclass(frozen=True)
class Entry:
    """One cached set of arrays.

    Attributes:
        key: What the entry is (unique in its cache).
        sources: The files it was built from, with their :func:`signature` then.
        arrays: name -> {"shape", "dtype", "bytes"} (``bytes``: the file's size, header included).
        stats: What the builder measured, e.g. per-channel sums.
        files: name -> the ``.npy`` file; None for an entry held in memory.
        memory: name -> array, for an entry held in memory (:class:`MemoryCache`); else None.
    """

    key: str
    sources: dict
    arrays: dict
    stats: dict
    files: dict | None = None
    memory: dict | None = None

    def load(self, name: str) -> np.ndarray:
        """The array ``name``: memory-mapped read-only from its file (nothing is read until indexed), or the one in memory."""
        if self.memory is not None:
            return self.memory[name]
        try:
            return np.load(self.files[name], mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError) as error:
            raise UnetkitError(f"{self.files[name]}: the cached array cannot be read ({error}); delete the cache folder "
                               f"{self.files[name].parent} (it is rebuilt from the data)") from None

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(self.arrays[name]["shape"])

    def nbytes(self) -> int:
        """Decoded bytes of the entry's arrays."""
        return sum(int(np.prod(a["shape"])) * np.dtype(a["dtype"]).itemsize for a in self.arrays.values())

    def changed_source(self) -> Path | None:
        """The first source file that differs from when the entry was built (or is gone), else None."""
        for path, sig in self.sources.items():
            try:
                if signature(Path(path)) != sig:
                    return Path(path)
            except OSError:
                return Path(path)
        return None


class DiskCache:
    """A folder of entries (see the module's documentation).

    Args:
        folder: The cache folder; created when missing.
        on_build: Called with the key of each entry built (or rebuilt), e.g. to count them or to tell why.
    """

    def __init__(self, folder: str | os.PathLike, on_build: Callable[[str, str], None] | None = None) -> None:
        self.folder = Path(folder)
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise UnetkitError(f"{write_error(self.folder, error)}; or pass --cache DIR (a writable folder), or --cache memory") from None
        self.on_build = on_build or (lambda key, why: None)

    def get(self, key: str, sources: Sequence[Path], build: Builder) -> Entry:
        """The entry ``key`` of ``sources``: the cached one when it is complete and its sources unchanged, else built now."""
        stem = self.folder / digest(key)
        entry, why = self._read(key, stem, sources)
        if entry is not None:
            return entry
        with self._lock():  # another process may have built it while this one waited
            entry, why = self._read(key, stem, sources)
            if entry is None:
                self.on_build(key, why)
                entry = self._write(key, stem, sources, *build())
        return entry

    def _read(self, key: str, stem: Path, sources: Sequence[Path]) -> tuple[Entry | None, str]:
        """(the complete, current entry, "") or (None, why it must be built)."""
        try:
            record = json.loads(stem.with_suffix(".json").read_text())
        except FileNotFoundError:
            return None, "new"
        except (OSError, ValueError):
            return None, "its record is unreadable"
        if record.get("format") != _FORMAT or record.get("key") != key:
            return None, "it was written by another version"
        current = {str(p): signature(p) for p in sources}
        if record["sources"] != current:
            changed = next(p for p in current if record["sources"].get(p) != current[p])
            return None, f"{changed} changed"
        files = {name: stem.with_name(f"{stem.name}.{name}.npy") for name in record["arrays"]}
        for name, path in files.items():
            size, expected = (path.stat().st_size if path.exists() else -1), record["arrays"][name]["bytes"]
            if size != expected:
                return None, f"{path.name} is " + ("missing" if size < 0 else f"cut short ({size} of {expected} bytes)")
        return Entry(key, record["sources"], record["arrays"], record["stats"], files=files), ""

    def _write(self, key: str, stem: Path, sources: Sequence[Path], arrays: dict, stats: dict) -> Entry:
        """Write the arrays, then the record (each to a temporary file, moved into place), so a killed write leaves no
        record that names an incomplete file."""
        record = {"format": _FORMAT, "key": key, "sources": {str(p): signature(p) for p in sources}, "arrays": {}, "stats": stats}
        files = {}
        for name, array in arrays.items():
            path = stem.with_name(f"{stem.name}.{name}.npy")
            self._replace(path, lambda f, a=np.ascontiguousarray(array): np.save(f, a, allow_pickle=False))
            record["arrays"][name] = {"shape": list(array.shape), "dtype": np.dtype(array.dtype).str, "bytes": path.stat().st_size}
            files[name] = path
        self._replace(stem.with_suffix(".json"), lambda f: f.write(json.dumps(record).encode()))
        return Entry(key, record["sources"], record["arrays"], stats, files=files)

    def _replace(self, path: Path, write: Callable) -> None:
        """``write(file)`` into a temporary file, then move it onto ``path``. No fsync: a file cut short by a crash is
        told by its size and rebuilt."""
        tmp = path.with_name(f".{path.name}.tmp-{secrets.token_hex(4)}")
        try:
            with open(tmp, "wb") as f:
                write(f)
            os.replace(tmp, path)
        except OSError as error:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise UnetkitError(f"{write_error(path, error)}; or pass --cache DIR elsewhere, or --cache memory") from None

    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        with open(self.folder / ".lock", "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def size(self) -> int:
        """Bytes on disk of the cache folder."""
        return self.size_of(self.folder)

    @staticmethod
    def size_of(folder: Path) -> int:
        """Bytes on disk of a cache folder; 0 when there is none."""
        return sum(p.stat().st_size for p in folder.iterdir() if p.is_file()) if folder.is_dir() else 0


class MemoryCache:
    """:class:`DiskCache`'s interface with every entry held in memory (``--cache memory``): nothing is written, and
    each process decodes its own copy."""

    folder = None

    def get(self, key: str, sources: Sequence[Path], build: Builder) -> Entry:
        arrays, stats = build()
        shapes = {name: {"shape": list(a.shape), "dtype": np.dtype(a.dtype).str, "bytes": a.nbytes} for name, a in arrays.items()}
        return Entry(key, {str(p): signature(p) for p in sources}, shapes, stats, memory=arrays)

    def size(self) -> int:
        return 0


class CachedArrays(Sequence):
    """The array ``name`` of each entry, as a read-only sequence; item ``i`` is loaded when asked for (memory-mapped
    from a :class:`DiskCache`), so holding the sequence holds no pixels. ``transform``, if given, is applied to each
    item as it is loaded."""

    def __init__(self, entries: Sequence[Entry], name: str, transform: Callable | None = None) -> None:
        self.entries, self.name, self.transform = list(entries), name, transform

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return CachedArrays(self.entries[i], self.name, self.transform)
        array = self.entries[i].load(self.name)
        return array if self.transform is None else self.transform(array)

    def shape(self, i: int) -> tuple[int, ...]:
        return self.entries[i].shape(self.name)


def check_unchanged(entries: Sequence[Entry]) -> None:
    """Refuse to go on training on a cache whose data changed since it was built.

    Raises:
        UnetkitError: naming the first changed source file.
    """
    for entry in entries:
        changed = entry.changed_source()
        if changed is not None:
            raise UnetkitError(f"{changed} changed (or went) while training on it; the cached copy is stale: restart the run "
                               "(resume it with the same command) once the data set is complete; the cache rebuilds what changed")
