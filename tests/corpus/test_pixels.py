"""The bad-pixel corpus: every way pixels enter unetkit (whole images, tiles, streamed windows of TIFFs and zarr
stores, training data) refuses values the network cannot compute with, in one line naming the file and the
fix, with the input untouched and no partial output: NaN and infinity, float64 beyond float32, complex
values, images without pixels, arrays that are not images, and headers that claim pixels they do not hold.
"""

import io
import struct
import warnings
import zlib

import numpy as np
import pytest
import tifffile
import zarr
from PIL import Image

from unetkit.cli import main
from unetkit.data.synthetic import synthetic_cells
from unetkit.inference import stream, writers

from tests.conftest import TINY_MODEL
from tests.corpus.kit import Untouched, assert_no_output, check_message, expect_error, flags, pair, run_capped

NAN = np.array([[0, np.nan], [np.inf, 1]], np.float32).repeat(8, 0).repeat(8, 1)  # (16, 16)


def late_nan(shape=(600, 40), row=590) -> np.ndarray:
    """A float image whose only NaN comes late, so a streamed run has written a block of rows (256) before it meets it."""
    image = np.random.default_rng(0).random(shape, np.float32)
    image[row, 3] = np.nan
    return image


def tiff_header(width: int, height: int, data: bytes, compression: int = 1) -> bytes:
    """A one-strip 8-bit gray TIFF whose header claims ``width`` x ``height`` pixels, followed by ``data``."""
    entries = [(256, 4, width), (257, 4, height), (258, 3, 8), (259, 3, compression), (262, 3, 1), (273, 4, 0),
               (277, 3, 1), (278, 4, height), (279, 4, len(data))]
    start = 8 + 2 + 12 * len(entries) + 4
    ifd = struct.pack("<H", len(entries))
    for tag, kind, value in entries:
        value = start if tag == 273 else value
        ifd += struct.pack("<HHI", tag, kind, 1) + (struct.pack("<HH", value, 0) if kind == 3 else struct.pack("<I", value))
    return b"II*\x00" + struct.pack("<I", 8) + ifd + struct.pack("<I", 0) + data


def write_tiff(array, **options):
    def make(path):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tifffile warns about writing zero-size arrays: that is the case
            tifffile.imwrite(path, array, **options)

    return make


def write_zarr(array=None, **options):
    def make(path):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # zarr warns that fixed-length strings are not yet in its spec
            zarr.create_array(store=str(path), **({} if array is None else {"data": array}), **options)

    return make


def tiff_named(array):
    """A TIFF's bytes under whatever name the case gives (e.g. ``.png``)."""
    return lambda path: path.write_bytes(_tiff_bytes(array))


def _tiff_bytes(array) -> bytes:
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, array)
    return buffer.getvalue()


STACK = np.zeros((40, 30, 30), np.uint8)  # 40 pages: a stack, not an image with bands
STREAM = ["--stream", "always"]
SMALL_TILES = ["--tile", "64", "--batch-size", "4"]

# case: (input name, how to make it, extra flags, model, fragment the one-line message must hold)
PREDICT_CASES = {
    # NaN and infinity, wherever the pixels enter
    "NaN in a float TIFF, streamed": ("nan.tif", write_tiff(NAN), STREAM, "gray", "NaN or infinite"),
    "NaN late in a tiled TIFF, streamed": ("late.tif", write_tiff(late_nan(), tile=(64, 64)), STREAM + SMALL_TILES, "gray", "row 590, column 3"),
    "NaN late in a striped TIFF, streamed": ("strips.tif", write_tiff(late_nan(), rowsperstrip=16, compression="zlib"), STREAM + SMALL_TILES, "gray", "NaN or infinite"),
    "NaN late in a contiguous TIFF, memory-mapped": ("mapped.tif", write_tiff(late_nan()), STREAM + SMALL_TILES, "gray", "row 590, column 3"),
    "NaN in a zarr store": ("nan.zarr", write_zarr(NAN), [], "gray", "NaN or infinite"),
    "NaN in a late zarr chunk": ("late.zarr", write_zarr(late_nan(), chunks=(64, 64)), SMALL_TILES, "gray", "row 590, column 3"),
    "infinity in float16": ("half.tif", write_tiff(np.full((16, 16), np.inf, np.float16)), [], "gray", "256 pixel(s) are NaN or infinite"),
    "NaN in one band of an RGB float TIFF": ("bands.tif", write_tiff(np.where(np.arange(3)[:, None, None] == 2, NAN, 0).astype(np.float32)), [],
                                             "rgb", "NaN or infinite"),
    "float TIFF named .png": ("disguised.png", tiff_named(NAN), [], "gray", "128 pixel(s) are NaN or infinite"),
    "float TIFF named .png, streamed": ("disguised.png", tiff_named(NAN), STREAM, "gray", "NaN or infinite"),
    "float TIFF named .jpg": ("photo.jpg", tiff_named(NAN), [], "gray", "NaN or infinite"),
    # finite float64 values that become infinite in float32
    "float64 1e300": ("huge.tif", write_tiff(np.full((16, 16), 1e300)), [], "gray", "is 1e+300, beyond float32's range"),
    "float64 1e300, streamed": ("huge.tif", write_tiff(np.full((16, 16), 1e300)), STREAM, "gray", "beyond float32's range"),
    "float64 -1e39 in zarr": ("deep.zarr", write_zarr(np.where(np.eye(16) > 0, -1e39, 0.0)), [], "gray", "is -1e+39, beyond float32's range"),
    # complex values
    "complex64 TIFF": ("wave.tif", write_tiff(np.ones((16, 16), np.complex64)), [], "gray", "complex-valued pixels (complex64)"),
    "complex128 TIFF, streamed": ("wave.tif", write_tiff(np.ones((16, 16), np.complex128)), STREAM, "gray", "complex-valued pixels (complex128)"),
    "complex zarr": ("wave.zarr", write_zarr(np.ones((16, 16), np.complex64)), [], "gray", "complex-valued pixels"),
    "text zarr": ("words.zarr", write_zarr(np.array([["ab", "cd"], ["e", "f"]])), [], "gray", "are not numbers unetkit can segment"),
    # no pixels
    "TIFF of zero height": ("flat.tif", write_tiff(np.zeros((0, 16), np.uint8)), [], "gray", "shape (0, 16), which holds no pixels"),
    "TIFF of zero width": ("thin.tif", write_tiff(np.zeros((16, 0), np.uint8)), [], "gray", "which holds no pixels"),
    "TIFF of zero height, streamed": ("flat.tif", write_tiff(np.zeros((0, 16), np.uint8)), STREAM, "gray", "which holds no pixels"),
    "empty zarr store": ("empty.zarr", lambda p: p.mkdir(), [], "gray", "an empty folder, not a zarr store"),
    "zarr store with broken metadata": ("broken.zarr", lambda p: (p.mkdir(), (p / "zarr.json").write_text("{not json")), [], "gray",
                                        "not a readable zarr store"),
    "zarr array with a zero dimension": ("none.zarr", write_zarr(shape=(0, 16), dtype="uint8"), [], "gray", "shape (0, 16), which holds no pixels"),
    "zarr of one 10 GB chunk": ("chunk.zarr", write_zarr(shape=(100_000, 100_000), chunks=(100_000, 100_000), dtype="uint8"), [], "gray",
                                "too large to read in windows"),
    "zarr group without arrays": ("group.zarr", lambda p: zarr.open_group(str(p), mode="w"), [], "gray", "zarr group without arrays"),
    # arrays that are not one image
    "1-D zarr array": ("line.zarr", write_zarr(np.arange(5, dtype=np.uint8)), [], "gray", "shape (5,) is not an image"),
    "5-D zarr array": ("five.zarr", write_zarr(np.zeros((2, 2, 3, 16, 16), np.uint8)), [], "gray", "cannot stream an array of shape (2, 2, 3, 16, 16)"),
    "5-D TIFF": ("five.tif", write_tiff(np.zeros((2, 2, 3, 16, 16), np.uint8)), [], "gray", "save one 2D image per file"),
    "multi-page TIFF stack": ("stack.tif", write_tiff(STACK), [], "gray", "save one 2D image per file"),
    "multi-page TIFF stack, streamed": ("stack.tif", write_tiff(STACK), STREAM, "gray", "cannot stream an array of shape (40, 30, 30)"),
    # headers that claim what the file does not hold
    "TIFF data past the end of the file": ("cut.tif", lambda p: p.write_bytes(tiff_header(64, 64, bytes(4096))[:-1000]), [], "gray", "truncated"),
    "TIFF with no pixel data": ("hollow.tif", lambda p: p.write_bytes(tiff_header(64, 64, b"")), [], "gray", "holds no pixel data"),
    # names that mislead
    "folder named like an image": ("scan.png", lambda p: p.mkdir(), [], "gray", "a folder, not an image file"),
    "TIFF named .dat": ("pixels.dat", tiff_named(np.zeros((8, 8), np.uint8)), [], "gray", "rename it to pixels.tif"),
}


@pytest.mark.parametrize("case", PREDICT_CASES)
def test_predict_refuses_bad_pixels(models, tmp_path, capsys, case):
    name, make, extra, model, fragment = PREDICT_CASES[case]
    make(tmp_path / name)
    inputs, out = Untouched(tmp_path / name), tmp_path / "out"
    expect_error(capsys, ["predict", "--model", models[model], tmp_path / name, "--out", out, "--no-progress", *extra], fragment, [name])
    inputs.check()
    assert_no_output(out)


def test_nan_in_an_image_big_enough_to_stream_by_itself(models, tmp_path, capsys, monkeypatch):
    """Over STREAM_PIXELS an image streams without --stream; its windows are checked as they are read."""
    tifffile.imwrite(tmp_path / "slide.tif", late_nan(), tile=(64, 64))
    monkeypatch.setattr(stream, "STREAM_PIXELS", 1000)
    inputs = Untouched(tmp_path / "slide.tif")
    expect_error(capsys, ["predict", "--model", models["gray"], tmp_path / "slide.tif", "--out", tmp_path / "out", "--no-progress", *SMALL_TILES],
                 "pixels are NaN or infinite (one at row 590, column 3)", ["slide.tif"])
    inputs.check()
    assert_no_output(tmp_path / "out")


def test_nan_streamed_into_a_named_file_keeps_the_previous_result(models, tmp_path, capsys, monkeypatch):
    """The NaN is met after two blocks of 256 rows were written: the partial files go, the earlier mask stays."""
    aborted, abort = [], writers.Output.abort
    monkeypatch.setattr(writers.Output, "abort", lambda self: (aborted.append(self._row), abort(self)))
    tifffile.imwrite(tmp_path / "slide.tif", late_nan(), tile=(64, 64))
    (tmp_path / "masks").mkdir()
    (tmp_path / "masks" / "mask.tif").write_bytes(b"previous result")
    inputs = Untouched(tmp_path / "slide.tif", tmp_path / "masks")
    expect_error(capsys, ["predict", "--model", models["gray"], tmp_path / "slide.tif", "--out", tmp_path / "masks" / "mask.tif", "--probabilities",
                          "--no-progress", "--overwrite", *SMALL_TILES], "NaN or infinite", ["slide.tif"])
    inputs.check()  # the earlier mask is untouched and no partial file (.mask.tif.partial, mask_prob.tif) is left beside it
    assert aborted and min(aborted) >= 256, aborted  # rows had been written to both outputs before the NaN was read


def test_nan_streamed_on_dask_workers(models, tmp_path, capsys):
    pytest.importorskip("distributed")
    tifffile.imwrite(tmp_path / "slide.tif", late_nan(), tile=(64, 64))
    inputs = Untouched(tmp_path / "slide.tif")
    expect_error(capsys, ["predict", "--model", models["gray"], tmp_path / "slide.tif", "--out", tmp_path / "out", "--dask-workers", "1",
                          "--no-progress", *STREAM, *SMALL_TILES], "NaN or infinite", ["slide.tif"])
    inputs.check()
    assert_no_output(tmp_path / "out")


@pytest.mark.parametrize("name,data,fragment", [
    ("giant.tif", tiff_header(100_000, 100_000, bytes(16)), "claims 100000 x 100000 pixels but holds 16 bytes"),
    ("zipped.tif", tiff_header(100_000, 100_000, zlib.compress(bytes(1000)), compression=8), "too large to read in windows"),
], ids=["uncompressed", "deflate"])
def test_tiff_header_claiming_ten_billion_pixels(models, tmp_path, name, data, fragment):
    """A few bytes claiming 100000 x 100000 pixels: refused in one line with bounded memory, not decoded."""
    (tmp_path / name).write_bytes(data)
    inputs = Untouched(tmp_path / name)
    run = run_capped(["predict", "--model", models["gray"], tmp_path / name, "--out", tmp_path / "out", "--no-progress"], cap_mb=2500)
    assert run.code == 2, run.err
    check_message(run.err, fragment, [name])
    assert run.peak_mb < 1200, f"peak {run.peak_mb:.0f} MB"
    inputs.check()
    assert_no_output(tmp_path / "out")


@pytest.mark.parametrize("command", ["predict", "evaluate"])
def test_batch_size_zero(models, tiny_data, tmp_path, capsys, command):
    where = ["--data", tiny_data] if command == "evaluate" else [tiny_data / "images", "--out", tmp_path / "out"]
    inputs = Untouched(tiny_data)
    expect_error(capsys, [command, "--model", models["gray"], *where, "--batch-size", "0"], "batch_size must be >= 1, got 0")
    inputs.check()
    assert_no_output(tmp_path / "out")


def test_dask_workers_for_images_that_are_not_streamed_warns_and_predicts(models, tmp_path, capsys):
    Image.fromarray(synthetic_cells((40, 40), np.random.default_rng(0))[0]).save(tmp_path / "a.png")
    assert main(["predict", "--model", str(models["gray"]), str(tmp_path / "a.png"), "--out", str(tmp_path / "out"), "--dask-workers", "2",
                 "--no-progress"]) == 0
    err = capsys.readouterr().err.strip()
    assert err == ("unetkit: warning: --dask-workers 2 applies to streamed images only; a.png will be predicted here in memory "
                   "(pass --stream always to run them on Dask)")
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["a.png"]


# --- training data goes through the same reader ---------------------------------------------------

TRAIN_CASES = {
    "float TIFF named .png": ("0.png", tiff_named(np.full((32, 32), np.nan, np.float32)), "1024 pixel(s) are NaN or infinite"),
    "float64 overflow": ("0.tif", write_tiff(np.full((32, 32), -1e300)), "beyond float32's range"),
    "complex TIFF": ("0.tif", write_tiff(np.ones((32, 32), np.complex128)), "complex-valued pixels"),
    "TIFF of zero height": ("0.tif", write_tiff(np.zeros((0, 32), np.uint8)), "which holds no pixels"),
    "5-D TIFF": ("0.tif", write_tiff(np.zeros((2, 2, 3, 32, 32), np.uint8)), "save one 2D image per file"),
}


@pytest.mark.parametrize("case", TRAIN_CASES)
def test_train_refuses_bad_pixels(tmp_path, capsys, case):
    name, make, fragment = TRAIN_CASES[case]
    data = tmp_path / "data"
    for i in range(3):
        image, mask = synthetic_cells((32, 32), np.random.default_rng(i))
        pair(data, f"{i}.png", image, mask)
    (data / "images" / "0.png").unlink()
    make(data / "images" / name)
    inputs, out = Untouched(data), tmp_path / "run"
    expect_error(capsys, ["train", "--data", data, "--out", out, "--epochs", "1", "--steps-per-epoch", "1", *flags(TINY_MODEL)], fragment, [name])
    inputs.check()
    assert_no_output(out)
