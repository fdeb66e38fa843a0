"""What every case of the hostile-input corpus asserts, in one place.

A case runs a command on bad input and checks: the exit status, one line on stderr that starts with
``unetkit: error:`` and names what it should (the file, the option, the fix), no traceback, inputs
byte-for-byte untouched, and no partial output. Cases that could exhaust memory run the CLI in a child
process under an address-space cap (``run_capped``) and assert the peak resident memory too.

With ``UNETKIT_CORPUS_LOG`` set, each message is appended to that file for docs/reliability.md
(``python scripts/reliability_doc.py``).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import resource
import struct
import subprocess
import sys
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from unetkit.cli import main


def flags(options: dict) -> list[str]:
    """Keyword options as CLI flags: ``{"base_channels": 4}`` -> ``["--base-channels", "4"]``."""
    return [x for k, v in options.items() for x in (f"--{k.replace('_', '-')}", str(v).lower() if isinstance(v, bool) else str(v))]


def log_case(message: str, area: str = "") -> None:
    """Record the message of the running case for docs/reliability.md."""
    log = os.environ.get("UNETKIT_CORPUS_LOG")
    if log:
        current = os.environ.get("PYTEST_CURRENT_TEST", "")
        module = current.split("::")[0].rsplit("/", 1)[-1].removesuffix(".py").removeprefix("test_")
        case = current.split("::")[-1].rsplit(" (", 1)[0]
        with open(log, "a") as f:
            f.write(json.dumps({"area": area or module, "case": case, "message": message}) + "\n")


def check_message(err: str, fragment: str, names=()) -> str:
    """One line, no traceback, the fragment and every name in it."""
    err = err.strip()
    log_case(err)
    assert err.startswith("unetkit: error: "), err
    assert "\n" not in err and "Traceback" not in err, err
    assert fragment in err, err
    for name in names:
        assert str(name) in err, err
    return err


def expect_error(capsys, argv, fragment, names=(), code=2) -> str:
    """Run the CLI in this process and check its refusal."""
    assert main([str(a) for a in argv]) == code
    return check_message(capsys.readouterr().err, fragment, names)


def assert_no_output(folder: Path) -> None:
    folder = Path(folder)
    assert not folder.exists() or not any(folder.rglob("*")), f"partial output in {folder}: {list(folder.rglob('*'))}"


class Untouched:
    """Snapshot of every file under some paths (bytes and modification time); ``check()`` asserts none changed,
    none appeared and none vanished."""

    def __init__(self, *paths):
        self.paths = [Path(p) for p in paths]
        self.before = self._state()

    def _state(self) -> dict[str, tuple[str, int]]:
        state = {}
        for root in self.paths:
            files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []
            for p in files:
                state[str(p)] = (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
        return state

    def check(self) -> None:
        after = self._state()
        assert after == self.before, f"inputs changed: {sorted(set(after.items()) ^ set(self.before.items()))}"


@dataclass
class Capped:
    code: int
    err: str
    out: str
    peak_mb: float


def run_capped(argv, cap_mb: int = 2500, timeout: float = 120) -> Capped:
    """Run ``python -m unetkit ARGV`` with its address space capped at ``cap_mb`` MiB; report the exit status,
    the output and the child's peak resident memory (read from /proc by a wrapper, so that earlier children
    of the test process do not count)."""

    def limit():
        resource.setrlimit(resource.RLIMIT_AS, (cap_mb << 20, cap_mb << 20))

    wrapper = ("import resource, runpy, sys\n"
               "sys.argv = ['unetkit', *sys.argv[1:]]\n"
               "try:\n    runpy.run_module('unetkit', run_name='__main__')\n"
               "finally:\n    sys.stderr.write('\\n@peak %d\\n' % resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)\n")
    proc = subprocess.run([sys.executable, "-c", wrapper, *[str(a) for a in argv]], preexec_fn=limit, capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, "PYTHONHASHSEED": "0"})
    err, _, peak = proc.stderr.rpartition("\n@peak ")
    return Capped(proc.returncode, err.strip(), proc.stdout, int(peak.split()[0]) / 1024 if peak.strip() else float("nan"))


def png_bytes(array) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def bomb_png(width: int = 100000, height: int = 100000) -> bytes:
    """A valid PNG header that claims width x height pixels, with no pixel data."""

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


def pair(folder: Path, name: str, image: np.ndarray, mask: np.ndarray | None, mask_name: str | None = None) -> None:
    """Write an image (and its mask, when given) into ``folder/images`` and ``folder/masks``."""
    (folder / "images").mkdir(parents=True, exist_ok=True)
    (folder / "masks").mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(folder / "images" / name)
    if mask is not None:
        Image.fromarray(mask).save(folder / "masks" / (mask_name or name))
