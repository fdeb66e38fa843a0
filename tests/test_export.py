"""ONNX (and TorchScript) export: dynamic shapes, metadata, parity with PyTorch, predict through
ONNX Runtime, and the onnxruntime + numpy reference snippet of docs/deploy.md."""

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import tifffile
import torch
from PIL import Image

import unetkit
from unetkit.cli import main
from unetkit.data.io import read_image, read_mask_raw
from unetkit.data.synthetic import synthetic_cells
from unetkit.exporting import export_model, geometry
from unetkit.inference.options import InferenceOptions
from unetkit.inference.predictor import Segmenter, TorchForward
from unetkit.loading import load_segmenter
from unetkit.models.config import ModelConfig, input_size_for_output, stride
from unetkit.models.unet import UNet

from tests.conftest import SHARED_DATA, TINY_MODEL

DOC = Path(__file__).resolve().parents[1] / "docs" / "deploy.md"


@pytest.fixture(scope="module")
def run(tiny_data, tmp_path_factory) -> Path:
    """A tiny model trained for two steps, and its ONNX export."""
    root = tmp_path_factory.mktemp("export")
    unetkit.train(data=str(tiny_data), out=str(root / "exp"), epochs=1, steps_per_epoch=2, seed=0, **TINY_MODEL)
    unetkit.export(root / "exp" / "best.pt", root / "model.onnx")
    return root


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> list[Path]:
    """Two real ISBI 2012 slices when ../shared/data is present, else two generated images."""
    real = SHARED_DATA / "isbi2012" / "images"
    if real.is_dir():
        return [real / "0.png", real / "21.png"]
    folder = tmp_path_factory.mktemp("generated")
    rng = np.random.default_rng(5)
    for i, shape in enumerate([(300, 260), (181, 333)]):
        Image.fromarray(synthetic_cells(shape, rng)[0]).save(folder / f"{i}.png")
    return sorted(folder.glob("*.png"))


def _segmenter(config: ModelConfig) -> Segmenter:
    torch.manual_seed(0)
    meta = {"classes": [f"c{i}" for i in range(config.num_classes)], "colors": [[i, i, i] for i in range(config.num_classes)],
            "normalization": {"mean": [0.0] * config.in_channels, "std": [1.0] * config.in_channels}}  # fmt: skip
    return Segmenter(TorchForward(UNet(config).eval()), meta)


@pytest.mark.parametrize(
    "config",
    [
        ModelConfig(in_channels=1, num_classes=2, base_channels=4, depth=3),
        ModelConfig(in_channels=3, num_classes=3, base_channels=4, depth=4, norm="batch"),
        ModelConfig(in_channels=2, num_classes=2, base_channels=4, depth=3, up_mode="bilinear", norm="group"),
        ModelConfig(in_channels=1, num_classes=4, base_channels=4, depth=3, padding="same", norm="instance"),
        ModelConfig(in_channels=3, num_classes=2, base_channels=4, depth=4, padding="same", up_mode="bilinear"),
    ],
    ids=lambda c: f"{c.padding}-{c.up_mode}-{c.norm}-d{c.depth}",
)
def test_onnx_graph_matches_pytorch_on_any_valid_size_and_batch(config, tmp_path):
    seg = _segmenter(config)
    out = export_model(seg, tmp_path / "m.onnx", "onnx", 512)
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["image"] and [o.name for o in session.get_outputs()] == ["logits"]
    assert session.get_inputs()[0].shape == ["batch", config.in_channels, "height", "width"]
    s, low = stride(config.depth), input_size_for_output(2 * stride(config.depth), config.depth, config.padding)
    rng = np.random.default_rng(0)
    for batch, h, w in [(1, low, low), (3, low + 3 * s, low + 5 * s)]:  # odd multiples of the stride too
        x = rng.normal(size=(batch, config.in_channels, h, w)).astype(np.float32)
        got = session.run(None, {"image": x})[0]
        with torch.no_grad():
            want = seg.model(torch.from_numpy(x)).numpy()
        assert got.shape == want.shape
        assert np.abs(got - want).max() < 1e-4


@pytest.mark.filterwarnings("ignore:`torch.jit.trace")
def test_traced_unet_is_the_same_function():
    net = UNet(ModelConfig(in_channels=1, num_classes=2, base_channels=4, depth=4)).eval()
    assert [up.margin for up in net.up] == [8, 32, 80]  # the paper's network crops 8, 32, 80, 176
    x = torch.randn(2, 1, 108 + 8 * 3, 108)
    with torch.no_grad():
        traced = torch.jit.trace(net, torch.randn(1, 1, 108, 108))  # traced on another size: every size stays symbolic
        torch.testing.assert_close(traced(x), net(x), rtol=0, atol=0)


def test_metadata_holds_what_predict_needs(run):
    model = onnx.load(run / "model.onnx")
    props = {p.key: p.value for p in model.metadata_props}
    meta = json.loads(props["unetkit"])
    ckpt_meta = json.loads(torch.load(run / "exp" / "best.pt", weights_only=True)["meta"])
    for key in ("normalization", "classes", "colors", "model", "mask_mode", "train_config"):
        assert meta[key] == ckpt_meta[key]
    assert meta["geometry"] == {"padding": "valid", "depth": 3, "stride": 4, "context": 40, "min_input_size": 44}
    assert meta["geometry"] == geometry(ModelConfig.from_dict(meta["model"]))
    assert meta["tile"] == 512  # valid for depth 3: 44 + 4k
    assert meta["export"] == {"version": 1, "unetkit_version": unetkit.__version__, "input": "image", "output": "logits"}
    assert props["unetkit_version"] == unetkit.__version__ and model.producer_name == "unetkit"
    dims = [[d.dim_param or d.dim_value for d in t.type.tensor_type.shape.dim] for t in (model.graph.input[0], model.graph.output[0])]
    assert dims == [["batch", 1, "height", "width"], ["batch", 2, "out_height", "out_width"]]
    seg = unetkit.load(run / "model.onnx", tile=None)
    assert seg.options.tile == 512 and seg.model is None and seg.classes == ckpt_meta["classes"] and seg.config.depth == 3


def test_predict_parity_with_pytorch(run, images):
    """Max |logit difference| < 1e-4 in fp32 and identical masks, through the same overlap-tile code."""
    torch_seg = load_segmenter(run / "exp" / "best.pt", InferenceOptions(precision="fp32", tile=260))
    onnx_seg = unetkit.load(run / "model.onnx", tile=260, precision="fp32")
    for path in images:
        image = read_image(path)
        a, b = torch_seg.logits(image), onnx_seg.logits(image)  # 3 x 3 tiles in batches of 4, the last one partial
        assert a.shape == b.shape == (2, *image.shape[:2])
        assert np.abs(a - b).max() < 1e-4, path
        # identical masks wherever the decision is not a tie within that tolerance (oneDNN's channels_last training is
        # not bit-reproducible, so the fixture's model now and then has a pixel whose two logits differ by < 1e-4)
        top2 = np.sort(a, axis=0)[-2:]  # (2, H, W)
        decided = top2[1] - top2[0] > 2e-4
        np.testing.assert_array_equal(a.argmax(0)[decided], b.argmax(0)[decided], err_msg=str(path))
        assert decided.mean() > 0.999, path


def test_cli_predict_with_onnx_writes_the_same_files(run, images, tmp_path):
    path = images[1]
    for model, out in ((run / "exp" / "best.pt", tmp_path / "pt"), (run / "model.onnx", tmp_path / "onnx")):
        assert main(["predict", "--model", str(model), str(path), "--out", str(out), "--overlay", "--probabilities",
                     "--precision", "fp32", "--tile", "300", "--no-progress"]) == 0  # fmt: skip
    mask = read_mask_raw(tmp_path / "onnx" / f"{path.stem}.png")
    assert mask.shape == read_image(path).shape[:2]
    prob = [tifffile.imread(tmp_path / d / f"{path.stem}_prob.tif") for d in ("pt", "onnx")]
    assert np.abs(prob[0] - prob[1]).max() < 1e-5
    # identical files wherever the decision is not a tie within that tolerance (see test_predict_parity_with_pytorch)
    top2 = np.sort(prob[0], axis=0)[-2:]  # (2, H, W)
    decided = top2[1] - top2[0] > 2e-5
    assert decided.mean() > 0.999
    np.testing.assert_array_equal(mask[decided], read_mask_raw(tmp_path / "pt" / f"{path.stem}.png")[decided])
    overlays = [read_image(tmp_path / d / f"{path.stem}_overlay.png") for d in ("onnx", "pt")]
    np.testing.assert_array_equal(overlays[0][decided], overlays[1][decided])


def _snippet() -> str:
    text = DOC.read_text()
    found = re.search(r"<!-- reference-snippet:[^>]*-->\s*```python\n(.*?)```", text, re.DOTALL)
    assert found, f"{DOC} lost its reference snippet"
    return found.group(1)


RUNNER = '''
import importlib.abc, json, sys
ALLOWED = set(sys.stdlib_module_names) | {"numpy", "onnxruntime"} | {m.split(".")[0] for m in sys.modules}

class OnlyNumpyAndOnnxruntime(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] not in ALLOWED:
            raise ImportError(f"{name} is not installed here: only numpy and onnxruntime are")

sys.meta_path.insert(0, OnlyNumpyAndOnnxruntime())
exec(compile(open(sys.argv[1]).read(), "snippet", "exec"))
import numpy as np
np.save(sys.argv[4], segment(sys.argv[2], np.load(sys.argv[3])))
print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in {"torch", "unetkit", "PIL", "onnx", "scipy"})))
'''


def test_reference_snippet_runs_with_only_onnxruntime_and_numpy(run, images, tmp_path):
    assert len(_snippet().strip().splitlines()) <= 25
    (tmp_path / "snippet.py").write_text(_snippet())
    (tmp_path / "runner.py").write_text(RUNNER)
    seg = unetkit.load(run / "model.onnx")
    for i, shape in enumerate([(61, 47), (150, 131)]):  # any size: the snippet pads to a valid one
        image = read_image(images[0])[: shape[0], : shape[1]]
        np.save(tmp_path / "image.npy", image)
        done = subprocess.run([sys.executable, "-I", str(tmp_path / "runner.py"), str(tmp_path / "snippet.py"), str(run / "model.onnx"),
                               str(tmp_path / "image.npy"), str(tmp_path / "mask.npy")], check=False, capture_output=True, text=True, timeout=120)  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout.strip().splitlines()[-1]) == []  # torch, unetkit, PIL, ... never imported
        mask = np.load(tmp_path / "mask.npy")
        assert mask.shape == shape and mask.dtype == np.uint8
        np.testing.assert_array_equal(mask, seg.predict_mask(image))


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated")
def test_torchscript_export_carries_the_metadata(run, tmp_path):
    out = unetkit.export(run / "exp" / "best.pt", tmp_path / "model.torchscript", format="torchscript")
    extra = {"unetkit.json": ""}
    net = torch.jit.load(str(out), _extra_files=extra)
    meta = json.loads(extra["unetkit.json"])
    assert meta["geometry"]["min_input_size"] == 44 and meta["classes"] == ["background", "foreground"]
    ckpt = torch.load(run / "exp" / "best.pt", weights_only=True)
    ref = UNet(ModelConfig.from_dict(meta["model"]))
    ref.load_state_dict(ckpt["model"])
    x = torch.randn(3, 1, 44 + 4 * 7, 44 + 4 * 2)
    with torch.no_grad():
        assert (net(x) - ref.eval()(x)).abs().max() < 1e-5


def test_export_replaces_an_existing_file_atomically(run, tmp_path):
    out = tmp_path / "model.onnx"
    out.write_bytes(b"old")
    assert main(["export", "--model", str(run / "exp" / "best.pt"), "--out", str(out), "--tile", "510"]) == 2  # not without --overwrite
    assert out.read_bytes() == b"old"
    assert main(["export", "--model", str(run / "exp" / "best.pt"), "--out", str(out), "--tile", "510", "--overwrite"]) == 0
    assert onnx.load(out).producer_name == "unetkit"
    assert unetkit.load(out, tile=None).options.tile == 508  # rounded down to a valid size, 44 + 4k
    assert [p.name for p in tmp_path.iterdir()] == ["model.onnx"]  # no temporary file left behind


@pytest.mark.parametrize(
    "args, message",
    [
        (["--model", "{tmp}/missing.pt", "--out", "{tmp}/m.onnx"], "checkpoint not found"),
        (["--model", "{tmp}/junk.pt", "--out", "{tmp}/m.onnx"], "not a readable checkpoint"),
        (["--model", "{run}/model.onnx", "--out", "{tmp}/m.onnx"], "already an ONNX model"),
        (["--model", "{run}/exp/best.pt", "--out", "{tmp}/m.pt"], "should end in .onnx"),
        (["--model", "{run}/exp/best.pt", "--out", "{tmp}/m.onnx", "--format", "torchscript"], "should not end in .onnx"),
        (["--model", "{run}/exp/best.pt", "--out", "{tmp}/m.onnx", "--tile", "0"], "tile must be >= 1"),
    ],
)
def test_export_refuses_bad_input(run, tmp_path, capsys, args, message):
    (tmp_path / "junk.pt").write_text("not a checkpoint")
    assert main(["export", *[a.format(tmp=tmp_path, run=run) for a in args]]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not (tmp_path / "m.onnx").exists() and not (tmp_path / "m.pt").exists()


def test_unknown_format_is_refused(run, tmp_path, capsys):
    assert main(["export", "--model", str(run / "exp" / "best.pt"), "--out", str(tmp_path / "m.onnx"), "--format", "tflite"]) == 2
    assert "invalid choice: 'tflite'" in capsys.readouterr().err
    with pytest.raises(unetkit.UnetkitError, match="format='tflite' is not one of onnx, torchscript"):
        unetkit.export(run / "exp" / "best.pt", tmp_path / "m.onnx", format="tflite")


def test_loading_bad_onnx_files_says_what_is_wrong(run, tmp_path):
    (tmp_path / "junk.onnx").write_bytes(b"\x00garbage")
    with pytest.raises(unetkit.UnetkitError, match="junk.onnx: not a readable ONNX model"):
        unetkit.load(tmp_path / "junk.onnx")
    with pytest.raises(unetkit.UnetkitError, match="nothing.onnx: ONNX model not found"):
        unetkit.load(tmp_path / "nothing.onnx")
    plain = onnx.load(run / "model.onnx")
    del plain.metadata_props[:]
    onnx.save(plain, tmp_path / "plain.onnx")
    with pytest.raises(unetkit.UnetkitError, match="plain.onnx: an ONNX model without unetkit metadata"):
        unetkit.load(tmp_path / "plain.onnx")
    with pytest.raises(unetkit.UnetkitError, match="computes in fp32"):
        unetkit.load(run / "model.onnx", precision="bf16")


def test_export_and_serve_are_the_api_functions():
    import unetkit.server.core  # noqa: F401 - importing the submodules must not shadow the functions

    assert unetkit.export.__module__ == "unetkit.api" and unetkit.serve.__module__ == "unetkit.api"


def _edited_checkpoint(run, target, **meta):
    ckpt = torch.load(run / "exp" / "best.pt", weights_only=True)
    m = json.loads(ckpt["meta"])
    m.update(meta)
    torch.save(dict(ckpt, meta=json.dumps(m)), target)
    return target


@pytest.mark.parametrize("meta, message", [
    ({"normalization": {"mean": [100.0], "std": [0.0]}}, "its normalization std [0.0] is not positive"),
    ({"classes": ["only"]}, "its metadata names the classes ['only'] but the network has 2 outputs"),
])  # fmt: skip
def test_export_refuses_what_prediction_would_refuse(run, tmp_path, meta, message):
    model = _edited_checkpoint(run, tmp_path / "bad.pt", **meta)
    with pytest.raises(unetkit.UnetkitError, match=re.escape(f"bad.pt: {message}")):
        unetkit.export(model, tmp_path / "m.onnx")
    assert [p.name for p in tmp_path.iterdir()] == ["bad.pt"]


def test_loading_an_onnx_file_checks_its_metadata_against_its_graph(run, tmp_path):
    """The exported file loads; the same graph under metadata that describes another network does not."""
    seg = unetkit.load(run / "model.onnx", tile=None)
    assert (seg.config.in_channels, seg.config.num_classes, seg.options.tile) == (1, 2, seg.meta["tile"])
    for change, message in [({"in_channels": 2}, "but its metadata says (N, 2, H, W) float for 2 input channels"),
                            ({"depth": 2}, "its graph does not run on a (1, 1, 18, 18) input as its metadata describes")]:
        graph = onnx.load(run / "model.onnx")
        meta = json.loads(graph.metadata_props[[p.key for p in graph.metadata_props].index("unetkit")].value)
        meta["model"].update(change)
        meta["normalization"] = {k: v * meta["model"]["in_channels"] for k, v in {"mean": [0.0], "std": [1.0]}.items()}
        onnx.helper.set_model_props(graph, {"unetkit": json.dumps(meta)})
        onnx.save(graph, tmp_path / "edited.onnx")
        with pytest.raises(unetkit.UnetkitError, match=re.escape(message)):
            unetkit.load(tmp_path / "edited.onnx")


def test_a_torchscript_export_given_as_a_model_says_what_to_pass(run, tmp_path):
    out = unetkit.export(run / "exp" / "best.pt", tmp_path / "model.torchscript", format="torchscript")
    with pytest.raises(unetkit.UnetkitError, match="model.torchscript: a TorchScript module written by unetkit export .* best.pt"):
        unetkit.load(out)
