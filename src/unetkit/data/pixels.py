"""Checks of pixels where they enter unetkit: whole files, streamed windows and arrays passed to the API.

The network computes in float32 after ``(x - mean) / std``, so an image is refused when its pixels are not
real numbers (complex, text, objects), when it has no pixels, or when a value is NaN, infinite or beyond
float32's range (a float64 ``1e300`` becomes ``inf`` in the cast). Each check names the image and, for bad
values, where the first one is, so the user can find and fix it. The value check is a ``min``/``max`` pass
that allocates nothing; only an image that fails it is searched for the first bad pixel.
"""

from __future__ import annotations

import numpy as np

from unetkit.errors import UnetkitError

FLOAT32_MAX = float(np.finfo(np.float32).max)
_SEGMENTABLE = "biuf"  # numpy kinds of real pixel values: bool, signed and unsigned integers, floats


def check_dtype(dtype, name: str) -> None:
    """Refuse pixels that are not real numbers (complex, strings, objects, records).

    Example:
        >>> check_dtype(np.complex64, "scan.tif")
        Traceback (most recent call last):
        unetkit.errors.UnetkitError: scan.tif: complex-valued pixels (complex64); unetkit segments real images: save the magnitude (np.abs) or the real part as float32
    """
    dtype = np.dtype(dtype)
    if dtype.kind == "c":
        raise UnetkitError(f"{name}: complex-valued pixels ({dtype}); unetkit segments real images: save the magnitude (np.abs) "
                           "or the real part as float32")  # fmt: skip
    if dtype.kind not in _SEGMENTABLE:
        raise UnetkitError(f"{name}: pixels of type {dtype} are not numbers unetkit can segment; save the image as uint8, uint16 or float32")


def check_shape(shape: tuple[int, ...], name: str) -> None:
    """Refuse an image with a zero-length axis (zero height, width or bands)."""
    if any(int(n) == 0 for n in shape):
        raise UnetkitError(f"{name}: the image has shape {tuple(int(n) for n in shape)}, which holds no pixels; re-export it with "
                           "at least one row and one column")  # fmt: skip


def check_values(array: np.ndarray, name: str, origin: tuple[int, int] = (0, 0), count: bool = True) -> None:
    """Refuse NaN, infinite or beyond-float32 values in ``array`` (``(h, w)`` or ``(h, w, C)``); other dtypes pass.

    Args:
        array: Pixels, rows and columns first.
        name: The image, named in the error.
        origin: Image row and column of ``array[0, 0]`` when it is a window of the image.
        count: Say how many pixels are bad (False for a window of a streamed image, where that number is
            not the image's).

    Raises:
        UnetkitError: naming the image, the first bad pixel (row, column) and the fix.
    """
    if array.dtype.kind != "f" or array.size == 0:
        return
    low, high = float(array.min()), float(array.max())  # NaN propagates through both
    if -FLOAT32_MAX <= low and high <= FLOAT32_MAX:
        return
    finite = np.isfinite(array)
    overflow = bool(finite.all())
    bad = ((array > FLOAT32_MAX) | (array < -FLOAT32_MAX)) if overflow else ~finite
    first = np.unravel_index(int(np.argmax(bad)), bad.shape)  # the first bad value in row-major order, without listing them all
    r, c = int(first[0]), int(first[1])
    where = f"row {r + origin[0]}, column {c + origin[1]}"
    if overflow:
        raise UnetkitError(f"{name}: the pixel at {where} is {float(array[first]):.3g}, beyond float32's range (±{FLOAT32_MAX:.3g}) in "
                           "which unetkit computes; rescale the image (e.g. to 0..1) and save it as float32")  # fmt: skip
    how_many, which = (f"{int(bad.sum())} pixel(s) are", "the first") if count else ("pixels are", "one")
    raise UnetkitError(f"{name}: {how_many} NaN or infinite ({which} at {where}); replace them (e.g. with 0) before segmenting")


def check_pixels(array: np.ndarray, name: str) -> np.ndarray:
    """All three checks on a whole ``(H, W[, C])`` image; returns ``array``."""
    check_dtype(array.dtype, name)
    check_shape(array.shape, name)
    check_values(array, name)
    return array
