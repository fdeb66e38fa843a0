"""What machine this is, in words that figures and plans can quote (no torch: cheap to import)."""

from __future__ import annotations

import platform
from pathlib import Path


def cpu_name() -> str:
    """This machine's processor model, as /proc/cpuinfo names it (Linux), else what ``platform`` reports."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
