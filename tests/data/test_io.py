"""Tests of unetkit.data.io on tiny files made in tmp_path."""

import re
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from unetkit.data.io import (
    IMAGE_EXTENSIONS,
    atomic_write,
    read_image,
    read_mask_raw,
    read_palette,
    write_png,
    write_tiff,
)
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
