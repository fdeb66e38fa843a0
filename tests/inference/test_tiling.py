"""Overlap-tile geometry and the seamless-by-construction guarantee."""

import numpy as np
import pytest
import torch

from unetkit.inference.predictor import tiled_logits
from unetkit.inference.tiling import blend_window, mirror_pad, plan_axis
from unetkit.models.config import context, input_size_for_output, is_valid_input_size, stride
from unetkit.models.unet import UNet


@pytest.mark.parametrize("padding", ["valid", "same"])
@pytest.mark.parametrize("depth", [1, 3, 5])
@pytest.mark.parametrize("tile", [64, 200, 572])
def test_plans_cover_the_axis_with_aligned_valid_tiles(padding, depth, tile):
    s = stride(depth)
    for length in list(range(1, 120)) + [387, 388, 389, 1000, 4097]:
        p = plan_axis(length, tile, depth, padding)
        assert is_valid_input_size(p.tile_in, depth, padding)
        assert p.tile_out == p.tile_in - context(depth, padding)
        assert all(start % s == 0 for start in p.starts), "tiles must start on the stride grid"
        assert p.step % s == 0 and p.step > 0
        assert p.out_offset + length <= p.stitched_length  # the image is covered
        assert p.padded_length == p.starts[-1] + p.tile_in  # every tile lies inside the padded image
        # never larger than asked, unless the smallest tile with one stride of output is larger
        assert p.tile_in <= max(tile, input_size_for_output(s, depth, padding))


def test_plan_shrinks_tiles_for_small_images():
    p = plan_axis(100, 572, 5, "valid")
    assert (p.tile_in, p.tile_out, p.starts) == (284, 100, (0,))
    p = plan_axis(1, 572, 5, "valid")
    assert p.starts == (0,) and p.tile_out >= 16


def test_mirror_pad_reflects_and_repeats():
    a = np.arange(3, dtype=np.float32)[None, None, :]  # (1, 1, 3)
    assert mirror_pad(a, (0, 0), (2, 5)).ravel().tolist() == [2, 1, 0, 1, 2, 1, 0, 1, 2, 1]
    one = np.ones((1, 1, 1))
    assert mirror_pad(one, (2, 2), (1, 1)).shape == (1, 5, 3)


def test_blend_window():
    w = blend_window(12, 4)
    assert w.shape == (12,) and np.all(w[4:8] == 1) and 0 < w[0] < w[1] < 1
    assert np.allclose(w, w[::-1])
    # neighbours stepping by size - overlap sum to one over the shared pixels
    np.testing.assert_allclose(w[8:] + w[:4], 1.0, atol=1e-6)


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("depth,tile", [(3, 60), (4, 120), (5, 204)])
def test_valid_tiling_equals_whole_image_pass(depth, tile, channels_last):
    """Seamless by construction: many tiles == one forward pass over the whole mirrored image."""
    torch.manual_seed(0)
    net = UNet(in_channels=2, num_classes=3, base_channels=4, depth=depth).eval()
    h, w = 150, 97  # non-square, larger than one tile, not aligned to anything
    image = np.random.default_rng(0).normal(size=(2, h, w)).astype(np.float32)
    if channels_last:  # the layout prediction uses on CPU; the whole pass below stays plain NCHW
        net_cl = UNet(net.config).eval()
        net_cl.load_state_dict(net.state_dict())
        tiled = tiled_logits(net_cl.to(memory_format=torch.channels_last), image, tile=tile, batch_size=3, channels_last=True)
    else:
        tiled = tiled_logits(net, image, tile=tile, batch_size=3)
    rows = plan_axis(h, tile, depth, "valid")
    assert len(rows.starts) > 2, "the test must actually cut the image into several tiles"
    # whole image: mirrored by half the context before, and enough after to make a valid size
    ctx = context(depth, "valid")
    pads = []
    for n in (h, w):
        size = n + ctx
        while not is_valid_input_size(size, depth, "valid"):
            size += 1
        pads.append((ctx // 2, size - n - ctx // 2))
    with torch.no_grad():
        whole = net(torch.from_numpy(mirror_pad(image, *pads))[None])[0].numpy()[:, :h, :w]
    assert tiled.shape == (3, h, w)
    np.testing.assert_allclose(tiled, whole, atol=1e-4, rtol=0)


def test_same_mode_single_tile_equals_forward():
    torch.manual_seed(0)
    net = UNet(in_channels=1, num_classes=2, base_channels=4, depth=3, padding="same").eval()
    image = np.random.default_rng(1).normal(size=(1, 64, 48)).astype(np.float32)
    with torch.no_grad():
        ref = net(torch.from_numpy(image)[None])[0].numpy()
    np.testing.assert_allclose(tiled_logits(net, image, tile=64), ref, atol=1e-5)


def test_same_mode_blending_hides_tile_edges():
    """A shallow net (5x5 receptive field): blended overlapping tiles nearly match one whole pass,
    while the zero padding at tile edges would show without the blend window."""
    torch.manual_seed(0)
    net = UNet(in_channels=1, num_classes=2, base_channels=4, depth=1, padding="same").eval()
    image = np.random.default_rng(1).normal(size=(1, 96, 80)).astype(np.float32)
    with torch.no_grad():
        ref = net(torch.from_numpy(image)[None])[0].numpy()
    many = tiled_logits(net, image, tile=32)
    # the image's own 2-pixel border differs: zero padding (whole pass) versus mirroring (tiles)
    err = np.abs(many - ref)[:, 2:-2, 2:-2]
    # and without blending, the zero-padded tile edges would leave visible seams
    naive = np.zeros_like(ref)
    for r in range(0, 96, 32):
        for c in range(0, 80, 16):
            with torch.no_grad():
                naive[:, r : r + 32, c : c + 16] = net(torch.from_numpy(image[:, r : r + 32, c : c + 16])[None])[0].numpy()
    assert np.abs(naive - ref)[:, 2:-2, 2:-2].max() > 10 * err.max()


@pytest.mark.parametrize("padding", ["valid", "same"])
@pytest.mark.parametrize("hw", [(1, 1), (3, 5), (17, 2)])
def test_images_smaller_than_a_tile(padding, hw):
    net = UNet(base_channels=2, depth=3, padding=padding).eval()
    out = tiled_logits(net, np.zeros((1, *hw), np.float32), tile=128)
    assert out.shape == (2, *hw) and np.isfinite(out).all()


def test_segmenter_normalises_tile_batches_exactly_like_the_whole_image():
    """The native-dtype image is normalised a batch at a time; the logits must not change by a bit."""
    from unetkit.inference.options import InferenceOptions
    from unetkit.inference.predictor import Segmenter, TorchForward, normalize

    torch.manual_seed(0)
    net = UNet(in_channels=2, num_classes=3, base_channels=4, depth=3)
    meta = {"classes": ["a", "b", "c"], "colors": [[0, 0, 0]] * 3, "normalization": {"mean": [1000.0, 7.5], "std": [300.0, 2.0]}}
    image = np.random.default_rng(0).integers(0, 4000, (75, 130, 2)).astype(np.uint16)
    seg = Segmenter(TorchForward(net), meta, InferenceOptions(tile=64, batch_size=3))
    whole = tiled_logits(net, normalize(image, [1000.0, 7.5], [300.0, 2.0]), tile=64, batch_size=3)
    np.testing.assert_array_equal(seg.logits(image), whole)
