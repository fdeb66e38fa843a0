"""Read and write 3D volumes: NIfTI (nibabel), TIFF stacks (tifffile) and zarr arrays, with their voxel geometry.

Every volume is ``(Z, Y, X, C)`` (slices, rows, columns, channels; ``C = 1`` for one) in the file's dtype, so
``array[z]`` is a ``(H, W, C)`` slice as :func:`unetkit.data.io.read_image` gives one.

* **NIfTI** (``.nii``, ``.nii.gz``; extra ``volumes``) stores ``(x, y, z[, c])``: reading reverses the spatial
  axes, writing reverses them back. A 4D file holds channels, as the Decathlon's multi-modal cases do.
* **TIFF stacks** (``.tif``, ``.tiff``): the one stack axis (Z, or the pages) becomes Z, channels (C or samples)
  go last. Spacing from OME-XML ``PhysicalSizeZ/Y/X`` or ImageJ's ``spacing`` and resolution. Written as OME-TIFF.
* **zarr** (a ``.zarr`` folder; extra ``large``): an array ``(Z, Y, X[, C])`` with the optional attributes
  ``spacing`` ``[z, y, x]``, ``unit`` and ``affine`` (a 4x4 list).

``spacing`` is ``(z, y, x)``, the array's order, in mm: metres, microns and nanometres are converted; a file
that states no unit (a TIFF without metadata: 1.0) gives ``unit == "unknown"`` and its numbers as they are
(NIfTI without a unit is mm, as for ITK and nibabel). ``affine`` is NIfTI's own, kept unchanged so that a
volume written back has the file's orientation exactly: ``world = affine @ [x, y, z, 1]`` for ``array[z, y, x]``
(the index reversed), so ``spacing[::-1]`` are the lengths of its first three columns. TIFF has no affine.
"""

from __future__ import annotations

import contextlib
import gzip
import logging
import os
import secrets
import shutil
import threading
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import numpy as np
import tifffile

from unetkit.errors import UnetkitError
from unetkit.extras import optional
from unetkit.files import atomic_write, write_error

#: The names of volume files, and their format.
VOLUME_SUFFIXES = {".nii.gz": "nifti", ".nii": "nifti", ".tif": "tiff", ".tiff": "tiff", ".zarr": "zarr"}
UNITS = ("mm", "unknown")
#: Millimetres per unit, for the unit names NIfTI, ImageJ, OME and zarr attributes use ("u" for µ).
MM_PER_UNIT = {
    "mm": 1.0, "millimeter": 1.0, "millimetre": 1.0, "cm": 10.0, "m": 1000.0, "meter": 1000.0, "metre": 1000.0,
    "um": 1e-3, "micron": 1e-3, "microns": 1e-3, "micrometer": 1e-3, "micrometre": 1e-3, "nm": 1e-6,
    "nanometer": 1e-6, "inch": 25.4,
}  # fmt: skip
_READ_ERRORS = (OSError, ValueError, EOFError, KeyError, IndexError, MemoryError, RuntimeError, zlib.error)
_GZIP_LEVEL = 1  # nibabel's own default for .nii.gz: on MRI ~15% larger than gzip's 6, ~7x faster


@dataclass(frozen=True, eq=False)
class Volume:
    """A volume and its voxel geometry.

    Attributes:
        array: ``(Z, Y, X, C)`` voxels in the file's dtype; a ``(Z, Y, X)`` array is given ``C = 1``.
        spacing: ``(z, y, x)`` voxel size in ``unit``; default 1.0 each.
        affine: ``(4, 4)`` float64, voxel index ``(x, y, z, 1)`` to world (see the module's docstring), or None
            when the file has none (TIFF, zarr without an ``affine`` attribute).
        unit: ``"mm"``, or ``"unknown"`` when the file does not say (its spacing numbers are kept as they are).

    Example:
        >>> Volume(np.zeros((8, 10, 12), np.uint8), (2.0, 1.0, 1.0)).array.shape
        (8, 10, 12, 1)
    """

    array: np.ndarray
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)
    affine: np.ndarray | None = None
    unit: str = "mm"

    def __post_init__(self) -> None:
        checked = _checked(self.array, self.spacing, self.affine, self.unit, "Volume")
        for name, value in zip(("array", "spacing", "affine"), checked):
            object.__setattr__(self, name, value)


@dataclass(frozen=True, eq=False)
class VolumeInfo:
    """What a volume file's header says (see :func:`volume_info`): ``shape`` ``(Z, Y, X, C)`` and ``dtype`` (native
    byte order) of the array :func:`read_volume` returns; ``spacing``, ``affine`` and ``unit`` as in :class:`Volume`."""

    shape: tuple[int, int, int, int]
    dtype: np.dtype
    spacing: tuple[float, float, float]
    affine: np.ndarray | None
    unit: str


def _checked(array, spacing, affine, unit: str, name: object) -> tuple[np.ndarray, tuple, np.ndarray | None]:
    """``(array (Z, Y, X, C), spacing, affine float64)``, or one line naming ``name`` and what to pass."""
    array = np.asarray(array)
    if array.ndim == 3:
        array = array[..., None]  # (Z, Y, X, 1)
    if array.ndim != 4 or array.dtype.kind not in "biuf" or 0 in array.shape:
        raise UnetkitError(f"{name}: a volume is a non-empty (Z, Y, X) or (Z, Y, X, C) array of numbers, got {array.dtype} "
                           f"of shape {array.shape}; for a 2D image use unetkit.data.io")  # fmt: skip
    values = np.asarray(spacing, dtype=np.float64)
    if values.shape != (3,) or not np.all(np.isfinite(values) & (values > 0)):
        raise UnetkitError(f"{name}: spacing must be three positive sizes (z, y, x), got {spacing!r}")
    if affine is not None:
        affine = np.array(affine, dtype=np.float64)
        if affine.shape != (4, 4) or not np.all(np.isfinite(affine)):
            raise UnetkitError(f"{name}: affine must be a finite 4x4 matrix (voxel (x, y, z, 1) to world) or None, got shape {affine.shape}")
    if unit not in UNITS:
        raise UnetkitError(f"{name}: unit must be one of {', '.join(UNITS)}, got {unit!r}; convert the spacing to mm")
    return array, tuple(float(v) for v in values), affine


def _nibabel() -> ModuleType:
    return optional("nibabel", "NIfTI volumes need nibabel", "volumes")


def _zarr() -> ModuleType:
    return optional("zarr", "zarr volumes need zarr", "large")


def _is_zarr_folder(path: Path) -> bool:
    return path.is_dir() and ((path / "zarr.json").is_file() or (path / ".zarray").is_file())


def _format(path: Path) -> str:
    """``"nifti"``, ``"tiff"`` or ``"zarr"`` from the name (a zarr array may also be any folder holding one)."""
    name = path.name.lower()
    suffix = next((suffix for suffix in VOLUME_SUFFIXES if name.endswith(suffix)), None)
    if suffix is None and _is_zarr_folder(path):
        suffix = ".zarr"
    if suffix is None:
        raise UnetkitError(f"{path}: unsupported volume file type {''.join(path.suffixes[-2:]) or '(none)'!r}; save the volume "
                           "as .nii.gz or .nii (NIfTI), .tif or .tiff (a TIFF stack) or .zarr")  # fmt: skip
    return VOLUME_SUFFIXES[suffix]


def _cannot_read(path: Path, reason: object) -> UnetkitError:
    text = str(reason).strip()
    reason = text.splitlines()[0].rstrip(" -") if text else type(reason).__name__
    return UnetkitError(f"{path}: cannot read volume ({reason}); the file is damaged or not what its name says: re-export "
                        "or re-download it")  # fmt: skip


def _not_a_volume(path: Path, shape: Sequence[int], axes: str) -> UnetkitError:
    return UnetkitError(f"{path}: a 2D image (shape {tuple(int(n) for n in shape)}, axes {axes}), not a volume; save the "
                        "slices as one stack (a multi-page TIFF or a NIfTI volume), or read it with unetkit.data.io.read_image")  # fmt: skip


@contextlib.contextmanager
def _reading(path: Path) -> Iterator[None]:
    """Turn whatever the decoders raise for a damaged file into one line naming the file."""
    if not path.exists():
        raise UnetkitError(f"{path}: cannot read volume (no such file); check the path")
    try:
        yield
    except MemoryError as error:
        raise _cannot_read(path, f"its header claims more voxels than memory holds: {error}") from error
    except _READ_ERRORS as error:
        raise _cannot_read(path, error) from error


def _mm(unit: object) -> float | None:
    """Millimetres per ``unit`` (a name such as ``"micron"``, ``"µm"``, ``"\\u00B5m"``), or None when unknown."""
    name = str(unit).strip().lower()
    for micro in ("\\u00b5", "\u00b5", "\u03bc"):
        name = name.replace(micro, "u")
    return MM_PER_UNIT.get(name)


def _in_mm(sizes: Sequence[float], units: Sequence[object]) -> tuple[tuple[float, float, float], str]:
    """``(spacing, unit)``: sizes converted to mm when every unit is known, else kept with ``"unknown"``."""
    factors = [_mm(unit) for unit in units]
    if None in factors:
        return tuple(float(s) for s in sizes), "unknown"
    return tuple(float(s) * f for s, f in zip(sizes, factors)), "mm"


# NIfTI ------------------------------------------------------------------------------------------------


def _nifti(path: Path, data: bool) -> tuple[VolumeInfo, np.ndarray | None]:
    """Header (and voxels) of a NIfTI file; voxels ``(x, y, z[, c])`` become ``(Z, Y, X, C)``."""
    nib = _nibabel()
    try:
        image = nib.load(path, mmap=False)
    except (nib.filebasedimages.ImageFileError, nib.spatialimages.HeaderDataError) as error:
        raise _cannot_read(path, error) from error
    shape = tuple(int(n) for n in image.shape)
    if len(shape) == 5 and shape[3] == 1:  # ITK writes vector images as (x, y, z, 1, c)
        shape = shape[:3] + shape[4:]
    if len(shape) < 3:
        raise _not_a_volume(path, shape, "XY")
    if len(shape) > 4:
        raise UnetkitError(f"{path}: a {len(shape)}D NIfTI (shape {shape}); unetkit reads (x, y, z) or (x, y, z, channels): "
                           "save one volume per file")  # fmt: skip
    x, y, z, c = shape + (1,) * (4 - len(shape))
    header, proxy = image.header, image.dataobj
    scaled = (float(proxy.slope), float(proxy.inter)) != (1.0, 0.0)  # scl_slope / scl_inter: the file means floats
    dtype = np.dtype(np.float32) if scaled else image.get_data_dtype().newbyteorder("=")
    if not path.name.lower().endswith(".gz") and proxy.offset + x * y * z * c * proxy.dtype.itemsize > path.stat().st_size:
        raise _cannot_read(path, f"truncated: its header claims {x} x {y} x {z} x {c} voxels, more than the file holds")
    factor = MM_PER_UNIT.get(header.get_xyzt_units()[0], 1.0)  # "unknown" is mm, as for ITK and nibabel
    spacing = tuple(abs(float(s)) * factor for s in header.get_zooms()[2::-1])  # (z, y, x); the sign is qfac's
    affine = np.array(image.affine, dtype=np.float64)
    affine[:3] *= factor
    info = VolumeInfo((z, y, x, c), dtype, spacing, affine, "mm")
    if not data:
        return info, None
    voxels = image.get_fdata(dtype=np.float32) if scaled else np.asarray(proxy)
    voxels = voxels.reshape(x, y, z, c).transpose(2, 1, 0, 3)  # (x, y, z, c) -> (Z, Y, X, C)
    return info, np.ascontiguousarray(voxels, dtype=dtype)


def _write_nifti(path: Path, array: np.ndarray, spacing: tuple, affine: np.ndarray | None, unit: str) -> None:
    """``(Z, Y, X, C)`` as NIfTI ``(x, y, z[, c])``, both sform and qform set to ``affine`` (code 1, scanner)."""
    nib = _nibabel()
    voxels = array.transpose(2, 1, 0, 3)  # (Z, Y, X, C) -> (x, y, z, c)
    voxels = voxels[..., 0] if voxels.shape[3] == 1 else voxels
    affine = np.diag([*spacing[::-1], 1.0]) if affine is None else affine
    try:
        image = nib.Nifti1Image(voxels, affine, dtype=array.dtype)
    except nib.spatialimages.HeaderDataError as error:
        raise UnetkitError(f"{path}: NIfTI cannot store {array.dtype} voxels ({error}); convert the array, e.g. to uint8, "
                           "int16 or float32") from None  # fmt: skip
    image.set_sform(affine, code=1)
    image.set_qform(affine, code=1)
    image.header.set_zooms((*spacing[::-1], 1.0)[: voxels.ndim])  # the spacing given, even where the affine rounds
    image.header.set_xyzt_units("mm" if unit == "mm" else 0)
    with atomic_write(path) as tmp, open(tmp, "wb") as raw:
        if not path.name.lower().endswith(".gz"):
            image.to_stream(raw)
            return
        # filename="" and mtime=0: the gzip header names no temporary file and the output is reproducible
        with gzip.GzipFile(filename="", mode="wb", compresslevel=_GZIP_LEVEL, fileobj=raw, mtime=0) as stream:
            image.to_stream(stream)


# TIFF -------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _tiff_complaints(path: Path) -> Iterator[None]:
    """Fail on what tifffile only logs: a broken page chain reads as a shorter stack, not as an error."""
    records: list[logging.LogRecord] = []
    handler, thread = logging.Handler(logging.ERROR), threading.get_ident()
    handler.emit = records.append
    handler.addFilter(lambda record: record.thread == thread)  # not another thread's file
    logger = logging.getLogger("tifffile")
    logger.addHandler(handler)
    try:
        yield
    except UnetkitError as error:  # e.g. "a 2D image": what is left of a stack whose later pages are cut off
        if records:
            raise _cannot_read(path, records[0].getMessage()) from error
        raise
    finally:
        logger.removeHandler(handler)
    if records:
        raise _cannot_read(path, records[0].getMessage())


def _tiff_layout(shape: Sequence[int], axes: str, path: Path) -> list[int]:
    """Series axes in ``(Z, Y, X[, C])`` order, axes of length 1 left out. The stack axis is the one left besides
    Y, X and channels (C, or S for samples): Z, tifffile's I or Q for plain pages, or T for a stack ImageJ took for frames."""
    kept = [i for i, axis in enumerate(axes) if shape[i] > 1 or axis in "YX"]
    stack = [i for i in kept if axes[i] not in "YXCS"]
    channel = [i for i in kept if axes[i] in "CS"]
    if not stack:
        raise _not_a_volume(path, shape, axes)
    if len(stack) > 1 or len(channel) > 1:
        raise UnetkitError(f"{path}: a TIFF with shape {tuple(shape)} and axes {axes} holds more than one volume; save one "
                           "(Z, Y, X) or (Z, Y, X, C) stack per file")  # fmt: skip
    return [stack[0], axes.index("Y"), axes.index("X"), *channel]


def _tiff_spacing(tiff: tifffile.TiffFile) -> tuple[tuple[float, float, float], str]:
    """``(z, y, x)`` spacing and unit from OME-XML or ImageJ metadata; a size the file lacks is 1 of its unit."""
    if tiff.is_ome:
        image = tifffile.xml2dict(tiff.ome_metadata)["OME"]["Image"]
        pixels = (image[0] if isinstance(image, list) else image)["Pixels"]
        if not any(f"PhysicalSize{axis}" in pixels for axis in "ZYX"):
            return (1.0, 1.0, 1.0), "unknown"
        sizes = [pixels.get(f"PhysicalSize{axis}", 1.0) for axis in "ZYX"]
        return _in_mm(sizes, [pixels.get(f"PhysicalSize{axis}Unit", "um") for axis in "ZYX"])  # OME's default is µm
    if tiff.is_imagej:
        metadata, tags = tiff.imagej_metadata or {}, tiff.pages[0].tags
        sizes = [metadata.get("spacing", 1.0)]
        for name in ("YResolution", "XResolution"):  # pixels per unit
            numerator, denominator = tags[name].value if name in tags else (1, 1)
            sizes.append(denominator / numerator if numerator else 1.0)
        return _in_mm(sizes, [metadata.get("unit", "pixel")] * 3)
    return (1.0, 1.0, 1.0), "unknown"


def _check_tiff_data(series: tifffile.TiffPageSeries, path: Path) -> None:
    """Refuse a stack whose pixel data, as its pages declare them, run past the end of the file."""
    size = path.stat().st_size
    if series.dataoffset is not None:  # contiguous data (ImageJ, uncompressed): one range
        ends = [series.dataoffset + series.nbytes]
    else:
        ends = [max(o + c for o, c in zip(p.dataoffsets, p.databytecounts)) for p in series.pages if p is not None]
    if ends and max(ends) > size:
        raise _cannot_read(path, f"truncated: its pixel data end at byte {max(ends):,} but the file has {size:,} bytes")


def _tiff(path: Path, data: bool) -> tuple[VolumeInfo, np.ndarray | None]:
    """Header (and voxels) of a TIFF stack's first series as ``(Z, Y, X, C)``."""
    with _tiff_complaints(path), tifffile.TiffFile(path) as tiff:
        series = tiff.series[0]
        shape, axes = tuple(series.shape), series.axes
        order = _tiff_layout(shape, axes, path)
        _check_tiff_data(series, path)
        spacing, unit = _tiff_spacing(tiff)
        sizes = [shape[i] for i in order] + [1] * (4 - len(order))
        info = VolumeInfo(tuple(sizes), series.dtype.newbyteorder("="), spacing, None, unit)
        voxels = series.asarray() if data else None
    if voxels is None:
        return info, None
    rest = [i for i in range(voxels.ndim) if i not in order]  # all of length 1
    voxels = voxels.transpose(order + rest).reshape(sizes)  # (Z, Y, X, C)
    return info, np.ascontiguousarray(voxels, dtype=info.dtype)


def _write_tiff(path: Path, array: np.ndarray, spacing: tuple, affine: np.ndarray | None, unit: str) -> None:
    """``(Z, Y, X, C)`` as a zlib-compressed OME-TIFF ``ZCYX`` with ``PhysicalSizeZ/Y/X``."""
    if affine is not None and not np.allclose(affine, np.diag([*spacing[::-1], 1.0]), rtol=0, atol=1e-6):
        raise UnetkitError(f"{path}: a TIFF keeps the voxel spacing but not this affine's orientation or origin; write "
                           ".nii.gz or .zarr to keep them, or pass affine=None to drop them")  # fmt: skip
    tiff_unit = "mm" if unit == "mm" else "pixel"
    metadata: dict = {"axes": "ZCYX"}
    for axis, size in zip("ZYX", spacing):
        metadata.update({f"PhysicalSize{axis}": size, f"PhysicalSize{axis}Unit": tiff_unit})
    voxels = np.ascontiguousarray(np.moveaxis(array, 3, 1))  # (Z, Y, X, C) -> (Z, C, Y, X)
    try:
        with atomic_write(path) as tmp:
            tifffile.imwrite(tmp, voxels, ome=True, photometric="minisblack", compression="zlib", metadata=metadata,
                             bigtiff=voxels.nbytes > 2**31)  # fmt: skip
    except tifffile.OmeXmlError as error:
        raise UnetkitError(f"{path}: OME-TIFF cannot store {array.dtype} voxels ({error}); convert the array, e.g. to "
                           "int32 or float32") from None  # fmt: skip


# zarr -------------------------------------------------------------------------------------------------


def _zarr_geometry(attrs: dict, path: Path) -> tuple[tuple[float, float, float], np.ndarray | None, str]:
    """``(spacing, affine, unit)`` from a zarr array's attributes ``spacing``, ``unit`` and ``affine``."""
    try:
        sizes = [float(s) for s in attrs.get("spacing", (1.0, 1.0, 1.0))]
        affine = None if attrs.get("affine") is None else np.array(attrs["affine"], dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise _cannot_read(path, f"its attributes spacing and affine are not numbers: {error}") from error
    if len(sizes) != 3 or (affine is not None and affine.shape != (4, 4)):
        raise _cannot_read(path, "its attribute spacing is not 3 sizes [z, y, x] or its affine not a 4x4 matrix")
    spacing, unit = _in_mm(sizes, [attrs.get("unit", "pixel") if "spacing" in attrs else "pixel"] * 3)
    if affine is not None and unit == "mm":
        affine[:3] *= _mm(attrs["unit"])
    return spacing, affine, unit


def _zarr_volume(path: Path, data: bool) -> tuple[VolumeInfo, np.ndarray | None]:
    """Header (and voxels) of a zarr array stored ``(Z, Y, X[, C])``, geometry from its attributes."""
    zarr = _zarr()
    array = zarr.open_array(store=str(path), mode="r")
    shape = tuple(int(n) for n in array.shape)
    if len(shape) < 3:
        raise _not_a_volume(path, shape, "YX"[-len(shape) :])
    if len(shape) > 4:
        raise UnetkitError(f"{path}: a {len(shape)}D zarr array (shape {shape}); unetkit reads (Z, Y, X) or (Z, Y, X, C): "
                           "store one volume per array")  # fmt: skip
    spacing, affine, unit = _zarr_geometry(dict(array.attrs), path)
    info = VolumeInfo(shape + (1,) * (4 - len(shape)), np.dtype(array.dtype).newbyteorder("="), spacing, affine, unit)
    voxels = np.asarray(array[...]).reshape(info.shape) if data else None
    return info, voxels


@contextlib.contextmanager
def _atomic_folder(path: Path) -> Iterator[Path]:
    """:func:`unetkit.files.atomic_write` for a folder. A folder cannot replace a non-empty one in one step: the
    old one is moved aside, the new one in, the old one deleted; on a failure the new one goes, the old one stays."""
    if path.exists() and not _is_zarr_folder(path):
        raise UnetkitError(f"{path}: exists and is not a zarr array; choose another name or remove it first")
    token = secrets.token_hex(4)
    tmp, old = path.with_name(f".{path.name}.tmp-{token}"), path.with_name(f".{path.name}.old-{token}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        yield tmp
        if path.exists():
            os.replace(path, old)
        os.replace(tmp, path)
    except BaseException as error:
        shutil.rmtree(tmp, ignore_errors=True)
        if old.exists() and not path.exists():
            os.replace(old, path)
        if isinstance(error, OSError):
            raise UnetkitError(write_error(path, error)) from None
        raise
    shutil.rmtree(old, ignore_errors=True)


def _write_zarr(path: Path, array: np.ndarray, spacing: tuple, affine: np.ndarray | None, unit: str) -> None:
    """``(Z, Y, X, C)`` as a zarr array with the attributes ``spacing``, ``unit`` and ``affine``."""
    zarr = _zarr()
    attributes = {"spacing": list(spacing), "unit": unit, "affine": None if affine is None else affine.tolist()}
    with _atomic_folder(path) as tmp:
        stored = zarr.create_array(store=str(tmp), shape=array.shape, dtype=array.dtype, attributes=attributes)
        stored[...] = array


_READERS = {"nifti": _nifti, "tiff": _tiff, "zarr": _zarr_volume}
_WRITERS = {"nifti": _write_nifti, "tiff": _write_tiff, "zarr": _write_zarr}


def _read(path: Path, data: bool) -> tuple[VolumeInfo, np.ndarray | None]:
    """The header (and voxels) of any volume file, its geometry checked."""
    read = _READERS[_format(path)]
    with _reading(path):
        info, array = read(path, data)
    bad_affine = info.affine is not None and not np.all(np.isfinite(info.affine))
    if bad_affine or not all(np.isfinite(s) and s > 0 for s in info.spacing):
        raise UnetkitError(f"{path}: its header gives voxel sizes (z, y, x) {info.spacing}{' and a non-finite affine' * bad_affine}; "
                           "fix the header (NIfTI pixdim and sform, ImageJ spacing, OME PhysicalSize) or re-export the file")  # fmt: skip
    return info, array


def volume_info(path: str | os.PathLike) -> VolumeInfo:
    """Shape ``(Z, Y, X, C)``, dtype and geometry of a volume file from its header alone (cheap: a ``.nii.gz``
    is decompressed only as far as its header), e.g. to check every case of a data set before training.

    Args:
        path: A ``.nii``, ``.nii.gz``, ``.tif``/``.tiff`` stack or ``.zarr`` array.

    Raises:
        UnetkitError: As :func:`read_volume`, for what the header shows.

    Example:
        >>> volume_info("imagesTr/hippocampus_001.nii.gz").shape  # doctest: +SKIP
        (35, 51, 35, 1)
    """
    return _read(Path(path), data=False)[0]


def read_volume(path: str | os.PathLike) -> Volume:
    """Read a :class:`Volume`: ``(Z, Y, X, C)`` in the file's dtype, with its spacing (mm) and affine.

    NIfTI voxels ``(x, y, z[, c])`` are reversed into ``(Z, Y, X, C)``; the affine stays the file's (it maps
    ``(x, y, z, 1)``). NIfTI values with a scale factor (``scl_slope``/``scl_inter``) are returned scaled, as
    float32. TIFF stacks and zarr arrays have no affine unless a zarr array's attributes give one.

    Args:
        path: A ``.nii``, ``.nii.gz``, ``.tif``/``.tiff`` stack (ImageJ, OME or plain pages) or ``.zarr`` array.

    Raises:
        UnetkitError: One line naming the file and the fix: an unknown extension, a missing, damaged or
            truncated file, a 2D image, more than one volume in one file, or a missing optional package.

    Example:
        >>> volume = read_volume("imagesTr/hippocampus_001.nii.gz")  # doctest: +SKIP
        >>> volume.array.shape, volume.spacing  # doctest: +SKIP
        ((35, 51, 35, 1), (1.0, 1.0, 1.0))
    """
    info, array = _read(Path(path), data=True)
    return Volume(array, info.spacing, info.affine, info.unit)


def write_volume(
    path: str | os.PathLike,
    array: np.ndarray,
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
    affine: np.ndarray | None = None,
    unit: str = "mm",
) -> None:
    """Write a volume atomically (a temporary file moved into place) as NIfTI, OME-TIFF or zarr, by extension.

    :func:`read_volume` gives back the same array, dtype, spacing and affine (NIfTI stores the affine in
    float32). NIfTI without an affine gets ``diag(x, y, z spacing)``; TIFF keeps the spacing but refuses an
    affine that holds more (rotation, flips, an origin); a ``(Z, Y, X, 1)`` array is stored as 3D.

    Args:
        path: The ``.nii.gz``, ``.nii``, ``.tif``/``.tiff`` or ``.zarr`` to create or replace.
        array: ``(Z, Y, X)`` or ``(Z, Y, X, C)`` voxels, e.g. a ``uint8`` label volume.
        spacing: ``(z, y, x)`` voxel size in ``unit``, the array's order (not NIfTI's x, y, z); default 1.0
            each. Stored as given (NIfTI ``pixdim``), even where it disagrees with ``affine``'s column lengths,
            as some files do: pass what :func:`read_volume` gave.
        affine: ``(4, 4)`` voxel ``(x, y, z, 1)`` to world, as :attr:`Volume.affine`; default None.
        unit: ``"mm"`` (default) or ``"unknown"``.

    Raises:
        UnetkitError: A bad array, spacing or affine; a dtype or affine the format cannot store; or a write the
            system refuses (the previous file, if any, is kept).

    Example:
        >>> volume = read_volume("imagesTr/hippocampus_001.nii.gz")  # doctest: +SKIP
        >>> write_volume("pred/hippocampus_001.nii.gz", mask, volume.spacing, volume.affine)  # doctest: +SKIP
    """
    path = Path(path)
    write = _WRITERS[_format(path)]
    array, spacing, affine = _checked(array, spacing, affine, unit, path)
    write(path, array, spacing, affine, unit)
