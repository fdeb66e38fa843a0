"""Model contract: shapes in both modes, the paper's numbers, gradients everywhere, geometry helpers."""


import pytest
import torch

from unetkit.models.config import ModelConfig, context, input_size_for_output, is_valid_input_size, nearest_valid_input_sizes, output_size
from unetkit.models.unet import UNet

CONFIGS = [
    dict(padding="valid", norm="none", up_mode="transposed"),
    dict(padding="valid", norm="batch", up_mode="bilinear", dropout=0.5),
    dict(padding="same", norm="group", up_mode="transposed"),
    dict(padding="same", norm="instance", up_mode="bilinear"),
]


def test_paper_network_parameter_count_and_572_to_388():
    net = UNet()
    assert sum(p.numel() for p in net.parameters()) == 31_030_658
    assert output_size(572) == 388
    assert context(5, "valid") == 184
    assert input_size_for_output(388) == 572


@pytest.mark.slow
def test_paper_network_forward_572():
    with torch.no_grad():
        assert UNet()(torch.zeros(1, 1, 572, 572)).shape == (1, 2, 388, 388)


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: "-".join(str(v) for v in c.values()))
@pytest.mark.parametrize("depth", [2, 3, 4])
def test_contract_shapes_gradients_no_nan(cfg, depth):
    torch.manual_seed(0)
    net = UNet(in_channels=3, num_classes=4, base_channels=4, depth=depth, **cfg)
    s = 2 ** (depth - 1)
    # a non-square input with odd side lengths where the mode allows them
    h = input_size_for_output(37, depth, cfg["padding"])
    w = input_size_for_output(21, depth, cfg["padding"])
    x = torch.randn(2, 3, h, w)
    y = net(x)
    expect = (h - context(depth, cfg["padding"]), w - context(depth, cfg["padding"]))
    assert y.shape == (2, 4, *expect)
    if cfg["padding"] == "same":
        assert expect == (h, w) and h % s == 0
    assert torch.isfinite(y).all()
    y.square().mean().backward()
    for name, p in net.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, f"no gradient reaches {name}"


@pytest.mark.parametrize("depth", [1, 2, 3, 4, 5])
def test_every_valid_size_runs_and_matches_output_size(depth):
    net = UNet(base_channels=1, depth=depth).eval()
    sizes = [s for s in range(1, 220) if is_valid_input_size(s, depth, "valid")][:4]
    assert sizes
    with torch.no_grad():
        for s in sizes:
            assert net(torch.zeros(1, 1, s, s + 2 ** (depth - 1) if depth > 1 else s + 1)).shape[-2] == output_size(s, depth)


def test_valid_sizes_follow_closed_form():
    # paper geometry: valid inputs are 16 b + 124 for b >= 4, outputs 16 b - 60
    valid = [s for s in range(1, 700) if is_valid_input_size(s)]
    assert valid[:3] == [188, 204, 220]
    assert all((s - 124) % 16 == 0 for s in valid)
    assert 572 in valid and 570 not in valid


def test_invalid_size_error_names_nearest_sizes():
    assert nearest_valid_input_sizes(570) == (556, 572)
    with pytest.raises(ValueError, match="nearest valid sizes: 556 or 572"):
        UNet(base_channels=1)(torch.zeros(1, 1, 570, 572))
    with pytest.raises(ValueError, match="nearest valid sizes: 16 or 32"):
        UNet(base_channels=1, padding="same")(torch.zeros(1, 1, 20, 32))


def test_he_initialisation_std():
    torch.manual_seed(0)
    net = UNet(base_channels=32, depth=3)
    conv = net.down[1][0]  # 3x3 conv, fan_in = 32 * 9
    assert conv.weight.std().item() == pytest.approx((2 / (32 * 9)) ** 0.5, rel=0.05)
    assert conv.bias.abs().max().item() == 0


@pytest.mark.parametrize("bad", [dict(padding="full"), dict(norm="layer"), dict(up_mode="nearest"), dict(depth=0), dict(dropout=1.0)])
def test_bad_config_rejected(bad):
    with pytest.raises(ValueError):
        ModelConfig(**bad)


def test_config_round_trip():
    cfg = ModelConfig(in_channels=3, num_classes=6, base_channels=8, depth=3, padding="same", norm="batch")
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg
    a, b = UNet(cfg), UNet(ModelConfig.from_dict(cfg.to_dict()))
    b.load_state_dict(a.state_dict())
    x = torch.randn(1, 3, 32, 32)
    a.eval(), b.eval()
    assert torch.equal(a(x), b(x))


