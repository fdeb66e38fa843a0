"""GeoTIFF: multi-band scenes in, masks out with the same CRS, transform and nodata; training on 4-band images."""

import sys

import numpy as np
import pytest
import rasterio
import tifffile
import zarr
from affine import Affine
from PIL import Image

import unetkit
from tests.conftest import TINY_MODEL
from tests.inference.test_stream import make_checkpoint, noise
from unetkit.data.geo import GeoReader, is_georeferenced, rasterio_module
from unetkit.data.io import read_image
from unetkit.errors import UnetkitError
from unetkit.inference.options import InferenceOptions
from unetkit.inference.tta import softmax
from unetkit.inference.stream import predict_stream
from unetkit.loading import load_segmenter

TRANSFORM = Affine(10.0, 0.0, 399960.0, 0.0, -10.0, 5300040.0)  # 10 m pixels, a Sentinel-2-like UTM grid


def write_geotiff(path, bands, nodata=None, interleave="pixel", crs="EPSG:32632"):
    """A tiled, deflate-compressed GeoTIFF of ``bands`` (C, H, W)."""
    count, height, width = bands.shape
    with rasterio.open(path, "w", driver="GTiff", height=height, width=width, count=count, dtype=bands.dtype.name, crs=crs,
                       transform=TRANSFORM, nodata=nodata, tiled=True, blockxsize=128, blockysize=128, compress="deflate",
                       interleave=interleave) as ds:  # fmt: skip
        ds.write(bands)
    return path


class CountingForward:
    """The real forward pass, counting the tiles it is given."""

    def __init__(self, forward):
        self.forward, self.config, self.tiles = forward, forward.config, 0

    def __call__(self, x):
        self.tiles += len(x)
        return self.forward(x)


def test_round_trip_keeps_crs_transform_and_nodata(tmp_path):
    seg = load_segmenter(make_checkpoint(tmp_path / "m.pt", in_channels=4), InferenceOptions(device="cpu", precision="fp32", tile=124, batch_size=4))
    bands = noise((4, 400, 300), dtype=np.uint16) + 1  # 0 is nodata
    bands[:, :300, :] = 0  # the top three quarters: no data in any band
    bands[0, 350:360, 10:20] = 0  # nodata in one band only: still data
    bands[:, 380:390, 200:210] = 0  # a small hole in all bands
    write_geotiff(tmp_path / "scene.tif", bands, nodata=0)
    assert is_georeferenced(tmp_path / "scene.tif") and not is_georeferenced(tmp_path / "m.pt")
    seg.forward = counting = CountingForward(seg.forward)
    written = predict_stream(seg, tmp_path / "scene.tif", tmp_path / "mask.tif", probabilities=True, pyramid=True, progress=False)
    assert written == [tmp_path / "mask.tif", tmp_path / "mask_prob.tif"]
    with rasterio.open(tmp_path / "mask.tif") as ds:
        assert ds.crs.to_epsg() == 32632 and ds.transform == TRANSFORM and ds.nodata == 255
        assert (ds.count, ds.dtypes[0], ds.block_shapes[0], ds.compression.name) == (1, "uint8", (256, 256), "deflate")
        assert ds.overviews(1) == [2]
        mask = ds.read(1)
    assert (mask[:300] == 255).all() and (mask[380:390, 200:210] == 255).all()
    assert set(np.unique(mask[300:])) == {0, 1, 255} and (mask[350:360, 10:20] != 255).all()
    assert counting.tiles < 4 * 5  # of the 4 x 5 grid, the tile rows inside the nodata were never predicted
    with rasterio.open(tmp_path / "mask_prob.tif") as ds:
        assert ds.count == 2 and ds.dtypes[0] == "float32" and ds.crs.to_epsg() == 32632 and ds.transform == TRANSFORM
        probs = ds.read()
    assert (probs[:, :300] == 0).all() and np.allclose(probs[:, 300:380].sum(0), 1)


def test_four_band_geotiffs_train_and_predict_end_to_end(tmp_path):
    rng = np.random.default_rng(0)
    data = tmp_path / "data"
    (data / "images").mkdir(parents=True)
    (data / "masks").mkdir()
    for k in range(4):  # fields (bright in the near infrared, band 4) on darker ground
        bands = rng.normal(800, 60, size=(4, 48, 64)).clip(0, 4000).astype(np.uint16)
        field = np.zeros((48, 64), bool)
        field[rng.integers(0, 24) :][:20, rng.integers(0, 32) :][:, :28] = True
        bands[3][field] += 1500
        write_geotiff(data / "images" / f"tile{k}.tif", bands, interleave="pixel" if k % 2 else "band")
        Image.fromarray(field.astype(np.uint8) * 255).save(data / "masks" / f"tile{k}.png")
    assert read_image(data / "images" / "tile0.tif").shape == (48, 64, 4)  # band-interleaved
    assert read_image(data / "images" / "tile1.tif").shape == (48, 64, 4)  # pixel-interleaved
    run = tmp_path / "run"
    unetkit.train(data=str(data), out=str(run), epochs=1, steps_per_epoch=2, **TINY_MODEL)
    scene = write_geotiff(tmp_path / "scene.tif", rng.normal(800, 60, size=(4, 90, 130)).astype(np.uint16))
    written = unetkit.predict(run / "best.pt", [scene], tmp_path / "preds", tile=64, device="cpu", precision="fp32", progress=False)
    assert written == [tmp_path / "preds" / "scene.tif"]  # a GeoTIFF stays a GeoTIFF
    with rasterio.open(written[0]) as ds:
        assert ds.crs.to_epsg() == 32632 and ds.transform == TRANSFORM and ds.nodata is None
        mask = ds.read(1)
    seg = load_segmenter(run / "best.pt", InferenceOptions(device="cpu", precision="fp32", tile=64))
    np.testing.assert_array_equal(mask, softmax(seg.logits(read_image(scene))).argmax(0))


def test_thirteen_float_bands_and_zarr_output(tmp_path):
    seg = load_segmenter(make_checkpoint(tmp_path / "m.pt", in_channels=13, depth=2), InferenceOptions(device="cpu", precision="fp32", tile=100))
    bands = np.random.default_rng(1).normal(100, 40, size=(13, 70, 90)).astype(np.float32)
    write_geotiff(tmp_path / "s2.tif", bands, interleave="band")
    source = GeoReader(tmp_path / "s2.tif")
    assert (source.height, source.width, source.channels, source.has_nodata) == (70, 90, 13, False)
    np.testing.assert_array_equal(source.read(slice(3, 5), slice(80, 90)), bands[:, 3:5, 80:90].transpose(1, 2, 0))
    source.close()
    predict_stream(seg, tmp_path / "s2.tif", tmp_path / "mask.zarr", progress=False)
    mask = zarr.open(str(tmp_path / "mask.zarr"), mode="r")
    np.testing.assert_array_equal(mask[:], softmax(seg.logits(bands.transpose(1, 2, 0))).argmax(0))
    assert "UTM zone 32N" in mask.attrs["crs"] and mask.attrs["transform"] == list(TRANSFORM)[:6]


def test_geo_errors(tmp_path, monkeypatch):
    seg = load_segmenter(make_checkpoint(tmp_path / "m.pt", num_classes=3), InferenceOptions(device="cpu", precision="fp32", tile=60))
    write_geotiff(tmp_path / "scene.tif", noise((1, 40, 40)), nodata=0)
    with pytest.raises(UnetkitError, match="--nodata-class 2: must not be one of the model's 3 classes"):
        predict_stream(seg, tmp_path / "scene.tif", tmp_path / "mask.tif", nodata_class=2, progress=False)
    assert not (tmp_path / "mask.tif").exists()
    tifffile.imwrite(tmp_path / "plain.tif", noise((40, 40)))
    assert not is_georeferenced(tmp_path / "plain.tif")
    monkeypatch.setitem(sys.modules, "rasterio", None)  # as if the [geo] extra were not installed
    with pytest.raises(UnetkitError, match=r"GeoTIFF needs rasterio: pip install 'unetkit\[geo\]'"):
        rasterio_module()
