"""Tests of unetkit.data.sampler3d: exact and deformed concentric crops, mirrored windows, rare-class centres,
reproducible batches (with workers through the 2D batch iterator), memory-mapped and packed inputs."""

import dataclasses

import numpy as np
import pytest
import torch
from scipy import ndimage

from unetkit.data.dataset import IGNORE, pack_labels
from unetkit.data.sampler import batch_iterator, class_centres, rare_class_centres
from unetkit.data.sampler3d import (
    Augmentation3D,
    VolumePatchSampler,
    elastic_field3d,
    mirrored_window3d,
    padded_window3d,
    resolve_augment3d,
    spatial_map3d,
)
from unetkit.errors import UnetkitError

SHAPE = (12, 20, 24)
PATCH = (6, 8, 10)  # distinct sizes: a rotation must read a window of permuted extents
GEOMETRY = Augmentation3D(flip_rotate=True, isotropic_axes=(0, 1, 2), rotate_degrees=20, scale_range=(0.9, 1.1), elastic_sigma=3)


def _data(n: int = 2, seed: int = 0):
    """Volumes whose first channel shows the labels (blocks of 0/1/2), masks, and weights = 1 + mask."""
    rng = np.random.default_rng(seed)
    masks = [np.kron(rng.choice(3, size=(3, 4, 4), p=[0.6, 0.3, 0.1]), np.ones((4, 5, 6), np.int64)) for _ in range(n)]
    images = [np.stack([m.astype(np.float32), rng.normal(size=m.shape).astype(np.float32)], axis=-1) for m in masks]
    weights = [1.0 + m.astype(np.float32) for m in masks]
    return images, masks, weights  # (Z, Y, X, C), (Z, Y, X), (Z, Y, X)


def _centre(x: np.ndarray, context) -> np.ndarray:
    """The first channel of image crops (N, C, Z, Y, X) under the mask crop."""
    return x[(slice(None), 0) + tuple(slice(c // 2, c // 2 + p) for c, p in zip(context, PATCH))]


@pytest.mark.parametrize("augment", ["none", "light", "strong"])
@pytest.mark.parametrize("context", [(0, 0, 0), (4, 8, 8), (3, 5, 7)])
def test_shapes_dtypes_and_weight_crops(augment, context):
    images, masks, weights = _data()
    x, y, w = VolumePatchSampler(images, masks, PATCH, context, augment, seed=1, weights=weights).batch(3, 0)
    assert x.shape == (3, 2) + tuple(p + c for p, c in zip(PATCH, context)) and x.dtype == np.float32
    assert y.shape == (3,) + PATCH and y.dtype == np.int64
    assert w.shape == (3,) + PATCH and w.dtype == np.float32
    labelled = y != IGNORE
    if augment == "strong":  # weights linear, masks nearest: they agree away from block edges
        assert np.mean(np.abs(w[labelled] - (1.0 + y[labelled])) < 0.5) > 0.9
    else:
        np.testing.assert_array_equal(w[labelled], 1.0 + y[labelled])


def test_none_reads_the_exact_window():
    volume = np.arange(np.prod(SHAPE), dtype=np.float32).reshape(SHAPE)
    sampler = VolumePatchSampler([volume[..., None]], [np.zeros(SHAPE, np.int64)], PATCH, (0, 0, 0), "none", seed=0)
    for crop in sampler.batch(4, 0)[0][:, 0]:
        z, y, x = np.unravel_index(int(crop[0, 0, 0]), SHAPE)
        np.testing.assert_array_equal(crop, volume[z : z + PATCH[0], y : y + PATCH[1], x : x + PATCH[2]])


@pytest.mark.parametrize("augment", ["none", resolve_augment3d("light", isotropic_axes=(0, 1, 2))])
@pytest.mark.parametrize("context", [(4, 8, 8), (3, 5, 7)])
def test_flips_and_rotations_keep_the_exact_alignment(augment, context):
    images, masks, _ = _data()
    x, y, _ = VolumePatchSampler(images, masks, PATCH, context, augment, seed=2).batch(12, 0)
    np.testing.assert_array_equal(_centre(x, context), y)


def test_deformation_keeps_alignment_away_from_label_edges():
    images, masks, _ = _data()
    context = (4, 8, 8)
    x, y, _ = VolumePatchSampler(images, masks, PATCH, context, GEOMETRY, seed=3).batch(16, 1)
    assert not np.array_equal(_centre(x, context), y)  # the crops are deformed
    # Voxels whose 3x3x3 neighbourhood in the mask crop holds one label: away from block edges and the border.
    inner = (y != IGNORE) & (ndimage.minimum_filter(y, size=(1, 3, 3, 3)) == ndimage.maximum_filter(y, size=(1, 3, 3, 3)))
    assert inner.sum() > 400 and np.mean(np.abs(_centre(x, context)[inner] - y[inner]) < 0.5) > 0.9


def test_spatial_map_is_the_identity_without_transforms_and_elastic_is_smooth():
    rng = np.random.default_rng(0)
    positions = spatial_map3d((3, 4, 5), Augmentation3D(), rng)
    np.testing.assert_array_equal(positions, np.indices((3, 4, 5)))
    field = elastic_field3d((8, 12, 16), 3.0, 3, rng)
    assert field.shape == (3, 8, 12, 16) and field.dtype == np.float32
    assert 0.5 < field.std() < 6 and np.abs(np.diff(field, axis=3)).max() < 3  # displaced, but smoothly


@pytest.mark.parametrize("augment", ["light", "strong"])
def test_batches_are_reproducible_by_index_and_seed(augment):
    images, masks, weights = _data()
    a = VolumePatchSampler(images, masks, PATCH, (4, 4, 4), augment, seed=7, weights=weights, foreground_fraction=0.5)
    b = VolumePatchSampler(images, masks, PATCH, (4, 4, 4), augment, seed=7, weights=weights, foreground_fraction=0.5)
    for first, second in zip(a.batch(3, 4), b.batch(3, 4)):
        np.testing.assert_array_equal(first, second)
    assert not np.array_equal(a.batch(3, 4)[0], a.batch(3, 5)[0])
    other = VolumePatchSampler(images, masks, PATCH, (4, 4, 4), augment, seed=8, weights=weights, foreground_fraction=0.5)
    assert not np.array_equal(a.batch(3, 4)[0], other.batch(3, 4)[0])


def test_the_2d_batch_iterator_gives_the_same_batches_with_workers():
    images, masks, weights = _data()
    sampler = VolumePatchSampler(images, masks, PATCH, (4, 4, 4), "strong", seed=3, weights=weights)
    inline = batch_iterator(sampler, 2, start=5, workers=0)
    parallel = batch_iterator(sampler, 2, start=5, workers=2)
    for _ in range(3):
        first, second = next(inline), next(parallel)
        assert all(isinstance(t, torch.Tensor) for t in first + second)
        assert first[0].shape == (2, 2, 10, 12, 14)
        for a, b in zip(first, second):
            assert torch.equal(a, b)
    del parallel


@pytest.mark.parametrize("augment", ["none", "light", "strong"])
def test_small_volumes_are_padded_with_ignore_and_mirrored(augment):
    image = np.ones((5, 10, 12, 1), np.float32)
    mask = np.ones((5, 10, 12), np.int64)
    x, y, _ = VolumePatchSampler([image], [mask], (8, 16, 16), (2, 4, 4), augment, seed=0).batch(2, 0)
    assert x.shape == (2, 1, 10, 20, 20) and y.shape == (2, 8, 16, 16)
    assert (y == IGNORE).any() and set(np.unique(y)) <= {IGNORE, 1}
    if augment != "strong":  # the image is mirrored everywhere; the mask holds each labelled voxel once
        assert (y == 1).sum() == 2 * 5 * 10 * 12 and np.all(x == 1.0)


def test_foreground_fraction_centres_patches_on_a_single_voxel():
    masks = [np.zeros(SHAPE, np.int64), np.zeros((10, 16, 16), np.int64)]
    masks[0][6, 10, 12] = 1
    masks[1][0:2, 14:16, 0:2] = 2  # in a corner: the patch is shifted inside, not centred
    images = [m[..., None].astype(np.float32) for m in masks]
    sampler = VolumePatchSampler(images, masks, PATCH, (0, 0, 0), "none", seed=0, foreground_fraction=1.0)
    y = np.concatenate([sampler.batch(4, i)[1] for i in range(10)])
    assert all((patch > 0).any() for patch in y)
    assert (y[:, 3, 4, 5] == 1).sum() > 5  # class 1 is centred exactly (far from borders)
    assert (y == 2).any(axis=(1, 2, 3)).sum() > 5  # class 2 is chosen as often as class 1
    uniform = VolumePatchSampler(images, masks, PATCH, (0, 0, 0), "none", seed=0)
    assert (np.concatenate([uniform.batch(4, i)[1] for i in range(10)]) > 0).any(axis=(1, 2, 3)).sum() < 15


def test_class_centres3d_and_the_rare_class_cap():
    mask = np.full((2, 3, 4), IGNORE)
    mask[0, 0, 1], mask[1, 2, 3] = 0, 2
    assert class_centres(mask).tolist() == [[0, 0, 0, 1], [2, 1, 2, 3]]
    assert class_centres(np.full((2, 2, 2), 255, np.uint8)).shape == (0, 4)
    big = class_centres(np.zeros((20, 20, 20), np.uint8))
    assert big.shape == (4096, 4) and big.dtype == np.int32 and big[-1].tolist() == [0, 19, 19, 19]
    masks = [mask, np.zeros((2, 2, 2), np.int64)]
    rare = rare_class_centres(masks, [class_centres(m) for m in masks])
    assert [r.tolist() for r in rare] == [[[0, 1, 2, 3]]]  # (volume, z, y, x) of class 2; 0 is the most frequent


def test_memory_mapped_volumes_give_the_same_patches(tmp_path):
    images, masks, weights = _data()
    packed = [pack_labels(m) for m in masks]
    opened = {}
    for name, arrays in (("image", images), ("mask", packed), ("weight", weights)):
        for i, a in enumerate(arrays):
            np.save(tmp_path / f"{name}{i}.npy", a)
        opened[name] = [np.load(tmp_path / f"{name}{i}.npy", mmap_mode="r") for i in range(len(arrays))]
    assert isinstance(opened["image"][0], np.memmap)
    for augment in ("light", "strong"):
        kwargs = {"patch": PATCH, "context": (3, 5, 7), "augment": augment, "seed": 5, "foreground_fraction": 0.3}
        in_memory = VolumePatchSampler(images, masks, weights=weights, **kwargs).batch(4, 2)
        mapped = VolumePatchSampler(opened["image"], opened["mask"], weights=opened["weight"], **kwargs).batch(4, 2)
        for a, b in zip(in_memory, mapped):
            np.testing.assert_array_equal(a, b)


def test_packed_masks_decode_255_to_ignore():
    mask = np.ones(SHAPE, np.uint8)
    mask[:4] = 255
    image = np.zeros(SHAPE + (1,), np.float32)
    _, y, _ = VolumePatchSampler([image], [mask], SHAPE, (0, 0, 0), "none", seed=0).batch(1, 0)
    assert (y[0, :4] == IGNORE).all() and (y[0, 4:] == 1).all()


@pytest.mark.parametrize("augment", [Augmentation3D(flip_rotate=True), Augmentation3D(rotate_degrees=40.0)])
def test_rotations_stay_in_the_isotropic_plane(augment):
    coordinates = np.indices(SHAPE).transpose(1, 2, 3, 0).astype(np.float32)  # (Z, Y, X, 3): z, y, x of each voxel
    sampler = VolumePatchSampler([coordinates], [np.zeros(SHAPE, np.int64)], (6, 8, 8), (2, 2, 2), augment, seed=0)
    x = np.concatenate([sampler.batch(8, i)[0] for i in range(3)])
    z = x[:, 0]  # source z of every voxel of each crop
    assert (np.diff(z, axis=2) == 0).all() and (np.diff(z, axis=3) == 0).all()  # z never mixes with y or x
    assert (np.abs(np.diff(z, axis=1)) == 1).all()
    mixed = [np.abs(np.diff(crop[1], axis=2)).max() > 0.1 for crop in x]  # y varies along x: the plane turned
    assert any(mixed)


def test_isotropic_data_rotates_in_every_plane():
    coordinates = np.indices((12, 12, 12)).transpose(1, 2, 3, 0).astype(np.float32)
    augment = resolve_augment3d("light", isotropic_axes=(0, 1, 2))
    sampler = VolumePatchSampler([coordinates], [np.zeros((12, 12, 12), np.int64)], (6, 6, 6), (0, 0, 0), augment, seed=0)
    z = sampler.batch(16, 0)[0][:, 0]
    assert any(np.diff(crop, axis=0).max() == 0 for crop in z)  # z came from another axis at least once


def test_windows_mirror_and_pad_like_numpy():
    array = np.arange(3 * 4 * 5).reshape(3, 4, 5)
    padded = np.pad(array, 7, mode="reflect")
    for start, stop in (((0, 1, 2), (3, 4, 5)), ((-2, -7, 3), (5, 2, 12)), ((-1, 0, -3), (1, 6, 1))):
        expected = padded[tuple(slice(a + 7, b + 7) for a, b in zip(start, stop))]
        np.testing.assert_array_equal(mirrored_window3d(array, start, stop), expected)
    window = padded_window3d(array, (-1, 2, 3), (2, 6, 7), fill=-9)
    assert window.shape == (3, 4, 4) and (window[0] == -9).all() and (window[:, 2:] == -9).all()
    np.testing.assert_array_equal(window[1:, :2, :2], array[:2, 2:, 3:])


def test_bad_options_and_shapes_are_refused():
    images, masks, _ = _data(1)
    with pytest.raises(UnetkitError, match="isotropic_axes"):
        Augmentation3D(isotropic_axes=(1,))
    with pytest.raises(UnetkitError, match="not one of none, light, strong"):
        resolve_augment3d("paper")
    with pytest.raises(UnetkitError, match="unknown 3D augmentation option"):
        resolve_augment3d("light", hflip=True)
    with pytest.raises(UnetkitError, match="patch=.*three sizes"):
        VolumePatchSampler(images, masks, 8, (0, 0, 0), "none", seed=0)
    with pytest.raises(UnetkitError, match="expected \\(Z, Y, X, C\\)"):
        VolumePatchSampler(images, [masks[0][:-1]], PATCH, (0, 0, 0), "none", seed=0)
    with pytest.raises(UnetkitError, match="one mean and std per channel"):
        VolumePatchSampler(images, masks, PATCH, (0, 0, 0), "none", seed=0, norm={"mean": [0.0], "std": [1.0]})
    assert dataclasses.replace(GEOMETRY, isotropic_axes=[2, 1]).isotropic_axes == (1, 2)
