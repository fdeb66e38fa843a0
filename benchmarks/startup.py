"""Start-up time of the command line: ``unetkit --help``, ``unetkit train --help`` and ``import unetkit``.

Usage (from the repository root):
    python benchmarks/startup.py [--runs 15]

Each command runs ``--runs`` times in a fresh interpreter, interleaved so that load from other processes hits
all alike; the table gives the median and the fastest run, beside a bare ``python -c pass`` (the interpreter's
own start, which no package can remove). Rewrites the "startup" section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from spine import publish

from unetkit.machine import cpu_name


def commands() -> dict[str, list[str]]:
    """What is timed: the console script as installed, its module form, and the imports."""
    script = shutil.which("unetkit")
    timed = {
        "python -c pass": [sys.executable, "-c", "pass"],
        "import unetkit": [sys.executable, "-c", "import unetkit"],
        "python -m unetkit --help": [sys.executable, "-m", "unetkit", "--help"],
        "python -m unetkit train --help": [sys.executable, "-m", "unetkit", "train", "--help"],
        "import unetkit.api (loads PyTorch)": [sys.executable, "-c", "import unetkit.api"],
    }
    if script:
        timed["unetkit --help"] = [script, "--help"]
    return timed


def measure(timed: dict[str, list[str]], runs: int) -> dict[str, list[float]]:
    seconds: dict[str, list[float]] = {name: [] for name in timed}
    for _ in range(runs):
        for name, argv in timed.items():
            t0 = time.perf_counter()
            subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)
            seconds[name].append(time.perf_counter() - t0)
    return seconds


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=15, help="runs of each command (default: 15)")
    args = ap.parse_args()
    seconds = measure(commands(), args.runs)
    machine = f"{cpu_name()}, {len(os.sched_getaffinity(0))} cores, Python {platform.python_version()}"
    lines = [
        "## Start-up: `unetkit --help` and `import unetkit`",
        "",
        f"Command: `python benchmarks/startup.py --runs {args.runs}` ({time.strftime('%Y-%m-%d')}; {machine}; "
        f"each command {args.runs} times in a fresh interpreter, interleaved).",
        "",
        "| command | median (s) | fastest (s) |",
        "|---|---:|---:|",
        *(f"| `{name}` | {statistics.median(s):.3f} | {min(s):.3f} |" for name, s in seconds.items()),
        "",
        "`import unetkit` and every `--help` load no PyTorch, NumPy or OpenCV: the package's names load on first use, and the "
        "CLI builds its flags from torch-free option declarations (`unetkit.commands`, `unetkit.config`). `unetkit` itself is "
        "the console script as installed; where it is a pyenv shim, the shim's own start is in its time. "
        "Before the restructuring (issue 17) the package imported PyTorch, SciPy, scikit-image, OpenCV and matplotlib "
        "before any command was chosen, so `unetkit --help` cost what the `import unetkit.api` row costs now.",
    ]
    publish("startup", lines)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
