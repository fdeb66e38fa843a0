"""Tests of unetkit.data.volumes on tiny volumes (8 x 10 x 12) made in tmp_path."""

import errno
import re
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import tifffile
import zarr

from unetkit.data.volumes import Volume, read_volume, volume_info, write_volume
from unetkit.errors import UnetkitError

SHAPE = (8, 10, 12)  # (Z, Y, X): a different size on each axis, so a swapped axis shows
DATA = np.arange(np.prod(SHAPE), dtype=np.int16).reshape(SHAPE)  # DATA[z, y, x] differs everywhere


def _rotated_affine(spacing_xyz=(0.7, 1.3, 3.0), origin=(-90.5, 12.25, 40.0)) -> np.ndarray:
    """A voxel (x, y, z) -> world affine with anisotropic voxels, rotated about two axes, and an origin."""
    a, b = np.deg2rad(30), np.deg2rad(-20)
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    affine = np.eye(4)
    affine[:3, :3] = rz @ rx @ np.diag(spacing_xyz)
    affine[:3, 3] = origin
    return affine


def _nifti(path: Path, zyx: np.ndarray, affine: np.ndarray, units: str = "mm") -> Path:
    """Write ``(Z, Y, X[, C])`` with nibabel itself, as NIfTI's ``(x, y, z[, c])``."""
    xyz = zyx.transpose(2, 1, 0, *range(3, zyx.ndim))
    image = nib.Nifti1Image(xyz, affine, dtype=zyx.dtype)
    image.header.set_xyzt_units(units)
    nib.save(image, path)
    return path


def _one_line_error(path: Path, what: str = "cannot read volume"):
    return pytest.raises(UnetkitError, match=rf"^{re.escape(str(path))}: {what}[^\n]*$")


# The Volume record ------------------------------------------------------------------------------------


def test_volume_gives_a_3d_array_one_channel():
    volume = Volume(DATA, (2.0, 1.0, 0.5))
    assert volume.array.shape == (*SHAPE, 1)
    assert volume.spacing == (2.0, 1.0, 0.5) and volume.affine is None and volume.unit == "mm"


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"array": np.zeros((10, 12))}, r"Volume: a volume is a non-empty \(Z, Y, X\)"),
        ({"array": DATA, "spacing": (1.0, 0.0, 1.0)}, "spacing must be three positive sizes"),
        ({"array": DATA, "affine": np.eye(3)}, "affine must be a finite 4x4 matrix"),
        ({"array": DATA, "unit": "um"}, "unit must be one of mm, unknown"),
    ],
)
def test_volume_refuses_what_is_not_a_volume(kwargs, message):
    with pytest.raises(UnetkitError, match=message):
        Volume(**kwargs)


# NIfTI ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii"])
@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.float32, np.float64, np.int64])
def test_nifti_round_trip_keeps_array_dtype_spacing_and_rotated_affine(tmp_path, suffix, dtype):
    affine = _rotated_affine()
    original = _nifti(tmp_path / f"scan{suffix}", DATA.astype(dtype), affine)
    first = read_volume(original)
    assert first.array.shape == (*SHAPE, 1) and first.array.dtype == dtype
    np.testing.assert_array_equal(first.array[..., 0], DATA.astype(dtype))
    np.testing.assert_allclose(first.spacing, (3.0, 1.3, 0.7), rtol=1e-6)  # (z, y, x)
    np.testing.assert_allclose(first.affine, affine, atol=1e-5)  # the file's own affine, in float32
    write_volume(tmp_path / f"copy{suffix}", first.array, first.spacing, first.affine)
    second = read_volume(tmp_path / f"copy{suffix}")
    assert second.array.dtype == first.array.dtype and second.spacing == first.spacing
    np.testing.assert_array_equal(second.array, first.array)
    np.testing.assert_array_equal(second.affine, first.affine)
    np.testing.assert_array_equal(nib.load(tmp_path / f"copy{suffix}").affine, nib.load(original).affine)  # same orientation


def test_nifti_4d_holds_channels(tmp_path):
    zyxc = np.stack([DATA, -DATA, 2 * DATA], axis=-1).astype(np.float32)  # (Z, Y, X, 3)
    path = _nifti(tmp_path / "multi.nii.gz", zyxc, np.diag([1.0, 1.0, 2.5, 1.0]))
    assert nib.load(path).shape == (12, 10, 8, 3)  # what the file holds: (x, y, z, c)
    volume = read_volume(path)
    assert volume.array.shape == (*SHAPE, 3) and volume.spacing == (2.5, 1.0, 1.0)
    np.testing.assert_array_equal(volume.array, zyxc)
    write_volume(tmp_path / "copy.nii.gz", volume.array, volume.spacing, volume.affine)
    assert nib.load(tmp_path / "copy.nii.gz").shape == (12, 10, 8, 3)
    np.testing.assert_array_equal(read_volume(tmp_path / "copy.nii.gz").array, zyxc)


def test_nifti_affine_maps_the_reversed_array_index(tmp_path):
    affine = _rotated_affine()
    volume = read_volume(_nifti(tmp_path / "scan.nii.gz", DATA, affine))
    z, y, x = 3, 7, 5
    assert volume.array[z, y, x, 0] == DATA[z, y, x]
    np.testing.assert_allclose(volume.affine @ [x, y, z, 1], affine @ [x, y, z, 1], atol=1e-4)
    np.testing.assert_allclose(np.linalg.norm(volume.affine[:3, :3], axis=0)[::-1], volume.spacing, rtol=1e-6)


def test_nifti_in_microns_is_converted_to_mm(tmp_path):
    volume = read_volume(_nifti(tmp_path / "em.nii.gz", DATA, np.diag([4.0, 4.0, 50.0, 1.0]), units="micron"))
    np.testing.assert_allclose(volume.spacing, (0.05, 0.004, 0.004))
    np.testing.assert_allclose(volume.affine.diagonal(), (0.004, 0.004, 0.05, 1.0))
    assert volume.unit == "mm"


def test_nifti_scale_factor_gives_the_scaled_values_as_float32(tmp_path):
    image = nib.Nifti1Image(DATA.T.copy(), np.eye(4), dtype=np.int16)
    image.header.set_slope_inter(0.5, -10.0)
    nib.save(image, tmp_path / "ct.nii.gz")
    volume = read_volume(tmp_path / "ct.nii.gz")
    assert volume.array.dtype == np.float32 and volume_info(tmp_path / "ct.nii.gz").dtype == np.float32
    np.testing.assert_allclose(volume.array[..., 0], DATA * 0.5 - 10.0)


@pytest.mark.parametrize("dtype", [bool, np.float16])
def test_nifti_refuses_a_dtype_it_cannot_store(tmp_path, dtype):
    with _one_line_error(tmp_path / "x.nii.gz", f"NIfTI cannot store {np.dtype(dtype)} voxels"):
        write_volume(tmp_path / "x.nii.gz", np.zeros(SHAPE, dtype))
    assert list(tmp_path.iterdir()) == []


# TIFF -------------------------------------------------------------------------------------------------


def test_axis_order_is_the_same_from_nifti_and_tiff(tmp_path):
    nifti = _nifti(tmp_path / "a.nii.gz", DATA, np.eye(4))
    tifffile.imwrite(tmp_path / "a.tif", DATA)  # pages are slices: (Z, Y, X)
    from_nifti, from_tiff = read_volume(nifti).array, read_volume(tmp_path / "a.tif").array
    assert from_nifti.shape == from_tiff.shape == (*SHAPE, 1)
    np.testing.assert_array_equal(from_nifti, from_tiff)
    np.testing.assert_array_equal(from_tiff[..., 0], DATA)


def test_tiff_imagej_spacing_and_resolution_in_microns(tmp_path):
    path = tmp_path / "stack.tif"
    tifffile.imwrite(path, DATA.astype(np.uint16), imagej=True, resolution=(1 / 0.5, 1 / 0.25),
                     metadata={"spacing": 2.0, "unit": "um", "axes": "ZYX"})  # fmt: skip
    volume = read_volume(path)
    np.testing.assert_allclose(volume.spacing, (0.002, 0.00025, 0.0005))  # (z, y, x) in mm
    assert volume.unit == "mm" and volume.affine is None
    np.testing.assert_array_equal(volume.array[..., 0], DATA)


def test_tiff_imagej_channels_go_last(tmp_path):
    zcyx = np.stack([DATA, DATA + 1], axis=1).astype(np.float32)  # (Z, C, Y, X)
    tifffile.imwrite(tmp_path / "c.tif", zcyx, imagej=True, metadata={"axes": "ZCYX"})
    volume = read_volume(tmp_path / "c.tif")
    np.testing.assert_array_equal(volume.array, np.moveaxis(zcyx, 1, -1))
    assert volume.unit == "unknown" and volume.spacing == (1.0, 1.0, 1.0)  # ImageJ without a unit


def test_tiff_ome_physical_sizes(tmp_path):
    metadata = {"axes": "ZYX", "PhysicalSizeZ": 2.0, "PhysicalSizeY": 0.25, "PhysicalSizeX": 0.5, "PhysicalSizeXUnit": "nm"}
    tifffile.imwrite(tmp_path / "ome.tif", DATA, ome=True, metadata=metadata)
    volume = read_volume(tmp_path / "ome.tif")
    np.testing.assert_allclose(volume.spacing, (0.002, 0.00025, 0.5e-6))  # Z, Y in OME's default µm; X in nm
    assert volume.unit == "mm"


def test_tiff_without_metadata_has_unknown_spacing(tmp_path):
    tifffile.imwrite(tmp_path / "plain.tif", DATA)
    info = volume_info(tmp_path / "plain.tif")
    assert info.shape == (*SHAPE, 1) and info.dtype == np.int16
    assert info.spacing == (1.0, 1.0, 1.0) and info.unit == "unknown" and info.affine is None


def test_tiff_round_trip_keeps_spacing_and_channels(tmp_path):
    zyxc = np.stack([DATA, DATA * 3], axis=-1).astype(np.float64)
    write_volume(tmp_path / "out.tif", zyxc, (3.0, 0.5, 0.25))
    volume = read_volume(tmp_path / "out.tif")
    np.testing.assert_array_equal(volume.array, zyxc)
    assert volume.array.dtype == np.float64 and volume.spacing == (3.0, 0.5, 0.25) and volume.unit == "mm"
    write_volume(tmp_path / "unknown.tif", DATA, unit="unknown")
    assert read_volume(tmp_path / "unknown.tif").unit == "unknown"


def test_tiff_refuses_an_affine_it_cannot_keep(tmp_path):
    write_volume(tmp_path / "plain.tif", DATA, (2.0, 1.0, 0.5), np.diag([0.5, 1.0, 2.0, 1.0]))  # spacing only: fine
    with _one_line_error(tmp_path / "moved.tif", "a TIFF keeps the voxel spacing but not this affine"):
        write_volume(tmp_path / "moved.tif", DATA, (3.0, 1.3, 0.7), _rotated_affine())
    assert not (tmp_path / "moved.tif").exists()


# zarr -------------------------------------------------------------------------------------------------


def test_zarr_spacing_from_its_attributes(tmp_path):
    stored = zarr.create_array(store=str(tmp_path / "v.zarr"), shape=SHAPE, dtype=np.int16,
                               attributes={"spacing": [50, 4, 4], "unit": "nm"})  # fmt: skip
    stored[...] = DATA
    volume = read_volume(tmp_path / "v.zarr")
    np.testing.assert_array_equal(volume.array[..., 0], DATA)
    np.testing.assert_allclose(volume.spacing, (5e-5, 4e-6, 4e-6))
    assert volume.unit == "mm" and volume.affine is None


def test_zarr_round_trip_keeps_affine_and_replaces_an_old_array(tmp_path):
    zyxc = np.stack([DATA, -DATA], axis=-1).astype(np.int32)
    write_volume(tmp_path / "v.zarr", DATA)
    write_volume(tmp_path / "v.zarr", zyxc, (3.0, 1.3, 0.7), _rotated_affine())
    volume = read_volume(tmp_path / "v.zarr")
    np.testing.assert_array_equal(volume.array, zyxc)
    assert volume.spacing == (3.0, 1.3, 0.7)
    np.testing.assert_array_equal(volume.affine, _rotated_affine())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v.zarr"]


def test_zarr_refuses_to_replace_a_folder_that_is_not_zarr(tmp_path):
    (tmp_path / "keep.zarr").mkdir()
    (tmp_path / "keep.zarr" / "notes.txt").write_text("mine")
    with _one_line_error(tmp_path / "keep.zarr", "exists and is not a zarr array"):
        write_volume(tmp_path / "keep.zarr", DATA)
    assert (tmp_path / "keep.zarr" / "notes.txt").read_text() == "mine"


# Errors -----------------------------------------------------------------------------------------------


def _two_d(tmp_path: Path, kind: str) -> Path:
    if kind == "tiff":
        tifffile.imwrite(tmp_path / "slice.tif", DATA[0])
        return tmp_path / "slice.tif"
    if kind == "tiff-channels":
        tifffile.imwrite(tmp_path / "rgb.tif", np.zeros((10, 12, 3), np.uint8), photometric="rgb")
        return tmp_path / "rgb.tif"
    if kind == "nifti":
        nib.save(nib.Nifti1Image(DATA[0].T.copy(), np.eye(4)), tmp_path / "slice.nii.gz")
        return tmp_path / "slice.nii.gz"
    zarr.create_array(store=str(tmp_path / "slice.zarr"), shape=(10, 12), dtype=np.uint8)
    return tmp_path / "slice.zarr"


@pytest.mark.parametrize("kind", ["tiff", "tiff-channels", "nifti", "zarr"])
def test_a_2d_image_is_not_a_volume(tmp_path, kind):
    path = _two_d(tmp_path, kind)
    with _one_line_error(path, r"a 2D image \(shape .*\), not a volume; save the slices as one stack"):
        read_volume(path)
    with _one_line_error(path, "a 2D image"):
        volume_info(path)


def _truncate(path: Path, keep: float) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return path


def _damaged(tmp_path: Path, kind: str) -> Path:
    noise = np.random.default_rng(0).random((16, 20, 24)).astype(np.float32)  # does not compress away
    if kind == "truncated .nii.gz":
        return _truncate(_nifti(tmp_path / "v.nii.gz", noise, np.eye(4)), 0.5)
    if kind == "truncated .nii":
        return _truncate(_nifti(tmp_path / "v.nii", noise, np.eye(4)), 0.9)
    if kind == "truncated OME-TIFF":
        tifffile.imwrite(tmp_path / "v.tif", noise, ome=True, metadata={"axes": "ZYX"})
        return _truncate(tmp_path / "v.tif", 0.6)
    if kind == "truncated ImageJ TIFF":
        tifffile.imwrite(tmp_path / "v.tif", noise, imagej=True, metadata={"axes": "ZYX"})
        return _truncate(tmp_path / "v.tif", 0.6)
    if kind in ("garbage .nii.gz", "garbage .tif"):
        path = tmp_path / f"v{kind.split()[1]}"
        path.write_bytes(b"not a volume " * 40)
        return path
    write_volume(tmp_path / "v.zarr", noise)
    chunk = next(p for p in (tmp_path / "v.zarr").rglob("*") if p.is_file() and p.name != "zarr.json")
    chunk.write_bytes(b"garbage")
    return tmp_path / "v.zarr"


@pytest.mark.parametrize("kind", ["truncated .nii.gz", "truncated .nii", "truncated OME-TIFF", "truncated ImageJ TIFF",
                                  "garbage .nii.gz", "garbage .tif", "corrupt zarr chunk"])  # fmt: skip
def test_damaged_files_give_one_line_naming_the_file(tmp_path, kind):
    path = _damaged(tmp_path, kind)
    with _one_line_error(path, r"cannot read volume \(.+\); the file is damaged or not what its name says: re-export"):
        read_volume(path)


def test_volume_info_reads_only_the_header(tmp_path):
    path = _damaged(tmp_path, "truncated .nii.gz")  # header intact, voxels cut
    info = volume_info(path)
    assert info.shape == (16, 20, 24, 1) and info.dtype == np.float32 and info.spacing == (1.0, 1.0, 1.0)
    with _one_line_error(path):
        read_volume(path)


def test_a_missing_extra_names_the_install_command(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "nibabel", None)  # import nibabel now raises ImportError
    with pytest.raises(UnetkitError, match=r"^NIfTI volumes need nibabel: pip install 'unetkit\[volumes\]'$"):
        write_volume(tmp_path / "v.nii.gz", DATA)
    monkeypatch.setitem(sys.modules, "zarr", None)
    (tmp_path / "v.zarr").mkdir()
    with pytest.raises(UnetkitError, match=r"^zarr volumes need zarr: pip install 'unetkit\[large\]'$"):
        read_volume(tmp_path / "v.zarr")
    assert not (tmp_path / "v.nii.gz").exists()


def test_missing_file_and_unknown_extension(tmp_path):
    with _one_line_error(tmp_path / "absent.nii.gz", r"cannot read volume \(no such file\); check the path"):
        read_volume(tmp_path / "absent.nii.gz")
    (tmp_path / "slice.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    with _one_line_error(tmp_path / "slice.png", r"unsupported volume file type '.png'; save the volume as .nii.gz"):
        read_volume(tmp_path / "slice.png")
    with _one_line_error(tmp_path / "out.mha", "unsupported volume file type"):
        write_volume(tmp_path / "out.mha", DATA)


# Atomic writes ----------------------------------------------------------------------------------------


def _fail_midway(monkeypatch, suffix: str) -> None:
    """Make the writer of ``suffix`` write part of its output, then meet a full disk."""
    full = OSError(errno.ENOSPC, "No space left on device")
    if suffix == ".nii.gz":
        def to_stream(self, stream):
            stream.write(b"\x00" * 1000)
            raise full
        monkeypatch.setattr(nib.Nifti1Image, "to_stream", to_stream)
    elif suffix == ".tif":
        def imwrite(path, *args, **kwargs):
            Path(path).write_bytes(b"II*\x00" + b"\x00" * 1000)
            raise full
        monkeypatch.setattr(tifffile, "imwrite", imwrite)
    else:
        create = zarr.create_array
        def create_array(*args, **kwargs):
            create(*args, **kwargs)
            raise full
        monkeypatch.setattr(zarr, "create_array", create_array)


@pytest.mark.parametrize("suffix", [".nii.gz", ".tif", ".zarr"])
def test_a_failed_write_leaves_no_partial_file_and_keeps_the_old_one(tmp_path, monkeypatch, suffix):
    path = tmp_path / f"v{suffix}"
    write_volume(path, DATA, (2.0, 1.0, 1.0))
    _fail_midway(monkeypatch, suffix)
    with _one_line_error(path, r"cannot write \(no space left on device\); free space on that disk"):
        write_volume(path, DATA * 2)
    monkeypatch.undo()
    assert [p.name for p in tmp_path.iterdir()] == [path.name]
    np.testing.assert_array_equal(read_volume(path).array[..., 0], DATA)
    (tmp_path / "new").mkdir()
    _fail_midway(monkeypatch, suffix)
    with pytest.raises(UnetkitError, match="cannot write"):
        write_volume(tmp_path / "new" / f"v{suffix}", DATA)
    assert list((tmp_path / "new").iterdir()) == []
