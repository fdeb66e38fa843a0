"""A pretrained-encoder U-Net end to end on tiny synthetic RGB data: training from a weights file, the checkpoint's
normalisation, prediction through the checkpoint, resuming without the weights file, and ONNX export."""

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import unetkit
from unetkit.engine import trainer
from unetkit.engine.checkpoint import load_checkpoint
from unetkit.models.encoder_unet import EncoderUNet
from unetkit.models.pretrained import imagenet_stats

from tests.conftest import TINY_MODEL
from tests.models.test_pretrained import torchvision_like

ENCODER_RUN = {**TINY_MODEL, "encoder": "resnet18", "padding": "same", "base_channels": 4, "depth": None, "patch_size": 32}


@pytest.fixture(scope="module")
def rgb_data(tiny_data, tmp_path_factory) -> Path:
    """The tiny data set as RGB photographs: the gray images in three tinted channels."""
    root = tmp_path_factory.mktemp("rgb")
    shutil.copytree(tiny_data / "masks", root / "masks")
    (root / "images").mkdir()
    for path in sorted((tiny_data / "images").glob("*.png")):
        gray = np.asarray(Image.open(path).convert("L"), np.float32)
        Image.fromarray(np.stack([gray, gray * 0.8, gray * 0.6], -1).astype(np.uint8)).save(root / "images" / path.name)
    return root


@pytest.fixture(scope="module")
def run(rgb_data, tmp_path_factory) -> tuple[Path, dict]:
    """Two steps of a resnet18 U-Net from a generated torchvision-like weights file, at a learning rate too small to move them."""
    root = tmp_path_factory.mktemp("encoder")
    weights = torchvision_like("resnet18")
    torch.save(weights, root / "resnet18-weights.pth")
    unetkit.train(data=str(rgb_data), out=str(root / "exp"), epochs=1, steps_per_epoch=2, seed=0, lr=1e-7,
                  encoder_weights=str(root / "resnet18-weights.pth"), **ENCODER_RUN)  # fmt: skip
    return root, weights


def test_training_starts_from_the_weights_file_and_stores_imagenet_normalisation(run):
    root, weights = run
    ckpt = load_checkpoint(root / "exp" / "best.pt")
    model = ckpt["meta"]["model"]
    assert (model["encoder"], model["padding"], model["depth"], model["norm"], model["in_channels"]) == ("resnet18", "same", 6, "batch", 3)
    for key in ("conv1.weight", "layer3.1.conv2.weight"):
        assert torch.allclose(ckpt["model"][f"encoder.{key}"], weights[key], rtol=0, atol=1e-5)  # moved by ~lr per step only
    assert ckpt["meta"]["normalization"] == imagenet_stats(3, 255)
    assert ckpt["meta"]["train_config"]["encoder_weights"].endswith("resnet18-weights.pth")


def test_prediction_rebuilds_the_encoder_network_from_the_checkpoint(run):
    root, _ = run
    seg = unetkit.load(root / "exp" / "best.pt", tile=64, device="cpu")
    assert isinstance(seg.model, EncoderUNet)
    image = np.random.default_rng(0).integers(0, 256, (45, 70, 3), dtype=np.uint8)  # any size: tiled in multiples of 32
    proba = seg.predict_proba(image)
    assert proba.shape == (2, 45, 70) and np.allclose(proba.sum(0), 1, atol=1e-5)


def test_resume_takes_the_weights_from_the_checkpoint(run, tmp_path, monkeypatch):
    root, _ = run
    shutil.copytree(root / "exp", tmp_path / "exp")
    monkeypatch.setattr(trainer, "load_encoder_weights", lambda *a, **k: pytest.fail("a resumed run must not reload --encoder-weights"))
    result = unetkit.train(resume=str(tmp_path / "exp"), epochs=2)
    assert result.epochs == 2
    assert load_checkpoint(tmp_path / "exp" / "last.pt")["meta"]["model"]["encoder"] == "resnet18"


def test_onnx_export_matches_pytorch(run, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    root, _ = run
    out = unetkit.export(root / "exp" / "best.pt", tmp_path / "model.onnx")  # refuses an export that disagrees with PyTorch
    seg = unetkit.load(root / "exp" / "best.pt", device="cpu")
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        reference = seg.model.float().eval()(x).numpy()
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    assert got.shape == (1, 2, 64, 96) and np.abs(got - reference).max() < 1e-4 * max(1.0, np.abs(reference).max())
