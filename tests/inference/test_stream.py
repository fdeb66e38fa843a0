"""Streamed prediction: window reads, tiled outputs, exact equality with the in-memory path, bounded memory,
no corrupt output after a kill."""

import importlib.util
import os
import re
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import tifffile
import torch
import zarr
from PIL import Image

import unetkit
from unetkit.cli import main
from unetkit.engine.checkpoint import save_checkpoint
from unetkit.errors import UnetkitError
from unetkit.inference import stream
from unetkit.inference.options import InferenceOptions
from unetkit.inference.tta import softmax
from unetkit.inference.sources import open_source, reflect
from unetkit.inference.stream import predict_stream, stream_targets
from unetkit.inference.tiling import mirror_pad
from unetkit.inference.writers import partial_path, pyramid_factors
from unetkit.loading import load_segmenter
from unetkit.models.unet import UNet


def make_checkpoint(path, in_channels=1, num_classes=2, depth=3, base_channels=4, padding="valid", seed=0):
    """A randomly initialised U-Net saved as a unetkit checkpoint (what training writes, minus training)."""
    torch.manual_seed(seed)
    net = UNet(in_channels=in_channels, num_classes=num_classes, base_channels=base_channels, depth=depth, padding=padding)
    meta = {"model": net.config.to_dict(), "normalization": {"mean": [100.0] * in_channels, "std": [40.0] * in_channels},
            "classes": [f"c{k}" for k in range(num_classes)], "colors": [[40 * k, 0, 0] for k in range(num_classes)]}  # fmt: skip
    save_checkpoint(path, net.state_dict(), meta)
    return path


def in_memory(seg, image):
    """What ``unetkit.predict`` computes for an image that fits in memory: (mask, (K, H, W) probabilities)."""
    probs = softmax(seg.logits(image))
    return probs.argmax(0).astype(np.uint8), probs


def noise(shape, seed=0, dtype=np.uint8):
    return (np.random.default_rng(seed).normal(size=shape) * 40 + 100).clip(0, 255).astype(dtype)


def tiled_tiff(path, shape, tile=256):
    """A tiled BigTIFF written tile by tile, never held whole in memory: a texture of shifted noise tiles."""
    base = noise((tile, tile), seed=1)
    tiles = (np.roll(base, 7 * r + 13 * c, axis=1) for r in range(-(-shape[0] // tile)) for c in range(-(-shape[1] // tile)))
    tifffile.imwrite(path, tiles, shape=shape, dtype=np.uint8, tile=(tile, tile), bigtiff=True)
    return path


def test_reflect_matches_mirror_pad_for_any_pad():
    for length in range(1, 9):
        for pad in (0, 1, length - 1, length, 2 * length + 3):
            padded = mirror_pad(np.arange(length, dtype=np.float32)[None, None, :], (0, 0), (pad, pad + 2)).ravel()
            assert reflect(np.arange(length + 2 * pad + 2) - pad, length).tolist() == padded.astype(int).tolist()


@pytest.mark.parametrize("padding,tile,batch,classes,shape", [("valid", 60, 3, 2, (121, 97)), ("valid", 124, 4, 3, (301, 217)),
                                                              ("same", 64, 3, 3, (301, 217)), ("same", 32, 5, 2, (75, 130))])  # fmt: skip
def test_streamed_equals_in_memory_exactly(tmp_path, padding, tile, batch, classes, shape):
    ckpt = make_checkpoint(tmp_path / "m.pt", num_classes=classes, padding=padding)
    seg = load_segmenter(ckpt, InferenceOptions(device="cpu", precision="fp32", tile=tile, batch_size=batch))
    image = noise(shape)
    tifffile.imwrite(tmp_path / "in.tif", image, tile=(64, 64), compression="zlib")
    mask, probs = in_memory(seg, image[:, :, None])
    written = predict_stream(seg, tmp_path / "in.tif", tmp_path / "out.tif", probabilities=True, progress=False)
    assert written == [tmp_path / "out.tif", tmp_path / "out_prob.tif"]
    with tifffile.TiffFile(tmp_path / "out.tif") as tif:
        page = tif.pages[0]
        assert tif.is_bigtiff and page.is_tiled and (page.tilelength, page.tilewidth) == (256, 256) and page.compression == 8  # deflate
        np.testing.assert_array_equal(page.asarray(), mask)
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "out_prob.tif"), probs.transpose(1, 2, 0))  # (H, W, K)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.tif", "m.pt", "out.tif", "out_prob.tif"]  # no partial left


def test_every_source_layout_and_zarr_output(tmp_path):
    ckpt = make_checkpoint(tmp_path / "m.pt", in_channels=3)
    seg = load_segmenter(ckpt, InferenceOptions(device="cpu", precision="fp32", tile=188, batch_size=4))
    image = noise((260, 333, 3), dtype=np.uint16)
    mask, _ = in_memory(seg, image)
    sources = {
        "tiled.tif": lambda p: tifffile.imwrite(p, image, tile=(128, 128), photometric="rgb"),
        "striped_planar.tif": lambda p: tifffile.imwrite(p, image.transpose(2, 0, 1), rowsperstrip=37, compression="zlib", photometric="minisblack"),
        "contiguous.tif": lambda p: tifffile.imwrite(p, image, photometric="rgb"),  # memory-mapped per window
        "ome.ome.tif": lambda p: tifffile.imwrite(p, image.transpose(2, 0, 1)[None], tile=(64, 64), metadata={"axes": "TCYX"}),
        "chw.zarr": lambda p: zarr.create_array(store=str(p), data=image.transpose(2, 0, 1), chunks=(3, 100, 100)),
        "hwc.zarr": lambda p: zarr.create_array(store=str(p), data=image, chunks=(100, 100, 3)),
        "small.png": lambda p: Image.fromarray(image.astype(np.uint8)).save(p),
    }
    for name, write in sources.items():
        write(tmp_path / name)
        expected = mask if name != "small.png" else in_memory(seg, image.astype(np.uint8))[0]
        src = open_source(tmp_path / name)
        assert (src.height, src.width, src.channels) == (260, 333, 3), name
        np.testing.assert_array_equal(src.read(slice(5, 9), slice(300, 333)), image[5:9, 300:333].astype(src.dtype), err_msg=name)
        src.close()
        predict_stream(seg, tmp_path / name, tmp_path / "out.zarr", progress=False)
        np.testing.assert_array_equal(zarr.open(str(tmp_path / "out.zarr"), mode="r")[:], expected, err_msg=name)


def test_pyramid_levels_are_nearest_reductions(tmp_path):
    seg = load_segmenter(make_checkpoint(tmp_path / "m.pt", depth=1, base_channels=2), InferenceOptions(device="cpu", tile=256, precision="fp32"))
    tiled_tiff(tmp_path / "in.tif", (1100, 600))
    assert pyramid_factors(1100, 600) == [2, 4, 8] and pyramid_factors(256, 100) == []
    predict_stream(seg, tmp_path / "in.tif", tmp_path / "p.tif", pyramid=True, progress=False)
    with tifffile.TiffFile(tmp_path / "p.tif") as tif:
        levels = [level.asarray() for level in tif.series[0].levels]
    assert [lv.shape for lv in levels] == [(1100, 600), (550, 300), (275, 150), (138, 75)]
    for k, level in enumerate(levels[1:], start=1):
        np.testing.assert_array_equal(level, levels[0][:: 2**k, :: 2**k])
    predict_stream(seg, tmp_path / "in.tif", tmp_path / "p.zarr", pyramid=True, progress=False)
    group = zarr.open_group(str(tmp_path / "p.zarr"), mode="r")
    assert [group[str(k)].shape for k in range(4)] == [lv.shape for lv in levels]
    np.testing.assert_array_equal(group["3"][:], levels[3])
    assert [d["path"] for d in group.attrs["multiscales"][0]["datasets"]] == ["0", "1", "2", "3"]


def test_ci_size_bigtiff_through_the_api(tmp_path):
    """A 3000 x 2500 tiled BigTIFF: the streamed file equals the in-memory path everywhere."""
    ckpt = make_checkpoint(tmp_path / "m.pt", depth=1, base_channels=2)
    tiled_tiff(tmp_path / "slide.tif", (3000, 2500))
    out = tmp_path / "preds"
    written = unetkit.predict(ckpt, [tmp_path / "slide.tif"], out, stream="always", device="cpu", precision="fp32", progress=False)
    assert written == [out / "slide.tif"]
    reference = unetkit.predict(ckpt, [tmp_path / "slide.tif"], out, stream="never", device="cpu", precision="fp32", progress=False)
    assert reference == [out / "slide.png"]
    np.testing.assert_array_equal(tifffile.imread(out / "slide.tif"), np.asarray(Image.open(out / "slide.png")))


def test_when_predict_streams(tmp_path, monkeypatch):
    Image.fromarray(noise((40, 30))).save(tmp_path / "a.png")
    tifffile.imwrite(tmp_path / "b.tif", noise((50, 20)))
    zarr.create_array(store=str(tmp_path / "c.zarr"), data=noise((30, 30)))
    items = [("a", tmp_path / "a.png"), ("b", tmp_path / "b.tif")]
    assert stream_targets(items, tmp_path / "o", "auto") == {}
    assert stream_targets(items, tmp_path / "o", "always") == {"a": tmp_path / "o/a.tif", "b": tmp_path / "o/b.tif"}
    assert stream_targets(items[:1], tmp_path / "one.zarr", "auto") == {"a": tmp_path / "one.zarr"}
    assert stream_targets([("c", tmp_path / "c.zarr")], tmp_path / "o", "auto") == {"c": tmp_path / "o/c.tif"}
    assert stream_targets([("s/slide.ome", tmp_path / "b.tif")], tmp_path / "o", "always") == {"s/slide.ome": tmp_path / "o/s/slide.tif"}
    monkeypatch.setattr(stream, "STREAM_PIXELS", 1500)  # b has 1000 pixels, a 1200
    assert stream_targets(items, tmp_path / "o", "auto") == {}
    monkeypatch.setattr(stream, "STREAM_PIXELS", 1100)
    assert stream_targets(items, tmp_path / "o", "auto") == {"a": tmp_path / "o/a.tif"}
    with pytest.raises(UnetkitError, match="names one output file but there are 2 inputs"):
        stream_targets(items, tmp_path / "x.tif", "auto")
    with pytest.raises(UnetkitError, match="zarr inputs are always streamed"):
        stream_targets([("c", tmp_path / "c.zarr")], tmp_path / "o", "never")
    with pytest.raises(UnetkitError, match="expected auto, always or never"):
        stream_targets(items, tmp_path / "o", "sometimes")


def test_cli_streams_a_zarr_store_into_a_file(tmp_path, capsys):
    ckpt = make_checkpoint(tmp_path / "m.pt")
    zarr.create_array(store=str(tmp_path / "scan.zarr"), data=noise((150, 170)), chunks=(64, 64))
    out = tmp_path / "out"  # not beside the input
    assert main(["predict", "--model", str(ckpt), str(tmp_path / "scan.zarr"), "--out", str(out / "mask.tif"), "--tile", "60",
                 "--device", "cpu", "--precision", "fp32", "--no-progress"]) == 0  # fmt: skip
    seg = load_segmenter(ckpt, InferenceOptions(device="cpu", precision="fp32", tile=60))
    np.testing.assert_array_equal(tifffile.imread(out / "mask.tif"), in_memory(seg, noise((150, 170))[:, :, None])[0])
    assert main(["predict", "--model", str(ckpt), str(tmp_path / "scan.zarr"), "--out", str(out / "m.tif"), "--overlay"]) == 2
    assert "--overlay and --instances need an image that fits in memory" in capsys.readouterr().err


def test_bad_streamed_inputs(tmp_path):
    seg = load_segmenter(make_checkpoint(tmp_path / "m.pt", in_channels=3), InferenceOptions(device="cpu", tile=60, precision="fp32"))
    tifffile.imwrite(tmp_path / "gray.tif", noise((80, 80)))
    with pytest.raises(UnetkitError, match="would overwrite the input"):
        predict_stream(seg, tmp_path / "gray.tif", tmp_path / "gray.tif", progress=False)
    with pytest.raises(UnetkitError, match="gray.tif has 1 channel\\(s\\); this model was trained on 3"):
        predict_stream(seg, tmp_path / "gray.tif", tmp_path / "o.tif", progress=False)
    tifffile.imwrite(tmp_path / "stack.tif", noise((40, 30, 30)))  # 40 pages: not an image with bands
    with pytest.raises(UnetkitError, match="cannot stream an array of shape \\(40, 30, 30\\)"):
        predict_stream(seg, tmp_path / "stack.tif", tmp_path / "o.tif", progress=False)
    if importlib.util.find_spec("imagecodecs") is None:  # LZW, JPEG (most slide scanners) need it
        Image.fromarray(noise((64, 64, 3))).save(tmp_path / "lzw.tif", compression="tiff_lzw")
        with pytest.raises(UnetkitError, match="lzw.tif: its compression needs imagecodecs to decode: pip install imagecodecs"):
            predict_stream(seg, tmp_path / "lzw.tif", tmp_path / "o.tif", progress=False)
    assert not (tmp_path / "o.tif").exists() and not partial_path(tmp_path / "o.tif").exists()


# VmHWM is the peak RSS of this process image (ru_maxrss would also count the parent's pages at fork).
RSS_CHILD = textwrap.dedent("""
    import re, sys
    from unetkit.inference.options import InferenceOptions
    from unetkit.inference.stream import predict_stream
    from unetkit.loading import load_segmenter
    def status(key):
        return int(re.search(key + r":\\s+(\\d+) kB", open("/proc/self/status").read()).group(1)) * 1024
    seg = load_segmenter(sys.argv[1], InferenceOptions(device="cpu", precision="fp32", tile=512, batch_size=2))
    before = status("VmRSS")
    predict_stream(seg, sys.argv[2], sys.argv[3], progress=False)
    print(before, status("VmHWM"))
""")


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="reads the peak RSS from /proc (Linux)")
def test_peak_memory_does_not_grow_with_the_image(tmp_path):
    """5000 x 5000: the float32 image alone would be 100 MB (the in-memory path needs about 1 GB more)."""
    ckpt = make_checkpoint(tmp_path / "m.pt", depth=1, base_channels=2)
    tiled_tiff(tmp_path / "big.tif", (5000, 5000))
    done = subprocess.run([sys.executable, "-c", RSS_CHILD, str(ckpt), str(tmp_path / "big.tif"), str(tmp_path / "mask.tif")],
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr
    before, peak = map(int, done.stdout.split())
    assert peak - before < 100 * 2**20, f"streaming grew the process by {(peak - before) / 2**20:.0f} MB"
    assert tifffile.TiffFile(tmp_path / "mask.tif").pages[0].shape == (5000, 5000)


def test_a_killed_run_leaves_no_output_and_the_next_run_succeeds(tmp_path):
    ckpt = make_checkpoint(tmp_path / "m.pt", depth=2, base_channels=2)
    tiled_tiff(tmp_path / "in.tif", (1500, 1500))
    target = tmp_path / "mask.tif"
    target.write_bytes(b"previous result")
    cmd = [sys.executable, "-m", "unetkit", "predict", "--model", str(ckpt), str(tmp_path / "in.tif"), "--out", str(target),
           "--tile", "100", "--batch-size", "1", "--device", "cpu", "--no-progress", "--overwrite"]  # fmt: skip
    child = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    partial = partial_path(target)
    deadline = time.monotonic() + 120
    while not (partial.exists() and partial.stat().st_size > 0) and child.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)  # wait until tiles are being written
    assert child.poll() is None, "the run ended before it could be killed: " + child.stderr.read().decode()
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    assert target.read_bytes() == b"previous result"  # never a half-written mask under the target's name
    assert partial.exists()
    seg = load_segmenter(ckpt, InferenceOptions(device="cpu", precision="fp32", tile=512))
    predict_stream(seg, tmp_path / "in.tif", target, progress=False)  # the next run clears the leftover
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.tif", "m.pt", "mask.tif"]
    assert tifffile.imread(target).shape == (1500, 1500)


class NodataSource:
    """A source like a GeoTIFF with nodata: NaN where there is no data, and a validity mask that says so."""

    path, has_nodata, channels = "scene.tif", True, 1

    def __init__(self, image: np.ndarray) -> None:
        self.image, self.height, self.width = image, *image.shape[:2]

    def read(self, rows, cols):
        return self.image[rows, cols]

    def valid(self, rows, cols):
        return ~np.isnan(self.image[rows, cols, 0])  # (h, w)


def test_streamed_windows_are_checked_where_the_image_has_data():
    from unetkit.inference.sources import load_batch
    from unetkit.inference.stitch import TileGrid
    from unetkit.models.config import ModelConfig

    image = np.full((40, 30, 1), 5.0, np.float32)
    image[:10, :10] = np.nan  # nodata: NaN there is no error, those pixels become 0
    grid = TileGrid.plan(40, 30, 44, 4, ModelConfig(depth=3, base_channels=2))
    for batch in grid.batches:
        x, _ = load_batch(NodataSource(image), grid, batch, np.zeros(1), np.ones(1))
        assert np.isfinite(x).all()
    image[25, 20] = np.inf  # where the image has data: refused with its place
    with pytest.raises(UnetkitError, match=re.escape("scene.tif: pixels are NaN or infinite (one at row 25, column 20)")):
        for batch in grid.batches:
            load_batch(NodataSource(image), grid, batch, np.zeros(1), np.ones(1))


def test_logits_that_overflow_are_refused_only_when_an_image_is_named():
    from unetkit.inference.stitch import TileGrid, forward_batch
    from unetkit.models.config import ModelConfig

    grid = TileGrid.plan(40, 30, 44, 4, ModelConfig(depth=3, base_channels=2))
    batch = grid.batches[0]
    x = np.zeros((len(batch), 1, grid.rows.tile_in, grid.cols.tile_in), np.float32)

    def overflowing(tiles):  # (B, C, h, w) -> (B, K, h', w'); the second tile overflows
        y = np.zeros((len(tiles), 2, grid.rows.tile_out, grid.cols.tile_out), np.float32)
        y[1, 0, 3, 3] = np.inf
        return y

    assert len(forward_batch(overflowing, grid, batch, x)) == len(batch)  # training's validation runs unnamed and unchecked
    i, j = batch[1]
    row, col = grid.rows.starts[i] - grid.rows.out_offset, grid.cols.starts[j] - grid.cols.out_offset
    with pytest.raises(UnetkitError, match=re.escape(f"a.tif: the model returned NaN or infinite logits for the tile at row {row}, column {col}")):
        forward_batch(overflowing, grid, batch, x, name="a.tif")


def test_nan_met_mid_stream_leaves_no_partial_output(tmp_path):
    seg = load_segmenter(make_checkpoint(tmp_path / "m.pt"), InferenceOptions(device="cpu", tile=60, batch_size=2, precision="fp32"))
    image = noise((700, 50)).astype(np.float32)
    image[650, 7] = np.nan
    tifffile.imwrite(tmp_path / "in.tif", image, tile=(64, 64))
    for target in (tmp_path / "o.tif", tmp_path / "o.zarr"):
        with pytest.raises(UnetkitError, match=re.escape("in.tif: pixels are NaN or infinite (one at row 650, column 7)")):
            predict_stream(seg, tmp_path / "in.tif", target, probabilities=True, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.tif", "m.pt"]


@pytest.mark.parametrize("make,message", [
    (lambda p: p.mkdir(), "an empty folder, not a zarr store"),
    (lambda p: (p.mkdir(), (p / "zarr.json").write_text("{not json")), "not a readable zarr store"),
    (lambda p: zarr.create_array(store=str(p), data=np.arange(4, dtype=np.uint8)), r"a zarr array of shape \(4,\) is not an image"),
    (lambda p: zarr.create_array(store=str(p), shape=(16, 0), dtype="uint8"), r"shape \(16, 0\), which holds no pixels"),
    (lambda p: zarr.create_array(store=str(p), data=np.ones((4, 4), np.complex128)), r"complex-valued pixels \(complex128\)"),
    (lambda p: zarr.create_array(store=str(p), shape=(50_000, 50_000), chunks=(50_000, 50_000), dtype="float32"), "too large to read in windows"),
])  # fmt: skip
def test_bad_zarr_stores_are_named(tmp_path, make, message):
    make(tmp_path / "s.zarr")
    with pytest.raises(UnetkitError, match=r"s\.zarr: .*" + message):
        open_source(tmp_path / "s.zarr")


def test_a_tiff_named_png_streams_window_by_window(tmp_path):
    tiled_tiff(tmp_path / "t.tif", (300, 280), tile=64)
    (tmp_path / "slide.png").write_bytes((tmp_path / "t.tif").read_bytes())
    src = open_source(tmp_path / "slide.png")
    assert src._closer is not None  # tifffile's zarr view of the tiles, not a whole-image decode
    np.testing.assert_array_equal(src.read(slice(100, 104), slice(0, 280))[..., 0], tifffile.imread(tmp_path / "t.tif")[100:104])
    src.close()
