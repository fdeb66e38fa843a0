"""Streamed 3D overlap-tile prediction: the grid by hand, valid mode equal to one whole-volume pass, same mode equal
to an in-memory blend, weights that normalise, memory-mapped and zarr inputs and outputs, reads and the
accumulator bounded by one tile window and one z-slab."""

import itertools

import numpy as np
import pytest
import torch
from torch import nn

from unetkit.errors import UnetkitError
from unetkit.inference import volume_tiling
from unetkit.inference.predictor import standardize
from unetkit.inference.tiling import blend_window
from unetkit.inference.tta import softmax
from unetkit.inference.volume_tiling import ArrayWriter, SlabBlender, plan_tiles3d, predict_volume
from unetkit.models.unet3d import Model3DConfig, UNet3D, context3d, input_shape_for_output

SHAPE = (30, 41, 37)  # odd sizes: no tile grid divides them
NORM2 = {"mean": [300.0, 80.0], "std": [120.0, 30.0]}
NORM1 = {"mean": [300.0], "std": [120.0]}
ANISO = dict(pools=((1, 2, 2),), kernels=((1, 3, 3), (3, 3, 3)))  # z neither pooled nor convolved at level 0


def make_net(padding: str, in_channels: int = 2, num_classes: int = 3, **levels) -> UNet3D:
    """A tiny 3D U-Net (base 2, depth 2) with non-trivial batch-norm statistics, in eval mode."""
    torch.manual_seed(0)
    net = UNet3D(Model3DConfig(in_channels=in_channels, num_classes=num_classes, base_channels=2, depth=2,
                               padding=padding, norm="batch", **levels))  # fmt: skip
    for m in net.modules():
        if isinstance(m, nn.BatchNorm3d):
            m.running_mean.uniform_(-0.5, 0.5), m.running_var.uniform_(0.5, 2.0)
            nn.init.uniform_(m.weight, 0.5, 1.5), nn.init.uniform_(m.bias, -0.2, 0.2)
    return net.eval()


def volume(shape=SHAPE, channels: int = 2, seed: int = 0) -> np.ndarray:
    """(Z, Y, X, C) uint16 voxels around the NORM statistics."""
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(*shape, channels)) * 100 + 300).clip(0, 4000).astype(np.uint16)


def memmapped(tmp_path, array: np.ndarray):
    np.save(tmp_path / "volume.npy", array)
    return np.load(tmp_path / "volume.npy", mmap_mode="r")


def standardized(vol: np.ndarray, norm: dict) -> np.ndarray:
    """(Z, Y, X, C) -> (C, Z, Y, X) float32, the arithmetic of prediction."""
    return standardize(vol.transpose(3, 0, 1, 2), norm["mean"], norm["std"], axis=0)


# --- the grid ----------------------------------------------------------------------------------------


def test_valid_plan_by_hand_abuts_on_the_pooling_grid():
    cfg = Model3DConfig(depth=2)  # context 16, pooling 2
    plan = plan_tiles3d(SHAPE, cfg, (6, 8, 10))
    assert plan.counts == (5, 6, 4) and plan.tile_in == (22, 24, 26) and plan.tile_out == (6, 8, 10)
    assert [a.pad_before for a in plan.axes] == [8, 8, 8]
    assert plan.input_box((0, 0, 0)) == ((-8, 14), (-8, 16), (-8, 18))
    assert plan.input_box((4, 5, 3)) == ((16, 38), (32, 56), (22, 48))
    assert plan.output_box((4, 5, 3)) == ((slice(24, 30), slice(40, 41), slice(30, 37)), (slice(0, 6), slice(0, 1), slice(0, 7)))
    # 7 rounds down to the pooling grid; a tile larger than the volume shrinks to the volume rounded up.
    assert [a.step for a in plan_tiles3d(SHAPE, cfg, 7).axes] == [6, 6, 6]
    assert plan_tiles3d(SHAPE, cfg, 64).counts == (1, 1, 1) and plan_tiles3d(SHAPE, cfg, 64).tile_in == (46, 58, 54)
    covered = np.zeros(SHAPE, int)
    for tile in plan.tiles:
        covered[plan.output_box(tile)[0]] += 1
    assert (covered == 1).all()


def test_same_plan_by_hand_overlaps_half_a_tile():
    plan = plan_tiles3d(SHAPE, Model3DConfig(depth=2, padding="same"), 16)
    z, y, x = plan.axes
    assert (z.tile_in, z.step, z.pad_before, z.out_offset, z.starts) == (16, 8, 4, 4, (0, 8, 16, 24))
    assert (len(y.starts), y.stitched_length, len(x.starts), x.stitched_length) == (6, 56, 5, 48)
    assert plan.input_box((0, 0, 0)) == ((-4, 12), (-4, 12), (-4, 12))
    assert plan_tiles3d(SHAPE, Model3DConfig(depth=2, padding="same"), 16, overlap=0.25).axes[0].step == 12
    assert plan_tiles3d((5, 41, 37), Model3DConfig(depth=2, padding="same"), 16).axes[0].starts == (0,)  # 5 -> one tile of 6


def test_plan_refuses_bad_sizes():
    cfg = Model3DConfig(depth=2)
    with pytest.raises(UnetkitError, match=r"out_tile=\(4, 4\); give three whole numbers"):
        plan_tiles3d(SHAPE, cfg, (4, 4))
    with pytest.raises(UnetkitError, match=r"overlap=1.0; .*\[0, 1\)"):
        plan_tiles3d(SHAPE, cfg, 8, overlap=1.0)


# --- valid mode: tiled = whole ------------------------------------------------------------------------


def whole_pass(net: UNet3D, vol: np.ndarray, norm: dict) -> np.ndarray:
    """(K, Z, Y, X) probabilities of one pass over the whole volume mirrored by the context (to a valid size)."""
    cfg, x = net.config, standardized(vol, norm)
    full = input_shape_for_output(cfg, SHAPE)
    pads = [(0, 0)] + [(c // 2, f - n - c // 2) for n, c, f in zip(SHAPE, context3d(cfg), full)]
    with torch.no_grad():
        logits = net(torch.from_numpy(np.pad(x, pads, mode="reflect"))[None])[0].numpy()
    return softmax(logits[:, : SHAPE[0], : SHAPE[1], : SHAPE[2]], axis=0)


@pytest.mark.parametrize(
    "levels, out_tile, batch",
    [
        ({}, (6, 8, 10), 1),  # 5 x 6 x 4 tiles, the last ones cropped
        ({}, 7, 3),  # rounded down to 6: no tile divides the volume; batches cross z-slabs
        ({}, (11, 64, 13), 2),  # one tile along y
        (ANISO, (5, 12, 9), 4),  # z not pooled: steps of 5 along z
        ({}, 64, 1),  # one tile holds the volume
    ],
)  # fmt: skip
def test_valid_streaming_equals_one_whole_volume_pass(tmp_path, levels, out_tile, batch):
    net, vol = make_net("valid", **levels), volume()
    source = memmapped(tmp_path, vol)
    writer = ArrayWriter.create(tmp_path / "labels.npy", SHAPE, 3, tmp_path / "probs.npy")
    predict_volume(net, source, net.config, out_tile, NORM2, writer, batch=batch)
    writer.flush()
    expected = whole_pass(net, vol, NORM2)  # (K, Z, Y, X)
    probs, labels = np.load(tmp_path / "probs.npy"), np.load(tmp_path / "labels.npy")
    assert probs.shape == (*SHAPE, 3) and labels.dtype == np.uint8
    np.testing.assert_allclose(probs, expected.transpose(1, 2, 3, 0), atol=1e-5, rtol=1e-5)
    assert (labels == probs.argmax(-1)).all()


def test_valid_identity_tile_function_puts_every_voxel_in_place():
    """A tile function that returns its input's centre (the context cropped) gives back the volume itself."""
    cfg = Model3DConfig(in_channels=2, num_classes=2, depth=2)
    half = context3d(cfg)[0] // 2

    def centre(x):  # (B, C, 16 + t) -> (B, C, t)
        return x[:, :, half:-half, half:-half, half:-half]

    vol = volume()
    writer = ArrayWriter.in_memory(SHAPE, 2)
    predict_volume(centre, vol, cfg, (6, 8, 10), NORM2, writer, batch=5, logits=False)
    np.testing.assert_array_equal(writer.probabilities, standardized(vol, NORM2).transpose(1, 2, 3, 0))


# --- same mode: blended ------------------------------------------------------------------------------


def reference_blend(net: UNet3D, vol: np.ndarray, norm: dict, out_tile, overlap: float) -> np.ndarray:
    """The same-mode result computed in memory: the mirrored volume, every tile, 3D weight sums. (K, Z, Y, X)."""
    plan = plan_tiles3d(SHAPE, net.config, out_tile, overlap)
    padded = np.pad(standardized(vol, norm), [(0, 0)] + [(a.pad_before, a.pad_after) for a in plan.axes], mode="reflect")
    acc = np.zeros((net.config.num_classes, *padded.shape[1:]), np.float64)
    weight = np.zeros(padded.shape[1:], np.float64)
    wz, wy, wx = (blend_window(a.tile_in, a.tile_in - a.step).astype(np.float64) for a in plan.axes)
    window = np.einsum("i,j,k->ijk", wz, wy, wx)
    for index in itertools.product(*(range(len(a.starts)) for a in plan.axes)):
        box = tuple(slice(a.starts[i], a.starts[i] + a.tile_in) for a, i in zip(plan.axes, index))
        with torch.no_grad():
            logits = net(torch.from_numpy(np.ascontiguousarray(padded[(slice(None), *box)]))[None])[0].numpy()
        acc[(slice(None), *box)] += softmax(logits, axis=0) * window
        weight[box] += window
    crop = tuple(slice(a.out_offset, a.out_offset + a.length) for a in plan.axes)
    return (acc / weight)[(slice(None), *crop)]


@pytest.mark.parametrize("out_tile, overlap, batch", [(16, 0.5, 1), ((12, 16, 20), 0.25, 3), ((8, 64, 16), 0.75, 2)])
def test_same_streaming_equals_an_in_memory_blend(tmp_path, out_tile, overlap, batch):
    net, vol = make_net("same"), volume()
    source = memmapped(tmp_path, vol)
    writer = ArrayWriter.create(tmp_path / "labels.npy", SHAPE, 3, tmp_path / "probs.npy")
    predict_volume(net, source, net.config, out_tile, NORM2, writer, overlap=overlap, batch=batch)
    writer.flush()
    expected = reference_blend(net, vol, NORM2, out_tile, overlap).transpose(1, 2, 3, 0)  # (Z, Y, X, K)
    probs = np.load(tmp_path / "probs.npy")
    np.testing.assert_allclose(probs, expected, atol=1e-5, rtol=1e-5)
    assert (np.load(tmp_path / "labels.npy") == probs.argmax(-1)).all()


@pytest.mark.parametrize("out_tile, overlap", [(16, 0.5), ((8, 12, 16), 0.25), ((6, 64, 10), 0.75), (64, 0.5)])
def test_same_weights_normalise(out_tile, overlap):
    """A constant tile function gives the constant, and an identity one the volume, everywhere."""
    cfg = Model3DConfig(in_channels=2, num_classes=2, depth=2, padding="same")
    const = np.array([0.25, 0.75], np.float32)
    writer = ArrayWriter.in_memory(SHAPE, 2)
    predict_volume(lambda x: np.broadcast_to(const[None, :, None, None, None], x.shape), volume(), cfg, out_tile, NORM2,
                   writer, overlap=overlap, logits=False)  # fmt: skip
    np.testing.assert_allclose(writer.probabilities, np.broadcast_to(const, (*SHAPE, 2)), atol=1e-6)
    vol = volume(seed=1)
    writer = ArrayWriter.in_memory(SHAPE, 2)
    predict_volume(lambda x: x, vol, cfg, out_tile, NORM2, writer, overlap=overlap, logits=False)
    np.testing.assert_allclose(writer.probabilities, standardized(vol, NORM2).transpose(1, 2, 3, 0), atol=1e-5, rtol=1e-5)


# --- memory ------------------------------------------------------------------------------------------


class CountingSource:
    """A source that records the shape of every read."""

    def __init__(self, array):
        self.array, self.shape, self.reads = array, array.shape, []

    def __getitem__(self, key):
        block = np.asarray(self.array[key])
        self.reads.append(block.shape)
        return block


class RecordingWriter:
    """A writer that counts the writes of each voxel and records each region's shape."""

    def __init__(self, shape):
        self.count, self.regions = np.zeros(shape, np.int32), []

    def write(self, box, probs):
        self.count[box] += 1
        self.regions.append(probs.shape)


@pytest.mark.parametrize("padding", ["valid", "same"])
def test_reads_and_held_outputs_are_bounded_by_a_tile_and_a_slab(tmp_path, monkeypatch, padding):
    cfg = Model3DConfig(in_channels=1, num_classes=2, depth=2, padding=padding)
    held = []

    class RecordingBlender(SlabBlender):
        def add(self, tile, probs):
            held.append((id(self.acc), self.acc.shape))
            return super().add(tile, probs)

    monkeypatch.setattr(volume_tiling, "SlabBlender", RecordingBlender)
    half = context3d(cfg)[0] // 2

    def forward(x):  # (B, 1, z, y, x) -> (B, 2, z', y', x'): cheap, of the network's output size
        x = x[:, :, half:-half, half:-half, half:-half] if half else x
        return np.concatenate([x, -x], axis=1)

    source, writer = CountingSource(memmapped(tmp_path, volume((40, 41, 37), channels=1))), RecordingWriter((40, 41, 37))
    plan = predict_volume(forward, source, cfg, 6, NORM1, writer, batch=4)
    assert len(source.reads) == len(plan.tiles) > 100  # one read per tile
    assert all(len(r) == 4 and all(n <= t for n, t in zip(r, plan.tile_in)) for r in source.reads)
    assert (writer.count == 1).all()  # every voxel written once
    if padding == "valid":
        steps = [a.step for a in plan.axes]
        assert not held and all(all(n <= s for n, s in zip(r[1:], steps)) for r in writer.regions)  # one tile's output each
        return
    z, y, x = plan.axes
    assert z.tile_in < 40 and {h for _, h in held} == {(2, z.tile_in, y.stitched_length, x.stitched_length)}
    assert len({i for i, _ in held}) == 1  # one accumulator, never re-allocated
    # One region per z-slab (the first lies in the mirrored margin), a step thick; the last reaches the volume's end.
    assert len(writer.regions) == len(z.starts) - 1 and all(r[2:] == (41, 37) for r in writer.regions)
    assert all(r[1] <= z.step for r in writer.regions[:-1]) and writer.regions[-1][1] < z.tile_in


# --- files and errors --------------------------------------------------------------------------------


def test_zarr_source_and_outputs_match_the_in_memory_result(tmp_path):
    zarr = pytest.importorskip("zarr")
    net, vol = make_net("same", in_channels=1, num_classes=2), volume(channels=1)
    source = zarr.create_array(store=str(tmp_path / "in.zarr"), shape=SHAPE, chunks=(8, 16, 16), dtype=vol.dtype)
    source[:] = vol[..., 0]  # (Z, Y, X): one channel without a channel axis
    writer = ArrayWriter.create(tmp_path / "labels.zarr", SHAPE, 2, tmp_path / "probs.zarr")
    predict_volume(net, source, net.config, 16, NORM1, writer, batch=2)
    expected = ArrayWriter.in_memory(SHAPE, 2)
    predict_volume(net, vol, net.config, 16, NORM1, expected, batch=2)
    reopened = zarr.open_array(str(tmp_path / "probs.zarr"), mode="r")
    np.testing.assert_array_equal(reopened[:], expected.probabilities)
    np.testing.assert_array_equal(zarr.open_array(str(tmp_path / "labels.zarr"), mode="r")[:], expected.labels)


def test_bad_inputs_are_refused_with_the_fix(tmp_path):
    cfg = Model3DConfig(in_channels=2, num_classes=2, depth=2, padding="same")
    writer = ArrayWriter.in_memory(SHAPE, 2)
    with pytest.raises(UnetkitError, match=r"source has shape \(30, 41, 37, 1\); .*\(Z, Y, X, 2\)"):
        predict_volume(lambda x: x, volume(channels=1), cfg, 16, NORM2, writer)
    with pytest.raises(UnetkitError, match=r"norm=.*2 finite value"):
        predict_volume(lambda x: x, volume(), cfg, 16, NORM1, writer)
    with pytest.raises(UnetkitError, match=r"returned shape \(1, 3, 16, 16, 16\) .*expected \(1, 2, 16, 16, 16\)"):
        predict_volume(lambda x: np.zeros((1, 3, 16, 16, 16)), volume(), cfg, 16, NORM2, writer)
    with pytest.raises(UnetkitError, match="NaN or infinite values for the tile at z 0, y 0, x 0"):
        predict_volume(lambda x: x * np.nan, volume(), cfg, 16, NORM2, writer)
    with pytest.raises(UnetkitError, match=r"out\.tif: volume outputs are \.npy or \.zarr"):
        ArrayWriter.create(tmp_path / "out.tif", SHAPE, 2)
