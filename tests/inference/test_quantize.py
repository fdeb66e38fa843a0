"""ONNX Runtime backend for checkpoints and checked int8 quantisation (issue 6)."""

import json
from pathlib import Path

import numpy as np
import pytest

import unetkit
from unetkit.cli import main
from unetkit.data.io import read_image, read_mask_raw
from unetkit.quantize import int8_for, onnx_for

pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, tiny_data) -> Path:
    out = tmp_path_factory.mktemp("q") / "run"
    r = unetkit.train(data=str(tiny_data), out=str(out), epochs=12, base_channels=8, depth=3, patch_size=32, tile=64, lr=3e-3,
                      progress=False, report=False)
    return Path(r.run_dir) / "best.pt"


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("UNETKIT_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_onnxruntime_backend_gives_the_torch_masks(checkpoint, tiny_data, tmp_path, cache):
    assert main(["predict", "--model", str(checkpoint), str(tiny_data / "images"), "--out", str(tmp_path / "torch"), "--no-progress"]) == 0
    assert main(["predict", "--model", str(checkpoint), str(tiny_data / "images"), "--out", str(tmp_path / "ort"),
                 "--backend", "onnxruntime", "--no-progress"]) == 0
    names = sorted(p.name for p in (tmp_path / "torch").iterdir())
    assert names == sorted(p.name for p in (tmp_path / "ort").iterdir()) and len(names) == 6
    for name in names:
        a, b = read_mask_raw(tmp_path / "torch" / name), read_mask_raw(tmp_path / "ort" / name)
        assert (a == b).mean() > 0.999, name  # fp32 both; logits agree to ~1e-5
    assert len(list(cache.glob("best-*.onnx"))) == 1  # exported once, cached by content


def test_int8_is_checked_on_the_calibration_images_and_cached(checkpoint, tiny_data, cache):
    path, check = int8_for(checkpoint, 64)
    assert path.exists() and path.parent == cache
    assert check["images"] == 6 and check["data"] == str(tiny_data)
    assert check["dice_int8"] >= check["dice_fp32"] - 0.005
    assert json.loads(path.with_suffix(".json").read_text()) == check
    seg, ref = unetkit.load(checkpoint, int8=True, tile=64), unetkit.load(checkpoint, tile=64)
    assert type(seg.forward).__name__ == "OnnxForward"
    image = read_image(next((tiny_data / "images").iterdir()))
    assert (seg.predict_mask(image) == ref.predict_mask(image)).mean() > 0.95
    assert int8_for(checkpoint, 64) == (path, check)  # second call: from the cache


def test_int8_that_loses_accuracy_is_refused_and_not_kept(checkpoint, cache):
    with pytest.raises(unetkit.UnetkitError, match=r"int8 quantisation loses accuracy on 6 calibration image\(s\).*predict without --int8"):
        int8_for(checkpoint, 64, max_dice_drop=-1.0)  # a bar no model can pass
    assert not list(cache.glob("*int8*.onnx"))


def test_bad_backend_requests(checkpoint, tmp_path, capsys):
    onnx = onnx_for(checkpoint, 64)
    with pytest.raises(unetkit.UnetkitError, match="already an ONNX model; --backend and --int8 apply to checkpoints"):
        unetkit.load(onnx, int8=True)
    with pytest.raises(unetkit.UnetkitError, match="onnxruntime backend computes in fp32"):
        unetkit.load(checkpoint, backend="onnxruntime", precision="bf16")
    with pytest.raises(unetkit.UnetkitError, match="backend='tensorrt' is not one of torch, onnxruntime"):
        unetkit.load(checkpoint, backend="tensorrt")
    empty = tmp_path / "nomasks"
    (empty / "images").mkdir(parents=True)
    image = np.zeros((40, 40), np.uint8)
    from unetkit.data.io import write_png

    write_png(empty / "images" / "a.png", image)
    with pytest.raises(unetkit.UnetkitError, match="--int8 calibration data: .*pass --calibration DATA"):
        unetkit.load(checkpoint, int8=True, calibration=empty)
