"""Optional dependencies: import one where it is used, or fail with one line naming what needs it and the install command."""

from __future__ import annotations

import importlib
from types import ModuleType

from unetkit.errors import UnetkitError


def optional(module: str, needs: str, extra: str) -> ModuleType:
    """Import ``module``, or raise UnetkitError ``"{needs}: pip install 'unetkit[{extra}]'"``.

    Example:
        >>> zarr = optional("zarr", "streaming large images needs zarr", "large")  # doctest: +SKIP
    """
    try:
        return importlib.import_module(module)
    except ImportError:
        raise UnetkitError(f"{needs}: pip install 'unetkit[{extra}]'") from None
