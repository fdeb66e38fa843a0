"""Tests of unetkit.data.sampler: concentric crops, weight maps, rare-class centres, reproducible workers."""

import numpy as np
import pytest
import torch

from unetkit.data.augmentation import Augmentation, resolve_augment
from unetkit.data.dataset import IGNORE
from unetkit.data.sampler import PatchSampler, batch_iterator, rare_class_centres

GEOMETRY = Augmentation(flip_rotate=True, rotate_degrees=30, elastic_sigma=10)


def _data(n: int = 3, size: int = 80, seed: int = 0):
    """Images whose first channel shows the labels (8x8 blocks of 0/1/2), masks, and weights = 1 + mask."""
    rng = np.random.default_rng(seed)
    masks = [np.kron(rng.choice([0, 1, 2], size=(size // 8, size // 8), p=[0.8, 0.15, 0.05]), np.ones((8, 8), np.int64))
             for _ in range(n)]  # fmt: skip
    images = [np.stack([m.astype(np.float32), rng.normal(size=m.shape).astype(np.float32)], axis=-1) for m in masks]  # (H, W, C)
    weights = [1.0 + m.astype(np.float32) for m in masks]
    return images, masks, weights


@pytest.mark.parametrize("augment", ["none", "light", "paper", "strong"])
@pytest.mark.parametrize("context", [0, 20, 21])
def test_shapes_and_weight_crops_follow_the_mask(augment, context):
    images, masks, weights = _data()
    sampler = PatchSampler(images, masks, 24, context, augment, seed=1, weights=weights)
    x, y, w = sampler.batch(5, 0)
    assert x.shape == (5, 2, 24 + context, 24 + context) and x.dtype == np.float32
    assert y.shape == (5, 24, 24) and y.dtype == np.int64
    assert w.shape == (5, 24, 24) and w.dtype == np.float32
    labelled = y != IGNORE
    if augment in ("none", "light"):  # exact crops
        np.testing.assert_array_equal(w[labelled], 1.0 + y[labelled])
    else:  # weights are interpolated linearly, masks by nearest: they agree away from block edges
        assert np.mean(np.abs(w[labelled] - (1.0 + y[labelled])) < 0.5) > 0.9


@pytest.mark.parametrize("context", [20, 21])
def test_image_and_mask_crops_are_concentric_under_deformation(context):
    images, masks, _ = _data()
    sampler = PatchSampler(images, masks, 24, context, GEOMETRY, seed=2)
    x, y, w = sampler.batch(8, 3)
    assert w is None
    half = context // 2
    centre = x[:, 0, half : half + 24, half : half + 24]  # the image's label channel under the mask crop
    labelled = y != IGNORE
    assert np.mean(np.abs(centre[labelled] - y[labelled]) < 0.5) > 0.9


def test_light_preset_keeps_the_exact_crop_alignment():
    images, masks, _ = _data()
    sampler = PatchSampler(images, masks, 24, 20, "light", seed=0)
    x, y, _ = sampler.batch(6, 0)
    np.testing.assert_array_equal(x[:, 0, 10:34, 10:34], y)


def test_batches_are_reproducible_by_index():
    images, masks, weights = _data()
    a = PatchSampler(images, masks, 24, 20, "paper", seed=7, weights=weights, foreground_fraction=0.5)
    b = PatchSampler(images, masks, 24, 20, "paper", seed=7, weights=weights, foreground_fraction=0.5)
    for first, second in zip(a.batch(3, 4), b.batch(3, 4)):
        np.testing.assert_array_equal(first, second)
    assert not np.array_equal(a.batch(3, 4)[0], a.batch(3, 5)[0])
    assert not np.array_equal(a.batch(3, 4)[0], PatchSampler(images, masks, 24, 20, "paper", seed=8).batch(3, 4)[0])


def test_workers_give_the_same_batches_as_the_training_process():
    images, masks, weights = _data()
    sampler = PatchSampler(images, masks, 24, 20, "paper", seed=3, weights=weights)
    inline = batch_iterator(sampler, 2, start=5, workers=0)
    parallel = batch_iterator(sampler, 2, start=5, workers=2)
    for _ in range(5):
        first, second = next(inline), next(parallel)
        assert all(isinstance(t, torch.Tensor) for t in first + second)
        for a, b in zip(first, second):
            assert torch.equal(a, b)
    del parallel


def test_foreground_fraction_centres_patches_on_rare_classes():
    masks = [np.zeros((60, 60), np.int64), np.zeros((40, 50), np.int64)]
    masks[0][30, 12] = 1
    masks[1][5:7, 40:42] = 2  # near the border: the patch is shifted inside, not centred
    images = [m[..., None].astype(np.float32) for m in masks]
    sampler = PatchSampler(images, masks, 16, 0, "none", seed=0, foreground_fraction=1.0)
    for index in range(20):
        _, y, _ = sampler.batch(4, index)
        assert all((patch > 0).any() for patch in y)
    rare = sampler.batch(40, 99)[1]
    assert (rare[:, 8, 8] == 1).sum() > 5  # class 1 is centred exactly (far from borders)
    assert ((rare == 2).any(axis=(1, 2))).sum() > 5  # class 2 is chosen as often as class 1
    none = PatchSampler(images, masks, 16, 0, "none", seed=0, foreground_fraction=0.0)
    hits = sum((none.batch(4, i)[1] > 0).any(axis=(1, 2)).sum() for i in range(20))
    assert hits < 30  # uniform placement rarely finds a 1- or 4-pixel object


def test_rare_classes_are_all_but_the_most_frequent():
    masks = [np.array([[0, 0, 0, 1], [0, 2, IGNORE, 0]]), np.array([[1, 0, 0, 0]])]
    centres = rare_class_centres(masks)
    assert len(centres) == 2
    assert sorted(map(tuple, centres[0].tolist())) == [(0, 0, 3), (1, 0, 0)]  # class 1: (image, row, col)
    assert centres[1].tolist() == [[0, 1, 1]]  # class 2
    assert rare_class_centres([np.zeros((3, 3), np.int64)]) == []


def test_small_images_are_padded_with_ignore():
    image = np.ones((10, 12, 1), np.float32)
    mask = np.ones((10, 12), np.int64)
    sampler = PatchSampler([image], [mask], 16, 4, resolve_augment("none"), seed=0)
    x, y, _ = sampler.batch(2, 0)
    assert x.shape == (2, 1, 20, 20) and y.shape == (2, 16, 16)
    assert (y == IGNORE).any() and (y == 1).sum() == 2 * 10 * 12


def test_training_with_the_paper_preset_weight_map_and_workers(tiny_data, tmp_path):
    import unetkit
    from tests.conftest import TINY_MODEL

    options = {**TINY_MODEL, "epochs": 1, "steps_per_epoch": 3, "augment": "paper", "elastic_sigma": 4.0,
               "loss": "weighted-ce+dice", "workers": 2, "foreground_fraction": 0.5}  # fmt: skip
    result = unetkit.train(data=str(tiny_data), out=str(tmp_path / "run"), **options)
    assert result.steps == 3 and np.isfinite(result.history[0]["train_loss"])
    saved = (tmp_path / "run" / "config.yaml").read_text()
    assert "augment: paper" in saved and "elastic_sigma: 4.0" in saved and "loss: weighted-ce+dice" in saved


@pytest.mark.parametrize("augment", ["light", "strong"])
def test_patches_from_the_disk_cache_equal_those_from_memory(augment, tmp_path):
    """The cache's memory-mapped, packed arrays give the same batches as arrays in memory, standardised per crop."""
    from unetkit.data.cache import CachedArrays, DiskCache
    from unetkit.data.dataset import pack_labels

    images, masks, weights = _data(size=40)  # smaller than patch + context: mirrored beyond one reflection
    images = [(im * 50 + 100).clip(0, 255).astype(np.uint8) for im in images]
    masks[0][:8, :8] = IGNORE
    sources = []
    for n in range(3):
        sources.append(tmp_path / f"{n}.src")
        sources[-1].write_bytes(b"x")
    cache = DiskCache(tmp_path / "cache")
    entries = [cache.get(str(n), [sources[n]], lambda n=n: ({"image": images[n], "mask": pack_labels(masks[n]), "weights": weights[n]}, {}))
               for n in range(3)]  # fmt: skip
    assert entries[0].load("mask").dtype == np.uint8 and isinstance(entries[0].load("image"), np.memmap)
    norm = {"mean": [90.0, 100.0], "std": [40.0, 50.0]}
    memory = PatchSampler(images, masks, 24, 21, augment, seed=4, norm=norm, weights=weights, foreground_fraction=0.5)
    disk = PatchSampler(CachedArrays(entries, "image"), CachedArrays(entries, "mask"), 24, 21, augment, seed=4, norm=norm,
                        weights=CachedArrays(entries, "weights"), foreground_fraction=0.5)  # fmt: skip
    for index in range(6):
        for a, b in zip(memory.batch(3, index), disk.batch(3, index)):
            np.testing.assert_array_equal(a, b)
    x, y, _ = memory.batch(2, 0)
    if augment == "light":  # exact pixels, standardised with the given statistics
        values = (np.concatenate([im[..., 0].ravel() for im in images]).astype(np.float32) - 90.0) / 40.0
        assert np.isin(x[:, 0], values).all() and y.dtype == np.int64


def test_mirrored_windows_equal_a_mirror_padded_image():
    from unetkit.data.sampler import mirrored_window, padded_window
    from unetkit.inference.tiling import mirror_pad

    rng = np.random.default_rng(0)
    for h, w in [(1, 5), (2, 3), (7, 4)]:
        a = rng.integers(0, 100, (h, w, 2))
        for pr, pc in [((0, 0), (1, 1)), ((3, 12), (9, 30)), ((25, 2), (0, 4))]:
            padded = mirror_pad(a.transpose(2, 0, 1), pr, pc).transpose(1, 2, 0)
            np.testing.assert_array_equal(mirrored_window(a, -pr[0], h + pr[1], -pc[0], w + pc[1]), padded)
    m = np.arange(6).reshape(2, 3)
    np.testing.assert_array_equal(padded_window(m, -1, 2, 1, 5, fill=-1), [[-1, -1, -1, -1], [1, 2, -1, -1], [4, 5, -1, -1]])


def test_cached_class_centres_give_the_same_rare_centres():
    from unetkit.data.sampler import class_centres

    masks = _data(n=4)[1]
    masks[1][:4, :4] = IGNORE
    cached = [class_centres(m) for m in masks]
    assert cached[0].dtype == np.int32 and set(np.unique(cached[0][:, 0])) == set(np.unique(masks[0]))
    counts = np.bincount(np.concatenate([m[m >= 0] for m in masks]))
    expected = rare_class_centres(masks)
    given = rare_class_centres([np.zeros((1, 1))] * 4, centres=cached, counts=counts)  # the masks are not read
    assert len(given) == len(expected) == 2
    for a, b in zip(given, expected):
        np.testing.assert_array_equal(a, b)
