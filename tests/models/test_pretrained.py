"""Loading pretrained encoder weights, from a file or torch.hub's cache, on small generated state dicts: nothing
downloads. The first convolution's adaptation to other channel counts, ImageNet normalisation, and the errors."""

import hashlib
import re
import urllib.error
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from unetkit.engine.training_data import full_scale, input_stats
from unetkit.errors import UnetkitError
from unetkit.models import encoders
from unetkit.models.config import ModelConfig
from unetkit.models.encoders import WEIGHT_URLS, make_encoder
from unetkit.models.pretrained import adapt_first_conv, imagenet_stats, load_encoder_weights
from unetkit.models.unet import build_model


def network(encoder: str = "resnet18", in_channels: int = 3):
    cfg = ModelConfig(in_channels=in_channels, num_classes=2, base_channels=4, depth=6, padding="same", norm="batch", up_mode="bilinear",
                      encoder=encoder)  # fmt: skip
    return build_model(cfg)


def torchvision_like(encoder: str, seed: int = 1) -> dict:
    """A state dict with the keys and shapes of torchvision's published file, classifier included, random values."""
    g = torch.Generator().manual_seed(seed)
    weights = {k: random(v.shape, k, g) if v.is_floating_point() else v for k, v in make_encoder(encoder).state_dict().items()}
    features = 512 if encoder.startswith("resnet") else 1280
    head = {"fc.weight": (1000, features), "fc.bias": (1000,)} if encoder.startswith("resnet") else {"classifier.1.weight": (1000, features),
                                                                                                     "classifier.1.bias": (1000,)}  # fmt: skip
    return {**weights, **{k: random(shape, k, g) for k, shape in head.items()}}


def random(shape: tuple, key: str, g: torch.Generator) -> torch.Tensor:
    """Small values as in a trained network; batch-norm variances about 1."""
    x = torch.randn(shape, generator=g) * 0.05
    return x.abs() + 1 if key.endswith("running_var") else x


def saved(tmp_path: Path, weights, name: str = "weights.pth") -> Path:
    path = tmp_path / name
    torch.save(weights, path)
    return path


@pytest.mark.parametrize("encoder", ["resnet18", "resnet34", "mobilenet_v2"])
def test_a_torchvision_file_loads_strictly_into_the_encoder(tmp_path, encoder):
    weights = torchvision_like(encoder)
    net = network(encoder)
    load_encoder_weights(net, str(saved(tmp_path, weights)))
    loaded = net.encoder.state_dict()
    assert loaded.keys() == {k for k in weights if not k.startswith(("fc.", "classifier."))}
    assert all(torch.equal(loaded[k], weights[k]) for k in loaded)


def test_files_without_batch_norm_step_counters_load(tmp_path):
    weights = {k: v for k, v in torchvision_like("resnet18").items() if not k.endswith("num_batches_tracked")}  # as before PyTorch 0.4.1
    net = network("resnet18")
    load_encoder_weights(net, str(saved(tmp_path, weights)))
    assert torch.equal(net.encoder.state_dict()["bn1.running_mean"], weights["bn1.running_mean"])


def test_first_conv_adaptation_exact_values():
    w = torch.arange(6.0).reshape(2, 3, 1, 1)  # two kernels over R, G, B
    assert adapt_first_conv(w, 3) is w
    assert adapt_first_conv(w, 1).flatten().tolist() == [3.0, 12.0]  # the sum over RGB
    assert adapt_first_conv(w, 4)[:, :, 0, 0].tolist() == [[0.0, 0.75, 1.5, 0.0], [2.25, 3.0, 3.75, 2.25]]  # R G B R, x 3/4
    assert adapt_first_conv(w, 2)[:, :, 0, 0].tolist() == [[0.0, 1.5], [4.5, 6.0]]  # R G, x 3/2


@pytest.mark.parametrize("encoder, key", [("resnet34", "conv1.weight"), ("mobilenet_v2", "features.0.0.weight")])
@pytest.mark.parametrize("channels", [1, 4])
def test_loading_adapts_the_first_conv_to_the_data_channels(tmp_path, encoder, key, channels):
    weights = torchvision_like(encoder)
    net = network(encoder, channels)
    load_encoder_weights(net, str(saved(tmp_path, weights)))
    rgb = weights[key]
    expected = rgb.sum(1, keepdim=True) if channels == 1 else torch.cat([rgb, rgb[:, :1]], 1) * 0.75
    assert torch.allclose(net.encoder.state_dict()[key], expected, rtol=0, atol=1e-6)
    x = torch.rand(2, channels, 64, 64)
    assert torch.isfinite(net(x)).all()


def test_imagenet_comes_from_the_hub_cache_without_network(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(torch.hub, "download_url_to_file", lambda *a, **k: pytest.fail("nothing may download"))
    weights = torchvision_like("resnet18")
    (tmp_path / "hub" / "checkpoints").mkdir(parents=True)
    saved(tmp_path / "hub" / "checkpoints", weights, "resnet18-f37072fd.pth")  # a cached file is loaded without a hash check
    net = network("resnet18")
    load_encoder_weights(net, "imagenet", progress=False)
    assert torch.equal(net.encoder.state_dict()["layer4.1.conv2.weight"], weights["layer4.1.conv2.weight"])


def test_imagenet_download_checks_the_hash_in_the_file_name(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "home"))
    weights = torchvision_like("mobilenet_v2")
    source = saved(tmp_path, weights, "mobilenet_v2.pth")
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    good = source.rename(tmp_path / f"mobilenet_v2-{digest[:8]}.pth")  # the name torch.hub expects: its own hash prefix
    monkeypatch.setitem(encoders.WEIGHT_URLS, "mobilenet_v2", good.as_uri())  # file:// - a download without network
    net = network("mobilenet_v2")
    load_encoder_weights(net, "imagenet", progress=False)
    assert (tmp_path / "home" / "hub" / "checkpoints" / good.name).is_file()
    assert torch.equal(net.encoder.state_dict()["features.18.0.weight"], weights["features.18.0.weight"])
    bad = Path(good.replace(tmp_path / "mobilenet_v2-00000000.pth"))
    monkeypatch.setitem(encoders.WEIGHT_URLS, "mobilenet_v2", bad.as_uri())
    with pytest.raises(UnetkitError, match=r"the download of .*mobilenet_v2-00000000.pth was damaged \(its SHA-256 does not match\); retry, "
                                           r"or download it by hand \(on any machine\) and pass --encoder-weights PATH$"):
        load_encoder_weights(network("mobilenet_v2"), "imagenet", progress=False)


def test_no_network_tells_to_download_by_hand(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))

    def offline(*args, **kwargs):
        raise urllib.error.URLError(OSError(101, "Network is unreachable"))

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    url = "https://download.pytorch.org/models/resnet34-b627a593.pth"
    with pytest.raises(UnetkitError, match=re.escape(f"--encoder-weights imagenet: could not download {url} ([Errno 101] Network is unreachable); "
                                                     "download it by hand (on any machine) and pass --encoder-weights PATH")):  # fmt: skip
        load_encoder_weights(network("resnet34"), "imagenet", progress=False)


def test_the_url_table_names_torchvisions_files():
    assert WEIGHT_URLS == {
        "resnet18": "https://download.pytorch.org/models/resnet18-f37072fd.pth",
        "resnet34": "https://download.pytorch.org/models/resnet34-b627a593.pth",
        "mobilenet_v2": "https://download.pytorch.org/models/mobilenet_v2-b0353104.pth",
    }
    assert all(torch.hub.HASH_REGEX.search(Path(url).name) for url in WEIGHT_URLS.values())  # so check_hash has a prefix to check


@dataclass
class Payload:
    value: int


@pytest.mark.parametrize("make, message", [
    (lambda t: t / "missing.pth", r": no such file; pass torchvision's resnet18 file \(resnet18-f37072fd.pth, from "
                                  r"https://download.pytorch.org/models/resnet18-f37072fd.pth\) or --encoder-weights imagenet$"),
    (lambda t: t, r": a folder, not a file; pass"),
    (lambda t: (t / "junk.pth").write_bytes(b"not a pickle") and t / "junk.pth", r": not a PyTorch weights file; pass"),
    (lambda t: saved(t, {"w": Payload(1)}), r": holds Python objects besides tensors, which unetkit does not unpickle; pass"),
    (lambda t: (t / "zip.pth").write_bytes(b"PK\x03\x04 broken") and t / "zip.pth", r": not a PyTorch weights file \(\w+\); pass"),
    (lambda t: saved(t, [torch.zeros(1)]), r": holds a list, not a state dict of tensors; pass"),
    (lambda t: saved(t, torchvision_like("resnet34")), r": holds resnet34 weights, not resnet18; pass --encoder resnet34, "
                                                       r"or resnet18's file \(resnet18-f37072fd.pth\)$"),
    (lambda t: saved(t, {**torchvision_like("resnet18"), "layer4.1.bn2.weight": torch.ones(256)}),
     r": not torchvision's resnet18 weights \(layer4.1.bn2.weight: shape \(256,\), expected \(512,\)\); pass resnet18's file"),
    (lambda t: saved(t, {k: v for k, v in torchvision_like("resnet18").items() if k != "bn1.bias"}),
     r": not torchvision's resnet18 weights \(bn1.bias: missing\)"),
    (lambda t: saved(t, {**torchvision_like("resnet18"), "extra.weight": torch.ones(1)}), r": not torchvision's resnet18 weights \(extra.weight: unexpected\)"),
])  # fmt: skip
def test_bad_weight_files_get_one_line_naming_the_file_and_fix(tmp_path, make, message):
    path = make(tmp_path)
    with pytest.raises(UnetkitError, match=f"^--encoder-weights {re.escape(str(path))}{message}") as error:
        load_encoder_weights(network("resnet18"), str(path))
    assert "\n" not in str(error.value)


def test_imagenet_normalisation_in_the_data_units():
    assert imagenet_stats(3, 1.0) == {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
    gray = imagenet_stats(1, 255)
    assert gray["mean"] == pytest.approx([0.449 * 255]) and gray["std"] == pytest.approx([0.226 * 255])
    assert imagenet_stats(4, 1.0)["mean"] == [0.485, 0.456, 0.406, 0.485]
    assert full_scale([np.array([[[3]]], np.uint8)]) == 255
    assert full_scale([np.array([[[4000]]], np.uint16)]) == 4095  # 12-bit data in 16-bit files
    assert full_scale([np.array([[[40000]]], np.uint16)]) == 65535
    assert full_scale([np.array([[[0.5]]], np.float32)]) == 1.0 and full_scale([np.array([[[7.0]]], np.float32)]) is None
    rgb = [np.full((2, 2, 3), 10, np.uint8), np.full((2, 2, 3), 30, np.uint8)]
    assert input_stats(rgb, pretrained=True) == imagenet_stats(3, 255)
    assert input_stats(rgb, pretrained=False) == {"mean": [20.0] * 3, "std": [10.0] * 3}  # the data's own
    floats = [np.full((2, 2, 1), 7.0, np.float32)]
    assert input_stats(floats, pretrained=True) == {"mean": [7.0], "std": [1.0]}  # unknown scale: the data's own
