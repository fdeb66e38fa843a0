"""Tests of unetkit.data.augment: presets, the paper's elastic field, exact alignment, intensity on float data."""

import numpy as np
import pytest

from unetkit.data.augment import adjust_intensity, elastic_field, flip_rotate, remap, spatial_map
from unetkit.data.augmentation import AUGMENT_OPTIONS, PRESETS, Augmentation, resolve_augment
from unetkit.data.dataset import IGNORE
from unetkit.errors import UnetkitError

GEOMETRY = Augmentation(flip_rotate=True, rotate_degrees=30, scale_range=(0.8, 1.25), elastic_sigma=10)


def _blocks(size: int, seed: int = 0) -> np.ndarray:
    """(size, size) labels {0, 3, 7} in 8x8 blocks, so interpolation is exact away from block edges."""
    coarse = np.random.default_rng(seed).choice([0, 3, 7], size=(size // 8 + 1, size // 8 + 1))
    return np.kron(coarse, np.ones((8, 8), np.int64))[:size, :size]


def test_presets_and_overrides():
    assert resolve_augment("none") == Augmentation()
    assert resolve_augment("light") == Augmentation(flip_rotate=True)
    paper = resolve_augment("paper")
    assert paper.elastic_sigma == 10 and paper.elastic_grid == 3 and paper.flip_rotate
    assert not resolve_augment("light").warps and paper.warps and paper.intensity
    tuned = resolve_augment("paper", elastic_sigma=4, scale_range=[0.9, 1.1], flip_rotate=None)
    assert tuned.elastic_sigma == 4.0 and tuned.scale_range == (0.9, 1.1) and tuned.flip_rotate
    assert set(AUGMENT_OPTIONS) >= {"elastic_sigma", "rotate_degrees", "scale_range", "noise_std", "blur_sigma"}
    assert set(PRESETS) == {"none", "light", "paper", "strong"}


@pytest.mark.parametrize(
    "kwargs,match",
    [({"elastic_sigma": -1}, "elastic_sigma must be >= 0"), ({"scale_range": [1.2, 0.8]}, "scale_range"),
     ({"gamma": 0.5}, "gamma must be >= 1"), ({"contrast": 1.5}, "contrast"), ({"elastic_grid": 1}, "elastic_grid"),
     ({"elastic_sigmaa": 1}, "unknown augmentation option")],
)  # fmt: skip
def test_bad_options_are_refused(kwargs, match):
    with pytest.raises(UnetkitError, match=match):
        resolve_augment("paper", **kwargs)
    with pytest.raises(UnetkitError, match="is not one of"):
        resolve_augment("heavy")


def test_elastic_field_is_the_bicubic_interpolation_of_a_coarse_gaussian_grid():
    size = 101  # odd: the grid's middle point falls exactly on the window's centre pixel
    fields = np.stack([elastic_field(size, 10.0, 3, np.random.default_rng(s)) for s in range(400)])
    coarse = np.stack([np.random.default_rng(s).normal(0, 10.0, (2, 3, 3)) for s in range(400)])
    np.testing.assert_allclose(fields[:, :, 50, 50], coarse[:, :, 1, 1], rtol=1e-5, atol=1e-4)
    assert fields[:, :, 50, 50].std() == pytest.approx(10.0, rel=0.1)
    # smooth: at the paper's scale (a 440-pixel input window) neighbouring pixels move almost alike
    big = np.stack([elastic_field(440, 10.0, 3, np.random.default_rng(s)) for s in range(50)])
    assert np.abs(np.diff(big, axis=-1)).max() < 0.6 and np.abs(np.diff(big, axis=-2)).max() < 0.6
    assert fields.shape == (400, 2, size, size) and fields.dtype == np.float32


def test_no_transform_is_the_identity_map():
    rows, cols = spatial_map(7, Augmentation(), np.random.default_rng(0))
    np.testing.assert_array_equal(rows, np.repeat(np.arange(7)[:, None], 7, 1))
    np.testing.assert_array_equal(cols, np.repeat(np.arange(7)[None, :], 7, 0))
    source = np.arange(100, dtype=np.float32).reshape(10, 10)
    np.testing.assert_array_equal(remap(source, rows + 2, cols + 1), source[2:9, 1:8])


def test_flips_and_right_angles_in_the_map_are_exact():
    source = np.arange(64, dtype=np.float32).reshape(8, 8)
    seen = set()
    for seed in range(40):
        rows, cols = spatial_map(8, Augmentation(flip_rotate=True), np.random.default_rng(seed))
        out = remap(source, rows, cols)
        candidates = [np.rot90(f, k) for f in (source, source[::-1], source[:, ::-1], source[::-1, ::-1]) for k in range(4)]
        match = [i for i, c in enumerate(candidates) if np.array_equal(out, c)]
        assert match, "a flip/rotation must permute pixels exactly"
        seen.add(out.tobytes())
    assert len(seen) == 8  # all eight symmetries of the square occur


def test_flip_rotate_moves_image_mask_and_weights_together():
    mask = _blocks(16)
    image = np.stack([mask.astype(np.float32), -mask.astype(np.float32)])  # (2, 16, 16)
    for seed in range(8):
        img, msk, wgt = flip_rotate(image, mask, mask * 0.5, np.random.default_rng(seed))
        np.testing.assert_array_equal(img[0], msk)
        np.testing.assert_array_equal(wgt, msk * 0.5)
        assert img.flags.c_contiguous and msk.flags.c_contiguous


def test_masks_use_nearest_and_never_invent_classes():
    mask = _blocks(64).astype(np.int16)
    for seed in range(10):
        rows, cols = spatial_map(64, resolve_augment("strong"), np.random.default_rng(seed))
        out = remap(mask, rows, cols, nearest=True, fill=IGNORE)
        assert set(np.unique(out).tolist()) <= {0, 3, 7, IGNORE}


def test_concentric_crops_stay_aligned_under_elastic_rotation_and_scale():
    """The image window is larger than the mask window (valid mode); one map serves both."""
    size, patch = 96, 48
    half = (size - patch) // 2
    labels = _blocks(200, seed=1)
    image = labels[None].astype(np.float32)  # (1, 200, 200): the image shows the labels
    agree = []
    for seed in range(10):
        rows, cols = spatial_map(size, GEOMETRY, np.random.default_rng(seed))
        rows, cols = rows + 50, cols + 50
        inner = (slice(half, half + patch), slice(half, half + patch))
        img = remap(image, rows, cols)[0][inner]  # centre of the image window
        msk = remap(labels.astype(np.int16), rows[inner], cols[inner], nearest=True, fill=IGNORE)
        agree.append(np.mean(np.abs(img - msk) < 1.5))  # linear vs nearest differ only on block edges
    assert np.mean(agree) > 0.95


def test_geometry_is_reproducible_per_seed():
    a = spatial_map(32, resolve_augment("strong"), np.random.default_rng(3))
    b = spatial_map(32, resolve_augment("strong"), np.random.default_rng(3))
    c = spatial_map(32, resolve_augment("strong"), np.random.default_rng(4))
    np.testing.assert_array_equal(a[0], b[0])
    assert not np.array_equal(a[0], c[0])


def test_intensity_works_per_channel_on_multiband_float_data():
    rng = np.random.default_rng(0)
    image = (rng.normal(size=(7, 20, 20)) * np.arange(1, 8)[:, None, None]).astype(np.float32)  # 7 bands, negatives
    out = adjust_intensity(image, resolve_augment("strong"), np.random.default_rng(1))
    assert out.shape == image.shape and out.dtype == np.float32 and np.isfinite(out).all()
    assert (out < 0).any()  # no clipping to [0, 1]

    shifted = adjust_intensity(image, Augmentation(brightness=0.5), np.random.default_rng(2))
    delta = shifted - image
    np.testing.assert_allclose(delta, delta.flat[0], atol=1e-5)  # one shift for every channel
    assert 0 < abs(delta.flat[0]) <= 0.5

    contrasted = adjust_intensity(image, Augmentation(contrast=0.3), np.random.default_rng(2))
    np.testing.assert_allclose(contrasted.mean(axis=(1, 2)), image.mean(axis=(1, 2)), atol=1e-4)  # about each mean

    gamma = adjust_intensity(image, Augmentation(gamma=2.0), np.random.default_rng(2))
    np.testing.assert_allclose(gamma.min(axis=(1, 2)), image.min(axis=(1, 2)), atol=1e-5)  # each channel's range kept
    np.testing.assert_allclose(gamma.max(axis=(1, 2)), image.max(axis=(1, 2)), atol=1e-4)
    assert not np.allclose(gamma, image)


def test_intensity_leaves_the_input_untouched():
    image = np.ones((2, 5, 5), np.float32)
    adjust_intensity(image, resolve_augment("strong"), np.random.default_rng(0))
    np.testing.assert_array_equal(image, 1.0)


def test_config_and_cli_carry_the_augmentation_options():
    from unetkit.cli import parse
    from unetkit.config import make_config

    args = parse(["train", "--augment", "strong", "--scale-range", "0.9,1.1", "--elastic-sigma", "0",
                                           "--flip-rotate", "false", "--workers", "0"])  # fmt: skip
    assert args["scale_range"] == [0.9, 1.1] and args["elastic_sigma"] == 0.0 and args["flip_rotate"] is False
    cfg = make_config(augment="strong", scale_range=[0.9, 1.1], elastic_sigma=0.0, flip_rotate=False)
    aug = resolve_augment(cfg.augment, **{k: getattr(cfg, k) for k in AUGMENT_OPTIONS})
    assert aug.scale_range == (0.9, 1.1) and aug.elastic_sigma == 0 and not aug.flip_rotate and aug.rotate_degrees == 180
    with pytest.raises(UnetkitError, match="elastic_sigma must be >= 0"):
        make_config(augment="paper", elastic_sigma=-1.0)
    with pytest.raises(UnetkitError, match="foreground_fraction"):
        make_config(foreground_fraction=1.5)


@pytest.mark.parametrize("warp", [False, True])
def test_hflip_mirrors_left_right_only(warp):
    from unetkit.data.sampler import PatchSampler

    image = np.arange(36, dtype=np.float32).reshape(6, 6, 1)  # (H, W, C), no context: patch = whole image
    mask = np.arange(36).reshape(6, 6)
    aug = Augmentation(hflip=True, scale_range=(1.0, 1.0000001) if warp else (1.0, 1.0))
    sampler = PatchSampler([image], [mask], 6, 0, aug, seed=0)
    seen = set()
    for seed in range(20):
        img, msk, _ = sampler.sample(np.random.default_rng(seed))
        assert np.array_equal(msk, mask) or np.array_equal(msk, mask[:, ::-1])
        np.testing.assert_allclose(img[0], msk.astype(np.float32), atol=1e-3)
        seen.add(msk.tobytes())
    assert len(seen) == 2  # both orientations occur
