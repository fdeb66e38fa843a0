"""Read and write image and mask files: PNG, JPEG, BMP (Pillow) and TIFF (tifffile).

Arrays are indexed as rows and columns: images are ``(H, W, C)``, masks ``(H, W)`` or ``(H, W, 3)``.
Pixel values are never rescaled: a 16-bit file gives ``uint16``, a float TIFF gives ``float32``.
The extension says which files are images; the leading bytes say how to decode them, so a TIFF saved
as ``.png`` is read (and checked) as the TIFF it is. Images are checked as they are read
(:mod:`unetkit.data.pixels`): real numbers, at least one pixel, no NaN or infinite values.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import tifffile
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from unetkit.data.pixels import check_dtype, check_pixels, check_shape
from unetkit.errors import UnetkitError
from unetkit.files import atomic_write

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp"})
MAX_BANDS = 16  # more than this along an axis is a spatial axis, not a channel axis
_READ_ERRORS = (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError)
#: Leading bytes of the formats unetkit reads, and the extension of each.
SIGNATURES = (
    (b"\x89PNG\r\n\x1a\n", ".png"),
    (b"\xff\xd8\xff", ".jpg"),
    (b"II*\x00", ".tif"),
    (b"MM\x00*", ".tif"),
    (b"II+\x00", ".tif"),  # BigTIFF
    (b"MM\x00+", ".tif"),
    (b"BM", ".bmp"),
)


#: What each of those extensions is called in messages.
FORMAT_NAMES = {".png": "PNG", ".jpg": "JPEG", ".tif": "TIFF", ".bmp": "BMP"}


def sniff_bytes(head: bytes) -> str | None:
    """The extension that leading bytes belong to (``.png``, ``.jpg``, ``.tif``, ``.bmp``), or None."""
    return next((suffix for magic, suffix in SIGNATURES if head.startswith(magic)), None)


def sniff(path: str | os.PathLike) -> str | None:
    """The extension that the file's leading bytes belong to (see :func:`sniff_bytes`), or None."""
    try:
        with open(path, "rb") as f:
            return sniff_bytes(f.read(8))
    except OSError:
        return None


def is_tiff(path: str | os.PathLike) -> bool:
    """True when the file holds a TIFF (or BigTIFF), whatever its name."""
    return sniff(path) == ".tif"


def _check_extension(path: Path) -> None:
    if path.suffix.lower() not in IMAGE_EXTENSIONS:
        supported = ", ".join(sorted(IMAGE_EXTENSIONS))
        held = sniff(path) if path.is_file() else None
        hint = f"it holds a {FORMAT_NAMES[held]} image: rename it to {path.stem}{held}" if held else f"convert it to one of {supported}"
        raise UnetkitError(f"{path}: unsupported file type {path.suffix or '(none)'!r}; {hint}")


def _check_file(path: Path) -> None:
    """Refuse a folder (even one named like an image) or a missing file, before any decoder sees it."""
    if path.is_dir():
        raise UnetkitError(f"{path}: a folder, not an image file; pass the image files in it, or the folder itself as a folder of images")
    if not path.is_file():
        raise _cannot_read(path, "no such file")


def _cannot_read(path: Path, reason: object) -> UnetkitError:
    reason = str(reason).strip().splitlines()[0] if str(reason).strip() else type(reason).__name__
    return UnetkitError(f"{path}: cannot read image ({reason}); re-export it as PNG or TIFF")


def _to_hwc(array: np.ndarray, axes: str, path: Path) -> np.ndarray:
    """Return a TIFF series as ``(H, W, C)``, moving its one band axis (samples, channels, pages) last.

    ``axes`` are tifffile's series axes, e.g. ``"YX"``, ``"YXS"`` (bands last), ``"SYX"`` or ``"CYX"``.
    """
    keep = [i for i, axis in enumerate(axes) if array.shape[i] > 1 or axis in "YX"]
    array, axes = array.reshape([array.shape[i] for i in keep]), "".join(axes[i] for i in keep)
    if array.ndim == 2:
        return array[:, :, None]
    if array.ndim == 3 and "Y" in axes and "X" in axes:
        band = next(i for i, axis in enumerate(axes) if axis not in "YX")
        if array.shape[band] <= MAX_BANDS:
            return np.moveaxis(array, band, -1)
    raise UnetkitError(
        f"{path}: cannot read image (shape {array.shape} with axes {axes} is not (H, W), (H, W, C) or "
        f"(C, H, W) with C <= {MAX_BANDS}); save one 2D image per file"
    )


def _drop_constant_alpha(array: np.ndarray) -> np.ndarray:
    """Drop the last channel of a gray+alpha or RGBA ``(H, W, C)`` array when it is fully opaque."""
    alpha = array[..., -1]
    if array.shape[-1] in (2, 4) and alpha.size and np.all(alpha == np.iinfo(array.dtype).max):
        return array[..., :-1]
    return array


def _pillow_array(image: Image.Image) -> np.ndarray:
    """Pixels of a Pillow image in their native dtype; 16-bit gray stays ``uint16``."""
    if image.mode == "1":
        return np.array(image.convert("L"))  # (H, W) uint8 in {0, 255}
    if image.mode in ("CMYK", "YCbCr", "LAB", "HSV"):
        return np.array(image.convert("RGB"))
    array = np.array(image)
    if image.mode.startswith("I;16"):
        return array.astype(np.uint16)  # also turns big-endian "I;16B" into native order
    if image.mode == "I" and array.size and array.min() >= 0 and array.max() <= 65535:
        return array.astype(np.uint16)  # Pillow opens some 16-bit PNGs as 32-bit "I"
    return array


def _open_pillow(path: Path) -> Image.Image:
    try:
        image = Image.open(path)
        image.load()
    except _READ_ERRORS as error:
        raise _cannot_read(path, error) from error
    return image


def check_tiff(tiff: tifffile.TiffFile, path: Path) -> None:
    """Refuse, from its header alone, a TIFF whose first series is not real numbers, has no pixels, or claims
    more pixels than the file holds data for (no data at all, data past the end of the file, or too few
    bytes for its size uncompressed): such a header would have a reader allocate or compute for nothing."""
    series = tiff.series[0]
    check_dtype(series.dtype, str(path))
    check_shape(series.shape, str(path))
    page = series.keyframe
    counts, offsets = page.databytecounts, page.dataoffsets
    claims = f"it claims {' x '.join(map(str, series.shape))} pixels"
    if not any(counts):
        raise _cannot_read(path, f"{claims} but holds no pixel data")
    end, size = max(o + c for o, c in zip(offsets, counts)), path.stat().st_size
    if end > size:
        raise _cannot_read(path, f"truncated: {claims} whose data end at byte {end:,} but the file has {size:,} bytes")
    if page.compression == 1 and sum(counts) * 8 < int(np.prod(page.shape, dtype=np.int64)) * page.bitspersample:
        raise _cannot_read(path, f"truncated: {claims} but holds {sum(counts):,} bytes of uncompressed pixel data")


def _read_tiff(path: Path) -> np.ndarray:
    """The first series of a TIFF as ``(H, W, C)``; the header is checked before the pixels are decoded."""
    try:
        with tifffile.TiffFile(path) as tiff:
            check_tiff(tiff, path)
            series = tiff.series[0]
            array, axes = series.asarray(), series.axes
    except (*_READ_ERRORS, KeyError, IndexError) as error:
        raise _cannot_read(path, error) from error
    return _to_hwc(array, axes, path)


def _read_pillow(path: Path) -> np.ndarray:
    """A PNG, JPEG or BMP as ``(H, W, C)``: palettes become RGB, a fully opaque alpha channel is dropped."""
    image = _open_pillow(path)
    if image.mode in ("P", "PA"):
        image = image.convert("RGBA" if "transparency" in image.info or image.mode == "PA" else "RGB")
    array = _pillow_array(image)
    array = array[:, :, None] if array.ndim == 2 else array  # (H, W, C)
    return _drop_constant_alpha(array)


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read an image file as ``(H, W, C)`` in the file's native dtype, never rescaled, and check its pixels.

    Palette images become RGB; a fully opaque alpha channel (RGBA or LA) is dropped. TIFFs may hold
    ``(H, W)``, ``(H, W, C)`` or ``(C, H, W)`` with ``C <= 16`` bands; the result is always ``(H, W, C)``.
    The file's content, not its extension, picks the decoder.

    Args:
        path: A ``.png``, ``.jpg``, ``.jpeg``, ``.tif``, ``.tiff`` or ``.bmp`` file.

    Returns:
        The pixels, e.g. ``(512, 512, 1)`` uint8 for a gray PNG, ``uint16`` for a 16-bit PNG or TIFF.

    Raises:
        UnetkitError: The extension is unsupported, the path is a folder, the file cannot be decoded, or its
            pixels are not real numbers, are none, or are NaN, infinite or beyond float32
            (:func:`~unetkit.data.pixels.check_pixels`).

    Example:
        >>> read_image("images/0.png").shape  # doctest: +SKIP
        (512, 512, 1)
    """
    path = Path(path)
    _check_extension(path)
    _check_file(path)
    array = _read_tiff(path) if is_tiff(path) else _read_pillow(path)
    return np.ascontiguousarray(check_pixels(array, str(path)))


def _tiff_size(path: Path) -> tuple[int, int]:
    """``(H, W)`` of a TIFF's first series from its header; refuses one without pixels."""
    try:
        with tifffile.TiffFile(path) as tiff:
            check_tiff(tiff, path)
            shape, axes = tiff.series[0].shape, tiff.series[0].axes
    except (*_READ_ERRORS, KeyError, IndexError) as error:
        raise _cannot_read(path, error) from error
    if "Y" not in axes or "X" not in axes:
        raise _cannot_read(path, f"shape {tuple(shape)} with axes {axes} has no rows and columns")
    return int(shape[axes.index("Y")]), int(shape[axes.index("X")])


def probe_image(path: str | os.PathLike) -> tuple[int, int]:
    """Check that an image file is readable from its header (and, for PNG, its chunk checksums).

    Cheap enough to run over every input before any output is written, so a bad file is reported
    before a batch starts rather than halfway through it.

    Returns:
        ``(H, W)`` as stated by the file.

    Raises:
        UnetkitError: Unsupported extension, a folder, empty, truncated or undecodable header, a TIFF of
            complex values or without pixels, or a size beyond what can be decoded (a decompression bomb).
    """
    path = Path(path)
    _check_extension(path)
    _check_file(path)
    if path.stat().st_size == 0:
        raise _cannot_read(path, "empty file")
    if is_tiff(path):
        return _tiff_size(path)
    try:
        with Image.open(path) as image:
            size = image.size
            image.verify()  # PNG: walks the chunks and checks their CRCs without decoding pixels
    except Image.DecompressionBombError as error:
        raise UnetkitError(
            f"{path}: the file claims more pixels than a PNG/JPEG reader should decode ({error}); "
            "if the image is genuine, convert it to a tiled TIFF"
        ) from None
    except _READ_ERRORS as error:
        raise _cannot_read(path, error) from error
    return size[1], size[0]


def _collapse_gray(rgb: np.ndarray) -> np.ndarray:
    """``(H, W, 3)`` with R == G == B everywhere -> ``(H, W)``; otherwise unchanged."""
    if np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 0], rgb[..., 2]):
        return rgb[..., 0]
    return rgb


def read_mask_raw(path: str | os.PathLike) -> np.ndarray:
    """Read a mask file without interpreting its values.

    Gray, label and index images give ``(H, W)`` integers (``uint16`` kept for 16-bit files);
    palette PNGs give their palette indices ``(H, W)`` uint8 (colours via :func:`read_palette`);
    colour masks give ``(H, W, 3)`` uint8 with any alpha dropped, or ``(H, W)`` when R == G == B.

    Args:
        path: A mask file with one of :data:`IMAGE_EXTENSIONS`.

    Returns:
        The raw mask array.

    Raises:
        UnetkitError: The extension is unsupported or the file cannot be decoded.

    Example:
        >>> np.unique(read_mask_raw("masks/0.png"))  # doctest: +SKIP
        array([  0, 255], dtype=uint8)
    """
    path = Path(path)
    _check_extension(path)
    _check_file(path)
    if is_tiff(path):
        array = _read_tiff(path)
    else:
        image = _open_pillow(path)
        if image.mode in ("P", "PA"):
            return np.ascontiguousarray(np.array(image.convert("P") if image.mode == "PA" else image))
        if image.mode == "1":
            return np.array(image).astype(np.uint8)  # (H, W) in {0, 1}
        array = _pillow_array(image)
        array = array[:, :, None] if array.ndim == 2 else array  # (H, W, C)
    bands = array.shape[-1]
    if bands in (1, 2):  # gray, or gray + alpha
        return np.ascontiguousarray(array[..., 0])
    return np.ascontiguousarray(_collapse_gray(array[..., :3]))


def read_palette(path: str | os.PathLike) -> np.ndarray | None:
    """Return the ``(K, 3)`` uint8 colour table of a palette image, or None for other images.

    Args:
        path: An image file; only PNG, BMP (and other Pillow formats) can carry a palette.

    Returns:
        Row ``i`` is the RGB colour of index ``i``, or None when the file has no palette.
    """
    path = Path(path)
    _check_extension(path)
    if is_tiff(path):
        return None
    try:
        with Image.open(path) as image:
            if image.mode not in ("P", "PA"):
                return None
            palette = image.getpalette("RGB") or []
    except _READ_ERRORS as error:
        raise _cannot_read(path, error) from error
    return np.array(palette, dtype=np.uint8).reshape(-1, 3)


def write_png(path: str | os.PathLike, array: np.ndarray, text: dict[str, str] | None = None) -> None:
    """Write ``(H, W)`` uint8/uint16 or ``(H, W, 3|4)`` uint8 to a PNG file, atomically.

    Args:
        path: The ``.png`` file to create or replace.
        array: Gray (8 or 16 bit), RGB or RGBA pixels.
        text: ``tEXt`` entries to store (e.g. ``{"Software": "unetkit check"}``).

    Raises:
        UnetkitError: The dtype or shape cannot be stored losslessly in a PNG.

    Example:
        >>> write_png("pred/0.png", (mask * 255).astype(np.uint8))  # doctest: +SKIP
    """
    array = np.asarray(array)
    gray = array.ndim == 2 and array.dtype in (np.uint8, np.uint16)
    color = array.ndim == 3 and array.shape[2] in (3, 4) and array.dtype == np.uint8
    if not (gray or color):
        raise UnetkitError(
            f"{path}: cannot write {array.dtype} array of shape {array.shape} as PNG; pass (H, W) "
            "uint8/uint16 or (H, W, 3|4) uint8 (e.g. mask.astype(np.uint8)), or use write_tiff"
        )
    info = PngInfo()
    for key, value in (text or {}).items():
        info.add_text(key, value)
    with atomic_write(path) as tmp:
        Image.fromarray(np.ascontiguousarray(array)).save(tmp, format="PNG", pnginfo=info)


def write_tiff(path: str | os.PathLike, array: np.ndarray) -> None:
    """Write an array of any dtype to a zlib-compressed TIFF, atomically.

    ``(H, W, C)`` arrays with ``C <= 16`` are stored as one page of ``C`` samples per pixel (RGB when
    ``C == 3`` and uint8), so :func:`read_image` gives back the same array.

    Args:
        path: The ``.tif`` or ``.tiff`` file to create or replace.
        array: The pixels, e.g. ``(H, W)`` float32 probabilities or ``(H, W)`` int32 labels.

    Example:
        >>> write_tiff("pred/0.tif", probabilities.astype(np.float32))  # doctest: +SKIP
    """
    array = np.ascontiguousarray(array)
    options: dict = {"compression": "zlib"}
    if array.ndim == 3 and array.shape[2] <= MAX_BANDS:
        rgb = array.shape[2] == 3 and array.dtype == np.uint8
        options.update(photometric="rgb" if rgb else "minisblack", planarconfig="contig")
    with atomic_write(path) as tmp:
        tifffile.imwrite(tmp, array, **options)
