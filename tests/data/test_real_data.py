"""The data sets in ../shared/data load and decode; each test skips when its folder is absent."""

from pathlib import Path

import numpy as np
import pytest
import yaml

from unetkit.data.dataset import IGNORE, decode_mask, load_spec, read_instances, read_pair
from unetkit.data.io import read_image

DATA = (Path(__file__).resolve().parents[2] / ".." / "shared" / "data").resolve()
DUBAI_CLASSES = {
    "Building": [60, 16, 152],
    "Land": [132, 41, 246],
    "Road": [110, 193, 228],
    "Vegetation": [254, 221, 58],
    "Water": [226, 169, 41],
    "Unlabeled": [155, 155, 155],
}
CAMVID_CLASSES = [
    "Sky", "Building", "Pole", "Road", "Pavement", "Tree",
    "SignSymbol", "Fence", "Car", "Pedestrian", "Bicyclist",
]  # fmt: skip

pytestmark = pytest.mark.slow


def _data(name: str) -> Path:
    folder = DATA / name
    if not folder.is_dir():
        pytest.skip(f"{folder} not present")
    return folder


def _write_yaml(folder: Path, **config) -> Path:
    path = folder / "dataset.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def test_isbi2012_is_binary_with_25_pairs():
    spec = load_spec(_data("isbi2012"))
    assert (spec.mask_mode, spec.num_classes, len(spec.pairs)) == ("binary", 2, 25)
    assert [p.key for p in spec.pairs[:3]] == ["0", "1", "2"]
    image, mask = read_pair(spec.pairs[0], spec)
    assert image.shape == (512, 512, 1) and image.dtype == np.uint8
    assert set(np.unique(mask).tolist()) == {0, 1}
    assert 0.1 < (mask == 0).mean() < 0.4  # membranes are about 22% of pixels


def test_dsb2018_instance_folders():
    spec = load_spec(_data("dsb2018"))
    assert (spec.mask_mode, len(spec.pairs)) == ("instances", 95)
    for pair in spec.pairs[:2]:
        image, mask = read_pair(pair, spec)
        assert image.ndim == 3 and image.shape[2] == 3 and image.dtype == np.uint8  # opaque alpha dropped
        assert set(np.unique(mask).tolist()) == {0, 1}
        labels = read_instances(pair, spec)
        assert labels.max() == len(list(pair.mask.glob("*.png")))
        np.testing.assert_array_equal(labels > 0, mask == 1)


def test_dubai_aerial_colour_masks(tmp_path):
    folder = _data("dubai_aerial")
    config = _write_yaml(
        tmp_path,
        images=str(folder / "images"),
        masks=str(folder / "masks"),
        classes=DUBAI_CLASSES,
        ignore_colors=[[0, 0, 0]],
    )
    spec = load_spec(config)
    assert (spec.mask_mode, spec.num_classes, len(spec.pairs)) == ("color", 6, 54)
    assert spec.pairs[9].key == "Tile 2/image_part_001"  # names repeat across tiles
    for pair in (spec.pairs[0], spec.pairs[9]):  # an RGB mask and a palette mask
        image, mask = read_pair(pair, spec)
        assert image.shape[2] == 3
        assert set(np.unique(mask).tolist()) <= {IGNORE, *range(6)}


def test_camvid_index_masks_with_void_ignored(tmp_path):
    folder = _data("camvid")
    config = _write_yaml(
        tmp_path,
        images=str(folder / "images" / "train"),
        masks=str(folder / "masks" / "train"),
        classes=CAMVID_CLASSES,
        ignore_value=11,
    )
    spec = load_spec(config)
    assert (spec.mask_mode, spec.num_classes, len(spec.pairs)) == ("index", 11, 92)
    for pair in spec.pairs[:2]:
        image, mask = read_pair(pair, spec)
        assert image.shape == (360, 480, 3)
        values = set(np.unique(mask).tolist())
        assert values <= {IGNORE, *range(11)} and IGNORE in values


def test_stardist_uint16_image_and_label_image():
    spec = load_spec(_data("stardist_example"))
    assert (spec.mask_mode, len(spec.pairs)) == ("instances", 1)
    pair = spec.pairs[0]
    image = read_image(pair.image)
    assert image.shape == (512, 512, 1) and image.dtype == np.uint16
    assert decode_mask(pair, spec).max() == 1
    assert read_instances(pair, spec).max() == 125
