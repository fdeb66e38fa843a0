"""The bad-model corpus: checkpoints and exported files whose metadata or weights would make every mask garbage
(zero or non-finite normalisation, NaN weights, classes the network does not have), ONNX files whose metadata
disagrees with their graph, and files that are not unetkit models at all (pickled code, TorchScript, folders).
Each is refused in one line naming the file, before any output exists, and the model file is never changed.
"""

import json
import pickle
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper
from PIL import Image

import unetkit
from unetkit.cli import main
from unetkit.engine.checkpoint import save_checkpoint
from unetkit.models.unet import UNet

from tests.corpus.kit import Untouched, assert_no_output, expect_error

GOOD = np.full((20, 24), 100, np.uint8)


def edited(source: Path, target: Path, meta=None, weights=None) -> Path:
    """A copy of checkpoint ``source`` with ``meta(m)`` and ``weights(state)`` applied in place."""
    ckpt = torch.load(source, weights_only=True)
    m = json.loads(ckpt["meta"])
    if meta:
        meta(m)
    if weights:
        weights(ckpt["model"])
    torch.save(dict(ckpt, meta=json.dumps(m)), target)
    return target


def setter(*path, value):
    """A metadata edit: ``m[path[0]]...[path[-1]] = value``."""

    def edit(m):
        for key in path[:-1]:
            m = m[key]
        m[path[-1]] = value

    return edit


def tensor_value(key, index, value):
    def edit(state):
        state[key].view(-1)[index] = value

    return edit


class Payload:
    def __reduce__(self):
        return (Path.touch, (Path(__file__).parent / "pwned",))


def pickled(target: Path) -> Path:
    with open(target, "wb") as f:
        pickle.dump({"format": "unetkit-checkpoint", "model": {}, "x": Payload()}, f)
    return target


def torchscript(source: Path, target: Path, ours: bool) -> Path:
    """A TorchScript module traced from the checkpoint: with unetkit's metadata (as export writes it) or without."""
    if ours:
        return unetkit.export(source, target, format="torchscript")
    net = UNet(base_channels=2, depth=2).eval()
    torch.jit.save(torch.jit.trace(net, torch.zeros(1, 1, 20, 20)), str(target))
    return target


def batch_norm_checkpoint(target: Path) -> Path:
    net = UNet(base_channels=2, depth=2, norm="batch")
    state = net.state_dict()
    state["down.0.1.running_var"][0] = -1.0
    meta = {"model": net.config.to_dict(), "normalization": {"mean": [100.0], "std": [40.0]}, "classes": ["a", "b"], "colors": [[0, 0, 0], [255, 0, 0]]}
    save_checkpoint(target, state, meta)
    return target


# case: (file name, how to make it from the gray checkpoint, fragment of the one-line message)
CHECKPOINT_CASES = {
    "std zero": ("std0.pt", lambda src, p: edited(src, p, setter("normalization", "std", value=[0.0])), "normalization std [0.0] is not positive"),
    "std negative": ("stdneg.pt", lambda src, p: edited(src, p, setter("normalization", "std", value=[-3.0])), "is not positive"),
    "std NaN": ("stdnan.pt", lambda src, p: edited(src, p, setter("normalization", "std", value=[float("nan")])), "normalization std [nan] is not finite"),
    "std below float32": ("stdtiny.pt", lambda src, p: edited(src, p, setter("normalization", "std", value=[1e-50])), "is not positive"),
    "mean infinite": ("meaninf.pt", lambda src, p: edited(src, p, setter("normalization", "mean", value=[float("inf")])), "normalization mean [inf] is not finite"),
    "mean beyond float32": ("meanbig.pt", lambda src, p: edited(src, p, setter("normalization", "mean", value=[1e39])), "is not finite in float32"),
    "std per channel, wrong count": ("stdcount.pt", lambda src, p: edited(src, p, setter("normalization", "std", value=[1.0, 2.0])),
                                     "expected 1 number(s), one per input channel"),
    "std as text": ("stdtext.pt", lambda src, p: edited(src, p, setter("normalization", "std", value="40")), "expected 1 number(s)"),
    "NaN in a weight": ("nanweight.pt", lambda src, p: edited(src, p, weights=tensor_value("down.0.0.weight", 3, float("nan"))),
                        "weights down.0.0.weight hold NaN or infinite values"),
    "infinity in the head": ("infhead.pt", lambda src, p: edited(src, p, weights=tensor_value("head.bias", 0, float("inf"))),
                             "weights head.bias hold NaN or infinite values"),
    "negative batch-norm variance": ("bn.pt", lambda src, p: batch_norm_checkpoint(p), "batch-norm variances down.0.1.running_var are negative"),
    "more class names than outputs": ("classes.pt", lambda src, p: edited(src, p, setter("classes", value=["a", "b", "c"])),
                                      "but the network has 2 outputs"),
    "colours that are not RGB": ("colors.pt", lambda src, p: edited(src, p, setter("colors", value=[[0, 0], [300, 0, 0]])), "RGB triples of 0..255"),
    "pickled payload (plain pickle)": ("evil.pt", lambda src, p: pickled(p), "refused to load for safety"),
    "pickled payload (torch.save)": ("evil2.pt", lambda src, p: edited(src, p, weights=lambda s: s.update(x=Payload())), "refused to load for safety"),
    "TorchScript from unetkit export": ("model.torchscript", lambda src, p: torchscript(src, p, ours=True),
                                       "a TorchScript module written by unetkit export"),
    "TorchScript from elsewhere": ("traced.pt", lambda src, p: torchscript(src, p, ours=False), "a TorchScript module, not a unetkit checkpoint"),
    "folder as the model": ("run.pt", lambda src, p: (p.mkdir(), p)[1], "a folder, not a checkpoint"),
}


@pytest.mark.parametrize("case", CHECKPOINT_CASES)
def test_predict_refuses_bad_checkpoints(models, tmp_path, capsys, case):
    name, make, fragment = CHECKPOINT_CASES[case]
    model = make(models["gray"], tmp_path / name)
    Image.fromarray(GOOD).save(tmp_path / "g.png")
    inputs, out = Untouched(tmp_path / name, tmp_path / "g.png"), tmp_path / "out"
    message = expect_error(capsys, ["predict", "--model", model, tmp_path / "g.png", "--out", out], fragment, [name])
    assert "Weights only load failed" not in message  # torch's own multi-paragraph text never leaks, cut or whole
    assert not (Path(__file__).parent / "pwned").exists(), "the pickled payload must never run"
    inputs.check()
    assert_no_output(out)


def test_finite_weights_that_overflow_are_refused_per_tile(models, tmp_path, capsys):
    """Weights at float32's limit are finite, but the logits overflow: the mask would be garbage, so the tile is named."""
    model = edited(models["gray"], tmp_path / "loud.pt", weights=lambda s: [t.fill_(3e38) for t in s.values()])
    Image.fromarray(GOOD).save(tmp_path / "g.png")
    inputs = Untouched(model, tmp_path / "g.png")
    expect_error(capsys, ["predict", "--model", model, tmp_path / "g.png", "--out", tmp_path / "out", "--precision", "fp32"],
                 "the model returned NaN or infinite logits for the tile at row 0, column 0", ["g.png"])
    inputs.check()
    assert_no_output(tmp_path / "out")


@pytest.mark.parametrize("command", ["export", "predict --backend onnxruntime"])
def test_a_checkpoint_with_zero_std_is_not_exported(models, tmp_path, capsys, monkeypatch, command):
    """Export (also the one --backend onnxruntime runs behind the scenes) refuses what prediction would refuse."""
    monkeypatch.setenv("UNETKIT_CACHE", str(tmp_path / "cache"))
    model = edited(models["gray"], tmp_path / "std0.pt", setter("normalization", "std", value=[0.0]))
    Image.fromarray(GOOD).save(tmp_path / "g.png")
    argv = (["export", "--model", model, "--out", tmp_path / "out" / "m.onnx"] if command == "export"
            else ["predict", "--model", model, tmp_path / "g.png", "--out", tmp_path / "out", "--backend", "onnxruntime"])
    expect_error(capsys, argv, "is not positive", ["std0.pt"])
    assert_no_output(tmp_path / "out")
    assert_no_output(tmp_path / "cache")


# --- exported ONNX files ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def exported(models, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("onnx") / "gray.onnx"
    return unetkit.export(models["gray"], out)


def onnx_edit(meta=None, graph=None, drop=False):
    """A maker of an edited copy of the exported file: ``meta(m)`` applied to its unetkit metadata (a string it
    returns replaces the JSON), ``graph(model)`` to the graph; ``drop`` removes the metadata."""

    def make(exported: Path, checkpoint: Path, target: Path) -> Path:
        model = onnx.load(exported)
        props = {p.key: p.value for p in model.metadata_props}
        if meta:
            m = json.loads(props["unetkit"])
            props["unetkit"] = meta(m) or json.dumps(m)
        if drop:
            del props["unetkit"]
        if graph:
            graph(model)
        del model.metadata_props[:]
        onnx.helper.set_model_props(model, props)
        onnx.save(model, target)
        return target

    return make


def nan_initializer(model):
    first = model.graph.initializer[0]
    array = numpy_helper.to_array(first).copy()
    array.reshape(-1)[0] = np.nan
    first.CopyFrom(numpy_helper.from_array(array, first.name))


def both(*edits):
    def edit(m):
        for e in edits:
            e(m)

    return edit


ONNX_CASES = {
    "not ONNX at all": ("notes.onnx", lambda onnx_file, pt, p: p.write_text("a text file\n"), "not a readable ONNX model"),
    "a checkpoint named .onnx": ("renamed.onnx", lambda onnx_file, pt, p: p.write_bytes(pt.read_bytes()), "a PyTorch file (a zip archive), not an ONNX model"),
    "no unetkit metadata": ("plain.onnx", onnx_edit(drop=True), "an ONNX model without unetkit metadata"),
    "metadata that is not JSON": ("nojson.onnx", onnx_edit(meta=lambda m: "{not json"), "its unetkit metadata is not a JSON mapping"),
    "std zero in the metadata": ("std0.onnx", onnx_edit(meta=setter("normalization", "std", value=[0.0])), "normalization std [0.0] is not positive"),
    "NaN mean in the metadata": ("nanmean.onnx", onnx_edit(meta=setter("normalization", "mean", value=[float("nan")])), "is not finite"),
    "metadata says 3 input channels": ("rgbmeta.onnx", onnx_edit(meta=both(setter("model", "in_channels", value=3),
                                                                            setter("normalization", "mean", value=[0.0] * 3),
                                                                            setter("normalization", "std", value=[1.0] * 3))),
                                       "for 3 input channels"),
    "metadata says 3 classes": ("classes.onnx", onnx_edit(meta=both(setter("model", "num_classes", value=3), setter("classes", value=["a", "b", "c"]),
                                                                     setter("colors", value=[[0, 0, 0]] * 3))),
                                "for 3 output classes"),
    "metadata says another depth": ("depth.onnx", onnx_edit(meta=setter("model", "depth", value=4)), "its graph"),
    "metadata says same padding": ("padding.onnx", onnx_edit(meta=setter("model", "padding", value="same")), "its graph"),
    "metadata names another input": ("input.onnx", onnx_edit(meta=setter("export", "input", value="pixels")), "not the one input 'pixels'"),
    "metadata without a tile": ("tile.onnx", onnx_edit(meta=lambda m: m.pop("tile") and None), "its recommended tile None"),
    "metadata without classes": ("noclasses.onnx", onnx_edit(meta=lambda m: m.pop("classes") and None), "its metadata lacks classes"),
    "metadata of a newer layout": ("future.onnx", onnx_edit(meta=setter("export", "version", value=99)), "newer than this unetkit reads"),
    "model metadata that is no U-Net": ("nounet.onnx", onnx_edit(meta=setter("model", "norm", value="magic")), "not a U-Net configuration"),
    "NaN in a weight": ("nanweight.onnx", onnx_edit(graph=nan_initializer), "hold NaN or infinite values"),
}


@pytest.mark.parametrize("case", ONNX_CASES)
def test_predict_refuses_bad_onnx_files(models, exported, tmp_path, capsys, case):
    name, make, fragment = ONNX_CASES[case]
    make(exported, models["gray"], tmp_path / name)
    Image.fromarray(GOOD).save(tmp_path / "g.png")
    inputs, out = Untouched(tmp_path / name, tmp_path / "g.png"), tmp_path / "out"
    expect_error(capsys, ["predict", "--model", tmp_path / name, tmp_path / "g.png", "--out", out], fragment, [name])
    inputs.check()
    assert_no_output(out)


def test_the_untouched_export_still_runs(exported, tmp_path):
    """The checks refuse edited files only: the file as exported predicts."""
    Image.fromarray(GOOD).save(tmp_path / "g.png")
    assert main(["predict", "--model", str(exported), str(tmp_path / "g.png"), "--out", str(tmp_path / "out"), "--no-progress"]) == 0
    assert np.asarray(Image.open(tmp_path / "out" / "g.png")).shape == GOOD.shape
