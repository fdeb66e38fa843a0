"""3D U-Net contract: shapes in both modes, anisotropic levels, odd sizes, gradients everywhere, tiled = whole,
nnU-Net's anisotropy plan, the configuration round trip and a parameter count by hand."""

import json

import numpy as np
import pytest
import torch
from torch import nn

from unetkit.errors import UnetkitError
from unetkit.models.unet3d import (
    Model3DConfig,
    UNet3D,
    context3d,
    input_shape_for_output,
    output_shape,
    plan_anisotropy,
    tiled_forward_valid,
)

MODES = [
    dict(padding="valid", norm="none", up_mode="transposed"),
    dict(padding="valid", norm="batch", up_mode="trilinear", dropout=0.5),
    dict(padding="same", norm="instance", up_mode="transposed"),
    dict(padding="same", norm="batch", up_mode="trilinear"),
]
# Isotropic depth 2, and depth 3 with a first level that neither pools nor convolves along z (an EM stack).
LEVELS = [
    dict(depth=2),
    dict(depth=3, pools=((1, 2, 2), (2, 2, 2)), kernels=((1, 3, 3), (3, 3, 3), (3, 3, 3))),
]
ANISO_A = LEVELS[1]
# z pooled never and convolved only at the bottom: z takes any size (odd too).
ANISO_B = dict(depth=3, pools=((1, 2, 2), (1, 2, 2)), kernels=((1, 3, 3), (1, 3, 3), (3, 3, 3)))


def _ids(d: dict) -> str:
    return "-".join(f"{v}" for k, v in d.items() if k not in ("pools", "kernels")) + ("-aniso" if "pools" in d else "")


@pytest.mark.parametrize("mode", MODES, ids=_ids)
@pytest.mark.parametrize("levels", LEVELS, ids=_ids)
def test_contract_shapes_gradients_no_nan(mode, levels):
    torch.manual_seed(0)
    cfg = Model3DConfig(in_channels=2, num_classes=3, base_channels=3, **mode, **levels)
    net = UNet3D(cfg)
    shape = input_shape_for_output(cfg, (3, 5, 7))  # odd requests: valid mode gives the next valid sizes
    y = net(torch.randn(2, 2, *shape))
    assert y.shape == (2, 3, *output_shape(cfg, shape))
    assert tuple(i - o for i, o in zip(shape, y.shape[2:])) == context3d(cfg)
    if cfg.padding == "same":
        assert y.shape[2:] == shape and context3d(cfg) == (0, 0, 0)
    assert torch.isfinite(y).all()
    y.square().mean().backward()
    for name, p in net.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, f"no gradient reaches {name}"


def test_anisotropic_levels_give_the_hand_computed_shapes():
    # ANISO_A along z: kernels 1, 3, 3 trim 0, 4, 4; pools 1, 2. 20 -> 20 -> (pool 1) 20 -> 16 -> (pool 2) 8 -> 4
    # -> (up 2) 8 - 4 = 4 -> (up 1) 4 - 0 = 4: context 16. Along y and x, the isotropic depth 3: context 40.
    a = Model3DConfig(base_channels=2, norm="none", **ANISO_A)
    assert context3d(a) == (16, 40, 40)
    net = UNet3D(a).eval()
    assert net.down[0][0].kernel_size == (1, 3, 3) and net.pool[0].kernel_size == (1, 2, 2)
    assert net.up[-1].up.kernel_size == (1, 2, 2) and net.up[-1].up.stride == (1, 2, 2)  # shallowest level last
    with torch.no_grad():
        assert net(torch.zeros(1, 1, 20, 44, 52)).shape == (1, 2, 4, 4, 12)
    # ANISO_B along z: only the bottom level's 3-wide kernels trim (4 voxels): any z >= 5, odd or even.
    b = Model3DConfig(base_channels=2, norm="none", **ANISO_B)
    assert context3d(b) == (4, 40, 40)
    with torch.no_grad():
        assert UNet3D(b)(torch.zeros(1, 1, 7, 44, 44)).shape == (1, 2, 3, 4, 4)
        same = UNet3D(Model3DConfig(base_channels=2, padding="same", **ANISO_B))
        assert same(torch.zeros(1, 1, 5, 8, 12)).shape == (1, 2, 5, 8, 12)  # z pooled 1x: any size; y, x multiples of 4
        assert UNet3D(Model3DConfig(base_channels=2, padding="same", **ANISO_A))(torch.zeros(1, 1, 6, 12, 20)).shape == (1, 2, 6, 12, 20)


def test_geometry_helpers_agree_with_each_other():
    cfg = Model3DConfig(depth=2)  # isotropic: valid inputs are even sizes >= 18, output = input - 16
    assert context3d(cfg) == (16, 16, 16)
    assert input_shape_for_output(cfg, (1, 2, 5)) == (18, 18, 22)
    assert output_shape(cfg, (18, 18, 22)) == (2, 2, 6)
    aniso = Model3DConfig(**ANISO_B)
    assert input_shape_for_output(aniso, 3) == (7, 44, 44) and output_shape(aniso, (7, 44, 44)) == (3, 4, 4)
    same = Model3DConfig(depth=3, padding="same")
    assert input_shape_for_output(same, (1, 4, 5)) == (4, 4, 8)


@pytest.mark.parametrize(
    "cfg, shape, match",
    [
        (dict(depth=2), (20, 21, 22), (r"input size 21 along y is not valid for this depth-2 3D U-Net with padding='valid'; "
                                       r"nearest valid sizes along y: 20 or 22 \(mirror-pad the volume to 22")),
        (dict(depth=2), (20, 20, 5), r"input size 5 along x .* nearest valid sizes along x: 18 \("),
        (dict(depth=3, padding="same"), (16, 16, 18), (r"input size 18 along x is not a multiple of 4, the total pooling along x "
                                                       r"of this 3D U-Net with padding='same'; pad the volume to 20 along x$")),
        (dict(padding="same", **ANISO_A), (5, 12, 12), r"input size 5 along z is not a multiple of 2, .* pad the volume to 6 along z"),
    ],
)  # fmt: skip
def test_sizes_that_do_not_pool_evenly_are_refused_with_the_fix(cfg, shape, match):
    config = Model3DConfig(base_channels=2, norm="none", **cfg)
    with pytest.raises(UnetkitError, match=match):
        UNet3D(config)(torch.zeros(1, 1, *shape))
    with pytest.raises(UnetkitError, match=match):
        output_shape(config, shape)


def test_wrong_rank_or_channels_refused():
    net = UNet3D(base_channels=2, depth=2, padding="same")
    with pytest.raises(UnetkitError, match=r"5-D tensor \(N, C, Z, Y, X\), got shape \(1, 8, 8, 8\); .*volume\[None, None\]"):
        net(torch.zeros(1, 8, 8, 8))
    with pytest.raises(UnetkitError, match="input has 2 channels but the 3D U-Net was built for in_channels=1"):
        net(torch.zeros(1, 2, 8, 8, 8))


def _mirror(volume: torch.Tensor, cfg: Model3DConfig) -> torch.Tensor:
    """The volume reflected by half the context before, and after up to the smallest valid whole-volume input."""
    sizes, ctx = volume.shape[2:], context3d(cfg)
    full = input_shape_for_output(cfg, tuple(sizes))
    pads = [(0, 0), (0, 0)] + [(c // 2, f - n - c // 2) for n, c, f in zip(sizes, ctx, full)]
    return torch.from_numpy(np.pad(volume.numpy(), pads, mode="reflect"))


def _randomise_batch_norm(net: nn.Module) -> None:
    """Batch norms in eval mode with non-trivial statistics and affine parameters."""
    for m in net.modules():
        if isinstance(m, nn.BatchNorm3d):
            m.running_mean.uniform_(-0.5, 0.5), m.running_var.uniform_(0.5, 2.0)
            nn.init.uniform_(m.weight, 0.5, 1.5), nn.init.uniform_(m.bias, -0.2, 0.2)


@pytest.mark.parametrize(
    "levels, norm, size, out_tile",
    [
        (dict(depth=2), "none", (13, 17, 19), (6, 8, 10)),  # 3 x 3 x 2 tiles
        (ANISO_A, "batch", (9, 13, 15), (4, 8, 8)),  # 3 x 2 x 2 tiles
        (ANISO_B, "none", (7, 11, 9), (3, 5, 7)),  # z steps of 3 (no z pooling), y and x rounded down to 4: 27 tiles
        (dict(depth=2), "batch", (5, 7, 3), 64),  # one tile, larger than the volume
    ],
)  # fmt: skip
def test_tiled_prediction_equals_one_whole_volume_pass(levels, norm, size, out_tile):
    torch.manual_seed(0)
    cfg = Model3DConfig(in_channels=2, num_classes=3, base_channels=2, norm=norm, padding="valid", **levels)
    net = UNet3D(cfg)
    _randomise_batch_norm(net)
    net.eval()
    volume = torch.randn(1, 2, *size)
    tiled = tiled_forward_valid(net, volume, out_tile)
    with torch.no_grad():
        whole = net(_mirror(volume, cfg))[..., : size[0], : size[1], : size[2]]
    assert tiled.shape == (1, 3, *size)
    torch.testing.assert_close(tiled, whole, atol=1e-5, rtol=1e-5)


def test_tiled_prediction_refuses_same_mode_and_bad_volumes():
    with pytest.raises(UnetkitError, match="needs a network with padding='valid'"):
        tiled_forward_valid(UNet3D(base_channels=2, depth=2, padding="same"), torch.zeros(1, 1, 8, 8, 8), 8)
    net = UNet3D(base_channels=2, depth=2)
    with pytest.raises(UnetkitError, match=r"one volume shaped \(1, C, Z, Y, X\), got \(2, 1, 8, 8, 8\)"):
        tiled_forward_valid(net, torch.zeros(2, 1, 8, 8, 8), 8)
    with pytest.raises(UnetkitError, match="input has 3 channels"):
        tiled_forward_valid(net, torch.zeros(1, 3, 8, 8, 8), 8)
    with pytest.raises(UnetkitError, match=r"out_tile=\(4, 4\); give three whole numbers"):
        tiled_forward_valid(net, torch.zeros(1, 1, 8, 8, 8), (4, 4))


def test_plan_anisotropy_isotropic():
    assert plan_anisotropy((1, 1, 1), 4) == (((2, 2, 2),) * 3, ((3, 3, 3),) * 4)
    assert plan_anisotropy((0.7, 0.7, 0.7), 1) == ((), ((3, 3, 3),))


def test_plan_anisotropy_em_stack_50_4_4():
    # spacing (z, y, x) per level, min m: (50, 4, 4) m 4 -> (50, 8, 8) m 8 -> (50, 16, 16) m 16 -> (50, 32, 32) m 32,
    # where 50 <= 64 at last: z is pooled and convolved -> (100, 64, 64) m 64, 100 <= 128.
    pools, kernels = plan_anisotropy((50, 4, 4), 5)
    assert pools == ((1, 2, 2), (1, 2, 2), (1, 2, 2), (2, 2, 2))
    assert kernels == ((1, 3, 3), (1, 3, 3), (1, 3, 3), (3, 3, 3), (3, 3, 3))


def test_plan_anisotropy_3_1_1():
    # (3, 1, 1): 3 > 2 -> in-plane only -> (3, 2, 2): 3 <= 4 -> all axes -> (6, 4, 4) -> (12, 8, 8)
    assert plan_anisotropy((3, 1, 1), 4) == (((1, 2, 2), (2, 2, 2), (2, 2, 2)), ((1, 3, 3), (3, 3, 3), (3, 3, 3), (3, 3, 3)))
    # exactly twice the finest counts as fine
    assert plan_anisotropy((2, 1, 1), 2) == (((2, 2, 2),), ((3, 3, 3), (3, 3, 3)))


def test_plan_builds_a_network():
    pools, kernels = plan_anisotropy((50, 4, 4), 3)
    cfg = Model3DConfig(base_channels=2, depth=3, norm="none", pools=pools, kernels=kernels)
    assert context3d(cfg) == (0, 40, 40)  # z is never convolved at depth 3
    with torch.no_grad():
        assert UNet3D(cfg)(torch.zeros(1, 1, 3, 44, 44)).shape == (1, 2, 3, 4, 4)


@pytest.mark.parametrize("spacing", [(1, 1), (0, 1, 1), (1, -1, 1), (float("nan"), 1, 1), "111"])
def test_plan_anisotropy_refuses_bad_spacing(spacing):
    with pytest.raises(UnetkitError, match=r"three positive numbers \(z, y, x\)"):
        plan_anisotropy(spacing, 3)


def test_config_defaults_and_round_trip():
    assert Model3DConfig(depth=3).pools == ((2, 2, 2),) * 2 and Model3DConfig(depth=3).kernels == ((3, 3, 3),) * 3
    cfg = Model3DConfig(in_channels=2, num_classes=4, base_channels=2, padding="same", norm="instance", up_mode="trilinear",
                        dropout=0.25, **ANISO_A)  # fmt: skip
    d = json.loads(json.dumps(cfg.to_dict()))
    assert d["pools"] == [[1, 2, 2], [2, 2, 2]] and d["kernels"][0] == [1, 3, 3]
    assert Model3DConfig.from_dict(d) == cfg
    a, b = UNet3D(cfg).eval(), UNet3D(Model3DConfig.from_dict(d)).eval()
    b.load_state_dict(a.state_dict())
    x = torch.randn(1, 2, 4, 8, 8)
    assert torch.equal(a(x), b(x))


@pytest.mark.parametrize(
    "bad, match",
    [
        (dict(padding="full"), r"padding='full' is not a 3D U-Net setting; use one of 'valid', 'same'"),
        (dict(norm="group"), r"norm='group' .* use one of 'none', 'batch', 'instance'"),
        (dict(up_mode="bilinear"), r"up_mode='bilinear' .* 'transposed', 'trilinear'"),
        (dict(depth=0), r"depth=0 .* whole number >= 1"),
        (dict(base_channels=True), r"base_channels=True"),
        (dict(dropout=1.0), r"dropout=1.0 .* \[0, 1\)"),
        (dict(depth=3, pools=((2, 2, 2),)), r"pools has 1 levels but the depth needs depth - 1 = 2; .*plan_anisotropy"),
        (dict(depth=2, pools=((2, 3, 2),)), r"pools\[0\]=\(2, 3, 2\); each level is three whole numbers \(z, y, x\), each 1 or 2"),
        (dict(depth=2, kernels=((3, 3, 3), (5, 5, 5))), r"kernels\[1\]=\(5, 5, 5\); .* each 1 or 3"),
        (dict(depth=2, kernels=((3, 3), (3, 3))), r"kernels\[0\]=\(3, 3\)"),
    ],
)  # fmt: skip
def test_bad_config_refused_with_the_fix(bad, match):
    with pytest.raises(UnetkitError, match=match):
        Model3DConfig(**bad)


def test_from_dict_refuses_unknown_options():
    with pytest.raises(UnetkitError, match=r"unknown 3D U-Net option 'kernel'; did you mean 'kernels'\?"):
        Model3DConfig.from_dict({"depth": 2, "kernel": [[3, 3, 3], [3, 3, 3]]})


def test_parameter_count_by_hand():
    # in 1, classes 2, base 2, depth 2, no norm (convs have biases), 3x3x3 kernels, 2x2x2 pool, transposed:
    #   level 0:  conv 1->2: 1*2*27 + 2 = 56;   conv 2->2: 2*2*27 + 2 = 110   -> 166
    #   level 1:  conv 2->4: 2*4*27 + 4 = 220;  conv 4->4: 4*4*27 + 4 = 436   -> 656
    #   up:       up-conv 4->2, 2x2x2: 4*2*8 + 2 = 66; conv 4->2: 4*2*27 + 2 = 218; conv 2->2: 110 -> 394
    #   head:     1x1x1 conv 2->2: 2*2 + 2 = 6
    #   total 166 + 656 + 394 + 6 = 1222
    count = sum(p.numel() for p in UNet3D(base_channels=2, depth=2, norm="none").parameters())
    assert count == 1222
    # Level 0 at 1x3x3 (9 taps) pooled 1x2x2: level 0 becomes 1*2*9 + 2 + 2*2*9 + 2 = 58, the up-conv 4*2*4 + 2 = 34,
    # its convs 4*2*9 + 2 + 2*2*9 + 2 = 112: 58 + 656 + 34 + 112 + 6 = 866.
    aniso = UNet3D(base_channels=2, depth=2, norm="none", pools=((1, 2, 2),), kernels=((1, 3, 3), (3, 3, 3)))
    assert sum(p.numel() for p in aniso.parameters()) == 866
    # Batch norm drops the 2 + 2 + 4 + 4 + 2 + 2 = 16 conv biases and adds 2 per channel: 2 * 16 = 32 -> 1222 - 16 + 32.
    assert sum(p.numel() for p in UNet3D(base_channels=2, depth=2, norm="batch").parameters()) == 1238


def test_he_initialisation_std():
    torch.manual_seed(0)
    conv = UNet3D(base_channels=8, depth=2).down[1][0]  # 3x3x3 conv 8 -> 16, fan_in = 8 * 27
    assert conv.weight.std().item() == pytest.approx((2 / (8 * 27)) ** 0.5, rel=0.05)
    assert conv.bias is None  # batch norm follows
    head = UNet3D(base_channels=8, depth=2, norm="none").head
    assert head.bias.abs().max().item() == 0
