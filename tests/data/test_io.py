"""Tests of unetkit.data.io on tiny files made in tmp_path."""

import re
import warnings
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from unetkit.data.io import (
    IMAGE_EXTENSIONS,
    atomic_write,
    is_tiff,
    probe_image,
    read_image,
    read_mask_raw,
    read_palette,
    sniff,
    write_png,
    write_tiff,
)
from unetkit.data.pixels import check_pixels, check_values
from unetkit.errors import UnetkitError

GRAY = np.array([[0, 1, 2], [3, 4, 255]], dtype=np.uint8)  # (2 rows, 3 columns)
WIDE = np.array([[0, 256, 1000], [4095, 65535, 7]], dtype=np.uint16)


def _palette_png(path: Path, indices: np.ndarray, colors: list[tuple[int, int, int]]) -> Path:
    image = Image.fromarray(indices.astype(np.uint8), mode="P")
    image.putpalette([v for color in colors for v in color])
    image.save(path)
    return path


def test_extensions_are_lowercase_suffixes():
    assert IMAGE_EXTENSIONS == {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp"}


def test_gray_png_is_hw1_uint8(tmp_path):
    Image.fromarray(GRAY).save(tmp_path / "g.png")
    image = read_image(tmp_path / "g.png")
    assert image.shape == (2, 3, 1) and image.dtype == np.uint8
    np.testing.assert_array_equal(image[..., 0], GRAY)


def test_16bit_png_keeps_values_above_255(tmp_path):
    Image.fromarray(WIDE).save(tmp_path / "w.png")
    image = read_image(tmp_path / "w.png")
    assert image.dtype == np.uint16
    np.testing.assert_array_equal(image[..., 0], WIDE)
    np.testing.assert_array_equal(read_mask_raw(tmp_path / "w.png"), WIDE)


def test_16bit_tiff_keeps_values_above_255(tmp_path):
    tifffile.imwrite(tmp_path / "w.tif", WIDE)
    image = read_image(tmp_path / "w.tif")
    assert image.shape == (2, 3, 1) and image.dtype == np.uint16
    np.testing.assert_array_equal(image[..., 0], WIDE)
    assert read_mask_raw(tmp_path / "w.tif").dtype == np.uint16


def test_float_tiff_is_not_rescaled(tmp_path):
    values = np.array([[0.5, -2.0], [1e6, 3.25]], dtype=np.float32)
    tifffile.imwrite(tmp_path / "f.tiff", values)
    image = read_image(tmp_path / "f.tiff")
    assert image.dtype == np.float32
    np.testing.assert_array_equal(image[..., 0], values)


def test_rgb_jpeg_shape(tmp_path):
    Image.new("RGB", (7, 5), (200, 30, 90)).save(tmp_path / "c.jpg")
    image = read_image(tmp_path / "c.jpg")
    assert image.shape == (5, 7, 3) and image.dtype == np.uint8


def test_rgba_with_opaque_alpha_drops_alpha(tmp_path):
    rgba = np.zeros((2, 3, 4), np.uint8)
    rgba[..., 0], rgba[..., 3] = GRAY, 255
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "a.png")
    image = read_image(tmp_path / "a.png")
    assert image.shape == (2, 3, 3)
    np.testing.assert_array_equal(image[..., 0], GRAY)


def test_rgba_with_varying_alpha_keeps_alpha(tmp_path):
    rgba = np.zeros((2, 3, 4), np.uint8)
    rgba[..., 3] = GRAY
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "a.png")
    assert read_image(tmp_path / "a.png").shape == (2, 3, 4)


def test_gray_alpha_with_opaque_alpha_becomes_gray(tmp_path):
    Image.fromarray(np.stack([GRAY, np.full_like(GRAY, 255)], axis=2), mode="LA").save(tmp_path / "la.png")
    image = read_image(tmp_path / "la.png")
    np.testing.assert_array_equal(image, GRAY[:, :, None])


def test_palette_png_image_is_rgb_and_mask_is_indices(tmp_path):
    indices = np.array([[0, 1], [2, 1]])
    path = _palette_png(tmp_path / "p.png", indices, [(0, 0, 0), (255, 0, 0), (0, 0, 200)])
    np.testing.assert_array_equal(read_image(path)[1], [[0, 0, 200], [255, 0, 0]])
    mask = read_mask_raw(path)
    assert mask.dtype == np.uint8
    np.testing.assert_array_equal(mask, indices)
    np.testing.assert_array_equal(read_palette(path)[:3], [[0, 0, 0], [255, 0, 0], [0, 0, 200]])


def test_read_palette_is_none_without_palette(tmp_path):
    Image.fromarray(GRAY).save(tmp_path / "g.png")
    tifffile.imwrite(tmp_path / "g.tif", GRAY)
    assert read_palette(tmp_path / "g.png") is None
    assert read_palette(tmp_path / "g.tif") is None


@pytest.mark.parametrize(
    "options",
    [
        {"photometric": "minisblack", "planarconfig": "separate"},  # (C, H, W) samples
        {"photometric": "minisblack", "metadata": None},  # (C, H, W) as C pages
        {"imagej": True},  # ImageJ channels, axes CYX
    ],
)
def test_channels_first_tiff_gives_hwc(tmp_path, options):
    bands = np.arange(4 * 5 * 6, dtype=np.uint16).reshape(4, 5, 6)  # (C, H, W)
    tifffile.imwrite(tmp_path / "m.tif", bands, **options)
    image = read_image(tmp_path / "m.tif")
    assert image.shape == (5, 6, 4)
    np.testing.assert_array_equal(image, np.moveaxis(bands, 0, -1))


def test_channels_last_tiff_gives_hwc(tmp_path):
    bands = np.arange(5 * 6 * 4, dtype=np.uint16).reshape(5, 6, 4)  # (H, W, C)
    tifffile.imwrite(tmp_path / "m.tif", bands, photometric="minisblack", planarconfig="contig")
    np.testing.assert_array_equal(read_image(tmp_path / "m.tif"), bands)


def test_tiff_with_no_small_axis_is_refused(tmp_path):
    tifffile.imwrite(tmp_path / "v.tif", np.zeros((20, 20, 20), np.uint8))
    with pytest.raises(UnetkitError, match=r"v\.tif: cannot read image \(shape \(20, 20, 20\).*per file"):
        read_image(tmp_path / "v.tif")


def test_rgb_mask_is_hw3_and_gray_rgb_mask_collapses(tmp_path):
    rgb = np.zeros((2, 3, 3), np.uint8)
    rgb[0, 0] = (10, 20, 30)
    Image.fromarray(rgb).save(tmp_path / "c.png")
    np.testing.assert_array_equal(read_mask_raw(tmp_path / "c.png"), rgb)
    Image.fromarray(np.repeat(GRAY[:, :, None], 3, axis=2)).save(tmp_path / "g.png")
    np.testing.assert_array_equal(read_mask_raw(tmp_path / "g.png"), GRAY)


def test_rgba_mask_drops_alpha(tmp_path):
    rgba = np.zeros((2, 3, 4), np.uint8)
    rgba[0, 1] = (5, 6, 7, 0)
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "a.png")
    mask = read_mask_raw(tmp_path / "a.png")
    assert mask.shape == (2, 3, 3)
    np.testing.assert_array_equal(mask[0, 1], (5, 6, 7))


@pytest.mark.parametrize("name", ["bad.png", "bad.tif", "bad.jpg"])
def test_corrupt_file_names_the_file(tmp_path, name):
    (tmp_path / name).write_bytes(b"not an image at all")
    with pytest.raises(UnetkitError, match=re.escape(name) + r": cannot read image .*re-export"):
        read_image(tmp_path / name)


def test_empty_file_names_the_file(tmp_path):
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(UnetkitError, match=r"empty\.png: cannot read image"):
        read_mask_raw(tmp_path / "empty.png")


def test_missing_file_names_the_file(tmp_path):
    with pytest.raises(UnetkitError, match=r"nothere\.png: cannot read image"):
        read_image(tmp_path / "nothere.png")


def test_unsupported_extension_lists_supported(tmp_path):
    (tmp_path / "x.gif").write_bytes(b"GIF89a")
    with pytest.raises(UnetkitError, match=r"x\.gif: unsupported file type '\.gif'.*\.png"):
        read_image(tmp_path / "x.gif")


def test_atomic_write_replaces_on_success(tmp_path):
    target = tmp_path / "sub" / "out.txt"
    with atomic_write(target) as tmp:
        assert tmp.parent == target.parent and tmp.suffix == ".txt" and tmp.name.startswith(".out.tmp-")
        tmp.write_text("new")
    assert target.read_text() == "new"
    assert [p.name for p in target.parent.iterdir()] == ["out.txt"]


def test_atomic_write_keeps_old_file_and_no_temp_on_exception(tmp_path):
    target = tmp_path / "out.png"
    target.write_text("old")
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_write(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("boom")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.png"]


@pytest.mark.parametrize(
    "array",
    [
        GRAY,
        WIDE,
        np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3),
        np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4),
    ],
)
def test_write_png_round_trips(tmp_path, array):
    write_png(tmp_path / "o.png", array)
    back = read_image(tmp_path / "o.png")
    assert back.dtype == array.dtype
    np.testing.assert_array_equal(back, array.reshape(2, 3, -1))


@pytest.mark.parametrize("array", [GRAY.astype(np.float32), GRAY > 0, np.zeros((2, 3, 2), np.uint8)])
def test_write_png_refuses_lossy_arrays(tmp_path, array):
    with pytest.raises(UnetkitError, match=r"o\.png: cannot write .* as PNG"):
        write_png(tmp_path / "o.png", array)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "array",
    [
        np.array([[0.25, -1.0], [3.5, 1e9]], np.float32),
        np.array([[1, 70000], [0, -5]], np.int32),
        np.arange(2 * 3 * 5, dtype=np.uint16).reshape(2, 3, 5),
        np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3),
    ],
)
def test_write_tiff_round_trips(tmp_path, array):
    write_tiff(tmp_path / "o.tif", array)
    with tifffile.TiffFile(tmp_path / "o.tif") as tiff:
        assert tiff.pages[0].compression == tifffile.COMPRESSION.ADOBE_DEFLATE
    back = read_image(tmp_path / "o.tif")
    assert back.dtype == array.dtype
    np.testing.assert_array_equal(back, array.reshape(2, array.shape[1], -1))


# --- pixels are checked as they are read (unetkit.data.pixels) ---------------------------------------


@pytest.mark.parametrize("array", [GRAY, WIDE, GRAY > 1, np.array([[-3e38, 3e38]], np.float32), np.array([[65504.0]], np.float16),
                                   np.array([[1e38, -1e-300]]), np.array([[2**62]], np.int64)])  # fmt: skip
def test_real_finite_pixels_pass(array):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the check casts nothing: no overflow warning for float16 or float64
        assert check_pixels(array, "a.tif") is array


@pytest.mark.parametrize("array,message", [
    (np.array([[0, np.nan], [np.inf, 1]], np.float32), "a.tif: 2 pixel(s) are NaN or infinite (the first at row 0, column 1)"),
    (np.array([[0, 0], [0, -np.inf]], np.float16), "a.tif: 1 pixel(s) are NaN or infinite (the first at row 1, column 1)"),
    (np.array([[[0, 0], [0, np.nan]]], np.float64), "a.tif: 1 pixel(s) are NaN or infinite (the first at row 0, column 1)"),  # (H, W, C)
    (np.array([[1.0, 1e300]]), "a.tif: the pixel at row 0, column 1 is 1e+300, beyond float32's range"),
    (np.array([[-3.5e38]]), "a.tif: the pixel at row 0, column 0 is -3.5e+38, beyond float32's range"),
    (np.ones((2, 2), np.complex64), "a.tif: complex-valued pixels (complex64)"),
    (np.array([["a"]]), "a.tif: pixels of type <U1 are not numbers"),
    (np.zeros((0, 4), np.uint8), r"a.tif: the image has shape \(0, 4\), which holds no pixels"),
    (np.zeros((4, 4, 0), np.float32), r"a.tif: the image has shape \(4, 4, 0\), which holds no pixels"),
])  # fmt: skip
def test_bad_pixels_are_named_with_the_first_place(array, message):
    with pytest.raises(UnetkitError, match=re.escape(message) if "\\(" not in message else message):
        check_pixels(array, "a.tif")


def test_a_window_is_named_by_its_place_in_the_image():
    window = np.zeros((3, 4), np.float32)
    window[2, 1] = np.nan
    with pytest.raises(UnetkitError, match=re.escape("big.tif: pixels are NaN or infinite (one at row 102, column 11)")):
        check_values(window, "big.tif", origin=(100, 10), count=False)


def test_reader_follows_the_content_not_the_extension(tmp_path):
    values = np.array([[0.5, -2.0], [1e6, 3.25]], np.float32)
    tifffile.imwrite(tmp_path / "t.tif", values)
    (tmp_path / "float.png").write_bytes((tmp_path / "t.tif").read_bytes())  # a float TIFF under a PNG name
    np.testing.assert_array_equal(read_image(tmp_path / "float.png")[..., 0], values)
    assert probe_image(tmp_path / "float.png") == (2, 2) and is_tiff(tmp_path / "float.png") and read_palette(tmp_path / "float.png") is None
    Image.fromarray(GRAY).save(tmp_path / "g.png")
    (tmp_path / "png.tif").write_bytes((tmp_path / "g.png").read_bytes())  # a PNG under a TIFF name
    np.testing.assert_array_equal(read_image(tmp_path / "png.tif")[..., 0], GRAY)
    assert [sniff(tmp_path / n) for n in ("t.tif", "g.png", "png.tif")] == [".tif", ".png", ".png"]


def test_a_nan_tiff_named_png_is_refused(tmp_path):
    tifffile.imwrite(tmp_path / "t.tif", np.array([[np.nan]], np.float32))
    (tmp_path / "x.png").write_bytes((tmp_path / "t.tif").read_bytes())
    with pytest.raises(UnetkitError, match=r"x\.png: 1 pixel\(s\) are NaN or infinite"):
        read_image(tmp_path / "x.png")


def test_unsupported_extension_holding_an_image_says_how_to_rename(tmp_path):
    tifffile.imwrite(tmp_path / "t.tif", GRAY)
    (tmp_path / "scan.dat").write_bytes((tmp_path / "t.tif").read_bytes())
    with pytest.raises(UnetkitError, match=r"scan\.dat: unsupported file type '\.dat'; it holds a TIFF image: rename it to scan\.tif"):
        read_image(tmp_path / "scan.dat")


@pytest.mark.parametrize("reader", [read_image, read_mask_raw, probe_image])
def test_a_folder_named_like_an_image_is_called_a_folder(tmp_path, reader):
    (tmp_path / "scan.png").mkdir()
    with pytest.raises(UnetkitError, match=r"scan\.png: a folder, not an image file"):
        reader(tmp_path / "scan.png")


@pytest.mark.parametrize("shape", [(0, 16), (16, 0)])
@pytest.mark.parametrize("reader", [read_image, read_mask_raw, probe_image])
def test_tiff_without_pixels_is_refused_from_its_header(tmp_path, reader, shape):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tifffile: "writing zero-size array to nonconformant TIFF"
        tifffile.imwrite(tmp_path / "z.tif", np.zeros(shape, np.uint8))
    with pytest.raises(UnetkitError, match=re.escape(f"z.tif: the image has shape {shape}, which holds no pixels")):
        reader(tmp_path / "z.tif")


@pytest.mark.parametrize("reader", [read_image, read_mask_raw, probe_image])
def test_complex_tiff_is_refused(tmp_path, reader):
    tifffile.imwrite(tmp_path / "c.tif", np.ones((4, 4), np.complex128))
    with pytest.raises(UnetkitError, match=r"c\.tif: complex-valued pixels \(complex128\)"):
        reader(tmp_path / "c.tif")


def test_tiff_header_that_claims_data_the_file_lacks(tmp_path):
    """Checked from the header: nothing is allocated for the pixels it claims."""
    from tests.corpus.test_pixels import tiff_header

    cases = {"giant.tif": (tiff_header(100_000, 100_000, bytes(16)), "truncated: it claims 100000 x 100000 pixels but holds 16 bytes of uncompressed pixel data"),
             "hollow.tif": (tiff_header(8, 8, b""), "it claims 8 x 8 pixels but holds no pixel data"),
             "cut.tif": (tiff_header(8, 8, bytes(64))[:-10], "truncated: it claims 8 x 8 pixels whose data end at byte 186 but the file has 176 bytes")}
    for name, (data, message) in cases.items():
        (tmp_path / name).write_bytes(data)
        for reader in (read_image, probe_image):
            with pytest.raises(UnetkitError, match=re.escape(f"{name}: cannot read image ({message})")):
                reader(tmp_path / name)
    (tmp_path / "whole.tif").write_bytes(tiff_header(8, 8, bytes(range(64))))
    np.testing.assert_array_equal(read_image(tmp_path / "whole.tif")[..., 0], np.arange(64, dtype=np.uint8).reshape(8, 8))
