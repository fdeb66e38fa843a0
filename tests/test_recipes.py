"""Each recipe of examples/ on a few of its real images: data loading, one training step, scoring, figure.

The real data sets live in ../shared/data; each test skips when its set is absent.
"""

import glob
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

import unetkit
from tests.conftest import shared_data
from unetkit.config import make_config
from unetkit.data.dataset import IGNORE, load_spec, read_pair
from unetkit.errors import UnetkitError
from unetkit.recipes import recipe_files, relocated_dataset

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
RECIPES = {"isbi2012": 2, "dsb2018": 2, "dubai_aerial": 6, "camvid": 11}  # recipe -> classes


def few_image_recipe(name: str, tmp_path: Path, train: int = 3) -> Path:
    """A copy of the recipe whose splits keep ``train`` training pairs and one validation pair."""
    data = shared_data({"dubai_aerial": "dubai_aerial"}.get(name, name))
    dataset, config = recipe_files(EXAMPLES / name)
    folder = tmp_path / name
    relocated = relocated_dataset(dataset, data, folder)
    spec = yaml.safe_load(relocated.read_text())
    keys = {split: [p.key for p in load_spec(relocated, split=split).pairs] for split in ("train", "val")}
    spec["splits"] = {"train": [glob.escape(k) for k in keys["train"][:train]], "val": [glob.escape(keys["val"][0])]}
    relocated.write_text(yaml.safe_dump(spec, sort_keys=False))
    shutil.copy(config, folder / "config.yaml")
    return folder


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(RECIPES))
def test_recipe_loads_trains_one_step_scores_and_draws(name, tmp_path):
    folder = few_image_recipe(name, tmp_path)
    results = unetkit.recipe(folder, out=tmp_path / "out", epochs=1, steps_per_epoch=1, batch_size=1, tile=256, progress=False,
                             figure_images=1, figure_path=tmp_path / "gallery.png")
    assert results["steps"] == 1 and results["train_pairs"] == 3 and results["val_pairs"] == 1
    assert len(results["classes"]) == RECIPES[name]
    for family in ("iou", "dice"):
        assert set(results["validation"][family]) == {*results["classes"], "mean"}
        assert 0.0 <= results["validation"][family]["mean"] <= 1.0
    assert json.loads((tmp_path / "out" / "results.json").read_text()) == results
    assert (tmp_path / "out" / "report" / "index.html").is_file()
    for png in (tmp_path / "out" / "figure.png", tmp_path / "gallery.png"):
        width, height = Image.open(png).size
        assert 300 < width < 1000 and 150 < height < 1000
    assert (results["instances"] is not None) == (name == "dsb2018")


def test_recipe_configs_are_valid_and_within_budget():
    for name in RECIPES:
        dataset, config = recipe_files(EXAMPLES / name)
        cfg = make_config(config)
        assert cfg.time is not None and cfg.time <= 60, f"{name}: a recipe states its CPU budget, at most 60 minutes"
        assert (EXAMPLES / name / "README.md").is_file()
        assert yaml.safe_load(dataset.read_text())["splits"].keys() >= {"train", "val"}


def test_camvid_void_and_dubai_black_are_ignored():
    for name in ("camvid", "dubai_aerial"):
        shared_data(name)
        spec = load_spec(recipe_files(EXAMPLES / name)[0])  # the yaml points at ../shared/data
        masks = [read_pair(p, spec)[1] for p in spec.pairs[::4]]
        values = set(np.unique(np.concatenate([m.ravel() for m in masks])).tolist())
        assert values - {IGNORE} <= set(range(spec.num_classes))
        assert IGNORE in values, f"{name}: unlabelled pixels must decode to IGNORE"


def test_bad_recipe_and_data_paths_name_the_fix(tmp_path):
    with pytest.raises(UnetkitError, match="no such recipe folder"):
        recipe_files(tmp_path / "nope")
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "dataset.yaml").write_text("images: images\n")
    with pytest.raises(UnetkitError, match="config.yaml missing"):
        recipe_files(tmp_path / "half")
    with pytest.raises(UnetkitError, match="pass --data the data set folder"):
        relocated_dataset(EXAMPLES / "camvid" / "dataset.yaml", tmp_path, tmp_path / "out")
