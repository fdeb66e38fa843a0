"""Pretrained-encoder U-Nets: torchvision's key names and sizes, the decoder's contract, the geometry, and the
configuration. Loading weights is in tests/models/test_pretrained.py."""

import re

import pytest
import torch

from unetkit.config import TrainConfig, given_options
from unetkit.errors import UnetkitError
from unetkit.models.config import ModelConfig, input_size_for_output, is_valid_input_size
from unetkit.models.encoder_unet import EncoderUNet
from unetkit.models.encoders import make_encoder
from unetkit.models.unet import build_model, unet_from_weights

ENCODERS = ("resnet18", "resnet34", "mobilenet_v2")


def config(encoder: str = "resnet18", **kw) -> ModelConfig:
    return ModelConfig(**{"in_channels": 3, "num_classes": 3, "base_channels": 4, "depth": 6, "padding": "same", "norm": "batch",
                          "up_mode": "bilinear", "encoder": encoder, **kw})  # fmt: skip


# Key -> shape as in torchvision's published files (torchvision.models.resnet / mobilenetv2, IMAGENET1K_V1).
KNOWN = {
    "resnet18": {"conv1.weight": (64, 3, 7, 7), "bn1.running_mean": (64,), "layer1.1.conv1.weight": (64, 64, 3, 3),
                 "layer2.0.downsample.0.weight": (128, 64, 1, 1), "layer4.1.bn2.weight": (512,)},
    "resnet34": {"conv1.weight": (64, 3, 7, 7), "layer1.2.conv2.weight": (64, 64, 3, 3), "layer3.5.bn2.running_var": (256,),
                 "layer3.0.downsample.1.num_batches_tracked": (), "layer4.2.conv2.weight": (512, 512, 3, 3)},
    "mobilenet_v2": {"features.0.0.weight": (32, 3, 3, 3), "features.1.conv.0.0.weight": (32, 1, 3, 3),
                     "features.1.conv.1.weight": (16, 32, 1, 1), "features.2.conv.0.0.weight": (96, 16, 1, 1),
                     "features.17.conv.2.weight": (320, 960, 1, 1), "features.18.0.weight": (1280, 320, 1, 1),
                     "features.18.1.running_var": (1280,)},
}  # fmt: skip
# torchvision's totals less the classifier (fc: 512 x 1000 + 1000; classifier.1: 1280 x 1000 + 1000), and state-dict sizes.
PARAMETERS = {"resnet18": 11_689_512 - 513_000, "resnet34": 21_797_672 - 513_000, "mobilenet_v2": 3_504_872 - 1_281_000}
KEYS = {"resnet18": 122 - 2, "resnet34": 218 - 2, "mobilenet_v2": 314 - 2}


@pytest.mark.parametrize("name", ENCODERS)
def test_encoders_have_torchvision_keys_shapes_and_sizes(name):
    with torch.device("meta"):
        enc = make_encoder(name)
    shapes = {k: tuple(v.shape) for k, v in enc.state_dict().items()}
    assert {k: shapes.get(k) for k in KNOWN[name]} == KNOWN[name]
    assert len(shapes) == KEYS[name] and not any(k.startswith(("fc.", "classifier.")) for k in shapes)
    assert sum(p.numel() for p in enc.parameters()) == PARAMETERS[name]
    assert PARAMETERS == {"resnet18": 11_176_512, "resnet34": 21_284_672, "mobilenet_v2": 2_223_872}


@pytest.mark.parametrize("name, channels", [("resnet18", (64, 64, 128, 256, 512)), ("mobilenet_v2", (16, 24, 32, 96, 1280))])
def test_encoder_features_at_strides_2_to_32(name, channels):
    features = make_encoder(name, in_channels=2).eval()(torch.zeros(1, 2, 64, 96))
    assert [tuple(f.shape) for f in features] == [(1, c, 64 // 2**i, 96 // 2**i) for i, c in zip(range(1, 6), channels)]


@pytest.mark.parametrize("name", ENCODERS)
@pytest.mark.parametrize("up_mode", ["bilinear", "transposed"])
@pytest.mark.parametrize("hw", [(96, 160), (32, 224)])  # odd sizes at the bottom: 3 x 5, 1 x 7
def test_output_has_the_input_size_and_no_nan(name, up_mode, hw):
    net = build_model(config(name, in_channels=2, num_classes=4, up_mode=up_mode)).eval()
    assert isinstance(net, EncoderUNet)
    with torch.no_grad():
        y = net(torch.randn(1, 2, *hw))
    assert y.shape == (1, 4, *hw) and torch.isfinite(y).all()


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v2"])
@pytest.mark.parametrize("cfg", [dict(up_mode="transposed", norm="batch", dropout=0.2), dict(up_mode="bilinear", norm="group")])
def test_gradients_reach_every_parameter(name, cfg):
    torch.manual_seed(0)
    net = build_model(config(name, **cfg)).train()
    y = net(torch.randn(2, 3, 64, 64))  # (2, 3, 64, 64)
    (y * torch.randn_like(y)).sum().backward()
    missing = [n for n, p in net.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing


def test_decoder_widths_follow_base_channels_and_match_smp():
    net = build_model(config("resnet34", base_channels=16))
    assert [b.conv[0].out_channels for b in net.decoder] == [256, 128, 64, 32, 16]
    assert sum(p.numel() for p in net.decoder.parameters()) == 3_151_552  # smp's Unet("resnet34") decoder


def test_input_sizes_are_multiples_of_32():
    with pytest.raises(ValueError, match="input size 100 is not valid .* nearest valid sizes: 96 or 128"):
        build_model(config())(torch.zeros(1, 3, 100, 96))
    assert [s for s in range(1, 130) if is_valid_input_size(s, 6, "same")] == [32, 64, 96, 128]
    assert input_size_for_output(100, 6, "same") == 128


def test_model_config_requires_same_padding_and_depth_6():
    with pytest.raises(ValueError, match="encoder='resnet18' needs padding='same' and depth=6"):
        config(padding="valid")
    with pytest.raises(ValueError, match="needs padding='same' and depth=6"):
        config(depth=5)
    with pytest.raises(ValueError, match="encoder='vgg16'"):
        config("vgg16")
    old = ModelConfig().to_dict()
    del old["encoder"]  # a checkpoint written before encoders existed
    assert ModelConfig.from_dict(old) == ModelConfig() and ModelConfig().encoder == "none"
    assert sum(p.numel() for p in build_model(ModelConfig()).parameters()) == 31_030_658  # the paper's U-Net is unchanged


def test_checkpoint_weights_rebuild_the_encoder_network():
    cfg = config("mobilenet_v2", in_channels=1)
    net = build_model(cfg).eval()
    again = unet_from_weights(cfg.to_dict(), net.state_dict(), "best.pt").eval()
    x = torch.randn(1, 1, 64, 64)
    assert isinstance(again, EncoderUNet) and torch.equal(again(x), net(x))
    with pytest.raises(UnetkitError, match="best.pt: its model metadata does not match its weights"):
        unet_from_weights(config("resnet18", in_channels=1).to_dict(), net.state_dict(), "best.pt")
    with pytest.raises(UnetkitError, match="best.pt: its model metadata is not a U-Net configuration"):
        unet_from_weights({**cfg.to_dict(), "padding": "valid"}, net.state_dict(), "best.pt")


def test_train_config_resolves_the_encoder_network():
    plain = TrainConfig()
    assert (plain.padding, plain.norm, plain.up_mode, plain.depth, plain.base_channels) == ("valid", "none", "transposed", 4, 32)
    cfg = TrainConfig(encoder="resnet34")
    assert (cfg.padding, cfg.norm, cfg.up_mode, cfg.depth, cfg.base_channels, cfg.patch_size) == ("same", "batch", "bilinear", 6, 16, 128)
    assert cfg.model_config(3, 2) == ModelConfig(in_channels=3, num_classes=2, base_channels=16, depth=6, padding="same", norm="batch",
                                                 up_mode="bilinear", encoder="resnet34")  # fmt: skip
    given = TrainConfig(encoder="mobilenet_v2", padding="same", depth=6, norm="group", up_mode="transposed", base_channels=8)
    assert (given.norm, given.up_mode, given.base_channels) == ("group", "transposed", 8)


def test_a_plan_keeps_what_the_encoder_fixes():
    from unetkit.planning.fingerprint import ClassStats, Fingerprint
    from unetkit.planning.rules import Budget, plan_options

    given = given_options(encoder="resnet18", norm="group")
    assert given == {"encoder": "resnet18", "norm": "group"}  # what the user gave, no more
    fp = Fingerprint(pairs=4, read=4, median_shape=(256, 256), min_shape=(256, 256), channels=3, dtype="uint8",
                     percentiles=[(0.0, 1.0, 2.0)] * 3, classes=[ClassStats("a", 0.5, width=20), ClassStats("b", 0.5, width=20)])
    options = plan_options(fp, Budget(), fixed=given).options
    assert {k: options[k] for k in ("depth", "padding", "base_channels", "norm", "up_mode")} == {
        "depth": 6, "padding": "same", "base_channels": 16, "norm": "group", "up_mode": "bilinear"}
    assert TrainConfig(**{**options, **given}).model_config(3, 2).encoder == "resnet18"


@pytest.mark.parametrize("bad, message", [
    (dict(encoder="resnet18", padding="valid"), "padding='valid' does not fit encoder='resnet18', a same-padded network of stride 32 "
                                                "(padding same, depth 6); pass --padding same or drop --padding"),
    (dict(encoder="resnet18", depth=5), "depth=5 does not fit encoder='resnet18'"),
    (dict(encoder_weights="imagenet"), "encoder_weights='imagenet' needs an --encoder (resnet18, resnet34, mobilenet_v2); pass one"),
    (dict(encoder="resnet50"), "encoder='resnet50' is not one of none, resnet18, resnet34, mobilenet_v2"),
])  # fmt: skip
def test_train_config_refuses_what_an_encoder_cannot_be(bad, message):
    with pytest.raises(UnetkitError, match=re.escape(message)):
        TrainConfig(**bad)
